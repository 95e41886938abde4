/* SPDX-License-Identifier: MIT */
/* status.c - batonctl status: one walk over batond's state, rendered as text or JSON. */
#include "status.h"

#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "batond.h"
#include "cleanup.h"
#include "json.h"
#include "control.h"
#include "listen_close.h"
#include "loop.h"

static void format_json(FILE *f, const struct status_view *v)
{
	(void)fprintf(f, "{\"name\":");
	json_write_string(f, v->name);
	(void)fputs(",\"pid_file\":", f);
	if (v->pid_file)
		json_write_string(f, v->pid_file);
	else
		(void)fputs("null", f);
	(void)fprintf(f, ",\"pid_file_pid\":");
	if (v->pid_file_pid > 0)
		(void)fprintf(f, "%d,", v->pid_file_pid);
	else
		(void)fputs("null,", f);
	(void)fprintf(f,
		      "\"version\":\"%s\",\"pid\":%d,\"uptime_sec\":%" PRIu64
		      ",\"serving_generation\":%u,\"starting_generation\":%u,"
		      "\"reload_pending\":%s,\"stopping\":%s,\"last_reload\":",
		      BATON_VERSION, v->pid, v->uptime_sec, v->serving_gen, v->starting_gen,
		      v->reload_pending ? "true" : "false", v->stopping ? "true" : "false");
	if (v->has_last_reload) {
		(void)fprintf(f, "{\"generation\":%u,\"ok\":%s,\"ago_sec\":%" PRIu64 ",\"text\":",
			      v->last_reload_gen, v->last_reload_ok ? "true" : "false",
			      v->last_reload_ago_sec);
		json_write_string(f, v->last_reload_text);
		(void)fputc('}', f);
	} else {
		(void)fputs("null", f);
	}
	(void)fputs(",\"generations\":[", f);
	for (size_t g = 0; g < v->n_generations; g++) {
		const struct status_generation *gen = &v->generations[g];

		(void)fprintf(f, "%s{\"id\":%u,\"state\":\"%s\",\"workers\":[", g ? "," : "",
			      gen->id, gen->role);
		for (size_t i = 0; i < gen->n_workers; i++) {
			const struct status_worker *w = &v->workers[gen->first_worker + i];

			(void)fprintf(f,
				      "%s{\"index\":%u,\"pid\":%d,\"state\":\"%s\","
				      "\"uptime_sec\":%" PRIu64 ",\"ready_source\":\"%s\","
				      "\"status\":",
				      i ? "," : "", w->index, w->pid, w->state, w->uptime_sec,
				      v->ready_source);
			json_write_string(f, w->status);
			(void)fputc('}', f);
		}
		(void)fputs("]}", f);
	}
	(void)fputs("],\"listeners\":[", f);
	for (size_t i = 0; i < v->n_listeners; i++) {
		const struct status_listener *l = &v->listeners[i];

		(void)fprintf(f, "%s{\"name\":", i ? "," : "");
		json_write_string(f, l->name);
		(void)fputs(",\"address\":", f);
		json_write_string(f, l->address);
		(void)fprintf(f, ",\"kind\":\"%s\",\"queued\":%ld,\"backlog\":%ld,\"retiring\":%s",
			      l->kind, l->queued, l->backlog, l->retiring ? "true" : "false");
		(void)fputs(",\"refuse_new\":", f);
		if (l->refuse_new)
			json_write_string(f, l->refuse_new);
		else
			(void)fputs("null", f);
		(void)fputc('}', f);
	}
	(void)fputs("]}\n", f);
}

