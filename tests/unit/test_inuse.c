/* SPDX-License-Identifier: MIT */
/* test_inuse.c - inuse_find() on real sockets held by a child; inuse_access_reason(). */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inuse.h"
#include "listener.h"

#define NOBODY_UID 65534 /* the user the access tests run as when they start as root */

/* A child that holds l's socket (inherited, not CLOEXEC) under an exec'd sleep, with env. */
static pid_t holder_spawn(const struct listener *l, char *const env[])
{
	int ready[2];
	pid_t pid;
	char c;

	ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char *const argv[] = { (char *)"sleep", (char *)"60", NULL };

		/* Keep the socket across exec; the pipe closes at exec and says "done". */
		if (fcntl(l->fd, F_SETFD, 0) < 0)
			_exit(127);
		(void)close(ready[0]);
		execve("/bin/sleep", argv, env);
		_exit(127);
	}
	(void)close(ready[1]);
	ck_assert_int_eq(read(ready[0], &c, 1), 0); /* EOF: exec'd */
	(void)close(ready[0]);
	return pid;
}

static void holder_end(pid_t pid)
{
	(void)kill(pid, SIGKILL);
	(void)waitpid(pid, NULL, 0);
}

static void bound(const char *spec, struct listener *l)
{
	ck_assert_int_eq(listener_parse(spec, 0, l), 0);
	ck_assert_int_eq(listener_bind(l, 16), 0);
}

/* Finds the holders of the address spec (parsed, not bound); returns how many, first in h. */
static size_t find(const char *spec, struct inuse_holder *h)
{
	struct listener l;
	struct inuse_counts c;

	ck_assert_int_eq(listener_parse(spec, 0, &l), 0);
	ck_assert_int_eq(inuse_find(&l, h, 4, &c), 0);
	return c.n;
}

START_TEST(a_tcp_listener_is_found_in_the_process_holding_it_with_its_generation)
{
	char *const env[] = { (char *)"BATON_GENERATION=7", (char *)"BATON_WORKER=2", NULL };
	struct inuse_holder h[4];
	struct listener l;
	char spec[64];
	unsigned port;
	pid_t pid;

	bound("127.0.0.1:0", &l);
	pid = holder_spawn(&l, env);
	listener_close(&l); /* only the child holds it now */
	ck_assert_int_eq(sscanf(l.spec, "tcp://127.0.0.1:%u", &port), 1);

	(void)snprintf(spec, sizeof(spec), "127.0.0.1:%u", port);
	ck_assert_uint_eq(find(spec, h), 1);
	ck_assert_int_eq(h[0].pid, pid);
	ck_assert_int_eq(h[0].ppid, getpid());
	ck_assert_str_eq(h[0].comm, "sleep");
	ck_assert_int_eq(h[0].gen, 7);
	ck_assert_int_eq(h[0].worker, 2);
	ck_assert(!h[0].is_batond);
	/* The wildcard collides with it; another address or IPv6 (V6ONLY) does not. */
	(void)snprintf(spec, sizeof(spec), "0.0.0.0:%u", port);
	ck_assert_uint_eq(find(spec, h), 1);
	(void)snprintf(spec, sizeof(spec), "127.0.0.2:%u", port);
	ck_assert_uint_eq(find(spec, h), 0);
	(void)snprintf(spec, sizeof(spec), "[::]:%u", port);
	ck_assert_uint_eq(find(spec, h), 0);
	holder_end(pid);
	(void)snprintf(spec, sizeof(spec), "127.0.0.1:%u", port);
	ck_assert_uint_eq(find(spec, h), 0);
}
END_TEST

