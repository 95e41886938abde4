/* SPDX-License-Identifier: MIT */
/* batond.h - batond's one state struct and the calls between the daemon's files (private). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#include "channel.h"
#include "command_table.h"
#include "config.h"
#include "eventlog.h"
#include "intercept.h"
#include "metrics.h"
#include "notify.h"
#include "rollout.h"
#include "stop_plan.h"

/*
 * The daemon's files and what each one holds (docs/DESIGN.md has the whole map):
 *   main.c      configuration, binding, event sources, run(), main(), the signals
 *   actions.c   the rollout machine's actions carried out: spawn, drain, kill, timer, report
 *   events.c    what workers say turned into rollout events: notify, channel, einhorn, /proc
 *   stop.c      the two-stage close of every listener (stop) or one (retire); stop_plan.c decides
 *   upgrade.c   batond replacing its own image: preflight, handoff across execve(), takeover
 *   status.c    batonctl status, text and JSON, from one walk over this struct
 *   commands.c  the control requests (command_table.c names them for batond and batonctl)
 *   report.c    one event told everywhere: log line (journal fields), event ring, streams
 *   metrics.c   --metrics: what batond counts, the Prometheus text, the /metrics server
 * State lives here and nowhere else: no file keeps a mutable global.
 */

struct channel;
struct control;
struct control_client;
struct fdsock;
struct metrics_server;

/* Per worker record: what batond knows beyond the rollout machine's view. */
struct worker_extra {
	char status[NOTIFY_STATUS_MAX]; /* last STATUS= */
	bool stopping;			/* said STOPPING=1 */
	int shim_drain;	    /* NOTIFY_SHIM_*: the preload shim's word from the main process */
	struct channel *ch; /* --pass scm: the worker's channel, until it exits */
	struct batond *b;   /* for the channel's callbacks */
	unsigned id;	    /* rollout record id */
	int pid;
	int adopted_channel_fd; /* upgrade: the channel to take over in run(), or -1 */
	/*
	 * MAINPID=: the process it named, held by a pidfd from the moment it was accepted, so
	 * that no signal can reach another process that got the number later. The source watches
	 * the pidfd (and owns it): the main process is not batond's child, so its exit may come
	 * from nothing else. NULL without MAINPID.
	 */
	sd_event_source *main_source;
	pid_t main_pid;
	int adopted_pidfd;   /* adopt.c: a worker of a batond that died, pinned; watched in run() */
	uint64_t start_time; /* of its process, from /proc/PID/stat (0: unknown), for the record */
	sd_event_source *intercept_source; /* --intercept: its seccomp listener, until it exits */
};

/* Stage 2 of a two-stage close on the way: listeners watched until nothing waits (stop.c). */
struct quiesce_watch {
	struct batond *b;
	struct quiesce q;
	sd_event_source *timer;
	int only; /* the one listener (a retire), or -1: every listener (the stop) */
	void (*done)(struct batond *b, enum quiesce_result result, unsigned queued,
		     unsigned half_open);
};

/* A control client's slot (control_client_set_data()): what it waits for. */
#define COMMAND_WAIT_NONE   0L	  /* nothing: answered at once */
#define COMMAND_WAIT_NEXT   (-1L) /* a "reload": the next generation that starts */
#define COMMAND_WAIT_RETIRE (-2L) /* a "retire": its listener's queue to empty */
/* A positive value: a "reload" waiting for that generation to serve or be rolled back. */

struct batond {
	struct config cfg;
	sd_event *event;
	int exit_code;
	uint64_t started_usec;
	int base_nice; /* batond's own nice value: what a ready worker gets back (--start-nice) */
	bool pid_file_written;

	/* The listeners as handed out (spawn fds, --ready listening's inodes), in cfg's order. */
	int listen_fds[CONFIG_MAX_LISTENERS];
	ino_t listen_inodes[CONFIG_MAX_LISTENERS];
	struct intercept_filter intercept; /* --intercept: the workers' seccomp filter */

	/* actions.c: the rollout machine, its actions and the events that running them made. */
	struct rollout *rollout;
	struct rollout_action *actions; /* ROLLOUT_MAX_ACTIONS, reused by every step */
	struct rollout_event *queue;	/* ACTIONS_QUEUE_MAX */
	size_t queue_head, queue_len;
	bool feeding;
	sd_event_source *timer;	    /* the machine's one deadline */
	struct worker_extra *extra; /* ROLLOUT_MAX_RECORDS, by rollout record id */

	/* events.c: the notify socket, --ready listening's /proc look, einhorn's socket. */
	int notify_fd;
	char notify_address[NOTIFY_ADDRESS_MAX];
	sd_event_source *notify_source;
	sd_event_source *ready_poll;
	struct control *einhorn;
	char einhorn_path[108];
	char private_dir[32];  /* for the notify and einhorn sockets without a control
				      socket to put them beside; removed at exit; or "" */
	bool notify_owns_path; /* notify_address is a file of ours: removed at exit ... */
	dev_t notify_dev;      /* ... if it is still this one */
	ino_t notify_ino;

