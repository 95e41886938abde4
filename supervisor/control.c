/* SPDX-License-Identifier: MIT */
/* control.c - the control socket: bounded clients, one line each, replies written in full. */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "unix_server.h"

/* What a client is doing, from its fields: see client_state(). */
enum client_state {
	CLIENT_READING,	 /* sending its request: talking, with a deadline */
	CLIENT_WAITING,	 /* request handed on, no reply yet (reload, retire): no deadline */
	CLIENT_REPLYING, /* its reply is being written: talking, with a deadline */
	CLIENT_STREAM,	 /* batonctl events: no deadline, capped */
};

struct control_client {
	struct control *ctl;
	LIST_ENTRY(control_client) link;
	int fd;
	sd_event_source *source;
	sd_event_source *timer; /* the deadline while talking; off while waiting or streaming */
	uint64_t seq;		/* order of arrival: the oldest talking one makes room */
	char in[CONTROL_REQUEST_MAX + 1];
	size_t in_len;
	bool asked; /* the request line was handed to the callback */
	char *out;
	size_t out_len, out_off;
	size_t out_cap;	      /* a stream's buffer size, at most CONTROL_STREAM_MAX */
	control_fill_fn fill; /* a stream: asked for more once out is written */
	void *fill_data;
	long data;
	uid_t uid;
	pid_t pid;
};

struct control {
	sd_event *event;
	struct unix_server *server;
	control_request_fn fn;
	void *userdata;
	LIST_HEAD(, control_client) clients;
	unsigned n_clients;
	uint64_t next_seq;
	bool has_also_uid; /* control_allow_uid(): */
	uid_t also_uid;	   /* ... one more uid admitted, beside root and ours */
};

static enum client_state client_state(const struct control_client *cl)
{
	if (cl->fill)
		return CLIENT_STREAM;
	if (cl->out)
		return CLIENT_REPLYING;
	return cl->asked ? CLIENT_WAITING : CLIENT_READING;
}

static void client_free(struct control_client *cl)
{
	struct control *c = cl->ctl;

	LIST_REMOVE(cl, link);
	/* A slot is free again: take the next connection waiting in the backlog. */
	c->n_clients--;
	unix_server_client_gone(c->server);
	sd_event_source_disable_unref(cl->source);
	sd_event_source_disable_unref(cl->timer);
	close_fdp(&cl->fd);
	free(cl->out);
	free(cl);
}

/* The client's deadline from now, or none (usec 0). */
static void client_deadline(struct control_client *cl, uint64_t usec)
{
	uint64_t now = 0;

	if (usec == 0) {
		(void)sd_event_source_set_enabled(cl->timer, SD_EVENT_OFF);
		return;
	}
	(void)sd_event_now(cl->ctl->event, CLOCK_MONOTONIC, &now);
	(void)sd_event_source_set_time(cl->timer, now + usec);
	(void)sd_event_source_set_enabled(cl->timer, SD_EVENT_ONESHOT);
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct control_client *cl = userdata;

	(void)s;
	(void)usec;
	/* Per connection, so debug only: a peer that loops on connect() must not flood the log. */
	log_debug("control: pid %d: closing: %s", (int)cl->pid,
		  client_state(cl) == CLIENT_READING ? "no whole request in time"
						     : "reply not taken in time");
	client_free(cl);
	return 0;
}

/*
 * Writes what is queued without blocking; EPOLLOUT resumes it. A reply's client is freed once
 * all of it is out; a stream's is asked for more (fill) until it has nothing. Returns 0 (cl may
 * be freed) or a negative errno (the caller frees cl).
 */
static int client_write(struct control_client *cl)
{
	for (;;) {
		while (cl->out_off < cl->out_len) {
			ssize_t n = send(cl->fd, cl->out + cl->out_off, cl->out_len - cl->out_off,
					 MSG_NOSIGNAL | MSG_DONTWAIT);

			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN)
					return sd_event_source_set_io_events(
						cl->source, EPOLLOUT | (cl->fill ? EPOLLIN : 0));
				return -errno;
			}
			cl->out_off += (size_t)n;
		}
		if (!cl->fill) {
			client_free(cl);
			return 0;
		}
		cl->out_off = cl->out_len = 0;
		cl->fill(cl->fill_data, cl);
		if (cl->out_len == 0)
			/* Nothing more for now: watch for the client hanging up. */
			return sd_event_source_set_io_events(cl->source, EPOLLIN);
	}
}

/* A stream's client: it has nothing more to say, so input is only ever EOF (or ignored). */
static void on_stream_client(struct control_client *cl, uint32_t revents)
{
	if (revents & EPOLLIN) {
		char sink[256];
		ssize_t n = recv(cl->fd, sink, sizeof(sink), MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			client_free(cl);
			return;
		}
	} else if (revents & (EPOLLHUP | EPOLLERR)) {
		client_free(cl);
		return;
	}
	if ((revents & EPOLLOUT) && client_write(cl) < 0)
		client_free(cl);
}

