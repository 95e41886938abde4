/* SPDX-License-Identifier: MIT */
/* actions.c - the rollout machine's actions carried out: spawn, drain, kill, timer, report. */
#include "batond.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"
#include "cleanup.h"
#include "log.h"
#include "loop.h"
#include "procscan.h"
#include "spawn.h"
#include "sysd.h"

extern char **environ;

int actions_new(struct batond *b)
{
	int r = rollout_new(&b->cfg.rollout, &b->rollout);

	if (r < 0)
		return r;
	b->actions = calloc(ROLLOUT_MAX_ACTIONS, sizeof(*b->actions));
	b->queue = calloc(ACTIONS_QUEUE_MAX, sizeof(*b->queue));
	b->extra = calloc(ROLLOUT_MAX_RECORDS, sizeof(*b->extra));
	if (!b->actions || !b->queue || !b->extra)
		return -ENOMEM;
	return 0;
}

void actions_free(struct batond *b)
{
	for (unsigned i = 0; b->extra && i < ROLLOUT_MAX_RECORDS; i++)
		worker_extra_release(&b->extra[i]);
	b->timer = sd_event_source_unref(b->timer);
	b->rollout = rollout_free(b->rollout);
	free(b->actions);
	free(b->queue);
	free(b->extra);
	b->actions = NULL;
	b->queue = NULL;
	b->extra = NULL;
}

void worker_extra_release(struct worker_extra *x)
{
	x->ch = channel_free(x->ch);
	x->main_source = sd_event_source_disable_unref(x->main_source);
	x->main_pid = 0;
	x->intercept_source = sd_event_source_disable_unref(x->intercept_source);
}

int batond_signal_main(struct batond *b, pid_t pid, int sig)
{
	const struct rollout_worker *w = rollout_find_pid(b->rollout, pid);
	const struct worker_extra *x = w ? &b->extra[batond_record_id(b, w)] : NULL;

	if (x && x->main_source && x->main_pid == pid) {
		if (pidfd_send_signal(sd_event_source_get_io_fd(x->main_source), sig, NULL, 0) < 0)
			return -errno;
		return 0;
	}
	if (pid <= 1 || pid == getpid())
		return -EPERM; /* never a broadcast, never ourselves */
	if (kill(pid, sig) < 0)
		return -errno;
	return 0;
}

unsigned batond_record_id(const struct batond *b, const struct rollout_worker *w)
{
	return (unsigned)(w - rollout_worker_at(b->rollout, 0));
}

static void enqueue(struct batond *b, const struct rollout_event *ev)
{
	/* Bounded by construction: each queued event answers one SPAWNING record. */
	if (b->queue_len >= ACTIONS_QUEUE_MAX)
		abort();
	b->queue[(b->queue_head + b->queue_len++) % ACTIONS_QUEUE_MAX] = *ev;
}

static void report_spawned(struct batond *b, const struct rollout_action *a, pid_t pid)
{
	char line[128];

	(void)snprintf(line, sizeof(line), "generation %u worker %u: started pid %d", a->gen,
		       a->index, (int)pid);
	batond_event(b, &(struct eventlog_event){ .type = EVENT_WORKER_SPAWNED,
						  .level = LOG_DEBUG,
						  .generation = a->gen,
						  .worker = a->index,
						  .pid = pid,
						  .message = line });
}

/* --preload: a worker the shim can never reach is named, with what to use instead. */
static void warn_preload_cannot_reach(unsigned gen, const char *path)
{
	switch (intercept_exec_kind(path)) {
	case INTERCEPT_EXEC_STATIC:
		log_warning("generation %u: %s is statically linked (no PT_INTERP): the preload "
			    "shim cannot load into it, so its bind() gets no listener of batond's; "
			    "run it with --intercept instead",
			    gen, path);
		break;
	case INTERCEPT_EXEC_GO:
		log_warning("generation %u: %s is a Go program: it makes its system calls "
			    "itself, so the preload shim never sees its bind() and it gets no "
			    "listener of batond's; run it with --intercept instead",
			    gen, path);
		break;
	default:
		break;
	}
}

