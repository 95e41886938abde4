/* SPDX-License-Identifier: MIT */
/* fdsock.c - the --fd-socket: checked peers fetch every listener, one bounded client at a time. */
#include "fdsock.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "channel.h"
#include "cleanup.h"
#include "fdpass.h"
#include "log.h"
#include "proto.h"
#include "unix_server.h"

#define PEER_GROUPS_ON_STACK 64	       /* supplementary groups read without allocating */
#define PEER_GROUPS_MAX	     65536     /* the kernel's NGROUPS_MAX */
#define NSS_BUFFER_START     1024      /* bytes for getpwnam_r()/getgrnam_r() at first */
#define NSS_BUFFER_MAX	     (1 << 20) /* bytes we let one passwd or group entry need */

struct fdsock_client {
	struct fdsock *s;
	LIST_ENTRY(fdsock_client) link;
	struct channel *ch;
	sd_event_source *timer;
	char label[CHANNEL_LABEL_MAX];
};

struct fdsock {
	sd_event *event;
	struct unix_server *server;
	char path[108];
	const struct listener *listeners;
	size_t n_listeners;
	uid_t *allow_uids;
	size_t n_uids;
	gid_t *allow_gids;
	size_t n_gids;
	LIST_HEAD(, fdsock_client) clients;
	unsigned n_clients;
	uint64_t log_window_usec; /* start of the current refusal-logging interval */
	unsigned n_logged, n_unlogged;
};

static void fdsock_freep(struct fdsock **s)
{
	(void)fdsock_free(*s);
}

/* --- clients --- */

static void client_free(struct fdsock_client *cl)
{
	struct fdsock *s = cl->s;

	LIST_REMOVE(cl, link);
	s->n_clients--;
	unix_server_client_gone(s->server);
	cl->ch = channel_free(cl->ch);
	cl->timer = sd_event_source_disable_unref(cl->timer);
	free(cl);
}

static void on_client_closed(void *userdata, int error)
{
	struct fdsock_client *cl = userdata;
	struct fdsock *s = cl->s;

	/* The channel logged any error; a fetch that went through is routine. */
	if (error == 0)
		log_debug("%s: sent %zu listeners", cl->label, s->n_listeners);
	client_free(cl);
}

static int on_client_timeout(sd_event_source *t, uint64_t usec, void *userdata)
{
	struct fdsock_client *cl = userdata;

	(void)t;
	(void)usec;
	log_warning("%s: closing: not done within %llu ms", cl->label,
		    (unsigned long long)(FDSOCK_CLIENT_TIMEOUT_USEC / 1000));
	client_free(cl);
	return 0;
}

static bool contains_gid(const gid_t *list, size_t n, gid_t g)
{
	for (size_t i = 0; i < n; i++) {
		if (list[i] == g)
			return true;
	}
	return false;
}

/* Any of the peer's supplementary groups at connect() in the allow list. False on errors. */
static bool peer_groups_allowed(const struct fdsock *s, int fd)
{
	gid_t small[PEER_GROUPS_ON_STACK];
	_cleanup_free_ gid_t *big = NULL;
	gid_t *groups = small;
	socklen_t len = sizeof(small);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, small, &len) < 0) {
		/* ERANGE: len now says how much the kernel has. */
		if (errno != ERANGE || len > PEER_GROUPS_MAX * sizeof(gid_t))
			return false;
		big = malloc(len);
		if (!big || getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, big, &len) < 0)
			return false;
		groups = big;
	}
	for (size_t i = 0; i < len / sizeof(gid_t); i++) {
		if (contains_gid(s->allow_gids, s->n_gids, groups[i]))
			return true;
	}
	return false;
}

static bool peer_is_allowed(const struct fdsock *s, int fd, const struct ucred *cred)
{
	if (cred->uid == 0 || cred->uid == geteuid())
		return true;
	for (size_t i = 0; i < s->n_uids; i++) {
		if (s->allow_uids[i] == cred->uid)
			return true;
	}
	if (s->n_gids == 0)
		return false;
	return contains_gid(s->allow_gids, s->n_gids, cred->gid) || peer_groups_allowed(s, fd);
}

