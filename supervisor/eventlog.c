/* SPDX-License-Identifier: MIT */
/* eventlog.c - what batond reports, as numbered events: a bounded ring of JSON lines. */
#include "eventlog.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVENTLOG_BYTES (64 * 1024) /* bytes of JSON text kept; with EVENTLOG_RING, a bound */

/* Which members of struct eventlog_event a type's line carries. */
enum {
	F_GEN = 1 << 0,	      /* "generation" */
	F_WORKER = 1 << 1,    /* "worker" (index) */
	F_PID = 1 << 2,	      /* "pid" */
	F_WORKERS = 1 << 3,   /* "workers": .count */
	F_LISTENERS = 1 << 4, /* "listeners": .count */
	F_RELOAD = 1 << 5,    /* "reload" */
	F_RESPAWNED = 1 << 6, /* "respawned" */
	F_FORCE = 1 << 7,     /* "force" */
	F_TIMED_OUT = 1 << 8, /* "timed_out" */
	F_REASON = 1 << 9,    /* "reason" */
	F_END = 1 << 10,      /* "exit_status" or "signal", when known */
	F_ERROR = 1 << 11,    /* "error" (text) and "errno", when there is one */
	F_DURATION = 1 << 12, /* "duration_usec" */
	F_BACKOFF = 1 << 13,  /* "backoff_usec" */
	F_QUEUE = 1 << 14,    /* "queued", "half_open" */
	F_EXIT = 1 << 15,     /* "exit_code" */
	F_LISTENER = 1 << 16, /* "listener", "address" */
};

static const struct {
	const char *name;
	unsigned fields;
} types[EVENT__MAX] = {
	[EVENT_GENERATION_STARTING] = { "generation_starting", F_GEN | F_WORKERS | F_RELOAD },
	[EVENT_GENERATION_READY] = { "generation_ready",
				     F_GEN | F_WORKERS | F_RELOAD | F_DURATION },
	[EVENT_GENERATION_DRAINING] = { "generation_draining", F_GEN | F_WORKERS },
	[EVENT_GENERATION_DRAINED] = { "generation_drained", F_GEN },
	[EVENT_RELOAD_ROLLED_BACK] = { "reload_rolled_back",
				       F_GEN | F_REASON | F_WORKER | F_PID | F_END | F_ERROR },
	[EVENT_RELOAD_QUEUED] = { "reload_queued", F_GEN },
	[EVENT_RELOAD_IGNORED] = { "reload_ignored", 0 },
	[EVENT_START_FAILED] = { "start_failed",
				 F_GEN | F_REASON | F_WORKER | F_PID | F_END | F_ERROR },
	[EVENT_WORKER_SPAWNED] = { "worker_spawned", F_GEN | F_WORKER | F_PID },
	[EVENT_WORKER_READY] = { "worker_ready",
				 F_GEN | F_WORKER | F_PID | F_DURATION | F_RESPAWNED },
	[EVENT_WORKER_EXITED] = { "worker_exited", F_GEN | F_WORKER | F_PID | F_END },
	[EVENT_WORKER_CRASHED] = { "worker_crashed", F_GEN | F_WORKER | F_PID | F_END | F_BACKOFF },
	[EVENT_WORKER_KILLED] = { "worker_killed", F_GEN | F_WORKER | F_PID | F_REASON },
	[EVENT_WORKER_SPAWN_FAILED] = { "worker_spawn_failed",
					F_GEN | F_WORKER | F_ERROR | F_BACKOFF },
	[EVENT_STOP_REFUSING] = { "stop_refusing", F_LISTENERS },
	[EVENT_STOP_QUEUES_DONE] = { "stop_queues_done", F_QUEUE | F_TIMED_OUT | F_DURATION },
	[EVENT_STOP_DRAINING] = { "stop_draining", F_WORKERS | F_FORCE },
	[EVENT_EXIT] = { "exit", F_EXIT },
	[EVENT_LISTENER_ADDED] = { "listener_added", F_LISTENER },
	[EVENT_LISTENER_RETIRING] = { "listener_retiring", F_LISTENER },
	[EVENT_LISTENER_RETIRED] = { "listener_retired",
				     F_LISTENER | F_QUEUE | F_TIMED_OUT | F_DURATION },
	[EVENT_UPGRADE_STARTED] = { "upgrade_started", 0 },
	[EVENT_UPGRADE_REFUSED] = { "upgrade_refused", 0 },
	[EVENT_UPGRADED] = { "upgraded", F_GEN | F_WORKERS },
};

/* Where one kept event's line lies in text[]. */
struct eventlog_slot {
	uint32_t off, len;
};