static void format_text(FILE *f, const struct status_view *v)
{
	(void)fprintf(f, "batond %s, pid %d (%s), up %" PRIu64 "s\n", BATON_VERSION, v->pid,
		      v->name, v->uptime_sec);
	/* The pid file must name the batond that answers on this control socket. */
	if (v->pid_file && v->pid_file_pid < 0)
		(void)fprintf(f, "warning: pid file %s cannot be read\n", v->pid_file);
	else if (v->pid_file && v->pid_file_pid != v->pid)
		(void)fprintf(f,
			      "warning: pid file %s names pid %d, not this batond (pid %d): "
			      "two batonds share it?\n",
			      v->pid_file, v->pid_file_pid, v->pid);
	if (v->has_last_reload)
		(void)fprintf(f, "last reload: %s (%" PRIu64 "s ago)\n", v->last_reload_text,
			      v->last_reload_ago_sec);
	else
		(void)fputs("last reload: none\n", f);
	if (v->reload_pending)
		(void)fputs("reload pending\n", f);
	for (size_t g = 0; g < v->n_generations; g++) {
		const struct status_generation *gen = &v->generations[g];

		(void)fprintf(f, "generation %u (%s):\n", gen->id, gen->role);
		for (size_t i = 0; i < gen->n_workers; i++) {
			const struct status_worker *w = &v->workers[gen->first_worker + i];

			(void)fprintf(f, "  worker %u: pid %d, %s, up %" PRIu64 "s%s%s\n", w->index,
				      w->pid, w->state, w->uptime_sec,
				      *w->status ? ", status: " : "", w->status);
		}
	}
	(void)fputs("listeners:\n", f);
	for (size_t i = 0; i < v->n_listeners; i++) {
		const struct status_listener *l = &v->listeners[i];

		(void)fprintf(f, "  %s: %s", l->name, l->address);
		if (l->queued >= 0)
			(void)fprintf(f, ", accept queue %ld/%ld", l->queued, l->backlog);
		if (l->retiring)
			(void)fputs(", retiring", f);
		(void)fputc('\n', f);
		if (l->refuse_new)
			(void)fprintf(f, "    a stop cannot refuse new connections: %s\n",
				      l->refuse_new);
	}
}

/* What fn writes, as a string the caller frees; NULL when out of memory. */
static char *render(void (*fn)(FILE *f, const void *arg, bool json), const void *arg, bool json)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	if (!f)
		return NULL;
	fn(f, arg, json);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

static void format_view(FILE *f, const void *arg, bool json)
{
	if (json)
		format_json(f, arg);
	else
		format_text(f, arg);
}

char *status_format(const struct status_view *v, bool json)
{
	return render(format_view, v, json);
}

static const char *ready_source(const struct batond *b)
{
	switch (b->cfg.rollout.ready_mode) {
	case ROLLOUT_READY_NOTIFY:
		return "notify";
	case ROLLOUT_READY_DELAY:
		return "delay";
	case ROLLOUT_READY_NONE:
		return "none";
	}
	return "?";
}

/*
 * listen() caps the backlog at net.core.somaxconn (as it was at the listen() call): the limit
 * the kernel holds for a Unix listener, whose sock_diag does not say it.
 */
static long effective_backlog(int backlog)
{
	FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
	long max = 0;

	if (f) {
		if (fscanf(f, "%ld", &max) != 1)
			max = 0;
		(void)fclose(f);
	}
	return max > 0 && max < backlog ? max : backlog;
}

/* The accept queue as the kernel sees it: TCP_INFO for TCP, sock_diag for Unix. */
static void listener_queue(const struct listener *l, int backlog, long *ret_queued,
			   long *ret_backlog)
{
	unsigned q = 0, h = 0;

	*ret_queued = -1;
	*ret_backlog = l->kind == LISTENER_UDP ? -1 : backlog;
	if (l->kind == LISTENER_TCP) {
		struct tcp_info ti;
		socklen_t len = sizeof(ti);

		if (getsockopt(l->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) {
			*ret_queued = ti.tcpi_unacked;
			*ret_backlog = ti.tcpi_sacked;
		}
	} else if (l->kind == LISTENER_UNIX && listen_close_pending(l->fd, &q, &h) == 0) {
		*ret_queued = q;
		*ret_backlog = effective_backlog(backlog);
	}
}

/* The pid a pid file names, or -1 if it cannot be read or holds no pid. */
static int read_pid_file(const char *path)
{
	FILE *f = fopen(path, "re");
	int pid = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%d", &pid) != 1 || pid <= 0)
		pid = -1;
	(void)fclose(f);
	return pid;
}

static const char *gen_role(const struct batond *b, unsigned gen)
{
	if (gen == rollout_serving_gen(b->rollout))
		return "serving";
	if (gen == rollout_starting_gen(b->rollout))
		return "starting";
	return "draining";
}

/* Generations in use, oldest first. */
static void take_generations(const struct batond *b, struct status_view *v)
{
	for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
		const struct rollout_worker *w = rollout_worker_at(b->rollout, i);
		bool seen = false;

		if (w->state == ROLLOUT_W_FREE)
			continue;
		for (size_t j = 0; j < v->n_generations; j++)
			seen |= v->generations[j].id == w->gen;
		if (!seen && v->n_generations < ELEMENTSOF(v->generations))
			v->generations[v->n_generations++].id = w->gen;
	}
	for (size_t i = 1; i < v->n_generations; i++)
		for (size_t j = i; j > 0 && v->generations[j - 1].id > v->generations[j].id; j--) {
			struct status_generation t = v->generations[j];

			v->generations[j] = v->generations[j - 1];
			v->generations[j - 1] = t;
		}
}

