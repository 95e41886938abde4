/* SPDX-License-Identifier: MIT */
/* sysd.h - talking to systemd: inherited sockets, service notifications, the fd store. */
#pragma once

#include <stdbool.h>

#include "config.h"

/*
 * Takes the sockets systemd passed (LISTEN_FDS, names from LISTEN_FDNAMES) and matches them to
 * the configured listeners: by name, else by address. A match is used instead of binding (its
 * kind and address must agree with the -l option, or it is a configuration error); an inherited
 * socket that matches nothing is appended under its own name. Logs what it does and why it
 * fails. Returns the number of inherited sockets, or a negative errno (exit 2).
 */
int sysd_inherit(struct config *c);

/* True when the manager keeps fds for us: $FDSTORE set (systemd >= 254) or --fdstore. */
bool sysd_fdstore_enabled(const struct config *c);

/* Pushes every listener to the manager's fd store, one FDSTORE=1 message each with FDNAME=. */
int sysd_fdstore_push(const struct config *c);

/* sd_notify to the manager (NOTIFY_SOCKET of batond itself); a no-op without one. */
void sysd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
