/* SPDX-License-Identifier: MIT */
/* test_baton.c - libbaton against a fake batond, LISTEN_FDS, sd_notify, and real listeners. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "baton.h"
#include "cleanup.h"
#include "fdpass.h"
#include "proto.h"

#define WAIT_MSEC	    5000 /* for an event that should come at once */
#define SILENCE_MSEC	    100	 /* to see that nothing comes */
#define CONNECT_WAIT_MSEC   1000 /* a refused SYN: no answer within this long */
#define QUEUED_CLIENTS	    5	 /* connections held in a listener's accept queue */
#define MANY_LISTENERS	    300	 /* more than one LISTENERS message carries */
#define DRAIN_TIMEOUT_USEC  UINT64_C(30000000)
#define DEADLINE_SLACK_USEC UINT64_C(2000000) /* a busy machine between two clock reads */
#define HALF_OPEN_WAIT_MSEC 10000	      /* for the server's SYN-ACK retransmits */

/* One message buffer per role; each test runs in its own forked process. */
static uint8_t fake_buf[PROTO_MAX_MESSAGE];

static uint64_t now_usec(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Clears what tells libbaton where it runs, so each test chooses. */
static void clean_env(void)
{
	(void)unsetenv("BATON_FD");
	(void)unsetenv("LISTEN_FDS");
	(void)unsetenv("LISTEN_PID");
	(void)unsetenv("LISTEN_FDNAMES");
	(void)unsetenv("NOTIFY_SOCKET");
}

static bool readable(int fd, int msec)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, msec) == 1 && (pfd.revents & POLLIN);
}

static int tcp_listener(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, 64), 0);
	return fd;
}

static struct sockaddr_in tcp_address(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	return a;
}

/* A blocking connect to a listener: returns once the kernel has queued the connection. */
static int tcp_connect(int listener)
{
	struct sockaddr_in a = tcp_address(listener);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static struct sockaddr_un unix_address(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	ck_assert_uint_lt(strlen(path), sizeof(a.sun_path));
	strcpy(a.sun_path, path);
	return a;
}

static int unix_listener(const char *path)
{
	struct sockaddr_un a = unix_address(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, 64), 0);
	return fd;
}

/* Returns the connected fd, or -errno. */
static int unix_connect(const char *path)
{
	struct sockaddr_un a = unix_address(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int r = -errno;

		(void)close(fd);
		return r;
	}
	return fd;
}

