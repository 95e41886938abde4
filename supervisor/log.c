/* SPDX-License-Identifier: MIT */
/* log.c - stderr logging: plain text for terminals, native journal entries with fields. */
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <systemd/sd-journal.h>

#define LOG_LINE_MAX   2048 /* bytes per line; longer messages are cut */
#define LOG_FIELDS_MAX 8    /* journal fields of one entry */
#define LOG_FIELD_MAX  160  /* bytes of one field but MESSAGE= */

static const char *log_program = "batond";
static bool log_journal;
static int log_max_level = LOG_INFO;

void log_setup(const char *program)
{
	const char *e = getenv("JOURNAL_STREAM");
	struct stat st;
	uint64_t dev, ino;

	log_program = program;
	log_journal = false;
	/* JOURNAL_STREAM is inherited by children too, so it counts only if it names our stderr. */
	if (e && sscanf(e, "%" SCNu64 ":%" SCNu64, &dev, &ino) == 2 && fstat(2, &st) == 0)
		log_journal = (uint64_t)st.st_dev == dev && (uint64_t)st.st_ino == ino;
}

bool log_to_journal(void)
{
	return log_journal;
}

void log_set_max_level(int level)
{
	log_max_level = level;
}

int log_get_max_level(void)
{
	return log_max_level;
}

/* One "NAME=value" field into f (LOG_FIELD_MAX bytes, cut to fit) and the next iov. */
static void add_field(struct iovec *iov, size_t *n, char f[LOG_FIELD_MAX], const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void add_field(struct iovec *iov, size_t *n, char f[LOG_FIELD_MAX], const char *fmt, ...)
{
	va_list ap;
	int len;

	va_start(ap, fmt);
	len = vsnprintf(f, LOG_FIELD_MAX, fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	if (len >= LOG_FIELD_MAX)
		len = LOG_FIELD_MAX - 1;
	/* sd_journal_sendv() sends a value with a newline in its binary-safe form. */
	iov[*n] = (struct iovec){ .iov_base = f, .iov_len = (size_t)len };
	(*n)++;
}

/* The journal's native protocol; false if journald cannot be reached (stderr is used then). */
static bool journal_send(int level, const struct log_fields *lf, const char *message)
{
	char f[LOG_FIELDS_MAX][LOG_FIELD_MAX];
	struct iovec iov[LOG_FIELDS_MAX + 1];
	char msg[LOG_LINE_MAX + 8];
	size_t n = 0;
	int len;

	len = snprintf(msg, sizeof(msg), "MESSAGE=%s", message);
	if (len < 0)
		return false;
	iov[n++] = (struct iovec){ .iov_base = msg,
				   .iov_len = (size_t)len < sizeof(msg) ? (size_t)len
									: sizeof(msg) - 1 };
	add_field(iov, &n, f[n], "PRIORITY=%d", level);
	add_field(iov, &n, f[n], "SYSLOG_IDENTIFIER=%s", log_program);
	if (lf && lf->event)
		add_field(iov, &n, f[n], "BATON_EVENT=%s", lf->event);
	if (lf && lf->generation)
		add_field(iov, &n, f[n], "BATON_GENERATION=%u", lf->generation);
	if (lf && lf->worker >= 0)
		add_field(iov, &n, f[n], "BATON_WORKER=%d", lf->worker);
	if (lf && lf->worker_pid > 0)
		add_field(iov, &n, f[n], "BATON_WORKER_PID=%d", lf->worker_pid);
	if (lf && lf->listener)
		add_field(iov, &n, f[n], "BATON_LISTENER=%s", lf->listener);
	return sd_journal_sendv(iov, (int)n) >= 0;
}

__attribute__((format(printf, 4, 0))) static void
log_write(int level, const struct log_fields *lf, const char *suffix, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	int n;

	if (level > log_max_level)
		return;
	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return;
	if (*suffix && (size_t)n < sizeof(line))
		(void)snprintf(line + n, sizeof(line) - (size_t)n, "%s", suffix);
	if (log_journal && journal_send(level, lf, line))
		return;
	/* One fprintf per line: stderr is unbuffered, so lines from one process do not mix. */
	if (log_journal)
		(void)fprintf(stderr, "<%d>%s\n", level, line);
	else
		(void)fprintf(stderr, "%s: %s\n", log_program, line);
}

/* log_write() that leaves errno as it was, for callers that log and then read it. */
__attribute__((format(printf, 3, 0))) static void
log_keep_errno(int level, const struct log_fields *lf, const char *fmt, va_list ap)
{
	int saved = errno;

	log_write(level, lf, "", fmt, ap);
	errno = saved;
}

void log_struct(int level, const struct log_fields *fields, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_keep_errno(level, fields, fmt, ap);
	va_end(ap);
}

void log_full(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_keep_errno(level, NULL, fmt, ap);
	va_end(ap);
}

int log_full_errno(int level, int error, const char *fmt, ...)
{
	char suffix[256];
	va_list ap;
	int saved = errno;

	(void)snprintf(suffix, sizeof(suffix), ": %s", strerror(error < 0 ? -error : error));
	va_start(ap, fmt);
	log_write(level, NULL, suffix, fmt, ap);
	va_end(ap);
	errno = saved;
	return error < 0 ? error : -error;
}
