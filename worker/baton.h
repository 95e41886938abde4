/* SPDX-License-Identifier: MIT */
/* baton.h - libbaton: take listeners from batond or systemd, report readiness, drain on request. */
#ifndef BATON_H
#define BATON_H

/*
 * Plain C99, no compiler extensions, every name baton_ or BATON_ (STYLE.md rule 1): this header
 * is compiled by other people's programs with other people's flags. An include guard rather
 * than #pragma once for the same reason. docs/baton.3 is the manual.
 *
 * Conventions: functions return 0 (or a count) on success and a negative errno on failure;
 * ret_ parameters are written only on success. libbaton never logs, never exits, and never
 * installs a signal handler. A struct baton is not thread-safe: use one per process, from one
 * thread at a time (see baton_drain_fd() for what that thread does to its signal mask).
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct baton;

/* Flags of baton_open(). */
#define BATON_OPEN_KEEP_ENV   0x1 /* leave BATON_FD and LISTEN_FDS/PID/FDNAMES in the environment */
#define BATON_OPEN_NO_SIGNALS 0x2 /* the program handles its stop signals itself */

/* Where the listeners came from: baton_mode(). */
#define BATON_MODE_STANDALONE 0 /* neither: the program binds its own */
#define BATON_MODE_ENV	      1 /* LISTEN_FDS (batond --pass env, systemd socket activation) */
#define BATON_MODE_CHANNEL    2 /* BATON_FD: the channel to batond (batond --pass scm) */

#define BATON_NO_DEADLINE UINT64_MAX /* baton_drain_deadline(): none known */
#define BATON_TEXT_MAX	  1024	     /* bytes of a baton_status() text */

/*
 * Finds the listeners, whichever way they come, and returns a handle in *ret:
 *   1. BATON_FD=<n>: fd n is the channel to batond. Sends HELLO, receives the listeners with
 *      their fds (waiting at most 10 s), keeps the channel for READY, DRAIN, STATUS, DRAINED.
 *   2. LISTEN_FDS and LISTEN_PID (our pid), with LISTEN_FDNAMES: fds 3, 4, ... as systemd's
 *      sd_listen_fds(3) defines them.
 *   3. Neither: no listeners (baton_listener_count() is 0); the program binds its own.
 * Without a channel it also connects to $NOTIFY_SOCKET, if set, so that a program that changes
 * its user afterwards still reaches it.
 * The variables used are removed from the environment unless flags has BATON_OPEN_KEEP_ENV.
 * Every fd the handle holds is close-on-exec. flags: BATON_OPEN_* or 0.
 * Returns 0, or -EINVAL (bad flags or a malformed BATON_FD), -ENOTSOCK (BATON_FD is not a
 * SOCK_SEQPACKET Unix socket), -ETIMEDOUT (batond did not answer), -EPROTONOSUPPORT (batond
 * speaks another major protocol version), -EPROTO or -EBADMSG (batond broke the protocol),
 * -ECONNRESET (batond closed the channel), the errno of an ERROR batond sent, -ENOMEM, or
 * another -errno. On failure nothing is left open (the channel is closed and BATON_FD removed).
 */
int baton_open(struct baton **ret, int flags);

/*
 * Closes every fd the handle holds (listeners, channel, drain fd) and frees it. Returns NULL, so
 * that b = baton_close(b) is safe; b may be NULL. Signals blocked by baton_drain_fd() stay
 * blocked: unblocking them here would let a pending SIGTERM kill the process on the spot.
 */
struct baton *baton_close(struct baton *b);

/* BATON_MODE_STANDALONE, BATON_MODE_ENV or BATON_MODE_CHANNEL. */
int baton_mode(const struct baton *b);

/* How many listeners baton_open() found; 0 standalone. */
unsigned baton_listener_count(const struct baton *b);

/*
 * The fd of listener i (0 <= i < count), or -ERANGE. The handle owns it: do not close it (use
 * baton_close()). Its file status flags (O_NONBLOCK) are shared with every other process that
 * holds the same listener, batond included.
 */
int baton_listener_fd(const struct baton *b, unsigned i);

/*
 * The name of listener i ("web"; systemd's FileDescriptorName=, batond's NAME=ADDR, "unknown"
 * without LISTEN_FDNAMES), or NULL when i is out of range. Valid until baton_close().
 */
