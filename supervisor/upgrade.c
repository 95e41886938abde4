/* SPDX-License-Identifier: MIT */
/* upgrade.c - batond replacing its own image: preflight, handoff across execve(), takeover. */
#include "batond.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"
#include "cleanup.h"
#include "control.h"
#include "log.h"
#include "loop.h"
#include "procscan.h"
#include "upgrade_state.h"

extern char **environ;

#define UPGRADE_CHECK_USEC (10 * 1000 * 1000) /* limit on the new binary's preflight answer */

static int fd_set_cloexec(int fd, bool on)
{
	int flags = fcntl(fd, F_GETFD);

	if (flags < 0)
		return -errno;
	if (fcntl(fd, F_SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC) < 0)
		return -errno;
	return 0;
}

#define UPGRADE_ENV_EVENT_SEQ "BATON_EVENT_SEQ" /* the next event's number, for the new image */
/* What status says of the last reload: "GEN OK USEC TEXT" (USEC on CLOCK_MONOTONIC, which an
 * exec keeps). In the environment, not the state: the minimal handoff carries it too, and an
 * image that does not know it ignores it. */
#define UPGRADE_ENV_LAST_RELOAD "BATON_LAST_RELOAD"

static void upgrade_event(struct batond *b, enum eventlog_type type, int level, const char *fmt,
			  ...) __attribute__((format(printf, 4, 5)));

static void upgrade_event(struct batond *b, enum eventlog_type type, int level, const char *fmt,
			  ...)
{
	char line[4400];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	batond_event(b, &(struct eventlog_event){ .type = type, .level = level, .message = line });
}

static void upgrade_took_over(struct batond *b, unsigned n_workers, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* In the new image: the event that says it took over (the numbers went on, see below). */
static void upgrade_took_over(struct batond *b, unsigned n_workers, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	batond_event(b, &(struct eventlog_event){ .type = EVENT_UPGRADED,
						  .level = LOG_NOTICE,
						  .generation = rollout_serving_gen(b->rollout),
						  .count = n_workers,
						  .message = line });
}

/* Right before execve(): where the new image goes on numbering events, and the last reload. */
static void pass_event_seq(struct batond *b)
{
	char num[32], last[sizeof(b->last_reload_text) + 64];

	if (b->events) {
		(void)snprintf(num, sizeof(num), "%" PRIu64, eventlog_next_seq(b->events));
		(void)setenv(UPGRADE_ENV_EVENT_SEQ, num, 1);
	}
	if (b->last_reload_usec) {
		(void)snprintf(last, sizeof(last), "%u %d %" PRIu64 " %s", b->last_reload_gen,
			       b->last_reload_ok ? 1 : 0, b->last_reload_usec, b->last_reload_text);
		(void)setenv(UPGRADE_ENV_LAST_RELOAD, last, 1);
	}
}

void upgrade_take_last_reload(struct batond *b)
{
	const char *e = getenv(UPGRADE_ENV_LAST_RELOAD);
	unsigned gen;
	int ok, at = 0;
	uint64_t usec;

	/* Anything malformed is dropped: status then says "none", which is all it knows. */
	if (e && sscanf(e, "%u %d %" SCNu64 " %n", &gen, &ok, &usec, &at) == 3 && at > 0 &&
	    usec > 0 && usec <= loop_now_usec()) {
		b->last_reload_gen = gen;
		b->last_reload_ok = ok != 0;
		b->last_reload_usec = usec;
		(void)snprintf(b->last_reload_text, sizeof(b->last_reload_text), "%s", e + at);
	}
	(void)unsetenv(UPGRADE_ENV_LAST_RELOAD);
}

uint64_t upgrade_event_seq(void)
{
	const char *e = getenv(UPGRADE_ENV_EVENT_SEQ);
	uint64_t seq = e ? strtoull(e, NULL, 10) : 0;

	(void)unsetenv(UPGRADE_ENV_EVENT_SEQ);
	return seq ? seq : 1;
}

/*
 * The minimal handoff, understood by every batond whatever its state version (docs/DESIGN.md):
 * BATON_HANDOFF_LISTENERS="fd:name,..." and BATON_HANDOFF_WORKERS="pid:pgid:r|d,..." (ready or
 * draining). The new batond adopts the ready workers as the serving generation, the others as
 * draining, and at once rolls a fresh generation that drains the adopted one.
 */
static int exec_minimal(struct batond *b)
{
	_cleanup_free_ char *ls = NULL, *ws = NULL;
	size_t ls_size = 0, ws_size = 0;
	FILE *lf = open_memstream(&ls, &ls_size);
	FILE *wf = open_memstream(&ws, &ws_size);
	bool first = true;
	int r;

	if (!lf || !wf) {
		if (lf)
			(void)fclose(lf);
		if (wf)
			(void)fclose(wf);
		return log_error_errno(-ENOMEM, "upgrade: minimal handoff");
	}
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		(void)fprintf(lf, "%s%d:%s", i ? "," : "", b->cfg.listeners[i].fd,
			      b->cfg.listeners[i].name);
	for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);
		char kind;

		if (w->state == ROLLOUT_W_STARTING || w->state == ROLLOUT_W_READY)
			kind = 'r';
		else if (w->state == ROLLOUT_W_DRAINING || w->state == ROLLOUT_W_KILLED)
			kind = 'd';
		else
			continue;
		(void)fprintf(wf, "%s%d:%d:%c", first ? "" : ",", w->pid, w->pgid, kind);
		first = false;
	}
	r = fclose(lf) | fclose(wf);
	if (r != 0 || !ls || !ws)
		return log_error_errno(-ENOMEM, "upgrade: minimal handoff");
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		(void)fd_set_cloexec(b->cfg.listeners[i].fd, false);
	(void)setenv("BATON_HANDOFF_LISTENERS", ls, 1);
	(void)setenv("BATON_HANDOFF_WORKERS", ws, 1);
	upgrade_event(b, EVENT_UPGRADE_STARTED, LOG_NOTICE,
		      "upgrade: executing %s with the minimal handoff", b->self_path);
	pass_event_seq(b);
	(void)execve(b->self_path, b->argv, environ);
	r = -errno;
	(void)unsetenv(UPGRADE_ENV_EVENT_SEQ);
	(void)unsetenv(UPGRADE_ENV_LAST_RELOAD);
	(void)unsetenv("BATON_HANDOFF_LISTENERS");
	(void)unsetenv("BATON_HANDOFF_WORKERS");
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		(void)fd_set_cloexec(b->cfg.listeners[i].fd, true);
	return log_error_errno(r, "upgrade: exec %s: this batond keeps serving", b->self_path);
}

