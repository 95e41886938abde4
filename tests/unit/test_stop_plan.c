/* SPDX-License-Identifier: MIT */
/* test_stop_plan.c - the two-stage close's decisions: stages of a stop, the queue watch, retire. */
#include "unit.h"

#include <stdint.h>

#include "stop_plan.h"

static const struct stop_facts graceful_serving = { .graceful = true, .serving = true };

START_TEST(a_graceful_stop_with_a_serving_generation_refuses_new_connections_first)
{
	enum stop_stage s = STOP_RUNNING;

	ck_assert_int_eq(stop_plan_request(&s, false, &graceful_serving), STOP_STEP_REFUSE_NEW);
	ck_assert_int_eq(s, STOP_QUEUES);
	ck_assert(stop_plan_stopping(s));
	ck_assert_int_eq(stop_plan_queues_done(&s), STOP_STEP_DRAIN);
	ck_assert_int_eq(s, STOP_WORKERS);
	/* A second look that ends late changes nothing. */
	ck_assert_int_eq(stop_plan_queues_done(&s), STOP_STEP_NONE);
	ck_assert_int_eq(s, STOP_WORKERS);
}
END_TEST

START_TEST(a_stop_goes_straight_to_the_drain_when_no_one_would_empty_the_queues)
{
	const struct stop_facts cases[] = {
		{ .graceful = false, .serving = true },			       /* immediate */
		{ .graceful = true, .serving = false },			       /* nothing serves */
		{ .graceful = true, .serving = false, .manager_keeps = true }, /* fd store */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum stop_stage s = STOP_RUNNING;

		ck_assert_int_eq(stop_plan_request(&s, false, &cases[i]), STOP_STEP_DRAIN);
		ck_assert_int_eq(s, STOP_WORKERS);
	}
}
END_TEST

START_TEST(a_stop_refuses_new_connections_first_even_when_the_manager_keeps_the_sockets)
{
	const struct stop_facts kept = { .graceful = true, .serving = true, .manager_keeps = true };
	enum stop_stage s = STOP_RUNNING;

	/* A stop of the socket unit too closes it after batond: what is queued must go first. */
	ck_assert_int_eq(stop_plan_request(&s, false, &kept), STOP_STEP_REFUSE_NEW);
	ck_assert_int_eq(s, STOP_QUEUES);
}
END_TEST

START_TEST(the_filter_comes_off_at_the_close_only_where_the_manager_keeps_the_socket)
{
	const struct stop_facts kept = { .graceful = true, .serving = true, .manager_keeps = true };

	ck_assert(stop_plan_release_filter(&kept, true));
	ck_assert(!stop_plan_release_filter(&kept, false));
	ck_assert(!stop_plan_release_filter(&graceful_serving, true));
	ck_assert(!stop_plan_release_filter(&graceful_serving, false));
}
END_TEST

START_TEST(a_second_stop_kills_from_every_stage_and_a_repeated_plain_stop_does_nothing)
{
	const enum stop_stage from[] = { STOP_RUNNING, STOP_QUEUES, STOP_WORKERS, STOP_KILLING };

	for (size_t i = 0; i < sizeof(from) / sizeof(from[0]); i++) {
		enum stop_stage s = from[i];

		ck_assert_int_eq(stop_plan_request(&s, true, &graceful_serving), STOP_STEP_KILL);
		ck_assert_int_eq(s, STOP_KILLING);
		if (from[i] != STOP_RUNNING) {
			s = from[i];
			ck_assert_int_eq(stop_plan_request(&s, false, &graceful_serving),
					 STOP_STEP_NONE);
			ck_assert_int_eq(s, from[i]);
		}
	}
	{
		enum stop_stage s = STOP_KILLING;

		/* The queues' end after a kill must not drain what is already being killed. */
		ck_assert_int_eq(stop_plan_queues_done(&s), STOP_STEP_NONE);
		ck_assert_int_eq(s, STOP_KILLING);
	}
	ck_assert(!stop_plan_stopping(STOP_RUNNING));
	ck_assert_str_eq(stop_stage_to_string(STOP_QUEUES), "emptying queues");
}
END_TEST

