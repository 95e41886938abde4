/* SPDX-License-Identifier: MIT */
/* intercept_plan.h - --intercept's decisions and its seccomp filter: no I/O, no processes. */
#pragma once

#include <linux/filter.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "listener.h"

/*
 * --intercept puts batond's listeners into a server that binds its own sockets, without
 * loading anything into it (static binaries, Go): the worker runs under a seccomp filter that
 * sends the calls below to batond as user notifications (SECCOMP_RET_USER_NOTIF), and batond
 * answers each one (intercept.c gathers the facts and carries the answer out):
 *
 *   call                        on a held listener (or the address of one)   otherwise
 *   bind(fd, held address)      TAKE_OVER: the listener goes to the server's  CONTINUE
 *                               fd (the server's socket closes), returns 0
 *   bind(fd that is a listener) same listener: returns 0 (a call restarted    CONTINUE
 *                               after the answer was cut short); else EINVAL
 *   listen(listener)            returns 0: the shared socket keeps batond's   CONTINUE
 *                               backlog
 *   setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, SO_REUSEPORT, a socket     CONTINUE
 *                               filter option): returns 0, nothing changes
 *   shutdown(listener, SHUT_RD or SHUT_RDWR): returns 0, nothing changes       CONTINUE
 *                               (it would reset the queue for every worker)
 *   unlink/unlinkat(the socket file of a held Unix listener): returns 0, the   CONTINUE
 *                               file stays (only sent while batond holds a Unix path; Go
 *                               removes the file when it closes a listener)
 * CONTINUE runs the call in the kernel as the server made it. A call batond could not look at
 * (the fd or the address unreadable) continues too: the kernel gives its own answer.
 */

/* The calls the filter sends (others never reach batond). */
enum intercept_call {
	INTERCEPT_CALL_OTHER,
	INTERCEPT_CALL_BIND,
	INTERCEPT_CALL_LISTEN,
	INTERCEPT_CALL_SETSOCKOPT,
	INTERCEPT_CALL_SHUTDOWN,
	INTERCEPT_CALL_UNLINK, /* unlink() or unlinkat() */
};

/* What batond learned about one notified call: the call, the server's fd, the address. */
struct intercept_facts {
	enum intercept_call call;
	/* The socket at the call's fd (args[0]), looked at through a duplicate. */
	bool sock_known; /* false: not a socket, or it could not be looked at */
	int family, type, protocol;
	bool bound; /* it has an address already */
	int held;   /* it is held listener N already (the same socket), or -1 */
	/* bind: the address, read from the server's memory. */
	bool addr_known;
	union listener_addr addr;
	size_t addr_len;
	bool file_known; /* a Unix path: the socket file there (relative to the server) */
	dev_t file_dev;
	ino_t file_ino;
	/* setsockopt: level and name; shutdown: how. */
	int level, name, how;
	bool removes_dir; /* unlinkat(AT_REMOVEDIR) */
	/* unlink: the file the path names for the server (not followed if a symlink). */
	bool path_known;
	dev_t path_dev;
	ino_t path_ino;
};

enum intercept_verdict {
	INTERCEPT_CONTINUE,  /* the kernel runs the call as asked */
	INTERCEPT_TAKE_OVER, /* held listener .held goes to the call's fd; the call returns 0 */
	INTERCEPT_RETURN,    /* the call returns .error (0 or a negative errno), not run */
};

/* Why, for the log: which ones are worth a line is intercept.c's to say. */
enum intercept_reason {
	INTERCEPT_WHY_NOT_OURS,	  /* not a held listener, not a held address */
	INTERCEPT_WHY_UNREADABLE, /* the fd or the address could not be looked at */
	INTERCEPT_WHY_EPHEMERAL,  /* bind to port 0 or a Unix autobind: never a listener */
	INTERCEPT_WHY_NOT_HELD,	  /* bind to a listener address that batond does not hold */
	INTERCEPT_WHY_HELD,	  /* bind to a held address: taken over */
	INTERCEPT_WHY_AGAIN,	  /* bind of a listener to its own address again */
	INTERCEPT_WHY_BOUND,	  /* bind of a socket that has an address (or is a listener) */
	INTERCEPT_WHY_SHARED, /* listen/setsockopt/shutdown that would change the shared socket */
	INTERCEPT_WHY_OTHER_TYPE,  /* a held address, but the socket is of another type */
	INTERCEPT_WHY_SOCKET_FILE, /* unlink of a held listener's socket file */
};

struct intercept_decision {
	enum intercept_verdict verdict;
	enum intercept_reason reason;
	int held;  /* TAKE_OVER: the listener's index */
	int error; /* RETURN: 0 or a negative errno */
};

/* Decides what becomes of the call, against the held listeners l[0..n). */
struct intercept_decision intercept_plan_decide(const struct intercept_facts *f,
						const struct listener *l, size_t n);

/* The system call number nr as one of the calls above (OTHER for anything else). */
enum intercept_call intercept_plan_call(long nr);

/* Options a server sets on its own listener that must not reach the shared one. */
bool intercept_plan_option_is_batonds(int level, int name);

#define INTERCEPT_FILTER_MAX 32 /* instructions of the seccomp filter */

/*
 * Writes the seccomp filter into out: the calls above of this architecture go to batond
 * (SECCOMP_RET_USER_NOTIF), shutdown(SHUT_WR) and setsockopt of other options do not, unlink
 * and unlinkat only with guard_unlink (batond holds a Unix path), and everything else is
 * allowed. Returns the number of instructions, or -ENOTSUP on an architecture it does not
 * know.
 */
int intercept_plan_filter(struct sock_filter out[static INTERCEPT_FILTER_MAX], bool guard_unlink);

/* Whether the filter must guard socket files: some listener in l[0..n) is a Unix path. */
bool intercept_plan_guards_unlink(const struct listener *l, size_t n);
