/* SPDX-License-Identifier: MIT */
/* proto.c - wire protocol: strict little-endian encoders and decoders, no I/O, no allocation. */
#include "proto.h"

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Fixed body sizes, in bytes. */
#define HELLO_BODY_SIZE		8 /* pid u32, role u16, flags u16 */
#define LISTENERS_PREFIX_SIZE	6 /* first u16, count u16, total u16 */
#define LISTENER_ENTRY_FIXED	3 /* kind u8, name length u8, address length u8 */
#define DRAIN_BODY_SIZE		8 /* timeout_usec u64 */
#define TEXT_BODY_PREFIX_SIZE	6 /* inflight u32 or code i32, then text length u16 */
#define LISTENER_ENTRY_MAX_SIZE (LISTENER_ENTRY_FIXED + PROTO_NAME_MAX + PROTO_ADDRESS_MAX)

/* The wire widths must hold every value the limits allow. */
_Static_assert(PROTO_MAX_LISTENERS <= UINT16_MAX, "total is a u16 on the wire");
_Static_assert(PROTO_MAX_LISTENERS_PER_MESSAGE == PROTO_MAX_FDS_PER_MESSAGE, "one fd each");
_Static_assert(PROTO_NAME_MAX <= UINT8_MAX && PROTO_ADDRESS_MAX <= UINT8_MAX, "u8 lengths");
_Static_assert(PROTO_TEXT_MAX <= UINT16_MAX, "text length is a u16 on the wire");
_Static_assert(PROTO_MAX_MESSAGE <= INT32_MAX, "encoders return the length as an int");
/* One entry of the maximum size always fits: proto_listeners_fit() returns at least 1. */
_Static_assert(PROTO_HEADER_SIZE + LISTENERS_PREFIX_SIZE + LISTENER_ENTRY_MAX_SIZE <=
		       PROTO_MAX_MESSAGE,
	       "one listener per message must fit");

/* --- reading: every read compares against what remains; *off moves only on success --- */

struct reader {
	const uint8_t *buf;
	size_t len;
	size_t off; /* always <= len */
};

static int get_bytes(struct reader *r, void *ret, size_t n)
{
	if (n > r->len - r->off)
		return -EBADMSG;
	memcpy(ret, r->buf + r->off, n);
	r->off += n;
	return 0;
}

static int get_u8(struct reader *r, uint8_t *ret)
{
	return get_bytes(r, ret, sizeof(*ret));
}

static int get_u16(struct reader *r, uint16_t *ret)
{
	uint16_t v = 0;

	if (get_bytes(r, &v, sizeof(v)) < 0)
		return -EBADMSG;
	*ret = le16toh(v);
	return 0;
}

static int get_u32(struct reader *r, uint32_t *ret)
{
	uint32_t v = 0;

	if (get_bytes(r, &v, sizeof(v)) < 0)
		return -EBADMSG;
	*ret = le32toh(v);
	return 0;
}

static int get_u64(struct reader *r, uint64_t *ret)
{
	uint64_t v;

	if (get_bytes(r, &v, sizeof(v)) < 0)
		return -EBADMSG;
	*ret = le64toh(v);
	return 0;
}

/* --- content rules shared by encoders and decoders --- */

/* The LISTEN_FDNAMES rule: ':' separates names there; spaces and control bytes corrupt logs. */
static bool name_is_valid(const char *s, size_t n)
{
	if (n == 0 || n > PROTO_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= ' ' || c >= 0x7f || c == ':')
			return false;
	}
	return true;
}

/* Addresses are text for humans and logs (a Unix path may hold any byte but NUL). */
static bool address_is_valid(const char *s, size_t n)
{
	return n > 0 && n <= PROTO_ADDRESS_MAX && !memchr(s, '\0', n);
}

/* STATUS and ERROR text is one line from a peer we do not trust: no control bytes. */
static bool text_is_valid(const char *s, size_t n)
{
	if (n > PROTO_TEXT_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < ' ' || c == 0x7f)
			return false;
	}
	return true;
}

