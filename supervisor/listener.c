/* SPDX-License-Identifier: MIT */
/* listener.c - parse, bind and close the listening sockets that batond holds for life. */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"

const char *listener_kind_to_string(enum listener_kind kind)
{
	switch (kind) {
	case LISTENER_TCP:
		return "tcp";
	case LISTENER_UDP:
		return "udp";
	case LISTENER_UNIX:
		return "unix";
	}
	return "?";
}

bool listener_name_is_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > LISTENER_NAME_MAX)
		return false;
	for (const char *p = name; *p; p++) {
		/* LISTEN_FDNAMES separates names with ':'; control bytes would corrupt logs. */
		if (*p <= ' ' || *p >= 127 || *p == ':')
			return false;
	}
	return true;
}

static int parse_port(const char *s, in_port_t *ret)
{
	unsigned long v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > 65535)
			return -ERANGE;
	}
	*ret = (in_port_t)v;
	return 0;
}

/* host is NUL-terminated and without brackets; v6_only is set when it came in [brackets]. */
static int parse_inet(const char *host, const char *port, bool bracketed, enum listener_kind kind,
		      struct listener *l)
{
	in_port_t p;
	int r;

	r = parse_port(port, &p);
	if (r < 0)
		return r;

	memset(&l->addr, 0, sizeof(l->addr));
	if (bracketed) {
		if (inet_pton(AF_INET6, host, &l->addr.in6.sin6_addr) != 1)
			return -EINVAL;
		l->addr.in6.sin6_family = AF_INET6;
		l->addr.in6.sin6_port = htons(p);
		l->addr_len = sizeof(l->addr.in6);
	} else if (strcmp(host, "*") == 0 || *host == '\0') {
		l->addr.in.sin_family = AF_INET;
		l->addr.in.sin_addr.s_addr = htonl(INADDR_ANY);
		l->addr.in.sin_port = htons(p);
		l->addr_len = sizeof(l->addr.in);
	} else if (inet_pton(AF_INET, host, &l->addr.in.sin_addr) == 1) {
		l->addr.in.sin_family = AF_INET;
		l->addr.in.sin_port = htons(p);
		l->addr_len = sizeof(l->addr.in);
	} else {
		struct addrinfo hints = {
			.ai_family = AF_UNSPEC,
			.ai_socktype = kind == LISTENER_UDP ? SOCK_DGRAM : SOCK_STREAM,
		};
		struct addrinfo *res = NULL;

		/*
		 * An unbracketed IPv6 literal is ambiguous with the port separator: refuse it. No
		 * host name holds '=': "a=b=HOST:PORT" is a second name, not a name to look up.
		 */
		if (strpbrk(host, ":="))
			return -EINVAL;
		if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
			return -EADDRNOTAVAIL;
		if (res->ai_addrlen > sizeof(l->addr)) {
			freeaddrinfo(res);
			return -EINVAL;
		}
		memcpy(&l->addr, res->ai_addr, res->ai_addrlen);
		l->addr_len = res->ai_addrlen;
		freeaddrinfo(res);
		if (l->addr.sa.sa_family == AF_INET)
			l->addr.in.sin_port = htons(p);
		else if (l->addr.sa.sa_family == AF_INET6)
			l->addr.in6.sin6_port = htons(p);
		else
			return -EINVAL;
	}
	l->kind = kind;
	return 0;
}

static int parse_unix(const char *path, struct listener *l)
{
	size_t n = strlen(path);

	if (n == 0 || (path[0] == '@' && n == 1))
		return -EINVAL;
	/* sun_path needs a NUL for a path; an abstract name uses every byte after the leading NUL. */
	if (n > sizeof(l->addr.un.sun_path) || (n == sizeof(l->addr.un.sun_path) && path[0] != '@'))
		return -ENAMETOOLONG;
	memset(&l->addr, 0, sizeof(l->addr));
	l->addr.un.sun_family = AF_UNIX;
	memcpy(l->addr.un.sun_path, path, n);
	if (path[0] == '@') {
		l->addr.un.sun_path[0] = '\0';
		l->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		l->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	}
	l->kind = LISTENER_UNIX;
	return 0;
}

