/* SPDX-License-Identifier: MIT */
/*
 * fuzz_rollout.c - the rollout machine driven by random event sequences, through rollout.h
 * alone, in a simulated world of processes; its invariants are checked after every event.
 *
 * The world plays actions.c and events.c: a SPAWN is answered at once (a new pid, or a failed
 * fork), a DRAIN marks the process, a KILL kills its whole group, ARM_TIMER sets the one timer.
 * The input chooses what happens next: reloads, stops, READY from any pid, exits and crashes,
 * reaps, MAINPID hand-overs, the clock moving on and the timer firing.
 *
 * Input: flags (bit 0 cooperative workers, bits 1-2 the ready mode, bit 3 a ready
 * timeout, bit 4 a drain timeout, bit 5 adopt instead of START), -n, --batch, the ready
 * delay (2 bytes), the timeouts (4 bytes each, if their bit is set), then events, one byte
 * each with their operands: see one_event(). Each spawn takes one byte as its answer.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "harness.h"
#include "rollout.h"

#define PROCS_MAX    2048		 /* processes one input may create */
#define PENDING_MAX  ROLLOUT_MAX_RECORDS /* spawns waiting for their answer */
#define FIRST_PID    100		 /* the world's pids: never 0 or 1, never reused */
#define END_ROUNDS   10000		 /* events after the input, to reach EXIT; more is a hang */
#define ADOPT_MAX    8			 /* workers an input may adopt before it starts */
#define WORKERS_MAX  4			 /* -n for the fuzzed machine: small, so events matter */
#define DESCRIBE_MAX 512		 /* bytes of a report's log line */

struct proc {
	int pid, pgid;
	int parent;	  /* the pid that forked it, 0 for batond's own children */
	bool alive;	  /* has not died (a dead one waits to be reaped) */
	bool reaped;	  /* its exit was fed: from now on its pid may be reused */
	bool ours;	  /* batond started it, adopted it, or took it as MAINPID */
	bool drain_asked; /* got the drain signal */
	bool signaled;	  /* how it died, for the exit event */
	int status;
	bool tracked; /* a record names it (as pid, or as pgid: its group's leader) */
};

struct world {
	struct rollout *r;
	struct rollout_config cfg;
	struct rollout_action *out; /* exactly ROLLOUT_MAX_ACTIONS, on the heap for ASan */
	struct proc procs[PROCS_MAX];
	size_t n_procs;
	int next_pid;
	uint64_t now, timer;	       /* timer: when it fires, 0 when disarmed */
	unsigned pending[PENDING_MAX]; /* record ids of spawns to answer, in order */
	size_t n_pending;
	bool stop_fed, exited;
	int exit_code;
	bool cooperative; /* drained processes exit by themselves (else only kills end them) */
	size_t n_checks;  /* which process the next look-up check takes */
	struct fuzz_input *in;
};

static struct world world;
static bool trace; /* FUZZ_TRACE=1: every event and action to stderr, to read a finding */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	trace = getenv("FUZZ_TRACE") != NULL;
	return 0;
}

static struct proc *proc_of(struct world *w, int pid)
{
	if (pid < FIRST_PID || (size_t)(pid - FIRST_PID) >= w->n_procs)
		return NULL;
	return &w->procs[pid - FIRST_PID];
}

/* A new process: batond's child leading its own group, or parent's child in parent's group. */
static struct proc *new_proc(struct world *w, const struct proc *parent)
{
	struct proc *p;

	if (w->n_procs >= PROCS_MAX)
		return NULL;
	p = &w->procs[w->n_procs++];
	*p = (struct proc){ .pid = w->next_pid++, .alive = true, .ours = true };
	p->pgid = parent ? parent->pgid : p->pid;
	p->parent = parent ? parent->pid : 0;
	return p;
}

/*
 * batond reaps its own children, and (as subreaper) orphans once their parent is gone. A dead
 * child of a live parent stays a zombie, its pid still taken: the model never lets a worker
 * reap its MAINPID child, since batond would then signal a pid that may be reused, which the
 * pidfd work of issue #15 addresses.
 */
static bool reapable(struct world *w, const struct proc *p)
{
	const struct proc *parent = proc_of(w, p->parent);

	return !p->alive && !p->reaped && (!parent || parent->reaped);
}