/* ROLLOUT_DO_SPAWN: fork/exec one worker; the result is queued as the machine's next event. */
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
		.user = b->cfg.user[0] ? b->cfg.user : NULL,
		.home = b->cfg.user_home[0] ? b->cfg.user_home : NULL,
		.gen = a->gen,
		.index = a->index,
	};
	struct rollout_event ev = { .worker = a->worker };
	bool intercept = b->cfg.pass & SPAWN_PASS_INTERCEPT;
	struct spawn_options opt = {
		.creds = &b->cfg.creds,
		.seccomp = intercept ? &b->intercept.prog : NULL,
		/* Only beside a serving generation is there anyone to yield the CPU to. */
		.nice_increment = rollout_serving_gen(b->rollout) ? b->cfg.start_nice : 0,
	};
	_cleanup_close_ int sfd = -1;
	char **envp = NULL;
	pid_t pid = 0;
	int r;

	/* Once per generation: the binary may have changed since the last one. */
	if (se.preload && a->index == 0)
		warn_preload_cannot_reach(a->gen, b->cfg.exec_path);
	/* Built again for each spawn: a Unix path listener may have come (batonctl listen). */
	if (intercept)
		(void)intercept_filter_init(
			&b->intercept,
			intercept_plan_guards_unlink(b->cfg.listeners, b->cfg.n_listeners));
	r = spawn_env_build(environ, &se, &envp);
	if (r >= 0 && scm)
		r = channel_socketpair(&bfd, &wfd);
	if (r >= 0) {
		/*
		 * With scm the worker inherits its channel end alone, at fd 3 (BATON_FD); with
		 * intercept nothing: it gets each listener when it binds the address.
		 */
		r = spawn_worker(b->cfg.exec_path, b->cfg.argv, envp,
				 scm	     ? &wfd
				 : intercept ? NULL
					     : b->listen_fds,
				 scm	     ? 1
				 : intercept ? 0
					     : b->cfg.n_listeners,
				 &opt, &pid);
		sfd = opt.seccomp_fd;
		envp = spawn_env_free(envp);
	}
	/* Ours must go at once: holding the worker's end would hide its exit from the channel. */
	wfd = safe_close(wfd);
	ev.now_usec = loop_now_usec();
	if (r < 0) {
		log_debug("generation %u worker %u: spawn %s: %s", a->gen, a->index,
			  b->cfg.exec_path, strerror(-r));
		ev.type = ROLLOUT_SPAWN_FAILED;
		ev.error = r;
		enqueue(b, &ev);
		return;
	}
	report_spawned(b, a, pid);
	ev.type = ROLLOUT_WORKER_SPAWNED;
	ev.pid = pid;
	if (a->worker < ROLLOUT_MAX_RECORDS) {
		struct worker_extra *x = &b->extra[a->worker];

		struct procscan_stat st = { .start_time = 0 };

		worker_extra_release(x);
		/* Read once, for the record a batond taking over after a crash checks it by. */
		(void)procscan_stat(pid, &st);
		*x = (struct worker_extra){
			.b = b,
			.id = a->worker,
			.pid = pid,
			.adopted_channel_fd = -1,
			.start_time = st.start_time,
		};
		if (scm) {
			char label[CHANNEL_LABEL_MAX];

			(void)snprintf(label, sizeof(label), "generation %u worker %u (pid %d)",
				       a->gen, a->index, (int)pid);
			r = channel_new(b->event, TAKE_FD(bfd), pid, label, b->cfg.listeners,
					b->cfg.n_listeners, &events_channel_ops, x, &x->ch);
			if (r < 0)
				log_error_errno(r, "%s: channel", label);
		}
		/* On failure the worker's intercepted calls fail (ENOSYS) and its start with them. */
		if (intercept)
			(void)intercept_watch(b, x, TAKE_FD(sfd));
	}
	events_ready_poll_arm(b);
	enqueue(b, &ev);
}

