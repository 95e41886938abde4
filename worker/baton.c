/* SPDX-License-Identifier: MIT */
/* baton.c - libbaton: listeners from the channel or LISTEN_FDS, readiness, drain, two-stage close. */
#include "baton.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "cleanup.h"
#include "fdpass.h"
#include "listen_close.h"
#include "proto.h"

#define BATON_OPEN_TIMEOUT_MSEC	 10000 /* for batond to answer HELLO with every listener */
#define BATON_SEND_TIMEOUT_MSEC	 1000  /* for room in the channel, for READY and DRAINED */
#define BATON_SHUTDOWN_POLL_MSEC 20    /* between two counts of a listener's queue */
#define BATON_MAX_SIGNAL	 64    /* highest signal number on Linux (SIGRTMAX) */
#define BATON_MESSAGES_PER_CALL	 64    /* read by one baton_process(): the caller's loop goes on */

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC  UINT64_C(1000000)
#define NSEC_PER_USEC UINT64_C(1000)

_Static_assert(BATON_TEXT_MAX == PROTO_TEXT_MAX, "baton.h promises the protocol's text limit");
_Static_assert(BATON_NO_DEADLINE == PROTO_DRAIN_NO_TIMEOUT, "the same 'none' on both sides");

struct baton_listener {
	int fd;
	char *name;
};

struct baton {
	int mode;		/* BATON_MODE_* */
	int flags;		/* BATON_OPEN_* */
	int channel_fd;		/* -1 without a channel, or once it is closed */
	int signal_fd;		/* -1 until baton_drain_fd(), and without signals */
	int drain_fd;		/* epoll fd watching the two above; -1 until baton_drain_fd() */
	uint64_t drain_signals; /* bit n-1 set: baton_drain_fd() takes signal n */
	struct baton_listener *listeners;
	size_t n_listeners;
	bool draining;
	bool stopping_sent;  /* STOPPING=1 went to $NOTIFY_SOCKET */
	int notify_fd;	     /* connected to $NOTIFY_SOCKET; -1 until the first message */
	bool ready_pending;  /* READY=1 found the receiver's queue full: sent when there is room */
	bool notify_watched; /* notify_fd is in drain_fd's set for EPOLLOUT */
	int drain_signal;
	uint64_t drain_deadline_usec;
	uint8_t *buf;	    /* PROTO_MAX_MESSAGE bytes, for the channel */
	uint8_t peer_minor; /* batond's minor protocol version, from its messages */
};

static uint64_t now_usec(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid pointer. */
	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_USEC;
}

static uint64_t usec_add(uint64_t a, uint64_t b)
{
	uint64_t sum;

	return __builtin_add_overflow(a, b, &sum) ? UINT64_MAX : sum;
}

/* Milliseconds from now until deadline, for poll(): 0 once it has passed, at most INT_MAX. */
static int msec_until(uint64_t deadline)
{
	uint64_t now = now_usec();
	uint64_t msec;

	if (now >= deadline)
		return 0;
	msec = (deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC;
	return msec > INT_MAX ? INT_MAX : (int)msec;
}

/* Waits until fd has events, or deadline passes (-ETIMEDOUT). */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = events };
		int r = poll(&pfd, 1, msec_until(deadline));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r > 0)
			return 0;
		if (now_usec() >= deadline)
			return -ETIMEDOUT;
	}
}

static void close_fds(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close_fdp(&fds[i]);
}

/* --- the channel --- */

/*
 * Sends one message; on a full channel, waits up to wait_msec for room (0: -EAGAIN at once).
 * SOCK_SEQPACKET queues a record whole or not at all, so a retry sends it once.
 */
static int channel_send(struct baton *b, const uint8_t *msg, int len, int wait_msec)
{
	uint64_t deadline = usec_add(now_usec(), (uint64_t)wait_msec * USEC_PER_MSEC);
	int r;

	if (b->channel_fd < 0)
		return -ENOTCONN;
	if (len < 0)
		return len; /* the encoder's error */
	for (;;) {
		r = proto_send(b->channel_fd, msg, (size_t)len, NULL, 0);
		if (r != -EAGAIN || wait_msec == 0)
			return r;
		r = wait_fd(b->channel_fd, POLLOUT, deadline);
		if (r < 0)
			return r == -ETIMEDOUT ? -EAGAIN : r;
	}
}