static void die(struct proc *p, bool signaled, int status)
{
	if (!p->alive)
		return;
	p->alive = false;
	p->signaled = signaled;
	p->status = status;
}

/* Any process of group pgid not yet reaped: the group still exists, a kill cannot miss. */
static bool group_exists(struct world *w, int pgid)
{
	for (size_t i = 0; i < w->n_procs; i++)
		if (w->procs[i].pgid == pgid && !w->procs[i].reaped)
			return true;
	return false;
}

/*
 * Record i if it is in use. The records are a fixed pool (docs/DESIGN.md), so the pointers
 * rollout_worker_at() gives are taken once per machine: the checks walk every record after
 * every event, and the calls cost more than the machine's own step.
 */
static const struct rollout_worker *records[ROLLOUT_MAX_RECORDS];

static void take_records(const struct rollout *r)
{
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		records[i] = rollout_worker_at(r, i);
		CHECK(records[i]);
	}
}

static inline const struct rollout_worker *record(unsigned i)
{
	return records[i]->state != ROLLOUT_W_FREE ? records[i] : NULL;
}

/* Ready workers: of generation gen into *ret_gen, of every generation returned. */
static unsigned count_ready(unsigned gen, unsigned *ret_gen)
{
	unsigned n = 0, n_gen = 0;

	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		const struct rollout_worker *x = record(i);

		if (x && x->state == ROLLOUT_W_READY) {
			n++;
			n_gen += x->gen == gen;
		}
	}
	*ret_gen = n_gen;
	return n;
}

static bool any_ready(void)
{
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++)
		if (records[i]->state == ROLLOUT_W_READY)
			return true;
	return false;
}

static void do_action(struct world *w, const struct rollout_action *a)
{
	char line[DESCRIBE_MAX];
	struct proc *p;
	int level;

	switch (a->type) {
	case ROLLOUT_DO_SPAWN:
		/* A stop never starts anything new. */
		CHECK(!w->stop_fed);
		CHECK(w->n_pending < PENDING_MAX);
		w->pending[w->n_pending++] = a->worker;
		break;
	case ROLLOUT_DO_DRAIN:
		/* Only a process of ours that still has its pid: else a stranger gets the signal. */
		p = proc_of(w, a->pid);
		CHECK(a->pid > 1 && p && p->ours && !p->reaped);
		p->drain_asked = true;
		break;
	case ROLLOUT_DO_KILL:
		/* kill(-pgid): a group of ours that still exists, never -1 or 0. */
		CHECK(a->pgid > 1 && proc_of(w, a->pgid) && group_exists(w, a->pgid));
		p = proc_of(w, a->pid);
		CHECK(a->pid > 1 && p && p->ours && !p->reaped);
		for (size_t i = 0; i < w->n_procs; i++) {
			struct proc *q = &w->procs[i];

			if (q->pgid == a->pgid || q->pid == a->pid)
				die(q, true, 9);
		}
		break;
	case ROLLOUT_DO_ARM_TIMER:
		w->timer = a->usec;
		break;
	case ROLLOUT_DO_REPORT:
		level = rollout_describe(a, line, sizeof(line));
		CHECK(level >= LOG_EMERG && level <= LOG_DEBUG);
		CHECK(memchr(line, '\0', sizeof(line)) && line[0]);
		break;
	case ROLLOUT_DO_EXIT:
		CHECK(!w->exited);
		w->exited = true;
		w->exit_code = a->exit_code;
		CHECK(a->exit_code == 0 || a->exit_code == 1);
		/* Every worker is gone: no process of ours still runs. */
		for (size_t i = 0; i < w->n_procs; i++)
			CHECK(!w->procs[i].ours || !w->procs[i].alive);
		break;
	default:
		CHECK(!"an action type rollout.h does not list");
	}
}