START_TEST(udp_and_unix_path_and_abstract_sockets_are_found_and_a_stranger_has_no_generation)
{
	char *const env[] = { (char *)"PATH=/bin", NULL };
	struct inuse_holder h[4];
	struct listener udp, path, abstract;
	char spec[160], dir[] = "/tmp/baton-unit-inuse-XXXXXX";
	pid_t pid[3];

	ck_assert_ptr_nonnull(mkdtemp(dir));
	bound("udp://127.0.0.1:0", &udp);
	(void)snprintf(spec, sizeof(spec), "unix:%s/s", dir);
	bound(spec, &path);
	(void)snprintf(spec, sizeof(spec), "unix:@baton-unit-inuse-%d", (int)getpid());
	bound(spec, &abstract);
	pid[0] = holder_spawn(&udp, env);
	pid[1] = holder_spawn(&path, env);
	pid[2] = holder_spawn(&abstract, env);

	(void)snprintf(spec, sizeof(spec), "%s", udp.spec);
	ck_assert_uint_eq(find(spec, h), 1);
	ck_assert_int_eq(h[0].pid, pid[0]);
	ck_assert_int_eq(h[0].gen, -1);
	ck_assert_int_eq(h[0].worker, -1);
	(void)snprintf(spec, sizeof(spec), "unix:%s/s", dir);
	ck_assert_uint_eq(find(spec, h), 1);
	ck_assert_int_eq(h[0].pid, pid[1]);
	(void)snprintf(spec, sizeof(spec), "unix:@baton-unit-inuse-%d", (int)getpid());
	ck_assert_uint_eq(find(spec, h), 1);
	ck_assert_int_eq(h[0].pid, pid[2]);
	(void)snprintf(spec, sizeof(spec), "unix:%s/t", dir);
	ck_assert_uint_eq(find(spec, h), 0);

	for (size_t i = 0; i < 3; i++)
		holder_end(pid[i]);
	listener_close(&udp);
	listener_close(&path);
	listener_close(&abstract);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

START_TEST(the_environment_is_read_as_exec_gave_it_and_a_gone_process_has_none)
{
	char *const env[] = { (char *)"A=1", (char *)"BATON_WORKER=12", (char *)"BATON_W=x", NULL };
	struct listener l;
	char v[16];
	pid_t pid;

	bound("127.0.0.1:0", &l);
	pid = holder_spawn(&l, env);
	listener_close(&l);
	ck_assert_int_eq(inuse_environ_get(pid, "BATON_WORKER", v, sizeof(v)), 1);
	ck_assert_str_eq(v, "12");
	ck_assert_int_eq(inuse_environ_get(pid, "BATON_W", v, sizeof(v)), 1);
	ck_assert_str_eq(v, "x");
	ck_assert_int_eq(inuse_environ_get(pid, "BATON", v, sizeof(v)), 0);
	ck_assert_int_eq(inuse_environ_get(pid, "B", v, sizeof(v)), 0);
	holder_end(pid);
	ck_assert_int_eq(inuse_environ_get(pid, "A", v, sizeof(v)), -ESRCH);
}
END_TEST

/* Runs as NOBODY_UID when started as root (this is a forked test process): root may do all. */
START_TEST(access_is_explained_by_another_user_or_a_process_that_is_not_dumpable)
{
	char why[512];
	int ready[2];
	pid_t pid;
	char c;

	if (geteuid() == 0)
		ck_assert_int_eq(setresgid(NOBODY_UID, NOBODY_UID, NOBODY_UID) ||
					 setresuid(NOBODY_UID, NOBODY_UID, NOBODY_UID),
				 0);
	inuse_access_reason(1, why, sizeof(why));
	ck_assert_msg(strstr(why, "pid 1 runs as uid 0 gid 0 and batond as uid"), "%s", why);

	ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		(void)close(ready[1]);
		pause();
		_exit(0);
	}
	(void)close(ready[1]);
	ck_assert_int_eq(read(ready[0], &c, 1), 0); /* the child closed it: it is not dumpable */
	inuse_access_reason(pid, why, sizeof(why));
	ck_assert_msg(strstr(why, "is not dumpable"), "%s", why);
	holder_end(pid);
	inuse_access_reason(pid, why, sizeof(why));
	ck_assert_msg(strstr(why, "is gone"), "%s", why);
}
END_TEST

Suite *inuse_suite(void)
{
	Suite *s = suite_create("inuse");
	TCase *tc = tcase_create("find");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, a_tcp_listener_is_found_in_the_process_holding_it_with_its_generation);
	tcase_add_test(
		tc,
		udp_and_unix_path_and_abstract_sockets_are_found_and_a_stranger_has_no_generation);
	tcase_add_test(tc, the_environment_is_read_as_exec_gave_it_and_a_gone_process_has_none);
	tcase_add_test(tc, access_is_explained_by_another_user_or_a_process_that_is_not_dumpable);
	suite_add_tcase(s, tc);
	return s;
}