/* One line per refusal, at most FDSOCK_REFUSALS_LOGGED per interval: a peer can loop connect(). */
static void log_refusal(struct fdsock *s, const struct ucred *cred)
{
	uint64_t now = 0;

	(void)sd_event_now(s->event, CLOCK_MONOTONIC, &now);
	if (now - s->log_window_usec >= FDSOCK_LOG_INTERVAL_USEC) {
		if (s->n_unlogged > 0)
			log_warning("fd-socket %s: %u more refusals not logged", s->path,
				    s->n_unlogged);
		s->log_window_usec = now;
		s->n_logged = 0;
		s->n_unlogged = 0;
	}
	if (s->n_logged >= FDSOCK_REFUSALS_LOGGED) {
		s->n_unlogged++;
		return;
	}
	s->n_logged++;
	log_warning("fd-socket %s: refusing pid %d uid %u gid %u (allowed: root, uid %u, "
		    "--fd-allow)",
		    s->path, (int)cred->pid, (unsigned)cred->uid, (unsigned)cred->gid,
		    (unsigned)geteuid());
}

/* Best effort: the refused peer learns why, if it reads; we close either way. */
static void refuse(int fd)
{
	struct proto_error m = { .code = EPERM };
	uint8_t buf[PROTO_HEADER_SIZE + 6 + 64];
	int len;

	(void)snprintf(m.text, sizeof(m.text), "credentials refused");
	len = proto_encode_error(buf, sizeof(buf), &m);
	if (len > 0)
		(void)proto_send(fd, buf, (size_t)len, NULL, 0);
}

/* Consumes fd. */
static bool add_client(struct fdsock *s, int fd_in, const struct ucred *cred)
{
	static const struct channel_ops ops = { .closed = on_client_closed };
	_cleanup_close_ int fd = fd_in;
	struct fdsock_client *cl;
	uint64_t now = 0;
	int r;

	cl = calloc(1, sizeof(*cl));
	if (!cl) {
		(void)log_warning_errno(-ENOMEM, "fd-socket %s: pid %d uid %u, closing", s->path,
					(int)cred->pid, (unsigned)cred->uid);
		return false;
	}
	cl->s = s;
	(void)snprintf(cl->label, sizeof(cl->label), "fd-socket %s: pid %d uid %u", s->path,
		       (int)cred->pid, (unsigned)cred->uid);
	(void)sd_event_now(s->event, CLOCK_MONOTONIC, &now);
	r = sd_event_add_time(s->event, &cl->timer, CLOCK_MONOTONIC,
			      now + FDSOCK_CLIENT_TIMEOUT_USEC, 0, on_client_timeout, cl);
	if (r >= 0)
		r = channel_new_fetch(s->event, TAKE_FD(fd), cl->label, s->listeners,
				      s->n_listeners, &ops, cl, &cl->ch);
	if (r < 0) {
		(void)log_warning_errno(r, "%s: closing", cl->label);
		cl->timer = sd_event_source_disable_unref(cl->timer);
		free(cl);
		return false;
	}
	LIST_INSERT_HEAD(&s->clients, cl, link);
	s->n_clients++;
	return true;
}

/* Consumes fd: a client if its credentials pass, else refused and closed. */
static bool on_accept(void *userdata, int fd_in, const struct ucred *cred)
{
	_cleanup_close_ int fd = fd_in;
	struct fdsock *s = userdata;

	if (!peer_is_allowed(s, fd, cred)) {
		log_refusal(s, cred);
		refuse(fd);
		return false;
	}
	return add_client(s, TAKE_FD(fd), cred);
}

static void *memdup_array(const void *p, size_t n, size_t size)
{
	void *q;

	if (n == 0)
		return NULL;
	q = calloc(n, size);
	if (q)
		memcpy(q, p, n * size);
	return q;
}

int fdsock_new(sd_event *e, const char *path, const struct listener *listeners, size_t n,
	       const uid_t *allow_uids, size_t n_uids, const gid_t *allow_gids, size_t n_gids,
	       struct fdsock **ret)
{
	_cleanup_(fdsock_freep) struct fdsock *s = NULL;
	char label[160];
	struct unix_server_params p = {
		.path = path,
		.type = SOCK_SEQPACKET,
		/*
		 * 0600 when both allow lists are empty; else 0666, because a file mode cannot
		 * express a list of uids and groups: the credential check is then the gate.
		 */
		.mode = n_uids == 0 && n_gids == 0 ? 0600 : 0666,
		.backlog = FDSOCK_BACKLOG,
		.max_clients = FDSOCK_MAX_CLIENTS,
		.adopt_fd = -1,
		.label = label,
		.accept = on_accept,
	};
	int r;

