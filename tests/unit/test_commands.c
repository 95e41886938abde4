/* SPDX-License-Identifier: MIT */
/* test_commands.c - the control requests' table, batond's handlers for it, status rendering. */
#include "unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batond.h"
#include "command_table.h"
#include "status.h"

START_TEST(every_command_in_the_table_has_a_handler_in_batond)
{
	for (size_t i = 0; i < COMMAND__MAX; i++) {
		ck_assert_int_eq(command_table[i].id, (int)i);
		ck_assert_ptr_nonnull(command_table[i].name);
		ck_assert_ptr_nonnull(command_table[i].help);
		ck_assert_msg(commands_has_handler(command_table[i].id), "no handler for %s",
			      command_table[i].name);
		ck_assert(command_find(command_table[i].name) == &command_table[i]);
		ck_assert(!command_table[i].flag == !command_table[i].flag_word);
		/* A command takes an argument or a flag, not both: the wire cannot tell them. */
		ck_assert(!(command_table[i].arg_name && command_table[i].flag));
	}
	ck_assert(!commands_has_handler(COMMAND__MAX));
	ck_assert_ptr_null(command_find("frobnicate"));
}
END_TEST

START_TEST(the_names_in_errors_and_help_come_from_the_table)
{
	char names[COMMAND_NAMES_MAX];
	char *help = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&help, &size);

	command_names(names, sizeof(names));
	ck_assert_str_eq(names, "status, reload, stop, upgrade, listen, retire, version, events, "
				"identify");
	ck_assert_ptr_nonnull(f);
	command_help(f);
	ck_assert_int_eq(fclose(f), 0);
	for (size_t i = 0; i < COMMAND__MAX; i++) {
		char line[64];

		(void)snprintf(line, sizeof(line), "\n  %s", command_table[i].name);
		ck_assert_msg(strstr(help, line) || strncmp(help, line + 1, strlen(line) - 1) == 0,
			      "help lacks %s", command_table[i].name);
	}
	ck_assert_ptr_nonnull(strstr(help, "listen [NAME=]ADDRESS  bind"));
	ck_assert_ptr_nonnull(strstr(help, "status [--json]"));
	free(help);
	/* Truncation keeps the buffer terminated. */
	command_names(names, 10);
	ck_assert_uint_lt(strlen(names), 10);
}
END_TEST

START_TEST(request_lines_parse_into_command_argument_and_flag)
{
	const struct command *c = NULL;
	const char *arg = "x";
	bool flag = true;

	ck_assert_int_eq(command_parse("status", &c, &arg, &flag), 0);
	ck_assert_int_eq(c->id, COMMAND_STATUS);
	ck_assert_ptr_null(arg);
	ck_assert(!flag);
	ck_assert_int_eq(command_parse("status json", &c, &arg, &flag), 0);
	ck_assert(flag);
	ck_assert_int_eq(command_parse("reload nowait", &c, &arg, &flag), 0);
	ck_assert_int_eq(c->id, COMMAND_RELOAD);
	ck_assert(flag);
	ck_assert_int_eq(command_parse("listen web=127.0.0.1:80", &c, &arg, &flag), 0);
	ck_assert_int_eq(c->id, COMMAND_LISTEN);
	ck_assert_str_eq(arg, "web=127.0.0.1:80");
	ck_assert(!flag);

	c = NULL;
	ck_assert_int_eq(command_parse("events since 7", &c, &arg, &flag), 0);
	ck_assert_int_eq(c->id, COMMAND_EVENTS);
	ck_assert_str_eq(arg, "7");
	ck_assert(flag);
	ck_assert_int_eq(command_parse("events", &c, &arg, &flag), 0);
	ck_assert_ptr_null(arg);
	ck_assert(!flag);

	c = NULL;
	ck_assert_int_eq(command_parse("events since", &c, &arg, &flag), -EINVAL);
	ck_assert_int_eq(command_parse("events since ", &c, &arg, &flag), -EINVAL);
	ck_assert_int_eq(command_parse("events sincere 7", &c, &arg, &flag), -EINVAL);
	ck_assert_int_eq(command_parse("status jsonx", &c, &arg, &flag), -EINVAL);
	ck_assert_int_eq(command_parse("status yaml", &c, &arg, &flag), -EINVAL);
	ck_assert_int_eq(command_parse("stop now", &c, &arg, &flag), -EINVAL);
	ck_assert_int_eq(command_parse("listen", &c, &arg, &flag), -EINVAL);
	ck_assert_int_eq(command_parse("retire ", &c, &arg, &flag), -EINVAL);
	ck_assert_int_eq(command_parse("statusx", &c, &arg, &flag), -EINVAL);
	ck_assert_int_eq(command_parse("", &c, &arg, &flag), -EINVAL);
	ck_assert_ptr_null(c); /* untouched on failure */
}
END_TEST

