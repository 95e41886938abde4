/* SPDX-License-Identifier: MIT */
/* drain_plan.h - what a server will do with the drain signal, from its signal masks (pure). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A process's signal dispositions as /proc/PID/status shows them: bit (sig - 1) of each mask.
 * SigBlk is the mask of the thread the file belongs to (the main thread).
 */
struct drain_masks {
	uint64_t blocked, ignored, caught;
};

/* What the preload shim said about the drain in the worker's READY=1 (BATON_DRAIN=). */
enum drain_shim {
	DRAIN_SHIM_UNKNOWN, /* no word from the shim in the main process (no --preload, or a child
			       sent READY=1) */
	DRAIN_SHIM_ARMED,   /* the shim handles the signal: it drains the server */
	DRAIN_SHIM_SERVER,  /* the server had its own disposition, so the shim left it alone */
};

/*
 * The verdict, from the worst for the requests a draining worker holds. The table:
 *
 *   disposition of the drain signal   --preload, shim in main   verdict
 *   ignored (SigIgn)                  any                        IGNORED
 *   caught (SigCgt)                   armed                      SHIM
 *   caught                            said "server"              SERVER_NOT_SHIM
 *   caught                            otherwise                  CAUGHT
 *   blocked (SigBlk), not caught      any                        BLOCKED (sigwait, signalfd)
 *   default, and the default ignores  any                        IGNORED
 *   default, and the default stops    any                        STOPS
 *   default, and the default ends it  any                        KILLS
 */
enum drain_verdict {
	DRAIN_KILLS,	       /* the default action ends the process with what it holds */
	DRAIN_STOPS,	       /* the default action stops (freezes) it until the deadline */
	DRAIN_IGNORED,	       /* nothing happens until the deadline's SIGKILL */
	DRAIN_SERVER_NOT_SHIM, /* --preload, but the server's own handler takes it */
	DRAIN_CAUGHT,	       /* the server's own handler takes it (its graceful stop, we hope) */
	DRAIN_BLOCKED,	       /* blocked: taken with sigwait() or a signalfd */
	DRAIN_SHIM,	       /* the preload shim drains the server */
};

/*
 * Reads SigBlk, SigIgn and SigCgt from the text of /proc/PID/status (len bytes, not
 * NUL-terminated). Returns 0 and *ret, or -EBADMSG if one of them is missing or malformed.
 */
int drain_plan_parse_status(const char *text, size_t len, struct drain_masks *ret);

/* The verdict for signal sig (1..64) given m and what the shim said (table above). */
enum drain_verdict drain_plan_judge(int sig, const struct drain_masks *m, enum drain_shim shim);

/* True for the verdicts an operator must hear about: requests are lost at every reload. */
bool drain_plan_is_a_loss(enum drain_verdict v);

/*
 * A signal the server leaves at its default action (neither caught, ignored nor blocked) and
 * whose default ends the process, so the preload shim can take it over: USR2, USR1, then a few
 * more; or 0 if none is free. never is the signal not to suggest (the current drain signal).
 */
int drain_plan_free_signal(const struct drain_masks *m, int never);

/*
 * One line for the operator about worker pid's drain signal: what a reload will do, and the fix
 * (--drain-signal, --preload). drain_timeout is the text of --drain-timeout ("30s"); preload
 * says whether --preload is on. Writes at most size bytes, NUL-terminated.
 */
void drain_plan_describe(enum drain_verdict v, int sig, const struct drain_masks *m, int pid,
			 bool preload, const char *drain_timeout, char *buf, size_t size);