static int on_client(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct control_client *cl = userdata;
	char *nl;
	ssize_t n;

	(void)s;
	(void)fd;
	if (cl->fill) {
		on_stream_client(cl, revents);
		return 0;
	}
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
	/* Waiting unless fn replies (a reply deadline) or streams: cl may be gone after fn. */
	client_deadline(cl, 0);
	log_debug("control: pid %d uid %u: %s", (int)cl->pid, (unsigned)cl->uid, cl->in);
	cl->ctl->fn(cl->ctl->userdata, cl, cl->in);
	return 0;
}

/* Bytes the client sent that we have not read yet (0 if unknown). */
static int unread_bytes(const struct control_client *cl)
{
	int n = 0;

	return ioctl(cl->fd, FIONREAD, &n) < 0 ? 0 : n;
}

/*
 * The talking client to close for a newcomer: the oldest one that sent nothing we have not
 * read (idle), else the oldest still reading, else the oldest taking its reply; NULL if none
 * is talking. A batonctl that just sent its request has bytes waiting: it is not taken first.
 */
static struct control_client *make_room_victim(struct control *c)
{
	struct control_client *idle = NULL, *reading = NULL, *replying = NULL;
	struct control_client *cl;

	LIST_FOREACH(cl, &c->clients, link)
	{
		switch (client_state(cl)) {
		case CLIENT_READING:
			if (!reading || cl->seq < reading->seq)
				reading = cl;
			if (unread_bytes(cl) == 0 && (!idle || cl->seq < idle->seq))
				idle = cl;
			break;
		case CLIENT_REPLYING:
			if (!replying || cl->seq < replying->seq)
				replying = cl;
			break;
		default:
			break;
		}
	}
	return idle ? idle : reading ? reading : replying;
}

/* Counts talking clients and streams. */
static void count_clients(const struct control *c, unsigned *ret_talking, unsigned *ret_streams)
{
	const struct control_client *cl;
	unsigned talking = 0, streams = 0;

	LIST_FOREACH(cl, &c->clients, link)
	{
		enum client_state st = client_state(cl);

		talking += st == CLIENT_READING || st == CLIENT_REPLYING;
		streams += st == CLIENT_STREAM;
	}
	*ret_talking = talking;
	*ret_streams = streams;
}