START_TEST(request_lines_format_back_to_what_batond_parses)
{
	char buf[64];

	for (size_t i = 0; i < COMMAND__MAX; i++) {
		const struct command *c = &command_table[i], *back = NULL;
		const char *got = NULL, *arg;
		bool flag = false;

		for (int f = 0; f <= (c->flag ? 1 : 0); f++) {
			/* A positional argument, or the value its flag takes when given. */
			arg = c->arg_name || (f && c->flag_arg) ? "some-arg" : NULL;
			ck_assert_int_eq(command_format(c, arg, f, buf, sizeof(buf)), 0);
			ck_assert_int_eq(command_parse(buf, &back, &got, &flag), 0);
			ck_assert(back == c);
			ck_assert(flag == (bool)f);
			if (arg)
				ck_assert_str_eq(got, arg);
		}
	}
	ck_assert_int_eq(command_format(&command_table[COMMAND_RETIRE], NULL, false, buf, 64),
			 -EINVAL);
	ck_assert_int_eq(command_format(&command_table[COMMAND_RETIRE], "a\nb", false, buf, 64),
			 -EINVAL);
	ck_assert_int_eq(command_format(&command_table[COMMAND_STOP], "x", false, buf, 64),
			 -EINVAL);
	ck_assert_int_eq(command_format(&command_table[COMMAND_STOP], NULL, true, buf, 64),
			 -EINVAL);
	ck_assert_int_eq(
		command_format(&command_table[COMMAND_RETIRE], "a-long-name", false, buf, 10),
		-ENAMETOOLONG);
	/* A flag that takes a value: "events since 42", the value only with the flag. */
	ck_assert_int_eq(command_format(&command_table[COMMAND_EVENTS], "42", true, buf, 64), 0);
	ck_assert_str_eq(buf, "events since 42");
	ck_assert_int_eq(command_format(&command_table[COMMAND_EVENTS], NULL, true, buf, 64),
			 -EINVAL);
	ck_assert_int_eq(command_format(&command_table[COMMAND_EVENTS], "42", false, buf, 64),
			 -EINVAL);
}
END_TEST

static struct status_view *sample_view(void)
{
	struct status_view *v = calloc(1, sizeof(*v));

	ck_assert_ptr_nonnull(v);
	v->pid = 42;
	v->name = "web";
	v->uptime_sec = 7;
	v->serving_gen = 2;
	v->starting_gen = 3;
	v->has_last_reload = true;
	v->last_reload_gen = 2;
	v->last_reload_ok = true;
	v->last_reload_ago_sec = 3;
	v->last_reload_text = "generation 2: \"ok\"";
	v->ready_source = "notify";
	v->n_generations = 2;
	v->generations[0] = (struct status_generation){ 2, "serving", 0, 2 };
	v->generations[1] = (struct status_generation){ 3, "starting", 2, 1 };
	v->n_workers = 3;
	v->workers[0] = (struct status_worker){ 0, 100, "ready", 5, "" };
	v->workers[1] = (struct status_worker){ 1, 101, "ready", 5, "busy\n" };
	v->workers[2] = (struct status_worker){ 0, 102, "starting", 0, "" };
	v->n_listeners = 1;
	v->listeners[0] =
		(struct status_listener){ "web", "tcp://127.0.0.1:80", "tcp", 1, 128, true, NULL };
	return v;
}

