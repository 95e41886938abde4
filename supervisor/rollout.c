/* SPDX-License-Identifier: MIT */
/* rollout.c - generation state machine: events in, actions out, no I/O. */

/*
 * The machine is the two tables below. A worker record changes state only in a
 * worker_enter_*() function, which sets the state and emits that state's actions; a generation
 * only in a gen_enter_*() one. tests/unit/test_rollout.c reads the worker table from this
 * comment, builds each row's state through real events and checks what the row says, and
 * requires the same table in docs/DESIGN.md: neither can drift from the code. The file is over
 * the 800 lines other modules keep to because the tables take a hundred, and the rest is one
 * machine over one private struct, which a split would have to publish to a second file.
 *
 * Worker table. A state "+X" is a record whose `then` is ROLLOUT_THEN_X (rollout.h). "when":
 * the state of the worker's generation (generation table); the ready mode NOTIFY (READY=1,
 * within the ready timeout), DELAY or NONE; --drain-timeout 0. A row without one holds for
 * any. "other": every event that the state has no row for. "actions": those about this worker,
 * in order: SPAWN, DRAIN, KILL, the reports as rollout.h names them, and "new pid" where the
 * record takes MAINPID's. RELOAD_FAILED (START_FAILED for the first generation) is the rollback
 * of its generation. A generation's orders reach its workers as STOP (drain) and STOP force
 * (kill) do: a starting generation's batch drains the same slots of the serving one, and a
 * rollback drains READY workers and kills the others. A state and generation that no row
 * pairs cannot occur (tests/fuzz/fuzz_rollout.c checks it).
 *
 * | state          | event        | when                 | next           | actions             |
 * |----------------|--------------|----------------------|----------------|---------------------|
 * | FREE           | other        |                      | FREE           | -                   |
 * | SPAWNING       | STOP         |                      | SPAWNING+DRAIN | -                   |
 * | SPAWNING       | STOP force   |                      | SPAWNING+KILL  | -                   |
 * | SPAWNING       | SPAWNED      | NOTIFY               | STARTING       | -                   |
 * | SPAWNING       | SPAWNED      | DELAY                | STARTING       | -                   |
 * | SPAWNING       | SPAWNED      | NONE, gen STARTING   | READY          | WORKER_UP           |
 * | SPAWNING       | SPAWNED      | NONE, gen SERVING    | READY          | WORKER_BACK         |
 * | SPAWNING       | SPAWN_FAILED | gen STARTING         | FREE           | RELOAD_FAILED       |
 * | SPAWNING       | SPAWN_FAILED | gen SERVING          | BACKOFF        | SPAWN_ERROR         |
 * | SPAWNING       | other        |                      | SPAWNING       | -                   |
 * | SPAWNING+DRAIN | STOP force   |                      | SPAWNING+KILL  | -                   |
 * | SPAWNING+DRAIN | SPAWNED      |                      | DRAINING       | DRAIN               |
 * | SPAWNING+DRAIN | SPAWNED      | drain-timeout 0      | KILLED         | KILL                |
 * | SPAWNING+DRAIN | SPAWN_FAILED |                      | FREE           | -                   |
 * | SPAWNING+DRAIN | other        |                      | SPAWNING+DRAIN | -                   |
 * | SPAWNING+KILL  | SPAWNED      |                      | KILLED         | KILL                |
 * | SPAWNING+KILL  | SPAWN_FAILED |                      | FREE           | -                   |
 * | SPAWNING+KILL  | other        |                      | SPAWNING+KILL  | -                   |
 * | STARTING       | STOP         |                      | DRAINING       | DRAIN               |
 * | STARTING       | STOP force   |                      | KILLED         | KILL                |
 * | STARTING       | READY        | gen STARTING         | READY          | WORKER_UP           |
 * | STARTING       | READY        | gen SERVING          | READY          | WORKER_BACK         |
 * | STARTING       | EXITED       | gen STARTING         | FREE           | RELOAD_FAILED       |
 * | STARTING       | EXITED       | gen SERVING          | BACKOFF        | WORKER_CRASHED      |
 * | STARTING       | TIMER        | DELAY, gen STARTING  | READY          | WORKER_UP           |
 * | STARTING       | TIMER        | DELAY, gen SERVING   | READY          | WORKER_BACK         |
 * | STARTING       | TIMER        | NOTIFY, gen STARTING | KILLED         | RELOAD_FAILED, KILL |
 * | STARTING       | TIMER        | NOTIFY, gen SERVING  | KILLED+RESPAWN | WORKER_KILLED, KILL |
 * | STARTING       | MAINPID      |                      | STARTING       | new pid             |
 * | STARTING       | other        |                      | STARTING       | -                   |
 * | READY          | STOP         |                      | DRAINING       | DRAIN               |
 * | READY          | STOP         | drain-timeout 0      | KILLED         | KILL                |
 * | READY          | STOP force   |                      | KILLED         | KILL                |
 * | READY          | EXITED       | gen STARTING         | FREE           | RELOAD_FAILED       |
 * | READY          | EXITED       | gen SERVING          | BACKOFF        | WORKER_CRASHED      |
 * | READY          | MAINPID      |                      | READY          | new pid             |
 * | READY          | other        |                      | READY          | -                   |
 * | DRAINING       | STOP force   |                      | KILLED         | KILL                |
 * | DRAINING       | EXITED       |                      | FREE           | WORKER_EXIT         |
 * | DRAINING       | TIMER        |                      | KILLED         | WORKER_KILLED, KILL |
 * | DRAINING       | MAINPID      |                      | DRAINING       | new pid             |
 * | DRAINING       | other        |                      | DRAINING       | -                   |
 * | KILLED         | EXITED       |                      | FREE           | WORKER_EXIT         |
 * | KILLED         | MAINPID      |                      | KILLED         | new pid             |
 * | KILLED         | other        |                      | KILLED         | -                   |
 * | KILLED+RESPAWN | EXITED       | gen SERVING          | BACKOFF        | WORKER_CRASHED      |
 * | KILLED+RESPAWN | EXITED       | gen DRAINING         | FREE           | WORKER_EXIT         |
 * | KILLED+RESPAWN | MAINPID      |                      | KILLED+RESPAWN | new pid             |
 * | KILLED+RESPAWN | other        |                      | KILLED+RESPAWN | -                   |
 * | BACKOFF        | STOP         |                      | FREE           | -                   |
 * | BACKOFF        | STOP force   |                      | FREE           | -                   |
 * | BACKOFF        | TIMER        |                      | SPAWNING       | SPAWN               |
 * | BACKOFF        | other        |                      | BACKOFF        | -                   |
 *
 * TIMER is the timer firing at or after the record's deadline (earlier, or without one, it is
 * "other"). Every other event names its record: SPAWNED and SPAWN_FAILED by record id, the rest
 * by pid, which SPAWNING and BACKOFF records do not have yet; an event that names no record in
 * use is ignored, since it can race with reaping.
 *
 * Generation table. At most one generation is STARTING and one SERVING; any other is DRAINING
 * until its last record is FREE. After every event settle() applies the rows marked (s), in
 * this order, until none does; then EXIT (exit code 1 after a failed first start, else 0) once
 * a stop left no record, and ARM_TIMER for the earliest deadline if that changed.
 *
 * | generation | event, or (s) condition         | next     | actions                             |
 * |------------|---------------------------------|----------|-------------------------------------|
 * | -          | START                           | STARTING | GEN_STARTING, SPAWN every slot      |
 * | -          | RELOAD (a)                      | STARTING | GEN_STARTING, SPAWN the first batch |
 * | STARTING   | (s) its batch READY, slots left | STARTING | (b), SPAWN the next batch           |
 * | STARTING   | (s) every slot READY            | SERVING  | GEN_READY                           |
 * | SERVING    | a STARTING one serves           | DRAINING | every slot drained, GEN_DRAINING    |
 * | STARTING   | a worker's RELOAD_FAILED        | DRAINING | (c)                                 |
 * | STARTING   | STOP, STOP force                | DRAINING | RELOAD_FAILED if a reload, (d)      |
 * | SERVING    | STOP, STOP force                | DRAINING | (d)                                 |
 * | DRAINING   | (s) no record left              | FREE     | GEN_GONE                            |
 * | -          | (s) a reload pending (a)        | STARTING | as RELOAD                           |
 *
 * (a) With one SERVING, none STARTING and a generation free. Else a RELOAD is RELOAD_IGNORED
 *     while stopping, and pending otherwise (RELOAD_PENDING, unless no generation was free).
 * (b) The SERVING one's workers in the slots of the batch are drained; GEN_DRAINING if any.
 * (c) RELOAD_FAILED; its READY workers are drained, the others killed; the SERVING one's slots
 *     without a worker SPAWN again. With none serving, START_FAILED: stopping, exit code 1.
 * (d) STOPPING; every worker gets the drain order (force: the kill order); a pending reload is
 *     dropped. A STOP after the first does nothing; a STOP force kills what is left.
 */
