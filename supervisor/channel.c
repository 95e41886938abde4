/* SPDX-License-Identifier: MIT */
/* channel.c - the proto/ conversation with one peer: HELLO in, LISTENERS out, then events. */
#include "channel.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "fdpass.h"
#include "log.h"
#include "proto.h"

#define CHANNEL_SMALL_MAX  256 /* bytes of one queued message: DRAIN (20) or our own ERROR */
#define CHANNEL_REASON_MAX 200 /* bytes of the reason we log and send in ERROR */

_Static_assert(PROTO_HEADER_SIZE + 6 + CHANNEL_REASON_MAX <= CHANNEL_SMALL_MAX,
	       "an ERROR with our longest reason fits a queue slot");
_Static_assert(CHANNEL_RECV_MAX >= PROTO_HEADER_SIZE + 6 + PROTO_TEXT_MAX,
	       "a STATUS or ERROR with the longest text fits the receive buffer");

struct queued {
	uint8_t buf[CHANNEL_SMALL_MAX];
	size_t len;
};

struct channel {
	sd_event *event;
	int fd;
	sd_event_source *io;
	sd_event_source *defer; /* reports a cut-off decided outside the event loop */
	enum proto_role role;	/* what the peer must say it is in HELLO */
	pid_t pid;		/* the worker, or 0 for a fetch */
	char label[CHANNEL_LABEL_MAX];
	const struct listener *listeners; /* the caller's; open for our whole life */
	size_t n_listeners;
	struct channel_ops ops;
	void *userdata;

	bool said_hello;
	bool listeners_sent;  /* the whole LISTENERS set is in the socket */
	size_t next_listener; /* the next one to send: where an -EAGAIN left off */
	struct queued queue[CHANNEL_MAX_QUEUED]; /* behind the LISTENERS set, in order */
	size_t queue_head, n_queued;

	bool dead;	   /* socket closed; ops->closed called or pending */
	int dead_error;	   /* what ops->closed gets from the defer source */
	unsigned busy;	   /* inside one of our event callbacks: free later */
	bool free_pending; /* channel_free() was called while busy */
};

int channel_socketpair(int *ret_batond_end, int *ret_worker_end)
{
	int sv[2];
	int flags;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		return -errno;
	/*
	 * O_NONBLOCK belongs to each end's own open file description, so clearing it on the
	 * worker's end leaves ours non-blocking. F_GETFL/F_SETFL cannot be interrupted.
	 */
	flags = fcntl(sv[1], F_GETFL);
	if (flags < 0 || fcntl(sv[1], F_SETFL, flags & ~O_NONBLOCK) < 0) {
		int r = -errno;

		close_fdp(&sv[0]);
		close_fdp(&sv[1]);
		return r;
	}
	*ret_batond_end = sv[0];
	*ret_worker_end = sv[1];
	return 0;
}

/* --- the end of a conversation --- */

static void close_socket(struct channel *c)
{
	c->io = sd_event_source_disable_unref(c->io);
	c->fd = safe_close(c->fd);
	c->dead = true;
}

/* Closes and reports, from inside one of our event callbacks. */
static void finish(struct channel *c, int error)
{
	if (c->dead)
		return;
	close_socket(c);
	if (c->ops.closed)
		c->ops.closed(c->userdata, error);
}

/* Best effort: a peer that does not read loses the reason, not more; we close after it anyway. */
static void send_error(struct channel *c, int code, const char *text)
{
	struct proto_error m = { .code = code };
	uint8_t buf[CHANNEL_SMALL_MAX];
	int len;

	(void)snprintf(m.text, sizeof(m.text), "%s", text);
	len = proto_encode_error(buf, sizeof(buf), &m);
	if (len > 0)
		(void)proto_send(c->fd, buf, (size_t)len, NULL, 0);
}

/*
 * Ends the conversation over a fault of the peer's: one log line, ERROR(code) to the peer when
 * code > 0, close, report error.
 */
__attribute__((format(printf, 4, 5))) static void fail(struct channel *c, int error, int code,
						       const char *fmt, ...)
{
	char reason[CHANNEL_REASON_MAX];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	(void)log_warning_errno(error, "%s: closing channel: %s", c->label, reason);
	if (code > 0)
		send_error(c, code, reason);
	finish(c, error);
}

/* Cuts the peer off from outside the event loop: the report comes from the defer source. */
static void cut_off(struct channel *c, int error)
{
	if (c->dead)
		return;
	close_socket(c);
	c->dead_error = error;
	/* Fails only in a forked child or a finished loop, where nothing would be reported. */
	(void)sd_event_source_set_enabled(c->defer, SD_EVENT_ONESHOT);
}