struct eventlog {
	uint64_t oldest, next;			   /* seqs kept: [oldest, next) */
	uint32_t head;				   /* where the next line goes in text[] */
	struct eventlog_slot slots[EVENTLOG_RING]; /* by seq % EVENTLOG_RING */
	char text[EVENTLOG_BYTES];
};

struct eventlog *eventlog_new(uint64_t first_seq)
{
	struct eventlog *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->oldest = l->next = first_seq ? first_seq : 1;
	return l;
}

struct eventlog *eventlog_free(struct eventlog *l)
{
	free(l);
	return NULL;
}

const char *eventlog_type_name(enum eventlog_type type)
{
	return (unsigned)type < EVENT__MAX ? types[type].name : "?";
}

bool eventlog_type_has_worker(enum eventlog_type type)
{
	return (unsigned)type < EVENT__MAX && (types[type].fields & F_WORKER);
}

uint64_t eventlog_next_seq(const struct eventlog *l)
{
	return l->next;
}

uint64_t eventlog_oldest_seq(const struct eventlog *l)
{
	return l->oldest;
}

/* An appender over one line; a piece that does not fit is left out and the line marked cut. */
struct line {
	char *buf;
	size_t size, len;
	bool cut;
};

static void put(struct line *ln, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct line *ln, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ln->cut)
		return;
	va_start(ap, fmt);
	n = vsnprintf(ln->buf + ln->len, ln->size - ln->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= ln->size - ln->len) {
		ln->buf[ln->len] = '\0';
		ln->cut = true;
		return;
	}
	ln->len += (size_t)n;
}

/* A cut must not end in half a UTF-8 character: drop the bytes of one that is incomplete. */
static void utf8_drop_partial(struct line *ln)
{
	size_t start = ln->len, cont = 0, need;
	unsigned char lead;

	while (start > 0 && cont < 3 && ((unsigned char)ln->buf[start - 1] & 0xc0) == 0x80) {
		start--;
		cont++;
	}
	if (start == 0)
		return;
	lead = (unsigned char)ln->buf[start - 1];
	if (lead < 0xc0)
		return; /* ASCII (or stray continuation bytes): nothing to complete */
	need = lead >= 0xf0 ? 3 : lead >= 0xe0 ? 2 : 1;
	if (cont < need)
		ln->len = start - 1;
}

/*
 * ,"key":"s" with s escaped. If the line has no room for all of s, as much of it as fits (never
 * half a UTF-8 character) and the line is marked cut.
 */
static void put_string(struct line *ln, const char *key, const char *s)
{
	put(ln, ",\"%s\":\"", key);
	for (; *s && !ln->cut; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];
		size_t n;

		if (c == '"' || c == '\\')
			n = (size_t)snprintf(esc, sizeof(esc), "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", c);
		else
			n = (size_t)snprintf(esc, sizeof(esc), "%c", c);
		/* Keep room for the closing quote. */
		if (n + 1 >= ln->size - ln->len) {
			utf8_drop_partial(ln);
			ln->cut = true;
			break;
		}
		memcpy(ln->buf + ln->len, esc, n);
		ln->len += n;
	}
	if (ln->len < ln->size - 1) {
		ln->buf[ln->len++] = '"';
		ln->buf[ln->len] = '\0';
	}
}

static void put_bool(struct line *ln, const char *key, bool v)
{
	put(ln, ",\"%s\":%s", key, v ? "true" : "false");
}

/* The fields of one event, after its seq, clocks and name. */
static void put_fields(struct line *ln, const struct eventlog_event *ev, unsigned f)
{
	bool stopped = ev->reason && strcmp(ev->reason, "stopped") == 0;

	if (f & F_GEN)
		put(ln, ",\"generation\":%u", ev->generation);
	if ((f & F_WORKER) && !stopped)
		put(ln, ",\"worker\":%u", ev->worker);
	if ((f & F_PID) && !stopped)
		put(ln, ",\"pid\":%d", ev->pid);
	if (f & F_WORKERS)
		put(ln, ",\"workers\":%u", ev->count);
	if (f & F_LISTENERS)
		put(ln, ",\"listeners\":%u", ev->count);
	if (f & F_LISTENER) {
		put_string(ln, "listener", ev->listener ? ev->listener : "");
		put_string(ln, "address", ev->address ? ev->address : "");
	}
	if (f & F_RELOAD)
		put_bool(ln, "reload", ev->reload);
	if (f & F_RESPAWNED)
		put_bool(ln, "respawned", ev->respawned);
	if (f & F_FORCE)
		put_bool(ln, "force", ev->force);
	if (f & F_TIMED_OUT)
		put_bool(ln, "timed_out", ev->timed_out);
	if (f & F_REASON)
		put_string(ln, "reason", ev->reason ? ev->reason : "");
	if ((f & F_END) && ev->has_end && !ev->signaled)
		put(ln, ",\"exit_status\":%d", ev->status);
	if ((f & F_END) && ev->has_end && ev->signaled)
		put_string(ln, "signal", sigabbrev_np(ev->status) ?: "?");
	if ((f & F_ERROR) && ev->error) {
		put_string(ln, "error", strerror(ev->error < 0 ? -ev->error : ev->error));
		put(ln, ",\"errno\":%d", ev->error < 0 ? -ev->error : ev->error);
	}
	if (f & F_DURATION)
		put(ln, ",\"duration_usec\":%" PRIu64, ev->usec);
	if (f & F_BACKOFF)
		put(ln, ",\"backoff_usec\":%" PRIu64, ev->backoff_usec);
	if (f & F_QUEUE)
		put(ln, ",\"queued\":%u,\"half_open\":%u", ev->queued, ev->half_open);
	if (f & F_EXIT)
		put(ln, ",\"exit_code\":%d", ev->exit_code);
}

