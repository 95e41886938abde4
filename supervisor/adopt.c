/* SPDX-License-Identifier: MIT */
/* adopt.c - the record a batond keeps of its workers, and a new batond taking them over. */
#include "batond.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "control.h"
#include "inuse.h"
#include "log.h"
#include "loop.h"
#include "procscan.h"

/*
 * The record, beside the control socket as CONTROL.record, rewritten (tmp file + rename) on every
 * change of the workers or listeners:
 *   baton-record 1
 *   batond PID START
 *   gen SERVING NEXT
 *   listener NAME SPEC                      (one per listener)
 *   worker GEN INDEX PID PGID START r|d     (ready or draining; one per live worker)
 * START is the process's start time from /proc/PID/stat: with the pid it names one process.
 */
#define ADOPT_RECORD_VERSION 1
#define ADOPT_FD_SCAN_MAX    4096 /* fds of one worker looked at for the listeners */
#define ADOPT_LINE_MAX	     (LISTENER_NAME_MAX + LISTENER_SPEC_MAX + 32)

int adopt_record_path(const struct config *c, char *ret, size_t size)
{
	char control[108];
	int n, r;

	if (c->no_control)
		return -ENOENT;
	if (c->control) {
		n = snprintf(ret, size, "%s.record", c->control);
	} else {
		r = control_default_path(c->name ?: CONTROL_NAME_DEFAULT, control, sizeof(control));
		if (r < 0)
			return r;
		n = snprintf(ret, size, "%s.record", control);
	}
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static char worker_kind(enum rollout_worker_state s)
{
	if (s == ROLLOUT_W_STARTING || s == ROLLOUT_W_READY)
		return 'r';
	if (s == ROLLOUT_W_DRAINING || s == ROLLOUT_W_KILLED)
		return 'd';
	return 0;
}

/* What the record says, folded into 64 bits (FNV-1a): unchanged, it need not be written. */
static uint64_t record_signature(const struct batond *b)
{
	uint64_t h = UINT64_C(14695981039346656037);

#define MIX(v) (h = (h ^ (uint64_t)(v)) * UINT64_C(1099511628211))
	MIX(rollout_serving_gen(b->rollout));
	MIX(b->cfg.n_listeners);
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		MIX(b->cfg.listeners[i].fd);
	for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);

		MIX(w->pid);
		MIX(w->gen);
		MIX(worker_kind(w->state));
	}
#undef MIX
	return h;
}

static void record_write_now(struct batond *b);

static int on_record_defer(sd_event_source *s, void *userdata)
{
	(void)s;
	record_write_now(userdata);
	return 0;
}

void adopt_record_write(struct batond *b)
{
	/*
	 * At the end of this turn of the loop, not now: a reload's spawns, readiness and exits
	 * come in a few turns, and each write is a rename (on ext4 it starts writeback).
	 */
	if (!b->record_path[0] || !b->rollout)
		return;
	if (b->record_written && record_signature(b) == b->record_signature && !b->record_failed)
		return;
	if (!b->record_defer && b->event &&
	    sd_event_add_defer(b->event, &b->record_defer, on_record_defer, b) >= 0)
		(void)sd_event_source_set_enabled(b->record_defer, SD_EVENT_OFF);
	if (b->record_defer && sd_event_source_set_enabled(b->record_defer, SD_EVENT_ONESHOT) >= 0)
		return;
	record_write_now(b); /* no loop yet (or no source): at once */
}

