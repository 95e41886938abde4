/* SPDX-License-Identifier: MIT */
/* events.c - what workers say, turned into rollout events: notify, channel, einhorn, /proc. */
#include "batond.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"
#include "cleanup.h"
#include "control.h"
#include "drain_plan.h"
#include "duration.h"
#include "einhorn.h"
#include "log.h"
#include "loop.h"
#include "procscan.h"
#include "spawn.h"

#define READY_POLL_USEC	 (50 * 1000) /* between looks at starting workers, --ready listening */
#define NOTIFY_READS_MAX 64	     /* datagrams read per wakeup: signals and timers get a turn */

static void feed_ready(struct batond *b, pid_t pid)
{
	struct rollout_event ev = {
		.type = ROLLOUT_WORKER_READY,
		.now_usec = loop_now_usec(),
		.pid = pid,
	};

	batond_feed(b, &ev);
}

void events_ready_poll_arm(struct batond *b)
{
	if (!b->ready_poll || !b->cfg.ready_listening)
		return;
	if (loop_timer_arm(b->ready_poll, loop_now_usec() + READY_POLL_USEC) < 0)
		log_error("arm the readiness poll: workers will be ready only at their timeout");
}

/* --ready listening: a starting worker is ready once it (or a child) waits on a listener. */
static int on_ready_poll(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct batond *b = userdata;
	bool starting = false;

	(void)s;
	(void)usec;
	for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);
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
		feed_ready(b, w->pid);
	}
	if (starting)
		events_ready_poll_arm(b);
	return 0;
}