	/* stop.c: the graceful stop and batonctl retire. */
	enum stop_stage stop_stage;
	unsigned n_stops;   /* stop signals received */
	bool stop_filtered; /* stage 1 put a filter on a TCP or UDP listener */
	struct quiesce_watch stop_watch;
	struct quiesce_watch retire_watch;
	char retire_reply[512]; /* what every waiting "retire" hears */

	/* upgrade.c: the binary on disk, the command line to run it with, what was taken over. */
	char self_path[4096];
	char **argv;
	bool adopted; /* this image took over from an older one */
	bool handoff; /* ... through the minimal handoff (another state version) */
	int adopted_control_fd;
	int preflight_fd;    /* the new binary's answer to --upgrade-check, or -1 */
	int preflight_pidfd; /* that process, or -1 */
	sd_event_source *preflight_io, *preflight_timer;
	char preflight_answer[64];
	size_t preflight_len;

	/* adopt.c: the record of the workers, for a batond that takes them over after a crash. */
	char record_path[128]; /* "": none (--no-control) */
	bool record_written, record_failed;
	uint64_t record_signature;     /* of what the last write recorded */
	sd_event_source *record_defer; /* the write at the end of this turn of the loop */
	bool recovered;		       /* this batond took over the workers of one that died */

	/* commands.c: the control socket and what status says about reloads; the fd socket. */
	struct control *control;
	char control_path[108];
	unsigned last_reload_gen;
	bool last_reload_ok;
	uint64_t last_reload_usec; /* 0: no reload yet */
	char last_reload_text[512];
	struct fdsock *fdsock; /* --fd-socket */

	/* report.c: the events batonctl events streams, and how many slow readers missed. */
	struct eventlog *events;
	uint64_t events_dropped;

	/* metrics.c: what the events counted, and the --metrics server. */
	struct metrics_counters metrics;
	struct watch *watch; /* watch.c: --reload-on-change, or NULL */
	struct metrics_server *metrics_server;
};

/* actions.c */

/* Events waiting to be fed: at most one pending spawn result per record, and the one fed. */
#define ACTIONS_QUEUE_MAX (ROLLOUT_MAX_RECORDS + 1)

/* Allocates the machine and its buffers. Returns 0 or -ENOMEM / -EINVAL; logs nothing. */
int actions_new(struct batond *b);
void actions_free(struct batond *b);

/* Feeds ev to the rollout machine, runs its actions, then feeds what running them produced. */
void batond_feed(struct batond *b, const struct rollout_event *ev);

/* The same, for an event that carries nothing but its type (and force, for a stop). */
void batond_feed_simple(struct batond *b, enum rollout_event_type type, bool force);

/* The worker record that w is, for b->extra. */
unsigned batond_record_id(const struct batond *b, const struct rollout_worker *w);

/*
 * Sends sig to a worker's main process: through its pidfd when MAINPID named it (a number
 * that may have been reused by now is never used), else by pid (batond's own child, whose
 * number cannot be reused before batond reaps it). Returns 0 or a negative errno (-ESRCH: gone).
 */
int batond_signal_main(struct batond *b, pid_t pid, int sig);

/*
 * Whether process group pgid is still worker pid's own: its leader is batond's child not yet
 * reaped, or pid (held by a pidfd) is in it. Never true for pgid <= 1 or batond's own group.
 */
bool batond_group_is_the_workers(pid_t pid, pid_t pgid);

/* Forgets what batond kept beside a worker record (channel, main pidfd): it exited. */
void worker_extra_release(struct worker_extra *x);

/* Last resort on a fatal error: SIGKILL every worker and reap it; none outlives batond. */
void actions_kill_all(struct batond *b);

/* events.c */

/* The notify socket's source, the readiness poll, and einhorn's socket (after the control one). */
int events_open(struct batond *b);
void events_close(struct batond *b);

/*
 * Holds pid by a pidfd and watches its exit for worker x, if pid descends from ancestor (pid
 * is a worker's MAINPID). Returns 1, 0 (not a descendant) or a negative errno.
 */
int events_watch_main(struct batond *b, struct worker_extra *x, pid_t pid, pid_t ancestor);

/* Watches pidfd (consumed, even on failure) as worker x's main process pid. Returns 0 or -errno. */
int events_watch_pidfd(struct batond *b, struct worker_extra *x, int pidfd, pid_t pid);

/* --ready listening: look at starting workers soon (after a spawn). */
void events_ready_poll_arm(struct batond *b);

/*
 * Once, when the first generation serves: reads what its first worker's main process does with
 * the drain signal (/proc/PID/status, and the preload shim's word) and tells the operator when
 * a reload will lose requests, with the fix (drain_plan.c decides).
 */
void events_check_drain_signal(struct batond *b, unsigned gen);

/* SIGCHLD: reaps every child, feeding the workers' exits to the machine. */
int events_on_sigchld(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata);

/* The callbacks of a worker's --pass scm channel; userdata is its struct worker_extra. */
extern const struct channel_ops events_channel_ops;

/* stop.c */

