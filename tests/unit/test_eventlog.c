/* SPDX-License-Identifier: MIT */
/* test_eventlog.c - the event ring: numbering, JSON lines, readers that fall behind. */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventlog.h"

static struct eventlog_event worker_exit(unsigned gen, int pid)
{
	return (struct eventlog_event){
		.type = EVENT_WORKER_EXITED,
		.generation = gen,
		.worker = 1,
		.pid = pid,
		.has_end = true,
		.signaled = true,
		.status = 15,
		.message = "generation 3 worker 1 (pid 77): exited with signal TERM"
	};
}

START_TEST(events_are_numbered_and_rendered_as_one_json_line_each)
{
	struct eventlog *l = eventlog_new(1);
	struct eventlog_event ev = worker_exit(3, 77);
	char buf[4096];
	uint64_t cursor = 1, dropped = 0;
	size_t n;

	ck_assert_ptr_nonnull(l);
	ck_assert_uint_eq(eventlog_record(l, &ev, 100, 200), 1);
	ev = (struct eventlog_event){ .type = EVENT_RELOAD_ROLLED_BACK,
				      .generation = 4,
				      .worker = 0,
				      .pid = 80,
				      .reason = "exited",
				      .has_end = true,
				      .status = 1,
				      .message = "a \"quoted\"\nline" };
	ck_assert_uint_eq(eventlog_record(l, &ev, 101, 201), 2);
	ck_assert_uint_eq(eventlog_next_seq(l), 3);
	ck_assert_uint_eq(eventlog_oldest_seq(l), 1);

	n = eventlog_read(l, &cursor, buf, sizeof(buf) - 1, &dropped);
	buf[n] = '\0';
	ck_assert_str_eq(
		buf, "{\"seq\":1,\"monotonic_usec\":100,\"realtime_usec\":200,"
		     "\"event\":\"worker_exited\",\"generation\":3,\"worker\":1,\"pid\":77,"
		     "\"signal\":\"TERM\",\"message\":\"generation 3 worker 1 (pid 77): exited "
		     "with signal TERM\"}\n"
		     "{\"seq\":2,\"monotonic_usec\":101,\"realtime_usec\":201,"
		     "\"event\":\"reload_rolled_back\",\"generation\":4,\"worker\":0,\"pid\":80,"
		     "\"reason\":\"exited\",\"exit_status\":1,"
		     "\"message\":\"a \\\"quoted\\\"\\u000aline\"}\n");
	ck_assert_uint_eq(cursor, 3);
	ck_assert_uint_eq(dropped, 0);
	/* Nothing new: nothing written, the cursor stays. */
	ck_assert_uint_eq(eventlog_read(l, &cursor, buf, sizeof(buf), &dropped), 0);
	ck_assert_uint_eq(cursor, 3);
	eventlog_free(l);
}
END_TEST

START_TEST(a_reader_that_fell_behind_the_ring_is_told_how_many_it_missed)
{
	struct eventlog *l = eventlog_new(1);
	struct eventlog_event ev = worker_exit(1, 10);
	char *buf = malloc(EVENTLOG_CHUNK_MAX);
	uint64_t cursor = 1, dropped = 0, seq = 0;
	size_t n;

	ck_assert_ptr_nonnull(l);
	ck_assert_ptr_nonnull(buf);
	for (unsigned i = 0; i < 3 * EVENTLOG_RING; i++)
		seq = eventlog_record(l, &ev, i, i);
	ck_assert_uint_eq(seq, 3 * EVENTLOG_RING);
	/* Bounded: at most EVENTLOG_RING are kept, and they are the newest. */
	ck_assert_uint_le(eventlog_next_seq(l) - eventlog_oldest_seq(l), EVENTLOG_RING);
	ck_assert_uint_eq(eventlog_next_seq(l), seq + 1);

	n = eventlog_read(l, &cursor, buf, EVENTLOG_CHUNK_MAX, &dropped);
	ck_assert_uint_gt(n, 0);
	ck_assert_uint_eq(dropped, eventlog_oldest_seq(l) - 1);
	ck_assert(strncmp(buf, "{\"event\":\"dropped\",\"count\":", 27) == 0);
	/* Then the oldest kept, whole lines only, up to the chunk's size. */
	{
		char want[64];

		(void)snprintf(want, sizeof(want), "\n{\"seq\":%llu,",
			       (unsigned long long)eventlog_oldest_seq(l));
		ck_assert_ptr_nonnull(memmem(buf, n, want, strlen(want)));
	}
	ck_assert_int_eq(buf[n - 1], '\n');
	while (cursor < eventlog_next_seq(l))
		ck_assert_uint_gt(eventlog_read(l, &cursor, buf, EVENTLOG_CHUNK_MAX, &dropped), 0);
	ck_assert_uint_eq(dropped, eventlog_oldest_seq(l) - 1); /* counted once */
	free(buf);
	eventlog_free(l);
}
END_TEST

