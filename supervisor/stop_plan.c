/* SPDX-License-Identifier: MIT */
/* stop_plan.c - the two-stage close's decisions for a stop and a retire: no I/O, no clock. */
#include "stop_plan.h"

enum stop_step stop_plan_request(enum stop_stage *stage, bool force, const struct stop_facts *f)
{
	if (force) {
		*stage = STOP_KILLING;
		return STOP_STEP_KILL;
	}
	if (*stage != STOP_RUNNING)
		return STOP_STEP_NONE;
	/*
	 * With nothing serving, nobody would empty the queues: go straight to the drain. With
	 * the fd store the manager keeps the socket, but batond cannot tell a restart (the
	 * store is kept) from a stop of the socket unit too (the manager closes it right after
	 * batond exits, resetting what is queued): docs/SYSTEMD.md. So the stages run always.
	 */
	if (f->graceful && f->serving) {
		*stage = STOP_QUEUES;
		return STOP_STEP_REFUSE_NEW;
	}
	*stage = STOP_WORKERS;
	return STOP_STEP_DRAIN;
}

enum stop_step stop_plan_queues_done(enum stop_stage *stage)
{
	/* A forced stop meanwhile has already killed the workers. */
	if (*stage != STOP_QUEUES)
		return STOP_STEP_NONE;
	*stage = STOP_WORKERS;
	return STOP_STEP_DRAIN;
}

bool stop_plan_release_filter(const struct stop_facts *f, bool filtered)
{
	return filtered && f->manager_keeps;
}

bool stop_plan_stopping(enum stop_stage stage)
{
	return stage != STOP_RUNNING;
}

const char *stop_stage_to_string(enum stop_stage stage)
{
	static const char *const names[] = {
		[STOP_RUNNING] = "running",
		[STOP_QUEUES] = "emptying queues",
		[STOP_WORKERS] = "draining workers",
		[STOP_KILLING] = "killing workers",
	};

	return (size_t)stage < sizeof(names) / sizeof(names[0]) ? names[stage] : "?";
}

void quiesce_begin(struct quiesce *q, uint64_t now_usec, uint64_t timeout_usec)
{
	q->active = true;
	q->started_usec = now_usec;
	q->deadline_usec = now_usec + timeout_usec;
	if (q->deadline_usec < now_usec) /* wrapped: "never" */
		q->deadline_usec = UINT64_MAX;
}

enum quiesce_result quiesce_look(struct quiesce *q, uint64_t now_usec, unsigned pending,
				 uint64_t *ret_next_usec)
{
	if (pending > 0 && now_usec < q->deadline_usec) {
		uint64_t next = now_usec + STOP_POLL_USEC;

		*ret_next_usec = next < q->deadline_usec ? next : q->deadline_usec;
		return QUIESCE_WAIT;
	}
	q->active = false;
	return pending > 0 ? QUIESCE_TIMED_OUT : QUIESCE_EMPTY;
}

enum retire_verdict stop_plan_retire(enum stop_stage stage, bool retiring, int found,
				     size_t n_listeners)
{
	if (retiring || stage != STOP_RUNNING)
		return RETIRE_BUSY;
	if (found < 0)
		return RETIRE_NO_SUCH;
	if (n_listeners <= 1)
		return RETIRE_LAST;
	return RETIRE_OK;
}
