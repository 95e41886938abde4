/* SPDX-License-Identifier: MIT */
/* loadgen.c - HTTP/1.1 load client: exact failure classes, distinct pids, latency percentiles. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "duration.h"
#include "sockaddr.h"

#define LOADGEN_NAME	"loadgen"
#define LOADGEN_VERSION "0.1.0"

#define LOADGEN_DEFAULT_THREADS	 4
#define LOADGEN_MAX_THREADS	 1024 /* worker threads */
#define LOADGEN_DEFAULT_DURATION "10s"
#define LOADGEN_DEFAULT_TIMEOUT	 "5s"
#define LOADGEN_MAX_SAMPLES	 2000000 /* latency samples kept per thread */
#define LOADGEN_INITIAL_SAMPLES	 65536	 /* first sample allocation, doubled on need */
#define LOADGEN_MAX_PIDS	 4096	 /* distinct pid= values tracked */
#define LOADGEN_RESPONSE_MAX	 16384	 /* bytes of status line plus headers */
#define LOADGEN_DISCARD_MAX	 4096	 /* bytes of body read per recv() once buf is full */
#define LOADGEN_BODY_MAX	 (UINT64_C(1) << 30) /* bytes of Content-Length accepted */
#define LOADGEN_REQUEST_MAX	 4096		     /* bytes of the request we send */
#define LOADGEN_HOST_MAX	 1024		     /* bytes of the Host header value */

#define USEC_PER_MSEC DURATION_USEC_PER_MSEC
#define USEC_PER_SEC  DURATION_USEC_PER_SEC
#define NSEC_PER_USEC UINT64_C(1000)

/* How one request ended. The order is the order of the output line. */
enum outcome {
	OUTCOME_OK,	 /* 200 with its whole body (Content-Length, or up to the server's close) */
	OUTCOME_REFUSED, /* ECONNREFUSED; ENOENT for a Unix socket path */
	OUTCOME_RESET,	 /* ECONNRESET or EPIPE on a write or a read */
	OUTCOME_TIMEOUT, /* connect or reply took longer than --timeout */
	OUTCOME_EMPTY,	 /* closed before a single byte of reply */
	OUTCOME_BAD,	 /* not 200, truncated or malformed */
	OUTCOME_OTHER,	 /* any other errno */
	_OUTCOME_MAX,
};

static const char *const outcome_names[_OUTCOME_MAX] = {
	[OUTCOME_OK] = "ok",	       [OUTCOME_REFUSED] = "refused", [OUTCOME_RESET] = "reset",
	[OUTCOME_TIMEOUT] = "timeout", [OUTCOME_EMPTY] = "empty",     [OUTCOME_BAD] = "bad",
	[OUTCOME_OTHER] = "other",
};

struct config {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	const char *target;
	unsigned n_threads;
	uint64_t duration_usec;
	uint64_t max_requests; /* 0: no cap */
	uint64_t timeout_usec;
	bool keep_alive;
	bool quiet;
	const char *timeline_path;
	char request[LOADGEN_REQUEST_MAX];
	size_t request_len;
};

/* Shared by all threads; written only through atomics once they run. */
struct run {
	const struct config *cfg;
	uint64_t start_usec;
	uint64_t end_usec;	     /* no request starts at or after this */
	atomic_uint_fast64_t issued; /* requests started, against --requests */
};

/* One thread's results: private while it runs, merged by main() after pthread_join(). */
struct worker {
	pthread_t thread;
	struct run *run;
	int fd; /* kept-alive connection, or -1 */
	uint64_t counts[_OUTCOME_MAX];
	uint64_t retried;
	uint64_t max_usec;
	uint32_t *latency_usec;
	uint64_t *start_usec; /* request start since the run's start, for --timeline only */
	size_t n_samples, cap_samples;
	bool samples_capped;
	int last_error; /* last errno counted as "other", for the summary */
	long last_pid;
	size_t n_pids;
	bool pids_capped;
	long pids[LOADGEN_MAX_PIDS];
};

struct response {
	int status;
	bool close; /* the server ends the connection after this response */
	long pid;   /* from "pid=N" in the body, or -1 */
};

/* Set from the SIGINT/SIGTERM handler, read by every thread: lock-free, so signal-safe. */
static atomic_bool stop_requested;

__attribute__((format(printf, 1, 2))) static void log_msg(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	(void)fprintf(stderr, "%s: %s\n", LOADGEN_NAME, line);
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid pointer. */
	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_USEC;
}

static void on_stop_signal(int signo)
{
	(void)signo;
	atomic_store(&stop_requested, true);
}

