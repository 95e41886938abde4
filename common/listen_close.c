/* SPDX-License-Identifier: MIT */
/* listen_close.c - refuse new connections on a listener and count what it still holds, from the fd. */
#include "listen_close.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"

#define DIAG_BUFFER_SIZE 32768 /* bytes per netlink read; a dump spans as many reads as needed */
#define DIAG_MAX_READS	 4096  /* reads per dump: bounds the work on a host with huge tables */
#define DIAG_MAX_QUERIES 2     /* inet_diag dumps per count: a dual-stack listener needs both */

/* The kernel's internal dev_t, as NETLINK_SOCK_DIAG reports it: 12 bits major, 20 bits minor. */
#define KERNEL_MINOR_BITS 20
#define KERNEL_MINOR_MASK ((UINT32_C(1) << KERNEL_MINOR_BITS) - 1)

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

enum sock_kind {
	SOCK_KIND_TCP,
	SOCK_KIND_UDP,
	SOCK_KIND_UNIX, /* a listening stream or seqpacket socket */
};

union sock_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	struct sockaddr_un un;
	struct sockaddr_storage storage;
};

struct sock_info {
	enum sock_kind kind;
	union sock_addr addr;
	socklen_t addr_len;
};

static int get_int_option(int fd, int level, int name, int *ret)
{
	int v = 0;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, level, name, &v, &len) < 0)
		return -errno;
	if (len != sizeof(v))
		return -EIO;
	*ret = v;
	return 0;
}

/* What kind of listener fd is, and its address. -ENOTSOCK, -EOPNOTSUPP, -EINVAL or -errno. */
static int sock_identify(int fd, struct sock_info *ret)
{
	struct sock_info si = { .addr_len = sizeof(si.addr) };
	int domain = 0, type = 0, protocol = 0, listening = 0;
	int r;

	r = get_int_option(fd, SOL_SOCKET, SO_DOMAIN, &domain);
	if (r < 0)
		return r;
	r = get_int_option(fd, SOL_SOCKET, SO_TYPE, &type);
	if (r < 0)
		return r;
	r = get_int_option(fd, SOL_SOCKET, SO_PROTOCOL, &protocol);
	if (r < 0)
		return r;
	if (type != SOCK_DGRAM) {
		r = get_int_option(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening);
		if (r < 0)
			return r;
	}

	switch (domain) {
	case AF_INET:
	case AF_INET6:
		if (type == SOCK_STREAM && protocol == IPPROTO_TCP)
			si.kind = SOCK_KIND_TCP;
		else if (type == SOCK_DGRAM && protocol == IPPROTO_UDP)
			si.kind = SOCK_KIND_UDP;
		else
			return -EOPNOTSUPP;
		break;
	case AF_UNIX:
		if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
			return -EOPNOTSUPP;
		si.kind = SOCK_KIND_UNIX;
		break;
	default:
		return -EOPNOTSUPP;
	}
	if (si.kind != SOCK_KIND_UDP && !listening)
		return -EINVAL;
	if (getsockname(fd, &si.addr.sa, &si.addr_len) < 0)
		return -errno;
	if (si.addr_len > sizeof(si.addr))
		return -EIO; /* cannot happen: sockaddr_storage holds every family */
	*ret = si;
	return 0;
}

/* --- NETLINK_SOCK_DIAG --- */

/*
 * Sends one request, then hands every reply message to each() until NLMSG_DONE, or until each()
 * returns 0 (it got the single reply of a non-dump request). each() returns 1 to go on, 0 to
 * stop, or a negative errno. Returns 0 or a negative errno.
 */
