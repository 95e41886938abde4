/* SPDX-License-Identifier: MIT */
/* test_proto.c - wire protocol: round trips, every refusal, and fd passing over real sockets. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fdpass.h"
#include "proto.h"

#define POISON_BYTE 0x5a /* fills an output that a failing call must leave alone */
#define MANY_FDS    1000 /* listeners handed over in the largest test: four messages */

/* One message buffer per role; tests run in forked children, so statics are private. */
static uint8_t msg[PROTO_MAX_MESSAGE + 64];
static uint8_t rcv[PROTO_MAX_MESSAGE + 64];

static struct proto_listener listener(enum proto_kind kind, const char *name, const char *address)
{
	struct proto_listener l = { .kind = kind };

	ck_assert_uint_le(strlen(name), PROTO_NAME_MAX);
	ck_assert_uint_le(strlen(address), PROTO_ADDRESS_MAX);
	strcpy(l.name, name);
	strcpy(l.address, address);
	return l;
}

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (size_t i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Makes the header's body length agree with a message of len bytes. */
static void fix_length(uint8_t *buf, size_t len)
{
	put_le32(buf + 8, (uint32_t)(len - PROTO_HEADER_SIZE));
}

/* --- one valid sample of every type, and a decoder for any type --- */

static const uint16_t all_types[] = {
	PROTO_HELLO,  PROTO_LISTENERS, PROTO_READY, PROTO_DRAIN,
	PROTO_STATUS, PROTO_DRAINED,   PROTO_ERROR,
};

static size_t sample(uint16_t type, uint8_t *buf, size_t size)
{
	static const struct proto_hello hello = { .pid = 4242, .role = PROTO_ROLE_WORKER };
	static const struct proto_drain drain = { .timeout_usec = 30000000 };
	static const struct proto_status status = { .inflight = 17, .text = "17 requests" };
	static const struct proto_error error = { .code = EPROTO, .text = "HELLO expected" };
	struct proto_listener l[3] = {
		listener(PROTO_KIND_TCP, "web", "tcp://127.0.0.1:8080"),
		listener(PROTO_KIND_UDP, "dns", "udp://[::1]:53"),
		listener(PROTO_KIND_UNIX, "admin", "unix:/run/app/admin.sock"),
	};
	int n = -1;

	switch (type) {
	case PROTO_HELLO:
		n = proto_encode_hello(buf, size, &hello);
		break;
	case PROTO_LISTENERS:
		n = proto_encode_listeners(buf, size, 2, 5, l, 3);
		break;
	case PROTO_READY:
		n = proto_encode_ready(buf, size);
		break;
	case PROTO_DRAIN:
		n = proto_encode_drain(buf, size, &drain);
		break;
	case PROTO_STATUS:
		n = proto_encode_status(buf, size, &status);
		break;
	case PROTO_DRAINED:
		n = proto_encode_drained(buf, size);
		break;
	case PROTO_ERROR:
		n = proto_encode_error(buf, size, &error);
		break;
	}
	ck_assert_int_gt(n, 0);
	return (size_t)n;
}

/* All decoded outputs, so that one call can run any decoder and compare what it wrote. */
struct decoded {
	struct proto_header header;
	struct proto_hello hello;
	struct proto_drain drain;
	struct proto_status status;
	struct proto_error error;
	struct proto_listeners listeners;
};

static struct decoded out, before; /* about 130 KiB each: not on the stack */

/* Runs the decoder of type on buf; a failure must leave every output as it was. */
static int decode_as(uint16_t type, const uint8_t *buf, size_t len)
{
	int r = -1;

	memset(&out, POISON_BYTE, sizeof(out));
	memcpy(&before, &out, sizeof(out));
	switch (type) {
	case PROTO_HELLO:
		r = proto_decode_hello(buf, len, &out.hello);
		break;
	case PROTO_LISTENERS:
		r = proto_decode_listeners(buf, len, &out.listeners);
		break;
	case PROTO_READY:
		r = proto_decode_ready(buf, len);
		break;
	case PROTO_DRAIN:
		r = proto_decode_drain(buf, len, &out.drain);
		break;
	case PROTO_STATUS:
		r = proto_decode_status(buf, len, &out.status);
		break;
	case PROTO_DRAINED:
		r = proto_decode_drained(buf, len);
		break;
	case PROTO_ERROR:
		r = proto_decode_error(buf, len, &out.error);
		break;
	default:
		ck_abort_msg("no decoder for type %u", type);
	}
	if (r < 0)
		ck_assert_msg(memcmp(&out, &before, sizeof(out)) == 0,
			      "decoder of %s wrote its output and returned %d",
			      proto_type_to_string(type), r);
	return r;
}

/* Re-encodes what decode_as() just decoded. */
static int reencode(uint16_t type, uint8_t *buf, size_t size)
{
	switch (type) {
	case PROTO_HELLO:
		return proto_encode_hello(buf, size, &out.hello);
	case PROTO_LISTENERS:
		return proto_encode_listeners(buf, size, out.listeners.first, out.listeners.total,
					      out.listeners.entry, out.listeners.count);
	case PROTO_READY:
		return proto_encode_ready(buf, size);
	case PROTO_DRAIN:
		return proto_encode_drain(buf, size, &out.drain);
	case PROTO_STATUS:
		return proto_encode_status(buf, size, &out.status);
	case PROTO_DRAINED:
		return proto_encode_drained(buf, size);
	case PROTO_ERROR:
		return proto_encode_error(buf, size, &out.error);
	}
	return -EINVAL;
}

static void assert_refused(uint16_t type, const uint8_t *buf, size_t len, int error)
{
	int r = decode_as(type, buf, len);

	ck_assert_msg(r == error, "decoding %s of %zu bytes gave %d, expected %d",
		      proto_type_to_string(type), len, r, error);
}

/* --- round trips --- */

START_TEST(hello_round_trips_pid_role_and_flags)
{
	struct proto_hello h = { .pid = 1, .role = PROTO_ROLE_FETCH, .flags = 0x8001 };
	int n = proto_encode_hello(msg, sizeof(msg), &h);

	ck_assert_int_eq(n, PROTO_HEADER_SIZE + 8);
	ck_assert_int_eq(decode_as(PROTO_HELLO, msg, (size_t)n), 0);
	ck_assert_int_eq(out.hello.pid, 1);
	ck_assert_int_eq(out.hello.role, PROTO_ROLE_FETCH);
	ck_assert_uint_eq(out.hello.flags, 0x8001);

	h = (struct proto_hello){ .pid = INT32_MAX, .role = PROTO_ROLE_WORKER };
	n = proto_encode_hello(msg, sizeof(msg), &h);
	ck_assert_int_eq(decode_as(PROTO_HELLO, msg, (size_t)n), 0);
	ck_assert_int_eq(out.hello.pid, INT32_MAX);
	ck_assert_int_eq(out.hello.role, PROTO_ROLE_WORKER);
	ck_assert_uint_eq(out.hello.flags, 0);
}
END_TEST

START_TEST(listeners_round_trip_kinds_names_and_addresses_in_order)
{
	int n = (int)sample(PROTO_LISTENERS, msg, sizeof(msg));

	ck_assert_int_eq(decode_as(PROTO_LISTENERS, msg, (size_t)n), 0);
	ck_assert_uint_eq(out.listeners.first, 2);
	ck_assert_uint_eq(out.listeners.count, 3);
	ck_assert_uint_eq(out.listeners.total, 5);
	ck_assert_int_eq(out.listeners.entry[0].kind, PROTO_KIND_TCP);
	ck_assert_str_eq(out.listeners.entry[0].name, "web");
	ck_assert_str_eq(out.listeners.entry[0].address, "tcp://127.0.0.1:8080");
	ck_assert_int_eq(out.listeners.entry[1].kind, PROTO_KIND_UDP);
	ck_assert_str_eq(out.listeners.entry[1].name, "dns");
	ck_assert_str_eq(out.listeners.entry[1].address, "udp://[::1]:53");
	ck_assert_int_eq(out.listeners.entry[2].kind, PROTO_KIND_UNIX);
	ck_assert_str_eq(out.listeners.entry[2].name, "admin");
	ck_assert_str_eq(out.listeners.entry[2].address, "unix:/run/app/admin.sock");
}
END_TEST

START_TEST(names_and_addresses_of_the_maximum_length_round_trip)
{
	struct proto_listener l = { .kind = PROTO_KIND_UNIX };
	int n;

	memset(l.name, 'n', PROTO_NAME_MAX);
	memset(l.address, 0xff, PROTO_ADDRESS_MAX); /* any byte but NUL: a Unix path */
	n = proto_encode_listeners(msg, sizeof(msg), 0, 1, &l, 1);
	ck_assert_int_eq(n, PROTO_HEADER_SIZE + 6 + 3 + PROTO_NAME_MAX + PROTO_ADDRESS_MAX);
	ck_assert_int_eq(decode_as(PROTO_LISTENERS, msg, (size_t)n), 0);
	ck_assert_str_eq(out.listeners.entry[0].name, l.name);
	ck_assert_str_eq(out.listeners.entry[0].address, l.address);
}
END_TEST

START_TEST(an_empty_listener_set_is_one_message_with_total_zero)
{
	int n = proto_encode_listeners(msg, sizeof(msg), 0, 0, NULL, 0);

	ck_assert_int_eq(n, PROTO_HEADER_SIZE + 6);
	ck_assert_int_eq(decode_as(PROTO_LISTENERS, msg, (size_t)n), 0);
	ck_assert_uint_eq(out.listeners.first, 0);
	ck_assert_uint_eq(out.listeners.count, 0);
	ck_assert_uint_eq(out.listeners.total, 0);
	ck_assert_uint_eq(proto_listeners_fit(NULL, 0), 0);
}
END_TEST

START_TEST(ready_and_drained_are_a_bare_header)
{
	int n = proto_encode_ready(msg, sizeof(msg));

	ck_assert_int_eq(n, PROTO_HEADER_SIZE);
	ck_assert_int_eq(decode_as(PROTO_READY, msg, (size_t)n), 0);
	n = proto_encode_drained(msg, sizeof(msg));
	ck_assert_int_eq(n, PROTO_HEADER_SIZE);
	ck_assert_int_eq(decode_as(PROTO_DRAINED, msg, (size_t)n), 0);
}
END_TEST

START_TEST(drain_round_trips_its_relative_timeout)
{
	static const uint64_t values[] = { 0, 1, 30000000, UINT64_C(1) << 40,
					   PROTO_DRAIN_NO_TIMEOUT };

	for (size_t i = 0; i < ELEMENTSOF(values); i++) {
		struct proto_drain d = { .timeout_usec = values[i] };
		int n = proto_encode_drain(msg, sizeof(msg), &d);

		ck_assert_int_eq(n, PROTO_HEADER_SIZE + 8);
		ck_assert_int_eq(decode_as(PROTO_DRAIN, msg, (size_t)n), 0);
		ck_assert_uint_eq(out.drain.timeout_usec, values[i]);
	}
}
END_TEST

START_TEST(status_round_trips_text_and_connections_in_flight)
{
	static struct proto_status s;
	int n;

	s = (struct proto_status){ .inflight = 0, .text = "" };
	n = proto_encode_status(msg, sizeof(msg), &s);
	ck_assert_int_eq(n, PROTO_HEADER_SIZE + 6);
	ck_assert_int_eq(decode_as(PROTO_STATUS, msg, (size_t)n), 0);
	ck_assert_uint_eq(out.status.inflight, 0);
	ck_assert_str_eq(out.status.text, "");

	s.inflight = UINT32_MAX;
	memset(s.text, 'x', PROTO_TEXT_MAX);
	s.text[0] = ' ';	/* a space is text */
	s.text[1] = (char)0xc3; /* UTF-8 bytes pass as they are */
	s.text[2] = (char)0xa9;
	s.text[PROTO_TEXT_MAX] = '\0';
	n = proto_encode_status(msg, sizeof(msg), &s);
	ck_assert_int_eq(n, PROTO_HEADER_SIZE + 6 + PROTO_TEXT_MAX);
	ck_assert_int_eq(decode_as(PROTO_STATUS, msg, (size_t)n), 0);
	ck_assert_uint_eq(out.status.inflight, UINT32_MAX);
	ck_assert_str_eq(out.status.text, s.text);
}
END_TEST

START_TEST(error_round_trips_code_and_text)
{
	struct proto_error e = { .code = EPROTONOSUPPORT, .text = "version 1.0 only" };
	int n = proto_encode_error(msg, sizeof(msg), &e);

	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(decode_as(PROTO_ERROR, msg, (size_t)n), 0);
	ck_assert_int_eq(out.error.code, EPROTONOSUPPORT);
	ck_assert_str_eq(out.error.text, "version 1.0 only");

	e = (struct proto_error){ .code = PROTO_MAX_ERROR_CODE };
	n = proto_encode_error(msg, sizeof(msg), &e);
	ck_assert_int_eq(decode_as(PROTO_ERROR, msg, (size_t)n), 0);
	ck_assert_int_eq(out.error.code, PROTO_MAX_ERROR_CODE);
	ck_assert_str_eq(out.error.text, "");
}
END_TEST

START_TEST(every_type_reencodes_to_the_same_bytes)
{
	for (size_t t = 0; t < ELEMENTSOF(all_types); t++) {
		size_t len = sample(all_types[t], msg, sizeof(msg));

		ck_assert_int_eq(decode_as(all_types[t], msg, len), 0);
		ck_assert_int_eq(reencode(all_types[t], rcv, sizeof(rcv)), (int)len);
		ck_assert(memcmp(msg, rcv, len) == 0);
	}
}
END_TEST

/* --- the exact bytes: docs/PROTOCOL.md's examples, pinned --- */

static void assert_bytes(const uint8_t *got, int n, const uint8_t *want, size_t want_len)
{
	ck_assert_int_eq(n, (int)want_len);
	for (size_t i = 0; i < want_len; i++)
		ck_assert_msg(got[i] == want[i], "byte %zu is 0x%02x, expected 0x%02x", i, got[i],
			      want[i]);
}

START_TEST(messages_have_the_documented_bytes)
{
	static const uint8_t hello[] = {
		'B',  'A',  'T',  'N',	1, 1, 1, 0, 8, 0, 0, 0, /* header: v1.1 HELLO, 8 bytes */
		0x04, 0x03, 0x02, 0x01,				/* pid 0x01020304 */
		1,    0,					/* role WORKER */
		0,    0,					/* flags */
	};
	static const uint8_t listeners[] = {
		'B', 'A', 'T', 'N', 1,	 1,   2,   0,	30,  0,	  0,   0, /* LISTENERS, 30 bytes */
		0,   0,	  1,   0,   1,	 0, /* first 0, count 1, total 1 */
		1,   3,	  'w', 'e', 'b',    /* tcp, "web" */
		18,  't', 'c', 'p', ':', '/', '/', '1', '2', '7', '.', '0',
		'.', '0', '.', '1', ':', '8', '0',
	};
	static const uint8_t ready[] = { 'B', 'A', 'T', 'N', 1, 1, 3, 0, 0, 0, 0, 0 };
	static const uint8_t drain[] = {
		'B', 'A', 'T', 'N', 1, 1, 4, 0, 8, 0, 0, 0, 0x80, 0xc3, 0xc9, 0x01, 0, 0, 0, 0,
	};
	static const uint8_t status[] = {
		'B', 'A', 'T', 'N', 1, 1, 5, 0, 8, 0, 0, 0, 5, 0, 0, 0, 2, 0, 'o', 'k',
	};
	static const uint8_t drained[] = { 'B', 'A', 'T', 'N', 1, 1, 6, 0, 0, 0, 0, 0 };
	static const uint8_t error[] = {
		'B', 'A', 'T', 'N', 1, 1, 7, 0, 8, 0, 0, 0, 93, 0, 0, 0, 2, 0, 'v', '2',
	};
	struct proto_hello h = { .pid = 0x01020304, .role = PROTO_ROLE_WORKER };
	struct proto_listener l = listener(PROTO_KIND_TCP, "web", "tcp://127.0.0.1:80");
	struct proto_drain d = { .timeout_usec = 30000000 };
	struct proto_status s = { .inflight = 5, .text = "ok" };
	struct proto_error e = { .code = 93, .text = "v2" };

	assert_bytes(msg, proto_encode_hello(msg, sizeof(msg), &h), hello, sizeof(hello));
	assert_bytes(msg, proto_encode_listeners(msg, sizeof(msg), 0, 1, &l, 1), listeners,
		     sizeof(listeners));
	assert_bytes(msg, proto_encode_ready(msg, sizeof(msg)), ready, sizeof(ready));
	assert_bytes(msg, proto_encode_drain(msg, sizeof(msg), &d), drain, sizeof(drain));
	assert_bytes(msg, proto_encode_status(msg, sizeof(msg), &s), status, sizeof(status));
	assert_bytes(msg, proto_encode_drained(msg, sizeof(msg)), drained, sizeof(drained));
	assert_bytes(msg, proto_encode_error(msg, sizeof(msg), &e), error, sizeof(error));
}
END_TEST

/* --- the header --- */

START_TEST(the_header_gives_version_type_and_body_length)
{
	struct proto_header h;
	size_t len = sample(PROTO_STATUS, msg, sizeof(msg));

	ck_assert_int_eq(proto_decode_header(msg, len, &h), 0);
	ck_assert_uint_eq(h.major, PROTO_VERSION_MAJOR);
	ck_assert_uint_eq(h.minor, PROTO_VERSION_MINOR);
	ck_assert_uint_eq(h.type, PROTO_STATUS);
	ck_assert_uint_eq(h.length, len - PROTO_HEADER_SIZE);
	ck_assert_str_eq(proto_type_to_string(h.type), "STATUS");
}
END_TEST

START_TEST(a_newer_minor_version_is_accepted_and_reported)
{
	struct proto_header h;

	for (size_t t = 0; t < ELEMENTSOF(all_types); t++) {
		size_t len = sample(all_types[t], msg, sizeof(msg));

		msg[5] = 200;
		ck_assert_int_eq(proto_decode_header(msg, len, &h), 0);
		ck_assert_uint_eq(h.minor, 200);
		ck_assert_int_eq(decode_as(all_types[t], msg, len), 0);
	}
}
END_TEST

START_TEST(a_message_shorter_than_the_header_is_refused)
{
	size_t len = sample(PROTO_READY, msg, sizeof(msg));

	for (size_t n = 0; n < len; n++) {
		struct proto_header h;

		memset(&h, POISON_BYTE, sizeof(h));
		ck_assert_int_eq(proto_decode_header(msg, n, &h), -EBADMSG);
		ck_assert_uint_eq(h.major, POISON_BYTE);
		for (size_t t = 0; t < ELEMENTSOF(all_types); t++)
			assert_refused(all_types[t], msg, n, -EBADMSG);
	}
	ck_assert_int_eq(proto_decode_header(NULL, 0, &(struct proto_header){ 0 }), -EBADMSG);
}
END_TEST

START_TEST(a_bad_magic_is_refused)
{
	for (size_t t = 0; t < ELEMENTSOF(all_types); t++) {
		for (size_t i = 0; i < 4; i++) {
			size_t len = sample(all_types[t], msg, sizeof(msg));
			struct proto_header h;

			msg[i] ^= 0x20; /* "bATN", "BaTN", ...: case matters */
			ck_assert_int_eq(proto_decode_header(msg, len, &h), -EBADMSG);
			assert_refused(all_types[t], msg, len, -EBADMSG);
		}
	}
}
END_TEST

START_TEST(an_unknown_major_version_is_refused_with_eprotonosupport)
{
	static const uint8_t majors[] = { 0, 2, 255 };

	for (size_t t = 0; t < ELEMENTSOF(all_types); t++) {
		for (size_t i = 0; i < ELEMENTSOF(majors); i++) {
			size_t len = sample(all_types[t], msg, sizeof(msg));
			struct proto_header h;

			msg[4] = majors[i];
			ck_assert_int_eq(proto_decode_header(msg, len, &h), -EPROTONOSUPPORT);
			if (all_types[t] != PROTO_ERROR)
				assert_refused(all_types[t], msg, len, -EPROTONOSUPPORT);
		}
	}
}
END_TEST

START_TEST(the_major_version_is_checked_before_type_and_length)
{
	/* A version 2 peer may have types and lengths we do not know: it still gets the answer
	 * "another version", which is the one that lets it understand why we close. */
	uint8_t m[] = { 'B', 'A', 'T', 'N', 2, 0, 99, 0, 0xff, 0xff, 0, 0, 1, 2, 3 };
	struct proto_header h;

	ck_assert_int_eq(proto_decode_header(m, sizeof(m), &h), -EPROTONOSUPPORT);
}
END_TEST

START_TEST(an_error_from_another_major_version_still_decodes)
{
	size_t len = sample(PROTO_ERROR, msg, sizeof(msg));

	msg[4] = 2;
	msg[5] = 7;
	ck_assert_int_eq(decode_as(PROTO_ERROR, msg, len), 0);
	ck_assert_int_eq(out.error.code, EPROTO);
	ck_assert_str_eq(out.error.text, "HELLO expected");
	/* The frozen part is the layout, not leniency: it is checked as strictly as ever. */
	msg[len - 1] = '\n';
	assert_refused(PROTO_ERROR, msg, len, -EBADMSG);
}
END_TEST

START_TEST(a_length_field_that_disagrees_with_the_message_size_is_refused)
{
	static const int32_t deltas[] = { -1, 1, 1000, -(int32_t)PROTO_HEADER_SIZE };

	for (size_t t = 0; t < ELEMENTSOF(all_types); t++) {
		for (size_t i = 0; i < ELEMENTSOF(deltas); i++) {
			size_t len = sample(all_types[t], msg, sizeof(msg));
			struct proto_header h;

			put_le32(msg + 8,
				 (uint32_t)((int64_t)(len - PROTO_HEADER_SIZE) + deltas[i]));
			ck_assert_int_eq(proto_decode_header(msg, len, &h), -EBADMSG);
			assert_refused(all_types[t], msg, len, -EBADMSG);
		}
	}
	/* The largest length field of all. */
	sample(PROTO_READY, msg, sizeof(msg));
	put_le32(msg + 8, UINT32_MAX);
	assert_refused(PROTO_READY, msg, PROTO_HEADER_SIZE, -EBADMSG);
}
END_TEST

START_TEST(a_message_over_the_maximum_size_is_refused)
{
	struct proto_header h;

	/* A STATUS whose header and length field agree, one byte over the limit. */
	memset(msg, 'x', sizeof(msg));
	sample(PROTO_STATUS, msg, sizeof(msg));
	fix_length(msg, PROTO_MAX_MESSAGE + 1);
	ck_assert_int_eq(proto_decode_header(msg, PROTO_MAX_MESSAGE + 1, &h), -EBADMSG);
	fix_length(msg, PROTO_MAX_MESSAGE);
	ck_assert_int_eq(proto_decode_header(msg, PROTO_MAX_MESSAGE, &h), 0);
	ck_assert_uint_eq(h.length, PROTO_MAX_BODY);
}
END_TEST

START_TEST(an_unknown_type_is_refused)
{
	static const uint16_t types[] = { 0, 9, 0x100, 0xffff };
	size_t len = sample(PROTO_READY, msg, sizeof(msg));

	for (size_t i = 0; i < ELEMENTSOF(types); i++) {
		struct proto_header h;

		put_le16(msg + 6, types[i]);
		ck_assert_int_eq(proto_decode_header(msg, len, &h), -EBADMSG);
		ck_assert_str_eq(proto_type_to_string(types[i]), "unknown");
	}
}
END_TEST

START_TEST(a_decoder_refuses_a_message_of_another_type)
{
	for (size_t t = 0; t < ELEMENTSOF(all_types); t++) {
		size_t len = sample(all_types[t], msg, sizeof(msg));

		for (size_t d = 0; d < ELEMENTSOF(all_types); d++) {
			if (d != t)
				assert_refused(all_types[d], msg, len, -EBADMSG);
		}
	}
}
END_TEST

/* --- bodies --- */

START_TEST(trailing_bytes_after_the_body_are_refused)
{
	for (size_t t = 0; t < ELEMENTSOF(all_types); t++) {
		size_t len = sample(all_types[t], msg, sizeof(msg));

		msg[len] = 0;
		fix_length(msg, len + 1);
		assert_refused(all_types[t], msg, len + 1, -EBADMSG);
	}
}
END_TEST

START_TEST(every_truncation_of_a_valid_body_is_refused)
{
	for (size_t t = 0; t < ELEMENTSOF(all_types); t++) {
		size_t len = sample(all_types[t], msg, sizeof(msg));

		for (size_t n = PROTO_HEADER_SIZE; n < len; n++) {
			/* As received, and with a length field patched to agree. */
			assert_refused(all_types[t], msg, n, -EBADMSG);
			memcpy(rcv, msg, len);
			fix_length(rcv, n);
			assert_refused(all_types[t], rcv, n, -EBADMSG);
		}
	}
}
END_TEST

START_TEST(hello_with_pid_zero_or_over_int32_or_an_unknown_role_is_refused)
{
	size_t len = sample(PROTO_HELLO, msg, sizeof(msg));

	put_le32(msg + 12, 0);
	assert_refused(PROTO_HELLO, msg, len, -EBADMSG);
	put_le32(msg + 12, (uint32_t)INT32_MAX + 1);
	assert_refused(PROTO_HELLO, msg, len, -EBADMSG);
	put_le32(msg + 12, 1);
	put_le16(msg + 16, 0);
	assert_refused(PROTO_HELLO, msg, len, -EBADMSG);
	put_le16(msg + 16, 3);
	assert_refused(PROTO_HELLO, msg, len, -EBADMSG);
	put_le16(msg + 16, PROTO_ROLE_FETCH);
	ck_assert_int_eq(decode_as(PROTO_HELLO, msg, len), 0);
}
END_TEST

/* Offsets in sample(PROTO_LISTENERS): the body prefix, then "web" at 18. */
#define L_FIRST	   (PROTO_HEADER_SIZE + 0)
#define L_COUNT	   (PROTO_HEADER_SIZE + 2)
#define L_TOTAL	   (PROTO_HEADER_SIZE + 4)
#define L_KIND	   (PROTO_HEADER_SIZE + 6)
#define L_NAME_LEN (L_KIND + 1)
#define L_NAME	   (L_KIND + 2)
#define L_ADDR_LEN (L_NAME + 3)
#define L_ADDR	   (L_ADDR_LEN + 1)

START_TEST(listener_counts_over_their_limits_are_refused)
{
	size_t len = sample(PROTO_LISTENERS, msg, sizeof(msg));

	put_le16(msg + L_COUNT, PROTO_MAX_LISTENERS_PER_MESSAGE + 1);
	put_le16(msg + L_TOTAL, PROTO_MAX_LISTENERS);
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
	put_le16(msg + L_COUNT, 3);
	put_le16(msg + L_TOTAL, PROTO_MAX_LISTENERS + 1);
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
	put_le16(msg + L_COUNT, 0xffff);
	put_le16(msg + L_TOTAL, 0xffff);
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
}
END_TEST

START_TEST(listener_entries_outside_their_set_are_refused)
{
	size_t len = sample(PROTO_LISTENERS, msg, sizeof(msg)); /* first 2, count 3, total 5 */

	put_le16(msg + L_FIRST, 3); /* 3 + 3 > 5 */
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
	put_le16(msg + L_FIRST, 6); /* first beyond total */
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
	put_le16(msg + L_FIRST, 2);
	put_le16(msg + L_TOTAL, 4);
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
	put_le16(msg + L_TOTAL, 5);
	ck_assert_int_eq(decode_as(PROTO_LISTENERS, msg, len), 0);

	/* A message without entries makes no progress: only an empty set may send one. */
	len = (size_t)proto_encode_listeners(msg, sizeof(msg), 0, 0, NULL, 0);
	put_le16(msg + L_TOTAL, 1);
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
	/* More entries in the body than count says is trailing bytes. */
	len = sample(PROTO_LISTENERS, msg, sizeof(msg));
	put_le16(msg + L_COUNT, 2);
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
}
END_TEST

START_TEST(a_listener_name_with_a_nul_or_a_forbidden_byte_is_refused)
{
	static const uint8_t bad[] = { '\0', ' ', ':', '\n', 0x7f, 0x80, 0xff };

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		size_t len = sample(PROTO_LISTENERS, msg, sizeof(msg));

		msg[L_NAME + 1] = bad[i]; /* "w?b" */
		assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
	}
}
END_TEST

