/* SPDX-License-Identifier: MIT */
/* rollout.c - generation state machine: events in, actions out, no I/O. */
#include "rollout.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

enum gen_state {
	G_FREE,
	G_STARTING, /* spawning and waiting for ready; the serving one (if any) is untouched */
	G_SERVING,
	G_DRAINING, /* replaced, or stopping: every worker told to drain */
	G_FAILED,   /* rolled back: its workers are being killed or drained */
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
	int serving;  /* index into gens, or -1 */
	int starting; /* index into gens, or -1 */
	bool started, stopping, exited, pending;
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

static struct gen *gen_of(struct rollout *r, const struct rollout_worker *w)
{
	for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS; i++)
		if (r->gens[i].state != G_FREE && r->gens[i].id == w->gen)
			return &r->gens[i];
	return NULL;
}

static int gen_index(struct rollout *r, const struct gen *g)
{
	return g ? (int)(g - r->gens) : -1;
}

static struct gen *serving(struct rollout *r)
{
	return r->serving >= 0 ? &r->gens[r->serving] : NULL;
}

static struct gen *starting(struct rollout *r)
{
	return r->starting >= 0 ? &r->gens[r->starting] : NULL;
}

static bool worker_live(const struct rollout_worker *w)
{
	return w->state != ROLLOUT_W_FREE;
}

/* A record that holds (or will hold) a process that is meant to serve. */
static bool worker_active(const struct rollout_worker *w)
{
	return w->state == ROLLOUT_W_SPAWNING || w->state == ROLLOUT_W_STARTING ||
	       w->state == ROLLOUT_W_READY || w->state == ROLLOUT_W_BACKOFF;
}

static void worker_release(struct rollout_worker *w)
{
	*w = (struct rollout_worker){ .state = ROLLOUT_W_FREE };
}

static void report(struct rollout *r, enum rollout_report what, const struct gen *g,
		   const struct rollout_worker *w)
{
	struct rollout_action a = {
		.type = ROLLOUT_DO_REPORT,
		.report = what,
		.gen = g ? g->id : (w ? w->gen : 0),
		.index = w ? w->index : 0,
		.pid = w ? w->pid : 0,
		.reload = g ? g->reload : false,
	};

	emit(r, a);
}

static void report_with(struct rollout *r, struct rollout_action a)
{
	a.type = ROLLOUT_DO_REPORT;
	emit(r, a);
}

static void spawn_failed(struct rollout *r, struct rollout_worker *w, int error, uint64_t now);

static void spawn_slot(struct rollout *r, struct gen *g, unsigned index, uint64_t now)
{
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		struct rollout_worker *w = &r->w[i];

		if (w->state != ROLLOUT_W_FREE)
			continue;
		*w = (struct rollout_worker){
			.state = ROLLOUT_W_SPAWNING,
			.gen = g->id,
			.index = index,
		};
		emit(r, (struct rollout_action){
				.type = ROLLOUT_DO_SPAWN,
				.worker = i,
				.gen = g->id,
				.index = index,
			});
		return;
	}
	/* No record left: only when many generations still drain. Same as a failed fork. */
	{
		struct rollout_worker tmp = {
			.state = ROLLOUT_W_SPAWNING,
			.gen = g->id,
			.index = index,
		};
		spawn_failed(r, &tmp, -E2BIG, now);
	}
}

static void kill_worker(struct rollout *r, struct rollout_worker *w)
{
	switch (w->state) {
	case ROLLOUT_W_SPAWNING:
		w->kill_on_spawn = true;
		return;
	case ROLLOUT_W_BACKOFF:
		worker_release(w);
		return;
	case ROLLOUT_W_STARTING:
	case ROLLOUT_W_READY:
	case ROLLOUT_W_DRAINING:
		emit(r, (struct rollout_action){
				.type = ROLLOUT_DO_KILL,
				.pid = w->pid,
				.pgid = w->pgid,
			});
		w->state = ROLLOUT_W_KILLED;
		w->deadline_usec = 0;
		return;
	default:
		return;
	}
}

