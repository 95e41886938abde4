/* SPDX-License-Identifier: MIT */
/* test_channel.c - batond's proto/ server on real sockets: a worker's channel and --fd-socket. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "channel.h"
#include "cleanup.h"
#include "fdpass.h"
#include "fdsock.h"
#include "listener.h"
#include "proto.h"

#define DEADLINE_USEC	   (10 * 1000 * 1000) /* longest wait for any one event */
#define STEP_USEC	   (50 * 1000)	      /* one sd_event_run() while waiting */
#define IDLE_USEC	   (50 * 1000)	      /* how long "nothing happens" is watched */
#define MAX_TEST_LISTENERS 300		      /* listeners in the largest set: two messages */
#define NOBODY		   ((uid_t)65534)     /* nobody and nogroup on Debian */
#define OTHER_ID	   12345	      /* a uid or gid nobody here has */
#define EXTRA_GROUP	   4242		      /* a supplementary group given to a child */
#define DIR_MODEL	   "/tmp/baton-unit-channel-XXXXXX"
#define LOG_MAX		   8192 /* bytes of captured stderr */
#define LABEL		   "test worker"

/* --- time and the loop --- */

static uint64_t now_usec(void)
{
	struct timespec ts;

	ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Runs the loop one step at a time until cond(arg) holds; fails the test at the deadline. */
static void run_until(sd_event *e, bool (*cond)(void *), void *arg, const char *what)
{
	uint64_t deadline = now_usec() + DEADLINE_USEC;

	while (!cond(arg)) {
		ck_assert_msg(now_usec() < deadline, "timed out waiting for %s", what);
		ck_assert_int_ge(sd_event_run(e, STEP_USEC), 0);
	}
}

/* True if the loop dispatches nothing for IDLE_USEC: no source is ready, none spins. */
static bool loop_is_idle(sd_event *e)
{
	return sd_event_run(e, IDLE_USEC) == 0;
}

/* --- listeners: real sockets of every kind --- */

static struct listener *make_listeners(size_t n, bool mixed)
{
	struct listener *l = calloc(n ? n : 1, sizeof(*l));

	ck_assert_ptr_nonnull(l);
	for (size_t i = 0; i < n; i++) {
		char arg[128];
		int r;

		if (mixed && i % 3 == 1)
			(void)snprintf(arg, sizeof(arg), "dns%zu=udp://127.0.0.1:0", i);
		else if (mixed && i % 3 == 2)
			(void)snprintf(arg, sizeof(arg), "sock%zu=unix:@baton-unit-channel-%d-%zu",
				       i, (int)getpid(), i);
		else
			(void)snprintf(arg, sizeof(arg), "web%zu=tcp://127.0.0.1:0", i);
		ck_assert_int_eq(listener_parse(arg, (unsigned)i, &l[i]), 0);
		r = listener_bind(&l[i], 16);
		ck_assert_msg(r == 0, "bind %s: %s", arg, strerror(-r));
	}
	return l;
}

static void free_listeners(struct listener *l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		listener_close(&l[i]);
	free(l);
}

static enum proto_kind proto_kind_of(enum listener_kind k)
{
	return k == LISTENER_TCP   ? PROTO_KIND_TCP
	       : k == LISTENER_UDP ? PROTO_KIND_UDP
				   : PROTO_KIND_UNIX;
}

/* The fd we got is the very socket batond holds: the same inode, the same address. */
static void assert_same_socket(int got, int want)
{
	struct stat a, b;
	union listener_addr x, y;
	socklen_t xl = sizeof(x), yl = sizeof(y);

	ck_assert_int_eq(fstat(got, &a), 0);
	ck_assert_int_eq(fstat(want, &b), 0);
	ck_assert(a.st_dev == b.st_dev && a.st_ino == b.st_ino);
	ck_assert_int_eq(getsockname(got, &x.sa, &xl), 0);
	ck_assert_int_eq(getsockname(want, &y.sa, &yl), 0);
	ck_assert_int_eq(xl, yl);
	ck_assert_mem_eq(&x, &y, xl);
	ck_assert(fcntl(got, F_GETFD) & FD_CLOEXEC);
}

/* --- the worker's side of a channel --- */

struct seen {
	unsigned ready, drained, status, closed;
	int closed_error;
	uint32_t inflight;
	char text[PROTO_TEXT_MAX + 1];
	struct channel **free_on_closed; /* the closed callback frees *free_on_closed */
	struct channel **free_on_status; /* the status callback frees *free_on_status */
};

static void on_ready(void *userdata)
{
	((struct seen *)userdata)->ready++;
}

static void on_drained(void *userdata)
{
	((struct seen *)userdata)->drained++;
}

static void on_status(void *userdata, uint32_t inflight, const char *text)
{
	struct seen *s = userdata;

	s->status++;
	s->inflight = inflight;
	(void)snprintf(s->text, sizeof(s->text), "%s", text);
	if (s->free_on_status)
		*s->free_on_status = channel_free(*s->free_on_status);
}

static void on_closed(void *userdata, int error)
{
	struct seen *s = userdata;

	s->closed++;
	s->closed_error = error;
	if (s->free_on_closed)
		*s->free_on_closed = channel_free(*s->free_on_closed);
}

static const struct channel_ops test_ops = {
	.ready = on_ready,
	.status = on_status,
	.drained = on_drained,
	.closed = on_closed,
};

static bool is_closed(void *arg)
{
	return ((struct seen *)arg)->closed > 0;
}

/* A worker's channel and everything around it. */
struct fx {
	int n_fds_before;
	sd_event *e;
	struct listener *l;
	size_t n;
	struct channel *ch;
	int worker; /* the worker's end, non-blocking here so the test never hangs */
	struct seen seen;
};

static void set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	ck_assert_int_ge(flags, 0);
	ck_assert_int_eq(fcntl(fd, F_SETFL, flags | O_NONBLOCK), 0);
}

/* Sets up listeners and the pair; batond_end is returned for the test to hand to channel_new. */
static int fx_begin(struct fx *f, size_t n, bool mixed)
{
	int batond_end;

	memset(f, 0, sizeof(*f));
	(void)signal(SIGPIPE, SIG_IGN);
	f->n_fds_before = unit_count_fds();
	ck_assert_int_ge(sd_event_new(&f->e), 0);
	f->n = n;
	f->l = make_listeners(n, mixed);
	ck_assert_int_eq(channel_socketpair(&batond_end, &f->worker), 0);
	set_nonblocking(f->worker);
	return batond_end;
}

static void fx_setup(struct fx *f, size_t n, bool mixed)
{
	int fd = fx_begin(f, n, mixed);

	ck_assert_int_eq(
		channel_new(f->e, fd, getpid(), LABEL, f->l, f->n, &test_ops, &f->seen, &f->ch), 0);
}

static void fx_end(struct fx *f)
{
	f->ch = channel_free(f->ch);
	close_fdp(&f->worker);
	free_listeners(f->l, f->n);
	f->e = sd_event_unref(f->e);
	ck_assert_int_eq(unit_count_fds(), f->n_fds_before);
}

/*
 * Receives one message on fd, running the loop while there is none. Returns its length, 0 at
 * the close, or -ECONNRESET; fds[] gets what came with it.
 */
