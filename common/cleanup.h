/* SPDX-License-Identifier: MIT */
/* cleanup.h - scope-bound ownership: _cleanup_ helpers, TAKE_FD() and TAKE_PTR(). */
#pragma once

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Closes *fd if it is open, keeping errno: callers read -errno after their early return. */
static inline void close_fdp(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		(void)close(*fd);
		errno = saved;
	}
}

/*
 * Closes fd if it is open, keeping errno, and returns -1 for the caller to store:
 * fd = safe_close(fd). A close() error is not reported: the fd is gone either way (Linux frees
 * it even on EINTR), and nothing batond closes has unwritten data it could lose.
 */
static inline int safe_close(int fd)
{
	close_fdp(&fd);
	return -1;
}

static inline void freep(void *p)
{
	int saved = errno;
	free(*(void **)p);
	errno = saved;
}

static inline void fclosep(FILE **f)
{
	if (*f) {
		int saved = errno;
		(void)fclose(*f);
		errno = saved;
	}
}

static inline void closedirp(DIR **d)
{
	if (*d) {
		int saved = errno;
		(void)closedir(*d);
		errno = saved;
	}
}

#define _cleanup_(f)	__attribute__((cleanup(f)))
#define _cleanup_close_ _cleanup_(close_fdp)
#define _cleanup_free_	_cleanup_(freep)

/* Hands the value over to the caller and leaves the variable empty, so its cleanup is a no-op. */
#define TAKE_FD(fd)              \
	({                       \
		int _fd_ = (fd); \
		(fd) = -1;       \
		_fd_;            \
	})
#define TAKE_PTR(p)                      \
	({                               \
		__typeof__(p) _p_ = (p); \
		(p) = NULL;              \
		_p_;                     \
	})

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
