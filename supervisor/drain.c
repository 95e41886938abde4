/* SPDX-License-Identifier: MIT */
/* drain.c - refuse new connections on a listener and count what it still holds. */
#include "drain.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"

#define DIAG_BUFFER_SIZE 32768 /* bytes per netlink read; a dump spans as many reads as needed */
#define DIAG_MAX_READS	 4096  /* reads per dump: bounds the work on a host with huge tables */

/*
 * On a TCP socket the filter runs on the TCP header (offset 0, IPv4 and IPv6 alike). Byte 13 is
 * the flags: keep everything except SYN without ACK, which only a new handshake sends.
 */
static const struct sock_filter refuse_syn[] = {
	BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),		 BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1), BPF_STMT(BPF_RET | BPF_K, 0),
	BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
};

static const struct sock_filter refuse_all[] = {
	BPF_STMT(BPF_RET | BPF_K, 0),
};

int drain_refuse_new(struct listener *l)
{
	struct sock_fprog prog;

	switch (l->kind) {
	case LISTENER_TCP:
		prog = (struct sock_fprog){ .len = ELEMENTSOF(refuse_syn),
					    .filter = (struct sock_filter *)refuse_syn };
		break;
	case LISTENER_UDP:
		prog = (struct sock_fprog){ .len = ELEMENTSOF(refuse_all),
					    .filter = (struct sock_filter *)refuse_all };
		break;
	case LISTENER_UNIX: {
		struct stat st;

		if (l->addr.un.sun_path[0] == '\0')
			return -EOPNOTSUPP;
		/* Only our own file: someone else's socket there is not ours to remove. */
		if (l->owns_path && stat(l->addr.un.sun_path, &st) == 0 &&
		    st.st_dev == l->path_dev && st.st_ino == l->path_ino &&
		    unlink(l->addr.un.sun_path) < 0 && errno != ENOENT)
			return -errno;
		l->owns_path = false;
		return 0;
	}
	default:
		return -EOPNOTSUPP;
	}
	if (setsockopt(l->fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0)
		return -errno;
	return 0;
}

/* One request, then every reply until NLMSG_DONE (or the single reply, for a non-dump). */
static int diag_query(const void *req, size_t req_len,
		      int (*each)(const struct nlmsghdr *h, void *userdata), void *userdata)
{
	_cleanup_close_ int fd = -1;
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	uint8_t buf[DIAG_BUFFER_SIZE] __attribute__((aligned(NLMSG_ALIGNTO)));

	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	if (sendto(fd, req, req_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -errno;
	for (unsigned reads = 0; reads < DIAG_MAX_READS; reads++) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		struct nlmsghdr *h;
		size_t left;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		left = (size_t)n;
		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
			int r;

			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
					return -EBADMSG;
				return e->error;
			}
			r = each(h, userdata);
			if (r <= 0)
				return r; /* 0: got what we asked for (single reply) */
		}
	}
	return -E2BIG;
}

struct syn_recv_count {
	const struct listener *l;
	unsigned n;
};

static int count_syn_recv(const struct nlmsghdr *h, void *userdata)
{
	struct syn_recv_count *c = userdata;
	const struct inet_diag_msg *m = NLMSG_DATA(h);
	const union listener_addr *a = &c->l->addr;

	if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
		return -EBADMSG;
	if (a->sa.sa_family == AF_INET) {
		if (m->id.idiag_sport != a->in.sin_port)
			return 1;
		if (a->in.sin_addr.s_addr != 0 &&
		    memcmp(m->id.idiag_src, &a->in.sin_addr, sizeof(a->in.sin_addr)) != 0)
			return 1;
	} else {
		if (m->id.idiag_sport != a->in6.sin6_port)
			return 1;
		if (!IN6_IS_ADDR_UNSPECIFIED(&a->in6.sin6_addr) &&
		    memcmp(m->id.idiag_src, &a->in6.sin6_addr, sizeof(a->in6.sin6_addr)) != 0)
			return 1;
	}
	c->n++;
	return 1;
}