const char *baton_listener_name(const struct baton *b, unsigned i);

/*
 * The program serves: sends READY over the channel, or READY=1 to $NOTIFY_SOCKET (batond
 * --pass env, systemd Type=notify); without either it does nothing. Never blocks on
 * $NOTIFY_SOCKET: if the receiver's queue is full, READY=1 is kept and sent by the next
 * baton_process() or baton_status() call that finds room (the drain fd, if the program has
 * one, becomes readable when there is). Returns 0 or -errno.
 */
int baton_ready(struct baton *b);

/*
 * Reports progress: inflight connections accepted and not yet finished, and a one-line text
 * (at most BATON_TEXT_MAX bytes, no control characters; NULL for none). Over the channel:
 * STATUS, best effort: -EAGAIN when batond has not read the earlier ones, and nothing is sent.
 * Otherwise STATUS=<text> (or "<inflight> in flight" without text) to $NOTIFY_SOCKET, if set,
 * also best effort: -EAGAIN when the receiver's queue is full, and nothing is sent.
 * Call it on change, a few times a second at most. Returns 0, -EINVAL (bad text), -E2BIG (text
 * too long) or -errno.
 */
int baton_status(struct baton *b, unsigned inflight, const char *text);

/*
 * An fd for the program's poll/epoll loop: it becomes readable (POLLIN) when there is something
 * for baton_process() to read. Created by the first call and owned by the handle. It watches
 *   - the channel, if there is one (batond's DRAIN arrives there), and
 *   - unless BATON_OPEN_NO_SIGNALS: SIGTERM, SIGINT and SIGQUIT (or the signals set with
 *     baton_drain_signals()), taken through a signalfd. The first call BLOCKS those signals in
 *     the calling thread (so they are queued for the signalfd instead of killing the process):
 *     make it before creating threads, which inherit the mask, and unblock them in a child
 *     process before exec(), which keeps it too. No handler is installed.
 * Returns the fd, or -EOPNOTSUPP when there is nothing to watch (no channel, and no signals
 * taken: the program handles its own), or -errno.
 */
int baton_drain_fd(struct baton *b);

/*
 * Sets which signals baton_drain_fd() takes: signals[0..n_signals), each 1..64, or none with
 * n_signals 0. Only before the first baton_drain_fd(). The default is SIGTERM, SIGINT, SIGQUIT.
 * Returns 0, -EINVAL (a bad signal number, or SIGKILL/SIGSTOP) or -EBUSY (too late).
 */
int baton_drain_signals(struct baton *b, const int *signals, size_t n_signals);

/*
 * Channel mode only: asks batond for its listener set as it is now (REFRESH, protocol 1.1) and
 * adds the listeners this process does not have yet, by name, after the ones it has (their
 * indexes do not move). Blocks until the set arrived, at most 10 s; a DRAIN that comes
 * meanwhile is remembered as baton_process() would. Returns the number of listeners added
 * (0 or more), -EOPNOTSUPP without a channel or with a batond that speaks 1.0, or a negative
 * errno (the set the program had stays as it was).
 */
int baton_refresh(struct baton *b);

/*
 * Reads whatever is pending on the drain fd without blocking: a DRAIN message, a drain signal,
 * or the channel's end. Call it whenever the drain fd is readable. Returns 1 when draining, 0
 * when not, or a negative errno when the channel failed (-ECONNRESET: batond closed it; or the
 * errno of an ERROR it sent; -EPROTO, -EBADMSG): the channel is then closed, and since nobody
 * supervises the program any more, draining has begun as well. A signal or a DRAIN that
 * arrives while draining is taken and changes nothing but the deadline (DRAIN).
 * Without a channel, the first drain sends STOPPING=1 to $NOTIFY_SOCKET, if set.
 */
int baton_process(struct baton *b);

/* 1 once a drain has begun (DRAIN, a drain signal, the channel's end), else 0. */
int baton_draining(const struct baton *b);

/*
 * When the drain must be over: CLOCK_MONOTONIC microseconds, from DRAIN's timeout added to the
 * clock when it was read; BATON_NO_DEADLINE when not draining or when no deadline is known (a
 * signal carries none). The supervisor kills the program at its own deadline, which is at most
 * the message's transit time earlier: aim to be done a little before.
 */
