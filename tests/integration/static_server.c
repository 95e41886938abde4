/* SPDX-License-Identifier: MIT */
/* static_server.c - an HTTP server that binds its own socket, built -static by the tests. */
/*
 * Usage: static_server CONFIG, where the file CONFIG says "HOST PORT" or "unix PATH". For a
 * path it does what many servers do: removes a stale file before its bind(), and its own file
 * when it stops (as Go does at a listener's close). It knows nothing of batond: no LISTEN_FDS, no libc that a
 * preload shim could reach (it is linked statically), a blocking accept(). Each reply names
 * the process ("pid=N"). SIGTERM is its graceful stop: it shuts its listener down (which must
 * not reach batond's shared socket), finishes the connection in hand and exits 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
	(void)sig;
	stopping = 1;
}

/* Reads the request head (up to the blank line); EINTR from the drain signal is retried. */
static int read_head(int c)
{
	char buf[4096];
	size_t have = 0;

	for (;;) {
		ssize_t n = read(c, buf + have, sizeof(buf) - 1 - have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		have += (size_t)n;
		buf[have] = '\0';
		if (strstr(buf, "\r\n\r\n"))
			return 0;
		if (have == sizeof(buf) - 1)
			return -1;
	}
}

static void serve(int c)
{
	char reply[256], body[64];
	size_t off = 0;
	int len;

	if (read_head(c) < 0)
		return;
	(void)snprintf(body, sizeof(body), "pid=%d\n", (int)getpid());
	len = snprintf(reply, sizeof(reply),
		       "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
		       strlen(body), body);
	while (off < (size_t)len) {
		ssize_t n = write(c, reply + off, (size_t)len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		off += (size_t)n;
	}
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_term }; /* no SA_RESTART: accept() returns */
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct sockaddr_un u = { .sun_family = AF_UNIX };
	struct sockaddr *addr = (struct sockaddr *)&a;
	socklen_t addr_len = sizeof(a);
	char host[64], where[sizeof(u.sun_path)];
	unsigned port = 0;
	bool is_unix;
	FILE *f;
	int one = 1;
	int s;

	f = argc == 2 ? fopen(argv[1], "re") : NULL;
	if (!f) {
		(void)fprintf(stderr,
			      "usage: static_server CONFIG (a file: HOST PORT, or unix PATH)\n");
		return 2;
	}
	is_unix = fscanf(f, "unix %107s", where) == 1;
	if (!is_unix && (fscanf(f, "%63s %u", host, &port) != 2 || port > 65535 ||
			 inet_pton(AF_INET, host, &a.sin_addr) != 1)) {
		(void)fprintf(stderr, "static_server: %s: expected HOST PORT or unix PATH\n",
			      argv[1]);
		return 1;
	}
	(void)fclose(f);
	if (is_unix) {
		memcpy(u.sun_path, where, strlen(where) + 1);
		addr = (struct sockaddr *)&u;
		addr_len = sizeof(u);
		(void)unlink(where); /* "a stale socket from a previous run" */
	} else {
		a.sin_port = htons((unsigned short)port);
		(void)snprintf(where, sizeof(where), "%s:%u", host, port);
	}
	(void)sigaction(SIGTERM, &sa, NULL);
	(void)signal(SIGPIPE, SIG_IGN);
	s = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || (!is_unix && setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)) {
		perror("static_server: socket");
		return 1;
	}
	if (bind(s, addr, addr_len) < 0) {
		(void)fprintf(stderr, "static_server: bind %s: %s\n", where, strerror(errno));
		return 1;
	}
	if (listen(s, 128) < 0) {
		perror("static_server: listen");
		return 1;
	}
	/*
	 * A SIGTERM that lands between the check of stopping and the accept() would leave the
	 * server blocked there, taking connections until it is killed with one in hand: accept()
	 * gives up every 100 ms so that the flag is looked at again.
	 */
	if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ .tv_usec = 100000 },
		       sizeof(struct timeval)) < 0)
		perror("static_server: setsockopt SO_RCVTIMEO");
	while (!stopping) {
		int c = accept(s, NULL, NULL);

		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
				continue;
			perror("static_server: accept");
			return 1;
		}
		/* A connection inherits the listener's timeout: its reads wait as long as they must. */
		(void)setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 0 },
				 sizeof(struct timeval));
		serve(c);
		(void)close(c);
	}
	/* What a server does to stop accepting: batond keeps the shared socket as it is. */
	if (shutdown(s, SHUT_RDWR) < 0)
		perror("static_server: shutdown");
	(void)close(s);
	if (is_unix)
		(void)unlink(where);
	return 0;
}
