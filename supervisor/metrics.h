/* SPDX-License-Identifier: MIT */
/* metrics.h - Prometheus metrics: counters batond keeps, the text exposition format, /metrics. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define METRICS_MAX_CLIENTS	     8	  /* scrapers at once; more wait in the backlog */
#define METRICS_BACKLOG		     16	  /* connections queued on the metrics socket */
#define METRICS_REQUEST_MAX	     8192 /* bytes of one HTTP request head */
#define METRICS_REQUEST_TIMEOUT_USEC (10 * 1000 * 1000) /* a client gets 10 s to ask */
#define METRICS_RELOAD_BUCKETS	     13 /* reload duration histogram buckets, +Inf aside */

/* How a reload ended, the label of baton_reloads_total and baton_reload_duration_seconds. */
enum metrics_outcome {
	METRICS_RELOAD_OK,	    /* the new generation serves */
	METRICS_RELOAD_ROLLED_BACK, /* it failed; the old one kept serving */
	METRICS_RELOAD_ABANDONED,   /* a stop came first */
	METRICS_RELOAD__MAX,
};

/* What batond counts from its events (metrics_count()). */
struct metrics_counters {
	uint64_t reloads[METRICS_RELOAD__MAX];
	uint64_t reload_buckets[METRICS_RELOAD__MAX][METRICS_RELOAD_BUCKETS]; /* not cumulative */
	uint64_t reload_usec_sum[METRICS_RELOAD__MAX];
	unsigned reload_gen;	      /* the reload's generation being started, or 0 */
	uint64_t reload_started_usec; /* ... and when */
	uint64_t worker_restarts;     /* exited unasked, respawned */
	uint64_t spawn_failures;
	uint64_t killed_ready_timeout, killed_drain_timeout;
	uint64_t upgrades;
};

/* batond's own process, from /proc/self (the standard process_ metrics). */
struct metrics_process {
	double cpu_seconds, start_time_seconds;
	uint64_t resident_bytes, virtual_bytes;
	long open_fds, max_fds; /* -1: unknown */
};

/* What the text shows besides the view and the counters. */
struct metrics_extra {
	const char *stop_stage; /* running, refusing, draining or killing */
	uint64_t events, events_dropped;
};

/* The upper bounds of the reload duration buckets, in seconds. */
extern const double metrics_reload_bounds[METRICS_RELOAD_BUCKETS];

struct eventlog_event;

/* Counts ev into m (now_usec: CLOCK_MONOTONIC). */
void metrics_count(struct metrics_counters *m, const struct eventlog_event *ev, uint64_t now_usec);

/* Reads /proc/self into *ret; what cannot be read stays 0 (or -1 for the fds). */
void metrics_read_process(struct metrics_process *ret);

/*
 * The text exposition format (version 0.0.4) of everything: a malloc()ed, NUL-terminated text,
 * or NULL on ENOMEM.
 */
char *metrics_format(const struct status_view *v, const struct metrics_counters *m,
		     const struct metrics_process *p, const struct metrics_extra *x);

/*
 * Looks at one HTTP request head (up to the empty line): 200 for GET or HEAD of /metrics (with
 * or without a query), 404 for another path, 405 for another method, 400 if it is not HTTP.
 * *ret_head says whether the body is left out.
 */
int metrics_route(const char *head, bool *ret_head);
