/* SPDX-License-Identifier: MIT */
/* fuzz_proto.c - libFuzzer target: every proto decoder, and a round trip of what decodes. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto.h"

/* Large (about 130 KiB each); static so that every run starts from the same memory. */
static struct proto_listeners listeners, listeners_again;
static uint8_t patched[PROTO_MAX_MESSAGE];
static uint8_t again[PROTO_MAX_MESSAGE];

/* What decodes is canonical: re-encoding gives the same bytes, except the sender's version. */
static void check_same_bytes(const uint8_t *in, size_t len, int n)
{
	CHECK(n > 0 && (size_t)n == len);
	CHECK(memcmp(in, again, 4) == 0);
	CHECK(memcmp(in + 6, again + 6, len - 6) == 0);
}

/* Runs each decoder on buf; a decoder that accepts must agree with the header decoder. */
static void decode_all(const uint8_t *buf, size_t len)
{
	struct proto_header h;
	struct proto_hello hello, hello_again;
	struct proto_drain drain, drain_again;
	struct proto_status status, status_again;
	struct proto_error error, error_again;
	int header = proto_decode_header(buf, len, &h);
	int n;

	CHECK(header == 0 || header == -EBADMSG || header == -EPROTONOSUPPORT);

	memset(&hello, 0, sizeof(hello));
	if (proto_decode_hello(buf, len, &hello) == 0) {
		CHECK(header == 0 && h.type == PROTO_HELLO);
		n = proto_encode_hello(again, sizeof(again), &hello);
		check_same_bytes(buf, len, n);
		memset(&hello_again, 0, sizeof(hello_again));
		CHECK(proto_decode_hello(again, (size_t)n, &hello_again) == 0);
		/* Fields, not memcmp: struct assignment need not copy padding. */
		CHECK(hello.pid == hello_again.pid && hello.role == hello_again.role &&
		      hello.flags == hello_again.flags);
	}

	memset(&listeners, 0, sizeof(listeners));
	if (proto_decode_listeners(buf, len, &listeners) == 0) {
		CHECK(header == 0 && h.type == PROTO_LISTENERS);
		CHECK(listeners.count <= PROTO_MAX_LISTENERS_PER_MESSAGE);
		CHECK(listeners.first + listeners.count <= listeners.total);
		CHECK(listeners.total <= PROTO_MAX_LISTENERS);
		/* A message that decoded is one that a sender could have packed. */
		CHECK(proto_listeners_fit(listeners.entry, listeners.count) == listeners.count);
		n = proto_encode_listeners(again, sizeof(again), listeners.first, listeners.total,
					   listeners.entry, listeners.count);
		check_same_bytes(buf, len, n);
		memset(&listeners_again, 0, sizeof(listeners_again));
		CHECK(proto_decode_listeners(again, (size_t)n, &listeners_again) == 0);
		CHECK(memcmp(&listeners, &listeners_again, sizeof(listeners)) == 0);
	}

	if (proto_decode_ready(buf, len) == 0) {
		CHECK(header == 0 && h.type == PROTO_READY);
		check_same_bytes(buf, len, proto_encode_ready(again, sizeof(again)));
	}

	if (proto_decode_drained(buf, len) == 0) {
		CHECK(header == 0 && h.type == PROTO_DRAINED);
		check_same_bytes(buf, len, proto_encode_drained(again, sizeof(again)));
	}

	if (proto_decode_refresh(buf, len) == 0) {
		CHECK(header == 0 && h.type == PROTO_REFRESH);
		check_same_bytes(buf, len, proto_encode_refresh(again, sizeof(again)));
	}

	memset(&drain, 0, sizeof(drain));
	if (proto_decode_drain(buf, len, &drain) == 0) {
		CHECK(header == 0 && h.type == PROTO_DRAIN);
		n = proto_encode_drain(again, sizeof(again), &drain);
		check_same_bytes(buf, len, n);
		memset(&drain_again, 0, sizeof(drain_again));
		CHECK(proto_decode_drain(again, (size_t)n, &drain_again) == 0);
		CHECK(drain.timeout_usec == drain_again.timeout_usec);
	}

	memset(&status, 0, sizeof(status));
	if (proto_decode_status(buf, len, &status) == 0) {
		CHECK(header == 0 && h.type == PROTO_STATUS);
		n = proto_encode_status(again, sizeof(again), &status);
		check_same_bytes(buf, len, n);
		memset(&status_again, 0, sizeof(status_again));
		CHECK(proto_decode_status(again, (size_t)n, &status_again) == 0);
		CHECK(memcmp(&status, &status_again, sizeof(status)) == 0);
	}

	memset(&error, 0, sizeof(error));
	if (proto_decode_error(buf, len, &error) == 0) {
		/* ERROR alone decodes from any major version. */
		CHECK(header == -EPROTONOSUPPORT || (header == 0 && h.type == PROTO_ERROR));
		n = proto_encode_error(again, sizeof(again), &error);
		check_same_bytes(buf, len, n);
		memset(&error_again, 0, sizeof(error_again));
		CHECK(proto_decode_error(again, (size_t)n, &error_again) == 0);
		CHECK(memcmp(&error, &error_again, sizeof(error)) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* As received: the header decoder is the first line of defence. */
	decode_all(data, size);

	/*
	 * With a valid v1 header forced on (magic, major, a known type chosen by the input,
	 * length): random bodies then reach every body decoder without the fuzzer having to
	 * guess a consistent header first.
	 */
	if (size >= PROTO_HEADER_SIZE && size <= sizeof(patched)) {
		uint32_t body = (uint32_t)(size - PROTO_HEADER_SIZE);

		memcpy(patched, data, size);
		memcpy(patched, "BATN", 4);
		patched[4] = PROTO_VERSION_MAJOR;
		patched[6] = (uint8_t)(PROTO_HELLO + data[6] % PROTO_REFRESH);
		patched[7] = 0;
		for (size_t i = 0; i < 4; i++)
			patched[8 + i] = (uint8_t)(body >> (8 * i));
		decode_all(patched, size);
	}
	return 0;
}