static void drain_worker(struct rollout *r, struct rollout_worker *w, uint64_t now)
{
	switch (w->state) {
	case ROLLOUT_W_SPAWNING:
		w->drain_on_spawn = true;
		return;
	case ROLLOUT_W_BACKOFF:
		worker_release(w);
		return;
	case ROLLOUT_W_STARTING:
	case ROLLOUT_W_READY:
		/* --drain-timeout 0: no time to finish anything, so no point in asking. */
		if (r->cfg.drain_timeout_usec == 0) {
			kill_worker(r, w);
			return;
		}
		emit(r, (struct rollout_action){ .type = ROLLOUT_DO_DRAIN, .pid = w->pid });
		w->state = ROLLOUT_W_DRAINING;
		w->deadline_usec = now + r->cfg.drain_timeout_usec;
		w->respawn = false;
		return;
	default:
		return;
	}
}

static void launch_batch(struct rollout *r, struct gen *g, uint64_t now)
{
	unsigned n = r->cfg.n_workers;
	unsigned batch = r->cfg.batch;
	unsigned upto;

	/* With nothing serving there is nothing to protect: start every worker at once. */
	if (batch == 0 || batch >= n || !serving(r))
		batch = n;
	upto = g->n_launched + batch < n ? g->n_launched + batch : n;
	while (g->n_launched < upto)
		spawn_slot(r, g, g->n_launched++, now);
}

static void start_generation(struct rollout *r, bool reload, uint64_t now)
{
	struct gen *g = NULL;

	for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS; i++) {
		if (r->gens[i].state == G_FREE) {
			g = &r->gens[i];
			break;
		}
	}
	if (!g) {
		/* Every slot drains an old generation: run this reload once one is gone. */
		r->pending = true;
		return;
	}
	*g = (struct gen){
		.state = G_STARTING,
		.id = r->next_gen_id++,
		.reload = reload,
		.started_usec = now,
	};
	for (unsigned i = 0; i < ROLLOUT_MAX_WORKERS; i++)
		g->backoff_usec[i] = ROLLOUT_BACKOFF_MIN_USEC;
	r->starting = gen_index(r, g);
	report_with(r, (struct rollout_action){
			       .report = ROLLOUT_GEN_STARTING,
			       .gen = g->id,
			       .count = r->cfg.n_workers,
			       .reload = reload,
		       });
	launch_batch(r, g, now);
}

/* The starting generation failed: kill it, keep (or restore) the serving one. */
static void rollback(struct rollout *r, enum rollout_reason reason, const struct rollout_worker *w,
		     int error, bool signaled, int status, uint64_t now)
{
	struct gen *s = starting(r);
	struct gen *o = serving(r);

	if (!s)
		return;
	report_with(r, (struct rollout_action){
			       .report = o ? ROLLOUT_RELOAD_FAILED : ROLLOUT_START_FAILED,
			       .reason = reason,
			       .gen = s->id,
			       .index = w ? w->index : 0,
			       .pid = w ? w->pid : 0,
			       .error = error,
			       .signaled = signaled,
			       .status = status,
			       .reload = s->reload,
		       });
	s->state = G_FAILED;
	r->starting = -1;
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		struct rollout_worker *x = &r->w[i];

		if (!worker_live(x) || x->gen != s->id)
			continue;
		/* A ready worker may hold accepted connections: let it finish them. */
		if (x->state == ROLLOUT_W_READY)
			drain_worker(r, x, now);
		else
			kill_worker(r, x);
	}

	if (!o) {
		r->stopping = true;
		r->pending = false;
		r->exit_code = 1;
		return;
	}
	/* With --batch, some old workers were already drained: put the slots back. */
	for (unsigned index = 0; index < r->cfg.n_workers; index++) {
		bool have = false;

		for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS && !have; i++)
			have = r->w[i].gen == o->id && r->w[i].index == index &&
			       worker_active(&r->w[i]);
		if (!have)
			spawn_slot(r, o, index, now);
	}
}

