/* SPDX-License-Identifier: MIT */
/* control.c - the control socket: bounded clients, one line each, replies written in full. */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "listener.h"
#include "log.h"

#define CONTROL_EMFILE_PAUSE_USEC (1000 * 1000) /* accept paused this long when out of fds */

struct control_client {
	struct control *ctl;
	struct control_client *next;
	int fd;
	sd_event_source *source;
	char in[CONTROL_REQUEST_MAX + 1];
	size_t in_len;
	bool asked; /* the request line was handed to the callback */
	char *out;
	size_t out_len, out_off;
	long data;
	uid_t uid;
	pid_t pid;
};

struct control {
	sd_event *event;
	struct listener l;
	sd_event_source *source;
	sd_event_source *pause;
	control_request_fn fn;
	void *userdata;
	struct control_client *clients;
	unsigned n_clients;
};

static void client_free(struct control_client *cl)
{
	struct control *c = cl->ctl;

	for (struct control_client **p = &c->clients; *p; p = &(*p)->next) {
		if (*p == cl) {
			*p = cl->next;
			break;
		}
	}
	/* A slot is free again: take the next connection waiting in the backlog. */
	if (c->n_clients-- == CONTROL_MAX_CLIENTS)
		(void)sd_event_source_set_enabled(c->source, SD_EVENT_ON);
	sd_event_source_disable_unref(cl->source);
	close_fdp(&cl->fd);
	free(cl->out);
	free(cl);
}

static int client_write(struct control_client *cl)
{
	while (cl->out_off < cl->out_len) {
		ssize_t n = send(cl->fd, cl->out + cl->out_off, cl->out_len - cl->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return sd_event_source_set_io_events(cl->source, EPOLLOUT);
			return -errno;
		}
		cl->out_off += (size_t)n;
	}
	client_free(cl);
	return 0;
}

static int on_client(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct control_client *cl = userdata;
	char *nl;
	ssize_t n;

	(void)s;
	(void)fd;
	if (cl->out) {
		if (client_write(cl) < 0)
			client_free(cl);
		return 0;
	}
	if (revents & (EPOLLHUP | EPOLLERR) && !(revents & EPOLLIN)) {
		client_free(cl);
		return 0;
	}
	if (cl->asked) {
		/* Waiting for our reply: anything more is ignored, EOF means the client left. */
		char sink[256];

		n = recv(cl->fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			client_free(cl);
		return 0;
	}
	n = recv(cl->fd, cl->in + cl->in_len, CONTROL_REQUEST_MAX - cl->in_len, MSG_DONTWAIT);
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			client_free(cl);
		return 0;
	}
	if (n == 0) {
		client_free(cl);
		return 0;
	}
	cl->in_len += (size_t)n;
	cl->in[cl->in_len] = '\0';
	nl = memchr(cl->in, '\n', cl->in_len);
	if (!nl) {
		if (cl->in_len >= CONTROL_REQUEST_MAX)
			control_reply(cl, "error request too long\n");
		return 0;
	}
	*nl = '\0';
	cl->asked = true;
	log_debug("control: pid %d uid %u: %s", (int)cl->pid, (unsigned)cl->uid, cl->in);
	cl->ctl->fn(cl->ctl->userdata, cl, cl->in);
	return 0;
}

static int on_pause_end(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct control *c = userdata;

	(void)s;
	(void)usec;
	return sd_event_source_set_enabled(c->source, SD_EVENT_ON);
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct control *c = userdata;

	(void)s;
	(void)revents;
	while (c->n_clients < CONTROL_MAX_CLIENTS) {
		_cleanup_close_ int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		struct control_client *cl;
		struct ucred cred;
		socklen_t len = sizeof(cred);
		int r;

		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				uint64_t now;

				/* Out of fds: pause instead of spinning on a readable socket. */
				log_warning_errno(-errno, "control: accept, pausing for 1s");
				(void)sd_event_now(c->event, CLOCK_MONOTONIC, &now);
				(void)sd_event_source_set_enabled(c->source, SD_EVENT_OFF);
				(void)sd_event_source_set_time(c->pause,
							       now + CONTROL_EMFILE_PAUSE_USEC);
				(void)sd_event_source_set_enabled(c->pause, SD_EVENT_ONESHOT);
			}
			return 0;
		}
		if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
			continue;
		if (cred.uid != 0 && cred.uid != getuid()) {
			log_warning("control: refusing pid %d uid %u (only root and uid %u)",
				    (int)cred.pid, (unsigned)cred.uid, (unsigned)getuid());
			continue;
		}
		cl = calloc(1, sizeof(*cl));
		if (!cl)
			return 0;
		cl->ctl = c;
		cl->uid = cred.uid;
		cl->pid = cred.pid;
		r = sd_event_add_io(c->event, &cl->source, cfd, EPOLLIN, on_client, cl);
		if (r < 0) {
			free(cl);
			continue;
		}
		cl->fd = TAKE_FD(cfd);
		cl->next = c->clients;
		c->clients = cl;
		c->n_clients++;
	}
	/* Full: the rest wait in the listen backlog, and we sleep until a client leaves. */
	(void)sd_event_source_set_enabled(c->source, SD_EVENT_OFF);
	return 0;
}

