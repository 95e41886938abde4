/* SPDX-License-Identifier: MIT */
/* intercept.h - --intercept carried out: the seccomp filter in the child, batond's answers. */
#pragma once

#include <linux/filter.h>
#include <stdbool.h>

#include "intercept_plan.h"

struct batond;
struct worker_extra;

/* The filter every worker gets, built once (intercept_plan_filter()). */
struct intercept_filter {
	struct sock_filter code[INTERCEPT_FILTER_MAX];
	struct sock_fprog prog;
};

/* Builds f (guard_unlink: see intercept_plan_filter()); 0, or -ENOTSUP on an architecture the
 * filter does not know. */
int intercept_filter_init(struct intercept_filter *f, bool guard_unlink);

/*
 * In the child between fork() and execve(), async-signal-safe: installs prog with a notify
 * listener and returns the listener's fd (CLOEXEC), or a negative errno. Without
 * CAP_SYS_ADMIN the kernel wants no_new_privs first: it is set then, and only then (the
 * server can no longer gain privileges through a setuid program). Where the kernel knows it
 * (Linux 5.19), a call batond has received waits for its answer through any signal but a
 * fatal one, so that no answer is cut short (Go signals its threads all the time).
 */
int intercept_install(const struct sock_fprog *prog);

/*
 * batond: answers worker x's notified calls from now on. Takes fd (the listener) whatever
 * happens; x keeps the source until worker_extra_release(). Returns 0 or a negative errno
 * after logging.
 */
int intercept_watch(struct batond *b, struct worker_extra *x, int fd);

/* What a worker command is, as far as the preload shim is concerned. */
enum intercept_exec_kind {
	INTERCEPT_EXEC_OTHER,  /* dynamically linked C-library program, a script, not ELF */
	INTERCEPT_EXEC_STATIC, /* no PT_INTERP: no dynamic loader, so no LD_PRELOAD */
	INTERCEPT_EXEC_GO,     /* a Go program (.go.buildinfo): its own system calls */
};

/*
 * Looks at path's ELF headers (a 64-bit ELF program; anything else is OTHER). Returns the
 * kind, or a negative errno if path cannot be read.
 */
int intercept_exec_kind(const char *path);