static void schedule_respawn(struct rollout *r, struct gen *g, struct rollout_worker *w,
			     enum rollout_report why, int error, bool signaled, int status,
			     uint64_t now)
{
	uint64_t *backoff = &g->backoff_usec[w->index];
	uint64_t delay;

	if (w->spawned_usec && now - w->spawned_usec >= ROLLOUT_BACKOFF_RESET_USEC)
		*backoff = ROLLOUT_BACKOFF_MIN_USEC;
	delay = *backoff;
	*backoff = delay * 2 < ROLLOUT_BACKOFF_MAX_USEC ? delay * 2 : ROLLOUT_BACKOFF_MAX_USEC;

	report_with(r, (struct rollout_action){
			       .report = why,
			       .gen = w->gen,
			       .index = w->index,
			       .pid = w->pid,
			       .usec = delay,
			       .error = error,
			       .signaled = signaled,
			       .status = status,
		       });
	*w = (struct rollout_worker){
		.state = ROLLOUT_W_BACKOFF,
		.gen = w->gen,
		.index = w->index,
		.deadline_usec = now + delay,
	};
}

static void spawn_failed(struct rollout *r, struct rollout_worker *w, int error, uint64_t now)
{
	struct gen *g = gen_of(r, w);

	if (w->kill_on_spawn || w->drain_on_spawn || !g || r->stopping) {
		worker_release(w);
		return;
	}
	if (g == starting(r)) {
		struct rollout_worker copy = *w;

		worker_release(w);
		rollback(r, ROLLOUT_REASON_SPAWN_FAILED, &copy, error, false, 0, now);
	} else if (g == serving(r)) {
		schedule_respawn(r, g, w, ROLLOUT_SPAWN_ERROR, error, false, 0, now);
	} else {
		worker_release(w);
	}
}

static void mark_ready(struct rollout *r, struct rollout_worker *w, uint64_t now)
{
	struct gen *g = gen_of(r, w);

	w->state = ROLLOUT_W_READY;
	w->ready_usec = now;
	w->deadline_usec = 0;
	if (g)
		report_with(r, (struct rollout_action){
				       .report = g == serving(r) ? ROLLOUT_WORKER_BACK
								 : ROLLOUT_WORKER_UP,
				       .gen = w->gen,
				       .index = w->index,
				       .pid = w->pid,
				       .usec = now >= w->spawned_usec ? now - w->spawned_usec : 0,
			       });
}

static void on_spawned(struct rollout *r, const struct rollout_event *ev)
{
	struct rollout_worker *w;
	struct gen *g;

	if (ev->worker >= ROLLOUT_MAX_RECORDS || ev->pid <= 0)
		return;
	w = &r->w[ev->worker];
	if (w->state != ROLLOUT_W_SPAWNING)
		return;
	g = gen_of(r, w);
	w->pid = ev->pid;
	w->pgid = ev->pid;
	w->spawned_usec = ev->now_usec;
	w->state = ROLLOUT_W_STARTING;
	if (w->kill_on_spawn) {
		kill_worker(r, w);
		return;
	}
	if (w->drain_on_spawn || r->stopping || !g ||
	    (g->state != G_STARTING && g->state != G_SERVING)) {
		drain_worker(r, w, ev->now_usec);
		return;
	}
	switch (r->cfg.ready_mode) {
	case ROLLOUT_READY_NONE:
		mark_ready(r, w, ev->now_usec);
		break;
	case ROLLOUT_READY_DELAY:
		w->deadline_usec = ev->now_usec + r->cfg.ready_delay_usec;
		break;
	case ROLLOUT_READY_NOTIFY:
		w->deadline_usec =
			r->cfg.ready_timeout_usec ? ev->now_usec + r->cfg.ready_timeout_usec : 0;
		break;
	}
}

static bool has_process(const struct rollout_worker *w)
{
	return w->state == ROLLOUT_W_STARTING || w->state == ROLLOUT_W_READY ||
	       w->state == ROLLOUT_W_DRAINING || w->state == ROLLOUT_W_KILLED;
}

