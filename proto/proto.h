/* SPDX-License-Identifier: MIT */
/* proto.h - the batond <-> worker wire protocol: message layout, pure encoders and decoders. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Every message is one SOCK_SEQPACKET record: a 12-byte header, then a body whose layout depends
 * on the type. Integers are little-endian with fixed widths. docs/PROTOCOL.md is the
 * specification; this header is its C contract.
 *
 * Encoders write one whole message into a caller buffer and return its length, or -E2BIG (the
 * buffer is too small, or a count or text is over its limit) or -EINVAL (a field is invalid);
 * the buffer holds nothing useful on failure. Decoders take one whole received message, never
 * allocate, and return 0, -EBADMSG (malformed: short, bad magic, wrong length, unknown type,
 * a count over its limit, a bad name or text, trailing bytes) or -EPROTONOSUPPORT (the peer
 * speaks another major version: reply ERROR and close). Their output is untouched on failure.
 */

/* Version: major changes only with an incompatible layout; minor adds types or values. */
#define PROTO_MAGIC	    UINT32_C(0x4e544142) /* the bytes "BATN" as a little-endian u32 */
#define PROTO_VERSION_MAJOR 1
#define PROTO_VERSION_MINOR 1

/* Sizes, in bytes. The header: magic u32, major u8, minor u8, type u16, body length u32. */
#define PROTO_HEADER_SIZE 12
#define PROTO_MAX_MESSAGE 65536 /* one message, header included */
#define PROTO_MAX_BODY	  (PROTO_MAX_MESSAGE - PROTO_HEADER_SIZE)
#define PROTO_NAME_MAX	  255  /* a listener name, without a NUL */
#define PROTO_ADDRESS_MAX 255  /* a listener address as text, without a NUL */
#define PROTO_TEXT_MAX	  1024 /* STATUS or ERROR text, without a NUL */

/* Counts. */
#define PROTO_MAX_LISTENERS		4096 /* listeners in one set, over all its messages */
#define PROTO_MAX_FDS_PER_MESSAGE	253  /* fds on one message: the kernel's SCM_MAX_FD */
#define PROTO_MAX_LISTENERS_PER_MESSAGE 253  /* one fd per listener */
#define PROTO_MAX_ERROR_CODE		4095 /* largest ERROR code: the kernel's MAX_ERRNO */

#define PROTO_DRAIN_NO_TIMEOUT UINT64_MAX /* DRAIN timeout_usec: no deadline */

enum proto_type {
	PROTO_HELLO = 1,     /* worker -> batond: who I am */
	PROTO_LISTENERS = 2, /* batond -> worker: listeners, their fds attached */
	PROTO_READY = 3,     /* worker -> batond: serving */
	PROTO_DRAIN = 4,     /* batond -> worker: stop accepting, finish, exit */
	PROTO_STATUS = 5,    /* worker -> batond: progress */
	PROTO_DRAINED = 6,   /* worker -> batond: nothing left in flight */
	PROTO_ERROR = 7,     /* either way: why the sender is closing; frozen in every major */
	PROTO_REFRESH = 8,   /* worker -> batond (1.1): send the listener set again, as it is now */
};

enum proto_role {
	PROTO_ROLE_WORKER = 1, /* spawned by batond: READY, DRAIN, STATUS, DRAINED follow */
	PROTO_ROLE_FETCH = 2,  /* any other process: takes the listeners and closes */
};

enum proto_kind {
	PROTO_KIND_TCP = 1,
	PROTO_KIND_UDP = 2,
	PROTO_KIND_UNIX = 3, /* SOCK_STREAM */
};

struct proto_header {
	uint8_t major;
	uint8_t minor;	 /* the sender's minor version; may be above ours */
	uint16_t type;	 /* enum proto_type */
	uint32_t length; /* bytes of body after the header */
};

struct proto_hello {
	pid_t pid; /* the sender's own pid, 1..INT32_MAX; informational (use SO_PEERCRED) */
	enum proto_role role;
	uint16_t flags; /* none defined in 1.0: send 0; bits a receiver does not know are kept */
};

struct proto_listener {
	enum proto_kind kind;
	char name[PROTO_NAME_MAX + 1];	     /* 1..255 of '!'..'~' except ':' (LISTEN_FDNAMES) */
	char address[PROTO_ADDRESS_MAX + 1]; /* 1..255 bytes, no NUL: tcp://127.0.0.1:80 */
};