static int diag_query(const void *req, size_t req_len,
		      int (*each)(const struct nlmsghdr *h, void *userdata), void *userdata)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ uint8_t *buf = NULL;
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };

	/* On the heap: this runs in other people's threads too, whose stacks may be small. */
	buf = malloc(DIAG_BUFFER_SIZE);
	if (!buf)
		return -ENOMEM;
	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	if (sendto(fd, req, req_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -errno;
	for (unsigned reads = 0; reads < DIAG_MAX_READS; reads++) {
		struct iovec iov = { .iov_base = buf, .iov_len = DIAG_BUFFER_SIZE };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n = recvmsg(fd, &mh, 0);
		struct nlmsghdr *h;
		size_t left;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		/* A truncated message would lose sockets from the count: refuse to guess. */
		if (mh.msg_flags & MSG_TRUNC)
			return -EMSGSIZE;
		left = (size_t)n;
		/* malloc() memory is aligned for any type, so for struct nlmsghdr too. */
		for (h = (struct nlmsghdr *)(void *)buf; NLMSG_OK(h, left);
		     h = NLMSG_NEXT(h, left)) {
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
				return r;
		}
	}
	return -E2BIG;
}

/* Which request sockets belong to the listener: family, local port and (unless any) address. */
struct syn_recv_match {
	uint8_t family;
	uint16_t port; /* network byte order, as inet_diag reports it */
	bool any;      /* wildcard address: the port alone decides */
	uint8_t addr[16];
	unsigned n;
};

static int count_syn_recv(const struct nlmsghdr *h, void *userdata)
{
	struct syn_recv_match *c = userdata;
	const struct inet_diag_msg *m = NLMSG_DATA(h);
	size_t addr_len = c->family == AF_INET ? 4 : 16;

	if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
		return -EBADMSG;
	if (m->idiag_family != c->family || m->id.idiag_sport != c->port)
		return 1;
	if (!c->any && memcmp(m->id.idiag_src, c->addr, addr_len) != 0)
		return 1;
	c->n++;
	return 1;
}

static int syn_recv_dump(struct syn_recv_match *c)
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
			.sdiag_family = c->family,
			.sdiag_protocol = IPPROTO_TCP,
			/* The kernel adds the request sockets (NEW_SYN_RECV) to a SYN_RECV query. */
			.idiag_states = 1u << TCP_SYN_RECV,
		},
	};

	return diag_query(&req, sizeof(req), count_syn_recv, c);
}

/*
 * Handshakes in progress for the listener. A v4 SYN to a dual-stack IPv6 listener makes an
 * AF_INET request socket, so such a listener needs a second, IPv4 dump.
 */
static int tcp_half_open(int fd, const struct sock_info *si, unsigned *ret)
{
	struct syn_recv_match q[DIAG_MAX_QUERIES];
	size_t n_q = 0;
	unsigned total = 0;
	int r;

	if (si->addr.sa.sa_family == AF_INET) {
		q[n_q] = (struct syn_recv_match){ .family = AF_INET, .port = si->addr.in.sin_port };
		q[n_q].any = si->addr.in.sin_addr.s_addr == htonl(INADDR_ANY);
		memcpy(q[n_q].addr, &si->addr.in.sin_addr, 4);
		n_q++;
	} else {
		const struct in6_addr *a = &si->addr.in6.sin6_addr;
		int v6only = 1;

		if (IN6_IS_ADDR_V4MAPPED(a)) {
			/* Bound to ::ffff:a.b.c.d: only IPv4 clients can reach it. */
			q[n_q] = (struct syn_recv_match){ .family = AF_INET,
							  .port = si->addr.in6.sin6_port };
			memcpy(q[n_q].addr, a->s6_addr + 12, 4);
			n_q++;
		} else {
			q[n_q] = (struct syn_recv_match){ .family = AF_INET6,
							  .port = si->addr.in6.sin6_port };
			q[n_q].any = IN6_IS_ADDR_UNSPECIFIED(a);
			memcpy(q[n_q].addr, a, 16);
			n_q++;
			if (q[0].any) {
				r = get_int_option(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only);
				if (r < 0)
					return r;
			}
			if (!v6only) {
				q[n_q] = (struct syn_recv_match){ .family = AF_INET,
								  .port = si->addr.in6.sin6_port,
								  .any = true };
				n_q++;
			}
		}
	}
	for (size_t i = 0; i < n_q; i++) {
		r = syn_recv_dump(&q[i]);
		if (r < 0)
			return r;
		total += q[i].n;
	}
	*ret = total;
	return 0;
}