static struct rollout_worker *find_pid(struct rollout *r, int pid)
{
	if (pid <= 0)
		return NULL;
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++)
		if (r->w[i].pid == pid && has_process(&r->w[i]))
			return &r->w[i];
	return NULL;
}

const struct rollout_worker *rollout_find_pgid(const struct rollout *r, int pgid)
{
	if (pgid <= 0)
		return NULL;
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++)
		if (r->w[i].pgid == pgid && has_process(&r->w[i]))
			return &r->w[i];
	return NULL;
}

static void on_exited(struct rollout *r, const struct rollout_event *ev)
{
	struct rollout_worker *w = find_pid(r, ev->pid);
	struct gen *g;

	if (!w)
		return;
	g = gen_of(r, w);

	if (w->state == ROLLOUT_W_DRAINING || w->state == ROLLOUT_W_KILLED) {
		if (w->respawn && g && g == serving(r) && !r->stopping) {
			schedule_respawn(r, g, w, ROLLOUT_WORKER_CRASHED, 0, ev->signaled,
					 ev->status, ev->now_usec);
			return;
		}
		report_with(r, (struct rollout_action){
				       .report = ROLLOUT_WORKER_EXIT,
				       .gen = w->gen,
				       .index = w->index,
				       .pid = w->pid,
				       .signaled = ev->signaled,
				       .status = ev->status,
			       });
		worker_release(w);
		return;
	}

	/* STARTING or READY: it was meant to serve. */
	if (g && g == starting(r)) {
		struct rollout_worker copy = *w;

		worker_release(w);
		rollback(r, ROLLOUT_REASON_EXITED, &copy, 0, ev->signaled, ev->status,
			 ev->now_usec);
	} else if (g && g == serving(r) && !r->stopping) {
		schedule_respawn(r, g, w, ROLLOUT_WORKER_CRASHED, 0, ev->signaled, ev->status,
				 ev->now_usec);
	} else {
		report_with(r, (struct rollout_action){
				       .report = ROLLOUT_WORKER_EXIT,
				       .gen = w->gen,
				       .index = w->index,
				       .pid = w->pid,
				       .signaled = ev->signaled,
				       .status = ev->status,
			       });
		worker_release(w);
	}
}

static void on_timer(struct rollout *r, uint64_t now)
{
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		struct rollout_worker *w = &r->w[i];
		struct gen *g;

		if (!worker_live(w) || w->deadline_usec == 0 || w->deadline_usec > now)
			continue;
		g = gen_of(r, w);
		switch (w->state) {
		case ROLLOUT_W_STARTING:
			if (r->cfg.ready_mode == ROLLOUT_READY_DELAY) {
				mark_ready(r, w, now);
			} else if (g && g == starting(r)) {
				struct rollout_worker copy = *w;

				rollback(r, ROLLOUT_REASON_READY_TIMEOUT, &copy, 0, false, 0, now);
			} else {
				report_with(r, (struct rollout_action){
						       .report = ROLLOUT_WORKER_KILLED,
						       .reason = ROLLOUT_REASON_READY_TIMEOUT,
						       .gen = w->gen,
						       .index = w->index,
						       .pid = w->pid,
					       });
				kill_worker(r, w);
				w->respawn = true;
			}
			break;
		case ROLLOUT_W_DRAINING:
			report(r, ROLLOUT_WORKER_KILLED, NULL, w);
			kill_worker(r, w);
			break;
		case ROLLOUT_W_BACKOFF:
			if (g && g == serving(r) && !r->stopping) {
				unsigned index = w->index;

				worker_release(w);
				spawn_slot(r, g, index, now);
			} else {
				worker_release(w);
			}
			break;
		default:
			w->deadline_usec = 0;
			break;
		}
	}
}

static bool batch_ready(struct rollout *r, const struct gen *s)
{
	unsigned n_ready = 0;

	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		const struct rollout_worker *w = &r->w[i];

		if (w->gen != s->id || !worker_live(w))
			continue;
		if (w->state != ROLLOUT_W_READY)
			return false;
		n_ready++;
	}
	return n_ready == s->n_launched;
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
		drain_worker(r, w, now);
	}
	return n;
}