static void destroy(struct channel *c)
{
	close_socket(c);
	c->defer = sd_event_source_disable_unref(c->defer);
	free(c);
}

struct channel *channel_free(struct channel *c)
{
	if (!c)
		return NULL;
	if (c->busy > 0) {
		/* Called from one of our callbacks: the dispatcher frees it on its way out. */
		close_socket(c);
		c->free_pending = true;
		return NULL;
	}
	destroy(c);
	return NULL;
}

/* Every callback of ours is wrapped in enter()/leave(); leave() returns false if c is gone. */
static void enter(struct channel *c)
{
	c->busy++;
}

static bool leave(struct channel *c)
{
	if (--c->busy == 0 && c->free_pending) {
		destroy(c);
		return false;
	}
	return true;
}

/* --- sending --- */

static enum proto_kind kind_of(enum listener_kind k)
{
	switch (k) {
	case LISTENER_TCP:
		return PROTO_KIND_TCP;
	case LISTENER_UDP:
		return PROTO_KIND_UDP;
	case LISTENER_UNIX:
		return PROTO_KIND_UNIX;
	}
	return 0;
}

/*
 * Sends what is left of the LISTENERS set. Each message is built afresh from the listener array
 * at next_listener, so nothing is held while the peer does not read but that index. Returns 0
 * once the whole set is in the socket, -EAGAIN (wait for EPOLLOUT), or another -errno.
 */
static int send_listeners(struct channel *c)
{
	_cleanup_free_ struct proto_listener *entries = NULL;
	_cleanup_free_ uint8_t *buf = NULL;
	int fds[PROTO_MAX_FDS_PER_MESSAGE];

	while (!c->listeners_sent) {
		size_t first = c->next_listener, n = c->n_listeners - first, k;
		int len, r;

		if (n > PROTO_MAX_LISTENERS_PER_MESSAGE)
			n = PROTO_MAX_LISTENERS_PER_MESSAGE;
		if (!entries) {
			entries = calloc(PROTO_MAX_LISTENERS_PER_MESSAGE, sizeof(*entries));
			buf = malloc(PROTO_MAX_MESSAGE);
			if (!entries || !buf)
				return -ENOMEM;
		}
		for (size_t i = 0; i < n; i++) {
			const struct listener *l = &c->listeners[first + i];

			entries[i].kind = kind_of(l->kind);
			/* Both checked to fit in channel_new(). */
			memcpy(entries[i].name, l->name, strlen(l->name) + 1);
			memcpy(entries[i].address, l->spec, strlen(l->spec) + 1);
			fds[i] = l->fd;
		}
		k = proto_listeners_fit(entries, n);
		len = proto_encode_listeners(buf, PROTO_MAX_MESSAGE, first, c->n_listeners, entries,
					     k);
		if (len < 0)
			return len;
		r = proto_send(c->fd, buf, (size_t)len, fds, k);
		if (r < 0)
			return r;
		c->next_listener += k;
		c->listeners_sent = c->next_listener == c->n_listeners;
	}
	return 0;
}

static bool outbox_is_empty(const struct channel *c)
{
	return c->listeners_sent && c->n_queued == 0;
}

/* Sends what waits: the rest of the LISTENERS set, then the queue. 0, -EAGAIN or -errno. */
static int flush(struct channel *c)
{
	int r;

	if (c->said_hello && !c->listeners_sent) {
		r = send_listeners(c);
		if (r < 0)
			return r;
	}
	while (c->n_queued > 0) {
		struct queued *q = &c->queue[c->queue_head];

		r = proto_send(c->fd, q->buf, q->len, NULL, 0);
		if (r < 0)
			return r;
		c->queue_head = (c->queue_head + 1) % CHANNEL_MAX_QUEUED;
		c->n_queued--;
	}
	return 0;
}

/* Waits for EPOLLOUT only while something waits to be sent: a writable socket is no event. */
static int update_events(struct channel *c)
{
	uint32_t events = EPOLLIN;

	if (c->said_hello && !outbox_is_empty(c))
		events |= EPOLLOUT;
	return sd_event_source_set_io_events(c->io, events);
}

static bool is_peer_gone(int r)
{
	return r == -EPIPE || r == -ECONNRESET;
}

