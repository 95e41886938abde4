/* SPDX-License-Identifier: MIT */
/* spawn.h - fork/exec a worker with its listeners at fds 3.. and a clean process state. */
#pragma once

#include <linux/filter.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "listener.h"

#define SPAWN_MAX_FDS	 1024 /* fds passed to one worker: 3..1026 */
#define SPAWN_MAX_GROUPS 1024 /* supplementary groups of a worker's user */

/*
 * What a worker runs as (--user, --group, --no-new-privs), resolved from names before any fork:
 * the child only makes system calls with it.
 */
struct spawn_creds {
	bool set_ids; /* take uid, gid and groups below; otherwise keep batond's */
	uid_t uid;
	gid_t gid;
	size_t n_groups; /* supplementary groups, as initgroups() would set them */
	gid_t groups[SPAWN_MAX_GROUPS];
	bool no_new_privs; /* PR_SET_NO_NEW_PRIVS: no exec gains privileges (setuid, file caps) */
};

/* What a worker's environment says about itself; strings are copied. */
struct spawn_env {
	const struct listener *listeners; /* at fds 3.. in this order */
	size_t n_listeners;
	const char *notify_socket; /* NOTIFY_SOCKET value, or NULL */
	const char *preload;	   /* library put first in LD_PRELOAD, or NULL */
	unsigned gen, index;
	unsigned pass;		  /* SPAWN_PASS_*: how the listeners are described */
	int master_pid;		  /* batond's pid, for EINHORN_MASTER_PID */
	const char *einhorn_sock; /* EINHORN_SOCK_PATH, or NULL */
	int drain_signal;	  /* BATON_DRAIN_SIGNAL (its name, no SIG); 0: not set */
	const char *user;	  /* --user: USER and LOGNAME become this, or NULL: batond's */
	const char *home;	  /* --user: HOME becomes this, or NULL: batond's */
};

/* Hand-off formats (--pass); several may be combined. */
#define SPAWN_PASS_ENV		  0x1u	/* systemd: LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES */
#define SPAWN_PASS_EINHORN	  0x2u	/* EINHORN_FD_COUNT, EINHORN_FD_<n>, EINHORN_FDS, ... */
#define SPAWN_PASS_SERVER_STARTER 0x4u	/* SERVER_STARTER_PORT, SERVER_STARTER_GENERATION */
#define SPAWN_PASS_NGINX	  0x8u	/* NGINX="3;4;" */
#define SPAWN_PASS_SCM		  0x10u /* BATON_FD=3: a channel to batond, nothing else (alone) */
#define SPAWN_PASS_INTERCEPT	  0x20u /* nothing: batond swaps listeners in at bind() (alone) */

/*
 * The SERVER_STARTER_PORT key of a listener, as Server::Starter writes it: "PORT" for an IPv4
 * wildcard, "HOST:PORT", "[V6]:PORT", or the Unix path ("@name" for an abstract socket).
 */
void spawn_server_starter_key(const struct listener *l, char *buf, size_t size);

/* Variables spawn_env_build() adds to the base environment, beyond one per listener. */
#define SPAWN_ENV_ADDED 16

/*
 * Builds the environment of a worker: a copy of base (batond's environ) without variables that
 * describe batond's own inheritance (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, NOTIFY_SOCKET,
 * WATCHDOG_USEC, WATCHDOG_PID, FDSTORE, BATON_*), plus LISTEN_FDS,
 * LISTEN_PID (a placeholder the child fills with its own pid), LISTEN_FDNAMES, NOTIFY_SOCKET,
 * BATON_GENERATION, BATON_WORKER, with e->preload LD_PRELOAD, and with e->user USER, LOGNAME
 * and HOME (replacing batond's). Returns 0 with a NULL-terminated array the caller frees with
 * spawn_env_free(), or -ENOMEM / -E2BIG.
 */
int spawn_env_build(char *const *base, const struct spawn_env *e, char ***ret_envp);
char **spawn_env_free(char **envp);

/* What a spawn may do besides the fds and the environment. */
struct spawn_options {
	const struct spawn_creds *creds; /* --user, --group, --no-new-privs, or NULL: batond's */
	/* Installed last before execve(), with a notify listener (--intercept), or NULL. */
	const struct sock_fprog *seccomp;
	int seccomp_fd;	    /* out: that listener (CLOEXEC, the caller's), or -1 */
	int nice_increment; /* added to the child's nice value before exec (--start-nice); 0 */
};

/*
 * Forks and execs path with argv and envp. In the child: default signal mask and dispositions,
 * its own process group, fds[i] at 3+i without CLOEXEC, every other fd above 2 closed, LISTEN_PID
 * set to its pid, then what opt asks for (opt may be NULL): its credentials (groups, gid, uid,
 * no_new_privs) and last its seccomp filter. Returns 0 and *ret_pid once the exec happened, or
 * a negative errno if the clone, a credential change, the filter or exec failed (the child, if
 * any, is reaped). Owns nothing; every fd stays the caller's.
 */
int spawn_worker(const char *path, char *const *argv, char **envp, const int *fds, size_t n_fds,
		 struct spawn_options *opt, pid_t *ret_pid);

/*
 * Raises batond's own soft RLIMIT_NOFILE to the hard limit (it holds every listener, a channel
 * per worker, and passes up to SPAWN_MAX_FDS fds in one spawn), remembering the soft limit it
 * started with: workers get that one back, raised only as far as their listeners need, since
 * some programs misbehave with a huge limit (select() and FD_SETSIZE).
 */
void spawn_raise_fd_limit(void);