/* Moves the starting generation forward once its current batch is ready. Returns true if it did. */
static bool advance_starting(struct rollout *r, uint64_t now)
{
	struct gen *s = starting(r);
	struct gen *o = serving(r);
	unsigned n;

	if (!s || !batch_ready(r, s))
		return false;

	if (s->n_launched < r->cfg.n_workers) {
		/* One batch of new workers serves: retire the same slots of the old generation. */
		n = o ? drain_slots(r, o, s->n_launched, now) : 0;
		if (n)
			report_with(r, (struct rollout_action){
					       .report = ROLLOUT_GEN_DRAINING,
					       .gen = o->id,
					       .count = n,
				       });
		launch_batch(r, s, now);
		return true;
	}

	s->state = G_SERVING;
	r->serving = r->starting;
	r->starting = -1;
	report_with(r, (struct rollout_action){
			       .report = ROLLOUT_GEN_READY,
			       .gen = s->id,
			       .usec = now - s->started_usec,
			       .count = r->cfg.n_workers,
			       .reload = s->reload,
		       });
	if (o) {
		o->state = G_DRAINING;
		n = drain_slots(r, o, ROLLOUT_MAX_WORKERS, now);
		report_with(r, (struct rollout_action){
				       .report = ROLLOUT_GEN_DRAINING,
				       .gen = o->id,
				       .count = n,
			       });
	}
	return true;
}

static unsigned live_records(const struct rollout *r, unsigned gen_id)
{
	unsigned n = 0;

	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++)
		if (worker_live(&r->w[i]) && (gen_id == 0 || r->w[i].gen == gen_id))
			n++;
	return n;
}

static void settle(struct rollout *r, uint64_t now)
{
	bool changed;

	do {
		changed = advance_starting(r, now);

		for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS; i++) {
			struct gen *g = &r->gens[i];

			if ((g->state == G_DRAINING || g->state == G_FAILED) &&
			    live_records(r, g->id) == 0) {
				report(r, ROLLOUT_GEN_GONE, g, NULL);
				g->state = G_FREE;
				if (r->serving == (int)i)
					r->serving = -1;
				changed = true;
			}
		}

		if (r->pending && !r->stopping && !starting(r) && serving(r)) {
			bool room = false;

			for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS; i++)
				room |= r->gens[i].state == G_FREE;
			if (room) {
				r->pending = false;
				start_generation(r, true, now);
				changed = true;
			}
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
			report_with(r, (struct rollout_action){
					       .report = ROLLOUT_RELOAD_FAILED,
					       .reason = ROLLOUT_REASON_STOPPED,
					       .gen = s->id,
					       .reload = true,
				       });
		r->stopping = true;
		r->pending = false;
		r->starting = -1;
		for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS; i++)
			if (r->gens[i].state == G_STARTING || r->gens[i].state == G_SERVING)
				r->gens[i].state = G_DRAINING;
	}
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		struct rollout_worker *w = &r->w[i];

		if (!worker_live(w))
			continue;
		if (w->state != ROLLOUT_W_BACKOFF && w->state != ROLLOUT_W_KILLED)
			n++;
		if (force)
			kill_worker(r, w);
		else if (worker_active(w))
			drain_worker(r, w, now);
	}
	report_with(r, (struct rollout_action){
			       .report = ROLLOUT_STOPPING,
			       .count = n,
			       .force = force,
		       });
}

static void on_reload(struct rollout *r, uint64_t now)
{
	if (r->stopping) {
		report_with(r, (struct rollout_action){ .report = ROLLOUT_RELOAD_IGNORED });
		return;
	}
	if (starting(r) || !serving(r)) {
		r->pending = true;
		report_with(r, (struct rollout_action){
				       .report = ROLLOUT_RELOAD_PENDING,
				       .gen = starting(r) ? starting(r)->id : 0,
			       });
		return;
	}
	start_generation(r, true, now);
}

