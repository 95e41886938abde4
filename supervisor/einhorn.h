/* SPDX-License-Identifier: MIT */
/* einhorn.h - einhorn's worker protocol: the "worker:ack" line a worker sends once it is up. */
#pragma once

#include <sys/types.h>

#define EINHORN_LINE_MAX 1024 /* bytes of one line looked at, after unescaping; the rest ignored */

/*
 * Parses one line received on EINHORN_SOCK_PATH. einhorn's worker library acknowledges startup
 * with a YAML (or JSON) map with command "worker:ack" and its pid, '%' and newlines escaped as
 * %25 and %0A (lib/einhorn/client.rb). Only the first EINHORN_LINE_MAX bytes of the unescaped
 * line count. Returns 0 and the pid (1..INT32_MAX) in *ret_pid, or -EBADMSG if the line is not
 * an ack with such a pid; *ret_pid is written only on success. Does not log.
 */
int einhorn_ack_parse(const char *line, pid_t *ret_pid);
