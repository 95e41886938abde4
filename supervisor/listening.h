/* SPDX-License-Identifier: MIT */
/* listening.h - readiness without cooperation: is a process waiting for connections on our sockets? */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#define LISTENING_MAX_PROCS 4096 /* processes of one group looked at per check */

/*
 * Looks at every process of process group pgid (a worker and the children it forked) and
 * returns 1 if one of them waits for connections on a socket whose inode is in inodes: the
 * socket is in one of its epoll sets (/proc/PID/fdinfo lists the targets' inodes), or one of its
 * threads is blocked in accept()/accept4() on it, or in poll()/ppoll()/select()/pselect6() with
 * it among the fds (read from the process's memory). Returns 0 if none does, or a negative
 * errno. Needs the right to read the processes' /proc files: root, or the same uid.
 */
int listening_check(pid_t pgid, const ino_t *inodes, size_t n_inodes);