static void arm_timer(struct rollout *r)
{
	uint64_t next = 0;

	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		const struct rollout_worker *w = &r->w[i];

		if (!worker_live(w) || w->deadline_usec == 0)
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
	uint64_t now = ev->now_usec;

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
			start_generation(r, false, now);
		}
		break;
	case ROLLOUT_RELOAD:
		if (r->started)
			on_reload(r, now);
		break;
	case ROLLOUT_STOP:
		if (!r->started) {
			r->started = true;
			r->stopping = true;
		}
		on_stop(r, ev->force, now);
		break;
	case ROLLOUT_WORKER_SPAWNED:
		on_spawned(r, ev);
		break;
	case ROLLOUT_SPAWN_FAILED:
		if (ev->worker < ROLLOUT_MAX_RECORDS &&
		    r->w[ev->worker].state == ROLLOUT_W_SPAWNING)
			spawn_failed(r, &r->w[ev->worker], ev->error, now);
		break;
	case ROLLOUT_WORKER_READY: {
		struct rollout_worker *w = find_pid(r, ev->pid);

		if (w && w->state == ROLLOUT_W_STARTING)
			mark_ready(r, w, now);
		break;
	}
	case ROLLOUT_WORKER_EXITED:
		on_exited(r, ev);
		break;
	case ROLLOUT_WORKER_MAINPID: {
		/* The shell checked that the new pid belongs to the worker's process group. */
		struct rollout_worker *w = find_pid(r, ev->pid);

		if (w && ev->new_pid > 0 && !find_pid(r, ev->new_pid))
			w->pid = ev->new_pid;
		break;
	}
	case ROLLOUT_TIMER:
		on_timer(r, now);
		break;
	default:
		r->out = NULL;
		return -EINVAL;
	}

	settle(r, now);
	arm_timer(r);
	*ret_n = r->n_out;
	r->out = NULL;
	return 0;
}

int rollout_adopt(struct rollout *r, const struct rollout_worker *w, bool serving_gen)
{
	struct gen *g = NULL;

	if (r->started || w->gen == 0 || w->index >= r->cfg.n_workers || w->pid <= 0 ||
	    w->pgid <= 0)
		return -EINVAL;
	if (w->state != ROLLOUT_W_STARTING && w->state != ROLLOUT_W_READY &&
	    w->state != ROLLOUT_W_DRAINING && w->state != ROLLOUT_W_KILLED)
		return -EINVAL;
	/* A generation that no longer serves only drains: nothing would ever drain these. */
	if (!serving_gen && (w->state == ROLLOUT_W_STARTING || w->state == ROLLOUT_W_READY))
		return -EINVAL;
	/* A drain without a deadline could hold a stop forever: on_timer() is its only end. */
	if (w->state == ROLLOUT_W_DRAINING && w->deadline_usec == 0)
		return -EINVAL;
	for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS && !g; i++)
		if (r->gens[i].state != G_FREE && r->gens[i].id == w->gen)
			g = &r->gens[i];
	if (!g) {
		if (serving_gen && r->serving >= 0)
			return -EINVAL;
		for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS && !g; i++)
			if (r->gens[i].state == G_FREE)
				g = &r->gens[i];
		if (!g)
			return -E2BIG;
		*g = (struct gen){
			.state = serving_gen ? G_SERVING : G_DRAINING,
			.id = w->gen,
			.n_launched = r->cfg.n_workers,
		};
		for (unsigned i = 0; i < ROLLOUT_MAX_WORKERS; i++)
			g->backoff_usec[i] = ROLLOUT_BACKOFF_MIN_USEC;
		if (serving_gen)
			r->serving = gen_index(r, g);
	} else if ((g->state == G_SERVING) != serving_gen) {
		return -EINVAL;
	}
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		if (r->w[i].state != ROLLOUT_W_FREE)
			continue;
		r->w[i] = *w;
		r->w[i].drain_on_spawn = r->w[i].kill_on_spawn = false;
		if (r->next_gen_id <= w->gen)
			r->next_gen_id = w->gen + 1;
		return 0;
	}
	return -E2BIG;
}