static void record_write_now(struct batond *b)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -1;
	struct procscan_stat self;
	FILE *f;
	unsigned next = 0;
	uint64_t sig;
	int r;

	if (!b->record_path[0] || !b->rollout)
		return;
	sig = record_signature(b);
	if (b->record_written && sig == b->record_signature && !b->record_failed)
		return;
	if (asprintf(&tmp, "%s.tmp", b->record_path) < 0) {
		tmp = NULL;
		return;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		if (!b->record_failed)
			log_warning_errno(-errno,
					  "write the worker record %s, ignoring: a batond "
					  "started after this one dies cannot take its "
					  "workers over",
					  tmp);
		b->record_failed = true;
		return;
	}
	f = fdopen(fd, "w");
	if (!f)
		return;
	fd = -1; /* the FILE has it now */
	(void)procscan_stat(getpid(), &self);
	(void)fprintf(f, "baton-record %d\nbatond %d %" PRIu64 "\n", ADOPT_RECORD_VERSION,
		      (int)getpid(), self.start_time);
	for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);

		if (w->state != ROLLOUT_W_FREE && w->gen >= next)
			next = w->gen + 1;
	}
	(void)fprintf(f, "gen %u %u\n", rollout_serving_gen(b->rollout), next);
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		(void)fprintf(f, "listener %s %s\n", b->cfg.listeners[i].name,
			      b->cfg.listeners[i].spec);
	for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);
		const struct worker_extra *x = &b->extra[i];
		struct procscan_stat st = { .start_time = x->start_time };
		char kind = worker_kind(w->state);

		if (!kind)
			continue;
		/* Known since the spawn; read here only for a main pid named later (MAINPID). */
		if ((x->pid != w->pid || !st.start_time) && procscan_stat(w->pid, &st) < 0)
			continue;
		(void)fprintf(f, "worker %u %u %d %d %" PRIu64 " %c\n", w->gen, w->index, w->pid,
			      w->pgid, st.start_time, kind);
	}
	r = fclose(f);
	/* rename() is atomic: a reader sees the old record or the whole new one. */
	if (r != 0 || rename(tmp, b->record_path) < 0) {
		if (!b->record_failed)
			log_warning_errno(-errno, "write the worker record %s, ignoring",
					  b->record_path);
		b->record_failed = true;
		(void)unlink(tmp);
		return;
	}
	b->record_failed = false;
	b->record_written = true;
	b->record_signature = sig;
}

void adopt_record_remove(struct batond *b)
{
	b->record_defer = sd_event_source_disable_unref(b->record_defer);
	/* Only a record this batond wrote (or found dead): never a live batond's. */
	if (b->record_path[0] && (b->record_written || b->recovered) &&
	    unlink(b->record_path) < 0 && errno != ENOENT)
		log_warning_errno(-errno, "remove the worker record %s, ignoring", b->record_path);
}

struct recorded_worker {
	struct rollout_worker w;
	uint64_t start;
	bool serving;
	int pidfd;
};

struct record {
	int pid;
	uint64_t start;
	unsigned serving, next;
	size_t n_listeners, n_workers;
	char names[CONFIG_MAX_LISTENERS][LISTENER_NAME_MAX + 1];
	char specs[CONFIG_MAX_LISTENERS][LISTENER_SPEC_MAX];
	struct recorded_worker workers[ROLLOUT_MAX_RECORDS];
};

/* Reads the record at path. Returns 0, -ENOENT (none) or -EBADMSG. */
static int record_read(const char *path, struct record *rec)
{
	_cleanup_(fclosep) FILE *f = fopen(path, "re");
	char line[ADOPT_LINE_MAX];
	int version = 0;

	if (!f)
		return -errno;
	if (!fgets(line, sizeof(line), f) || sscanf(line, "baton-record %d", &version) != 1 ||
	    version != ADOPT_RECORD_VERSION)
		return -EBADMSG;
	while (fgets(line, sizeof(line), f)) {
		struct recorded_worker *rw;
		unsigned long long start;
		char kind;

		if (sscanf(line, "batond %d %llu", &rec->pid, &start) == 2) {
			rec->start = start;
		} else if (sscanf(line, "gen %u %u", &rec->serving, &rec->next) == 2) {
			continue;
		} else if (strncmp(line, "listener ", 9) == 0) {
			if (rec->n_listeners >= CONFIG_MAX_LISTENERS ||
			    sscanf(line, "listener %255s %159s", rec->names[rec->n_listeners],
				   rec->specs[rec->n_listeners]) != 2)
				return -EBADMSG;
			rec->n_listeners++;
		} else if (strncmp(line, "worker ", 7) == 0) {
			if (rec->n_workers >= ROLLOUT_MAX_RECORDS)
				return -EBADMSG;
			rw = &rec->workers[rec->n_workers];
			*rw = (struct recorded_worker){ .pidfd = -1 };
			if (sscanf(line, "worker %u %u %d %d %llu %c", &rw->w.gen, &rw->w.index,
				   &rw->w.pid, &rw->w.pgid, &start, &kind) != 6 ||
			    (kind != 'r' && kind != 'd') || rw->w.pid <= 1 || rw->w.pgid <= 1)
				return -EBADMSG;
			rw->start = start;
			rw->w.state = kind == 'r' ? ROLLOUT_W_READY : ROLLOUT_W_DRAINING;
			rec->n_workers++;
		} else {
			return -EBADMSG;
		}
	}
	return 0;
}

