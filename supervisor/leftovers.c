/* SPDX-License-Identifier: MIT */
/* leftovers.c - batonctl drain-leftovers: the workers a dead batond left drain before SIGKILL. */
#include "leftovers.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"

#define CGROUP_PATH_MAX 4096

/* This process's cgroup v2 path ("0::" line of /proc/self/cgroup), e.g. /system.slice/x.service. */
static int own_cgroup(char *buf, size_t size)
{
	_cleanup_(fclosep) FILE *f = fopen("/proc/self/cgroup", "re");
	char line[CGROUP_PATH_MAX + 8];

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		size_t n = strcspn(line, "\n");

		line[n] = '\0';
		if (strncmp(line, "0::/", 4) != 0)
			continue;
		if (n - 3 >= size)
			return -ENAMETOOLONG;
		memcpy(buf, line + 3, n - 3 + 1);
		return 0;
	}
	return -ENOENT;
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void close_all(struct pollfd *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fds[i].fd >= 0)
			(void)close(fds[i].fd);
}

/* Opens a pidfd for every process listed in procs but this one, and signals it. */
static int tell_all(FILE *procs, struct pollfd *fds, size_t *ret_n)
{
	size_t n = 0;
	long pid;

	while (n < LEFTOVERS_MAX && fscanf(procs, "%ld", &pid) == 1) {
		int fd;

		if (pid <= 1 || pid == (long)getpid())
			continue;
		fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
		if (fd < 0)
			continue; /* gone already */
		/* A stopped process acts on SIGTERM only once continued, as systemd does too. */
		if (syscall(SYS_pidfd_send_signal, fd, SIGTERM, NULL, 0) < 0 ||
		    syscall(SYS_pidfd_send_signal, fd, SIGCONT, NULL, 0) < 0) {
			(void)close(fd);
			continue;
		}
		fds[n++] = (struct pollfd){ .fd = fd, .events = POLLIN };
	}
	*ret_n = n;
	return 0;
}

int leftovers_drain(uint64_t timeout_usec, unsigned *ret_told, unsigned *ret_left, char *ret_cgroup,
		    size_t cgroup_size)
{
	static const char *const roots[] = { "/sys/fs/cgroup/unified", "/sys/fs/cgroup" };
	_cleanup_free_ struct pollfd *fds = NULL;
	_cleanup_(fclosep) FILE *procs = NULL;
	char cg[CGROUP_PATH_MAX], path[CGROUP_PATH_MAX + 64];
	size_t n = 0, left;
	uint64_t deadline;
	int r;

	r = own_cgroup(cg, sizeof(cg));
	if (r < 0)
		return r;
	/* Only in a service: elsewhere "the other processes of my cgroup" are someone's session. */
	if (!getenv("INVOCATION_ID") || strlen(cg) < 8 || strcmp(cg + strlen(cg) - 8, ".service"))
		return -EPERM;
	/* On a hybrid host the v2 tree is mounted at .../unified. */
	for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]) && !procs; i++) {
		(void)snprintf(path, sizeof(path), "%s%s/cgroup.procs", roots[i], cg);
		procs = fopen(path, "re");
	}
	if (!procs)
		return -errno;
	fds = calloc(LEFTOVERS_MAX, sizeof(*fds));
	if (!fds)
		return -ENOMEM;
	r = tell_all(procs, fds, &n);
	if (r < 0)
		return r;
	deadline = now_usec() + timeout_usec;
	left = n;
	while (left > 0) {
		uint64_t now = now_usec();
		int got;

		if (now >= deadline)
			break;
		got = poll(fds, n, (int)((deadline - now + 999) / 1000));
		if (got < 0 && errno != EINTR) {
			r = -errno;
			close_all(fds, n);
			return r;
		}
		for (size_t i = 0; got > 0 && i < n; i++) {
			if (fds[i].fd < 0 || !fds[i].revents)
				continue;
			(void)close(fds[i].fd);
			fds[i].fd = -1; /* poll() ignores it from now on */
			left--;
		}
	}
	close_all(fds, n);
	*ret_told = (unsigned)n;
	*ret_left = (unsigned)left;
	(void)snprintf(ret_cgroup, cgroup_size, "%s", cg);
	return 0;
}
