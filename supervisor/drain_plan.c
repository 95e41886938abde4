/* SPDX-License-Identifier: MIT */
/* drain_plan.c - what a server will do with the drain signal, from its signal masks (pure). */
#include "drain_plan.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static bool has(uint64_t mask, int sig)
{
	return sig >= 1 && sig <= 64 && (mask >> (sig - 1)) & 1;
}

/* Parses the 16 hex digits after "KEY:\t" on the line that starts with key. */
static int mask_of(const char *text, size_t len, const char *key, uint64_t *ret)
{
	size_t k = strlen(key);
	size_t off = 0;

	while (off < len) {
		const char *line = text + off;
		const char *nl = memchr(line, '\n', len - off);
		size_t n = nl ? (size_t)(nl - line) : len - off;

		off += n + (nl ? 1 : 0);
		if (n < k || memcmp(line, key, k) != 0)
			continue;
		{
			size_t i = k, digits = 0;
			uint64_t v = 0;

			while (i < n && (line[i] == ' ' || line[i] == '\t'))
				i++;
			for (; i < n; i++, digits++) {
				char c = line[i];
				unsigned d;

				if (c >= '0' && c <= '9')
					d = (unsigned)(c - '0');
				else if (c >= 'a' && c <= 'f')
					d = (unsigned)(c - 'a' + 10);
				else if (c >= 'A' && c <= 'F')
					d = (unsigned)(c - 'A' + 10);
				else
					return -EBADMSG;
				if (digits == 16)
					return -EBADMSG;
				v = v << 4 | d;
			}
			if (digits == 0)
				return -EBADMSG;
			*ret = v;
			return 0;
		}
	}
	return -EBADMSG;
}

int drain_plan_parse_status(const char *text, size_t len, struct drain_masks *ret)
{
	struct drain_masks m;

	if (mask_of(text, len, "SigBlk:", &m.blocked) < 0 ||
	    mask_of(text, len, "SigIgn:", &m.ignored) < 0 ||
	    mask_of(text, len, "SigCgt:", &m.caught) < 0)
		return -EBADMSG;
	*ret = m;
	return 0;
}

/* signal(7): the signals whose default action is to ignore, or to stop the process. */
static bool default_ignores(int sig)
{
	return sig == SIGCHLD || sig == SIGCONT || sig == SIGURG || sig == SIGWINCH;
}

static bool default_stops(int sig)
{
	return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

enum drain_verdict drain_plan_judge(int sig, const struct drain_masks *m, enum drain_shim shim)
{
	if (has(m->ignored, sig))
		return DRAIN_IGNORED;
	if (has(m->caught, sig)) {
		if (shim == DRAIN_SHIM_ARMED)
			return DRAIN_SHIM;
		return shim == DRAIN_SHIM_SERVER ? DRAIN_SERVER_NOT_SHIM : DRAIN_CAUGHT;
	}
	if (has(m->blocked, sig))
		return DRAIN_BLOCKED;
	if (default_ignores(sig))
		return DRAIN_IGNORED;
	return default_stops(sig) ? DRAIN_STOPS : DRAIN_KILLS;
}

bool drain_plan_is_a_loss(enum drain_verdict v)
{
	return v == DRAIN_KILLS || v == DRAIN_STOPS || v == DRAIN_IGNORED ||
	       v == DRAIN_SERVER_NOT_SHIM;
}

int drain_plan_free_signal(const struct drain_masks *m, int never)
{
	static const int candidates[] = { SIGUSR2, SIGUSR1, SIGPWR, SIGALRM, SIGVTALRM, SIGXCPU };
	uint64_t taken = m->blocked | m->ignored | m->caught;

	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
		if (candidates[i] != never && !has(taken, candidates[i]))
			return candidates[i];
	return 0;
}

static const char *name_of(int sig, char *buf, size_t size)
{
	const char *n = sigabbrev_np(sig);

	if (n)
		(void)snprintf(buf, size, "SIG%s", n);
	else
		(void)snprintf(buf, size, "signal %d", sig);
	return buf;
}

void drain_plan_describe(enum drain_verdict v, int sig, const struct drain_masks *m, int pid,
			 bool preload, const char *drain_timeout, char *buf, size_t size)
{
	static const char graceful[] = "give --drain-signal the signal that stops this server "
				       "gracefully";
	char s[32], free_name[32], fix[320];
	int free_sig = drain_plan_free_signal(m, sig);

	(void)name_of(sig, s, sizeof(s));
	(void)name_of(free_sig, free_name, sizeof(free_name));
	/* The shim drains a signal left at its default, in a process that waits on a listener. */
	if (preload || ((v == DRAIN_IGNORED || v == DRAIN_SERVER_NOT_SHIM) && free_sig == 0))
		(void)snprintf(fix, sizeof(fix), "%s", graceful);
	else if (v == DRAIN_IGNORED || v == DRAIN_SERVER_NOT_SHIM)
		(void)snprintf(
			fix, sizeof(fix),
			"%s, or run it with --preload and --drain-signal %s (which it leaves "
			"at its default), and the shim drains it",
			graceful, free_name + 3);
	else
		(void)snprintf(fix, sizeof(fix), "%s, or run it with --preload: the shim drains it",
			       graceful);
	switch (v) {
	case DRAIN_KILLS:
		(void)snprintf(
			buf, size,
			"worker pid %d leaves %s at its default action: each reload ends the "
			"old generation at once, and the requests it holds fail; %s",
			pid, s, fix);
		return;
	case DRAIN_STOPS:
		(void)snprintf(
			buf, size,
			"worker pid %d leaves %s at its default action, which stops it: each "
			"old generation hangs with the requests it holds until the drain "
			"deadline (%s) kills it; %s",
			pid, s, drain_timeout, fix);
		return;
	case DRAIN_IGNORED:
		(void)snprintf(
			buf, size,
			"worker pid %d ignores %s: each old generation keeps serving until the "
			"drain deadline (%s) kills it with the requests it holds; %s",
			pid, s, drain_timeout, fix);
		return;
	case DRAIN_SERVER_NOT_SHIM:
		if (free_sig > 0)
			(void)snprintf(
				buf, size,
				"worker pid %d catches %s itself, so the preload shim does not "
				"drain it: each reload does what the server does with %s (redis "
				"and memcached, for example, exit at once and fail the requests "
				"in hand); unless that is its graceful stop, give --drain-signal "
				"%s, which it leaves at its default, and the shim drains it",
				pid, s, s, free_name + 3);
		else
			(void)snprintf(
				buf, size,
				"worker pid %d catches %s itself, so the preload shim does not "
				"drain it: each reload does what the server does with %s; "
				"unless that is its graceful stop, %s",
				pid, s, s, graceful);
		return;
	case DRAIN_CAUGHT:
		(void)snprintf(buf, size, "worker pid %d catches %s: its own handler drains it",
			       pid, s);
		return;
	case DRAIN_BLOCKED:
		(void)snprintf(buf, size,
			       "worker pid %d blocks %s: it takes it with sigwait() or a signalfd",
			       pid, s);
		return;
	case DRAIN_SHIM:
		(void)snprintf(buf, size,
			       "worker pid %d leaves %s to the preload shim, which drains it", pid,
			       s);
		return;
	}
	(void)snprintf(buf, size, "worker pid %d: %s", pid, s);
}