/* After a flush from the event loop: wait, go on, or end. Returns false if c is finished. */
static bool after_flush(struct channel *c, int r)
{
	if (r == -EAGAIN || r == 0) {
		if (r == 0 && c->role == PROTO_ROLE_FETCH && c->said_hello && outbox_is_empty(c)) {
			/* A fetch is over once the last listener is in the client's socket. */
			finish(c, 0);
			return false;
		}
		r = update_events(c);
		if (r >= 0)
			return true;
	}
	if (is_peer_gone(r)) {
		log_debug("%s: channel: peer gone before it read our messages", c->label);
		finish(c, 0);
		return false;
	}
	fail(c, r, 0, "send");
	return false;
}

/* --- receiving --- */

/* What one message from the peer means; false if the conversation ended with it. */
static bool handle(struct channel *c, const uint8_t *buf, size_t len, size_t n_fds)
{
	struct proto_header h;
	struct proto_hello hello;
	struct proto_status status;
	struct proto_error perr;
	int r;

	r = proto_decode_header(buf, len, &h);
	if (r == -EPROTONOSUPPORT) {
		if (proto_decode_error(buf, len, &perr) == 0) {
			log_warning("%s: closing channel: peer refused us (version %u): %s%s%s",
				    c->label, buf[4], strerror(perr.code), perr.text[0] ? ": " : "",
				    perr.text);
			finish(c, -perr.code);
			return false;
		}
		fail(c, r, EPROTONOSUPPORT, "version %u.%u, batond speaks %u.%u", buf[4], buf[5],
		     PROTO_VERSION_MAJOR, PROTO_VERSION_MINOR);
		return false;
	}
	if (r < 0) {
		fail(c, r, EBADMSG, "malformed message header");
		return false;
	}
	if (n_fds > 0) {
		/* proto_recv() gave them to us; they are closed already (see on_io). */
		fail(c, -EPROTO, EPROTO, "%s with %zu fds attached", proto_type_to_string(h.type),
		     n_fds);
		return false;
	}
	if (h.type == PROTO_ERROR) {
		r = proto_decode_error(buf, len, &perr);
		if (r < 0) {
			fail(c, r, 0, "malformed ERROR");
			return false;
		}
		log_warning("%s: closing channel: peer says %s%s%s", c->label, strerror(perr.code),
			    perr.text[0] ? ": " : "", perr.text);
		finish(c, -perr.code);
		return false;
	}
	if (!c->said_hello && h.type != PROTO_HELLO) {
		fail(c, -EPROTO, EPROTO, "%s before HELLO", proto_type_to_string(h.type));
		return false;
	}

	switch (h.type) {
	case PROTO_HELLO:
		r = proto_decode_hello(buf, len, &hello);
		if (r < 0) {
			fail(c, r, EBADMSG, "malformed HELLO");
			return false;
		}
		if (c->said_hello) {
			fail(c, -EPROTO, EPROTO, "a second HELLO");
			return false;
		}
		if (hello.role != c->role) {
			fail(c, -EPROTO, EPROTO, "HELLO with role %s here, only %s",
			     hello.role == PROTO_ROLE_WORKER ? "WORKER" : "FETCH",
			     c->role == PROTO_ROLE_WORKER ? "WORKER" : "FETCH");
			return false;
		}
		if (c->pid > 0 && hello.pid != c->pid)
			log_debug("%s: channel: HELLO says pid %d (another pid namespace, or a "
				  "child speaking for the worker)",
				  c->label, (int)hello.pid);
		log_debug("%s: channel: HELLO version %u.%u, sending %zu listeners", c->label,
			  h.major, h.minor, c->n_listeners);
		c->said_hello = true;
		return after_flush(c, flush(c));
	case PROTO_REFRESH:
		r = proto_decode_refresh(buf, len);
		if (r < 0) {
			fail(c, r, EBADMSG, "malformed REFRESH");
			return false;
		}
		if (c->role != PROTO_ROLE_WORKER || !c->listeners_sent) {
			fail(c, -EPROTO, EPROTO, "REFRESH before the first set was sent");
			return false;
		}
		/* The whole current set again, from the start, behind what is queued. */
		log_debug("%s: channel: REFRESH, sending %zu listeners", c->label, c->n_listeners);
		c->listeners_sent = false;
		c->next_listener = 0;
		return after_flush(c, flush(c));
	case PROTO_READY:
	case PROTO_DRAINED:
	case PROTO_STATUS:
		if (c->role != PROTO_ROLE_WORKER) {
			fail(c, -EPROTO, EPROTO, "%s from a fetch", proto_type_to_string(h.type));
			return false;
		}
		break;
	default:
		/* LISTENERS and DRAIN only ever go from batond to the peer. */
		fail(c, -EPROTO, EPROTO, "%s sent to batond", proto_type_to_string(h.type));
		return false;
	}

	if (h.type == PROTO_STATUS)
		r = proto_decode_status(buf, len, &status);
	else if (h.type == PROTO_READY)
		r = proto_decode_ready(buf, len);
	else
		r = proto_decode_drained(buf, len);
	if (r < 0) {
		fail(c, r, EBADMSG, "malformed %s", proto_type_to_string(h.type));
		return false;
	}
	if (h.type == PROTO_STATUS && c->ops.status)
		c->ops.status(c->userdata, status.inflight, status.text);
	else if (h.type == PROTO_READY && c->ops.ready)
		c->ops.ready(c->userdata);
	else if (h.type == PROTO_DRAINED && c->ops.drained)
		c->ops.drained(c->userdata);
	/* The callback may have freed or closed the channel. */
	return !c->free_pending && !c->dead;
}

