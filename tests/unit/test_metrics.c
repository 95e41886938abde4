/* SPDX-License-Identifier: MIT */
/* test_metrics.c - what batond counts from its events, the exposition text, the HTTP routing. */
#include "unit.h"

#include <stdlib.h>
#include <string.h>

#include "eventlog.h"
#include "metrics.h"

START_TEST(reloads_are_counted_by_outcome_with_their_duration)
{
	struct metrics_counters m = { 0 };
	struct eventlog_event start = { .type = EVENT_GENERATION_STARTING,
					.generation = 2,
					.reload = true };
	struct eventlog_event ready = {
		.type = EVENT_GENERATION_READY, .generation = 2, .reload = true, .usec = 30000
	};
	struct eventlog_event first = { .type = EVENT_GENERATION_READY, .generation = 1 };
	struct eventlog_event failed = { .type = EVENT_RELOAD_ROLLED_BACK,
					 .generation = 3,
					 .reason = "exited" };
	struct eventlog_event stopped = { .type = EVENT_RELOAD_ROLLED_BACK,
					  .generation = 4,
					  .reason = "stopped" };

	metrics_count(&m, &first, 100); /* the first start is no reload */
	metrics_count(&m, &start, 1000);
	metrics_count(&m, &ready, 31000);
	start.generation = 3;
	metrics_count(&m, &start, 2000000);
	metrics_count(&m, &failed, 62000000); /* 60 s: a ready timeout */
	start.generation = 4;
	metrics_count(&m, &start, 70000000);
	metrics_count(&m, &stopped, 70500000);
	ck_assert_uint_eq(m.reloads[METRICS_RELOAD_OK], 1);
	ck_assert_uint_eq(m.reloads[METRICS_RELOAD_ROLLED_BACK], 1);
	ck_assert_uint_eq(m.reloads[METRICS_RELOAD_ABANDONED], 1);
	ck_assert_uint_eq(m.reload_usec_sum[METRICS_RELOAD_OK], 30000);
	ck_assert_uint_eq(m.reload_usec_sum[METRICS_RELOAD_ROLLED_BACK], 60000000);
	ck_assert_uint_eq(m.reload_usec_sum[METRICS_RELOAD_ABANDONED], 500000);
	/* 30 ms lands in the 0.05 s bucket, 60 s in the 60 s one (le is inclusive). */
	ck_assert_uint_eq(m.reload_buckets[METRICS_RELOAD_OK][2], 1);
	ck_assert_uint_eq(m.reload_buckets[METRICS_RELOAD_ROLLED_BACK][11], 1);

	metrics_count(&m, &(struct eventlog_event){ .type = EVENT_WORKER_CRASHED }, 1);
	metrics_count(
		&m,
		&(struct eventlog_event){ .type = EVENT_WORKER_KILLED, .reason = "ready_timeout" },
		1);
	metrics_count(
		&m,
		&(struct eventlog_event){ .type = EVENT_WORKER_KILLED, .reason = "drain_timeout" },
		1);
	ck_assert_uint_eq(m.worker_restarts, 1);
	ck_assert_uint_eq(m.killed_ready_timeout, 1);
	ck_assert_uint_eq(m.killed_drain_timeout, 1);
}
END_TEST

/* A histogram's samples are NAME_bucket, NAME_sum, NAME_count; its TYPE line names NAME. */
static void strip_histogram_suffix(char *name)
{
	static const char *const suffixes[] = { "_bucket", "_sum", "_count" };

	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		size_t n = strlen(name), k = strlen(suffixes[i]);

		if (n > k && strcmp(name + n - k, suffixes[i]) == 0 &&
		    strncmp(name, "baton_reload_duration_seconds", n - k) == 0) {
			name[n - k] = '\0';
			return;
		}
	}
}

