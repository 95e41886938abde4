/* SPDX-License-Identifier: MIT */
/* test_rollout.c - the generation state machine, transition by transition, and its invariants. */
#include "unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rollout.h"

#define SEC	   UINT64_C(1000000)
#define MS	   UINT64_C(1000)
#define H_MAX_PIDS ROLLOUT_MAX_RECORDS /* pids spawned and not yet exited, per test */

/* A test drives one machine; spawns are answered with made-up pids, as main.c would. */
struct h {
	struct rollout *r;
	struct rollout_action *out; /* actions of the last event (and its spawn answers) */
	size_t n;
	uint64_t now;
	int next_pid;
	uint64_t timer; /* last armed time, 0 = off */
	int exit_code;	/* -1 until ROLLOUT_DO_EXIT */
	bool auto_spawn;
	int pids[H_MAX_PIDS]; /* the machine took them (spawned, adopted, MAINPID); no exit fed */
	size_t n_pids;
};

static struct h *h_new_drain(unsigned n_workers, unsigned batch, enum rollout_ready_mode mode,
			     uint64_t drain_timeout_usec)
{
	struct rollout_config cfg = {
		.n_workers = n_workers,
		.batch = batch,
		.ready_mode = mode,
		.ready_delay_usec = 2 * SEC,
		.ready_timeout_usec = 60 * SEC,
		.drain_timeout_usec = drain_timeout_usec,
	};
	struct h *h = calloc(1, sizeof(*h));

	ck_assert_ptr_nonnull(h);
	h->out = calloc(4 * ROLLOUT_MAX_ACTIONS, sizeof(*h->out));
	ck_assert_ptr_nonnull(h->out);
	ck_assert_int_eq(rollout_new(&cfg, &h->r), 0);
	h->now = 1000 * SEC;
	h->next_pid = 100;
	h->exit_code = -1;
	h->auto_spawn = true;
	return h;
}

static struct h *h_new(unsigned n_workers, unsigned batch, enum rollout_ready_mode mode)
{
	return h_new_drain(n_workers, batch, mode, 30 * SEC);
}

static void h_free(struct h *h)
{
	rollout_free(h->r);
	free(h->out);
	free(h);
}

static void h_feed_one(struct h *h, struct rollout_event ev);

/* Records the actions of one step; answers spawns the way main.c does, after the step. */
static void h_take(struct h *h, const struct rollout_action *a, size_t n)
{
	struct rollout_event answers[ROLLOUT_MAX_RECORDS];
	size_t n_answers = 0;

	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_lt(h->n, 4 * ROLLOUT_MAX_ACTIONS);
		h->out[h->n++] = a[i];
		if (a[i].type == ROLLOUT_DO_ARM_TIMER)
			h->timer = a[i].usec;
		if (a[i].type == ROLLOUT_DO_EXIT)
			h->exit_code = a[i].exit_code;
		if (a[i].type == ROLLOUT_DO_SPAWN && h->auto_spawn)
			answers[n_answers++] = (struct rollout_event){
				.type = ROLLOUT_WORKER_SPAWNED,
				.now_usec = h->now,
				.worker = a[i].worker,
				.pid = h->next_pid++,
			};
	}
	for (size_t i = 0; i < n_answers; i++)
		h_feed_one(h, answers[i]);
}

static void h_track(struct h *h, int pid)
{
	for (size_t i = 0; i < h->n_pids; i++)
		if (h->pids[i] == pid)
			return;
	ck_assert_uint_lt(h->n_pids, H_MAX_PIDS);
	h->pids[h->n_pids++] = pid;
}

static void h_forget(struct h *h, int pid)
{
	for (size_t i = 0; i < h->n_pids; i++) {
		if (h->pids[i] == pid) {
			h->pids[i] = h->pids[--h->n_pids];
			return;
		}
	}
}

/*
 * What test_rollout.c promises of every step: each pid the machine took (spawned, adopted, or
 * named by MAINPID=) was reported gone (its exit was fed) or is still tracked, by its pid or,
 * once a MAINPID= moved the record on, as the leader of the record's process group. A pid in
 * neither would be a worker nobody drains, kills or waits for.
 */
static void h_check_pids(const struct h *h)
{
	for (size_t i = 0; i < h->n_pids; i++)
		ck_assert_msg(rollout_find_pid(h->r, h->pids[i]) ||
				      rollout_find_pgid(h->r, h->pids[i]),
			      "pid %d: its exit was not fed, and the machine no longer tracks it",
			      h->pids[i]);
}

static void h_feed_one(struct h *h, struct rollout_event ev)
{
	struct rollout_action *a = calloc(ROLLOUT_MAX_ACTIONS, sizeof(*a));
	size_t n = 0;

	ck_assert_ptr_nonnull(a);
	ev.now_usec = h->now;
	ck_assert_int_eq(rollout_step(h->r, &ev, a, &n), 0);
	ck_assert_uint_le(n, ROLLOUT_MAX_ACTIONS);
	if (ev.type == ROLLOUT_WORKER_EXITED)
		h_forget(h, ev.pid);
	if (ev.type == ROLLOUT_WORKER_SPAWNED && rollout_find_pid(h->r, ev.pid))
		h_track(h, ev.pid);
	if (ev.type == ROLLOUT_WORKER_MAINPID && rollout_find_pid(h->r, ev.new_pid))
		h_track(h, ev.new_pid);
	h_check_pids(h);
	h_take(h, a, n);
	free(a);
}

/* rollout_adopt(), and the pid is tracked if the machine took it. */
static int h_adopt(struct h *h, const struct rollout_worker *w, bool serving)
{
	int r = rollout_adopt(h->r, w, serving);

	if (r == 0)
		h_track(h, w->pid);
	return r;
}

/* Feeds one outside event; h->out then holds everything it caused. */
static void h_feed(struct h *h, struct rollout_event ev)
{
	h->n = 0;
	h_feed_one(h, ev);
}

static void h_simple(struct h *h, enum rollout_event_type type)
{
	h_feed(h, (struct rollout_event){ .type = type });
}

static void h_ready(struct h *h, int pid)
{
	h_feed(h, (struct rollout_event){ .type = ROLLOUT_WORKER_READY, .pid = pid });
}

static void h_exit(struct h *h, int pid, int status)
{
	h_feed(h, (struct rollout_event){
			  .type = ROLLOUT_WORKER_EXITED, .pid = pid, .status = status });
}

static void h_advance(struct h *h, uint64_t usec)
{
	h->now += usec;
	h_simple(h, ROLLOUT_TIMER);
}

static size_t h_count(const struct h *h, enum rollout_action_type type)
{
	size_t n = 0;

	for (size_t i = 0; i < h->n; i++)
		n += h->out[i].type == type;
	return n;
}

static const struct rollout_action *h_report(const struct h *h, enum rollout_report what)
{
	for (size_t i = 0; i < h->n; i++)
		if (h->out[i].type == ROLLOUT_DO_REPORT && h->out[i].report == what)
			return &h->out[i];
	return NULL;
}

static bool h_did(const struct h *h, enum rollout_action_type type, int pid)
{
	for (size_t i = 0; i < h->n; i++)
		if (h->out[i].type == type && h->out[i].pid == pid)
			return true;
	return false;
}

/* Pids of generation gen in any of the states given by mask (1 << state). */
static size_t h_pids(const struct h *h, unsigned gen, unsigned mask, int *pids)
{
	size_t n = 0;

	for (unsigned i = 0;; i++) {
		const struct rollout_worker *w = rollout_worker_at(h->r, i);

		if (!w)
			break;
		if (w->state != ROLLOUT_W_FREE && w->gen == gen && (mask & (1u << w->state)))
			pids[n++] = w->pid;
	}
	return n;
}

