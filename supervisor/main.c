/* SPDX-License-Identifier: MIT */
/* main.c - batond: hold the listeners, wire sd-event to the rollout machine, run its actions. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "cleanup.h"
#include "channel.h"
#include "config.h"
#include "control.h"
#include "drain.h"
#include "fdsock.h"
#include "listener.h"
#include "procscan.h"
#include "log.h"
#include "notify.h"
#include "rollout.h"
#include "spawn.h"
#include "sysd.h"
#include "upgrade_state.h"

extern char **environ;

/* Per worker record: what batond knows beyond the state machine's view. */
struct worker_extra {
	char status[NOTIFY_STATUS_MAX]; /* last STATUS= */
	bool stopping;			/* said STOPPING=1 */
	struct channel *ch;		/* --pass scm: the worker's channel, until it exits */
	struct batond *b;		/* for the channel's callbacks */
	unsigned id;			/* rollout record id */
	int pid;
	int adopted_channel_fd; /* upgrade: the channel to take over in run(), or -1 */
};

struct batond {
	struct config cfg;
	sd_event *event;
	sd_event_source *timer;
	sd_event_source *notify_source;
	struct rollout *rollout;
	struct rollout_action *actions; /* ROLLOUT_MAX_ACTIONS, reused by every step */

	/* Events produced while running actions (spawn results), fed after the current step. */
	struct rollout_event *queue;
	size_t queue_head, queue_len;
	bool feeding;

	int notify_fd;
	char notify_address[NOTIFY_ADDRESS_MAX];
	int listen_fds[CONFIG_MAX_LISTENERS];
	struct worker_extra *extra; /* ROLLOUT_MAX_RECORDS */
	bool pid_file_written;
	int exit_code;

	/* Graceful stop, stages 1 and 2: new connections refused, queues emptying. */
	unsigned n_stops;
	bool stop_begun;
	sd_event_source *stop_timer;
	uint64_t stop_started_usec, stop_deadline_usec;

	/* Self-upgrade: the binary on disk and the command line to exec it with again. */
	char self_path[4096];
	char **argv;
	bool adopted; /* this image took over from an older one */
	bool handoff; /* ... through the minimal handoff (another state version) */
	int adopted_control_fd;

	/* --ready listening: a look at /proc every READY_POLL_USEC while a worker starts. */
	sd_event_source *ready_poll;
	ino_t listen_inodes[CONFIG_MAX_LISTENERS];

	struct fdsock *fdsock; /* --fd-socket */

	/* batonctl retire: one listener at a time through the two-stage close. */
	sd_event_source *retire_timer;
	int retire_index; /* -1: none */
	uint64_t retire_started_usec, retire_deadline_usec;
	char retire_reply[512];

	/* einhorn's command socket (--pass einhorn): workers send worker:ack there. */
	struct control *einhorn;
	char einhorn_path[108];
	char einhorn_dir[32]; /* the private directory of einhorn_path, removed at exit; or "" */

	/* batonctl: the control socket and what status reports about reloads. */
	struct control *control;
	char control_path[108];
	uint64_t started_usec;
	unsigned last_reload_gen;
	bool last_reload_ok;
	uint64_t last_reload_usec; /* 0: no reload yet */
	char last_reload_text[512];
};

#define READY_POLL_USEC (50 * 1000) /* between looks at starting workers, --ready listening */

#define CONTROL_WAIT_NEXT (-1L)
#define CONTROL_WAIT_RETIRE \
	(-2L) /* a "retire" waiting for its listener's queue to empty */ /* a waiting "reload": the next generation that starts */

#define UPGRADE_CHECK_USEC (10 * 1000 * 1000) /* limit on the new binary's preflight answer */

#define STOP_POLL_USEC (20 * 1000) /* 20 ms between looks at the queues while they empty */

#define QUEUE_MAX (ROLLOUT_MAX_RECORDS + 1) /* at most one pending result per spawning record */

static uint64_t now_usec(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void enqueue(struct batond *b, const struct rollout_event *ev)
{
	/* Bounded by construction: each queued event answers one SPAWNING record. */
	if (b->queue_len >= QUEUE_MAX)
		abort();
	b->queue[(b->queue_head + b->queue_len++) % QUEUE_MAX] = *ev;
}

static void ready_poll_arm(struct batond *b)
{
	uint64_t now = now_usec();

	if (!b->ready_poll || !b->cfg.ready_listening)
		return;
	if (sd_event_source_set_time(b->ready_poll, now + READY_POLL_USEC) < 0 ||
	    sd_event_source_set_enabled(b->ready_poll, SD_EVENT_ONESHOT) < 0)
		log_error("arm the readiness poll: workers will be ready only at their timeout");
}

static int batond_feed(struct batond *b, const struct rollout_event *ev);

/* --ready listening: a starting worker is ready once it (or a child) waits on a listener. */
static int on_ready_poll(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct batond *b = userdata;
	bool starting = false;

	(void)s;
	(void)usec;
	for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);
		struct rollout_event ev = { .type = ROLLOUT_WORKER_READY };
		int r;

		if (w->state != ROLLOUT_W_STARTING)
			continue;
		r = procscan_waits_on(w->pid, w->pgid, b->listen_inodes, b->cfg.n_listeners);
		if (r < 0)
			log_debug("look at worker pid %d in /proc: %s", w->pid, strerror(-r));
		if (r <= 0) {
			starting = true;
			continue;
		}
		log_debug("generation %u worker %u (pid %d): waits on a listener", w->gen, w->index,
			  w->pid);
		ev.now_usec = now_usec();
		ev.pid = w->pid;
		(void)batond_feed(b, &ev);
	}
	if (starting)
		ready_poll_arm(b);
	return 0;
}

static unsigned record_id(struct batond *b, const struct rollout_worker *w)
{
	return (unsigned)(w - rollout_worker_at(b->rollout, 0));
}

static void on_channel_ready(void *userdata)
{
	struct worker_extra *x = userdata;
	struct rollout_event ev = { .type = ROLLOUT_WORKER_READY, .pid = x->pid };

	/* READY over the channel counts as READY=1 would (--ready notify). */
	if (x->b->cfg.ready_listening || x->b->cfg.ready_einhorn)
		return;
	ev.now_usec = now_usec();
	(void)batond_feed(x->b, &ev);
}

static void on_channel_status(void *userdata, uint32_t inflight, const char *text)
{
	struct worker_extra *x = userdata;

	(void)snprintf(x->status, sizeof(x->status), "%s (%" PRIu32 " in flight)", text, inflight);
}

static void on_channel_drained(void *userdata)
{
	struct worker_extra *x = userdata;

	log_debug("worker pid %d: drained", x->pid);
}

static void on_channel_closed(void *userdata, int error)
{
	struct worker_extra *x = userdata;

	(void)error; /* the channel logged why */
	x->ch = channel_free(x->ch);
}

static const struct channel_ops channel_ops = {
	.ready = on_channel_ready,
	.status = on_channel_status,
	.drained = on_channel_drained,
	.closed = on_channel_closed,
};

static void run_spawn(struct batond *b, const struct rollout_action *a)
{
	_cleanup_close_ int bfd = -1, wfd = -1;
	bool scm = b->cfg.pass & SPAWN_PASS_SCM;
	struct spawn_env se = {
		.listeners = b->cfg.listeners,
		.n_listeners = b->cfg.n_listeners,
		.notify_socket = b->notify_address,
		.preload = b->cfg.preload[0] ? b->cfg.preload : NULL,
		.pass = b->cfg.pass,
		.master_pid = (int)getpid(),
		.einhorn_sock = b->einhorn ? b->einhorn_path : NULL,
		.drain_signal = b->cfg.drain_signal,
		.gen = a->gen,
		.index = a->index,
	};
	struct rollout_event ev = { .worker = a->worker };
	char **envp = NULL;
	pid_t pid = 0;
	int r;

	r = spawn_env_build(environ, &se, &envp);
	if (r >= 0 && scm)
		r = channel_socketpair(&bfd, &wfd);
	if (r >= 0) {
		/* With scm the worker inherits its channel end alone, at fd 3 (BATON_FD). */
		r = spawn_worker(b->cfg.exec_path, b->cfg.argv, envp, scm ? &wfd : b->listen_fds,
				 scm ? 1 : b->cfg.n_listeners, &pid);
		envp = spawn_env_free(envp);
	}
	/* Ours must go at once: holding the worker's end would hide its exit from the channel. */
	wfd = safe_close(wfd);
	ev.now_usec = now_usec();
	if (r < 0) {
		log_debug("generation %u worker %u: spawn %s: %s", a->gen, a->index,
			  b->cfg.exec_path, strerror(-r));
		ev.type = ROLLOUT_SPAWN_FAILED;
		ev.error = r;
	} else {
		log_debug("generation %u worker %u: started pid %d", a->gen, a->index, (int)pid);
		ev.type = ROLLOUT_WORKER_SPAWNED;
		ev.pid = pid;
		if (a->worker < ROLLOUT_MAX_RECORDS) {
			struct worker_extra *x = &b->extra[a->worker];

			x->ch = channel_free(x->ch);
			*x = (struct worker_extra){
				.b = b, .id = a->worker, .pid = pid, .adopted_channel_fd = -1
			};
			if (scm) {
				char label[CHANNEL_LABEL_MAX];

				(void)snprintf(label, sizeof(label),
					       "generation %u worker %u (pid %d)", a->gen, a->index,
					       (int)pid);
				r = channel_new(b->event, TAKE_FD(bfd), pid, label,
						b->cfg.listeners, b->cfg.n_listeners, &channel_ops,
						x, &x->ch);
				if (r < 0)
					log_error_errno(r, "%s: channel", label);
			}
		}
		ready_poll_arm(b);
	}
	enqueue(b, &ev);
}

