/* SPDX-License-Identifier: MIT */
/* test_config.c - config_parse() on argv arrays, signal names, and the PATH search. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "cleanup.h"
#include "config.h"

#define ARGS_MAX     2100  /* arguments in one test command line: 1025 listeners need 2053 */
#define ARGS_BUF     32768 /* bytes of their text */
#define TEST_PATH    "/usr/local/bin:/usr/bin:/bin" /* PATH for config_parse to search */
#define FIND_POISON  "untouched" /* what a failing config_find_executable() must leave */
#define TMPDIR_MODEL "/tmp/baton-unit-config-XXXXXX"

#ifndef BATON_VERSION
#define BATON_VERSION "0.1.0" /* as config.c assumes when the Makefile does not say */
#endif

/* A mutable argv, as main() gets it: config_parse() keeps pointers into it. */
struct args {
	int argc;
	char *argv[ARGS_MAX + 1];
	char buf[ARGS_BUF];
	size_t used;
};

static void args_add(struct args *a, const char *s)
{
	size_t n = strlen(s) + 1;

	ck_assert_int_lt(a->argc, ARGS_MAX);
	ck_assert_uint_le(n, ARGS_BUF - a->used);
	memcpy(a->buf + a->used, s, n);
	a->argv[a->argc++] = a->buf + a->used;
	a->argv[a->argc] = NULL;
	a->used += n;
}

/* Allocates an argument vector holding the NULL-terminated list. */
static struct args *args_new(const char *const *list)
{
	struct args *a = calloc(1, sizeof(*a));

	ck_assert_ptr_nonnull(a);
	for (; *list; list++)
		args_add(a, *list);
	return a;
}

/* Parses list with a known PATH; *ret_args must be freed after the last look at the config. */
static int parse(const char *const *list, struct config *c, struct args **ret_args)
{
	struct args *a = args_new(list);

	ck_assert_int_eq(setenv("PATH", TEST_PATH, 1), 0);
	*ret_args = a;
	return config_parse(a->argc, a->argv, c);
}

static struct config *config_alloc(void)
{
	struct config *c = calloc(1, sizeof(*c));

	ck_assert_ptr_nonnull(c);
	return c;
}

/* Parses list, which must fail with a negative errno (error if not 0). */
static void assert_refused(const char *const *list, int error)
{
	_cleanup_free_ struct config *c = config_alloc();
	_cleanup_free_ struct args *a = NULL;
	int r = parse(list, c, &a);

	ck_assert_msg(r < 0, "config_parse accepted an invalid command line (returned %d)", r);
	if (error != 0)
		ck_assert_msg(r == error, "config_parse returned %d (%s), expected %d (%s)", r,
			      strerror(-r), error, strerror(-error));
}

#define ARGV(...) ((const char *const[]){ "batond", __VA_ARGS__, NULL })

/* --- config_parse --- */

