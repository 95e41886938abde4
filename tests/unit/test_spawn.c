/* SPDX-License-Identifier: MIT */
/* test_spawn.c - worker environments, and real workers that report their fds, pids and signals. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spawn.h"

#define REPORT_MAX  1024	   /* bytes of one file the reporting worker writes */
#define PID_POISON  ((pid_t)-4242) /* what *ret_pid holds before a spawn that must fail */
#define DIR_MODEL   "/tmp/baton-unit-spawn-XXXXXX"
#define PID_MAX_DIG 10 /* decimal digits of the largest pid_t */

/*
 * The worker: a shell that writes what it inherited into files in the directory given as $1.
 * "(ls /proc/$$/fd) > file" lists the shell's own fds: the subshell is forked before its
 * redirection, whereas a plain "ls > file" would make dash save its stdout at fd 10 first. So
 * the list is exactly what the exec left open. The rest reads /proc/$$ of the shell itself.
 * Signal state is not asked of the shell: dash clears its signal mask when it starts.
 */
#define WORKER_SCRIPT                                                                     \
	"set -e\n"                                                                        \
	"d=$1\n"                                                                          \
	"(ls /proc/$$/fd) > \"$d/fds\"\n"                                                 \
	"readlink /proc/$$/fd/3 /proc/$$/fd/4 > \"$d/links\" 2>/dev/null || true\n"       \
	"read -r _ _ _ _ pgid _ < /proc/$$/stat\n"                                        \
	"echo \"$$ $LISTEN_PID $pgid $LISTEN_FDS ${LISTEN_FDNAMES:--} $BATON_GENERATION " \
	"$BATON_WORKER\" > \"$d/ids\"\n"

static const char *const report_files[] = { "fds", "links", "ids", "status" };

/* What the worker found out about itself. */
struct report {
	char fds[REPORT_MAX];
	char links[REPORT_MAX];
	long pid, listen_pid, pgid;
	unsigned listen_fds, gen, index;
	char fdnames[REPORT_MAX];
};

/* A NULL-terminated, heap-allocated copy of list: what environ looks like. */
static char **strv_new(const char *const *list)
{
	size_t n = 0;
	char **v;

	while (list[n])
		n++;
	v = calloc(n + 1, sizeof(char *));
	ck_assert_ptr_nonnull(v);
	for (size_t i = 0; i < n; i++) {
		v[i] = strdup(list[i]);
		ck_assert_ptr_nonnull(v[i]);
	}
	return v;
}

static size_t strv_length(char *const *v)
{
	size_t n = 0;

	while (v[n])
		n++;
	return n;
}

/* Value of NAME in envp, or NULL; fails the test if NAME is there more than once. */
static const char *env_get(char *const *envp, const char *name)
{
	size_t len = strlen(name);
	const char *found = NULL;

	for (char *const *p = envp; *p; p++) {
		if (strncmp(*p, name, len) != 0 || (*p)[len] != '=')
			continue;
		ck_assert_msg(!found, "%s is set twice", name);
		found = *p + len + 1;
	}
	return found;
}