/* Tells batond why we are about to close: best effort, the close says the rest. */
static void channel_refuse(struct baton *b, int code, const char *text)
{
	struct proto_error e = { .code = code };
	uint8_t msg[PROTO_HEADER_SIZE + 6 + 128]; /* room for our texts */

	(void)snprintf(e.text, sizeof(e.text), "%s", text);
	(void)channel_send(b, msg, proto_encode_error(msg, sizeof(msg), &e), 0);
}

/* The channel is finished: out of the drain fd's set, closed. */
static void channel_close(struct baton *b)
{
	if (b->channel_fd < 0)
		return;
	if (b->drain_fd >= 0)
		(void)epoll_ctl(b->drain_fd, EPOLL_CTL_DEL, b->channel_fd, NULL);
	b->channel_fd = safe_close(b->channel_fd);
}

/*
 * Receives one message into b->buf and checks its header. A refusal from batond in any major
 * version becomes its errno; a message we cannot take gets an ERROR back. Returns the length,
 * -EAGAIN, or a negative errno after which the channel is unusable; fds of a refused message
 * are closed, otherwise the caller owns fds[0..*ret_n_fds).
 */
static ssize_t channel_recv(struct baton *b, struct proto_header *ret_h, int *fds,
			    size_t *ret_n_fds)
{
	struct proto_error e;
	ssize_t n;
	int r;

	n = proto_recv(b->channel_fd, b->buf, PROTO_MAX_MESSAGE, fds, PROTO_MAX_FDS_PER_MESSAGE,
		       ret_n_fds);
	if (n == 0)
		return -ECONNRESET; /* batond closed the channel */
	if (n == -EMSGSIZE) {
		channel_refuse(b, EBADMSG, "message over 65536 bytes");
		return -EBADMSG;
	}
	if (n == -EPROTO) {
		channel_refuse(b, EPROTO, "bad fds or ancillary data");
		return -EPROTO;
	}
	if (n < 0)
		return n;

	r = proto_decode_header(b->buf, (size_t)n, ret_h);
	if (r < 0 || ret_h->type == PROTO_ERROR ||
	    (*ret_n_fds > 0 && ret_h->type != PROTO_LISTENERS)) {
		close_fds(fds, *ret_n_fds);
		*ret_n_fds = 0;
	}
	if (r == -EPROTONOSUPPORT) {
		/* ERROR's layout is the same in every version: batond may be refusing us. */
		if (proto_decode_error(b->buf, (size_t)n, &e) == 0)
			return -e.code;
		channel_refuse(b, EPROTONOSUPPORT, "libbaton speaks protocol 1");
		return -EPROTONOSUPPORT;
	}
	if (r < 0) {
		channel_refuse(b, EBADMSG, "malformed message");
		return r;
	}
	b->peer_minor = ret_h->minor;
	if (ret_h->type == PROTO_ERROR) {
		r = proto_decode_error(b->buf, (size_t)n, &e);
		return r < 0 ? r : -e.code;
	}
	if (*ret_n_fds > 0 && ret_h->type != PROTO_LISTENERS) {
		channel_refuse(b, EPROTO, "fds on a message that carries none");
		return -EPROTO;
	}
	return n;
}

/* Takes one LISTENERS message of the set; *received counts the entries so far. */
static int take_listeners(struct baton *b, struct proto_listeners *m, size_t len, const int *fds,
			  size_t n_fds, size_t *received)
{
	int r;

	r = proto_decode_listeners(b->buf, len, m);
	if (r < 0) {
		channel_refuse(b, EBADMSG, "malformed LISTENERS");
		return r;
	}
	/* Every fd belongs to an entry, in order, and the set arrives in order, whole. */
	if (n_fds != m->count || m->first != *received ||
	    (*received > 0 && m->total != b->n_listeners)) {
		channel_refuse(b, EPROTO, "LISTENERS out of order or with the wrong number of fds");
		return -EPROTO;
	}
	if (*received == 0) {
		b->listeners = calloc(m->total ? m->total : 1, sizeof(*b->listeners));
		if (!b->listeners)
			return -ENOMEM;
		b->n_listeners = m->total;
		for (size_t i = 0; i < b->n_listeners; i++)
			b->listeners[i].fd = -1;
	}
	for (size_t i = 0; i < m->count; i++) {
		struct baton_listener *l = &b->listeners[m->first + i];

		l->name = strdup(m->entry[i].name);
		if (!l->name)
			return -ENOMEM;
		l->fd = fds[i];
	}
	*received += m->count;
	return 0;
}