/* Reads at most CHANNEL_MAX_READS messages; level-triggered epoll brings us back for more. */
static void read_some(struct channel *c)
{
	for (unsigned i = 0; i < CHANNEL_MAX_READS; i++) {
		uint8_t buf[CHANNEL_RECV_MAX];
		int fds[PROTO_MAX_FDS_PER_MESSAGE];
		size_t n_fds = 0;
		ssize_t n;

		n = proto_recv(c->fd, buf, sizeof(buf), fds, PROTO_MAX_FDS_PER_MESSAGE, &n_fds);
		if (n == -EAGAIN)
			return;
		if (n == 0 || n == -ECONNRESET) {
			log_debug("%s: channel: closed by the peer", c->label);
			finish(c, 0);
			return;
		}
		if (n == -EMSGSIZE) {
			fail(c, -EMSGSIZE, EBADMSG, "message over %d bytes", CHANNEL_RECV_MAX);
			return;
		}
		if (n == -EPROTO) {
			/* proto_recv() closed whatever arrived. */
			fail(c, -EPROTO, EPROTO, "malformed ancillary data");
			return;
		}
		if (n < 0) {
			fail(c, (int)n, 0, "receive");
			return;
		}
		/* A peer never sends fds: close them before anything else can go wrong. */
		for (size_t j = 0; j < n_fds; j++)
			close_fdp(&fds[j]);
		if (!handle(c, buf, (size_t)n, n_fds))
			return;
	}
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct channel *c = userdata;

	(void)s;
	(void)fd;
	enter(c);
	if ((revents & EPOLLOUT) && !c->dead)
		(void)after_flush(c, flush(c));
	/* EPOLLHUP and EPOLLERR too: reading finds what is left, then the close or the error. */
	if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->dead && !c->free_pending)
		read_some(c);
	(void)leave(c);
	return 0;
}

static int on_defer(sd_event_source *s, void *userdata)
{
	struct channel *c = userdata;

	(void)s;
	enter(c);
	if (c->ops.closed)
		c->ops.closed(c->userdata, c->dead_error);
	(void)leave(c);
	return 0;
}

/* --- construction and the API --- */

static int check_listeners(const struct listener *listeners, size_t n)
{
	if (n > PROTO_MAX_LISTENERS)
		return -E2BIG;
	if (n > 0 && !listeners)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const struct listener *l = &listeners[i];
		size_t spec_len = strnlen(l->spec, sizeof(l->spec));

		if (l->fd < 0 || kind_of(l->kind) == 0 || !listener_name_is_valid(l->name) ||
		    spec_len == 0 || spec_len >= sizeof(l->spec) || spec_len > PROTO_ADDRESS_MAX)
			return -EINVAL;
	}
	return 0;
}