START_TEST(an_empty_listener_name_or_address_is_refused)
{
	size_t len = sample(PROTO_LISTENERS, msg, sizeof(msg));

	/* Name length 0: "web" then becomes the address length byte and garbage follows. */
	msg[L_NAME_LEN] = 0;
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);

	/* An address of length 0, with the message rebuilt to agree. */
	len = sample(PROTO_LISTENERS, msg, sizeof(msg));
	msg[L_ADDR_LEN] = 0;
	memmove(msg + L_ADDR, msg + L_ADDR + 20, len - L_ADDR - 20);
	len -= 20;
	fix_length(msg, len);
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
	msg[L_ADDR_LEN] = 20;
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
}
END_TEST

START_TEST(a_listener_address_with_a_nul_is_refused)
{
	size_t len = sample(PROTO_LISTENERS, msg, sizeof(msg));

	msg[L_ADDR + 5] = '\0';
	assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
}
END_TEST

START_TEST(an_unknown_listener_kind_is_refused)
{
	static const uint8_t kinds[] = { 0, 4, 0xff };

	for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
		size_t len = sample(PROTO_LISTENERS, msg, sizeof(msg));

		msg[L_KIND] = kinds[i];
		assert_refused(PROTO_LISTENERS, msg, len, -EBADMSG);
	}
	ck_assert_str_eq(proto_kind_to_string(PROTO_KIND_UDP), "udp");
	ck_assert_str_eq(proto_kind_to_string(0), "unknown");
}
END_TEST

