/* SPDX-License-Identifier: MIT */
/* hello.c - the smallest HTTP server on libbaton: serve, then drain on request and exit 0. */
/* Build: cc $(pkg-config --cflags libbaton) hello.c $(pkg-config --libs libbaton) -o hello
 * Run: batond -l 127.0.0.1:8080 -n 2 -- ./hello. One connection at a time, to stay short. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <baton.h>

#define HELLO_MAX_LISTENERS 16	 /* stream listeners polled */
#define HELLO_REQUEST_MAX   4096 /* bytes of request head read before a client is dropped */
#define HELLO_PAUSE_MSEC    100	 /* accept pause after EMFILE, ENFILE, ENOBUFS, ENOMEM */

/* Takes one connection from listener i (batond's do not block), answers 200 with our pid. */
static void serve(struct baton *b, unsigned i)
{
	char req[HELLO_REQUEST_MAX + 1], out[128];
	size_t len = 0;
	int fd, n;

	fd = accept(baton_listener_fd(b, i), NULL, NULL); /* EAGAIN: another worker was first */
	if (fd < 0 && errno != EAGAIN && !baton_accept_error_is_transient(errno)) {
		fprintf(stderr, "hello: accept on %s: %s, pausing\n", baton_listener_name(b, i),
			strerror(errno));
		(void)poll(NULL, 0, HELLO_PAUSE_MSEC); /* accepting again at once would spin */
	}
	if (fd < 0)
		return;
	do {
		ssize_t got = recv(fd, req + len, HELLO_REQUEST_MAX - len, 0);

		if (got <= 0) { /* the client left, or its head is too long */
			(void)close(fd);
			return;
		}
		len += (size_t)got;
		req[len] = '\0';
	} while (!strstr(req, "\r\n\r\n"));
	n = snprintf(req, sizeof(req), "pid=%ld\n", (long)getpid());
	n = snprintf(out, sizeof(out), "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", n, req);
	(void)send(fd, out, (size_t)n, MSG_NOSIGNAL); /* fits a new socket's buffer; no SIGPIPE */
	(void)close(fd);
}

/* Says what failed and why (r: a negative errno); the exit closes the rest. */
static int fail(const char *what, int r)
{
	fprintf(stderr, "hello: %s: %s\n", what, strerror(-r));
	return EXIT_FAILURE;
}

int main(void)
{
	struct pollfd fds[1 + HELLO_MAX_LISTENERS];
	struct baton *b = NULL;
	unsigned n, i;
	int r;

	r = baton_open(&b, 0); /* first, before any thread */
	if (r < 0)
		return fail("open libbaton", r);
	n = baton_listener_count(b);
	if (n == 0 || n > HELLO_MAX_LISTENERS)
		return fail("listeners (1 to 16, from batond)", n ? -E2BIG : -ENOENT);
	r = baton_drain_fd(b); /* SIGTERM, SIGINT and SIGQUIT now wait for this fd */
	if (r < 0)
		return fail("drain fd", r);
	fds[0] = (struct pollfd){ .fd = r, .events = POLLIN };
	for (i = 0; i < n; i++)
		fds[1 + i] = (struct pollfd){ .fd = baton_listener_fd(b, i), .events = POLLIN };
	r = baton_ready(b);
	if (r < 0)
		return fail("report ready", r);

	while (!baton_draining(b)) {
		if (poll(fds, 1 + n, -1) < 0 && errno != EINTR)
			return fail("poll", -errno);
		/* Not 0: draining (a failed channel drains too); what is queued is the next worker's. */
		r = fds[0].revents ? baton_process(b) : 0;
		if (r < 0)
			fprintf(stderr, "hello: channel to batond: %s, draining\n", strerror(-r));
		if (r != 0)
			continue;
		for (i = 0; i < n; i++) {
			if (fds[1 + i].revents)
				serve(b, i);
		}
	}
	/* serve() finished all it took. If this report fails, batond learns it from our exit. */
	(void)baton_drained(b);
	b = baton_close(b);
	return EXIT_SUCCESS;
}
