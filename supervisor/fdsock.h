/* SPDX-License-Identifier: MIT */
/* fdsock.h - --fd-socket: a Unix socket where other processes fetch batond's listeners. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#include "listener.h"

#define FDSOCK_MAX_CLIENTS	   16  /* clients served at once; more wait in the listen backlog */
#define FDSOCK_BACKLOG		   64  /* connections the kernel queues for us beyond those */
#define FDSOCK_MAX_ALLOW	   256 /* entries in each allow list */
#define FDSOCK_CLIENT_TIMEOUT_USEC (5 * 1000 * 1000)  /* one client's whole conversation */
#define FDSOCK_REFUSALS_LOGGED	   10		      /* refusals logged per interval */
#define FDSOCK_LOG_INTERVAL_USEC   (10 * 1000 * 1000) /* ... of this long; the rest counted */

struct fdsock;

/*
 * Listens on path (a file system path, or "@name" for an abstract socket) with an AF_UNIX
 * SOCK_SEQPACKET socket, CLOEXEC and non-blocking. A file already at path is replaced only if it
 * is a socket nobody answers on (a stale one); anything else fails with -EADDRINUSE or -EEXIST
 * and is left alone. The file is removed by fdsock_free() (only if it is still ours).
 *
 * Who may fetch: root, batond's own effective uid, every uid in allow_uids, and every process
 * whose primary gid or one of whose supplementary groups is in allow_gids, as the kernel
 * recorded them at connect() (SO_PEERCRED, SO_PEERGROUPS: no /proc look-up, so no race with pid
 * reuse or a process that changes credentials afterwards). Everyone else gets ERROR(EPERM) and a
 * close, and one log line with its pid, uid and gid (at most FDSOCK_REFUSALS_LOGGED per
 * FDSOCK_LOG_INTERVAL_USEC; the rest are counted in the next line).
 *
 * The file's mode: 0600 when both allow lists are empty (only root and our uid, who pass the
 * check anyway, can connect at all), else 0666, because a file mode cannot express a list of
 * uids and groups: the check above is then the gate. The directory's permissions remain the
 * operator's to set as a second fence. An abstract socket has no file: the check alone applies.
 *
 * Each admitted client must send HELLO with role FETCH (role WORKER is refused with ERROR
 * EPROTO) and gets LISTENERS with every listener, then a close; proto 1.0 has no request for a
 * subset by name, so the client picks by name from the whole set. A client gets
 * FDSOCK_CLIENT_TIMEOUT_USEC for the whole conversation.
 *
 * listeners[0..n) are not copied: they must stay valid and open until fdsock_free(). The allow
 * lists are copied. Does not log; returns 0 and *ret, or -EINVAL (path, a listener), -E2BIG
 * (an allow list over FDSOCK_MAX_ALLOW, or listeners over PROTO_MAX_LISTENERS), -ENAMETOOLONG,
 * -EADDRINUSE, -EEXIST or another -errno.
 */
int fdsock_new(sd_event *e, const char *path, const struct listener *listeners, size_t n,
	       const uid_t *allow_uids, size_t n_uids, const gid_t *allow_gids, size_t n_gids,
	       struct fdsock **ret);

/* Closes every client and the socket, removes its file. Accepts NULL; returns NULL. */
struct fdsock *fdsock_free(struct fdsock *s);

/*
 * Parses one --fd-allow value: "UID" (a number, or a user name looked up with getpwnam_r) or
 * "@GROUP" (a number, or a group name looked up with getgrnam_r). Returns 0 and sets
 * *ret_is_group and either *ret_uid or *ret_gid (the other is untouched); or -EINVAL (empty,
 * "@" alone, the invalid id 4294967295), -ERANGE (a number over 32 bits), -ESRCH (no such user
 * or group) or another -errno from the look-up. Nothing is written on failure.
 */
int fdsock_parse_allow(const char *s, uid_t *ret_uid, gid_t *ret_gid, bool *ret_is_group);
