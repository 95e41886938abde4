/* SPDX-License-Identifier: MIT */
/* fdpass.h - one protocol message per sendmsg()/recvmsg(), its fds attached as SCM_RIGHTS. */
#pragma once

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

/*
 * Both helpers expect a connected AF_UNIX SOCK_SEQPACKET socket: each message is one record, so
 * it arrives whole or not at all, and its fds arrive with it. EINTR is retried. On a
 * non-blocking socket, -EAGAIN goes back to the caller, who waits for POLLIN/POLLOUT and calls
 * again with the same arguments (nothing was sent or consumed). Neither helper logs.
 */

/*
 * Sends buf[0..len) with fds[0..n_fds) attached, MSG_NOSIGNAL. Returns 0 when the whole message
 * is queued; -EINVAL (len 0: the peer would read it as a close; or fds NULL with n_fds > 0),
 * -EMSGSIZE (len over PROTO_MAX_MESSAGE), -E2BIG (n_fds over PROTO_MAX_FDS_PER_MESSAGE),
 * -EAGAIN, -EPIPE (peer gone), -ETOOMANYREFS (too many fds in flight) or another -errno.
 * The caller keeps its fds: the kernel passes duplicates, so closing them after is safe.
 */
int proto_send(int fd, const void *buf, size_t len, const int *fds, size_t n_fds);

/*
 * Receives one message into buf[0..size) and up to max_fds fds into fds[], with
 * MSG_CMSG_CLOEXEC. Returns the message length (> 0) with *ret_n_fds set and the caller owning
 * fds[0..*ret_n_fds); or 0 when the peer closed (or sent an empty message, which this protocol
 * never does: treat both as a close), with *ret_n_fds = 0. Failures, after which no fd is left
 * open and nothing is written to fds[] or *ret_n_fds:
 *   -EMSGSIZE  the message was longer than size; the kernel dropped the rest of it;
 *   -EPROTO    more fds than max_fds, ancillary data other than SCM_RIGHTS (the socket must not
 *              have SO_PASSCRED or SO_PASSPIDFD set), or control data truncated or malformed;
 *   -EINVAL    size 0, or max_fds > 0 without fds or ret_n_fds;
 *   -EAGAIN, -ECONNRESET (the peer closed with messages of ours unread), or another -errno.
 * A failed message has been consumed: the next call reads the next one.
 * fds and ret_n_fds may be NULL with max_fds 0: then any attached fd is an error.
 */
ssize_t proto_recv(int fd, void *buf, size_t size, int *fds, size_t max_fds, size_t *ret_n_fds);

/*
 * Reads the peer's credentials (SO_PEERCRED: as of connect() or socketpair()). Returns 0 and
 * fills *ret, or -errno. pid is 0 if the peer's process is not visible in our pid namespace.
 */
int proto_peer_cred(int fd, struct ucred *ret);