static bool type_is_known(uint16_t type)
{
	return type >= PROTO_HELLO && type <= PROTO_REFRESH;
}

static bool kind_is_known(unsigned kind)
{
	return kind >= PROTO_KIND_TCP && kind <= PROTO_KIND_UNIX;
}

static bool role_is_known(unsigned role)
{
	return role == PROTO_ROLE_WORKER || role == PROTO_ROLE_FETCH;
}

/* --- decoding --- */

/* Header checks common to every message; any_major lets ERROR through from every version. */
static int decode_header(const uint8_t *buf, size_t len, bool any_major, struct proto_header *ret)
{
	struct reader r = { .buf = buf, .len = len };
	uint32_t magic = 0, length = 0;
	uint8_t major = 0, minor = 0;
	uint16_t type = 0;

	if (!buf || len < PROTO_HEADER_SIZE)
		return -EBADMSG;
	(void)get_u32(&r, &magic);
	(void)get_u8(&r, &major);
	(void)get_u8(&r, &minor);
	(void)get_u16(&r, &type);
	(void)get_u32(&r, &length);
	if (magic != PROTO_MAGIC)
		return -EBADMSG;
	/* Before anything else: after the major byte, another version may mean anything. */
	if (major != PROTO_VERSION_MAJOR && !any_major)
		return -EPROTONOSUPPORT;
	if (!type_is_known(type))
		return -EBADMSG;
	if (len > PROTO_MAX_MESSAGE || length != len - PROTO_HEADER_SIZE)
		return -EBADMSG;

	*ret = (struct proto_header){
		.major = major, .minor = minor, .type = type, .length = length
	};
	return 0;
}

int proto_decode_header(const uint8_t *buf, size_t len, struct proto_header *ret)
{
	return decode_header(buf, len, false, ret);
}

/* Checks the header for the expected type; leaves r positioned at the start of the body. */
static int begin(const uint8_t *buf, size_t len, uint16_t type, bool any_major, struct reader *r)
{
	struct proto_header h;
	int ret;

	ret = decode_header(buf, len, any_major, &h);
	if (ret < 0)
		return ret;
	if (h.type != type)
		return -EBADMSG;
	*r = (struct reader){ .buf = buf, .len = len, .off = PROTO_HEADER_SIZE };
	return 0;
}

/* The body must end exactly where the last field did. */
static int end(const struct reader *r)
{
	return r->off == r->len ? 0 : -EBADMSG;
}

int proto_decode_hello(const uint8_t *buf, size_t len, struct proto_hello *ret)
{
	struct reader r;
	uint32_t pid = 0;
	uint16_t role, flags;
	int k;

	k = begin(buf, len, PROTO_HELLO, false, &r);
	if (k < 0)
		return k;
	if (get_u32(&r, &pid) < 0 || get_u16(&r, &role) < 0 || get_u16(&r, &flags) < 0)
		return -EBADMSG;
	if (pid == 0 || pid > INT32_MAX || !role_is_known(role))
		return -EBADMSG;
	if (end(&r) < 0)
		return -EBADMSG;

	*ret = (struct proto_hello){ .pid = (pid_t)pid, .role = role, .flags = flags };
	return 0;
}

/* Reads one length-prefixed string of 0..255 bytes into ret (NUL-terminated). */
static int get_string8(struct reader *r, char ret[static UINT8_MAX + 1], size_t *ret_n)
{
	uint8_t n = 0;

	if (get_u8(r, &n) < 0 || get_bytes(r, ret, n) < 0)
		return -EBADMSG;
	ret[n] = '\0';
	*ret_n = n;
	return 0;
}

/* Reads one listener entry; into a scratch entry when validating, into the caller's after. */
static int get_listener(struct reader *r, struct proto_listener *ret)
{
	size_t name_len, address_len;
	uint8_t kind = 0;

	if (get_u8(r, &kind) < 0 || !kind_is_known(kind))
		return -EBADMSG;
	if (get_string8(r, ret->name, &name_len) < 0 || !name_is_valid(ret->name, name_len))
		return -EBADMSG;
	if (get_string8(r, ret->address, &address_len) < 0 ||
	    !address_is_valid(ret->address, address_len))
		return -EBADMSG;
	ret->kind = kind;
	return 0;
}