#include "rollout.h"

#include <errno.h>
#include <stdlib.h>

enum gen_state {
	G_FREE,
	G_STARTING, /* spawning and waiting for ready; the serving one (if any) is untouched */
	G_SERVING,  /* serves; its crashed workers are respawned */
	G_DRAINING, /* replaced, rolled back or stopping: its workers drain or are killed */
};

struct gen {
	enum gen_state state;
	unsigned id;
	bool reload; /* started by a reload, not the first start */
	uint64_t started_usec;
	unsigned n_launched;			    /* slots [0, n_launched) spawned (batches) */
	uint64_t backoff_usec[ROLLOUT_MAX_WORKERS]; /* next respawn delay per slot */
};

struct rollout {
	struct rollout_config cfg;
	struct gen gens[ROLLOUT_MAX_GENERATIONS];
	struct rollout_worker w[ROLLOUT_MAX_RECORDS];
	unsigned next_gen_id;
	int serving;  /* index into gens, or -1; a stop leaves it until that generation is gone */
	int starting; /* index into gens, or -1 */
	bool started, stopping, exited, reload_pending;
	int exit_code;
	uint64_t armed_usec;

	/* Output of the step in progress. */
	struct rollout_action *out;
	size_t n_out;
};

static void emit(struct rollout *r, struct rollout_action a)
{
	/* ROLLOUT_MAX_ACTIONS bounds one step by construction; dropping would lose a kill. */
	if (r->n_out >= ROLLOUT_MAX_ACTIONS)
		abort();
	r->out[r->n_out++] = a;
}