static void trace_step(const struct world *w, const struct rollout_event *ev, size_t n)
{
	static const char *const events[] = { "START", "RELOAD", "STOP",  "SPAWNED", "SPAWN_FAILED",
					      "READY", "EXITED", "TIMER", "MAINPID" };
	static const char *const actions[] = { "SPAWN",	    "DRAIN",  "KILL",
					       "ARM_TIMER", "REPORT", "EXIT" };
	char line[DESCRIBE_MAX];

	fprintf(stderr, "t=%llu %s worker=%u pid=%d new_pid=%d force=%d status=%d\n",
		(unsigned long long)w->now,
		(unsigned)ev->type < sizeof(events) / sizeof(events[0]) ? events[ev->type] : "?",
		ev->worker, ev->pid, ev->new_pid, ev->force, ev->status);
	for (size_t i = 0; i < n; i++) {
		const struct rollout_action *a = &w->out[i];

		line[0] = '\0';
		if (a->type == ROLLOUT_DO_REPORT)
			(void)rollout_describe(a, line, sizeof(line));
		fprintf(stderr, "    %s worker=%u gen=%u index=%u pid=%d pgid=%d usec=%llu %s\n",
			(unsigned)a->type < sizeof(actions) / sizeof(actions[0]) ? actions[a->type]
										 : "?",
			a->worker, a->gen, a->index, a->pid, a->pgid, (unsigned long long)a->usec,
			line);
	}
}

/* Feeds one event, checks the step, carries out its actions. */
static void step(struct world *w, struct rollout_event *ev)
{
	const struct rollout_worker *was = NULL;
	bool was_ready;
	unsigned ready_before, serving_ready_before;
	size_t n = SIZE_MAX;

	if (w->exited)
		return;
	ev->now_usec = w->now;
	if (ev->type == ROLLOUT_WORKER_EXITED)
		was = rollout_find_pid(w->r, ev->pid);
	was_ready = was && was->state == ROLLOUT_W_READY;
	ready_before = count_ready(rollout_serving_gen(w->r), &serving_ready_before);
	if (!rollout_serving_gen(w->r))
		serving_ready_before = 0;

	CHECK(rollout_step(w->r, ev, w->out, &n) == 0);
	CHECK(n <= ROLLOUT_MAX_ACTIONS);
	if (trace)
		trace_step(w, ev, n);
	for (size_t i = 0; i < n; i++) {
		const struct rollout_action *a = &w->out[i];

		if (a->type == ROLLOUT_DO_SPAWN) {
			/* The record it names waits for exactly this answer. */
			const struct rollout_worker *x;

			CHECK(a->worker < ROLLOUT_MAX_RECORDS);
			x = record(a->worker);
			CHECK(x && x->state == ROLLOUT_W_SPAWNING && x->gen == a->gen &&
			      x->index == a->index && a->index < w->cfg.n_workers);
		}
	}
	for (size_t i = 0; i < n; i++)
		do_action(w, &w->out[i]);

	/*
	 * While the serving generation has a ready worker, the machine itself never leaves no
	 * ready worker (of any generation: a new one's accept too): only a stop does, or the exit
	 * of the last ready worker (a crash it could not prevent). A serving generation with no
	 * ready worker of its own (all crashed and respawning) has nothing to protect: a failed
	 * reload then drains its own ready workers, by design (docs/DESIGN.md, rollback).
	 */
	if (serving_ready_before > 0 && !w->stop_fed && !w->exited && !any_ready())
		CHECK(ev->type == ROLLOUT_WORKER_EXITED && was_ready && ready_before == 1);
}

/* Answers the spawns of the last steps in order, as actions.c queues them. */
static void answer_spawns(struct world *w)
{
	while (w->n_pending > 0 && !w->exited) {
		struct rollout_event ev = { .worker = w->pending[0] };
		uint8_t how = fuzz_u8(w->in);
		struct proc *p;

		memmove(w->pending, w->pending + 1, --w->n_pending * sizeof(w->pending[0]));
		p = how % 8 == 7 ? NULL : new_proc(w, NULL);
		if (p) {
			ev.type = ROLLOUT_WORKER_SPAWNED;
			ev.pid = p->pid;
		} else {
			static const int errors[] = { -EAGAIN, -ENOMEM, -ENOENT, -EACCES, -E2BIG };

			ev.type = ROLLOUT_SPAWN_FAILED;
			ev.error = errors[how / 8 % (sizeof(errors) / sizeof(errors[0]))];
		}
		step(w, &ev);
	}
}

