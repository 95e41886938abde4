/* SPDX-License-Identifier: MIT */
/* spawn.c - fork/exec workers: fd layout, environment, signal state, process group. */
#include "spawn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sched.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "fdpass.h"
#include "intercept.h"

/* The kernel's struct sigaction (not glibc's): handler, flags, restorer, a 64-bit mask. */
struct kernel_sigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	uint64_t mask;
};
#define KERNEL_SIGSET_BYTES sizeof(uint64_t)
#define SPAWN_CHILD_STACK   (128 * 1024) /* bytes the child runs on until execve() */
#define SPAWN_CHILD_ENV_MAX 8192	 /* environment entries a worker gets, at most */

#if defined(__SANITIZE_ADDRESS__)
#define SPAWN_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPAWN_SANITIZED 1
#endif
#endif
#ifndef SPAWN_SANITIZED
#define SPAWN_SANITIZED 0
#endif

#define LISTEN_PID_PREFIX "LISTEN_PID="
#define PID_DIGITS_MAX	  20 /* digits of the largest pid_t, and then some */

static const char *const drop_prefixes[] = {
	"LISTEN_FDS=",
	"LISTEN_PID=",
	"LISTEN_FDNAMES=",
	"NOTIFY_SOCKET=",
	"WATCHDOG_USEC=",
	"WATCHDOG_PID=",
	"BATON_",
	"FDSTORE=",
	"EINHORN_",
	"SERVER_STARTER_PORT=",
	"SERVER_STARTER_GENERATION=",
	"NGINX=",
};

static bool dropped(const char *kv)
{
	for (size_t i = 0; i < ELEMENTSOF(drop_prefixes); i++)
		if (strncmp(kv, drop_prefixes[i], strlen(drop_prefixes[i])) == 0)
			return true;
	return false;
}

/* The variables that say who the process runs as: replaced for a worker of another user. */
static bool is_users(const char *kv)
{
	return strncmp(kv, "USER=", 5) == 0 || strncmp(kv, "LOGNAME=", 8) == 0 ||
	       strncmp(kv, "HOME=", 5) == 0;
}

char **spawn_env_free(char **envp)
{
	if (!envp)
		return NULL;
	for (char **p = envp; *p; p++)
		free(*p);
	free(envp);
	return NULL;
}