struct unix_info {
	bool found;
	bool has_vfs;	  /* bound to a path: the file's identity follows */
	uint32_t vfs_ino; /* inode of the socket file */
	uint32_t vfs_dev; /* its device, in the kernel's encoding */
	uint32_t queued;  /* for a listener: the accept-queue length */
};

static int read_unix_diag(const struct nlmsghdr *h, void *userdata)
{
	struct unix_info *u = userdata;
	const struct unix_diag_msg *m = NLMSG_DATA(h);
	const struct rtattr *a;
	size_t left;

	if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
		return -EBADMSG;
	left = h->nlmsg_len - NLMSG_LENGTH(sizeof(*m));
	for (a = (const struct rtattr *)(m + 1); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
		if (a->rta_type == UNIX_DIAG_RQLEN &&
		    RTA_PAYLOAD(a) >= sizeof(struct unix_diag_rqlen)) {
			struct unix_diag_rqlen rq;

			memcpy(&rq, RTA_DATA(a), sizeof(rq));
			/* For a listener, udiag_rqueue is the accept-queue length. */
			u->queued = rq.udiag_rqueue;
			u->found = true;
		} else if (a->rta_type == UNIX_DIAG_VFS &&
			   RTA_PAYLOAD(a) >= sizeof(struct unix_diag_vfs)) {
			struct unix_diag_vfs v;

			memcpy(&v, RTA_DATA(a), sizeof(v));
			u->vfs_ino = v.udiag_vfs_ino;
			u->vfs_dev = v.udiag_vfs_dev;
			u->has_vfs = true;
		}
	}
	return 0;
}

/* The accept-queue length of a Unix listener and the identity of its socket file, if any. */
static int unix_diag(int fd, struct unix_info *ret)
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
			.udiag_show = UDIAG_SHOW_RQLEN | UDIAG_SHOW_VFS,
			.udiag_cookie = { INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE },
		},
	};
	struct unix_info u = { .found = false };
	int r;

	/* A socket's own inode number (on sockfs) is what unix_diag looks it up by. */
	if (fstat(fd, &st) < 0)
		return -errno;
	req.r.udiag_ino = (uint32_t)st.st_ino;
	r = diag_query(&req, sizeof(req), read_unix_diag, &u);
	if (r < 0)
		return r;
	if (!u.found)
		return -ENOENT;
	*ret = u;
	return 0;
}

/*
 * Removes the socket file of a Unix listener, if the file at its path is still its own. The
 * check and the unlink() are two steps: a file swapped in between would be removed; only a
 * process that can write the directory can do that, and it could remove the file anyway.
 */
static int unix_unlink_own(int fd, const struct sock_info *si)
{
	size_t path_max = (size_t)si->addr_len - offsetof(struct sockaddr_un, sun_path);
	char path[sizeof(si->addr.un.sun_path) + 1];
	struct unix_info u;
	struct stat st;
	int r;

	if (si->addr_len <= offsetof(struct sockaddr_un, sun_path) ||
	    si->addr.un.sun_path[0] == '\0')
		return -EOPNOTSUPP; /* unnamed or abstract: there is no file to take away */
	if (path_max > sizeof(si->addr.un.sun_path))
		path_max = sizeof(si->addr.un.sun_path);
	/* sun_path need not be NUL-terminated when it fills the whole field. */
	memcpy(path, si->addr.un.sun_path, path_max);
	path[path_max] = '\0';

	r = unix_diag(fd, &u);
	if (r < 0)
		return r;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!u.has_vfs || !S_ISSOCK(st.st_mode) || st.st_ino != u.vfs_ino ||
	    major(st.st_dev) != u.vfs_dev >> KERNEL_MINOR_BITS ||
	    minor(st.st_dev) != (u.vfs_dev & KERNEL_MINOR_MASK))
		return 0; /* someone else's file now: new connects there do not reach us */
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int listen_close_refuse_new(int fd)
{
	struct sock_info si;
	struct sock_fprog prog;
	int r;

	r = sock_identify(fd, &si);
	if (r < 0)
		return r;
	switch (si.kind) {
	case SOCK_KIND_TCP:
		prog = (struct sock_fprog){ .len = ELEMENTSOF(refuse_syn),
					    .filter = (struct sock_filter *)refuse_syn };
		break;
	case SOCK_KIND_UDP:
		prog = (struct sock_fprog){ .len = ELEMENTSOF(refuse_all),
					    .filter = (struct sock_filter *)refuse_all };
		break;
	case SOCK_KIND_UNIX:
		return unix_unlink_own(fd, &si);
	default:
		return -EOPNOTSUPP;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0)
		return -errno;
	return 0;
}

