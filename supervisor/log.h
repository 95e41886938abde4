/* SPDX-License-Identifier: MIT */
/* log.h - one-line logging to stderr, with <N> syslog prefixes when stderr is the journal. */
#pragma once

#include <stdbool.h>
#include <syslog.h>

/* Sets the program name and detects the journal (JOURNAL_STREAM naming stderr's st_dev:st_ino). */
void log_setup(const char *program);

/* Messages above this syslog level are dropped; LOG_INFO by default, LOG_DEBUG with -v. */
void log_set_max_level(int level);
int log_get_max_level(void);

/* Writes one line "program: message" (or "<level>message" to the journal). */
void log_full(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* As log_full(), appending ": strerror(-error)". Returns error (a negative errno) for chaining. */
int log_full_errno(int level, int error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_debug(...)	 log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)	 log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...)	 log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...)	 log_full(LOG_ERR, __VA_ARGS__)

#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...)	  log_full_errno(LOG_ERR, (e), __VA_ARGS__)