int proto_decode_listeners(const uint8_t *buf, size_t len, struct proto_listeners *ret)
{
	struct proto_listener scratch;
	struct reader r, body;
	uint16_t first, count, total;
	int k;

	k = begin(buf, len, PROTO_LISTENERS, false, &r);
	if (k < 0)
		return k;
	if (get_u16(&r, &first) < 0 || get_u16(&r, &count) < 0 || get_u16(&r, &total) < 0)
		return -EBADMSG;
	if (count > PROTO_MAX_LISTENERS_PER_MESSAGE || total > PROTO_MAX_LISTENERS)
		return -EBADMSG;
	/* Entries first..first+count-1 lie inside the set, and each message brings at least one. */
	if (first > total || count > total - first || (count == 0 && total != 0))
		return -EBADMSG;

	/* Validate everything first, so a refused message leaves *ret untouched. */
	body = r;
	for (size_t i = 0; i < count; i++) {
		if (get_listener(&r, &scratch) < 0)
			return -EBADMSG;
	}
	if (end(&r) < 0)
		return -EBADMSG;

	for (size_t i = 0; i < count; i++)
		(void)get_listener(&body, &ret->entry[i]);
	ret->first = first;
	ret->count = count;
	ret->total = total;
	return 0;
}

/* READY and DRAINED are a bare header. */
static int decode_empty(const uint8_t *buf, size_t len, uint16_t type)
{
	struct reader r;
	int k;

	k = begin(buf, len, type, false, &r);
	if (k < 0)
		return k;
	return end(&r);
}

int proto_decode_ready(const uint8_t *buf, size_t len)
{
	return decode_empty(buf, len, PROTO_READY);
}

int proto_decode_drained(const uint8_t *buf, size_t len)
{
	return decode_empty(buf, len, PROTO_DRAINED);
}

int proto_decode_refresh(const uint8_t *buf, size_t len)
{
	return decode_empty(buf, len, PROTO_REFRESH);
}

int proto_decode_drain(const uint8_t *buf, size_t len, struct proto_drain *ret)
{
	struct reader r;
	uint64_t timeout_usec;
	int k;

	k = begin(buf, len, PROTO_DRAIN, false, &r);
	if (k < 0)
		return k;
	if (get_u64(&r, &timeout_usec) < 0 || end(&r) < 0)
		return -EBADMSG;

	ret->timeout_usec = timeout_usec;
	return 0;
}

/* STATUS and ERROR: a 32-bit number, then text with a u16 length. Writes the caller's locals. */
static int decode_text_body(const uint8_t *buf, size_t len, uint16_t type, bool any_major,
			    uint32_t *ret_number, char ret_text[static PROTO_TEXT_MAX + 1])
{
	struct reader r;
	uint16_t n = 0;
	int k;

	k = begin(buf, len, type, any_major, &r);
	if (k < 0)
		return k;
	if (get_u32(&r, ret_number) < 0 || get_u16(&r, &n) < 0 || n > PROTO_TEXT_MAX)
		return -EBADMSG;
	if (get_bytes(&r, ret_text, n) < 0 || !text_is_valid(ret_text, n) || end(&r) < 0)
		return -EBADMSG;
	ret_text[n] = '\0';
	return 0;
}

int proto_decode_status(const uint8_t *buf, size_t len, struct proto_status *ret)
{
	uint32_t inflight = 0;
	char text[PROTO_TEXT_MAX + 1];
	int k;

	k = decode_text_body(buf, len, PROTO_STATUS, false, &inflight, text);
	if (k < 0)
		return k;

	ret->inflight = inflight;
	memcpy(ret->text, text, strlen(text) + 1);
	return 0;
}