START_TEST(text_with_a_nul_or_control_byte_is_refused)
{
	static const uint8_t bad[] = { '\0', '\n', '\r', '\t', 0x1b, 0x7f };
	static const uint16_t types[] = { PROTO_STATUS, PROTO_ERROR };

	for (size_t t = 0; t < ELEMENTSOF(types); t++) {
		for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
			size_t len = sample(types[t], msg, sizeof(msg));

			msg[len - 2] = bad[i];
			assert_refused(types[t], msg, len, -EBADMSG);
		}
	}
}
END_TEST

START_TEST(text_over_the_limit_is_refused)
{
	size_t len;

	memset(msg, 'x', sizeof(msg));
	sample(PROTO_STATUS, msg, sizeof(msg));
	len = PROTO_HEADER_SIZE + 6 + PROTO_TEXT_MAX + 1;
	put_le16(msg + PROTO_HEADER_SIZE + 4, PROTO_TEXT_MAX + 1);
	fix_length(msg, len);
	assert_refused(PROTO_STATUS, msg, len, -EBADMSG);
	/* One byte less is the limit itself, and fine. */
	put_le16(msg + PROTO_HEADER_SIZE + 4, PROTO_TEXT_MAX);
	fix_length(msg, len - 1);
	ck_assert_int_eq(decode_as(PROTO_STATUS, msg, len - 1), 0);
	ck_assert_uint_eq(strlen(out.status.text), PROTO_TEXT_MAX);
}
END_TEST