#define M(s) (1u << ROLLOUT_W_##s)

/* Starts generation 1 with n workers and makes them all ready. */
static struct h *h_serving(unsigned n, unsigned batch)
{
	struct h *h = h_new(n, batch, ROLLOUT_READY_NOTIFY);
	int pids[ROLLOUT_MAX_WORKERS];

	h_simple(h, ROLLOUT_START);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), n);
	ck_assert_uint_eq(h_pids(h, 1, M(STARTING), pids), n);
	for (size_t i = 0; i < n; i++)
		h_ready(h, pids[i]);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 1);
	return h;
}

static void h_ready_all(struct h *h, unsigned gen)
{
	int pids[ROLLOUT_MAX_RECORDS];
	size_t n = h_pids(h, gen, M(STARTING), pids);

	for (size_t i = 0; i < n; i++)
		h_ready(h, pids[i]);
}

START_TEST(first_generation_serves_once_every_worker_is_ready)
{
	struct h *h = h_new(3, 0, ROLLOUT_READY_NOTIFY);
	int pids[8];

	h_simple(h, ROLLOUT_START);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 3);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_GEN_STARTING));
	/* The ready timeout is armed as soon as the workers run. */
	ck_assert_uint_eq(h->timer, h->now + 60 * SEC);
	ck_assert_uint_eq(h_pids(h, 1, M(STARTING), pids), 3);

	h_ready(h, pids[0]);
	h_ready(h, pids[1]);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 0);
	ck_assert_ptr_null(h_report(h, ROLLOUT_GEN_READY));
	h_ready(h, pids[2]);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 1);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_GEN_READY));
	ck_assert(!h_report(h, ROLLOUT_GEN_READY)->reload);
	/* Nothing left to time: an idle batond does not wake up. */
	ck_assert_uint_eq(h->timer, 0);
	h_free(h);
}
END_TEST

START_TEST(reload_drains_old_generation_only_after_new_one_is_ready)
{
	struct h *h = h_serving(2, 0);
	int old[4], new[4];

	ck_assert_uint_eq(h_pids(h, 1, M(READY), old), 2);
	h_simple(h, ROLLOUT_RELOAD);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 2);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_DRAIN), 0);
	ck_assert_uint_eq(rollout_starting_gen(h->r), 2);
	ck_assert_uint_eq(h_pids(h, 2, M(STARTING), new), 2);

	h_ready(h, new[0]);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_DRAIN), 0);
	h_ready(h, new[1]);
	ck_assert(h_did(h, ROLLOUT_DO_DRAIN, old[0]));
	ck_assert(h_did(h, ROLLOUT_DO_DRAIN, old[1]));
	ck_assert_uint_eq(rollout_serving_gen(h->r), 2);
	ck_assert(h_report(h, ROLLOUT_GEN_READY)->reload);
	/* The drain deadline is armed. */
	ck_assert_uint_eq(h->timer, h->now + 30 * SEC);

	h_exit(h, old[0], 0);
	ck_assert_ptr_null(h_report(h, ROLLOUT_GEN_GONE));
	h_exit(h, old[1], 0);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_GEN_GONE));
	ck_assert_uint_eq(h->timer, 0);
	h_free(h);
}
END_TEST

START_TEST(new_generation_that_exits_before_ready_leaves_old_one_serving)
{
	struct h *h = h_serving(2, 0);
	int old[4], new[4];
	const struct rollout_action *f;

	h_pids(h, 1, M(READY), old);
	h_simple(h, ROLLOUT_RELOAD);
	h_pids(h, 2, M(STARTING), new);
	h_exit(h, new[0], 1);

	f = h_report(h, ROLLOUT_RELOAD_FAILED);
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(f->reason, ROLLOUT_REASON_EXITED);
	ck_assert_int_eq(f->pid, new[0]);
	ck_assert_int_eq(f->status, 1);
	/* The other new worker is killed, no old one is touched. */
	ck_assert(h_did(h, ROLLOUT_DO_KILL, new[1]));
	ck_assert(!h_did(h, ROLLOUT_DO_DRAIN, old[0]) && !h_did(h, ROLLOUT_DO_KILL, old[0]));
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 0);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 1);
	ck_assert_uint_eq(rollout_starting_gen(h->r), 0);
	ck_assert_uint_eq(h_pids(h, 1, M(READY), old), 2);

	h_exit(h, new[1], 9);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_GEN_GONE));
	/* A later reload works again. */
	h_simple(h, ROLLOUT_RELOAD);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 2);
	ck_assert_uint_eq(rollout_starting_gen(h->r), 3);
	h_free(h);
}
END_TEST

START_TEST(new_generation_that_misses_ready_timeout_is_killed)
{
	struct h *h = h_serving(2, 0);
	int new[4];

	h_simple(h, ROLLOUT_RELOAD);
	h_pids(h, 2, M(STARTING), new);
	h_ready(h, new[0]);
	h->now += 59 * SEC;
	h_simple(h, ROLLOUT_TIMER);
	ck_assert_ptr_null(h_report(h, ROLLOUT_RELOAD_FAILED));
	h_advance(h, 1 * SEC);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_RELOAD_FAILED));
	ck_assert_int_eq(h_report(h, ROLLOUT_RELOAD_FAILED)->reason, ROLLOUT_REASON_READY_TIMEOUT);
	/* The ready one may hold connections: drained. The late one: killed. */
	ck_assert(h_did(h, ROLLOUT_DO_DRAIN, new[0]));
	ck_assert(h_did(h, ROLLOUT_DO_KILL, new[1]));
	ck_assert_uint_eq(rollout_serving_gen(h->r), 1);
	h_free(h);
}
END_TEST

START_TEST(spawn_failure_of_new_generation_rolls_back)
{
	struct h *h = h_serving(1, 0);

	h->auto_spawn = false;
	h_simple(h, ROLLOUT_RELOAD);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 1);
	h_feed(h, (struct rollout_event){ .type = ROLLOUT_SPAWN_FAILED,
					  .worker = h->out[1].worker,
					  .error = -ENOENT });
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_RELOAD_FAILED));
	ck_assert_int_eq(h_report(h, ROLLOUT_RELOAD_FAILED)->error, -ENOENT);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 1);
	ck_assert_uint_eq(rollout_starting_gen(h->r), 0);
	h_free(h);
}
END_TEST

START_TEST(first_generation_that_never_gets_ready_exits_1)
{
	struct h *h = h_new(2, 0, ROLLOUT_READY_NOTIFY);
	int pids[4];

	h_simple(h, ROLLOUT_START);
	h_pids(h, 1, M(STARTING), pids);
	h_advance(h, 60 * SEC);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_START_FAILED));
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_KILL), 2);
	ck_assert_int_eq(h->exit_code, -1);
	h_exit(h, pids[0], 9);
	h_exit(h, pids[1], 9);
	ck_assert_int_eq(h->exit_code, 1);
	h_free(h);
}
END_TEST