int proto_decode_error(const uint8_t *buf, size_t len, struct proto_error *ret)
{
	uint32_t code = 0;
	char text[PROTO_TEXT_MAX + 1];
	int k;

	k = decode_text_body(buf, len, PROTO_ERROR, true, &code, text);
	if (k < 0)
		return k;
	if (code == 0 || code > PROTO_MAX_ERROR_CODE)
		return -EBADMSG;

	ret->code = (int32_t)code;
	memcpy(ret->text, text, strlen(text) + 1);
	return 0;
}

/* --- encoding: sizes and contents are checked before the first byte is written --- */

static void put_bytes(uint8_t *buf, size_t *off, const void *p, size_t n)
{
	memcpy(buf + *off, p, n);
	*off += n;
}

static void put_u8(uint8_t *buf, size_t *off, uint8_t v)
{
	put_bytes(buf, off, &v, sizeof(v));
}

static void put_u16(uint8_t *buf, size_t *off, uint16_t v)
{
	v = htole16(v);
	put_bytes(buf, off, &v, sizeof(v));
}

static void put_u32(uint8_t *buf, size_t *off, uint32_t v)
{
	v = htole32(v);
	put_bytes(buf, off, &v, sizeof(v));
}

static void put_u64(uint8_t *buf, size_t *off, uint64_t v)
{
	v = htole64(v);
	put_bytes(buf, off, &v, sizeof(v));
}

/* Checks that a body of body_len bytes fits, and writes the header; the body follows at *off. */
static int put_header(uint8_t *buf, size_t size, uint16_t type, size_t body_len, size_t *off)
{
	if (body_len > PROTO_MAX_BODY)
		return -E2BIG;
	if (!buf || size < PROTO_HEADER_SIZE || body_len > size - PROTO_HEADER_SIZE)
		return -E2BIG;
	*off = 0;
	put_u32(buf, off, PROTO_MAGIC);
	put_u8(buf, off, PROTO_VERSION_MAJOR);
	put_u8(buf, off, PROTO_VERSION_MINOR);
	put_u16(buf, off, type);
	put_u32(buf, off, (uint32_t)body_len);
	return 0;
}

int proto_encode_hello(uint8_t *buf, size_t size, const struct proto_hello *m)
{
	size_t off;
	int k;

	if (m->pid <= 0 || !role_is_known((unsigned)m->role))
		return -EINVAL;
	k = put_header(buf, size, PROTO_HELLO, HELLO_BODY_SIZE, &off);
	if (k < 0)
		return k;
	put_u32(buf, &off, (uint32_t)m->pid);
	put_u16(buf, &off, (uint16_t)m->role);
	put_u16(buf, &off, m->flags);
	return (int)off;
}

/* Bytes one entry takes on the wire; names and addresses are measured up to one past the limit. */
static size_t listener_size(const struct proto_listener *l)
{
	return LISTENER_ENTRY_FIXED + strnlen(l->name, PROTO_NAME_MAX + 1) +
	       strnlen(l->address, PROTO_ADDRESS_MAX + 1);
}

size_t proto_listeners_fit(const struct proto_listener *entries, size_t n)
{
	size_t used = PROTO_HEADER_SIZE + LISTENERS_PREFIX_SIZE;
	size_t k;

	for (k = 0; k < n && k < PROTO_MAX_LISTENERS_PER_MESSAGE; k++) {
		size_t s = listener_size(&entries[k]);

		if (s > PROTO_MAX_MESSAGE - used)
			break;
		used += s;
	}
	return k;
}