struct waiter_match {
	const struct rollout_action *a;
	const char *line;
};

static void answer_waiter(struct control_client *cl, void *userdata)
{
	const struct waiter_match *m = userdata;
	long want = control_client_get_data(cl);
	char reply[512];

	switch (m->a->report) {
	case ROLLOUT_GEN_STARTING:
		if (want == CONTROL_WAIT_NEXT)
			control_client_set_data(cl, (long)m->a->gen);
		return;
	case ROLLOUT_GEN_READY:
		if (want != (long)m->a->gen)
			return;
		(void)snprintf(reply, sizeof(reply), "ok %s\n", m->line);
		break;
	case ROLLOUT_RELOAD_FAILED:
		if (want != (long)m->a->gen && m->a->reason != ROLLOUT_REASON_STOPPED)
			return;
		(void)snprintf(reply, sizeof(reply), "failed %s\n", m->line);
		break;
	case ROLLOUT_STOPPING:
		(void)snprintf(reply, sizeof(reply), "failed batond is stopping\n");
		break;
	default:
		return;
	}
	control_reply(cl, reply);
}

/* batonctl reload waits for its generation; status shows the last outcome. */
static void tell_control(struct batond *b, const struct rollout_action *a, const char *line)
{
	struct waiter_match m = { .a = a, .line = line };

	if ((a->report == ROLLOUT_GEN_READY && a->reload) || a->report == ROLLOUT_RELOAD_FAILED) {
		b->last_reload_gen = a->gen;
		b->last_reload_ok = a->report == ROLLOUT_GEN_READY;
		b->last_reload_usec = now_usec();
		(void)snprintf(b->last_reload_text, sizeof(b->last_reload_text), "%s", line);
	}
	if (a->report == ROLLOUT_GEN_STARTING && !a->reload)
		return;
	control_foreach_waiting(b->control, answer_waiter, &m);
}

/* What systemd hears (Type=notify and notify-reload): READY, RELOADING, STATUS, fd store. */
static void tell_manager(struct batond *b, const struct rollout_action *a, const char *line)
{
	switch (a->report) {
	case ROLLOUT_GEN_STARTING:
		if (a->reload)
			sysd_notify("RELOADING=1\nMONOTONIC_USEC=%" PRIu64
				    "\nSTATUS=generation %u: starting %u workers",
				    now_usec(), a->gen, a->count);
		break;
	case ROLLOUT_GEN_READY:
		sysd_notify("READY=1\nSTATUS=generation %u: %u/%u workers ready; %s", a->gen,
			    a->count, a->count, a->reload ? "last reload ok" : "serving");
		if (!a->reload && sysd_fdstore_enabled(&b->cfg))
			(void)sysd_fdstore_push(&b->cfg);
		break;
	case ROLLOUT_RELOAD_FAILED:
		if (a->reason != ROLLOUT_REASON_STOPPED)
			sysd_notify("READY=1\nSTATUS=generation %u: serving; %s",
				    rollout_serving_gen(b->rollout), line);
		break;
	case ROLLOUT_START_FAILED:
		sysd_notify("STATUS=%s", line);
		break;
	case ROLLOUT_STOPPING:
		sysd_notify("STOPPING=1\nSTATUS=stopping: draining workers");
		break;
	default:
		break;
	}
}

/*
 * SIGKILL to a worker, its process group, and any descendant that left the group (setsid()):
 * a server's own children must not outlive it holding listeners.
 */
static void kill_worker_tree(pid_t pid, pid_t pgid)
{
	_cleanup_free_ pid_t *tree = calloc(PROCSCAN_MAX_PROCS, sizeof(pid_t));
	size_t n = 0;
	int r;

	/* Found before the kills: once the worker is dead, its escaped children are orphans. */
	if (tree) {
		r = procscan_tree(pid, pgid, tree, PROCSCAN_MAX_PROCS, &n);
		if (r < 0)
			log_warning_errno(r, "find the processes of worker pid %d, ignoring", pid);
	}
	r = kill(-pgid, SIGKILL);
	if (r < 0 && errno != ESRCH)
		log_warning_errno(-errno, "kill process group %d", pgid);
	if (pid != pgid && kill(pid, SIGKILL) < 0 && errno != ESRCH)
		log_warning_errno(-errno, "kill worker pid %d", pid);
	for (size_t i = 0; i < n; i++) {
		if (tree[i] == pid || getpgid(tree[i]) == pgid)
			continue;
		if (kill(tree[i], SIGKILL) < 0 && errno != ESRCH)
			log_warning_errno(-errno, "kill pid %d of worker pid %d", tree[i], pid);
		else
			log_info("killed pid %d, of worker pid %d in another process group",
				 tree[i], pid);
	}
}

static void run_action(struct batond *b, const struct rollout_action *a)
{
	char line[512];
	int level, r;

	switch (a->type) {
	case ROLLOUT_DO_SPAWN:
		run_spawn(b, a);
		break;
	case ROLLOUT_DO_DRAIN: {
		const struct rollout_worker *w = rollout_find_pid(b->rollout, a->pid);
		struct worker_extra *x = w ? &b->extra[record_id(b, w)] : NULL;

		/* Over the channel if the worker has one; the signal otherwise (and at the deadline). */
		if (x && x->ch && channel_drain(x->ch, b->cfg.rollout.drain_timeout_usec) == 0) {
			log_debug("sent DRAIN to worker pid %d", a->pid);
			break;
		}
		if (kill(a->pid, b->cfg.drain_signal) < 0 && errno != ESRCH)
			log_warning_errno(-errno, "send %s to worker pid %d",
					  sigabbrev_np(b->cfg.drain_signal) ?: "signal", a->pid);
		else
			log_debug("sent SIG%s to worker pid %d",
				  sigabbrev_np(b->cfg.drain_signal) ?: "?", a->pid);
		break;
	}
	case ROLLOUT_DO_KILL:
		kill_worker_tree(a->pid, a->pgid);
		break;
	case ROLLOUT_DO_ARM_TIMER:
		if (a->usec == 0) {
			r = sd_event_source_set_enabled(b->timer, SD_EVENT_OFF);
		} else {
			r = sd_event_source_set_time(b->timer, a->usec);
			if (r >= 0)
				r = sd_event_source_set_enabled(b->timer, SD_EVENT_ONESHOT);
		}
		if (r < 0) {
			/* Without the timer no deadline fires: fail loudly rather than hang. */
			log_error_errno(r, "arm timer");
			(void)sd_event_exit(b->event, 1);
		}
		break;
	case ROLLOUT_DO_REPORT:
		level = rollout_describe(a, line, sizeof(line));
		log_full(level, "%s", line);
		tell_manager(b, a, line);
		tell_control(b, a, line);
		break;
	case ROLLOUT_DO_EXIT:
		b->exit_code = a->exit_code;
		(void)sd_event_exit(b->event, a->exit_code);
		break;
	}
}

/* Feeds ev to the machine, runs the actions, then feeds what running them produced. */
static int batond_feed(struct batond *b, const struct rollout_event *ev)
{
	enqueue(b, ev);
	if (b->feeding)
		return 0;
	b->feeding = true;
	while (b->queue_len > 0) {
		struct rollout_event e = b->queue[b->queue_head];
		size_t n = 0;
		int r;

		b->queue_head = (b->queue_head + 1) % QUEUE_MAX;
		b->queue_len--;
		r = rollout_step(b->rollout, &e, b->actions, &n);
		if (r < 0) {
			log_error_errno(r, "rollout event %d", (int)e.type);
			continue;
		}
		for (size_t i = 0; i < n; i++)
			run_action(b, &b->actions[i]);
	}
	b->feeding = false;
	return 0;
}

static int feed_simple(struct batond *b, enum rollout_event_type type, bool force)
{
	struct rollout_event ev = { .type = type, .now_usec = now_usec(), .force = force };

	return batond_feed(b, &ev);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s;
	(void)usec;
	return feed_simple(userdata, ROLLOUT_TIMER, false);
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct batond *b = userdata;

	(void)s;
	if (b->stop_begun) {
		log_warning("SIGHUP from pid %u while stopping: ignoring", si->ssi_pid);
		return 0;
	}
	log_info("SIGHUP from pid %u: reload", si->ssi_pid);
	return feed_simple(b, ROLLOUT_RELOAD, false);
}

