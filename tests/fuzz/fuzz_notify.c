/* SPDX-License-Identifier: MIT */
/*
 * fuzz_notify.c - notify datagrams: notify_parse() on the bytes, notify_receive() on a socket.
 *
 * Input: a byte for the fds to attach (modulo 21), then the datagram.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "notify.h"

#define PAYLOAD_MAX (NOTIFY_MESSAGE_MAX + 64) /* bytes sent: past the limit, to be refused */
#define FDS_MAX	    20			      /* fds attached: past what batond takes (16) */
_Static_assert(FDS_MAX <= FUZZ_SEND_FDS_MAX, "fuzz_send() attaches that many");
#define NOTIFY_FDS_OK 16 /* NOTIFY_MAX_FDS in notify.c */
#define POISON_BYTE   0x5a

static int sock[2] = { -1, -1 }; /* [0] batond's end, with SO_PASSCRED; [1] the sender */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int one = 1;

	(void)argc;
	(void)argv;
	/* One pair for every input: a datagram left unread by one input fails the next. */
	CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sock) == 0);
	CHECK(setsockopt(sock[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) == 0);
	/* Room for the largest datagram, so that a send never fails for space. */
	one = 4 * PAYLOAD_MAX;
	CHECK(setsockopt(sock[1], SOL_SOCKET, SO_SNDBUF, &one, sizeof(one)) == 0);
	return 0;
}

static bool same(const struct notify_message *a, const struct notify_message *b)
{
	return a->ready == b->ready && a->stopping == b->stopping && a->reloading == b->reloading &&
	       a->watchdog == b->watchdog && a->has_status == b->has_status &&
	       a->mainpid == b->mainpid && (!a->has_status || strcmp(a->status, b->status) == 0);
}

/* A parsed message is well-formed, and its canonical text parses to the same message. */
static void check_parsed(const struct notify_message *m)
{
	struct notify_message back;
	char text[NOTIFY_MESSAGE_MAX];
	int n;

	CHECK(m->mainpid >= 0);
	CHECK(memchr(m->status, '\0', sizeof(m->status)));
	for (const char *p = m->status; *p; p++)
		CHECK((unsigned char)*p >= ' ' && *p != 127);
	if (!m->has_status)
		CHECK(m->status[0] == '\0');
	n = snprintf(text, sizeof(text), "READY=%d\nSTOPPING=%d\nRELOADING=%d\nWATCHDOG=%d\n",
		     m->ready, m->stopping, m->reloading, m->watchdog);
	if (m->has_status)
		n += snprintf(text + n, sizeof(text) - (size_t)n, "STATUS=%s\n", m->status);
	if (m->mainpid > 0)
		n += snprintf(text + n, sizeof(text) - (size_t)n, "MAINPID=%d", (int)m->mainpid);
	CHECK(n > 0 && (size_t)n < sizeof(text));
	CHECK(notify_parse(text, (size_t)n, &back) == 0 && same(m, &back));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { .data = data, .size = size };
	int lowest_free_fd = fuzz_lowest_free_fd();
	size_t n_fds = fuzz_u8(&in) % (FDS_MAX + 1);
	const uint8_t *payload = data + in.off;
	size_t len = size - in.off;
	struct notify_message m, got, poison;
	uint8_t *copy;
	int r, rr;

	if (len > PAYLOAD_MAX)
		return 0;
	/* An empty datagram goes without fds (fuzz_send(), as proto_send() wants a body). */
	if (len == 0)
		n_fds = 0;
	/* An exact-size heap copy: ASan sees any read past the datagram. */
	copy = malloc(len ? len : 1);
	if (!copy)
		return 0;
	memcpy(copy, payload, len);
	memset(&m, POISON_BYTE, sizeof(m));
	memset(&poison, POISON_BYTE, sizeof(poison));
	r = notify_parse((const char *)copy, len, &m);
	CHECK(r == 0 || r == -EBADMSG);
	if (r < 0)
		CHECK(memcmp(&m, &poison, sizeof(m)) == 0);
	else
		check_parsed(&m);

	/* The same bytes as a datagram: the receive path agrees, and closes every fd sent. */
	CHECK(fuzz_send(sock[1], copy, len, n_fds) == (ssize_t)len);
	memset(&got, POISON_BYTE, sizeof(got));
	rr = notify_receive(sock[0], &got);
	if (len > NOTIFY_MESSAGE_MAX || n_fds > NOTIFY_FDS_OK) {
		CHECK(rr == -EPROTO);
	} else {
		CHECK(rr == r);
		if (r == 0)
			CHECK(same(&m, &got) && got.pid == getpid() && got.uid == getuid());
	}
	CHECK(notify_receive(sock[0], &got) == -EAGAIN);
	CHECK(fuzz_lowest_free_fd() == lowest_free_fd);
	free(copy);
	return 0;
}