/* Consumes fd. */
static int new_channel(sd_event *e, int fd_in, enum proto_role role, pid_t pid, const char *label,
		       const struct listener *listeners, size_t n_listeners,
		       const struct channel_ops *ops, void *userdata, struct channel **ret)
{
	_cleanup_close_ int fd = fd_in;
	struct channel *c;
	int type = 0, r;
	socklen_t len = sizeof(type);

	if (!e || fd < 0 || !label || !ret)
		return -EINVAL;
	r = check_listeners(listeners, n_listeners);
	if (r < 0)
		return r;
	/* One message is one record: the whole protocol rests on it. */
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return -errno;
	if (type != SOCK_SEQPACKET)
		return -EPROTOTYPE;
	if (role == PROTO_ROLE_WORKER) {
		struct ucred cred;

		r = proto_peer_cred(fd, &cred);
		if (r < 0)
			return r;
		if (cred.pid != getpid() && (pid <= 0 || cred.pid != pid))
			return -EPERM;
	}

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	*c = (struct channel){
		.event = e,
		.fd = -1,
		.role = role,
		.pid = pid,
		.listeners = listeners,
		.n_listeners = n_listeners,
		.ops = ops ? *ops : (struct channel_ops){ 0 },
		.userdata = userdata,
	};
	(void)snprintf(c->label, sizeof(c->label), "%s", label);
	r = sd_event_add_io(e, &c->io, fd, EPOLLIN, on_io, c);
	if (r < 0) {
		free(c);
		return r;
	}
	r = sd_event_add_defer(e, &c->defer, on_defer, c);
	if (r >= 0)
		r = sd_event_source_set_enabled(c->defer, SD_EVENT_OFF);
	if (r < 0) {
		destroy(c);
		return r;
	}
	c->fd = TAKE_FD(fd);
	*ret = c;
	return 0;
}

int channel_adopt(sd_event *e, int fd, pid_t pid, const char *label,
		  const struct listener *listeners, size_t n_listeners,
		  const struct channel_ops *ops, void *userdata, struct channel **ret)
{
	int r = new_channel(e, fd, PROTO_ROLE_WORKER, pid, label, listeners, n_listeners, ops,
			    userdata, ret);

	if (r < 0)
		return r;
	/* The earlier image answered HELLO and sent the whole set: carry on from there. */
	(*ret)->said_hello = true;
	(*ret)->listeners_sent = true;
	(*ret)->next_listener = n_listeners;
	return 0;
}

void channel_set_listeners(struct channel *c, const struct listener *listeners, size_t n_listeners)
{
	/* A set in the middle of being sent goes on from the same index into the new array. */
	c->listeners = listeners;
	c->n_listeners = n_listeners;
	if (c->next_listener > n_listeners)
		c->next_listener = n_listeners;
}

bool channel_is_settled(const struct channel *c)
{
	return c && !c->dead && c->said_hello && c->listeners_sent && c->n_queued == 0;
}

int channel_fd(const struct channel *c)
{
	return c->fd;
}

int channel_new(sd_event *e, int fd, pid_t pid, const char *label, const struct listener *listeners,
		size_t n_listeners, const struct channel_ops *ops, void *userdata,
		struct channel **ret)
{
	return new_channel(e, fd, PROTO_ROLE_WORKER, pid, label, listeners, n_listeners, ops,
			   userdata, ret);
}

int channel_new_fetch(sd_event *e, int fd, const char *label, const struct listener *listeners,
		      size_t n_listeners, const struct channel_ops *ops, void *userdata,
		      struct channel **ret)
{
	return new_channel(e, fd, PROTO_ROLE_FETCH, 0, label, listeners, n_listeners, ops, userdata,
			   ret);
}

int channel_drain(struct channel *c, uint64_t timeout_usec)
{
	struct proto_drain m = { .timeout_usec = timeout_usec };
	struct queued *q;
	int len, r;

	if (!c || c->dead || !c->said_hello || c->role != PROTO_ROLE_WORKER)
		return -ENOTCONN;
	if (outbox_is_empty(c)) {
		uint8_t buf[CHANNEL_SMALL_MAX];

		len = proto_encode_drain(buf, sizeof(buf), &m);
		if (len < 0)
			return len;
		r = proto_send(c->fd, buf, (size_t)len, NULL, 0);
		if (r == 0)
			return 0;
		/* The read side sees the close and reports it from the event loop. */
		if (is_peer_gone(r))
			return -ENOTCONN;
		if (r != -EAGAIN) {
			(void)log_warning_errno(r, "%s: closing channel: send DRAIN", c->label);
			cut_off(c, r);
			return r;
		}
	}
	if (c->n_queued >= CHANNEL_MAX_QUEUED) {
		log_warning("%s: closing channel: %d messages unread by the worker", c->label,
			    CHANNEL_MAX_QUEUED);
		cut_off(c, -ENOBUFS);
		return -ENOBUFS;
	}
	q = &c->queue[(c->queue_head + c->n_queued) % CHANNEL_MAX_QUEUED];
	len = proto_encode_drain(q->buf, sizeof(q->buf), &m);
	if (len < 0)
		return len;
	q->len = (size_t)len;
	c->n_queued++;
	r = update_events(c);
	if (r < 0) {
		(void)log_warning_errno(r, "%s: closing channel: wait for the worker to read",
					c->label);
		cut_off(c, r);
		return r;
	}
	return 0;
}
