/* SPDX-License-Identifier: MIT */
/*
 * fuzz_duration.c - duration_parse() against a reference, and duration_format() round trips.
 *
 * Input: 8 bytes of a value to format, then the text to parse.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "duration.h"
#include "harness.h"

#define TEXT_MAX 64 /* bytes of one input read as a duration; more only repeats digits */

/*
 * The grammar, written again in the plainest way: digits, an optional point with 1 to 9 digits,
 * then nothing or one of the units; a fraction must come to whole microseconds. Exact arithmetic
 * in 128 bits. Returns 0, -EINVAL or -ERANGE as duration_parse() must.
 */
static int reference_parse(const char *s, uint64_t *ret)
{
	static const struct {
		const char *suffix;
		uint64_t usec;
	} units[] = {
		{ "us", 1 },
		{ "ms", 1000 },
		{ "s", 1000000 },
		{ "m", 60000000 },
		{ "h", UINT64_C(3600000000) },
		{ "", 1000000 },
	};
	size_t digits = strspn(s, "0123456789"), frac_digits = 0;
	unsigned __int128 n = 0, frac = 0, den = 1;
	const char *unit;

	if (digits == 0)
		return -EINVAL;
	for (size_t i = 0; i < digits; i++) {
		n = n * 10 + (unsigned)(s[i] - '0');
		/* Too many digits is found before anything after them is looked at. */
		if (n > UINT64_MAX)
			return -ERANGE;
	}
	unit = s + digits;
	if (*unit == '.') {
		frac_digits = strspn(unit + 1, "0123456789");
		if (frac_digits == 0 || frac_digits > 9)
			return -EINVAL;
		for (size_t i = 0; i < frac_digits; i++) {
			frac = frac * 10 + (unsigned)(unit[1 + i] - '0');
			den *= 10;
		}
		unit += 1 + frac_digits;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		unsigned __int128 total;

		if (strcmp(unit, units[i].suffix) != 0)
			continue;
		if (frac * units[i].usec % den != 0)
			return -EINVAL;
		total = n * units[i].usec + frac * units[i].usec / den;
		if (total > UINT64_MAX)
			return -ERANGE;
		*ret = (uint64_t)total;
		return 0;
	}
	return -EINVAL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { .data = data, .size = size };
	char buf[DURATION_FORMAT_MAX];
	uint64_t usec = 0xdeadbeef, want = 0, back = 0, v;
	char *s;
	int r, w;

	/* Any value formats to text that parses back to it. */
	v = fuzz_u64(&in);
	duration_format(v, buf, sizeof(buf));
	CHECK(memchr(buf, '\0', sizeof(buf)));
	CHECK(duration_parse(buf, &back) == 0 && back == v);

	s = fuzz_string(&in, TEXT_MAX, -1);
	if (!s)
		return 0;
	r = duration_parse(s, &usec);
	w = reference_parse(s, &want);
	CHECK(r == w);
	if (r < 0) {
		CHECK(usec == 0xdeadbeef);
	} else {
		CHECK(usec == want);
		duration_format(usec, buf, sizeof(buf));
		CHECK(duration_parse(buf, &back) == 0 && back == usec);
	}
	free(s);
	return 0;
}