/* Whether pid's environment (as exec gave it) says name=value: 1, 0, or a negative errno. */
static int environ_is(pid_t pid, const char *name, unsigned value)
{
	char got[16], want[16];
	int r = inuse_environ_get(pid, name, got, sizeof(got));

	if (r <= 0)
		return r;
	(void)snprintf(want, sizeof(want), "%u", value);
	return strcmp(got, want) == 0;
}

/*
 * Pins a recorded worker by pidfd and checks it is the same process: start time, and the
 * generation and index batond gave it in its environment. Returns 1 (it is), 0 (gone or another
 * process, said at path's name), or a negative errno (cannot tell: e.g. EACCES reading another
 * user's environ).
 */
static int worker_pin(struct recorded_worker *rw, const char *path)
{
	struct procscan_stat st;
	int r;

	rw->pidfd = pidfd_open(rw->w.pid, 0);
	if (rw->pidfd < 0 && errno != ESRCH)
		return -errno;
	/* After the pidfd: what is checked is the process the pidfd holds. */
	if (rw->pidfd < 0 || procscan_stat(rw->w.pid, &st) < 0) {
		log_info("worker record %s: generation %u worker %u (pid %d) is gone", path,
			 rw->w.gen, rw->w.index, rw->w.pid);
		return 0;
	}
	if (st.start_time != rw->start) {
		log_info("worker record %s: generation %u worker %u: pid %d is now another process "
			 "(started at tick %" PRIu64 ", the record says %" PRIu64 "), left alone",
			 path, rw->w.gen, rw->w.index, rw->w.pid, st.start_time, rw->start);
		return 0;
	}
	r = environ_is(rw->w.pid, "BATON_GENERATION", rw->w.gen);
	if (r > 0)
		r = environ_is(rw->w.pid, "BATON_WORKER", rw->w.index);
	/* A zombie (exited, not reaped yet) has no environment left to show: gone. */
	if (r == 0 || r == -ESRCH)
		log_info("worker record %s: generation %u worker %u: pid %d is %s, left alone",
			 path, rw->w.gen, rw->w.index, rw->w.pid,
			 r == 0 ? "another process (not BATON_GENERATION and BATON_WORKER as "
				  "recorded)"
				: "gone");
	return r == -ESRCH ? 0 : r;
}

/*
 * Finds a listener with canonical address spec among pid's fds and copies it with
 * pidfd_getfd() (CLOEXEC). Returns the new fd, -ENOENT, or a negative errno (-EPERM: no ptrace
 * right over pid).
 */
static int listener_fetch(int pidfd, pid_t pid, const char *name, const char *spec)
{
	_cleanup_(closedirp) DIR *d = NULL;
	char path[64];
	struct dirent *de;
	int first_error = -ENOENT;
	unsigned seen = 0;

	(void)snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d)) && seen++ < ADOPT_FD_SCAN_MAX) {
		char link[320], target[64];
		struct listener got;
		int target_fd = atoi(de->d_name), fd, on = 0;
		socklen_t len = sizeof(on);
		ssize_t n;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		(void)snprintf(link, sizeof(link), "%s/%s", path, de->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0 || strncmp(target, "socket:", 7) != 0)
			continue;
		fd = (int)syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);
		if (fd < 0) {
			if (first_error == -ENOENT)
				first_error = -errno;
			continue;
		}
		/* A listening stream socket or a UDP one, at the recorded address. */
		if (listener_from_fd(fd, name, &got) == 0 && strcmp(got.spec, spec) == 0 &&
		    (got.kind == LISTENER_UDP ||
		     (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on)))
			return fd; /* pidfd_getfd() sets FD_CLOEXEC */
		(void)close(fd);
	}
	return first_error;
}

