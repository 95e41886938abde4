/* SPDX-License-Identifier: MIT */
/* upgrade_state.h - the state a batond image hands to the next across execve(): format, parse, seal. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "notify.h"
#include "rollout.h"

#define UPGRADE_STATE_VERSION 1 /* bump on any incompatible change of the text below */
#define UPGRADE_ENV_STATE     "BATON_UPGRADE_STATE"    /* fd of the sealed state memfd */
#define UPGRADE_ENV_FALLBACK  "BATON_UPGRADE_FALLBACK" /* fd of the old image, for fexecve */
#define UPGRADE_CHECK_OPTION  "--upgrade-check"	       /* preflight: parse argv, say the version */
#define UPGRADE_STATE_MAX     (1024 * 1024)	       /* bytes of state text */

struct upgrade_listener {
	int fd;
	bool owns_path;
	dev_t path_dev;
	ino_t path_ino;
	char name[LISTENER_NAME_MAX + 1];
};

struct upgrade_worker {
	struct rollout_worker w;
	bool serving;	/* of the serving generation */
	int channel_fd; /* --pass scm: batond's end of its channel, or -1 */
};

struct upgrade_state {
	unsigned next_gen;
	int notify_fd;
	int control_fd; /* -1: none */
	char notify_address[NOTIFY_ADDRESS_MAX];
	size_t n_listeners;
	struct upgrade_listener listeners[CONFIG_MAX_LISTENERS];
	size_t n_workers;
	struct upgrade_worker workers[ROLLOUT_MAX_RECORDS];
};

/*
 * Writes s as text ("baton-state 1", then one line per item) into buf. Returns the length, or
 * -E2BIG if it does not fit.
 */
int upgrade_state_format(const struct upgrade_state *s, char *buf, size_t size);

/*
 * Parses what upgrade_state_format() wrote. Returns 0 and fills *ret, -EPROTONOSUPPORT for
 * another state version, or -EBADMSG for anything malformed (*ret is then unspecified).
 */
int upgrade_state_parse(const char *buf, size_t len, struct upgrade_state *ret);

/* Puts text into a sealed memfd (CLOEXEC). Returns the fd or a negative errno. */
int upgrade_state_seal(const char *text, size_t len);

/* Reads a state memfd into buf (size bytes). Returns the length or a negative errno. */
int upgrade_state_read(int fd, char *buf, size_t size);
