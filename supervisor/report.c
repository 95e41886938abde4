/* SPDX-License-Identifier: MIT */
/* report.c - one event told everywhere: its log line (journal fields), the ring, the metrics. */
#include "batond.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "control.h"
#include "eventlog.h"
#include "log.h"
#include "loop.h"

static uint64_t realtime_usec(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void batond_event(struct batond *b, const struct eventlog_event *ev)
{
	struct log_fields f = {
		.event = eventlog_type_name(ev->type),
		.generation = ev->generation,
		.worker = eventlog_type_has_worker(ev->type) ? (int)ev->worker : -1,
		.worker_pid = ev->pid,
		.listener = ev->listener,
	};

	log_struct(ev->level, &f, "%s", ev->message ? ev->message : "");
	metrics_on_event(b, ev);
	if (!b->events)
		return;
	(void)eventlog_record(b->events, ev, loop_now_usec(), realtime_usec());
	control_stream_kick(b->control);
}

static const char *reason_word(enum rollout_reason r)
{
	switch (r) {
	case ROLLOUT_REASON_EXITED:
		return "exited";
	case ROLLOUT_REASON_SPAWN_FAILED:
		return "spawn_failed";
	case ROLLOUT_REASON_READY_TIMEOUT:
		return "ready_timeout";
	case ROLLOUT_REASON_STOPPED:
		return "stopped";
	case ROLLOUT_REASON_NONE:
		break;
	}
	return "none";
}

void batond_report_rollout(struct batond *b, const struct rollout_action *a, int level,
			   const char *line)
{
	struct eventlog_event ev = {
		.level = level,
		.generation = a->gen,
		.worker = a->index,
		.pid = a->pid,
		.count = a->count,
		.reload = a->reload,
		.force = a->force,
		.signaled = a->signaled,
		.status = a->status,
		.error = a->error,
		.usec = a->usec,
		.message = line,
	};

	switch (a->report) {
	case ROLLOUT_GEN_STARTING:
		ev.type = EVENT_GENERATION_STARTING;
		break;
	case ROLLOUT_GEN_READY:
		ev.type = EVENT_GENERATION_READY;
		break;
	case ROLLOUT_GEN_DRAINING:
		ev.type = EVENT_GENERATION_DRAINING;
		break;
	case ROLLOUT_GEN_GONE:
		ev.type = EVENT_GENERATION_DRAINED;
		break;
	case ROLLOUT_RELOAD_FAILED:
	case ROLLOUT_START_FAILED:
		ev.type = a->report == ROLLOUT_START_FAILED ? EVENT_START_FAILED
							    : EVENT_RELOAD_ROLLED_BACK;
		ev.reason = reason_word(a->reason);
		ev.has_end = a->reason == ROLLOUT_REASON_EXITED;
		ev.usec = 0;
		break;
	case ROLLOUT_RELOAD_PENDING:
		ev.type = EVENT_RELOAD_QUEUED;
		break;
	case ROLLOUT_RELOAD_IGNORED:
		ev.type = EVENT_RELOAD_IGNORED;
		break;
	case ROLLOUT_WORKER_BACK:
	case ROLLOUT_WORKER_UP:
		ev.type = EVENT_WORKER_READY;
		ev.respawned = a->report == ROLLOUT_WORKER_BACK;
		break;
	case ROLLOUT_WORKER_EXIT:
		ev.type = EVENT_WORKER_EXITED;
		ev.has_end = true;
		break;
	case ROLLOUT_WORKER_CRASHED:
		ev.type = EVENT_WORKER_CRASHED;
		ev.has_end = true;
		ev.backoff_usec = a->usec;
		break;
	case ROLLOUT_WORKER_KILLED:
		ev.type = EVENT_WORKER_KILLED;
		ev.reason = a->reason == ROLLOUT_REASON_READY_TIMEOUT ? "ready_timeout"
								      : "drain_timeout";
		break;
	case ROLLOUT_SPAWN_ERROR:
		ev.type = EVENT_WORKER_SPAWN_FAILED;
		ev.backoff_usec = a->usec;
		break;
	case ROLLOUT_STOPPING:
		ev.type = EVENT_STOP_DRAINING;
		break;
	}
	batond_event(b, &ev);
}

/* batonctl events: the ring from the client's cursor (its data slot) on, a chunk at a time. */
static void fill_events(void *userdata, struct control_client *cl)
{
	struct batond *b = userdata;
	char buf[EVENTLOG_CHUNK_MAX];
	uint64_t cursor = (uint64_t)control_client_get_data(cl);
	size_t n;

	n = eventlog_read(b->events, &cursor, buf, EVENTLOG_CHUNK_MAX, &b->events_dropped);
	if (n > 0 && control_stream_write(cl, buf, n) == 0)
		control_client_set_data(cl, (long)cursor);
}

void batond_events_stream(struct batond *b, struct control_client *cl, bool replay, uint64_t since)
{
	_cleanup_free_ char *id = status_identity(b, true);
	_cleanup_free_ char *first = NULL;
	uint64_t next = eventlog_next_seq(b->events);

	if (!id || asprintf(&first,
			    "ok\n{\"event\":\"connected\",\"batond\":%s,\"oldest_seq\":%" PRIu64
			    ",\"next_seq\":%" PRIu64 "}\n",
			    id, eventlog_oldest_seq(b->events), next) < 0) {
		first = NULL;
		control_reply(cl, "error out of memory\n");
		return;
	}
	/*
	 * Numbers start at 1. A since ahead of the newest (another batond's numbers) is taken as
	 * "from now on"; the connected line says where this batond is.
	 */
	if (!replay || since > next)
		since = next;
	control_client_set_data(cl, (long)(since ? since : 1));
	control_stream_start(cl, first, fill_events, b);
}
