/* SPDX-License-Identifier: MIT */
/* watch.h - --reload-on-change: a reload when a file, a directory or a symlink changes. */
#pragma once

#include <stdint.h>

#define WATCH_SETTLE_USEC   (250 * 1000ULL)  /* quiet time after the last change seen */
#define WATCH_INTERVAL_USEC (1000 * 1000ULL) /* at most one reload per this, from changes */

struct batond;
struct watch;

/*
 * What a path is now, folded into 64 bits: where it leads (every symlink followed), that file's
 * identity, size and times, and for a directory each entry's name, identity, size and times.
 * 0 when the path leads nowhere. Two calls agree exactly when nothing a reader of the path
 * would see has changed (a rewrite in place changes the times; a swapped symlink the target).
 */
uint64_t watch_signature(const char *path);

/*
 * --reload-on-change: watches each path with inotify (its directory, for renames and symlink
 * swaps, and what it leads to, for writes in place) and feeds a reload once changes have
 * settled, logging what changed. 0 (also without the option), or a negative errno logged
 * with the path.
 */
int watch_open(struct batond *b);
void watch_close(struct batond *b);