uint64_t baton_drain_deadline(const struct baton *b);

/* The signal that began the drain (SIGTERM, ...), or 0 (a DRAIN message, or not draining). */
int baton_drain_signal(const struct baton *b);

/*
 * The drain is over: nothing is left in flight and the program is about to exit. Sends DRAINED
 * over the channel (waiting at most 1 s for room in it); without a channel, STOPPING=1 to
 * $NOTIFY_SOCKET if baton_process() has not sent it. Returns 0 or -errno.
 */
int baton_drained(struct baton *b);

/*
 * 1 when accept()'s error concerns one connection only, so the caller should accept again:
 * EINTR, ECONNABORTED, and the network errors Linux reports of a new connection on accept()
 * (EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETDOWN, ENETUNREACH,
 * EPERM from a firewall rule); 0 for everything else, EAGAIN included (the queue is
 * empty) and EMFILE, ENFILE, ENOBUFS, ENOMEM (retrying at once would spin). error is an errno
 * value, positive or negative.
 */
int baton_accept_error_is_transient(int error);

/*
 * The two-stage close of a listener the program owns alone (one it bound itself, or one
 * systemd passed that it means to stop for good), for any server, with or without batond. Not
 * for a listener batond hands out: batond holds it for life and closes it in two stages itself.
 * Closing a listener resets every connection still in its accept queue, and every handshake in
 * progress; these calls let those connections in first. The contract, in the program's loop:
 *   1. baton_listener_shutdown_begin(fd): no new connections reach fd from now on;
 *   2. keep accepting from fd as usual, and ask baton_listener_pending() from time to time
 *      (20 ms is fine: the kernel has no event for "queue empty"); when both counts are 0, or a
 *      deadline of the program's choosing has passed,
 *   3. close(fd): only what is still waiting then is reset.
 * baton_listener_shutdown() does stages 1 and 2, blocking, for a program without a loop of its
 * own at that point; the close stays the caller's.
 */

/*
 * Stage 1. TCP: a socket filter drops SYNs without ACK, so new clients get no answer (their
 * connect() times out after the kernel's SYN retries; no reset, no refusal) while queued
 * connections keep their data and handshakes in progress complete. It replaces any filter
 * attached to fd. UDP: every new datagram is dropped; queued ones stay readable. Unix path:
 * the socket file is removed if it is still fd's own (new connect()s fail with ENOENT).
 * Returns 0, -EOPNOTSUPP (an abstract Unix socket: no way to refuse new connects and keep the
 * queue; or another kind of socket), -EINVAL (not listening), -ENOTSOCK or -errno.
 */
int baton_listener_shutdown_begin(int fd);

/*
 * Stage 2's question: connections waiting in fd's accept queue (for UDP: 1 if a datagram is
 * queued) in *ret_queued, and TCP handshakes in progress for its address in *ret_half_open (0
 * for other kinds). Either pointer may be NULL. Returns 0 or -errno.
 */
int baton_listener_pending(int fd, unsigned *ret_queued, unsigned *ret_half_open);

/*
 * Stages 1 and 2, blocking, for a TCP or Unix stream listener: refuses new connections, then
 * accepts every queued connection and hands each to accept_cb(conn_fd, userdata), which owns
 * conn_fd from then on (it is close-on-exec and non-blocking) and returns 0, or a negative
 * errno to stop here with that error. Returns once nothing is queued or half-open, or when
 * timeout_usec has passed (BATON_NO_DEADLINE: no limit). With accept_cb NULL, other processes
 * sharing fd do the accepting and this only waits. fd is set non-blocking and NOT closed: close
 * it next (or baton_close() for a listener of the handle). *ret_left (may be NULL) is written on
 * 0 and on -ETIMEDOUT: connections still queued or half-open, which that close will reset.
 * Returns 0 (nothing left), -ETIMEDOUT, accept_cb's error, -EOPNOTSUPP for UDP, an error of
 * stage 1 or of accept() (-EMFILE, ...) or another -errno. An abstract Unix socket, which
 * cannot refuse, is drained as far as it goes.
 */
int baton_listener_shutdown(int fd, uint64_t timeout_usec,
			    int (*accept_cb)(int conn_fd, void *userdata), void *userdata,
			    unsigned *ret_left);

#ifdef __cplusplus
}
#endif

#endif /* BATON_H */
