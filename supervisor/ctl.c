/* SPDX-License-Identifier: MIT */
/* ctl.c - batonctl: ask a running batond for its status, a reload, a stop, its events... */
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
#include "json.h"
#include "command_table.h"
#include "control.h"
#include "duration.h"
#include "fdpass.h"
#include "leftovers.h"

#ifndef BATON_VERSION
#define BATON_VERSION "0.1.0"
#endif

#define CTL_READ_MAX (CONTROL_REPLY_MAX + 1024) /* bytes of one reply batonctl keeps */

enum {
	EXIT_FAILED = 1, /* the request failed, or batond could not be reached */
	EXIT_USAGE = 2,
};

static void help(FILE *f)
{
	(void)fputs("Usage: batonctl [-c PATH | --name NAME] [--json] [-q] COMMAND [ARGUMENT]\n"
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
		"      --json          one JSON object (events: always JSON lines), naming batond\n"
		"  -q, --quiet         do not say which batond answered\n"
		"  -h, --help          this help\n"
		"  -V, --version       batonctl's version\n"
		"  drain-leftovers [DURATION]  as ExecStopPost= of a service: SIGTERM what a dead\n"
		"                      batond left in the unit, wait up to DURATION (30s)\n"
		"Every command but status and events first says on stderr which batond answered\n"
		"(pid, name, listeners). Exit status: 0 done, 1 failed or batond unreachable,\n"
		"2 bad usage. See batonctl(8).\n",
		f);
}

/* Connects to the control socket; returns the fd, or -1 after saying why. */
static int connect_control(const char *path)
{
	_cleanup_close_ int fd = -1;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	strcpy(sa.sun_path, path); /* length checked by main() */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		(void)fprintf(stderr, "batonctl: connect %s: %s (is batond running? -c PATH?)\n",
			      path, strerror(errno));
		return -1;
	}
	return TAKE_FD(fd);
}