/* ROLLOUT_DO_DRAIN: over the channel if the worker has one; the drain signal otherwise. */
static void run_drain(struct batond *b, const struct rollout_action *a)
{
	const struct rollout_worker *w = rollout_find_pid(b->rollout, a->pid);
	struct worker_extra *x = w ? &b->extra[batond_record_id(b, w)] : NULL;
	const char *sig = sigabbrev_np(b->cfg.drain_signal) ?: "?";
	int r;

	if (x && x->ch && channel_drain(x->ch, b->cfg.rollout.drain_timeout_usec) == 0) {
		log_debug("sent DRAIN to worker pid %d", a->pid);
		return;
	}
	r = batond_signal_main(b, a->pid, b->cfg.drain_signal);
	if (r < 0 && r != -ESRCH)
		log_warning_errno(r, "send SIG%s to worker pid %d", sig, a->pid);
	else
		log_debug("sent SIG%s to worker pid %d", sig, a->pid);
}

/*
 * Whether process group pgid is still the worker's: its leader is batond's child not yet reaped
 * (no new process can get the number meanwhile), or the worker's main process, held by pidfd,
 * is in it (a group's number is not reused while it has a member). Otherwise kill(-pgid) could
 * reach a group that got the number later.
 */
bool batond_group_is_the_workers(pid_t pid, pid_t pgid)
{
	siginfo_t si = { .si_pid = 0 };
	struct procscan_stat st;

	if (pgid <= 1 || pgid == getpid())
		return false;
	if (waitid(P_PID, (id_t)pgid, &si, WEXITED | WNOHANG | WNOWAIT) == 0)
		return true; /* our child, alive or a zombie: either way not reusable */
	return pid != pgid && procscan_stat(pid, &st) == 0 && st.pgrp == pgid;
}

/*
 * ROLLOUT_DO_KILL: SIGKILL to a worker, its process group, and any descendant that left the
 * group (setsid()): a server's own children must not outlive it holding listeners.
 */
static void kill_worker_tree(struct batond *b, pid_t pid, pid_t pgid)
{
	_cleanup_free_ pid_t *tree = calloc(PROCSCAN_MAX_PROCS, sizeof(pid_t));
	_cleanup_free_ int *pidfds = calloc(PROCSCAN_MAX_PROCS, sizeof(int));
	size_t n = 0;
	int r;

	/* Found before the kills: once the worker is dead, its escaped children are orphans. */
	if (tree && pidfds) {
		r = procscan_tree(pid, pgid, tree, PROCSCAN_MAX_PROCS, &n);
		if (r < 0)
			log_warning_errno(r, "find the processes of worker pid %d, ignoring", pid);
	}
	/*
	 * Each one pinned by a pidfd, then checked to be still what the scan saw: in the tree
	 * (its parent is the worker or another of them) and outside the group, which gets its
	 * own kill. A number reused between the scan and the pidfd fails the check.
	 */
	bool group = batond_group_is_the_workers(pid, pgid);

	for (size_t i = 0; i < n; i++) {
		struct procscan_stat st;
		bool in_tree = false;

		pidfds[i] = -1;
		if (tree[i] == pid)
			continue;
		pidfds[i] = pidfd_open(tree[i], 0);
		/* The group's members get the group's kill, when the group is provably ours. */
		if (pidfds[i] < 0 || procscan_stat(tree[i], &st) < 0 ||
		    (group && st.pgrp == pgid)) {
			pidfds[i] = safe_close(pidfds[i]);
			continue;
		}
		for (size_t j = 0; j < n && !in_tree; j++)
			in_tree = st.ppid == tree[j] || st.pgrp == pgid;
		if (!in_tree)
			pidfds[i] = safe_close(pidfds[i]);
	}
	if (group) {
		r = kill(-pgid, SIGKILL);
		if (r < 0 && errno != ESRCH)
			log_warning_errno(-errno, "kill process group %d", pgid);
	}
	if (pid != pgid) {
		r = batond_signal_main(b, pid, SIGKILL);
		if (r < 0 && r != -ESRCH)
			log_warning_errno(r, "kill worker pid %d", pid);
	}
	for (size_t i = 0; i < n; i++) {
		if (pidfds[i] < 0)
			continue;
		if (pidfd_send_signal(pidfds[i], SIGKILL, NULL, 0) < 0 && errno != ESRCH)
			log_warning_errno(-errno, "kill pid %d of worker pid %d", tree[i], pid);
		else
			log_info("killed pid %d, of worker pid %d%s", tree[i], pid,
				 group ? " in another process group" : "");
		pidfds[i] = safe_close(pidfds[i]);
	}
}