START_TEST(an_error_code_of_zero_or_beyond_errno_is_refused)
{
	static const uint32_t codes[] = { 0, PROTO_MAX_ERROR_CODE + 1, 0x80000000u, UINT32_MAX };

	for (size_t i = 0; i < ELEMENTSOF(codes); i++) {
		size_t len = sample(PROTO_ERROR, msg, sizeof(msg));

		put_le32(msg + PROTO_HEADER_SIZE, codes[i]);
		assert_refused(PROTO_ERROR, msg, len, -EBADMSG);
	}
}
END_TEST

START_TEST(any_bit_flip_either_decodes_to_what_reencodes_or_is_refused_untouched)
{
	for (size_t t = 0; t < ELEMENTSOF(all_types); t++) {
		size_t len = sample(all_types[t], msg, sizeof(msg));

		for (size_t bit = 0; bit < len * 8; bit++) {
			int n;

			msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			if (decode_as(all_types[t], msg, len) == 0) {
				/* What decodes is canonical: the same bytes, but for the version. */
				n = reencode(all_types[t], rcv, sizeof(rcv));
				ck_assert_int_eq(n, (int)len);
				ck_assert(memcmp(msg, rcv, 4) == 0);
				ck_assert(memcmp(msg + 6, rcv + 6, len - 6) == 0);
			}
			msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		}
	}
}
END_TEST