START_TEST(worker_that_ignores_drain_is_killed_at_the_deadline)
{
	struct h *h = h_serving(1, 0);
	int old[2], new[2];

	h_pids(h, 1, M(READY), old);
	h_simple(h, ROLLOUT_RELOAD);
	h_ready_all(h, 2);
	ck_assert(h_did(h, ROLLOUT_DO_DRAIN, old[0]));
	h_advance(h, 30 * SEC - 1);
	ck_assert(!h_did(h, ROLLOUT_DO_KILL, old[0]));
	h_advance(h, 1);
	ck_assert(h_did(h, ROLLOUT_DO_KILL, old[0]));
	ck_assert_int_eq(h_report(h, ROLLOUT_WORKER_KILLED)->pid, old[0]);
	/* Killed, not yet reaped: the generation is not gone and nothing is re-armed. */
	ck_assert_uint_eq(h->timer, 0);
	h_exit(h, old[0], 9);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_GEN_GONE));
	ck_assert_uint_eq(h_pids(h, 2, M(READY), new), 1);
	h_free(h);
}
END_TEST

START_TEST(crashed_worker_is_respawned_with_doubling_backoff)
{
	struct h *h = h_serving(2, 0);
	int pids[4];
	const struct rollout_action *c;
	uint64_t expect = ROLLOUT_BACKOFF_MIN_USEC;

	for (int round = 0; round < 12; round++) {
		ck_assert_uint_eq(h_pids(h, 1, M(READY) | M(STARTING), pids), 2);
		h_exit(h, pids[0], 1);
		c = h_report(h, ROLLOUT_WORKER_CRASHED);
		ck_assert_ptr_nonnull(c);
		ck_assert_uint_eq(c->usec, expect);
		ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 0);
		ck_assert_uint_eq(h->timer, h->now + expect);
		h_advance(h, expect - 1);
		ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 0);
		h_advance(h, 1);
		ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 1);
		ck_assert_uint_eq(h->out[0].index, c->index);
		h_ready_all(h, 1);
		expect = expect * 2 > ROLLOUT_BACKOFF_MAX_USEC ? ROLLOUT_BACKOFF_MAX_USEC
							       : expect * 2;
	}
	ck_assert_uint_eq(expect, ROLLOUT_BACKOFF_MAX_USEC);
	/* A minute of health resets the delay. */
	h_pids(h, 1, M(READY), pids);
	h->now += ROLLOUT_BACKOFF_RESET_USEC;
	h_exit(h, pids[1], 0);
	ck_assert_uint_eq(h_report(h, ROLLOUT_WORKER_CRASHED)->usec, ROLLOUT_BACKOFF_MIN_USEC);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 1);
	h_free(h);
}
END_TEST

START_TEST(reload_during_reload_is_coalesced_into_one_more)
{
	struct h *h = h_serving(1, 0);

	h_simple(h, ROLLOUT_RELOAD);
	ck_assert_uint_eq(rollout_starting_gen(h->r), 2);
	h_simple(h, ROLLOUT_RELOAD);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 0);
	ck_assert(rollout_reload_pending(h->r));
	h_simple(h, ROLLOUT_RELOAD);
	h_simple(h, ROLLOUT_RELOAD);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 0);

	h_ready_all(h, 2);
	/* Generation 2 serves, and exactly one more reload (generation 3) starts at once. */
	ck_assert_uint_eq(rollout_serving_gen(h->r), 2);
	ck_assert_uint_eq(rollout_starting_gen(h->r), 3);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 1);
	ck_assert(!rollout_reload_pending(h->r));
	h_ready_all(h, 3);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 3);
	ck_assert_uint_eq(rollout_starting_gen(h->r), 0);
	h_free(h);
}
END_TEST

START_TEST(draining_generations_do_not_hold_a_reload_back)
{
	struct h *h = h_serving(1, 0);

	/* Generations 1..4 each left draining (their workers never exit). */
	for (unsigned g = 2; g <= 5; g++) {
		h_simple(h, ROLLOUT_RELOAD);
		ck_assert_uint_eq(rollout_starting_gen(h->r), g);
		h_ready_all(h, g);
		ck_assert_uint_eq(rollout_serving_gen(h->r), g);
		ck_assert_uint_eq(h_count(h, ROLLOUT_DO_DRAIN), 1);
	}
	h_free(h);
}
END_TEST

START_TEST(reloads_beyond_the_generation_limit_wait_for_a_drain_to_finish)
{
	struct h *h = h_serving(1, 0);
	int pids[4];

	for (unsigned g = 2; g <= ROLLOUT_MAX_GENERATIONS; g++) {
		h_simple(h, ROLLOUT_RELOAD);
		h_ready_all(h, g);
	}
	h_simple(h, ROLLOUT_RELOAD);
	ck_assert_uint_eq(rollout_starting_gen(h->r), 0);
	ck_assert(rollout_reload_pending(h->r));
	ck_assert_uint_eq(h_pids(h, 1, M(DRAINING), pids), 1);
	h_exit(h, pids[0], 0);
	ck_assert_uint_eq(rollout_starting_gen(h->r), ROLLOUT_MAX_GENERATIONS + 1);
	h_free(h);
}
END_TEST

START_TEST(stop_during_reload_drains_every_worker_then_exits_0)
{
	struct h *h = h_serving(2, 0);
	int pids[8];
	size_t n;

	h_simple(h, ROLLOUT_RELOAD);
	h_simple(h, ROLLOUT_RELOAD); /* pending: dropped by the stop */
	h_simple(h, ROLLOUT_STOP);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_RELOAD_FAILED));
	ck_assert_int_eq(h_report(h, ROLLOUT_RELOAD_FAILED)->reason, ROLLOUT_REASON_STOPPED);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_DRAIN), 4);
	ck_assert(!rollout_reload_pending(h->r));
	h_simple(h, ROLLOUT_RELOAD);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_RELOAD_IGNORED));
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 0);

	n = h_pids(h, 1, M(DRAINING), pids);
	n += h_pids(h, 2, M(DRAINING), pids + n);
	ck_assert_uint_eq(n, 4);
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(h->exit_code, -1);
		h_exit(h, pids[i], 0);
		/* A worker that exits while stopping is not respawned. */
		ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 0);
	}
	ck_assert_int_eq(h->exit_code, 0);
	h_free(h);
}
END_TEST

START_TEST(second_stop_kills_at_once)
{
	struct h *h = h_serving(2, 0);

	h_simple(h, ROLLOUT_STOP);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_DRAIN), 2);
	h_feed(h, (struct rollout_event){ .type = ROLLOUT_STOP, .force = true });
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_KILL), 2);
	h_free(h);
}
END_TEST

START_TEST(batch_replaces_k_workers_at_a_time)
{
	struct h *h = h_serving(4, 2);
	int old[8], new[8];

	ck_assert_uint_eq(h_pids(h, 1, M(READY), old), 4);
	h_simple(h, ROLLOUT_RELOAD);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 2);
	ck_assert_uint_eq(h_pids(h, 2, M(STARTING), new), 2);
	h_ready(h, new[0]);
	h_ready(h, new[1]);
	/* First batch ready: old slots 0 and 1 drain, slots 2 and 3 of gen 2 start. */
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_DRAIN), 2);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 2);
	ck_assert_uint_eq(h_pids(h, 1, M(READY), old), 2);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 1);
	h_ready_all(h, 2);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_DRAIN), 2);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 2);
	ck_assert_uint_eq(h_pids(h, 2, M(READY), new), 4);
	h_free(h);
}
END_TEST

START_TEST(batch_failure_restores_the_drained_old_slots)
{
	struct h *h = h_serving(4, 2);
	int new[8], old[8];

	h_simple(h, ROLLOUT_RELOAD);
	h_ready_all(h, 2);
	ck_assert_uint_eq(h_pids(h, 2, M(STARTING), new), 2);
	h_exit(h, new[0], 3);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_RELOAD_FAILED));
	/* Two old slots were drained for the first batch: respawned in generation 1. */
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 2);
	/* The ready new workers of the first batch drain, the late one is killed. */
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_DRAIN), 2);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_KILL), 1);
	ck_assert_uint_eq(h_pids(h, 1, M(READY) | M(STARTING), old), 4);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 1);
	h_free(h);
}
END_TEST

