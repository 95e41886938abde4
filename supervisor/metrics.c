/* SPDX-License-Identifier: MIT */
/* metrics.c - Prometheus metrics: counters batond keeps, the text exposition format, /metrics. */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "batond.h"
#include "cleanup.h"
#include "log.h"
#include "loop.h"
#include "unix_server.h"

const double metrics_reload_bounds[METRICS_RELOAD_BUCKETS] = {
	0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
};

static const char *const outcome_names[METRICS_RELOAD__MAX] = {
	[METRICS_RELOAD_OK] = "ok",
	[METRICS_RELOAD_ROLLED_BACK] = "rolled_back",
	[METRICS_RELOAD_ABANDONED] = "abandoned",
};

static void observe(struct metrics_counters *m, enum metrics_outcome o, uint64_t usec)
{
	double sec = (double)usec / 1e6;
	size_t i = 0;

	while (i < METRICS_RELOAD_BUCKETS && sec > metrics_reload_bounds[i])
		i++;
	m->reloads[o]++;
	m->reload_usec_sum[o] += usec;
	if (i < METRICS_RELOAD_BUCKETS)
		m->reload_buckets[o][i]++; /* past the last bound: +Inf, which is the count */
}

void metrics_count(struct metrics_counters *m, const struct eventlog_event *ev, uint64_t now_usec)
{
	bool ours = m->reload_gen && m->reload_gen == ev->generation;

	switch (ev->type) {
	case EVENT_GENERATION_STARTING:
		if (ev->reload) {
			m->reload_gen = ev->generation;
			m->reload_started_usec = now_usec;
		}
		break;
	case EVENT_GENERATION_READY:
		if (ev->reload)
			observe(m, METRICS_RELOAD_OK, ev->usec);
		if (ours)
			m->reload_gen = 0;
		break;
	case EVENT_RELOAD_ROLLED_BACK:
		observe(m,
			ev->reason && strcmp(ev->reason, "stopped") == 0
				? METRICS_RELOAD_ABANDONED
				: METRICS_RELOAD_ROLLED_BACK,
			ours && now_usec > m->reload_started_usec
				? now_usec - m->reload_started_usec
				: 0);
		if (ours)
			m->reload_gen = 0;
		break;
	case EVENT_WORKER_CRASHED:
		m->worker_restarts++;
		break;
	case EVENT_WORKER_SPAWN_FAILED:
		m->spawn_failures++;
		break;
	case EVENT_WORKER_KILLED:
		if (ev->reason && strcmp(ev->reason, "ready_timeout") == 0)
			m->killed_ready_timeout++;
		else
			m->killed_drain_timeout++;
		break;
	default:
		break;
	}
}

void metrics_read_process(struct metrics_process *ret)
{
	char buf[1024], *p;
	unsigned long long utime = 0, stime = 0, start = 0, vsize = 0, btime = 0;
	long long rss = 0;
	long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	struct rlimit rl;
	struct dirent *de;
	FILE *f;
	DIR *d;

	*ret = (struct metrics_process){ .open_fds = -1, .max_fds = -1 };
	f = fopen("/proc/self/stat", "re");
	if (f) {
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);

		buf[n] = '\0';
		(void)fclose(f);
		/* After the command name's ')': state is field 3, utime 14, stime 15, ... */
		p = strrchr(buf, ')');
		if (p &&
		    sscanf(p + 2,
			   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d "
			   "%*d %*d %*d %llu %llu %lld",
			   &utime, &stime, &start, &vsize, &rss) == 5 &&
		    ticks > 0) {
			ret->cpu_seconds = (double)(utime + stime) / (double)ticks;
			ret->virtual_bytes = vsize;
			ret->resident_bytes = rss > 0 ? (uint64_t)rss * (uint64_t)page : 0;
		}
	}
	f = fopen("/proc/stat", "re");
	if (f) {
		while (fgets(buf, sizeof(buf), f))
			if (sscanf(buf, "btime %llu", &btime) == 1)
				break;
		(void)fclose(f);
	}
	if (btime && ticks > 0)
		ret->start_time_seconds = (double)btime + (double)start / (double)ticks;
	d = opendir("/proc/self/fd");
	if (d) {
		long n = 0;

		while ((de = readdir(d)))
			n += de->d_name[0] != '.';
		ret->open_fds = n - 1; /* the directory's own fd */
		(void)closedir(d);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		ret->max_fds = rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
}