/* The record-less slots of the serving generation: respawned at the first timer. */
static void adopt_fill_slots(struct rollout *r, struct gen *g)
{
	for (unsigned index = 0; index < r->cfg.n_workers; index++) {
		bool have = false;

		for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS && !have; i++)
			have = r->w[i].gen == g->id && r->w[i].index == index &&
			       (worker_active(&r->w[i]) || r->w[i].respawn);
		for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS && !have; i++) {
			if (r->w[i].state != ROLLOUT_W_FREE)
				continue;
			/* A deadline long past: the first timer respawns it (on_timer()). */
			r->w[i] = (struct rollout_worker){
				.state = ROLLOUT_W_BACKOFF,
				.gen = g->id,
				.index = index,
				.deadline_usec = 1,
			};
			have = true;
		}
	}
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
	for (size_t i = 0; i < ROLLOUT_MAX_GENERATIONS && !g; i++) {
		if (r->gens[i].state != G_FREE)
			continue;
		g = &r->gens[i];
		*g = (struct gen){
			.state = G_SERVING,
			.id = r->next_gen_id++,
			.n_launched = r->cfg.n_workers,
		};
		for (unsigned k = 0; k < ROLLOUT_MAX_WORKERS; k++)
			g->backoff_usec[k] = ROLLOUT_BACKOFF_MIN_USEC;
		r->serving = gen_index(r, g);
	}
	if (g)
		adopt_fill_slots(r, g);
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
	return find_pid((struct rollout *)r, pid);
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
	return r->pending;
}