/* Stage 2: counts what the listeners still hold; at zero or at the deadline, stage 3. */
static void stop_check_queues(struct batond *b)
{
	unsigned queued = 0, half_open = 0;
	uint64_t now = now_usec();
	int r;

	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		const struct listener *l = &b->cfg.listeners[i];
		unsigned q, h;

		r = drain_pending(l, &q, &h);
		if (r < 0) {
			/* Unknown is not "still busy": never hold the stop on a failed look. */
			log_warning_errno(r, "stop: count connections waiting on %s, ignoring",
					  l->spec);
			continue;
		}
		queued += q;
		half_open += h;
	}
	if (queued + half_open > 0 && now < b->stop_deadline_usec) {
		r = sd_event_source_set_time(b->stop_timer, now + STOP_POLL_USEC);
		if (r >= 0)
			r = sd_event_source_set_enabled(b->stop_timer, SD_EVENT_ONESHOT);
		if (r >= 0)
			return;
		log_error_errno(r, "stop: arm queue timer");
	}
	if (queued + half_open > 0)
		log_warning(
			"stop: %u queued and %u half-open connections left at the stop timeout; "
			"closing resets them",
			queued, half_open);
	else
		log_info("stop: every queue empty after %" PRIu64 "ms; draining the workers",
			 (now - b->stop_started_usec) / 1000);
	(void)feed_simple(b, ROLLOUT_STOP, false);
}

static int on_stop_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s;
	(void)usec;
	stop_check_queues(userdata);
	return 0;
}

/* Stage 1: new connections are refused on every listener; what is queued stays acceptable. */
static void stop_begin(struct batond *b)
{
	unsigned n = 0;
	int r;

	b->stop_begun = true;
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		struct listener *l = &b->cfg.listeners[i];

		r = drain_refuse_new(l);
		if (r == -EOPNOTSUPP)
			log_notice("stop: %s cannot refuse new connections (abstract Unix socket); "
				   "they are served until the workers drain",
				   l->spec);
		else if (r < 0)
			log_warning_errno(r, "stop: refuse new connections on %s, ignoring",
					  l->spec);
		else
			n++;
	}
	log_info("stop: new connections refused on %u of %zu listeners; serving what is queued", n,
		 b->cfg.n_listeners);
	b->stop_started_usec = now_usec();
	b->stop_deadline_usec = b->stop_started_usec + b->cfg.stop_timeout_usec;
	stop_check_queues(b);
}

/* A stop from a signal or batonctl; the second one kills the workers at once. */
static int stop_request(struct batond *b, bool force)
{
	if (force) {
		(void)sd_event_source_set_enabled(b->stop_timer, SD_EVENT_OFF);
		return feed_simple(b, ROLLOUT_STOP, true);
	}
	/*
	 * With nothing serving yet, nobody would empty the queues: go straight to the drain. With
	 * the fd store, the manager keeps a reference: closing ours resets nothing, and a filter
	 * or an unlinked path would follow the socket into the next batond.
	 */
	if (b->cfg.stop_mode == CONFIG_STOP_IMMEDIATE || rollout_serving_gen(b->rollout) == 0 ||
	    sysd_fdstore_enabled(&b->cfg)) {
		b->stop_begun = true;
		return feed_simple(b, ROLLOUT_STOP, false);
	}
	stop_begin(b);
	return 0;
}

static int on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct batond *b = userdata;

	(void)s;
	b->n_stops++;
	log_info("SIG%s from pid %u: %s", sigabbrev_np((int)si->ssi_signo) ?: "?", si->ssi_pid,
		 b->n_stops == 1 ? "graceful stop" : "stop now");
	return stop_request(b, b->n_stops > 1);
}

static int on_sigchld(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct batond *b = userdata;

	(void)s;
	(void)si;
	/* Reap everything: workers, and (as subreaper or PID 1) orphans handed to us. */
	for (;;) {
		struct rollout_event ev = { .type = ROLLOUT_WORKER_EXITED };
		const struct rollout_worker *w;
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid <= 0) {
			if (pid < 0 && errno == EINTR)
				continue;
			break;
		}
		w = rollout_find_pid(b->rollout, pid);
		if (!w) {
			log_debug("reaped pid %d (not a worker)", (int)pid);
			continue;
		}
		b->extra[record_id(b, w)].ch = channel_free(b->extra[record_id(b, w)].ch);
		ev.now_usec = now_usec();
		ev.pid = pid;
		ev.signaled = WIFSIGNALED(status);
		ev.status = WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status);
		(void)batond_feed(b, &ev);
	}
	return 0;
}

/* Which worker sent this? The worker itself, its MAINPID, or any process in its group. */
static const struct rollout_worker *notify_sender(struct batond *b, pid_t pid)
{
	const struct rollout_worker *w = rollout_find_pid(b->rollout, pid);
	pid_t pgid;

	if (w)
		return w;
	pgid = getpgid(pid);
	if (pgid > 0)
		return rollout_find_pgid(b->rollout, pgid);
	return NULL;
}

static int on_notify(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct batond *b = userdata;

	(void)s;
	(void)revents;
	/* Bounded per wake-up so a chatty worker cannot starve signals and timers. */
	for (int i = 0; i < 64; i++) {
		const struct rollout_worker *w;
		struct notify_message m;
		struct worker_extra *x;
		int r = notify_receive(fd, &m);

		if (r == -EAGAIN)
			break;
		if (r < 0) {
			log_debug("notify socket: dropping a message: %s", strerror(-r));
			continue;
		}
		w = notify_sender(b, m.pid);
		if (!w) {
			log_debug("notify socket: ignoring a message from pid %d (not a worker)",
				  (int)m.pid);
			continue;
		}
		x = &b->extra[record_id(b, w)];
		if (m.has_status) {
			memcpy(x->status, m.status, sizeof(x->status));
			log_debug("generation %u worker %u (pid %d): STATUS=%s", w->gen, w->index,
				  w->pid, m.status);
		}
		if (m.stopping && !x->stopping) {
			x->stopping = true;
			log_debug("generation %u worker %u (pid %d): stopping", w->gen, w->index,
				  w->pid);
		}
		if (m.mainpid > 0 && m.mainpid != w->pid) {
			struct rollout_event ev = {
				.type = ROLLOUT_WORKER_MAINPID,
				.now_usec = now_usec(),
				.pid = w->pid,
				.new_pid = m.mainpid,
			};

			/* Only a process of the worker's own group: never signal a stranger. */
			if (getpgid(m.mainpid) != w->pgid) {
				log_warning("generation %u worker %u (pid %d): ignoring MAINPID=%d "
					    "outside its process group",
					    w->gen, w->index, w->pid, (int)m.mainpid);
			} else {
				log_info("generation %u worker %u: main pid is now %d (was %d)",
					 w->gen, w->index, (int)m.mainpid, w->pid);
				(void)batond_feed(b, &ev);
			}
		}
		/* READY=1 counts only where it is the readiness asked for (--ready notify). */
		if (m.ready && !b->cfg.ready_listening && !b->cfg.ready_einhorn) {
			struct rollout_event ev = {
				.type = ROLLOUT_WORKER_READY,
				.now_usec = now_usec(),
				.pid = w->pid,
			};

			(void)batond_feed(b, &ev);
		}
	}
	return 0;
}

static int pid_file_write(const char *path)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -1;
	char buf[32];
	int n;

	if (asprintf(&tmp, "%s.XXXXXX", path) < 0) {
		tmp = NULL;
		return -ENOMEM;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (fchmod(fd, 0644) < 0 || write(fd, buf, (size_t)n) != n) {
		int r = -errno;

		(void)unlink(tmp);
		return r ? r : -EIO;
	}
	/* rename() is atomic: a reader sees the old file or the whole new one, never half. */
	if (rename(tmp, path) < 0) {
		int r = -errno;

		(void)unlink(tmp);
		return r;
	}
	return 0;
}

static int fd_set_cloexec(int fd, bool on)
{
	int flags = fcntl(fd, F_GETFD);

	if (flags < 0)
		return -errno;
	if (fcntl(fd, F_SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC) < 0)
		return -errno;
	return 0;
}

/*
 * Runs "NEW --upgrade-check ARGS..." and reads its answer: the new binary must parse our command
 * line and speak our state version before we exec it. Blocks for at most UPGRADE_CHECK_USEC.
 * Returns 0 (same version), 1 (another state version: minimal handoff) or -EPROTO.
 */