/* --- encoders --- */

START_TEST(encoders_refuse_a_buffer_too_small_with_e2big)
{
	for (size_t t = 0; t < ELEMENTSOF(all_types); t++) {
		size_t len = sample(all_types[t], msg, sizeof(msg));

		ck_assert_int_eq(decode_as(all_types[t], msg, len), 0);
		for (size_t size = 0; size < len; size++)
			ck_assert_int_eq(reencode(all_types[t], rcv, size), -E2BIG);
		ck_assert_int_eq(reencode(all_types[t], rcv, len), (int)len);
	}
	ck_assert_int_eq(proto_encode_ready(NULL, 100), -E2BIG);
}
END_TEST

START_TEST(encoders_refuse_invalid_fields_with_einval)
{
	struct proto_listener l = listener(PROTO_KIND_TCP, "web", "tcp://127.0.0.1:80");
	static struct proto_status s;
	struct proto_error e = { .code = 0 };

	ck_assert_int_eq(
		proto_encode_hello(msg, sizeof(msg), &(struct proto_hello){ .pid = 0, .role = 1 }),
		-EINVAL);
	ck_assert_int_eq(
		proto_encode_hello(msg, sizeof(msg), &(struct proto_hello){ .pid = -1, .role = 1 }),
		-EINVAL);
	ck_assert_int_eq(
		proto_encode_hello(msg, sizeof(msg), &(struct proto_hello){ .pid = 1, .role = 9 }),
		-EINVAL);

	ck_assert_int_eq(proto_encode_listeners(msg, sizeof(msg), 1, 1, &l, 1), -EINVAL);
	ck_assert_int_eq(proto_encode_listeners(msg, sizeof(msg), 0, 1, &l, 0), -EINVAL);
	ck_assert_int_eq(proto_encode_listeners(msg, sizeof(msg), 0, 1, NULL, 1), -EINVAL);
	l.kind = 7;
	ck_assert_int_eq(proto_encode_listeners(msg, sizeof(msg), 0, 1, &l, 1), -EINVAL);
	l = listener(PROTO_KIND_TCP, "we:b", "tcp://127.0.0.1:80");
	ck_assert_int_eq(proto_encode_listeners(msg, sizeof(msg), 0, 1, &l, 1), -EINVAL);
	l = listener(PROTO_KIND_TCP, "", "tcp://127.0.0.1:80");
	ck_assert_int_eq(proto_encode_listeners(msg, sizeof(msg), 0, 1, &l, 1), -EINVAL);
	l = listener(PROTO_KIND_TCP, "web", "");
	ck_assert_int_eq(proto_encode_listeners(msg, sizeof(msg), 0, 1, &l, 1), -EINVAL);
	l = listener(PROTO_KIND_TCP, "web", "x");
	memset(l.name, 'n', sizeof(l.name)); /* not terminated within the limit */
	ck_assert_int_eq(proto_encode_listeners(msg, sizeof(msg), 0, 1, &l, 1), -EINVAL);

	s = (struct proto_status){ .text = "two\nlines" };
	ck_assert_int_eq(proto_encode_status(msg, sizeof(msg), &s), -EINVAL);
	memset(s.text, 'x', sizeof(s.text)); /* not terminated within the limit */
	ck_assert_int_eq(proto_encode_status(msg, sizeof(msg), &s), -E2BIG);

	ck_assert_int_eq(proto_encode_error(msg, sizeof(msg), &e), -EINVAL);
	e.code = -EPROTO; /* the wire carries the positive errno */
	ck_assert_int_eq(proto_encode_error(msg, sizeof(msg), &e), -EINVAL);
	e.code = PROTO_MAX_ERROR_CODE + 1;
	ck_assert_int_eq(proto_encode_error(msg, sizeof(msg), &e), -EINVAL);
}
END_TEST

START_TEST(encoders_refuse_counts_over_the_limits_with_e2big)
{
	static struct proto_listener l[PROTO_MAX_LISTENERS_PER_MESSAGE + 1];

	for (size_t i = 0; i < ELEMENTSOF(l); i++)
		l[i] = listener(PROTO_KIND_TCP, "a", "b");
	ck_assert_int_eq(
		proto_encode_listeners(msg, sizeof(msg), 0, PROTO_MAX_LISTENERS, l, ELEMENTSOF(l)),
		-E2BIG);
	ck_assert_int_eq(proto_encode_listeners(msg, sizeof(msg), 0, PROTO_MAX_LISTENERS + 1, l, 1),
			 -E2BIG);
	ck_assert_int_gt(proto_encode_listeners(msg, sizeof(msg), PROTO_MAX_LISTENERS - 1,
						PROTO_MAX_LISTENERS, l, 1),
			 0);
}
END_TEST

START_TEST(fit_splits_by_fd_count_and_by_bytes)
{
	static struct proto_listener l[MANY_FDS];
	int n;

	for (size_t i = 0; i < ELEMENTSOF(l); i++) {
		char name[16];

		(void)snprintf(name, sizeof(name), "l%zu", i);
		l[i] = listener(PROTO_KIND_TCP, name, "tcp://127.0.0.1:80");
	}
	/* Short entries: the fd limit decides. */
	ck_assert_uint_eq(proto_listeners_fit(l, 1), 1);
	ck_assert_uint_eq(proto_listeners_fit(l, 253), 253);
	ck_assert_uint_eq(proto_listeners_fit(l, MANY_FDS), PROTO_MAX_LISTENERS_PER_MESSAGE);

	/* Entries of 513 bytes: 127 fill 65,169 of the 65,536 bytes, a 128th would not fit. */
	for (size_t i = 0; i < 253; i++) {
		memset(l[i].name, 'n', PROTO_NAME_MAX);
		l[i].name[PROTO_NAME_MAX] = '\0';
		memset(l[i].address, 'a', PROTO_ADDRESS_MAX);
		l[i].address[PROTO_ADDRESS_MAX] = '\0';
	}
	ck_assert_uint_eq(proto_listeners_fit(l, 253), 127);
	n = proto_encode_listeners(msg, sizeof(msg), 0, 253, l, 127);
	ck_assert_int_eq(n, PROTO_HEADER_SIZE + 6 + 127 * 513);
	ck_assert_int_eq(proto_encode_listeners(msg, sizeof(msg), 0, 253, l, 128), -E2BIG);
	ck_assert_uint_eq(proto_listeners_fit(l + 127, 126), 126);
}
END_TEST

/* --- fd passing over real sockets --- */

static void seqpacket_pair(int sv[2], int flags)
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | flags, 0, sv), 0);
}

static ino_t inode_of(int fd)
{
	struct stat st;

	ck_assert_int_eq(fstat(fd, &st), 0);
	return st.st_ino;
}

static bool is_cloexec(int fd)
{
	int flags = fcntl(fd, F_GETFD);

	ck_assert_int_ge(flags, 0);
	return flags & FD_CLOEXEC;
}

static void close_fds(const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(close(fds[i]), 0);
}

/* A SEQPACKET pair sv to pass fds over, and a pipe p whose ends are the fds to pass. */
static void open_pair_and_pipe(int sv[2], int p[2])
{
	seqpacket_pair(sv, 0);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
}

static void close_pair_and_pipe(int sv[2], int p[2])
{
	close_fds(p, 2);
	close_fds(sv, 2);
}

/* Sends the sample message of type with fds attached. */
static size_t send_sample(int fd, uint16_t type, const int *fds, size_t n_fds)
{
	size_t len = sample(type, msg, sizeof(msg));

	ck_assert_int_eq(proto_send(fd, msg, len, fds, n_fds), 0);
	return len;
}

