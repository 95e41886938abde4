/* SPDX-License-Identifier: MIT */
/* stop.c - the two-stage close of every listener (stop) or of one (retire): filters, counts. */
#include "batond.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "control.h"
#include "listen_close.h"
#include "log.h"
#include "loop.h"
#include "sysd.h"

/*
 * Stage 1 for one listener: refuse new connections, keep what is queued (common/listen_close.c
 * does the fd-level work, shared with libbaton). What stays here is what only batond knows:
 * whether a Unix socket file is its own to remove. Returns 0, -EOPNOTSUPP (abstract Unix
 * socket: no way to refuse connects and keep the queue) or a negative errno.
 */
static int refuse_new(struct listener *l)
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

/* Counts what waits on the watched listeners; a failed look counts 0 and is logged. */
static void count_pending(struct quiesce_watch *w, unsigned *ret_queued, unsigned *ret_half_open)
{
	struct batond *b = w->b;
	unsigned queued = 0, half_open = 0;

	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		const struct listener *l = &b->cfg.listeners[i];
		unsigned q, h;
		int r;

		if (w->only >= 0 && (size_t)w->only != i)
			continue;
		r = listen_close_pending(l->fd, &q, &h);
		if (r < 0) {
			/* Unknown is not "still busy": never hold a close on a failed look. */
			log_warning_errno(r, "count connections waiting on %s, ignoring", l->spec);
			continue;
		}
		queued += q;
		half_open += h;
	}
	*ret_queued = queued;
	*ret_half_open = half_open;
}

/* Stage 2: looks at the queues; at zero or at the deadline, calls w->done. */
static void watch_look(struct quiesce_watch *w)
{
	unsigned queued, half_open;
	uint64_t next = 0;
	enum quiesce_result res;
	int r;

	count_pending(w, &queued, &half_open);
	res = quiesce_look(&w->q, loop_now_usec(), queued + half_open, &next);
	if (res == QUIESCE_WAIT) {
		r = loop_timer_arm(w->timer, next);
		if (r >= 0)
			return;
		/* No timer, no next look: finish now rather than hang. */
		log_error_errno(r, "arm the queue timer");
		w->q.active = false;
		res = queued + half_open > 0 ? QUIESCE_TIMED_OUT : QUIESCE_EMPTY;
	}
	w->done(w->b, res, queued, half_open);
}

static int on_watch_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s;
	(void)usec;
	watch_look(userdata);
	return 0;
}

static void watch_begin(struct quiesce_watch *w, int only, uint64_t timeout_usec)
{
	w->only = only;
	quiesce_begin(&w->q, loop_now_usec(), timeout_usec);
	watch_look(w);
}

static void stop_queues_done(struct batond *b, enum quiesce_result res, unsigned queued,
			     unsigned half_open)
{
	uint64_t usec = loop_now_usec() - b->stop_watch.q.started_usec;
	char line[256];

	if (res == QUIESCE_TIMED_OUT)
		(void)snprintf(line, sizeof(line),
			       "stop: %u queued and %u half-open connections left at the stop "
			       "timeout; closing resets them",
			       queued, half_open);
	else
		(void)snprintf(line, sizeof(line),
			       "stop: every queue empty after %" PRIu64 "ms; draining the workers",
			       usec / 1000);
	batond_event(b, &(struct eventlog_event){ .type = EVENT_STOP_QUEUES_DONE,
						  .level = res == QUIESCE_TIMED_OUT ? LOG_WARNING
										    : LOG_INFO,
						  .queued = queued,
						  .half_open = half_open,
						  .timed_out = res == QUIESCE_TIMED_OUT,
						  .usec = usec,
						  .message = line });
	if (stop_plan_queues_done(&b->stop_stage) == STOP_STEP_DRAIN)
		batond_feed_simple(b, ROLLOUT_STOP, false);
}

/* Stage 1 on every listener, then stage 2. */
static void stop_refuse_new(struct batond *b)
{
	char line[160];
	unsigned n = 0;

	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		struct listener *l = &b->cfg.listeners[i];
		int r = refuse_new(l);

		if (r == -EOPNOTSUPP)
			log_notice("stop: %s cannot refuse new connections (abstract Unix socket); "
				   "they are served until the workers drain",
				   l->spec);
		else if (r < 0)
			log_warning_errno(r, "stop: refuse new connections on %s, ignoring",
					  l->spec);
		else
			n++;
		if (r == 0 && l->kind != LISTENER_UNIX)
			b->stop_filtered = true;
	}
	(void)snprintf(
		line, sizeof(line),
		"stop: new connections refused on %u of %zu listeners; serving what is queued", n,
		b->cfg.n_listeners);
	batond_event(b, &(struct eventlog_event){ .type = EVENT_STOP_REFUSING,
						  .level = LOG_INFO,
						  .count = n,
						  .message = line });
	watch_begin(&b->stop_watch, -1, b->cfg.stop_timeout_usec);
}

