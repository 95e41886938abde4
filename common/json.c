/* SPDX-License-Identifier: MIT */
/* json.c - writing JSON strings: quotes, escapes, control characters as \u00XX. */
#include "json.h"

void json_write_string(FILE *f, const char *s)
{
	(void)fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			(void)fprintf(f, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			(void)fprintf(f, "\\u%04x", c);
		else
			(void)fputc(c, f);
	}
	(void)fputc('"', f);
}
