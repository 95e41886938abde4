/* SPDX-License-Identifier: MIT */
/* log.h - one line per message: plain stderr, or the journal's native protocol with fields. */
#pragma once

#include <stdbool.h>
#include <syslog.h>

/*
 * Sets the program name and detects the journal (JOURNAL_STREAM naming stderr's st_dev:st_ino):
 * messages then go through sd_journal_send() with PRIORITY= and the fields below.
 */
void log_setup(const char *program);

/* True if messages go to the journal (log_setup() found stderr to be a journal stream). */
bool log_to_journal(void);

/* Messages above this syslog level are dropped; LOG_INFO by default, LOG_DEBUG with -v. */
void log_set_max_level(int level);
int log_get_max_level(void);

/*
 * What a message is about, as journal fields a reader filters on (journalctl
 * BATON_EVENT=reload_rolled_back). Zero and NULL members are left out; plain stderr shows
 * none of them (they are in the message text).
 */
struct log_fields {
	const char *event;    /* BATON_EVENT=, an event name of batonctl(8) */
	unsigned generation;  /* BATON_GENERATION= */
	int worker;	      /* BATON_WORKER= (the worker's index), -1: none */
	int worker_pid;	      /* BATON_WORKER_PID= */
	const char *listener; /* BATON_LISTENER=, the listener's name */
};

/* Writes one line "program: message" (or one journal entry). fields may be NULL. */
void log_struct(int level, const struct log_fields *fields, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* As log_struct() without fields. */
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