static ssize_t recv_one(sd_event *e, int fd, uint8_t *buf, size_t size, int *fds, size_t *n_fds)
{
	uint64_t deadline = now_usec() + DEADLINE_USEC;

	for (;;) {
		ssize_t n =
			proto_recv(fd, buf, size, fds, fds ? PROTO_MAX_FDS_PER_MESSAGE : 0, n_fds);

		if (n != -EAGAIN)
			return n;
		ck_assert_msg(now_usec() < deadline, "timed out waiting for a message");
		ck_assert_int_ge(sd_event_run(e, STEP_USEC), 0);
	}
}

static void send_msg(int fd, const uint8_t *buf, int len, const int *fds, size_t n_fds)
{
	ck_assert_int_gt(len, 0);
	ck_assert_int_eq(proto_send(fd, buf, (size_t)len, fds, n_fds), 0);
}

static void send_hello(int fd, enum proto_role role)
{
	struct proto_hello h = { .pid = getpid(), .role = role };
	uint8_t buf[64];

	send_msg(fd, buf, proto_encode_hello(buf, sizeof(buf), &h), NULL, 0);
}

static void send_status(int fd, uint32_t inflight, const char *text)
{
	struct proto_status m = { .inflight = inflight };
	uint8_t buf[CHANNEL_RECV_MAX];

	(void)snprintf(m.text, sizeof(m.text), "%s", text);
	send_msg(fd, buf, proto_encode_status(buf, sizeof(buf), &m), NULL, 0);
}

/*
 * Receives a whole LISTENERS set as a worker does and checks it against want[0..n): order,
 * names, kinds, addresses, and that each fd is the listener's own socket. Returns the number of
 * messages it took. Every received fd is closed again.
 */
static size_t expect_listeners(sd_event *e, int fd, const struct listener *want, size_t n)
{
	static struct proto_listeners m; /* 130 KiB: not on the stack */
	uint8_t *buf = malloc(PROTO_MAX_MESSAGE);
	size_t got = 0, messages = 0;

	ck_assert_ptr_nonnull(buf);
	do {
		int fds[PROTO_MAX_FDS_PER_MESSAGE];
		size_t n_fds = 0;
		ssize_t len = recv_one(e, fd, buf, PROTO_MAX_MESSAGE, fds, &n_fds);

		ck_assert_msg(len > 0, "no LISTENERS: %zd", len);
		ck_assert_int_eq(proto_decode_listeners(buf, (size_t)len, &m), 0);
		ck_assert_uint_eq(m.first, got);
		ck_assert_uint_eq(m.total, n);
		ck_assert_uint_eq(m.count, n_fds);
		for (size_t i = 0; i < m.count; i++) {
			const struct listener *l = &want[got + i];

			ck_assert_str_eq(m.entry[i].name, l->name);
			ck_assert_str_eq(m.entry[i].address, l->spec);
			ck_assert_int_eq(m.entry[i].kind, proto_kind_of(l->kind));
			assert_same_socket(fds[i], l->fd);
			close_fdp(&fds[i]);
		}
		got += m.count;
		messages++;
	} while (got < n);
	free(buf);
	return messages;
}

/* The next message is ERROR with code; then the peer closes. */
static void expect_error_then_close(sd_event *e, int fd, int code)
{
	uint8_t buf[CHANNEL_RECV_MAX];
	struct proto_error err;
	size_t n_fds = 0;
	int fds[PROTO_MAX_FDS_PER_MESSAGE];
	ssize_t len = recv_one(e, fd, buf, sizeof(buf), fds, &n_fds);

	ck_assert_msg(len > 0, "expected ERROR, got %zd", len);
	ck_assert_uint_eq(n_fds, 0);
	ck_assert_int_eq(proto_decode_error(buf, (size_t)len, &err), 0);
	ck_assert_int_eq(err.code, code);
	ck_assert_int_eq(recv_one(e, fd, buf, sizeof(buf), fds, &n_fds), 0);
}

/* The channel closed with error, after telling the peer ERROR(code). */
static void expect_cut_off(struct fx *f, int code, int error)
{
	run_until(f->e, is_closed, &f->seen, "closed");
	ck_assert_int_eq(f->seen.closed, 1);
	ck_assert_int_eq(f->seen.closed_error, error);
	expect_error_then_close(f->e, f->worker, code);
	ck_assert_int_eq(channel_drain(f->ch, 0), -ENOTCONN);
}

/* HELLO, then the whole set. */
static void handshake(struct fx *f)
{
	send_hello(f->worker, PROTO_ROLE_WORKER);
	(void)expect_listeners(f->e, f->worker, f->l, f->n);
}

/* --- channel_socketpair --- */