/* Everything the new image must keep open, CLOEXEC or not. */
static int keep_fds(struct batond *b, int state_fd, int fallback_fd, bool keep)
{
	int r = 0;

	for (size_t i = 0; i < b->cfg.n_listeners && r >= 0; i++)
		r = fd_set_cloexec(b->cfg.listeners[i].fd, !keep);
	if (r >= 0)
		r = fd_set_cloexec(b->notify_fd, !keep);
	if (r >= 0 && b->control)
		r = fd_set_cloexec(control_fd(b->control), !keep);
	for (unsigned i = 0; r >= 0 && i < ROLLOUT_MAX_RECORDS; i++)
		if (channel_is_settled(b->extra[i].ch))
			r = fd_set_cloexec(channel_fd(b->extra[i].ch), !keep);
	if (r >= 0 && state_fd >= 0)
		r = fd_set_cloexec(state_fd, !keep);
	if (r >= 0 && fallback_fd >= 0)
		r = fd_set_cloexec(fallback_fd, !keep);
	return r;
}

static void snapshot(struct batond *b, struct upgrade_state *st)
{
	unsigned serving = rollout_serving_gen(b->rollout);

	st->next_gen = 0;
	st->notify_fd = b->notify_fd;
	st->control_fd = b->control ? control_fd(b->control) : -1;
	memcpy(st->notify_address, b->notify_address, sizeof(st->notify_address));
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		const struct listener *l = &b->cfg.listeners[i];

		st->listeners[i] = (struct upgrade_listener){
			.fd = l->fd,
			.owns_path = l->owns_path,
			.path_dev = l->path_dev,
			.path_ino = l->path_ino,
		};
		memcpy(st->listeners[i].name, l->name, sizeof(st->listeners[i].name));
	}
	st->n_listeners = b->cfg.n_listeners;
	for (unsigned i = 0; i < ROLLOUT_MAX_RECORDS; i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);

		if (w->state == ROLLOUT_W_FREE)
			continue;
		if (w->gen >= st->next_gen)
			st->next_gen = w->gen + 1;
		st->workers[st->n_workers++] = (struct upgrade_worker){
			.w = *w,
			.serving = w->gen == serving,
			/* A channel mid-conversation is not carried: its worker drains and respawns. */
			.channel_fd = channel_is_settled(b->extra[i].ch)
					      ? channel_fd(b->extra[i].ch)
					      : -1,
		};
	}
}

