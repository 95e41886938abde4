/* SPDX-License-Identifier: MIT */
/*
 * fuzz_listener.c - listener_parse(): batond's -l and batonctl listen, and their canonical form.
 *
 * Input: a byte for the listener index (its default name), then the argument.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "listener.h"

#define TEXT_MAX    1024 /* bytes of one argument; longer ones only fail sooner */
#define POISON_BYTE 0xa5 /* fills the listener that a failing call must leave alone */

/* Static: a struct listener is about 700 bytes, and every input needs four. */
static struct listener l, again, named, poison;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { .data = data, .size = size };
	unsigned index = fuzz_u8(&in);
	char *arg = fuzz_string(&in, TEXT_MAX, -1);
	char both[LISTENER_NAME_MAX + 1 + LISTENER_SPEC_MAX + 1];
	int r;

	if (!arg)
		return 0;
	memset(&l, POISON_BYTE, sizeof(l));
	memset(&poison, POISON_BYTE, sizeof(poison));
	r = listener_parse(arg, index, &l);
	CHECK(r == 0 || r == -EINVAL || r == -ENAMETOOLONG || r == -ERANGE || r == -EADDRNOTAVAIL);
	if (r < 0) {
		CHECK(memcmp(&l, &poison, sizeof(l)) == 0);
		free(arg);
		return 0;
	}

	/* What batond holds: unbound, a name LISTEN_FDNAMES can carry, a spec that fits. */
	CHECK(l.fd == -1 && !l.owns_path && !l.inherited);
	CHECK(listener_name_is_valid(l.name));
	CHECK(memchr(l.spec, '\0', sizeof(l.spec)) && l.spec[0] != '\0');
	CHECK(l.addr_len > 0 && l.addr_len <= sizeof(l.addr));
	if (l.kind == LISTENER_UNIX)
		CHECK(l.addr.sa.sa_family == AF_UNIX);
	else
		CHECK((l.kind == LISTENER_TCP || l.kind == LISTENER_UDP) &&
		      (l.addr.sa.sa_family == AF_INET || l.addr.sa.sa_family == AF_INET6));

	/*
	 * The canonical spec (status, the upgrade state, LISTEN_FDNAMES users) parses back to the
	 * same socket address and the same spec, and so does NAME=spec, keeping the name.
	 */
	memset(&again, 0, sizeof(again));
	CHECK(listener_parse(l.spec, index, &again) == 0);
	CHECK(again.kind == l.kind && listener_same_address(&again, &l, false));
	CHECK(strcmp(again.spec, l.spec) == 0);
	(void)snprintf(both, sizeof(both), "%s=%s", l.name, l.spec);
	memset(&named, 0, sizeof(named));
	CHECK(listener_parse(both, index + 1, &named) == 0);
	CHECK(strcmp(named.name, l.name) == 0 && strcmp(named.spec, l.spec) == 0);
	free(arg);
	return 0;
}