static void report(struct rollout *r, struct rollout_action a)
{
	a.type = ROLLOUT_DO_REPORT;
	emit(r, a);
}

/* A report about worker w: a holds what it says besides w's generation, slot and pid. */
static void report_worker(struct rollout *r, enum rollout_report what,
			  const struct rollout_worker *w, struct rollout_action a)
{
	a.report = what;
	a.gen = w->gen;
	a.index = w->index;
	a.pid = w->pid;
	report(r, a);
}

static struct gen *serving(struct rollout *r)
{
	return r->serving >= 0 ? &r->gens[r->serving] : NULL;
}

static struct gen *starting(struct rollout *r)
{
	return r->starting >= 0 ? &r->gens[r->starting] : NULL;
}

/* A record's generation exists as long as the record does: settle() frees it after the last. */
static struct gen *gen_of(struct rollout *r, const struct rollout_worker *w)
{
	for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS; i++)
		if (r->gens[i].state != G_FREE && r->gens[i].id == w->gen)
			return &r->gens[i];
	return NULL;
}

static enum gen_state gen_state_of(struct rollout *r, const struct rollout_worker *w)
{
	const struct gen *g = gen_of(r, w);

	return g ? g->state : G_FREE;
}

/* A record that holds, or will hold, a process meant to serve. */
static bool worker_active(const struct rollout_worker *w)
{
	return w->state == ROLLOUT_W_SPAWNING || w->state == ROLLOUT_W_STARTING ||
	       w->state == ROLLOUT_W_READY || w->state == ROLLOUT_W_BACKOFF;
}

static bool has_process(const struct rollout_worker *w)
{
	return w->state == ROLLOUT_W_STARTING || w->state == ROLLOUT_W_READY ||
	       w->state == ROLLOUT_W_DRAINING || w->state == ROLLOUT_W_KILLED;
}

/* The record whose main process is id (by_group: whose process group is id), or NULL. */
static struct rollout_worker *find_process(const struct rollout *r, int id, bool by_group)
{
	if (id <= 0)
		return NULL;
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		const struct rollout_worker *w = &r->w[i];

		if ((by_group ? w->pgid : w->pid) == id && has_process(w))
			return (struct rollout_worker *)w;
	}
	return NULL;
}

static struct rollout_worker *record_free(struct rollout *r)
{
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++)
		if (r->w[i].state == ROLLOUT_W_FREE)
			return &r->w[i];
	return NULL;
}

/* Slot index of g has a record that serves or is on its way to. */
static bool slot_taken(const struct rollout *r, const struct gen *g, unsigned index)
{
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++)
		if (r->w[i].gen == g->id && r->w[i].index == index && worker_active(&r->w[i]))
			return true;
	return false;
}

static void gen_rollback(struct rollout *r, const struct rollout_worker *cause,
			 enum rollout_reason reason, struct rollout_action a, uint64_t now);

/* FREE: the record can be reused. exit: the process ended as asked, which is reported. */
static void worker_enter_free(struct rollout *r, struct rollout_worker *w,
			      const struct rollout_event *exit)
{
	if (exit)
		report_worker(r, ROLLOUT_WORKER_EXIT, w,
			      (struct rollout_action){ .signaled = exit->signaled,
						       .status = exit->status });
	*w = (struct rollout_worker){ .state = ROLLOUT_W_FREE };
}

/* BACKOFF: no process; the slot respawns at the deadline, which doubles with each crash. */
static void worker_enter_backoff(struct rollout *r, struct rollout_worker *w,
				 enum rollout_report why, struct rollout_action a, uint64_t now)
{
	uint64_t *backoff = &gen_of(r, w)->backoff_usec[w->index];

	if (w->spawned_usec && now - w->spawned_usec >= ROLLOUT_BACKOFF_RESET_USEC)
		*backoff = ROLLOUT_BACKOFF_MIN_USEC;
	a.usec = *backoff;
	*backoff = a.usec * 2 < ROLLOUT_BACKOFF_MAX_USEC ? a.usec * 2 : ROLLOUT_BACKOFF_MAX_USEC;
	report_worker(r, why, w, a);
	*w = (struct rollout_worker){
		.state = ROLLOUT_W_BACKOFF,
		.gen = w->gen,
		.index = w->index,
		.deadline_usec = now + a.usec,
	};
}

