/* SPDX-License-Identifier: MIT */
/* test_drain_plan.c - what a server does with the drain signal: masks in, a verdict out. */
#include "unit.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "drain_plan.h"

#define BIT(sig) (UINT64_C(1) << ((sig)-1))

/* redis-server 7.0.15 (Debian) as /proc shows it after start: TERM and INT caught, HUP, QUIT, PIPE
 * and ALRM ignored, USR1 and USR2 left at their default. */
static const char redis_status[] = "Name:\tredis-server\n"
				   "State:\tS (sleeping)\n"
				   "SigQ:\t0/95710\n"
				   "SigPnd:\t0000000000000000\n"
				   "ShdPnd:\t0000000000000000\n"
				   "SigBlk:\t0000000000000000\n"
				   "SigIgn:\t0000000000003005\n"
				   "SigCgt:\t00000001000044ea\n"
				   "CapInh:\t0000000000000000\n";

START_TEST(status_masks_are_read_from_proc_text)
{
	struct drain_masks m;

	ck_assert_int_eq(drain_plan_parse_status(redis_status, strlen(redis_status), &m), 0);
	ck_assert_uint_eq(m.blocked, 0);
	ck_assert_uint_eq(m.ignored, BIT(SIGHUP) | BIT(SIGQUIT) | BIT(SIGPIPE) | BIT(SIGALRM));
	ck_assert(m.caught & BIT(SIGTERM));
	ck_assert(m.caught & BIT(SIGINT));
	ck_assert(!(m.caught & BIT(SIGUSR2)));
}
END_TEST

START_TEST(a_status_without_a_mask_or_with_a_bad_one_is_refused)
{
	static const char *const bad[] = {
		"SigBlk:\t0\nSigIgn:\t0\n",
		"SigBlk:\t0\nSigIgn:\t0\nSigCgt:\t\n",
		"SigBlk:\t0\nSigIgn:\txyz\nSigCgt:\t0\n",
		"SigBlk:\t00000000000000000\nSigIgn:\t0\nSigCgt:\t0\n", /* 17 digits */
		"",
	};
	struct drain_masks m = { .caught = 42 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(drain_plan_parse_status(bad[i], strlen(bad[i]), &m), -EBADMSG);
		ck_assert_uint_eq(m.caught, 42);
	}
}
END_TEST

START_TEST(redis_with_preload_and_term_is_a_loss_and_usr2_is_the_fix)
{
	struct drain_masks m;
	char line[1024];

	ck_assert_int_eq(drain_plan_parse_status(redis_status, strlen(redis_status), &m), 0);
	ck_assert_int_eq(drain_plan_judge(SIGTERM, &m, DRAIN_SHIM_SERVER), DRAIN_SERVER_NOT_SHIM);
	ck_assert(drain_plan_is_a_loss(DRAIN_SERVER_NOT_SHIM));
	ck_assert_int_eq(drain_plan_free_signal(&m, SIGTERM), SIGUSR2);
	drain_plan_describe(DRAIN_SERVER_NOT_SHIM, SIGTERM, &m, 42, true, "30s", line,
			    sizeof(line));
	ck_assert_msg(strstr(line, "worker pid 42 catches SIGTERM itself"), "%s", line);
	ck_assert_msg(strstr(line, "--drain-signal USR2"), "%s", line);
	/* USR2 then: left at default, so the shim takes it. */
	ck_assert_int_eq(drain_plan_judge(SIGUSR2, &m, DRAIN_SHIM_UNKNOWN), DRAIN_KILLS);
	m.caught |= BIT(SIGUSR2);
	ck_assert_int_eq(drain_plan_judge(SIGUSR2, &m, DRAIN_SHIM_ARMED), DRAIN_SHIM);
	ck_assert(!drain_plan_is_a_loss(DRAIN_SHIM));
}
END_TEST