/* Does the service manager keep l after batond exits (the fd store, a socket unit)? */
static bool manager_keeps(const struct batond *b, const struct listener *l)
{
	return sysd_fdstore_enabled(&b->cfg) || l->inherited;
}

void stop_release_filters(struct batond *b)
{
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		struct listener *l = &b->cfg.listeners[i];
		struct stop_facts f = { .manager_keeps = manager_keeps(b, l) };
		int r;

		if (l->fd < 0 || l->kind == LISTENER_UNIX ||
		    !stop_plan_release_filter(&f, b->stop_filtered))
			continue;
		/* The next batond detaches it too (bind_all): a failure here loses nothing. */
		r = listen_close_accept_new(l->fd);
		if (r < 0)
			log_warning_errno(r, "stop: take the filter off %s, ignoring", l->spec);
		else
			log_info(
				"stop: new connections to %s (%s) queue again: the service manager "
				"keeps the socket",
				l->spec, l->name);
	}
}

static bool manager_keeps_any(const struct batond *b)
{
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		if (manager_keeps(b, &b->cfg.listeners[i]))
			return true;
	return false;
}

void stop_request(struct batond *b, bool force)
{
	struct stop_facts f = {
		.graceful = b->cfg.stop_mode == CONFIG_STOP_GRACEFUL,
		.serving = rollout_serving_gen(b->rollout) != 0,
		.manager_keeps = manager_keeps_any(b),
	};

	switch (stop_plan_request(&b->stop_stage, force, &f)) {
	case STOP_STEP_NONE:
		break;
	case STOP_STEP_REFUSE_NEW:
		stop_refuse_new(b);
		break;
	case STOP_STEP_DRAIN:
		batond_feed_simple(b, ROLLOUT_STOP, false);
		break;
	case STOP_STEP_KILL:
		b->stop_watch.q.active = false;
		(void)loop_timer_arm(b->stop_watch.timer, 0);
		batond_feed_simple(b, ROLLOUT_STOP, true);
		break;
	}
}

bool stop_begun(const struct batond *b)
{
	return stop_plan_stopping(b->stop_stage);
}

int stop_retiring_index(const struct batond *b)
{
	return b->retire_watch.q.active ? b->retire_watch.only : -1;
}

static void answer_retire(struct control_client *cl, void *userdata)
{
	struct batond *b = userdata;

	if (control_client_get_data(cl) == COMMAND_WAIT_RETIRE)
		control_reply(cl, b->retire_reply);
}

/* Stage 3 of a retire: out of the set, our copy closed, every waiting "retire" answered. */
static void retire_done(struct batond *b, enum quiesce_result res, unsigned queued,
			unsigned half_open)
{
	size_t i = (size_t)b->retire_watch.only;
	struct listener *l = &b->cfg.listeners[i];
	char line[sizeof(b->retire_reply)];

	/*
	 * Workers of running generations still hold their copies, so closing ours resets nothing;
	 * with new SYNs dropped, nothing more arrives before the last of them exits.
	 */
	if (res == QUIESCE_TIMED_OUT)
		(void)snprintf(
			b->retire_reply, sizeof(b->retire_reply),
			"ok retired %s (%s): %u queued and %u half-open left at the timeout\n",
			l->name, l->spec, queued, half_open);
	else
		(void)snprintf(b->retire_reply, sizeof(b->retire_reply),
			       "ok retired %s (%s): queue empty after %" PRIu64 "ms\n", l->name,
			       l->spec, (loop_now_usec() - b->retire_watch.q.started_usec) / 1000);
	(void)snprintf(line, sizeof(line), "%.*s", (int)strcspn(b->retire_reply + 3, "\n"),
		       b->retire_reply + 3);
	batond_event(b, &(struct eventlog_event){ .type = EVENT_LISTENER_RETIRED,
						  .level = LOG_INFO,
						  .listener = l->name,
						  .address = l->spec,
						  .queued = queued,
						  .half_open = half_open,
						  .timed_out = res == QUIESCE_TIMED_OUT,
						  .usec = loop_now_usec() -
							  b->retire_watch.q.started_usec,
						  .message = line });
	listener_close(l);
	memmove(l, l + 1, (b->cfg.n_listeners - i - 1) * sizeof(*l));
	b->cfg.n_listeners--;
	b->retire_watch.only = -1;
	batond_listeners_changed(b);
	/* By data, not by pointer: a client that left meanwhile has been freed. */
	control_foreach_waiting(b->control, answer_retire, b);
}