/* SPAWN_FAILED, or no record for a SPAWN: as if its process had died at once. */
static void worker_spawn_failed(struct rollout *r, struct rollout_worker *w, int error,
				uint64_t now)
{
	struct rollout_worker cause = *w;

	if (w->then != ROLLOUT_THEN_NONE) {
		worker_enter_free(r, w, NULL);
	} else if (gen_state_of(r, w) == G_STARTING) {
		worker_enter_free(r, w, NULL);
		gen_rollback(r, &cause, ROLLOUT_REASON_SPAWN_FAILED,
			     (struct rollout_action){ .error = error }, now);
	} else if (gen_state_of(r, w) == G_SERVING) {
		worker_enter_backoff(r, w, ROLLOUT_SPAWN_ERROR,
				     (struct rollout_action){ .error = error }, now);
	} else {
		worker_enter_free(r, w, NULL);
	}
}

/* SPAWNING: a record for slot index of g, and the SPAWN that asks for its process. */
static void worker_enter_spawning(struct rollout *r, struct gen *g, unsigned index, uint64_t now)
{
	struct rollout_worker spare = { .state = ROLLOUT_W_SPAWNING, .gen = g->id, .index = index };
	struct rollout_worker *w = record_free(r);

	if (!w) {
		/* No record left: only when many generations still drain. Same as a failed fork. */
		worker_spawn_failed(r, &spare, -E2BIG, now);
		return;
	}
	*w = spare;
	emit(r, (struct rollout_action){ .type = ROLLOUT_DO_SPAWN,
					 .worker = (unsigned)(w - r->w),
					 .gen = g->id,
					 .index = index });
}

/* READY: serving; reported as a respawn that is back, or as one more of a new generation. */
static void worker_enter_ready(struct rollout *r, struct rollout_worker *w, uint64_t now)
{
	w->state = ROLLOUT_W_READY;
	w->ready_usec = now;
	w->deadline_usec = 0;
	report_worker(r, gen_state_of(r, w) == G_SERVING ? ROLLOUT_WORKER_BACK : ROLLOUT_WORKER_UP,
		      w,
		      (struct rollout_action){
			      .usec = now >= w->spawned_usec ? now - w->spawned_usec : 0 });
}

/*
 * STARTING: the process runs; it is ready on READY=1 (deadline: the ready timeout), after the
 * ready delay (deadline: the delay), or at once.
 */
static void worker_enter_starting(struct rollout *r, struct rollout_worker *w, uint64_t now)
{
	w->state = ROLLOUT_W_STARTING;
	switch (r->cfg.ready_mode) {
	case ROLLOUT_READY_NONE:
		worker_enter_ready(r, w, now);
		break;
	case ROLLOUT_READY_DELAY:
		w->deadline_usec = now + r->cfg.ready_delay_usec;
		break;
	case ROLLOUT_READY_NOTIFY:
		w->deadline_usec = r->cfg.ready_timeout_usec ? now + r->cfg.ready_timeout_usec : 0;
		break;
	}
}

/* KILLED: SIGKILL to the process group, no deadline: the exit comes. */
static void worker_enter_killed(struct rollout *r, struct rollout_worker *w,
				enum rollout_worker_then then)
{
	emit(r, (struct rollout_action){ .type = ROLLOUT_DO_KILL, .pid = w->pid, .pgid = w->pgid });
	w->state = ROLLOUT_W_KILLED;
	w->then = then;
	w->deadline_usec = 0;
}

/* DRAINING: the drain signal and a deadline to kill at; --drain-timeout 0 kills at once. */
static void worker_enter_draining(struct rollout *r, struct rollout_worker *w, uint64_t now)
{
	if (r->cfg.drain_timeout_usec == 0) {
		worker_enter_killed(r, w, ROLLOUT_THEN_NONE);
		return;
	}
	emit(r, (struct rollout_action){ .type = ROLLOUT_DO_DRAIN, .pid = w->pid });
	w->state = ROLLOUT_W_DRAINING;
	w->then = ROLLOUT_THEN_NONE;
	w->deadline_usec = now + r->cfg.drain_timeout_usec;
}

/*
 * An order from the generation: DRAIN (a stop, a replacement, the rollback of a READY worker)
 * or KILL (a stop with force, the rollback of any other). A spawning record keeps it until
 * its pid is known; a kill order stands over a drain order.
 */
static void worker_order(struct rollout *r, struct rollout_worker *w,
			 enum rollout_worker_then order, uint64_t now)
{
	switch (w->state) {
	case ROLLOUT_W_SPAWNING:
		if (w->then != ROLLOUT_THEN_KILL)
			w->then = order;
		break;
	case ROLLOUT_W_STARTING:
	case ROLLOUT_W_READY:
		if (order == ROLLOUT_THEN_DRAIN)
			worker_enter_draining(r, w, now);
		else
			worker_enter_killed(r, w, ROLLOUT_THEN_NONE);
		break;
	case ROLLOUT_W_DRAINING:
		if (order == ROLLOUT_THEN_KILL)
			worker_enter_killed(r, w, ROLLOUT_THEN_NONE);
		break;
	case ROLLOUT_W_BACKOFF:
		worker_enter_free(r, w, NULL);
		break;
	default: /* FREE, KILLED */
		break;
	}
}