static int send_line(int fd, const char *path, const char *line)
{
	size_t len = strlen(line);

	if (send(fd, line, len, MSG_NOSIGNAL) != (ssize_t)len ||
	    send(fd, "\n", 1, MSG_NOSIGNAL) != 1) {
		(void)fprintf(stderr, "batonctl: send to %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Sends line and reads the whole reply (until batond closes) into a malloc()ed, NUL-terminated
 * *ret. Returns 0, or -1 after saying why (nothing is written to *ret then).
 */
static int ask(const char *path, const char *line, char **ret)
{
	_cleanup_close_ int fd = connect_control(path);
	_cleanup_free_ char *buf = NULL;
	size_t len = 0, size = 0;

	if (fd < 0 || send_line(fd, path, line) < 0)
		return -1;
	for (;;) {
		ssize_t n;

		if (size - len < 4096) {
			char *p;

			if (size >= CTL_READ_MAX) {
				(void)fprintf(stderr, "batonctl: reply from %s too long\n", path);
				return -1;
			}
			size = size ? size * 2 : 8192;
			p = realloc(buf, size);
			if (!p) {
				(void)fprintf(stderr, "batonctl: out of memory\n");
				return -1;
			}
			buf = p;
		}
		n = recv(fd, buf + len, size - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			(void)fprintf(stderr, "batonctl: read from %s: %s\n", path,
				      strerror(errno));
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len == 0) {
		(void)fprintf(stderr, "batonctl: %s closed without an answer\n", path);
		return -1;
	}
	buf[len] = '\0';
	*ret = TAKE_PTR(buf);
	return 0;
}

/* A reply's first word: ok (0), failed (1) or error (2); *ret_body is the rest. */
static int reply_status(const char *reply, const char **ret_body)
{
	static const struct {
		const char *word;
		int status;
	} words[] = { { "ok", 0 }, { "failed", EXIT_FAILED }, { "error", EXIT_USAGE } };

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		size_t n = strlen(words[i].word);

		if (strncmp(reply, words[i].word, n) == 0 &&
		    (reply[n] == ' ' || reply[n] == '\n' || !reply[n])) {
			*ret_body = reply + n + (reply[n] ? 1 : 0);
			return words[i].status;
		}
	}
	*ret_body = reply;
	return EXIT_FAILED;
}

/*
 * Who answers on path, as batond says with "identify" (JSON or one line of text), malloc()ed
 * without the trailing newline; NULL if it cannot say (a batond older than this request).
 */
static char *identify(const char *path, bool json)
{
	_cleanup_free_ char *reply = NULL;
	const char *body;
	size_t n;

	if (ask(path, json ? "identify json" : "identify", &reply) < 0 ||
	    reply_status(reply, &body) != 0)
		return NULL;
	n = strcspn(body, "\n");
	return strndup(body, n);
}

/* batonctl events: copies the stream to stdout as it comes, a line at a time. */
static int stream(const char *path, const char *line)
{
	_cleanup_close_ int fd = connect_control(path);
	char buf[65536];
	bool first = true;
	int status = EXIT_FAILED;

	if (fd < 0 || send_line(fd, path, line) < 0)
		return EXIT_FAILED;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
		const char *body = buf;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			(void)fprintf(stderr, "batonctl: read from %s: %s\n", path,
				      strerror(errno));
			return EXIT_FAILED;
		}
		if (n == 0)
			break;
		buf[n] = '\0';
		if (first) {
			/* The first recv may hold less than the first word on a busy machine. */
			status = reply_status(buf, &body);
			first = false;
		}
		(void)fwrite(body, 1, (size_t)(n - (body - buf)), status == 0 ? stdout : stderr);
		if (fflush(status == 0 ? stdout : stderr) != 0)
			return EXIT_FAILED; /* the reader went away (a closed pipe) */
	}
	if (first) {
		(void)fprintf(stderr, "batonctl: %s closed without an answer\n", path);
		return EXIT_FAILED;
	}
	return status;
}

/* The reply of one request as the user asked for it: its text, or JSON naming batond. */
static int print_reply(const char *reply, bool wrap_json, const char *id_json)
{
	const char *body;
	int status = reply_status(reply, &body);
	size_t n = strlen(body);

	if (wrap_json) {
		static const char *const results[] = { "ok", "failed", "error" };
		char *text = strndup(body, n && body[n - 1] == '\n' ? n - 1 : n);

		if (!text)
			return EXIT_FAILED;
		(void)printf("{\"batond\":%s,\"result\":\"%s\",\"message\":", id_json ?: "null",
			     results[status]);
		json_write_string(stdout, text);
		(void)puts("}");
		free(text);
		return status;
	}
	(void)fwrite(body, 1, n, status == 0 ? stdout : stderr);
	return status;
}

#define LEFTOVERS_TIMEOUT "30s" /* drain-leftovers: how long the leftovers may take by default */

/* batonctl drain-leftovers [DURATION]: needs no batond (it is gone); see leftovers.h. */
static int drain_leftovers(int argc, char **argv)
{
	const char *spec = argc > 1 ? argv[1] : LEFTOVERS_TIMEOUT;
	char cgroup[4096];
	unsigned told = 0, left = 0;
	uint64_t usec;
	int r;

	if (argc > 2 || duration_parse(spec, &usec) < 0) {
		(void)fprintf(stderr, "batonctl: drain-leftovers [DURATION], e.g. 30s (try "
				      "'batonctl --help')\n");
		return EXIT_USAGE;
	}
	r = leftovers_drain(usec, &told, &left, cgroup, sizeof(cgroup));
	if (r == -EPERM) {
		(void)fprintf(stderr,
			      "batonctl: drain-leftovers: only as ExecStopPost= of a "
			      "systemd service (no $INVOCATION_ID or not a .service cgroup)\n");
		return EXIT_USAGE;
	}
	if (r < 0) {
		(void)fprintf(stderr, "batonctl: drain-leftovers: %s\n", strerror(-r));
		return EXIT_FAILED;
	}
	if (told > 0)
		(void)fprintf(stderr,
			      "batonctl: drain-leftovers: %u process%s left in %s told to drain "
			      "(SIGTERM); %u still there after at most %s\n",
			      told, told == 1 ? "" : "es", cgroup, left, spec);
	return 0;
}

static int parse_since(const char *s, char *buf, size_t size)
{
	char *end;

	errno = 0;
	if (*s < '0' || *s > '9' || (strtoull(s, &end, 10), errno) || *end || strlen(s) >= size) {
		(void)fprintf(stderr, "batonctl: invalid --since '%s': expected an event number\n",
			      s);
		return -1;
	}
	strcpy(buf, s);
	return 0;
}

int main(int argc, char **argv)
{
	enum { OPT_NAME = 0x100, OPT_JSON, OPT_NO_WAIT, OPT_SINCE };
	static const struct option options[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "no-wait", no_argument, NULL, OPT_NO_WAIT },
		{ "since", required_argument, NULL, OPT_SINCE },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *control = NULL, *name = CONTROL_NAME_DEFAULT, *given = NULL;
	const struct command *cmd;
	char path[108], line[CONTROL_REQUEST_MAX], since[32] = "";
	_cleanup_free_ char *id = NULL, *reply = NULL;
	bool json = false, no_wait = false, quiet = false, flag;
	int opt, r;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":c:qhV", options, NULL)) >= 0) {
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
		case OPT_SINCE:
			if (parse_since(optarg, since, sizeof(since)) < 0)
				return EXIT_USAGE;
			break;
		case 'q':
			quiet = true;
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
	if (strcmp(argv[optind], "drain-leftovers") == 0)
		return drain_leftovers(argc - optind, argv + optind);
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
	/* --json goes with every command; the others only with the command that names them. */
	if (no_wait)
		given = "--no-wait";
	else if (since[0])
		given = "--since";
	if (given && (!cmd->flag || strcmp(cmd->flag, given) != 0)) {
		(void)fprintf(stderr, "batonctl: %s does not take %s\n", cmd->name, given);
		return EXIT_USAGE;
	}
	flag = given || (json && cmd->flag && strcmp(cmd->flag, "--json") == 0);
	r = command_format(cmd,
			   cmd->arg_name ? argv[optind + 1]
			   : since[0]	 ? since
					 : NULL,
			   flag, line, sizeof(line));
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
	if (cmd->id == COMMAND_EVENTS)
		return stream(path, line);
	/* status and identify name batond themselves; every other reply does not. */
	if (cmd->id != COMMAND_STATUS && cmd->id != COMMAND_IDENTIFY && (json || !quiet)) {
		id = identify(path, json);
		if (!json && id)
			(void)fprintf(stderr, "batonctl: %s: %s\n", path, id);
		else if (!json && !quiet)
			(void)fprintf(stderr, "batonctl: the batond on %s did not say who it is\n",
				      path);
	}
	if (ask(path, line, &reply) < 0)
		return EXIT_FAILED;
	return print_reply(reply, json && !flag && cmd->id != COMMAND_IDENTIFY, id);
}
