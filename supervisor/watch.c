/* SPDX-License-Identifier: MIT */
/* watch.c - --reload-on-change: inotify on paths; a reload once their changes have settled. */
#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batond.h"
#include "cleanup.h"
#include "log.h"
#include "loop.h"

/*
 * Each path gets two watches: its directory, which sees the path itself replaced (an atomic
 * rename, a symlink flipped to another release, Kubernetes' "..data" symlink swapped in a
 * ConfigMap volume), and what the path leads to, which sees writes in place (a file, or the
 * entries of a directory). Both are placed again after every change, since the path may lead
 * somewhere else now. What changed is decided by comparing signatures, not by the events: an
 * event says only that something in a watched place moved.
 */
#define WATCH_DIR_EVENTS                                                                    \
	(IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB | \
	 IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF)

struct watch_path {
	const char *path;
	uint64_t signature;
	int wd_dir, wd_target; /* -1: none */
};

struct watch {
	int fd;
	sd_event_source *io, *timer;
	uint64_t last_reload_usec;
	size_t n;
	struct watch_path p[CONFIG_MAX_WATCH];
};

#define MIX(h, v) ((h) = ((h) ^ (uint64_t)(v)) * UINT64_C(1099511628211))

static uint64_t mix_stat(uint64_t h, const struct stat *st)
{
	MIX(h, st->st_dev);
	MIX(h, st->st_ino);
	MIX(h, st->st_mode);
	MIX(h, st->st_size);
	MIX(h, st->st_mtim.tv_sec);
	MIX(h, st->st_mtim.tv_nsec);
	MIX(h, st->st_ctim.tv_sec);
	MIX(h, st->st_ctim.tv_nsec);
	return h;
}

uint64_t watch_signature(const char *path)
{
	uint64_t h = UINT64_C(14695981039346656037);
	_cleanup_(closedirp) DIR *d = NULL;
	struct dirent *e;
	struct stat st;

	if (stat(path, &st) < 0)
		return 0;
	h = mix_stat(h, &st);
	if (!S_ISDIR(st.st_mode) || !(d = opendir(path)))
		return h ? h : 1;
	/* readdir()'s order is the directory's own: it changes only when the entries do. */
	while ((e = readdir(d))) {
		struct stat est;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		for (const char *c = e->d_name; *c; c++)
			MIX(h, (unsigned char)*c);
		if (fstatat(dirfd(d), e->d_name, &est, 0) == 0)
			h = mix_stat(h, &est);
	}
	return h ? h : 1;
}

/* The directory that holds path: "." for a bare name. */
static void dir_of(const char *path, char *buf, size_t size)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		(void)snprintf(buf, size, ".");
	else if (slash == path)
		(void)snprintf(buf, size, "/");
	else
		(void)snprintf(buf, size, "%.*s", (int)(slash - path), path);
}

/* Places p's two watches again. Returns 0 or a negative errno for its directory. */
static int arm(struct watch *w, struct watch_path *p)
{
	char dir[PATH_MAX];

	dir_of(p->path, dir, sizeof(dir));
	p->wd_dir = inotify_add_watch(w->fd, dir, WATCH_DIR_EVENTS | IN_ONLYDIR);
	if (p->wd_dir < 0)
		return -errno;
	/* What the path leads to: gone for a moment during a swap, which the directory sees. */
	p->wd_target = inotify_add_watch(w->fd, p->path, WATCH_DIR_EVENTS);
	return 0;
}

static void arm_all(struct watch *w)
{
	/* A watch is per inode and shared by every path that leads there: all go, then all come. */
	for (size_t i = 0; i < w->n; i++) {
		if (w->p[i].wd_dir >= 0)
			(void)inotify_rm_watch(w->fd, w->p[i].wd_dir);
		if (w->p[i].wd_target >= 0)
			(void)inotify_rm_watch(w->fd, w->p[i].wd_target);
		w->p[i].wd_dir = w->p[i].wd_target = -1;
	}
	for (size_t i = 0; i < w->n; i++) {
		int r = arm(w, &w->p[i]);

		if (r < 0)
			log_warning_errno(r,
					  "reload-on-change %s: watch its directory, ignoring: "
					  "changes to it are not seen until it is back",
					  w->p[i].path);
	}
}

static int on_settled(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct batond *b = userdata;
	struct watch *w = b->watch;
	bool changed = false;

	(void)s;
	if (w->last_reload_usec && usec < w->last_reload_usec + WATCH_INTERVAL_USEC) {
		(void)loop_timer_arm(w->timer, w->last_reload_usec + WATCH_INTERVAL_USEC);
		return 0;
	}
	for (size_t i = 0; i < w->n; i++) {
		struct watch_path *p = &w->p[i];
		uint64_t sig = watch_signature(p->path);
		char target[PATH_MAX];

		if (sig == p->signature)
			continue;
		p->signature = sig;
		changed = true;
		if (!sig)
			log_info("reload-on-change: %s is gone", p->path);
		else if (realpath(p->path, target) && strcmp(target, p->path) != 0)
			log_info("reload-on-change: %s changed (now %s)", p->path, target);
		else
			log_info("reload-on-change: %s changed", p->path);
	}
	arm_all(w);
	if (!changed)
		return 0;
	if (stop_begun(b)) {
		log_info("reload-on-change: stopping, so no reload");
		return 0;
	}
	w->last_reload_usec = usec;
	batond_feed_simple(b, ROLLOUT_RELOAD, false);
	return 0;
}

static int on_inotify(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct batond *b = userdata;
	_Alignas(struct inotify_event) char buf[4096];

	(void)s;
	(void)revents;
	/* What moved does not matter here, only that something did: the signatures decide. */
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	/* Coalesced: one look once WATCH_SETTLE_USEC pass without a change. */
	(void)loop_timer_arm(b->watch->timer, loop_now_usec() + WATCH_SETTLE_USEC);
	return 0;
}

int watch_open(struct batond *b)
{
	struct watch *w;
	int r;

	if (b->cfg.n_reload_on_change == 0)
		return 0;
	w = calloc(1, sizeof(*w));
	if (!w)
		return log_error_errno(-ENOMEM, "reload-on-change");
	b->watch = w;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0)
		return log_error_errno(-errno, "reload-on-change: inotify");
	w->n = b->cfg.n_reload_on_change;
	for (size_t i = 0; i < w->n; i++) {
		struct watch_path *p = &w->p[i];

		p->path = b->cfg.reload_on_change[i];
		p->wd_dir = p->wd_target = -1;
		p->signature = watch_signature(p->path);
		if (!p->signature)
			return log_error_errno(-errno ? -errno : -ENOENT, "reload-on-change %s",
					       p->path);
		r = arm(w, p);
		if (r < 0)
			return log_error_errno(r, "reload-on-change %s: watch its directory",
					       p->path);
		log_info("reload-on-change: watching %s", p->path);
	}
	r = sd_event_add_io(b->event, &w->io, w->fd, EPOLLIN, on_inotify, b);
	if (r < 0)
		return log_error_errno(r, "reload-on-change: watch the inotify fd");
	r = loop_timer_new(b->event, 1000, on_settled, b, &w->timer);
	if (r < 0)
		return log_error_errno(r, "reload-on-change: create its timer");
	return 0;
}

void watch_close(struct batond *b)
{
	struct watch *w = b->watch;

	if (!w)
		return;
	sd_event_source_disable_unref(w->io);
	sd_event_source_disable_unref(w->timer);
	(void)safe_close(w->fd);
	free(w);
	b->watch = NULL;
}
