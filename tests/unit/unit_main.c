/* SPDX-License-Identifier: MIT */
/* unit_main.c - runs every unit suite in Check's fork mode, so a crash fails one test only. */
#include "unit.h"

#include <stdlib.h>

int main(void)
{
	SRunner *sr = srunner_create(duration_suite());
	int failed;

	srunner_add_suite(sr, listener_suite());
	srunner_add_suite(sr, config_suite());
	srunner_add_suite(sr, spawn_suite());
	srunner_add_suite(sr, notify_suite());
	srunner_add_suite(sr, rollout_suite());
	srunner_add_suite(sr, proto_suite());
	srunner_add_suite(sr, upgrade_suite());
	srunner_add_suite(sr, channel_suite());
	srunner_add_suite(sr, baton_suite());
	srunner_add_suite(sr, stop_plan_suite());
	srunner_add_suite(sr, commands_suite());
	srunner_add_suite(sr, eventlog_suite());
	srunner_add_suite(sr, metrics_suite());
	srunner_add_suite(sr, einhorn_suite());
	srunner_add_suite(sr, inuse_suite());
	srunner_add_suite(sr, control_suite());
	srunner_add_suite(sr, intercept_suite());
	srunner_add_suite(sr, drain_plan_suite());
	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
