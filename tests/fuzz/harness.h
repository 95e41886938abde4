/* SPDX-License-Identifier: MIT */
/* harness.h - what every fuzz target shares: the entry points, a byte reader, checks. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>

/* libFuzzer's entry points; LLVMFuzzerInitialize is optional per target. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A failed check must stop the fuzzer with a crash it can save: abort(), also with NDEBUG. */
#define CHECK(x)                 \
	do {                     \
		if (!(x))        \
			abort(); \
	} while (0)

/* Reads the fuzzer's input front to back; past the end every read gives 0. */
struct fuzz_input {
	const uint8_t *data;
	size_t size, off;
};

bool fuzz_more(const struct fuzz_input *in);
uint8_t fuzz_u8(struct fuzz_input *in);
uint16_t fuzz_u16(struct fuzz_input *in);
uint32_t fuzz_u32(struct fuzz_input *in);
uint64_t fuzz_u64(struct fuzz_input *in);

/*
 * Copies up to max bytes of the input (fewer if it ends) into a fresh heap string of exactly
 * that size plus a NUL, so that ASan sees a read past its end. Stops after a byte equal to
 * stop (not copied) unless stop is -1. Returns NULL only when out of memory.
 */
char *fuzz_string(struct fuzz_input *in, size_t max, int stop);

#define FUZZ_SEND_FDS_MAX 32 /* fds fuzz_send() attaches to one message */

/*
 * Sends buf[0..len) on a non-blocking socket fd with n_fds (at most FUZZ_SEND_FDS_MAX) fds of
 * /dev/null attached as SCM_RIGHTS (proto_send()), as any local process could; an empty
 * message goes without fds. Our copies are closed after: those in flight are the receiver's
 * to close. Returns len, or a negative errno (-EAGAIN when the socket is full).
 */
ssize_t fuzz_send(int fd, const void *buf, size_t len, size_t n_fds);

/*
 * The lowest fd number that is free: a target that leaks one fd per input makes it grow, so a
 * target compares it before and after each input. Costs one open() and one close().
 */
int fuzz_lowest_free_fd(void);
