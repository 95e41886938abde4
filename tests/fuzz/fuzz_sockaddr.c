/* SPDX-License-Identifier: MIT */
/*
 * fuzz_sockaddr.c - sockaddr_parse(): the addresses the examples and tools take.
 *
 * Input: a byte whose low bit asks for a passive address, then the address.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include "harness.h"
#include "sockaddr.h"

#define TEXT_MAX    512	 /* bytes of one address; longer ones only fail sooner */
#define POISON_BYTE 0xa5 /* fills the outputs that a failing call must leave alone */

/* The decimal port at the end of spec, or -1. */
static long port_of(const char *spec)
{
	const char *colon = strrchr(spec, ':');

	return colon ? strtol(colon + 1, NULL, 10) : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { .data = data, .size = size };
	struct sockaddr_storage ss, poison;
	socklen_t len = 0xa5a5a5a5;
	bool passive = fuzz_u8(&in) & 1;
	char *spec = fuzz_string(&in, TEXT_MAX, -1);
	int r;

	if (!spec)
		return 0;
	memset(&ss, POISON_BYTE, sizeof(ss));
	memset(&poison, POISON_BYTE, sizeof(poison));
	r = sockaddr_parse(spec, passive, &ss, &len);
	CHECK(r == 0 || r == -EINVAL || r == -ENAMETOOLONG || r == -EADDRNOTAVAIL);
	if (r < 0) {
		CHECK(len == 0xa5a5a5a5 && memcmp(&ss, &poison, sizeof(ss)) == 0);
		free(spec);
		return 0;
	}

	CHECK(len <= sizeof(ss));
	switch (ss.ss_family) {
	case AF_UNIX: {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)&ss;
		size_t n = len - offsetof(struct sockaddr_un, sun_path);
		const char *path = spec + strlen("unix:");

		CHECK(strncmp(spec, "unix:", 5) == 0);
		if (path[0] == '@') {
			/* Abstract: a NUL, then the name's bytes, no terminator. */
			CHECK(n == strlen(path) && sun->sun_path[0] == '\0');
			CHECK(memcmp(sun->sun_path + 1, path + 1, n - 1) == 0);
		} else {
			CHECK(path[0] == '/' && n == strlen(path) + 1);
			CHECK(strcmp(sun->sun_path, path) == 0);
		}
		break;
	}
	case AF_INET: {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;

		CHECK(len == sizeof(*sin));
		CHECK(ntohs(sin->sin_port) != 0 && ntohs(sin->sin_port) == port_of(spec));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;

		CHECK(len == sizeof(*sin6));
		CHECK(ntohs(sin6->sin6_port) != 0 && ntohs(sin6->sin6_port) == port_of(spec));
		break;
	}
	default:
		CHECK(!"a family other than unix, inet, inet6");
	}
	free(spec);
	return 0;
}