START_TEST(the_ring_forgets_by_bytes_too_and_stays_in_order)
{
	struct eventlog *l = eventlog_new(5);
	char msg[900], buf[EVENTLOG_LINE_MAX * 2];
	struct eventlog_event ev = { .type = EVENT_UPGRADE_STARTED, .message = msg };
	uint64_t prev = 0;

	memset(msg, 'x', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	ck_assert_uint_eq(eventlog_oldest_seq(l), 5);
	for (unsigned i = 0; i < 2000; i++)
		(void)eventlog_record(l, &ev, i, i);
	/* ~950-byte lines: the text buffer, not the count, is the bound here. */
	ck_assert_uint_lt(eventlog_next_seq(l) - eventlog_oldest_seq(l), EVENTLOG_RING);
	for (uint64_t c = eventlog_oldest_seq(l); c < eventlog_next_seq(l);) {
		uint64_t dropped = 0, at = c;
		size_t n = eventlog_read(l, &c, buf, EVENTLOG_LINE_MAX, &dropped);
		unsigned long long seq = 0;

		ck_assert_uint_eq(dropped, 0);
		ck_assert_uint_eq(c, at + 1);
		ck_assert_int_eq(sscanf(buf, "{\"seq\":%llu,", &seq), 1);
		ck_assert_uint_eq(seq, at);
		ck_assert(seq > prev);
		prev = seq;
		ck_assert_int_eq(buf[n - 1], '\n');
	}
	eventlog_free(l);
}
END_TEST

START_TEST(a_message_too_long_for_a_line_is_cut_whole_characters_and_marked)
{
	/* Both alignments: with one of them, the room ends inside a character. */
	for (int shift = 0; shift < 2; shift++) {
		struct eventlog *l = eventlog_new(1);
		char msg[3 * EVENTLOG_LINE_MAX], buf[EVENTLOG_LINE_MAX + 1];
		struct eventlog_event ev = { .type = EVENT_LISTENER_ADDED,
					     .listener = "web",
					     .address = "tcp://127.0.0.1:80",
					     .message = msg };
		uint64_t cursor = 1, dropped = 0;
		size_t n;

		/* "é" is two bytes: a cut between them would not be UTF-8. */
		memset(msg, 'a', (size_t)shift);
		for (size_t i = (size_t)shift; i + 3 < sizeof(msg); i += 2)
			memcpy(msg + i, "\xc3\xa9", 2);
		msg[sizeof(msg) - 3] = '\0';
		(void)eventlog_record(l, &ev, 1, 1);
		n = eventlog_read(l, &cursor, buf, sizeof(buf) - 1, &dropped);
		buf[n] = '\0';
		ck_assert_uint_le(n, EVENTLOG_LINE_MAX);
		ck_assert_ptr_nonnull(
			strstr(buf, "\"listener\":\"web\",\"address\":\"tcp://127.0.0.1:80\""));
		ck_assert_msg(strstr(buf, "\xc3\xa9\",\"message_cut\":true}\n"),
			      "shift %d: the cut does not end on a whole character", shift);
		eventlog_free(l);
	}
}
END_TEST

START_TEST(every_type_has_a_name)
{
	for (int t = 0; t < EVENT__MAX; t++)
		ck_assert_str_ne(eventlog_type_name((enum eventlog_type)t), "?");
	ck_assert_str_eq(eventlog_type_name(EVENT__MAX), "?");
	ck_assert(eventlog_type_has_worker(EVENT_WORKER_READY));
	ck_assert(!eventlog_type_has_worker(EVENT_GENERATION_READY));
}
END_TEST

Suite *eventlog_suite(void)
{
	Suite *s = suite_create("eventlog");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, events_are_numbered_and_rendered_as_one_json_line_each);
	tcase_add_test(tc, a_reader_that_fell_behind_the_ring_is_told_how_many_it_missed);
	tcase_add_test(tc, the_ring_forgets_by_bytes_too_and_stays_in_order);
	tcase_add_test(tc, a_message_too_long_for_a_line_is_cut_whole_characters_and_marked);
	tcase_add_test(tc, every_type_has_a_name);
	suite_add_tcase(s, tc);
	return s;
}
