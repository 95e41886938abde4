/* SPDX-License-Identifier: MIT */
/* drain.h - the two-stage close of a listener: refuse new connections, then watch the queue empty. */
#pragma once

#include "listener.h"

/*
 * Stage 1: stop new connections from reaching l without touching the ones already queued.
 * TCP: a classic BPF filter drops segments with SYN set and ACK clear, so new handshakes get
 * no answer while queued connections and handshakes in progress (their final ACK passes) stay.
 * UDP: a filter drops every new datagram; the queued ones stay readable. Unix path: the socket
 * file is removed, so new connect()s fail with ENOENT; the fd stays. Returns 0, or -EOPNOTSUPP
 * for an abstract Unix socket (there is no way to refuse connects on it and keep its queue),
 * or a negative errno from setsockopt()/unlink().
 */
int drain_refuse_new(struct listener *l);

/*
 * What is still waiting on l: connections in the accept queue (TCP, Unix stream), handshakes
 * in progress (TCP: SYN_RECV request sockets for its address, from NETLINK_SOCK_DIAG; the
 * accept-queue count of TCP_INFO does not include them) or 1 if a datagram is queued (UDP).
 * Returns 0 and fills both, or a negative errno.
 */
int drain_pending(const struct listener *l, unsigned *ret_queued, unsigned *ret_half_open);
