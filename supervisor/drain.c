/* SPDX-License-Identifier: MIT */
/* drain.c - refuse new connections on a listener and count what it still holds. */
#include "drain.h"

#include <errno.h>

#include "listen_close.h"

/*
 * The fd-level work is proto/listen_close.c, shared with libbaton's baton_listener_shutdown(). What
 * stays here is what only batond knows: whether a Unix socket file is its own to remove.
 */
int drain_refuse_new(struct listener *l)
{
	int r;

	/* A socket file batond did not create (systemd's, say) is not batond's to remove. */
	if (l->kind == LISTENER_UNIX && l->addr.un.sun_path[0] != '\0' && !l->owns_path)
		return 0;
	r = listen_close_refuse_new(l->fd);
	if (r < 0)
		return r;
	if (l->kind == LISTENER_UNIX)
		l->owns_path = false; /* gone now: the final close has nothing left to remove */
	return 0;
}

int drain_pending(const struct listener *l, unsigned *ret_queued, unsigned *ret_half_open)
{
	return listen_close_pending(l->fd, ret_queued, ret_half_open);
}
