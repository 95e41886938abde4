/* SPDX-License-Identifier: MIT */
/* listener.h - listening sockets batond holds for life: parse an address, bind, close. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#define LISTENER_NAME_MAX	 255  /* bytes; the limit systemd puts on FileDescriptorName= */
#define LISTENER_SPEC_MAX	 160  /* bytes of a canonical address such as unix:/long/path */
#define LISTENER_BACKLOG_DEFAULT 4096 /* connections; the kernel caps it at net.core.somaxconn */

enum listener_kind {
	LISTENER_TCP,
	LISTENER_UDP,
	LISTENER_UNIX,
};

union listener_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	struct sockaddr_un un;
	struct sockaddr_storage storage;
};

struct listener {
	char name[LISTENER_NAME_MAX + 1];
	char spec[LISTENER_SPEC_MAX]; /* canonical address: tcp://127.0.0.1:8080, unix:@name */
	enum listener_kind kind;
	union listener_addr addr;
	socklen_t addr_len;
	int fd;		/* -1 until bound */
	bool owns_path; /* we created the Unix socket file and remove it at the final close */
	bool inherited; /* came from LISTEN_FDS (systemd), not bound by us */
	dev_t path_dev; /* identity of that file, so we never unlink someone else's */
	ino_t path_ino;
};

/*
 * Parses "[NAME=]ADDRESS" where ADDRESS is HOST:PORT, [V6ADDR]:PORT, tcp://HOST:PORT,
 * udp://HOST:PORT, unix:/path or unix:@abstract. HOST may be a numeric address, "*" (any IPv4
 * address) or a name from /etc/hosts such as localhost. Port 0 asks the kernel for a free one.
 * Without a name, the name is "listen<index>". Returns 0 and fills *ret (fd = -1), or -EINVAL
 * (malformed), -ENAMETOOLONG (Unix path or name too long), -ERANGE (bad port) or
 * -EADDRNOTAVAIL (host not found); *ret is untouched on failure.
 */
int listener_parse(const char *arg, unsigned index, struct listener *ret);

/* True if name is usable in LISTEN_FDNAMES: 1..255 printable ASCII characters other than ':'. */
bool listener_name_is_valid(const char *name);

/*
 * Binds and (for stream kinds) listens with the given backlog; the socket is CLOEXEC and
 * non-blocking. A Unix path is replaced only if it is a socket that nobody answers on; any other
 * file there fails with -EEXIST and is left alone. With port 0, the spec is updated with the
 * port the kernel chose. Returns 0 with l->fd set, or a negative errno with nothing left open.
 */
int listener_bind(struct listener *l, int backlog);

/*
 * Describes an inherited socket fd (a TCP or UDP socket, or a Unix stream socket) as a listener
 * named name: kind and address from the socket itself. Returns 0 and fills *ret (owning fd on
 * success only), -ENOTSOCK, or -EPROTONOSUPPORT for any other kind of socket.
 */
int listener_from_fd(int fd, const char *name, struct listener *ret);

/* True if a names the same socket address as b; with any_port, port 0 in a matches any port. */
bool listener_same_address(const struct listener *a, const struct listener *b, bool any_port);

/*
 * For a Unix path listener: 1 if the path is free or holds a socket file nobody answers on
 * (its server died: safe to replace), -EADDRINUSE if a socket of any type answers there,
 * -EEXIST if something that is not a socket is there (never ours to touch), or -errno.
 * type is the socket type to probe with (SOCK_STREAM, SOCK_SEQPACKET).
 */
int listener_unix_path_is_stale(const struct listener *l, int type);

/* Closes the listener and removes its Unix socket file if we created it. Safe to call twice. */
void listener_close(struct listener *l);

/* Writes the canonical address of addr into buf (at least LISTENER_SPEC_MAX bytes). */
void listener_format(enum listener_kind kind, const union listener_addr *addr, socklen_t len,
		     char *buf, size_t size);

/* "tcp", "udp" or "unix". */
const char *listener_kind_to_string(enum listener_kind kind);
