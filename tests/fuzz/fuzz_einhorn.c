/* SPDX-License-Identifier: MIT */
/*
 * fuzz_einhorn.c - einhorn_ack_parse() on any line, and on acks as einhorn's library writes them.
 *
 * Input: 4 bytes of a pid for a canonical ack, then the line, up to a newline.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "control.h"
#include "einhorn.h"
#include "harness.h"

#define UNTOUCHED_PID (-7)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { .data = data, .size = size };
	int32_t want = (int32_t)(fuzz_u32(&in) & INT32_MAX);
	char ack[128];
	char *line;
	pid_t pid = UNTOUCHED_PID;
	int r;

	/* client.rb: YAML.dump({"command" => "worker:ack", "pid" => PID}), then escaped. */
	(void)snprintf(ack, sizeof(ack), "---%%0Acommand: worker:ack%%0Apid: %d%%0A", (int)want);
	r = einhorn_ack_parse(ack, &pid);
	CHECK(want > 0 ? r == 0 && pid == want : r == -EBADMSG && pid == UNTOUCHED_PID);

	/* Any line the einhorn socket can receive: at most CONTROL_REQUEST_MAX bytes, no newline. */
	line = fuzz_string(&in, CONTROL_REQUEST_MAX, '\n');
	if (!line)
		return 0;
	pid = UNTOUCHED_PID;
	r = einhorn_ack_parse(line, &pid);
	CHECK(r == 0 || r == -EBADMSG);
	if (r == 0)
		/* Unescaping makes only '%' and newlines: the command was in the line as sent. */
		CHECK(pid > 0 && strstr(line, "worker:ack"));
	else
		CHECK(pid == UNTOUCHED_PID);
	free(line);
	return 0;
}