START_TEST(socketpair_makes_seqpacket_ends_cloexec_and_only_batonds_nonblocking)
{
	int n_fds = unit_count_fds();
	int b, w, type = 0;
	socklen_t len = sizeof(type);

	ck_assert_int_eq(channel_socketpair(&b, &w), 0);
	ck_assert(fcntl(b, F_GETFD) & FD_CLOEXEC);
	ck_assert(fcntl(w, F_GETFD) & FD_CLOEXEC);
	ck_assert(fcntl(b, F_GETFL) & O_NONBLOCK);
	ck_assert(!(fcntl(w, F_GETFL) & O_NONBLOCK));
	ck_assert_int_eq(getsockopt(b, SOL_SOCKET, SO_TYPE, &type, &len), 0);
	ck_assert_int_eq(type, SOCK_SEQPACKET);
	ck_assert_int_eq(close(b), 0);
	ck_assert_int_eq(close(w), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

/* --- HELLO -> LISTENERS --- */

START_TEST(hello_gets_the_one_listener_with_its_own_socket)
{
	struct fx f;

	fx_setup(&f, 1, false);
	send_hello(f.worker, PROTO_ROLE_WORKER);
	ck_assert_uint_eq(expect_listeners(f.e, f.worker, f.l, f.n), 1);
	ck_assert(loop_is_idle(f.e));
	ck_assert_int_eq(f.seen.closed, 0);
	fx_end(&f);
}
END_TEST

START_TEST(hello_gets_three_listeners_of_every_kind_in_order)
{
	struct fx f;

	fx_setup(&f, 3, true);
	ck_assert_int_eq(f.l[0].kind, LISTENER_TCP);
	ck_assert_int_eq(f.l[1].kind, LISTENER_UDP);
	ck_assert_int_eq(f.l[2].kind, LISTENER_UNIX);
	send_hello(f.worker, PROTO_ROLE_WORKER);
	ck_assert_uint_eq(expect_listeners(f.e, f.worker, f.l, f.n), 1);
	fx_end(&f);
}
END_TEST

START_TEST(three_hundred_listeners_are_split_over_two_messages)
{
	struct fx f;

	fx_setup(&f, MAX_TEST_LISTENERS, false);
	send_hello(f.worker, PROTO_ROLE_WORKER);
	ck_assert_uint_eq(expect_listeners(f.e, f.worker, f.l, f.n), 2);
	ck_assert(loop_is_idle(f.e));
	fx_end(&f);
}
END_TEST

START_TEST(no_listeners_is_one_empty_set)
{
	struct fx f;
	uint8_t buf[CHANNEL_RECV_MAX];
	int fds[PROTO_MAX_FDS_PER_MESSAGE];
	size_t n_fds = 1;
	static struct proto_listeners m;
	ssize_t len;

	fx_setup(&f, 0, false);
	send_hello(f.worker, PROTO_ROLE_WORKER);
	len = recv_one(f.e, f.worker, buf, sizeof(buf), fds, &n_fds);
	ck_assert_int_gt(len, 0);
	ck_assert_uint_eq(n_fds, 0);
	ck_assert_int_eq(proto_decode_listeners(buf, (size_t)len, &m), 0);
	ck_assert_uint_eq(m.total, 0);
	ck_assert_uint_eq(m.count, 0);
	fx_end(&f);
}
END_TEST

START_TEST(a_worker_that_reads_late_gets_the_set_and_queued_drains_when_it_reads)
{
	struct fx f;
	int fd = fx_begin(&f, 3, true);
	uint8_t buf[PROTO_HEADER_SIZE], rbuf[CHANNEL_RECV_MAX];
	int len = proto_encode_ready(buf, sizeof(buf));
	unsigned n_junk = 0;
	int r;

	/* Fill the worker's direction before the channel exists: its first send must wait. */
	while ((r = proto_send(fd, buf, (size_t)len, NULL, 0)) == 0)
		n_junk++;
	ck_assert_int_eq(r, -EAGAIN);
	ck_assert_uint_gt(n_junk, 0);
	ck_assert_int_eq(channel_new(f.e, fd, getpid(), LABEL, f.l, f.n, &test_ops, &f.seen, &f.ch),
			 0);
	send_hello(f.worker, PROTO_ROLE_WORKER);
	ck_assert_int_gt(sd_event_run(f.e, STEP_USEC), 0); /* HELLO read, LISTENERS held back */
	ck_assert(loop_is_idle(f.e));			   /* waiting, not spinning on EPOLLOUT */
	ck_assert_int_eq(f.seen.closed, 0);
	/* DRAINs asked for meanwhile wait behind the set, in order. */
	for (unsigned i = 0; i < CHANNEL_MAX_QUEUED; i++)
		ck_assert_int_eq(channel_drain(f.ch, i), 0);
	for (unsigned i = 0; i < n_junk; i++)
		ck_assert_int_eq(proto_recv(f.worker, rbuf, sizeof(rbuf), NULL, 0, NULL), len);
	(void)expect_listeners(f.e, f.worker, f.l, f.n);
	for (unsigned i = 0; i < CHANNEL_MAX_QUEUED; i++) {
		struct proto_drain d;
		ssize_t n = recv_one(f.e, f.worker, rbuf, sizeof(rbuf), NULL, NULL);

		ck_assert_int_gt(n, 0);
		ck_assert_int_eq(proto_decode_drain(rbuf, (size_t)n, &d), 0);
		ck_assert_uint_eq(d.timeout_usec, i);
	}
	ck_assert(loop_is_idle(f.e)); /* all sent: no EPOLLOUT left armed */
	ck_assert_int_eq(f.seen.closed, 0);
	fx_end(&f);
}
END_TEST

START_TEST(with_a_small_send_buffer_each_listeners_message_waits_for_the_one_before)
{
	struct fx f;
	int fd = fx_begin(&f, MAX_TEST_LISTENERS, false);
	static uint8_t buf[PROTO_MAX_MESSAGE];
	static struct proto_listeners m;
	int fds[PROTO_MAX_FDS_PER_MESSAGE];
	size_t n_fds = 0, first_len = PROTO_HEADER_SIZE + 6;
	int size;
	ssize_t len;

	/*
	 * A send buffer just over the first message: the kernel takes one message whatever its
	 * size below the buffer, but with that message's memory (more than its bytes) still
	 * unread, no second one. setsockopt() doubles what it is given.
	 */
	for (size_t i = 0; i < PROTO_MAX_LISTENERS_PER_MESSAGE; i++)
		first_len += 3 + strlen(f.l[i].name) + strlen(f.l[i].spec);
	size = (int)(first_len + 64) / 2;
	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)), 0);
	ck_assert_int_eq(channel_new(f.e, fd, getpid(), LABEL, f.l, f.n, &test_ops, &f.seen, &f.ch),
			 0);
	send_hello(f.worker, PROTO_ROLE_WORKER);
	ck_assert_int_gt(sd_event_run(f.e, STEP_USEC), 0);
	ck_assert(loop_is_idle(f.e));
	/* One message is there; the second waits until the worker has read it. */
	len = proto_recv(f.worker, buf, sizeof(buf), fds, PROTO_MAX_FDS_PER_MESSAGE, &n_fds);
	ck_assert_int_gt(len, 0);
	ck_assert_int_eq(proto_decode_listeners(buf, (size_t)len, &m), 0);
	ck_assert_uint_eq(m.first, 0);
	ck_assert_uint_lt(m.count, MAX_TEST_LISTENERS);
	for (size_t i = 0; i < n_fds; i++)
		close_fdp(&fds[i]);
	ck_assert_int_eq(
		proto_recv(f.worker, buf, sizeof(buf), fds, PROTO_MAX_FDS_PER_MESSAGE, &n_fds),
		-EAGAIN);
	len = recv_one(f.e, f.worker, buf, sizeof(buf), fds, &n_fds);
	ck_assert_int_gt(len, 0);
	ck_assert_int_eq(proto_decode_listeners(buf, (size_t)len, &m), 0);
	ck_assert_uint_eq(m.first + m.count, MAX_TEST_LISTENERS);
	ck_assert_uint_eq(n_fds, m.count);
	for (size_t i = 0; i < n_fds; i++) {
		assert_same_socket(fds[i], f.l[m.first + i].fd);
		close_fdp(&fds[i]);
	}
	ck_assert_int_eq(f.seen.closed, 0);
	fx_end(&f);
}
END_TEST

/* --- READY, STATUS, DRAINED, DRAIN --- */

static bool is_drained(void *arg)
{
	return ((struct seen *)arg)->drained > 0;
}

START_TEST(ready_status_and_drained_reach_the_ops)
{
	struct fx f;
	uint8_t buf[PROTO_HEADER_SIZE];

	fx_setup(&f, 1, false);
	handshake(&f);
	send_msg(f.worker, buf, proto_encode_ready(buf, sizeof(buf)), NULL, 0);
	send_status(f.worker, 5, "serving caf\xc3\xa9");
	send_status(f.worker, 2, "draining");
	send_msg(f.worker, buf, proto_encode_drained(buf, sizeof(buf)), NULL, 0);
	run_until(f.e, is_drained, &f.seen, "DRAINED");
	ck_assert_uint_eq(f.seen.ready, 1);
	ck_assert_uint_eq(f.seen.status, 2);
	ck_assert_uint_eq(f.seen.inflight, 2);
	ck_assert_str_eq(f.seen.text, "draining");
	ck_assert_uint_eq(f.seen.drained, 1);
	ck_assert_uint_eq(f.seen.closed, 0);
	fx_end(&f);
}
END_TEST

static bool has_status(void *arg)
{
	return ((struct seen *)arg)->status > 0;
}

START_TEST(status_before_ready_is_accepted)
{
	struct fx f;

	fx_setup(&f, 1, false);
	handshake(&f);
	send_status(f.worker, 0, "loading");
	run_until(f.e, has_status, &f.seen, "STATUS");
	ck_assert_str_eq(f.seen.text, "loading");
	ck_assert_uint_eq(f.seen.ready, 0);
	ck_assert_uint_eq(f.seen.closed, 0);
	fx_end(&f);
}
END_TEST