/* The full handoff: the state in a sealed memfd, every fd kept, the binary on disk exec'd. */
static int exec_full(struct batond *b)
{
	_cleanup_free_ struct upgrade_state *st = NULL;
	_cleanup_free_ char *text = NULL;
	_cleanup_close_ int state_fd = -1, fallback_fd = -1;
	char num[16];
	int n, r;

	st = calloc(1, sizeof(*st));
	text = malloc(UPGRADE_STATE_MAX);
	if (!st || !text)
		return log_error_errno(-ENOMEM, "upgrade: snapshot");
	snapshot(b, st);
	n = upgrade_state_format(st, text, UPGRADE_STATE_MAX);
	if (n < 0)
		return log_error_errno(n, "upgrade: write state");
	state_fd = upgrade_state_seal(text, (size_t)n);
	if (state_fd < 0)
		return log_error_errno(state_fd, "upgrade: seal state");
	/* The running image, kept by fd: a new one that cannot read the state execs it back. */
	fallback_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	r = keep_fds(b, state_fd, fallback_fd, true);
	if (r < 0) {
		log_error_errno(r, "upgrade: keep fds across exec");
		(void)keep_fds(b, state_fd, fallback_fd, false);
		return r;
	}
	(void)snprintf(num, sizeof(num), "%d", state_fd);
	(void)setenv(UPGRADE_ENV_STATE, num, 1);
	if (fallback_fd >= 0) {
		(void)snprintf(num, sizeof(num), "%d", fallback_fd);
		(void)setenv(UPGRADE_ENV_FALLBACK, num, 1);
	}
	upgrade_event(b, EVENT_UPGRADE_STARTED, LOG_NOTICE,
		      "upgrade: executing %s with %zu listeners and %zu workers", b->self_path,
		      st->n_listeners, st->n_workers);
	pass_event_seq(b);
	/* Signals stay blocked and pending across execve(): no SIGCHLD is lost meanwhile. */
	(void)execve(b->self_path, b->argv, environ);
	r = -errno;
	(void)unsetenv(UPGRADE_ENV_EVENT_SEQ);
	(void)unsetenv(UPGRADE_ENV_LAST_RELOAD);
	(void)unsetenv(UPGRADE_ENV_STATE);
	(void)unsetenv(UPGRADE_ENV_FALLBACK);
	(void)keep_fds(b, state_fd, fallback_fd, false);
	return log_error_errno(r, "upgrade: exec %s: this batond keeps serving", b->self_path);
}

static bool upgrade_refused_now(struct batond *b)
{
	if (!rollout_starting_gen(b->rollout) && !stop_begun(b))
		return false;
	upgrade_event(b, EVENT_UPGRADE_REFUSED, LOG_WARNING,
		      "upgrade: refused while a generation starts or batond stops; send SIGUSR2 "
		      "again later");
	return true;
}

static void preflight_end(struct batond *b)
{
	b->preflight_io = sd_event_source_disable_unref(b->preflight_io);
	b->preflight_timer = sd_event_source_disable_unref(b->preflight_timer);
	b->preflight_fd = safe_close(b->preflight_fd);
	if (b->preflight_pidfd >= 0) {
		/* By pidfd: the reaper may have taken the pid already, and it may be reused. */
		if (pidfd_send_signal(b->preflight_pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
			log_warning_errno(-errno, "upgrade: kill the preflight, ignoring");
		b->preflight_pidfd = safe_close(b->preflight_pidfd);
	}
}

/*
 * The new binary answered "NEW --upgrade-check ARGS..." (or did not, in time): it must parse our
 * command line and speak our state version before we exec it.
 */
static void preflight_done(struct batond *b, bool timed_out)
{
	char expect[64], *answer = b->preflight_answer;
	int version;

	answer[b->preflight_len] = '\0';
	preflight_end(b);
	if (upgrade_refused_now(b))
		return;
	(void)snprintf(expect, sizeof(expect), "baton-upgrade-ok %d\n", UPGRADE_STATE_VERSION);
	if (strcmp(answer, expect) == 0) {
		(void)exec_full(b);
		return;
	}
	/* A batond of another state version: it can still take the minimal handoff. */
	if (sscanf(answer, "baton-upgrade-ok %d", &version) == 1 && version > 0) {
		log_notice("upgrade %s: the new binary keeps state version %d, this one %d: "
			   "handing over listeners and workers only; a new generation follows",
			   b->self_path, version, UPGRADE_STATE_VERSION);
		(void)exec_minimal(b);
		return;
	}
	upgrade_event(b, EVENT_UPGRADE_REFUSED, LOG_ERR,
		      "upgrade %s: the new binary answered '%.*s' to %s%s, expected '%.*s'; "
		      "refused, this batond keeps serving",
		      b->self_path, (int)strcspn(answer, "\n"), answer, UPGRADE_CHECK_OPTION,
		      timed_out ? " (timed out)" : "", (int)strcspn(expect, "\n"), expect);
}

static int on_preflight_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct batond *b = userdata;
	size_t room = sizeof(b->preflight_answer) - 1 - b->preflight_len;
	ssize_t n;

	(void)s;
	(void)revents;
	n = read(fd, b->preflight_answer + b->preflight_len, room);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n > 0)
		b->preflight_len += (size_t)n;
	/* EOF, an error or a full buffer: the answer is complete. */
	if (n <= 0 || (size_t)n == room)
		preflight_done(b, false);
	return 0;
}