START_TEST(one_fd_travels_with_its_message_and_arrives_cloexec)
{
	int n_fds = unit_count_fds();
	struct proto_listener l = listener(PROTO_KIND_TCP, "web", "tcp://127.0.0.1:80");
	int sv[2], p[2], got[4] = { -1, -1, -1, -1 };
	size_t n_got = 99;
	ssize_t n;
	int len;

	open_pair_and_pipe(sv, p);
	len = proto_encode_listeners(msg, sizeof(msg), 0, 1, &l, 1);
	ck_assert_int_gt(len, 0);
	ck_assert_int_eq(proto_send(sv[0], msg, (size_t)len, &p[0], 1), 0);

	n = proto_recv(sv[1], rcv, sizeof(rcv), got, ELEMENTSOF(got), &n_got);
	ck_assert_int_eq(n, len);
	ck_assert_uint_eq(n_got, 1);
	ck_assert_int_eq(decode_as(PROTO_LISTENERS, rcv, (size_t)n), 0);
	ck_assert_uint_eq(out.listeners.count, n_got);
	ck_assert_int_ne(got[0], p[0]);
	ck_assert(inode_of(got[0]) == inode_of(p[0]));
	ck_assert(is_cloexec(got[0]));
	ck_assert_int_eq(got[1], -1);

	close_fds(got, n_got);
	close_pair_and_pipe(sv, p);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(three_fds_arrive_in_the_order_they_were_sent)
{
	int n_fds = unit_count_fds();
	int sv[2], p[3][2], sent[3], got[PROTO_MAX_FDS_PER_MESSAGE];
	size_t n_got;

	seqpacket_pair(sv, 0);
	for (size_t i = 0; i < 3; i++)
		ck_assert_int_eq(pipe2(p[i], O_CLOEXEC), 0);
	for (size_t i = 0; i < 3; i++)
		sent[i] = p[2 - i][i % 2]; /* a mix of read and write ends, out of fd order */
	send_sample(sv[0], PROTO_LISTENERS, sent, 3);
	ck_assert_int_gt(proto_recv(sv[1], rcv, sizeof(rcv), got, ELEMENTSOF(got), &n_got), 0);
	ck_assert_uint_eq(n_got, 3);
	for (size_t i = 0; i < 3; i++) {
		ck_assert(inode_of(got[i]) == inode_of(sent[i]));
		ck_assert(is_cloexec(got[i]));
	}
	close_fds(got, n_got);
	for (size_t i = 0; i < 3; i++)
		close_fds(p[i], 2);
	close_fds(sv, 2);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_message_without_fds_arrives_with_none)
{
	int n_fds = unit_count_fds();
	int sv[2], got[1];
	size_t n_got = 99, len;

	seqpacket_pair(sv, 0);
	len = send_sample(sv[0], PROTO_STATUS, NULL, 0);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), got, 1, &n_got), (ssize_t)len);
	ck_assert_uint_eq(n_got, 0);
	/* No fd wanted at all: NULL and 0 are fine. */
	len = send_sample(sv[0], PROTO_READY, NULL, 0);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), NULL, 0, NULL), (ssize_t)len);
	ck_assert_int_eq(decode_as(PROTO_READY, rcv, len), 0);
	close_fds(sv, 2);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

/*
 * Hands n listeners, all duplicates of fd, from one end to the other the way batond will:
 * split by proto_listeners_fit(), reassembled by first/total. Returns the number of messages;
 * got[] holds the received fds.
 */
static size_t hand_over(int sv[2], const struct proto_listener *l, size_t n, int fd, int *got)
{
	static int dups[PROTO_MAX_FDS_PER_MESSAGE];
	size_t sent = 0, received = 0, messages = 0;

	for (size_t i = 0; i < ELEMENTSOF(dups); i++)
		dups[i] = fd;
	do {
		size_t k = proto_listeners_fit(l + sent, n - sent);
		int len = proto_encode_listeners(msg, sizeof(msg), sent, n, l + sent, k);
		size_t n_got;
		ssize_t r;

		ck_assert_int_gt(len, 0);
		ck_assert_int_eq(proto_send(sv[0], msg, (size_t)len, dups, k), 0);
		sent += k;
		messages++;

		r = proto_recv(sv[1], rcv, sizeof(rcv), got + received, PROTO_MAX_FDS_PER_MESSAGE,
			       &n_got);
		ck_assert_int_eq(r, len);
		ck_assert_int_eq(decode_as(PROTO_LISTENERS, rcv, (size_t)r), 0);
		ck_assert_uint_eq(out.listeners.first, received);
		ck_assert_uint_eq(out.listeners.total, n);
		ck_assert_uint_eq(out.listeners.count, n_got);
		for (size_t i = 0; i < n_got; i++)
			ck_assert_str_eq(out.listeners.entry[i].name, l[received + i].name);
		received += n_got;
	} while (sent < n);
	ck_assert_uint_eq(received, n);
	return messages;
}

START_TEST(two_hundred_fifty_three_long_listeners_split_across_two_messages)
{
	int n_fds = unit_count_fds();
	static struct proto_listener l[253];
	static int got[253];
	int sv[2], p[2];

	for (size_t i = 0; i < ELEMENTSOF(l); i++) {
		l[i].kind = PROTO_KIND_UNIX;
		memset(l[i].name, 'n', PROTO_NAME_MAX);
		(void)snprintf(l[i].name + PROTO_NAME_MAX - 3, 4, "%03zu", i);
		memset(l[i].address, '/', PROTO_ADDRESS_MAX);
	}
	open_pair_and_pipe(sv, p);
	ck_assert_uint_eq(hand_over(sv, l, ELEMENTSOF(l), p[1], got), 2);
	ck_assert_int_eq(unit_count_fds(), n_fds + 4 + 253);
	for (size_t i = 0; i < ELEMENTSOF(got); i++) {
		ck_assert(inode_of(got[i]) == inode_of(p[1]));
		ck_assert(is_cloexec(got[i]));
	}
	close_fds(got, ELEMENTSOF(got));
	close_pair_and_pipe(sv, p);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_thousand_listeners_travel_in_four_messages)
{
	int n_fds = unit_count_fds();
	static struct proto_listener l[MANY_FDS];
	static int got[MANY_FDS];
	struct rlimit rl;
	int sv[2], p[2];

	/* Room for a thousand received fds, in this forked test only. */
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 2 * MANY_FDS && rl.rlim_max >= 2 * MANY_FDS) {
		rl.rlim_cur = 2 * MANY_FDS;
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	for (size_t i = 0; i < ELEMENTSOF(l); i++) {
		char name[16];

		(void)snprintf(name, sizeof(name), "port%zu", i);
		l[i] = listener(PROTO_KIND_TCP, name, "tcp://[::]:8080");
	}
	open_pair_and_pipe(sv, p);
	ck_assert_uint_eq(hand_over(sv, l, ELEMENTSOF(l), p[0], got), 4);
	ck_assert_int_eq(unit_count_fds(), n_fds + 4 + MANY_FDS);
	for (size_t i = 0; i < ELEMENTSOF(got); i++)
		ck_assert(is_cloexec(got[i]));
	close_fds(got, ELEMENTSOF(got));
	close_pair_and_pipe(sv, p);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(more_fds_than_max_fds_are_refused_and_all_closed)
{
	int sv[2], p[2], sent[3], got[2] = { -1, -1 };
	size_t n_got = 99;
	int n_fds;

	open_pair_and_pipe(sv, p);
	n_fds = unit_count_fds();
	for (size_t i = 0; i < 3; i++)
		sent[i] = p[0];
	send_sample(sv[0], PROTO_LISTENERS, sent, 3);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), got, 2, &n_got), -EPROTO);
	ck_assert_int_eq(unit_count_fds(), n_fds);
	ck_assert_uint_eq(n_got, 99);
	ck_assert_int_eq(got[0], -1);

	/* No fd wanted: one is too many. */
	send_sample(sv[0], PROTO_STATUS, sent, 1);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), NULL, 0, NULL), -EPROTO);
	ck_assert_int_eq(unit_count_fds(), n_fds);

	/* The refused messages are consumed; the next one arrives normally. */
	send_sample(sv[0], PROTO_READY, NULL, 0);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), got, 2, &n_got), PROTO_HEADER_SIZE);
	ck_assert_uint_eq(n_got, 0);

	close_pair_and_pipe(sv, p);
}
END_TEST