/* What systemd hears (Type=notify and notify-reload): READY, RELOADING, STATUS, fd store. */
static void report_to_systemd(struct batond *b, const struct rollout_action *a, const char *line)
{
	switch (a->report) {
	case ROLLOUT_GEN_STARTING:
		if (a->reload)
			sysd_notify("RELOADING=1\nMONOTONIC_USEC=%" PRIu64
				    "\nSTATUS=generation %u: starting %u workers",
				    loop_now_usec(), a->gen, a->count);
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
 * A generation (or a respawned worker) is ready: its process groups get batond's own nice value
 * back (--start-nice lowered it at spawn). PRIO_PGRP reaches every thread and child in the
 * group, which a per-thread scheduler call would not.
 */
static void restore_priority(struct batond *b, const struct rollout_action *a)
{
	for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);

		if (w->state != ROLLOUT_W_READY || w->gen != a->gen ||
		    (a->report == ROLLOUT_WORKER_BACK && w->pid != a->pid) ||
		    !batond_group_is_the_workers(w->pid, w->pgid))
			continue;
		if (setpriority(PRIO_PGRP, (id_t)w->pgid, b->base_nice) < 0 && errno != ESRCH)
			log_warning_errno(-errno,
					  "give process group %d its priority back (nice %d)",
					  w->pgid, b->base_nice);
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
	case ROLLOUT_DO_DRAIN:
		run_drain(b, a);
		break;
	case ROLLOUT_DO_KILL:
		kill_worker_tree(b, a->pid, a->pgid);
		break;
	case ROLLOUT_DO_ARM_TIMER:
		r = loop_timer_arm(b->timer, a->usec);
		if (r < 0) {
			/* Without the timer no deadline fires: fail loudly rather than hang. */
			log_error_errno(r, "arm timer");
			(void)sd_event_exit(b->event, 1);
		}
		break;
	case ROLLOUT_DO_REPORT:
		if (b->cfg.start_nice > 0 &&
		    (a->report == ROLLOUT_GEN_READY || a->report == ROLLOUT_WORKER_BACK))
			restore_priority(b, a);
		level = rollout_describe(a, line, sizeof(line));
		batond_report_rollout(b, a, level, line);
		report_to_systemd(b, a, line);
		commands_on_report(b, a, line);
		if (a->report == ROLLOUT_GEN_READY && !a->reload)
			events_check_drain_signal(b, a->gen);
		break;
	case ROLLOUT_DO_EXIT:
		(void)snprintf(line, sizeof(line), "every worker is gone: exiting with status %d",
			       a->exit_code);
		batond_event(b, &(struct eventlog_event){ .type = EVENT_EXIT,
							  .level = LOG_INFO,
							  .exit_code = a->exit_code,
							  .message = line });
		b->exit_code = a->exit_code;
		(void)sd_event_exit(b->event, a->exit_code);
		break;
	}
}

void batond_feed(struct batond *b, const struct rollout_event *ev)
{
	enqueue(b, ev);
	if (b->feeding)
		return;
	b->feeding = true;
	while (b->queue_len > 0) {
		struct rollout_event e = b->queue[b->queue_head];
		size_t n = 0;
		int r;

		b->queue_head = (b->queue_head + 1) % ACTIONS_QUEUE_MAX;
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
	adopt_record_write(b);
}

void batond_feed_simple(struct batond *b, enum rollout_event_type type, bool force)
{
	struct rollout_event ev = { .type = type, .now_usec = loop_now_usec(), .force = force };

	batond_feed(b, &ev);
}

void actions_kill_all(struct batond *b)
{
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);

		if (w->pgid > 0 && w->state != ROLLOUT_W_FREE && w->state != ROLLOUT_W_SPAWNING &&
		    w->state != ROLLOUT_W_BACKOFF) {
			if (batond_group_is_the_workers(w->pid, w->pgid))
				(void)kill(-w->pgid, SIGKILL);
			(void)batond_signal_main(b, w->pid, SIGKILL);
			(void)waitpid(w->pid, NULL, 0);
		}
	}
}