static int on_preflight_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s;
	(void)usec;
	preflight_done(userdata, true);
	return 0;
}

/* Starts "NEW --upgrade-check ARGS..." with its stdout on a pipe watched by the loop. */
static int preflight_start(struct batond *b)
{
	_cleanup_free_ char **argv = NULL;
	_cleanup_close_ int rd = -1, wr = -1, pidfd = -1;
	size_t argc = 0;
	int p[2], r;
	pid_t pid;

	while (b->argv[argc])
		argc++;
	argv = calloc(argc + 2, sizeof(char *));
	if (!argv)
		return -ENOMEM;
	argv[0] = b->argv[0];
	argv[1] = (char *)UPGRADE_CHECK_OPTION;
	for (size_t i = 1; i < argc; i++)
		argv[i + 1] = b->argv[i];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	rd = p[0];
	wr = p[1];
	/* Only our end is non-blocking: the new binary writes to a plain pipe. */
	if (fcntl(rd, F_SETFL, O_NONBLOCK) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		sigset_t none;

		(void)sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		if (dup2(wr, 1) < 0)
			_exit(127);
		(void)execve(b->self_path, argv, environ);
		_exit(127);
	}
	/* Not reaped before this: only the loop's SIGCHLD handler reaps, and it is not running. */
	pidfd = pidfd_open(pid, 0);
	if (pidfd < 0) {
		r = -errno;
		(void)kill(pid, SIGKILL);
		return r;
	}
	wr = safe_close(wr);
	r = sd_event_add_io(b->event, &b->preflight_io, rd, EPOLLIN, on_preflight_io, b);
	if (r >= 0)
		r = sd_event_add_time_relative(b->event, &b->preflight_timer, CLOCK_MONOTONIC,
					       UPGRADE_CHECK_USEC, 1000, on_preflight_timer, b);
	b->preflight_fd = TAKE_FD(rd);
	b->preflight_pidfd = TAKE_FD(pidfd);
	b->preflight_len = 0;
	if (r < 0)
		preflight_end(b);
	return r;
}

int upgrade_request(struct batond *b)
{
	int r;

	if (upgrade_refused_now(b))
		return -EAGAIN;
	if (b->preflight_pidfd >= 0) {
		log_notice("upgrade: already asking %s whether it can take over", b->self_path);
		return -EALREADY;
	}
	r = preflight_start(b);
	if (r < 0)
		return log_error_errno(r,
				       "upgrade %s: start the preflight; refused, this batond "
				       "keeps serving",
				       b->self_path);
	return 0;
}

void upgrade_fall_back(struct batond *b)
{
	const char *e = getenv(UPGRADE_ENV_FALLBACK);
	int fd = e ? atoi(e) : -1;

	if (fd < 0)
		return;
	(void)unsetenv(UPGRADE_ENV_FALLBACK);
	log_error("upgrade: falling back to the previous batond image");
	(void)fexecve(fd, b->argv, environ);
	log_error_errno(-errno, "upgrade: exec the previous image");
}

