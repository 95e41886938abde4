/* SPDX-License-Identifier: MIT */
/* procscan.h - scan /proc for a worker waiting on our listeners, and for its process tree. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "drain_plan.h"

#define PROCSCAN_MAX_PROCS 4096	     /* processes of one worker looked at per check */
#define PROCSCAN_MAX_SCAN  (1 << 20) /* entries of /proc read per check */

/*
 * Looks at worker pid, every process of its process group pgid, and every descendant of
 * these (a child that called setsid() included), and returns 1 if one of them waits for
 * connections on a socket whose inode is in inodes: the socket is in one of its epoll sets
 * (/proc/PID/fdinfo lists the targets' inodes), or one of its threads is blocked in
 * accept()/accept4() on it, or in poll()/ppoll()/select()/pselect6() with it among the fds
 * (read from the process's memory). Returns 0 if none does, or a negative errno. Needs the
 * right to read the processes' /proc files: root, or the same uid.
 */
int procscan_waits_on(pid_t pid, pid_t pgid, const ino_t *inodes, size_t n_inodes);

/*
 * The worker's processes as procscan_waits_on() finds them: pid, the members of process group
 * pgid (if > 0), and their descendants, at most max of them, in pid order, into ret_pids.
 * Returns 0 and *ret_n, or a negative errno.
 */
int procscan_tree(pid_t pid, pid_t pgid, pid_t *ret_pids, size_t max, size_t *ret_n);

#define PROCSCAN_MAX_DEPTH 64 /* parent links followed looking for an ancestor */

/* One process as /proc/PID/stat shows it. */
struct procscan_stat {
	pid_t ppid, pgrp;
	uint64_t start_time; /* clock ticks after boot: with the pid, names one process for good */
};

/* Reads pid's parent, process group and start time. Returns 0, -ESRCH (gone) or -errno. */
int procscan_stat(pid_t pid, struct procscan_stat *ret);

/*
 * Returns 1 if ancestor is pid's parent, grandparent, ... (at most PROCSCAN_MAX_DEPTH links),
 * 0 if not (pid itself is not its own descendant), or a negative errno (-ESRCH: pid is gone).
 */
int procscan_is_descendant(pid_t pid, pid_t ancestor);

#define PROCSCAN_STATUS_MAX 8192 /* bytes of /proc/PID/status read (about 1.5 KiB today) */

/* pid's blocked, ignored and caught signals (/proc/PID/status). Returns 0, -ESRCH or -errno. */
int procscan_signal_masks(pid_t pid, struct drain_masks *ret);