/* HELLO, then the whole set of listeners. Leaves the channel non-blocking. */
static int channel_open(struct baton *b)
{
	const struct proto_hello hello = { .pid = getpid(), .role = PROTO_ROLE_WORKER };
	_cleanup_free_ struct proto_listeners *m = NULL;
	uint64_t deadline = usec_add(now_usec(), BATON_OPEN_TIMEOUT_MSEC * USEC_PER_MSEC);
	int fds[PROTO_MAX_FDS_PER_MESSAGE];
	uint8_t hello_msg[PROTO_HEADER_SIZE + 8];
	size_t received = 0;
	bool got_set = false; /* a LISTENERS message arrived: b->n_listeners is the total */
	int domain = 0, type = 0, flags, r;
	socklen_t len = sizeof(domain);

	if (getsockopt(b->channel_fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
		return -errno;
	len = sizeof(type);
	if (getsockopt(b->channel_fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return -errno;
	if (domain != AF_UNIX || type != SOCK_SEQPACKET)
		return -ENOTSOCK;
	/* Inherited across exec, so not CLOEXEC yet: set it before anything can fork. */
	if (fcntl(b->channel_fd, F_SETFD, FD_CLOEXEC) < 0)
		return -errno;
	/* Only we hold this end: its status flags are ours to change. */
	flags = fcntl(b->channel_fd, F_GETFL);
	if (flags < 0 || fcntl(b->channel_fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -errno;

	/* About 130 KiB: on the heap, for the sake of small thread stacks. */
	m = malloc(sizeof(*m));
	b->buf = malloc(PROTO_MAX_MESSAGE);
	if (!m || !b->buf)
		return -ENOMEM;

	r = channel_send(b, hello_msg, proto_encode_hello(hello_msg, sizeof(hello_msg), &hello),
			 msec_until(deadline));
	if (r < 0)
		return r == -EAGAIN ? -ETIMEDOUT : r;

	do {
		struct proto_header h;
		size_t n_fds = 0;
		ssize_t n;

		r = wait_fd(b->channel_fd, POLLIN, deadline);
		if (r < 0)
			return r;
		n = channel_recv(b, &h, fds, &n_fds);
		if (n == -EAGAIN)
			continue;
		if (n < 0)
			return (int)n;
		if (h.type != PROTO_LISTENERS) {
			/* Before the set is complete, batond sends nothing else. */
			channel_refuse(b, EPROTO, "LISTENERS expected");
			return -EPROTO;
		}
		r = take_listeners(b, m, (size_t)n, fds, n_fds, &received);
		if (r < 0) {
			/* What take_listeners() did not store is ours to close. */
			for (size_t i = 0; i < n_fds; i++) {
				bool stored = false;

				for (size_t j = 0; j < b->n_listeners && !stored; j++)
					stored = b->listeners[j].fd == fds[i];
				if (!stored)
					close_fdp(&fds[i]);
			}
			return r;
		}
		got_set = true;
	} while (!got_set || received < b->n_listeners);
	return 0;
}

/* Parses BATON_FD: a decimal fd number. */
static int parse_fd(const char *s, int *ret)
{
	long v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = v * 10 + (*p - '0');
		if (v > INT_MAX)
			return -EINVAL;
	}
	*ret = (int)v;
	return 0;
}

/* LISTEN_FDS: sd_listen_fds_with_names() checks LISTEN_PID and sets CLOEXEC on each fd. */
static int env_open(struct baton *b)
{
	char **names = NULL;
	int n;

	n = sd_listen_fds_with_names(!(b->flags & BATON_OPEN_KEEP_ENV), &names);
	if (n <= 0)
		return n; /* 0: not for us, or none: standalone */
	b->listeners = calloc((size_t)n, sizeof(*b->listeners));
	if (!b->listeners) {
		for (int i = 0; i < n; i++) {
			int fd = SD_LISTEN_FDS_START + i;

			close_fdp(&fd);
			free(names ? names[i] : NULL);
		}
		free(names);
		return -ENOMEM;
	}
	b->n_listeners = (size_t)n;
	b->mode = BATON_MODE_ENV;
	for (int i = 0; i < n; i++) {
		b->listeners[i].fd = SD_LISTEN_FDS_START + i;
		/* Taken over; sd_listen_fds_with_names() gives "unknown" without LISTEN_FDNAMES. */
		b->listeners[i].name = names ? names[i] : NULL;
		if (!b->listeners[i].name)
			b->listeners[i].name = strdup("unknown");
	}
	free(names);
	for (size_t i = 0; i < b->n_listeners; i++) {
		if (!b->listeners[i].name)
			return -ENOMEM;
	}
	return 0;
}

/* Frees b and everything in it; NULL is fine. */
static void baton_free(struct baton *b)
{
	if (!b)
		return;
	for (size_t i = 0; b->listeners && i < b->n_listeners; i++) {
		close_fdp(&b->listeners[i].fd);
		free(b->listeners[i].name);
	}
	free(b->listeners);
	close_fdp(&b->drain_fd);
	close_fdp(&b->signal_fd);
	close_fdp(&b->channel_fd);
	close_fdp(&b->notify_fd);
	free(b->buf);
	free(b);
}

static void baton_freep(struct baton **b)
{
	int saved = errno;

	baton_free(*b);
	errno = saved;
}

static int notify_connect(struct baton *b);

int baton_open(struct baton **ret, int flags)
{
	_cleanup_(baton_freep) struct baton *b = NULL;
	const char *channel;
	int r;

	if (!ret || (flags & ~(BATON_OPEN_KEEP_ENV | BATON_OPEN_NO_SIGNALS)))
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	*b = (struct baton){
		.mode = BATON_MODE_STANDALONE,
		.flags = flags,
		.channel_fd = -1,
		.signal_fd = -1,
		.drain_fd = -1,
		.notify_fd = -1,
		.drain_deadline_usec = BATON_NO_DEADLINE,
	};
	if (!(flags & BATON_OPEN_NO_SIGNALS))
		b->drain_signals = UINT64_C(1) << (SIGTERM - 1) | UINT64_C(1) << (SIGINT - 1) |
				   UINT64_C(1) << (SIGQUIT - 1);

	channel = getenv("BATON_FD");
	if (channel) {
		int fd = -1;

		r = parse_fd(channel, &fd);
		/* From here on the fd is ours, whatever happens: the variable must not outlive it. */
		if (r < 0 || !(flags & BATON_OPEN_KEEP_ENV))
			(void)unsetenv("BATON_FD");
		if (r < 0)
			return r;
		b->channel_fd = fd;
		b->mode = BATON_MODE_CHANNEL;
		r = channel_open(b);
		if (r < 0) {
			if (flags & BATON_OPEN_KEEP_ENV)
				(void)unsetenv("BATON_FD");
			return r;
		}
	} else {
		r = env_open(b);
		if (r < 0)
			return r;
		/*
		 * Now, not at the first message: a program that then changes its user still
		 * reaches batond's socket, which only the user batond started it as may open.
		 * A failure is tried again at the first message.
		 */
		(void)notify_connect(b);
	}
	*ret = TAKE_PTR(b);
	return 0;
}

struct baton *baton_close(struct baton *b)
{
	baton_free(b);
	return NULL;
}

int baton_mode(const struct baton *b)
{
	return b ? b->mode : BATON_MODE_STANDALONE;
}

unsigned baton_listener_count(const struct baton *b)
{
	return b ? (unsigned)b->n_listeners : 0;
}

int baton_listener_fd(const struct baton *b, unsigned i)
{
	if (!b || i >= b->n_listeners)
		return -ERANGE;
	return b->listeners[i].fd;
}

const char *baton_listener_name(const struct baton *b, unsigned i)
{
	if (!b || i >= b->n_listeners)
		return NULL;
	return b->listeners[i].name;
}

/*
 * Connects a non-blocking datagram socket to $NOTIFY_SOCKET ("/path" or "@abstract"). Returns
 * 1 (connected), 0 (no $NOTIFY_SOCKET: nothing to tell) or -errno.
 */
static int notify_connect(struct baton *b)
{
	_cleanup_close_ int fd = -1;
	const char *e = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = e ? strlen(e) : 0;

	if (n == 0)
		return 0;
	if ((e[0] != '/' && e[0] != '@') || n < 2 || n >= sizeof(sa.sun_path))
		return -EINVAL;
	memcpy(sa.sun_path, e, n);
	if (e[0] == '@')
		sa.sun_path[0] = '\0';
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* The kernel attaches our credentials: the receiver has SO_PASSCRED. */
	if (connect(fd, (struct sockaddr *)&sa,
		    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'))) < 0)
		return -errno;
	b->notify_fd = TAKE_FD(fd);
	return 1;
}

/*
 * Sends one sd_notify datagram and never blocks: a worker that waits for batond to read would
 * hold its accepted requests (libsystemd's sd_notify() blocks once 10 datagrams are queued,
 * net.unix.max_dgram_qlen). Returns 0 (sent, or no $NOTIFY_SOCKET), -EAGAIN (the receiver's
 * queue is full: nothing was sent) or -errno.
 */
static int notify(struct baton *b, const char *text)
{
	for (int tries = 0; tries < 2;) {
		int r;

		if (b->notify_fd < 0) {
			r = notify_connect(b);
			if (r <= 0)
				return r;
		}
		if (send(b->notify_fd, text, strlen(text), MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			return -EAGAIN;
		if (errno != ECONNREFUSED && errno != ENOTCONN && errno != ECONNRESET)
			return -errno;
		/* Nobody behind the address any more (a new batond bound it anew): connect again. */
		if (b->notify_watched && b->drain_fd >= 0)
			(void)epoll_ctl(b->drain_fd, EPOLL_CTL_DEL, b->notify_fd, NULL);
		b->notify_watched = false;
		close_fdp(&b->notify_fd);
		b->notify_fd = -1;
		tries++;
	}
	return -ECONNREFUSED;
}

/* While READY=1 waits for room, the drain fd also wakes the program when there is some. */
static void notify_watch(struct baton *b, bool on)
{
	struct epoll_event ev = { .events = EPOLLOUT, .data.fd = b->notify_fd };

	if (b->drain_fd < 0 || b->notify_fd < 0 || b->notify_watched == on)
		return;
	if (epoll_ctl(b->drain_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, b->notify_fd, &ev) == 0)
		b->notify_watched = on;
}

/* Sends a READY=1 that found the queue full; returns 0 (sent, or still waiting) or -errno. */
static int ready_retry(struct baton *b)
{
	int r;

	if (!b->ready_pending)
		return 0;
	r = notify(b, "READY=1");
	if (r == -EAGAIN)
		return 0;
	b->ready_pending = false;
	notify_watch(b, false);
	return r;
}

int baton_ready(struct baton *b)
{
	uint8_t msg[PROTO_HEADER_SIZE];
	int r;

	if (!b)
		return -EINVAL;
	if (b->mode == BATON_MODE_CHANNEL)
		return channel_send(b, msg, proto_encode_ready(msg, sizeof(msg)),
				    BATON_SEND_TIMEOUT_MSEC);
	r = notify(b, "READY=1");
	if (r != -EAGAIN)
		return r;
	/* Never lost, never waited for: sent by a later call, when the receiver has room. */
	b->ready_pending = true;
	notify_watch(b, true);
	return 0;
}

/* One line of at most BATON_TEXT_MAX bytes, nothing below 0x20, no 0x7f: what STATUS takes. */
static int check_text(const char *text)
{
	size_t len = 0;

	for (const unsigned char *p = (const unsigned char *)text; *p; p++, len++) {
		if (*p < 0x20 || *p == 0x7f)
			return -EINVAL;
	}
	return len > BATON_TEXT_MAX ? -E2BIG : 0;
}

int baton_status(struct baton *b, unsigned inflight, const char *text)
{
	int r;

	if (!b)
		return -EINVAL;
	if (text) {
		r = check_text(text);
		if (r < 0)
			return r;
	}
	if (b->mode == BATON_MODE_CHANNEL) {
		struct proto_status s = { .inflight = inflight };
		uint8_t msg[PROTO_HEADER_SIZE + 6 + PROTO_TEXT_MAX];

		if (text)
			memcpy(s.text, text, strlen(text) + 1);
		return channel_send(b, msg, proto_encode_status(msg, sizeof(msg), &s), 0);
	}
	/* A READY=1 still waiting goes first; a STATUS behind a full queue is dropped. */
	r = ready_retry(b);
	if (r < 0 || b->ready_pending)
		return r < 0 ? r : -EAGAIN;
	{
		char line[sizeof("STATUS=") + BATON_TEXT_MAX];

		if (text && *text)
			(void)snprintf(line, sizeof(line), "STATUS=%s", text);
		else
			(void)snprintf(line, sizeof(line), "STATUS=%u in flight", inflight);
		return notify(b, line);
	}
}

int baton_drain_signals(struct baton *b, const int *signals, size_t n_signals)
{
	uint64_t set = 0;

	if (!b || (n_signals > 0 && !signals))
		return -EINVAL;
	if (b->drain_fd >= 0)
		return -EBUSY;
	for (size_t i = 0; i < n_signals; i++) {
		int s = signals[i];

		if (s < 1 || s > BATON_MAX_SIGNAL || s == SIGKILL || s == SIGSTOP)
			return -EINVAL;
		set |= UINT64_C(1) << (s - 1);
	}
	b->drain_signals = set;
	return 0;
}

static int epoll_watch(int epoll_fd, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	return 0;
}

int baton_drain_fd(struct baton *b)
{
	_cleanup_close_ int epoll_fd = -1, signal_fd = -1;
	sigset_t mask;
	int r;

	if (!b)
		return -EINVAL;
	if (b->drain_fd >= 0)
		return b->drain_fd;
	if (b->channel_fd < 0 && b->drain_signals == 0)
		return -EOPNOTSUPP;

	/*
	 * Always an epoll set, even around one fd: when the channel ends, it leaves the set, and
	 * the fd the program polls stays the same and stops being readable.
	 */
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		return -errno;
	if (b->drain_signals != 0) {
		(void)sigemptyset(&mask);
		for (int s = 1; s <= BATON_MAX_SIGNAL; s++) {
			if (b->drain_signals & UINT64_C(1) << (s - 1))
				(void)sigaddset(&mask, s);
		}
		signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
		if (signal_fd < 0)
			return -errno;
		r = epoll_watch(epoll_fd, signal_fd);
		if (r < 0)
			return r;
	}
	if (b->channel_fd >= 0) {
		r = epoll_watch(epoll_fd, b->channel_fd);
		if (r < 0)
			return r;
	}
	/* Last, when nothing else can fail: from here on the signals wait for the signalfd. */
	if (b->drain_signals != 0) {
		r = pthread_sigmask(SIG_BLOCK, &mask, NULL);
		if (r != 0)
			return -r;
	}
	b->signal_fd = TAKE_FD(signal_fd);
	b->drain_fd = TAKE_FD(epoll_fd);
	if (b->ready_pending)
		notify_watch(b, true);
	return b->drain_fd;
}

/* The drain begins (once); STOPPING=1 tells a service manager, if we have one. */
static void drain_begin(struct baton *b, int signo)
{
	if (b->draining)
		return;
	b->draining = true;
	b->drain_signal = signo;
	if (b->mode != BATON_MODE_CHANNEL && !b->stopping_sent) {
		(void)notify(b, "STOPPING=1"); /* best effort: batond knows it sent the drain */
		b->stopping_sent = true;
	}
}

static int signals_read(struct baton *b)
{
	struct signalfd_siginfo si;

	for (;;) {
		ssize_t n = read(b->signal_fd, &si, sizeof(si));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -errno;
		}
		if ((size_t)n != sizeof(si))
			return -EIO;
		drain_begin(b, (int)si.ssi_signo);
	}
}

/* Reads what batond sent since the last call: DRAIN, or ERROR and the end. */
static int channel_read(struct baton *b)
{
	int fds[PROTO_MAX_FDS_PER_MESSAGE];

	for (unsigned i = 0; i < BATON_MESSAGES_PER_CALL; i++) {
		struct proto_header h;
		struct proto_drain d;
		size_t n_fds = 0;
		ssize_t n;
		int r;

		n = channel_recv(b, &h, fds, &n_fds);
		if (n == -EAGAIN)
			return 0;
		if (n < 0)
			return (int)n;
		if (h.type != PROTO_DRAIN) {
			/* LISTENERS after the set, or a worker's message: out of order. */
			close_fds(fds, n_fds);
			channel_refuse(b, EPROTO, "DRAIN expected");
			return -EPROTO;
		}
		r = proto_decode_drain(b->buf, (size_t)n, &d);
		if (r < 0) {
			channel_refuse(b, EBADMSG, "malformed DRAIN");
			return r;
		}
		/* Relative to receipt: the two sides need not share a clock. */
		b->drain_deadline_usec = d.timeout_usec == PROTO_DRAIN_NO_TIMEOUT
						 ? BATON_NO_DEADLINE
						 : usec_add(now_usec(), d.timeout_usec);
		drain_begin(b, 0);
	}
	return 0; /* more may wait: the drain fd stays readable, so the program calls again */
}

/* Moves the listeners of a freshly received set that we do not know by name onto ours. */
static int merge_listeners(struct baton *b, struct baton_listener *old, size_t n_old)
{
	struct baton_listener *fresh = b->listeners;
	size_t n_fresh = b->n_listeners, n = n_old;
	struct baton_listener *all = realloc(old, (n_old + n_fresh + 1) * sizeof(*old));
	int added = 0;

	if (!all) {
		b->listeners = old;
		b->n_listeners = n_old;
		for (size_t i = 0; i < n_fresh; i++) {
			close_fdp(&fresh[i].fd);
			free(fresh[i].name);
		}
		free(fresh);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n_fresh; i++) {
		bool known = false;

		for (size_t j = 0; j < n_old && !known; j++)
			known = strcmp(all[j].name, fresh[i].name) == 0;
		if (known) {
			/* The program already has this one: keep its fd, drop the duplicate. */
			close_fdp(&fresh[i].fd);
			free(fresh[i].name);
			continue;
		}
		all[n++] = fresh[i];
		added++;
	}
	free(fresh);
	b->listeners = all;
	b->n_listeners = n;
	return added;
}

int baton_refresh(struct baton *b)
{
	_cleanup_free_ struct proto_listeners *m = NULL;
	struct baton_listener *old;
	size_t n_old, received = 0;
	bool got_set = false; /* a LISTENERS message arrived: b->n_listeners is the total */
	uint64_t deadline = usec_add(now_usec(), BATON_OPEN_TIMEOUT_MSEC * USEC_PER_MSEC);
	uint8_t msg[PROTO_HEADER_SIZE];
	int fds[PROTO_MAX_FDS_PER_MESSAGE];
	int r;

	if (!b)
		return -EINVAL;
	if (b->mode != BATON_MODE_CHANNEL || b->channel_fd < 0)
		return -EOPNOTSUPP;
	if (b->peer_minor < 1)
		return -EOPNOTSUPP; /* a 1.0 batond does not know REFRESH */
	m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	r = channel_send(b, msg, proto_encode_refresh(msg, sizeof(msg)), msec_until(deadline));
	if (r < 0)
		return r == -EAGAIN ? -ETIMEDOUT : r;

	/* take_listeners() fills b->listeners: let it, with the old set put aside. */
	old = b->listeners;
	n_old = b->n_listeners;
	b->listeners = NULL;
	b->n_listeners = 0;
	do {
		struct proto_header h;
		size_t n_fds = 0;
		ssize_t n;

		r = wait_fd(b->channel_fd, POLLIN, deadline);
		if (r >= 0) {
			n = channel_recv(b, &h, fds, &n_fds);
			if (n == -EAGAIN)
				continue;
			r = n < 0 ? (int)n : 0;
		}
		if (r >= 0 && h.type == PROTO_DRAIN) {
			struct proto_drain d;

			/* A drain may come before the set: remember it, as baton_process() would. */
			r = proto_decode_drain(b->buf, (size_t)n, &d);
			if (r >= 0) {
				b->drain_deadline_usec =
					d.timeout_usec == PROTO_DRAIN_NO_TIMEOUT
						? BATON_NO_DEADLINE
						: usec_add(now_usec(), d.timeout_usec);
				drain_begin(b, 0);
			}
			continue;
		}
		if (r >= 0 && h.type != PROTO_LISTENERS) {
			close_fds(fds, n_fds);
			channel_refuse(b, EPROTO, "LISTENERS expected");
			r = -EPROTO;
		}
		if (r >= 0)
			r = take_listeners(b, m, (size_t)n, fds, n_fds, &received);
		if (r < 0) {
			/* Whatever arrived is dropped; the program keeps the set it had. */
			for (size_t i = 0; i < b->n_listeners; i++) {
				close_fdp(&b->listeners[i].fd);
				free(b->listeners[i].name);
			}
			free(b->listeners);
			b->listeners = old;
			b->n_listeners = n_old;
			return r;
		}
		got_set = true;
	} while (!got_set || received < b->n_listeners);
	return merge_listeners(b, old, n_old);
}

int baton_process(struct baton *b)
{
	int r = 0;

	if (!b)
		return -EINVAL;
	r = ready_retry(b);
	if (r >= 0 && b->signal_fd >= 0)
		r = signals_read(b);
	if (r >= 0 && b->channel_fd >= 0) {
		r = channel_read(b);
		if (r < 0) {
			/* Nobody supervises us any more: finish what we have and go. */
			channel_close(b);
			drain_begin(b, 0);
		}
	}
	return r < 0 ? r : b->draining;
}

int baton_draining(const struct baton *b)
{
	return b && b->draining;
}

uint64_t baton_drain_deadline(const struct baton *b)
{
	return b && b->draining ? b->drain_deadline_usec : BATON_NO_DEADLINE;
}

int baton_drain_signal(const struct baton *b)
{
	return b ? b->drain_signal : 0;
}

int baton_drained(struct baton *b)
{
	uint8_t msg[PROTO_HEADER_SIZE];
	int r;

	if (!b)
		return -EINVAL;
	if (b->mode == BATON_MODE_CHANNEL)
		return channel_send(b, msg, proto_encode_drained(msg, sizeof(msg)),
				    BATON_SEND_TIMEOUT_MSEC);
	if (b->stopping_sent)
		return 0;
	b->stopping_sent = true;
	r = notify(b, "STOPPING=1");
	return r == -EAGAIN ? 0 : r; /* batond learns of the exit anyway */
}

/* --- the two-stage close (issue #7) --- */

int baton_listener_shutdown_begin(int fd)
{
	return listen_close_refuse_new(fd);
}

int baton_listener_pending(int fd, unsigned *ret_queued, unsigned *ret_half_open)
{
	unsigned queued, half_open;
	int r;

	r = listen_close_pending(fd, &queued, &half_open);
	if (r < 0)
		return r;
	if (ret_queued)
		*ret_queued = queued;
	if (ret_half_open)
		*ret_half_open = half_open;
	return 0;
}

int baton_accept_error_is_transient(int error)
{
	switch (error < 0 ? -error : error) {
	case EINTR:
	case ECONNABORTED:
	/* Linux reports a pending network error of the new connection on accept(). */
	case EPROTO:
	case ENOPROTOOPT:
	case EHOSTDOWN:
	case ENONET:
	case EHOSTUNREACH:
	case EOPNOTSUPP:
	case ENETDOWN:
	case ENETUNREACH:
	case EPERM: /* a firewall rule refused it */
		return 1;
	default:
		return 0;
	}
}

/* Accepts every connection queued now and hands each to accept_cb. Returns 0 or -errno. */
static int accept_all(int fd, int (*accept_cb)(int conn_fd, void *userdata), void *userdata)
{
	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		int r;

		if (c < 0) {
			if (errno == EAGAIN)
				return 0;
			if (baton_accept_error_is_transient(errno))
				continue;
			return -errno;
		}
		r = accept_cb(c, userdata);
		if (r < 0)
			return r;
	}
}

int baton_listener_shutdown(int fd, uint64_t timeout_usec,
			    int (*accept_cb)(int conn_fd, void *userdata), void *userdata,
			    unsigned *ret_left)
{
	uint64_t deadline = usec_add(now_usec(), timeout_usec);
	int type = 0, flags, r;
	socklen_t len = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return -errno;
	if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
		return -EOPNOTSUPP; /* UDP has no connections to hand over: use the two calls */
	r = listen_close_refuse_new(fd);
	/* An abstract Unix socket cannot refuse: drain what is there as far as it goes. */
	if (r < 0 && r != -EOPNOTSUPP)
		return r;
	flags = fcntl(fd, F_GETFL);
	if (flags < 0)
		return -errno;
	if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -errno;

	for (;;) {
		unsigned queued, half_open;
		int wait_msec;

		if (accept_cb) {
			r = accept_all(fd, accept_cb, userdata);
			if (r < 0)
				return r;
		}
		r = listen_close_pending(fd, &queued, &half_open);
		if (r < 0)
			return r;
		if (queued == 0 && half_open == 0) {
			if (ret_left)
				*ret_left = 0;
			return 0;
		}
		wait_msec = msec_until(deadline);
		if (wait_msec == 0) {
			if (ret_left)
				*ret_left = queued + half_open;
			return -ETIMEDOUT;
		}
		if (wait_msec > BATON_SHUTDOWN_POLL_MSEC)
			wait_msec = BATON_SHUTDOWN_POLL_MSEC;
		/*
		 * With accept_cb, a handshake that completes wakes us at once; without, others
		 * accept and a non-empty queue would make poll() return at once: just wait.
		 */
		if (accept_cb) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };

			if (poll(&pfd, 1, wait_msec) < 0 && errno != EINTR)
				return -errno;
		} else if (poll(NULL, 0, wait_msec) < 0 && errno != EINTR) {
			return -errno;
		}
	}
}