static void make_dir(char *dir, size_t size)
{
	ck_assert_int_lt(snprintf(dir, size, DIR_MODEL), (int)size);
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(const char *dir)
{
	char path[128];

	for (size_t i = 0; i < sizeof(report_files) / sizeof(report_files[0]); i++) {
		(void)snprintf(path, sizeof(path), "%s/%s", dir, report_files[i]);
		if (unlink(path) < 0)
			ck_assert_int_eq(errno, ENOENT);
	}
	ck_assert_int_eq(rmdir(dir), 0);
}

static void read_text(const char *dir, const char *name, char *buf, size_t size)
{
	char path[128];
	size_t len = 0;
	ssize_t n;
	int fd;

	(void)snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	while ((n = read(fd, buf + len, size - 1 - len)) > 0)
		len += (size_t)n;
	ck_assert_int_eq(n, 0);
	buf[len] = '\0';
	ck_assert_int_eq(close(fd), 0);
}

static void read_report(const char *dir, struct report *r)
{
	char ids[REPORT_MAX];

	read_text(dir, "fds", r->fds, sizeof(r->fds));
	read_text(dir, "links", r->links, sizeof(r->links));
	read_text(dir, "ids", ids, sizeof(ids));
	ck_assert_msg(sscanf(ids, "%ld %ld %ld %u %1023s %u %u", &r->pid, &r->listen_pid, &r->pgid,
			     &r->listen_fds, r->fdnames, &r->gen, &r->index) == 7,
		      "worker reported ids '%s'", ids);
}

/*
 * Spawns argv[0] and waits for it, without Check's assertions, so that it also works in a
 * helper process whose fds 3 and 4 (Check's among them) were overwritten. Returns the worker's
 * exit status, or 100+ for a failure here.
 */
static int run_and_wait(char *const *argv, char **envp, const int *fds, size_t n_fds,
			pid_t *ret_pid)
{
	pid_t pid = PID_POISON;
	int status;

	if (spawn_worker(argv[0], argv, envp, fds, n_fds, NULL, &pid) < 0)
		return 101;
	if (ret_pid)
		*ret_pid = pid;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return 102;
	if (!WIFEXITED(status))
		return 103;
	return WEXITSTATUS(status);
}

/* Runs the reporting shell (WORKER_SCRIPT), which writes its files into dir. */
static int spawn_and_wait(const char *dir, char **envp, const int *fds, size_t n_fds,
			  pid_t *ret_pid)
{
	char sh[] = "/bin/sh", dash_c[] = "-c", script[] = WORKER_SCRIPT, name[] = "worker";
	char d[64];
	char *argv[] = { sh, dash_c, script, name, d, NULL };

	if (snprintf(d, sizeof(d), "%s", dir) >= (int)sizeof(d))
		return 100;
	return run_and_wait(argv, envp, fds, n_fds, ret_pid);
}

/*
 * Runs "cp /proc/self/status DIR/status": cp changes no signal state of its own, so the copy
 * shows the mask and dispositions exactly as the exec left them.
 */
static int spawn_status_probe(const char *dir, char **envp, const int *fds, size_t n_fds,
			      pid_t *ret_pid)
{
	char cp[] = "/bin/cp", src[] = "/proc/self/status";
	char dst[96];
	char *argv[] = { cp, src, dst, NULL };

	if (snprintf(dst, sizeof(dst), "%s/status", dir) >= (int)sizeof(dst))
		return 100;
	return run_and_wait(argv, envp, fds, n_fds, ret_pid);
}

/* The value of "Name:\tvalue" in a /proc/PID/status text, as a string in buf. */
static const char *status_field(const char *status, const char *name, char *buf, size_t size)
{
	size_t len = strlen(name);

	for (const char *p = status; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, name, len) == 0 && p[len] == ':') {
			const char *v = p + len + 1;
			size_t n;

			v += strspn(v, " \t");
			n = strcspn(v, "\n");
			ck_assert_uint_lt(n, size);
			memcpy(buf, v, n);
			buf[n] = '\0';
			return buf;
		}
	}
	ck_abort_msg("no %s in the status file", name);
	return NULL;
}

