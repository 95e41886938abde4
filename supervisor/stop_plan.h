/* SPDX-License-Identifier: MIT */
/* stop_plan.h - the two-stage close's decisions for a stop and a retire: no I/O, no clock. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A graceful stop closes the listeners in stages (docs/DESIGN.md, "The two-stage close"):
 *   1. new connections are refused on every listener (a SYN filter, an unlinked path);
 *   2. the serving workers accept what is queued until every queue and every half-open
 *      handshake is gone, or --stop-timeout passes;
 *   3. the workers are told to drain (the rollout machine's STOP), and batond exits once they
 *      are gone, closing the last reference to each listener.
 * A second stop request kills the workers. "batonctl retire NAME" runs stages 1 and 2 on one
 * listener, then takes it out of the set and closes batond's copy.
 *
 *   stage          stop              stop (force)      what happens in the stage
 *   RUNNING        QUEUES / WORKERS  KILLING           serving; QUEUES only if graceful and
 *                                                      something serves
 *   QUEUES         (none)            KILLING           queues looked at every STOP_POLL_USEC;
 *                                                      empty or timed out: WORKERS
 *   WORKERS        (none)            KILLING           the rollout machine drains the workers
 *   KILLING        (none)            KILLING           the workers are killed
 */
enum stop_stage {
	STOP_RUNNING, /* no stop asked for */
	STOP_QUEUES,  /* stages 1-2: new connections refused, the queues emptying */
	STOP_WORKERS, /* stage 3: the workers drain */
	STOP_KILLING, /* a second stop: the workers are killed */
};

enum stop_step {
	STOP_STEP_NONE,	      /* nothing new to do */
	STOP_STEP_REFUSE_NEW, /* refuse new connections on every listener, then watch the queues */
	STOP_STEP_DRAIN,      /* tell the rollout machine to stop: the workers drain */
	STOP_STEP_KILL,	      /* tell the rollout machine to stop now: the workers are killed */
};

/* What a stop request depends on besides the stage. */
struct stop_facts {
	bool graceful;	    /* --stop-mode graceful (the default) */
	bool serving;	    /* a generation serves: someone will empty the queues */
	bool manager_keeps; /* the service manager keeps a reference (fd store, socket unit) */
};

#define STOP_POLL_USEC (20 * 1000) /* between looks at the queues while they empty: 20 ms */

/* A stop is asked for (force: the second signal). Moves *stage; returns what to do now. */
enum stop_step stop_plan_request(enum stop_stage *stage, bool force, const struct stop_facts *f);

/* Stage 2 ended (queues empty or timed out): moves *stage; returns STOP_STEP_DRAIN or NONE. */
enum stop_step stop_plan_queues_done(enum stop_stage *stage);

/*
 * At batond's final close, take stage 1's filter off a listener again? Only where the service
 * manager keeps the socket after batond exits (f->manager_keeps) and stage 1 filtered it:
 * a socket unit that stays listening would otherwise never see a SYN again, so never start
 * the service again. Where batond holds the last reference the filter stays to the end: a
 * new client's SYN is then refused by the closed port instead of reset after a handshake.
 */
bool stop_plan_release_filter(const struct stop_facts *f, bool filtered);

/* True once any stop was asked for: reloads, upgrades and retires are refused. */
bool stop_plan_stopping(enum stop_stage stage);

const char *stop_stage_to_string(enum stop_stage stage);

/* Stage 2 for a set of listeners: look until nothing waits, or the deadline passes. */
struct quiesce {
	bool active;
	uint64_t started_usec, deadline_usec; /* CLOCK_MONOTONIC */
};

enum quiesce_result {
	QUIESCE_WAIT,	   /* look again at *ret_next_usec */
	QUIESCE_EMPTY,	   /* nothing waits any more */
	QUIESCE_TIMED_OUT, /* connections still wait at the deadline: closing would reset them */
};

/* Starts watching at now_usec for at most timeout_usec. */
void quiesce_begin(struct quiesce *q, uint64_t now_usec, uint64_t timeout_usec);

/*
 * One look found pending connections still waiting (queued plus half-open; a look that failed
 * counts as 0: an unknown count never holds a stop). Returns QUIESCE_WAIT and the time of the
 * next look in *ret_next_usec (never past the deadline, where the final look happens), or
 * EMPTY / TIMED_OUT, after which q is inactive.
 */
enum quiesce_result quiesce_look(struct quiesce *q, uint64_t now_usec, unsigned pending,
				 uint64_t *ret_next_usec);

enum retire_verdict {
	RETIRE_OK,
	RETIRE_BUSY,	/* a retire or a stop is in progress */
	RETIRE_NO_SUCH, /* no listener of that name */
	RETIRE_LAST,	/* the last listener: a stop retires it */
};

/* May the listener at index found (-1: no such name) of n_listeners be retired now? */
enum retire_verdict stop_plan_retire(enum stop_stage stage, bool retiring, int found,
				     size_t n_listeners);
