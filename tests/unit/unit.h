/* SPDX-License-Identifier: MIT */
/* unit.h - the Check suites of batond's modules, one per module, run by unit_main.c. */
#pragma once

#include <stdbool.h>

#include <check.h>

#define UNIT_TIMEOUT_SEC 30 /* per test case; generous for a busy 2-core CI machine */

Suite *duration_suite(void);
Suite *listener_suite(void);
Suite *config_suite(void);
Suite *spawn_suite(void);
Suite *notify_suite(void);
Suite *rollout_suite(void);
Suite *proto_suite(void);
Suite *upgrade_suite(void);
Suite *channel_suite(void);
Suite *baton_suite(void);
Suite *stop_plan_suite(void);
Suite *commands_suite(void);
Suite *eventlog_suite(void);
Suite *metrics_suite(void);
Suite *einhorn_suite(void);
Suite *inuse_suite(void);
Suite *control_suite(void);
Suite *intercept_suite(void);
Suite *drain_plan_suite(void);

/* Number of open fds of this process, from /proc/self/fd; tests compare it before and after. */
int unit_count_fds(void);

/*
 * True once no open file description refers to a pipe's read end any more: a write to
 * write_end then fails with EPIPE. The caller ignores SIGPIPE. While the read end is open, this
 * writes one byte into the pipe.
 */
bool unit_read_end_is_gone(int write_end);