/*
 * Waits until fd is ready for events or deadline passes. Returns 0 when ready (an error or hangup
 * counts as ready: the next call on fd reports it) or -ETIMEDOUT.
 */
static int wait_fd(int fd, short events, uint64_t deadline_usec)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = events };
		uint64_t now = now_usec();
		uint64_t left_msec;
		int r;

		if (now >= deadline_usec)
			return -ETIMEDOUT;
		/* Round up: a poll() that wakes a little early would just go round again. */
		left_msec = (deadline_usec - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC;
		r = poll(&pfd, 1, left_msec > INT32_MAX ? INT32_MAX : (int)left_msec);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/* Opens a connection to the target before deadline. Returns the fd or -errno (-ETIMEDOUT). */
static int conn_open(const struct config *cfg, uint64_t deadline_usec)
{
	_cleanup_close_ int fd = -1;
	bool is_unix = cfg->addr.ss_family == AF_UNIX;
	int one = 1;
	int r;

	/*
	 * A non-blocking connect() to a Unix socket with a full backlog fails at once with EAGAIN,
	 * while a blocking one waits for room up to SO_SNDTIMEO: that is what a connect timeout
	 * means, so Unix sockets connect blocking. TCP connects non-blocking and polls. Every later
	 * call passes MSG_DONTWAIT, so the socket's own blocking mode does not matter after this.
	 */
	fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (is_unix ? 0 : SOCK_NONBLOCK),
		    0);
	if (fd < 0)
		return -errno;

	if (is_unix) {
		for (;;) {
			uint64_t now = now_usec();
			struct timeval tv;

			if (now >= deadline_usec)
				return -ETIMEDOUT;
			/* A zero SO_SNDTIMEO would mean "forever": at least 1us is left here. */
			tv.tv_sec = (time_t)((deadline_usec - now) / USEC_PER_SEC);
			tv.tv_usec = (suseconds_t)((deadline_usec - now) % USEC_PER_SEC);
			if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
				return -errno;
			if (connect(fd, (const struct sockaddr *)&cfg->addr, cfg->addr_len) == 0)
				break;
			if (errno == EAGAIN)
				return -ETIMEDOUT; /* the backlog stayed full until the deadline */
			if (errno != EINTR)
				return -errno;
		}
		return TAKE_FD(fd);
	}

	if (connect(fd, (const struct sockaddr *)&cfg->addr, cfg->addr_len) < 0) {
		int error = 0;
		socklen_t len = sizeof(error);

		if (errno != EINPROGRESS)
			return -errno;
		r = wait_fd(fd, POLLOUT, deadline_usec);
		if (r < 0)
			return r;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
			return -errno;
		if (error != 0)
			return -error;
	}
	/* The request is one small write: Nagle would only hold it for an ACK. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return TAKE_FD(fd);
}

static int send_all(int fd, const char *buf, size_t len, uint64_t deadline_usec)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		int r;

		if (n >= 0) {
			off += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		r = wait_fd(fd, POLLOUT, deadline_usec);
		if (r < 0)
			return r;
	}
	return 0;
}

static bool header_name_is(const char *name, size_t len, const char *expected)
{
	return len == strlen(expected) && strncasecmp(name, expected, len) == 0;
}

static bool value_has_token(const char *value, size_t len, const char *token)
{
	const char *end = value + len;

	while (value < end) {
		const char *comma = memchr(value, ',', (size_t)(end - value));
		const char *token_end = comma ? comma : end;

		while (value < token_end && (*value == ' ' || *value == '\t'))
			value++;
		while (token_end > value && (token_end[-1] == ' ' || token_end[-1] == '\t'))
			token_end--;
		if (header_name_is(value, (size_t)(token_end - value), token))
			return true;
		value = comma ? comma + 1 : end;
	}
	return false;
}

/*
 * Parses a response head of len bytes ending in "\r\n\r\n" (not NUL-terminated). Returns 0 and
 * fills *ret_status, *ret_close and *ret_body_len (UINT64_MAX: no Content-Length), or -EBADMSG.
 */
static int head_parse(const char *buf, size_t len, int *ret_status, bool *ret_close,
		      uint64_t *ret_body_len)
{
	const char *end = buf + len;
	const char *line = (const char *)memmem(buf, len, "\r\n", 2) + 2;
	uint64_t body_len = UINT64_MAX;
	bool http10, close = false, keep_alive = false;
	int status;

	/* "HTTP/1.x SSS" then a space or the end of the line. */
	if (len < 14 || memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '0' && buf[7] != '1') ||
	    buf[8] != ' ')
		return -EBADMSG;
	for (size_t i = 9; i < 12; i++) {
		if (buf[i] < '0' || buf[i] > '9')
			return -EBADMSG;
	}
	if (buf[12] != ' ' && buf[12] != '\r')
		return -EBADMSG;
	status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	http10 = buf[7] == '0';

	while (line < end) {
		const char *line_end = memmem(line, (size_t)(end - line), "\r\n", 2);
		const char *colon, *value;
		size_t value_len;

		if (line_end == line)
			break; /* the empty line that ends the head */
		colon = memchr(line, ':', (size_t)(line_end - line));
		if (!colon)
			return -EBADMSG;
		value = colon + 1;
		while (value < line_end && (*value == ' ' || *value == '\t'))
			value++;
		value_len = (size_t)(line_end - value);
		while (value_len > 0 &&
		       (value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
			value_len--;

		if (header_name_is(line, (size_t)(colon - line), "content-length")) {
			uint64_t n = 0;

			if (value_len == 0)
				return -EBADMSG;
			for (size_t i = 0; i < value_len; i++) {
				if (value[i] < '0' || value[i] > '9')
					return -EBADMSG;
				n = n * 10 + (uint64_t)(value[i] - '0');
				if (n > LOADGEN_BODY_MAX)
					return -EBADMSG;
			}
			if (body_len != UINT64_MAX && body_len != n)
				return -EBADMSG;
			body_len = n;
		} else if (header_name_is(line, (size_t)(colon - line), "connection")) {
			close = close || value_has_token(value, value_len, "close");
			keep_alive = keep_alive || value_has_token(value, value_len, "keep-alive");
		} else if (header_name_is(line, (size_t)(colon - line), "transfer-encoding")) {
			return -EBADMSG; /* chunked: not something our servers send */
		}
		line = line_end + 2;
	}

	*ret_status = status;
	*ret_close = close || (http10 && !keep_alive);
	*ret_body_len = body_len;
	return 0;
}

/* Finds "pid=N" in the start of a body. Returns N, or -1. */
static long body_pid(const char *body, size_t len)
{
	const char *p = memmem(body, len, "pid=", 4);
	const char *end = body + len;
	long pid = 0;

	if (!p)
		return -1;
	p += 4;
	if (p >= end || *p < '0' || *p > '9')
		return -1;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		pid = pid * 10 + (*p - '0');
		if (pid > INT32_MAX)
			return -1;
	}
	return pid;
}

/*
 * Reads one response on fd before deadline. Returns 0 and fills *ret; or -ENODATA (EOF before any
 * byte), -EBADMSG (malformed or truncated), -ETIMEDOUT, or the -errno of a failed recv().
 * *ret_nread says how many bytes arrived, so the caller can tell "nothing at all" apart.
 */
static int response_read(int fd, uint64_t deadline_usec, struct response *ret, size_t *ret_nread)
{
	char buf[LOADGEN_RESPONSE_MAX];
	char discard[LOADGEN_DISCARD_MAX];
	size_t len = 0, head_len = 0;
	uint64_t body_len = 0, body_have = 0;
	bool head_done = false, close = false;
	int status = 0;

	*ret_nread = 0;
	for (;;) {
		char *dst = buf + len;
		size_t room = sizeof(buf) - len;
		ssize_t n;

		if (head_done) {
			if (body_len != UINT64_MAX && body_have == body_len)
				break;
			/* Keep what fits (the pid is at the start); count the rest and drop it. */
			if (room == 0) {
				dst = discard;
				room = sizeof(discard);
			}
			if (body_len != UINT64_MAX && room > body_len - body_have)
				room = (size_t)(body_len -
						body_have); /* never read into the next response */
		} else if (room == 0) {
			return -EBADMSG; /* head longer than LOADGEN_RESPONSE_MAX */
		}

		n = recv(fd, dst, room, MSG_DONTWAIT);
		if (n < 0) {
			int r;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			r = wait_fd(fd, POLLIN, deadline_usec);
			if (r < 0)
				return r;
			continue;
		}
		if (n == 0) {
			if (*ret_nread == 0)
				return -ENODATA;
			/* Without Content-Length the body ends at EOF; otherwise EOF means truncated. */
			if (head_done && body_len == UINT64_MAX)
				break;
			return -EBADMSG;
		}
		*ret_nread += (size_t)n;
		if (dst != discard)
			len += (size_t)n;

		if (!head_done) {
			const char *end = memmem(buf, len, "\r\n\r\n", 4);
			int r;

			if (!end)
				continue;
			head_len = (size_t)(end + 4 - buf);
			r = head_parse(buf, head_len, &status, &close, &body_len);
			if (r < 0)
				return r;
			/*
			 * No Content-Length (and no chunking, refused above): the body is whatever
			 * comes before the server closes (RFC 9112 section 6.3, rule 8), with or
			 * without "Connection: close".
			 */
			head_done = true;
			body_have = len - head_len;
			if (body_len != UINT64_MAX && body_have > body_len)
				return -EBADMSG; /* bytes we did not ask for */
		} else {
			body_have += (uint64_t)n;
		}
	}

	*ret = (struct response){
		.status = status,
		/* An EOF-framed body has ended the connection already. */
		.close = close || body_len == UINT64_MAX,
		.pid = body_pid(buf + head_len, len - head_len),
	};
	return 0;
}

static enum outcome outcome_from_errno(struct worker *w, int error)
{
	switch (error) {
	case -ECONNREFUSED:
	case -ENOENT: /* Unix socket file gone */
		return OUTCOME_REFUSED;
	case -ECONNRESET:
	case -EPIPE:
		return OUTCOME_RESET;
	case -ETIMEDOUT:
		return OUTCOME_TIMEOUT;
	case -ENODATA:
		return OUTCOME_EMPTY;
	case -EBADMSG:
		return OUTCOME_BAD;
	default:
		w->last_error = error;
		return OUTCOME_OTHER;
	}
}

static void worker_conn_close(struct worker *w)
{
	w->fd = safe_close(w->fd);
}

static void worker_add_pid(struct worker *w, long pid)
{
	if (pid < 0 || pid == w->last_pid)
		return;
	w->last_pid = pid;
	for (size_t i = 0; i < w->n_pids; i++) {
		if (w->pids[i] == pid)
			return;
	}
	if (w->n_pids == LOADGEN_MAX_PIDS) {
		w->pids_capped = true;
		return;
	}
	w->pids[w->n_pids++] = pid;
}

/* Keeps a latency sample while under LOADGEN_MAX_SAMPLES; the max is tracked regardless. */
static void worker_add_sample(struct worker *w, uint64_t start_usec, uint64_t latency_usec)
{
	bool timeline = w->run->cfg->timeline_path != NULL;

	if (latency_usec > w->max_usec)
		w->max_usec = latency_usec;
	if (w->n_samples == w->cap_samples) {
		size_t cap = w->cap_samples == 0 ? LOADGEN_INITIAL_SAMPLES : w->cap_samples * 2;
		uint32_t *lat;

		if (w->cap_samples >= LOADGEN_MAX_SAMPLES) {
			w->samples_capped = true;
			return;
		}
		if (cap > LOADGEN_MAX_SAMPLES)
			cap = LOADGEN_MAX_SAMPLES;
		lat = realloc(w->latency_usec, cap * sizeof(*lat));
		if (!lat) {
			w->samples_capped = true;
			return;
		}
		w->latency_usec = lat;
		if (timeline) {
			uint64_t *st = realloc(w->start_usec, cap * sizeof(*st));

			if (!st) {
				w->samples_capped = true;
				return;
			}
			w->start_usec = st;
		}
		w->cap_samples = cap;
	}
	/* --timeout bounds a latency far below 2^32 us (71 minutes) in practice; saturate anyway. */
	w->latency_usec[w->n_samples] =
		latency_usec > UINT32_MAX ? UINT32_MAX : (uint32_t)latency_usec;
	if (timeline)
		w->start_usec[w->n_samples] = start_usec;
	w->n_samples++;
}

/*
 * Runs one request, connecting first unless a kept-alive connection exists. Latency runs from the
 * first connect or send to the last byte of the reply, and includes a retry; so does --timeout.
 */
static enum outcome worker_request(struct worker *w, uint64_t start_usec)
{
	const struct config *cfg = w->run->cfg;
	/* One deadline for the whole request, the retry included: --timeout is what a user waits. */
	uint64_t deadline = start_usec + cfg->timeout_usec;

	for (unsigned attempt = 0;; attempt++) {
		bool reused = w->fd >= 0;
		struct response resp;
		size_t nread;
		int r;

		if (!reused) {
			r = conn_open(cfg, deadline);
			if (r < 0)
				return outcome_from_errno(w, r);
			w->fd = r;
		}

		r = send_all(w->fd, cfg->request, cfg->request_len, deadline);
		if (r < 0) {
			worker_conn_close(w);
			/*
			 * The server closed the kept-alive connection while it was idle, before this
			 * request: every HTTP client reconnects and sends it again, once.
			 */
			if (reused && attempt == 0 && (r == -ECONNRESET || r == -EPIPE)) {
				w->retried++;
				continue;
			}
			return outcome_from_errno(w, r);
		}

		r = response_read(w->fd, deadline, &resp, &nread);
		if (r < 0) {
			worker_conn_close(w);
			/*
			 * Same race, seen from the read side: not one byte of reply, just EOF, or a
			 * reset because our request arrived after the server had closed.
			 */
			if (reused && attempt == 0 && nread == 0 &&
			    (r == -ENODATA || r == -ECONNRESET)) {
				w->retried++;
				continue;
			}
			return outcome_from_errno(w, r);
		}
		if (!cfg->keep_alive || resp.close)
			worker_conn_close(w);
		if (resp.status != 200)
			return OUTCOME_BAD;
		worker_add_pid(w, resp.pid);
		worker_add_sample(w, start_usec - w->run->start_usec, now_usec() - start_usec);
		return OUTCOME_OK;
	}
}

static void *worker_main(void *userdata)
{
	struct worker *w = userdata;
	struct run *run = w->run;

	for (;;) {
		uint64_t start = now_usec();

		if (atomic_load(&stop_requested) || start >= run->end_usec)
			break;
		if (run->cfg->max_requests > 0 &&
		    atomic_fetch_add(&run->issued, 1) >= run->cfg->max_requests)
			break;
		w->counts[worker_request(w, start)]++;
	}
	worker_conn_close(w);
	return NULL;
}

static int compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted[0..n), per_mille = 500 for p50, 999 for p99.9. */
static uint64_t percentile(const uint32_t *sorted, size_t n, unsigned per_mille)
{
	size_t rank;

	if (n == 0)
		return 0;
	rank = (size_t)(((uint64_t)n * per_mille + 999) / 1000);
	return sorted[rank == 0 ? 0 : rank - 1];
}

struct timeline_entry {
	uint64_t start_usec;
	uint32_t latency_usec;
};

static int compare_timeline(const void *a, const void *b)
{
	const struct timeline_entry *x = a, *y = b;

	return (x->start_usec > y->start_usec) - (x->start_usec < y->start_usec);
}

/* Writes "t_usec latency_usec" per kept sample, ordered by request start. Returns 0 or -errno. */
static int timeline_write(const char *path, struct worker *workers, unsigned n_workers)
{
	_cleanup_free_ struct timeline_entry *entries = NULL;
	FILE *f;
	size_t n = 0, total = 0;
	int r = 0;

	for (unsigned i = 0; i < n_workers; i++)
		total += workers[i].n_samples;
	entries = calloc(total > 0 ? total : 1, sizeof(*entries));
	if (!entries)
		return -ENOMEM;
	for (unsigned i = 0; i < n_workers; i++) {
		for (size_t j = 0; j < workers[i].n_samples; j++)
			entries[n++] = (struct timeline_entry){
				.start_usec = workers[i].start_usec[j],
				.latency_usec = workers[i].latency_usec[j],
			};
	}
	qsort(entries, n, sizeof(*entries), compare_timeline);

	f = fopen(path, "we");
	if (!f)
		return -errno;
	for (size_t i = 0; i < n; i++) {
		if (fprintf(f, "%" PRIu64 " %" PRIu32 "\n", entries[i].start_usec,
			    entries[i].latency_usec) < 0) {
			r = -EIO;
			break;
		}
	}
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	return r;
}

static void format_usec(uint64_t usec, char *buf, size_t size)
{
	if (usec < 10 * USEC_PER_MSEC)
		(void)snprintf(buf, size, "%" PRIu64 "us", usec);
	else if (usec < 10 * USEC_PER_SEC)
		(void)snprintf(buf, size, "%.1fms", (double)usec / (double)USEC_PER_MSEC);
	else
		(void)snprintf(buf, size, "%.2fs", (double)usec / (double)USEC_PER_SEC);
}

/* Merges the threads' results, prints the line and the summary. Returns the exit status. */
static int report(const struct config *cfg, struct worker *workers, uint64_t elapsed_usec)
{
	_cleanup_free_ uint32_t *all = NULL;
	_cleanup_free_ long *pids = NULL;
	uint64_t counts[_OUTCOME_MAX] = { 0 };
	uint64_t requests = 0, failed = 0, retried = 0, max_usec = 0, rps;
	uint64_t p50, p99, p999;
	size_t n_samples = 0, n_pids = 0;
	bool pids_capped = false, samples_capped = false;
	int last_error = 0;

	for (unsigned i = 0; i < cfg->n_threads; i++) {
		const struct worker *w = &workers[i];

		for (unsigned o = 0; o < _OUTCOME_MAX; o++)
			counts[o] += w->counts[o];
		retried += w->retried;
		if (w->max_usec > max_usec)
			max_usec = w->max_usec;
		n_samples += w->n_samples;
		samples_capped = samples_capped || w->samples_capped;
		pids_capped = pids_capped || w->pids_capped;
		if (w->last_error != 0)
			last_error = w->last_error;
	}
	for (unsigned o = 0; o < _OUTCOME_MAX; o++)
		requests += counts[o];
	failed = requests - counts[OUTCOME_OK];

	pids = calloc(LOADGEN_MAX_PIDS, sizeof(*pids));
	all = calloc(n_samples > 0 ? n_samples : 1, sizeof(*all));
	if (!pids || !all) {
		log_msg("merge results: %s", strerror(ENOMEM));
		return EXIT_FAILURE;
	}
	n_samples = 0;
	for (unsigned i = 0; i < cfg->n_threads; i++) {
		const struct worker *w = &workers[i];

		if (w->n_samples > 0)
			memcpy(all + n_samples, w->latency_usec, w->n_samples * sizeof(*all));
		n_samples += w->n_samples;
		for (size_t j = 0; j < w->n_pids; j++) {
			size_t k;

			for (k = 0; k < n_pids && pids[k] != w->pids[j]; k++)
				;
			if (k < n_pids)
				continue;
			if (n_pids == LOADGEN_MAX_PIDS)
				pids_capped = true;
			else
				pids[n_pids++] = w->pids[j];
		}
	}
	qsort(all, n_samples, sizeof(*all), compare_u32);
	p50 = percentile(all, n_samples, 500);
	p99 = percentile(all, n_samples, 990);
	p999 = percentile(all, n_samples, 999);
	rps = elapsed_usec > 0 ? counts[OUTCOME_OK] * USEC_PER_SEC / elapsed_usec : 0;

	printf("%s: requests=%" PRIu64, LOADGEN_NAME, requests);
	for (unsigned o = 0; o < _OUTCOME_MAX; o++)
		printf(" %s=%" PRIu64, outcome_names[o], counts[o]);
	printf(" retried=%" PRIu64 " failed=%" PRIu64 " pids=%zu rps=%" PRIu64 " p50_us=%" PRIu64
	       " p99_us=%" PRIu64 " p999_us=%" PRIu64 " max_us=%" PRIu64 " duration_ms=%" PRIu64
	       "\n",
	       retried, failed, n_pids, rps, p50, p99, p999, max_usec,
	       elapsed_usec / USEC_PER_MSEC);
	(void)fflush(stdout);

	if (!cfg->quiet) {
		char a[32], b[32], c[32], d[32];

		log_msg("%s, %u thread%s, %s, %.2fs: %" PRIu64 " requests, %" PRIu64 " ok, %" PRIu64
			" failed, %" PRIu64 " retried, %" PRIu64 " req/s, %zu%s pid%s",
			cfg->target, cfg->n_threads, cfg->n_threads == 1 ? "" : "s",
			cfg->keep_alive ? "keep-alive" : "close",
			(double)elapsed_usec / (double)USEC_PER_SEC, requests, counts[OUTCOME_OK],
			failed, retried, rps, n_pids, pids_capped ? "+" : "",
			n_pids == 1 ? "" : "s");
		format_usec(p50, a, sizeof(a));
		format_usec(p99, b, sizeof(b));
		format_usec(p999, c, sizeof(c));
		format_usec(max_usec, d, sizeof(d));
		log_msg("latency p50 %s, p99 %s, p99.9 %s, max %s%s", a, b, c, d,
			samples_capped ? " (percentiles over the first samples only)" : "");
		if (failed > 0)
			log_msg("failed: refused %" PRIu64 ", reset %" PRIu64 ", timeout %" PRIu64
				", empty %" PRIu64 ", bad %" PRIu64 ", other %" PRIu64 "%s%s",
				counts[OUTCOME_REFUSED], counts[OUTCOME_RESET],
				counts[OUTCOME_TIMEOUT], counts[OUTCOME_EMPTY], counts[OUTCOME_BAD],
				counts[OUTCOME_OTHER], last_error ? " (last other: " : "",
				last_error ? strerror(-last_error) : "");
	}
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static void help(void)
{
	printf("Usage: %s [OPTIONS] TARGET\n"
	       "\n"
	       "HTTP/1.1 load client. TARGET is HOST:PORT, [V6]:PORT, unix:/PATH or "
	       "unix:@ABSTRACT.\n"
	       "Each thread sends GET requests one at a time until the duration (or the request\n"
	       "cap) is reached, then prints one line to stdout:\n"
	       "  %s: requests= ok= refused= reset= timeout= empty= bad= other= retried= failed=\n"
	       "  pids= rps= p50_us= p99_us= p999_us= max_us= duration_ms=\n"
	       "\n"
	       "Options:\n"
	       "  -t, --threads N     concurrent connections, one per thread (default %d, at most "
	       "%d)\n"
	       "  -d, --duration DUR  run for DUR: 500ms, 1.5s, 2m (default %s)\n"
	       "  -n, --requests N    stop after N requests in total, if that comes first\n"
	       "  -k, --keep-alive    reuse connections (default: one connection per request)\n"
	       "      --path PATH     request PATH (default /)\n"
	       "      --timeout DUR   per request, connect to last byte, a retry included\n"
	       "                      (default %s)\n"
	       "      --timeline FILE write \"t_usec latency_usec\" per successful request, by "
	       "start\n"
	       "      --quiet         no summary on stderr\n"
	       "  -h, --help          show this help\n"
	       "  -V, --version       show the version\n"
	       "\n"
	       "Exit status: 0 if no request failed, 1 if any did, 2 on bad usage.\n",
	       LOADGEN_NAME, LOADGEN_NAME, LOADGEN_DEFAULT_THREADS, LOADGEN_MAX_THREADS,
	       LOADGEN_DEFAULT_DURATION, LOADGEN_DEFAULT_TIMEOUT);
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	unsigned long long n;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -EINVAL;
	if (n < min || n > max)
		return -ERANGE;
	*ret = n;
	return 0;
}

/* A request target goes into the request line as is: no spaces, no control bytes. */
static bool path_is_valid(const char *path)
{
	if (path[0] != '/')
		return false;
	for (const char *p = path; *p; p++) {
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return false;
	}
	return true;
}

enum {
	OPT_PATH = 0x100,
	OPT_TIMEOUT,
	OPT_TIMELINE,
	OPT_QUIET,
};

/* Returns 0 to go on, 1 to exit 0 (--help, --version), or -EINVAL after saying what is wrong. */
static int options_parse(int argc, char *argv[], struct config *cfg)
{
	static const struct option longopts[] = {
		{ "threads", required_argument, NULL, 't' },
		{ "duration", required_argument, NULL, 'd' },
		{ "requests", required_argument, NULL, 'n' },
		{ "keep-alive", no_argument, NULL, 'k' },
		{ "path", required_argument, NULL, OPT_PATH },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "timeline", required_argument, NULL, OPT_TIMELINE },
		{ "quiet", no_argument, NULL, OPT_QUIET },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{},
	};
	const char *path = "/";
	char host[LOADGEN_HOST_MAX];
	uint64_t n;
	int opt, r;

	while ((opt = getopt_long(argc, argv, "t:d:n:khV", longopts, NULL)) >= 0) {
		switch (opt) {
		case 't':
			if (parse_u64(optarg, 1, LOADGEN_MAX_THREADS, &n) < 0) {
				log_msg("--threads %s: expected 1..%d", optarg,
					LOADGEN_MAX_THREADS);
				return -EINVAL;
			}
			cfg->n_threads = (unsigned)n;
			break;
		case 'd':
			if (duration_parse(optarg, &cfg->duration_usec) < 0 ||
			    cfg->duration_usec == 0) {
				log_msg("--duration %s: expected a positive duration (500ms, 10s, "
					"2m)",
					optarg);
				return -EINVAL;
			}
			break;
		case 'n':
			if (parse_u64(optarg, 1, UINT64_MAX, &cfg->max_requests) < 0) {
				log_msg("--requests %s: expected a positive integer", optarg);
				return -EINVAL;
			}
			break;
		case 'k':
			cfg->keep_alive = true;
			break;
		case OPT_PATH:
			if (!path_is_valid(optarg)) {
				log_msg("--path %s: expected /..., without spaces or control "
					"characters",
					optarg);
				return -EINVAL;
			}
			path = optarg;
			break;
		case OPT_TIMEOUT:
			if (duration_parse(optarg, &cfg->timeout_usec) < 0 ||
			    cfg->timeout_usec == 0) {
				log_msg("--timeout %s: expected a positive duration (500ms, 5s)",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_TIMELINE:
			cfg->timeline_path = optarg;
			break;
		case OPT_QUIET:
			cfg->quiet = true;
			break;
		case 'h':
			help();
			return 1;
		case 'V':
			printf("%s %s\n", LOADGEN_NAME, LOADGEN_VERSION);
			return 1;
		default:
			return -EINVAL; /* getopt_long() has said what is wrong */
		}
	}
	if (argc - optind != 1) {
		log_msg("expected one TARGET (see --help)");
		return -EINVAL;
	}
	cfg->target = argv[optind];
	r = sockaddr_parse(cfg->target, false, &cfg->addr, &cfg->addr_len);
	if (r < 0) {
		log_msg("target %s: %s", cfg->target,
			r == -EINVAL ? "expected HOST:PORT, [V6]:PORT or unix:/PATH"
				     : strerror(-r));
		return -EINVAL;
	}

	/* The Host header names the target as given; a Unix socket has no host, so "localhost". */
	if (cfg->addr.ss_family == AF_UNIX || strlen(cfg->target) >= sizeof(host))
		(void)snprintf(host, sizeof(host), "localhost");
	else
		(void)snprintf(host, sizeof(host), "%s", cfg->target);
	r = snprintf(cfg->request, sizeof(cfg->request), "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
		     path, host, cfg->keep_alive ? "" : "Connection: close\r\n");
	if (r < 0 || (size_t)r >= sizeof(cfg->request)) {
		log_msg("--path: request longer than %d bytes", LOADGEN_REQUEST_MAX);
		return -EINVAL;
	}
	cfg->request_len = (size_t)r;
	return 0;
}

int main(int argc, char *argv[])
{
	struct config cfg = {
		.n_threads = LOADGEN_DEFAULT_THREADS,
	};
	struct sigaction stop = { .sa_handler = on_stop_signal };
	struct sigaction ignore = { .sa_handler = SIG_IGN };
	_cleanup_free_ struct worker *workers = NULL;
	struct run run = { .cfg = &cfg };
	unsigned n_started = 0;
	bool start_failed;
	uint64_t elapsed;
	int r, status;

	/* Defaults through the same parser as the options, so they cannot disagree. */
	if (duration_parse(LOADGEN_DEFAULT_DURATION, &cfg.duration_usec) < 0 ||
	    duration_parse(LOADGEN_DEFAULT_TIMEOUT, &cfg.timeout_usec) < 0)
		return EXIT_FAILURE;
	r = options_parse(argc, argv, &cfg);
	if (r != 0)
		return r > 0 ? EXIT_SUCCESS : 2;

	/* Every send() has MSG_NOSIGNAL; a dead peer must never kill the whole run anyway. */
	(void)sigaction(SIGPIPE, &ignore, NULL);
	/* Ctrl-C ends the run early but still prints the results: threads finish their request. */
	(void)sigaction(SIGINT, &stop, NULL);
	(void)sigaction(SIGTERM, &stop, NULL);

	workers = calloc(cfg.n_threads, sizeof(*workers));
	if (!workers) {
		log_msg("allocate %u threads: %s", cfg.n_threads, strerror(ENOMEM));
		return EXIT_FAILURE;
	}

	run.start_usec = now_usec();
	run.end_usec = run.start_usec + cfg.duration_usec;
	atomic_init(&run.issued, 0);
	for (; n_started < cfg.n_threads; n_started++) {
		struct worker *w = &workers[n_started];

		w->run = &run;
		w->fd = -1;
		w->last_pid = -1;
		r = pthread_create(&w->thread, NULL, worker_main, w);
		if (r != 0) {
			log_msg("start thread %u: %s", n_started, strerror(r));
			atomic_store(&stop_requested, true);
			break;
		}
	}
	for (unsigned i = 0; i < n_started; i++)
		(void)pthread_join(workers[i].thread, NULL);
	elapsed = now_usec() - run.start_usec;

	start_failed = n_started < cfg.n_threads;
	cfg.n_threads = n_started;
	status = report(&cfg, workers, elapsed);
	if (start_failed)
		status = EXIT_FAILURE;

	if (cfg.timeline_path) {
		r = timeline_write(cfg.timeline_path, workers, n_started);
		if (r < 0) {
			log_msg("write timeline %s: %s", cfg.timeline_path, strerror(-r));
			status = EXIT_FAILURE;
		}
	}
	for (unsigned i = 0; i < n_started; i++) {
		free(workers[i].latency_usec);
		free(workers[i].start_usec);
	}
	return status;
}
