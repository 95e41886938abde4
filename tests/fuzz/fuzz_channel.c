/* SPDX-License-Identifier: MIT */
/*
 * fuzz_channel.c - what a peer can send batond over a channel: --fd-socket requests (role
 * FETCH) and a --pass scm worker's messages (role WORKER), through a real socketpair and
 * sd-event, with everything batond sends back checked.
 *
 * Input: a byte (bit 0 FETCH, bit 1 the owner frees the channel from ops->closed, bits
 * 2.. how many listeners are offered), then actions, one byte each with their operands:
 * see one_op().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "channel.h"
#include "cleanup.h"
#include "fdpass.h"
#include "harness.h"
#include "listener.h"
#include "log.h"
#include "proto.h"

#define N_LISTENERS   3	 /* bound once: tcp, udp and an abstract unix socket on loopback */
#define OPS_MAX	      64 /* peer actions per input */
#define RAW_MAX	      (CHANNEL_RECV_MAX + 64) /* bytes of a raw message: past what batond reads */
#define TEXT_MAX      80		      /* bytes of a STATUS or ERROR text from the input */
#define FDS_MAX	      4			      /* fds a peer attaches to one message */
#define LOOP_MAX      256 /* event loop iterations before "it never settles" is a finding */
#define PEER_READ_MAX 64  /* messages read by the peer at once */

static sd_event *event;
static struct listener listeners[N_LISTENERS];

/* One conversation: what the peer did, and what batond told it and us. */
struct conv {
	struct channel *ch;
	enum proto_role role;
	int peer;	      /* the peer's end, -1 once closed */
	bool free_in_closed;  /* the owner frees the channel from ops->closed, as fdsock does */
	bool dropped;	      /* the owner freed it without waiting for ops->closed */
	bool peer_said_hello; /* a HELLO of the channel's role went out before any other message */
	bool peer_sent_other; /* something other than such a HELLO went first */
	unsigned n_closed, n_ready, n_status, n_drained;
	int closed_error;
	size_t n_set;	   /* listeners handed to the channel now */
	size_t n_received; /* LISTENERS entries the peer got */
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char unix_spec[64];
	const char *specs[N_LISTENERS] = {
		"web=tcp://127.0.0.1:0",
		"dns=udp://127.0.0.1:0",
		unix_spec,
	};

	(void)argc;
	(void)argv;
	log_setup("batond");
	log_set_max_level(LOG_DEBUG);
	CHECK(sd_event_new(&event) >= 0);
	/* Abstract: no file to remove, and the pid keeps two fuzzers apart. */
	(void)snprintf(unix_spec, sizeof(unix_spec), "sock=unix:@baton-fuzz-channel-%d",
		       (int)getpid());
	for (size_t i = 0; i < N_LISTENERS; i++) {
		CHECK(listener_parse(specs[i], (unsigned)i, &listeners[i]) == 0);
		CHECK(listener_bind(&listeners[i], 16) == 0);
	}
	return 0;
}

static void on_ready(void *userdata)
{
	struct conv *c = userdata;

	CHECK(!c->dropped && c->n_closed == 0);
	CHECK(c->role == PROTO_ROLE_WORKER && c->peer_said_hello);
	c->n_ready++;
}

static void on_status(void *userdata, uint32_t inflight, const char *text)
{
	struct conv *c = userdata;

	(void)inflight;
	CHECK(!c->dropped && c->n_closed == 0);
	CHECK(c->role == PROTO_ROLE_WORKER && c->peer_said_hello);
	CHECK(strlen(text) <= PROTO_TEXT_MAX);
	c->n_status++;
}

static void on_drained(void *userdata)
{
	struct conv *c = userdata;

	CHECK(!c->dropped && c->n_closed == 0);
	CHECK(c->role == PROTO_ROLE_WORKER && c->peer_said_hello);
	c->n_drained++;
}

static void on_closed(void *userdata, int error)
{
	struct conv *c = userdata;

	CHECK(!c->dropped && c->n_closed == 0 && error <= 0);
	c->n_closed++;
	c->closed_error = error;
	if (c->free_in_closed)
		c->ch = channel_free(c->ch);
}

static const struct channel_ops ops = {
	.ready = on_ready,
	.status = on_status,
	.drained = on_drained,
	.closed = on_closed,
};

/* Dispatches until nothing is pending; a loop that never settles is a finding too. */
static void run_loop(void)
{
	int i, r;

	for (i = 0; i < LOOP_MAX; i++) {
		r = sd_event_run(event, 0);
		CHECK(r >= 0);
		if (r == 0)
			break;
	}
	CHECK(i < LOOP_MAX);
}

