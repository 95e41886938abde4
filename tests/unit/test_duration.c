/* SPDX-License-Identifier: MIT */
/* test_duration.c - duration_parse() and duration_format(): units, refusals, round trips. */
#include "unit.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "duration.h"

#define POISON UINT64_C(0xdeadbeefcafef00d) /* what *ret_usec holds before a call that must fail */

/* Parses s, which must fail with error, and checks that the output was left alone. */
static void assert_refused(const char *s, int error)
{
	uint64_t usec = POISON;
	int r = duration_parse(s, &usec);

	ck_assert_msg(r == error, "duration_parse(\"%s\") = %d, expected %d", s, r, error);
	ck_assert_msg(usec == POISON, "duration_parse(\"%s\") wrote its output on failure", s);
}

static void assert_parses(const char *s, uint64_t expected)
{
	uint64_t usec = POISON;
	int r = duration_parse(s, &usec);

	ck_assert_msg(r == 0, "duration_parse(\"%s\") = %d, expected 0", s, r);
	ck_assert_msg(usec == expected, "duration_parse(\"%s\") gave %llu us, expected %llu", s,
		      (unsigned long long)usec, (unsigned long long)expected);
}

START_TEST(a_bare_number_is_seconds)
{
	assert_parses("0", 0);
	assert_parses("1", DURATION_USEC_PER_SEC);
	assert_parses("30", 30 * DURATION_USEC_PER_SEC);
}
END_TEST

START_TEST(every_unit_scales_to_microseconds)
{
	assert_parses("7us", 7);
	assert_parses("500ms", 500 * DURATION_USEC_PER_MSEC);
	assert_parses("30s", 30 * DURATION_USEC_PER_SEC);
	assert_parses("2m", 120 * DURATION_USEC_PER_SEC);
	assert_parses("1h", 3600 * DURATION_USEC_PER_SEC);
	assert_parses("0ms", 0);
	assert_parses("0h", 0);
}
END_TEST

START_TEST(the_largest_value_that_fits_is_accepted)
{
	assert_parses("18446744073709551615us", UINT64_MAX);
	/* 5124095576 h is the last whole hour below 2^64 us. */
	assert_parses("5124095576h", UINT64_C(5124095576) * 3600 * DURATION_USEC_PER_SEC);
}
END_TEST

