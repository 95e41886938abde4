/* SPDX-License-Identifier: MIT */
/* test_einhorn.c - einhorn_ack_parse() on the lines einhorn's worker library sends, and worse. */
#include "unit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "einhorn.h"

#define UNTOUCHED_PID (-7) /* what a refused line must leave in *ret_pid */

static pid_t ack_ok(const char *line)
{
	pid_t pid = UNTOUCHED_PID;
	int r = einhorn_ack_parse(line, &pid);

	ck_assert_msg(r == 0, "einhorn_ack_parse(\"%s\") = %d", line, r);
	return pid;
}

static void assert_refused(const char *line)
{
	pid_t pid = UNTOUCHED_PID;

	ck_assert_int_eq(einhorn_ack_parse(line, &pid), -EBADMSG);
	ck_assert_int_eq(pid, UNTOUCHED_PID);
}

START_TEST(the_yaml_ack_of_einhorns_client_gives_its_pid)
{
	/* YAML.dump({"command" => "worker:ack", "pid" => 4242}), escaped by client.rb. */
	ck_assert_int_eq(ack_ok("---%0Acommand: worker:ack%0Apid: 4242%0A"), 4242);
}
END_TEST

START_TEST(a_json_ack_gives_its_pid)
{
	ck_assert_int_eq(ack_ok("{\"command\":\"worker:ack\",\"pid\":17}"), 17);
}
END_TEST

START_TEST(an_escaped_percent_does_not_end_the_line)
{
	ck_assert_int_eq(ack_ok("---%0Anote: 100%25%0Acommand: worker:ack%0Apid: 99%0A"), 99);
}
END_TEST

START_TEST(lines_that_are_not_acks_with_a_pid_are_refused)
{
	assert_refused("");
	assert_refused("---%0Acommand: state%0A");
	assert_refused("---%0Acommand: worker:ack%0A");
	assert_refused("---%0Acommand: worker:ack%0Apid:%0A12");
	assert_refused("---%0Acommand: worker:ack%0Apid: 0%0A");
	assert_refused("---%0Acommand: worker:ack%0Apid: 2147483648%0A");
	assert_refused("---%0Acommand: worker:ack%0Apid: 99999999999999999999999999%0A");
	/* A lone or cut escape is kept as it is. */
	assert_refused("%");
	assert_refused("%0");
	assert_refused("worker:ack%2");
}
END_TEST

START_TEST(only_the_first_einhorn_line_max_bytes_count)
{
	char line[EINHORN_LINE_MAX + 64];
	const char *ack = "worker:ack pid: 5";
	size_t pad = EINHORN_LINE_MAX - strlen(ack);

	/* The ack ends exactly at the limit: it counts. */
	memset(line, ' ', pad);
	strcpy(line + pad, ack);
	ck_assert_int_eq(ack_ok(line), 5);
	/* One byte more in front: the pid's digit falls beyond it. */
	memset(line, ' ', pad + 1);
	strcpy(line + pad + 1, ack);
	assert_refused(line);
}
END_TEST

Suite *einhorn_suite(void)
{
	Suite *s = suite_create("einhorn");
	TCase *tc = tcase_create("ack");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, the_yaml_ack_of_einhorns_client_gives_its_pid);
	tcase_add_test(tc, a_json_ack_gives_its_pid);
	tcase_add_test(tc, an_escaped_percent_does_not_end_the_line);
	tcase_add_test(tc, lines_that_are_not_acks_with_a_pid_are_refused);
	tcase_add_test(tc, only_the_first_einhorn_line_max_bytes_count);
	suite_add_tcase(s, tc);
	return s;
}