START_TEST(a_message_longer_than_the_buffer_is_emsgsize_and_its_fds_closed)
{
	int sv[2], p[2], sent[2], got[2];
	size_t n_got = 99, len;
	int n_fds;

	open_pair_and_pipe(sv, p);
	n_fds = unit_count_fds();
	sent[0] = p[0];
	sent[1] = p[1];
	len = send_sample(sv[0], PROTO_LISTENERS, sent, 2);
	ck_assert_int_eq(proto_recv(sv[1], rcv, len - 1, got, 2, &n_got), -EMSGSIZE);
	ck_assert_int_eq(unit_count_fds(), n_fds);
	ck_assert_uint_eq(n_got, 99);

	/* The rest of the truncated message is gone, not read as the next one. */
	send_sample(sv[0], PROTO_DRAINED, NULL, 0);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), got, 2, &n_got), PROTO_HEADER_SIZE);
	ck_assert_int_eq(decode_as(PROTO_DRAINED, rcv, PROTO_HEADER_SIZE), 0);

	close_pair_and_pipe(sv, p);
}
END_TEST

START_TEST(credentials_in_the_control_data_are_refused_and_fds_closed)
{
	int sv[2], p[2], got[2];
	size_t n_got;
	int one = 1, n_fds;

	open_pair_and_pipe(sv, p);
	n_fds = unit_count_fds();
	ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	send_sample(sv[0], PROTO_LISTENERS, p, 1);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), got, 2, &n_got), -EPROTO);
	ck_assert_int_eq(unit_count_fds(), n_fds);
	close_pair_and_pipe(sv, p);
}
END_TEST

START_TEST(a_closed_peer_reads_as_zero_after_what_it_sent)
{
	int n_fds = unit_count_fds();
	int sv[2], got[1];
	size_t n_got = 99, len;

	seqpacket_pair(sv, 0);
	len = send_sample(sv[0], PROTO_DRAINED, NULL, 0);
	close_fds(&sv[0], 1);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), got, 1, &n_got), (ssize_t)len);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), got, 1, &n_got), 0);
	ck_assert_uint_eq(n_got, 0);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), got, 1, &n_got), 0);
	close_fds(&sv[1], 1);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_peer_that_closed_with_our_messages_unread_reads_as_econnreset_then_zero)
{
	int n_fds = unit_count_fds();
	int sv[2];

	seqpacket_pair(sv, 0);
	send_sample(sv[0], PROTO_HELLO, NULL, 0);
	close_fds(&sv[1], 1);
	ck_assert_int_eq(proto_recv(sv[0], rcv, sizeof(rcv), NULL, 0, NULL), -ECONNRESET);
	ck_assert_int_eq(proto_recv(sv[0], rcv, sizeof(rcv), NULL, 0, NULL), 0);
	close_fds(&sv[0], 1);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(an_empty_record_with_fds_reads_as_a_close_and_its_fds_are_closed)
{
	int sv[2], p[2], got[1];
	char control[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = msg, .iov_len = 0 };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control,
		.msg_controllen = sizeof(control),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	size_t n_got = 99;
	int n_fds;

	open_pair_and_pipe(sv, p);
	n_fds = unit_count_fds();
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &p[0], sizeof(int));
	ck_assert_int_eq(sendmsg(sv[0], &mh, MSG_NOSIGNAL), 0);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), got, 1, &n_got), 0);
	ck_assert_uint_eq(n_got, 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
	close_pair_and_pipe(sv, p);
}
END_TEST

START_TEST(receive_with_nothing_pending_is_eagain)
{
	int sv[2];
	size_t n_got = 99;
	int got[1];

	seqpacket_pair(sv, SOCK_NONBLOCK);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), got, 1, &n_got), -EAGAIN);
	ck_assert_uint_eq(n_got, 99);
	close_fds(sv, 2);
}
END_TEST

START_TEST(send_to_a_full_socket_is_eagain_and_sends_nothing)
{
	int sv[2];
	size_t sent = 0, received = 0;
	int r;

	seqpacket_pair(sv, SOCK_NONBLOCK);
	memset(msg, 'x', sizeof(msg));
	for (;;) {
		r = proto_send(sv[0], msg, PROTO_MAX_MESSAGE, NULL, 0);
		if (r < 0)
			break;
		sent++;
		ck_assert_uint_lt(sent, 100000);
	}
	ck_assert_int_eq(r, -EAGAIN);
	ck_assert_uint_gt(sent, 0);
	/* Every message queued before the refusal arrives whole, and nothing more. */
	while (proto_recv(sv[1], rcv, sizeof(rcv), NULL, 0, NULL) == PROTO_MAX_MESSAGE)
		received++;
	ck_assert_uint_eq(received, sent);
	close_fds(sv, 2);
}
END_TEST

START_TEST(send_to_a_closed_peer_is_epipe_without_sigpipe)
{
	int sv[2];

	/* With the default action, a SIGPIPE would kill this test. Linux 6.18 raises none for
	 * SOCK_SEQPACKET even without MSG_NOSIGNAL (stream sockets do), so this checks the result,
	 * and would catch a kernel or socket type that signals. */
	ck_assert(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
	seqpacket_pair(sv, 0);
	close_fds(&sv[1], 1);
	sample(PROTO_READY, msg, sizeof(msg));
	ck_assert_int_eq(proto_send(sv[0], msg, PROTO_HEADER_SIZE, NULL, 0), -EPIPE);
	close_fds(&sv[0], 1);
}
END_TEST

START_TEST(send_refuses_empty_oversized_and_too_many_fds)
{
	static int fds[PROTO_MAX_FDS_PER_MESSAGE + 1];
	int n_fds = unit_count_fds();
	int sv[2], p[2];

	seqpacket_pair(sv, SOCK_NONBLOCK);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	for (size_t i = 0; i < ELEMENTSOF(fds); i++)
		fds[i] = p[0];
	ck_assert_int_eq(proto_send(sv[0], msg, 0, NULL, 0), -EINVAL);
	ck_assert_int_eq(proto_send(sv[0], msg, 1, NULL, 1), -EINVAL);
	ck_assert_int_eq(proto_send(sv[0], msg, PROTO_MAX_MESSAGE + 1, NULL, 0), -EMSGSIZE);
	ck_assert_int_eq(proto_send(sv[0], msg, 1, fds, ELEMENTSOF(fds)), -E2BIG);
	ck_assert_int_eq(proto_recv(sv[1], rcv, 0, NULL, 0, NULL), -EINVAL);
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), fds, 1, NULL), -EINVAL);
	/* Nothing was sent by any of them. */
	ck_assert_int_eq(proto_recv(sv[1], rcv, sizeof(rcv), NULL, 0, NULL), -EAGAIN);
	/* The kernel's maximum itself is fine. */
	ck_assert_int_eq(proto_send(sv[0], msg, 1, fds, PROTO_MAX_FDS_PER_MESSAGE), 0);
	close_pair_and_pipe(sv, p);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(peer_cred_names_our_own_process_on_a_socketpair)
{
	struct ucred uc;
	int sv[2];

	seqpacket_pair(sv, 0);
	ck_assert_int_eq(proto_peer_cred(sv[0], &uc), 0);
	ck_assert_int_eq(uc.pid, getpid());
	ck_assert_int_eq(uc.uid, getuid());
	ck_assert_int_eq(uc.gid, getgid());
	close_fds(sv, 2);
	ck_assert_int_eq(proto_peer_cred(sv[0], &uc), -EBADF);
}
END_TEST

