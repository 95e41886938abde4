/* SPDX-License-Identifier: MIT */
/* example-httpd.c - epoll HTTP/1.x server on libbaton that drains without losing a reply. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "baton.h"
#include "cleanup.h"
#include "duration.h"
#include "sockaddr.h"

#define HTTPD_NAME    "example-httpd"
#define HTTPD_VERSION "0.1.0"

#define HTTPD_MAX_LISTENERS	1024	/* sockets: inherited plus --listen; batond passes 1024 */
#define HTTPD_LISTEN_BACKLOG	4096	/* connections; the kernel caps it at net.core.somaxconn */
#define HTTPD_DEFAULT_MAX_CONNS 10000	/* open client connections */
#define HTTPD_MAX_CONNS_LIMIT	1000000 /* largest --max-conns accepted */
#define HTTPD_REQUEST_MAX	8192	/* bytes of request line plus headers, per connection */
#define HTTPD_BODY_MAX		256	/* bytes of the 200 body, "pid=N gen=G worker=W\n" */
#define HTTPD_REPLY_MAX		512	/* bytes of one whole reply, status line to end of body */
#define HTTPD_REPLY_HEAD_MAX	192	/* bytes of the longest reply head conn_reply() builds */
#define HTTPD_SLOW_MAX_MSEC	60000	/* cap on N in /slow?ms=N */
#define HTTPD_ACCEPT_BATCH	128	/* connections accepted per wakeup, so others get a turn */
#define HTTPD_RUN_BUDGET	64	/* steps one connection runs per wakeup before it yields */
#define HTTPD_ACCEPT_PAUSE_MSEC 100	/* accept pause after EMFILE, ENFILE, ENOBUFS, ENOMEM */
#define HTTPD_PAUSE_LOG_MSEC	10000	/* at most one "pausing accept" line per this long */
#define HTTPD_IDLE_MSEC		60000 /* to send a whole request, or to take a reply, while serving */
#define HTTPD_DRAIN_IDLE_MSEC	2000 /* to send a whole request once draining */
#define HTTPD_LINGER_MSEC	2000 /* for the client to close after our FIN; then we close anyway */
#define HTTPD_SWEEP_MSEC	250 /* period of the timeout sweep, so the granularity above */
#define HTTPD_MAX_EVENTS	256 /* epoll events taken per wakeup */
#define HTTPD_LOG_LINE_MAX	512 /* bytes of one log line */
#define HTTPD_STATUS_MSEC	250 /* at most one STATUS per this long, sent when the count changed */
#define HTTPD_SHUTDOWN_MSEC	10000 /* to take what is queued on our own listeners once draining */
#define HTTPD_STATUS_TEXT_MAX	64    /* bytes of "draining, N connections" */

_Static_assert(HTTPD_REPLY_HEAD_MAX + HTTPD_BODY_MAX <= HTTPD_REPLY_MAX, "a reply must fit");

#define USEC_PER_MSEC DURATION_USEC_PER_MSEC
#define USEC_PER_SEC  DURATION_USEC_PER_SEC
#define NSEC_PER_USEC UINT64_C(1000)

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

enum source_type {
	SOURCE_LISTENER,
	SOURCE_DRAIN,
	SOURCE_PAUSE,
	SOURCE_SWEEP,
	SOURCE_CONN,
	SOURCE_SLOW,
};

/* What an epoll event is about: epoll_event.data.ptr points at one, embedded in its owner. */
struct source {
	enum source_type type;
};

struct listener {
	struct source src;
	int fd;
	bool tcp;	    /* set TCP_NODELAY on what it accepts */
	bool owned;	    /* bound by us (--listen); otherwise libbaton's, which closes it */
	bool watched;	    /* in the epoll set */
	bool shutting_down; /* owned, draining: new connections refused, the queue still taken */
	char *unlink_path; /* Unix socket file we bound ourselves, removed when we stop accepting */
};

enum conn_state {
	CONN_READING, /* waiting for a complete request head */
	CONN_SLOW,    /* request parsed, its reply held back by the /slow timer */
	CONN_WRITING, /* reply built, not all of it handed to the kernel yet */
	CONN_LINGER,  /* last reply sent and FIN queued; reading until the client closes */
};

struct conn {
	struct source sock; /* events on fd */
	struct source slow; /* events on slow_fd */
	struct conn *prev, *next;
	int fd;
	int slow_fd; /* timerfd, created by the first /slow request, -1 before */
	enum conn_state state;
	uint32_t events;	/* what fd is registered for in epoll */
	bool dead;		/* closed; freed once the current batch of events is done */
	bool read_eof;		/* the client sent FIN */
	bool close_after;	/* the reply being built or sent is the last one */
	bool head;		/* the request waiting on its /slow timer is HEAD */
	uint64_t deadline_usec; /* CLOCK_MONOTONIC; 0 means none; enforced by the sweep */
	uint64_t n_served;
	size_t req_len; /* bytes of in[] taken by the request being answered */
	size_t out_len, out_off;
	size_t in_len;
	char out[HTTPD_REPLY_MAX];
	char in[HTTPD_REQUEST_MAX];
};

struct httpd {
	struct baton *baton; /* listeners from batond or systemd; READY, STATUS, drain */
	int epoll_fd;
	int drain_fd; /* libbaton's: stop signals, and batond's DRAIN over the channel */
	int pause_fd; /* timerfd: end of an accept pause */
	int sweep_fd; /* timerfd: periodic sweep while connections, a STATUS or a shutdown wait */
	struct source drain_src, pause_src, sweep_src;
	struct listener listeners[HTTPD_MAX_LISTENERS];
	size_t n_listeners;
	struct conn *conns; /* live connections */
	struct conn *dead;  /* closed during this batch of events, freed after it */
	size_t n_conns;
	size_t max_conns;
	size_t n_shutting_down;		 /* owned listeners still handing over their queue */
	uint64_t shutdown_deadline_usec; /* then they close, whatever is still queued */
	bool paused;   /* accept paused after a resource error, until pause_fd fires */
	bool sweeping; /* sweep_fd armed */
	bool ready;    /* READY sent: STATUS may follow */
	bool draining;
	size_t status_conns; /* the count in the last STATUS; SIZE_MAX before the first */
	bool status_draining;
	bool status_failed; /* a failed STATUS was logged once */
	uint64_t status_usec;
	uint64_t now_usec; /* CLOCK_MONOTONIC, read once per wakeup */
	uint64_t pause_logged_usec;
	char body[HTTPD_BODY_MAX];
	size_t body_len;
};

struct request {
	bool head;
	bool keep_alive;
	uint64_t slow_msec;
};

static void conn_close(struct httpd *h, struct conn *c);
static void conn_run(struct httpd *h, struct conn *c);