static int upgrade_preflight(struct batond *b)
{
	_cleanup_close_ int rd = -1;
	char expect[64], answer[64] = "";
	size_t argc = 0, got = 0;
	_cleanup_free_ char **argv = NULL;
	int p[2], status, r;
	uint64_t deadline = now_usec() + UPGRADE_CHECK_USEC;
	pid_t pid;

	while (b->argv[argc])
		argc++;
	argv = calloc(argc + 2, sizeof(char *));
	if (!argv)
		return -ENOMEM;
	argv[0] = b->argv[0];
	argv[1] = (char *)UPGRADE_CHECK_OPTION;
	for (size_t i = 1; i < argc; i++)
		argv[i + 1] = b->argv[i];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	rd = p[0];
	pid = fork();
	if (pid < 0) {
		r = -errno;
		(void)close(p[1]);
		return r;
	}
	if (pid == 0) {
		sigset_t none;

		(void)sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		if (dup2(p[1], 1) < 0)
			_exit(127);
		(void)execve(b->self_path, argv, environ);
		_exit(127);
	}
	(void)close(p[1]);
	while (got < sizeof(answer) - 1) {
		struct pollfd pfd = { .fd = rd, .events = POLLIN };
		uint64_t now = now_usec();
		ssize_t n;

		if (now >= deadline)
			break;
		r = poll(&pfd, 1, (int)((deadline - now) / 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n = read(rd, answer + got, sizeof(answer) - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	answer[got] = '\0';
	(void)kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	(void)snprintf(expect, sizeof(expect), "baton-upgrade-ok %d\n", UPGRADE_STATE_VERSION);
	if (strcmp(answer, expect) != 0) {
		int version;

		/* A batond of another state version: it can still take the minimal handoff. */
		if (sscanf(answer, "baton-upgrade-ok %d", &version) == 1 && version > 0) {
			log_notice(
				"upgrade %s: the new binary keeps state version %d, this one %d: "
				"handing over listeners and workers only; a new generation follows",
				b->self_path, version, UPGRADE_STATE_VERSION);
			return 1;
		}
		log_error("upgrade %s: the new binary answered '%.*s' to %s, expected '%.*s'",
			  b->self_path, (int)strcspn(answer, "\n"), answer, UPGRADE_CHECK_OPTION,
			  (int)strcspn(expect, "\n"), expect);
		return -EPROTO;
	}
	return 0;
}

/*
 * The minimal handoff, understood by every batond whatever its state version (docs/DESIGN.md):
 * BATON_HANDOFF_LISTENERS="fd:name,..." and BATON_HANDOFF_WORKERS="pid:pgid:r|d,..." (ready or
 * draining). The new batond adopts the ready workers as the serving generation, the others as
 * draining, and at once rolls a fresh generation that drains the adopted one.
 */
static int upgrade_minimal(struct batond *b)
{
	_cleanup_free_ char *ls = NULL, *ws = NULL;
	size_t size = 64 + (size_t)ROLLOUT_MAX_RECORDS * 40, off = 0;
	int r;

	ls = malloc(b->cfg.n_listeners * (LISTENER_NAME_MAX + 16) + 1);
	ws = malloc(size);
	if (!ls || !ws)
		return log_error_errno(-ENOMEM, "upgrade: minimal handoff");
	ls[0] = ws[0] = '\0';
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		off += (size_t)sprintf(ls + off, "%s%d:%s", i ? "," : "", b->cfg.listeners[i].fd,
				       b->cfg.listeners[i].name);
	off = 0;
	for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);
		char kind;

		if (w->state == ROLLOUT_W_STARTING || w->state == ROLLOUT_W_READY)
			kind = 'r';
		else if (w->state == ROLLOUT_W_DRAINING || w->state == ROLLOUT_W_KILLED)
			kind = 'd';
		else
			continue;
		off += (size_t)snprintf(ws + off, size - off, "%s%d:%d:%c", off ? "," : "", w->pid,
					w->pgid, kind);
	}
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		(void)fd_set_cloexec(b->cfg.listeners[i].fd, false);
	(void)setenv("BATON_HANDOFF_LISTENERS", ls, 1);
	(void)setenv("BATON_HANDOFF_WORKERS", ws, 1);
	log_notice("upgrade: executing %s with the minimal handoff", b->self_path);
	(void)execve(b->self_path, b->argv, environ);
	r = -errno;
	(void)unsetenv("BATON_HANDOFF_LISTENERS");
	(void)unsetenv("BATON_HANDOFF_WORKERS");
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		(void)fd_set_cloexec(b->cfg.listeners[i].fd, true);
	return log_error_errno(r, "upgrade: exec %s: this batond keeps serving", b->self_path);
}

/* Everything the new image must keep open, CLOEXEC or not. */
static int upgrade_keep_fds(struct batond *b, int state_fd, int fallback_fd, bool keep)
{
	int r = 0;

	for (size_t i = 0; i < b->cfg.n_listeners && r >= 0; i++)
		r = fd_set_cloexec(b->cfg.listeners[i].fd, !keep);
	if (r >= 0)
		r = fd_set_cloexec(b->notify_fd, !keep);
	if (r >= 0 && b->control)
		r = fd_set_cloexec(control_fd(b->control), !keep);
	for (unsigned i = 0; r >= 0 && i < ROLLOUT_MAX_RECORDS; i++)
		if (channel_is_settled(b->extra[i].ch))
			r = fd_set_cloexec(channel_fd(b->extra[i].ch), !keep);
	if (r >= 0 && state_fd >= 0)
		r = fd_set_cloexec(state_fd, !keep);
	if (r >= 0 && fallback_fd >= 0)
		r = fd_set_cloexec(fallback_fd, !keep);
	return r;
}

static int upgrade_snapshot(struct batond *b, struct upgrade_state *st)
{
	unsigned serving = rollout_serving_gen(b->rollout);

	st->next_gen = 0;
	st->notify_fd = b->notify_fd;
	st->control_fd = b->control ? control_fd(b->control) : -1;
	memcpy(st->notify_address, b->notify_address, sizeof(st->notify_address));
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		const struct listener *l = &b->cfg.listeners[i];

		st->listeners[i] = (struct upgrade_listener){
			.fd = l->fd,
			.owns_path = l->owns_path,
			.path_dev = l->path_dev,
			.path_ino = l->path_ino,
		};
		memcpy(st->listeners[i].name, l->name, sizeof(st->listeners[i].name));
	}
	st->n_listeners = b->cfg.n_listeners;
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);

		if (w->state == ROLLOUT_W_FREE)
			continue;
		if (w->gen >= st->next_gen)
			st->next_gen = w->gen + 1;
		st->workers[st->n_workers++] = (struct upgrade_worker){
			.w = *w,
			.serving = w->gen == serving,
			/* A channel mid-conversation is not carried: its worker drains and respawns. */
			.channel_fd = channel_is_settled(b->extra[i].ch)
					      ? channel_fd(b->extra[i].ch)
					      : -1,
		};
	}
	return 0;
}

/*
 * SIGUSR2 or batonctl upgrade: exec the binary on disk in place, handing it the listeners and
 * the workers. Returns only if the upgrade did not happen: a negative errno, logged.
 */
static int batond_upgrade(struct batond *b)
{
	_cleanup_free_ struct upgrade_state *st = NULL;
	_cleanup_free_ char *text = NULL;
	_cleanup_close_ int state_fd = -1, fallback_fd = -1;
	char num[16];
	int n, r;

	if (rollout_starting_gen(b->rollout) || b->stop_begun) {
		log_warning("upgrade: refused while a generation starts or batond stops; "
			    "send SIGUSR2 again later");
		return -EAGAIN;
	}
	r = upgrade_preflight(b);
	if (r == 1)
		return upgrade_minimal(b);
	if (r < 0) {
		if (r != -EPROTO) /* the preflight said what was wrong */
			log_error_errno(r, "upgrade %s: preflight", b->self_path);
		log_error("upgrade %s: refused; this batond keeps serving", b->self_path);
		return r;
	}
	st = calloc(1, sizeof(*st));
	text = malloc(UPGRADE_STATE_MAX);
	if (!st || !text) {
		return log_error_errno(-ENOMEM, "upgrade: snapshot");
	}
	(void)upgrade_snapshot(b, st);
	n = upgrade_state_format(st, text, UPGRADE_STATE_MAX);
	if (n < 0) {
		return log_error_errno(n, "upgrade: write state");
	}
	state_fd = upgrade_state_seal(text, (size_t)n);
	if (state_fd < 0) {
		return log_error_errno(state_fd, "upgrade: seal state");
	}
	/* The running image, kept by fd: a new one that cannot read the state execs it back. */
	fallback_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	r = upgrade_keep_fds(b, state_fd, fallback_fd, true);
	if (r < 0) {
		log_error_errno(r, "upgrade: keep fds across exec");
		(void)upgrade_keep_fds(b, state_fd, fallback_fd, false);
		return r;
	}
	(void)snprintf(num, sizeof(num), "%d", state_fd);
	(void)setenv(UPGRADE_ENV_STATE, num, 1);
	if (fallback_fd >= 0) {
		(void)snprintf(num, sizeof(num), "%d", fallback_fd);
		(void)setenv(UPGRADE_ENV_FALLBACK, num, 1);
	}
	log_notice("upgrade: executing %s with %zu listeners and %zu workers", b->self_path,
		   st->n_listeners, st->n_workers);
	/* Signals stay blocked and pending across execve(): no SIGCHLD is lost meanwhile. */
	(void)execve(b->self_path, b->argv, environ);
	r = -errno;
	(void)unsetenv(UPGRADE_ENV_STATE);
	(void)unsetenv(UPGRADE_ENV_FALLBACK);
	(void)upgrade_keep_fds(b, state_fd, fallback_fd, false);
	return log_error_errno(r, "upgrade: exec %s: this batond keeps serving", b->self_path);
}

static int on_sigusr2(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	(void)s;
	log_info("SIGUSR2 from pid %u: upgrade", si->ssi_pid);
	(void)batond_upgrade(userdata);
	return 0;
}

/* On a failed takeover, the old image runs again with the same state; it knows the format. */
static void upgrade_fall_back(struct batond *b)
{
	const char *e = getenv(UPGRADE_ENV_FALLBACK);
	int fd = e ? atoi(e) : -1;

	if (fd < 0)
		return;
	(void)unsetenv(UPGRADE_ENV_FALLBACK);
	log_error("upgrade: falling back to the previous batond image");
	(void)fexecve(fd, b->argv, environ);
	log_error_errno(-errno, "upgrade: exec the previous image");
}

