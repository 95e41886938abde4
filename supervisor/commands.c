/* SPDX-License-Identifier: MIT */
/* commands.c - what batond does for each control request, and how a waiting batonctl hears. */
#include "batond.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "channel.h"
#include "cleanup.h"
#include "command_table.h"
#include "control.h"
#include "fdpass.h"
#include "fdsock.h"
#include "log.h"
#include "loop.h"

typedef void (*command_handler)(struct batond *b, struct control_client *cl, const char *arg,
				bool flag);

/* "ok", then body and end; body NULL means it could not be made: out of memory. */
static void reply_ok(struct control_client *cl, const char *body, const char *end)
{
	_cleanup_free_ char *text = NULL;

	if (!body || asprintf(&text, "ok\n%s%s", body, end) < 0) {
		text = NULL;
		control_reply(cl, "error out of memory\n");
		return;
	}
	control_reply(cl, text);
}

static void do_status(struct batond *b, struct control_client *cl, const char *arg, bool json)
{
	_cleanup_free_ char *body = status_render(b, json);

	(void)arg;
	reply_ok(cl, body, "");
}

static void do_reload(struct batond *b, struct control_client *cl, const char *arg, bool nowait)
{
	(void)arg;
	if (stop_begun(b)) {
		control_reply(cl, "failed batond is stopping\n");
		return;
	}
	if (nowait)
		control_reply(cl, "ok reload requested\n");
	else
		control_client_set_data(cl, COMMAND_WAIT_NEXT);
	log_info("control: reload requested");
	batond_feed_simple(b, ROLLOUT_RELOAD, false);
}

static void do_stop(struct batond *b, struct control_client *cl, const char *arg, bool flag)
{
	(void)arg;
	(void)flag;
	control_reply(cl, "ok stopping\n");
	log_info("control: stop requested");
	if (!stop_begun(b))
		stop_request(b, false);
}

static void do_upgrade(struct batond *b, struct control_client *cl, const char *arg, bool flag)
{
	(void)arg;
	(void)flag;
	/* Written before the exec; the new image does not know this connection. */
	control_reply(cl, "ok upgrading\n");
	log_info("control: upgrade requested");
	/* Returns if the upgrade did not happen (logged why) or waits for the preflight. */
	(void)upgrade_request(b);
}

/* batonctl listen [NAME=]ADDRESS: bound now, handed to the next generation. */
static void do_listen(struct batond *b, struct control_client *cl, const char *arg, bool flag)
{
	char reply[LISTENER_SPEC_MAX + LISTENER_NAME_MAX + 128];
	struct listener l;
	int r;

	(void)flag;
	if (b->cfg.n_listeners >= CONFIG_MAX_LISTENERS) {
		control_reply(cl, "failed too many listeners\n");
		return;
	}
	r = listener_parse(arg, (unsigned)b->cfg.n_listeners, &l);
	if (r < 0) {
		(void)snprintf(reply, sizeof(reply), "failed invalid listen address '%s': %s\n",
			       arg,
			       r == -EADDRNOTAVAIL ? "the host does not resolve" : strerror(-r));
		control_reply(cl, reply);
		return;
	}
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		if (strcmp(b->cfg.listeners[i].name, l.name) == 0) {
			(void)snprintf(reply, sizeof(reply), "failed listener name '%s' in use\n",
				       l.name);
			control_reply(cl, reply);
			return;
		}
	}
	r = listener_bind(&l, b->cfg.backlog);
	if (r < 0) {
		log_error_errno(r, "listen %s", l.spec);
		(void)snprintf(reply, sizeof(reply), "failed listen %s: %s\n", l.spec,
			       strerror(-r));
		control_reply(cl, reply);
		return;
	}
	b->cfg.listeners[b->cfg.n_listeners++] = l;
	batond_listeners_changed(b);
	(void)snprintf(reply, sizeof(reply),
		       "listening on %s (%s): added; workers get it at the next generation", l.spec,
		       l.name);
	batond_event(b, &(struct eventlog_event){ .type = EVENT_LISTENER_ADDED,
						  .level = LOG_INFO,
						  .listener = l.name,
						  .address = l.spec,
						  .message = reply });
	(void)snprintf(reply, sizeof(reply),
		       "ok listening on %s (%s); workers get it at the next reload\n", l.spec,
		       l.name);
	control_reply(cl, reply);
}

