/* SPDX-License-Identifier: MIT */
/* unit.c - what more than one suite needs: fd counts and pipe ends. */
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <unistd.h>

int unit_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	while (readdir(d))
		n++;
	(void)closedir(d);
	return n;
}

bool unit_read_end_is_gone(int write_end)
{
	ssize_t n = write(write_end, "x", 1);

	if (n == 1)
		return false;
	ck_assert_int_eq(n, -1);
	ck_assert_int_eq(errno, EPIPE);
	return true;
}