/* Takes an inherited listener fd under name: the configured one of that name, or a new one. */
static int take_listener(struct batond *b, int fd, const char *name, bool owns_path, dev_t dev,
			 ino_t ino)
{
	struct listener got, *l = NULL;
	int r;

	(void)fd_set_cloexec(fd, true);
	r = listener_from_fd(fd, name, &got);
	if (r < 0)
		return log_error_errno(r, "upgrade: listener %s (fd %d)", name, fd);
	got.inherited = false;
	got.owns_path = owns_path;
	got.path_dev = dev;
	got.path_ino = ino;
	for (size_t j = 0; j < b->cfg.n_listeners && !l; j++)
		if (b->cfg.listeners[j].fd < 0 && strcmp(b->cfg.listeners[j].name, name) == 0)
			l = &b->cfg.listeners[j];
	if (!l) {
		/* Inherited from systemd, or added with batonctl listen: keep handing it on. */
		if (b->cfg.n_listeners >= CONFIG_MAX_LISTENERS)
			return log_error_errno(-E2BIG, "upgrade: listener %s (fd %d)", name, fd);
		l = &b->cfg.listeners[b->cfg.n_listeners++];
	}
	*l = got;
	return 0;
}

/* The minimal handoff (see upgrade_minimal()): returns 1 if there was one, 0, or -errno. */
static int handoff_take_over(struct batond *b)
{
	const char *ls = getenv("BATON_HANDOFF_LISTENERS");
	const char *ws = getenv("BATON_HANDOFF_WORKERS");
	unsigned n = 0;
	int r;

	if (!ls || !ws)
		return 0;
	for (const char *p = ls; *p;) {
		char name[LISTENER_NAME_MAX + 1];
		int fd, len = 0;

		if (sscanf(p, "%d:%255[^,]%n", &fd, name, &len) != 2 || fd < 0)
			return log_error_errno(-EBADMSG, "upgrade: BATON_HANDOFF_LISTENERS");
		r = take_listener(b, fd, name, false, 0, 0);
		if (r < 0)
			return r;
		p += len;
		if (*p == ',')
			p++;
	}
	for (const char *p = ws; *p;) {
		struct rollout_worker w = { .index = 0 };
		char kind;
		int len = 0;

		if (sscanf(p, "%d:%d:%c%n", &w.pid, &w.pgid, &kind, &len) != 3 || w.pid <= 0)
			return log_error_errno(-EBADMSG, "upgrade: BATON_HANDOFF_WORKERS");
		/* Generation 1 serves until the fresh one is ready; 2 holds what was draining. */
		w.gen = kind == 'r' ? 1 : 2;
		w.state = kind == 'r' ? ROLLOUT_W_READY : ROLLOUT_W_DRAINING;
		w.index = n++ % b->cfg.rollout.n_workers;
		w.deadline_usec = kind == 'r' ? 0 : now_usec() + b->cfg.rollout.drain_timeout_usec;
		r = rollout_adopt(b->rollout, &w, kind == 'r');
		if (r < 0)
			return log_error_errno(r, "upgrade: adopt worker pid %d", w.pid);
		p += len;
		if (*p == ',')
			p++;
	}
	rollout_adopt_done(b->rollout, 3);
	(void)unsetenv("BATON_HANDOFF_LISTENERS");
	(void)unsetenv("BATON_HANDOFF_WORKERS");
	b->handoff = true;
	log_notice("upgrade: took over the minimal handoff: %zu listeners, %u workers; rolling a "
		   "fresh generation",
		   b->cfg.n_listeners, n);
	return 1;
}

/*
 * The new image's side: takes the listeners, the notify socket and the workers of the old one.
 * Returns 1 if there was an upgrade to take over, 0 if not, or a negative errno.
 */
static int upgrade_take_over(struct batond *b)
{
	_cleanup_free_ struct upgrade_state *st = NULL;
	_cleanup_free_ char *text = NULL;
	const char *e = getenv(UPGRADE_ENV_STATE);
	const char *f = getenv(UPGRADE_ENV_FALLBACK);
	int state_fd, n, r;

	if (!e)
		return handoff_take_over(b);
	state_fd = atoi(e);
	(void)unsetenv(UPGRADE_ENV_STATE);
	st = calloc(1, sizeof(*st));
	text = malloc(UPGRADE_STATE_MAX);
	if (!st || !text)
		return -ENOMEM;
	n = upgrade_state_read(state_fd, text, UPGRADE_STATE_MAX);
	(void)close(state_fd);
	if (n < 0)
		return log_error_errno(n, "upgrade: read state fd %d", state_fd);
	r = upgrade_state_parse(text, (size_t)n, st);
	if (r < 0)
		return log_error_errno(r, "upgrade: parse state");

	b->notify_fd = st->notify_fd;
	memcpy(b->notify_address, st->notify_address, sizeof(b->notify_address));
	(void)fd_set_cloexec(b->notify_fd, true);
	b->adopted_control_fd = st->control_fd;
	if (st->control_fd >= 0)
		(void)fd_set_cloexec(st->control_fd, true);
	for (size_t i = 0; i < st->n_listeners; i++) {
		const struct upgrade_listener *u = &st->listeners[i];

		r = take_listener(b, u->fd, u->name, u->owns_path, u->path_dev, u->path_ino);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < st->n_workers; i++) {
		const struct rollout_worker *w;

		r = rollout_adopt(b->rollout, &st->workers[i].w, st->workers[i].serving);
		if (r < 0)
			return log_error_errno(r, "upgrade: adopt worker pid %d",
					       st->workers[i].w.pid);
		w = rollout_find_pid(b->rollout, st->workers[i].w.pid);
		if (w) {
			struct worker_extra *x = &b->extra[record_id(b, w)];

			*x = (struct worker_extra){ .b = b, .id = record_id(b, w), .pid = w->pid };
			/* Made a channel again once the event loop exists (run()). */
			x->adopted_channel_fd = st->workers[i].channel_fd;
			if (x->adopted_channel_fd >= 0)
				(void)fd_set_cloexec(x->adopted_channel_fd, true);
		}
	}
	rollout_adopt_done(b->rollout, st->next_gen);
	if (f) {
		(void)close(atoi(f));
		(void)unsetenv(UPGRADE_ENV_FALLBACK);
	}
	b->adopted = true;
	log_notice("upgrade: took over %zu listeners and %zu workers (serving generation %u)",
		   st->n_listeners, st->n_workers, rollout_serving_gen(b->rollout));
	return 1;
}

static void json_string(FILE *f, const char *s)
{
	(void)fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			(void)fprintf(f, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			(void)fprintf(f, "\\u%04x", c);
		else
			(void)fputc(c, f);
	}
	(void)fputc('"', f);
}

static const char *ready_source(const struct batond *b)
{
	switch (b->cfg.rollout.ready_mode) {
	case ROLLOUT_READY_NOTIFY:
		return "notify";
	case ROLLOUT_READY_DELAY:
		return "delay";
	case ROLLOUT_READY_NONE:
		return "none";
	}
	return "?";
}

