/* SPDX-License-Identifier: MIT */
/* test_rollout.c - the generation state machine, transition by transition, and its invariants. */
#include "unit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rollout.h"

#define SEC UINT64_C(1000000)
#define MS  UINT64_C(1000)

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
};

static struct h *h_new(unsigned n_workers, unsigned batch, enum rollout_ready_mode mode)
{
	struct rollout_config cfg = {
		.n_workers = n_workers,
		.batch = batch,
		.ready_mode = mode,
		.ready_delay_usec = 2 * SEC,
		.ready_timeout_usec = 60 * SEC,
		.drain_timeout_usec = 30 * SEC,
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

static void h_feed_one(struct h *h, struct rollout_event ev)
{
	struct rollout_action *a = calloc(ROLLOUT_MAX_ACTIONS, sizeof(*a));
	size_t n = 0;

	ck_assert_ptr_nonnull(a);
	ev.now_usec = h->now;
	ck_assert_int_eq(rollout_step(h->r, &ev, a, &n), 0);
	ck_assert_uint_le(n, ROLLOUT_MAX_ACTIONS);
	h_take(h, a, n);
	free(a);
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
	ck_assert_int_eq(rollout_adopt(h->r, &w, false), -EINVAL);
	w.state = ROLLOUT_W_READY;
	ck_assert_int_eq(rollout_adopt(h->r, &w, false), -EINVAL);
	ck_assert_ptr_null(rollout_find_pid(h->r, 300));
	/* A drain without a deadline would hold a stop forever if the worker ignores it. */
	w.state = ROLLOUT_W_DRAINING;
	ck_assert_int_eq(rollout_adopt(h->r, &w, false), -EINVAL);
	w.deadline_usec = h->now + SEC;
	ck_assert_int_eq(rollout_adopt(h->r, &w, false), 0);

	/* The serving generation takes both, a respawned worker may still be starting. */
	w = (struct rollout_worker){ .state = ROLLOUT_W_READY, .gen = 4, .pid = 400, .pgid = 400 };
	ck_assert_int_eq(rollout_adopt(h->r, &w, true), 0);
	w = (struct rollout_worker){ .state = ROLLOUT_W_STARTING,
				     .gen = 4,
				     .index = 1,
				     .pid = 401,
				     .pgid = 401,
				     .deadline_usec = h->now + 60 * SEC };
	ck_assert_int_eq(rollout_adopt(h->r, &w, true), 0);
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
	ck_assert_int_eq(rollout_adopt(h->r, &w, true), 0);
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
	ck_assert_int_eq(rollout_adopt(h->r, &w, false), 0);
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