static void feed(struct world *w, struct rollout_event ev)
{
	step(w, &ev);
	answer_spawns(w);
}

/* A dead process reaped: batond's SIGCHLD handler feeds its exit. */
static void reap(struct world *w, struct proc *p)
{
	p->reaped = true;
	feed(w, (struct rollout_event){
			.type = ROLLOUT_WORKER_EXITED,
			.pid = p->pid,
			.signaled = p->signaled,
			.status = p->status,
		});
}

/* Reaps every dead process batond can, as its SIGCHLD handler loops on waitpid(). */
static bool reap_all(struct world *w)
{
	bool any = false, again = true;

	while (again && !w->exited) {
		again = false;
		for (size_t i = 0; i < w->n_procs && !w->exited; i++) {
			if (reapable(w, &w->procs[i])) {
				reap(w, &w->procs[i]);
				any = again = true;
			}
		}
	}
	return any;
}

/* What must hold whenever the world is quiet (every spawn answered). */
static void check_quiet(struct world *w)
{
	unsigned starting = 0, serving = rollout_serving_gen(w->r);
	unsigned serves = w->stop_fed ? 0 : serving, starts = rollout_starting_gen(w->r);
	uint64_t earliest = 0;

	if (w->exited)
		return;
	for (size_t i = 0; i < w->n_procs; i++)
		w->procs[i].tracked = false;
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		const struct rollout_worker *x = record(i);
		struct proc *p, *leader;

		if (!x)
			continue;
		/* Every spawn was answered: nothing waits for a pid. */
		CHECK(x->state != ROLLOUT_W_SPAWNING);
		if (x->state != ROLLOUT_W_BACKOFF) {
			/* A record with a process names one of ours that was not reaped. */
			p = proc_of(w, x->pid);
			leader = proc_of(w, x->pgid);
			CHECK(p && p->ours && !p->reaped && x->pgid > 1 && leader);
			p->tracked = true;
			leader->tracked = true; /* by its group: rollout_find_pgid() */
		}
		/*
		 * Only the pairs of state and generation that rollout.c's worker table has rows
		 * for: a worker that starts or serves belongs to the starting or the serving
		 * generation, a crash backoff to the serving one, a respawn after a kill to a
		 * generation that no longer starts; a stop leaves none that serves.
		 */
		if (x->state == ROLLOUT_W_STARTING || x->state == ROLLOUT_W_READY)
			CHECK(x->gen == serves || x->gen == starts);
		if (x->state == ROLLOUT_W_BACKOFF)
			CHECK(x->gen == serves);
		if (x->then == ROLLOUT_THEN_RESPAWN)
			CHECK(x->state == ROLLOUT_W_KILLED && x->gen != starts);
		/* At most one starting generation: the only one besides the serving one. */
		if (x->state == ROLLOUT_W_STARTING && x->gen != serving && !w->stop_fed) {
			CHECK(starting == 0 || starting == x->gen);
			starting = x->gen;
		}
		if (x->deadline_usec && (earliest == 0 || x->deadline_usec < earliest))
			earliest = x->deadline_usec;
	}
	if (starting)
		CHECK(rollout_starting_gen(w->r) == starting);
	/*
	 * No pid forgotten: every live process of ours is tracked by its pid or its group. The
	 * records say so; rollout_find_pid() and rollout_find_pgid() must agree, checked for
	 * one process each time (all of them each time would cost more than the machine).
	 */
	for (size_t i = 0; i < w->n_procs; i++) {
		const struct proc *p = &w->procs[i];
		const struct proc *leader = proc_of(w, p->pgid);

		if (p->ours && p->alive)
			CHECK(p->tracked || (leader && leader->tracked));
	}
	if (w->n_procs) {
		const struct proc *p = &w->procs[w->n_checks++ % w->n_procs];
		const struct rollout_worker *x = rollout_find_pid(w->r, p->pid);
		const struct rollout_worker *g = rollout_find_pgid(w->r, p->pgid);

		CHECK(!x || (x->pid == p->pid && p->tracked));
		CHECK(!g || g->pgid == p->pgid);
		if (p->ours && p->alive)
			CHECK(x || g);
	}
	/*
	 * Between reloads, every slot of the serving generation has a worker, or one on its way
	 * (starting, waiting out its crash backoff, or killed to be respawned): capacity is
	 * never lost.
	 */
	if (serving && !rollout_starting_gen(w->r) && !w->stop_fed) {
		bool have[WORKERS_MAX] = { false };

		for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
			const struct rollout_worker *x = record(i);

			if (x && x->gen == serving && x->index < WORKERS_MAX &&
			    (x->state == ROLLOUT_W_STARTING || x->state == ROLLOUT_W_READY ||
			     x->state == ROLLOUT_W_BACKOFF || x->then == ROLLOUT_THEN_RESPAWN))
				have[x->index] = true;
		}
		for (unsigned k = 0; k < w->cfg.n_workers; k++)
			CHECK(have[k]);
	}
	/* No deadline forgotten: the timer fires no later than the earliest one. */
	if (earliest)
		CHECK(w->timer != 0 && w->timer <= earliest);
}

