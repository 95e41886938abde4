/* SPDX-License-Identifier: MIT */
/* test_control.c - the control socket's fair limits, with real Unix sockets and a real loop. */
#include "unit.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "cleanup.h"
#include "control.h"

#define DEADLINE_USEC (10 * 1000 * 1000) /* longest wait for any one event */
#define STEP_USEC     (20 * 1000)	 /* one sd_event_run() while waiting */
#define DIR_MODEL     "/tmp/baton-unit-control-XXXXXX"
#define REPLY_MAX     256 /* bytes of a reply these tests read */

/* A control socket in a directory of its own; requests: "status" (answered at once), "wait"
 * (never answered: a reload waiting for its outcome) and "events" (a stream). */
struct fixture {
	sd_event *e;
	struct control *c;
	char dir[sizeof(DIR_MODEL)];
	char path[sizeof(DIR_MODEL) + 16];
	unsigned n_requests;
};

static uint64_t now_usec(void)
{
	struct timespec ts;

	ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void fill_nothing(void *userdata, struct control_client *cl)
{
	(void)userdata;
	(void)cl;
}

static void on_request(void *userdata, struct control_client *cl, const char *line)
{
	struct fixture *f = userdata;

	f->n_requests++;
	if (strcmp(line, "status") == 0)
		control_reply(cl, "ok status\n");
	else if (strcmp(line, "events") == 0)
		control_stream_start(cl, "ok streaming\n", fill_nothing, NULL);
	else if (strcmp(line, "wait") != 0)
		control_reply(cl, "error unknown\n");
}

static void setup(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	strcpy(f->dir, DIR_MODEL);
	ck_assert_ptr_nonnull(mkdtemp(f->dir));
	(void)snprintf(f->path, sizeof(f->path), "%s/ctl.sock", f->dir);
	ck_assert_int_ge(sd_event_new(&f->e), 0);
	ck_assert_int_eq(control_new(f->e, f->path, -1, on_request, f, &f->c), 0);
}

static void teardown(struct fixture *f)
{
	f->c = control_free(f->c, false);
	f->e = sd_event_unref(f->e);
	ck_assert_int_eq(rmdir(f->dir), 0);
}

/* Runs the loop until nothing is ready any more: every connection accepted, every line read. */
static void settle(struct fixture *f)
{
	uint64_t deadline = now_usec() + DEADLINE_USEC;

	while (sd_event_run(f->e, 0) > 0)
		ck_assert_msg(now_usec() < deadline, "the loop never settled");
}

/* A connected client, with line sent if not NULL. */
static int client(struct fixture *f, const char *line)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	ck_assert_int_ge(fd, 0);
	strcpy(sa.sun_path, f->path);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	if (line)
		ck_assert_int_eq(send(fd, line, strlen(line), MSG_NOSIGNAL), (ssize_t)strlen(line));
	return fd;
}

/* What the server did to the client: 0 still open and silent, 1 closed (EOF or reset), or the
 * length of what it sent (copied into buf). Never blocks. */
static ssize_t peek_state(int fd, char *buf, size_t size)
{
	ssize_t n = recv(fd, buf, size - 1, MSG_DONTWAIT);

	if (n > 0) {
		buf[n] = '\0';
		return n;
	}
	if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
		return -1;
	return 0;
}

/* Runs the loop until fd hears something; returns it (NUL-terminated in buf) or fails. */
static void expect_reply(struct fixture *f, int fd, const char *want)
{
	uint64_t deadline = now_usec() + DEADLINE_USEC;
	char buf[REPLY_MAX];
	ssize_t n;

	while ((n = peek_state(fd, buf, sizeof(buf))) == 0) {
		ck_assert_msg(now_usec() < deadline, "no reply, expected '%s'", want);
		ck_assert_int_ge(sd_event_run(f->e, STEP_USEC), 0);
	}
	ck_assert_msg(n > 0, "closed without a reply, expected '%s'", want);
	ck_assert_msg(strncmp(buf, want, strlen(want)) == 0, "reply '%s', expected '%s'", buf,
		      want);
}

static unsigned count_closed(const int *fds, size_t n)
{
	char buf[REPLY_MAX];
	unsigned closed = 0;

	for (size_t i = 0; i < n; i++)
		closed += peek_state(fds[i], buf, sizeof(buf)) < 0;
	return closed;
}

static void close_all(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fds[i] = safe_close(fds[i]);
}

