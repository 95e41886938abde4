/* SPDX-License-Identifier: MIT */
/* notify.h - batond's sd_notify datagram server: the NOTIFY_SOCKET workers report to. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define NOTIFY_MESSAGE_MAX 4096 /* bytes per datagram, as systemd accepts */
#define NOTIFY_STATUS_MAX  256	/* bytes of STATUS= text kept */
#define NOTIFY_ADDRESS_MAX 128	/* bytes of a NOTIFY_SOCKET value */

/* BATON_DRAIN=, which the preload shim adds to its READY=1 (docs/WRAPPING.md). */
#define NOTIFY_SHIM_NONE   0 /* absent, or another value */
#define NOTIFY_SHIM_ARMED  1 /* "shim": the shim drains this process on the drain signal */
#define NOTIFY_SHIM_SERVER 2 /* "server": the server had its own disposition for it */

struct notify_message {
	pid_t pid; /* sender, from SCM_CREDENTIALS: the kernel vouches for it */
	uid_t uid;
	bool ready, stopping, reloading, watchdog;
	bool has_status;
	char status[NOTIFY_STATUS_MAX];
	pid_t mainpid;	/* 0 if absent */
	int shim_drain; /* BATON_DRAIN= from the preload shim: NOTIFY_SHIM_* */
};

/*
 * Opens a datagram socket with SO_PASSCRED, CLOEXEC and non-blocking. With path, it is bound
 * there with mode 0600 from birth (only root and batond's uid may send: a stranger cannot fill
 * its queue); a socket file nobody answers on (left by a batond that died) is replaced, anything
 * else at path fails with -EADDRINUSE or -EEXIST. Without path (NULL), it is an autobound
 * abstract address: unique, nothing to clean up, but reachable by every process on the host and
 * not by clients that only connect to paths. Returns the fd and writes the NOTIFY_SOCKET value
 * (the path, or "@xxxxx") to ret_address, or a negative errno.
 */
int notify_open(const char *path, char ret_address[static NOTIFY_ADDRESS_MAX]);

/*
 * Parses the newline-separated assignments of one datagram. Unknown assignments are ignored, as
 * systemd does. Returns 0, or -EBADMSG for a malformed known one (MAINPID=abc).
 */
int notify_parse(const char *buf, size_t len, struct notify_message *ret);

/*
 * Receives one datagram: -EAGAIN when there is none, -EPROTO when it carries no credentials or
 * was truncated (any fds that came with it are closed), else 0 and *ret filled.
 */
int notify_receive(int fd, struct notify_message *ret);