int stop_open(struct batond *b);
void stop_close(struct batond *b);

/* SIGTERM, SIGINT or batonctl stop; force (a second signal) kills the workers now. */
void stop_request(struct batond *b, bool force);

/* Before the final close: takes stage 1's filters off the sockets the manager keeps. */
void stop_release_filters(struct batond *b);

/* True once a stop was asked for. */
bool stop_begun(const struct batond *b);

/* batonctl retire NAME: replies to cl now (refused) or once the listener is closed. */
void stop_retire(struct batond *b, struct control_client *cl, const char *name);

/* The listener being retired, or -1. */
int stop_retiring_index(const struct batond *b);

/* What listen_close_probe()'s result r means for a stop, for people; NULL when r is 0. */
const char *stop_refuse_new_problem(int r);

/* At start-up: says, per listener, when a graceful stop could not refuse new connections. */
void stop_check_listeners(const struct batond *b);

/* upgrade.c */

/*
 * SIGUSR2 or batonctl upgrade: asks the new binary whether it can take over (without blocking
 * the loop), then execs it. Returns only if the upgrade did not start or is under way: 0, or a
 * negative errno after logging why.
 */
int upgrade_request(struct batond *b);

/*
 * In a new image, before anything is bound: takes the listeners, notify socket and workers of
 * the old one. Returns 1 if there was an upgrade to take over, 0 if not, or a negative errno.
 */
int upgrade_take_over(struct batond *b);

/*
 * Takes listener fd (consumed) under name: the configured listener of that name that has no fd
 * yet, or a new one. Returns 0 or a negative errno, logged.
 */
int upgrade_take_listener(struct batond *b, int fd, const char *name, bool owns_path, dev_t dev,
			  ino_t ino);

/* In run(), once the loop exists: the taken-over channels become channels again. */
void upgrade_adopt_channels(struct batond *b);

/* The takeover failed: exec the previous image again with the same state, if it left itself. */
void upgrade_fall_back(struct batond *b);

void upgrade_close(struct batond *b);

/* The number of this image's first event: where the previous image stopped, or 1. */
uint64_t upgrade_event_seq(void);

/* What the previous image knew of the last reload, for status (nothing if no upgrade). */
void upgrade_take_last_reload(struct batond *b);

/* adopt.c */

/* The record's path for configuration c: CONTROL.record. Returns 0 or -ENOENT / -errno. */
int adopt_record_path(const struct config *c, char *ret, size_t size);

/* Rewrites the record if the workers or listeners changed since the last write (atomic). */
void adopt_record_write(struct batond *b);

/* Removes the record (a clean exit: no worker is left to take over). */
void adopt_record_remove(struct batond *b);

/*
 * Before anything is bound: if the record of a batond that died names workers still alive
 * (checked: start time, generation and index in their environment; pinned by pidfd), takes
 * their listeners with pidfd_getfd() and adopts them. Returns 1 (taken over), 0 (nothing to
 * take), or a negative errno after logging what was found and what the operator must do.
 */
int adopt_take_over(struct batond *b);

/* In run(): the adopted workers' exits are watched through their pidfds. */
void adopt_watch(struct batond *b);

/* status.c */

/* batonctl status: a malloc()ed text for people, or JSON (batonctl(8)); NULL on ENOMEM. */
char *status_render(const struct batond *b, bool json);

/* One walk over batond's state fills *v (status, metrics). */
void status_take_view(const struct batond *b, struct status_view *v);

/* Who this batond is (pid, name, version, control socket, pid file, listeners): a malloc()ed
 * JSON object or one line of text; NULL on ENOMEM. */
char *status_identity(const struct batond *b, bool json);

/* report.c */

/* Tells ev everywhere: the log (with journal fields), the event ring and its streams. */
void batond_event(struct batond *b, const struct eventlog_event *ev);

/* A report from the rollout machine (its line and level from rollout_describe()) as an event. */
void batond_report_rollout(struct batond *b, const struct rollout_action *a, int level,
			   const char *line);

/* batonctl events: cl becomes a stream of JSON lines, from since (replay) or from now on. */
void batond_events_stream(struct batond *b, struct control_client *cl, bool replay, uint64_t since);

/* metrics.c */

/* --metrics: binds and serves /metrics; 0 (also without --metrics), or a negative errno after
 * logging. */
int metrics_open(struct batond *b);
void metrics_close(struct batond *b);

/* Counts ev for the metrics (called for every event). */
void metrics_on_event(struct batond *b, const struct eventlog_event *ev);

/* commands.c */

/* Opens the control socket (-c, or the default path); 0, or a negative errno after logging. */
int commands_open(struct batond *b);
void commands_close(struct batond *b);

/* A report from the machine: answers waiting "reload"s and keeps what status shows. */
void commands_on_report(struct batond *b, const struct rollout_action *a, const char *line);

/* True if batond has a handler for the request (a unit test checks every one has). */
bool commands_has_handler(enum command_id id);

/* The listener set changed (listen, retire): channels, spawns and the fd socket follow it. */
void batond_listeners_changed(struct batond *b);