int listen_close_accept_new(int fd)
{
	int unused = 0;

	/* The kernel wants an int's worth of option value even here (EINVAL without). */
	if (setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof(unused)) < 0 &&
	    errno != ENOENT)
		return -errno;
	return 0;
}

int listen_close_probe(int fd)
{
	struct sock_info si;
	struct sock_fprog prog;
	int domain = 0, type = 0, protocol = 0;
	int r;

	r = sock_identify(fd, &si);
	if (r < 0)
		return r;
	if (si.kind == SOCK_KIND_UNIX)
		return si.addr_len > offsetof(struct sockaddr_un, sun_path) &&
				       si.addr.un.sun_path[0] != '\0'
			       ? 0
			       : -EOPNOTSUPP;
	prog = si.kind == SOCK_KIND_TCP
		       ? (struct sock_fprog){ .len = ELEMENTSOF(refuse_syn),
					      .filter = (struct sock_filter *)refuse_syn }
		       : (struct sock_fprog){ .len = ELEMENTSOF(refuse_all),
					      .filter = (struct sock_filter *)refuse_all };
	r = get_int_option(fd, SOL_SOCKET, SO_DOMAIN, &domain);
	if (r < 0)
		return r;
	r = get_int_option(fd, SOL_SOCKET, SO_TYPE, &type);
	if (r < 0)
		return r;
	r = get_int_option(fd, SOL_SOCKET, SO_PROTOCOL, &protocol);
	if (r < 0)
		return r;
	{
		_cleanup_close_ int probe = socket(domain, type | SOCK_CLOEXEC, protocol);

		if (probe < 0)
			return -errno;
		if (setsockopt(probe, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0)
			return -errno;
	}
	return 0;
}

int listen_close_pending(int fd, unsigned *ret_queued, unsigned *ret_half_open)
{
	struct sock_info si;
	unsigned queued = 0, half_open = 0;
	int r;

	r = sock_identify(fd, &si);
	if (r < 0)
		return r;
	switch (si.kind) {
	case SOCK_KIND_TCP: {
		struct tcp_info ti;
		socklen_t len = sizeof(ti);

		/* On a listener, tcpi_unacked is the accept-queue length (tcpi_sacked the backlog). */
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
			return -errno;
		if (len < offsetof(struct tcp_info, tcpi_unacked) + sizeof(ti.tcpi_unacked))
			return -EIO;
		queued = ti.tcpi_unacked;
		r = tcp_half_open(fd, &si, &half_open);
		if (r < 0)
			return r;
		break;
	}
	case SOCK_KIND_UNIX: {
		struct unix_info u;

		r = unix_diag(fd, &u);
		if (r < 0)
			return r;
		queued = u.queued;
		break;
	}
	case SOCK_KIND_UDP: {
		int bytes = 0;

		/* SIOCINQ on UDP: the size of the next datagram, 0 when none is queued. */
		if (ioctl(fd, SIOCINQ, &bytes) < 0)
			return -errno;
		queued = bytes > 0;
		break;
	}
	}
	*ret_queued = queued;
	*ret_half_open = half_open;
	return 0;
}