START_TEST(the_queue_watch_looks_again_until_empty_and_never_past_the_deadline)
{
	struct quiesce q = { 0 };
	uint64_t next = 0;

	quiesce_begin(&q, 1000, 50000);
	ck_assert(q.active);
	ck_assert_int_eq(quiesce_look(&q, 1000, 3, &next), QUIESCE_WAIT);
	ck_assert_uint_eq(next, 1000 + STOP_POLL_USEC);
	ck_assert_int_eq(quiesce_look(&q, 45000, 1, &next), QUIESCE_WAIT);
	ck_assert_uint_eq(next, 51000); /* clamped to the deadline: the final look */
	ck_assert_int_eq(quiesce_look(&q, 46000, 0, &next), QUIESCE_EMPTY);
	ck_assert(!q.active);
}
END_TEST

START_TEST(the_queue_watch_times_out_with_connections_left_and_ends_at_once_when_empty)
{
	struct quiesce q = { 0 };
	uint64_t next = 7;

	quiesce_begin(&q, 1000, 50000);
	ck_assert_int_eq(quiesce_look(&q, 51000, 2, &next), QUIESCE_TIMED_OUT);
	ck_assert(!q.active);
	ck_assert_uint_eq(next, 7); /* untouched unless WAIT */
	quiesce_begin(&q, 1000, 0);
	ck_assert_int_eq(quiesce_look(&q, 1000, 0, &next), QUIESCE_EMPTY);
	/* A timeout too long to add is "never". */
	quiesce_begin(&q, 1000, UINT64_MAX);
	ck_assert_uint_eq(q.deadline_usec, UINT64_MAX);
	ck_assert_int_eq(quiesce_look(&q, UINT64_MAX - 1, 1, &next), QUIESCE_WAIT);
}
END_TEST

START_TEST(a_retire_is_refused_while_busy_for_an_unknown_name_and_for_the_last_listener)
{
	ck_assert_int_eq(stop_plan_retire(STOP_RUNNING, false, 1, 3), RETIRE_OK);
	ck_assert_int_eq(stop_plan_retire(STOP_RUNNING, true, 1, 3), RETIRE_BUSY);
	ck_assert_int_eq(stop_plan_retire(STOP_QUEUES, false, 1, 3), RETIRE_BUSY);
	ck_assert_int_eq(stop_plan_retire(STOP_WORKERS, false, 1, 3), RETIRE_BUSY);
	ck_assert_int_eq(stop_plan_retire(STOP_RUNNING, false, -1, 3), RETIRE_NO_SUCH);
	ck_assert_int_eq(stop_plan_retire(STOP_RUNNING, false, 0, 1), RETIRE_LAST);
}
END_TEST

Suite *stop_plan_suite(void)
{
	Suite *s = suite_create("stop_plan");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, a_graceful_stop_with_a_serving_generation_refuses_new_connections_first);
	tcase_add_test(tc, a_stop_goes_straight_to_the_drain_when_no_one_would_empty_the_queues);
	tcase_add_test(
		tc, a_stop_refuses_new_connections_first_even_when_the_manager_keeps_the_sockets);
	tcase_add_test(tc,
		       the_filter_comes_off_at_the_close_only_where_the_manager_keeps_the_socket);
	tcase_add_test(tc,
		       a_second_stop_kills_from_every_stage_and_a_repeated_plain_stop_does_nothing);
	tcase_add_test(tc, the_queue_watch_looks_again_until_empty_and_never_past_the_deadline);
	tcase_add_test(tc,
		       the_queue_watch_times_out_with_connections_left_and_ends_at_once_when_empty);
	tcase_add_test(
		tc, a_retire_is_refused_while_busy_for_an_unknown_name_and_for_the_last_listener);
	suite_add_tcase(s, tc);
	return s;
}