/* Writes one whole line with a single write(), so lines from concurrent workers do not mix. */
__attribute__((format(printf, 2, 0))) static void log_va(int error, const char *fmt, va_list ap)
{
	char line[HTTPD_LOG_LINE_MAX];
	size_t len;
	int n;

	n = snprintf(line, sizeof(line), "%s: ", HTTPD_NAME);
	len = n > 0 ? (size_t)n : 0;
	n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	len = n > 0 ? len + (size_t)n : len;
	if (error != 0 && len < sizeof(line)) {
		n = snprintf(line + len, sizeof(line) - len, ": %s", strerror(-error));
		len = n > 0 ? len + (size_t)n : len;
	}
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2; /* truncated: keep room for the newline */
	line[len++] = '\n';
	(void)!write(STDERR_FILENO, line, len);
}

__attribute__((format(printf, 1, 2))) static void log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_va(0, fmt, ap);
	va_end(ap);
}

/* Logs "example-httpd: <message>: <strerror(-error)>" and returns error. */
__attribute__((format(printf, 2, 3))) static int log_errno(int error, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_va(error, fmt, ap);
	va_end(ap);
	return error;
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid pointer. */
	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_USEC;
}

static struct timespec timespec_from_usec(uint64_t usec)
{
	return (struct timespec){
		.tv_sec = (time_t)(usec / USEC_PER_SEC),
		.tv_nsec = (long)(usec % USEC_PER_SEC * NSEC_PER_USEC),
	};
}

/* Arms a timerfd usec from now (0 disarms), repeating every usec if periodic. */
static int timer_arm(int fd, uint64_t usec, bool periodic)
{
	struct timespec value = timespec_from_usec(usec);
	struct itimerspec its = {
		.it_value = value,
		.it_interval = periodic ? value : (struct timespec){ 0 },
	};

	if (timerfd_settime(fd, 0, &its, NULL) < 0)
		return -errno;
	return 0;
}

/* Consumes a timerfd's expiry count so level-triggered epoll stops reporting it. */
static void timer_ack(int fd)
{
	uint64_t expirations;

	(void)!read(fd, &expirations, sizeof(expirations));
}