static bool same_socket(int a, int b)
{
	struct stat sa, sb;

	ck_assert_int_eq(fstat(a, &sa), 0);
	ck_assert_int_eq(fstat(b, &sb), 0);
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static bool is_cloexec(int fd)
{
	int flags = fcntl(fd, F_GETFD);

	return flags >= 0 && (flags & FD_CLOEXEC);
}

/* A byte each way over an accepted connection and its client: the data path is intact. */
static void assert_data_path(int client, int server)
{
	char c = 0;

	ck_assert_int_eq(send(client, "q", 1, MSG_NOSIGNAL), 1);
	ck_assert(readable(server, WAIT_MSEC));
	ck_assert_int_eq(recv(server, &c, 1, 0), 1);
	ck_assert_int_eq(c, 'q');
	ck_assert_int_eq(send(server, "a", 1, MSG_NOSIGNAL), 1);
	ck_assert(readable(client, WAIT_MSEC));
	ck_assert_int_eq(recv(client, &c, 1, 0), 1);
	ck_assert_int_eq(c, 'a');
}

/* --- the fake batond: a forked child; a failed check exits non-zero and fails the test --- */

#define FAKE_CHECK(cond)                                                                        \
	do {                                                                                    \
		if (!(cond)) {                                                                  \
			fprintf(stderr, "fake batond: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			_exit(1);                                                               \
		}                                                                               \
	} while (0)

struct fake {
	pid_t pid;
};

struct fake_listeners {
	const int *fds;
	size_t n;
	size_t per_message; /* 0: as many as fit */
};

/* Receives one message of the given type (0: any) within WAIT_MSEC; returns its length. */
static size_t fake_expect(int fd, uint16_t type)
{
	struct proto_header h;
	size_t n_fds = 0;
	int fds[PROTO_MAX_FDS_PER_MESSAGE];
	ssize_t n;

	FAKE_CHECK(readable(fd, WAIT_MSEC));
	n = proto_recv(fd, fake_buf, sizeof(fake_buf), fds, PROTO_MAX_FDS_PER_MESSAGE, &n_fds);
	FAKE_CHECK(n > 0);
	FAKE_CHECK(n_fds == 0);
	FAKE_CHECK(proto_decode_header(fake_buf, (size_t)n, &h) == 0);
	FAKE_CHECK(type == 0 || h.type == type);
	return (size_t)n;
}

static void fake_expect_hello(int fd)
{
	struct proto_hello hello;
	size_t n = fake_expect(fd, PROTO_HELLO);

	FAKE_CHECK(proto_decode_hello(fake_buf, n, &hello) == 0);
	FAKE_CHECK(hello.pid == getppid());
	FAKE_CHECK(hello.role == PROTO_ROLE_WORKER);
}

/* Sends the len bytes that an encoder wrote into fake_buf, with n_fds fds attached. */
static void fake_send(int fd, int len, const int *fds, size_t n_fds)
{
	FAKE_CHECK(len > 0);
	FAKE_CHECK(proto_send(fd, fake_buf, (size_t)len, fds, n_fds) == 0);
}

static void fake_send_listeners(int fd, const struct fake_listeners *l)
{
	static struct proto_listener entries[MANY_LISTENERS];
	size_t i = 0;

	FAKE_CHECK(l->n <= MANY_LISTENERS);
	for (size_t k = 0; k < l->n; k++) {
		entries[k] = (struct proto_listener){ .kind = PROTO_KIND_TCP };
		(void)snprintf(entries[k].name, sizeof(entries[k].name), "web%zu", k);
		(void)snprintf(entries[k].address, sizeof(entries[k].address),
			       "tcp://127.0.0.1:%zu", 8000 + k);
	}
	do {
		size_t k = proto_listeners_fit(entries + i, l->n - i);
		int len;

		if (l->per_message > 0 && k > l->per_message)
			k = l->per_message;
		len = proto_encode_listeners(fake_buf, sizeof(fake_buf), i, l->n, entries + i, k);
		fake_send(fd, len, l->fds + i, k);
		i += k;
	} while (i < l->n);
}

static void fake_send_drain(int fd, uint64_t timeout_usec)
{
	struct proto_drain d = { .timeout_usec = timeout_usec };

	fake_send(fd, proto_encode_drain(fake_buf, sizeof(fake_buf), &d), NULL, 0);
}

/* Waits for the worker side to close the channel. */
static void fake_expect_close(int fd)
{
	FAKE_CHECK(readable(fd, WAIT_MSEC));
	FAKE_CHECK(proto_recv(fd, fake_buf, sizeof(fake_buf), NULL, 0, NULL) == 0);
}

/* Receives the ERROR that refuses what was sent (one any version can read), then the close. */
static void fake_expect_error(int fd, int code)
{
	struct proto_error e;
	size_t n;

	FAKE_CHECK(readable(fd, WAIT_MSEC));
	n = (size_t)proto_recv(fd, fake_buf, sizeof(fake_buf), NULL, 0, NULL);
	FAKE_CHECK(proto_decode_error(fake_buf, n, &e) == 0);
	FAKE_CHECK(e.code == code);
	fake_expect_close(fd);
}

/*
 * Starts script(fd, arg) in a child playing batond over a fresh socketpair, and puts the other
 * end in BATON_FD, as batond --pass scm does.
 */
static struct fake fake_start(void (*script)(int fd, const void *arg), const void *arg)
{
	int sv[2];
	char num[16];
	struct fake f;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	f.pid = fork();
	ck_assert_int_ge(f.pid, 0);
	if (f.pid == 0) {
		(void)close(sv[0]);
		script(sv[1], arg);
		_exit(0);
	}
	(void)close(sv[1]);
	(void)snprintf(num, sizeof(num), "%d", sv[0]);
	ck_assert_int_eq(setenv("BATON_FD", num, 1), 0);
	return f;
}

static void fake_finish(struct fake f)
{
	int status;

	ck_assert_int_eq(waitpid(f.pid, &status, 0), f.pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the fake batond failed (status 0x%x); see its line above", status);
}

/* --- channel mode --- */

static void script_listeners_then_close(int fd, const void *arg)
{
	fake_expect_hello(fd);
	fake_send_listeners(fd, arg);
	fake_expect_close(fd);
}

/* One listener at start; on REFRESH a DRAIN, then the set again with a second listener. */
static void script_refresh(int fd, const void *arg)
{
	const int *fds = arg;
	struct fake_listeners one = { .fds = fds, .n = 1 };
	struct fake_listeners two = { .fds = fds, .n = 2 };

	fake_expect_hello(fd);
	fake_send_listeners(fd, &one);
	(void)fake_expect(fd, PROTO_REFRESH);
	fake_send_drain(fd, 5000000);
	fake_send_listeners(fd, &two);
	fake_expect_close(fd);
}

START_TEST(refresh_adds_the_listeners_batond_has_now_and_keeps_the_known_ones)
{
	int originals[2] = { tcp_listener(), tcp_listener() };
	struct baton *b = NULL;
	struct fake f;
	int before = unit_count_fds(), fd0;

	clean_env();
	f = fake_start(script_refresh, originals);
	ck_assert_int_eq(baton_open(&b, 0), 0);
	ck_assert_uint_eq(baton_listener_count(b), 1);
	fd0 = baton_listener_fd(b, 0);
	ck_assert_int_eq(baton_refresh(b), 1);
	ck_assert_uint_eq(baton_listener_count(b), 2);
	/* The known one keeps its fd; the new one is the second socket; the DRAIN counted. */
	ck_assert_int_eq(baton_listener_fd(b, 0), fd0);
	ck_assert_str_eq(baton_listener_name(b, 1), "web1");
	ck_assert(same_socket(baton_listener_fd(b, 1), originals[1]));
	ck_assert_int_eq(baton_draining(b), 1);
	b = baton_close(b);
	fake_finish(f);
	close_fdp(&originals[0]);
	close_fdp(&originals[1]);
	ck_assert_int_eq(unit_count_fds(), before - 2);
}
END_TEST

START_TEST(channel_mode_takes_listeners_sent_in_several_messages_and_closes_them_all)
{
	int originals[3];
	struct fake_listeners fl = { .fds = originals, .n = 3, .per_message = 2 };
	struct baton *b = NULL;
	struct fake f;
	int n_fds;

	clean_env();
	for (size_t i = 0; i < 3; i++)
		originals[i] = tcp_listener();
	n_fds = unit_count_fds();
	f = fake_start(script_listeners_then_close, &fl);

	ck_assert_int_eq(baton_open(&b, 0), 0);
	ck_assert_int_eq(baton_mode(b), BATON_MODE_CHANNEL);
	ck_assert_ptr_null(getenv("BATON_FD"));
	ck_assert_uint_eq(baton_listener_count(b), 3);
	for (unsigned i = 0; i < 3; i++) {
		char name[16];
		int fd = baton_listener_fd(b, i);

		(void)snprintf(name, sizeof(name), "web%u", i);
		ck_assert_str_eq(baton_listener_name(b, i), name);
		ck_assert(same_socket(fd, originals[i]));
		ck_assert(is_cloexec(fd));
	}
	ck_assert_int_eq(baton_listener_fd(b, 3), -ERANGE);
	ck_assert_ptr_null(baton_listener_name(b, 3));
	b = baton_close(b);
	ck_assert_ptr_null(b);
	fake_finish(f);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(more_listeners_than_one_message_carries_arrive_whole_and_in_order)
{
	int original = tcp_listener();
	static int fds[MANY_LISTENERS];
	struct fake_listeners fl = { .fds = fds, .n = MANY_LISTENERS };
	struct baton *b = NULL;
	struct fake f;

	clean_env();
	for (size_t i = 0; i < MANY_LISTENERS; i++)
		fds[i] = original;
	f = fake_start(script_listeners_then_close, &fl);
	ck_assert_int_eq(baton_open(&b, 0), 0);
	ck_assert_uint_eq(baton_listener_count(b), MANY_LISTENERS);
	ck_assert_str_eq(baton_listener_name(b, MANY_LISTENERS - 1), "web299");
	ck_assert(same_socket(baton_listener_fd(b, MANY_LISTENERS - 1), original));
	b = baton_close(b);
	fake_finish(f);
}
END_TEST

static const uint8_t ready_bytes[] = { 0x42, 0x41, 0x54, 0x4e, 0x01, 0x01,
				       0x03, 0x00, 0x00, 0x00, 0x00, 0x00 };
static const uint8_t status_5_ok_bytes[] = { 0x42, 0x41, 0x54, 0x4e, 0x01, 0x01, 0x05,
					     0x00, 0x08, 0x00, 0x00, 0x00, 0x05, 0x00,
					     0x00, 0x00, 0x02, 0x00, 0x6f, 0x6b };
static const uint8_t drained_bytes[] = { 0x42, 0x41, 0x54, 0x4e, 0x01, 0x01,
					 0x06, 0x00, 0x00, 0x00, 0x00, 0x00 };

static void script_expect_ready_status_drained(int fd, const void *arg)
{
	const struct fake_listeners none = { .n = 0 };
	size_t n;

	(void)arg;
	fake_expect_hello(fd);
	fake_send_listeners(fd, &none);
	n = fake_expect(fd, PROTO_READY);
	FAKE_CHECK(n == sizeof(ready_bytes) && memcmp(fake_buf, ready_bytes, n) == 0);
	n = fake_expect(fd, PROTO_STATUS);
	FAKE_CHECK(n == sizeof(status_5_ok_bytes) && memcmp(fake_buf, status_5_ok_bytes, n) == 0);
	n = fake_expect(fd, PROTO_DRAINED);
	FAKE_CHECK(n == sizeof(drained_bytes) && memcmp(fake_buf, drained_bytes, n) == 0);
	fake_expect_close(fd);
}

START_TEST(ready_status_and_drained_reach_batond_as_the_protocol_bytes)
{
	struct baton *b = NULL;
	struct fake f;

	clean_env();
	f = fake_start(script_expect_ready_status_drained, NULL);
	ck_assert_int_eq(baton_open(&b, 0), 0);
	ck_assert_uint_eq(baton_listener_count(b), 0);
	ck_assert_int_eq(baton_ready(b), 0);
	ck_assert_int_eq(baton_status(b, 5, "a\ttab"), -EINVAL); /* refused: nothing sent */
	ck_assert_int_eq(baton_status(b, 5, "ok"), 0);
	ck_assert_int_eq(baton_drained(b), 0);
	b = baton_close(b);
	fake_finish(f);
}
END_TEST

static void script_drain_after_ready(int fd, const void *arg)
{
	const struct fake_listeners none = { .n = 0 };

	(void)arg;
	fake_expect_hello(fd);
	fake_send_listeners(fd, &none);
	(void)fake_expect(fd, PROTO_READY);
	fake_send_drain(fd, DRAIN_TIMEOUT_USEC);
	(void)fake_expect(fd, PROTO_DRAINED);
	fake_expect_close(fd);
}

START_TEST(drain_makes_the_drain_fd_readable_and_sets_the_deadline)
{
	struct baton *b = NULL;
	uint64_t before, after, deadline;
	struct fake f;
	int drain_fd, n_fds;

	clean_env();
	n_fds = unit_count_fds();
	f = fake_start(script_drain_after_ready, NULL);
	ck_assert_int_eq(baton_open(&b, BATON_OPEN_NO_SIGNALS), 0);
	drain_fd = baton_drain_fd(b);
	ck_assert_int_ge(drain_fd, 0);
	ck_assert(is_cloexec(drain_fd));
	ck_assert_int_eq(baton_drain_fd(b), drain_fd); /* the same one each time */
	ck_assert(!readable(drain_fd, SILENCE_MSEC));
	ck_assert_int_eq(baton_process(b), 0);
	ck_assert(!baton_draining(b));
	ck_assert_uint_eq(baton_drain_deadline(b), BATON_NO_DEADLINE);

	ck_assert_int_eq(baton_ready(b), 0);
	ck_assert(readable(drain_fd, WAIT_MSEC));
	before = now_usec();
	ck_assert_int_eq(baton_process(b), 1);
	after = now_usec();
	ck_assert(baton_draining(b));
	ck_assert_int_eq(baton_drain_signal(b), 0);
	deadline = baton_drain_deadline(b);
	ck_assert_uint_ge(deadline, before + DRAIN_TIMEOUT_USEC - DEADLINE_SLACK_USEC);
	ck_assert_uint_le(deadline, after + DRAIN_TIMEOUT_USEC);
	ck_assert(!readable(drain_fd, 0)); /* the message was taken */
	ck_assert_int_eq(baton_drained(b), 0);
	b = baton_close(b);
	fake_finish(f);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

static void script_close_after_listeners(int fd, const void *arg)
{
	const struct fake_listeners none = { .n = 0 };

	(void)arg;
	fake_expect_hello(fd);
	fake_send_listeners(fd, &none);
}

START_TEST(batond_closing_the_channel_begins_the_drain_and_quiets_the_drain_fd)
{
	struct baton *b = NULL;
	struct fake f;
	int drain_fd;

	clean_env();
	f = fake_start(script_close_after_listeners, NULL);
	ck_assert_int_eq(baton_open(&b, BATON_OPEN_NO_SIGNALS), 0);
	drain_fd = baton_drain_fd(b);
	ck_assert_int_ge(drain_fd, 0);
	fake_finish(f);
	ck_assert(readable(drain_fd, WAIT_MSEC));
	ck_assert_int_eq(baton_process(b), -ECONNRESET);
	ck_assert(baton_draining(b));
	ck_assert_uint_eq(baton_drain_deadline(b), BATON_NO_DEADLINE);
	/* The channel left the set: the program's loop does not spin on its end. */
	ck_assert(!readable(drain_fd, SILENCE_MSEC));
	ck_assert_int_eq(baton_process(b), 1);
	ck_assert_int_eq(baton_ready(b), -ENOTCONN);
	b = baton_close(b);
}
END_TEST

static void script_major_2(int fd, const void *arg)
{
	int len;

	(void)arg;
	fake_expect_hello(fd);
	len = proto_encode_listeners(fake_buf, sizeof(fake_buf), 0, 0, NULL, 0);
	FAKE_CHECK(len > 0);
	fake_buf[4] = 2; /* a major version we do not speak */
	fake_send(fd, len, NULL, 0);
	fake_expect_error(fd, EPROTONOSUPPORT);
}

START_TEST(a_batond_of_another_major_version_is_refused_with_eprotonosupport)
{
	struct baton *b = NULL;
	struct fake f;
	int n_fds;

	clean_env();
	n_fds = unit_count_fds();
	f = fake_start(script_major_2, NULL);
	ck_assert_int_eq(baton_open(&b, 0), -EPROTONOSUPPORT);
	ck_assert_ptr_null(b);
	ck_assert_ptr_null(getenv("BATON_FD"));
	fake_finish(f);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

static void script_error_eperm(int fd, const void *arg)
{
	struct proto_error e = { .code = EPERM, .text = "not allowed" };

	(void)arg;
	fake_expect_hello(fd);
	fake_send(fd, proto_encode_error(fake_buf, sizeof(fake_buf), &e), NULL, 0);
	fake_expect_close(fd);
}

START_TEST(an_error_from_batond_is_returned_as_its_errno)
{
	struct baton *b = NULL;
	struct fake f;

	clean_env();
	f = fake_start(script_error_eperm, NULL);
	ck_assert_int_eq(baton_open(&b, 0), -EPERM);
	fake_finish(f);
}
END_TEST

/* LISTENERS announcing two entries with one fd attached. */
static void script_fd_count_mismatch(int fd, const void *arg)
{
	const int *listener = arg;
	struct proto_listener l[2] = {
		{ .kind = PROTO_KIND_TCP, .name = "a", .address = "tcp://127.0.0.1:1" },
		{ .kind = PROTO_KIND_TCP, .name = "b", .address = "tcp://127.0.0.1:2" },
	};

	fake_expect_hello(fd);
	fake_send(fd, proto_encode_listeners(fake_buf, sizeof(fake_buf), 0, 2, l, 2), listener, 1);
	fake_expect_error(fd, EPROTO);
}

/* baton_open() against script, which sends a TCP listener in LISTENERS that are refused with
 * -EPROTO: the fds that came with them are closed again. */
static void assert_listeners_refused_without_leaks(void (*script)(int fd, const void *arg))
{
	int listener = tcp_listener();
	struct baton *b = NULL;
	struct fake f;
	int n_fds;

	clean_env();
	n_fds = unit_count_fds();
	f = fake_start(script, &listener);
	ck_assert_int_eq(baton_open(&b, 0), -EPROTO);
	fake_finish(f);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}

START_TEST(listeners_with_the_wrong_number_of_fds_are_refused_and_no_fd_leaks)
{
	assert_listeners_refused_without_leaks(script_fd_count_mismatch);
}
END_TEST

/* The second message of a set starts where the first did: a protocol error. */
static void script_listeners_out_of_order(int fd, const void *arg)
{
	const int *listener = arg;
	struct proto_listener l = { .kind = PROTO_KIND_TCP, .name = "a", .address = "tcp://x:1" };

	fake_expect_hello(fd);
	for (int i = 0; i < 2; i++)
		fake_send(fd, proto_encode_listeners(fake_buf, sizeof(fake_buf), 0, 2, &l, 1),
			  listener, 1);
	(void)fake_expect(fd, PROTO_ERROR);
	fake_expect_close(fd);
}

START_TEST(listeners_out_of_order_are_refused_and_the_first_ones_closed)
{
	assert_listeners_refused_without_leaks(script_listeners_out_of_order);
}
END_TEST

START_TEST(a_malformed_or_wrong_baton_fd_is_refused_and_removed)
{
	struct baton *b = NULL;
	int p[2];

	clean_env();
	ck_assert_int_eq(setenv("BATON_FD", "3x", 1), 0);
	ck_assert_int_eq(baton_open(&b, 0), -EINVAL);
	ck_assert_ptr_null(getenv("BATON_FD"));

	/* A pipe is no channel; libbaton owns the fd from the start, so it is closed. */
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	{
		char num[16];

		(void)snprintf(num, sizeof(num), "%d", p[0]);
		ck_assert_int_eq(setenv("BATON_FD", num, 1), 0);
	}
	ck_assert_int_eq(baton_open(&b, 0), -ENOTSOCK);
	ck_assert_int_eq(fcntl(p[0], F_GETFD), -1);
	ck_assert_int_eq(errno, EBADF);
	ck_assert_ptr_null(getenv("BATON_FD"));
	(void)close(p[1]);
	ck_assert_int_eq(baton_open(&b, 0x100), -EINVAL);
}
END_TEST

/* --- LISTEN_FDS mode: in a child, so fds 3 and 4 are free to take --- */

#define CHILD_CHECK(cond)                                                                 \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "child: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			_exit(1);                                                         \
		}                                                                         \
	} while (0)

static void child_finish(pid_t pid)
{
	int status;

	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the child failed (status 0x%x); see its line above", status);
}

/* Puts two TCP listeners at fds 3 and 4 without CLOEXEC, as systemd and batond pass them. */
static void child_listen_fds(int originals[2])
{
	for (int i = 0; i < 2; i++) {
		int fd = tcp_listener();

		originals[i] = fcntl(fd, F_DUPFD_CLOEXEC, 100);
		CHILD_CHECK(originals[i] >= 100);
		(void)close(fd);
	}
	for (int i = 0; i < 2; i++)
		CHILD_CHECK(dup2(originals[i], 3 + i) == 3 + i);
}

static void set_listen_env(pid_t pid, const char *names)
{
	char num[16];

	(void)snprintf(num, sizeof(num), "%d", (int)pid);
	CHILD_CHECK(setenv("LISTEN_PID", num, 1) == 0);
	CHILD_CHECK(setenv("LISTEN_FDS", "2", 1) == 0);
	if (names)
		CHILD_CHECK(setenv("LISTEN_FDNAMES", names, 1) == 0);
}

/*
 * Runs body(originals) in a child with two TCP listeners at fds 3 and 4 (originals[] holds the
 * sockets they were duplicated from) and a clean environment; the test fails if body does.
 */
static void in_listen_fds_child(void (*body)(const int originals[2]))
{
	pid_t pid;

	clean_env();
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int originals[2];

		child_listen_fds(originals);
		body(originals);
		_exit(0);
	}
	child_finish(pid);
}

static void child_takes_fds_3_and_4_with_their_names(const int originals[2])
{
	struct baton *b = NULL;

	set_listen_env(getpid(), "web:admin");
	CHILD_CHECK(baton_open(&b, 0) == 0);
	CHILD_CHECK(baton_mode(b) == BATON_MODE_ENV);
	CHILD_CHECK(baton_listener_count(b) == 2);
	CHILD_CHECK(baton_listener_fd(b, 0) == 3 && baton_listener_fd(b, 1) == 4);
	CHILD_CHECK(strcmp(baton_listener_name(b, 0), "web") == 0);
	CHILD_CHECK(strcmp(baton_listener_name(b, 1), "admin") == 0);
	CHILD_CHECK(is_cloexec(3) && is_cloexec(4));
	CHILD_CHECK(!getenv("LISTEN_FDS") && !getenv("LISTEN_PID") && !getenv("LISTEN_FDNAMES"));
	b = baton_close(b);
	/* Closed with the handle; the originals stay. */
	CHILD_CHECK(fcntl(3, F_GETFD) < 0 && fcntl(4, F_GETFD) < 0);
	CHILD_CHECK(fcntl(originals[0], F_GETFD) >= 0);
}

START_TEST(listen_fds_mode_takes_fds_3_and_4_with_their_names)
{
	in_listen_fds_child(child_takes_fds_3_and_4_with_their_names);
}
END_TEST

static void child_keeps_env_and_names_the_fds_unknown(const int originals[2])
{
	struct baton *b = NULL;

	(void)originals;
	set_listen_env(getpid(), NULL);
	CHILD_CHECK(baton_open(&b, BATON_OPEN_KEEP_ENV) == 0);
	CHILD_CHECK(baton_listener_count(b) == 2);
	CHILD_CHECK(strcmp(baton_listener_name(b, 1), "unknown") == 0);
	CHILD_CHECK(getenv("LISTEN_FDS") && getenv("LISTEN_PID"));
	b = baton_close(b);
}

START_TEST(listen_fds_without_names_are_unknown_and_keep_env_keeps_the_variables)
{
	in_listen_fds_child(child_keeps_env_and_names_the_fds_unknown);
}
END_TEST

static void child_with_fds_for_its_parent_is_standalone(const int originals[2])
{
	struct baton *b = NULL;

	(void)originals;
	set_listen_env(getppid(), "web:admin");
	CHILD_CHECK(baton_open(&b, 0) == 0);
	CHILD_CHECK(baton_mode(b) == BATON_MODE_STANDALONE);
	CHILD_CHECK(baton_listener_count(b) == 0);
	b = baton_close(b);
	/* Not ours: left open. */
	CHILD_CHECK(fcntl(3, F_GETFD) >= 0 && fcntl(4, F_GETFD) >= 0);
}

START_TEST(listen_fds_for_another_pid_mean_standalone)
{
	in_listen_fds_child(child_with_fds_for_its_parent_is_standalone);
}
END_TEST

/* --- standalone and sd_notify --- */

START_TEST(standalone_has_no_listeners_and_its_reports_go_nowhere)
{
	struct baton *b = NULL;
	int n_fds;

	clean_env();
	n_fds = unit_count_fds();
	ck_assert_int_eq(baton_open(&b, BATON_OPEN_NO_SIGNALS), 0);
	ck_assert_int_eq(baton_mode(b), BATON_MODE_STANDALONE);
	ck_assert_uint_eq(baton_listener_count(b), 0);
	ck_assert_int_eq(baton_listener_fd(b, 0), -ERANGE);
	ck_assert_int_eq(baton_ready(b), 0);
	ck_assert_int_eq(baton_status(b, 1, "fine"), 0);
	/* Nothing can ask for a drain: no channel, and the program takes its own signals. */
	ck_assert_int_eq(baton_drain_fd(b), -EOPNOTSUPP);
	ck_assert_int_eq(baton_process(b), 0);
	ck_assert_int_eq(baton_drained(b), 0);
	b = baton_close(b);
	ck_assert_int_eq(unit_count_fds(), n_fds);
	ck_assert_ptr_null(baton_close(NULL));
}
END_TEST

/* Reads one datagram from the fake service manager's socket as a string. */
static void expect_notify(int fd, const char *expected)
{
	char buf[256];
	ssize_t n;

	ck_assert(readable(fd, WAIT_MSEC));
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	ck_assert_str_eq(buf, expected);
}

START_TEST(without_a_channel_ready_status_and_stopping_go_to_notify_socket)
{
	char dir[] = "/tmp/baton-test-XXXXXX";
	char path[64];
	struct sockaddr_un a;
	struct baton *b = NULL;
	int manager;

	clean_env();
	ck_assert_ptr_nonnull(mkdtemp(dir));
	(void)snprintf(path, sizeof(path), "%s/notify", dir);
	a = unix_address(path);
	manager = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(manager, 0);
	ck_assert_int_eq(bind(manager, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);

	ck_assert_int_eq(baton_open(&b, 0), 0);
	ck_assert_int_eq(baton_ready(b), 0);
	expect_notify(manager, "READY=1");
	ck_assert_int_eq(baton_status(b, 3, "busy"), 0);
	expect_notify(manager, "STATUS=busy");
	ck_assert_int_eq(baton_status(b, 3, NULL), 0);
	expect_notify(manager, "STATUS=3 in flight");
	/* A newline would smuggle in another assignment: refused, nothing sent. */
	ck_assert_int_eq(baton_status(b, 3, "x\nREADY=1"), -EINVAL);
	ck_assert(!readable(manager, SILENCE_MSEC));
	ck_assert_int_eq(baton_drained(b), 0);
	expect_notify(manager, "STOPPING=1");
	ck_assert_int_eq(baton_drained(b), 0); /* once */
	ck_assert(!readable(manager, SILENCE_MSEC));
	b = baton_close(b);
	(void)close(manager);
	(void)unlink(path);
	(void)rmdir(dir);
}
END_TEST

static bool signal_blocked(int signo)
{
	sigset_t now;

	ck_assert_int_eq(sigprocmask(SIG_BLOCK, NULL, &now), 0);
	return sigismember(&now, signo) == 1;
}

START_TEST(a_stop_signal_is_taken_from_the_drain_fd_without_a_handler)
{
	struct baton *b = NULL;
	struct sigaction before, after;
	int drain_fd, n_fds;
	int one = SIGUSR1;

	clean_env();
	n_fds = unit_count_fds();
	ck_assert_int_eq(baton_open(&b, 0), 0);
	ck_assert(!signal_blocked(SIGTERM));
	ck_assert_int_eq(sigaction(SIGTERM, NULL, &before), 0);
	drain_fd = baton_drain_fd(b);
	ck_assert_int_ge(drain_fd, 0);
	ck_assert(signal_blocked(SIGTERM) && signal_blocked(SIGINT) && signal_blocked(SIGQUIT));
	/* No handler installed behind the program's back. */
	ck_assert_int_eq(sigaction(SIGTERM, NULL, &after), 0);
	ck_assert(before.sa_handler == after.sa_handler);
	ck_assert_int_eq(baton_drain_signals(b, &one, 1), -EBUSY);

	ck_assert(!readable(drain_fd, 0));
	ck_assert_int_eq(raise(SIGTERM), 0);
	ck_assert(readable(drain_fd, WAIT_MSEC));
	ck_assert_int_eq(baton_process(b), 1);
	ck_assert_int_eq(baton_drain_signal(b), SIGTERM);
	ck_assert_uint_eq(baton_drain_deadline(b), BATON_NO_DEADLINE);
	ck_assert(!readable(drain_fd, 0));
	/* A second signal is taken and changes nothing. */
	ck_assert_int_eq(raise(SIGINT), 0);
	ck_assert_int_eq(baton_process(b), 1);
	ck_assert_int_eq(baton_drain_signal(b), SIGTERM);
	b = baton_close(b);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(drain_signals_can_be_chosen_before_the_drain_fd)
{
	const int usr1[] = { SIGUSR1 };
	const int bad[] = { SIGKILL };
	struct baton *b = NULL;
	int drain_fd;

	clean_env();
	ck_assert_int_eq(baton_open(&b, 0), 0);
	ck_assert_int_eq(baton_drain_signals(b, bad, 1), -EINVAL);
	ck_assert_int_eq(baton_drain_signals(b, usr1, 1), 0);
	drain_fd = baton_drain_fd(b);
	ck_assert_int_ge(drain_fd, 0);
	ck_assert(signal_blocked(SIGUSR1));
	ck_assert(!signal_blocked(SIGTERM));
	ck_assert_int_eq(raise(SIGUSR1), 0);
	ck_assert(readable(drain_fd, WAIT_MSEC));
	ck_assert_int_eq(baton_process(b), 1);
	ck_assert_int_eq(baton_drain_signal(b), SIGUSR1);
	b = baton_close(b);
}
END_TEST

/* --- the two-stage close of a listener --- */

/* connect() to a listener that drops our SYN: still in progress after CONNECT_WAIT_MSEC. */
static void assert_syn_unanswered(int listener)
{
	struct sockaddr_in a = tcp_address(listener);
	struct pollfd pfd;
	int fd, err = -1;
	socklen_t len = sizeof(err);

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), -1);
	ck_assert_int_eq(errno, EINPROGRESS);
	pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
	/* No SYN-ACK (it would connect) and no RST (it would fail): no answer at all. */
	ck_assert_int_eq(poll(&pfd, 1, CONNECT_WAIT_MSEC), 0);
	ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len), 0);
	ck_assert_int_eq(err, 0);
	(void)close(fd);
}

static void assert_pending(int fd, unsigned queued, unsigned half_open)
{
	unsigned q = 99, h = 99;

	ck_assert_int_eq(baton_listener_pending(fd, &q, &h), 0);
	ck_assert_uint_eq(q, queued);
	ck_assert_uint_eq(h, half_open);
}

START_TEST(tcp_stage_one_leaves_new_syns_unanswered_and_keeps_the_queue)
{
	int listener = tcp_listener();
	int clients[QUEUED_CLIENTS], servers[QUEUED_CLIENTS];
	int n_fds = unit_count_fds();

	for (size_t i = 0; i < QUEUED_CLIENTS; i++)
		clients[i] = tcp_connect(listener);
	assert_pending(listener, QUEUED_CLIENTS, 0);
	ck_assert_int_eq(baton_listener_shutdown_begin(listener), 0);
	assert_syn_unanswered(listener);
	/* The dropped SYN made no request socket; the queue is as it was. */
	assert_pending(listener, QUEUED_CLIENTS, 0);
	for (size_t i = 0; i < QUEUED_CLIENTS; i++) {
		servers[i] = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
		ck_assert_int_ge(servers[i], 0);
	}
	assert_pending(listener, 0, 0);
	(void)close(listener);
	for (size_t i = 0; i < QUEUED_CLIENTS; i++) {
		assert_data_path(clients[i], servers[i]);
		(void)close(clients[i]);
		(void)close(servers[i]);
	}
	ck_assert_int_eq(unit_count_fds(), n_fds - 1);
}
END_TEST

/* Drops SYN-ACKs arriving at a client socket: the server's handshake stays in SYN_RECV. */
static const struct sock_filter drop_syn_ack[] = {
	BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),		 BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x12, 0, 1), BPF_STMT(BPF_RET | BPF_K, 0),
	BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
};

START_TEST(a_handshake_in_progress_is_counted_and_completes_after_stage_one)
{
	int listener = tcp_listener();
	struct sockaddr_in a = tcp_address(listener);
	struct sock_fprog prog = { .len = ELEMENTSOF(drop_syn_ack),
				   .filter = (struct sock_filter *)drop_syn_ack };
	uint64_t end;
	unsigned q = 0, h = 0;
	int client, dummy = 0;

	client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ck_assert_int_ge(client, 0);
	ck_assert_int_eq(setsockopt(client, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)), 0);
	ck_assert_int_eq(connect(client, (struct sockaddr *)&a, sizeof(a)), -1);
	ck_assert_int_eq(errno, EINPROGRESS);
	end = now_usec() + WAIT_MSEC * UINT64_C(1000);
	do {
		ck_assert_int_eq(baton_listener_pending(listener, &q, &h), 0);
	} while (h == 0 && now_usec() < end && poll(NULL, 0, 10) == 0);
	ck_assert_uint_eq(q, 0);
	ck_assert_uint_eq(h, 1);

	ck_assert_int_eq(baton_listener_shutdown_begin(listener), 0);
	ck_assert_int_eq(setsockopt(client, SOL_SOCKET, SO_DETACH_FILTER, &dummy, sizeof(dummy)),
			 0);
	/* The server retransmits its SYN-ACK (after about 1 s); the client's ACK passes stage 1. */
	end = now_usec() + HALF_OPEN_WAIT_MSEC * UINT64_C(1000);
	do {
		ck_assert_int_eq(baton_listener_pending(listener, &q, &h), 0);
	} while (q == 0 && now_usec() < end && poll(NULL, 0, 20) == 0);
	ck_assert_uint_eq(q, 1);
	ck_assert_uint_eq(h, 0);
	{
		int server = accept4(listener, NULL, NULL, SOCK_CLOEXEC);

		ck_assert_int_ge(server, 0);
		assert_data_path(client, server);
		(void)close(server);
	}
	(void)close(client);
	(void)close(listener);
}
END_TEST