START_TEST(every_row_of_the_table_gives_its_verdict)
{
	static const struct {
		struct drain_masks m;
		int sig;
		enum drain_shim shim;
		enum drain_verdict want;
	} rows[] = {
		{ { .ignored = BIT(SIGTERM) }, SIGTERM, DRAIN_SHIM_ARMED, DRAIN_IGNORED },
		{ { .caught = BIT(SIGTERM) }, SIGTERM, DRAIN_SHIM_ARMED, DRAIN_SHIM },
		{ { .caught = BIT(SIGTERM) }, SIGTERM, DRAIN_SHIM_SERVER, DRAIN_SERVER_NOT_SHIM },
		{ { .caught = BIT(SIGTERM) }, SIGTERM, DRAIN_SHIM_UNKNOWN, DRAIN_CAUGHT },
		{ { .blocked = BIT(SIGQUIT) }, SIGQUIT, DRAIN_SHIM_UNKNOWN, DRAIN_BLOCKED },
		{ { .blocked = BIT(SIGQUIT), .caught = BIT(SIGQUIT) },
		  SIGQUIT,
		  DRAIN_SHIM_UNKNOWN,
		  DRAIN_CAUGHT },
		{ { 0 }, SIGWINCH, DRAIN_SHIM_UNKNOWN, DRAIN_IGNORED },
		{ { 0 }, SIGCHLD, DRAIN_SHIM_UNKNOWN, DRAIN_IGNORED },
		{ { 0 }, SIGTSTP, DRAIN_SHIM_UNKNOWN, DRAIN_STOPS },
		{ { 0 }, SIGTERM, DRAIN_SHIM_UNKNOWN, DRAIN_KILLS },
		{ { 0 }, 40, DRAIN_SHIM_UNKNOWN, DRAIN_KILLS }, /* a real-time signal */
		{ { .caught = BIT(64) }, 64, DRAIN_SHIM_UNKNOWN, DRAIN_CAUGHT },
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ck_assert_msg(
			drain_plan_judge(rows[i].sig, &rows[i].m, rows[i].shim) == rows[i].want,
			"row %zu: %d", i, drain_plan_judge(rows[i].sig, &rows[i].m, rows[i].shim));
}
END_TEST

START_TEST(the_free_signal_skips_what_the_server_uses_and_the_current_one)
{
	struct drain_masks m = { .caught = BIT(SIGUSR2), .blocked = BIT(SIGUSR1) };
	struct drain_masks all = { .caught = ~UINT64_C(0) };

	ck_assert_int_eq(drain_plan_free_signal(&m, 0), SIGPWR);
	ck_assert_int_eq(drain_plan_free_signal(&(struct drain_masks){ 0 }, SIGUSR2), SIGUSR1);
	ck_assert_int_eq(drain_plan_free_signal(&all, 0), 0);
}
END_TEST

START_TEST(each_loss_names_the_consequence_and_a_fix)
{
	static const struct {
		enum drain_verdict v;
		bool preload;
		const char *consequence, *fix;
	} rows[] = {
		{ DRAIN_KILLS, false, "the requests it holds fail", "or run it with --preload" },
		{ DRAIN_KILLS, true, "the requests it holds fail", "stops this server gracefully" },
		{ DRAIN_IGNORED, false, "until the drain deadline (30s)", "--drain-signal USR2" },
		{ DRAIN_IGNORED, true, "until the drain deadline (30s)", "gracefully" },
		{ DRAIN_STOPS, false, "hangs", "--preload" },
	};
	struct drain_masks m = { .ignored = BIT(SIGTERM) };

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char line[1024];

		ck_assert(drain_plan_is_a_loss(rows[i].v));
		drain_plan_describe(rows[i].v, SIGTERM, &m, 7, rows[i].preload, "30s", line,
				    sizeof(line));
		ck_assert_msg(strstr(line, "worker pid 7 "), "%s", line);
		ck_assert_msg(strstr(line, rows[i].consequence), "row %zu: %s", i, line);
		ck_assert_msg(strstr(line, rows[i].fix), "row %zu: %s", i, line);
	}
	ck_assert(!drain_plan_is_a_loss(DRAIN_CAUGHT));
	ck_assert(!drain_plan_is_a_loss(DRAIN_BLOCKED));
}
END_TEST

Suite *drain_plan_suite(void)
{
	Suite *s = suite_create("drain_plan");
	TCase *tc = tcase_create("judge");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, status_masks_are_read_from_proc_text);
	tcase_add_test(tc, a_status_without_a_mask_or_with_a_bad_one_is_refused);
	tcase_add_test(tc, redis_with_preload_and_term_is_a_loss_and_usr2_is_the_fix);
	tcase_add_test(tc, every_row_of_the_table_gives_its_verdict);
	tcase_add_test(tc, the_free_signal_skips_what_the_server_uses_and_the_current_one);
	tcase_add_test(tc, each_loss_names_the_consequence_and_a_fix);
	suite_add_tcase(s, tc);
	return s;
}
