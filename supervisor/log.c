/* SPDX-License-Identifier: MIT */
/* log.c - stderr logging: plain text for terminals, <N> level prefixes for the journal. */
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LOG_LINE_MAX 2048 /* bytes per line; longer messages are cut */

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

void log_set_max_level(int level)
{
	log_max_level = level;
}

int log_get_max_level(void)
{
	return log_max_level;
}

static void log_write(int level, const char *suffix, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	int n;

	if (level > log_max_level)
		return;
	if (log_journal)
		n = snprintf(line, sizeof(line), "<%d>", level);
	else
		n = snprintf(line, sizeof(line), "%s: ", log_program);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	(void)vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	/* One fputs per line: stderr is unbuffered, so lines from one process do not interleave. */
	(void)fprintf(stderr, "%s%s\n", line, suffix);
}

void log_full(int level, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_write(level, "", fmt, ap);
	va_end(ap);
	errno = saved;
}

int log_full_errno(int level, int error, const char *fmt, ...)
{
	char suffix[256];
	va_list ap;
	int saved = errno;

	(void)snprintf(suffix, sizeof(suffix), ": %s", strerror(error < 0 ? -error : error));
	va_start(ap, fmt);
	log_write(level, suffix, fmt, ap);
	va_end(ap);
	errno = saved;
	return error < 0 ? error : -error;
}