/* The accept queue as the kernel sees it: TCP_INFO for TCP, sock_diag for Unix. */
static void listener_queue(const struct listener *l, int backlog, long *ret_queued,
			   long *ret_backlog)
{
	unsigned q = 0, h = 0;

	*ret_queued = -1;
	*ret_backlog = l->kind == LISTENER_UDP ? -1 : backlog;
	if (l->kind == LISTENER_TCP) {
		struct tcp_info ti;
		socklen_t len = sizeof(ti);

		if (getsockopt(l->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) {
			*ret_queued = ti.tcpi_unacked;
			*ret_backlog = ti.tcpi_sacked;
		}
	} else if (l->kind == LISTENER_UNIX && drain_pending(l, &q, &h) == 0) {
		*ret_queued = q;
	}
}

static const char *gen_role(const struct batond *b, unsigned gen)
{
	if (gen == rollout_serving_gen(b->rollout))
		return "serving";
	if (gen == rollout_starting_gen(b->rollout))
		return "starting";
	return "draining";
}

/* batonctl status: text for people, or JSON (documented in batonctl(8)) for programs. */
static char *status_text(struct batond *b, bool json)
{
	char *buf = NULL;
	size_t size = 0;
	uint64_t now = now_usec();
	unsigned gens[ROLLOUT_MAX_GENERATIONS + 1];
	size_t n_gens = 0;
	FILE *f = open_memstream(&buf, &size);

	if (!f)
		return NULL;
	/* Generations in use, oldest first. */
	for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);
		bool seen = false;

		if (w->state == ROLLOUT_W_FREE)
			continue;
		for (size_t j = 0; j < n_gens; j++)
			seen |= gens[j] == w->gen;
		if (!seen && n_gens < ELEMENTSOF(gens))
			gens[n_gens++] = w->gen;
	}
	for (size_t i = 1; i < n_gens; i++)
		for (size_t j = i; j > 0 && gens[j - 1] > gens[j]; j--) {
			unsigned t = gens[j];

			gens[j] = gens[j - 1];
			gens[j - 1] = t;
		}

	if (json) {
		(void)fprintf(f,
			      "{\"version\":\"%s\",\"pid\":%d,\"uptime_sec\":%" PRIu64
			      ",\"serving_generation\":%u,\"starting_generation\":%u,"
			      "\"reload_pending\":%s,\"stopping\":%s,\"last_reload\":",
			      BATON_VERSION, (int)getpid(), (now - b->started_usec) / 1000000,
			      rollout_serving_gen(b->rollout), rollout_starting_gen(b->rollout),
			      rollout_reload_pending(b->rollout) ? "true" : "false",
			      b->stop_begun ? "true" : "false");
		if (b->last_reload_usec) {
			(void)fprintf(
				f, "{\"generation\":%u,\"ok\":%s,\"ago_sec\":%" PRIu64 ",\"text\":",
				b->last_reload_gen, b->last_reload_ok ? "true" : "false",
				(now - b->last_reload_usec) / 1000000);
			json_string(f, b->last_reload_text);
			(void)fputc('}', f);
		} else {
			(void)fputs("null", f);
		}
		(void)fputs(",\"generations\":[", f);
	} else {
		(void)fprintf(f, "batond %s, pid %d, up %" PRIu64 "s\n", BATON_VERSION,
			      (int)getpid(), (now - b->started_usec) / 1000000);
		if (b->last_reload_usec)
			(void)fprintf(f, "last reload: %s (%" PRIu64 "s ago)\n",
				      b->last_reload_text, (now - b->last_reload_usec) / 1000000);
		else
			(void)fprintf(f, "last reload: none\n");
		if (rollout_reload_pending(b->rollout))
			(void)fprintf(f, "reload pending\n");
	}
	for (size_t g = 0; g < n_gens; g++) {
		bool first = true;

		if (json)
			(void)fprintf(f, "%s{\"id\":%u,\"state\":\"%s\",\"workers\":[",
				      g ? "," : "", gens[g], gen_role(b, gens[g]));
		else
			(void)fprintf(f, "generation %u (%s):\n", gens[g], gen_role(b, gens[g]));
		for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
			const struct rollout_worker *w = rollout_worker_at(b->rollout, i);
			uint64_t up = w->spawned_usec ? (now - w->spawned_usec) / 1000000 : 0;
			const char *st = b->extra[i].status;

			if (w->state == ROLLOUT_W_FREE || w->gen != gens[g])
				continue;
			if (json) {
				(void)fprintf(f,
					      "%s{\"index\":%u,\"pid\":%d,\"state\":\"%s\","
					      "\"uptime_sec\":%" PRIu64 ",\"ready_source\":\"%s\","
					      "\"status\":",
					      first ? "" : ",", w->index, w->pid,
					      rollout_worker_state_to_string(w->state), up,
					      ready_source(b));
				json_string(f, st);
				(void)fputc('}', f);
			} else {
				(void)fprintf(f, "  worker %u: pid %d, %s, up %" PRIu64 "s%s%s\n",
					      w->index, w->pid,
					      rollout_worker_state_to_string(w->state), up,
					      *st ? ", status: " : "", st);
			}
			first = false;
		}
		if (json)
			(void)fputs("]}", f);
	}
	if (json)
		(void)fputs("],\"listeners\":[", f);
	else
		(void)fputs("listeners:\n", f);
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		const struct listener *l = &b->cfg.listeners[i];
		long queued, backlog;

		listener_queue(l, b->cfg.backlog, &queued, &backlog);
		if (json) {
			(void)fprintf(f, "%s{\"name\":", i ? "," : "");
			json_string(f, l->name);
			(void)fprintf(f, ",\"address\":");
			json_string(f, l->spec);
			(void)fprintf(f,
				      ",\"kind\":\"%s\",\"queued\":%ld,\"backlog\":%ld,"
				      "\"retiring\":%s}",
				      listener_kind_to_string(l->kind), queued, backlog,
				      b->retire_index == (int)i ? "true" : "false");
		} else {
			(void)fprintf(f, "  %s: %s", l->name, l->spec);
			if (queued >= 0)
				(void)fprintf(f, ", accept queue %ld/%ld", queued, backlog);
			if (b->retire_index == (int)i)
				(void)fputs(", retiring", f);
			(void)fputc('\n', f);
		}
	}
	if (json)
		(void)fputs("]}\n", f);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* The listener set changed: what spawns, REFRESH and the fd socket hand out follows it. */
static void listeners_changed(struct batond *b)
{
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++)
		if (b->extra[i].ch)
			channel_set_listeners(b->extra[i].ch, b->cfg.listeners, b->cfg.n_listeners);
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		struct stat st;

		b->listen_fds[i] = b->cfg.listeners[i].fd;
		b->listen_inodes[i] = fstat(b->listen_fds[i], &st) == 0 ? st.st_ino : 0;
	}
	if (b->fdsock) {
		int r;

		b->fdsock = fdsock_free(b->fdsock);
		r = fdsock_new(b->event, b->cfg.fd_socket, b->cfg.listeners, b->cfg.n_listeners,
			       b->cfg.fd_allow_uids, b->cfg.n_fd_allow_uids, b->cfg.fd_allow_gids,
			       b->cfg.n_fd_allow_gids, &b->fdsock);
		if (r < 0)
			log_error_errno(r, "fd socket %s", b->cfg.fd_socket);
	}
}

/* batonctl listen [NAME=]ADDRESS: bound now, handed to the next generation. */
static void control_listen(struct batond *b, struct control_client *cl, const char *arg)
{
	struct listener l;
	char reply[LISTENER_SPEC_MAX + LISTENER_NAME_MAX + 128];
	int r;

	if (b->cfg.n_listeners >= CONFIG_MAX_LISTENERS) {
		control_reply(cl, "failed too many listeners\n");
		return;
	}
	r = listener_parse(arg, (unsigned)b->cfg.n_listeners, &l);
	if (r < 0) {
		(void)snprintf(reply, sizeof(reply), "failed invalid listen address '%s': %s\n",
			       arg, strerror(-r));
		control_reply(cl, reply);
		return;
	}
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		if (strcmp(b->cfg.listeners[i].name, l.name) == 0) {
			(void)snprintf(reply, sizeof(reply), "failed listener name '%s' in use\n",
				       l.name);
			control_reply(cl, reply);
			return;
		}
	}
	r = listener_bind(&l, b->cfg.backlog);
	if (r < 0) {
		log_error_errno(r, "listen %s", l.spec);
		(void)snprintf(reply, sizeof(reply), "failed listen %s: %s\n", l.spec,
			       strerror(-r));
		control_reply(cl, reply);
		return;
	}
	b->cfg.listeners[b->cfg.n_listeners++] = l;
	listeners_changed(b);
	log_info("listening on %s (%s): added; workers get it at the next generation", l.spec,
		 l.name);
	(void)snprintf(reply, sizeof(reply),
		       "ok listening on %s (%s); workers get it at the next reload\n", l.spec,
		       l.name);
	control_reply(cl, reply);
}

static void answer_retire(struct control_client *cl, void *userdata)
{
	struct batond *b = userdata;

	if (control_client_get_data(cl) == CONTROL_WAIT_RETIRE)
		control_reply(cl, b->retire_reply);
}

/* Stage 2 of a retire; at zero or the deadline, stage 3: out of the set, our copy closed. */
static void retire_check(struct batond *b)
{
	struct listener *l = &b->cfg.listeners[b->retire_index];
	unsigned queued = 0, half_open = 0;
	uint64_t now = now_usec();
	char reply[512];
	int r;

	r = drain_pending(l, &queued, &half_open);
	if (r < 0)
		log_warning_errno(r, "retire: count connections waiting on %s, ignoring", l->spec);
	if (r >= 0 && queued + half_open > 0 && now < b->retire_deadline_usec) {
		r = sd_event_source_set_time(b->retire_timer, now + STOP_POLL_USEC);
		if (r >= 0)
			r = sd_event_source_set_enabled(b->retire_timer, SD_EVENT_ONESHOT);
		if (r >= 0)
			return;
	}
	/*
	 * Workers of running generations still hold their copies, so closing ours resets nothing;
	 * with new SYNs dropped, nothing more arrives before the last of them exits.
	 */
	if (queued + half_open > 0)
		(void)snprintf(
			reply, sizeof(reply),
			"ok retired %s (%s): %u queued and %u half-open left at the timeout\n",
			l->name, l->spec, queued, half_open);
	else
		(void)snprintf(reply, sizeof(reply),
			       "ok retired %s (%s): queue empty after %" PRIu64 "ms\n", l->name,
			       l->spec, (now - b->retire_started_usec) / 1000);
	log_info("%.*s", (int)strcspn(reply + 3, "\n"), reply + 3);
	listener_close(l);
	memmove(l, l + 1, (b->cfg.n_listeners - (size_t)b->retire_index - 1) * sizeof(*l));
	b->cfg.n_listeners--;
	b->retire_index = -1;
	listeners_changed(b);
	/* By data, not by pointer: a client that left meanwhile has been freed. */
	memcpy(b->retire_reply, reply, sizeof(reply));
	b->retire_reply[sizeof(b->retire_reply) - 1] = '\0';
	control_foreach_waiting(b->control, answer_retire, b);
}

static int on_retire_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s;
	(void)usec;
	retire_check(userdata);
	return 0;
}

/* batonctl retire NAME: the two-stage close for one listener while the others serve on. */
static void control_retire(struct batond *b, struct control_client *cl, const char *name)
{
	char reply[LISTENER_NAME_MAX + 128];
	int r;

	if (b->retire_index >= 0 || b->stop_begun) {
		control_reply(cl, "failed a retire or a stop is in progress\n");
		return;
	}
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		struct listener *l = &b->cfg.listeners[i];

		if (strcmp(l->name, name) != 0)
			continue;
		if (b->cfg.n_listeners == 1) {
			control_reply(cl,
				      "failed the last listener is retired by stopping batond\n");
			return;
		}
		r = drain_refuse_new(l);
		if (r < 0 && r != -EOPNOTSUPP) {
			(void)snprintf(reply, sizeof(reply),
				       "failed refuse new connections on %s: %s\n", l->spec,
				       strerror(-r));
			control_reply(cl, reply);
			return;
		}
		log_info("retire %s (%s): new connections refused; serving what is queued", l->name,
			 l->spec);
		b->retire_index = (int)i;
		control_client_set_data(cl, CONTROL_WAIT_RETIRE);
		b->retire_started_usec = now_usec();
		b->retire_deadline_usec = b->retire_started_usec + b->cfg.stop_timeout_usec;
		retire_check(b);
		return;
	}
	(void)snprintf(reply, sizeof(reply), "failed no listener named '%s'\n", name);
	control_reply(cl, reply);
}

