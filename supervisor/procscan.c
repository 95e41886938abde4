/* SPDX-License-Identifier: MIT */
/* procscan.c - scan /proc: does a worker (or a descendant) wait in accept on our listeners? */
#include "procscan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cleanup.h"

#define LISTENING_MAX_POLLFDS 4096 /* pollfds read from a process blocked in poll() */

static bool inode_wanted(ino_t ino, const ino_t *inodes, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (inodes[i] == ino)
			return true;
	return false;
}

/* The socket inode behind fd of process pid, or 0. */
static ino_t fd_inode(pid_t pid, long fd)
{
	char path[64], link[64];
	ssize_t n;
	unsigned long ino;

	(void)snprintf(path, sizeof(path), "/proc/%d/fd/%ld", (int)pid, fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return 0;
	link[n] = '\0';
	if (sscanf(link, "socket:[%lu]", &ino) != 1)
		return 0;
	return (ino_t)ino;
}

/* An epoll fd's fdinfo has one "tfd: N events: E data: D pos:P ino:I sdev:S" line per target. */
static bool epoll_watches(pid_t pid, const char *fd, const ino_t *inodes, size_t n)
{
	_cleanup_(fclosep) FILE *f = NULL;
	char path[300], line[256];

	(void)snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", (int)pid, fd);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		const char *p = strstr(line, " ino:");
		unsigned long ino;

		if (strncmp(line, "tfd:", 4) != 0 || !p)
			continue;
		if (sscanf(p, " ino:%lx", &ino) == 1 && inode_wanted((ino_t)ino, inodes, n))
			return true;
	}
	return false;
}

static bool read_remote(pid_t pid, uintptr_t addr, void *buf, size_t len)
{
	struct iovec local = { .iov_base = buf, .iov_len = len };
	struct iovec remote = { .iov_base = (void *)addr, .iov_len = len };

	return process_vm_readv(pid, &local, 1, &remote, 1, 0) == (ssize_t)len;
}

/* A thread blocked in accept/poll/select: /proc/PID/task/TID/syscall names the call and args. */
static bool thread_waits(pid_t pid, pid_t tid, const ino_t *inodes, size_t n)
{
	_cleanup_(fclosep) FILE *f = NULL;
	char path[64];
	long nr;
	unsigned long a[6];

	(void)snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)pid, (int)tid);
	f = fopen(path, "re");
	if (!f || fscanf(f, "%ld %lx %lx %lx %lx %lx %lx", &nr, &a[0], &a[1], &a[2], &a[3], &a[4],
			 &a[5]) != 7)
		return false;
	switch (nr) {
#ifdef SYS_accept
	case SYS_accept:
#endif
	case SYS_accept4:
		return inode_wanted(fd_inode(pid, (long)a[0]), inodes, n);
#ifdef SYS_poll
	case SYS_poll:
#endif
	case SYS_ppoll: {
		size_t count = a[1] < LISTENING_MAX_POLLFDS ? a[1] : LISTENING_MAX_POLLFDS;
		_cleanup_free_ struct pollfd *fds = calloc(count ? count : 1, sizeof(*fds));

		if (!fds || !read_remote(pid, a[0], fds, count * sizeof(*fds)))
			return false;
		for (size_t i = 0; i < count; i++)
			if (fds[i].fd >= 0 && (fds[i].events & POLLIN) &&
			    inode_wanted(fd_inode(pid, fds[i].fd), inodes, n))
				return true;
		return false;
	}
#ifdef SYS_select
	case SYS_select:
#endif
	case SYS_pselect6: {
		fd_set set;
		long nfds = (long)a[0] < FD_SETSIZE ? (long)a[0] : FD_SETSIZE;

		if (a[1] == 0 || nfds <= 0 || !read_remote(pid, a[1], &set, sizeof(set)))
			return false;
		for (long fd = 0; fd < nfds; fd++)
			if (FD_ISSET(fd, &set) && inode_wanted(fd_inode(pid, fd), inodes, n))
				return true;
		return false;
	}
	default:
		return false;
	}
}

static bool process_waits(pid_t pid, const ino_t *inodes, size_t n)
{
	_cleanup_(closedirp) DIR *fds = NULL;
	_cleanup_(closedirp) DIR *tasks = NULL;
	char path[64];
	struct dirent *de;

	(void)snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	fds = opendir(path);
	while (fds && (de = readdir(fds))) {
		char link[64], p[300];
		ssize_t len;

		if (de->d_name[0] == '.')
			continue;
		(void)snprintf(p, sizeof(p), "/proc/%d/fd/%s", (int)pid, de->d_name);
		len = readlink(p, link, sizeof(link) - 1);
		if (len <= 0)
			continue;
		link[len] = '\0';
		if (strcmp(link, "anon_inode:[eventpoll]") == 0 &&
		    epoll_watches(pid, de->d_name, inodes, n))
			return true;
	}
	(void)snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	tasks = opendir(path);
	while (tasks && (de = readdir(tasks))) {
		if (de->d_name[0] == '.')
			continue;
		if (thread_waits(pid, (pid_t)atoi(de->d_name), inodes, n))
			return true;
	}
	return false;
}

/* One process as /proc/PID/stat tells it. */
struct proc_entry {
	pid_t pid, ppid, pgrp;
	bool mine; /* the worker, a process of its group, or a descendant of either */
};