static int pushf(char **envp, size_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Appends one formatted "KEY=value" to envp (sized by the caller). */
static int pushf(char **envp, size_t *n, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		return -ENOMEM;
	envp[(*n)++] = s;
	return 0;
}

static int push_names(char **envp, size_t *n, const struct spawn_env *e)
{
	size_t len = strlen("LISTEN_FDNAMES=") + 1;
	char *s, *p;

	for (size_t i = 0; i < e->n_listeners; i++)
		len += strlen(e->listeners[i].name) + 1;
	s = malloc(len);
	if (!s)
		return -ENOMEM;
	p = stpcpy(s, "LISTEN_FDNAMES=");
	for (size_t i = 0; i < e->n_listeners; i++) {
		if (i > 0)
			*p++ = ':';
		p = stpcpy(p, e->listeners[i].name);
	}
	envp[(*n)++] = s;
	return 0;
}

/*
 * einhorn (lib/einhorn/command.rb): EINHORN_FD_COUNT, EINHORN_FD_<i>, the deprecated
 * space-separated EINHORN_FDS, EINHORN_CHILD_INDEX, and EINHORN_MASTER_PID, which its worker
 * library requires to be its parent's pid: the workers are batond's direct children.
 */
static int push_einhorn(char **envp, size_t *n, const struct spawn_env *e)
{
	char fds[SPAWN_MAX_FDS * 5];
	size_t off = 0;
	int r;

	r = pushf(envp, n, "EINHORN_FD_COUNT=%zu", e->n_listeners);
	for (size_t i = 0; i < e->n_listeners && r >= 0; i++) {
		r = pushf(envp, n, "EINHORN_FD_%zu=%zu", i, 3 + i);
		off += (size_t)snprintf(fds + off, sizeof(fds) - off, "%s%zu", i ? " " : "", 3 + i);
	}
	fds[off] = '\0';
	if (r >= 0)
		r = pushf(envp, n, "EINHORN_FDS=%s", fds);
	if (r >= 0)
		r = pushf(envp, n, "EINHORN_CHILD_INDEX=%u", e->index);
	if (r >= 0)
		r = pushf(envp, n, "EINHORN_MASTER_PID=%d", e->master_pid);
	if (r >= 0 && e->einhorn_sock)
		r = pushf(envp, n, "EINHORN_SOCK_PATH=%s", e->einhorn_sock);
	return r;
}

void spawn_server_starter_key(const struct listener *l, char *buf, size_t size)
{
	const union listener_addr *a = &l->addr;
	char host[INET6_ADDRSTRLEN];

	switch (a->sa.sa_family) {
	case AF_INET:
		if (a->in.sin_addr.s_addr == htonl(INADDR_ANY)) {
			(void)snprintf(buf, size, "%u", ntohs(a->in.sin_port));
		} else {
			(void)inet_ntop(AF_INET, &a->in.sin_addr, host, sizeof(host));
			(void)snprintf(buf, size, "%s:%u", host, ntohs(a->in.sin_port));
		}
		return;
	case AF_INET6:
		(void)inet_ntop(AF_INET6, &a->in6.sin6_addr, host, sizeof(host));
		(void)snprintf(buf, size, "[%s]:%u", host, ntohs(a->in6.sin6_port));
		return;
	default:
		/* listener_format() gives "unix:/path" or "unix:@name": Server::Starter has the path. */
		(void)snprintf(buf, size, "%s", l->spec + strlen("unix:"));
		return;
	}
}

/* Server::Starter (lib/Server/Starter.pm): "key=fd;key=fd", generations counted from 1. */
static int push_server_starter(char **envp, size_t *n, const struct spawn_env *e)
{
	_cleanup_free_ char *v = NULL;
	size_t size = 32, off = 0;
	int r;

	for (size_t i = 0; i < e->n_listeners; i++)
		size += LISTENER_SPEC_MAX + 8;
	v = malloc(size);
	if (!v)
		return -ENOMEM;
	v[0] = '\0';
	for (size_t i = 0; i < e->n_listeners; i++) {
		char key[LISTENER_SPEC_MAX];

		spawn_server_starter_key(&e->listeners[i], key, sizeof(key));
		off += (size_t)snprintf(v + off, size - off, "%s%s=%zu", i ? ";" : "", key, 3 + i);
	}
	r = pushf(envp, n, "SERVER_STARTER_PORT=%s", v);
	if (r >= 0)
		r = pushf(envp, n, "SERVER_STARTER_GENERATION=%u", e->gen);
	return r;
}

/* nginx (src/core/nginx.c, ngx_add_inherited_sockets): every fd followed by ';'. */
static int push_nginx(char **envp, size_t *n, const struct spawn_env *e)
{
	char v[SPAWN_MAX_FDS * 5 + 1];
	size_t off = 0;

	v[0] = '\0';
	for (size_t i = 0; i < e->n_listeners; i++)
		off += (size_t)snprintf(v + off, sizeof(v) - off, "%zu;", 3 + i);
	return pushf(envp, n, "NGINX=%s", v);
}

static void spawn_env_freep(char ***envp)
{
	*envp = spawn_env_free(*envp);
}

int spawn_env_build(char *const *base, const struct spawn_env *e, char ***ret_envp)
{
	_cleanup_(spawn_env_freep) char **envp = NULL;
	const char *preload_base = NULL;
	unsigned pass = e->pass ? e->pass : SPAWN_PASS_ENV; /* none given: systemd's */
	size_t n_base = 0, n = 0;
	int r;

	if (e->n_listeners > SPAWN_MAX_FDS)
		return -E2BIG;
	while (base && base[n_base])
		n_base++;
	/* calloc() keeps the array NULL-terminated after each push, so a partial one frees. */
	envp = calloc(n_base + SPAWN_ENV_ADDED + e->n_listeners + 1, sizeof(char *));
	if (!envp)
		return -ENOMEM;
	for (size_t i = 0; i < n_base; i++) {
		if (dropped(base[i]) || (e->user && is_users(base[i])))
			continue;
		if (e->preload && strncmp(base[i], "LD_PRELOAD=", strlen("LD_PRELOAD=")) == 0) {
			preload_base = base[i] + strlen("LD_PRELOAD=");
			continue;
		}
		envp[n] = strdup(base[i]);
		if (!envp[n])
			return -ENOMEM;
		n++;
	}

	r = 0;
	/* The channel is the worker's only inherited fd; the listeners come over it. */
	if (pass & SPAWN_PASS_SCM)
		r = pushf(envp, &n, "BATON_FD=3");
	if (r >= 0 && (pass & SPAWN_PASS_ENV)) {
		r = pushf(envp, &n, "LISTEN_FDS=%zu", e->n_listeners);
		/* Filled in by the child, which alone knows its pid; padded so it never grows. */
		if (r >= 0)
			r = pushf(envp, &n, LISTEN_PID_PREFIX "%*s", PID_DIGITS_MAX, "");
		if (r >= 0)
			r = push_names(envp, &n, e);
	}
	if (r >= 0 && (pass & SPAWN_PASS_EINHORN))
		r = push_einhorn(envp, &n, e);
	if (r >= 0 && (pass & SPAWN_PASS_SERVER_STARTER))
		r = push_server_starter(envp, &n, e);
	if (r >= 0 && (pass & SPAWN_PASS_NGINX))
		r = push_nginx(envp, &n, e);
	if (r >= 0 && e->notify_socket)
		r = pushf(envp, &n, "NOTIFY_SOCKET=%s", e->notify_socket);
	/* As login(1) and systemd's User= do: the worker is that user, its home is its own. */
	if (r >= 0 && e->user)
		r = pushf(envp, &n, "USER=%s", e->user);
	if (r >= 0 && e->user)
		r = pushf(envp, &n, "LOGNAME=%s", e->user);
	if (r >= 0 && e->user && e->home)
		r = pushf(envp, &n, "HOME=%s", e->home);
	if (r >= 0)
		r = pushf(envp, &n, "BATON_GENERATION=%u", e->gen);
	if (r >= 0)
		r = pushf(envp, &n, "BATON_WORKER=%u", e->index);
	/* What the drain request will be: the preload shim drains servers that have no drain. */
	if (r >= 0 && e->drain_signal > 0) {
		const char *name = sigabbrev_np(e->drain_signal);

		r = name ? pushf(envp, &n, "BATON_DRAIN_SIGNAL=%s", name)
			 : pushf(envp, &n, "BATON_DRAIN_SIGNAL=%d", e->drain_signal);
	}
	/* Ours first, then whatever the user preloads already. */
	if (r >= 0 && e->preload)
		r = preload_base && *preload_base
			    ? pushf(envp, &n, "LD_PRELOAD=%s:%s", e->preload, preload_base)
			    : pushf(envp, &n, "LD_PRELOAD=%s", e->preload);
	if (r < 0)
		return r;
	*ret_envp = TAKE_PTR(envp);
	return 0;
}

/*
 * Async-signal-safe, and writes nothing of batond's (the child shares its memory until exec):
 * copies the pointers of envp into out (max entries, NULL-terminated), the LISTEN_PID entry
 * replaced by one in buf that holds pid in decimal. Returns 0 or -E2BIG.
 */
static int env_with_listen_pid(char **envp, pid_t pid, char **out, size_t max, char *buf,
			       size_t size)
{
	const size_t prefix = sizeof(LISTEN_PID_PREFIX) - 1;
	char digits[PID_DIGITS_MAX];
	size_t n = 0, i = 0;

	do {
		digits[n++] = (char)('0' + pid % 10);
		pid /= 10;
	} while (pid > 0 && n < sizeof(digits));
	if (prefix + n + 1 > size)
		return -E2BIG;
	memcpy(buf, LISTEN_PID_PREFIX, prefix);
	for (size_t k = 0; k < n; k++)
		buf[prefix + k] = digits[n - 1 - k];
	buf[prefix + n] = '\0';
	for (char **p = envp; *p; p++, i++) {
		if (i >= max)
			return -E2BIG;
		out[i] = strncmp(*p, LISTEN_PID_PREFIX, prefix) == 0 ? buf : *p;
	}
	out[i] = NULL;
	return 0;
}

static struct rlimit original_nofile; /* as batond started; rlim_cur 0 if never raised */

void spawn_raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	original_nofile = rl;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * batond may run with capabilities a worker must not get: under the shipped systemd unit it
 * holds CAP_NET_ADMIN as an ambient capability (for the stop's socket filter), and ambient
 * capabilities survive execve() of an ordinary binary. Clears the ambient set and the
 * inheritable one (which file capabilities would draw from), with raw system calls: they
 * are async-signal-safe. Returns 0 or a negative errno; EINVAL from a kernel without ambient
 * capabilities (before 4.3) means there is nothing to clear.
 */
static int drop_inheritable_caps(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	/* Zeroed: a tool that knows capget() by its first version sees only d[0] written. */
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = { { 0 } };

	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return -errno;
	if (syscall(SYS_capget, &h, d) < 0)
		return -errno;
	if (d[0].inheritable == 0 && d[1].inheritable == 0)
		return 0;
	d[0].inheritable = d[1].inheritable = 0;
	if (syscall(SYS_capset, &h, d) < 0)
		return -errno;
	return 0;
}

/*
 * The child's last step before execve() (async-signal-safe): the seccomp filter, whose listener
 * goes to batond over seccomp_wr, where it waits until batond resumes after the exec. Nothing the
 * filter catches may run between this and the exec: the call would wait for an answer that
 * batond, suspended until the exec (CLONE_VFORK), cannot give yet.
 */
static int child_seccomp(const struct sock_fprog *prog, int seccomp_wr)
{
	int zero = 0;
	int fd = intercept_install(prog);
	int r;

	if (fd < 0)
		return fd;
	r = proto_send(seccomp_wr, &zero, sizeof(zero), &fd, 1);
	(void)close(fd);
	return r;
}

/* What the child needs; it shares batond's memory (CLONE_VM) until its execve(). */
struct child_args {
	const char *path;
	char *const *argv;
	char **envp;
	const int *fds;
	size_t n_fds;
	const struct spawn_options *opt;
	int seccomp_wr; /* with opt->seccomp: where the filter's listener goes */
	int err;	/* the child's errno if it failed before or at execve(), written in place */
};

/*
 * The worker's user, group and groups, then no_new_privs: last, after everything that needs
 * batond's privileges. Raw system calls: they change exactly the calling task, the child,
 * where glibc's wrappers would also signal every thread of batond's, whose memory the child
 * shares (CLONE_VM). setresuid() away from uid 0 clears every capability, ambient ones
 * included. Returns 0 or -errno.
 */
static int child_creds(const struct spawn_creds *c)
{
	if (!c)
		return 0;
	if (c->set_ids) {
		if (syscall(SYS_setgroups, c->n_groups, c->groups) < 0 ||
		    syscall(SYS_setresgid, c->gid, c->gid, c->gid) < 0 ||
		    syscall(SYS_setresuid, c->uid, c->uid, c->uid) < 0)
			return -errno;
	}
	if (c->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	return 0;
}

/* Runs in the child between clone() and exec(): async-signal-safe calls only. Never returns. */
static void __attribute__((noreturn))
child(const char *path, char *const *argv, char **envp, const int *fds, size_t n_fds,
      const struct spawn_options *opt, int seccomp_wr, int *ret_err)
{
	int moved[SPAWN_MAX_FDS];
	int target_end = 3 + (int)n_fds;
	struct kernel_sigaction dfl = { .handler = SIG_DFL };
	sigset_t none;
	int err;

	/*
	 * A default signal state: batond blocks signals for sd-event and ignores SIGPIPE, and may
	 * itself have inherited ignored signals. The raw system call, because glibc's sigaction()
	 * refuses the two real-time signals it reserves, and those can arrive ignored too.
	 */
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			(void)syscall(SYS_rt_sigaction, sig, &dfl, NULL, KERNEL_SIGSET_BYTES);
	(void)sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		goto fail;
	if (setpgid(0, 0) < 0)
		goto fail;
	/*
	 * A starting generation yields the CPU to the serving one (--start-nice); batond gives
	 * the whole process group its priority back once it is ready. The system call, not
	 * nice(): it reports failure without errno games, and raising the value never fails.
	 */
	if (opt && opt->nice_increment > 0) {
		int cur;

		errno = 0;
		cur = getpriority(PRIO_PROCESS, 0);
		if (!(cur == -1 && errno != 0))
			(void)setpriority(
				PRIO_PROCESS, 0,
				cur + opt->nice_increment > 19 ? 19 : cur + opt->nice_increment);
	}

	/* The seccomp socket (if any) clear of the target range, then of the range closed below. */
	if (seccomp_wr >= 0 && seccomp_wr < target_end) {
		seccomp_wr = fcntl(seccomp_wr, F_DUPFD_CLOEXEC, target_end);
		if (seccomp_wr < 0)
			goto fail;
	}
	/* Move every source above the targets first, so no dup2() overwrites a source. */
	for (size_t i = 0; i < n_fds; i++) {
		moved[i] = fds[i];
		if (moved[i] < target_end) {
			moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, target_end);
			if (moved[i] < 0)
				goto fail;
		}
	}
	/* dup2() onto a different number leaves the target without FD_CLOEXEC: it survives exec. */
	for (size_t i = 0; i < n_fds; i++)
		if (dup2(moved[i], 3 + (int)i) < 0)
			goto fail;
	/* Anything above the listeners goes, CLOEXEC or not (fds leaked into batond included). */
	if (seccomp_wr < 0) {
		if (close_range((unsigned)target_end, UINT_MAX, 0) < 0)
			goto fail;
	} else if ((seccomp_wr > target_end &&
		    close_range((unsigned)target_end, (unsigned)seccomp_wr - 1, 0) < 0) ||
		   close_range((unsigned)seccomp_wr + 1, UINT_MAX, 0) < 0) {
		goto fail;
	}

	/* The worker's own limit as batond started, but room for what it inherits. */
	if (original_nofile.rlim_cur > 0) {
		struct rlimit rl = original_nofile;

		if (rl.rlim_cur < (rlim_t)target_end + 64)
			rl.rlim_cur = (rlim_t)target_end + 64 < rl.rlim_max
					      ? (rlim_t)target_end + 64
					      : rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (drop_inheritable_caps() < 0)
		goto fail; /* errno is set: better no worker than one with batond's privilege */
	if (child_creds(opt ? opt->creds : NULL) < 0)
		goto fail;
	{
		char *env[SPAWN_CHILD_ENV_MAX + 1];
		char listen_pid[sizeof(LISTEN_PID_PREFIX) + PID_DIGITS_MAX];

		if (env_with_listen_pid(envp, getpid(), env, SPAWN_CHILD_ENV_MAX, listen_pid,
					sizeof(listen_pid)) < 0) {
			errno = E2BIG;
			goto fail;
		}
		if (opt && opt->seccomp) {
			int r = child_seccomp(opt->seccomp, seccomp_wr);

			if (r < 0) {
				errno = -r;
				goto fail;
			}
		}
		(void)execve(path, argv, env);
	}
fail:
	err = errno;
	*ret_err = err ? err : EIO;
	_exit(127);
}

#if !SPAWN_SANITIZED
static int child_main(void *arg)
{
	struct child_args *a = arg;

	child(a->path, a->argv, a->envp, a->fds, a->n_fds, a->opt, a->seccomp_wr, &a->err);
}
#endif

/*
 * The child's message, with a seccomp filter: its listener. Queued before the child's execve(),
 * so this never waits. Returns the listener, or a negative errno (-EIO: nothing that makes sense).
 */
static int receive_seccomp_fd(int rd)
{
	int zero = 0, fd = -1;
	size_t n_fds = 0;
	ssize_t n = proto_recv(rd, &zero, sizeof(zero), &fd, 1, &n_fds);

	if (n == (ssize_t)sizeof(zero) && n_fds == 1)
		return fd;
	if (n_fds == 1)
		(void)close(fd);
	return n < 0 ? (int)n : -EIO;
}

int spawn_worker(const char *path, char *const *argv, char **envp, const int *fds, size_t n_fds,
		 struct spawn_options *opt, pid_t *ret_pid)
{
	/*
	 * The child runs on this frame's array while batond is suspended (CLONE_VFORK): fork()'s
	 * copy of batond's page tables and the copy-on-write faults after it were most of a
	 * reload's cost in batond, about 1 ms per worker. The child only makes system calls on
	 * its own stack and writes nothing of batond's but a.err: its environment with its own
	 * LISTEN_PID is an array on that stack.
	 */
	_Alignas(16) char stack[SPAWN_CHILD_STACK];
	struct child_args a = { .path = path,
				.argv = argv,
				.envp = envp,
				.fds = fds,
				.n_fds = n_fds,
				.opt = opt,
				.seccomp_wr = -1,
				.err = 0 };
	_cleanup_close_ int rd = -1, wr = -1;
	pid_t pid;

	if (n_fds > SPAWN_MAX_FDS)
		return -E2BIG;
	if (opt)
		opt->seccomp_fd = -1;
	if (opt && opt->seccomp) {
		int p[2];

		/* Where the child's seccomp listener comes back (closed in the child by its exec). */
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) < 0)
			return -errno;
		rd = p[0];
		wr = p[1];
		a.seccomp_wr = wr;
	}
#if SPAWN_SANITIZED
	/*
	 * AddressSanitizer cannot follow a child that runs on a borrowed stack in batond's memory
	 * (its shadow says the frame is someone else's). The sanitized build clones with a copy
	 * of batond's memory instead, still suspended until execve(), and has the child's errno
	 * come back through a shared page. Slower, and only where the sanitizers run.
	 */
	(void)stack;
	{
		int *shared = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE,
				   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

		if (shared == MAP_FAILED)
			return -errno;
		*shared = 0;
		int clone_err;

		pid = (pid_t)syscall(SYS_clone, CLONE_VFORK | SIGCHLD, NULL, NULL, NULL, 0);
		if (pid == 0)
			child(path, argv, envp, fds, n_fds, opt, wr, shared);
		clone_err = errno;
		a.err = *shared;
		(void)munmap(shared, sizeof(int));
		if (pid < 0)
			return -clone_err;
	}
#else
	pid = clone(child_main, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
	if (pid < 0)
		return -errno;
#endif
	/* Back here once the child exec'd or exited: a.err says which. */
	if (a.err != 0) {
		/* It never ran the command: reap it now so no stranger shows up in SIGCHLD. */
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return -a.err;
	}
	wr = safe_close(wr);
	if (opt && opt->seccomp) {
		int sfd = receive_seccomp_fd(rd);

		if (sfd < 0) {
			/* Its first bind() would wait for an answer forever: end it now. */
			(void)kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
			return sfd;
		}
		opt->seccomp_fd = sfd;
	}
	*ret_pid = pid;
	return 0;
}
