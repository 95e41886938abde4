/* SPDX-License-Identifier: MIT */
/* main.c - batond: configuration, listeners, event sources, the loop; batond.h maps the rest. */
#include "batond.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "cleanup.h"
#include "fdsock.h"
#include "inuse.h"
#include "listen_close.h"
#include "log.h"
#include "loop.h"
#include "spawn.h"
#include "watch.h"
#include "sysd.h"

/*
 * The data path, top to bottom: config_parse() validates the whole command line (nothing is
 * bound or spawned before); upgrade_take_over() or sysd_inherit() may bring listeners along;
 * bind_all() binds the rest; run() opens the notify, control and fd sockets and feeds
 * ROLLOUT_START to the rollout machine, whose actions (actions.c) spawn the workers; from then
 * on signals, worker events (events.c) and control requests (commands.c) drive the machine,
 * until a stop (stop.c) drains everything and batond_done() closes the last reference to each
 * listener.
 */

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s;
	(void)usec;
	batond_feed_simple(userdata, ROLLOUT_TIMER, false);
	return 0;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct batond *b = userdata;

	(void)s;
	if (stop_begun(b)) {
		log_warning("SIGHUP from pid %u while stopping: ignoring", si->ssi_pid);
		return 0;
	}
	log_info("SIGHUP from pid %u: reload", si->ssi_pid);
	batond_feed_simple(b, ROLLOUT_RELOAD, false);
	return 0;
}

static int on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct batond *b = userdata;

	(void)s;
	b->n_stops++;
	log_info("SIG%s from pid %u: %s", sigabbrev_np((int)si->ssi_signo) ?: "?", si->ssi_pid,
		 b->n_stops == 1 ? "graceful stop" : "stop now");
	stop_request(b, b->n_stops > 1);
	return 0;
}

static int on_sigusr2(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	(void)s;
	log_info("SIGUSR2 from pid %u: upgrade", si->ssi_pid);
	(void)upgrade_request(userdata);
	return 0;
}

static int setup_signals(struct batond *b)
{
	static const struct {
		int sig;
		sd_event_signal_handler_t fn;
	} handlers[] = {
		{ SIGHUP, on_sighup },		{ SIGTERM, on_sigterm }, { SIGINT, on_sigterm },
		{ SIGCHLD, events_on_sigchld }, { SIGUSR2, on_sigusr2 },
	};
	sigset_t mask;
	int r;

	/* sd-event takes signals through a signalfd: they must be blocked everywhere first. */
	(void)sigemptyset(&mask);
	for (size_t i = 0; i < ELEMENTSOF(handlers); i++)
		(void)sigaddset(&mask, handlers[i].sig);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	/* A worker that closed its end must not kill batond with SIGPIPE. */
	(void)signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < ELEMENTSOF(handlers); i++) {
		r = sd_event_add_signal(b->event, NULL, handlers[i].sig, handlers[i].fn, b);
		if (r < 0)
			return r;
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

/* Binds every listener; on failure the ones already bound are closed by batond_done(). */
static int bind_all(struct batond *b)
{
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		struct listener *l = &b->cfg.listeners[i];
		int r;

		if (l->fd >= 0) {
			/* Inherited: a filter left by an earlier stop would drop every new SYN. */
			r = l->kind != LISTENER_UNIX ? listen_close_accept_new(l->fd) : 0;
			if (r < 0)
				log_warning_errno(r, "take the stop's filter off %s, ignoring",
						  l->spec);
			continue;
		}
		r = listener_bind(l, b->cfg.backlog);
		if (r == -EADDRINUSE) {
			char record[128];

			/* Perhaps a dead batond's workers: say whose it is and what to do. */
			log_error_errno(r, "listen %s", l->spec);
			inuse_explain(l, adopt_record_path(&b->cfg, record, sizeof(record)) < 0
						 ? NULL
						 : record);
			return r;
		}
		if (r < 0)
			return log_error_errno(r, "listen %s", l->spec);
		log_info("listening on %s (%s)", l->spec, l->name);
	}
	if (b->cfg.n_listeners == 0) {
		log_error("no listener: give at least one --listen ADDRESS");
		return -EINVAL;
	}
	return 0;
}

/* The event loop and every source on it: signals, the machine's timer, the sockets. */
static int open_sources(struct batond *b)
{
	int r;

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
	/* Accuracy 1us: deadlines are short (ready, drain), and the default slack is 250 ms. */
	r = loop_timer_new(b->event, 1, on_timer, b, &b->timer);
	if (r < 0)
		return log_error_errno(r, "create the rollout timer");
	r = stop_open(b);
	if (r < 0)
		return r;
	/* The control socket first: einhorn's socket (events.c) is named after it. */
	r = commands_open(b);
	if (r < 0) {
		b->exit_code = 2; /* in use, or nowhere to put it: a configuration problem */
		return r;
	}
	r = events_open(b);
	if (r < 0)
		return r;
	r = metrics_open(b);
	if (r < 0) {
		b->exit_code = 2; /* an address this host cannot give, as for a listener */
		return r;
	}
	r = watch_open(b);
	if (r < 0) {
		b->exit_code = 2; /* a path that is not there: a configuration problem */
		return r;
	}
	if (b->cfg.fd_socket) {
		r = fdsock_new(b->event, b->cfg.fd_socket, b->cfg.listeners, b->cfg.n_listeners,
			       b->cfg.fd_allow_uids, b->cfg.n_fd_allow_uids, b->cfg.fd_allow_gids,
			       b->cfg.n_fd_allow_gids, &b->fdsock);
		if (r < 0)
			return log_error_errno(r, "fd socket %s", b->cfg.fd_socket);
	}
	return 0;
}