void status_take_view(const struct batond *b, struct status_view *v)
{
	uint64_t now = loop_now_usec();

	v->pid = (int)getpid();
	v->name = b->cfg.name ?: CONTROL_NAME_DEFAULT;
	v->pid_file = b->cfg.pid_file;
	v->pid_file_pid = b->cfg.pid_file ? read_pid_file(b->cfg.pid_file) : 0;
	v->uptime_sec = (now - b->started_usec) / 1000000;
	v->serving_gen = rollout_serving_gen(b->rollout);
	v->starting_gen = rollout_starting_gen(b->rollout);
	v->reload_pending = rollout_reload_pending(b->rollout);
	v->stopping = stop_begun(b);
	v->has_last_reload = b->last_reload_usec != 0;
	v->last_reload_gen = b->last_reload_gen;
	v->last_reload_ok = b->last_reload_ok;
	v->last_reload_ago_sec = v->has_last_reload ? (now - b->last_reload_usec) / 1000000 : 0;
	v->last_reload_text = b->last_reload_text;
	v->ready_source = ready_source(b);
	take_generations(b, v);
	for (size_t g = 0; g < v->n_generations; g++) {
		struct status_generation *gen = &v->generations[g];

		gen->role = gen_role(b, gen->id);
		gen->first_worker = v->n_workers;
		for (unsigned i = 0; rollout_worker_at(b->rollout, i); i++) {
			const struct rollout_worker *w = rollout_worker_at(b->rollout, i);

			if (w->state == ROLLOUT_W_FREE || w->gen != gen->id ||
			    v->n_workers >= ELEMENTSOF(v->workers))
				continue;
			v->workers[v->n_workers++] = (struct status_worker){
				.index = w->index,
				.pid = w->pid,
				.state = rollout_worker_state_to_string(w->state),
				.uptime_sec =
					w->spawned_usec ? (now - w->spawned_usec) / 1000000 : 0,
				.status = b->extra[i].status,
			};
			gen->n_workers++;
		}
	}
	for (size_t i = 0; i < b->cfg.n_listeners; i++) {
		const struct listener *l = &b->cfg.listeners[i];
		struct status_listener *sl = &v->listeners[v->n_listeners++];

		*sl = (struct status_listener){
			.name = l->name,
			.address = l->spec,
			.kind = listener_kind_to_string(l->kind),
			.retiring = stop_retiring_index(b) == (int)i,
		};
		listener_queue(l, b->cfg.backlog, &sl->queued, &sl->backlog);
		sl->refuse_new = stop_refuse_new_problem(listen_close_probe(l->fd));
	}
}

static void format_identity(FILE *f, const void *arg, bool json)
{
	const struct batond *b = arg;

	if (json) {
		(void)fprintf(f, "{\"pid\":%d,\"name\":", (int)getpid());
		json_write_string(f, b->cfg.name ?: CONTROL_NAME_DEFAULT);
		(void)fputs(",\"version\":\"" BATON_VERSION "\",\"control\":", f);
		json_write_string(f, b->control_path);
		(void)fputs(",\"pid_file\":", f);
		if (b->cfg.pid_file)
			json_write_string(f, b->cfg.pid_file);
		else
			(void)fputs("null", f);
		(void)fputs(",\"listeners\":[", f);
		for (size_t i = 0; i < b->cfg.n_listeners; i++) {
			(void)fprintf(f, "%s{\"name\":", i ? "," : "");
			json_write_string(f, b->cfg.listeners[i].name);
			(void)fputs(",\"address\":", f);
			json_write_string(f, b->cfg.listeners[i].spec);
			(void)fputc('}', f);
		}
		(void)fputs("]}", f);
	} else {
		(void)fprintf(f, "batond pid %d (%s); listeners", (int)getpid(),
			      b->cfg.name ?: CONTROL_NAME_DEFAULT);
		for (size_t i = 0; i < b->cfg.n_listeners; i++)
			(void)fprintf(f, "%s %s=%s", i ? "," : "", b->cfg.listeners[i].name,
				      b->cfg.listeners[i].spec);
	}
}

char *status_identity(const struct batond *b, bool json)
{
	return render(format_identity, b, json);
}

char *status_render(const struct batond *b, bool json)
{
	struct status_view *v = calloc(1, sizeof(*v));
	char *text;

	if (!v)
		return NULL;
	status_take_view(b, v);
	text = status_format(v, json);
	free(v);
	return text;
}