static int tcp_half_open(const struct listener *l, unsigned *ret)
{
	struct {
		struct nlmsghdr h;
		struct inet_diag_req_v2 r;
	} req = {
		.h = {
			.nlmsg_len = sizeof(req),
			.nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
		},
		.r = {
			.sdiag_family = (uint8_t)l->addr.sa.sa_family,
			.sdiag_protocol = IPPROTO_TCP,
			/* The kernel adds the request sockets (NEW_SYN_RECV) to a SYN_RECV query. */
			.idiag_states = 1u << TCP_SYN_RECV,
		},
	};
	struct syn_recv_count c = { .l = l };
	int r;

	r = diag_query(&req, sizeof(req), count_syn_recv, &c);
	if (r < 0)
		return r;
	*ret = c.n;
	return 0;
}

struct unix_queue {
	uint32_t queued;
	bool found;
};

static int read_unix_rqlen(const struct nlmsghdr *h, void *userdata)
{
	struct unix_queue *q = userdata;
	const struct unix_diag_msg *m = NLMSG_DATA(h);
	size_t left;
	const struct rtattr *a;

	if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
		return -EBADMSG;
	left = h->nlmsg_len - NLMSG_LENGTH(sizeof(*m));
	for (a = (const struct rtattr *)(m + 1); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
		struct unix_diag_rqlen rq;

		if (a->rta_type != UNIX_DIAG_RQLEN || RTA_PAYLOAD(a) < (int)sizeof(rq))
			continue;
		memcpy(&rq, RTA_DATA(a), sizeof(rq));
		/* For a listener, udiag_rqueue is the accept-queue length. */
		q->queued = rq.udiag_rqueue;
		q->found = true;
	}
	return 0;
}

static int unix_queued(const struct listener *l, unsigned *ret)
{
	struct stat st;
	struct {
		struct nlmsghdr h;
		struct unix_diag_req r;
	} req = {
		.h = {
			.nlmsg_len = sizeof(req),
			.nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST,
		},
		.r = {
			.sdiag_family = AF_UNIX,
			.udiag_states = 1u << TCP_LISTEN,
			.udiag_show = UDIAG_SHOW_RQLEN,
			.udiag_cookie = { INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE },
		},
	};
	struct unix_queue q = { 0 };
	int r;

	if (fstat(l->fd, &st) < 0)
		return -errno;
	req.r.udiag_ino = (uint32_t)st.st_ino;
	r = diag_query(&req, sizeof(req), read_unix_rqlen, &q);
	if (r < 0)
		return r;
	if (!q.found)
		return -ENOENT;
	*ret = q.queued;
	return 0;
}

int drain_pending(const struct listener *l, unsigned *ret_queued, unsigned *ret_half_open)
{
	unsigned queued = 0, half_open = 0;
	int r;

	switch (l->kind) {
	case LISTENER_TCP: {
		struct tcp_info ti;
		socklen_t len = sizeof(ti);

		/* On a listener, tcpi_unacked is the accept-queue length (tcpi_sacked the backlog). */
		if (getsockopt(l->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
			return -errno;
		queued = ti.tcpi_unacked;
		r = tcp_half_open(l, &half_open);
		if (r < 0)
			return r;
		break;
	}
	case LISTENER_UNIX:
		r = unix_queued(l, &queued);
		if (r < 0)
			return r;
		break;
	case LISTENER_UDP: {
		int bytes = 0;

		/* SIOCINQ on UDP: the size of the next datagram, 0 when none is queued. */
		if (ioctl(l->fd, SIOCINQ, &bytes) < 0)
			return -errno;
		queued = bytes > 0;
		break;
	}
	}
	*ret_queued = queued;
	*ret_half_open = half_open;
	return 0;
}