START_TEST(drain_reaches_the_worker_with_its_timeout)
{
	static const uint64_t timeouts[] = { 30 * 1000 * 1000, 0, PROTO_DRAIN_NO_TIMEOUT };
	struct fx f;

	fx_setup(&f, 1, false);
	ck_assert_int_eq(channel_drain(f.ch, 1), -ENOTCONN); /* no HELLO yet */
	handshake(&f);
	for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
		uint8_t buf[CHANNEL_RECV_MAX];
		struct proto_drain d;
		ssize_t len;

		ck_assert_int_eq(channel_drain(f.ch, timeouts[i]), 0);
		len = recv_one(f.e, f.worker, buf, sizeof(buf), NULL, NULL);
		ck_assert_int_gt(len, 0);
		ck_assert_int_eq(proto_decode_drain(buf, (size_t)len, &d), 0);
		ck_assert_uint_eq(d.timeout_usec, timeouts[i]);
	}
	fx_end(&f);
}
END_TEST

/* --- the end of a conversation --- */

START_TEST(a_worker_that_closes_is_reported_closed_with_0)
{
	struct fx f;

	fx_setup(&f, 1, false);
	handshake(&f);
	close_fdp(&f.worker);
	/* Not noticed by the loop yet, but a DRAIN cannot reach it: the caller signals instead. */
	ck_assert_int_eq(channel_drain(f.ch, 1), -ENOTCONN);
	run_until(f.e, is_closed, &f.seen, "closed");
	ck_assert_int_eq(f.seen.closed_error, 0);
	ck_assert_int_eq(channel_drain(f.ch, 1), -ENOTCONN);
	ck_assert(loop_is_idle(f.e));
	ck_assert_int_eq(f.seen.closed, 1);
	fx_end(&f);
}
END_TEST

START_TEST(a_worker_that_closes_before_hello_is_reported_closed_with_0)
{
	struct fx f;

	fx_setup(&f, 1, false);
	close_fdp(&f.worker);
	run_until(f.e, is_closed, &f.seen, "closed");
	ck_assert_int_eq(f.seen.closed_error, 0);
	fx_end(&f);
}
END_TEST

START_TEST(messages_before_a_close_are_all_delivered_first)
{
	struct fx f;
	uint8_t buf[PROTO_HEADER_SIZE];

	fx_setup(&f, 1, false);
	handshake(&f);
	send_status(f.worker, 0, "done");
	send_msg(f.worker, buf, proto_encode_drained(buf, sizeof(buf)), NULL, 0);
	close_fdp(&f.worker);
	run_until(f.e, is_closed, &f.seen, "closed");
	ck_assert_uint_eq(f.seen.status, 1);
	ck_assert_uint_eq(f.seen.drained, 1);
	ck_assert_int_eq(f.seen.closed_error, 0);
	fx_end(&f);
}
END_TEST

START_TEST(another_major_version_gets_error_eprotonosupport_then_a_close)
{
	struct fx f;
	uint8_t buf[64];
	int len;

	fx_setup(&f, 1, false);
	len = proto_encode_ready(buf, sizeof(buf));
	buf[4] = 2;		      /* major */
	buf[6] = 0x34, buf[7] = 0x12; /* a type 2.0 may have, 1.0 does not */
	send_msg(f.worker, buf, len, NULL, 0);
	expect_cut_off(&f, EPROTONOSUPPORT, -EPROTONOSUPPORT);
	fx_end(&f);
}
END_TEST

START_TEST(a_message_before_hello_gets_error_eproto_then_a_close)
{
	struct fx f;
	uint8_t buf[PROTO_HEADER_SIZE];

	fx_setup(&f, 1, false);
	send_msg(f.worker, buf, proto_encode_ready(buf, sizeof(buf)), NULL, 0);
	expect_cut_off(&f, EPROTO, -EPROTO);
	fx_end(&f);
}
END_TEST

START_TEST(fds_sent_by_the_worker_are_closed_and_end_the_channel)
{
	struct fx f;
	int p[2];

	fx_setup(&f, 1, false);
	handshake(&f);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	{
		struct proto_status m = { .inflight = 1, .text = "have an fd" };
		uint8_t buf[CHANNEL_RECV_MAX];

		send_msg(f.worker, buf, proto_encode_status(buf, sizeof(buf), &m), &p[0], 1);
	}
	close_fdp(&p[0]);
	ck_assert(!unit_read_end_is_gone(p[1])); /* in flight: the message holds it */
	expect_cut_off(&f, EPROTO, -EPROTO);
	ck_assert_uint_eq(f.seen.status, 0);
	ck_assert(unit_read_end_is_gone(p[1]));
	close_fdp(&p[1]);
	fx_end(&f);
}
END_TEST

START_TEST(an_fd_on_hello_is_closed_and_ends_the_channel)
{
	struct fx f;
	int p[2];
	struct proto_hello h = { .pid = getpid(), .role = PROTO_ROLE_WORKER };
	uint8_t buf[64];

	fx_setup(&f, 1, false);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	send_msg(f.worker, buf, proto_encode_hello(buf, sizeof(buf), &h), &p[0], 1);
	close_fdp(&p[0]);
	expect_cut_off(&f, EPROTO, -EPROTO);
	ck_assert(unit_read_end_is_gone(p[1]));
	close_fdp(&p[1]);
	fx_end(&f);
}
END_TEST

START_TEST(garbage_gets_error_ebadmsg_then_a_close)
{
	struct fx f;
	static const uint8_t garbage[] = "GET / HTTP/1.0\r\n\r\n";

	fx_setup(&f, 1, false);
	send_msg(f.worker, garbage, (int)sizeof(garbage), NULL, 0);
	expect_cut_off(&f, EBADMSG, -EBADMSG);
	fx_end(&f);
}
END_TEST

START_TEST(a_malformed_body_after_hello_gets_error_ebadmsg)
{
	struct fx f;
	uint8_t buf[CHANNEL_RECV_MAX];
	int len;

	fx_setup(&f, 1, false);
	handshake(&f);
	{
		struct proto_status m = { .inflight = 1, .text = "x" };

		len = proto_encode_status(buf, sizeof(buf), &m);
	}
	buf[len - 1] = '\n'; /* one line only */
	send_msg(f.worker, buf, len, NULL, 0);
	expect_cut_off(&f, EBADMSG, -EBADMSG);
	ck_assert_uint_eq(f.seen.status, 0);
	fx_end(&f);
}
END_TEST

START_TEST(an_oversized_message_is_refused)
{
	struct fx f;
	static uint8_t big[CHANNEL_RECV_MAX + 1];

	fx_setup(&f, 1, false);
	handshake(&f);
	memset(big, 'x', sizeof(big));
	send_msg(f.worker, big, (int)sizeof(big), NULL, 0);
	expect_cut_off(&f, EBADMSG, -EMSGSIZE);
	fx_end(&f);
}
END_TEST

START_TEST(messages_only_batond_sends_are_refused_from_a_worker)
{
	static const uint16_t types[] = { PROTO_LISTENERS, PROTO_DRAIN };

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		struct fx f;
		uint8_t buf[CHANNEL_RECV_MAX];
		int len;

		fx_setup(&f, 1, false);
		handshake(&f);
		if (types[i] == PROTO_DRAIN) {
			struct proto_drain d = { .timeout_usec = 1 };

			len = proto_encode_drain(buf, sizeof(buf), &d);
		} else {
			len = proto_encode_listeners(buf, sizeof(buf), 0, 0, NULL, 0);
		}
		send_msg(f.worker, buf, len, NULL, 0);
		expect_cut_off(&f, EPROTO, -EPROTO);
		fx_end(&f);
	}
}
END_TEST