void stop_retire(struct batond *b, struct control_client *cl, const char *name)
{
	char reply[LISTENER_NAME_MAX + LISTENER_SPEC_MAX + 128];
	struct listener *l;
	int found = -1, r;

	for (size_t i = 0; i < b->cfg.n_listeners && found < 0; i++)
		if (strcmp(b->cfg.listeners[i].name, name) == 0)
			found = (int)i;
	switch (stop_plan_retire(b->stop_stage, b->retire_watch.q.active, found,
				 b->cfg.n_listeners)) {
	case RETIRE_OK:
		break;
	case RETIRE_BUSY:
		control_reply(cl, "failed a retire or a stop is in progress\n");
		return;
	case RETIRE_NO_SUCH:
		(void)snprintf(reply, sizeof(reply), "failed no listener named '%s'\n", name);
		control_reply(cl, reply);
		return;
	case RETIRE_LAST:
		control_reply(cl, "failed the last listener is retired by stopping batond\n");
		return;
	}
	l = &b->cfg.listeners[found];
	r = refuse_new(l);
	if (r < 0 && r != -EOPNOTSUPP) {
		(void)snprintf(reply, sizeof(reply), "failed refuse new connections on %s: %s\n",
			       l->spec, strerror(-r));
		control_reply(cl, reply);
		return;
	}
	(void)snprintf(reply, sizeof(reply),
		       "retire %s (%s): new connections refused; serving what is queued", l->name,
		       l->spec);
	batond_event(b, &(struct eventlog_event){ .type = EVENT_LISTENER_RETIRING,
						  .level = LOG_INFO,
						  .listener = l->name,
						  .address = l->spec,
						  .message = reply });
	control_client_set_data(cl, COMMAND_WAIT_RETIRE);
	watch_begin(&b->retire_watch, found, b->cfg.stop_timeout_usec);
}

const char *stop_refuse_new_problem(int r)
{
	if (r == 0)
		return NULL;
	if (r == -EPERM)
		return "attaching a socket filter needs CAP_NET_ADMIN on this kernel (Operation "
		       "not "
		       "permitted); queued connections are still served, but new ones keep "
		       "arriving until the workers drain and are reset at the close";
	if (r == -EOPNOTSUPP)
		return "no way to refuse connects and keep the queue on this kind of socket "
		       "(abstract Unix); new ones are served until the workers drain";
	return strerror(-r);
}

void stop_check_listeners(const struct batond *b)
{
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		const struct listener *l = &b->cfg.listeners[i];
		int r = listen_close_probe(l->fd);

		if (r == 0)
			continue;
		if (r == -EOPNOTSUPP)
			log_notice("listener %s (%s): a stop cannot refuse new connections: %s",
				   l->spec, l->name, stop_refuse_new_problem(r));
		else
			log_warning("listener %s (%s): a graceful stop cannot refuse new "
				    "connections: %s%s",
				    l->spec, l->name, stop_refuse_new_problem(r),
				    r == -EPERM
					    ? ". Give batond CAP_NET_ADMIN (systemd: "
					      "AmbientCapabilities=CAP_NET_ADMIN) or run it as root"
					    : "");
	}
}

int stop_open(struct batond *b)
{
	struct quiesce_watch *watches[] = { &b->stop_watch, &b->retire_watch };
	int r;

	for (size_t i = 0; i < ELEMENTSOF(watches); i++) {
		struct quiesce_watch *w = watches[i];

		w->b = b;
		w->only = -1;
		r = loop_timer_new(b->event, 1000, on_watch_timer, w, &w->timer);
		if (r < 0)
			return log_error_errno(r, "create the queue timer");
	}
	b->stop_watch.done = stop_queues_done;
	b->retire_watch.done = retire_done;
	return 0;
}

void stop_close(struct batond *b)
{
	b->stop_watch.timer = sd_event_source_unref(b->stop_watch.timer);
	b->retire_watch.timer = sd_event_source_unref(b->retire_watch.timer);
}
