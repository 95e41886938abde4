/* SPDX-License-Identifier: MIT */
/* harness.c - shared by every fuzz target: a byte reader, an fd check, a resolver that stays local. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include "fdpass.h"

bool fuzz_more(const struct fuzz_input *in)
{
	return in->off < in->size;
}

uint8_t fuzz_u8(struct fuzz_input *in)
{
	return in->off < in->size ? in->data[in->off++] : 0;
}

uint16_t fuzz_u16(struct fuzz_input *in)
{
	uint16_t lo = fuzz_u8(in);

	return (uint16_t)(lo | (uint16_t)fuzz_u8(in) << 8);
}

uint32_t fuzz_u32(struct fuzz_input *in)
{
	uint32_t lo = fuzz_u16(in);

	return lo | (uint32_t)fuzz_u16(in) << 16;
}

uint64_t fuzz_u64(struct fuzz_input *in)
{
	uint64_t lo = fuzz_u32(in);

	return lo | (uint64_t)fuzz_u32(in) << 32;
}

char *fuzz_string(struct fuzz_input *in, size_t max, int stop)
{
	size_t left = in->size - in->off;
	size_t n = left < max ? left : max;
	size_t skip = 0;
	char *s;

	if (stop >= 0) {
		const uint8_t *end = memchr(in->data + in->off, stop, n);

		if (end) {
			n = (size_t)(end - (in->data + in->off));
			skip = 1;
		}
	}
	s = malloc(n + 1);
	if (!s)
		return NULL;
	memcpy(s, in->data + in->off, n);
	s[n] = '\0';
	in->off += n + skip;
	return s;
}

ssize_t fuzz_send(int fd, const void *buf, size_t len, size_t n_fds)
{
	int fds[FUZZ_SEND_FDS_MAX] = { 0 }; /* only fds[0..n_fds) are read */
	ssize_t n;

	CHECK(n_fds <= FUZZ_SEND_FDS_MAX);
	/* proto_send() refuses an empty message (a close, on SOCK_SEQPACKET): send() sends it. */
	if (len == 0) {
		n = send(fd, buf, 0, MSG_NOSIGNAL);
		return n < 0 ? -errno : n;
	}
	for (size_t i = 0; i < n_fds; i++) {
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		CHECK(fds[i] >= 0);
	}
	n = proto_send(fd, buf, len, fds, n_fds);
	for (size_t i = 0; i < n_fds; i++)
		(void)close(fds[i]);
	return n < 0 ? n : (ssize_t)len;
}

int fuzz_lowest_free_fd(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	CHECK(fd >= 0);
	(void)close(fd);
	return fd;
}

/*
 * Every target links with -Wl,--wrap=getaddrinfo: a host name from fuzz bytes must not become a
 * DNS query. Numeric addresses resolve as they would in batond, "localhost" as 127.0.0.1, and
 * every other name fails as an unknown one does.
 */
int __real_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res);

int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res)
{
	struct addrinfo h = { 0 };

	if (hints)
		h = *hints;
	h.ai_flags |= AI_NUMERICHOST;
	if (node && strcmp(node, "localhost") == 0)
		node = "127.0.0.1";
	return __real_getaddrinfo(node, service, &h, res);
}