static void do_retire(struct batond *b, struct control_client *cl, const char *name, bool flag)
{
	(void)flag;
	stop_retire(b, cl, name);
}

static void do_version(struct batond *b, struct control_client *cl, const char *arg, bool flag)
{
	(void)b;
	(void)arg;
	(void)flag;
	control_reply(cl, "ok batond " BATON_VERSION "\n");
}

/* batonctl events [--since SEQ]: a stream of JSON lines until the client hangs up. */
static void do_events(struct batond *b, struct control_client *cl, const char *since, bool flag)
{
	uint64_t seq = 0;
	char *end;

	if (!b->events) {
		control_reply(cl, "failed no event log (out of memory at start)\n");
		return;
	}
	if (flag) {
		errno = 0;
		seq = strtoull(since, &end, 10);
		if (*since < '0' || *since > '9' || *end || errno) {
			control_reply(cl, "error invalid --since: expected an event number\n");
			return;
		}
	}
	batond_events_stream(b, cl, flag, seq);
}

static void do_identify(struct batond *b, struct control_client *cl, const char *arg, bool json)
{
	_cleanup_free_ char *id = status_identity(b, json);

	(void)arg;
	reply_ok(cl, id, "\n");
}

/* Indexed by command_table's ids: a request without a handler here fails the unit test. */
static const command_handler handlers[COMMAND__MAX] = {
	[COMMAND_STATUS] = do_status,	  [COMMAND_RELOAD] = do_reload,
	[COMMAND_STOP] = do_stop,	  [COMMAND_UPGRADE] = do_upgrade,
	[COMMAND_LISTEN] = do_listen,	  [COMMAND_RETIRE] = do_retire,
	[COMMAND_VERSION] = do_version,	  [COMMAND_EVENTS] = do_events,
	[COMMAND_IDENTIFY] = do_identify,
};

bool commands_has_handler(enum command_id id)
{
	return id < COMMAND__MAX && handlers[id] != NULL;
}

/* One batonctl request. The reply's first word: ok, failed (exit 1) or error (exit 2). */
static void on_request(void *userdata, struct control_client *cl, const char *line)
{
	struct batond *b = userdata;
	const struct command *cmd;
	const char *arg;
	bool flag;

	if (command_parse(line, &cmd, &arg, &flag) < 0 || !handlers[cmd->id]) {
		char names[COMMAND_NAMES_MAX], reply[COMMAND_NAMES_MAX + 64];

		command_names(names, sizeof(names));
		(void)snprintf(reply, sizeof(reply), "error unknown request (%s)\n", names);
		control_reply(cl, reply);
		return;
	}
	handlers[cmd->id](b, cl, arg, flag);
}

struct waiter_match {
	const struct rollout_action *a;
	const char *line;
};

static void answer_waiter(struct control_client *cl, void *userdata)
{
	const struct waiter_match *m = userdata;
	long want = control_client_get_data(cl);
	char reply[512];

	switch (m->a->report) {
	case ROLLOUT_GEN_STARTING:
		if (want == COMMAND_WAIT_NEXT)
			control_client_set_data(cl, (long)m->a->gen);
		return;
	case ROLLOUT_GEN_READY:
		if (want != (long)m->a->gen)
			return;
		(void)snprintf(reply, sizeof(reply), "ok %s\n", m->line);
		break;
	case ROLLOUT_RELOAD_FAILED:
		if (want != (long)m->a->gen && m->a->reason != ROLLOUT_REASON_STOPPED)
			return;
		(void)snprintf(reply, sizeof(reply), "failed %s\n", m->line);
		break;
	case ROLLOUT_STOPPING:
		(void)snprintf(reply, sizeof(reply), "failed batond is stopping\n");
		break;
	default:
		return;
	}
	control_reply(cl, reply);
}

