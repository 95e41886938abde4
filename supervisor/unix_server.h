/* SPDX-License-Identifier: MIT */
/* unix_server.h - a bounded Unix-socket server: bind, accept with credentials, cap, pause.
 * It also serves an already bound TCP listener (--metrics), without the file or credentials. */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#include "listener.h"

#define UNIX_SERVER_EMFILE_PAUSE_USEC (1000 * 1000) /* accept paused when out of fds: 1 s */

struct unix_server;

/*
 * A connection was accepted: fd is CLOEXEC and non-blocking, cred what the kernel recorded at
 * connect() (SO_PEERCRED). The callback owns fd from here. It returns true if the connection is
 * now a client that counts against max_clients (it calls unix_server_client_gone() when that
 * client ends), false if it closed the connection (refused it, or failed to take it).
 */
typedef bool (*unix_server_accept_fn)(void *userdata, int fd, const struct ucred *cred);

struct unix_server_params {
	const char *path; /* a file system path, or "@name" for an abstract socket */
	int type;	  /* SOCK_STREAM or SOCK_SEQPACKET */
	mode_t mode;	  /* the socket file's mode, from birth: no window with a wider one */
	int backlog;
	unsigned max_clients; /* clients at once; more wait in the backlog */
	int adopt_fd;	      /* >= 0: an already listening socket at path (after an upgrade) */
	struct listener *tcp; /* instead of path: a bound TCP listener, whose fd is the server's
				 from here on, even on failure (credentials are then meaningless) */
	const char *label;    /* names the server in log lines: "control socket /run/x.sock" */
	unix_server_accept_fn accept;
	void *userdata;
};

/*
 * Listens on p->path: a file already there is replaced only if it is a socket nobody answers on
 * (a stale one); anything else fails with -EADDRINUSE or -EEXIST and is left alone. Accepting
 * stops while max_clients are connected, and for UNIX_SERVER_EMFILE_PAUSE_USEC after EMFILE or
 * ENFILE (logged once per pause). Does not log otherwise; returns 0 and *ret, or -EINVAL,
 * -ENAMETOOLONG, -EADDRINUSE, -EEXIST or another -errno. With adopt_fd, that fd is the
 * server's from here on, even on failure.
 */
int unix_server_new(sd_event *e, const struct unix_server_params *p, struct unix_server **ret);

/* Closes the socket and removes its file (if still ours) unless keep_file. Accepts NULL. */
struct unix_server *unix_server_free(struct unix_server *s, bool keep_file);

/* A client the accept callback took has ended: there is room for the next one. */
void unix_server_client_gone(struct unix_server *s);

/* The listening fd (for the upgrade handoff), still owned by the server. */
int unix_server_fd(const struct unix_server *s);
