/* SPDX-License-Identifier: MIT */
/* notify.c - sd_notify protocol server: datagrams with sender credentials, parsed strictly. */
#include "notify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"

#define NOTIFY_MAX_FDS 16 /* fds a sender may attach (FDSTORE=1); we close them all */

/* Binds fd at path, 0600 from birth; a stale socket file (nobody answers) is replaced. */
static int bind_path(int fd, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;
	mode_t old;
	int r = 0;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sa, len) < 0) {
		_cleanup_close_ int probe = -1;
		struct stat st;

		r = -errno;
		if (r == -EADDRINUSE && lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode))
			r = -EEXIST; /* never ours to touch */
		else if (r == -EADDRINUSE)
			probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		/* A datagram connect() to a socket file with no socket behind it is refused. */
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, len) < 0 &&
		    errno == ECONNREFUSED && unlink(path) == 0)
			r = bind(fd, (struct sockaddr *)&sa, len) < 0 ? -errno : 0;
	}
	(void)umask(old);
	return r;
}

int notify_open(const char *path, char ret_address[static NOTIFY_ADDRESS_MAX])
{
	_cleanup_close_ int fd = -1;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len = sizeof(sa_family_t);
	size_t n;
	int one = 1, r;

	if (path && strlen(path) >= NOTIFY_ADDRESS_MAX)
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0)
		return -errno;
	if (path) {
		r = bind_path(fd, path);
		if (r < 0)
			return r;
		strcpy(ret_address, path);
		return TAKE_FD(fd);
	}
	/* Autobind: the kernel picks a unique abstract name, so two batonds never collide. */
	if (bind(fd, (struct sockaddr *)&sa, len) < 0)
		return -errno;
	len = sizeof(sa);
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return -errno;
	n = len - offsetof(struct sockaddr_un, sun_path);
	if (n < 2 || n >= NOTIFY_ADDRESS_MAX || sa.sun_path[0] != '\0')
		return -EADDRNOTAVAIL;
	ret_address[0] = '@';
	memcpy(ret_address + 1, sa.sun_path + 1, n - 1);
	ret_address[n] = '\0';
	return TAKE_FD(fd);
}

static bool take(const char *line, size_t len, const char *key, const char **ret, size_t *ret_len)
{
	size_t k = strlen(key);

	if (len < k || memcmp(line, key, k) != 0)
		return false;
	*ret = line + k;
	*ret_len = len - k;
	return true;
}

int notify_parse(const char *buf, size_t len, struct notify_message *ret)
{
	struct notify_message m = { 0 };
	size_t off = 0;

	while (off < len) {
		const char *line = buf + off;
		const char *nl = memchr(line, '\n', len - off);
		size_t n = nl ? (size_t)(nl - line) : len - off;
		const char *v;
		size_t vn;

		off += n + (nl ? 1 : 0);
		if (take(line, n, "READY=", &v, &vn)) {
			m.ready = vn == 1 && v[0] == '1';
		} else if (take(line, n, "STOPPING=", &v, &vn)) {
			m.stopping = vn == 1 && v[0] == '1';
		} else if (take(line, n, "RELOADING=", &v, &vn)) {
			m.reloading = vn == 1 && v[0] == '1';
		} else if (take(line, n, "WATCHDOG=", &v, &vn)) {
			m.watchdog = vn == 1 && v[0] == '1';
		} else if (take(line, n, "STATUS=", &v, &vn)) {
			size_t keep = vn < NOTIFY_STATUS_MAX - 1 ? vn : NOTIFY_STATUS_MAX - 1;

			memcpy(m.status, v, keep);
			m.status[keep] = '\0';
			/* Status text ends up in logs: no control bytes, no NULs. */
			for (size_t i = 0; i < keep; i++)
				if ((unsigned char)m.status[i] < ' ' || m.status[i] == 127)
					m.status[i] = ' ';
			m.has_status = true;
		} else if (take(line, n, "BATON_DRAIN=", &v, &vn)) {
			if (vn == 4 && memcmp(v, "shim", 4) == 0)
				m.shim_drain = NOTIFY_SHIM_ARMED;
			else if (vn == 6 && memcmp(v, "server", 6) == 0)
				m.shim_drain = NOTIFY_SHIM_SERVER;
		} else if (take(line, n, "MAINPID=", &v, &vn)) {
			long pid = 0;

			if (vn == 0 || vn > 10)
				return -EBADMSG;
			for (size_t i = 0; i < vn; i++) {
				if (v[i] < '0' || v[i] > '9')
					return -EBADMSG;
				pid = pid * 10 + (v[i] - '0');
			}
			if (pid <= 0 || pid > 0x7fffffff)
				return -EBADMSG;
			m.mainpid = (pid_t)pid;
		}
	}
	*ret = m;
	return 0;
}

static void close_passed_fds(struct msghdr *mh)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
			(void)close(fd);
		}
	}
}

int notify_receive(int fd, struct notify_message *ret)
{
	char buf[NOTIFY_MESSAGE_MAX];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(struct ucred)) +
			 CMSG_SPACE(sizeof(int) * NOTIFY_MAX_FDS)];
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = &control,
		.msg_controllen = sizeof(control),
	};
	const struct ucred *cred = NULL;
	struct ucred uc;
	ssize_t n;
	int r;

	do {
		n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;

	/* We never keep fds sent to us here; closing them first means no path can leak one. */
	close_passed_fds(&mh);
	if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || (size_t)n > sizeof(buf))
		return -EPROTO;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
		    c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
			memcpy(&uc, CMSG_DATA(c), sizeof(uc));
			cred = &uc;
		}
	}
	if (!cred || cred->pid <= 0)
		return -EPROTO;
	r = notify_parse(buf, (size_t)n, ret);
	if (r < 0)
		return r;
	ret->pid = cred->pid;
	ret->uid = cred->uid;
	return 0;
}
