/* SPDX-License-Identifier: MIT */
/* channel.h - batond's side of one proto/ conversation: a worker's channel, or one fetch. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#include "listener.h"

#define CHANNEL_MAX_QUEUED 8   /* messages (DRAIN) waiting for the peer to read, then cut off */
#define CHANNEL_MAX_READS  16  /* messages read per wakeup, so one peer cannot starve others */
#define CHANNEL_LABEL_MAX  192 /* bytes of the label that names the peer in log lines */
/* Bytes of one received message: the longest a peer sends in 1.0 is STATUS or ERROR, 1,042. */
#define CHANNEL_RECV_MAX 2048

struct channel;

/*
 * What the peer said. Every member may be NULL (then the message is only accepted). Callbacks
 * run from the event loop, never from inside a channel_*() call, and any of them may call
 * channel_free() on the channel it is about.
 */
struct channel_ops {
	/* READY: the worker has its listeners and accepts. */
	void (*ready)(void *userdata);
	/* STATUS: connections in flight and one line of text (valid during the call only). */
	void (*status)(void *userdata, uint32_t inflight, const char *text);
	/* DRAINED: nothing left in flight, the worker is about to exit. */
	void (*drained)(void *userdata);
	/*
	 * The conversation is over and the socket closed; nothing else is called afterwards, and
	 * channel_drain() returns -ENOTCONN. error is 0 when the peer closed (or, for a fetch, when
	 * every listener was sent), or a negative errno when the channel cut the peer off: a
	 * protocol error (-EBADMSG, -EPROTO, -EPROTONOSUPPORT, -EMSGSIZE), the peer's own ERROR
	 * (minus its code), -ENOBUFS (it did not read: CHANNEL_MAX_QUEUED), or a failed send. The
	 * channel has already logged that reason in one line; the caller need not log it again.
	 * The caller still frees the channel (from inside this callback is fine).
	 */
	void (*closed)(void *userdata, int error);
};

/*
 * Creates the socketpair of one worker's channel (--pass scm): AF_UNIX SOCK_SEQPACKET, both ends
 * CLOEXEC from birth. batond's end is non-blocking; the worker's end is blocking, as a program
 * expects of an fd it inherits (spawn clears its CLOEXEC when it dup2()s it into place).
 * Returns 0 with both fds owned by the caller, or a negative errno with nothing open.
 *
 * The caller closes the worker's end as soon as the worker is spawned (or failed to spawn):
 * batond must not hold it, or the channel would never see the worker go away.
 */
int channel_socketpair(int *ret_batond_end, int *ret_worker_end);

/*
 * Serves a worker's channel on fd, batond's end of channel_socketpair(). Consumes fd, also on
 * failure. pid is the worker's (spawn_worker() has returned it: spawning is synchronous, so
 * create the channel right after and nothing the worker sends is read before); label names the
 * worker in log lines, e.g. "generation 3 worker 1 (pid 1234)", and is copied (cut at
 * CHANNEL_LABEL_MAX - 1 bytes).
 *
 * Who the peer is: a socketpair's SO_PEERCRED names the process that created the pair, i.e.
 * batond itself, never the worker, so credentials cannot identify the worker here. The channel
 * relies on construction instead: the worker's end exists only in that worker (CLOEXEC
 * everywhere else). channel_new() checks that fd is a SOCK_SEQPACKET socket whose SO_PEERCRED
 * pid is batond's own (our socketpair) or pid (a connection the worker made), else -EPERM. The
 * pid in HELLO is informational (another pid namespace, or a child of the worker that speaks
 * for it): a different one is logged at debug level, not refused.
 *
 * listeners[0..n_listeners) are sent in LISTENERS after HELLO, with their fds attached, name
 * and spec (canonical address) as they are. The array and its fds are not copied: they must
 * stay valid and open for the channel's whole life (batond holds its listeners for life).
 *
 * The conversation: HELLO (role WORKER) first, answered with the LISTENERS set (several
 * messages past 253 listeners, or past 64 KiB; a peer that does not read is resumed when its
 * socket is writable again); then READY, STATUS and DRAINED go to ops, in any order and as often
 * as the worker likes (STATUS is also accepted before READY, e.g. "loading"). Refused, with
 * ERROR to the peer and a close: any message before HELLO (EPROTO), another major version
 * (EPROTONOSUPPORT), a malformed message (EBADMSG), a second HELLO, role FETCH, LISTENERS or
 * DRAIN sent to batond (EPROTO), and any fd attached by the peer (closed at once; EPROTO).
 *
 * Returns 0 and *ret, or -EINVAL (a listener that is not bound, a name or spec the protocol
 * cannot carry), -E2BIG (over PROTO_MAX_LISTENERS), -EPROTOTYPE, -EPERM or another -errno.
 */
int channel_new(sd_event *e, int fd, pid_t pid, const char *label, const struct listener *listeners,
		size_t n_listeners, const struct channel_ops *ops, void *userdata,
		struct channel **ret);

/*
 * As channel_new(), for one client of the --fd-socket (fdsock.c): the peer's credentials were
 * checked by the caller. Expects HELLO with role FETCH, sends the whole LISTENERS set, closes,
 * and reports ops->closed(0). Role WORKER or anything else is refused with ERROR(EPROTO).
 * Only ops->closed is called.
 */
int channel_new_fetch(sd_event *e, int fd, const char *label, const struct listener *listeners,
		      size_t n_listeners, const struct channel_ops *ops, void *userdata,
		      struct channel **ret);

/*
 * Tells the worker to drain: sends DRAIN with timeout_usec (relative to its receipt;
 * PROTO_DRAIN_NO_TIMEOUT for none). The message may wait behind the LISTENERS set or in the
 * bounded outbox until the worker reads. Returns 0 once sent or queued; -ENOTCONN if the worker
 * never said HELLO or is gone (then use the drain signal: the worker cannot hear DRAIN);
 * -ENOBUFS if CHANNEL_MAX_QUEUED messages are already waiting (the channel then cuts the worker
 * off and reports ops->closed(-ENOBUFS) from the event loop); another -errno for a failed send
 * (also cut off and reported). On any failure, fall back to the drain signal. Does not log
 * -ENOTCONN; logs the others.
 */
/*
 * Upgrade: takes over, in a new batond image, a worker's channel whose conversation an earlier
 * image began (HELLO answered, every listener sent). Ownership as channel_new().
 */
int channel_adopt(sd_event *e, int fd, pid_t pid, const char *label,
		  const struct listener *listeners, size_t n_listeners,
		  const struct channel_ops *ops, void *userdata, struct channel **ret);

/*
 * The listener set changed (batonctl listen or retire): what a REFRESH sends from now on.
 * listeners must stay valid as for channel_new().
 */
void channel_set_listeners(struct channel *c, const struct listener *listeners, size_t n_listeners);

/* True once HELLO is answered, the listener set sent, and nothing is waiting to be sent. */
bool channel_is_settled(const struct channel *c);

/* The socket, for the upgrade handoff; still owned by the channel. */
int channel_fd(const struct channel *c);

int channel_drain(struct channel *c, uint64_t timeout_usec);

/* Closes the socket and the channel's event sources, and frees it. Accepts NULL; returns NULL. */
struct channel *channel_free(struct channel *c);
