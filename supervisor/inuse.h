/* SPDX-License-Identifier: MIT */
/*
 * inuse.h - who holds an address batond cannot bind, and why batond may not look into a
 * process: what a batond that cannot take over its predecessor's workers tells the operator.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "listener.h"

#define INUSE_MAX_HOLDERS 64 /* processes named per address */

/* One process with a socket at the address. */
struct inuse_holder {
	pid_t pid, ppid;
	char comm[16], parent_comm[16];
	int gen, worker; /* BATON_GENERATION and BATON_WORKER in its environment; -1: none */
	bool is_batond;	 /* runs the same binary as this batond (or is named batond) */
};

/* What inuse_find() saw. */
struct inuse_counts {
	size_t n;	    /* holders written */
	size_t hidden_own;  /* processes of this uid whose fds it may not read: not dumpable */
	size_t hidden_user; /* processes of other users, whose fds it may not read */
};

/*
 * Finds the processes that hold a socket in the way l's bind() collides with: for TCP one
 * listening on l's port at a colliding address, for UDP one bound there, for Unix one at l's
 * path or abstract name. Writes at most max of them (in pid order) to ret, and into *ret_counts
 * how many and how many processes it could not look into. Returns 0, or a negative errno
 * (/proc unreadable).
 */
int inuse_find(const struct listener *l, struct inuse_holder *ret, size_t max,
	       struct inuse_counts *ret_counts);

/*
 * Says in words why this process may not read pid's /proc files or take its fds with
 * pidfd_getfd() (ptrace access): another user, not dumpable, capabilities batond lacks, or
 * kernel.yama.ptrace_scope; with what would allow it. Always NUL-terminates buf.
 */
void inuse_access_reason(pid_t pid, char *buf, size_t size);

/*
 * Reads the value of name ("BATON_GENERATION") from pid's environment (as exec gave it: what
 * the process did to its copy later does not show) into buf. Returns 1, 0 (not there), -ESRCH
 * (gone or a zombie, which shows none), or a negative errno (-EACCES: may not read it).
 */
int inuse_environ_get(pid_t pid, const char *name, char *buf, size_t size);

/*
 * Logs who holds l's address, after its bind() failed with EADDRINUSE, and what the operator
 * can do: stop the workers of a batond that is gone (or start batond with the control socket
 * whose record, record_path, lets it take them over), stop the running batond, or another
 * process.
 */
void inuse_explain(const struct listener *l, const char *record_path);
