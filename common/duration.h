/* SPDX-License-Identifier: MIT */
/* duration.h - parse and format durations such as 500ms, 30s, 2m (libc only, shared by all rooms). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define DURATION_USEC_PER_MSEC UINT64_C(1000)
#define DURATION_USEC_PER_SEC  UINT64_C(1000000)

#define DURATION_FRACTION_DIGITS_MAX 9 /* digits after the point: "1.123456789s" */

/*
 * Parses "<integer>[.<digits>]<unit>" with unit one of us, ms, s, m, h (no unit means seconds),
 * e.g. "500ms", "1.5s", "2m". A fraction must come to whole microseconds ("1.5us" is refused).
 * Returns 0 and writes microseconds to *ret_usec, or -EINVAL (malformed) or -ERANGE (does not
 * fit in 64 bits); *ret_usec is untouched on failure.
 */
int duration_parse(const char *s, uint64_t *ret_usec);

/* Formats usec as the shortest exact form ("1500ms", "30s", "2m", "0") into buf; returns buf. */
char *duration_format(uint64_t usec, char *buf, size_t size);

/* Size large enough for any duration_format() result. */
#define DURATION_FORMAT_MAX 32