int upgrade_take_listener(struct batond *b, int fd, const char *name, bool owns_path, dev_t dev,
			  ino_t ino)
{
	struct listener got, *l = NULL;
	int r;

	(void)fd_set_cloexec(fd, true);
	r = listener_from_fd(fd, name, &got);
	if (r < 0)
		return log_error_errno(r, "take over listener %s (fd %d)", name, fd);
	got.inherited = false;
	got.owns_path = owns_path;
	got.path_dev = dev;
	got.path_ino = ino;
	for (size_t j = 0; j < b->cfg.n_listeners && !l; j++)
		if (b->cfg.listeners[j].fd < 0 && strcmp(b->cfg.listeners[j].name, name) == 0)
			l = &b->cfg.listeners[j];
	if (!l) {
		/* Inherited from systemd, or added with batonctl listen: keep handing it on. */
		if (b->cfg.n_listeners >= CONFIG_MAX_LISTENERS)
			return log_error_errno(-E2BIG, "take over listener %s (fd %d)", name, fd);
		l = &b->cfg.listeners[b->cfg.n_listeners++];
	}
	*l = got;
	return 0;
}

/*
 * Whether w's numbers are safe to signal: above 1, not batond's own, and really the worker's
 * (its group leader is the process batond spawned, still batond's child across the exec; or,
 * after MAINPID, the main process is in that group). Returns 0 or a negative errno, logged.
 */
