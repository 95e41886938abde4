/* SPDX-License-Identifier: MIT */
/* fdpass.c - sendmsg()/recvmsg() with SCM_RIGHTS: each fd that arrives is kept or closed. */
#include "fdpass.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "proto.h"

#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04 /* Linux 6.5 (SO_PASSPIDFD): carries an fd; newer than this libc */
#endif

/* Room for the most fds the kernel passes in one message, as one SCM_RIGHTS cmsg. */
#define FDS_CONTROL_SIZE CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS_PER_MESSAGE)

union control {
	struct cmsghdr align;
	uint8_t buf[FDS_CONTROL_SIZE];
};

int proto_send(int fd, const void *buf, size_t len, const int *fds, size_t n_fds)
{
	union control control;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (len == 0 || !buf || (n_fds > 0 && !fds))
		return -EINVAL;
	if (len > PROTO_MAX_MESSAGE)
		return -EMSGSIZE;
	if (n_fds > PROTO_MAX_FDS_PER_MESSAGE)
		return -E2BIG;
	if (n_fds > 0) {
		struct cmsghdr *c;

		memset(&control, 0, sizeof(control));
		mh.msg_control = control.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		c = CMSG_FIRSTHDR(&mh);
		if (!c) /* cannot happen: msg_controllen holds a header; the analyzer cannot tell */
			return -EINVAL;
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
	}

	do {
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	/* SOCK_SEQPACKET queues a record whole or not at all; anything else is not our socket. */
	if ((size_t)n != len)
		return -EIO;
	return 0;
}

static void close_all(const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int saved = errno;

		(void)close(fds[i]);
		errno = saved;
	}
}

/*
 * Collects every fd the kernel installed for this message into got[], whatever else is wrong
 * with it, so the caller can close them all. Returns false if the control data holds anything
 * but well-formed SCM_RIGHTS.
 */
static bool collect_fds(struct msghdr *mh, int got[static PROTO_MAX_FDS_PER_MESSAGE], size_t *n_got)
{
	const uint8_t *control_end = (const uint8_t *)mh->msg_control + mh->msg_controllen;
	bool ok = true;

	*n_got = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		size_t payload, n;
		uint8_t *data = CMSG_DATA(c);

		/* The kernel writes these; check anyway that each stays inside what it wrote. */
		if (c->cmsg_len < CMSG_LEN(0) ||
		    c->cmsg_len > (size_t)(control_end - (const uint8_t *)c)) {
			ok = false;
			break;
		}
		payload = c->cmsg_len - CMSG_LEN(0);
		if (c->cmsg_level != SOL_SOCKET ||
		    (c->cmsg_type != SCM_RIGHTS && c->cmsg_type != SCM_PIDFD)) {
			ok = false;
			continue;
		}
		if (c->cmsg_type == SCM_PIDFD)
			ok = false; /* an fd we did not ask for: still ours to close */
		if (payload % sizeof(int) != 0)
			ok = false;
		n = payload / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int one;

			memcpy(&one, data + i * sizeof(int), sizeof(int));
			if (*n_got < PROTO_MAX_FDS_PER_MESSAGE) {
				got[(*n_got)++] = one;
			} else {
				/* The kernel never passes more; if it did, close it here. */
				close_all(&one, 1);
				ok = false;
			}
		}
	}
	return ok;
}

ssize_t proto_recv(int fd, void *buf, size_t size, int *fds, size_t max_fds, size_t *ret_n_fds)
{
	union control control;
	struct iovec iov = { .iov_base = buf, .iov_len = size };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control.buf,
		.msg_controllen = sizeof(control.buf),
	};
	int got[PROTO_MAX_FDS_PER_MESSAGE];
	size_t n_got;
	bool ok;
	ssize_t n;

	if (size == 0 || !buf || (max_fds > 0 && (!fds || !ret_n_fds)))
		return -EINVAL;

	/* Always room for the kernel's maximum, so that MSG_CTRUNC never hides an fd from us. */
	do {
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;

	ok = collect_fds(&mh, got, &n_got);
	if (mh.msg_flags & MSG_TRUNC) {
		close_all(got, n_got);
		return -EMSGSIZE;
	}
	if (!ok || (mh.msg_flags & MSG_CTRUNC) || n_got > max_fds) {
		close_all(got, n_got);
		return -EPROTO;
	}
	if (n == 0) {
		/* End of stream, or an empty record: either way there is nothing to keep. */
		close_all(got, n_got);
		if (ret_n_fds)
			*ret_n_fds = 0;
		return 0;
	}

	if (n_got > 0)
		memcpy(fds, got, sizeof(int) * n_got);
	if (ret_n_fds)
		*ret_n_fds = n_got;
	return n;
}

int proto_peer_cred(int fd, struct ucred *ret)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return -errno;
	if (len != sizeof(uc))
		return -EIO;
	*ret = uc;
	return 0;
}
