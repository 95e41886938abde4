/* SPDX-License-Identifier: MIT */
/* rollout.h - the generation state machine: events in, actions out, no I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ROLLOUT_MAX_WORKERS	256 /* workers per generation (-n) */
#define ROLLOUT_MAX_GENERATIONS 8   /* alive at once: serving, starting and draining ones */
#define ROLLOUT_MAX_RECORDS	(ROLLOUT_MAX_WORKERS * ROLLOUT_MAX_GENERATIONS) /* live workers */
/* One step can kill or drain every live worker and report each; the rest is a few reports. */
#define ROLLOUT_MAX_ACTIONS (2 * ROLLOUT_MAX_RECORDS + 32)

#define ROLLOUT_BACKOFF_MIN_USEC   UINT64_C(100000)   /* first respawn delay: 100 ms */
#define ROLLOUT_BACKOFF_MAX_USEC   UINT64_C(30000000) /* respawn delay cap: 30 s */
#define ROLLOUT_BACKOFF_RESET_USEC UINT64_C(60000000) /* uptime that resets the delay: 1 min */

enum rollout_ready_mode {
	ROLLOUT_READY_NOTIFY, /* READY=1 from the worker */
	ROLLOUT_READY_DELAY,  /* ready a fixed time after it was spawned */
	ROLLOUT_READY_NONE,   /* ready as soon as it was spawned */
};

struct rollout_config {
	unsigned n_workers; /* 1..ROLLOUT_MAX_WORKERS */
	unsigned batch;	    /* workers replaced at a time; 0 or >= n_workers: all at once */
	enum rollout_ready_mode ready_mode;
	uint64_t ready_delay_usec;   /* ROLLOUT_READY_DELAY only */
	uint64_t ready_timeout_usec; /* spawn to ready, per worker; 0 = none */
	uint64_t drain_timeout_usec; /* drain request to SIGKILL, per worker; 0 = kill at once */
};

enum rollout_event_type {
	ROLLOUT_START,		/* spawn the first generation */
	ROLLOUT_RELOAD,		/* SIGHUP or batonctl reload */
	ROLLOUT_STOP,		/* SIGTERM/SIGINT; .force kills instead of draining */
	ROLLOUT_WORKER_SPAWNED, /* answer to ROLLOUT_DO_SPAWN: .worker, .pid */
	ROLLOUT_SPAWN_FAILED,	/* answer to ROLLOUT_DO_SPAWN: .worker, .error */
	ROLLOUT_WORKER_READY,	/* .pid said READY=1 */
	ROLLOUT_WORKER_EXITED,	/* .pid was reaped: .signaled, .status */
	ROLLOUT_TIMER,		/* the timer armed by ROLLOUT_DO_ARM_TIMER fired */
	ROLLOUT_WORKER_MAINPID, /* worker .pid says its main process is now .new_pid */
};

struct rollout_event {
	enum rollout_event_type type;
	uint64_t now_usec; /* CLOCK_MONOTONIC; the machine has no clock of its own */
	unsigned worker;   /* worker record id from ROLLOUT_DO_SPAWN */
	int pid;
	int error;     /* negative errno */
	bool signaled; /* killed by signal .status, else exited with status .status */
	int status;
	int new_pid; /* ROLLOUT_WORKER_MAINPID only */
	bool force;  /* ROLLOUT_STOP only: kill instead of draining */
};

enum rollout_action_type {
	ROLLOUT_DO_SPAWN,     /* fork/exec worker .index of generation .gen; answer with an event */
	ROLLOUT_DO_DRAIN,     /* send the drain signal to .pid */
	ROLLOUT_DO_KILL,      /* SIGKILL process group .pgid (and .pid, should it have left it) */
	ROLLOUT_DO_ARM_TIMER, /* fire ROLLOUT_TIMER at .usec (CLOCK_MONOTONIC); 0 disarms */
	ROLLOUT_DO_REPORT,    /* tell the user: .report says what */
	ROLLOUT_DO_EXIT,      /* every worker is gone: exit with .exit_code */
};

enum rollout_report {
	ROLLOUT_GEN_STARTING,	/* .gen spawning (.count workers, .reload) */
	ROLLOUT_GEN_READY,	/* .gen serving; .usec since it started; .reload */
	ROLLOUT_GEN_DRAINING,	/* .gen told to drain (.count workers) */
	ROLLOUT_GEN_GONE,	/* last worker of .gen exited */
	ROLLOUT_RELOAD_FAILED,	/* .gen rolled back: .reason with .index/.pid/.status/.error */
	ROLLOUT_RELOAD_PENDING, /* reload asked for during one: will run after it */
	ROLLOUT_RELOAD_IGNORED, /* reload asked for while stopping */
	ROLLOUT_START_FAILED,	/* the first generation never got ready: .reason etc.; exit 1 */
	ROLLOUT_WORKER_BACK,	/* a respawned worker .gen/.index/.pid is ready (.usec) */
	ROLLOUT_WORKER_EXIT,	/* .gen/.index/.pid exited (.signaled/.status) as asked */
	ROLLOUT_WORKER_CRASHED, /* .gen/.index/.pid exited unasked; respawn in .usec */
	ROLLOUT_WORKER_KILLED,	/* .gen/.index/.pid missed its drain (or ready) deadline */
	ROLLOUT_SPAWN_ERROR,	/* spawning .gen/.index failed with .error; respawn in .usec */
	ROLLOUT_STOPPING,	/* stop begun: .count workers to drain */
	ROLLOUT_WORKER_UP,	/* .gen/.index/.pid of a starting generation is ready, .usec after
				   it was spawned */
};