/* Best effort, for a newcomer we cannot take: it learns why, if it reads. */
static void refuse_busy(int fd, const struct control *c)
{
	char line[128];
	int n = snprintf(line, sizeof(line),
			 "failed batond is busy: %u clients wait for an outcome or stream "
			 "events; try again\n",
			 c->n_clients);

	if (n > 0)
		(void)send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/*
 * Consumes fd. Only root and our own uid may talk to batond. Makes room first: a newcomer
 * always gets in while someone is merely talking, so idle connections cannot lock it out.
 */
static bool on_accept(void *userdata, int fd_in, const struct ucred *cred)
{
	_cleanup_close_ int fd = fd_in;
	struct control *c = userdata;
	struct control_client *cl;
	unsigned talking, streams;
	uint64_t now = 0;

	if (cred->uid != 0 && cred->uid != geteuid() &&
	    !(c->has_also_uid && cred->uid == c->also_uid)) {
		log_warning("control: refusing pid %d uid %u (only root and uid %u)",
			    (int)cred->pid, (unsigned)cred->uid, (unsigned)geteuid());
		return false;
	}
	count_clients(c, &talking, &streams);
	if (talking >= CONTROL_MAX_TALKING || c->n_clients >= CONTROL_MAX_CLIENTS) {
		cl = make_room_victim(c);
		if (!cl) {
			refuse_busy(fd, c);
			log_debug("control: pid %d: refused, every slot waits or streams",
				  (int)cred->pid);
			return false;
		}
		log_debug("control: pid %d: closing the oldest talking connection (pid %d) to "
			  "make room",
			  (int)cred->pid, (int)cl->pid);
		client_free(cl);
	}
	cl = calloc(1, sizeof(*cl));
	if (!cl) {
		log_warning_errno(-ENOMEM, "control: pid %d, closing", (int)cred->pid);
		return false;
	}
	cl->ctl = c;
	cl->uid = cred->uid;
	cl->pid = cred->pid;
	cl->seq = c->next_seq++;
	(void)sd_event_now(c->event, CLOCK_MONOTONIC, &now);
	if (sd_event_add_io(c->event, &cl->source, fd, EPOLLIN, on_client, cl) < 0 ||
	    sd_event_add_time(c->event, &cl->timer, CLOCK_MONOTONIC,
			      now + CONTROL_REQUEST_TIMEOUT_USEC, 0, on_deadline, cl) < 0) {
		log_warning("control: watch pid %d, closing", (int)cred->pid);
		sd_event_source_disable_unref(cl->source);
		free(cl);
		return false;
	}
	cl->fd = TAKE_FD(fd);
	LIST_INSERT_HEAD(&c->clients, cl, link);
	c->n_clients++;
	return true;
}

void control_reply(struct control_client *cl, const char *text)
{
	size_t n = strlen(text);

	if (cl->out || cl->fill)
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
	client_deadline(cl, CONTROL_REPLY_TIMEOUT_USEC);
	if (client_write(cl) < 0)
		client_free(cl);
}

void control_client_set_data(struct control_client *cl, long data)
{
	cl->data = data;
}

pid_t control_client_pid(const struct control_client *cl)
{
	return cl->pid;
}

long control_client_get_data(const struct control_client *cl)
{
	return cl->data;
}

void control_foreach_waiting(struct control *c, void (*fn)(struct control_client *, void *),
			     void *userdata)
{
	struct control_client *cl = c ? LIST_FIRST(&c->clients) : NULL;

	while (cl) {
		struct control_client *next = LIST_NEXT(cl, link); /* fn may reply: frees cl */

		if (cl->asked && !cl->out && !cl->fill)
			fn(cl, userdata);
		cl = next;
	}
}

int control_stream_write(struct control_client *cl, const char *text, size_t len)
{
	size_t need = cl->out_len + len;

	if (!cl->fill || len > CONTROL_STREAM_MAX - cl->out_len)
		return -ENOBUFS;
	if (need > cl->out_cap) {
		size_t cap = cl->out_cap ? cl->out_cap : 4096;
		char *p;

		while (cap < need)
			cap *= 2;
		if (cap > CONTROL_STREAM_MAX)
			cap = CONTROL_STREAM_MAX;
		p = realloc(cl->out, cap);
		if (!p)
			return -ENOMEM;
		cl->out = p;
		cl->out_cap = cap;
	}
	memcpy(cl->out + cl->out_len, text, len);
	cl->out_len += len;
	return 0;
}

void control_stream_start(struct control_client *cl, const char *first, control_fill_fn fill,
			  void *userdata)
{
	unsigned talking, streams;
	char reply[96];

	if (cl->out || cl->fill)
		return;
	count_clients(cl->ctl, &talking, &streams);
	if (streams >= CONTROL_MAX_STREAMS) {
		(void)snprintf(reply, sizeof(reply), "failed too many event streams (at most %d)\n",
			       CONTROL_MAX_STREAMS);
		control_reply(cl, reply);
		return;
	}
	/* Silent by design from here on: no deadline, the cap above bounds them. */
	client_deadline(cl, 0);
	cl->fill = fill;
	cl->fill_data = userdata;
	if (control_stream_write(cl, first, strlen(first)) < 0 || client_write(cl) < 0)
		client_free(cl);
}

void control_stream_kick(struct control *c)
{
	struct control_client *cl = c ? LIST_FIRST(&c->clients) : NULL;

	while (cl) {
		struct control_client *next = LIST_NEXT(cl, link); /* a failed write frees cl */

		/* One with output still queued gets more once EPOLLOUT has emptied it. */
		if (cl->fill && cl->out_off >= cl->out_len && client_write(cl) < 0)
			client_free(cl);
		cl = next;
	}
}

void control_allow_uid(struct control *c, uid_t uid)
{
	c->has_also_uid = true;
	c->also_uid = uid;
}

int control_fd(const struct control *c)
{
	return unix_server_fd(c->server);
}

int control_new(sd_event *e, const char *path, int listen_fd, control_request_fn fn, void *userdata,
		struct control **ret)
{
	_cleanup_free_ struct control *c = calloc(1, sizeof(*c));
	char label[160];
	struct unix_server_params p = {
		.path = path,
		.type = SOCK_STREAM,
		.mode = 0600,
		.backlog = CONTROL_MAX_CLIENTS,
		/* One over ours: on_accept() makes room or refuses, so accepting never stops. */
		.max_clients = CONTROL_MAX_CLIENTS + 1,
		.adopt_fd = listen_fd,
		.label = label,
		.accept = on_accept,
		.userdata = c,
	};
	int r;

	if (!c) {
		if (listen_fd >= 0)
			(void)close(listen_fd);
		return -ENOMEM;
	}
	(void)snprintf(label, sizeof(label), "control socket %s", path);
	r = unix_server_new(e, &p, &c->server);
	if (r < 0)
		return r;
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
	while (!LIST_EMPTY(&c->clients))
		client_free(LIST_FIRST(&c->clients));
	c->server = unix_server_free(c->server, keep_file);
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