static void on_spawned(struct rollout *r, const struct rollout_event *ev)
{
	struct rollout_worker *w;

	if (ev->worker >= ROLLOUT_MAX_RECORDS || ev->pid <= 0)
		return;
	w = &r->w[ev->worker];
	if (w->state != ROLLOUT_W_SPAWNING)
		return;
	w->pid = ev->pid;
	w->pgid = ev->pid;
	w->spawned_usec = ev->now_usec;
	if (w->then == ROLLOUT_THEN_KILL)
		worker_enter_killed(r, w, ROLLOUT_THEN_NONE);
	else if (w->then == ROLLOUT_THEN_DRAIN)
		worker_enter_draining(r, w, ev->now_usec);
	else
		worker_enter_starting(r, w, ev->now_usec);
}

static void on_exited(struct rollout *r, const struct rollout_event *ev)
{
	struct rollout_worker *w = find_process(r, ev->pid, false);
	struct rollout_action how = { .signaled = ev->signaled, .status = ev->status };
	bool meant_to_serve;

	if (!w)
		return;
	meant_to_serve = w->state == ROLLOUT_W_STARTING || w->state == ROLLOUT_W_READY;
	if (meant_to_serve && gen_state_of(r, w) == G_STARTING) {
		struct rollout_worker cause = *w;

		worker_enter_free(r, w, NULL);
		gen_rollback(r, &cause, ROLLOUT_REASON_EXITED, how, ev->now_usec);
	} else if ((meant_to_serve || w->then == ROLLOUT_THEN_RESPAWN) &&
		   gen_state_of(r, w) == G_SERVING) {
		worker_enter_backoff(r, w, ROLLOUT_WORKER_CRASHED, how, ev->now_usec);
	} else {
		worker_enter_free(r, w, ev);
	}
}

/* A STARTING worker's deadline: the ready delay is over, or it missed its ready timeout. */
static void starting_deadline(struct rollout *r, struct rollout_worker *w, uint64_t now)
{
	struct rollout_worker cause = *w;

	if (r->cfg.ready_mode == ROLLOUT_READY_DELAY) {
		worker_enter_ready(r, w, now);
	} else if (gen_state_of(r, w) == G_STARTING) {
		gen_rollback(r, &cause, ROLLOUT_REASON_READY_TIMEOUT, (struct rollout_action){ 0 },
			     now);
	} else {
		report_worker(r, ROLLOUT_WORKER_KILLED, w,
			      (struct rollout_action){ .reason = ROLLOUT_REASON_READY_TIMEOUT });
		worker_enter_killed(r, w, ROLLOUT_THEN_RESPAWN);
	}
}

static void on_timer(struct rollout *r, uint64_t now)
{
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		struct rollout_worker *w = &r->w[i];
		struct gen *g;
		unsigned index;

		if (w->state == ROLLOUT_W_FREE || w->deadline_usec == 0 || w->deadline_usec > now)
			continue;
		switch (w->state) {
		case ROLLOUT_W_STARTING:
			starting_deadline(r, w, now);
			break;
		case ROLLOUT_W_DRAINING:
			report_worker(r, ROLLOUT_WORKER_KILLED, w, (struct rollout_action){ 0 });
			worker_enter_killed(r, w, ROLLOUT_THEN_NONE);
			break;
		case ROLLOUT_W_BACKOFF:
			/* Only the serving generation has BACKOFF records: any order frees them. */
			g = gen_of(r, w);
			index = w->index;
			worker_enter_free(r, w, NULL);
			if (g && g->state == G_SERVING)
				worker_enter_spawning(r, g, index, now);
			break;
		default: /* an adopted READY or KILLED record's deadline means nothing */
			w->deadline_usec = 0;
			break;
		}
	}
}

static struct gen *gen_new(struct rollout *r, enum gen_state state, unsigned id)
{
	for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS; i++) {
		struct gen *g = &r->gens[i];

		if (g->state != G_FREE)
			continue;
		*g = (struct gen){ .state = state, .id = id, .n_launched = r->cfg.n_workers };
		for (unsigned k = 0; k < ROLLOUT_MAX_WORKERS; k++)
			g->backoff_usec[k] = ROLLOUT_BACKOFF_MIN_USEC;
		return g;
	}
	return NULL;
}

static void gen_launch_batch(struct rollout *r, struct gen *g, uint64_t now)
{
	unsigned n = r->cfg.n_workers;
	unsigned batch = r->cfg.batch;
	unsigned upto;

	/* With nothing serving there is nothing to protect: start every worker at once. */
	if (batch == 0 || batch >= n || !serving(r))
		batch = n;
	upto = g->n_launched + batch < n ? g->n_launched + batch : n;
	while (g->n_launched < upto)
		worker_enter_spawning(r, g, g->n_launched++, now);
}