int proto_encode_listeners(uint8_t *buf, size_t size, size_t first, size_t total,
			   const struct proto_listener *entries, size_t n)
{
	size_t body_len = LISTENERS_PREFIX_SIZE;
	size_t off;
	int k;

	if (n > PROTO_MAX_LISTENERS_PER_MESSAGE || total > PROTO_MAX_LISTENERS)
		return -E2BIG;
	if (first > total || n > total - first || (n == 0 && total != 0) || (n > 0 && !entries))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const struct proto_listener *l = &entries[i];

		if (!kind_is_known((unsigned)l->kind) ||
		    !name_is_valid(l->name, strnlen(l->name, PROTO_NAME_MAX + 1)) ||
		    !address_is_valid(l->address, strnlen(l->address, PROTO_ADDRESS_MAX + 1)))
			return -EINVAL;
		/* At most 253 entries of at most 513 bytes: this sum cannot overflow. */
		body_len += listener_size(l);
	}
	k = put_header(buf, size, PROTO_LISTENERS, body_len, &off);
	if (k < 0)
		return k;
	put_u16(buf, &off, (uint16_t)first);
	put_u16(buf, &off, (uint16_t)n);
	put_u16(buf, &off, (uint16_t)total);
	for (size_t i = 0; i < n; i++) {
		size_t name_len = strlen(entries[i].name);
		size_t address_len = strlen(entries[i].address);

		put_u8(buf, &off, (uint8_t)entries[i].kind);
		put_u8(buf, &off, (uint8_t)name_len);
		put_bytes(buf, &off, entries[i].name, name_len);
		put_u8(buf, &off, (uint8_t)address_len);
		put_bytes(buf, &off, entries[i].address, address_len);
	}
	return (int)off;
}

static int encode_empty(uint8_t *buf, size_t size, uint16_t type)
{
	size_t off;
	int k;

	k = put_header(buf, size, type, 0, &off);
	if (k < 0)
		return k;
	return (int)off;
}

int proto_encode_ready(uint8_t *buf, size_t size)
{
	return encode_empty(buf, size, PROTO_READY);
}

int proto_encode_drained(uint8_t *buf, size_t size)
{
	return encode_empty(buf, size, PROTO_DRAINED);
}

int proto_encode_refresh(uint8_t *buf, size_t size)
{
	return encode_empty(buf, size, PROTO_REFRESH);
}

int proto_encode_drain(uint8_t *buf, size_t size, const struct proto_drain *m)
{
	size_t off;
	int k;

	k = put_header(buf, size, PROTO_DRAIN, DRAIN_BODY_SIZE, &off);
	if (k < 0)
		return k;
	put_u64(buf, &off, m->timeout_usec);
	return (int)off;
}

static int encode_text_body(uint8_t *buf, size_t size, uint16_t type, uint32_t number,
			    const char *text)
{
	size_t n = strnlen(text, PROTO_TEXT_MAX + 1);
	size_t off;
	int k;

	if (n > PROTO_TEXT_MAX)
		return -E2BIG;
	if (!text_is_valid(text, n))
		return -EINVAL;
	k = put_header(buf, size, type, TEXT_BODY_PREFIX_SIZE + n, &off);
	if (k < 0)
		return k;
	put_u32(buf, &off, number);
	put_u16(buf, &off, (uint16_t)n);
	put_bytes(buf, &off, text, n);
	return (int)off;
}

int proto_encode_status(uint8_t *buf, size_t size, const struct proto_status *m)
{
	return encode_text_body(buf, size, PROTO_STATUS, m->inflight, m->text);
}

int proto_encode_error(uint8_t *buf, size_t size, const struct proto_error *m)
{
	if (m->code <= 0 || m->code > PROTO_MAX_ERROR_CODE)
		return -EINVAL;
	return encode_text_body(buf, size, PROTO_ERROR, (uint32_t)m->code, m->text);
}

const char *proto_type_to_string(uint16_t type)
{
	static const char *const names[] = {
		[PROTO_HELLO] = "HELLO",   [PROTO_LISTENERS] = "LISTENERS",
		[PROTO_READY] = "READY",   [PROTO_DRAIN] = "DRAIN",
		[PROTO_STATUS] = "STATUS", [PROTO_DRAINED] = "DRAINED",
		[PROTO_ERROR] = "ERROR",   [PROTO_REFRESH] = "REFRESH",
	};

	return type_is_known(type) ? names[type] : "unknown";
}

const char *proto_kind_to_string(enum proto_kind kind)
{
	switch (kind) {
	case PROTO_KIND_TCP:
		return "tcp";
	case PROTO_KIND_UDP:
		return "udp";
	case PROTO_KIND_UNIX:
		return "unix";
	}
	return "unknown";
}
