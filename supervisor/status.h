/* SPDX-License-Identifier: MIT */
/* status.h - what batonctl status shows: one view of batond, rendered as text or JSON. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "rollout.h"

/* One walk over batond's state fills this; the renderers read nothing else. */
struct status_worker {
	unsigned index;
	int pid;
	const char *state;
	uint64_t uptime_sec;
	const char *status; /* the worker's last STATUS=, or "" */
};

struct status_generation {
	unsigned id;
	const char *role;		/* serving, starting or draining */
	size_t first_worker, n_workers; /* into status_view.workers */
};

struct status_listener {
	const char *name, *address, *kind;
	long queued, backlog; /* -1: unknown or not applicable */
	bool retiring;
	const char *refuse_new; /* why a stop cannot refuse new connections here, or NULL */
};

struct status_view {
	int pid;
	const char *name;     /* --name, or the default */
	const char *pid_file; /* --pid-file, or NULL */
	int pid_file_pid;     /* the pid it names; 0: none given, -1: cannot be read */
	uint64_t uptime_sec;
	unsigned serving_gen, starting_gen;
	bool reload_pending, stopping;
	bool has_last_reload;
	unsigned last_reload_gen;
	bool last_reload_ok;
	uint64_t last_reload_ago_sec;
	const char *last_reload_text;
	const char *ready_source;
	size_t n_generations;
	struct status_generation generations[ROLLOUT_MAX_GENERATIONS + 1]; /* oldest first */
	size_t n_workers;
	struct status_worker workers[ROLLOUT_MAX_RECORDS]; /* grouped by generation */
	size_t n_listeners;
	struct status_listener listeners[CONFIG_MAX_LISTENERS];
};

/*
 * Renders v as text for people, or as one JSON object (the schema is in batonctl(8)). Returns a
 * malloc()ed, NUL-terminated string, or NULL on ENOMEM.
 */
char *status_format(const struct status_view *v, bool json);