START_TEST(a_newcomer_closes_the_oldest_idle_client_when_every_talking_slot_is_taken)
{
	int n_fds = unit_count_fds();
	struct fixture f;
	int idle[CONTROL_MAX_TALKING], late;

	setup(&f);
	for (size_t i = 0; i < CONTROL_MAX_TALKING; i++) {
		idle[i] = client(&f, NULL);
		settle(&f); /* accepted one by one: their order is their age */
	}
	ck_assert_uint_eq(count_closed(idle, CONTROL_MAX_TALKING), 0);
	late = client(&f, "status\n");
	expect_reply(&f, late, "ok status");
	/* Exactly one made room, the oldest; long before any deadline could have done it. */
	ck_assert_int_lt(peek_state(idle[0], (char[REPLY_MAX]){ 0 }, REPLY_MAX), 0);
	ck_assert_uint_eq(count_closed(idle, CONTROL_MAX_TALKING), 1);
	close_all(idle, CONTROL_MAX_TALKING);
	late = safe_close(late);
	teardown(&f);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_client_whose_request_is_still_unread_is_not_the_one_closed_for_room)
{
	struct fixture f;
	int asking, idle[CONTROL_MAX_TALKING - 1], late;

	setup(&f);
	/* All in the backlog before the loop runs: accepted in one go, the newcomer last. */
	asking = client(&f, "status\n");
	for (size_t i = 0; i < CONTROL_MAX_TALKING - 1; i++)
		idle[i] = client(&f, NULL);
	late = client(&f, "status\n");
	expect_reply(&f, late, "ok status");
	expect_reply(&f, asking, "ok status");
	ck_assert_uint_eq(count_closed(idle, CONTROL_MAX_TALKING - 1), 1);
	close_all(idle, CONTROL_MAX_TALKING - 1);
	asking = safe_close(asking);
	late = safe_close(late);
	teardown(&f);
}
END_TEST

START_TEST(streams_beyond_their_cap_are_refused_and_status_still_answers)
{
	struct fixture f;
	int streams[CONTROL_MAX_STREAMS], extra, idle[CONTROL_MAX_TALKING], late;

	setup(&f);
	for (size_t i = 0; i < CONTROL_MAX_STREAMS; i++) {
		streams[i] = client(&f, "events\n");
		expect_reply(&f, streams[i], "ok streaming");
	}
	extra = client(&f, "events\n");
	expect_reply(&f, extra, "failed too many event streams");
	for (size_t i = 0; i < CONTROL_MAX_TALKING; i++)
		idle[i] = client(&f, NULL);
	settle(&f);
	late = client(&f, "status\n");
	expect_reply(&f, late, "ok status");
	/* Streams are never the ones to make room. */
	ck_assert_uint_eq(count_closed(streams, CONTROL_MAX_STREAMS), 0);
	close_all(streams, CONTROL_MAX_STREAMS);
	close_all(idle, CONTROL_MAX_TALKING);
	extra = safe_close(extra);
	late = safe_close(late);
	teardown(&f);
}
END_TEST

START_TEST(when_every_slot_waits_or_streams_a_newcomer_is_told_batond_is_busy)
{
	enum { N_WAIT = CONTROL_MAX_CLIENTS - CONTROL_MAX_STREAMS };
	struct fixture f;
	int streams[CONTROL_MAX_STREAMS], waiting[N_WAIT], late;

	setup(&f);
	for (size_t i = 0; i < CONTROL_MAX_STREAMS; i++) {
		streams[i] = client(&f, "events\n");
		expect_reply(&f, streams[i], "ok streaming");
	}
	for (size_t i = 0; i < N_WAIT; i++) {
		waiting[i] = client(&f, "wait\n");
		settle(&f);
	}
	ck_assert_uint_eq(f.n_requests, CONTROL_MAX_STREAMS + N_WAIT);
	late = client(&f, "status\n");
	expect_reply(&f, late, "failed batond is busy");
	/* Nobody who asked was dropped for it. */
	ck_assert_uint_eq(count_closed(waiting, N_WAIT), 0);
	ck_assert_uint_eq(count_closed(streams, CONTROL_MAX_STREAMS), 0);
	close_all(streams, CONTROL_MAX_STREAMS);
	close_all(waiting, N_WAIT);
	late = safe_close(late);
	teardown(&f);
}
END_TEST

START_TEST(a_client_that_sends_no_whole_request_is_closed_at_its_deadline)
{
	uint64_t deadline = now_usec() + CONTROL_REQUEST_TIMEOUT_USEC + DEADLINE_USEC;
	struct fixture f;
	int half, waiting;
	char buf[REPLY_MAX];

	setup(&f);
	half = client(&f, "stat"); /* no newline, ever */
	waiting = client(&f, "wait\n");
	while (peek_state(half, buf, sizeof(buf)) == 0) {
		ck_assert_msg(now_usec() < deadline, "the silent client is still open");
		ck_assert_int_ge(sd_event_run(f.e, 100 * 1000), 0);
	}
	/* One that sent its request waits for its outcome as long as it takes. */
	ck_assert_int_eq(peek_state(waiting, buf, sizeof(buf)), 0);
	half = safe_close(half);
	waiting = safe_close(waiting);
	teardown(&f);
}
END_TEST

Suite *control_suite(void)
{
	Suite *s = suite_create("control");
	TCase *tc = tcase_create("limits");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc,
		       a_newcomer_closes_the_oldest_idle_client_when_every_talking_slot_is_taken);
	tcase_add_test(tc, a_client_whose_request_is_still_unread_is_not_the_one_closed_for_room);
	tcase_add_test(tc, streams_beyond_their_cap_are_refused_and_status_still_answers);
	tcase_add_test(tc, when_every_slot_waits_or_streams_a_newcomer_is_told_batond_is_busy);
	tcase_add_test(tc, a_client_that_sends_no_whole_request_is_closed_at_its_deadline);
	suite_add_tcase(s, tc);
	return s;
}