START_TEST(delay_mode_is_ready_after_the_delay)
{
	struct h *h = h_new(1, 0, ROLLOUT_READY_DELAY);

	h_simple(h, ROLLOUT_START);
	ck_assert_uint_eq(h->timer, h->now + 2 * SEC);
	h_advance(h, 2 * SEC - 1);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 0);
	h_advance(h, 1);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 1);
	h_free(h);
}
END_TEST

START_TEST(none_mode_is_ready_at_spawn)
{
	struct h *h = h_new(2, 0, ROLLOUT_READY_NONE);

	h_simple(h, ROLLOUT_START);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 1);
	h_free(h);
}
END_TEST

START_TEST(respawned_worker_that_misses_ready_timeout_is_killed_and_respawned)
{
	struct h *h = h_serving(1, 0);
	int pids[2];

	h_pids(h, 1, M(READY), pids);
	h_exit(h, pids[0], 1);
	h_advance(h, ROLLOUT_BACKOFF_MIN_USEC);
	ck_assert_uint_eq(h_pids(h, 1, M(STARTING), pids), 1);
	h_advance(h, 60 * SEC);
	ck_assert(h_did(h, ROLLOUT_DO_KILL, pids[0]));
	ck_assert_ptr_null(h_report(h, ROLLOUT_RELOAD_FAILED));
	h_exit(h, pids[0], 9);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_WORKER_CRASHED));
	ck_assert_uint_gt(h->timer, h->now);
	h_free(h);
}
END_TEST

START_TEST(events_about_unknown_pids_are_ignored)
{
	struct h *h = h_serving(1, 0);

	h_exit(h, 99999, 0);
	ck_assert_uint_eq(h->n, 0);
	h_ready(h, 99999);
	ck_assert_uint_eq(h->n, 0);
	h_feed(h, (struct rollout_event){ .type = ROLLOUT_WORKER_SPAWNED, .worker = 7, .pid = 5 });
	ck_assert_uint_eq(h->n, 0);
	h_free(h);
}
END_TEST

START_TEST(mainpid_moves_the_worker_to_its_new_main_process)
{
	struct h *h = h_serving(1, 0);
	int pids[2];

	h_pids(h, 1, M(READY), pids);
	h_feed(h, (struct rollout_event){
			  .type = ROLLOUT_WORKER_MAINPID, .pid = pids[0], .new_pid = 4242 });
	ck_assert_ptr_nonnull(rollout_find_pid(h->r, 4242));
	ck_assert_int_eq(rollout_find_pid(h->r, 4242)->pgid, pids[0]);
	/* The old leader's exit is no longer the worker's. */
	h_exit(h, pids[0], 0);
	ck_assert_ptr_null(h_report(h, ROLLOUT_WORKER_CRASHED));
	h_simple(h, ROLLOUT_STOP);
	ck_assert(h_did(h, ROLLOUT_DO_DRAIN, 4242));
	h_free(h);
}
END_TEST

START_TEST(describe_gives_one_line_per_report)
{
	struct rollout_action a = {
		.type = ROLLOUT_DO_REPORT,
		.report = ROLLOUT_RELOAD_FAILED,
		.reason = ROLLOUT_REASON_EXITED,
		.gen = 7,
		.index = 2,
		.pid = 1234,
		.status = 1,
	};
	char buf[256];

	ck_assert_int_eq(rollout_describe(&a, buf, sizeof(buf)), 3 /* LOG_ERR */);
	ck_assert_str_eq(buf, "reload to generation 7 failed: worker 2 (pid 1234) exited with "
			      "status 1 before it was ready; rolled back");
	a.signaled = true;
	a.status = 9;
	(void)rollout_describe(&a, buf, sizeof(buf));
	ck_assert_ptr_nonnull(strstr(buf, "signal KILL"));
}
END_TEST

/*
 * The worker table at the top of supervisor/rollout.c, checked row by row: each row's state is
 * built through real events in the generation its "when" names (or the state's usual one), the
 * row's event is fed, and the next state and the actions about the worker must be the row's.
 * docs/DESIGN.md must carry the same rows, and every (state, event) pair must have one.
 */
#define TABLE_SOURCE   "supervisor/rollout.c"
#define TABLE_DOC      "docs/DESIGN.md"
#define TABLE_MAX_ROWS 128 /* rows of the worker table */
#define TABLE_COLUMNS  5
#define TABLE_CELL_MAX 48 /* bytes of one cell, with its NUL */
#define TABLE_LINE_MAX 1024

enum { COL_STATE, COL_EVENT, COL_WHEN, COL_NEXT, COL_ACTIONS };
enum table_gen { GEN_STARTING, GEN_SERVING, GEN_DRAINING };

struct table_row {
	char cell[TABLE_COLUMNS][TABLE_CELL_MAX];
	unsigned line;
};

struct table_state {
	const char *name;
	enum rollout_worker_state state;
	enum rollout_worker_then then;
	enum table_gen gen; /* where it is built when the row's "when" names no generation */
};

static const struct table_state table_states[] = {
	{ "FREE", ROLLOUT_W_FREE, ROLLOUT_THEN_NONE, GEN_DRAINING },
	{ "SPAWNING", ROLLOUT_W_SPAWNING, ROLLOUT_THEN_NONE, GEN_STARTING },
	{ "SPAWNING+DRAIN", ROLLOUT_W_SPAWNING, ROLLOUT_THEN_DRAIN, GEN_DRAINING },
	{ "SPAWNING+KILL", ROLLOUT_W_SPAWNING, ROLLOUT_THEN_KILL, GEN_DRAINING },
	{ "STARTING", ROLLOUT_W_STARTING, ROLLOUT_THEN_NONE, GEN_STARTING },
	{ "READY", ROLLOUT_W_READY, ROLLOUT_THEN_NONE, GEN_SERVING },
	{ "DRAINING", ROLLOUT_W_DRAINING, ROLLOUT_THEN_NONE, GEN_DRAINING },
	{ "KILLED", ROLLOUT_W_KILLED, ROLLOUT_THEN_NONE, GEN_DRAINING },
	{ "KILLED+RESPAWN", ROLLOUT_W_KILLED, ROLLOUT_THEN_RESPAWN, GEN_SERVING },
	{ "BACKOFF", ROLLOUT_W_BACKOFF, ROLLOUT_THEN_NONE, GEN_SERVING },
};

struct table_event {
	const char *name;
	enum rollout_event_type type;
	bool force;
};

static const struct table_event table_events[] = {
	{ "START", ROLLOUT_START, false },
	{ "RELOAD", ROLLOUT_RELOAD, false },
	{ "STOP", ROLLOUT_STOP, false },
	{ "STOP force", ROLLOUT_STOP, true },
	{ "SPAWNED", ROLLOUT_WORKER_SPAWNED, false },
	{ "SPAWN_FAILED", ROLLOUT_SPAWN_FAILED, false },
	{ "READY", ROLLOUT_WORKER_READY, false },
	{ "EXITED", ROLLOUT_WORKER_EXITED, false },
	{ "TIMER", ROLLOUT_TIMER, false },
	{ "MAINPID", ROLLOUT_WORKER_MAINPID, false },
};