/* A server that finished draining: every process of its group exits, and is reaped. */
static void exit_group(struct world *w, int pgid)
{
	for (size_t i = 0; i < w->n_procs; i++)
		if (w->procs[i].pgid == pgid)
			die(&w->procs[i], false, 0);
	reap_all(w);
}

static struct proc *pick_proc(struct world *w)
{
	uint16_t k = fuzz_u16(w->in);

	return w->n_procs ? &w->procs[k % w->n_procs] : NULL;
}

static void fire_timer(struct world *w)
{
	if (w->timer == 0)
		return;
	if (w->now < w->timer)
		w->now = w->timer;
	/* One-shot: disarmed as it fires (loop.c), until the machine arms it again. */
	w->timer = 0;
	feed(w, (struct rollout_event){ .type = ROLLOUT_TIMER });
}

static void one_event(struct world *w)
{
	uint8_t op = fuzz_u8(w->in);
	struct proc *p, *q;

	/* The low four bits choose the event, the high ones vary it. */
	switch ((op & 0x0f) % 10) {
	case 0:
		feed(w, (struct rollout_event){ .type = ROLLOUT_RELOAD });
		break;
	case 1:
		w->stop_fed = true;
		feed(w, (struct rollout_event){ .type = ROLLOUT_STOP, .force = op & 0x80 });
		break;
	case 2: /* READY=1 from any pid, even a reaped one */
		p = pick_proc(w);
		if (p)
			feed(w,
			     (struct rollout_event){ .type = ROLLOUT_WORKER_READY, .pid = p->pid });
		break;
	case 3: /* a process exits or crashes; reaped at once if batond can */
		p = pick_proc(w);
		if (p && p->alive) {
			die(p, op & 0x80, fuzz_u8(w->in));
			if (reapable(w, p))
				reap(w, p);
		}
		break;
	case 4: /* one dead process is reaped (SIGCHLD came) */
		p = pick_proc(w);
		if (p && reapable(w, p))
			reap(w, p);
		break;
	case 5: /* time passes; the timer fires if it is due */
		w->now += (uint64_t)fuzz_u16(w->in) << (op >> 4);
		if (w->timer && w->now >= w->timer)
			fire_timer(w);
		break;
	case 6: /* a process forks in its group and names the child MAINPID= */
		p = pick_proc(w);
		if (p && p->alive && !p->reaped) {
			int pid = p->pid;

			q = new_proc(w, p);
			if (!q)
				break;
			feed(w, (struct rollout_event){ .type = ROLLOUT_WORKER_MAINPID,
							.pid = pid,
							.new_pid = q->pid });
			/* Ours only if batond took it: else it is a child the worker owns. */
			q->ours = rollout_find_pid(w->r, q->pid) != NULL;
		}
		break;
	case 7: /* a drained process finishes and exits with its whole group */
		p = pick_proc(w);
		if (p && p->drain_asked && p->alive)
			exit_group(w, p->pgid);
		break;
	case 8:
		fire_timer(w);
		break;
	case 9: /* the clock jumps far (suspend, a long stall) */
		w->now += (uint64_t)fuzz_u32(w->in) << 8;
		break;
	}
	check_quiet(w);
}