static int by_pid(const void *a, const void *b)
{
	pid_t x = ((const struct proc_entry *)a)->pid, y = ((const struct proc_entry *)b)->pid;

	return (x > y) - (x < y);
}

/* pid, ppid and pgrp of pid; false if it is gone. */
static bool proc_stat(pid_t pid, struct proc_entry *ret)
{
	_cleanup_(fclosep) FILE *f = NULL;
	char path[64], stat[512];
	const char *p;
	int ppid, pgrp;

	(void)snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f || !fgets(stat, sizeof(stat), f))
		return false;
	/* After the command name in parentheses: state, ppid, pgrp. */
	p = strrchr(stat, ')');
	if (!p || sscanf(p + 1, " %*c %d %d", &ppid, &pgrp) != 2)
		return false;
	*ret = (struct proc_entry){ .pid = pid, .ppid = ppid, .pgrp = pgrp };
	return true;
}

static void proc_entries_freep(struct proc_entry **p)
{
	free(*p);
}

int procscan_tree(pid_t pid, pid_t pgid, pid_t *ret_pids, size_t max, size_t *ret_n)
{
	_cleanup_(closedirp) DIR *proc = opendir("/proc");
	_cleanup_(proc_entries_freep) struct proc_entry *all = NULL;
	size_t n = 0, cap = 0, found = 0;
	struct dirent *de;
	bool grew;

	if (!proc)
		return -errno;
	/* One pass over /proc: a process of another group is ours only through its parents. */
	while ((de = readdir(proc)) && n < PROCSCAN_MAX_SCAN) {
		pid_t p = (pid_t)atoi(de->d_name);

		if (p <= 0)
			continue;
		if (n == cap) {
			size_t c = cap ? cap * 2 : 256;
			struct proc_entry *a = reallocarray(all, c, sizeof(*a));

			if (!a)
				return -ENOMEM;
			all = a;
			cap = c;
		}
		if (!proc_stat(p, &all[n]))
			continue;
		all[n].mine = p == pid || (pgid > 0 && all[n].pgrp == pgid);
		n++;
	}
	if (n > 0) /* all is NULL when /proc listed no process: qsort() wants a real array */
		qsort(all, n, sizeof(*all), by_pid);
	/* Descendants, a generation per round: a child that called setsid() is still the worker's. */
	do {
		grew = false;
		for (size_t i = 0; i < n; i++) {
			struct proc_entry key = { .pid = all[i].ppid };
			const struct proc_entry *parent;

			if (all[i].mine)
				continue;
			parent = bsearch(&key, all, n, sizeof(*all), by_pid);
			if (parent && parent->mine)
				all[i].mine = grew = true;
		}
	} while (grew);

	for (size_t i = 0; i < n && found < max; i++)
		if (all[i].mine)
			ret_pids[found++] = all[i].pid;
	*ret_n = found;
	return 0;
}

int procscan_waits_on(pid_t pid, pid_t pgid, const ino_t *inodes, size_t n_inodes)
{
	_cleanup_free_ pid_t *pids = calloc(PROCSCAN_MAX_PROCS, sizeof(pid_t));
	size_t n = 0;
	int r;

	if (!pids)
		return -ENOMEM;
	r = procscan_tree(pid, pgid, pids, PROCSCAN_MAX_PROCS, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (process_waits(pids[i], inodes, n_inodes))
			return 1;
	return 0;
}

int procscan_stat(pid_t pid, struct procscan_stat *ret)
{
	_cleanup_(fclosep) FILE *f = NULL;
	char path[64], stat[1024];
	const char *p;
	unsigned long long start;
	int ppid, pgrp;

	if (pid <= 0)
		return -EINVAL;
	(void)snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	if (!fgets(stat, sizeof(stat), f))
		return -ESRCH;
	/*
	 * After the command name in parentheses (which may hold anything, so the last ')'):
	 * state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt, majflt, cmajflt,
	 * utime, stime, cutime, cstime, priority, nice, num_threads, itrealvalue, starttime.
	 */
	p = strrchr(stat, ')');
	if (!p || sscanf(p + 1,
			 " %*c %d %d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d "
			 "%*d %llu",
			 &ppid, &pgrp, &start) != 3)
		return -EBADMSG;
	*ret = (struct procscan_stat){ .ppid = ppid, .pgrp = pgrp, .start_time = start };
	return 0;
}

int procscan_is_descendant(pid_t pid, pid_t ancestor)
{
	pid_t p = pid;

	for (int depth = 0; depth < PROCSCAN_MAX_DEPTH; depth++) {
		struct procscan_stat st;
		int r = procscan_stat(p, &st);

		if (r < 0)
			return depth == 0 ? r : 0; /* an ancestor gone meanwhile: not found */
		if (st.ppid == ancestor)
			return 1;
		if (st.ppid <= 1)
			return 0;
		p = st.ppid;
	}
	return 0;
}

int procscan_signal_masks(pid_t pid, struct drain_masks *ret)
{
	_cleanup_close_ int fd = -1;
	char path[64];
	_cleanup_free_ char *text = malloc(PROCSCAN_STATUS_MAX);
	size_t len = 0;

	if (!text)
		return -ENOMEM;
	if (pid <= 0)
		return -EINVAL;
	(void)snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	while (len < PROCSCAN_STATUS_MAX) {
		ssize_t n = read(fd, text + len, PROCSCAN_STATUS_MAX - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == ESRCH ? -ESRCH : -errno;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	return drain_plan_parse_status(text, len, ret);
}
