/* SPDX-License-Identifier: MIT */
/* listen_close.h - the two-stage close of a listening socket, learnt from its fd: refuse new, count. */
#pragma once

/*
 * The kernel resets every connection still queued on a listener when its last reference is
 * closed, and has no call for "stop listening but keep the queue". These two functions are the
 * parts of that close that need only the fd: batond (supervisor/drain.c) and libbaton
 * (baton_listener_shutdown()) build on them. Kind and address come from the socket itself
 * (SO_DOMAIN, SO_TYPE, SO_PROTOCOL, getsockname()). Neither function logs or blocks.
 */

/*
 * Stage 1: stop new connections from reaching the listener fd without touching those already
 * queued.
 *   TCP: a classic BPF filter (SO_ATTACH_FILTER, replacing any filter already attached) drops
 *        segments with SYN set and ACK clear, so new clients get no SYN-ACK (their connect()
 *        times out: no reset, no refusal), while queued connections stay acceptable with their
 *        data and handshakes in progress complete (their final ACK passes).
 *   UDP: a filter drops every new datagram; the queued ones stay readable.
 *   Unix path (stream or seqpacket): the socket file is removed, so new connect()s fail with
 *        ENOENT; only if the file at that path is this socket's own (same device and inode, from
 *        NETLINK_SOCK_DIAG), otherwise it is left alone and 0 returned: the path leads elsewhere.
 * Returns 0, or -EOPNOTSUPP for an abstract or unnamed Unix socket (no way to refuse connects
 * and keep the queue usable: see docs/baton.3) and for other socket kinds, -EINVAL for a TCP or
 * Unix socket that is not listening, -ENOTSOCK, or another negative errno.
 */
int listen_close_refuse_new(int fd);

/*
 * Undoes stage 1 on a TCP or UDP socket: takes off whatever socket filter it has, so that new
 * connections reach it again (a socket that outlives this process, kept by a service manager).
 * Returns 0, also when no filter was attached, or a negative errno.
 */
int listen_close_accept_new(int fd);

/*
 * Could listen_close_refuse_new(fd) refuse new connections, as this process is now? Tries the
 * same socket filter on a new, unbound socket of fd's family and type (never on fd itself,
 * which must keep taking connections). Returns 0; -EPERM where the kernel wants
 * CAP_NET_ADMIN for a socket filter (some kernels do for TCP); -EOPNOTSUPP for an abstract
 * or unnamed Unix socket and other kinds; or the negative errno that looking at fd failed
 * with. A Unix socket file is always 0: its removal is decided at the stop.
 */
int listen_close_probe(int fd);

/*
 * What still waits on the listener fd: *ret_queued is the accept-queue length (TCP: TCP_INFO's
 * tcpi_unacked; Unix: UNIX_DIAG_RQLEN) or, for UDP, 1 if a datagram is queued; *ret_half_open
 * the TCP handshakes in progress for its address and port (SYN_RECV request sockets from an
 * inet_diag dump: TCP_INFO does not count them), 0 for the other kinds. Returns 0 and fills both,
 * or a negative errno with neither written.
 */
int listen_close_pending(int fd, unsigned *ret_queued, unsigned *ret_half_open);