/* One LISTENERS message: entries first .. first+count-1 of a set of total listeners. */
struct proto_listeners {
	uint32_t first; /* index of entry[0] in the set: the number received before this one */
	uint32_t count; /* entries here, and fds attached to this message, in the same order */
	uint32_t total; /* listeners in the set, the same in each of its messages */
	struct proto_listener entry[PROTO_MAX_LISTENERS_PER_MESSAGE]; /* about 130 KiB in all */
};

struct proto_drain {
	uint64_t timeout_usec; /* relative to receipt; 0 = now; PROTO_DRAIN_NO_TIMEOUT = none */
};

struct proto_status {
	uint32_t inflight;	       /* connections accepted and not yet finished */
	char text[PROTO_TEXT_MAX + 1]; /* one line: no bytes below 0x20, no 0x7f */
};

struct proto_error {
	int32_t code;		       /* positive errno value, 1..PROTO_MAX_ERROR_CODE */
	char text[PROTO_TEXT_MAX + 1]; /* one line, as for STATUS; may be empty */
};

/*
 * Checks the header of the received message buf[0..len): magic, major version, known type, and
 * a body length that is exactly len - PROTO_HEADER_SIZE and at most PROTO_MAX_BODY. Returns 0
 * and fills *ret, -EPROTONOSUPPORT for another major version (then try proto_decode_error(): the
 * peer may be saying why it refuses us; otherwise reply ERROR with EPROTONOSUPPORT and close), or
 * -EBADMSG. A minor version above ours is accepted.
 */
int proto_decode_header(const uint8_t *buf, size_t len, struct proto_header *ret);

/*
 * Typed decoders: each takes a whole message (header included), checks the header as above and
 * that the type is its own, then the body, and refuses trailing bytes. 0 or -EBADMSG or
 * -EPROTONOSUPPORT; *ret is untouched on failure.
 */
int proto_decode_hello(const uint8_t *buf, size_t len, struct proto_hello *ret);
/* The caller must also check that exactly ret->count fds arrived with the message. */
int proto_decode_listeners(const uint8_t *buf, size_t len, struct proto_listeners *ret);
int proto_decode_ready(const uint8_t *buf, size_t len);
int proto_decode_drain(const uint8_t *buf, size_t len, struct proto_drain *ret);
int proto_decode_status(const uint8_t *buf, size_t len, struct proto_status *ret);
int proto_decode_drained(const uint8_t *buf, size_t len);
int proto_decode_refresh(const uint8_t *buf, size_t len);
/* Accepts an ERROR of any major version: its layout is frozen so refusals stay readable. */
int proto_decode_error(const uint8_t *buf, size_t len, struct proto_error *ret);

/*
 * Encoders: write one message with our version into buf[0..size) and return its length (at most
 * PROTO_MAX_MESSAGE), or -E2BIG or -EINVAL as described at the top.
 */
int proto_encode_hello(uint8_t *buf, size_t size, const struct proto_hello *m);
/*
 * Encodes entries[0..n) as entries first .. first+n-1 of a set of total. n must be at most
 * proto_listeners_fit(entries, n), and at least 1 unless total is 0.
 */
int proto_encode_listeners(uint8_t *buf, size_t size, size_t first, size_t total,
			   const struct proto_listener *entries, size_t n);
int proto_encode_ready(uint8_t *buf, size_t size);
int proto_encode_drain(uint8_t *buf, size_t size, const struct proto_drain *m);
int proto_encode_status(uint8_t *buf, size_t size, const struct proto_status *m);
int proto_encode_drained(uint8_t *buf, size_t size);
int proto_encode_refresh(uint8_t *buf, size_t size);
int proto_encode_error(uint8_t *buf, size_t size, const struct proto_error *m);

/*
 * Returns how many of entries[0..n) the next LISTENERS message can carry: as many as fit in
 * PROTO_MAX_MESSAGE bytes, at most PROTO_MAX_LISTENERS_PER_MESSAGE; at least 1 when n >= 1.
 * A sender loops: k = fit(l + i, n - i); encode(buf, size, i, n, l + i, k); send with fds
 * i..i+k-1; i += k; until i == n (one message with total 0 when there is no listener).
 */
size_t proto_listeners_fit(const struct proto_listener *entries, size_t n);

/* "HELLO", "LISTENERS", ... for logs; "unknown" for anything else. */
const char *proto_type_to_string(uint16_t type);
/* "tcp", "udp", "unix"; "unknown" for anything else. */
const char *proto_kind_to_string(enum proto_kind kind);