#define N_STATES (sizeof(table_states) / sizeof(table_states[0]))
#define N_EVENTS (sizeof(table_events) / sizeof(table_events[0]))

/* What a row's "when" asks for. */
struct table_when {
	enum rollout_ready_mode mode;
	bool drain_now; /* --drain-timeout 0 */
	enum table_gen gen;
};

/* The worker a row is about: its record, slot, pid and deadline before the event. */
struct table_target {
	unsigned record;
	unsigned gen, index;
	int pid;
	uint64_t deadline;
	bool stopped;
};

/* Splits "| a | b |" into trimmed cells: their number, -1 for no row, -2 for a cell too long. */
static int table_split(const char *p, char cell[][TABLE_CELL_MAX], int max)
{
	int n = 0;

	if (*p++ != '|')
		return -1;
	for (const char *bar; (bar = strchr(p, '|')); p = bar + 1) {
		size_t len;

		while (*p == ' ')
			p++;
		len = (size_t)(bar - p);
		while (len > 0 && p[len - 1] == ' ')
			len--;
		if (n == max || len >= TABLE_CELL_MAX)
			return -2;
		memcpy(cell[n], p, len);
		cell[n++][len] = '\0';
	}
	return n;
}

/* Reads the rows under "| state | event | when | next | actions |", each line after prefix. */
static size_t table_read(const char *path, const char *prefix, struct table_row *rows)
{
	static const char *const header[TABLE_COLUMNS] = { "state", "event", "when", "next",
							   "actions" };
	char line[TABLE_LINE_MAX];
	unsigned lineno = 0;
	size_t n = 0;
	bool in = false;
	FILE *f = fopen(path, "re");

	ck_assert_msg(f, "open %s: %s (unit tests run from the top of the source tree)", path,
		      strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char cell[TABLE_COLUMNS + 1][TABLE_CELL_MAX];
		int k;

		lineno++;
		if (strncmp(line, prefix, strlen(prefix)) != 0) {
			if (in)
				break;
			continue;
		}
		k = table_split(line + strlen(prefix), cell, TABLE_COLUMNS + 1);
		if (!in) {
			in = k == TABLE_COLUMNS;
			for (int c = 0; in && c < TABLE_COLUMNS; c++)
				in = strcmp(cell[c], header[c]) == 0;
			continue;
		}
		if (k == -1)
			break;
		ck_assert_msg(k == TABLE_COLUMNS, "%s:%u: a row of %d cells of under %d bytes",
			      path, lineno, TABLE_COLUMNS, TABLE_CELL_MAX);
		if (cell[COL_STATE][0] == '-')
			continue; /* |---|---| */
		ck_assert_uint_lt(n, TABLE_MAX_ROWS);
		memcpy(rows[n].cell, cell, sizeof(rows[n].cell));
		rows[n++].line = lineno;
	}
	fclose(f);
	ck_assert_msg(n > 0, "%s: no worker table", path);
	return n;
}

static const struct table_state *table_state_named(const char *name)
{
	for (size_t i = 0; i < N_STATES; i++)
		if (strcmp(table_states[i].name, name) == 0)
			return &table_states[i];
	return NULL;
}

static const char *table_state_of(const struct rollout_worker *w)
{
	for (size_t i = 0; i < N_STATES; i++)
		if (table_states[i].state == w->state && table_states[i].then == w->then)
			return table_states[i].name;
	return "(a state the table does not name)";
}

static const struct table_event *table_event_named(const char *name)
{
	for (size_t i = 0; i < N_EVENTS; i++)
		if (strcmp(table_events[i].name, name) == 0)
			return &table_events[i];
	return NULL;
}

static struct table_when table_when(const struct table_row *row, const struct table_state *st)
{
	struct table_when w = { .mode = ROLLOUT_READY_NOTIFY, .gen = st->gen };
	char buf[TABLE_CELL_MAX], *save = NULL;

	memcpy(buf, row->cell[COL_WHEN], sizeof(buf));
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		while (*t == ' ')
			t++;
		if (strcmp(t, "gen STARTING") == 0)
			w.gen = GEN_STARTING;
		else if (strcmp(t, "gen SERVING") == 0)
			w.gen = GEN_SERVING;
		else if (strcmp(t, "gen DRAINING") == 0)
			w.gen = GEN_DRAINING;
		else if (strcmp(t, "NOTIFY") == 0)
			w.mode = ROLLOUT_READY_NOTIFY;
		else if (strcmp(t, "DELAY") == 0)
			w.mode = ROLLOUT_READY_DELAY;
		else if (strcmp(t, "NONE") == 0)
			w.mode = ROLLOUT_READY_NONE;
		else if (strcmp(t, "drain-timeout 0") == 0)
			w.drain_now = true;
		else
			ck_abort_msg(TABLE_SOURCE ":%u: unknown condition '%s'", row->line, t);
	}
	return w;
}

/* The live record of slot index of generation gen, or -1; there is never more than one here. */
static int h_slot(const struct h *h, unsigned gen, unsigned index)
{
	int found = -1;

	for (unsigned i = 0;; i++) {
		const struct rollout_worker *w = rollout_worker_at(h->r, i);

		if (!w)
			break;
		if (w->state == ROLLOUT_W_FREE || w->gen != gen || w->index != index)
			continue;
		ck_assert_msg(found < 0, "two records for generation %u slot %u", gen, index);
		found = (int)i;
	}
	return found;
}

static const struct rollout_worker *h_slot_worker(const struct h *h, unsigned gen, unsigned index)
{
	int i = h_slot(h, gen, index);

	ck_assert_int_ge(i, 0);
	return rollout_worker_at(h->r, (unsigned)i);
}

/* Generation gen's starting workers get ready the way the ready mode makes them. */
static void h_make_ready(struct h *h, unsigned gen, enum rollout_ready_mode mode)
{
	if (mode == ROLLOUT_READY_NOTIFY)
		h_ready_all(h, gen);
	else if (mode == ROLLOUT_READY_DELAY)
		h_advance(h, 2 * SEC);
}

/* The timer fires at slot 0 of generation 1's deadline. */
static void h_deadline(struct h *h)
{
	uint64_t deadline = h_slot_worker(h, 1, 0)->deadline_usec;

	ck_assert_uint_ne(deadline, 0);
	h->now = deadline > h->now ? deadline : h->now;
	h_simple(h, ROLLOUT_TIMER);
}

/* Slot 0 of generation 1 crashes and, at the end of its backoff, is spawned again. */
static void h_respawn(struct h *h)
{
	h_exit(h, h_slot_worker(h, 1, 0)->pid, 1);
	h_deadline(h);
}

static void h_stop(struct h *h, bool force, struct table_target *t)
{
	h_feed(h, (struct rollout_event){ .type = ROLLOUT_STOP, .force = force });
	t->stopped = true;
}

/*
 * Builds a row's state through events, for slot 0 of generation 1 (the first one) or 2 (a
 * reload's); fills *t. A pair of state and generation it cannot build fails the test.
 */
