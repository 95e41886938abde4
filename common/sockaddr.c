/* SPDX-License-Identifier: MIT */
/* sockaddr.c - "HOST:PORT", "[V6]:PORT", "unix:/path" and "unix:@name" to a sockaddr. */
#include "sockaddr.h"

#include <errno.h>
#include <netdb.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

int sockaddr_parse(const char *spec, bool passive, struct sockaddr_storage *ret, socklen_t *ret_len)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	struct addrinfo *res = NULL;
	char host[NI_MAXHOST];
	const char *port, *host_end, *p;
	size_t host_len;
	unsigned long port_nr = 0;

	if (strncmp(spec, "unix:", strlen("unix:")) == 0) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		const char *path = spec + strlen("unix:");
		size_t len = strlen(path);

		if (len == 0 || (path[0] != '/' && path[0] != '@'))
			return -EINVAL;
		/* An abstract name has no trailing NUL; a path needs one, so it must be shorter. */
		if (len > sizeof(sun.sun_path) - (path[0] == '/'))
			return -ENAMETOOLONG;
		memcpy(sun.sun_path, path, len);
		if (path[0] == '@')
			sun.sun_path[0] = '\0';
		memcpy(ret, &sun, sizeof(sun));
		*ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
				       (path[0] == '/'));
		return 0;
	}

	if (spec[0] == '[') {
		host_end = strchr(spec, ']');
		if (!host_end || host_end[1] != ':')
			return -EINVAL;
		spec++;
		port = host_end + 2;
	} else {
		host_end = strrchr(spec, ':');
		/* A bare IPv6 address has more colons: it needs brackets to tell the port apart. */
		if (!host_end || memchr(spec, ':', (size_t)(host_end - spec)))
			return -EINVAL;
		port = host_end + 1;
	}
	host_len = (size_t)(host_end - spec);
	if (host_len >= sizeof(host) || (host_len == 0 && !passive))
		return -EINVAL;
	memcpy(host, spec, host_len);
	host[host_len] = '\0';

	if (*port == '\0')
		return -EINVAL;
	for (p = port; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		port_nr = port_nr * 10 + (unsigned long)(*p - '0');
		if (port_nr > UINT16_MAX)
			return -EINVAL;
	}
	if (port_nr == 0)
		return -EINVAL;

	/* No host, or "*": AI_PASSIVE makes getaddrinfo() return the wildcard address. */
	if (getaddrinfo(passive && (host_len == 0 || strcmp(host, "*") == 0) ? NULL : host, port,
			&hints, &res) != 0)
		return -EADDRNOTAVAIL;
	/* On success res is non-NULL with at least one entry. */
	memcpy(ret, res->ai_addr, res->ai_addrlen);
	*ret_len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}
