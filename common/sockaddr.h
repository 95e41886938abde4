/* SPDX-License-Identifier: MIT */
/* sockaddr.h - parse a stream socket address as the examples and tools take it (libc only). */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>

/*
 * Parses "unix:/path", "unix:@abstract", "[V6]:PORT" or "HOST:PORT" (PORT 1..65535) into *ret.
 * With passive, an empty HOST or "*" means any address (for bind()). Returns 0, -EINVAL
 * (malformed), -ENAMETOOLONG (Unix path) or -EADDRNOTAVAIL (HOST does not resolve); *ret and
 * *ret_len are written only on success.
 */
int sockaddr_parse(const char *spec, bool passive, struct sockaddr_storage *ret,
		   socklen_t *ret_len);