/* One batonctl request. The reply's first word: ok, failed (exit 1) or error (exit 2). */
static void on_control(void *userdata, struct control_client *cl, const char *line)
{
	struct batond *b = userdata;
	_cleanup_free_ char *text = NULL;

	if (strcmp(line, "status") == 0 || strcmp(line, "status json") == 0) {
		_cleanup_free_ char *body = status_text(b, strcmp(line, "status json") == 0);

		if (!body || asprintf(&text, "ok\n%s", body) < 0) {
			text = NULL;
			control_reply(cl, "error out of memory\n");
			return;
		}
		control_reply(cl, text);
	} else if (strcmp(line, "reload") == 0 || strcmp(line, "reload nowait") == 0) {
		if (b->stop_begun) {
			control_reply(cl, "failed batond is stopping\n");
			return;
		}
		if (strcmp(line, "reload nowait") == 0) {
			control_reply(cl, "ok reload requested\n");
		} else {
			control_client_set_data(cl, CONTROL_WAIT_NEXT);
		}
		log_info("control: reload requested");
		(void)feed_simple(b, ROLLOUT_RELOAD, false);
	} else if (strcmp(line, "stop") == 0) {
		control_reply(cl, "ok stopping\n");
		log_info("control: stop requested");
		if (!b->stop_begun)
			stop_request(b, false);
	} else if (strcmp(line, "upgrade") == 0) {
		/* Written before the exec; the new image does not know this connection. */
		control_reply(cl, "ok upgrading\n");
		log_info("control: upgrade requested");
		/* Returns only if the upgrade did not happen; batond_upgrade() logged why. */
		(void)batond_upgrade(b);
	} else if (strncmp(line, "listen ", 7) == 0) {
		control_listen(b, cl, line + 7);
	} else if (strncmp(line, "retire ", 7) == 0) {
		control_retire(b, cl, line + 7);
	} else if (strcmp(line, "version") == 0) {
		control_reply(cl, "ok batond " BATON_VERSION "\n");
	} else {
		control_reply(cl,
			      "error unknown request (status, reload, stop, upgrade, version)\n");
	}
}

/*
 * einhorn's worker library acknowledges startup with one line on EINHORN_SOCK_PATH: a YAML (or
 * JSON) map with command "worker:ack" and its pid, '%' and newlines escaped as %25 and %0A
 * (lib/einhorn/client.rb). Returns the pid, or 0 if the line is not an ack.
 */
static int einhorn_ack_pid(const char *line)
{
	char text[CONTROL_REQUEST_MAX + 1];
	size_t n = 0;
	const char *p;
	long pid;

	for (p = line; *p && n < sizeof(text) - 1; p++) {
		if (p[0] == '%' && p[1] == '0' && p[2] == 'A') {
			text[n++] = '\n';
			p += 2;
		} else if (p[0] == '%' && p[1] == '2' && p[2] == '5') {
			text[n++] = '%';
			p += 2;
		} else {
			text[n++] = *p;
		}
	}
	text[n] = '\0';
	if (!strstr(text, "worker:ack"))
		return 0;
	p = strstr(text, "pid");
	if (!p)
		return 0;
	p += strcspn(p, "0123456789\n");
	if (*p < '0' || *p > '9')
		return 0;
	pid = strtol(p, NULL, 10);
	return pid > 0 && pid <= INT32_MAX ? (int)pid : 0;
}

static void on_einhorn(void *userdata, struct control_client *cl, const char *line)
{
	struct batond *b = userdata;
	int pid = einhorn_ack_pid(line);
	const struct rollout_worker *w = pid > 0 ? notify_sender(b, pid) : NULL;

	/* einhorn closes the connection after an ack without answering; so do we. */
	control_reply(cl, "");
	if (!w) {
		log_debug("einhorn socket: ignoring '%s'", line);
		return;
	}
	log_debug("generation %u worker %u (pid %d): worker:ack", w->gen, w->index, w->pid);
	if (b->cfg.ready_einhorn) {
		struct rollout_event ev = {
			.type = ROLLOUT_WORKER_READY,
			.now_usec = now_usec(),
			.pid = w->pid,
		};

		(void)batond_feed(b, &ev);
	}
}

static int einhorn_open(struct batond *b)
{
	int r;

	if (!(b->cfg.pass & SPAWN_PASS_EINHORN))
		return 0;
	/*
	 * Beside the control socket; a private directory of our own if there is none, or if it
	 * could not be bound (its path may be another batond's, and so would ours be).
	 */
	if (b->control && b->control_path[0]) {
		r = snprintf(b->einhorn_path, sizeof(b->einhorn_path), "%s.einhorn",
			     b->control_path);
		if (r < 0 || (size_t)r >= sizeof(b->einhorn_path))
			return log_error_errno(-ENAMETOOLONG, "einhorn socket for %s",
					       b->control_path);
	} else {
		char dir[] = "/tmp/baton-einhorn.XXXXXX";

		if (!mkdtemp(dir))
			return log_error_errno(-errno, "einhorn socket directory");
		_Static_assert(sizeof(dir) <= sizeof(b->einhorn_dir), "einhorn_dir too small");
		strcpy(b->einhorn_dir, dir);
		(void)snprintf(b->einhorn_path, sizeof(b->einhorn_path), "%s/sock", dir);
	}
	r = control_new(b->event, b->einhorn_path, -1, on_einhorn, b, &b->einhorn);
	if (r < 0)
		return log_error_errno(r, "einhorn socket %s", b->einhorn_path);
	return 0;
}

static int control_open(struct batond *b)
{
	int r;

	if (b->cfg.control) {
		if (strlen(b->cfg.control) >= sizeof(b->control_path))
			return log_error_errno(-ENAMETOOLONG, "control socket %s", b->cfg.control);
		strcpy(b->control_path, b->cfg.control);
	} else {
		r = control_default_path(b->cfg.name ?: CONTROL_NAME_DEFAULT, b->control_path,
					 sizeof(b->control_path));
		if (r < 0) {
			log_warning_errno(r,
					  "no runtime directory for the control socket; batonctl "
					  "needs --control");
			return 0;
		}
		/* The default directory may not exist yet (/run/baton, $XDG_RUNTIME_DIR/baton). */
		{
			char dir[sizeof(b->control_path)];
			char *slash;

			strcpy(dir, b->control_path);
			slash = strrchr(dir, '/');
			if (slash && slash != dir) {
				*slash = '\0';
				(void)mkdir(dir, 0755);
			}
		}
	}
	r = control_new(b->event, b->control_path, b->adopted_control_fd, on_control, b,
			&b->control);
	if (r < 0) {
		log_full_errno(b->cfg.control ? LOG_ERR : LOG_WARNING, r, "control socket %s%s",
			       b->control_path,
			       b->cfg.control ? "" : "; batonctl cannot reach this batond");
		return b->cfg.control ? r : 0;
	}
	b->adopted_control_fd = -1;
	return 0;
}

static int setup_signals(struct batond *b)
{
	static const int sigs[] = { SIGHUP, SIGTERM, SIGINT, SIGCHLD, SIGUSR2 };
	sigset_t mask;
	int r;

	/* sd-event takes signals through a signalfd: they must be blocked everywhere first. */
	(void)sigemptyset(&mask);
	for (size_t i = 0; i < ELEMENTSOF(sigs); i++)
		(void)sigaddset(&mask, sigs[i]);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	/* A worker that closed its end must not kill batond with SIGPIPE. */
	(void)signal(SIGPIPE, SIG_IGN);

	r = sd_event_add_signal(b->event, NULL, SIGHUP, on_sighup, b);
	if (r >= 0)
		r = sd_event_add_signal(b->event, NULL, SIGTERM, on_sigterm, b);
	if (r >= 0)
		r = sd_event_add_signal(b->event, NULL, SIGINT, on_sigterm, b);
	if (r >= 0)
		r = sd_event_add_signal(b->event, NULL, SIGCHLD, on_sigchld, b);
	if (r >= 0)
		r = sd_event_add_signal(b->event, NULL, SIGUSR2, on_sigusr2, b);
	return r;
}

/* Last resort on a fatal error: no worker may outlive batond unsupervised. */
static void kill_all_workers(struct batond *b)
{
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);

		if (w->pgid > 0 && w->state != ROLLOUT_W_FREE && w->state != ROLLOUT_W_SPAWNING &&
		    w->state != ROLLOUT_W_BACKOFF) {
			(void)kill(-w->pgid, SIGKILL);
			(void)kill(w->pid, SIGKILL);
			(void)waitpid(w->pid, NULL, 0);
		}
	}
}

