/* SPDX-License-Identifier: MIT */
/* rollout_describe.c - the rollout machine's reports as log lines: presentation, no decisions. */
#include "rollout.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

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
