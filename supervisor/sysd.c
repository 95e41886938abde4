/* SPDX-License-Identifier: MIT */
/* sysd.c - systemd integration: socket activation, sd_notify to the manager, the fd store. */
#include "sysd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "cleanup.h"
#include "log.h"

static void strv_freep(char ***p)
{
	if (*p) {
		for (char **s = *p; *s; s++)
			free(*s);
		free(*p);
	}
}

/* The configured listener an inherited one stands for: same name first, then same address. */
static struct listener *match(struct config *c, size_t n_configured, const struct listener *in)
{
	for (size_t i = 0; i < n_configured; i++)
		if (c->listeners[i].fd < 0 && strcmp(c->listeners[i].name, in->name) == 0)
			return &c->listeners[i];
	for (size_t i = 0; i < n_configured; i++)
		if (c->listeners[i].fd < 0 && listener_same_address(&c->listeners[i], in, false))
			return &c->listeners[i];
	return NULL;
}

/*
 * The earlier inherited fd (index below i, not itself a duplicate) that is the same socket as
 * fd i, or -1. Same device and inode is the same socket: a duplicated fd, not a copy.
 */
static int same_socket_as(int i, const bool *duplicate)
{
	struct stat st, other;

	if (fstat(SD_LISTEN_FDS_START + i, &st) < 0)
		return -1;
	for (int j = 0; j < i; j++)
		if (!duplicate[j] && fstat(SD_LISTEN_FDS_START + j, &other) == 0 &&
		    other.st_dev == st.st_dev && other.st_ino == st.st_ino)
			return j;
	return -1;
}

int sysd_inherit(struct config *c)
{
	_cleanup_(strv_freep) char **names = NULL;
	_cleanup_free_ bool *duplicate = NULL;
	size_t n_configured = c->n_listeners;
	int n, r;

	/* unset_environment=1: neither batond's later children nor a re-exec see them again. */
	n = sd_listen_fds_with_names(1, &names);
	if (n < 0)
		return log_error_errno(n, "read LISTEN_FDS");
	if (n == 0)
		return 0;
	duplicate = calloc((size_t)n, sizeof(*duplicate));
	if (!duplicate) {
		r = log_error_errno(-ENOMEM, "inherit %d sockets", n);
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		const char *name = names && names[i] ? names[i] : "unknown";
		struct listener in, *l;
		int same = same_socket_as(i, duplicate);

		/*
		 * systemd passes a socket once per holder: a .socket unit and the fd store both
		 * hold the listener after a restart (LISTEN_FDNAMES=web:web). One socket is one
		 * listener; the copy is closed once every fd has been looked at.
		 */
		if (same >= 0) {
			duplicate[i] = true;
			log_info("inherited fd %d (%s): the same socket as fd %d (%s); closing it",
				 fd, name, SD_LISTEN_FDS_START + same,
				 names && names[same] ? names[same] : "unknown");
			continue;
		}
		r = listener_from_fd(fd, name, &in);
		if (r < 0) {
			log_error_errno(r,
					"inherited fd %d (%s): not a TCP, UDP or Unix stream "
					"listening socket",
					fd, name);
			goto fail;
		}
		l = match(c, n_configured, &in);
		if (l) {
			/* Matched by name: a port-0 option takes whatever port systemd bound. */
			if (!listener_same_address(l, &in, true)) {
				log_error("listen %s=%s: systemd passed '%s' as %s", l->name,
					  l->spec, in.name, in.spec);
				r = -EINVAL;
				goto fail;
			}
			memcpy(in.name, l->name, sizeof(in.name));
			*l = in;
			log_info("listening on %s (%s): inherited from systemd", l->spec, l->name);
			continue;
		}
		if (c->n_listeners >= CONFIG_MAX_LISTENERS) {
			log_error("inherited fd %d (%s): too many listeners (at most %d)", fd, name,
				  CONFIG_MAX_LISTENERS);
			r = -E2BIG;
			goto fail;
		}
		c->listeners[c->n_listeners++] = in;
		log_info("listening on %s (%s): inherited from systemd", in.spec, in.name);
	}
	for (int i = 0; i < n; i++)
		if (duplicate[i])
			(void)close(SD_LISTEN_FDS_START + i);
	return n;
fail:
	/* Nothing of what systemd passed may leak into workers or stay half-used. */
	for (int i = 0; i < n; i++)
		(void)close(SD_LISTEN_FDS_START + i);
	for (size_t i = 0; i < c->n_listeners; i++)
		if (c->listeners[i].inherited)
			c->listeners[i].fd = -1;
	return r;
}

bool sysd_fdstore_enabled(const struct config *c)
{
	const char *e = getenv("FDSTORE");

	return c->fdstore || (e && strcmp(e, "0") != 0);
}

int sysd_fdstore_push(const struct config *c)
{
	int first_error = 0;

	for (size_t i = 0; i < c->n_listeners; i++) {
		const struct listener *l = &c->listeners[i];
		char msg[64 + LISTENER_NAME_MAX];
		int r;

		(void)snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", l->name);
		r = sd_pid_notify_with_fds(0, 0, msg, &l->fd, 1);
		if (r < 0) {
			log_warning_errno(r, "push %s (%s) to the fd store, ignoring", l->spec,
					  l->name);
			if (!first_error)
				first_error = r;
		} else if (r == 0) {
			log_warning("fd store requested but NOTIFY_SOCKET is not set, ignoring");
			return -ENOTCONN;
		}
	}
	return first_error;
}

void sysd_notify(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int r;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	r = sd_notify(0, msg);
	if (r < 0)
		log_warning_errno(r, "notify the service manager, ignoring");
}