START_TEST(minimal_command_line_runs_with_the_defaults)
{
	_cleanup_free_ struct config *c = config_alloc();
	_cleanup_free_ struct args *a = NULL;
	struct stat st;

	ck_assert_int_eq(parse(ARGV("-l", "127.0.0.1:0", "--", "true"), c, &a), CONFIG_RUN);
	ck_assert_uint_eq(c->n_listeners, 1);
	ck_assert_str_eq(c->listeners[0].name, "listen0");
	ck_assert_str_eq(c->listeners[0].spec, "tcp://127.0.0.1:0");
	ck_assert_int_eq(c->listeners[0].fd, -1);
	ck_assert_int_eq(c->backlog, LISTENER_BACKLOG_DEFAULT);
	ck_assert_int_eq(c->backlog, 4096);
	ck_assert_uint_eq(c->rollout.n_workers, 1);
	ck_assert_int_eq(c->rollout.ready_mode, ROLLOUT_READY_NOTIFY);
	ck_assert_uint_eq(c->rollout.ready_timeout_usec, UINT64_C(60000000));
	ck_assert_uint_eq(c->rollout.drain_timeout_usec, UINT64_C(30000000));
	ck_assert_int_eq(c->drain_signal, SIGTERM);
	ck_assert_ptr_null(c->pid_file);
	ck_assert_int_eq(c->log_level, LOG_INFO);

	ck_assert_ptr_eq(c->argv, a->argv + 4);
	ck_assert_str_eq(c->argv[0], "true");
	ck_assert_ptr_null(c->argv[1]);
	ck_assert_msg(c->exec_path[0] == '/', "exec_path '%s' is not absolute", c->exec_path);
	ck_assert_msg(strlen(c->exec_path) > 5 &&
			      strcmp(c->exec_path + strlen(c->exec_path) - 5, "/true") == 0,
		      "exec_path '%s' is not a 'true'", c->exec_path);
	ck_assert_int_eq(stat(c->exec_path, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	ck_assert_int_eq(access(c->exec_path, X_OK), 0);
}
END_TEST

START_TEST(every_option_is_parsed)
{
	_cleanup_free_ struct config *c = config_alloc();
	_cleanup_free_ struct args *a = NULL;

	ck_assert_int_eq(
		parse(ARGV("-n", "4", "--batch", "2", "--ready", "delay:2s", "--ready-timeout",
			   "5s", "--drain-signal", "QUIT", "--drain-timeout", "1500ms",
			   "--pid-file", "/x", "--backlog", "16", "-v", "-l", "web=127.0.0.1:0",
			   "--listen", "admin=unix:@baton-admin", "-l", "udp://127.0.0.1:0", "--",
			   "/bin/sh", "-c", "exit 0"),
		      c, &a),
		CONFIG_RUN);
	ck_assert_uint_eq(c->rollout.n_workers, 4);
	ck_assert_uint_eq(c->rollout.batch, 2);
	ck_assert_int_eq(c->rollout.ready_mode, ROLLOUT_READY_DELAY);
	ck_assert_uint_eq(c->rollout.ready_delay_usec, UINT64_C(2000000));
	ck_assert_uint_eq(c->rollout.ready_timeout_usec, UINT64_C(5000000));
	ck_assert_int_eq(c->drain_signal, SIGQUIT);
	ck_assert_uint_eq(c->rollout.drain_timeout_usec, UINT64_C(1500000));
	ck_assert_str_eq(c->pid_file, "/x");
	ck_assert_int_eq(c->backlog, 16);
	ck_assert_int_eq(c->log_level, LOG_DEBUG);

	ck_assert_uint_eq(c->n_listeners, 3);
	ck_assert_str_eq(c->listeners[0].name, "web");
	ck_assert_str_eq(c->listeners[0].spec, "tcp://127.0.0.1:0");
	ck_assert_str_eq(c->listeners[1].name, "admin");
	ck_assert_str_eq(c->listeners[1].spec, "unix:@baton-admin");
	/* Unnamed listeners are named after their position among all of them. */
	ck_assert_str_eq(c->listeners[2].name, "listen2");
	ck_assert_int_eq(c->listeners[2].kind, LISTENER_UDP);

	ck_assert_str_eq(c->exec_path, "/bin/sh");
	ck_assert_str_eq(c->argv[0], "/bin/sh");
	ck_assert_str_eq(c->argv[1], "-c");
	ck_assert_str_eq(c->argv[2], "exit 0");
	ck_assert_ptr_null(c->argv[3]);
}
END_TEST

START_TEST(user_and_group_are_resolved_from_names_or_ids_when_parsed)
{
	_cleanup_free_ struct config *c = config_alloc();
	_cleanup_free_ struct args *a = NULL;

	ck_assert_msg(geteuid() == 0, "--user needs root: run the unit tests as root");
	ck_assert_int_eq(parse(ARGV("--user", "nobody", "-l", "127.0.0.1:0", "true"), c, &a),
			 CONFIG_RUN);
	ck_assert(c->creds.set_ids);
	ck_assert_uint_eq(c->creds.uid, 65534);
	ck_assert_uint_eq(c->creds.gid, 65534);
	ck_assert_str_eq(c->user, "nobody");
	ck_assert_str_eq(c->user_home, "/nonexistent");
	ck_assert_uint_ge(c->creds.n_groups, 1);
	ck_assert_uint_eq(c->creds.groups[0], 65534);
	ck_assert(!c->creds.no_new_privs);
	free(a);

	/* A uid, another primary group by name, and no new privileges. */
	ck_assert_int_eq(parse(ARGV("--user", "0", "--group", "nogroup", "--no-new-privs", "-l",
				    "127.0.0.1:0", "true"),
			       c, &a),
			 CONFIG_RUN);
	ck_assert_uint_eq(c->creds.uid, 0);
	ck_assert_uint_eq(c->creds.gid, 65534);
	ck_assert_str_eq(c->user, "root");
	ck_assert(c->creds.no_new_privs);
	free(a);

	/* --group alone: batond's uid, that one group. */
	ck_assert_int_eq(parse(ARGV("--group", "65534", "-l", "127.0.0.1:0", "true"), c, &a),
			 CONFIG_RUN);
	ck_assert(c->creds.set_ids);
	ck_assert_uint_eq(c->creds.uid, 0);
	ck_assert_uint_eq(c->creds.gid, 65534);
	ck_assert_uint_eq(c->creds.n_groups, 1);
	ck_assert_str_eq(c->user, "");
	free(a);

	/* Neither: nothing changes in the child. */
	ck_assert_int_eq(parse(ARGV("-l", "127.0.0.1:0", "true"), c, &a), CONFIG_RUN);
	ck_assert(!c->creds.set_ids && !c->creds.no_new_privs);
}
END_TEST

START_TEST(an_unknown_user_or_group_is_refused)
{
	assert_refused(ARGV("--user", "no-such-user-baton", "-l", "127.0.0.1:0", "true"), -EINVAL);
	assert_refused(ARGV("--user", "4000000000", "-l", "127.0.0.1:0", "true"), -EINVAL);
	assert_refused(ARGV("--group", "no-such-group-baton", "-l", "127.0.0.1:0", "true"),
		       -EINVAL);
	assert_refused(ARGV("--user", "", "-l", "127.0.0.1:0", "true"), -EINVAL);
	assert_refused(ARGV("--user", "-l", "127.0.0.1:0", "true"), -EINVAL);
}
END_TEST

START_TEST(ready_none_and_explicit_notify_are_accepted)
{
	_cleanup_free_ struct config *c = config_alloc();
	_cleanup_free_ struct args *a = NULL;

	ck_assert_int_eq(parse(ARGV("--ready", "none", "-l", "127.0.0.1:0", "true"), c, &a),
			 CONFIG_RUN);
	ck_assert_int_eq(c->rollout.ready_mode, ROLLOUT_READY_NONE);
	free(a);
	ck_assert_int_eq(parse(ARGV("--ready", "notify", "-l", "127.0.0.1:0", "true"), c, &a),
			 CONFIG_RUN);
	ck_assert_int_eq(c->rollout.ready_mode, ROLLOUT_READY_NOTIFY);
}
END_TEST

START_TEST(command_without_double_dash_keeps_its_own_options)
{
	_cleanup_free_ struct config *c = config_alloc();
	_cleanup_free_ struct args *a = NULL;

	/* Options stop at the command: "-n 3" belongs to it, not to batond. */
	ck_assert_int_eq(parse(ARGV("-l", "127.0.0.1:0", "true", "-n", "3", "--", "x"), c, &a),
			 CONFIG_RUN);
	ck_assert_uint_eq(c->rollout.n_workers, 1);
	ck_assert_str_eq(c->argv[0], "true");
	ck_assert_str_eq(c->argv[1], "-n");
	ck_assert_str_eq(c->argv[2], "3");
	ck_assert_str_eq(c->argv[3], "--");
	ck_assert_str_eq(c->argv[4], "x");
	ck_assert_ptr_null(c->argv[5]);
	ck_assert_msg(c->exec_path[0] == '/', "exec_path '%s' is not absolute", c->exec_path);
}
END_TEST

START_TEST(batch_larger_than_the_workers_is_clamped)
{
	_cleanup_free_ struct config *c = config_alloc();
	_cleanup_free_ struct args *a = NULL;

	ck_assert_int_eq(parse(ARGV("-n", "2", "--batch", "8", "-l", "127.0.0.1:0", "true"), c, &a),
			 CONFIG_RUN);
	ck_assert_uint_eq(c->rollout.n_workers, 2);
	ck_assert_uint_eq(c->rollout.batch, 2);
}
END_TEST

START_TEST(worker_counts_1_and_256_are_the_bounds)
{
	_cleanup_free_ struct config *c = config_alloc();
	_cleanup_free_ struct args *a = NULL;

	ck_assert_int_eq(parse(ARGV("-n", "256", "-l", "127.0.0.1:0", "true"), c, &a), CONFIG_RUN);
	ck_assert_uint_eq(c->rollout.n_workers, 256);
	free(a);
	ck_assert_int_eq(parse(ARGV("--workers", "1", "-l", "127.0.0.1:0", "true"), c, &a),
			 CONFIG_RUN);
	ck_assert_uint_eq(c->rollout.n_workers, 1);
}
END_TEST

START_TEST(a_second_parse_starts_from_scratch)
{
	_cleanup_free_ struct config *c = config_alloc();
	_cleanup_free_ struct args *a = NULL;
	_cleanup_free_ struct args *b = NULL;

	ck_assert_int_eq(
		parse(ARGV("-n", "3", "-v", "-l", "a=127.0.0.1:0", "-l", "unix:@x", "--", "true"),
		      c, &a),
		CONFIG_RUN);
	/* getopt's state and every field are reset, so nothing carries over. */
	ck_assert_int_eq(parse(ARGV("-l", "127.0.0.1:0", "--", "true"), c, &b), CONFIG_RUN);
	ck_assert_uint_eq(c->n_listeners, 1);
	ck_assert_str_eq(c->listeners[0].name, "listen0");
	ck_assert_uint_eq(c->rollout.n_workers, 1);
	ck_assert_int_eq(c->log_level, LOG_INFO);
	ck_assert_ptr_eq(c->argv, b->argv + 4);
}
END_TEST

START_TEST(up_to_the_limit_listeners_are_accepted_and_one_more_is_refused)
{
	_cleanup_free_ struct config *c = config_alloc();
	_cleanup_free_ struct args *a = args_new(ARGV("-n", "1"));
	int r;

	for (int i = 0; i < CONFIG_MAX_LISTENERS; i++) {
		args_add(a, "-l");
		args_add(a, "127.0.0.1:0");
	}
	args_add(a, "true");
	ck_assert_int_eq(setenv("PATH", TEST_PATH, 1), 0);
	r = config_parse(a->argc, a->argv, c);
	ck_assert_int_eq(r, CONFIG_RUN);
	ck_assert_uint_eq(c->n_listeners, CONFIG_MAX_LISTENERS);
	ck_assert_str_eq(c->listeners[CONFIG_MAX_LISTENERS - 1].name, "listen1023");
	free(a);

	a = args_new(ARGV("-n", "1"));
	for (int i = 0; i < CONFIG_MAX_LISTENERS + 1; i++) {
		args_add(a, "-l");
		args_add(a, "127.0.0.1:0");
	}
	args_add(a, "true");
	r = config_parse(a->argc, a->argv, c);
	ck_assert_int_lt(r, 0);
}
END_TEST

/* Parses list with stdout going into buf (NUL-terminated), so --help and --version can be read. */
static int parse_capturing_stdout(const char *const *list, struct config *c, char *buf, size_t size)
{
	struct args *a = NULL;
	size_t len = 0;
	int p[2], saved, r;
	ssize_t n;

	ck_assert_int_eq(fflush(stdout), 0);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	saved = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
	ck_assert_int_ge(saved, 0);
	ck_assert_int_eq(dup2(p[1], STDOUT_FILENO), STDOUT_FILENO);
	ck_assert_int_eq(close(p[1]), 0);
	r = parse(list, c, &a);
	ck_assert_int_eq(fflush(stdout), 0);
	/* Restoring stdout drops the last write end, so the read below ends at EOF. */
	ck_assert_int_eq(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
	ck_assert_int_eq(close(saved), 0);
	while ((n = read(p[0], buf + len, size - 1 - len)) > 0)
		len += (size_t)n;
	ck_assert_int_eq(n, 0);
	buf[len] = '\0';
	ck_assert_int_eq(close(p[0]), 0);
	free(a);
	return r;
}

START_TEST(help_and_version_print_to_stdout_and_ask_to_exit)
{
	int n_fds = unit_count_fds();
	struct config *c = config_alloc();
	char out[8192];

	ck_assert_int_eq(parse_capturing_stdout(ARGV("--help"), c, out, sizeof(out)), CONFIG_EXIT);
	ck_assert_msg(strncmp(out, "Usage: batond", 13) == 0, "--help printed '%s'", out);
	ck_assert_ptr_nonnull(strstr(out, "--listen"));
	ck_assert_ptr_nonnull(strstr(out, "--drain-timeout"));
	ck_assert_int_eq(parse_capturing_stdout(ARGV("-h"), c, out, sizeof(out)), CONFIG_EXIT);
	ck_assert_msg(strncmp(out, "Usage: batond", 13) == 0, "-h printed '%s'", out);

	ck_assert_int_eq(parse_capturing_stdout(ARGV("--version"), c, out, sizeof(out)),
			 CONFIG_EXIT);
	ck_assert_str_eq(out, "batond " BATON_VERSION "\n");
	ck_assert_int_eq(parse_capturing_stdout(ARGV("-V"), c, out, sizeof(out)), CONFIG_EXIT);
	ck_assert_str_eq(out, "batond " BATON_VERSION "\n");

	/* Help wins even over an otherwise incomplete command line. */
	ck_assert_int_eq(
		parse_capturing_stdout(ARGV("-l", "127.0.0.1:0", "--help"), c, out, sizeof(out)),
		CONFIG_EXIT);
	ck_assert_msg(strncmp(out, "Usage: batond", 13) == 0, "--help printed '%s'", out);
	free(c);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(missing_listener_or_command_is_refused)
{
	assert_refused(ARGV("--", "true"), -EINVAL);
	assert_refused(ARGV("true"), -EINVAL);
	assert_refused(ARGV("-l", "127.0.0.1:0"), -EINVAL);
	assert_refused(ARGV("-l", "127.0.0.1:0", "--"), -EINVAL);
}
END_TEST

START_TEST(unknown_options_and_missing_arguments_are_refused)
{
	assert_refused(ARGV("--bogus", "-l", "127.0.0.1:0", "true"), -EINVAL);
	assert_refused(ARGV("-x", "-l", "127.0.0.1:0", "true"), -EINVAL);
	assert_refused(ARGV("-l", "127.0.0.1:0", "-Q", "true"), -EINVAL);
	assert_refused(ARGV("-l", "127.0.0.1:0", "--drain-signal"), -EINVAL);
	assert_refused(ARGV("-l", "127.0.0.1:0", "-n"), -EINVAL);
	assert_refused(ARGV("-l"), -EINVAL);
	assert_refused(ARGV("-l", "127.0.0.1:0", "--verbose=yes", "true"), -EINVAL);
}
END_TEST

START_TEST(bad_values_are_refused)
{
	static const struct {
		const char *option, *value;
		int error;
	} cases[] = {
		{ "--ready-timeout", "1.5us", -EINVAL },
		{ "--ready-timeout", "10x", -EINVAL },
		{ "--drain-timeout", "-1s", -EINVAL },
		{ "--drain-timeout", "", -EINVAL },
		{ "--drain-timeout", "99999999999999999h", -EINVAL },
		{ "--drain-signal", "FOO", -EINVAL },
		{ "--drain-signal", "0", -EINVAL },
		{ "--drain-signal", "65", -EINVAL },
		{ "--drain-signal", "KILL", -EINVAL },
		{ "--drain-signal", "SIGSTOP", -EINVAL },
		{ "--drain-signal", "9", -EINVAL },
		{ "--drain-signal", "19", -EINVAL },
		{ "-n", "0", -EINVAL },
		{ "-n", "257", -EINVAL },
		{ "--workers", "-1", -EINVAL },
		{ "--workers", "4x", -EINVAL },
		{ "--workers", "18446744073709551617", -EINVAL },
		{ "--batch", "0", -EINVAL },
		{ "--batch", "257", -EINVAL },
		{ "--backlog", "0", -EINVAL },
		{ "--backlog", "2147483648", -EINVAL },
		{ "--backlog", "many", -EINVAL },
		{ "--ready", "sometimes", -EINVAL },
		{ "--ready", "delay:", -EINVAL },
		{ "--ready", "delay:2x", -EINVAL },
		{ "--pid-file", "", -EINVAL },
		{ "-l", "127.0.0.1:65536", -ERANGE },
		{ "-l", "nonsense", -EINVAL },
		{ "-l", "a=b=127.0.0.1:0", -EINVAL },
		{ "-l", "no such host:80", -EINVAL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *const argv[] = {
			"batond", cases[i].option, cases[i].value, "-l", "127.0.0.1:0",
			"--",	  "true",	   NULL,
		};

		assert_refused(argv, cases[i].error);
	}
}
END_TEST

START_TEST(duplicate_listener_names_are_refused)
{
	assert_refused(ARGV("-l", "a=127.0.0.1:1", "-l", "a=127.0.0.1:2", "true"), -EINVAL);
	/* An explicit name may also collide with a default one. */
	assert_refused(ARGV("-l", "listen1=127.0.0.1:1", "-l", "127.0.0.1:2", "true"), -EINVAL);
}
END_TEST

START_TEST(an_unknown_command_is_refused_with_enoent)
{
	assert_refused(ARGV("-l", "127.0.0.1:0", "--", "no-such-command-xyz"), -ENOENT);
	assert_refused(ARGV("-l", "127.0.0.1:0", "--", "/nonexistent/no-such-command-xyz"),
		       -ENOENT);
}
END_TEST

START_TEST(a_directory_as_command_is_refused)
{
	assert_refused(ARGV("-l", "127.0.0.1:0", "--", "/tmp"), 0);
	assert_refused(ARGV("-l", "127.0.0.1:0", "--", "/"), 0);
}
END_TEST

/* --- config_parse_signal and config_parse_ready --- */

START_TEST(signals_are_accepted_by_name_prefix_case_or_number)
{
	ck_assert_int_eq(config_parse_signal("TERM"), SIGTERM);
	ck_assert_int_eq(config_parse_signal("SIGTERM"), SIGTERM);
	ck_assert_int_eq(config_parse_signal("term"), SIGTERM);
	ck_assert_int_eq(config_parse_signal("sigquit"), SIGQUIT);
	ck_assert_int_eq(config_parse_signal("SigHup"), SIGHUP);
	ck_assert_int_eq(config_parse_signal("USR2"), SIGUSR2);
	ck_assert_int_eq(config_parse_signal("WINCH"), SIGWINCH);
	ck_assert_int_eq(config_parse_signal("15"), 15);
	ck_assert_int_eq(config_parse_signal("1"), 1);
	ck_assert_int_eq(config_parse_signal("64"), 64);
}
END_TEST

START_TEST(invalid_signals_are_refused_with_einval)
{
	static const char *const bad[] = {
		"0",	  "65",	 "-15", "+15",	      "15x",   " 15",
		"FOO",	  "SIG", "",	"SIGSIGTERM", "TERM ", "99999999999999999999",
		"SIG15x",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(config_parse_signal(bad[i]) == -EINVAL,
			      "config_parse_signal(\"%s\") = %d", bad[i],
			      config_parse_signal(bad[i]));
}
END_TEST

START_TEST(ready_modes_parse_and_bad_ones_leave_the_outputs_alone)
{
	enum rollout_ready_mode mode = ROLLOUT_READY_NONE;
	uint64_t delay = 77;

	ck_assert_int_eq(config_parse_ready("delay:500ms", &mode, &delay), 0);
	ck_assert_int_eq(mode, ROLLOUT_READY_DELAY);
	ck_assert_uint_eq(delay, 500000);
	ck_assert_int_eq(config_parse_ready("notify", &mode, &delay), 0);
	ck_assert_int_eq(mode, ROLLOUT_READY_NOTIFY);
	ck_assert_uint_eq(delay, 0);

	mode = ROLLOUT_READY_NONE;
	delay = 77;
	ck_assert_int_eq(config_parse_ready("delay:", &mode, &delay), -EINVAL);
	ck_assert_int_eq(config_parse_ready("delay", &mode, &delay), -EINVAL);
	ck_assert_int_eq(config_parse_ready("", &mode, &delay), -EINVAL);
	ck_assert_int_eq(config_parse_ready("none ", &mode, &delay), -EINVAL);
	ck_assert_int_eq(mode, ROLLOUT_READY_NONE);
	ck_assert_uint_eq(delay, 77);
}
END_TEST

/* --- config_find_executable --- */

static void make_dir(char *dir, size_t size)
{
	ck_assert_int_lt(snprintf(dir, size, TMPDIR_MODEL), (int)size);
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void make_file(const char *dir, const char *name, mode_t mode, char *ret, size_t size)
{
	int fd;

	ck_assert_int_lt(snprintf(ret, size, "%s/%s", dir, name), (int)size);
	fd = open(ret, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "#!/bin/sh\n", 10), 10);
	ck_assert_int_eq(close(fd), 0);
	/* chmod() after open(), so the umask cannot take bits away. */
	ck_assert_int_eq(chmod(ret, mode), 0);
}

START_TEST(executable_is_found_in_the_first_directory_that_has_it)
{
	int n_fds = unit_count_fds();
	char d1[64], d2[64], path[160], f1[128], f2[128], found[256];

	make_dir(d1, sizeof(d1));
	make_dir(d2, sizeof(d2));
	make_file(d1, "tool", 0755, f1, sizeof(f1));
	make_file(d2, "tool", 0755, f2, sizeof(f2));
	(void)snprintf(path, sizeof(path), "/nonexistent:%s:%s", d1, d2);

	ck_assert_int_eq(config_find_executable("tool", path, found, sizeof(found)), 0);
	ck_assert_str_eq(found, f1);

	(void)snprintf(path, sizeof(path), "%s:%s", d2, d1);
	ck_assert_int_eq(config_find_executable("tool", path, found, sizeof(found)), 0);
	ck_assert_str_eq(found, f2);

	ck_assert_int_eq(unlink(f1), 0);
	ck_assert_int_eq(unlink(f2), 0);
	ck_assert_int_eq(rmdir(d1), 0);
	ck_assert_int_eq(rmdir(d2), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_non_executable_file_gives_eacces_unless_an_executable_follows)
{
	char d1[64], d2[64], path[160], f1[128], f2[128], found[256] = FIND_POISON;

	make_dir(d1, sizeof(d1));
	make_dir(d2, sizeof(d2));
	make_file(d1, "tool", 0644, f1, sizeof(f1));
	(void)snprintf(path, sizeof(path), "%s:%s", d1, d2);

	ck_assert_int_eq(config_find_executable("tool", path, found, sizeof(found)), -EACCES);
	ck_assert_str_eq(found, FIND_POISON);
	ck_assert_int_eq(config_find_executable(f1, NULL, found, sizeof(found)), -EACCES);
	ck_assert_str_eq(found, FIND_POISON);

	/* A later executable wins over an earlier file we may not run. */
	make_file(d2, "tool", 0700, f2, sizeof(f2));
	ck_assert_int_eq(config_find_executable("tool", path, found, sizeof(found)), 0);
	ck_assert_str_eq(found, f2);

	ck_assert_int_eq(unlink(f1), 0);
	ck_assert_int_eq(unlink(f2), 0);
	ck_assert_int_eq(rmdir(d1), 0);
	ck_assert_int_eq(rmdir(d2), 0);
}
END_TEST

START_TEST(an_absent_executable_gives_enoent)
{
	char d1[64], found[256] = FIND_POISON;

	make_dir(d1, sizeof(d1));
	ck_assert_int_eq(config_find_executable("tool", d1, found, sizeof(found)), -ENOENT);
	ck_assert_int_eq(config_find_executable("", d1, found, sizeof(found)), -ENOENT);
	ck_assert_str_eq(found, FIND_POISON);
	ck_assert_int_eq(rmdir(d1), 0);
}
END_TEST

START_TEST(a_directory_of_that_name_is_skipped)
{
	char d1[64], d2[64], sub[128], path[160], f2[128], found[256] = FIND_POISON;

	make_dir(d1, sizeof(d1));
	make_dir(d2, sizeof(d2));
	(void)snprintf(sub, sizeof(sub), "%s/tool", d1);
	ck_assert_int_eq(mkdir(sub, 0755), 0);
	ck_assert_int_lt(config_find_executable("tool", d1, found, sizeof(found)), 0);
	ck_assert_str_eq(found, FIND_POISON);
	ck_assert_int_lt(config_find_executable(sub, NULL, found, sizeof(found)), 0);
	ck_assert_str_eq(found, FIND_POISON);

	make_file(d2, "tool", 0755, f2, sizeof(f2));
	(void)snprintf(path, sizeof(path), "%s:%s", d1, d2);
	ck_assert_int_eq(config_find_executable("tool", path, found, sizeof(found)), 0);
	ck_assert_str_eq(found, f2);

	ck_assert_int_eq(unlink(f2), 0);
	ck_assert_int_eq(rmdir(sub), 0);
	ck_assert_int_eq(rmdir(d1), 0);
	ck_assert_int_eq(rmdir(d2), 0);
}
END_TEST

START_TEST(a_name_with_a_slash_is_taken_as_given)
{
	char d1[64], f1[128], found[256];

	make_dir(d1, sizeof(d1));
	make_file(d1, "tool", 0755, f1, sizeof(f1));
	/* The search path is not consulted at all. */
	ck_assert_int_eq(config_find_executable(f1, "/nonexistent", found, sizeof(found)), 0);
	ck_assert_str_eq(found, f1);
	ck_assert_int_eq(config_find_executable("/bin/sh", d1, found, sizeof(found)), 0);
	ck_assert_str_eq(found, "/bin/sh");
	ck_assert_int_eq(unlink(f1), 0);
	ck_assert_int_eq(rmdir(d1), 0);
}
END_TEST

START_TEST(a_result_longer_than_the_buffer_gives_enametoolong)
{
	char d1[64], f1[128], found[8] = "poison", exact[128];
	size_t n;

	make_dir(d1, sizeof(d1));
	make_file(d1, "tool", 0755, f1, sizeof(f1));
	ck_assert_int_eq(config_find_executable("tool", d1, found, sizeof(found)), -ENAMETOOLONG);
	ck_assert_str_eq(found, "poison");
	ck_assert_int_eq(config_find_executable(f1, NULL, found, sizeof(found)), -ENAMETOOLONG);
	ck_assert_str_eq(found, "poison");

	/* The boundary: the path and its NUL need strlen + 1 bytes, not strlen. */
	n = strlen(f1);
	ck_assert_int_eq(config_find_executable("tool", d1, exact, n), -ENAMETOOLONG);
	ck_assert_int_eq(config_find_executable(f1, NULL, exact, n), -ENAMETOOLONG);
	ck_assert_int_eq(config_find_executable("tool", d1, exact, n + 1), 0);
	ck_assert_str_eq(exact, f1);
	ck_assert_int_eq(config_find_executable(f1, NULL, exact, n + 1), 0);
	ck_assert_str_eq(exact, f1);

	ck_assert_int_eq(unlink(f1), 0);
	ck_assert_int_eq(rmdir(d1), 0);
}
END_TEST

Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("parse");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, minimal_command_line_runs_with_the_defaults);
	tcase_add_test(tc, every_option_is_parsed);
	tcase_add_test(tc, user_and_group_are_resolved_from_names_or_ids_when_parsed);
	tcase_add_test(tc, an_unknown_user_or_group_is_refused);
	tcase_add_test(tc, ready_none_and_explicit_notify_are_accepted);
	tcase_add_test(tc, command_without_double_dash_keeps_its_own_options);
	tcase_add_test(tc, batch_larger_than_the_workers_is_clamped);
	tcase_add_test(tc, worker_counts_1_and_256_are_the_bounds);
	tcase_add_test(tc, a_second_parse_starts_from_scratch);
	tcase_add_test(tc, up_to_the_limit_listeners_are_accepted_and_one_more_is_refused);
	tcase_add_test(tc, help_and_version_print_to_stdout_and_ask_to_exit);
	tcase_add_test(tc, missing_listener_or_command_is_refused);
	tcase_add_test(tc, unknown_options_and_missing_arguments_are_refused);
	tcase_add_test(tc, bad_values_are_refused);
	tcase_add_test(tc, duplicate_listener_names_are_refused);
	tcase_add_test(tc, an_unknown_command_is_refused_with_enoent);
	tcase_add_test(tc, a_directory_as_command_is_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("values");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, signals_are_accepted_by_name_prefix_case_or_number);
	tcase_add_test(tc, invalid_signals_are_refused_with_einval);
	tcase_add_test(tc, ready_modes_parse_and_bad_ones_leave_the_outputs_alone);
	suite_add_tcase(s, tc);

	tc = tcase_create("find_executable");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, executable_is_found_in_the_first_directory_that_has_it);
	tcase_add_test(tc, a_non_executable_file_gives_eacces_unless_an_executable_follows);
	tcase_add_test(tc, an_absent_executable_gives_enoent);
	tcase_add_test(tc, a_directory_of_that_name_is_skipped);
	tcase_add_test(tc, a_name_with_a_slash_is_taken_as_given);
	tcase_add_test(tc, a_result_longer_than_the_buffer_gives_enametoolong);
	suite_add_tcase(s, tc);
	return s;
}