/* A label value: backslash, double quote and newline escaped. */
static void label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			(void)fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			(void)fputs("\\n", f);
		else
			(void)fputc(*s, f);
	}
}

static void head(FILE *f, const char *name, const char *type, const char *help)
{
	(void)fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static long listener_queued(const struct status_listener *l)
{
	return l->queued;
}

static long listener_backlog(const struct status_listener *l)
{
	return l->backlog;
}

static long listener_retiring(const struct status_listener *l)
{
	return l->retiring ? 1 : 0;
}

/* One gauge per listener, labelled with its name; a listener whose value is < 0 has none. */
static void listener_gauge(FILE *f, const struct status_view *v, const char *name, const char *help,
			   long (*value)(const struct status_listener *l))
{
	head(f, name, "gauge", help);
	for (size_t i = 0; i < v->n_listeners; i++) {
		long n = value(&v->listeners[i]);

		if (n < 0)
			continue;
		(void)fprintf(f, "%s{listener=\"", name);
		label_value(f, v->listeners[i].name);
		(void)fprintf(f, "\"} %ld\n", n);
	}
}

static void format_reloads(FILE *f, const struct metrics_counters *m)
{
	head(f, "baton_reloads_total", "counter",
	     "Reloads by outcome: ok (the new generation serves), rolled_back (it failed and the "
	     "old one kept serving), abandoned (a stop came first).");
	for (int o = 0; o < METRICS_RELOAD__MAX; o++)
		(void)fprintf(f, "baton_reloads_total{outcome=\"%s\"} %" PRIu64 "\n",
			      outcome_names[o], m->reloads[o]);
	head(f, "baton_reload_duration_seconds", "histogram",
	     "Time from a reload's start to its outcome.");
	for (int o = 0; o < METRICS_RELOAD__MAX; o++) {
		uint64_t cum = 0;

		for (int i = 0; i < METRICS_RELOAD_BUCKETS; i++) {
			cum += m->reload_buckets[o][i];
			(void)fprintf(
				f,
				"baton_reload_duration_seconds_bucket{outcome=\"%s\",le=\"%g\"} "
				"%" PRIu64 "\n",
				outcome_names[o], metrics_reload_bounds[i], cum);
		}
		(void)fprintf(f,
			      "baton_reload_duration_seconds_bucket{outcome=\"%s\",le=\"+Inf\"} "
			      "%" PRIu64 "\n"
			      "baton_reload_duration_seconds_sum{outcome=\"%s\"} %.6f\n"
			      "baton_reload_duration_seconds_count{outcome=\"%s\"} %" PRIu64 "\n",
			      outcome_names[o], m->reloads[o], outcome_names[o],
			      (double)m->reload_usec_sum[o] / 1e6, outcome_names[o], m->reloads[o]);
	}
}

static void format_workers(FILE *f, const struct status_view *v, const struct metrics_counters *m)
{
	static const char *const states[] = { "spawning", "starting", "ready",
					      "draining", "killed",   "backoff" };

	head(f, "baton_serving_generation", "gauge",
	     "The generation that serves (0 before the first is ready).");
	(void)fprintf(f, "baton_serving_generation %u\n", v->serving_gen);
	head(f, "baton_starting_generation", "gauge",
	     "The generation being started by a reload, or 0.");
	(void)fprintf(f, "baton_starting_generation %u\n", v->starting_gen);
	head(f, "baton_workers", "gauge", "Worker processes by state, every generation.");
	for (size_t s = 0; s < ELEMENTSOF(states); s++) {
		unsigned n = 0;

		for (size_t i = 0; i < v->n_workers; i++)
			n += strcmp(v->workers[i].state, states[s]) == 0;
		(void)fprintf(f, "baton_workers{state=\"%s\"} %u\n", states[s], n);
	}
	head(f, "baton_worker_restarts_total", "counter",
	     "Workers that exited unasked and were respawned.");
	(void)fprintf(f, "baton_worker_restarts_total %" PRIu64 "\n", m->worker_restarts);
	head(f, "baton_worker_spawn_failures_total", "counter",
	     "Workers that could not be started (fork or exec failed).");
	(void)fprintf(f, "baton_worker_spawn_failures_total %" PRIu64 "\n", m->spawn_failures);
	head(f, "baton_workers_killed_total", "counter",
	     "Workers killed at a deadline: not ready in time, or not drained in time.");
	(void)fprintf(f,
		      "baton_workers_killed_total{reason=\"ready_timeout\"} %" PRIu64 "\n"
		      "baton_workers_killed_total{reason=\"drain_timeout\"} %" PRIu64 "\n",
		      m->killed_ready_timeout, m->killed_drain_timeout);
}

static void format_listeners(FILE *f, const struct status_view *v)
{
	head(f, "baton_listeners", "gauge", "Listening sockets batond holds.");
	(void)fprintf(f, "baton_listeners %zu\n", v->n_listeners);
	head(f, "baton_listener_info", "gauge", "Each listener's address and kind (value 1).");
	for (size_t i = 0; i < v->n_listeners; i++) {
		(void)fputs("baton_listener_info{listener=\"", f);
		label_value(f, v->listeners[i].name);
		(void)fputs("\",address=\"", f);
		label_value(f, v->listeners[i].address);
		(void)fprintf(f, "\",kind=\"%s\"} 1\n", v->listeners[i].kind);
	}
	listener_gauge(
		f, v, "baton_listener_accept_queue",
		"Connections waiting in a stream listener's accept queue, as the kernel counts.",
		listener_queued);
	listener_gauge(f, v, "baton_listener_accept_backlog",
		       "The accept queue's limit (the listen() backlog as the kernel holds it).",
		       listener_backlog);
	listener_gauge(f, v, "baton_listener_retiring",
		       "1 while batonctl retire empties this listener.", listener_retiring);
}

static void format_process(FILE *f, const struct metrics_process *p)
{
	head(f, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
	(void)fprintf(f, "process_cpu_seconds_total %.2f\n", p->cpu_seconds);
	head(f, "process_resident_memory_bytes", "gauge", "Resident memory size.");
	(void)fprintf(f, "process_resident_memory_bytes %" PRIu64 "\n", p->resident_bytes);
	head(f, "process_virtual_memory_bytes", "gauge", "Virtual memory size.");
	(void)fprintf(f, "process_virtual_memory_bytes %" PRIu64 "\n", p->virtual_bytes);
	head(f, "process_start_time_seconds", "gauge", "Start time since the epoch.");
	(void)fprintf(f, "process_start_time_seconds %.2f\n", p->start_time_seconds);
	if (p->open_fds >= 0) {
		head(f, "process_open_fds", "gauge", "Open file descriptors.");
		(void)fprintf(f, "process_open_fds %ld\n", p->open_fds);
	}
	if (p->max_fds >= 0) {
		head(f, "process_max_fds", "gauge", "The limit on open file descriptors.");
		(void)fprintf(f, "process_max_fds %ld\n", p->max_fds);
	}
}

char *metrics_format(const struct status_view *v, const struct metrics_counters *m,
		     const struct metrics_process *p, const struct metrics_extra *x)
{
	static const char *const stages[] = { "running", "refusing", "draining", "killing" };
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	if (!f)
		return NULL;
	head(f, "baton_build_info", "gauge", "batond's version (value 1).");
	(void)fprintf(f, "baton_build_info{version=\"%s\"} 1\n", BATON_VERSION);
	format_reloads(f, m);
	format_workers(f, v, m);
	format_listeners(f, v);
	head(f, "baton_stop_stage", "gauge",
	     "The stop's stage (1 for the current one): running, refusing (new connections "
	     "refused, queues emptying), draining (workers), killing.");
	for (size_t i = 0; i < ELEMENTSOF(stages); i++)
		(void)fprintf(f, "baton_stop_stage{stage=\"%s\"} %d\n", stages[i],
			      strcmp(stages[i], x->stop_stage) == 0);
	head(f, "baton_events_total", "counter", "Events batond reported (batonctl events).");
	(void)fprintf(f, "baton_events_total %" PRIu64 "\n", x->events);
	head(f, "baton_events_dropped_total", "counter",
	     "Events that batonctl events readers missed because they read too slowly.");
	(void)fprintf(f, "baton_events_dropped_total %" PRIu64 "\n", x->events_dropped);
	format_process(f, p);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

int metrics_route(const char *req, bool *ret_head)
{
	size_t m = strcspn(req, " "), path_len;
	const char *path, *version;

	if (req[m] != ' ')
		return 400;
	path = req + m + 1;
	path_len = strcspn(path, " ");
	version = path + path_len;
	if (strncmp(version, " HTTP/1.", 8) != 0)
		return 400;
	*ret_head = m == 4 && strncmp(req, "HEAD", 4) == 0;
	if (!*ret_head && !(m == 3 && strncmp(req, "GET", 3) == 0))
		return 405;
	if (!(path_len >= 8 && strncmp(path, "/metrics", 8) == 0 &&
	      (path_len == 8 || path[8] == '?')))
		return 404;
	return 200;
}

/* --- the server: batond's side --- */

struct metrics_client {
	struct metrics_server *srv;
	LIST_ENTRY(metrics_client) link;
	int fd;
	sd_event_source *io, *timer;
	char in[METRICS_REQUEST_MAX + 1];
	size_t in_len;
	char *out;
	size_t out_len, out_off;
};

struct metrics_server {
	struct batond *b;
	struct unix_server *server;
	LIST_HEAD(, metrics_client) clients;
};

static void client_free(struct metrics_client *c)
{
	LIST_REMOVE(c, link);
	unix_server_client_gone(c->srv->server);
	sd_event_source_disable_unref(c->io);
	sd_event_source_disable_unref(c->timer);
	close_fdp(&c->fd);
	free(c->out);
	free(c);
}

/* Writes what is left of the response; frees c once it is all out or the peer is gone. */
static void client_write(struct metrics_client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			(void)sd_event_source_set_io_events(c->io, EPOLLOUT);
			return;
		}
		if (n < 0)
			break;
		c->out_off += (size_t)n;
	}
	client_free(c);
}

static char *render(struct batond *b)
{
	struct status_view *v = calloc(1, sizeof(*v));
	struct metrics_process p;
	struct metrics_extra x = {
		.stop_stage = b->stop_stage == STOP_QUEUES    ? "refusing"
			      : b->stop_stage == STOP_WORKERS ? "draining"
			      : b->stop_stage == STOP_KILLING ? "killing"
							      : "running",
		.events = b->events ? eventlog_next_seq(b->events) - 1 : 0,
		.events_dropped = b->events_dropped,
	};
	char *text;

	if (!v)
		return NULL;
	status_take_view(b, v);
	metrics_read_process(&p);
	text = metrics_format(v, &b->metrics, &p, &x);
	free(v);
	return text;
}

static void respond(struct metrics_client *c, const char *head_line)
{
	static const struct {
		int code;
		const char *reason, *body;
	} errors[] = {
		{ 400, "Bad Request", "not an HTTP request\n" },
		{ 404, "Not Found", "batond serves /metrics only\n" },
		{ 405, "Method Not Allowed", "GET or HEAD /metrics\n" },
		{ 500, "Internal Server Error", "out of memory\n" },
	};
	_cleanup_free_ char *body = NULL;
	const char *reason = "OK", *text = "";
	bool head = false;
	int code = metrics_route(head_line, &head), n;

	if (code == 200) {
		body = render(c->srv->b);
		if (body)
			text = body;
		else
			code = 500;
	}
	for (size_t i = 0; i < ELEMENTSOF(errors); i++)
		if (errors[i].code == code) {
			reason = errors[i].reason;
			text = errors[i].body;
		}
	n = asprintf(&c->out,
		     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
		     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
		     code, reason, strlen(text), head ? "" : text);
	if (n < 0) {
		c->out = NULL;
		client_free(c);
		return;
	}
	c->out_len = (size_t)n;
	client_write(c);
}

static int on_client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct metrics_client *c = userdata;
	ssize_t n;

	(void)s;
	(void)fd;
	if (c->out) {
		client_write(c);
		return 0;
	}
	if (revents & (EPOLLHUP | EPOLLERR) && !(revents & EPOLLIN)) {
		client_free(c);
		return 0;
	}
	n = recv(c->fd, c->in + c->in_len, METRICS_REQUEST_MAX - c->in_len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) {
		client_free(c);
		return 0;
	}
	c->in_len += (size_t)n;
	c->in[c->in_len] = '\0';
	if (strstr(c->in, "\r\n\r\n") || strstr(c->in, "\n\n")) {
		c->in[strcspn(c->in, "\r\n")] = '\0';
		(void)sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
		respond(c, c->in);
	} else if (c->in_len >= METRICS_REQUEST_MAX) {
		respond(c, "");
	}
	return 0;
}