static int parse_address(const char *s, struct listener *l)
{
	enum listener_kind kind = LISTENER_TCP;
	char buf[LISTENER_SPEC_MAX];
	const char *colon;
	char *host;
	bool bracketed = false;

	if (strncmp(s, "unix:", 5) == 0)
		return parse_unix(s + 5, l);
	if (strncmp(s, "tcp://", 6) == 0) {
		s += 6;
	} else if (strncmp(s, "udp://", 6) == 0) {
		s += 6;
		kind = LISTENER_UDP;
	} else if (strstr(s, "://")) {
		return -EINVAL;
	}

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	host = buf;
	if (*host == '[') {
		char *end = strchr(host, ']');

		if (!end || end[1] != ':')
			return -EINVAL;
		*end = '\0';
		host++;
		colon = end + 1;
		bracketed = true;
	} else {
		char *c = strrchr(host, ':');

		if (!c)
			return -EINVAL;
		*c = '\0';
		colon = c;
	}
	return parse_inet(host, colon + 1, bracketed, kind, l);
}

int listener_parse(const char *arg, unsigned index, struct listener *ret)
{
	struct listener l = { .fd = -1 };
	const char *eq = strchr(arg, '=');
	const char *addr = arg;
	int r;

	/* "NAME=ADDRESS": a name never contains ':', '/' or '[', so "unix:/a=b" is an address. */
	if (eq && strcspn(arg, ":/[") > (size_t)(eq - arg)) {
		size_t n = (size_t)(eq - arg);

		if (n == 0 || n > LISTENER_NAME_MAX)
			return n == 0 ? -EINVAL : -ENAMETOOLONG;
		memcpy(l.name, arg, n);
		l.name[n] = '\0';
		if (!listener_name_is_valid(l.name))
			return -EINVAL;
		addr = eq + 1;
	} else {
		(void)snprintf(l.name, sizeof(l.name), "listen%u", index);
	}

	r = parse_address(addr, &l);
	if (r < 0)
		return r;
	listener_format(l.kind, &l.addr, l.addr_len, l.spec, sizeof(l.spec));
	*ret = l;
	return 0;
}

void listener_format(enum listener_kind kind, const union listener_addr *addr, socklen_t len,
		     char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN];

	switch (addr->sa.sa_family) {
	case AF_INET:
		(void)inet_ntop(AF_INET, &addr->in.sin_addr, host, sizeof(host));
		(void)snprintf(buf, size, "%s://%s:%u", listener_kind_to_string(kind), host,
			       ntohs(addr->in.sin_port));
		return;
	case AF_INET6:
		(void)inet_ntop(AF_INET6, &addr->in6.sin6_addr, host, sizeof(host));
		(void)snprintf(buf, size, "%s://[%s]:%u", listener_kind_to_string(kind), host,
			       ntohs(addr->in6.sin6_port));
		return;
	case AF_UNIX: {
		size_t off = offsetof(struct sockaddr_un, sun_path);
		size_t n = len > off ? len - off : 0;

		if (n > 0 && addr->un.sun_path[0] == '\0')
			(void)snprintf(buf, size, "unix:@%.*s", (int)(n - 1),
				       addr->un.sun_path + 1);
		else
			(void)snprintf(buf, size, "unix:%.*s", (int)strnlen(addr->un.sun_path, n),
				       addr->un.sun_path);
		return;
	}
	default:
		(void)snprintf(buf, size, "family-%d", addr->sa.sa_family);
	}
}

int listener_unix_path_is_stale(const struct listener *l, int type)
{
	_cleanup_close_ int fd = -1;
	struct stat st;

	if (lstat(l->addr.un.sun_path, &st) < 0)
		return errno == ENOENT ? 1 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Blocking connect on a Unix socket does not wait for accept(): it fails or succeeds at once. */
	if (connect(fd, &l->addr.sa, l->addr_len) == 0)
		return -EADDRINUSE;
	if (errno == ECONNREFUSED)
		return 1;
	if (errno == EPROTOTYPE)
		return -EADDRINUSE; /* a live socket of another type */
	return -errno;
}