int adopt_take_over(struct batond *b)
{
	_cleanup_free_ struct record *rec = calloc(1, sizeof(*rec));
	struct procscan_stat st;
	size_t n_live = 0;
	int r;

	if (!rec)
		return log_error_errno(-ENOMEM, "read the worker record");
	if (adopt_record_path(&b->cfg, b->record_path, sizeof(b->record_path)) < 0) {
		b->record_path[0] = '\0';
		return 0;
	}
	r = record_read(b->record_path, rec);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		log_warning_errno(r, "worker record %s: unreadable, ignoring", b->record_path);
		return 0;
	}
	/* The batond that wrote it still runs: not ours to take (its control socket says so). */
	if (rec->pid > 0 && procscan_stat(rec->pid, &st) == 0 && st.start_time == rec->start &&
	    rec->pid != getpid())
		return 0;
	for (size_t i = 0; i < rec->n_workers; i++) {
		struct recorded_worker *rw = &rec->workers[i];

		r = worker_pin(rw, b->record_path);
		if (r < 0) {
			char why[512];

			log_error_errno(
				r,
				"worker record %s: generation %u worker %u (pid %d) may still "
				"run, and cannot be checked",
				b->record_path, rw->w.gen, rw->w.index, rw->w.pid);
			inuse_access_reason(rw->w.pid, why, sizeof(why));
			log_error("%s; or stop pid %d, remove %s and start batond again", why,
				  rw->w.pid, b->record_path);
			r = -EPERM;
			goto fail;
		}
		if (r == 0)
			rw->pidfd = safe_close(rw->pidfd);
		else
			n_live++;
	}
	if (n_live == 0) {
		log_info("worker record %s: no worker of the batond before (pid %d) is left",
			 b->record_path, rec->pid);
		(void)unlink(b->record_path);
		return 0;
	}
	/* The listeners, from the first live worker that holds each. */
	for (size_t l = 0; l < rec->n_listeners; l++) {
		int fd = -ENOENT;
		pid_t from = 0;

		for (size_t i = 0; i < rec->n_workers && fd == -ENOENT; i++) {
			if (rec->workers[i].pidfd < 0)
				continue;
			from = rec->workers[i].w.pid;
			fd = listener_fetch(rec->workers[i].pidfd, from, rec->names[l],
					    rec->specs[l]);
		}
		if (fd == -EPERM) {
			char why[512];

			inuse_access_reason(from, why, sizeof(why));
			log_error("take over listener %s (%s) from pid %d, a worker of batond pid "
				  "%d: no ptrace right over it (pidfd_getfd()): %s",
				  rec->names[l], rec->specs[l], (int)from, rec->pid, why);
			r = fd;
			goto fail;
		}
		if (fd < 0)
			continue; /* no worker holds it: bound anew (or from systemd) */
		r = upgrade_take_listener(b, fd, rec->names[l], false, 0, 0);
		if (r < 0)
			goto fail;
	}
	for (size_t i = 0; i < rec->n_workers; i++) {
		struct recorded_worker *rw = &rec->workers[i];
		const struct rollout_worker *w;

		if (rw->pidfd < 0)
			continue;
		if (rw->w.state == ROLLOUT_W_DRAINING)
			rw->w.deadline_usec = loop_now_usec() + b->cfg.rollout.drain_timeout_usec;
		r = rollout_adopt(b->rollout, &rw->w, rw->w.gen == rec->serving);
		if (r < 0) {
			log_error_errno(r, "adopt generation %u worker %u (pid %d)", rw->w.gen,
					rw->w.index, rw->w.pid);
			goto fail;
		}
		w = rollout_find_pid(b->rollout, rw->w.pid);
		if (w) {
			unsigned id = batond_record_id(b, w);

			b->extra[id] = (struct worker_extra){
				.b = b,
				.id = id,
				.pid = w->pid,
				.adopted_channel_fd = -1,
				.adopted_pidfd = TAKE_FD(rw->pidfd),
				.start_time = rw->start,
			};
		}
	}
	rollout_adopt_done(b->rollout, rec->next);
	b->recovered = true;
	log_notice("took over %zu workers of batond pid %d, which died (serving generation %u)",
		   n_live, rec->pid, rollout_serving_gen(b->rollout));
	return 1;
fail:
	for (size_t i = 0; i < rec->n_workers; i++)
		rec->workers[i].pidfd = safe_close(rec->workers[i].pidfd);
	return r;
}

void adopt_watch(struct batond *b)
{
	for (unsigned i = 0; b->recovered && i < ROLLOUT_MAX_RECORDS; i++) {
		struct worker_extra *x = &b->extra[i];
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);
		int r;

		if (w->state == ROLLOUT_W_FREE || !x->b || x->adopted_pidfd <= 0)
			continue;
		/* Not batond's children: their exits come through the pidfds. */
		r = events_watch_pidfd(b, x, x->adopted_pidfd, w->pid);
		x->adopted_pidfd = -1;
		if (r < 0)
			log_error_errno(r, "generation %u worker %u (pid %d): watch its exit",
					w->gen, w->index, w->pid);
	}
}
