/* SPDX-License-Identifier: MIT */
/* command_table.c - the control socket's requests: names, arguments, options and help. */
#include "command_table.h"

#include <errno.h>
#include <string.h>

const struct command command_table[COMMAND__MAX] = {
	[COMMAND_STATUS] = { COMMAND_STATUS, "status", NULL, "--json", "json",
			     "generations, workers, listeners with their accept queues" },
	[COMMAND_RELOAD] = { COMMAND_RELOAD, "reload", NULL, "--no-wait", "nowait",
			     "rolling restart; waits until the new generation serves\n"
			     "(exit 0) or was rolled back (exit 1, with the reason)" },
	[COMMAND_STOP] = { COMMAND_STOP, "stop", NULL, NULL, NULL,
			   "graceful stop (returns once batond accepted it)" },
	[COMMAND_UPGRADE] = { COMMAND_UPGRADE, "upgrade", NULL, NULL, NULL,
			      "re-execute batond's binary, keeping every worker" },
	[COMMAND_LISTEN] = { COMMAND_LISTEN, "listen", "[NAME=]ADDRESS", NULL, NULL,
			     "bind another listener; workers get it at the next reload" },
	[COMMAND_RETIRE] = { COMMAND_RETIRE, "retire", "NAME", NULL, NULL,
			     "close one listener in two stages; waits until it is closed" },
	[COMMAND_VERSION] = { COMMAND_VERSION, "version", NULL, NULL, NULL, "batond's version" },
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
		bool flag = false;

		if (strlen(c->name) != n || memcmp(c->name, line, n) != 0)
			continue;
		if (c->arg_name && (!rest || !*rest))
			return -EINVAL;
		if (!c->arg_name && rest) {
			if (!c->flag_word || strcmp(rest, c->flag_word) != 0)
				return -EINVAL;
			flag = true;
		}
		*ret_cmd = c;
		*ret_arg = c->arg_name ? rest : NULL;
		*ret_flag = flag;
		return 0;
	}
	return -EINVAL;
}

int command_format(const struct command *cmd, const char *arg, bool flag, char *buf, size_t size)
{
	size_t len;

	if (!cmd->arg_name != !arg || (flag && !cmd->flag_word))
		return -EINVAL;
	if (arg && (!*arg || strchr(arg, '\n')))
		return -EINVAL;
	len = strlen(cmd->name) + (arg ? 1 + strlen(arg) : 0) +
	      (flag ? 1 + strlen(cmd->flag_word) : 0);
	if (len >= size)
		return -ENAMETOOLONG;
	strcpy(buf, cmd->name);
	if (arg) {
		strcat(buf, " ");
		strcat(buf, arg);
	}
	if (flag) {
		strcat(buf, " ");
		strcat(buf, cmd->flag_word);
	}
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

		(void)snprintf(usage, sizeof(usage), "%s%s%s%s%s", c->name, c->arg_name ? " " : "",
			       c->arg_name ?: "", c->flag ? " [" : "", c->flag ?: "");
		if (c->flag)
			(void)strcat(usage, "]");
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