static int epoll_add(struct httpd *h, int fd, uint32_t events, struct source *src)
{
	struct epoll_event ev = { .events = events, .data.ptr = src };

	if (epoll_ctl(h->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	return 0;
}

/*
 * A Unix socket file outlives the server that bound it. Removes it, so that bind() can be tried
 * again, only if it is a socket that nobody accepts on. Returns 0 or -errno (-EADDRINUSE if live).
 */
static int unix_remove_stale(const struct sockaddr_un *sun, socklen_t len)
{
	_cleanup_close_ int probe = -1;
	struct stat st;

	if (sun->sun_path[0] == '\0')
		return -EADDRINUSE; /* abstract: there is no file, so someone holds the name */
	if (lstat(sun->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EADDRINUSE;
	probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (probe < 0)
		return -errno;
	/* EAGAIN (full backlog) also means alive: only ECONNREFUSED proves nobody listens. */
	if (connect(probe, (const struct sockaddr *)sun, len) == 0 || errno != ECONNREFUSED)
		return -EADDRINUSE;
	if (unlink(sun->sun_path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* Creates a listening stream socket on addr. Returns 0 and writes the fd to *ret_fd, or -errno. */
static int listener_bind(const struct sockaddr_storage *addr, socklen_t len, int *ret_fd)
{
	_cleanup_close_ int fd = -1;
	const struct sockaddr *sa = (const struct sockaddr *)addr;
	int one = 1;
	int r;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* Restarting a benchmark must not wait for TIME_WAIT connections of the last run. */
	if (sa->sa_family != AF_UNIX &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		return -errno;
	if (bind(fd, sa, len) < 0) {
		if (errno != EADDRINUSE || sa->sa_family != AF_UNIX)
			return -errno;
		r = unix_remove_stale((const struct sockaddr_un *)addr, len);
		if (r < 0)
			return r;
		if (bind(fd, sa, len) < 0)
			return -errno;
	}
	if (listen(fd, HTTPD_LISTEN_BACKLOG) < 0)
		return -errno;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/*
 * accept4() on a listener shared with other processes must not block when another process took
 * the connection first. O_NONBLOCK lives on the open file description, so it is shared with the
 * supervisor's copy and any other worker; batond and systemd create listeners non-blocking
 * already, so this usually changes nothing.
 */
static int fd_set_nonblock(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -errno;
	if (flags & O_NONBLOCK)
		return 0;
	if (fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

/*
 * Adds fd to the listeners. An owned fd (one we bound) is ours, closed on failure too; any other
 * stays libbaton's, which closes it in baton_close().
 */
static int listener_add(struct httpd *h, int fd_in, bool tcp, bool owned, const char *unlink_path)
{
	_cleanup_close_ int fd = owned ? fd_in : -1;
	struct listener *l;
	int r;

	if (h->n_listeners >= HTTPD_MAX_LISTENERS)
		return -E2BIG;
	r = fd_set_nonblock(fd_in);
	if (r < 0)
		return r;
	l = &h->listeners[h->n_listeners];
	*l = (struct listener){ .src.type = SOURCE_LISTENER, .fd = -1, .tcp = tcp, .owned = owned };
	if (unlink_path) {
		l->unlink_path = strdup(unlink_path);
		if (!l->unlink_path)
			return -ENOMEM;
	}
	l->fd = owned ? TAKE_FD(fd) : fd_in;
	h->n_listeners++;
	return 0;
}

/*
 * Takes the listeners libbaton found: from batond over the channel (BATON_FD), or from
 * LISTEN_FDS (batond --pass env, systemd). Non-stream or non-listening fds are reported and
 * left alone: they are not ours to close, and closing the last reference to a listener would
 * reset its queue.
 */
static int listeners_inherit(struct httpd *h)
{
	unsigned n = baton_listener_count(h->baton);

	if (n > HTTPD_MAX_LISTENERS) {
		log_info("%u listeners inherited: at most %d", n, HTTPD_MAX_LISTENERS);
		return -E2BIG;
	}
	for (unsigned i = 0; i < n; i++) {
		int fd = baton_listener_fd(h->baton, i);
		const char *name = baton_listener_name(h->baton, i);
		int tcp = sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0);
		int r;

		if (tcp < 0) {
			(void)log_errno(tcp, "listener fd %d (%s), ignoring", fd, name);
			continue;
		}
		if (tcp == 0 && sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
			log_info("listener fd %d (%s): not a listening stream socket, ignoring", fd,
				 name);
			continue;
		}
		r = listener_add(h, fd, tcp > 0, false, NULL);
		if (r < 0)
			return log_errno(r, "listener fd %d (%s)", fd, name);
	}
	return 0;
}

/*
 * Stops accepting from l for good. Ours (--listen) closes; the last reference, so whatever is
 * still queued is reset: the drain first empties it (listeners_shutdown_check()). One that
 * libbaton holds stays open until baton_close(); the supervisor's copy keeps its queue alive.
 */
static void listener_close(struct httpd *h, struct listener *l)
{
	if (l->fd < 0)
		return;
	if (l->watched)
		(void)epoll_ctl(h->epoll_fd, EPOLL_CTL_DEL, l->fd, NULL);
	l->watched = false;
	if (l->shutting_down) {
		l->shutting_down = false;
		h->n_shutting_down--;
	}
	if (l->owned)
		(void)safe_close(l->fd);
	l->fd = -1;
	/* Standalone only: new clients then fail fast with ENOENT instead of queueing. */
	if (l->unlink_path)
		(void)unlink(l->unlink_path);
	free(l->unlink_path);
	l->unlink_path = NULL;
}

static void listeners_close(struct httpd *h)
{
	for (size_t i = 0; i < h->n_listeners; i++)
		listener_close(h, &h->listeners[i]);
}

/* Whether l should be in the epoll set now: not while paused or full, nor once draining. */
static bool listener_wanted(const struct httpd *h, const struct listener *l)
{
	if (l->fd < 0 || h->paused || h->n_conns >= h->max_conns)
		return false;
	/* Draining: only our own listeners, until their queue is handed over. */
	return !h->draining || l->shutting_down;
}

/* Puts the listeners into epoll, or takes them out, as draining, pausing and the cap decide. */
static void listeners_update(struct httpd *h)
{
	for (size_t i = 0; i < h->n_listeners; i++) {
		struct listener *l = &h->listeners[i];
		bool want = listener_wanted(h, l);
		int r;

		if (want == l->watched)
			continue;
		/*
		 * EPOLLEXCLUSIVE: when several workers share this listener, a new connection wakes one
		 * of them rather than all. It is allowed with EPOLL_CTL_ADD only, hence add and delete
		 * instead of modify.
		 */
		if (want)
			r = epoll_add(h, l->fd, EPOLLIN | EPOLLEXCLUSIVE, &l->src);
		else
			r = epoll_ctl(h->epoll_fd, EPOLL_CTL_DEL, l->fd, NULL) < 0 ? -errno : 0;
		if (r < 0)
			(void)log_errno(r, "%s listener fd %d, ignoring",
					want ? "watch" : "unwatch", l->fd);
		l->watched = want;
	}
}

/* Resource shortage: accepting again at once would spin, so wait HTTPD_ACCEPT_PAUSE_MSEC. */
static void accept_pause(struct httpd *h, int error)
{
	int r;

	if (h->pause_logged_usec == 0 ||
	    h->now_usec - h->pause_logged_usec >= HTTPD_PAUSE_LOG_MSEC * USEC_PER_MSEC) {
		log_info("accept: %s, pausing accept for %dms (logged at most every %ds)",
			 strerror(-error), HTTPD_ACCEPT_PAUSE_MSEC, HTTPD_PAUSE_LOG_MSEC / 1000);
		h->pause_logged_usec = h->now_usec;
	}
	r = timer_arm(h->pause_fd, HTTPD_ACCEPT_PAUSE_MSEC * USEC_PER_MSEC, false);
	if (r < 0) {
		(void)log_errno(r, "arm accept pause timer, not pausing");
		return;
	}
	h->paused = true;
	listeners_update(h);
}

static void on_pause_end(struct httpd *h)
{
	timer_ack(h->pause_fd);
	h->paused = false;
	listeners_update(h);
}

/* Arms the periodic sweep, if it is not: on_sweep() disarms it when nothing needs it. */
static void sweep_start(struct httpd *h)
{
	int r;

	if (h->sweeping)
		return;
	r = timer_arm(h->sweep_fd, HTTPD_SWEEP_MSEC * USEC_PER_MSEC, true);
	if (r < 0)
		(void)log_errno(r, "arm timeout sweep, timeouts not enforced");
	else
		h->sweeping = true;
}

/* Registers fd for events; on failure the connection is closed. */
static void conn_watch(struct httpd *h, struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = &c->sock };

	if (c->events == events)
		return;
	if (epoll_ctl(h->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
		conn_close(h, c);
		return;
	}
	c->events = events;
}

/* Takes ownership of fd (closed on failure too). */
static int conn_new(struct httpd *h, int fd_in)
{
	_cleanup_close_ int fd = fd_in;
	struct conn *c;
	int r;

	/* Field by field rather than calloc(): the buffers are touched only as far as they are used. */
	c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->sock.type = SOURCE_CONN;
	c->slow.type = SOURCE_SLOW;
	c->prev = NULL;
	c->next = h->conns;
	c->fd = -1;
	c->slow_fd = -1;
	c->state = CONN_READING;
	c->events = EPOLLIN;
	c->dead = false;
	c->read_eof = false;
	c->close_after = false;
	c->head = false;
	/* Accepted while draining (from the queue of a listener of ours): a short wait only. */
	c->deadline_usec = h->now_usec +
			   (h->draining ? HTTPD_DRAIN_IDLE_MSEC : HTTPD_IDLE_MSEC) * USEC_PER_MSEC;
	c->n_served = 0;
	c->req_len = 0;
	c->out_len = 0;
	c->out_off = 0;
	c->in_len = 0;

	r = epoll_add(h, fd, c->events, &c->sock);
	if (r < 0) {
		free(c);
		return r;
	}
	c->fd = TAKE_FD(fd);
	if (h->conns)
		h->conns->prev = c;
	h->conns = c;
	h->n_conns++;
	listeners_update(h);
	sweep_start(h);
	return 0;
}

/*
 * Closes c's fds now and frees c after the current batch of events, which may still point at it.
 * Closing the fds also takes them out of epoll: nothing else holds these open file descriptions.
 */
static void conn_close(struct httpd *h, struct conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	(void)close(c->fd);
	c->fd = -1;
	c->slow_fd = safe_close(c->slow_fd);

	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = NULL;
	c->next = h->dead;
	h->dead = c;
	h->n_conns--;
	listeners_update(h);
}

static void conns_reap(struct httpd *h)
{
	while (h->dead) {
		struct conn *c = h->dead;

		h->dead = c->next;
		free(c);
	}
}

static const char *status_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 405:
		return "Method Not Allowed";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Error";
	}
}

/* Builds the reply to the current request into c->out and moves c to CONN_WRITING. */
static void conn_reply(struct httpd *h, struct conn *c, int status, bool head)
{
	char error_body[64];
	const char *body = h->body;
	size_t body_len = h->body_len;
	int n;

	if (status != 200) {
		/* After an error we cannot trust where the next request starts: end the connection. */
		n = snprintf(error_body, sizeof(error_body), "%d %s\n", status,
			     status_reason(status));
		body = error_body;
		body_len = (size_t)n;
		c->close_after = true;
	}
	if (h->draining)
		c->close_after = true;

	n = snprintf(c->out, sizeof(c->out),
		     "HTTP/1.1 %d %s\r\n"
		     "Content-Type: text/plain\r\n"
		     "Content-Length: %zu\r\n"
		     "%s"
		     "Connection: %s\r\n"
		     "\r\n",
		     status, status_reason(status), body_len,
		     status == 405 ? "Allow: GET, HEAD\r\n" : "",
		     c->close_after ? "close" : "keep-alive");
	/* Cannot fail: the head is at most HTTPD_REPLY_HEAD_MAX, the body at most HTTPD_BODY_MAX. */
	assert(n > 0 && (size_t)n <= HTTPD_REPLY_HEAD_MAX && body_len <= HTTPD_BODY_MAX);
	c->out_len = (size_t)n;
	if (!head) {
		memcpy(c->out + c->out_len, body, body_len);
		c->out_len += body_len;
	}
	c->out_off = 0;
	c->state = CONN_WRITING;
	c->deadline_usec = h->now_usec + HTTPD_IDLE_MSEC * USEC_PER_MSEC;
}

static bool header_name_is(const char *name, size_t len, const char *expected)
{
	return len == strlen(expected) && strncasecmp(name, expected, len) == 0;
}

static bool is_ows(char ch)
{
	return ch == ' ' || ch == '\t';
}

static bool is_all_zeros(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '0')
			return false;
	}
	return true;
}

/* Reads the comma-separated tokens of a Connection header; "close" wins over "keep-alive". */
static void connection_tokens(const char *value, size_t len, bool *close, bool *keep_alive)
{
	const char *end = value + len;

	while (value < end) {
		const char *comma = memchr(value, ',', (size_t)(end - value));
		const char *token_end = comma ? comma : end;

		while (value < token_end && is_ows(*value))
			value++;
		while (token_end > value && is_ows(token_end[-1]))
			token_end--;
		if (header_name_is(value, (size_t)(token_end - value), "close"))
			*close = true;
		else if (header_name_is(value, (size_t)(token_end - value), "keep-alive"))
			*keep_alive = true;
		value = comma ? comma + 1 : end;
	}
}

/* Parses the "ms=N" parameter of a /slow query; N is capped at HTTPD_SLOW_MAX_MSEC. */
static int slow_query_parse(const char *query, size_t len, uint64_t *ret_msec)
{
	const char *end = query + len;

	while (query < end) {
		const char *amp = memchr(query, '&', (size_t)(end - query));
		const char *param_end = amp ? amp : end;

		if (param_end - query > 3 && memcmp(query, "ms=", 3) == 0) {
			uint64_t msec = 0;

			for (const char *p = query + 3; p < param_end; p++) {
				if (*p < '0' || *p > '9')
					return -EINVAL;
				/* Stop growing once over the cap: no overflow whatever the length. */
				if (msec <= HTTPD_SLOW_MAX_MSEC)
					msec = msec * 10 + (uint64_t)(*p - '0');
			}
			*ret_msec = msec > HTTPD_SLOW_MAX_MSEC ? HTTPD_SLOW_MAX_MSEC : msec;
			return 0;
		}
		query = amp ? amp + 1 : end;
	}
	return 0;
}

/*
 * Parses a request head of len bytes that ends in "\r\n\r\n" (so every line below has its CRLF);
 * buf is not NUL-terminated. Returns 200 and fills *ret, or the status to refuse the request with.
 * Only GET and HEAD are served, and a request body is refused: what we never read cannot be
 * mistaken for the next request.
 */
static int request_parse(const char *buf, size_t len, struct request *ret)
{
	const char *end = buf + len;
	const char *eol = memmem(buf, len, "\r\n", 2);
	const char *sp1, *target, *sp2, *version, *query, *line;
	struct request req = { .slow_msec = 0 };
	bool close = false, keep_alive = false;
	size_t target_len, path_len;

	sp1 = memchr(buf, ' ', (size_t)(eol - buf));
	if (!sp1 || sp1 == buf)
		return 400;
	target = sp1 + 1;
	sp2 = memchr(target, ' ', (size_t)(eol - target));
	if (!sp2 || sp2 == target || target[0] != '/')
		return 400;
	version = sp2 + 1;
	if (eol - version != 8 || memcmp(version, "HTTP/1.", 7) != 0)
		return eol - version >= 5 && memcmp(version, "HTTP/", 5) == 0 ? 505 : 400;
	if (version[7] != '0' && version[7] != '1')
		return 505;

	if (sp1 - buf == 3 && memcmp(buf, "GET", 3) == 0)
		req.head = false;
	else if (sp1 - buf == 4 && memcmp(buf, "HEAD", 4) == 0)
		req.head = true;
	else
		return 405;

	for (line = eol + 2; line < end;) {
		const char *line_end = memmem(line, (size_t)(end - line), "\r\n", 2);
		const char *colon, *value;
		size_t value_len;

		if (line_end == line)
			break; /* the empty line that ends the head */
		colon = memchr(line, ':', (size_t)(line_end - line));
		if (!colon || colon == line)
			return 400;
		value = colon + 1;
		while (value < line_end && is_ows(*value))
			value++;
		value_len = (size_t)(line_end - value);
		while (value_len > 0 && is_ows(value[value_len - 1]))
			value_len--;

		if (header_name_is(line, (size_t)(colon - line), "connection")) {
			connection_tokens(value, value_len, &close, &keep_alive);
		} else if (header_name_is(line, (size_t)(colon - line), "content-length")) {
			/* Only an explicit empty body is fine. */
			if (!is_all_zeros(value, value_len))
				return 400;
		} else if (header_name_is(line, (size_t)(colon - line), "transfer-encoding")) {
			return 400;
		}
		line = line_end + 2;
	}

	/* HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 closes it. */
	req.keep_alive = !close && (version[7] == '1' || keep_alive);

	target_len = (size_t)(sp2 - target);
	query = memchr(target, '?', target_len);
	path_len = query ? (size_t)(query - target) : target_len;
	if (path_len == strlen("/slow") && memcmp(target, "/slow", path_len) == 0 && query &&
	    slow_query_parse(query + 1, target_len - path_len - 1, &req.slow_msec) < 0)
		return 400;

	*ret = req;
	return 200;
}

/* Holds the reply for msec on a per-connection timerfd: the loop keeps serving everyone else. */
static int conn_arm_slow(struct httpd *h, struct conn *c, uint64_t msec)
{
	int r;

	if (c->slow_fd < 0) {
		_cleanup_close_ int fd =
			timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);

		if (fd < 0)
			return -errno;
		r = epoll_add(h, fd, EPOLLIN, &c->slow);
		if (r < 0)
			return r;
		c->slow_fd = TAKE_FD(fd);
	}
	return timer_arm(c->slow_fd, msec * USEC_PER_MSEC, false);
}

/* Answers the request that takes the first len bytes of c->in. */
static void conn_request(struct httpd *h, struct conn *c, size_t len)
{
	struct request req = { .keep_alive = false };
	int status;

	status = request_parse(c->in, len, &req);
	c->req_len = len;
	/*
	 * A client FIN (read_eof) does not end the connection here: pipelined requests before it
	 * are still answered, and conn_step_reading() closes once none is left.
	 */
	c->close_after = !req.keep_alive;
	if (status != 200) {
		conn_reply(h, c, status, false);
		return;
	}
	if (req.slow_msec > 0) {
		if (conn_arm_slow(h, c, req.slow_msec) >= 0) {
			c->state = CONN_SLOW;
			c->head = req.head;
			c->deadline_usec = 0;
			return;
		}
		/* Out of fds for the timer: refuse this one request rather than block the loop. */
		conn_reply(h, c, 503, req.head);
		return;
	}
	conn_reply(h, c, 200, req.head);
}

/*
 * Ends c after its last reply: sends FIN, then reads and drops whatever comes until the client
 * closes. Closing at once could reset the connection: close() with unread data (a pipelined
 * request, a refused body) sends RST, and RST makes the client's kernel discard the reply it has
 * not read yet. Bounded by HTTPD_LINGER_MSEC.
 */
static void conn_linger(struct httpd *h, struct conn *c)
{
	/* The client's FIN came after everything it sent, and we read up to it: nothing unread. */
	if (c->read_eof || shutdown(c->fd, SHUT_WR) < 0) {
		conn_close(h, c);
		return;
	}
	c->state = CONN_LINGER;
	c->in_len = 0;
	c->deadline_usec = h->now_usec + HTTPD_LINGER_MSEC * USEC_PER_MSEC;
}

/* The steps below return true to keep running c, false when c waits for an event or is closed. */

static bool conn_step_reading(struct httpd *h, struct conn *c)
{
	const char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
	ssize_t n;

	if (end) {
		conn_request(h, c, (size_t)(end + 4 - c->in));
		return true;
	}
	if (c->in_len == sizeof(c->in)) {
		c->req_len = c->in_len;
		conn_reply(h, c, 431, false);
		return true;
	}
	if (c->read_eof) {
		/* FIN before a complete request: nobody waits for a reply. */
		conn_close(h, c);
		return false;
	}
	n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
	if (n > 0) {
		c->in_len += (size_t)n;
		return true;
	}
	if (n == 0) {
		c->read_eof = true;
		return true;
	}
	if (errno == EINTR)
		return true;
	if (errno != EAGAIN) {
		conn_close(h, c); /* ECONNRESET and friends: nobody to answer */
		return false;
	}
	if (h->draining && c->in_len == 0 && c->n_served > 0) {
		/*
		 * An idle keep-alive connection: close it now. A connection that has not sent its
		 * first request yet is kept (up to HTTPD_DRAIN_IDLE_MSEC): it was accepted, so it is
		 * owed a reply.
		 */
		conn_linger(h, c);
		return !c->dead;
	}
	conn_watch(h, c, EPOLLIN);
	return false;
}

static bool conn_step_writing(struct httpd *h, struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);

		if (n >= 0) {
			c->out_off += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			conn_watch(h, c, EPOLLOUT);
			return false;
		}
		conn_close(h, c); /* EPIPE, ECONNRESET: the client is gone */
		return false;
	}

	/*
	 * The whole reply is in the kernel's send queue. The kernel delivers it even after close()
	 * and after we exit, as long as nothing makes it reset the connection (see conn_linger()).
	 */
	c->n_served++;
	memmove(c->in, c->in + c->req_len, c->in_len - c->req_len);
	c->in_len -= c->req_len;
	c->req_len = 0;
	if (c->close_after) {
		conn_linger(h, c);
		return !c->dead;
	}
	c->state = CONN_READING;
	c->deadline_usec = h->now_usec +
			   (h->draining ? HTTPD_DRAIN_IDLE_MSEC : HTTPD_IDLE_MSEC) * USEC_PER_MSEC;
	return true;
}

static bool conn_step_linger(struct httpd *h, struct conn *c)
{
	ssize_t n = recv(c->fd, c->in, sizeof(c->in), 0);

	if (n > 0 || (n < 0 && errno == EINTR))
		return true;
	if (n < 0 && errno == EAGAIN) {
		conn_watch(h, c, EPOLLIN);
		return false;
	}
	conn_close(h, c); /* EOF: the client has read everything and closed; or it is gone */
	return false;
}

/* Advances c until it has to wait for its socket or its timer. May close c. */
static void conn_run(struct httpd *h, struct conn *c)
{
	for (unsigned budget = HTTPD_RUN_BUDGET; !c->dead; budget--) {
		bool more = false;

		if (budget == 0) {
			/*
			 * Give the other connections a turn. A socket that was just read from or written
			 * to is writable, and EPOLLOUT is level-triggered: it wakes c again at the next
			 * epoll_wait(), and any step run then sets the events it really waits for.
			 */
			conn_watch(h, c, EPOLLOUT);
			return;
		}
		switch (c->state) {
		case CONN_READING:
			more = conn_step_reading(h, c);
			break;
		case CONN_SLOW:
			/* Read nothing meanwhile; EPOLLHUP and EPOLLERR still tell us of a reset. */
			conn_watch(h, c, 0);
			break;
		case CONN_WRITING:
			more = conn_step_writing(h, c);
			break;
		case CONN_LINGER:
			more = conn_step_linger(h, c);
			break;
		}
		if (!more)
			return;
	}
}

static void on_conn_event(struct httpd *h, struct conn *c, uint32_t events)
{
	if (c->dead)
		return;
	/* In CONN_SLOW nobody reads or writes, so a reset would be reported forever: close now. */
	if (c->state == CONN_SLOW && (events & (EPOLLERR | EPOLLHUP))) {
		conn_close(h, c);
		return;
	}
	/* Otherwise the next recv() or send() reports the error or the EOF itself. */
	conn_run(h, c);
}

static void on_slow_timer(struct httpd *h, struct conn *c)
{
	if (c->dead)
		return;
	timer_ack(c->slow_fd);
	if (c->state != CONN_SLOW)
		return;
	conn_reply(h, c, 200, c->head);
	conn_run(h, c);
}

/* Connections accepted at once are not logged: this runs once per connection. */
static void on_accept(struct httpd *h, struct listener *l)
{
	int one = 1;

	for (unsigned i = 0; i < HTTPD_ACCEPT_BATCH; i++) {
		int fd, r;

		if (!l->watched || l->fd < 0)
			return;
		fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN)
				return; /* queue empty, or another worker took it */
			if (baton_accept_error_is_transient(errno))
				continue;
			/* EMFILE, ENFILE, ENOBUFS, ENOMEM; and anything unexpected, so as not to spin. */
			accept_pause(h, -errno);
			return;
		}
		/* A reply is one small write: never let Nagle hold it for the client's ACK. */
		if (l->tcp)
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* On failure conn_new() has closed fd, so this one client sees a reset. */
		r = conn_new(h, fd);
		if (r < 0) {
			accept_pause(h, r);
			return;
		}
	}
}

/* Whether the last STATUS no longer says how many connections are in flight. */
static bool status_stale(const struct httpd *h)
{
	return h->ready && (h->n_conns != h->status_conns || h->draining != h->status_draining);
}

/*
 * Reports the connections in flight when their count (or the drain) changed, at most every
 * HTTPD_STATUS_MSEC: STATUS over batond's channel, STATUS= to $NOTIFY_SOCKET otherwise. force
 * skips the rate limit. The sweep keeps running while a change is still unreported.
 */
static void status_update(struct httpd *h, bool force)
{
	char text[HTTPD_STATUS_TEXT_MAX];
	int r;

	if (!status_stale(h))
		return;
	if (!force && h->status_usec != 0 &&
	    h->now_usec - h->status_usec < HTTPD_STATUS_MSEC * USEC_PER_MSEC) {
		sweep_start(h);
		return;
	}
	(void)snprintf(text, sizeof(text), "%s, %zu connections",
		       h->draining ? "draining" : "serving", h->n_conns);
	r = baton_status(h->baton, h->n_conns > UINT_MAX ? UINT_MAX : (unsigned)h->n_conns, text);
	if (r == -EAGAIN) {
		sweep_start(h); /* batond is behind: try again at the next sweep */
		return;
	}
	if (r < 0 && !h->status_failed) {
		(void)log_errno(r, "report status, ignoring");
		h->status_failed = true;
	}
	h->status_conns = h->n_conns;
	h->status_draining = h->draining;
	h->status_usec = h->now_usec;
}

/*
 * Stage 2 of closing a listener of ours while draining: once its queue and its handshakes in
 * progress are all accepted (or at the deadline), close it. Until then it is still watched.
 */
static void listeners_shutdown_check(struct httpd *h)
{
	for (size_t i = 0; i < h->n_listeners && h->n_shutting_down > 0; i++) {
		struct listener *l = &h->listeners[i];
		unsigned queued = 0, half_open = 0;
		int r;

		if (!l->shutting_down)
			continue;
		r = baton_listener_pending(l->fd, &queued, &half_open);
		if (r < 0) {
			(void)log_errno(r,
					"count connections waiting on listener fd %d, closing it",
					l->fd);
		} else if (queued + half_open > 0) {
			if (h->now_usec < h->shutdown_deadline_usec)
				continue;
			log_info("listener fd %d: %u queued and %u half-open connections left at "
				 "the deadline; closing resets them",
				 l->fd, queued, half_open);
		}
		listener_close(h, l);
	}
	listeners_update(h);
}

/*
 * Starts the drain: no new connections, every accepted one gets its reply with "Connection:
 * close", idle keep-alive connections close now. Listeners we bound ourselves (--listen) close
 * in two stages (libbaton's baton_listener_shutdown_begin()): new connections are refused at
 * once, and what is already queued is still accepted and served, so a standalone stop resets
 * nobody. The loop exits when the last connection is gone.
 */
static void httpd_drain(struct httpd *h)
{
	uint64_t deadline = baton_drain_deadline(h->baton);
	int signo = baton_drain_signal(h->baton);
	const char *name = sigabbrev_np(signo);
	struct conn *next;

	if (h->draining)
		return;
	h->draining = true;

	h->shutdown_deadline_usec = h->now_usec + HTTPD_SHUTDOWN_MSEC * USEC_PER_MSEC;
	if (deadline < h->shutdown_deadline_usec)
		h->shutdown_deadline_usec = deadline;
	for (size_t i = 0; i < h->n_listeners; i++) {
		struct listener *l = &h->listeners[i];
		int r;

		if (!l->owned || l->fd < 0)
			continue;
		r = baton_listener_shutdown_begin(l->fd);
		if (r < 0) {
			/* An abstract Unix socket has no way to refuse: close it as before. */
			if (r != -EOPNOTSUPP)
				(void)log_errno(
					r, "refuse new connections on listener fd %d, closing it",
					l->fd);
			listener_close(h, l);
			continue;
		}
		/* libbaton removed the socket file, if it was still ours: never unlink it again. */
		free(l->unlink_path);
		l->unlink_path = NULL;
		l->shutting_down = true;
		h->n_shutting_down++;
	}
	listeners_update(h);

	if (signo > 0)
		log_info("SIG%s: stopped accepting, draining %zu connections", name ? name : "?",
			 h->n_conns);
	else if (baton_mode(h->baton) == BATON_MODE_CHANNEL && deadline != BATON_NO_DEADLINE)
		log_info("DRAIN (deadline in %" PRIu64 "ms): stopped accepting, draining %zu "
			 "connections",
			 deadline > h->now_usec ? (deadline - h->now_usec) / USEC_PER_MSEC : 0,
			 h->n_conns);
	else
		log_info("DRAIN: stopped accepting, draining %zu connections", h->n_conns);
	status_update(h, true);

	for (struct conn *c = h->conns; c; c = next) {
		next = c->next;
		if (c->state != CONN_READING)
			continue; /* its reply will say "Connection: close" and it closes after */
		/* A request may be waiting unread: serve it. Idle ones are closed by this. */
		conn_run(h, c);
		if (!c->dead && c->state == CONN_READING &&
		    c->deadline_usec > h->now_usec + HTTPD_DRAIN_IDLE_MSEC * USEC_PER_MSEC)
			c->deadline_usec = h->now_usec + HTTPD_DRAIN_IDLE_MSEC * USEC_PER_MSEC;
	}
	if (h->n_shutting_down > 0) {
		listeners_shutdown_check(h);
		sweep_start(h);
	}
}

/* Enforces the connection deadlines and the shutdown of our listeners, HTTPD_SWEEP_MSEC apart. */
static void on_sweep(struct httpd *h)
{
	struct conn *next;

	timer_ack(h->sweep_fd);
	if (h->n_shutting_down > 0)
		listeners_shutdown_check(h);
	if (h->n_conns == 0 && h->n_shutting_down == 0 && !status_stale(h)) {
		/* Nothing to time out or report: an idle server does not wake up. */
		if (timer_arm(h->sweep_fd, 0, false) >= 0)
			h->sweeping = false;
		return;
	}
	for (struct conn *c = h->conns; c; c = next) {
		next = c->next;
		if (c->deadline_usec == 0 || h->now_usec < c->deadline_usec)
			continue;
		switch (c->state) {
		case CONN_READING:
			/* No complete request in time: close as gently as after a reply. */
			conn_linger(h, c);
			if (!c->dead)
				conn_run(h, c);
			break;
		case CONN_SLOW:
			break; /* has no deadline */
		case CONN_WRITING:
		case CONN_LINGER:
			conn_close(h, c); /* the client does not read, or does not close */
			break;
		}
	}
}

/*
 * The drain fd is readable: a stop signal, batond's DRAIN, or the end of the channel. A failed
 * channel means nobody supervises us any more: libbaton has begun the drain, so finish and exit.
 */
static void on_drain_fd(struct httpd *h)
{
	int r = baton_process(h->baton);

	if (r < 0)
		(void)log_errno(r, "channel to batond, draining");
	if (baton_draining(h->baton))
		httpd_drain(h);
}

static void httpd_dispatch(struct httpd *h, struct source *src, uint32_t events)
{
	switch (src->type) {
	case SOURCE_LISTENER:
		on_accept(h, container_of(src, struct listener, src));
		if (h->n_shutting_down > 0)
			listeners_shutdown_check(h);
		break;
	case SOURCE_DRAIN:
		on_drain_fd(h);
		break;
	case SOURCE_PAUSE:
		on_pause_end(h);
		break;
	case SOURCE_SWEEP:
		on_sweep(h);
		break;
	case SOURCE_CONN:
		on_conn_event(h, container_of(src, struct conn, sock), events);
		break;
	case SOURCE_SLOW:
		on_slow_timer(h, container_of(src, struct conn, slow));
		break;
	}
}

/* Serves until a drain has finished. Returns 0, or -errno if the loop itself failed. */
static int httpd_run(struct httpd *h)
{
	struct epoll_event events[HTTPD_MAX_EVENTS];

	while (!h->draining || h->n_conns > 0 || h->n_shutting_down > 0) {
		int n = epoll_wait(h->epoll_fd, events, (int)ELEMENTSOF(events), -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return log_errno(-errno, "epoll_wait");
		}
		h->now_usec = now_usec();
		for (int i = 0; i < n; i++)
			httpd_dispatch(h, events[i].data.ptr, events[i].events);
		/* Only now: a connection closed above may have had an event later in this batch. */
		conns_reap(h);
		status_update(h, false);
	}
	return 0;
}

/*
 * Waits out --startup-delay while still taking stop signals and DRAIN. Returns 0 when the delay
 * has passed, 1 if asked to stop meanwhile, or -errno.
 */
static int startup_wait(struct httpd *h, uint64_t delay_usec)
{
	uint64_t deadline;

	if (__builtin_add_overflow(now_usec(), delay_usec, &deadline))
		deadline = UINT64_MAX;
	for (;;) {
		struct pollfd pfd = { .fd = h->drain_fd, .events = POLLIN };
		uint64_t now = now_usec();
		struct timespec ts;
		int r;

		if (now >= deadline)
			return 0;
		ts = timespec_from_usec(deadline - now);
		r = ppoll(&pfd, 1, &ts, NULL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r > 0) {
			r = baton_process(h->baton);
			if (r < 0)
				(void)log_errno(r, "channel to batond");
			if (baton_draining(h->baton))
				return 1;
		}
	}
}

/*
 * Finds the listeners (libbaton: batond's channel, LISTEN_FDS, or none) and takes the stop
 * signals through libbaton's drain fd: blocked and read from a signalfd, no signal handler.
 */
static int baton_setup(struct httpd *h, bool ignore_term)
{
	static const int drain_signals[] = { SIGINT, SIGQUIT };
	struct sigaction ignore = { .sa_handler = SIG_IGN };
	/* Before baton_open(), which removes the variable. */
	const char *from = getenv("BATON_FD") ? "batond" : "LISTEN_FDS";
	int r;

	/* Every send() uses MSG_NOSIGNAL; this covers whatever does not (say, sd_notify()). */
	if (sigaction(SIGPIPE, &ignore, NULL) < 0)
		return log_errno(-errno, "ignore SIGPIPE");
	r = baton_open(&h->baton, 0);
	if (r < 0)
		return log_errno(r, "take listeners from %s", from);
	if (ignore_term) {
		/* Not in the drain fd's set, so it would kill: ignore it instead. */
		if (sigaction(SIGTERM, &ignore, NULL) < 0)
			return log_errno(-errno, "ignore SIGTERM");
		r = baton_drain_signals(h->baton, drain_signals, ELEMENTSOF(drain_signals));
		if (r < 0)
			return log_errno(r, "set drain signals");
		log_info("ignoring SIGTERM (--ignore-term)");
	}
	/* One thread, so blocking the stop signals here blocks them for the whole process. */
	h->drain_fd = baton_drain_fd(h->baton);
	if (h->drain_fd < 0)
		return log_errno(h->drain_fd, "take stop signals");
	return 0;
}

static int loop_setup(struct httpd *h)
{
	int r;

	h->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (h->epoll_fd < 0)
		return -errno;
	h->pause_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (h->pause_fd < 0)
		return -errno;
	h->sweep_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (h->sweep_fd < 0)
		return -errno;
	r = epoll_add(h, h->drain_fd, EPOLLIN, &h->drain_src);
	if (r < 0)
		return r;
	r = epoll_add(h, h->pause_fd, EPOLLIN, &h->pause_src);
	if (r < 0)
		return r;
	r = epoll_add(h, h->sweep_fd, EPOLLIN, &h->sweep_src);
	if (r < 0)
		return r;
	h->now_usec = now_usec();
	listeners_update(h);
	return 0;
}

static void httpd_done(struct httpd *h)
{
	struct conn *next;

	for (struct conn *c = h->conns; c; c = next) {
		next = c->next;
		conn_close(h, c);
	}
	conns_reap(h);
	listeners_close(h);
	close_fdp(&h->sweep_fd);
	close_fdp(&h->pause_fd);
	close_fdp(&h->epoll_fd);
	/* The drain fd and the inherited listeners are libbaton's. */
	h->drain_fd = -1;
	h->baton = baton_close(h->baton);
}

static void help(void)
{
	printf("Usage: %s [OPTIONS]\n"
	       "\n"
	       "Small HTTP/1.x server, batond's example worker. Serves GET and HEAD with the body\n"
	       "\"pid=<pid> gen=$BATON_GENERATION worker=$BATON_WORKER\"; /slow?ms=N waits N ms\n"
	       "(at most %d) before replying. Listens on the sockets libbaton finds (batond's\n"
	       "channel in BATON_FD, or LISTEN_FDS from batond or systemd) and on each --listen,\n"
	       "%d sockets at most in all.\n"
	       "SIGTERM, SIGINT, SIGQUIT or batond's DRAIN drains: stop accepting, answer every\n"
	       "accepted connection (and every one queued on a --listen socket), exit 0.\n"
	       "\n"
	       "Options:\n"
	       "  -l, --listen ADDR        also listen on HOST:PORT, [V6]:PORT, *:PORT, unix:/PATH "
	       "or\n"
	       "                           unix:@ABSTRACT (may be repeated)\n"
	       "  -c, --max-conns N        open connections at most (default %d)\n"
	       "      --startup-delay DUR  wait DUR (500ms, 2s, ...) before READY=1 (default 0)\n"
	       "      --fail-start         exit 1 after the startup delay instead of becoming "
	       "ready\n"
	       "                           (also when EXAMPLE_HTTPD_FAIL=1)\n"
	       "      --ignore-term        ignore SIGTERM (SIGINT and SIGQUIT still drain)\n"
	       "  -h, --help               show this help\n"
	       "  -V, --version            show the version\n"
	       "\n"
	       "Exit status: 0 after a drain, 1 on failure or without listeners, 2 on bad usage.\n",
	       HTTPD_NAME, HTTPD_SLOW_MAX_MSEC, HTTPD_MAX_LISTENERS, HTTPD_DEFAULT_MAX_CONNS);
}

enum {
	OPT_STARTUP_DELAY = 0x100,
	OPT_FAIL_START,
	OPT_IGNORE_TERM,
};

struct options {
	const char *listen[HTTPD_MAX_LISTENERS];
	struct sockaddr_storage addrs[HTTPD_MAX_LISTENERS];
	socklen_t addr_lens[HTTPD_MAX_LISTENERS];
	size_t n_listen;
	size_t max_conns;
	uint64_t startup_delay_usec;
	bool fail_start;
	bool ignore_term;
};

/* Returns 0 to go on, 1 to exit 0 (--help, --version), or -EINVAL after saying what is wrong. */
static int options_parse(int argc, char *argv[], struct options *o)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "max-conns", required_argument, NULL, 'c' },
		{ "startup-delay", required_argument, NULL, OPT_STARTUP_DELAY },
		{ "fail-start", no_argument, NULL, OPT_FAIL_START },
		{ "ignore-term", no_argument, NULL, OPT_IGNORE_TERM },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{},
	};
	int opt, r;

	while ((opt = getopt_long(argc, argv, "l:c:hV", longopts, NULL)) >= 0) {
		switch (opt) {
		case 'l':
			if (o->n_listen >= HTTPD_MAX_LISTENERS) {
				log_info("--listen: more than %d listeners", HTTPD_MAX_LISTENERS);
				return -EINVAL;
			}
			r = sockaddr_parse(optarg, true, &o->addrs[o->n_listen],
					   &o->addr_lens[o->n_listen]);
			if (r == -EINVAL) {
				log_info("--listen %s: expected HOST:PORT, [V6]:PORT or unix:/PATH",
					 optarg);
				return -EINVAL;
			}
			if (r < 0) {
				(void)log_errno(r, "--listen %s", optarg);
				return -EINVAL;
			}
			o->listen[o->n_listen++] = optarg;
			break;
		case 'c': {
			char *end;
			unsigned long long n;

			errno = 0;
			n = strtoull(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0' || optarg[0] == '-' ||
			    n == 0 || n > HTTPD_MAX_CONNS_LIMIT) {
				log_info("--max-conns %s: expected 1..%d", optarg,
					 HTTPD_MAX_CONNS_LIMIT);
				return -EINVAL;
			}
			o->max_conns = (size_t)n;
			break;
		}
		case OPT_STARTUP_DELAY:
			r = duration_parse(optarg, &o->startup_delay_usec);
			if (r < 0) {
				(void)log_errno(r, "--startup-delay %s", optarg);
				return -EINVAL;
			}
			break;
		case OPT_FAIL_START:
			o->fail_start = true;
			break;
		case OPT_IGNORE_TERM:
			o->ignore_term = true;
			break;
		case 'h':
			help();
			return 1;
		case 'V':
			printf("%s %s\n", HTTPD_NAME, HTTPD_VERSION);
			return 1;
		default:
			return -EINVAL; /* getopt_long() has said what is wrong */
		}
	}
	if (optind < argc) {
		log_info("unexpected argument '%s' (see --help)", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

static const char *env_or(const char *name, const char *fallback)
{
	const char *v = getenv(name);

	return v && *v ? v : fallback;
}

/* Says why we stop before having served, and tells batond over the channel (DRAINED). */
static void exit_before_ready(struct httpd *h)
{
	int signo = baton_drain_signal(h->baton);
	const char *name = sigabbrev_np(signo);
	int r;

	if (signo > 0)
		log_info("SIG%s before ready, exiting", name ? name : "?");
	else
		log_info("DRAIN before ready, exiting");
	r = baton_drained(h->baton);
	if (r < 0 && r != -ENOTCONN)
		(void)log_errno(r, "report drained, ignoring");
}

/* Listeners, startup delay, READY, then serve until drained. Returns the exit status. */
static int httpd_main(struct httpd *h, const struct options *o)
{
	int r;

	r = listeners_inherit(h);
	if (r < 0)
		return EXIT_FAILURE;
	for (size_t i = 0; i < o->n_listen; i++) {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)&o->addrs[i];
		bool is_unix = o->addrs[i].ss_family == AF_UNIX;
		int fd = -1;

		r = listener_bind(&o->addrs[i], o->addr_lens[i], &fd);
		if (r >= 0)
			r = listener_add(h, fd, !is_unix, true,
					 is_unix && sun->sun_path[0] != '\0' ? sun->sun_path
									     : NULL);
		if (r < 0) {
			(void)log_errno(r, "listen %s", o->listen[i]);
			return EXIT_FAILURE;
		}
	}
	if (h->n_listeners == 0) {
		log_info("no listeners: run under batond or systemd socket activation, or use "
			 "--listen");
		return EXIT_FAILURE;
	}

	r = startup_wait(h, o->startup_delay_usec);
	if (r < 0) {
		(void)log_errno(r, "wait for startup delay");
		return EXIT_FAILURE;
	}
	if (r > 0) {
		exit_before_ready(h);
		return EXIT_SUCCESS;
	}
	if (o->fail_start || strcmp(env_or("EXAMPLE_HTTPD_FAIL", ""), "1") == 0) {
		log_info("failing startup as asked (%s)",
			 o->fail_start ? "--fail-start" : "EXAMPLE_HTTPD_FAIL=1");
		return EXIT_FAILURE;
	}

	r = loop_setup(h);
	if (r < 0) {
		(void)log_errno(r, "set up event loop");
		return EXIT_FAILURE;
	}
	log_info("pid %d gen %s worker %s serving on %zu listeners", (int)getpid(),
		 env_or("BATON_GENERATION", "0"), env_or("BATON_WORKER", "0"), h->n_listeners);
	/* READY over batond's channel, READY=1 to $NOTIFY_SOCKET, or nothing standalone. */
	r = baton_ready(h->baton);
	if (r < 0)
		(void)log_errno(r, "report ready, ignoring");
	h->ready = true;
	status_update(h, true);

	r = httpd_run(h);
	if (r < 0)
		return EXIT_FAILURE;
	r = baton_drained(h->baton);
	if (r < 0 && r != -ENOTCONN)
		(void)log_errno(r, "report drained, ignoring");
	log_info("drained, exiting");
	return EXIT_SUCCESS;
}

int main(int argc, char *argv[])
{
	struct options o = { .max_conns = HTTPD_DEFAULT_MAX_CONNS };
	struct httpd h = {
		.epoll_fd = -1,
		.drain_fd = -1,
		.pause_fd = -1,
		.sweep_fd = -1,
		.status_conns = SIZE_MAX,
		.drain_src.type = SOURCE_DRAIN,
		.pause_src.type = SOURCE_PAUSE,
		.sweep_src.type = SOURCE_SWEEP,
	};
	int n, r;

	r = options_parse(argc, argv, &o);
	if (r != 0)
		return r > 0 ? EXIT_SUCCESS : 2;
	h.max_conns = o.max_conns;

	n = snprintf(h.body, sizeof(h.body), "pid=%d gen=%s worker=%s\n", (int)getpid(),
		     env_or("BATON_GENERATION", "0"), env_or("BATON_WORKER", "0"));
	if (n < 0 || (size_t)n >= sizeof(h.body)) {
		log_info("BATON_GENERATION or BATON_WORKER too long (body over %d bytes)",
			 HTTPD_BODY_MAX);
		return EXIT_FAILURE;
	}
	h.body_len = (size_t)n;

	/* Before anything slow: from here on a stop signal is taken, not fatal. */
	r = baton_setup(&h, o.ignore_term) < 0 ? EXIT_FAILURE : httpd_main(&h, &o);
	/* Everything struct httpd holds, on every path; unlinks the Unix sockets we bound. */
	httpd_done(&h);
	return r;
}