START_TEST(a_whole_conversation_runs_over_a_socketpair)
{
	int n_fds = unit_count_fds();
	struct proto_listener l = listener(PROTO_KIND_TCP, "web", "tcp://127.0.0.1:8080");
	struct proto_header h;
	int worker_end, batond_end, sv[2], p[2], got[PROTO_MAX_FDS_PER_MESSAGE];
	size_t n_got;
	ssize_t n;
	int len;

	seqpacket_pair(sv, 0);
	worker_end = sv[0];
	batond_end = sv[1];
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);

	len = proto_encode_hello(
		msg, sizeof(msg),
		&(struct proto_hello){ .pid = getpid(), .role = PROTO_ROLE_WORKER });
	ck_assert_int_eq(proto_send(worker_end, msg, (size_t)len, NULL, 0), 0);
	n = proto_recv(batond_end, rcv, sizeof(rcv), NULL, 0, NULL);
	ck_assert_int_eq(proto_decode_header(rcv, (size_t)n, &h), 0);
	ck_assert_uint_eq(h.type, PROTO_HELLO);
	ck_assert_int_eq(decode_as(PROTO_HELLO, rcv, (size_t)n), 0);
	ck_assert_int_eq(out.hello.pid, getpid());

	len = proto_encode_listeners(msg, sizeof(msg), 0, 1, &l, 1);
	ck_assert_int_eq(proto_send(batond_end, msg, (size_t)len, &p[0], 1), 0);
	n = proto_recv(worker_end, rcv, sizeof(rcv), got, ELEMENTSOF(got), &n_got);
	ck_assert_int_eq(decode_as(PROTO_LISTENERS, rcv, (size_t)n), 0);
	ck_assert_uint_eq(out.listeners.count, n_got);

	len = proto_encode_ready(msg, sizeof(msg));
	ck_assert_int_eq(proto_send(worker_end, msg, (size_t)len, NULL, 0), 0);
	n = proto_recv(batond_end, rcv, sizeof(rcv), NULL, 0, NULL);
	ck_assert_int_eq(decode_as(PROTO_READY, rcv, (size_t)n), 0);

	len = proto_encode_drain(msg, sizeof(msg), &(struct proto_drain){ .timeout_usec = 5 });
	ck_assert_int_eq(proto_send(batond_end, msg, (size_t)len, NULL, 0), 0);
	n = proto_recv(worker_end, rcv, sizeof(rcv), NULL, 0, NULL);
	ck_assert_int_eq(decode_as(PROTO_DRAIN, rcv, (size_t)n), 0);
	ck_assert_uint_eq(out.drain.timeout_usec, 5);

	len = proto_encode_status(msg, sizeof(msg),
				  &(struct proto_status){ .inflight = 1, .text = "draining" });
	ck_assert_int_eq(proto_send(worker_end, msg, (size_t)len, NULL, 0), 0);
	len = proto_encode_drained(msg, sizeof(msg));
	ck_assert_int_eq(proto_send(worker_end, msg, (size_t)len, NULL, 0), 0);
	close_fds(&worker_end, 1);
	close_fds(got, n_got);

	n = proto_recv(batond_end, rcv, sizeof(rcv), NULL, 0, NULL);
	ck_assert_int_eq(decode_as(PROTO_STATUS, rcv, (size_t)n), 0);
	ck_assert_str_eq(out.status.text, "draining");
	n = proto_recv(batond_end, rcv, sizeof(rcv), NULL, 0, NULL);
	ck_assert_int_eq(decode_as(PROTO_DRAINED, rcv, (size_t)n), 0);
	ck_assert_int_eq(proto_recv(batond_end, rcv, sizeof(rcv), NULL, 0, NULL), 0);

	close_fds(&batond_end, 1);
	close_fds(p, 2);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

Suite *proto_suite(void)
{
	Suite *s = suite_create("proto");
	TCase *tc = tcase_create("round trip");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, hello_round_trips_pid_role_and_flags);
	tcase_add_test(tc, listeners_round_trip_kinds_names_and_addresses_in_order);
	tcase_add_test(tc, names_and_addresses_of_the_maximum_length_round_trip);
	tcase_add_test(tc, an_empty_listener_set_is_one_message_with_total_zero);
	tcase_add_test(tc, ready_and_drained_are_a_bare_header);
	tcase_add_test(tc, drain_round_trips_its_relative_timeout);
	tcase_add_test(tc, status_round_trips_text_and_connections_in_flight);
	tcase_add_test(tc, error_round_trips_code_and_text);
	tcase_add_test(tc, every_type_reencodes_to_the_same_bytes);
	tcase_add_test(tc, messages_have_the_documented_bytes);
	suite_add_tcase(s, tc);

	tc = tcase_create("header");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, the_header_gives_version_type_and_body_length);
	tcase_add_test(tc, a_newer_minor_version_is_accepted_and_reported);
	tcase_add_test(tc, a_message_shorter_than_the_header_is_refused);
	tcase_add_test(tc, a_bad_magic_is_refused);
	tcase_add_test(tc, an_unknown_major_version_is_refused_with_eprotonosupport);
	tcase_add_test(tc, the_major_version_is_checked_before_type_and_length);
	tcase_add_test(tc, an_error_from_another_major_version_still_decodes);
	tcase_add_test(tc, a_length_field_that_disagrees_with_the_message_size_is_refused);
	tcase_add_test(tc, a_message_over_the_maximum_size_is_refused);
	tcase_add_test(tc, an_unknown_type_is_refused);
	tcase_add_test(tc, a_decoder_refuses_a_message_of_another_type);
	suite_add_tcase(s, tc);

	tc = tcase_create("body");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, trailing_bytes_after_the_body_are_refused);
	tcase_add_test(tc, every_truncation_of_a_valid_body_is_refused);
	tcase_add_test(tc, hello_with_pid_zero_or_over_int32_or_an_unknown_role_is_refused);
	tcase_add_test(tc, listener_counts_over_their_limits_are_refused);
	tcase_add_test(tc, listener_entries_outside_their_set_are_refused);
	tcase_add_test(tc, a_listener_name_with_a_nul_or_a_forbidden_byte_is_refused);
	tcase_add_test(tc, an_empty_listener_name_or_address_is_refused);
	tcase_add_test(tc, a_listener_address_with_a_nul_is_refused);
	tcase_add_test(tc, an_unknown_listener_kind_is_refused);
	tcase_add_test(tc, text_with_a_nul_or_control_byte_is_refused);
	tcase_add_test(tc, text_over_the_limit_is_refused);
	tcase_add_test(tc, an_error_code_of_zero_or_beyond_errno_is_refused);
	tcase_add_test(tc, any_bit_flip_either_decodes_to_what_reencodes_or_is_refused_untouched);
	suite_add_tcase(s, tc);

	tc = tcase_create("encode");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, encoders_refuse_a_buffer_too_small_with_e2big);
	tcase_add_test(tc, encoders_refuse_invalid_fields_with_einval);
	tcase_add_test(tc, encoders_refuse_counts_over_the_limits_with_e2big);
	tcase_add_test(tc, fit_splits_by_fd_count_and_by_bytes);
	suite_add_tcase(s, tc);

	tc = tcase_create("fdpass");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, one_fd_travels_with_its_message_and_arrives_cloexec);
	tcase_add_test(tc, three_fds_arrive_in_the_order_they_were_sent);
	tcase_add_test(tc, a_message_without_fds_arrives_with_none);
	tcase_add_test(tc, two_hundred_fifty_three_long_listeners_split_across_two_messages);
	tcase_add_test(tc, a_thousand_listeners_travel_in_four_messages);
	tcase_add_test(tc, more_fds_than_max_fds_are_refused_and_all_closed);
	tcase_add_test(tc, a_message_longer_than_the_buffer_is_emsgsize_and_its_fds_closed);
	tcase_add_test(tc, credentials_in_the_control_data_are_refused_and_fds_closed);
	tcase_add_test(tc, a_closed_peer_reads_as_zero_after_what_it_sent);
	tcase_add_test(tc,
		       a_peer_that_closed_with_our_messages_unread_reads_as_econnreset_then_zero);
	tcase_add_test(tc, an_empty_record_with_fds_reads_as_a_close_and_its_fds_are_closed);
	tcase_add_test(tc, receive_with_nothing_pending_is_eagain);
	tcase_add_test(tc, send_to_a_full_socket_is_eagain_and_sends_nothing);
	tcase_add_test(tc, send_to_a_closed_peer_is_epipe_without_sigpipe);
	tcase_add_test(tc, send_refuses_empty_oversized_and_too_many_fds);
	tcase_add_test(tc, peer_cred_names_our_own_process_on_a_socketpair);
	tcase_add_test(tc, a_whole_conversation_runs_over_a_socketpair);
	suite_add_tcase(s, tc);
	return s;
}