int listener_bind(struct listener *l, int backlog)
{
	_cleanup_close_ int fd = -1;
	int type = l->kind == LISTENER_UDP ? SOCK_DGRAM : SOCK_STREAM;
	bool is_path = l->kind == LISTENER_UNIX && l->addr.un.sun_path[0] != '\0';
	int one = 1;

	fd = socket(l->addr.sa.sa_family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (l->kind == LISTENER_TCP) {
		/*
		 * Lets a restarted batond bind again while old connections sit in TIME_WAIT. Not for
		 * UDP, where it would let a second process silently take over the port.
		 */
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
			return -errno;
	}
	if (l->addr.sa.sa_family == AF_INET6) {
		/* [::]:80 means IPv6 only, so that 0.0.0.0:80 can be a listener of its own. */
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
			return -errno;
	}
	if (bind(fd, &l->addr.sa, l->addr_len) < 0) {
		int r;

		if (errno != EADDRINUSE || !is_path)
			return -errno;
		r = listener_unix_path_is_stale(l, SOCK_STREAM);
		if (r < 0)
			return r;
		if (unlink(l->addr.un.sun_path) < 0 && errno != ENOENT)
			return -errno;
		if (bind(fd, &l->addr.sa, l->addr_len) < 0)
			return -errno;
	}
	if (type == SOCK_STREAM && listen(fd, backlog) < 0)
		return -errno;

	if (is_path) {
		struct stat st;

		if (stat(l->addr.un.sun_path, &st) == 0) {
			l->owns_path = true;
			l->path_dev = st.st_dev;
			l->path_ino = st.st_ino;
		}
	} else if (l->kind != LISTENER_UNIX) {
		union listener_addr a;
		socklen_t len = sizeof(a);

		/* Port 0 was a request for any free port: record which one we got. */
		if (getsockname(fd, &a.sa, &len) == 0 && len <= sizeof(a)) {
			l->addr = a;
			l->addr_len = len;
			listener_format(l->kind, &l->addr, l->addr_len, l->spec, sizeof(l->spec));
		}
	}
	l->fd = TAKE_FD(fd);
	return 0;
}

void listener_close(struct listener *l)
{
	if (l->owns_path) {
		struct stat st;

		/* Only the file we created: a newer batond may already have put its own there. */
		if (stat(l->addr.un.sun_path, &st) == 0 && st.st_dev == l->path_dev &&
		    st.st_ino == l->path_ino)
			(void)unlink(l->addr.un.sun_path);
		l->owns_path = false;
	}
	l->fd = safe_close(l->fd);
}

int listener_from_fd(int fd, const char *name, struct listener *ret)
{
	struct listener l = { .fd = fd, .inherited = true };
	int type = 0, listening = 0;
	socklen_t len = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return errno == ENOTSOCK ? -ENOTSOCK : -errno;
	len = sizeof(listening);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
		return -errno;
	len = sizeof(l.addr);
	if (getsockname(fd, &l.addr.sa, &len) < 0)
		return -errno;
	l.addr_len = len;
	if (l.addr.sa.sa_family == AF_UNIX && type == SOCK_STREAM && listening)
		l.kind = LISTENER_UNIX;
	else if ((l.addr.sa.sa_family == AF_INET || l.addr.sa.sa_family == AF_INET6) &&
		 type == SOCK_STREAM && listening)
		l.kind = LISTENER_TCP;
	else if ((l.addr.sa.sa_family == AF_INET || l.addr.sa.sa_family == AF_INET6) &&
		 type == SOCK_DGRAM)
		l.kind = LISTENER_UDP;
	else
		return -EPROTONOSUPPORT;
	if (strlen(name) > LISTENER_NAME_MAX)
		return -ENAMETOOLONG;
	strcpy(l.name, name);
	listener_format(l.kind, &l.addr, l.addr_len, l.spec, sizeof(l.spec));
	*ret = l;
	return 0;
}

bool listener_same_address(const struct listener *a, const struct listener *b, bool any_port)
{
	if (a->kind != b->kind || a->addr.sa.sa_family != b->addr.sa.sa_family)
		return false;
	switch (a->addr.sa.sa_family) {
	case AF_INET:
		return a->addr.in.sin_addr.s_addr == b->addr.in.sin_addr.s_addr &&
		       ((any_port && a->addr.in.sin_port == 0) ||
			a->addr.in.sin_port == b->addr.in.sin_port);
	case AF_INET6:
		return memcmp(&a->addr.in6.sin6_addr, &b->addr.in6.sin6_addr,
			      sizeof(a->addr.in6.sin6_addr)) == 0 &&
		       (a->addr.in6.sin6_port == 0 ||
			a->addr.in6.sin6_port == b->addr.in6.sin6_port);
	case AF_UNIX:
		return a->addr_len == b->addr_len &&
		       memcmp(a->addr.un.sun_path, b->addr.un.sun_path,
			      a->addr_len - offsetof(struct sockaddr_un, sun_path)) == 0;
	default:
		return false;
	}
}