static struct h *table_build(const struct table_row *row, const struct table_state *st,
			     const struct table_when *w, struct table_target *t)
{
	bool two = st->state == ROLLOUT_W_READY && w->gen == GEN_STARTING;
	struct h *h = h_new_drain(two ? 2 : 1, 0, w->mode, w->drain_now ? 0 : 30 * SEC);
	bool ok = true, notify = w->mode == ROLLOUT_READY_NOTIFY;
	const struct rollout_worker *x;

	*t = (struct table_target){ .gen = 1 };
	if (st->then == ROLLOUT_THEN_DRAIN || st->then == ROLLOUT_THEN_KILL) {
		/* A stop (then one with force) before the first worker's pid is known. */
		h->auto_spawn = false;
		h_simple(h, ROLLOUT_START);
		h_stop(h, false, t);
		if (st->then == ROLLOUT_THEN_KILL)
			h_stop(h, true, t);
		ok = w->gen == GEN_DRAINING;
		goto built;
	}
	h_simple(h, ROLLOUT_START);
	h_make_ready(h, 1, w->mode);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 1);
	switch (st->state) {
	case ROLLOUT_W_FREE: /* drained when a reload serves, then exited */
		h_simple(h, ROLLOUT_RELOAD);
		h_make_ready(h, 2, w->mode);
		x = h_slot_worker(h, 1, 0);
		t->record = (unsigned)h_slot(h, 1, 0);
		t->pid = x->pid;
		h_exit(h, t->pid, 0);
		h->auto_spawn = false;
		return h;
	case ROLLOUT_W_SPAWNING:
	case ROLLOUT_W_STARTING: /* new in a reload, or respawned after a crash */
		h->auto_spawn = st->state == ROLLOUT_W_STARTING;
		if (w->gen == GEN_STARTING) {
			h_simple(h, ROLLOUT_RELOAD);
			t->gen = 2;
		} else {
			ok = w->gen == GEN_SERVING;
			h_respawn(h);
		}
		break;
	case ROLLOUT_W_READY: /* one of two new workers is ready, or the first generation's */
		if (w->gen == GEN_STARTING) {
			ok = notify;
			h_simple(h, ROLLOUT_RELOAD);
			t->gen = 2;
			h_ready(h, h_slot_worker(h, 2, 0)->pid);
		} else {
			ok = w->gen == GEN_SERVING;
		}
		break;
	case ROLLOUT_W_DRAINING: /* replaced by a reload */
		ok = w->gen == GEN_DRAINING;
		h_simple(h, ROLLOUT_RELOAD);
		h_make_ready(h, 2, w->mode);
		break;
	case ROLLOUT_W_KILLED:
		if (st->then == ROLLOUT_THEN_RESPAWN) {
			/* A respawned worker missed its ready timeout; then perhaps a stop. */
			ok = notify && w->gen != GEN_STARTING;
			h_respawn(h);
			h_deadline(h);
			if (w->gen == GEN_DRAINING)
				h_stop(h, false, t);
		} else {
			ok = w->gen == GEN_DRAINING;
			h_stop(h, true, t);
		}
		break;
	case ROLLOUT_W_BACKOFF: /* crashed */
		ok = w->gen == GEN_SERVING;
		h_exit(h, h_slot_worker(h, 1, 0)->pid, 1);
		break;
	}
built:
	ck_assert_msg(ok, TABLE_SOURCE ":%u: the test cannot build %s there", row->line, st->name);
	x = h_slot_worker(h, t->gen, 0);
	ck_assert_str_eq(table_state_of(x), st->name);
	/* The generation is the one the row names. */
	if (rollout_starting_gen(h->r) == t->gen)
		ck_assert_int_eq(w->gen, GEN_STARTING);
	else if (rollout_serving_gen(h->r) == t->gen && !t->stopped)
		ck_assert_int_eq(w->gen, GEN_SERVING);
	else
		ck_assert_int_eq(w->gen, GEN_DRAINING);
	t->record = (unsigned)h_slot(h, t->gen, 0);
	t->pid = x->pid;
	t->deadline = x->deadline_usec;
	h->auto_spawn = false;
	return h;
}

static const char *table_report_name(const struct rollout_action *a)
{
	switch (a->report) {
	case ROLLOUT_WORKER_UP:
		return "WORKER_UP";
	case ROLLOUT_WORKER_BACK:
		return "WORKER_BACK";
	case ROLLOUT_WORKER_EXIT:
		return "WORKER_EXIT";
	case ROLLOUT_WORKER_CRASHED:
		return "WORKER_CRASHED";
	case ROLLOUT_WORKER_KILLED:
		return "WORKER_KILLED";
	case ROLLOUT_SPAWN_ERROR:
		return "SPAWN_ERROR";
	case ROLLOUT_RELOAD_FAILED: /* a stop abandons a reload: not about one worker */
		return a->reason == ROLLOUT_REASON_STOPPED ? NULL : "RELOAD_FAILED";
	case ROLLOUT_START_FAILED:
		return "START_FAILED";
	default: /* about a generation, or the whole machine */
		return NULL;
	}
}

/*
 * The actions of the last step about the target as the table writes them ("DRAIN, KILL"), and
 * "new pid" if its record took the pid a MAINPID named; "-" for none.
 */
static void table_actions(const struct h *h, const struct table_target *t, int pid_after,
			  bool new_pid, char *buf, size_t size)
{
	size_t off = 0;

	for (size_t i = 0; i <= h->n && off < size; i++) {
		const struct rollout_action *a = &h->out[i < h->n ? i : 0];
		bool slot = a->gen == t->gen && a->index == t->index;
		bool pid = a->pid > 0 && (a->pid == t->pid || a->pid == pid_after);
		const char *what = NULL;

		if (i == h->n)
			what = new_pid ? "new pid" : NULL;
		else if (a->type == ROLLOUT_DO_SPAWN && slot)
			what = "SPAWN";
		else if (a->type == ROLLOUT_DO_DRAIN && pid)
			what = "DRAIN";
		else if (a->type == ROLLOUT_DO_KILL && pid)
			what = "KILL";
		else if (a->type == ROLLOUT_DO_REPORT && slot)
			what = table_report_name(a);
		if (what)
			off += (size_t)snprintf(buf + off, size - off, "%s%s", off ? ", " : "",
						what);
	}
	if (off == 0)
		(void)snprintf(buf, size, "-");
}

/* One cell: the row's state, built; the event, fed; the row's next state and actions, seen. */
static void table_check(const struct table_row *row, const struct table_state *st,
			const struct table_event *e)
{
	struct table_when when = table_when(row, st);
	struct table_target t;
	struct h *h = table_build(row, st, &when, &t);
	struct rollout_event ev = {
		.type = e->type,
		.force = e->force,
		.worker = t.record,
		.pid = t.pid,
		.status = 1,
		.error = -EAGAIN,
	};
	char got[256];
	const struct rollout_worker *after;
	int fed = 0, i;

	if (e->type == ROLLOUT_WORKER_SPAWNED)
		ev.pid = fed = h->next_pid++;
	if (e->type == ROLLOUT_WORKER_MAINPID)
		ev.new_pid = fed = h->next_pid++;
	if (e->type == ROLLOUT_TIMER && t.deadline > h->now)
		h->now = t.deadline;
	h_feed(h, ev);

	i = h_slot(h, t.gen, t.index);
	after = i >= 0 ? rollout_worker_at(h->r, (unsigned)i) : NULL;
	ck_assert_msg(strcmp(after ? table_state_of(after) : "FREE", row->cell[COL_NEXT]) == 0,
		      TABLE_SOURCE ":%u: %s on %s (%s) went to %s", row->line, st->name, e->name,
		      row->cell[COL_WHEN], after ? table_state_of(after) : "FREE");
	table_actions(h, &t, after ? after->pid : 0,
		      e->type == ROLLOUT_WORKER_MAINPID && after && after->pid == fed, got,
		      sizeof(got));
	ck_assert_msg(strcmp(got, row->cell[COL_ACTIONS]) == 0,
		      TABLE_SOURCE ":%u: %s on %s (%s) did %s", row->line, st->name, e->name,
		      row->cell[COL_WHEN], got);
	h_free(h);
}

