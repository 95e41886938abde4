/* SPDX-License-Identifier: MIT */
/* eventlog.h - what batond reports, as numbered events: a bounded ring of JSON lines. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EVENTLOG_RING	   512	       /* events kept for "batonctl events --since" */
#define EVENTLOG_LINE_MAX  1024	       /* bytes of one JSON line with its newline; cut to fit */
#define EVENTLOG_CHUNK_MAX (16 * 1024) /* bytes handed to one stream client at a time */

/* Every event batond reports; the names and fields are the stable schema of batonctl(8). */
enum eventlog_type {
	EVENT_GENERATION_STARTING,
	EVENT_GENERATION_READY,
	EVENT_GENERATION_DRAINING,
	EVENT_GENERATION_DRAINED,
	EVENT_RELOAD_ROLLED_BACK,
	EVENT_RELOAD_QUEUED,
	EVENT_RELOAD_IGNORED,
	EVENT_START_FAILED,
	EVENT_WORKER_SPAWNED,
	EVENT_WORKER_READY,
	EVENT_WORKER_EXITED,
	EVENT_WORKER_CRASHED,
	EVENT_WORKER_KILLED,
	EVENT_WORKER_SPAWN_FAILED,
	EVENT_STOP_REFUSING,
	EVENT_STOP_QUEUES_DONE,
	EVENT_STOP_DRAINING,
	EVENT_EXIT,
	EVENT_LISTENER_ADDED,
	EVENT_LISTENER_RETIRING,
	EVENT_LISTENER_RETIRED,
	EVENT_UPGRADE_STARTED,
	EVENT_UPGRADE_REFUSED,
	EVENT_UPGRADED,
	EVENT__MAX,
};

/*
 * One event. Which members an event's JSON line carries depends on its type (the table in
 * eventlog.c and batonctl(8)); the others are ignored. Strings are copied when it is recorded.
 */
struct eventlog_event {
	enum eventlog_type type;
	int level; /* syslog priority of its log line */
	unsigned generation;
	unsigned worker; /* the worker's index in its generation */
	int pid;
	unsigned count;	       /* workers of a generation, listeners refused */
	bool reload;	       /* a generation started by a reload, not the first start */
	bool respawned;	       /* worker_ready: a respawned worker */
	bool force;	       /* stop_draining: the workers are killed */
	bool timed_out;	       /* stop_queues_done, listener_retired: at the --stop-timeout */
	const char *reason;    /* a word: exited, spawn_failed, ready_timeout, ... */
	bool has_end;	       /* exit_status or signal below are known */
	bool signaled;	       /* killed by signal .status, else exited with .status */
	int status;	       /* exit status or signal number */
	int error;	       /* a negative errno, 0: none */
	uint64_t usec;	       /* duration_usec: how long it took */
	uint64_t backoff_usec; /* respawn delay */
	unsigned queued, half_open;
	int exit_code;
	const char *listener, *address;
	const char *message; /* the log line, for people */
};

struct eventlog;

/* Allocates an empty ring whose first event will be number first_seq (1, or after an upgrade,
 * the next one the previous image would have used). NULL on ENOMEM. */
struct eventlog *eventlog_new(uint64_t first_seq);
struct eventlog *eventlog_free(struct eventlog *l);

/* The event's name in the schema ("generation_ready"), or "?". */
const char *eventlog_type_name(enum eventlog_type type);

/* True if the type's events name one worker (its index is meaningful). */
bool eventlog_type_has_worker(enum eventlog_type type);

/*
 * Records ev as the next event (its seq is returned) with the two clocks given (CLOCK_MONOTONIC
 * and CLOCK_REALTIME, microseconds); the oldest event is forgotten once EVENTLOG_RING are kept.
 */
uint64_t eventlog_record(struct eventlog *l, const struct eventlog_event *ev,
			 uint64_t monotonic_usec, uint64_t realtime_usec);

/* The number the next event will get, and the oldest one still kept (== next when empty). */
uint64_t eventlog_next_seq(const struct eventlog *l);
uint64_t eventlog_oldest_seq(const struct eventlog *l);

/*
 * Copies the JSON lines of events *cursor, *cursor + 1, ... into buf (at most size bytes, whole
 * lines only) and moves *cursor past them. A cursor older than the ring first gets a "dropped"
 * line with the count of events it missed (added to *ret_dropped) and moves to the oldest kept.
 * Returns the bytes written (0: nothing new).
 */
size_t eventlog_read(const struct eventlog *l, uint64_t *cursor, char *buf, size_t size,
		     uint64_t *ret_dropped);