/* Notes what a message the peer sends is, for the callbacks' checks. */
static void note_sent(struct conv *c, const uint8_t *buf, size_t len, size_t n_fds)
{
	struct proto_hello hello;

	if (c->peer_said_hello || c->peer_sent_other)
		return;
	if (n_fds == 0 && proto_decode_hello(buf, len, &hello) == 0 && hello.role == c->role)
		c->peer_said_hello = true;
	else
		c->peer_sent_other = true;
}

static void peer_send(struct conv *c, const uint8_t *buf, size_t len, size_t n_fds)
{
	/* A full socket or a gone batond end only loses this message. */
	if (c->peer >= 0 && fuzz_send(c->peer, buf, len, n_fds) >= 0)
		note_sent(c, buf, len, n_fds);
}

/* A well-formed message of any type, so that inputs reach past the header checks. */
static int build_message(struct fuzz_input *in, struct conv *c, uint8_t *buf, size_t size)
{
	uint8_t kind = fuzz_u8(in);
	int len = -EINVAL;

	/* The low four bits choose the type, the high ones vary it. */
	switch ((kind & 0x0f) % 9) {
	case 0: {
		struct proto_hello m = {
			.pid = (pid_t)(fuzz_u32(in) & INT32_MAX),
			.role = (kind & 0x10) ? (c->role == PROTO_ROLE_WORKER ? PROTO_ROLE_FETCH
									      : PROTO_ROLE_WORKER)
					      : c->role,
			.flags = fuzz_u16(in),
		};

		len = proto_encode_hello(buf, size, &m);
		break;
	}
	case 1:
		len = proto_encode_ready(buf, size);
		break;
	case 2:
	case 3: {
		struct proto_status s = { .inflight = fuzz_u32(in) };
		struct proto_error e = { .code = fuzz_u16(in) % (PROTO_MAX_ERROR_CODE + 2) };
		char *text = fuzz_string(in, fuzz_u8(in) % TEXT_MAX, -1);

		if (!text)
			return -ENOMEM;
		(void)snprintf(s.text, sizeof(s.text), "%s", text);
		(void)snprintf(e.text, sizeof(e.text), "%s", text);
		free(text);
		len = (kind & 0x0f) % 9 == 2 ? proto_encode_status(buf, size, &s)
					     : proto_encode_error(buf, size, &e);
		break;
	}
	case 4:
		len = proto_encode_drained(buf, size);
		break;
	case 5:
		len = proto_encode_refresh(buf, size);
		break;
	case 6: {
		struct proto_drain d = { .timeout_usec = fuzz_u64(in) };

		len = proto_encode_drain(buf, size, &d);
		break;
	}
	case 7:
		len = proto_encode_listeners(buf, size, 0, 0, NULL, 0);
		break;
	case 8:
		len = proto_encode_ready(buf, size);
		if (len > 0)
			buf[4] = (uint8_t)(PROTO_VERSION_MAJOR + 1 + (kind >> 6));
		break;
	}
	/* A high bit asks for another major version on any type (ERROR then says why). */
	if (len > 0 && (kind & 0x20))
		buf[4] = (uint8_t)(PROTO_VERSION_MAJOR + 1);
	return len;
}

/* Reads what batond sent: every message well-formed, of a type batond sends, fds counted. */
static void peer_read(struct conv *c)
{
	static uint8_t buf[PROTO_MAX_MESSAGE];
	static struct proto_listeners ls;

	for (int i = 0; c->peer >= 0 && i < PEER_READ_MAX; i++) {
		int fds[PROTO_MAX_FDS_PER_MESSAGE];
		struct proto_header h;
		struct proto_drain d;
		struct proto_error e;
		size_t n_fds = 0;
		ssize_t n = proto_recv(c->peer, buf, sizeof(buf), fds, PROTO_MAX_FDS_PER_MESSAGE,
				       &n_fds);

		if (n == -EAGAIN || n == 0 || n == -ECONNRESET)
			return;
		CHECK(n > 0);
		CHECK(proto_decode_header(buf, (size_t)n, &h) == 0);
		switch (h.type) {
		case PROTO_LISTENERS:
			/* Only to a peer that said HELLO in its role. */
			CHECK(c->peer_said_hello);
			CHECK(proto_decode_listeners(buf, (size_t)n, &ls) == 0);
			CHECK(ls.count == n_fds && ls.total <= N_LISTENERS);
			c->n_received += ls.count;
			break;
		case PROTO_DRAIN:
			CHECK(c->role == PROTO_ROLE_WORKER && n_fds == 0);
			CHECK(proto_decode_drain(buf, (size_t)n, &d) == 0);
			break;
		case PROTO_ERROR:
			CHECK(n_fds == 0 && proto_decode_error(buf, (size_t)n, &e) == 0);
			break;
		default:
			CHECK(!"batond sent a type it never sends");
		}
		for (size_t j = 0; j < n_fds; j++)
			(void)close(fds[j]);
	}
}