/* Binds every listener; on failure the ones already bound are closed by batond_done(). */
static int bind_all(struct batond *b)
{
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		struct listener *l = &b->cfg.listeners[i];
		int r;

		if (l->fd >= 0) {
			/* Inherited: a filter left by an earlier stop would drop every new SYN. */
			if (l->kind != LISTENER_UNIX)
				(void)setsockopt(l->fd, SOL_SOCKET, SO_DETACH_FILTER, NULL, 0);
			b->listen_fds[i] = l->fd;
			continue;
		}
		r = listener_bind(l, b->cfg.backlog);
		if (r < 0)
			return log_error_errno(r, "listen %s", l->spec);
		b->listen_fds[i] = l->fd;
		log_info("listening on %s (%s)", l->spec, l->name);
	}
	if (b->cfg.n_listeners == 0) {
		log_error("no listener: give at least one --listen ADDRESS");
		return -EINVAL;
	}
	return 0;
}

/* A CLOCK_MONOTONIC timer source, created disabled, armed later by whoever needs it. */
static int add_off_timer(struct batond *b, sd_event_source **ret, uint64_t accuracy_usec,
			 sd_event_time_handler_t callback, const char *what)
{
	int r = sd_event_add_time(b->event, ret, CLOCK_MONOTONIC, UINT64_MAX, accuracy_usec,
				  callback, b);

	if (r < 0)
		return log_error_errno(r, "create %s", what);
	(void)sd_event_source_set_enabled(*ret, SD_EVENT_OFF);
	return 0;
}

static int run(struct batond *b)
{
	int r;

	if (!b->adopted) {
		b->notify_fd = notify_open(b->notify_address);
		if (b->notify_fd < 0)
			return log_error_errno(b->notify_fd, "open notify socket");
	}

	r = sd_event_new(&b->event);
	if (r < 0)
		return log_error_errno(r, "create event loop");
	r = setup_signals(b);
	if (r < 0)
		return log_error_errno(r, "set up signal handling");
	/* WATCHDOG=1 at half of WATCHDOG_USEC, from the loop itself: only while it runs. */
	r = sd_event_set_watchdog(b->event, 1);
	if (r < 0)
		log_warning_errno(r, "enable the service watchdog, ignoring");
	r = sd_event_add_io(b->event, &b->notify_source, b->notify_fd, EPOLLIN, on_notify, b);
	if (r < 0)
		return log_error_errno(r, "watch notify socket %s", b->notify_address);
	/* Accuracy 1us: deadlines are short (ready, drain), and the default slack is 250 ms. */
	r = add_off_timer(b, &b->timer, 1, on_timer, "timer");
	if (r < 0)
		return r;
	r = add_off_timer(b, &b->ready_poll, 1000, on_ready_poll, "readiness poll timer");
	if (r < 0)
		return r;
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		struct stat st;

		if (fstat(b->cfg.listeners[i].fd, &st) == 0)
			b->listen_inodes[i] = st.st_ino;
	}
	r = add_off_timer(b, &b->retire_timer, 1000, on_retire_timer, "retire timer");
	if (r < 0)
		return r;
	r = add_off_timer(b, &b->stop_timer, 1000, on_stop_timer, "stop timer");
	if (r < 0)
		return r;

	r = control_open(b);
	if (r < 0)
		return r;
	r = einhorn_open(b);
	if (r < 0)
		return r;
	if (b->cfg.fd_socket) {
		r = fdsock_new(b->event, b->cfg.fd_socket, b->cfg.listeners, b->cfg.n_listeners,
			       b->cfg.fd_allow_uids, b->cfg.n_fd_allow_uids, b->cfg.fd_allow_gids,
			       b->cfg.n_fd_allow_gids, &b->fdsock);
		if (r < 0)
			return log_error_errno(r, "fd socket %s", b->cfg.fd_socket);
	}

	if (b->cfg.pid_file) {
		r = pid_file_write(b->cfg.pid_file);
		if (r < 0)
			return log_error_errno(r, "write pid file %s", b->cfg.pid_file);
		b->pid_file_written = true;
	}

	log_info("batond %d%s: %u worker%s of %s, notify socket %s", (int)getpid(),
		 b->adopted ? " (upgraded)" : "", b->cfg.rollout.n_workers,
		 b->cfg.rollout.n_workers == 1 ? "" : "s", b->cfg.exec_path, b->notify_address);
	for (unsigned i = 0; b->adopted && i < ROLLOUT_MAX_RECORDS; i++) {
		struct worker_extra *x = &b->extra[i];
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);
		char label[CHANNEL_LABEL_MAX];

		if (x->adopted_channel_fd < 0 || w->state == ROLLOUT_W_FREE)
			continue;
		(void)snprintf(label, sizeof(label), "generation %u worker %u (pid %d)", w->gen,
			       w->index, w->pid);
		r = channel_adopt(b->event, x->adopted_channel_fd, w->pid, label, b->cfg.listeners,
				  b->cfg.n_listeners, &channel_ops, x, &x->ch);
		x->adopted_channel_fd = -1;
		if (r < 0)
			log_error_errno(r, "%s: take over the channel", label);
	}
	if (b->handoff) {
		/* Adopted without their state: replace them with a generation of our own at once. */
		(void)feed_simple(b, ROLLOUT_TIMER, false);
		(void)feed_simple(b, ROLLOUT_RELOAD, false);
	} else if (b->adopted) {
		/* Arms the deadlines the workers brought along; the reaper catches up on exits. */
		(void)feed_simple(b, ROLLOUT_TIMER, false);
		sysd_notify("MAINPID=%d\nREADY=1\nSTATUS=generation %u: serving; upgraded",
			    (int)getpid(), rollout_serving_gen(b->rollout));
	} else {
		(void)feed_simple(b, ROLLOUT_START, false);
	}

	r = sd_event_loop(b->event);
	if (r < 0) {
		log_error_errno(r, "event loop");
		kill_all_workers(b);
		return r;
	}
	return r;
}

static void batond_done(struct batond *b)
{
	/* Channels and the fd socket hold no listener of their own, but go first all the same. */
	for (unsigned i = 0; b->extra && i < ROLLOUT_MAX_RECORDS; i++)
		b->extra[i].ch = channel_free(b->extra[i].ch);
	b->fdsock = fdsock_free(b->fdsock);
	/* The final stop: only now is the last reference to each listener closed. */
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		listener_close(&b->cfg.listeners[i]);
	if (b->pid_file_written)
		(void)unlink(b->cfg.pid_file);
	b->control = control_free(b->control, false);
	b->einhorn = control_free(b->einhorn, false);
	if (b->einhorn_dir[0] && rmdir(b->einhorn_dir) < 0)
		log_warning_errno(-errno, "remove einhorn socket directory %s, ignoring",
				  b->einhorn_dir);
	b->timer = sd_event_source_unref(b->timer);
	b->stop_timer = sd_event_source_unref(b->stop_timer);
	b->ready_poll = sd_event_source_unref(b->ready_poll);
	b->retire_timer = sd_event_source_unref(b->retire_timer);
	b->notify_source = sd_event_source_unref(b->notify_source);
	b->event = sd_event_unref(b->event);
	close_fdp(&b->notify_fd);
	b->rollout = rollout_free(b->rollout);
	free(b->actions);
	free(b->queue);
	free(b->extra);
}

int main(int argc, char **argv)
{
	static struct batond b = { .notify_fd = -1, .adopted_control_fd = -1, .retire_index = -1 };
	int r;

	log_setup("batond");
	r = config_parse(argc, argv, &b.cfg);
	if (r == CONFIG_EXIT)
		return 0;
	if (r < 0)
		return 2;
	log_set_max_level(b.cfg.log_level);
	for (size_t i = 0; i < CONFIG_MAX_LISTENERS; i++)
		b.listen_fds[i] = -1;

	r = rollout_new(&b.cfg.rollout, &b.rollout);
	if (r < 0) {
		log_error_errno(r, "create rollout state");
		return 2;
	}
	b.actions = calloc(ROLLOUT_MAX_ACTIONS, sizeof(*b.actions));
	b.queue = calloc(QUEUE_MAX, sizeof(*b.queue));
	b.extra = calloc(ROLLOUT_MAX_RECORDS, sizeof(*b.extra));
	if (!b.actions || !b.queue || !b.extra) {
		log_error_errno(-ENOMEM, "allocate state");
		batond_done(&b);
		return 1;
	}
	spawn_raise_fd_limit();
	/* Orphans of our workers come to us, not to init: we reap them and nothing escapes. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		log_warning_errno(-errno, "become child subreaper, ignoring");

	b.argv = argv;
	b.started_usec = now_usec();
	if (readlink("/proc/self/exe", b.self_path, sizeof(b.self_path) - 1) < 0)
		log_warning_errno(-errno, "find own binary: upgrades will fail");
	r = upgrade_take_over(&b);
	if (r < 0) {
		/* Never leave the workers unsupervised: hand back to the image that ran them. */
		upgrade_fall_back(&b);
		batond_done(&b);
		return 1;
	}
	r = sysd_inherit(&b.cfg);
	if (r < 0) {
		batond_done(&b);
		return 2;
	}
	/* An address that cannot be bound is a configuration error: exit 2, nothing spawned. */
	r = bind_all(&b);
	if (r < 0) {
		batond_done(&b);
		return 2;
	}
	r = run(&b);
	batond_done(&b);
	if (r < 0)
		return 1;
	return b.exit_code;
}