/* STARTING: a new generation and its first batch; with no generation free, pending instead. */
static void gen_enter_starting(struct rollout *r, bool reload, uint64_t now)
{
	struct gen *g = gen_new(r, G_STARTING, r->next_gen_id);

	if (!g) {
		/* Every slot drains an old generation: run this reload once one is gone. */
		r->reload_pending = true;
		return;
	}
	r->next_gen_id++;
	g->reload = reload;
	g->started_usec = now;
	g->n_launched = 0;
	r->starting = (int)(g - r->gens);
	report(r, (struct rollout_action){ .report = ROLLOUT_GEN_STARTING,
					   .gen = g->id,
					   .count = r->cfg.n_workers,
					   .reload = reload });
	gen_launch_batch(r, g, now);
}

/* DRAINING: no longer starts nor serves; rollout_serving_gen() names it until it is FREE. */
static void gen_enter_draining(struct rollout *r, struct gen *g)
{
	g->state = G_DRAINING;
	if (g == starting(r))
		r->starting = -1;
}

/* FREE: the last record of a DRAINING generation is. */
static void gen_enter_free(struct rollout *r, struct gen *g)
{
	report(r, (struct rollout_action){
			  .report = ROLLOUT_GEN_GONE, .gen = g->id, .reload = g->reload });
	g->state = G_FREE;
	if (g == serving(r))
		r->serving = -1;
}

/* STARTING -> DRAINING: the starting generation failed; the serving one stays, whole again. */
static void gen_rollback(struct rollout *r, const struct rollout_worker *cause,
			 enum rollout_reason reason, struct rollout_action a, uint64_t now)
{
	struct gen *s = starting(r);
	struct gen *o = serving(r);

	if (!s)
		return; /* only a starting generation is rolled back: its workers' rows say so */
	a.report = o ? ROLLOUT_RELOAD_FAILED : ROLLOUT_START_FAILED;
	a.reason = reason;
	a.gen = s->id;
	a.index = cause->index;
	a.pid = cause->pid;
	a.reload = s->reload;
	report(r, a);
	gen_enter_draining(r, s);
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		struct rollout_worker *x = &r->w[i];

		if (x->state == ROLLOUT_W_FREE || x->gen != s->id)
			continue;
		/* A ready worker may hold accepted connections: let it finish them. */
		worker_order(r, x,
			     x->state == ROLLOUT_W_READY ? ROLLOUT_THEN_DRAIN : ROLLOUT_THEN_KILL,
			     now);
	}
	if (!o) {
		r->stopping = true;
		r->reload_pending = false;
		r->exit_code = 1;
		return;
	}
	/* With --batch, some old workers were already drained: put the slots back. */
	for (unsigned index = 0; index < r->cfg.n_workers; index++)
		if (!slot_taken(r, o, index))
			worker_enter_spawning(r, o, index, now);
}

/* Drains the workers of g in slots [0, upto) that still serve; returns how many were told. */
static unsigned drain_slots(struct rollout *r, struct gen *g, unsigned upto, uint64_t now)
{
	unsigned n = 0;

	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		struct rollout_worker *w = &r->w[i];

		if (w->gen != g->id || w->index >= upto || !worker_active(w))
			continue;
		if (w->state != ROLLOUT_W_BACKOFF && w->state != ROLLOUT_W_SPAWNING)
			n++;
		worker_order(r, w, ROLLOUT_THEN_DRAIN, now);
	}
	return n;
}

/* STARTING -> SERVING: every worker is ready; the generation it replaces drains. */
static void gen_enter_serving(struct rollout *r, struct gen *s, uint64_t now)
{
	struct gen *o = serving(r);
	unsigned n;

	s->state = G_SERVING;
	r->serving = r->starting;
	r->starting = -1;
	report(r, (struct rollout_action){ .report = ROLLOUT_GEN_READY,
					   .gen = s->id,
					   .usec = now - s->started_usec,
					   .count = r->cfg.n_workers,
					   .reload = s->reload });
	if (o) {
		gen_enter_draining(r, o);
		n = drain_slots(r, o, ROLLOUT_MAX_WORKERS, now);
		report(r, (struct rollout_action){
				  .report = ROLLOUT_GEN_DRAINING, .gen = o->id, .count = n });
	}
}

/* The starting generation's launched workers are all ready: its next batch, or it serves. */
static bool gen_advance_starting(struct rollout *r, uint64_t now)
{
	struct gen *s = starting(r);
	struct gen *o = serving(r);
	unsigned n_ready = 0, n;

	if (!s)
		return false;
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		const struct rollout_worker *w = &r->w[i];

		if (w->gen != s->id || w->state == ROLLOUT_W_FREE)
			continue;
		if (w->state != ROLLOUT_W_READY)
			return false;
		n_ready++;
	}
	if (n_ready != s->n_launched)
		return false;
	if (s->n_launched == r->cfg.n_workers) {
		gen_enter_serving(r, s, now);
		return true;
	}
	/* One batch of new workers serves: retire the same slots of the old generation. */
	n = o ? drain_slots(r, o, s->n_launched, now) : 0;
	if (n)
		report(r, (struct rollout_action){
				  .report = ROLLOUT_GEN_DRAINING, .gen = o->id, .count = n });
	gen_launch_batch(r, s, now);
	return true;
}

