/* SPDX-License-Identifier: MIT */
/* einhorn.c - einhorn's "worker:ack" line, parsed without trusting its length or its numbers. */
#include "einhorn.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int einhorn_ack_parse(const char *line, pid_t *ret_pid)
{
	char text[EINHORN_LINE_MAX + 1];
	size_t n = 0;
	const char *p;
	long pid;

	for (p = line; *p && n < sizeof(text) - 1; p++) {
		if (p[0] == '%' && p[1] == '0' && p[2] == 'A') {
			text[n++] = '\n';
			p += 2;
		} else if (p[0] == '%' && p[1] == '2' && p[2] == '5') {
			text[n++] = '%';
			p += 2;
		} else {
			text[n++] = *p;
		}
	}
	text[n] = '\0';
	if (!strstr(text, "worker:ack"))
		return -EBADMSG;
	p = strstr(text, "pid");
	if (!p)
		return -EBADMSG;
	p += strcspn(p, "0123456789\n");
	if (*p < '0' || *p > '9')
		return -EBADMSG;
	/* strtol() saturates at LONG_MAX on overflow: out of range either way. */
	pid = strtol(p, NULL, 10);
	if (pid <= 0 || pid > INT32_MAX)
		return -EBADMSG;
	*ret_pid = (pid_t)pid;
	return 0;
}
