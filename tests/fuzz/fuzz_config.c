/* SPDX-License-Identifier: MIT */
/*
 * fuzz_config.c - batond's option parser on argv made of fuzz bytes, called again and again.
 *
 * Input: a byte whose low bit sets LISTEN_FDS, then the arguments after argv[0], each ended
 * by a NUL.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>

#include "config.h"
#include "harness.h"
#include "log.h"
#include "rollout.h"

#define ARGS_MAX      256	      /* arguments of one command line after argv[0] */
#define ARG_MAX	      1024	      /* bytes of one argument; longer ones only fail sooner */
#define PATH_FOR_FUZZ "/usr/bin:/bin" /* where a worker command is looked for: fixed, not $PATH */

static struct config c; /* about 700 KiB: static, once */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/*
	 * The parser reads PATH for the command, LISTEN_FDS (set by each input) and, through
	 * log_setup(), JOURNAL_STREAM. Fix them, so that every input means the same on every
	 * machine.
	 */
	CHECK(setenv("PATH", PATH_FOR_FUZZ, 1) == 0);
	CHECK(unsetenv("JOURNAL_STREAM") == 0);
	log_setup("batond");
	/* Every message is formatted (make fuzz discards stderr with -close_fd_mask). */
	log_set_max_level(LOG_DEBUG);
	return 0;
}

/* A configuration config_parse() let through is one batond can run. */
static void check_run(char **argv, int argc, bool systemd)
{
	struct rollout *r = NULL;
	struct stat st;

	CHECK(c.n_listeners >= (systemd ? 0 : 1) && c.n_listeners <= CONFIG_MAX_LISTENERS);
	for (size_t i = 0; i < c.n_listeners; i++) {
		const struct listener *l = &c.listeners[i];

		CHECK(l->fd == -1 && listener_name_is_valid(l->name) && l->spec[0]);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(c.listeners[j].name, l->name) != 0);
	}
	CHECK(c.backlog >= 1);
	CHECK(c.rollout.n_workers >= 1 && c.rollout.n_workers <= ROLLOUT_MAX_WORKERS);
	CHECK(c.rollout.batch <= c.rollout.n_workers);
	/* The machine accepts every configuration the parser does. */
	CHECK(rollout_new(&c.rollout, &r) == 0);
	r = rollout_free(r);
	CHECK(c.drain_signal >= 1 && c.drain_signal < NSIG);
	CHECK(c.stop_mode == CONFIG_STOP_GRACEFUL || c.stop_mode == CONFIG_STOP_IMMEDIATE);
	CHECK(c.pass != 0);
	CHECK(c.log_level == LOG_INFO || c.log_level == LOG_DEBUG);
	/* The worker command: the rest of argv, found and executable. */
	CHECK(c.argv > argv && c.argv < argv + argc && c.argv[0]);
	CHECK(memchr(c.exec_path, '\0', sizeof(c.exec_path)) && c.exec_path[0]);
	CHECK(stat(c.exec_path, &st) == 0 && !S_ISDIR(st.st_mode));
	CHECK(memchr(c.preload, '\0', sizeof(c.preload)));
	CHECK(c.n_fd_allow_uids <= CONFIG_MAX_ALLOW && c.n_fd_allow_gids <= CONFIG_MAX_ALLOW);
	CHECK(!(c.n_fd_allow_uids || c.n_fd_allow_gids) || c.fd_socket);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { .data = data, .size = size };
	int lowest_free_fd = fuzz_lowest_free_fd();
	char *argv[ARGS_MAX + 2] = { NULL }, *given[ARGS_MAX + 2];
	bool systemd = fuzz_u8(&in) & 1;
	int argc = 0, r;

	/* Sockets from systemd (LISTEN_FDS) make -l optional: the first byte says if there are. */
	if (systemd)
		CHECK(setenv("LISTEN_FDS", "1", 1) == 0);
	else
		CHECK(unsetenv("LISTEN_FDS") == 0);
	/* Arguments are the rest split at NULs, each in a heap block of its own size. */
	argv[argc++] = strdup("batond");
	while (fuzz_more(&in) && argc <= ARGS_MAX) {
		argv[argc] = fuzz_string(&in, ARG_MAX, '\0');
		if (!argv[argc])
			break;
		argc++;
	}
	if (!argv[0])
		return 0;
	memcpy(given, argv, sizeof(given));

	r = config_parse(argc, argv, &c);
	CHECK(r == CONFIG_RUN || r == CONFIG_EXIT || (r < 0 && r >= -4095));
	if (r == CONFIG_RUN)
		check_run(argv, argc, systemd);
	/* Nothing to leak: the parser opens no fd, and argv is left as it was given ('+'). */
	CHECK(fuzz_lowest_free_fd() == lowest_free_fd);
	CHECK(memcmp(given, argv, sizeof(given)) == 0);
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	return 0;
}