static unsigned live_records(const struct rollout *r, unsigned gen_id)
{
	unsigned n = 0;

	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++)
		if (r->w[i].state != ROLLOUT_W_FREE && (gen_id == 0 || r->w[i].gen == gen_id))
			n++;
	return n;
}

static bool gen_room(const struct rollout *r)
{
	for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS; i++)
		if (r->gens[i].state == G_FREE)
			return true;
	return false;
}

/* The generation table's (s) rows, until none applies; then EXIT once a stop left nothing. */
static void settle(struct rollout *r, uint64_t now)
{
	bool changed;

	do {
		changed = gen_advance_starting(r, now);
		for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS; i++) {
			struct gen *g = &r->gens[i];

			if (g->state == G_DRAINING && live_records(r, g->id) == 0) {
				gen_enter_free(r, g);
				changed = true;
			}
		}
		if (r->reload_pending && !r->stopping && !starting(r) && serving(r) &&
		    gen_room(r)) {
			r->reload_pending = false;
			gen_enter_starting(r, true, now);
			changed = true;
		}
	} while (changed);

	if (r->stopping && !r->exited && live_records(r, 0) == 0) {
		r->exited = true;
		emit(r,
		     (struct rollout_action){ .type = ROLLOUT_DO_EXIT, .exit_code = r->exit_code });
	}
}

static void on_stop(struct rollout *r, bool force, uint64_t now)
{
	unsigned n = 0;

	if (r->stopping && !force)
		return;
	if (!r->stopping) {
		struct gen *s = starting(r);

		if (s && s->reload)
			report(r, (struct rollout_action){ .report = ROLLOUT_RELOAD_FAILED,
							   .reason = ROLLOUT_REASON_STOPPED,
							   .gen = s->id,
							   .reload = true });
		r->stopping = true;
		r->reload_pending = false;
		for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS; i++)
			if (r->gens[i].state == G_STARTING || r->gens[i].state == G_SERVING)
				gen_enter_draining(r, &r->gens[i]);
	}
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		struct rollout_worker *w = &r->w[i];

		if (w->state == ROLLOUT_W_FREE)
			continue;
		if (w->state != ROLLOUT_W_BACKOFF && w->state != ROLLOUT_W_KILLED)
			n++;
		worker_order(r, w, force ? ROLLOUT_THEN_KILL : ROLLOUT_THEN_DRAIN, now);
	}
	report(r,
	       (struct rollout_action){ .report = ROLLOUT_STOPPING, .count = n, .force = force });
}

static void on_reload(struct rollout *r, uint64_t now)
{
	if (r->stopping) {
		report(r, (struct rollout_action){ .report = ROLLOUT_RELOAD_IGNORED });
	} else if (starting(r) || !serving(r)) {
		r->reload_pending = true;
		report(r, (struct rollout_action){ .report = ROLLOUT_RELOAD_PENDING,
						   .gen = starting(r) ? starting(r)->id : 0 });
	} else {
		gen_enter_starting(r, true, now);
	}
}

static void arm_timer(struct rollout *r)
{
	uint64_t next = 0;

	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		const struct rollout_worker *w = &r->w[i];

		if (w->state == ROLLOUT_W_FREE || w->deadline_usec == 0)
			continue;
		if (next == 0 || w->deadline_usec < next)
			next = w->deadline_usec;
	}
	if (next != r->armed_usec) {
		r->armed_usec = next;
		emit(r, (struct rollout_action){ .type = ROLLOUT_DO_ARM_TIMER, .usec = next });
	}
}

int rollout_step(struct rollout *r, const struct rollout_event *ev,
		 struct rollout_action out[static ROLLOUT_MAX_ACTIONS], size_t *ret_n)
{
	struct rollout_worker *w;

	r->out = out;
	r->n_out = 0;
	if (r->exited) {
		*ret_n = 0;
		return 0;
	}

	switch (ev->type) {
	case ROLLOUT_START:
		if (!r->started) {
			r->started = true;
			gen_enter_starting(r, false, ev->now_usec);
		}
		break;
	case ROLLOUT_RELOAD:
		if (r->started)
			on_reload(r, ev->now_usec);
		break;
	case ROLLOUT_STOP:
		if (!r->started) {
			r->started = true;
			r->stopping = true;
		}
		on_stop(r, ev->force, ev->now_usec);
		break;
	case ROLLOUT_WORKER_SPAWNED:
		on_spawned(r, ev);
		break;
	case ROLLOUT_SPAWN_FAILED:
		if (ev->worker < ROLLOUT_MAX_RECORDS &&
		    r->w[ev->worker].state == ROLLOUT_W_SPAWNING)
			worker_spawn_failed(r, &r->w[ev->worker], ev->error, ev->now_usec);
		break;
	case ROLLOUT_WORKER_READY:
		w = find_process(r, ev->pid, false);
		if (w && w->state == ROLLOUT_W_STARTING)
			worker_enter_ready(r, w, ev->now_usec);
		break;
	case ROLLOUT_WORKER_EXITED:
		on_exited(r, ev);
		break;
	case ROLLOUT_WORKER_MAINPID:
		/* The shell checked that the new pid belongs to the worker's process group. */
		w = find_process(r, ev->pid, false);
		if (w && ev->new_pid > 0 && !find_process(r, ev->new_pid, false))
			w->pid = ev->new_pid;
		break;
	case ROLLOUT_TIMER:
		on_timer(r, ev->now_usec);
		break;
	default:
		r->out = NULL;
		return -EINVAL;
	}