START_TEST(malformed_durations_are_refused_with_einval)
{
	static const char *const bad[] = {
		"",   "ms",   "-1s",  "1,5s", "10x",   "1 s",	 "s1",	  " 1s",   "1s ",
		"1S", "1sec", "1mss", "+1s",  "1m2s",  "0x10",	 "1\n",	  "us",	   "1ms1",
		"1 ", "1.",   "1.s",  ".5s",  "1..5s", "1.5.5s", "1.-5s", "1. 5s", "1.5 s",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_refused(bad[i], -EINVAL);
}
END_TEST

START_TEST(a_fraction_of_the_unit_is_accepted_when_it_is_whole_microseconds)
{
	assert_parses("1.5s", 1500 * DURATION_USEC_PER_MSEC);
	assert_parses("5.0s", 5 * DURATION_USEC_PER_SEC);
	assert_parses("0.25", 250 * DURATION_USEC_PER_MSEC);
	assert_parses("2.5ms", 2500);
	assert_parses("0.1m", 6 * DURATION_USEC_PER_SEC);
	assert_parses("1.000001s", DURATION_USEC_PER_SEC + 1);
	assert_parses("0.000000005h", 18); /* 3,600,000,000 us x 5e-9 */
	assert_parses("18446744073709551.615ms", UINT64_MAX);
}
END_TEST

START_TEST(a_fraction_finer_than_a_microsecond_or_too_long_is_refused)
{
	assert_refused("1.5us", -EINVAL);
	assert_refused("0.0000001s", -EINVAL);
	assert_refused("1.0001ms", -EINVAL);
	/* Ten digits after the point: more than anyone writes, refused rather than rounded. */
	assert_refused("1.0000000000s", -EINVAL);
	/* Whole part and fraction together beyond 64 bits. */
	assert_refused("18446744073709551615.5ms", -ERANGE);
	assert_refused("18446744073709551615.000001s", -ERANGE);
	assert_refused("18446744073709551.616ms", -ERANGE); /* the add, not the multiply */
	assert_refused("0.000000001h", -EINVAL);	    /* 3.6 us */
}
END_TEST

START_TEST(values_beyond_64_bits_are_refused_with_erange)
{
	/* 2^64 itself does not fit as a number, before any unit is applied. */
	assert_refused("18446744073709551616us", -ERANGE);
	assert_refused("99999999999999999999999999", -ERANGE);
	/* The number fits, the unit multiply does not. */
	assert_refused("99999999999999999h", -ERANGE);
	assert_refused("5124095577h", -ERANGE);
	assert_refused("18446744073709551615ms", -ERANGE);
	assert_refused("18446744073709551615", -ERANGE);
}
END_TEST

START_TEST(format_picks_the_largest_exact_unit)
{
	static const struct {
		uint64_t usec;
		const char *text;
	} cases[] = {
		{ 0, "0" },
		{ 1, "1us" },
		{ 1500, "1500us" },
		{ 1500000, "1500ms" },
		{ 30000000, "30s" },
		{ 90000000, "90s" },
		{ 120000000, "2m" },
		{ 3600000000, "1h" },
		{ 5400000000, "90m" },
		{ UINT64_MAX, "18446744073709551615us" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[DURATION_FORMAT_MAX];
		char *p = duration_format(cases[i].usec, buf, sizeof(buf));

		ck_assert_ptr_eq(p, buf);
		ck_assert_str_eq(buf, cases[i].text);
	}
}
END_TEST

START_TEST(format_then_parse_gives_the_same_value)
{
	static const uint64_t values[] = {
		0,
		1,
		7,
		999,
		1000,
		1001,
		500000,
		1000000,
		1500000,
		59000000,
		60000000,
		61000000,
		3600000000,
		86400000000,
		UINT64_C(5124095576) * 3600 * DURATION_USEC_PER_SEC,
		UINT64_MAX - 1,
		UINT64_MAX,
	};

	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		char buf[DURATION_FORMAT_MAX];
		uint64_t back = POISON;

		(void)duration_format(values[i], buf, sizeof(buf));
		ck_assert_msg(duration_parse(buf, &back) == 0, "\"%s\" does not parse back", buf);
		ck_assert_msg(back == values[i], "%llu formatted as \"%s\" parses to %llu",
			      (unsigned long long)values[i], buf, (unsigned long long)back);
	}
}
END_TEST

START_TEST(format_into_a_short_buffer_truncates_and_terminates)
{
	char buf[4];

	memset(buf, 'X', sizeof(buf));
	(void)duration_format(1500000, buf, sizeof(buf));
	ck_assert_str_eq(buf, "150");
}
END_TEST

Suite *duration_suite(void)
{
	Suite *s = suite_create("duration");
	TCase *tc = tcase_create("parse");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, a_bare_number_is_seconds);
	tcase_add_test(tc, every_unit_scales_to_microseconds);
	tcase_add_test(tc, the_largest_value_that_fits_is_accepted);
	tcase_add_test(tc, malformed_durations_are_refused_with_einval);
	tcase_add_test(tc, values_beyond_64_bits_are_refused_with_erange);
	tcase_add_test(tc, a_fraction_of_the_unit_is_accepted_when_it_is_whole_microseconds);
	tcase_add_test(tc, a_fraction_finer_than_a_microsecond_or_too_long_is_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("format");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, format_picks_the_largest_exact_unit);
	tcase_add_test(tc, format_then_parse_gives_the_same_value);
	tcase_add_test(tc, format_into_a_short_buffer_truncates_and_terminates);
	suite_add_tcase(s, tc);
	return s;
}