	if (!e || !path || !*path || !ret || (n > 0 && !listeners) || (n_uids > 0 && !allow_uids) ||
	    (n_gids > 0 && !allow_gids))
		return -EINVAL;
	if (n_uids > FDSOCK_MAX_ALLOW || n_gids > FDSOCK_MAX_ALLOW || n > PROTO_MAX_LISTENERS)
		return -E2BIG;
	for (size_t i = 0; i < n; i++) {
		if (listeners[i].fd < 0)
			return -EINVAL;
	}
	if (strlen(path) > sizeof(((struct sockaddr_un *)NULL)->sun_path))
		return -ENAMETOOLONG;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	p.userdata = s;
	s->event = sd_event_ref(e);
	s->listeners = listeners;
	s->n_listeners = n;
	s->n_uids = n_uids;
	s->n_gids = n_gids;
	s->allow_uids = memdup_array(allow_uids, n_uids, sizeof(uid_t));
	s->allow_gids = memdup_array(allow_gids, n_gids, sizeof(gid_t));
	if ((n_uids > 0 && !s->allow_uids) || (n_gids > 0 && !s->allow_gids))
		return -ENOMEM;
	(void)snprintf(s->path, sizeof(s->path), "%s", path);
	(void)snprintf(label, sizeof(label), "fd-socket %s", path);
	r = unix_server_new(e, &p, &s->server);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}

struct fdsock *fdsock_free(struct fdsock *s)
{
	if (!s)
		return NULL;
	while (!LIST_EMPTY(&s->clients))
		client_free(LIST_FIRST(&s->clients));
	s->server = unix_server_free(s->server, false);
	free(s->allow_uids);
	free(s->allow_gids);
	s->event = sd_event_unref(s->event);
	free(s);
	return NULL;
}

/* --- --fd-allow --- */

/* A decimal id: 0 .. 2^32-2; (uid_t)-1 means "no id" to the kernel. 1 if s is not a number. */
static int parse_id(const char *s, uint32_t *ret)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return 1;
	}
	for (const char *p = s; *p; p++) {
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v) ||
		    v > UINT32_MAX)
			return -ERANGE;
	}
	if (v == UINT32_MAX)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

/* getpwnam_r()/getgrnam_r() report "not found" as 0 with no entry, and errors as a number. */
static int lookup_name(const char *name, bool group, uint32_t *ret)
{
	size_t size = NSS_BUFFER_START;

	for (;;) {
		_cleanup_free_ char *buf = malloc(size);
		struct passwd pw, *pwp = NULL;
		struct group gr, *grp = NULL;
		int r;

		if (!buf)
			return -ENOMEM;
		if (group)
			r = getgrnam_r(name, &gr, buf, size, &grp);
		else
			r = getpwnam_r(name, &pw, buf, size, &pwp);
		if (r == ERANGE && size < NSS_BUFFER_MAX) {
			size *= 2;
			continue;
		}
		if (r != 0)
			return -r;
		if (group && grp) {
			*ret = (uint32_t)grp->gr_gid;
			return 0;
		}
		if (!group && pwp) {
			*ret = (uint32_t)pwp->pw_uid;
			return 0;
		}
		return -ESRCH;
	}
}

int fdsock_parse_allow(const char *s, uid_t *ret_uid, gid_t *ret_gid, bool *ret_is_group)
{
	bool group = s && s[0] == '@';
	const char *name = group ? s + 1 : s;
	uint32_t id = 0;
	int r;

	if (!s || *name == '\0')
		return -EINVAL;
	r = parse_id(name, &id);
	if (r > 0)
		r = lookup_name(name, group, &id);
	if (r < 0)
		return r;
	if (group)
		*ret_gid = (gid_t)id;
	else
		*ret_uid = (uid_t)id;
	*ret_is_group = group;
	return 0;
}