	settle(r, ev->now_usec);
	arm_timer(r);
	*ret_n = r->n_out;
	r->out = NULL;
	return 0;
}

int rollout_adopt(struct rollout *r, const struct rollout_worker *w, bool serving_gen)
{
	struct rollout_worker *x;
	struct gen *g;

	if (r->started || w->gen == 0 || w->index >= r->cfg.n_workers || w->pid <= 0 ||
	    w->pgid <= 0)
		return -EINVAL;
	if (!has_process(w))
		return -EINVAL;
	/* A generation that no longer serves only drains: nothing would ever drain these. */
	if (!serving_gen && (w->state == ROLLOUT_W_STARTING || w->state == ROLLOUT_W_READY))
		return -EINVAL;
	/* A drain without a deadline could hold a stop forever: on_timer() is its only end. */
	if (w->state == ROLLOUT_W_DRAINING && w->deadline_usec == 0)
		return -EINVAL;
	g = gen_of(r, w);
	if (!g) {
		if (serving_gen && r->serving >= 0)
			return -EINVAL;
		g = gen_new(r, serving_gen ? G_SERVING : G_DRAINING, w->gen);
		if (!g)
			return -E2BIG;
		if (serving_gen)
			r->serving = (int)(g - r->gens);
	} else if ((g->state == G_SERVING) != serving_gen) {
		return -EINVAL;
	}
	x = record_free(r);
	if (!x)
		return -E2BIG;
	*x = *w;
	x->then = ROLLOUT_THEN_NONE;
	if (r->next_gen_id <= w->gen)
		r->next_gen_id = w->gen + 1;
	return 0;
}

void rollout_adopt_done(struct rollout *r, unsigned next_gen)
{
	struct gen *g = serving(r);

	r->started = true;
	if (next_gen > r->next_gen_id)
		r->next_gen_id = next_gen;
	/*
	 * The state handed over names only workers with a process: a slot in its crash backoff
	 * has none, and a serving generation whose every slot was has no line at all. It serves
	 * again all the same, or nothing would ever respawn those slots or let a reload start.
	 */
	if (!g) {
		g = gen_new(r, G_SERVING, r->next_gen_id);
		if (g) {
			r->next_gen_id++;
			r->serving = (int)(g - r->gens);
		}
	}
	if (!g)
		return;
	for (unsigned index = 0; index < r->cfg.n_workers; index++) {
		struct rollout_worker *x = slot_taken(r, g, index) ? NULL : record_free(r);

		/* A deadline long past: the first timer respawns it (on_timer()). */
		if (x)
			*x = (struct rollout_worker){ .state = ROLLOUT_W_BACKOFF,
						      .gen = g->id,
						      .index = index,
						      .deadline_usec = 1 };
	}
}

int rollout_new(const struct rollout_config *cfg, struct rollout **ret)
{
	struct rollout *r;

	if (cfg->n_workers == 0 || cfg->n_workers > ROLLOUT_MAX_WORKERS)
		return -EINVAL;
	if (cfg->ready_mode != ROLLOUT_READY_NOTIFY && cfg->ready_mode != ROLLOUT_READY_DELAY &&
	    cfg->ready_mode != ROLLOUT_READY_NONE)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->cfg = *cfg;
	r->next_gen_id = 1;
	r->serving = -1;
	r->starting = -1;
	*ret = r;
	return 0;
}

struct rollout *rollout_free(struct rollout *r)
{
	free(r);
	return NULL;
}

const struct rollout_worker *rollout_find_pid(const struct rollout *r, int pid)
{
	return find_process(r, pid, false);
}

const struct rollout_worker *rollout_find_pgid(const struct rollout *r, int pgid)
{
	return find_process(r, pgid, true);
}

const struct rollout_worker *rollout_worker_at(const struct rollout *r, unsigned i)
{
	return i < ROLLOUT_MAX_RECORDS ? &r->w[i] : NULL;
}

unsigned rollout_serving_gen(const struct rollout *r)
{
	return r->serving >= 0 ? r->gens[r->serving].id : 0;
}

unsigned rollout_starting_gen(const struct rollout *r)
{
	return r->starting >= 0 ? r->gens[r->starting].id : 0;
}

bool rollout_reload_pending(const struct rollout *r)
{
	return r->reload_pending;
}
