/* SPDX-License-Identifier: MIT */
/* command_table.h - the control socket's requests: one table for batond's dispatch, batonctl's
 * checks and both help texts. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum command_id {
	COMMAND_STATUS,
	COMMAND_RELOAD,
	COMMAND_STOP,
	COMMAND_UPGRADE,
	COMMAND_LISTEN,
	COMMAND_RETIRE,
	COMMAND_VERSION,
	COMMAND_EVENTS,
	COMMAND_IDENTIFY,
	COMMAND__MAX,
};

/*
 * One request. On the wire it is one line: "NAME", "NAME ARGUMENT" (arg_name set), "NAME
 * FLAG_WORD" (the batonctl option flag given), or "NAME FLAG_WORD VALUE" (a flag that takes a
 * value, flag_arg set).
 */
struct command {
	enum command_id id;
	const char *name;      /* the verb, the same for batonctl and on the wire */
	const char *arg_name;  /* the one argument it takes, as help shows it, or NULL */
	const char *flag;      /* batonctl's option for it ("--json"), or NULL */
	const char *flag_word; /* ... and the word that option adds to the line ("json") */
	const char *flag_arg;  /* ... and the value it takes, as help shows it ("SEQ"), or NULL */
	const char *help;      /* one line (two at most, split by '\n') for the help texts */
};

extern const struct command command_table[COMMAND__MAX];

/* The entry named name, or NULL. */
const struct command *command_find(const char *name);

/*
 * Splits one request line: the command, its argument (NULL if none; for a command whose flag
 * takes a value, that value) and whether its flag word was given. Returns 0 and writes all
 * three, or -EINVAL (no such command, a missing or extra argument, an unknown word); nothing is
 * written on failure. *ret_arg points into line.
 */
int command_parse(const char *line, const struct command **ret_cmd, const char **ret_arg,
		  bool *ret_flag);

/*
 * Writes the request line for cmd (arg: its argument, or its flag's value, or NULL; flag: its
 * option given) into buf.
 * Returns 0, -EINVAL (an argument missing, unexpected, empty or with a newline; a flag it does
 * not take) or -ENAMETOOLONG (over size bytes).
 */
int command_format(const struct command *cmd, const char *arg, bool flag, char *buf, size_t size);

/* Writes "status, reload, ...", every name, for an error message (truncated to fit size). */
#define COMMAND_NAMES_MAX 128 /* bytes that hold every name */
void command_names(char *buf, size_t size);

/* The "Commands:" block of batonctl --help, one command per line with its help. */
void command_help(FILE *f);