START_TEST(a_second_hello_is_refused)
{
	struct fx f;

	fx_setup(&f, 1, false);
	handshake(&f);
	send_hello(f.worker, PROTO_ROLE_WORKER);
	expect_cut_off(&f, EPROTO, -EPROTO);
	fx_end(&f);
}
END_TEST

START_TEST(hello_as_fetch_on_a_worker_channel_is_refused)
{
	struct fx f;

	fx_setup(&f, 1, false);
	send_hello(f.worker, PROTO_ROLE_FETCH);
	expect_cut_off(&f, EPROTO, -EPROTO);
	fx_end(&f);
}
END_TEST

START_TEST(an_error_from_the_worker_ends_the_channel_with_its_code)
{
	struct fx f;
	struct proto_error m = { .code = ENOMEM, .text = "out of memory" };
	uint8_t buf[CHANNEL_RECV_MAX];

	fx_setup(&f, 1, false);
	handshake(&f);
	send_msg(f.worker, buf, proto_encode_error(buf, sizeof(buf), &m), NULL, 0);
	run_until(f.e, is_closed, &f.seen, "closed");
	ck_assert_int_eq(f.seen.closed_error, -ENOMEM);
	/* No answer to an ERROR: just the close. */
	ck_assert_int_eq(recv_one(f.e, f.worker, buf, sizeof(buf), NULL, NULL), 0);
	fx_end(&f);
}
END_TEST

START_TEST(a_worker_that_does_not_read_is_cut_off_with_enobufs)
{
	struct fx f;
	unsigned sent = 0;
	uint8_t buf[CHANNEL_RECV_MAX];
	ssize_t len;
	int r;

	fx_setup(&f, 1, false);
	handshake(&f);
	while ((r = channel_drain(f.ch, sent)) == 0) {
		sent++;
		ck_assert_uint_lt(sent, 100000);
	}
	ck_assert_int_eq(r, -ENOBUFS);
	ck_assert_uint_gt(sent, CHANNEL_MAX_QUEUED);
	/* Reported from the loop, never from inside channel_drain(). */
	ck_assert_uint_eq(f.seen.closed, 0);
	run_until(f.e, is_closed, &f.seen, "closed");
	ck_assert_int_eq(f.seen.closed_error, -ENOBUFS);
	ck_assert_int_eq(channel_drain(f.ch, 1), -ENOTCONN);
	/* What was in the socket stays readable, in order; then the close. */
	for (unsigned i = 0; i < sent - CHANNEL_MAX_QUEUED; i++) {
		struct proto_drain d;

		len = recv_one(f.e, f.worker, buf, sizeof(buf), NULL, NULL);
		ck_assert_int_gt(len, 0);
		ck_assert_int_eq(proto_decode_drain(buf, (size_t)len, &d), 0);
		ck_assert_uint_eq(d.timeout_usec, i);
	}
	ck_assert_int_eq(recv_one(f.e, f.worker, buf, sizeof(buf), NULL, NULL), 0);
	fx_end(&f);
}
END_TEST

START_TEST(reads_are_bounded_per_wakeup)
{
	struct fx f;
	const unsigned n = 3 * CHANNEL_MAX_READS;

	fx_setup(&f, 1, false);
	handshake(&f);
	for (unsigned i = 0; i < n; i++)
		send_status(f.worker, i, "tick");
	ck_assert_int_gt(sd_event_run(f.e, STEP_USEC), 0);
	ck_assert_uint_eq(f.seen.status, CHANNEL_MAX_READS);
	while (f.seen.status < n)
		ck_assert_int_gt(sd_event_run(f.e, STEP_USEC), 0);
	ck_assert_uint_eq(f.seen.inflight, n - 1);
	fx_end(&f);
}
END_TEST

START_TEST(the_closed_callback_may_free_the_channel)
{
	struct fx f;

	fx_setup(&f, 1, false);
	f.seen.free_on_closed = &f.ch;
	send_hello(f.worker, PROTO_ROLE_FETCH); /* refused */
	run_until(f.e, is_closed, &f.seen, "closed");
	ck_assert_ptr_null(f.ch);
	ck_assert(loop_is_idle(f.e));
	fx_end(&f);
}
END_TEST

START_TEST(a_status_callback_may_free_the_channel_with_more_messages_pending)
{
	struct fx f;

	fx_setup(&f, 1, false);
	handshake(&f);
	f.seen.free_on_status = &f.ch;
	send_status(f.worker, 1, "a");
	send_status(f.worker, 2, "b");
	send_status(f.worker, 3, "c");
	ck_assert_int_gt(sd_event_run(f.e, STEP_USEC), 0);
	ck_assert_ptr_null(f.ch);
	ck_assert_uint_eq(f.seen.status, 1);
	ck_assert_uint_eq(f.seen.closed, 0);
	ck_assert(loop_is_idle(f.e));
	fx_end(&f);
}
END_TEST

START_TEST(a_cut_off_channel_may_be_freed_before_the_loop_reports_it)
{
	struct fx f;

	fx_setup(&f, 1, false);
	handshake(&f);
	while (channel_drain(f.ch, 0) == 0)
		;
	f.ch = channel_free(f.ch);
	ck_assert(loop_is_idle(f.e));
	ck_assert_uint_eq(f.seen.closed, 0);
	fx_end(&f);
}
END_TEST

START_TEST(channel_new_refuses_bad_arguments_and_consumes_the_fd)
{
	struct fx f;
	struct channel *ch = NULL;
	int sv[2], fd;

	fd = fx_begin(&f, 2, false);
	/* A listener that is not bound cannot be handed over. */
	{
		int lfd = f.l[1].fd;

		f.l[1].fd = -1;
		ck_assert_int_eq(
			channel_new(f.e, fd, getpid(), LABEL, f.l, f.n, &test_ops, NULL, &ch),
			-EINVAL);
		f.l[1].fd = lfd;
	}
	/* One record per message: a stream socket will not do. */
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	close_fdp(&sv[1]);
	ck_assert_int_eq(channel_new(f.e, sv[0], getpid(), LABEL, f.l, f.n, &test_ops, NULL, &ch),
			 -EPROTOTYPE);
	ck_assert_ptr_null(ch);
	fx_end(&f); /* the fd count proves both fds were consumed */
}
END_TEST

START_TEST(channel_free_accepts_null)
{
	ck_assert_ptr_null(channel_free(NULL));
}
END_TEST

/* --- fdsock: --fd-socket --- */

struct fsx {
	int n_fds_before;
	sd_event *e;
	struct listener *l;
	size_t n;
	char dir[sizeof(DIR_MODEL)];
	char path[sizeof(DIR_MODEL) + 16];
	struct fdsock *s;
};