/* Runs spawn_and_wait() in a forked helper that first calls prepare(fds); returns its status. */
static int spawn_and_wait_in_helper(void (*prepare)(const int *src, int *fds), const int *src,
				    const char *dir, char **envp, size_t n_fds)
{
	pid_t helper;
	int status;

	helper = fork();
	ck_assert_int_ge(helper, 0);
	if (helper == 0) {
		int fds[2];

		prepare(src, fds);
		/* _exit(): no Check, no atexit handlers, no leak report in this helper. */
		_exit(spawn_and_wait(dir, envp, fds, n_fds, NULL));
	}
	ck_assert_int_eq(waitpid(helper, &status, 0), helper);
	ck_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static unsigned long inode_of(int fd)
{
	struct stat st;

	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	return (unsigned long)st.st_ino;
}

/* The two "socket:[INODE]" lines the worker read from its fds 3 and 4. */
static void assert_links(const struct report *r, unsigned long ino3, unsigned long ino4)
{
	char expected[128];

	(void)snprintf(expected, sizeof(expected), "socket:[%lu]\nsocket:[%lu]\n", ino3, ino4);
	ck_assert_str_eq(r->links, expected);
}

/* Two bound listeners: TCP on 127.0.0.1:0 and a Unix socket in dir. */
static void bind_two(struct listener *tcp, struct listener *un, const char *dir)
{
	char arg[128];

	ck_assert_int_eq(listener_parse("web=127.0.0.1:0", 0, tcp), 0);
	ck_assert_int_eq(listener_bind(tcp, 16), 0);
	ck_assert_int_lt(snprintf(arg, sizeof(arg), "admin=unix:%s/admin.sock", dir),
			 (int)sizeof(arg));
	ck_assert_int_eq(listener_parse(arg, 1, un), 0);
	ck_assert_int_eq(listener_bind(un, 16), 0);
}

static char **env_for(const struct listener *ls, size_t n, unsigned gen, unsigned index)
{
	const struct spawn_env e = {
		.listeners = ls,
		.n_listeners = n,
		.notify_socket = "@baton-unit-notify",
		.gen = gen,
		.index = index,
	};
	char **envp = NULL;

	ck_assert_int_eq(spawn_env_build(environ, &e, &envp), 0);
	ck_assert_ptr_nonnull(envp);
	return envp;
}

/* --- spawn_env_build --- */

START_TEST(env_drops_inherited_activation_variables_and_adds_the_workers_own)
{
	static const char *const base_list[] = {
		"LISTEN_FDS=9",	    "LISTEN_PID=1",    "LISTEN_FDNAMES=x",
		"NOTIFY_SOCKET=/x", "WATCHDOG_USEC=1", "BATON_FD=5",
		"PATH=/bin",	    "HOME=/root",      NULL,
	};
	char **base = strv_new(base_list);
	struct listener ls[2];
	const struct spawn_env e = {
		.listeners = ls,
		.n_listeners = 2,
		.notify_socket = "@batond-notify",
		.drain_signal = SIGQUIT,
		.gen = 3,
		.index = 1,
	};
	char **envp = NULL;
	const char *pid;

	ck_assert_int_eq(listener_parse("a=127.0.0.1:1", 0, &ls[0]), 0);
	ck_assert_int_eq(listener_parse("b=unix:@b", 1, &ls[1]), 0);
	ck_assert_int_eq(spawn_env_build(base, &e, &envp), 0);
	/* The result owns copies: scribbling over and freeing the base changes nothing. */
	for (char **p = base; *p; p++)
		memset(*p, 'X', strlen(*p));
	base = spawn_env_free(base);
	ck_assert_ptr_null(base);

	ck_assert_uint_eq(strv_length(envp), 9);
	ck_assert_str_eq(env_get(envp, "PATH"), "/bin");
	ck_assert_str_eq(env_get(envp, "HOME"), "/root");
	ck_assert_ptr_null(env_get(envp, "WATCHDOG_USEC"));
	ck_assert_ptr_null(env_get(envp, "BATON_FD"));
	ck_assert_str_eq(env_get(envp, "LISTEN_FDS"), "2");
	ck_assert_str_eq(env_get(envp, "LISTEN_FDNAMES"), "a:b");
	ck_assert_str_eq(env_get(envp, "NOTIFY_SOCKET"), "@batond-notify");
	ck_assert_str_eq(env_get(envp, "BATON_GENERATION"), "3");
	ck_assert_str_eq(env_get(envp, "BATON_WORKER"), "1");
	ck_assert_str_eq(env_get(envp, "BATON_DRAIN_SIGNAL"), "QUIT");
	/* A placeholder, not batond's inherited value, with room for any pid. */
	pid = env_get(envp, "LISTEN_PID");
	ck_assert_ptr_nonnull(pid);
	ck_assert_str_ne(pid, "1");
	ck_assert_uint_ge(strlen(pid), PID_MAX_DIG);
	ck_assert_ptr_null(spawn_env_free(envp));
}
END_TEST

START_TEST(env_for_another_user_names_that_user_and_its_home)
{
	static const char *const base_list[] = {
		"USER=root", "LOGNAME=root", "HOME=/root", "PATH=/bin", "USERNAME=keep", NULL,
	};
	char **base = strv_new(base_list);
	const struct spawn_env e = { .user = "nobody", .home = "/nonexistent" };
	char **envp = NULL;

	ck_assert_int_eq(spawn_env_build(base, &e, &envp), 0);
	ck_assert_str_eq(env_get(envp, "USER"), "nobody");
	ck_assert_str_eq(env_get(envp, "LOGNAME"), "nobody");
	ck_assert_str_eq(env_get(envp, "HOME"), "/nonexistent");
	ck_assert_str_eq(env_get(envp, "USERNAME"), "keep");
	ck_assert_str_eq(env_get(envp, "PATH"), "/bin");
	/* Each once: batond's own values are gone, not shadowed (2 kept, LISTEN_* 3, ours 5). */
	ck_assert_uint_eq(strv_length(envp), 10);
	spawn_env_free(envp);
	spawn_env_free(base);
}
END_TEST

START_TEST(env_drops_every_variable_of_batonds_own_inheritance)
{
	static const char *const base_list[] = {
		"WATCHDOG_PID=7", "FDSTORE=1",	  "BATON_GENERATION=9", "BATON_WORKER=9",
		"LISTEN_FDS=1",	  "LISTEN_FDS=2", "TERM=xterm",		"MY_LISTEN_FDS=4",
		"EMPTY=",	  NULL,
	};
	char **base = strv_new(base_list);
	const struct spawn_env e = { .gen = 1, .index = 0 };
	char **envp = NULL;

	ck_assert_int_eq(spawn_env_build(base, &e, &envp), 0);
	ck_assert_ptr_null(env_get(envp, "WATCHDOG_PID"));
	ck_assert_ptr_null(env_get(envp, "FDSTORE"));
	ck_assert_str_eq(env_get(envp, "BATON_GENERATION"), "1");
	ck_assert_str_eq(env_get(envp, "BATON_WORKER"), "0");
	ck_assert_ptr_null(env_get(envp, "BATON_DRAIN_SIGNAL")); /* none given: none set */
	ck_assert_str_eq(env_get(envp, "LISTEN_FDS"), "0");
	ck_assert_str_eq(env_get(envp, "TERM"), "xterm");
	ck_assert_str_eq(env_get(envp, "MY_LISTEN_FDS"), "4");
	ck_assert_str_eq(env_get(envp, "EMPTY"), "");
	spawn_env_free(envp);
	spawn_env_free(base);
}
END_TEST

START_TEST(env_for_zero_listeners_says_zero_fds_and_no_notify_socket)
{
	static const char *const base_list[] = { "PATH=/bin", NULL };
	char **base = strv_new(base_list);
	const struct spawn_env e = { .listeners = NULL, .n_listeners = 0, .gen = 0, .index = 0 };
	char **envp = NULL;

	ck_assert_int_eq(spawn_env_build(base, &e, &envp), 0);
	ck_assert_str_eq(env_get(envp, "LISTEN_FDS"), "0");
	ck_assert_str_eq(env_get(envp, "LISTEN_FDNAMES"), "");
	ck_assert_ptr_nonnull(env_get(envp, "LISTEN_PID"));
	ck_assert_ptr_null(env_get(envp, "NOTIFY_SOCKET"));
	ck_assert_str_eq(env_get(envp, "PATH"), "/bin");
	ck_assert_uint_eq(strv_length(envp), 6);
	spawn_env_free(envp);
	spawn_env_free(base);
}
END_TEST

START_TEST(env_for_too_many_listeners_is_refused_with_e2big)
{
	struct listener *ls = calloc(SPAWN_MAX_FDS + 1, sizeof(*ls));
	const struct spawn_env e = { .listeners = ls, .n_listeners = SPAWN_MAX_FDS + 1 };
	char **envp = (char **)&e; /* any non-NULL value; it must stay as it is */

	ck_assert_ptr_nonnull(ls);
	ck_assert_int_eq(spawn_env_build(environ, &e, &envp), -E2BIG);
	ck_assert_ptr_eq(envp, (char **)&e);
	free(ls);
}
END_TEST

START_TEST(env_free_accepts_null)
{
	ck_assert_ptr_null(spawn_env_free(NULL));
}
END_TEST

/* --- spawn_worker: real processes --- */

START_TEST(worker_gets_exactly_stdio_and_its_listeners_in_a_clean_process_state)
{
	int n_fds = unit_count_fds();
	char dir[64];
	struct listener tcp, un;
	struct report r;
	char status[4096], field[64], expected_pid[32];
	sigset_t block;
	char **envp;
	int leak[2], leak_dup, leak_null, fds[2];
	pid_t pid = PID_POISON;

	make_dir(dir, sizeof(dir));
	bind_two(&tcp, &un, dir);
	envp = env_for((const struct listener[]){ tcp, un }, 2, 3, 1);

	/* Fds without CLOEXEC, as a careless library in batond would leave them. */
	ck_assert_int_eq(pipe2(leak, 0), 0);
	leak_dup = dup(leak[0]);
	ck_assert_int_ge(leak_dup, 0);
	leak_null = open("/dev/null", O_RDONLY);
	ck_assert_int_ge(leak_null, 0);
	ck_assert_int_eq(fcntl(tcp.fd, F_SETFD, 0), 0); /* even a listener's own flag is cleared */

	/* batond's own signal state, which a worker must not inherit. */
	ck_assert_int_eq(sigemptyset(&block), 0);
	ck_assert_int_eq(sigaddset(&block, SIGTERM), 0);
	ck_assert_int_eq(sigaddset(&block, SIGHUP), 0);
	ck_assert_int_eq(sigaddset(&block, SIGCHLD), 0);
	ck_assert_int_eq(sigprocmask(SIG_BLOCK, &block, NULL), 0);
	ck_assert(signal(SIGPIPE, SIG_IGN) != SIG_ERR);
	ck_assert(signal(SIGINT, SIG_IGN) != SIG_ERR);

	fds[0] = tcp.fd;
	fds[1] = un.fd;
	ck_assert_int_eq(spawn_and_wait(dir, envp, fds, 2, &pid), 0);
	ck_assert_int_gt(pid, 0);
	read_report(dir, &r);

	ck_assert_str_eq(r.fds, "0\n1\n2\n3\n4\n");
	assert_links(&r, inode_of(tcp.fd), inode_of(un.fd));
	ck_assert_int_eq(r.pid, pid);
	ck_assert_int_eq(r.listen_pid, pid);
	ck_assert_int_eq(r.pgid, pid);
	ck_assert_uint_eq(r.listen_fds, 2);
	ck_assert_str_eq(r.fdnames, "web:admin");
	ck_assert_uint_eq(r.gen, 3);
	ck_assert_uint_eq(r.index, 1);

	/* Same state, same fds, a probe that reports its signal state as it inherited it. */
	ck_assert_int_eq(spawn_status_probe(dir, envp, fds, 2, &pid), 0);
	read_text(dir, "status", status, sizeof(status));
	(void)snprintf(expected_pid, sizeof(expected_pid), "%ld", (long)pid);
	ck_assert_str_eq(status_field(status, "Pid", field, sizeof(field)), expected_pid);
	ck_assert_str_eq(status_field(status, "SigBlk", field, sizeof(field)), "0000000000000000");
	ck_assert_str_eq(status_field(status, "SigIgn", field, sizeof(field)), "0000000000000000");

	/* The parent's state is its own business: still blocked and ignored here. */
	ck_assert_int_eq(sigprocmask(SIG_SETMASK, NULL, &block), 0);
	ck_assert_int_eq(sigismember(&block, SIGTERM), 1);
	ck_assert(signal(SIGPIPE, SIG_IGN) == SIG_IGN);
	ck_assert_int_eq(close(leak[0]), 0);
	ck_assert_int_eq(close(leak[1]), 0);
	ck_assert_int_eq(close(leak_dup), 0);
	ck_assert_int_eq(close(leak_null), 0);
	spawn_env_free(envp);
	listener_close(&tcp);
	listener_close(&un);
	remove_dir(dir);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(worker_without_listeners_gets_only_stdio)
{
	int n_fds = unit_count_fds();
	char dir[64];
	struct report r;
	char **envp;
	int leak[2];
	pid_t pid = PID_POISON;

	make_dir(dir, sizeof(dir));
	envp = env_for(NULL, 0, 1, 0);
	ck_assert_int_eq(pipe2(leak, 0), 0);

	ck_assert_int_eq(spawn_and_wait(dir, envp, NULL, 0, &pid), 0);
	read_report(dir, &r);
	ck_assert_str_eq(r.fds, "0\n1\n2\n");
	ck_assert_str_eq(r.links, "");
	ck_assert_int_eq(r.listen_pid, pid);
	ck_assert_uint_eq(r.listen_fds, 0);

	ck_assert_int_eq(close(leak[0]), 0);
	ck_assert_int_eq(close(leak[1]), 0);
	spawn_env_free(envp);
	remove_dir(dir);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(one_environment_serves_two_workers_each_with_its_own_pid)
{
	int n_fds = unit_count_fds();
	char dir1[64], dir2[64];
	struct listener tcp, un;
	struct report r1, r2;
	char **envp, *placeholder;
	int fds[2];
	pid_t pid1 = PID_POISON, pid2 = PID_POISON;

	make_dir(dir1, sizeof(dir1));
	make_dir(dir2, sizeof(dir2));
	bind_two(&tcp, &un, dir1);
	envp = env_for((const struct listener[]){ tcp, un }, 2, 1, 0);
	placeholder = strdup(env_get(envp, "LISTEN_PID"));
	ck_assert_ptr_nonnull(placeholder);
	fds[0] = tcp.fd;
	fds[1] = un.fd;

	ck_assert_int_eq(spawn_and_wait(dir1, envp, fds, 2, &pid1), 0);
	/* The child filled in its own copy: the parent's placeholder is unchanged. */
	ck_assert_str_eq(env_get(envp, "LISTEN_PID"), placeholder);
	ck_assert_int_eq(spawn_and_wait(dir2, envp, fds, 2, &pid2), 0);
	read_report(dir1, &r1);
	read_report(dir2, &r2);
	ck_assert_int_ne(pid1, pid2);
	ck_assert_int_eq(r1.listen_pid, pid1);
	ck_assert_int_eq(r2.listen_pid, pid2);
	assert_links(&r2, inode_of(tcp.fd), inode_of(un.fd));

	free(placeholder);
	spawn_env_free(envp);
	listener_close(&tcp);
	listener_close(&un);
	remove_dir(dir1);
	remove_dir(dir2);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

/* In the helper: the first source at fd 4 and the second at fd 3, where a naive dup2() loop
 * would overwrite the second before moving it. Check's own fd 3 is sacrificed here. */
static void put_sources_swapped_on_3_and_4(const int *src, int *fds)
{
	int a = fcntl(src[0], F_DUPFD_CLOEXEC, 100);
	int b = fcntl(src[1], F_DUPFD_CLOEXEC, 100);

	if (a < 0 || b < 0 || dup2(a, 4) != 4 || dup2(b, 3) != 3)
		_exit(110);
	fds[0] = 4;
	fds[1] = 3;
}

/* In the helper: each source already at its own target, CLOEXEC, where dup2(fd, fd) would
 * leave the flag set and the worker without it. */
static void put_sources_on_their_targets_with_cloexec(const int *src, int *fds)
{
	int a = fcntl(src[0], F_DUPFD_CLOEXEC, 100);
	int b = fcntl(src[1], F_DUPFD_CLOEXEC, 100);

	if (a < 0 || b < 0 || dup3(a, 3, O_CLOEXEC) != 3 || dup3(b, 4, O_CLOEXEC) != 4)
		_exit(110);
	fds[0] = 3;
	fds[1] = 4;
}

START_TEST(sources_at_fds_4_and_3_arrive_at_3_and_4_in_order)
{
	int n_fds = unit_count_fds();
	char dir[64];
	struct listener tcp, un;
	struct report r;
	char **envp;
	int src[2];

	make_dir(dir, sizeof(dir));
	bind_two(&tcp, &un, dir);
	envp = env_for((const struct listener[]){ tcp, un }, 2, 1, 0);
	src[0] = tcp.fd;
	src[1] = un.fd;

	ck_assert_int_eq(
		spawn_and_wait_in_helper(put_sources_swapped_on_3_and_4, src, dir, envp, 2), 0);
	read_report(dir, &r);
	ck_assert_str_eq(r.fds, "0\n1\n2\n3\n4\n");
	assert_links(&r, inode_of(tcp.fd), inode_of(un.fd));
	ck_assert_int_eq(r.listen_pid, r.pid);

	spawn_env_free(envp);
	listener_close(&tcp);
	listener_close(&un);
	remove_dir(dir);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(sources_already_at_their_targets_with_cloexec_still_arrive)
{
	int n_fds = unit_count_fds();
	char dir[64];
	struct listener tcp, un;
	struct report r;
	char **envp;
	int src[2];

	make_dir(dir, sizeof(dir));
	bind_two(&tcp, &un, dir);
	envp = env_for((const struct listener[]){ tcp, un }, 2, 1, 0);
	src[0] = tcp.fd;
	src[1] = un.fd;

	ck_assert_int_eq(spawn_and_wait_in_helper(put_sources_on_their_targets_with_cloexec, src,
						  dir, envp, 2),
			 0);
	read_report(dir, &r);
	ck_assert_str_eq(r.fds, "0\n1\n2\n3\n4\n");
	assert_links(&r, inode_of(tcp.fd), inode_of(un.fd));

	spawn_env_free(envp);
	listener_close(&tcp);
	listener_close(&un);
	remove_dir(dir);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

/* Spawns path, which cannot be executed: error, no pid, no child left behind, no fd left open. */
static void assert_spawn_fails(const char *path, int error)
{
	int n_fds = unit_count_fds();
	char arg0[] = "worker";
	char *argv[] = { arg0, NULL };
	char *envp[] = { NULL };
	pid_t pid = PID_POISON;
	int r;

	r = spawn_worker(path, argv, envp, NULL, 0, NULL, &pid);
	ck_assert_msg(r == error, "spawn_worker(%s) = %d (%s), expected %d (%s)", path, r,
		      strerror(-r), error, strerror(-error));
	ck_assert_int_eq(pid, PID_POISON);
	/* The failed child was reaped already: this process has no children at all. */
	ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
	ck_assert_int_eq(errno, ECHILD);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}

START_TEST(a_missing_program_fails_with_enoent_and_leaves_no_zombie)
{
	assert_spawn_fails("/nonexistent/no-such-worker", -ENOENT);
}
END_TEST

START_TEST(a_directory_or_non_executable_file_fails_with_eacces)
{
	char dir[64], path[128];
	int fd;

	make_dir(dir, sizeof(dir));
	assert_spawn_fails(dir, -EACCES);
	(void)snprintf(path, sizeof(path), "%s/not-executable", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "#!/bin/sh\n", 10), 10);
	ck_assert_int_eq(close(fd), 0);
	assert_spawn_fails(path, -EACCES);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* Runs /bin/sh -c script with creds; returns its exit status. */
static int run_with_creds(const char *script, const struct spawn_creds *creds)
{
	char sh[] = "/bin/sh", dash_c[] = "-c", name[] = "worker";
	char *argv[] = { sh, dash_c, (char *)script, name, NULL };
	char *envp[] = { NULL };
	pid_t pid = PID_POISON;
	int status;

	struct spawn_options opt = { .creds = creds };

	ck_assert_int_eq(spawn_worker(argv[0], argv, envp, NULL, 0, &opt, &pid), 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

START_TEST(a_worker_runs_with_the_uid_gid_and_groups_given_and_no_capability)
{
	struct spawn_creds k = {
		.set_ids = true,
		.uid = 65534,
		.gid = 65533,
		.n_groups = 2,
		.groups = { 65533, 4242 },
	};

	ck_assert_msg(geteuid() == 0, "this test changes credentials: run the unit tests as root");
	/* Every id (real, effective, saved, filesystem), the groups, and no capability left. */
	ck_assert_int_eq(
		run_with_creds("grep -q '^Uid:.65534.65534.65534.65534$' /proc/self/status "
			       "&& grep -q '^Gid:.65533.65533.65533.65533$' /proc/self/status "
			       "&& grep -q '^Groups:.4242 65533 *$' /proc/self/status "
			       "&& grep -q '^CapPrm:.0000000000000000$' /proc/self/status "
			       "&& grep -q '^CapAmb:.0000000000000000$' /proc/self/status "
			       "&& grep -q '^NoNewPrivs:.0$' /proc/self/status",
			       &k),
		0);
	k.no_new_privs = true;
	ck_assert_int_eq(run_with_creds("grep -q '^NoNewPrivs:.1$' /proc/self/status", &k), 0);
	/* no_new_privs alone keeps the ids. */
	k.set_ids = false;
	ck_assert_int_eq(run_with_creds("grep -q '^Uid:.0.0.0.0$' /proc/self/status && "
					"grep -q '^NoNewPrivs:.1$' /proc/self/status",
					&k),
			 0);
}
END_TEST

START_TEST(a_credential_change_that_fails_is_a_spawn_failure_with_its_errno)
{
	int n_fds = unit_count_fds();
	const struct spawn_creds k = { .set_ids = true, .uid = 65534, .gid = 65534 };
	char arg0[] = "true";
	char *argv[] = { arg0, NULL };
	char *envp[] = { NULL };
	pid_t pid = PID_POISON;

	/* Without CAP_SETGID (as nobody, in a child of ours) setgroups() fails: EPERM. */
	pid_t helper = fork();

	ck_assert_int_ge(helper, 0);
	if (helper == 0) {
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(100);
		struct spawn_options opt = { .creds = &k };

		_exit(spawn_worker("/bin/true", argv, envp, NULL, 0, &opt, &pid) == -EPERM &&
				      pid == PID_POISON
			      ? 0
			      : 101);
	}
	{
		int status;

		ck_assert_int_eq(waitpid(helper, &status, 0), helper);
		ck_assert(WIFEXITED(status));
		ck_assert_int_eq(WEXITSTATUS(status), 0);
	}
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(too_many_fds_are_refused_with_e2big_before_forking)
{
	int n_fds = unit_count_fds();
	int fds[SPAWN_MAX_FDS + 1];
	char arg0[] = "true";
	char *argv[] = { arg0, NULL };
	char *envp[] = { NULL };
	pid_t pid = PID_POISON;

	for (size_t i = 0; i < SPAWN_MAX_FDS + 1; i++)
		fds[i] = STDIN_FILENO;
	ck_assert_int_eq(spawn_worker("/bin/true", argv, envp, fds, SPAWN_MAX_FDS + 1, NULL, &pid),
			 -E2BIG);
	ck_assert_int_eq(pid, PID_POISON);
	ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
	ck_assert_int_eq(errno, ECHILD);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

Suite *spawn_suite(void)
{
	Suite *s = suite_create("spawn");
	TCase *tc = tcase_create("env");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, env_drops_inherited_activation_variables_and_adds_the_workers_own);
	tcase_add_test(tc, env_drops_every_variable_of_batonds_own_inheritance);
	tcase_add_test(tc, env_for_zero_listeners_says_zero_fds_and_no_notify_socket);
	tcase_add_test(tc, env_for_too_many_listeners_is_refused_with_e2big);
	tcase_add_test(tc, env_free_accepts_null);
	tcase_add_test(tc, env_for_another_user_names_that_user_and_its_home);
	suite_add_tcase(s, tc);

	tc = tcase_create("worker");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, worker_gets_exactly_stdio_and_its_listeners_in_a_clean_process_state);
	tcase_add_test(tc, worker_without_listeners_gets_only_stdio);
	tcase_add_test(tc, one_environment_serves_two_workers_each_with_its_own_pid);
	tcase_add_test(tc, sources_at_fds_4_and_3_arrive_at_3_and_4_in_order);
	tcase_add_test(tc, sources_already_at_their_targets_with_cloexec_still_arrive);
	tcase_add_test(tc, a_missing_program_fails_with_enoent_and_leaves_no_zombie);
	tcase_add_test(tc, a_directory_or_non_executable_file_fails_with_eacces);
	tcase_add_test(tc, too_many_fds_are_refused_with_e2big_before_forking);
	tcase_add_test(tc, a_worker_runs_with_the_uid_gid_and_groups_given_and_no_capability);
	tcase_add_test(tc, a_credential_change_that_fails_is_a_spawn_failure_with_its_errno);
	suite_add_tcase(s, tc);
	return s;
}
