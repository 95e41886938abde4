/* SPDX-License-Identifier: MIT */
/* unix_server.c - a bounded Unix-socket server: bind, accept with credentials, cap, pause. */
#include "unix_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "listener.h"
#include "log.h"
#include "fdpass.h"

struct unix_server {
	sd_event *event;
	struct listener l; /* our own socket; listener_close() removes the file if still ours */
	sd_event_source *source;
	sd_event_source *pause;
	bool paused; /* out of fds: accept is off until the pause timer */
	unsigned n_clients, max_clients;
	char label[160];
	unix_server_accept_fn accept;
	void *userdata;
};

/* Accept is on unless we are full or paused out of fds. */
static void update_accepting(struct unix_server *s)
{
	bool on = !s->paused && s->n_clients < s->max_clients;

	(void)sd_event_source_set_enabled(s->source, on ? SD_EVENT_ON : SD_EVENT_OFF);
}

void unix_server_client_gone(struct unix_server *s)
{
	if (s->n_clients > 0)
		s->n_clients--;
	update_accepting(s);
}

static int on_pause_end(sd_event_source *t, uint64_t usec, void *userdata)
{
	struct unix_server *s = userdata;

	(void)t;
	(void)usec;
	s->paused = false;
	update_accepting(s);
	return 0;
}

static void pause_accept(struct unix_server *s, int error)
{
	uint64_t now = 0;

	/* Out of fds: a readable listening socket would wake us in a loop. Pause instead. */
	(void)log_warning_errno(error, "%s: accept, pausing for %llu ms", s->label,
				(unsigned long long)(UNIX_SERVER_EMFILE_PAUSE_USEC / 1000));
	(void)sd_event_now(s->event, CLOCK_MONOTONIC, &now);
	(void)sd_event_source_set_time(s->pause, now + UNIX_SERVER_EMFILE_PAUSE_USEC);
	(void)sd_event_source_set_enabled(s->pause, SD_EVENT_ONESHOT);
	s->paused = true;
	update_accepting(s);
}

static int on_accept(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct unix_server *s = userdata;

	(void)src;
	(void)revents;
	while (s->n_clients < s->max_clients && !s->paused) {
		_cleanup_close_ int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		struct ucred cred;
		int r;

		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE)
				pause_accept(s, -errno);
			else if (errno != EAGAIN)
				(void)log_warning_errno(-errno, "%s: accept", s->label);
			return 0;
		}
		r = proto_peer_cred(cfd, &cred);
		if (r < 0) {
			(void)log_warning_errno(r, "%s: peer credentials, closing", s->label);
			continue;
		}
		if (s->accept(s->userdata, TAKE_FD(cfd), &cred))
			s->n_clients++;
	}
	/* Full: the rest wait in the backlog; accept is back on when a client leaves. */
	update_accepting(s);
	return 0;
}

/* Binds and listens with the mode from birth; a stale socket file is replaced. */
static int bind_socket(struct listener *l, int type, mode_t mode, int backlog)
{
	_cleanup_close_ int fd = -1;
	bool is_path = l->addr.un.sun_path[0] != '\0';
	mode_t old;
	int r = 0;

	fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	old = umask(~mode & 0777);
	if (bind(fd, &l->addr.sa, l->addr_len) < 0) {
		r = -errno;
		if (r == -EADDRINUSE && is_path) {
			r = listener_unix_path_is_stale(l, type);
			if (r > 0 && unlink(l->addr.un.sun_path) < 0 && errno != ENOENT)
				r = -errno;
			if (r > 0)
				r = bind(fd, &l->addr.sa, l->addr_len) < 0 ? -errno : 0;
		}
	}
	(void)umask(old);
	if (r < 0)
		return r;
	if (listen(fd, backlog) < 0)
		return -errno;
	l->fd = TAKE_FD(fd);
	return 0;
}

/* The Unix socket at p->path, bound (or adopted) into l, its file recorded as ours. */
static int open_unix(struct listener *l, const struct unix_server_params *p, int *adopt_fd)
{
	char spec[8 + sizeof(((struct sockaddr_un *)NULL)->sun_path)];
	struct stat st;
	int r;

	if (!p->path || !*p->path)
		return -EINVAL;
	if (strlen(p->path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path))
		return -ENAMETOOLONG;
	(void)snprintf(spec, sizeof(spec), "unix:%s", p->path);
	r = listener_parse(spec, 0, l);
	if (r >= 0 && l->kind != LISTENER_UNIX)
		r = -EINVAL;
	if (r >= 0 && *adopt_fd >= 0)
		l->fd = TAKE_FD(*adopt_fd);
	else if (r >= 0)
		r = bind_socket(l, p->type, p->mode, p->backlog);
	/* Our file, by identity: listener_close() removes it only if it is still this one. */
	if (r >= 0 && l->addr.un.sun_path[0] != '\0' && stat(l->addr.un.sun_path, &st) == 0) {
		l->owns_path = true;
		l->path_dev = st.st_dev;
		l->path_ino = st.st_ino;
	}
	return r;
}

int unix_server_new(sd_event *e, const struct unix_server_params *p, struct unix_server **ret)
{
	_cleanup_close_ int adopt_fd = p->adopt_fd;
	_cleanup_close_ int tcp_fd = p->tcp ? TAKE_FD(p->tcp->fd) : -1;
	struct unix_server *s;
	int r;

	if (!e || !p->accept || p->max_clients == 0 || (p->tcp && tcp_fd < 0))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->l.fd = -1;
	if (p->tcp) {
		s->l = *p->tcp;
		s->l.fd = TAKE_FD(tcp_fd);
		r = 0;
	} else {
		r = open_unix(&s->l, p, &adopt_fd);
	}
	if (r >= 0)
		r = sd_event_add_io(e, &s->source, s->l.fd, EPOLLIN, on_accept, s);
	if (r >= 0)
		r = sd_event_add_time(e, &s->pause, CLOCK_MONOTONIC, UINT64_MAX, 1000, on_pause_end,
				      s);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->pause, SD_EVENT_OFF);
	if (r < 0) {
		(void)unix_server_free(s, false);
		return r;
	}
	s->event = sd_event_ref(e);
	s->max_clients = p->max_clients;
	(void)snprintf(s->label, sizeof(s->label), "%s",
		       p->label	 ? p->label
		       : p->path ? p->path
				 : s->l.spec);
	s->accept = p->accept;
	s->userdata = p->userdata;
	*ret = s;
	return 0;
}

struct unix_server *unix_server_free(struct unix_server *s, bool keep_file)
{
	if (!s)
		return NULL;
	s->source = sd_event_source_disable_unref(s->source);
	s->pause = sd_event_source_disable_unref(s->pause);
	if (keep_file)
		s->l.owns_path = false;
	listener_close(&s->l);
	s->event = sd_event_unref(s->event);
	free(s);
	return NULL;
}

int unix_server_fd(const struct unix_server *s)
{
	return s->l.fd;
}