/* Forgets the oldest event. */
static void forget_oldest(struct eventlog *l)
{
	l->oldest++;
}

static bool slot_overlaps(const struct eventlog_slot *s, uint32_t off, uint32_t len)
{
	return s->off < off + len && off < s->off + s->len;
}

/* Makes room for len bytes at head, forgetting the oldest events in the way; returns the offset. */
static uint32_t make_room(struct eventlog *l, uint32_t len)
{
	if (l->next - l->oldest >= EVENTLOG_RING)
		forget_oldest(l);
	if (l->head + len > EVENTLOG_BYTES) {
		/* The tail is too short: every event still there is older than the rest. */
		while (l->oldest < l->next && l->slots[l->oldest % EVENTLOG_RING].off >= l->head)
			forget_oldest(l);
		l->head = 0;
	}
	while (l->oldest < l->next &&
	       slot_overlaps(&l->slots[l->oldest % EVENTLOG_RING], l->head, len))
		forget_oldest(l);
	return l->head;
}

uint64_t eventlog_record(struct eventlog *l, const struct eventlog_event *ev,
			 uint64_t monotonic_usec, uint64_t realtime_usec)
{
	char buf[EVENTLOG_LINE_MAX];
	/* Room kept for ,"message_cut":true}\n at the end. */
	struct line ln = { .buf = buf, .size = sizeof(buf) - 24 };
	unsigned f = (unsigned)ev->type < EVENT__MAX ? types[ev->type].fields : 0;
	uint64_t seq = l->next;
	uint32_t off;

	put(&ln, "{\"seq\":%" PRIu64 ",\"monotonic_usec\":%" PRIu64 ",\"realtime_usec\":%" PRIu64,
	    seq, monotonic_usec, realtime_usec);
	put_string(&ln, "event", eventlog_type_name(ev->type));
	put_fields(&ln, ev, f);
	/* The message goes last: if anything is cut for room, it is the text for people. */
	put_string(&ln, "message", ev->message ? ev->message : "");
	ln.size = sizeof(buf);
	if (ln.cut) {
		ln.cut = false;
		put(&ln, ",\"message_cut\":true");
	}
	put(&ln, "}\n");

	off = make_room(l, (uint32_t)ln.len);
	memcpy(l->text + off, buf, ln.len);
	l->slots[seq % EVENTLOG_RING] =
		(struct eventlog_slot){ .off = off, .len = (uint32_t)ln.len };
	l->head = off + (uint32_t)ln.len;
	l->next = seq + 1;
	return seq;
}

size_t eventlog_read(const struct eventlog *l, uint64_t *cursor, char *buf, size_t size,
		     uint64_t *ret_dropped)
{
	size_t n = 0;

	if (*cursor < l->oldest) {
		uint64_t missed = l->oldest - *cursor;
		int len = snprintf(buf, size,
				   "{\"event\":\"dropped\",\"count\":%" PRIu64
				   ",\"next_seq\":%" PRIu64 ",\"message\":\"%" PRIu64
				   " events were forgotten before they were read\"}\n",
				   missed, l->oldest, missed);

		if (len < 0 || (size_t)len >= size)
			return 0;
		n = (size_t)len;
		*ret_dropped += missed;
		*cursor = l->oldest;
	}
	if (*cursor > l->next)
		*cursor = l->next;
	while (*cursor < l->next) {
		const struct eventlog_slot *s = &l->slots[*cursor % EVENTLOG_RING];

		if (s->len > size - n)
			break;
		memcpy(buf + n, l->text + s->off, s->len);
		n += s->len;
		(*cursor)++;
	}
	return n;
}