static int run(struct batond *b)
{
	int r;

	r = open_sources(b);
	if (r < 0)
		return r;
	batond_listeners_changed(b);
	stop_check_listeners(b);
	if (b->cfg.pid_file) {
		r = pid_file_write(b->cfg.pid_file);
		if (r < 0 && b->adopted) {
			/* Same pid across the exec: the file the old image wrote is still right. */
			log_warning_errno(r, "write pid file %s, keeping the previous one",
					  b->cfg.pid_file);
		} else if (r < 0 && b->recovered) {
			/*
			 * Workers taken over are serving: exiting would strand them. The old file
			 * names the batond that died, whose pid may be anyone's by now: it goes.
			 */
			log_error_errno(r, "write pid file %s, removing the dead batond's",
					b->cfg.pid_file);
			if (unlink(b->cfg.pid_file) < 0 && errno != ENOENT)
				log_warning_errno(-errno, "remove pid file %s", b->cfg.pid_file);
		} else if (r < 0) {
			/* Nothing is spawned yet: a path this host cannot give us, as for -c. */
			b->exit_code = 2;
			return log_error_errno(r, "write pid file %s", b->cfg.pid_file);
		}
		b->pid_file_written = r >= 0 || b->adopted;
	}
	log_info("batond %d%s: %u worker%s of %s, notify socket %s%s%s", (int)getpid(),
		 b->adopted	? " (upgraded)"
		 : b->recovered ? " (took over)"
				: "",
		 b->cfg.rollout.n_workers, b->cfg.rollout.n_workers == 1 ? "" : "s",
		 b->cfg.exec_path, b->notify_address, b->cfg.preload[0] ? ", preload " : "",
		 b->cfg.preload);
	upgrade_adopt_channels(b);
	if (b->handoff) {
		/* Adopted without their state: replace them with a generation of our own at once. */
		batond_feed_simple(b, ROLLOUT_TIMER, false);
		batond_feed_simple(b, ROLLOUT_RELOAD, false);
	} else if (b->adopted || b->recovered) {
		/* Arms the deadlines the workers brought along; the reaper catches up on exits. */
		adopt_watch(b);
		batond_feed_simple(b, ROLLOUT_TIMER, false);
		sysd_notify("MAINPID=%d\nREADY=1\nSTATUS=generation %u: serving; %s", (int)getpid(),
			    rollout_serving_gen(b->rollout),
			    b->adopted ? "upgraded" : "took over after a crash");
	} else {
		batond_feed_simple(b, ROLLOUT_START, false);
	}

	r = sd_event_loop(b->event);
	if (r < 0) {
		log_error_errno(r, "event loop");
		actions_kill_all(b);
		return r;
	}
	return r;
}

static void batond_done(struct batond *b)
{
	upgrade_close(b);
	/* Channels and the fd socket hold no listener of their own, but go first all the same. */
	actions_free(b);
	commands_close(b);
	metrics_close(b);
	watch_close(b);
	/* The final stop: only now is the last reference to each listener closed. */
	stop_release_filters(b);
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		listener_close(&b->cfg.listeners[i]);
	if (b->pid_file_written)
		(void)unlink(b->cfg.pid_file);
	/* Every worker is gone (or was killed): nothing is left to take over. */
	adopt_record_remove(b);
	events_close(b);
	stop_close(b);
	b->events = eventlog_free(b->events);
	b->event = sd_event_unref(b->event);
}

int main(int argc, char **argv)
{
	static struct batond b = {
		.notify_fd = -1,
		.adopted_control_fd = -1,
		.preflight_fd = -1,
		.preflight_pidfd = -1,
	};
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

	r = actions_new(&b);
	/* Numbers go on across an upgrade: the previous image says where it stopped. */
	b.events = r < 0 ? NULL : eventlog_new(upgrade_event_seq());
	if (r >= 0 && !b.events)
		r = -ENOMEM;
	if (r < 0) {
		log_error_errno(r, "create rollout state");
		batond_done(&b);
		return r == -ENOMEM ? 1 : 2;
	}
	if ((b.cfg.pass & SPAWN_PASS_INTERCEPT) && intercept_filter_init(&b.intercept, false) < 0) {
		log_error("--intercept: no seccomp filter for this architecture");
		batond_done(&b);
		return 2;
	}
	spawn_raise_fd_limit();
	/* Orphans of our workers come to us, not to init: we reap them and nothing escapes. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		log_warning_errno(-errno, "become child subreaper, ignoring");

	b.argv = argv;
	b.started_usec = loop_now_usec();
	upgrade_take_last_reload(&b);
	errno = 0;
	b.base_nice = getpriority(PRIO_PROCESS, 0);
	if (b.base_nice == -1 && errno != 0)
		b.base_nice = 0;
	if (readlink("/proc/self/exe", b.self_path, sizeof(b.self_path) - 1) < 0)
		log_warning_errno(-errno, "find own binary: upgrades will fail");
	r = upgrade_take_over(&b);
	if (r < 0) {
		/* Never leave the workers unsupervised: hand back to the image that ran them. */
		upgrade_fall_back(&b);
		batond_done(&b);
		return 1;
	}
	/* A batond that died may have left its workers serving: take them over, not the port. */
	if (r == 0) {
		r = adopt_take_over(&b);
		if (r < 0) {
			batond_done(&b);
			return 1;
		}
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
		return b.exit_code ? b.exit_code : 1;
	return b.exit_code;
}