START_TEST(every_cell_of_the_worker_table_holds)
{
	struct table_row *rows = calloc(TABLE_MAX_ROWS, sizeof(*rows));
	struct table_row *doc = calloc(TABLE_MAX_ROWS, sizeof(*doc));
	bool listed[N_STATES][N_EVENTS] = { { false } };
	size_t n, n_doc;

	ck_assert_ptr_nonnull(rows);
	ck_assert_ptr_nonnull(doc);
	n = table_read(TABLE_SOURCE, " * ", rows);
	n_doc = table_read(TABLE_DOC, "", doc);
	/* docs/DESIGN.md carries the same table. */
	for (size_t i = 0; i < n || i < n_doc; i++)
		for (int c = 0; c < TABLE_COLUMNS; c++)
			ck_assert_msg(i < n && i < n_doc &&
					      strcmp(rows[i].cell[c], doc[i].cell[c]) == 0,
				      TABLE_DOC ":%u differs from " TABLE_SOURCE ":%u",
				      i < n_doc ? doc[i].line : 0, i < n ? rows[i].line : 0);
	/* The table names every state and every event the machine has: no other is accepted. */
	ck_assert_str_eq(
		rollout_worker_state_to_string((enum rollout_worker_state)(ROLLOUT_W_BACKOFF + 1)),
		"?");
	for (int type = 0; type < 32; type++) {
		struct h *h = h_new(1, 0, ROLLOUT_READY_NOTIFY);
		struct rollout_event ev = { .type = (enum rollout_event_type)type };
		bool known = false;
		size_t n_out;

		for (size_t k = 0; k < N_EVENTS; k++)
			known |= (int)table_events[k].type == type;
		ck_assert_int_eq(rollout_step(h->r, &ev, h->out, &n_out), known ? 0 : -EINVAL);
		h_free(h);
	}
	/* Each row names a known state and event ("other": the state's unlisted ones), once. */
	for (size_t i = 0; i < n; i++) {
		const struct table_state *st = table_state_named(rows[i].cell[COL_STATE]);
		const struct table_event *e = table_event_named(rows[i].cell[COL_EVENT]);

		ck_assert_msg(st, TABLE_SOURCE ":%u: unknown state", rows[i].line);
		ck_assert_msg(e || strcmp(rows[i].cell[COL_EVENT], "other") == 0,
			      TABLE_SOURCE ":%u: unknown event", rows[i].line);
		for (size_t j = 0; j < i; j++)
			ck_assert_msg(memcmp(rows[i].cell, rows[j].cell, COL_NEXT * TABLE_CELL_MAX),
				      TABLE_SOURCE ":%u: a second row for the same cell",
				      rows[i].line);
		if (e)
			listed[st - table_states][e - table_events] = true;
	}
	for (size_t i = 0; i < n; i++) {
		const struct table_state *st = table_state_named(rows[i].cell[COL_STATE]);
		const struct table_event *e = table_event_named(rows[i].cell[COL_EVENT]);

		if (e) {
			table_check(&rows[i], st, e);
			continue;
		}
		for (size_t k = 0; k < N_EVENTS; k++) {
			if (listed[st - table_states][k])
				continue;
			listed[st - table_states][k] = true;
			table_check(&rows[i], st, &table_events[k]);
		}
	}
	/* Every cell has a row. */
	for (size_t s = 0; s < N_STATES; s++)
		for (size_t k = 0; k < N_EVENTS; k++)
			ck_assert_msg(listed[s][k], TABLE_SOURCE ": no row for %s on %s",
				      table_states[s].name, table_events[k].name);
	free(rows);
	free(doc);
}
END_TEST

/* Drains sent to the serving generation never outnumber the ready workers replacing them. */
static void check_drains(const struct h *h)
{
	unsigned serving_now = rollout_serving_gen(h->r);
	unsigned starting_now = rollout_starting_gen(h->r);
	size_t n_drained = 0, n_ready_new = 0;
	int pids[ROLLOUT_MAX_RECORDS];

	for (size_t i = 0; i < h->n; i++) {
		const struct rollout_worker *w;

		if (h->out[i].type != ROLLOUT_DO_DRAIN && h->out[i].type != ROLLOUT_DO_KILL)
			continue;
		w = rollout_find_pid(h->r, h->out[i].pid);
		ck_assert_ptr_nonnull(w);
		if (w->gen == serving_now && h->out[i].type == ROLLOUT_DO_DRAIN)
			n_drained++;
	}
	if (n_drained == 0)
		return;
	if (starting_now)
		n_ready_new = h_pids(h, starting_now, M(READY), pids);
	ck_assert_uint_le(n_drained, n_ready_new);
}

/*
 * Random event sequences, checked after every step:
 * - once a generation served, some generation serves until the stop;
 * - no worker of the serving generation is told to drain while no newer generation is ready;
 * - every pid that was spawned is eventually reported gone or still tracked (none forgotten);
 * - after a stop and all exits, ROLLOUT_DO_EXIT comes exactly once.
 */
START_TEST(random_event_sequences_keep_the_invariants)
{
	for (unsigned seed = 1; seed <= 300; seed++) {
		unsigned n = 1 + seed % 4;
		struct h *h = h_new(n, seed % 3 == 0 ? 1 : 0, ROLLOUT_READY_NOTIFY);
		bool served = false, stopped = false;
		unsigned exits = 0;

		srand(seed);
		h_simple(h, ROLLOUT_START);
		for (int stepno = 0; stepno < 400 && h->exit_code < 0; stepno++) {
			int pids[ROLLOUT_MAX_RECORDS];
			size_t np = 0;

			for (unsigned i = 0;; i++) {
				const struct rollout_worker *w = rollout_worker_at(h->r, i);

				if (!w)
					break;
				if (w->state == ROLLOUT_W_STARTING || w->state == ROLLOUT_W_READY ||
				    w->state == ROLLOUT_W_DRAINING || w->state == ROLLOUT_W_KILLED)
					pids[np++] = w->pid;
			}
			switch (rand() % 10) {
			case 0:
				h_simple(h, ROLLOUT_RELOAD);
				break;
			case 1:
				if (rand() % 8 == 0) {
					h_simple(h, ROLLOUT_STOP);
					stopped = true;
				}
				break;
			case 2:
			case 3:
				if (np)
					h_exit(h, pids[rand() % np], rand() % 2);
				break;
			case 4:
				h_advance(h, (uint64_t)(rand() % 40) * SEC);
				break;
			default:
				if (np)
					h_ready(h, pids[rand() % np]);
				break;
			}
			if (rollout_serving_gen(h->r))
				served = true;
			/* Once serving, something serves until the stop. */
			if (served && !stopped)
				ck_assert_uint_ne(rollout_serving_gen(h->r), 0);
			/* A serving worker is told to drain only for a ready replacement. */
			if (!stopped && h->exit_code < 0)
				check_drains(h);
			exits += h_count(h, ROLLOUT_DO_EXIT);
		}
		/* Stop and let every process die: the machine must exit exactly once. */
		h_feed(h, (struct rollout_event){ .type = ROLLOUT_STOP, .force = true });
		exits += h_count(h, ROLLOUT_DO_EXIT);
		for (int guard = 0; guard < 10000 && h->exit_code < 0; guard++) {
			int pid = 0;

			for (unsigned i = 0;; i++) {
				const struct rollout_worker *w = rollout_worker_at(h->r, i);

				if (!w)
					break;
				if (w->state == ROLLOUT_W_KILLED ||
				    w->state == ROLLOUT_W_DRAINING ||
				    w->state == ROLLOUT_W_STARTING || w->state == ROLLOUT_W_READY) {
					pid = w->pid;
					break;
				}
			}
			ck_assert_int_ne(pid, 0);
			h_exit(h, pid, 9);
			exits += h_count(h, ROLLOUT_DO_EXIT);
		}
		ck_assert_int_ge(h->exit_code, 0);
		ck_assert_uint_eq(exits, 1);
		h_free(h);
	}
}
END_TEST

