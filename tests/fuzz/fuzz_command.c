/* SPDX-License-Identifier: MIT */
/*
 * fuzz_command.c - control request lines: command_parse() and command_format() agree both ways.
 *
 * Input: a byte (bits 2.. the command to format, bit 0 with the line as its argument,
 * bit 1 with its flag), then the line, up to a newline.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "command_table.h"
#include "control.h"
#include "harness.h"

/* What a refused line must leave in the outputs. */
static const struct command untouched_cmd;
static const char untouched_arg[] = "untouched";

/* A line batond received (control.c cut it at the newline): parsed, it formats back to itself. */
static void parse_line(const char *line)
{
	const struct command *cmd = &untouched_cmd;
	const char *arg = untouched_arg;
	bool flag = true;
	char buf[CONTROL_REQUEST_MAX + 1];
	int r;

	r = command_parse(line, &cmd, &arg, &flag);
	CHECK(r == 0 || r == -EINVAL);
	if (r < 0) {
		CHECK(cmd == &untouched_cmd && arg == untouched_arg && flag);
		return;
	}
	CHECK(cmd >= command_table && cmd < command_table + COMMAND__MAX);
	/* An argument exactly where one is taken: positional, or the value of its flag. */
	CHECK(!flag || cmd->flag_word);
	CHECK(!arg == !(cmd->arg_name || (cmd->flag_arg && flag)));
	if (arg)
		CHECK(arg > line && arg <= line + strlen(line) && *arg != '\0');
	CHECK(command_format(cmd, arg, flag, buf, sizeof(buf)) == 0);
	CHECK(strcmp(buf, line) == 0);
}

/* What batonctl would send for a command and an argument: it parses back to them. */
static void format_request(const struct command *cmd, const char *arg, bool flag)
{
	const struct command *got = NULL;
	const char *got_arg = NULL;
	bool got_flag = false;
	char buf[CONTROL_REQUEST_MAX + 1];
	int r;

	r = command_format(cmd, arg, flag, buf, sizeof(buf));
	CHECK(r == 0 || r == -EINVAL || r == -ENAMETOOLONG);
	if (r < 0)
		return;
	CHECK(strlen(buf) < sizeof(buf) && !strchr(buf, '\n'));
	/*
	 * A command without an argument takes only its flag word after a space (and the flag's
	 * value after another); an argument or a value holds anything but a newline.
	 */
	CHECK(command_parse(buf, &got, &got_arg, &got_flag) == 0);
	CHECK(got == cmd && got_flag == flag);
	CHECK(arg ? got_arg && strcmp(got_arg, arg) == 0 : !got_arg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { .data = data, .size = size };
	uint8_t pick = fuzz_u8(&in);
	const struct command *cmd = &command_table[(pick >> 2) % COMMAND__MAX];
	char *line = fuzz_string(&in, CONTROL_REQUEST_MAX, '\n');

	if (!line)
		return 0;
	parse_line(line);
	format_request(cmd, (pick & 1) ? line : NULL, pick & 2);
	free(line);
	return 0;
}
