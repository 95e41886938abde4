/* SPDX-License-Identifier: MIT */
/* duration.c - durations on command lines: "500ms", "1.5s", "2m", overflow-checked. */
#include "duration.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const struct {
	const char *suffix;
	uint64_t usec;
} units[] = {
	{ "us", 1 },
	{ "ms", DURATION_USEC_PER_MSEC },
	{ "s", DURATION_USEC_PER_SEC },
	{ "m", 60 * DURATION_USEC_PER_SEC },
	{ "h", 3600 * DURATION_USEC_PER_SEC },
	{ "", DURATION_USEC_PER_SEC },
};

int duration_parse(const char *s, uint64_t *ret_usec)
{
	uint64_t n = 0, frac = 0, den = 1;
	const char *p = s;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (__builtin_mul_overflow(n, 10, &n) || __builtin_add_overflow(n, *p - '0', &n))
			return -ERANGE;
	}
	/* "1.5s": a fraction of the unit, as many digits as DURATION_FRACTION_DIGITS_MAX. */
	if (*p == '.') {
		size_t digits = 0;

		for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
			if (digits == DURATION_FRACTION_DIGITS_MAX)
				return -EINVAL;
			frac = frac * 10 + (uint64_t)(*p - '0');
			den *= 10;
		}
		if (digits == 0)
			return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		/* frac < 10^9 and a unit < 2^32: the product fits in 64 bits. */
		uint64_t usec, part = frac * units[i].usec;

		if (strcmp(p, units[i].suffix) != 0)
			continue;
		/* Whole microseconds only: "1.5us" would have to be rounded one way or another. */
		if (part % den != 0)
			return -EINVAL;
		if (__builtin_mul_overflow(n, units[i].usec, &usec) ||
		    __builtin_add_overflow(usec, part / den, &usec))
			return -ERANGE;
		*ret_usec = usec;
		return 0;
	}
	return -EINVAL;
}

char *duration_format(uint64_t usec, char *buf, size_t size)
{
	/* Largest unit that divides exactly, so the text parses back to the same value. */
	static const size_t order[] = { 4, 3, 2, 1, 0 };

	if (usec == 0) {
		(void)snprintf(buf, size, "0");
		return buf;
	}
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		uint64_t unit = units[order[i]].usec;

		if (usec % unit == 0) {
			(void)snprintf(buf, size, "%" PRIu64 "%s", usec / unit,
				       units[order[i]].suffix);
			return buf;
		}
	}
	return buf; /* not reached: "us" divides everything */
}