void commands_on_report(struct batond *b, const struct rollout_action *a, const char *line)
{
	struct waiter_match m = { .a = a, .line = line };

	if ((a->report == ROLLOUT_GEN_READY && a->reload) || a->report == ROLLOUT_RELOAD_FAILED) {
		b->last_reload_gen = a->gen;
		b->last_reload_ok = a->report == ROLLOUT_GEN_READY;
		b->last_reload_usec = loop_now_usec();
		(void)snprintf(b->last_reload_text, sizeof(b->last_reload_text), "%s", line);
	}
	if (a->report == ROLLOUT_GEN_STARTING && !a->reload)
		return;
	control_foreach_waiting(b->control, answer_waiter, &m);
}

void batond_listeners_changed(struct batond *b)
{
	adopt_record_write(b);
	for (unsigned i = 0; b->extra && i < ROLLOUT_MAX_RECORDS; i++)
		if (b->extra[i].ch)
			channel_set_listeners(b->extra[i].ch, b->cfg.listeners, b->cfg.n_listeners);
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		struct stat st;

		b->listen_fds[i] = b->cfg.listeners[i].fd;
		b->listen_inodes[i] = fstat(b->listen_fds[i], &st) == 0 ? st.st_ino : 0;
	}
	if (b->fdsock) {
		int r;

		b->fdsock = fdsock_free(b->fdsock);
		r = fdsock_new(b->event, b->cfg.fd_socket, b->cfg.listeners, b->cfg.n_listeners,
			       b->cfg.fd_allow_uids, b->cfg.n_fd_allow_uids, b->cfg.fd_allow_gids,
			       b->cfg.n_fd_allow_gids, &b->fdsock);
		if (r < 0)
			log_error_errno(r, "fd socket %s", b->cfg.fd_socket);
	}
}

/* The default directory may not exist yet (/run/baton, $XDG_RUNTIME_DIR/baton). */
static void make_parent_dir(const char *path)
{
	char dir[PATH_MAX];
	char *slash;

	if (strlen(path) >= sizeof(dir))
		return;
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		(void)mkdir(dir, 0755);
	}
}

/* Who answers on the Unix socket at path: its pid and command name, for the refusal below. */
static void socket_owner(const char *path, char *buf, size_t size)
{
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ucred cred;
	char comm_path[64], comm[32] = "?";
	FILE *f;

	(void)snprintf(buf, size, "another process");
	if (fd < 0 || strlen(path) >= sizeof(sa.sun_path))
		return;
	strcpy(sa.sun_path, path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || proto_peer_cred(fd, &cred) < 0)
		return;
	(void)snprintf(comm_path, sizeof(comm_path), "/proc/%d/comm", (int)cred.pid);
	f = fopen(comm_path, "re");
	if (f) {
		if (fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = '\0';
		(void)fclose(f);
	}
	(void)snprintf(buf, size, "pid %d (%s)", (int)cred.pid, comm);
}

int commands_open(struct batond *b)
{
	char owner[96];
	int r;

	if (b->cfg.no_control)
		return 0;
	if (b->cfg.control) {
		if (strlen(b->cfg.control) >= sizeof(b->control_path))
			return log_error_errno(-ENAMETOOLONG, "control socket %s", b->cfg.control);
		strcpy(b->control_path, b->cfg.control);
	} else {
		r = control_default_path(b->cfg.name ?: CONTROL_NAME_DEFAULT, b->control_path,
					 sizeof(b->control_path));
		if (r < 0)
			return log_error_errno(
				r, "control socket: no runtime directory known "
				   "($RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR); give -c PATH, "
				   "or --no-control to run without one");
		make_parent_dir(b->control_path);
	}
	/* control_new() owns the adopted fd from here, even when it fails. */
	r = control_new(b->event, b->control_path, b->adopted_control_fd, on_request, b,
			&b->control);
	b->adopted_control_fd = -1;
	if (r == -EADDRINUSE) {
		/* Running unreachable would leave batonctl talking to the other one. */
		socket_owner(b->control_path, owner, sizeof(owner));
		log_error("control socket %s is in use by %s: give this batond another --name or "
			  "-c PATH, or --no-control to run without one",
			  b->control_path, owner);
		return r;
	}
	if (r < 0)
		return log_error_errno(r, "control socket %s", b->control_path);
	return 0;
}

void commands_close(struct batond *b)
{
	b->control = control_free(b->control, false);
	b->fdsock = fdsock_free(b->fdsock);
}