START_TEST(adoption_refuses_workers_that_nothing_would_drain_or_end)
{
	struct h *h = h_new(2, 0, ROLLOUT_READY_NOTIFY);
	struct rollout_worker w = { .gen = 3, .index = 0, .pid = 300, .pgid = 300 };

	/*
	 * A generation that no longer serves only drains: a worker of it that starts or serves
	 * would never be told to drain (found by tests/fuzz/fuzz_rollout.c).
	 */
	w.state = ROLLOUT_W_STARTING;
	ck_assert_int_eq(h_adopt(h, &w, false), -EINVAL);
	w.state = ROLLOUT_W_READY;
	ck_assert_int_eq(h_adopt(h, &w, false), -EINVAL);
	ck_assert_ptr_null(rollout_find_pid(h->r, 300));
	/* A drain without a deadline would hold a stop forever if the worker ignores it. */
	w.state = ROLLOUT_W_DRAINING;
	ck_assert_int_eq(h_adopt(h, &w, false), -EINVAL);
	w.deadline_usec = h->now + SEC;
	ck_assert_int_eq(h_adopt(h, &w, false), 0);

	/* The serving generation takes both, a respawned worker may still be starting. */
	w = (struct rollout_worker){ .state = ROLLOUT_W_READY, .gen = 4, .pid = 400, .pgid = 400 };
	ck_assert_int_eq(h_adopt(h, &w, true), 0);
	w = (struct rollout_worker){ .state = ROLLOUT_W_STARTING,
				     .gen = 4,
				     .index = 1,
				     .pid = 401,
				     .pgid = 401,
				     .deadline_usec = h->now + 60 * SEC };
	ck_assert_int_eq(h_adopt(h, &w, true), 0);
	rollout_adopt_done(h->r, 5);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 4);
	ck_assert_uint_eq(rollout_starting_gen(h->r), 0);
	h_ready(h, 401);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_WORKER_BACK));
	/* The adopted drain ends at its deadline. */
	h_advance(h, SEC);
	ck_assert(h_did(h, ROLLOUT_DO_KILL, 300));
	h_free(h);
}
END_TEST

START_TEST(adoption_respawns_the_serving_slots_that_had_no_process)
{
	struct h *h = h_new(3, 0, ROLLOUT_READY_NOTIFY);
	struct rollout_worker w = { .state = ROLLOUT_W_READY, .gen = 4, .index = 1, .pid = 401 };
	int pids[8];

	/*
	 * The state an image hands over has no line for a worker in its crash backoff: slots 0
	 * and 2 had none. The new image respawns them at its first timer (found by
	 * tests/fuzz/fuzz_rollout.c: they were lost until the next reload).
	 */
	w.pgid = w.pid;
	ck_assert_int_eq(h_adopt(h, &w, true), 0);
	rollout_adopt_done(h->r, 5);
	h_simple(h, ROLLOUT_TIMER);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 2);
	ck_assert_uint_eq(h_pids(h, 4, M(STARTING), pids), 2);
	h_ready(h, pids[0]);
	h_ready(h, pids[1]);
	ck_assert_uint_eq(h_pids(h, 4, M(READY), pids), 3);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 4);
	h_free(h);
}
END_TEST

START_TEST(adoption_without_a_serving_worker_serves_again_and_reloads)
{
	struct h *h = h_new(2, 0, ROLLOUT_READY_NOTIFY);
	struct rollout_worker w = {
		.state = ROLLOUT_W_DRAINING,
		.gen = 2,
		.pid = 200,
		.pgid = 200,
	};
	int pids[8];

	/* Every serving worker was in its crash backoff: only a draining one is handed over. */
	w.deadline_usec = h->now + 30 * SEC;
	ck_assert_int_eq(h_adopt(h, &w, false), 0);
	rollout_adopt_done(h->r, 4);
	h_simple(h, ROLLOUT_TIMER);
	ck_assert_uint_eq(h_count(h, ROLLOUT_DO_SPAWN), 2);
	ck_assert_uint_eq(rollout_serving_gen(h->r), 4);
	ck_assert_uint_eq(h_pids(h, 4, M(STARTING), pids), 2);
	h_ready(h, pids[0]);
	h_ready(h, pids[1]);
	/* A reload is no longer held back for ever by the missing serving generation. */
	h_simple(h, ROLLOUT_RELOAD);
	ck_assert_ptr_nonnull(h_report(h, ROLLOUT_GEN_STARTING));
	ck_assert_uint_eq(rollout_starting_gen(h->r), 5);
	h_free(h);
}
END_TEST

Suite *rollout_suite(void)
{
	Suite *s = suite_create("rollout");
	TCase *tc = tcase_create("transitions");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, first_generation_serves_once_every_worker_is_ready);
	tcase_add_test(tc, reload_drains_old_generation_only_after_new_one_is_ready);
	tcase_add_test(tc, new_generation_that_exits_before_ready_leaves_old_one_serving);
	tcase_add_test(tc, new_generation_that_misses_ready_timeout_is_killed);
	tcase_add_test(tc, spawn_failure_of_new_generation_rolls_back);
	tcase_add_test(tc, first_generation_that_never_gets_ready_exits_1);
	tcase_add_test(tc, worker_that_ignores_drain_is_killed_at_the_deadline);
	tcase_add_test(tc, crashed_worker_is_respawned_with_doubling_backoff);
	tcase_add_test(tc, reload_during_reload_is_coalesced_into_one_more);
	tcase_add_test(tc, draining_generations_do_not_hold_a_reload_back);
	tcase_add_test(tc, reloads_beyond_the_generation_limit_wait_for_a_drain_to_finish);
	tcase_add_test(tc, stop_during_reload_drains_every_worker_then_exits_0);
	tcase_add_test(tc, second_stop_kills_at_once);
	tcase_add_test(tc, batch_replaces_k_workers_at_a_time);
	tcase_add_test(tc, batch_failure_restores_the_drained_old_slots);
	tcase_add_test(tc, delay_mode_is_ready_after_the_delay);
	tcase_add_test(tc, none_mode_is_ready_at_spawn);
	tcase_add_test(tc, respawned_worker_that_misses_ready_timeout_is_killed_and_respawned);
	tcase_add_test(tc, events_about_unknown_pids_are_ignored);
	tcase_add_test(tc, mainpid_moves_the_worker_to_its_new_main_process);
	tcase_add_test(tc, describe_gives_one_line_per_report);
	tcase_add_test(tc, every_cell_of_the_worker_table_holds);
	tcase_add_test(tc, adoption_refuses_workers_that_nothing_would_drain_or_end);
	tcase_add_test(tc, adoption_respawns_the_serving_slots_that_had_no_process);
	tcase_add_test(tc, adoption_without_a_serving_worker_serves_again_and_reloads);
	suite_add_tcase(s, tc);

	tc = tcase_create("invariants");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, random_event_sequences_keep_the_invariants);
	suite_add_tcase(s, tc);
	return s;
}
