/* SPDX-License-Identifier: MIT */
/* leftovers.h - batonctl drain-leftovers: the workers a dead batond left drain before SIGKILL. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define LEFTOVERS_MAX 4096 /* processes told to drain; any more are left to the manager */

/*
 * For ExecStopPost= of a systemd service: batond died (crash, watchdog) and left its workers,
 * which the manager would SIGKILL next (KillMode=mixed), requests in hand. Sends SIGTERM and
 * SIGCONT to every other process of the service's cgroup, then waits (pidfds, no polling)
 * until each has exited or timeout_usec has passed. Refuses (-EPERM) outside a systemd
 * service (no $INVOCATION_ID, or a cgroup that is not a .service's), where "every other
 * process of my cgroup" would be a user's session. Returns 0 and the counts of processes told
 * and of those still there at the end, or a negative errno; writes nothing.
 */
int leftovers_drain(uint64_t timeout_usec, unsigned *ret_told, unsigned *ret_left, char *ret_cgroup,
		    size_t cgroup_size);