START_TEST(unix_stage_one_removes_our_file_and_keeps_the_queue)
{
	char dir[] = "/tmp/baton-test-XXXXXX";
	char path[64];
	int clients[QUEUED_CLIENTS];
	int listener;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	(void)snprintf(path, sizeof(path), "%s/s.sock", dir);
	listener = unix_listener(path);
	for (size_t i = 0; i < QUEUED_CLIENTS; i++) {
		clients[i] = unix_connect(path);
		ck_assert_int_ge(clients[i], 0);
	}
	assert_pending(listener, QUEUED_CLIENTS, 0);
	ck_assert_int_eq(baton_listener_shutdown_begin(listener), 0);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(unix_connect(path), -ENOENT);
	assert_pending(listener, QUEUED_CLIENTS, 0);
	for (size_t i = 0; i < QUEUED_CLIENTS; i++) {
		int server = accept4(listener, NULL, NULL, SOCK_CLOEXEC);

		ck_assert_int_ge(server, 0);
		assert_data_path(clients[i], server);
		(void)close(server);
		(void)close(clients[i]);
	}
	assert_pending(listener, 0, 0);
	(void)close(listener);
	(void)rmdir(dir);
}
END_TEST

START_TEST(unix_stage_one_leaves_a_file_that_is_not_the_sockets_own)
{
	char dir[] = "/tmp/baton-test-XXXXXX";
	char path[64], moved[64];
	int listener, other;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	(void)snprintf(path, sizeof(path), "%s/s.sock", dir);
	(void)snprintf(moved, sizeof(moved), "%s/moved.sock", dir);
	listener = unix_listener(path);
	ck_assert_int_eq(rename(path, moved), 0);
	/* Another server's socket at our old path: a socket file, but not ours. */
	other = unix_listener(path);
	ck_assert_int_eq(baton_listener_shutdown_begin(listener), 0);
	ck_assert_int_eq(access(path, F_OK), 0); /* someone else's: left alone */
	ck_assert_int_eq(access(moved, F_OK), 0);
	(void)close(other);
	(void)close(listener);
	(void)unlink(path);
	(void)unlink(moved);
	(void)rmdir(dir);
}
END_TEST