START_TEST(the_text_has_help_type_cumulative_buckets_and_escaped_labels)
{
	struct status_view *v = calloc(1, sizeof(*v));
	struct metrics_counters m = { 0 };
	struct metrics_process p = { .cpu_seconds = 1.5, .open_fds = 9, .max_fds = -1 };
	struct metrics_extra x = { .stop_stage = "draining", .events = 12 };
	char *t;

	ck_assert_ptr_nonnull(v);
	v->serving_gen = 7;
	v->n_workers = 2;
	v->workers[0] = (struct status_worker){ .state = "ready" };
	v->workers[1] = (struct status_worker){ .state = "draining" };
	v->n_listeners = 2;
	v->listeners[0] =
		(struct status_listener){ "we\"b\\", "tcp://127.0.0.1:80", "tcp", 3, 128, false,
					  NULL };
	v->listeners[1] =
		(struct status_listener){ "dns", "udp://127.0.0.1:53", "udp", -1, -1, false, NULL };
	m.reloads[METRICS_RELOAD_OK] = 3;
	m.reload_buckets[METRICS_RELOAD_OK][0] = 1;
	m.reload_buckets[METRICS_RELOAD_OK][3] = 1; /* and one past the last bound */
	t = metrics_format(v, &m, &p, &x);
	ck_assert_ptr_nonnull(t);
	ck_assert_ptr_nonnull(strstr(t, "# TYPE baton_reloads_total counter\n"
					"baton_reloads_total{outcome=\"ok\"} 3\n"));
	ck_assert_ptr_nonnull(
		strstr(t, "baton_reload_duration_seconds_bucket{outcome=\"ok\",le=\"0.01\"} 1\n"));
	ck_assert_ptr_nonnull(
		strstr(t, "baton_reload_duration_seconds_bucket{outcome=\"ok\",le=\"0.1\"} 2\n"));
	ck_assert_ptr_nonnull(
		strstr(t, "baton_reload_duration_seconds_bucket{outcome=\"ok\",le=\"120\"} 2\n"));
	ck_assert_ptr_nonnull(
		strstr(t, "baton_reload_duration_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(t, "baton_serving_generation 7\n"));
	ck_assert_ptr_nonnull(strstr(t, "baton_workers{state=\"ready\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "baton_workers{state=\"draining\"} 1\n"));
	ck_assert_ptr_nonnull(
		strstr(t, "baton_listener_accept_queue{listener=\"we\\\"b\\\\\"} 3\n"));
	ck_assert_ptr_nonnull(
		strstr(t, "baton_listener_accept_backlog{listener=\"we\\\"b\\\\\"} 128"));
	/* UDP has no accept queue: no sample rather than a made-up one. */
	ck_assert_ptr_null(strstr(t, "baton_listener_accept_queue{listener=\"dns\"}"));
	ck_assert_ptr_nonnull(strstr(t, "baton_stop_stage{stage=\"draining\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "baton_stop_stage{stage=\"running\"} 0\n"));
	ck_assert_ptr_nonnull(strstr(t, "baton_events_total 12\n"));
	ck_assert_ptr_nonnull(strstr(t, "process_open_fds 9\n"));
	ck_assert_ptr_null(strstr(t, "process_max_fds"));
	/* Every sample's metric has its HELP and TYPE before it. */
	for (char *line = t; *line;) {
		size_t n = strcspn(line, "\n");

		if (*line != '#') {
			char name[128], want[160];
			size_t k = strcspn(line, "{ ");

			ck_assert_uint_lt(k, sizeof(name));
			memcpy(name, line, k);
			name[k] = '\0';
			strip_histogram_suffix(name);
			(void)snprintf(want, sizeof(want), "# TYPE %s ", name);
			ck_assert_msg(strstr(t, want) && strstr(t, want) < line, "no TYPE for %s",
				      name);
		}
		line += n + (line[n] ? 1 : 0);
	}
	free(t);
	free(v);
}
END_TEST

START_TEST(only_get_and_head_of_metrics_are_served)
{
	bool head = true;

	ck_assert_int_eq(metrics_route("GET /metrics HTTP/1.1", &head), 200);
	ck_assert(!head);
	ck_assert_int_eq(metrics_route("HEAD /metrics HTTP/1.0", &head), 200);
	ck_assert(head);
	ck_assert_int_eq(metrics_route("GET /metrics?x=1 HTTP/1.1", &head), 200);
	ck_assert_int_eq(metrics_route("GET / HTTP/1.1", &head), 404);
	ck_assert_int_eq(metrics_route("GET /metricsx HTTP/1.1", &head), 404);
	ck_assert_int_eq(metrics_route("POST /metrics HTTP/1.1", &head), 405);
	ck_assert_int_eq(metrics_route("GET /metrics", &head), 400);
	ck_assert_int_eq(metrics_route("", &head), 400);
	ck_assert_int_eq(metrics_route("GET /metrics SPDY/3", &head), 400);
}
END_TEST

Suite *metrics_suite(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, reloads_are_counted_by_outcome_with_their_duration);
	tcase_add_test(tc, the_text_has_help_type_cumulative_buckets_and_escaped_labels);
	tcase_add_test(tc, only_get_and_head_of_metrics_are_served);
	suite_add_tcase(s, tc);
	return s;
}