void control_reply(struct control_client *cl, const char *text)
{
	size_t n = strlen(text);

	if (cl->out)
		return;
	if (n > CONTROL_REPLY_MAX)
		n = CONTROL_REPLY_MAX;
	cl->out = malloc(n ? n : 1);
	if (!cl->out) {
		client_free(cl);
		return;
	}
	memcpy(cl->out, text, n);
	cl->out_len = n;
	if (client_write(cl) < 0)
		client_free(cl);
}

void control_client_set_data(struct control_client *cl, long data)
{
	cl->data = data;
}

long control_client_get_data(const struct control_client *cl)
{
	return cl->data;
}

void control_foreach_waiting(struct control *c, void (*fn)(struct control_client *, void *),
			     void *userdata)
{
	struct control_client *cl = c ? c->clients : NULL;

	while (cl) {
		struct control_client *next = cl->next; /* fn may reply, which frees cl */

		if (cl->asked && !cl->out)
			fn(cl, userdata);
		cl = next;
	}
}

int control_fd(const struct control *c)
{
	return c->l.fd;
}

int control_new(sd_event *e, const char *path, int listen_fd, control_request_fn fn, void *userdata,
		struct control **ret)
{
	_cleanup_free_ struct control *c = calloc(1, sizeof(*c));
	char spec[8 + sizeof(c->l.addr.un.sun_path)];
	int r;

	if (!c)
		return -ENOMEM;
	if (strlen(path) >= sizeof(c->l.addr.un.sun_path))
		return -ENAMETOOLONG;
	(void)snprintf(spec, sizeof(spec), "unix:%s", path);
	r = listener_parse(spec, 0, &c->l);
	if (r < 0)
		return r;
	if (listen_fd >= 0) {
		c->l.fd = listen_fd;
		c->l.owns_path = true;
		{
			struct stat st;

			if (stat(path, &st) == 0) {
				c->l.path_dev = st.st_dev;
				c->l.path_ino = st.st_ino;
			}
		}
	} else {
		mode_t old = umask(0177); /* 0600 from birth: no window where others can connect */

		r = listener_bind(&c->l, CONTROL_MAX_CLIENTS);
		(void)umask(old);
		if (r < 0)
			return r;
	}
	r = sd_event_add_io(e, &c->source, c->l.fd, EPOLLIN, on_accept, c);
	if (r < 0) {
		if (listen_fd < 0)
			listener_close(&c->l);
		return r;
	}
	r = sd_event_add_time(e, &c->pause, CLOCK_MONOTONIC, UINT64_MAX, 1000, on_pause_end, c);
	if (r < 0) {
		c->source = sd_event_source_disable_unref(c->source);
		if (listen_fd < 0)
			listener_close(&c->l);
		return r;
	}
	(void)sd_event_source_set_enabled(c->pause, SD_EVENT_OFF);
	c->event = e;
	c->fn = fn;
	c->userdata = userdata;
	*ret = TAKE_PTR(c);
	return 0;
}

struct control *control_free(struct control *c, bool keep_file)
{
	if (!c)
		return NULL;
	while (c->clients)
		client_free(c->clients);
	c->source = sd_event_source_disable_unref(c->source);
	c->pause = sd_event_source_disable_unref(c->pause);
	if (keep_file)
		c->l.owns_path = false;
	listener_close(&c->l);
	free(c);
	return NULL;
}

int control_default_path(const char *name, char *ret, size_t size)
{
	const char *dir = getenv("RUNTIME_DIRECTORY");
	int n;

	/* systemd may list several directories, separated by ':': the first is ours. */
	if (dir && *dir)
		n = snprintf(ret, size, "%.*s/%s.sock", (int)strcspn(dir, ":"), dir, name);
	else if (geteuid() == 0)
		n = snprintf(ret, size, "/run/baton/%s.sock", name);
	else if ((dir = getenv("XDG_RUNTIME_DIR")) && *dir)
		n = snprintf(ret, size, "%s/baton/%s.sock", dir, name);
	else
		return -ENOENT;
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}