static void fsx_setup(struct fsx *f, size_t n, const uid_t *uids, size_t n_uids, const gid_t *gids,
		      size_t n_gids)
{
	int r;

	memset(f, 0, sizeof(*f));
	(void)signal(SIGPIPE, SIG_IGN);
	f->n_fds_before = unit_count_fds();
	ck_assert_int_ge(sd_event_new(&f->e), 0);
	f->n = n;
	f->l = make_listeners(n, true);
	strcpy(f->dir, DIR_MODEL);
	ck_assert_ptr_nonnull(mkdtemp(f->dir));
	/* Others must reach the socket file for its own mode and SO_PEERCRED to be what decides. */
	ck_assert_int_eq(chmod(f->dir, 0755), 0);
	(void)snprintf(f->path, sizeof(f->path), "%s/fd.sock", f->dir);
	r = fdsock_new(f->e, f->path, f->l, f->n, uids, n_uids, gids, n_gids, &f->s);
	ck_assert_msg(r == 0, "fdsock_new: %s", strerror(-r));
}

static void fsx_end(struct fsx *f)
{
	struct stat st;

	f->s = fdsock_free(f->s);
	ck_assert_int_eq(lstat(f->path, &st), -1); /* the file went with it */
	ck_assert_int_eq(rmdir(f->dir), 0);
	free_listeners(f->l, f->n);
	f->e = sd_event_unref(f->e);
	ck_assert_int_eq(unit_count_fds(), f->n_fds_before);
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	ck_assert_int_ge(fd, 0);
	strcpy(sa.sun_path, path);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

START_TEST(a_fetch_gets_every_listener_then_a_close)
{
	struct fsx f;
	struct stat st;
	uint8_t buf[16];
	int fd;

	fsx_setup(&f, 3, NULL, 0, NULL, 0);
	ck_assert_int_eq(lstat(f.path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_int_eq(st.st_mode & 0777, 0600); /* no allow list: only root and us */
	fd = connect_to(f.path);
	send_hello(fd, PROTO_ROLE_FETCH);
	ck_assert_uint_eq(expect_listeners(f.e, fd, f.l, f.n), 1);
	ck_assert_int_eq(recv_one(f.e, fd, buf, sizeof(buf), NULL, NULL), 0);
	close_fdp(&fd);
	/* Twice: a client slot is given back. */
	fd = connect_to(f.path);
	send_hello(fd, PROTO_ROLE_FETCH);
	ck_assert_uint_eq(expect_listeners(f.e, fd, f.l, f.n), 1);
	close_fdp(&fd);
	fsx_end(&f);
}
END_TEST

START_TEST(an_abstract_fd_socket_serves_fetches_too)
{
	int n_fds = unit_count_fds();
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[64];
	struct listener *l = make_listeners(2, true);
	struct fdsock *s = NULL;
	sd_event *e = NULL;
	socklen_t len;
	int fd;

	ck_assert_int_ge(sd_event_new(&e), 0);
	(void)snprintf(path, sizeof(path), "@baton-unit-fdsock-%d", (int)getpid());
	ck_assert_int_eq(fdsock_new(e, path, l, 2, NULL, 0, NULL, 0, &s), 0);
	/* "@name" is sun_path "\0name" with no terminator. */
	memcpy(sa.sun_path + 1, path + 1, strlen(path) - 1);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, len), 0);
	send_hello(fd, PROTO_ROLE_FETCH);
	ck_assert_uint_eq(expect_listeners(e, fd, l, 2), 1);
	close_fdp(&fd);
	s = fdsock_free(s);
	free_listeners(l, 2);
	e = sd_event_unref(e);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_fetch_of_three_hundred_listeners_takes_two_messages)
{
	struct fsx f;
	int fd;

	fsx_setup(&f, MAX_TEST_LISTENERS, NULL, 0, NULL, 0);
	fd = connect_to(f.path);
	send_hello(fd, PROTO_ROLE_FETCH);
	ck_assert_uint_eq(expect_listeners(f.e, fd, f.l, f.n), 2);
	close_fdp(&fd);
	fsx_end(&f);
}
END_TEST

START_TEST(a_worker_hello_on_the_fd_socket_is_refused)
{
	struct fsx f;
	int fd;

	fsx_setup(&f, 1, NULL, 0, NULL, 0);
	fd = connect_to(f.path);
	send_hello(fd, PROTO_ROLE_WORKER);
	expect_error_then_close(f.e, fd, EPROTO);
	close_fdp(&fd);
	fsx_end(&f);
}
END_TEST

START_TEST(a_message_before_hello_on_the_fd_socket_is_refused)
{
	struct fsx f;
	uint8_t buf[PROTO_HEADER_SIZE];
	int fd;

	fsx_setup(&f, 1, NULL, 0, NULL, 0);
	fd = connect_to(f.path);
	send_msg(fd, buf, proto_encode_ready(buf, sizeof(buf)), NULL, 0);
	expect_error_then_close(f.e, fd, EPROTO);
	close_fdp(&fd);
	fsx_end(&f);
}
END_TEST

/* What a child of another uid saw: LISTENERS (with how many), an ERROR, or just a close. */
struct child_result {
	char what; /* 'L', 'E', 'C' (closed), 'A' (connect failed), 'X' (setup failed) */
	int code;  /* ERROR code, or errno */
	unsigned count;
};

/* In a child: become uid/gid (with one extra group if extra >= 0), fetch, report on pipe_w. */
static void child_fetch(const char *path, uid_t uid, gid_t gid, long extra, int pipe_w)
{
	struct child_result res = { .what = 'X' };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	static uint8_t buf[PROTO_MAX_MESSAGE];
	static struct proto_listeners m;
	int fds[PROTO_MAX_FDS_PER_MESSAGE];
	size_t n_fds = 0;
	gid_t groups[1] = { (gid_t)extra };
	struct proto_hello h = { .pid = getpid(), .role = PROTO_ROLE_FETCH };
	struct proto_error err;
	ssize_t len;
	int fd, r;

	if (setgroups(extra >= 0 ? 1 : 0, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
		goto out;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto out;
	strcpy(sa.sun_path, path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		res.what = 'A';
		res.code = errno;
		goto out;
	}
	len = proto_encode_hello(buf, sizeof(buf), &h);
	/* A refusal may have come before HELLO went out (EPIPE): read it all the same. */
	if (len < 0)
		goto out;
	r = proto_send(fd, buf, (size_t)len, NULL, 0);
	if (r < 0 && r != -EPIPE)
		goto out;
	len = proto_recv(fd, buf, sizeof(buf), fds, PROTO_MAX_FDS_PER_MESSAGE, &n_fds);
	if (len == 0 || len == -ECONNRESET) {
		res.what = 'C';
	} else if (len > 0 && proto_decode_listeners(buf, (size_t)len, &m) == 0) {
		res.what = 'L';
		res.count = m.total;
	} else if (len > 0 && proto_decode_error(buf, (size_t)len, &err) == 0) {
		res.what = 'E';
		res.code = err.code;
	}
out:
	(void)!write(pipe_w, &res, sizeof(res));
	_exit(0);
}

static bool is_readable(void *arg)
{
	return *(bool *)arg;
}

static int on_pipe(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	(void)s;
	(void)fd;
	(void)revents;
	*(bool *)userdata = true;
	return 0;
}

/* Runs child_fetch() as uid/gid while the loop serves it; returns what the child saw. */
static struct child_result fetch_as(struct fsx *f, uid_t uid, gid_t gid, long extra, pid_t *ret_pid)
{
	struct child_result res;
	sd_event_source *src = NULL;
	bool done = false;
	int p[2], status;
	pid_t pid;

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close_fdp(&p[0]);
		child_fetch(f->path, uid, gid, extra, p[1]);
	}
	close_fdp(&p[1]);
	ck_assert_int_ge(sd_event_add_io(f->e, &src, p[0], EPOLLIN, on_pipe, &done), 0);
	run_until(f->e, is_readable, &done, "the child's report");
	ck_assert_int_eq(read(p[0], &res, sizeof(res)), (ssize_t)sizeof(res));
	src = sd_event_source_disable_unref(src);
	close_fdp(&p[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (ret_pid)
		*ret_pid = pid;
	return res;
}

/* stderr into a memfd for the length of a test; log lines are read back from it. */
static int capture_begin(int *ret_saved)
{
	int m = memfd_create("stderr", MFD_CLOEXEC);

	ck_assert_int_ge(m, 0);
	*ret_saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
	ck_assert_int_ge(*ret_saved, 0);
	ck_assert_int_eq(dup2(m, 2), 2);
	return m;
}

static void capture_end(int m, int saved, char *buf, size_t size)
{
	ssize_t n = pread(m, buf, size - 1, 0);

	ck_assert_int_ge(n, 0);
	buf[n] = '\0';
	ck_assert_int_eq(dup2(saved, 2), 2);
	close_fdp(&saved);
	close_fdp(&m);
}

START_TEST(an_unlisted_uid_is_refused_with_eperm_and_logged)
{
	static const uid_t uids[] = { OTHER_ID };
	struct fsx f;
	struct child_result res;
	struct stat st;
	char log[LOG_MAX], want[128];
	int m, saved;
	pid_t pid;

	fsx_setup(&f, 2, uids, 1, NULL, 0);
	ck_assert_int_eq(lstat(f.path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0666); /* SO_PEERCRED is the gate */
	m = capture_begin(&saved);
	res = fetch_as(&f, NOBODY, NOBODY, -1, &pid);
	capture_end(m, saved, log, sizeof(log));
	ck_assert_msg(res.what == 'E' || res.what == 'C', "child saw '%c'", res.what);
	if (res.what == 'E')
		ck_assert_int_eq(res.code, EPERM);
	(void)snprintf(want, sizeof(want), "refusing pid %d uid %u gid %u", (int)pid,
		       (unsigned)NOBODY, (unsigned)NOBODY);
	ck_assert_msg(strstr(log, want), "no \"%s\" in the log: %s", want, log);
	ck_assert_msg(strstr(log, f.path), "the log does not name the socket: %s", log);
	fsx_end(&f);
}
END_TEST

START_TEST(without_an_allow_list_other_uids_cannot_even_connect)
{
	struct fsx f;
	struct child_result res;

	fsx_setup(&f, 1, NULL, 0, NULL, 0);
	res = fetch_as(&f, NOBODY, NOBODY, -1, NULL);
	ck_assert_int_eq(res.what, 'A');
	ck_assert_int_eq(res.code, EACCES);
	fsx_end(&f);
}
END_TEST

START_TEST(an_allowed_uid_fetches)
{
	static const uid_t uids[] = { OTHER_ID, NOBODY };
	struct fsx f;
	struct child_result res;

	fsx_setup(&f, 3, uids, 2, NULL, 0);
	res = fetch_as(&f, NOBODY, NOBODY, -1, NULL);
	ck_assert_msg(res.what == 'L', "child saw '%c' %d", res.what, res.code);
	ck_assert_uint_eq(res.count, 3);
	fsx_end(&f);
}
END_TEST

START_TEST(an_allowed_primary_or_supplementary_group_fetches)
{
	static const gid_t gids[] = { NOBODY, EXTRA_GROUP };
	struct fsx f;
	struct child_result res;

	fsx_setup(&f, 2, NULL, 0, gids, 1);
	res = fetch_as(&f, NOBODY, NOBODY, -1, NULL); /* primary gid nogroup */
	ck_assert_msg(res.what == 'L', "child saw '%c' %d", res.what, res.code);
	res = fetch_as(&f, NOBODY, OTHER_ID, -1, NULL); /* neither */
	ck_assert_msg(res.what == 'E' || res.what == 'C', "child saw '%c'", res.what);
	fsx_end(&f);

	fsx_setup(&f, 2, NULL, 0, gids + 1, 1);
	res = fetch_as(&f, NOBODY, NOBODY, EXTRA_GROUP, NULL); /* supplementary */
	ck_assert_msg(res.what == 'L', "child saw '%c' %d", res.what, res.code);
	ck_assert_uint_eq(res.count, 2);
	fsx_end(&f);
}
END_TEST

START_TEST(clients_beyond_the_limit_wait_in_the_backlog_without_a_busy_loop)
{
	struct fsx f;
	int fds[FDSOCK_MAX_CLIENTS + 1];
	uint8_t buf[16];

	fsx_setup(&f, 1, NULL, 0, NULL, 0);
	for (size_t i = 0; i < FDSOCK_MAX_CLIENTS + 1; i++)
		fds[i] = connect_to(f.path);
	/* Accept up to the limit; then the loop must sleep although the socket is readable. */
	for (size_t i = 0; i < 3 && !loop_is_idle(f.e); i++)
		;
	ck_assert(loop_is_idle(f.e));
	/* Each is served in turn; the last once a slot is free. */
	for (size_t i = 0; i < FDSOCK_MAX_CLIENTS + 1; i++) {
		send_hello(fds[i], PROTO_ROLE_FETCH);
		ck_assert_uint_eq(expect_listeners(f.e, fds[i], f.l, f.n), 1);
		ck_assert_int_eq(recv_one(f.e, fds[i], buf, sizeof(buf), NULL, NULL), 0);
		close_fdp(&fds[i]);
	}
	fsx_end(&f);
}
END_TEST

START_TEST(a_stale_socket_file_is_replaced_a_live_one_or_a_file_is_not)
{
	struct fsx f;
	struct fdsock *s2 = NULL;
	int fd;

	fsx_setup(&f, 1, NULL, 0, NULL, 0);
	/* Live: someone answers there. */
	ck_assert_int_eq(fdsock_new(f.e, f.path, f.l, f.n, NULL, 0, NULL, 0, &s2), -EADDRINUSE);
	/* Stale: a socket file nobody listens on any more. */
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		char stale[sizeof(f.path) + 8];

		(void)snprintf(stale, sizeof(stale), "%s/stale", f.dir);
		strcpy(sa.sun_path, stale);
		fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		close_fdp(&fd);
		ck_assert_int_eq(fdsock_new(f.e, stale, f.l, f.n, NULL, 0, NULL, 0, &s2), 0);
		s2 = fdsock_free(s2);
		ck_assert_int_eq(access(stale, F_OK), -1);
		/* A regular file is not ours to remove. */
		fd = open(stale, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
		ck_assert_int_ge(fd, 0);
		close_fdp(&fd);
		ck_assert_int_eq(fdsock_new(f.e, stale, f.l, f.n, NULL, 0, NULL, 0, &s2), -EEXIST);
		ck_assert_int_eq(unlink(stale), 0);
	}
	fsx_end(&f);
}
END_TEST

START_TEST(fdsock_new_refuses_bad_arguments)
{
	struct fsx f;
	struct fdsock *s2 = NULL;
	static uid_t many[FDSOCK_MAX_ALLOW + 1];
	char path[sizeof(f.path) + 8];

	fsx_setup(&f, 1, NULL, 0, NULL, 0);
	(void)snprintf(path, sizeof(path), "%s/x", f.dir);
	ck_assert_int_eq(fdsock_new(f.e, "", f.l, f.n, NULL, 0, NULL, 0, &s2), -EINVAL);
	ck_assert_int_eq(fdsock_new(f.e, path, f.l, f.n, many, FDSOCK_MAX_ALLOW + 1, NULL, 0, &s2),
			 -E2BIG);
	{
		char long_path[200];

		memset(long_path, 'a', sizeof(long_path) - 1);
		long_path[0] = '/';
		long_path[sizeof(long_path) - 1] = '\0';
		ck_assert_int_eq(fdsock_new(f.e, long_path, f.l, f.n, NULL, 0, NULL, 0, &s2),
				 -ENAMETOOLONG);
	}
	ck_assert_ptr_null(s2);
	ck_assert_ptr_null(fdsock_free(NULL));
	fsx_end(&f);
}
END_TEST

/* --- fdsock_parse_allow --- */

static void assert_allow(const char *s, bool group, unsigned id)
{
	uid_t uid = 4711;
	gid_t gid = 4711;
	bool is_group = !group;
	int r = fdsock_parse_allow(s, &uid, &gid, &is_group);

	ck_assert_msg(r == 0, "fdsock_parse_allow(\"%s\") = %s", s, strerror(-r));
	ck_assert_int_eq(is_group, group);
	if (group) {
		ck_assert_uint_eq(gid, id);
		ck_assert_uint_eq(uid, 4711);
	} else {
		ck_assert_uint_eq(uid, id);
		ck_assert_uint_eq(gid, 4711);
	}
}

static void assert_allow_refused(const char *s, int error)
{
	uid_t uid = 4711;
	gid_t gid = 4711;
	bool is_group = true;
	int r = fdsock_parse_allow(s, &uid, &gid, &is_group);

	ck_assert_msg(r == error, "fdsock_parse_allow(\"%s\") = %d, expected %d", s, r, error);
	ck_assert_uint_eq(uid, 4711);
	ck_assert_uint_eq(gid, 4711);
	ck_assert(is_group);
}

START_TEST(allow_values_are_uids_user_names_and_groups)
{
	assert_allow("0", false, 0);
	assert_allow("1000", false, 1000);
	assert_allow("4294967294", false, 4294967294u);
	assert_allow("root", false, 0);
	assert_allow("nobody", false, NOBODY);
	assert_allow("@0", true, 0);
	assert_allow("@root", true, 0);
	assert_allow("@nogroup", true, NOBODY);
	assert_allow("@65534", true, NOBODY);
}
END_TEST

START_TEST(bad_allow_values_are_refused)
{
	assert_allow_refused("", -EINVAL);
	assert_allow_refused("@", -EINVAL);
	assert_allow_refused("4294967295", -EINVAL);
	assert_allow_refused("@4294967295", -EINVAL);
	assert_allow_refused("4294967296", -ERANGE);
	assert_allow_refused("99999999999999999999999", -ERANGE);
	assert_allow_refused("no-such-user-baton", -ESRCH);
	assert_allow_refused("@no-such-group-baton", -ESRCH);
	assert_allow_refused("12ab", -ESRCH);
}
END_TEST

Suite *channel_suite(void)
{
	Suite *s = suite_create("channel");
	TCase *tc = tcase_create("worker channel");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, socketpair_makes_seqpacket_ends_cloexec_and_only_batonds_nonblocking);
	tcase_add_test(tc, hello_gets_the_one_listener_with_its_own_socket);
	tcase_add_test(tc, hello_gets_three_listeners_of_every_kind_in_order);
	tcase_add_test(tc, three_hundred_listeners_are_split_over_two_messages);
	tcase_add_test(tc, no_listeners_is_one_empty_set);
	tcase_add_test(tc, a_worker_that_reads_late_gets_the_set_and_queued_drains_when_it_reads);
	tcase_add_test(tc,
		       with_a_small_send_buffer_each_listeners_message_waits_for_the_one_before);
	tcase_add_test(tc, ready_status_and_drained_reach_the_ops);
	tcase_add_test(tc, status_before_ready_is_accepted);
	tcase_add_test(tc, drain_reaches_the_worker_with_its_timeout);
	tcase_add_test(tc, a_worker_that_closes_is_reported_closed_with_0);
	tcase_add_test(tc, a_worker_that_closes_before_hello_is_reported_closed_with_0);
	tcase_add_test(tc, messages_before_a_close_are_all_delivered_first);
	tcase_add_test(tc, another_major_version_gets_error_eprotonosupport_then_a_close);
	tcase_add_test(tc, a_message_before_hello_gets_error_eproto_then_a_close);
	tcase_add_test(tc, fds_sent_by_the_worker_are_closed_and_end_the_channel);
	tcase_add_test(tc, an_fd_on_hello_is_closed_and_ends_the_channel);
	tcase_add_test(tc, garbage_gets_error_ebadmsg_then_a_close);
	tcase_add_test(tc, a_malformed_body_after_hello_gets_error_ebadmsg);
	tcase_add_test(tc, an_oversized_message_is_refused);
	tcase_add_test(tc, messages_only_batond_sends_are_refused_from_a_worker);
	tcase_add_test(tc, a_second_hello_is_refused);
	tcase_add_test(tc, hello_as_fetch_on_a_worker_channel_is_refused);
	tcase_add_test(tc, an_error_from_the_worker_ends_the_channel_with_its_code);
	tcase_add_test(tc, a_worker_that_does_not_read_is_cut_off_with_enobufs);
	tcase_add_test(tc, reads_are_bounded_per_wakeup);
	tcase_add_test(tc, the_closed_callback_may_free_the_channel);
	tcase_add_test(tc, a_status_callback_may_free_the_channel_with_more_messages_pending);
	tcase_add_test(tc, a_cut_off_channel_may_be_freed_before_the_loop_reports_it);
	tcase_add_test(tc, channel_new_refuses_bad_arguments_and_consumes_the_fd);
	tcase_add_test(tc, channel_free_accepts_null);
	suite_add_tcase(s, tc);

	tc = tcase_create("fd socket");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, a_fetch_gets_every_listener_then_a_close);
	tcase_add_test(tc, a_fetch_of_three_hundred_listeners_takes_two_messages);
	tcase_add_test(tc, an_abstract_fd_socket_serves_fetches_too);
	tcase_add_test(tc, a_worker_hello_on_the_fd_socket_is_refused);
	tcase_add_test(tc, a_message_before_hello_on_the_fd_socket_is_refused);
	tcase_add_test(tc, an_unlisted_uid_is_refused_with_eperm_and_logged);
	tcase_add_test(tc, without_an_allow_list_other_uids_cannot_even_connect);
	tcase_add_test(tc, an_allowed_uid_fetches);
	tcase_add_test(tc, an_allowed_primary_or_supplementary_group_fetches);
	tcase_add_test(tc, clients_beyond_the_limit_wait_in_the_backlog_without_a_busy_loop);
	tcase_add_test(tc, a_stale_socket_file_is_replaced_a_live_one_or_a_file_is_not);
	tcase_add_test(tc, fdsock_new_refuses_bad_arguments);
	tcase_add_test(tc, allow_values_are_uids_user_names_and_groups);
	tcase_add_test(tc, bad_allow_values_are_refused);
	suite_add_tcase(s, tc);
	return s;
}