START_TEST(status_text_shows_generations_workers_and_listeners)
{
	struct status_view *v = sample_view();
	char *t = status_format(v, false);

	ck_assert_ptr_nonnull(t);
	ck_assert_str_eq(t, "batond " BATON_VERSION ", pid 42 (web), up 7s\n"
			    "last reload: generation 2: \"ok\" (3s ago)\n"
			    "generation 2 (serving):\n"
			    "  worker 0: pid 100, ready, up 5s\n"
			    "  worker 1: pid 101, ready, up 5s, status: busy\n\n"
			    "generation 3 (starting):\n"
			    "  worker 0: pid 102, starting, up 0s\n"
			    "listeners:\n"
			    "  web: tcp://127.0.0.1:80, accept queue 1/128, retiring\n");
	free(t);
	/* The pid file must name this batond; status says when it does not. */
	v->pid_file = "/run/web.pid";
	v->pid_file_pid = 41;
	t = status_format(v, false);
	ck_assert_ptr_nonnull(strstr(t, "\nwarning: pid file /run/web.pid names pid 41, not this "
					"batond (pid 42)"));
	free(t);
	v->pid_file_pid = 42;
	t = status_format(v, false);
	ck_assert_ptr_null(strstr(t, "warning"));
	free(t);
	free(v);
}
END_TEST

START_TEST(status_json_escapes_text_and_says_null_without_a_reload)
{
	struct status_view *v = sample_view();
	char *j;

	v->has_last_reload = false;
	v->listeners[0].queued = -1;
	j = status_format(v, true);
	ck_assert_ptr_nonnull(j);
	ck_assert_ptr_nonnull(strstr(j, "\"last_reload\":null,"));
	ck_assert_ptr_nonnull(strstr(j, "\"status\":\"busy\\u000a\""));
	ck_assert_ptr_nonnull(strstr(j, "{\"id\":3,\"state\":\"starting\",\"workers\":[{"
					"\"index\":0,\"pid\":102,"));
	ck_assert_ptr_nonnull(strstr(
		j, "\"queued\":-1,\"backlog\":128,\"retiring\":true,\"refuse_new\":null}]}\n"));
	free(j);
	/* A listener whose stop could not refuse new connections says why, in both forms. */
	v->listeners[0].refuse_new = "needs \"CAP_NET_ADMIN\"";
	j = status_format(v, true);
	ck_assert_ptr_nonnull(strstr(j, "\"refuse_new\":\"needs \\\"CAP_NET_ADMIN\\\"\"}]}\n"));
	free(j);
	j = status_format(v, false);
	ck_assert_ptr_nonnull(strstr(j, "retiring\n    a stop cannot refuse new connections: needs "
					"\"CAP_NET_ADMIN\"\n"));
	free(j);
	v->listeners[0].refuse_new = NULL;
	v->has_last_reload = true;
	j = status_format(v, true);
	ck_assert_ptr_nonnull(strstr(j, "\"text\":\"generation 2: \\\"ok\\\"\"}"));
	free(j);
	free(v);
}
END_TEST

Suite *commands_suite(void)
{
	Suite *s = suite_create("commands");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, every_command_in_the_table_has_a_handler_in_batond);
	tcase_add_test(tc, the_names_in_errors_and_help_come_from_the_table);
	tcase_add_test(tc, request_lines_parse_into_command_argument_and_flag);
	tcase_add_test(tc, request_lines_format_back_to_what_batond_parses);
	tcase_add_test(tc, status_text_shows_generations_workers_and_listeners);
	tcase_add_test(tc, status_json_escapes_text_and_says_null_without_a_reload);
	suite_add_tcase(s, tc);
	return s;
}