static int adopt_check(const struct rollout_worker *w)
{
	siginfo_t si = { .si_pid = 0 };
	struct procscan_stat st;
	bool leader_ours;

	if (w->pid <= 1 || w->pgid <= 1 || w->pid == getpid() || w->pgid == getpgrp())
		return log_warning_errno(-EINVAL,
					 "upgrade: not adopting pid %d (process group %d): not a "
					 "worker's numbers",
					 w->pid, w->pgid);
	leader_ours = waitid(P_PID, (id_t)w->pgid, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
	if (w->pid == w->pgid
		    ? leader_ours
		    : leader_ours || (procscan_stat(w->pid, &st) == 0 && st.pgrp == w->pgid))
		return 0;
	return log_warning_errno(-ESRCH,
				 "upgrade: not adopting pid %d (process group %d): not batond's "
				 "worker any more",
				 w->pid, w->pgid);
}

/* The minimal handoff (see exec_minimal()): returns 1 if there was one, 0, or -errno. */
static int take_over_minimal(struct batond *b)
{
	const char *ls = getenv("BATON_HANDOFF_LISTENERS");
	const char *ws = getenv("BATON_HANDOFF_WORKERS");
	unsigned n = 0;
	int r;

	if (!ls || !ws)
		return 0;
	for (const char *p = ls; *p;) {
		char name[LISTENER_NAME_MAX + 1];
		int fd, len = 0;

		if (sscanf(p, "%d:%255[^,]%n", &fd, name, &len) != 2 || fd < 0)
			return log_error_errno(-EBADMSG, "upgrade: BATON_HANDOFF_LISTENERS");
		r = upgrade_take_listener(b, fd, name, false, 0, 0);
		if (r < 0)
			return r;
		p += len;
		if (*p == ',')
			p++;
	}
	for (const char *p = ws; *p;) {
		struct rollout_worker w = { .index = 0 };
		char kind;
		int len = 0;

		if (sscanf(p, "%d:%d:%c%n", &w.pid, &w.pgid, &kind, &len) != 3 || w.pid <= 0)
			return log_error_errno(-EBADMSG, "upgrade: BATON_HANDOFF_WORKERS");
		/* Generation 1 serves until the fresh one is ready; 2 holds what was draining. */
		w.gen = kind == 'r' ? 1 : 2;
		w.state = kind == 'r' ? ROLLOUT_W_READY : ROLLOUT_W_DRAINING;
		w.index = n++ % b->cfg.rollout.n_workers;
		w.deadline_usec =
			kind == 'r' ? 0 : loop_now_usec() + b->cfg.rollout.drain_timeout_usec;
		p += len;
		if (*p == ',')
			p++;
		if (adopt_check(&w) < 0)
			continue;
		r = rollout_adopt(b->rollout, &w, kind == 'r');
		if (r < 0)
			return log_error_errno(r, "upgrade: adopt worker pid %d", w.pid);
	}
	rollout_adopt_done(b->rollout, 3);
	(void)unsetenv("BATON_HANDOFF_LISTENERS");
	(void)unsetenv("BATON_HANDOFF_WORKERS");
	b->handoff = true;
	upgrade_took_over(
		b, n,
		"upgrade: took over the minimal handoff: %zu listeners, %u workers; rolling "
		"a fresh generation",
		b->cfg.n_listeners, n);
	return 1;
}

int upgrade_take_over(struct batond *b)
{
	_cleanup_free_ struct upgrade_state *st = NULL;
	_cleanup_free_ char *text = NULL;
	const char *e = getenv(UPGRADE_ENV_STATE);
	const char *f = getenv(UPGRADE_ENV_FALLBACK);
	int state_fd, n, r;

	if (!e)
		return take_over_minimal(b);
	state_fd = atoi(e);
	(void)unsetenv(UPGRADE_ENV_STATE);
	st = calloc(1, sizeof(*st));
	text = malloc(UPGRADE_STATE_MAX);
	if (!st || !text)
		return -ENOMEM;
	n = upgrade_state_read(state_fd, text, UPGRADE_STATE_MAX);
	(void)close(state_fd);
	if (n < 0)
		return log_error_errno(n, "upgrade: read state fd %d", state_fd);
	r = upgrade_state_parse(text, (size_t)n, st);
	if (r < 0)
		return log_error_errno(r, "upgrade: parse state");

	b->notify_fd = st->notify_fd;
	memcpy(b->notify_address, st->notify_address, sizeof(b->notify_address));
	(void)fd_set_cloexec(b->notify_fd, true);
	b->adopted_control_fd = st->control_fd;
	if (st->control_fd >= 0)
		(void)fd_set_cloexec(st->control_fd, true);
	for (size_t i = 0; i < st->n_listeners; i++) {
		const struct upgrade_listener *u = &st->listeners[i];

		r = upgrade_take_listener(b, u->fd, u->name, u->owns_path, u->path_dev,
					  u->path_ino);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < st->n_workers; i++) {
		const struct rollout_worker *w;

		if (adopt_check(&st->workers[i].w) < 0) {
			if (st->workers[i].channel_fd >= 0)
				(void)close(st->workers[i].channel_fd);
			continue;
		}
		r = rollout_adopt(b->rollout, &st->workers[i].w, st->workers[i].serving);
		if (r < 0)
			return log_error_errno(r, "upgrade: adopt worker pid %d",
					       st->workers[i].w.pid);
		w = rollout_find_pid(b->rollout, st->workers[i].w.pid);
		if (w) {
			unsigned id = batond_record_id(b, w);
			struct worker_extra *x = &b->extra[id];

			*x = (struct worker_extra){ .b = b, .id = id, .pid = w->pid };
			/* Made a channel again once the event loop exists (run()). */
			x->adopted_channel_fd = st->workers[i].channel_fd;
			if (x->adopted_channel_fd >= 0)
				(void)fd_set_cloexec(x->adopted_channel_fd, true);
		}
	}
	rollout_adopt_done(b->rollout, st->next_gen);
	if (f) {
		(void)close(atoi(f));
		(void)unsetenv(UPGRADE_ENV_FALLBACK);
	}
	b->adopted = true;
	upgrade_took_over(
		b, (unsigned)st->n_workers,
		"upgrade: took over %zu listeners and %zu workers (serving generation %u)",
		st->n_listeners, st->n_workers, rollout_serving_gen(b->rollout));
	return 1;
}

void upgrade_adopt_channels(struct batond *b)
{
	for (unsigned i = 0; b->adopted && i < ROLLOUT_MAX_RECORDS; i++) {
		struct worker_extra *x = &b->extra[i];
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);
		char label[CHANNEL_LABEL_MAX];
		int r;

		if (w->state == ROLLOUT_W_FREE)
			continue;
		/*
		 * A MAINPID the old image held by pidfd is held again: a descendant of the
		 * worker's group leader, or of batond once the leader is gone (subreaper).
		 */
		if (w->pid != w->pgid && x->b && events_watch_main(b, x, w->pid, w->pgid) <= 0 &&
		    events_watch_main(b, x, w->pid, getpid()) <= 0)
			log_warning(
				"generation %u worker %u: main pid %d cannot be held by a pidfd "
				"again; it is signalled by number",
				w->gen, w->index, w->pid);
		if (x->adopted_channel_fd < 0)
			continue;
		(void)snprintf(label, sizeof(label), "generation %u worker %u (pid %d)", w->gen,
			       w->index, w->pid);
		r = channel_adopt(b->event, x->adopted_channel_fd, w->pid, label, b->cfg.listeners,
				  b->cfg.n_listeners, &events_channel_ops, x, &x->ch);
		x->adopted_channel_fd = -1;
		if (r < 0)
			log_error_errno(r, "%s: take over the channel", label);
	}
}

void upgrade_close(struct batond *b)
{
	preflight_end(b);
}
