/* SPDX-License-Identifier: MIT */
/* upgrade_state.c - the state an old batond image hands to its replacement across execve(). */
#include "upgrade_state.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cleanup.h"

static const char *const state_names[] = {
	[ROLLOUT_W_STARTING] = "starting",
	[ROLLOUT_W_READY] = "ready",
	[ROLLOUT_W_DRAINING] = "draining",
	[ROLLOUT_W_KILLED] = "killed",
};

int upgrade_state_format(const struct upgrade_state *s, char *buf, size_t size)
{
	size_t off = 0;
	int n;

#define PUT(...)                                                  \
	do {                                                      \
		n = snprintf(buf + off, size - off, __VA_ARGS__); \
		if (n < 0 || (size_t)n >= size - off)             \
			return -E2BIG;                            \
		off += (size_t)n;                                 \
	} while (0)

	PUT("baton-state %d\nnext_gen %u\nnotify %d %s\n", UPGRADE_STATE_VERSION, s->next_gen,
	    s->notify_fd, s->notify_address);
	if (s->control_fd >= 0)
		PUT("control %d\n", s->control_fd);
	for (size_t i = 0; i < s->n_listeners; i++) {
		const struct upgrade_listener *l = &s->listeners[i];

		PUT("listener %d %d %" PRIu64 " %" PRIu64 " %s\n", l->fd, l->owns_path ? 1 : 0,
		    (uint64_t)l->path_dev, (uint64_t)l->path_ino, l->name);
	}
	for (size_t i = 0; i < s->n_workers; i++) {
		const struct upgrade_worker *u = &s->workers[i];
		const struct rollout_worker *w = &u->w;

		if ((unsigned)w->state >= ELEMENTSOF(state_names) || !state_names[w->state])
			continue; /* no process: a respawn the new image will do anew */
		PUT("worker %u %u %d %d %s %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %d\n", w->gen,
		    w->index, w->pid, w->pgid, state_names[w->state], u->serving ? 1 : 0,
		    w->spawned_usec, w->ready_usec, w->deadline_usec, u->channel_fd);
	}
	PUT("end\n");
#undef PUT
	return (int)off;
}

static int parse_state_name(const char *s, enum rollout_worker_state *ret)
{
	for (size_t i = 0; i < ELEMENTSOF(state_names); i++) {
		if (state_names[i] && strcmp(s, state_names[i]) == 0) {
			*ret = (enum rollout_worker_state)i;
			return 0;
		}
	}
	return -EBADMSG;
}

int upgrade_state_parse(const char *buf, size_t len, struct upgrade_state *ret)
{
	char line[512];
	size_t off = 0;
	bool header = false, end = false;

	memset(ret, 0, sizeof(*ret));
	ret->notify_fd = -1;
	ret->control_fd = -1;
	while (off < len && !end) {
		const char *nl = memchr(buf + off, '\n', len - off);
		size_t n = nl ? (size_t)(nl - (buf + off)) : len - off;
		char word[32], text[LISTENER_NAME_MAX + 1];
		int version, a, b, c, ch;
		unsigned u, v;
		uint64_t x, y, z;

		if (!nl || n >= sizeof(line))
			return -EBADMSG;
		memcpy(line, buf + off, n);
		line[n] = '\0';
		off += n + 1;

		if (!header) {
			if (sscanf(line, "baton-state %d", &version) != 1)
				return -EBADMSG;
			if (version != UPGRADE_STATE_VERSION)
				return -EPROTONOSUPPORT;
			header = true;
		} else if (sscanf(line, "next_gen %u", &u) == 1) {
			ret->next_gen = u;
		} else if (sscanf(line, "notify %d %127s", &a, ret->notify_address) == 2) {
			ret->notify_fd = a;
		} else if (sscanf(line, "control %d", &a) == 1 && a >= 0) {
			ret->control_fd = a;
		} else if (sscanf(line, "listener %d %d %" SCNu64 " %" SCNu64 " %n", &a, &b, &x, &y,
				  &c) == 4) {
			struct upgrade_listener *l;

			/* The name is the rest of the line: systemd's names may hold spaces. */
			if (ret->n_listeners >= CONFIG_MAX_LISTENERS || a < 0 || c <= 0 ||
			    strlen(line + c) == 0 || strlen(line + c) > LISTENER_NAME_MAX)
				return -EBADMSG;
			strcpy(text, line + c);
			l = &ret->listeners[ret->n_listeners++];
			l->fd = a;
			l->owns_path = b != 0;
			l->path_dev = (dev_t)x;
			l->path_ino = (ino_t)y;
			strcpy(l->name, text);
		} else if (sscanf(line,
				  "worker %u %u %d %d %31s %d %" SCNu64 " %" SCNu64 " %" SCNu64
				  " %d",
				  &u, &v, &a, &b, word, &c, &x, &y, &z, &ch) == 10) {
			struct upgrade_worker *w;

			if (ret->n_workers >= ROLLOUT_MAX_RECORDS)
				return -EBADMSG;
			w = &ret->workers[ret->n_workers++];
			w->w = (struct rollout_worker){
				.gen = u,
				.index = v,
				.pid = a,
				.pgid = b,
				.spawned_usec = x,
				.ready_usec = y,
				.deadline_usec = z,
			};
			w->serving = c != 0;
			w->channel_fd = ch >= 0 ? ch : -1;
			if (parse_state_name(word, &w->w.state) < 0)
				return -EBADMSG;
		} else if (strcmp(line, "end") == 0) {
			end = true;
		} else {
			return -EBADMSG;
		}
	}
	if (!header || !end || ret->notify_fd < 0)
		return -EBADMSG;
	return 0;
}

int upgrade_state_seal(const char *text, size_t len)
{
	_cleanup_close_ int fd = -1;
	size_t done = 0;

	fd = memfd_create("baton-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t n = write(fd, text + done, len - done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
	}
	/* Sealed: the new image reads exactly what the old one wrote, nobody can change it. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return -errno;
	return TAKE_FD(fd);
}

int upgrade_state_read(int fd, char *buf, size_t size)
{
	const int want = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	size_t done = 0;
	int seals;

	/* Only the sealed memfd the old image made: nothing can have changed it since. */
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0)
		return -errno;
	if ((seals & want) != want)
		return -EPERM;

	for (;;) {
		ssize_t n = pread(fd, buf + done, size - done, (off_t)done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
		if (done == size)
			return -E2BIG;
	}
	return (int)done;
}