static void on_channel_ready(void *userdata)
{
	struct worker_extra *x = userdata;

	/* READY over the channel counts as READY=1 would (--ready notify). */
	if (x->b->cfg.ready_listening || x->b->cfg.ready_einhorn)
		return;
	feed_ready(x->b, x->pid);
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

const struct channel_ops events_channel_ops = {
	.ready = on_channel_ready,
	.status = on_channel_status,
	.drained = on_channel_drained,
	.closed = on_channel_closed,
};

int events_on_sigchld(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct batond *b = userdata;

	(void)s;
	(void)si;
	/* Reap everything: workers, and (as subreaper or PID 1) orphans handed to us. */
	for (;;) {
		struct rollout_event ev = { .type = ROLLOUT_WORKER_EXITED };
		const struct rollout_worker *w;
		struct worker_extra *x;
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
		x = &b->extra[batond_record_id(b, w)];
		worker_extra_release(x);
		ev.now_usec = loop_now_usec();
		ev.pid = pid;
		ev.signaled = WIFSIGNALED(status);
		ev.status = WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status);
		batond_feed(b, &ev);
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

/* The process MAINPID named exited: batond cannot reap it (not its child), so it says so here. */
static int on_main_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct worker_extra *x = userdata;
	struct batond *b = x->b;
	const struct rollout_worker *w = rollout_find_pid(b->rollout, x->main_pid);
	struct rollout_event ev = {
		.type = ROLLOUT_WORKER_EXITED,
		.now_usec = loop_now_usec(),
		.pid = x->main_pid,
	};

	siginfo_t si = { .si_pid = 0 };
	pid_t pgid;

	(void)s;
	(void)revents;
	/* batond may be its parent after all (a subreaper adopts orphans): then reap it here. */
	if (waitid(P_PIDFD, (id_t)fd, &si, WEXITED | WNOHANG) == 0 && si.si_pid > 0) {
		ev.signaled = si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED;
		ev.status = si.si_status;
	}
	x->main_source = sd_event_source_disable_unref(x->main_source);
	if (!w || batond_record_id(b, w) != x->id)
		return 0;
	if (si.si_pid == 0)
		log_info("generation %u worker %u: main pid %d exited (its parent reaped it: "
			 "status unknown)",
			 w->gen, w->index, (int)ev.pid);
	x->main_pid = 0;
	pgid = w->pgid;
	batond_feed(b, &ev);
	/* The worker is its main process: what is left of its group must not hold listeners. */
	if (pgid != ev.pid && batond_group_is_the_workers(0, pgid)) {
		log_info("process group %d: killing what is left after its main pid %d exited",
			 (int)pgid, (int)ev.pid);
		if (kill(-pgid, SIGKILL) < 0 && errno != ESRCH)
			log_warning_errno(-errno, "kill process group %d", (int)pgid);
	}
	return 0;
}

int events_watch_pidfd(struct batond *b, struct worker_extra *x, int pidfd_in, pid_t pid)
{
	_cleanup_close_ int pidfd = pidfd_in;
	sd_event_source *src = NULL;
	int r;

	r = sd_event_add_io(b->event, &src, pidfd, EPOLLIN, on_main_exit, x);
	if (r >= 0)
		r = sd_event_source_set_io_fd_own(src, true);
	if (r < 0) {
		(void)sd_event_source_disable_unref(src);
		return r;
	}
	TAKE_FD(pidfd);
	x->main_source = sd_event_source_disable_unref(x->main_source);
	x->main_source = src;
	x->main_pid = pid;
	return 0;
}

int events_watch_main(struct batond *b, struct worker_extra *x, pid_t pid, pid_t ancestor)
{
	_cleanup_close_ int pidfd = -1;
	int r;

	/* Pinned first, checked after: the check is then about the process the pidfd holds. */
	pidfd = pidfd_open(pid, 0);
	if (pidfd < 0)
		return -errno;
	r = procscan_is_descendant(pid, ancestor);
	if (r <= 0)
		return r;
	r = events_watch_pidfd(b, x, TAKE_FD(pidfd), pid);
	return r < 0 ? r : 1;
}

/*
 * MAINPID=: the worker's main process names another as the main one (a server that forks its
 * real master, say). Accepted only from the current main process, only for one of its
 * descendants, and only once that process is held by a pidfd: the check and every later
 * signal then concern the same process, whatever happens to the number.
 */
static void on_mainpid(struct batond *b, const struct rollout_worker *w, pid_t sender,
		       pid_t mainpid)
{
	struct worker_extra *x = &b->extra[batond_record_id(b, w)];
	struct rollout_event ev = {
		.type = ROLLOUT_WORKER_MAINPID,
		.now_usec = loop_now_usec(),
		.pid = w->pid,
		.new_pid = mainpid,
	};
	int r;

	if (sender != w->pid) {
		log_warning(
			"generation %u worker %u (pid %d): ignoring MAINPID=%d from pid %d: only "
			"the main process may name another",
			w->gen, w->index, w->pid, (int)mainpid, (int)sender);
		return;
	}
	r = events_watch_main(b, x, mainpid, w->pid);
	if (r <= 0) {
		log_warning("generation %u worker %u (pid %d): ignoring MAINPID=%d: %s", w->gen,
			    w->index, w->pid, (int)mainpid,
			    r < 0 ? strerror(-r) : "not a descendant of the worker");
		return;
	}
	log_info("generation %u worker %u: main pid is now %d (was %d)", w->gen, w->index,
		 (int)mainpid, w->pid);
	batond_feed(b, &ev);
}

static int on_notify(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct batond *b = userdata;

	(void)s;
	(void)revents;
	for (int i = 0; i < NOTIFY_READS_MAX; i++) {
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
		x = &b->extra[batond_record_id(b, w)];
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
		/* The shim's word counts from the process that gets the drain signal. */
		if (m.shim_drain != NOTIFY_SHIM_NONE && m.pid == w->pid)
			x->shim_drain = m.shim_drain;
		if (m.mainpid > 0 && m.mainpid != w->pid)
			on_mainpid(b, w, m.pid, m.mainpid);
		/* READY=1 counts only where it is the readiness asked for (--ready notify). */
		if (m.ready && !b->cfg.ready_listening && !b->cfg.ready_einhorn)
			feed_ready(b, w->pid);
	}
	return 0;
}

void events_check_drain_signal(struct batond *b, unsigned gen)
{
	static const enum drain_shim shim_of[] = {
		[NOTIFY_SHIM_NONE] = DRAIN_SHIM_UNKNOWN,
		[NOTIFY_SHIM_ARMED] = DRAIN_SHIM_ARMED,
		[NOTIFY_SHIM_SERVER] = DRAIN_SHIM_SERVER,
	};
	const struct rollout_worker *w = NULL;
	char timeout[DURATION_FORMAT_MAX], line[1024];
	struct drain_masks m;
	struct worker_extra *x;
	enum drain_verdict v;
	int r;

	/* A channel drains by DRAIN, not by signal; a drain timeout of 0 kills at once. */
	if ((b->cfg.pass & SPAWN_PASS_SCM) || b->cfg.rollout.drain_timeout_usec == 0)
		return;
	for (unsigned i = 0; !w && rollout_worker_at(b->rollout, i); i++) {
		const struct rollout_worker *c = rollout_worker_at(b->rollout, i);

		if (c->gen == gen && c->state == ROLLOUT_W_READY)
			w = c;
	}
	if (!w)
		return;
	/* The shim's word travels with its READY=1, which may still wait in the queue. */
	if (b->notify_fd >= 0)
		(void)on_notify(NULL, b->notify_fd, 0, b);
	x = &b->extra[batond_record_id(b, w)];
	r = procscan_signal_masks(w->pid, &m);
	if (r < 0) {
		log_debug("read the signal dispositions of worker pid %d: %s", w->pid,
			  strerror(-r));
		return;
	}
	v = drain_plan_judge(b->cfg.drain_signal, &m,
			     x->shim_drain >= 0 && x->shim_drain <= NOTIFY_SHIM_SERVER
				     ? shim_of[x->shim_drain]
				     : DRAIN_SHIM_UNKNOWN);
	drain_plan_describe(
		v, b->cfg.drain_signal, &m, w->pid, b->cfg.preload[0] != '\0',
		duration_format(b->cfg.rollout.drain_timeout_usec, timeout, sizeof(timeout)), line,
		sizeof(line));
	if (drain_plan_is_a_loss(v))
		log_warning("%s", line);
	else
		log_info("%s", line);
}

static void on_einhorn(void *userdata, struct control_client *cl, const char *line)
{
	struct batond *b = userdata;
	pid_t said = 0, peer = control_client_pid(cl);
	/* Who sent it is what the kernel says, not what the line says. */
	const struct rollout_worker *w =
		einhorn_ack_parse(line, &said) == 0 ? notify_sender(b, peer) : NULL;

	/* einhorn closes the connection after an ack without answering; so do we. */
	control_reply(cl, "");
	if (!w) {
		log_debug("einhorn socket: ignoring '%s' from pid %d", line, (int)peer);
		return;
	}
	if (said != peer)
		log_debug("einhorn socket: pid %d acked as pid %d; counted for pid %d", (int)peer,
			  (int)said, (int)peer);
	log_debug("generation %u worker %u (pid %d): worker:ack", w->gen, w->index, w->pid);
	if (b->cfg.ready_einhorn)
		feed_ready(b, w->pid);
}

/* A private 0700 directory for our sockets, made once; removed by events_close(). */
static int private_dir(struct batond *b)
{
	char dir[] = "/tmp/baton-XXXXXX";

	if (b->private_dir[0])
		return 0;
	if (!mkdtemp(dir))
		return log_error_errno(-errno, "make a private directory %s", dir);
	_Static_assert(sizeof(dir) <= sizeof(b->private_dir), "private_dir too small");
	memcpy(b->private_dir, dir, sizeof(dir));
	return 0;
}

/* Whether the worker's ids may search a directory of this stat, by its mode bits. */
static bool may_search(const struct stat *st, const struct spawn_creds *k)
{
	if (st->st_uid == k->uid)
		return st->st_mode & S_IXUSR;
	for (size_t i = 0; i < k->n_groups; i++)
		if (k->groups[i] == st->st_gid)
			return st->st_mode & S_IXGRP;
	if (st->st_gid == k->gid)
		return st->st_mode & S_IXGRP;
	return st->st_mode & S_IXOTH;
}

/*
 * --user: workers that run as another user must reach our socket at path. The file becomes
 * theirs (its mode stays 0600: still nobody else), and a private directory of ours lets them
 * through (0711: no listing). A directory that is not ours (the control socket's) must be
 * searchable by them already: batond(8) says so. Returns 0 or -errno.
 */
static int share_with_workers(struct batond *b, const char *path)
{
	const struct spawn_creds *k = &b->cfg.creds;
	char dir[PATH_MAX];
	char *slash;

	if (!k->set_ids || k->uid == geteuid())
		return 0;
	if (b->private_dir[0] && chmod(b->private_dir, 0711) < 0)
		return -errno;
	if (chown(path, k->uid, k->gid) < 0)
		return -errno;
	/* The mode bits of every directory above (ACLs are not read): a warning, not a verdict. */
	if (strlen(path) >= sizeof(dir))
		return 0;
	strcpy(dir, path);
	while ((slash = strrchr(dir, '/')) && slash != dir) {
		struct stat st;

		*slash = '\0';
		if (stat(dir, &st) == 0 && !may_search(&st, k)) {
			log_warning(
				"%s: uid %u cannot search %s (mode %04o, uid %u gid %u): workers "
				"of --user will not reach it; give batond a directory they can "
				"search",
				path, (unsigned)k->uid, dir, (unsigned)(st.st_mode & 07777),
				(unsigned)st.st_uid, (unsigned)st.st_gid);
			break;
		}
	}
	return 0;
}

/*
 * Where a socket of ours called what goes: beside the control socket ("PATH.what"), or in a
 * private directory of our own if there is none (its path may be another batond's, and so
 * would ours be).
 */
static int socket_path(struct batond *b, const char *what, char *ret, size_t size)
{
	int r;

	if (b->control && b->control_path[0])
		r = snprintf(ret, size, "%s.%s", b->control_path, what);
	else if ((r = private_dir(b)) >= 0)
		r = snprintf(ret, size, "%s/%s", b->private_dir, what);
	if (r < 0)
		return r;
	return (size_t)r >= size ? -ENAMETOOLONG : 0;
}

/* The NOTIFY_SOCKET workers report to: a path of ours by default, abstract on request. */
static int notify_socket_open(struct batond *b)
{
	char path[NOTIFY_ADDRESS_MAX];
	const char *want = b->cfg.notify_socket;
	struct stat st;
	int r;

	if (b->adopted) {
		const char *slash = strrchr(b->notify_address, '/');
		size_t dir_len = slash ? (size_t)(slash - b->notify_address) : 0;

		/* Taken over with the fd: the file (and a private directory) are ours as well. */
		if (dir_len == strlen("/tmp/baton-XXXXXX") && strcmp(slash, "/notify") == 0 &&
		    strncmp(b->notify_address, "/tmp/baton-", 11) == 0) {
			memcpy(b->private_dir, b->notify_address, dir_len);
			b->private_dir[dir_len] = '\0';
		}
	} else if (want && strcmp(want, "@") == 0) {
		r = notify_open(NULL, b->notify_address);
		if (r < 0)
			return log_error_errno(r, "open an abstract notify socket");
		b->notify_fd = r;
		return 0;
	} else {
		if (want)
			(void)snprintf(path, sizeof(path), "%s", want);
		else if ((r = socket_path(b, "notify", path, sizeof(path))) < 0)
			return log_error_errno(r, "notify socket");
		r = notify_open(path, b->notify_address);
		if (r < 0) {
			if (r == -EADDRINUSE || r == -EEXIST || r == -ENAMETOOLONG ||
			    r == -EACCES || r == -ENOENT)
				b->exit_code = 2; /* a path this host cannot give us */
			return log_error_errno(r, "notify socket %s", path);
		}
		b->notify_fd = r;
	}
	if (b->notify_address[0] == '/' && stat(b->notify_address, &st) == 0) {
		b->notify_owns_path = true;
		b->notify_dev = st.st_dev;
		b->notify_ino = st.st_ino;
	}
	/* After an upgrade the file already is the workers'. */
	if (b->notify_owns_path && !b->adopted) {
		r = share_with_workers(b, b->notify_address);
		if (r < 0)
			return log_error_errno(r, "notify socket %s: give it to uid %u",
					       b->notify_address, (unsigned)b->cfg.creds.uid);
	}
	return 0;
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
	r = socket_path(b, "einhorn", b->einhorn_path, sizeof(b->einhorn_path));
	if (r == -ENAMETOOLONG)
		b->exit_code = 2; /* the control socket's path leaves no room for ".einhorn" */
	if (r < 0)
		return log_error_errno(r, "einhorn socket");
	r = control_new(b->event, b->einhorn_path, -1, on_einhorn, b, &b->einhorn);
	if (r < 0) {
		b->exit_code = 2; /* a path beside the control socket's that we cannot have */
		return log_error_errno(r, "einhorn socket %s", b->einhorn_path);
	}
	/* Workers are einhorn's clients: with --user they are of another uid. */
	if (b->cfg.creds.set_ids)
		control_allow_uid(b->einhorn, b->cfg.creds.uid);
	r = share_with_workers(b, b->einhorn_path);
	if (r < 0)
		return log_error_errno(r, "einhorn socket %s: give it to uid %u", b->einhorn_path,
				       (unsigned)b->cfg.creds.uid);
	return 0;
}

int events_open(struct batond *b)
{
	int r;

	r = notify_socket_open(b);
	if (r < 0)
		return r;
	r = sd_event_add_io(b->event, &b->notify_source, b->notify_fd, EPOLLIN, on_notify, b);
	if (r < 0)
		return log_error_errno(r, "watch notify socket %s", b->notify_address);
	r = loop_timer_new(b->event, 1000, on_ready_poll, b, &b->ready_poll);
	if (r < 0)
		return log_error_errno(r, "create the readiness poll timer");
	return einhorn_open(b);
}

void events_close(struct batond *b)
{
	struct stat st;

	b->einhorn = control_free(b->einhorn, false);
	b->ready_poll = sd_event_source_unref(b->ready_poll);
	b->notify_source = sd_event_source_unref(b->notify_source);
	b->notify_fd = safe_close(b->notify_fd);
	/* Only our own file: another batond may have replaced it after a failed start of ours. */
	if (b->notify_owns_path && stat(b->notify_address, &st) == 0 &&
	    st.st_dev == b->notify_dev && st.st_ino == b->notify_ino &&
	    unlink(b->notify_address) < 0)
		log_warning_errno(-errno, "remove notify socket %s, ignoring", b->notify_address);
	b->notify_owns_path = false;
	if (b->private_dir[0] && rmdir(b->private_dir) < 0)
		log_warning_errno(-errno, "remove private directory %s, ignoring", b->private_dir);
	b->private_dir[0] = '\0';
}