START_TEST(an_abstract_unix_listener_cannot_refuse_but_its_queue_is_counted)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	socklen_t len;
	int listener, client;

	(void)snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "baton-test-%d", (int)getpid());
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(a.sun_path + 1));
	listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(listener, 0);
	ck_assert_int_eq(bind(listener, (struct sockaddr *)&a, len), 0);
	ck_assert_int_eq(listen(listener, 8), 0);
	client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(connect(client, (struct sockaddr *)&a, len), 0);
	ck_assert_int_eq(baton_listener_shutdown_begin(listener), -EOPNOTSUPP);
	assert_pending(listener, 1, 0);
	(void)close(client);
	(void)close(listener);
}
END_TEST

START_TEST(udp_stage_one_drops_new_datagrams_and_keeps_the_queued_one)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int server, client;
	char c;

	server = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	client = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(server, 0);
	ck_assert_int_ge(client, 0);
	ck_assert_int_eq(bind(server, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(getsockname(server, (struct sockaddr *)&a, &len), 0);
	assert_pending(server, 0, 0);
	ck_assert_int_eq(sendto(client, "1", 1, 0, (struct sockaddr *)&a, sizeof(a)), 1);
	ck_assert(readable(server, WAIT_MSEC));
	assert_pending(server, 1, 0);
	ck_assert_int_eq(baton_listener_shutdown_begin(server), 0);
	ck_assert_int_eq(sendto(client, "2", 1, 0, (struct sockaddr *)&a, sizeof(a)), 1);
	ck_assert_int_eq(recv(server, &c, 1, 0), 1);
	ck_assert_int_eq(c, '1');
	ck_assert(!readable(server, SILENCE_MSEC)); /* "2" was dropped */
	assert_pending(server, 0, 0);
	(void)close(client);
	(void)close(server);
}
END_TEST

START_TEST(what_is_not_a_listener_is_refused)
{
	int p[2];
	int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	ck_assert_int_eq(baton_listener_shutdown_begin(p[0]), -ENOTSOCK);
	ck_assert_int_eq(baton_listener_pending(p[0], NULL, NULL), -ENOTSOCK);
	ck_assert_int_eq(baton_listener_shutdown_begin(tcp), -EINVAL);
	ck_assert_int_eq(baton_listener_shutdown_begin(-1), -EBADF);
	(void)close(p[0]);
	(void)close(p[1]);
	(void)close(tcp);
}
END_TEST

struct taken {
	int fds[QUEUED_CLIENTS];
	size_t n;
};

static int take(int conn_fd, void *userdata)
{
	struct taken *t = userdata;
	int flags = fcntl(conn_fd, F_GETFL);

	ck_assert(is_cloexec(conn_fd));
	ck_assert(flags >= 0 && (flags & O_NONBLOCK));
	ck_assert_uint_lt(t->n, QUEUED_CLIENTS);
	t->fds[t->n++] = conn_fd;
	return 0;
}

START_TEST(shutdown_hands_every_queued_connection_to_the_callback)
{
	int listener = tcp_listener();
	int clients[QUEUED_CLIENTS];
	struct taken t = { .n = 0 };
	unsigned left = 99;

	for (size_t i = 0; i < QUEUED_CLIENTS; i++)
		clients[i] = tcp_connect(listener);
	ck_assert_int_eq(baton_listener_shutdown(listener, 5 * UINT64_C(1000000), take, &t, &left),
			 0);
	ck_assert_uint_eq(left, 0);
	ck_assert_uint_eq(t.n, QUEUED_CLIENTS);
	(void)close(listener);
	for (size_t i = 0; i < QUEUED_CLIENTS; i++) {
		assert_data_path(clients[i], t.fds[i]);
		(void)close(t.fds[i]);
		(void)close(clients[i]);
	}
}
END_TEST

static int refuse(int conn_fd, void *userdata)
{
	(void)userdata;
	(void)close(conn_fd);
	return -ECANCELED;
}

START_TEST(shutdown_without_a_callback_waits_and_times_out_with_what_is_left)
{
	int listener = tcp_listener();
	int clients[QUEUED_CLIENTS];
	unsigned left = 0;
	uint64_t start;

	for (size_t i = 0; i < QUEUED_CLIENTS; i++)
		clients[i] = tcp_connect(listener);
	start = now_usec();
	ck_assert_int_eq(baton_listener_shutdown(listener, 100000, NULL, NULL, &left), -ETIMEDOUT);
	ck_assert_uint_ge(now_usec() - start, 100000);
	ck_assert_uint_eq(left, QUEUED_CLIENTS);
	/* A callback's error stops it there. */
	ck_assert_int_eq(baton_listener_shutdown(listener, 100000, refuse, NULL, NULL), -ECANCELED);
	for (size_t i = 0; i < QUEUED_CLIENTS; i++)
		(void)close(clients[i]);
	(void)close(listener);
}
END_TEST

START_TEST(accept_errors_of_one_connection_are_transient_and_the_rest_are_not)
{
	static const int transient[] = { EINTR,	    ECONNABORTED, EPROTO,	ENOPROTOOPT,
					 EHOSTDOWN, ENONET,	  EHOSTUNREACH, EOPNOTSUPP,
					 ENETDOWN,  ENETUNREACH,  EPERM };
	static const int lasting[] = { 0, EAGAIN, EMFILE, ENFILE, ENOBUFS, ENOMEM, EBADF, EINVAL };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int error;

	for (size_t i = 0; i < sizeof(transient) / sizeof(transient[0]); i++) {
		ck_assert_int_eq(baton_accept_error_is_transient(transient[i]), 1);
		ck_assert_int_eq(baton_accept_error_is_transient(-transient[i]), 1);
	}
	for (size_t i = 0; i < sizeof(lasting) / sizeof(lasting[0]); i++)
		ck_assert_int_eq(baton_accept_error_is_transient(lasting[i]), 0);

	/* What the kernel really says: a socket that does not listen, then an empty queue. errno
	 * is taken at once: a passing ck_assert records its place, which may change errno. */
	ck_assert_int_ge(fd, 0);
	error = accept4(fd, NULL, NULL, SOCK_CLOEXEC) < 0 ? errno : 0;
	ck_assert_int_eq(error, EINVAL);
	ck_assert_int_eq(baton_accept_error_is_transient(error), 0);
	ck_assert_int_eq(listen(fd, 1), 0);
	error = accept4(fd, NULL, NULL, SOCK_CLOEXEC) < 0 ? errno : 0;
	ck_assert_int_eq(error, EAGAIN);
	ck_assert_int_eq(baton_accept_error_is_transient(error), 0);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

/* A notify receiver at a path in a fresh directory; *ret_fd receives, non-blocking. */
static void notify_receiver(char dir[], char path[108], int *ret_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	(void)snprintf(path, 108, "%s/notify", dir);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	*ret_fd = fd;
}

/* Datagrams waiting on fd, read and counted; those equal to text counted in *ret_match. */
static unsigned drain_datagrams(int fd, const char *text, unsigned *ret_match)
{
	char buf[256];
	unsigned n = 0, match = 0;
	ssize_t got;

	while ((got = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) >= 0) {
		buf[got] = '\0';
		n++;
		match += strcmp(buf, text) == 0;
	}
	ck_assert_int_eq(errno, EAGAIN);
	*ret_match = match;
	return n;
}

START_TEST(ready_never_blocks_on_a_full_notify_queue_and_is_sent_when_there_is_room)
{
	char dir[] = "/tmp/baton-unit-notify-XXXXXX", path[108];
	struct baton *b = NULL;
	unsigned sent = 0, match = 0;
	int rx, dfd, r;

	clean_env();
	notify_receiver(dir, path, &rx);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);
	ck_assert_int_eq(baton_open(&b, 0), 0);
	/* Fill the receiver's queue (net.unix.max_dgram_qlen) with STATUS lines: they go until
	 * the queue is full, then come back -EAGAIN at once instead of blocking. */
	for (int i = 0; i < 1000; i++) {
		r = baton_status(b, (unsigned)i, NULL);
		if (r == -EAGAIN)
			break;
		ck_assert_int_eq(r, 0);
		sent++;
	}
	ck_assert_int_eq(r, -EAGAIN);
	ck_assert_uint_ge(sent, 1);
	/* READY=1 is never lost and never waited for. */
	ck_assert_int_eq(baton_ready(b), 0);
	dfd = baton_drain_fd(b);
	ck_assert_int_ge(dfd, 0);
	ck_assert(!readable(dfd, SILENCE_MSEC));
	ck_assert_int_eq(baton_status(b, 1, "behind READY"), -EAGAIN);
	/* batond reads: room again; the drain fd says so and baton_process() sends READY=1. */
	ck_assert_uint_eq(drain_datagrams(rx, "READY=1", &match), sent);
	ck_assert_uint_eq(match, 0);
	ck_assert(readable(dfd, WAIT_MSEC));
	ck_assert_int_eq(baton_process(b), 0);
	ck_assert_uint_eq(drain_datagrams(rx, "READY=1", &match), 1);
	ck_assert_uint_eq(match, 1);
	ck_assert(!readable(dfd, SILENCE_MSEC));
	ck_assert_int_eq(baton_status(b, 2, NULL), 0);
	ck_assert_uint_eq(drain_datagrams(rx, "STATUS=2 in flight", &match), 1);
	ck_assert_uint_eq(match, 1);
	b = baton_close(b);
	ck_assert_int_eq(close(rx), 0);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

START_TEST(a_new_receiver_at_the_same_notify_path_is_reached_after_the_old_one_went_away)
{
	char dir[] = "/tmp/baton-unit-notify-XXXXXX", path[108];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct baton *b = NULL;
	unsigned match = 0;
	int rx;

	clean_env();
	notify_receiver(dir, path, &rx);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);
	ck_assert_int_eq(baton_open(&b, BATON_OPEN_NO_SIGNALS), 0);
	ck_assert_int_eq(baton_status(b, 0, "one"), 0);
	ck_assert_uint_eq(drain_datagrams(rx, "STATUS=one", &match), 1);
	/* batond died and another bound the same path (adoption after a crash). */
	ck_assert_int_eq(close(rx), 0);
	ck_assert_int_eq(unlink(path), 0);
	strcpy(sa.sun_path, path);
	rx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ck_assert_int_ge(rx, 0);
	ck_assert_int_eq(bind(rx, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(baton_ready(b), 0);
	ck_assert_uint_eq(drain_datagrams(rx, "READY=1", &match), 1);
	ck_assert_uint_eq(match, 1);
	b = baton_close(b);
	ck_assert_int_eq(close(rx), 0);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

Suite *baton_suite(void)
{
	Suite *s = suite_create("baton");
	TCase *tc = tcase_create("channel");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc,
		       channel_mode_takes_listeners_sent_in_several_messages_and_closes_them_all);
	tcase_add_test(tc, more_listeners_than_one_message_carries_arrive_whole_and_in_order);
	tcase_add_test(tc, ready_status_and_drained_reach_batond_as_the_protocol_bytes);
	tcase_add_test(tc, refresh_adds_the_listeners_batond_has_now_and_keeps_the_known_ones);
	tcase_add_test(tc, drain_makes_the_drain_fd_readable_and_sets_the_deadline);
	tcase_add_test(tc, batond_closing_the_channel_begins_the_drain_and_quiets_the_drain_fd);
	tcase_add_test(tc, a_batond_of_another_major_version_is_refused_with_eprotonosupport);
	tcase_add_test(tc, an_error_from_batond_is_returned_as_its_errno);
	tcase_add_test(tc, listeners_with_the_wrong_number_of_fds_are_refused_and_no_fd_leaks);
	tcase_add_test(tc, listeners_out_of_order_are_refused_and_the_first_ones_closed);
	tcase_add_test(tc, a_malformed_or_wrong_baton_fd_is_refused_and_removed);
	suite_add_tcase(s, tc);

	tc = tcase_create("env");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, listen_fds_mode_takes_fds_3_and_4_with_their_names);
	tcase_add_test(tc, listen_fds_without_names_are_unknown_and_keep_env_keeps_the_variables);
	tcase_add_test(tc, listen_fds_for_another_pid_mean_standalone);
	tcase_add_test(tc, standalone_has_no_listeners_and_its_reports_go_nowhere);
	tcase_add_test(tc, without_a_channel_ready_status_and_stopping_go_to_notify_socket);
	tcase_add_test(tc, a_stop_signal_is_taken_from_the_drain_fd_without_a_handler);
	tcase_add_test(tc, drain_signals_can_be_chosen_before_the_drain_fd);
	tcase_add_test(tc,
		       ready_never_blocks_on_a_full_notify_queue_and_is_sent_when_there_is_room);
	tcase_add_test(
		tc, a_new_receiver_at_the_same_notify_path_is_reached_after_the_old_one_went_away);
	suite_add_tcase(s, tc);

	tc = tcase_create("listener shutdown");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, tcp_stage_one_leaves_new_syns_unanswered_and_keeps_the_queue);
	tcase_add_test(tc, a_handshake_in_progress_is_counted_and_completes_after_stage_one);
	tcase_add_test(tc, unix_stage_one_removes_our_file_and_keeps_the_queue);
	tcase_add_test(tc, unix_stage_one_leaves_a_file_that_is_not_the_sockets_own);
	tcase_add_test(tc, an_abstract_unix_listener_cannot_refuse_but_its_queue_is_counted);
	tcase_add_test(tc, udp_stage_one_drops_new_datagrams_and_keeps_the_queued_one);
	tcase_add_test(tc, what_is_not_a_listener_is_refused);
	tcase_add_test(tc, shutdown_hands_every_queued_connection_to_the_callback);
	tcase_add_test(tc, shutdown_without_a_callback_waits_and_times_out_with_what_is_left);
	tcase_add_test(tc, accept_errors_of_one_connection_are_transient_and_the_rest_are_not);
	suite_add_tcase(s, tc);
	return s;
}