static int on_client_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s;
	(void)usec;
	client_free(userdata); /* it never asked: its slot is someone else's */
	return 0;
}

/* Consumes fd. Anyone who can connect may read the metrics: they hold no secret. */
static bool on_accept(void *userdata, int fd_in, const struct ucred *cred)
{
	_cleanup_close_ int fd = fd_in;
	struct metrics_server *srv = userdata;
	struct metrics_client *c = calloc(1, sizeof(*c));
	int r;

	(void)cred;
	if (!c) {
		log_warning_errno(-ENOMEM, "metrics: a client, closing");
		return false;
	}
	c->srv = srv;
	c->fd = -1;
	r = sd_event_add_io(srv->b->event, &c->io, fd, EPOLLIN, on_client_io, c);
	if (r >= 0)
		r = sd_event_add_time_relative(srv->b->event, &c->timer, CLOCK_MONOTONIC,
					       METRICS_REQUEST_TIMEOUT_USEC, 0, on_client_timeout,
					       c);
	if (r < 0) {
		log_warning_errno(r, "metrics: watch a client, closing");
		sd_event_source_disable_unref(c->io);
		free(c);
		return false;
	}
	c->fd = TAKE_FD(fd);
	LIST_INSERT_HEAD(&srv->clients, c, link);
	return true;
}

