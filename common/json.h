/* SPDX-License-Identifier: MIT */
/* json.h - writing JSON strings: quotes, escapes, control characters as \u00XX. */
#pragma once

#include <stdio.h>

/* Writes s to f as one JSON string, quotes included. Bytes >= 0x80 pass unchanged (UTF-8). */
void json_write_string(FILE *f, const char *s);
