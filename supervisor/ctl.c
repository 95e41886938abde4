/* SPDX-License-Identifier: MIT */
/* ctl.c - batonctl: ask a running batond for its status, a reload, a stop or an upgrade. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "command_table.h"
#include "control.h"

#ifndef BATON_VERSION
#define BATON_VERSION "0.1.0"
#endif

enum {
	EXIT_FAILED = 1, /* the request failed, or batond could not be reached */
	EXIT_USAGE = 2,
};

static void help(FILE *f)
{
	(void)fputs("Usage: batonctl [-c PATH | --name NAME] COMMAND [ARGUMENT]\n"
		    "Control a running batond through its control socket.\n"
		    "\n"
		    "Commands:\n",
		    f);
	command_help(f);
	(void)fputs(
		"\n"
		"  -c, --control PATH  the control socket (default: $RUNTIME_DIRECTORY/NAME.sock,\n"
		"                      /run/baton/NAME.sock as root, $XDG_RUNTIME_DIR/baton/...)\n"
		"      --name NAME     batond's --name (default batond)\n"
		"  -h, --help          this help\n"
		"  -V, --version       batonctl's version\n"
		"Exit status: 0 done, 1 failed or batond unreachable, 2 bad usage. See "
		"batonctl(8).\n",
		f);
}

/* Sends one request line and copies the reply to stdout; returns the exit status. */
static int request(const char *path, const char *line)
{
	_cleanup_close_ int fd = -1;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[65536];
	bool first = true;
	int status = EXIT_FAILED;
	size_t len = strlen(line);

	if (strlen(path) >= sizeof(sa.sun_path)) {
		(void)fprintf(stderr, "batonctl: control socket %s: path too long\n", path);
		return EXIT_USAGE;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		(void)fprintf(stderr, "batonctl: connect %s: %s (is batond running? -c PATH?)\n",
			      path, strerror(errno));
		return EXIT_FAILED;
	}
	if (send(fd, line, len, MSG_NOSIGNAL) != (ssize_t)len ||
	    send(fd, "\n", 1, MSG_NOSIGNAL) != 1) {
		(void)fprintf(stderr, "batonctl: send to %s: %s\n", path, strerror(errno));
		return EXIT_FAILED;
	}
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		const char *body = buf;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			(void)fprintf(stderr, "batonctl: read from %s: %s\n", path,
				      strerror(errno));
			return EXIT_FAILED;
		}
		if (n == 0)
			break;
		if (first) {
			/* First word: ok, failed or error. "ok" alone on its line is not printed. */
			if (n >= 2 && memcmp(buf, "ok", 2) == 0) {
				status = 0;
				body = buf + 2;
				if (n >= 3 && buf[2] == '\n')
					body = buf + 3;
				else if (n >= 3 && buf[2] == ' ')
					body = buf + 3;
			} else if (n >= 7 && memcmp(buf, "failed ", 7) == 0) {
				status = EXIT_FAILED;
				body = buf + 7;
			} else if (n >= 6 && memcmp(buf, "error ", 6) == 0) {
				status = EXIT_USAGE;
				body = buf + 6;
			}
			first = false;
		}
		(void)fwrite(body, 1, (size_t)(n - (body - buf)), status == 0 ? stdout : stderr);
	}
	if (first) {
		(void)fprintf(stderr, "batonctl: %s closed without an answer\n", path);
		return EXIT_FAILED;
	}
	return status;
}

int main(int argc, char **argv)
{
	enum { OPT_NAME = 0x100, OPT_JSON, OPT_NO_WAIT };
	static const struct option options[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "no-wait", no_argument, NULL, OPT_NO_WAIT },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *control = NULL, *name = CONTROL_NAME_DEFAULT;
	const struct command *cmd;
	char path[108], line[CONTROL_REQUEST_MAX];
	bool json = false, no_wait = false;
	int opt, r;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":c:hV", options, NULL)) >= 0) {
		switch (opt) {
		case 'c':
			control = optarg;
			break;
		case OPT_NAME:
			name = optarg;
			break;
		case OPT_JSON:
			json = true;
			break;
		case OPT_NO_WAIT:
			no_wait = true;
			break;
		case 'h':
			help(stdout);
			return 0;
		case 'V':
			(void)printf("batonctl %s\n", BATON_VERSION);
			return 0;
		default:
			(void)fprintf(stderr, "batonctl: %s '%s' (try 'batonctl --help')\n",
				      opt == ':' ? "option needs an argument" : "unknown option",
				      argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		(void)fprintf(stderr, "batonctl: no command (try 'batonctl --help')\n");
		return EXIT_USAGE;
	}
	cmd = command_find(argv[optind]);
	if (!cmd) {
		(void)fprintf(stderr, "batonctl: unknown command '%s' (try 'batonctl --help')\n",
			      argv[optind]);
		return EXIT_USAGE;
	}
	if (argc - optind != (cmd->arg_name ? 2 : 1)) {
		(void)fprintf(stderr, "batonctl: %s %s (try 'batonctl --help')\n", cmd->name,
			      cmd->arg_name ? "takes one argument" : "takes no argument");
		return EXIT_USAGE;
	}
	if ((json && (!cmd->flag || strcmp(cmd->flag, "--json") != 0)) ||
	    (no_wait && (!cmd->flag || strcmp(cmd->flag, "--no-wait") != 0))) {
		(void)fprintf(stderr, "batonctl: %s does not take %s\n", cmd->name,
			      json ? "--json" : "--no-wait");
		return EXIT_USAGE;
	}
	r = command_format(cmd, cmd->arg_name ? argv[optind + 1] : NULL, json || no_wait, line,
			   sizeof(line));
	if (r < 0) {
		(void)fprintf(stderr, "batonctl: %s: %s\n", cmd->name,
			      r == -ENAMETOOLONG ? "argument too long" : "invalid argument");
		return EXIT_USAGE;
	}
	if (control) {
		if (strlen(control) >= sizeof(path)) {
			(void)fprintf(stderr, "batonctl: control socket %s: path too long\n",
				      control);
			return EXIT_USAGE;
		}
		strcpy(path, control);
	} else {
		r = control_default_path(name, path, sizeof(path));
		if (r < 0) {
			(void)fprintf(stderr, "batonctl: no runtime directory: use -c PATH\n");
			return EXIT_USAGE;
		}
	}
	return request(path, line);
}
