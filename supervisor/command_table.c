/* SPDX-License-Identifier: MIT */
/* command_table.c - the control socket's requests: names, arguments, options and help. */
#include "command_table.h"

#include <errno.h>
#include <string.h>

#define CMD(id_, name_, arg_, flag_, word_, flag_arg_, help_) \
	[id_] = { .id = id_,                                  \
		  .name = name_,                              \
		  .arg_name = arg_,                           \
		  .flag = flag_,                              \
		  .flag_word = word_,                         \
		  .flag_arg = flag_arg_,                      \
		  .help = help_ }

const struct command command_table[COMMAND__MAX] = {
	CMD(COMMAND_STATUS, "status", NULL, "--json", "json", NULL,
	    "generations, workers, listeners with their accept queues"),
	CMD(COMMAND_RELOAD, "reload", NULL, "--no-wait", "nowait", NULL,
	    "rolling restart; waits until the new generation serves\n"
	    "(exit 0) or was rolled back (exit 1, with the reason)"),
	CMD(COMMAND_STOP, "stop", NULL, NULL, NULL, NULL,
	    "graceful stop (returns once batond accepted it)"),
	CMD(COMMAND_UPGRADE, "upgrade", NULL, NULL, NULL, NULL,
	    "re-execute batond's binary, keeping every worker"),
	CMD(COMMAND_LISTEN, "listen", "[NAME=]ADDRESS", NULL, NULL, NULL,
	    "bind another listener; workers get it at the next reload"),
	CMD(COMMAND_RETIRE, "retire", "NAME", NULL, NULL, NULL,
	    "close one listener in two stages; waits until it is closed"),
	CMD(COMMAND_VERSION, "version", NULL, NULL, NULL, NULL, "batond's version"),
	CMD(COMMAND_EVENTS, "events", NULL, "--since", "since", "SEQ",
	    "follow batond's events as JSON lines; --since replays\n"
	    "what the ring still holds from event SEQ on"),
	CMD(COMMAND_IDENTIFY, "identify", NULL, "--json", "json", NULL,
	    "which batond answers: pid, name, pid file, listeners"),
};

const struct command *command_find(const char *name)
{
	for (size_t i = 0; i < COMMAND__MAX; i++)
		if (strcmp(command_table[i].name, name) == 0)
			return &command_table[i];
	return NULL;
}

int command_parse(const char *line, const struct command **ret_cmd, const char **ret_arg,
		  bool *ret_flag)
{
	size_t n = strcspn(line, " ");
	const char *rest = line[n] == ' ' ? line + n + 1 : NULL;

	for (size_t i = 0; i < COMMAND__MAX; i++) {
		const struct command *c = &command_table[i];
		const char *arg = NULL;
		bool flag = false;

		if (strlen(c->name) != n || memcmp(c->name, line, n) != 0)
			continue;
		if (c->arg_name && (!rest || !*rest))
			return -EINVAL;
		if (c->arg_name) {
			arg = rest;
		} else if (rest) {
			size_t w = c->flag_word ? strlen(c->flag_word) : 0;

			if (!c->flag_word || strncmp(rest, c->flag_word, w) != 0)
				return -EINVAL;
			if (c->flag_arg) {
				/* "since 42": the word, one space, a value. */
				if (rest[w] != ' ' || !rest[w + 1])
					return -EINVAL;
				arg = rest + w + 1;
			} else if (rest[w]) {
				return -EINVAL;
			}
			flag = true;
		}
		*ret_cmd = c;
		*ret_arg = arg;
		*ret_flag = flag;
		return 0;
	}
	return -EINVAL;
}

int command_format(const struct command *cmd, const char *arg, bool flag, char *buf, size_t size)
{
	const char *word = flag ? cmd->flag_word : NULL;
	int n;

	if (flag && !cmd->flag_word)
		return -EINVAL;
	/* A positional argument, or the flag's value: given exactly when it is expected. */
	if (cmd->arg_name ? !arg : cmd->flag_arg ? !arg != !flag : arg != NULL)
		return -EINVAL;
	if (arg && (!*arg || strchr(arg, '\n')))
		return -EINVAL;
	if (cmd->arg_name)
		n = snprintf(buf, size, "%s %s", cmd->name, arg);
	else if (word && arg)
		n = snprintf(buf, size, "%s %s %s", cmd->name, word, arg);
	else if (word)
		n = snprintf(buf, size, "%s %s", cmd->name, word);
	else
		n = snprintf(buf, size, "%s", cmd->name);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

void command_names(char *buf, size_t size)
{
	size_t off = 0;

	if (size == 0)
		return;
	buf[0] = '\0';
	for (size_t i = 0; i < COMMAND__MAX; i++) {
		int n = snprintf(buf + off, size - off, "%s%s", i ? ", " : "",
				 command_table[i].name);

		if (n < 0 || (size_t)n >= size - off)
			return; /* truncated, still terminated */
		off += (size_t)n;
	}
}

void command_help(FILE *f)
{
	for (size_t i = 0; i < COMMAND__MAX; i++) {
		const struct command *c = &command_table[i];
		char usage[64];
		const char *h = c->help;

		(void)snprintf(usage, sizeof(usage), "%s%s%s%s%s%s%s%s", c->name,
			       c->arg_name ? " " : "", c->arg_name ?: "", c->flag ? " [" : "",
			       c->flag ?: "", c->flag_arg ? " " : "", c->flag_arg ?: "",
			       c->flag ? "]" : "");
		(void)fprintf(f, "  %-21s  ", usage);
		for (;;) {
			size_t n = strcspn(h, "\n");

			(void)fprintf(f, "%.*s\n", (int)n, h);
			if (!h[n])
				break;
			h += n + 1;
			(void)fprintf(f, "  %-21s  ", "");
		}
	}
}