static void close_peer(struct conv *c)
{
	if (c->peer < 0)
		return;
	/* Read first: fds in our receive queue are closed with it, but count what came. */
	peer_read(c);
	c->peer = safe_close(c->peer);
}

static void one_op(struct fuzz_input *in, struct conv *c)
{
	static uint8_t buf[RAW_MAX];
	uint8_t op = fuzz_u8(in);
	size_t n;
	int len, r;

	/* The low four bits choose the action, the high ones vary it. */
	switch ((op & 0x0f) % 9) {
	case 0: /* raw bytes */
		n = fuzz_u16(in) % RAW_MAX;
		if (n > in->size - in->off)
			n = in->size - in->off;
		memcpy(buf, in->data + in->off, n);
		in->off += n;
		peer_send(c, buf, n, 0);
		break;
	case 1: /* a well-formed message, maybe with fds attached */
	case 2:
		len = build_message(in, c, buf, sizeof(buf));
		if (len > 0)
			peer_send(c, buf, (size_t)len,
				  (op & 0x0f) % 9 == 2 ? 1 + (op >> 4) % FDS_MAX : 0);
		break;
	case 3:
		run_loop();
		break;
	case 4:
		peer_read(c);
		break;
	case 5: /* batond drains the worker (events.c, actions.c) */
		if (c->ch) {
			r = channel_drain(c->ch, fuzz_u64(in));
			CHECK(r <= 0);
			if (c->role != PROTO_ROLE_WORKER)
				CHECK(r == -ENOTCONN);
		}
		break;
	case 6: /* batonctl listen or retire (workers only: fdsock's set never changes) */
		if (c->ch && c->role == PROTO_ROLE_WORKER) {
			c->n_set = fuzz_u8(in) % (N_LISTENERS + 1);
			channel_set_listeners(c->ch, listeners, c->n_set);
		}
		break;
	case 7: /* the peer stops writing, or goes away */
		if (c->peer >= 0 && (op & 0x80))
			close_peer(c);
		else if (c->peer >= 0)
			(void)shutdown(c->peer, SHUT_WR);
		break;
	case 8: /* batond drops the channel: its worker was reaped */
		if (c->ch) {
			c->ch = channel_free(c->ch);
			c->dropped = c->n_closed == 0;
		}
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { .data = data, .size = size };
	int lowest_free_fd = fuzz_lowest_free_fd();
	uint8_t flags = fuzz_u8(&in);
	struct conv c = {
		.role = (flags & 1) ? PROTO_ROLE_FETCH : PROTO_ROLE_WORKER,
		.free_in_closed = flags & 2,
		.n_set = (flags >> 2) % (N_LISTENERS + 1),
	};
	int bend = -1, r;

	CHECK(channel_socketpair(&bend, &c.peer) == 0);
	CHECK(fcntl(c.peer, F_SETFL, O_NONBLOCK) == 0);
	if (c.role == PROTO_ROLE_WORKER)
		r = channel_new(event, bend, 4242, "fuzz worker", listeners, c.n_set, &ops, &c,
				&c.ch);
	else
		r = channel_new_fetch(event, bend, "fuzz fetch", listeners, c.n_set, &ops, &c,
				      &c.ch);
	CHECK(r == 0);

	for (int i = 0; i < OPS_MAX && fuzz_more(&in); i++)
		one_op(&in, &c);

	/* The peer reads what is left and leaves; batond notices, reports once, and frees. */
	run_loop();
	close_peer(&c);
	run_loop();
	/* Unless batond dropped it first, the channel saw the peer go and said so, once. */
	CHECK(c.dropped || c.n_closed == 1);
	CHECK(!c.ch || !c.free_in_closed);
	c.ch = channel_free(c.ch);
	run_loop();
	if (c.role == PROTO_ROLE_FETCH) {
		CHECK(c.n_ready == 0 && c.n_status == 0 && c.n_drained == 0);
		/* A fetch that ended well gave the whole set. */
		if (c.n_closed == 1 && c.closed_error == 0 && c.peer_said_hello)
			CHECK(c.n_received == c.n_set || c.n_received == 0);
	}
	CHECK(fuzz_lowest_free_fd() == lowest_free_fd);
	return 0;
}