enum rollout_reason {
	ROLLOUT_REASON_NONE,
	ROLLOUT_REASON_EXITED,	      /* a worker exited before ready */
	ROLLOUT_REASON_SPAWN_FAILED,  /* fork/exec failed */
	ROLLOUT_REASON_READY_TIMEOUT, /* a worker was not ready within --ready-timeout */
	ROLLOUT_REASON_STOPPED,	      /* a stop abandoned the reload */
};

struct rollout_action {
	enum rollout_action_type type;
	enum rollout_report report;
	enum rollout_reason reason;
	unsigned worker; /* record id, echoed back in ROLLOUT_WORKER_SPAWNED/SPAWN_FAILED */
	unsigned gen;
	unsigned index;
	int pid;
	int pgid;
	uint64_t usec;
	unsigned count;
	bool reload; /* GEN_STARTING, GEN_READY: started by a reload, not the first start */
	bool force;  /* STOPPING: the workers are killed, not drained */
	bool signaled;
	int status, error;
	int exit_code;
};

/* Read-only view of one worker, for status and logging; rollout.c's table says how it moves. */
enum rollout_worker_state {
	ROLLOUT_W_FREE,
	ROLLOUT_W_SPAWNING, /* ROLLOUT_DO_SPAWN emitted, no pid yet */
	ROLLOUT_W_STARTING, /* running, not ready */
	ROLLOUT_W_READY,    /* serving */
	ROLLOUT_W_DRAINING, /* drain signal sent, deadline armed */
	ROLLOUT_W_KILLED,   /* SIGKILL sent, waiting to reap */
	ROLLOUT_W_BACKOFF,  /* no process: waiting to respawn */
};

/*
 * An order that waits for the end of the record's state. It is a field beside the state, not
 * states of its own, because the state is what status, actions.c, upgrade.c and the upgrade
 * text read, and to each of them a worker that is to be drained once spawned is still spawning,
 * and a killed one is killed whatever follows. One field of exclusive values replaces three
 * flags (respawn, drain_on_spawn, kill_on_spawn), of which drain and kill together meant kill.
 */
enum rollout_worker_then {
	ROLLOUT_THEN_NONE,    /* the state ends the usual way */
	ROLLOUT_THEN_DRAIN,   /* SPAWNING: drain the process as soon as its pid is known */
	ROLLOUT_THEN_KILL,    /* SPAWNING: kill it as soon as its pid is known */
	ROLLOUT_THEN_RESPAWN, /* KILLED (missed its ready timeout): respawn the slot after the exit */
};

struct rollout_worker {
	enum rollout_worker_state state;
	enum rollout_worker_then then;
	unsigned gen, index;
	int pid;  /* main process: the spawned one, or what it named with MAINPID= */
	int pgid; /* the spawned pid, which leads the worker's process group */
	uint64_t spawned_usec, ready_usec;
	uint64_t deadline_usec; /* ready timeout, ready delay, drain deadline or respawn time */
};

struct rollout;

/* Validates cfg and allocates the machine. Returns 0 and *ret, or -EINVAL / -ENOMEM. */
int rollout_new(const struct rollout_config *cfg, struct rollout **ret);
struct rollout *rollout_free(struct rollout *r);

/*
 * Feeds one event and writes the resulting actions, in the order they must be carried out, to
 * out[0..*ret_n). Returns 0, or -EINVAL for an event that makes no sense (unknown type); events
 * about unknown pids or stale worker ids are ignored, since they can race with reaping.
 */
int rollout_step(struct rollout *r, const struct rollout_event *ev,
		 struct rollout_action out[static ROLLOUT_MAX_ACTIONS], size_t *ret_n);

/*
 * Upgrade: recreates, before any event, a worker that a previous batond image ran. Its
 * generation w->gen is created on first use: serving if serving is true (at most one such
 * generation), else draining. w->state must be STARTING, READY, DRAINING or KILLED (STARTING
 * and READY only in the serving generation), with pid, pgid and deadline_usec (absolute,
 * CLOCK_MONOTONIC, which survives exec; never 0 for DRAINING); w->then is not taken (the
 * upgrade text does not carry it). Returns 0, -EINVAL or -E2BIG (no room).
 */
int rollout_adopt(struct rollout *r, const struct rollout_worker *w, bool serving);

/*
 * Ends adoption: the machine counts as started, next generation number next_gen. Every slot of
 * the serving generation without a worker (one in its crash backoff has no process to hand
 * over) is respawned at the first ROLLOUT_TIMER; without any serving worker, a serving
 * generation numbered next_gen is made for them.
 */
void rollout_adopt_done(struct rollout *r, unsigned next_gen);

/* Worker with this pid (live or being killed), or NULL. */
const struct rollout_worker *rollout_find_pid(const struct rollout *r, int pid);

/* Worker whose process group is pgid (live or being killed), or NULL. */
const struct rollout_worker *rollout_find_pgid(const struct rollout *r, int pgid);

/* Iterates every record in use: i from 0 while the result is non-NULL-or-skipped; see .c. */
const struct rollout_worker *rollout_worker_at(const struct rollout *r, unsigned i);

/* The serving generation (0 before the first is ready), the starting one (0 if none). */
unsigned rollout_serving_gen(const struct rollout *r);
unsigned rollout_starting_gen(const struct rollout *r);
bool rollout_reload_pending(const struct rollout *r);

/* rollout_describe.c: writes a report action as one log line to buf; returns its syslog level. */
int rollout_describe(const struct rollout_action *a, char *buf, size_t size);

/* rollout_describe.c: "spawning", "ready", ...; "?" for a value the enum does not have. */
const char *rollout_worker_state_to_string(enum rollout_worker_state s);