int metrics_open(struct batond *b)
{
	struct listener l = b->cfg.metrics;
	struct unix_server_params p = {
		.type = SOCK_STREAM,
		.mode = 0666, /* read-only and no secret: any local user may scrape */
		.backlog = METRICS_BACKLOG,
		.max_clients = METRICS_MAX_CLIENTS,
		.adopt_fd = -1,
		.label = "metrics",
		.accept = on_accept,
	};
	struct metrics_server *srv;
	int r;

	if (!b->cfg.has_metrics)
		return 0;
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return log_error_errno(-ENOMEM, "metrics %s", l.spec);
	srv->b = b;
	p.userdata = srv;
	if (l.kind == LISTENER_TCP) {
		r = listener_bind(&l, METRICS_BACKLOG);
		if (r < 0) {
			free(srv);
			return log_error_errno(r, "metrics %s", l.spec);
		}
		p.tcp = &l;
	} else {
		p.path = l.spec + strlen("unix:");
	}
	r = unix_server_new(b->event, &p, &srv->server);
	if (r < 0) {
		free(srv);
		return log_error_errno(r, "metrics %s", l.spec);
	}
	b->metrics_server = srv;
	log_info("metrics: serving %s%s/metrics", l.kind == LISTENER_TCP ? "http://" : "",
		 l.kind == LISTENER_TCP ? l.spec + strlen("tcp://") : l.spec);
	return 0;
}

void metrics_close(struct batond *b)
{
	struct metrics_server *srv = b->metrics_server;

	if (!srv)
		return;
	while (!LIST_EMPTY(&srv->clients))
		client_free(LIST_FIRST(&srv->clients));
	srv->server = unix_server_free(srv->server, false);
	free(srv);
	b->metrics_server = NULL;
}

void metrics_on_event(struct batond *b, const struct eventlog_event *ev)
{
	metrics_count(&b->metrics, ev, loop_now_usec());
}