/* Adopts up to ADOPT_MAX workers, as a new batond image does after an upgrade. */
static void adopt(struct world *w)
{
	unsigned n = fuzz_u8(w->in) % (ADOPT_MAX + 1), max_gen = 0;
	static const enum rollout_worker_state states[] = {
		ROLLOUT_W_STARTING,
		ROLLOUT_W_READY,
		ROLLOUT_W_DRAINING,
		ROLLOUT_W_KILLED,
	};

	for (unsigned i = 0; i < n; i++) {
		uint8_t b = fuzz_u8(w->in);
		struct proc *p = new_proc(w, NULL);
		struct rollout_worker x;

		if (!p)
			break;
		x = (struct rollout_worker){
			.state = states[b % 4],
			.gen = 1 + (b >> 2) % 3,
			.index = fuzz_u8(w->in) % (WORKERS_MAX + 1),
			.pid = p->pid,
			.pgid = p->pid,
			.deadline_usec = (b & 0x40) ? w->now + fuzz_u16(w->in) : 0,
		};
		if (rollout_adopt(w->r, &x, b & 0x80) < 0) {
			/* Refused: not ours; the shell would not run it under this machine. */
			p->ours = false;
			continue;
		}
		CHECK(rollout_find_pid(w->r, p->pid));
		/* What the old image had done: SIGKILL (not yet reaped) or the drain signal. */
		if (x.state == ROLLOUT_W_KILLED)
			die(p, true, 9);
		p->drain_asked = x.state == ROLLOUT_W_DRAINING;
		if (x.gen > max_gen)
			max_gen = x.gen;
	}
	rollout_adopt_done(w->r, max_gen + 1 + fuzz_u8(w->in) % 2);
	/* The adopted deadlines need a timer, as upgrade.c's run() arms it. */
	feed(w, (struct rollout_event){ .type = ROLLOUT_TIMER });
}

/*
 * After the input: stop and let the world run down. Every process of ours must be gone, and
 * the machine must say EXIT, whether workers drain by themselves or only die when killed.
 */
static void run_down(struct world *w)
{
	w->stop_fed = true;
	feed(w, (struct rollout_event){ .type = ROLLOUT_STOP });
	for (int round = 0; round < END_ROUNDS && !w->exited; round++) {
		bool acted = false;

		acted = reap_all(w);
		for (size_t i = 0; i < w->n_procs && !w->exited && w->cooperative; i++) {
			if (w->procs[i].alive && w->procs[i].drain_asked) {
				exit_group(w, w->procs[i].pgid);
				acted = true;
			}
		}
		check_quiet(w);
		if (!acted && !w->exited) {
			/* Nothing left to happen but the timer: without one, batond would hang. */
			CHECK(w->timer != 0);
			fire_timer(w);
			check_quiet(w);
		}
	}
	CHECK(w->exited);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { .data = data, .size = size };
	struct world *w = &world;
	uint8_t flags;

	memset(w, 0, sizeof(*w));
	w->in = &in;
	w->next_pid = FIRST_PID;
	w->now = 1000000;
	flags = fuzz_u8(&in);
	w->cooperative = flags & 1;
	w->cfg = (struct rollout_config){
		.n_workers = 1 + fuzz_u8(&in) % WORKERS_MAX,
		.batch = fuzz_u8(&in) % (WORKERS_MAX + 1),
		.ready_mode = (enum rollout_ready_mode)((flags >> 1) % 3),
		.ready_delay_usec = fuzz_u16(&in),
		.ready_timeout_usec = (flags & 0x08) ? fuzz_u32(&in) : 0,
		.drain_timeout_usec = (flags & 0x10) ? fuzz_u32(&in) : 0,
	};
	CHECK(rollout_new(&w->cfg, &w->r) == 0);
	take_records(w->r);
	w->out = calloc(ROLLOUT_MAX_ACTIONS, sizeof(*w->out));
	CHECK(w->out);

	if (flags & 0x20)
		adopt(w);
	else
		feed(w, (struct rollout_event){ .type = ROLLOUT_START });
	check_quiet(w);
	while (fuzz_more(&in) && !w->exited)
		one_event(w);
	run_down(w);

	free(w->out);
	w->r = rollout_free(w->r);
	return 0;
}
