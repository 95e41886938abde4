/* SPDX-License-Identifier: MIT */
/* config.h - batond's command line, parsed and validated before anything is bound or spawned. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <stdio.h>

#include "listener.h"
#include "rollout.h"
#include "spawn.h"

#define CONFIG_MAX_ALLOW     64	  /* --fd-allow entries */
#define CONFIG_MAX_WATCH     8	  /* --reload-on-change paths */
#define CONFIG_MAX_LISTENERS 1024 /* listeners; workers get fds 3..1026 (batond raises its limit) */

#define CONFIG_READY_TIMEOUT_DEFAULT_USEC (UINT64_C(60) * 1000000) /* 60 s */
#define CONFIG_DRAIN_TIMEOUT_DEFAULT_USEC (UINT64_C(30) * 1000000) /* 30 s */
#define CONFIG_STOP_TIMEOUT_DEFAULT_USEC  (UINT64_C(30) * 1000000) /* 30 s */

enum config_stop_mode {
	CONFIG_STOP_GRACEFUL, /* refuse new connections, let workers empty the queues, then drain */
	CONFIG_STOP_IMMEDIATE, /* drain the workers at once; what is still queued is reset */
};

#define CONFIG_START_NICE_DEFAULT 0 /* --start-nice: see docs/BENCHMARKS.md for the measure */

struct config {
	struct listener listeners[CONFIG_MAX_LISTENERS];
	size_t n_listeners;
	int backlog;
	struct rollout_config rollout;
	int drain_signal;
	enum config_stop_mode stop_mode;
	uint64_t stop_timeout_usec; /* limit on emptying the queues at a graceful stop */
	const char *pid_file;	    /* NULL: none */
	char preload[4096];	    /* libbaton-preload.so for LD_PRELOAD, "" for none */
	char exec_path[4096];	    /* argv[0] resolved through PATH */
	char **argv;		    /* the worker command, pointing into main()'s argv */
	int log_level;
	bool fdstore;	     /* --fdstore: push listeners to the manager's store without $FDSTORE */
	const char *control; /* -c PATH, or NULL for the default path of name */
	bool no_control;     /* --no-control: no control socket at all */
	int start_nice;	     /* --start-nice: added to a starting generation's nice value */
	const char *notify_socket; /* --notify-socket: a path, "@" (abstract), or NULL (default) */
	bool has_metrics;	   /* --metrics given: */
	struct listener metrics;   /* ... where to serve /metrics: TCP on loopback, or Unix */
	const char *name;	   /* --name: the instance, for the default control socket path */
	unsigned pass;		   /* SPAWN_PASS_* formats (--pass), SPAWN_PASS_ENV by default */
	bool ready_einhorn;	   /* --ready einhorn-ack: worker:ack on EINHORN_SOCK_PATH */
	bool ready_listening;	   /* --ready listening: waits on a listener, as /proc shows */
	const char *fd_socket;	   /* --fd-socket PATH, or NULL */
	uid_t fd_allow_uids[CONFIG_MAX_ALLOW];
	size_t n_fd_allow_uids;
	gid_t fd_allow_gids[CONFIG_MAX_ALLOW];
	size_t n_fd_allow_gids;
	struct spawn_creds creds; /* --user, --group, --no-new-privs, resolved */
	char user[256];		  /* --user's name from the user database, or "" */
	char user_home[4096];	  /* ... and its home directory */
	const char *reload_on_change[CONFIG_MAX_WATCH]; /* --reload-on-change paths */
	size_t n_reload_on_change;
};

enum {
	CONFIG_RUN = 0,	 /* go on */
	CONFIG_EXIT = 1, /* --help or --version printed: exit 0 */
};

/*
 * Parses and validates batond's arguments into *ret (nothing is bound). Returns CONFIG_RUN,
 * CONFIG_EXIT, or a negative errno after logging what is wrong (exit 2).
 */
int config_parse(int argc, char **argv, struct config *ret);

/* Parses "TERM", "SIGTERM" or "15". Returns the signal number or -EINVAL. */
int config_parse_signal(const char *s);

/* Parses --pass: "env", "einhorn", "server-starter", "nginx", comma-separated. */
int config_parse_pass(const char *s, unsigned *ret);

/* Parses --ready: "notify", "none" or "delay:DUR". Returns 0 or -EINVAL. */
int config_parse_ready(const char *s, enum rollout_ready_mode *ret_mode, uint64_t *ret_delay_usec);

/*
 * Finds an executable for name: as given if it contains '/', else in each directory of path.
 * Returns 0 and writes it to ret (size bytes), or -ENOENT / -EACCES / -EISDIR / -ENAMETOOLONG.
 */
int config_find_executable(const char *name, const char *path, char *ret, size_t size);

/*
 * Finds libbaton-preload.so: path if given; else beside the running batond (a build tree),
 * in ../lib/baton from batond's directory (an install at any prefix), or in the library
 * directory this build was configured for, logging every path tried if none has it.
 * Returns 0 and writes it to ret, or -ENOENT / -EACCES / -ENAMETOOLONG.
 */
int config_find_preload(const char *path, char *ret, size_t size);

void config_help(FILE *f);