const char *rollout_worker_state_to_string(enum rollout_worker_state s)
{
	static const char *const names[] = {
		[ROLLOUT_W_FREE] = "free",	   [ROLLOUT_W_SPAWNING] = "spawning",
		[ROLLOUT_W_STARTING] = "starting", [ROLLOUT_W_READY] = "ready",
		[ROLLOUT_W_DRAINING] = "draining", [ROLLOUT_W_KILLED] = "killed",
		[ROLLOUT_W_BACKOFF] = "backoff",
	};

	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/* "status 1" or "signal KILL": how a process ended. */
static void format_end(bool signaled, int status, char *buf, size_t size)
{
	const char *name = signaled ? sigabbrev_np(status) : NULL;

	if (!signaled)
		(void)snprintf(buf, size, "status %d", status);
	else if (name)
		(void)snprintf(buf, size, "signal %s", name);
	else
		(void)snprintf(buf, size, "signal %d", status);
}

static void format_ms(uint64_t usec, char *buf, size_t size)
{
	if (usec < 10 * 1000)
		(void)snprintf(buf, size, "%" PRIu64 ".%01" PRIu64 "ms", usec / 1000,
			       (usec % 1000) / 100);
	else if (usec < 10 * 1000 * 1000)
		(void)snprintf(buf, size, "%" PRIu64 "ms", usec / 1000);
	else
		(void)snprintf(buf, size, "%" PRIu64 "s", usec / 1000000);
}

static void format_reason(const struct rollout_action *a, char *buf, size_t size)
{
	char end[32];

	switch (a->reason) {
	case ROLLOUT_REASON_EXITED:
		format_end(a->signaled, a->status, end, sizeof(end));
		(void)snprintf(buf, size, "worker %u (pid %d) exited with %s before it was ready",
			       a->index, a->pid, end);
		return;
	case ROLLOUT_REASON_SPAWN_FAILED:
		(void)snprintf(buf, size, "worker %u could not be started: %s", a->index,
			       strerror(a->error < 0 ? -a->error : a->error));
		return;
	case ROLLOUT_REASON_READY_TIMEOUT:
		(void)snprintf(buf, size, "worker %u (pid %d) was not ready in time", a->index,
			       a->pid);
		return;
	case ROLLOUT_REASON_STOPPED:
		(void)snprintf(buf, size, "batond is stopping");
		return;
	case ROLLOUT_REASON_NONE:
		break;
	}
	(void)snprintf(buf, size, "unknown reason");
}

int rollout_describe(const struct rollout_action *a, char *buf, size_t size)
{
	char t[32], why[160];

	switch (a->report) {
	case ROLLOUT_GEN_STARTING:
		(void)snprintf(buf, size, "generation %u: starting %u worker%s%s", a->gen, a->count,
			       a->count == 1 ? "" : "s", a->reload ? " (reload)" : "");
		return LOG_INFO;
	case ROLLOUT_GEN_READY:
		format_ms(a->usec, t, sizeof(t));
		(void)snprintf(buf, size, "generation %u: %u/%u workers ready in %s; %s", a->gen,
			       a->count, a->count, t, a->reload ? "reload done" : "serving");
		return LOG_NOTICE;
	case ROLLOUT_GEN_DRAINING:
		(void)snprintf(buf, size, "generation %u: draining %u worker%s", a->gen, a->count,
			       a->count == 1 ? "" : "s");
		return LOG_INFO;
	case ROLLOUT_GEN_GONE:
		(void)snprintf(buf, size, "generation %u: all workers exited", a->gen);
		return LOG_INFO;
	case ROLLOUT_RELOAD_FAILED:
		format_reason(a, why, sizeof(why));
		(void)snprintf(buf, size, "reload to generation %u failed: %s; rolled back", a->gen,
			       why);
		return LOG_ERR;
	case ROLLOUT_START_FAILED:
		format_reason(a, why, sizeof(why));
		(void)snprintf(buf, size, "generation %u failed to start: %s", a->gen, why);
		return LOG_ERR;
	case ROLLOUT_RELOAD_PENDING:
		(void)snprintf(buf, size, "reload requested while generation %u starts: queued",
			       a->gen);
		return LOG_INFO;
	case ROLLOUT_RELOAD_IGNORED:
		(void)snprintf(buf, size, "reload requested while stopping: ignoring");
		return LOG_WARNING;
	case ROLLOUT_WORKER_BACK:
		(void)snprintf(buf, size, "generation %u worker %u (pid %d): respawned and ready",
			       a->gen, a->index, a->pid);
		return LOG_INFO;
	case ROLLOUT_WORKER_UP:
		format_ms(a->usec, t, sizeof(t));
		(void)snprintf(buf, size, "generation %u worker %u (pid %d): ready in %s", a->gen,
			       a->index, a->pid, t);
		return LOG_DEBUG;
	case ROLLOUT_WORKER_EXIT:
		format_end(a->signaled, a->status, t, sizeof(t));
		(void)snprintf(buf, size, "generation %u worker %u (pid %d): exited with %s",
			       a->gen, a->index, a->pid, t);
		return (!a->signaled && a->status == 0) ? LOG_INFO : LOG_NOTICE;
	case ROLLOUT_WORKER_CRASHED:
		format_end(a->signaled, a->status, t, sizeof(t));
		format_ms(a->usec, why, sizeof(why));
		(void)snprintf(buf, size,
			       "generation %u worker %u (pid %d): exited unexpectedly with %s; "
			       "respawning in %s",
			       a->gen, a->index, a->pid, t, why);
		return LOG_WARNING;
	case ROLLOUT_WORKER_KILLED:
		(void)snprintf(buf, size, "generation %u worker %u (pid %d): %s; killing it",
			       a->gen, a->index, a->pid,
			       a->reason == ROLLOUT_REASON_READY_TIMEOUT ? "not ready in time"
									 : "drain deadline passed");
		return LOG_WARNING;
	case ROLLOUT_SPAWN_ERROR:
		format_ms(a->usec, t, sizeof(t));
		(void)snprintf(buf, size,
			       "generation %u worker %u: start failed: %s; retrying in %s", a->gen,
			       a->index, strerror(a->error < 0 ? -a->error : a->error), t);
		return LOG_ERR;
	case ROLLOUT_STOPPING:
		(void)snprintf(buf, size, "%s: %u worker%s to %s",
			       a->force ? "stop now" : "stopping", a->count,
			       a->count == 1 ? "" : "s", a->force ? "kill" : "drain");
		return LOG_NOTICE;
	}
	(void)snprintf(buf, size, "unknown report %d", (int)a->report);
	return LOG_DEBUG;
}
