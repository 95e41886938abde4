/* SPDX-License-Identifier: MIT */
/* test_upgrade.c - the state text an old batond image hands to the new one. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "upgrade_state.h"

static struct upgrade_state *sample(void)
{
	struct upgrade_state *s = calloc(1, sizeof(*s));

	ck_assert_ptr_nonnull(s);
	s->next_gen = 8;
	s->notify_fd = 5;
	s->control_fd = 6;
	strcpy(s->notify_address, "@0abcd");
	s->n_listeners = 2;
	s->listeners[0] = (struct upgrade_listener){ .fd = 3, .name = "web" };
	s->listeners[1] = (struct upgrade_listener){
		.fd = 4, .owns_path = true, .path_dev = 2049, .path_ino = 77, .name = "my api"
	};
	s->n_workers = 2;
	s->workers[0] = (struct upgrade_worker){
		.w = { .state = ROLLOUT_W_READY,
		       .gen = 7,
		       .index = 0,
		       .pid = 100,
		       .pgid = 100,
		       .spawned_usec = 10,
		       .ready_usec = 20 },
		.serving = true,
		.channel_fd = 9,
	};
	s->workers[1] = (struct upgrade_worker){
		.w = { .state = ROLLOUT_W_DRAINING,
		       .gen = 6,
		       .index = 1,
		       .pid = 90,
		       .pgid = 89,
		       .deadline_usec = 123456789 },
		.channel_fd = -1,
	};
	return s;
}

START_TEST(state_survives_a_round_trip)
{
	struct upgrade_state *s = sample(), *t = calloc(1, sizeof(*t));
	char *buf = malloc(UPGRADE_STATE_MAX);
	int n;

	ck_assert_ptr_nonnull(t);
	ck_assert_ptr_nonnull(buf);
	n = upgrade_state_format(s, buf, UPGRADE_STATE_MAX);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(upgrade_state_parse(buf, (size_t)n, t), 0);
	ck_assert_uint_eq(t->next_gen, 8);
	ck_assert_int_eq(t->notify_fd, 5);
	ck_assert_int_eq(t->control_fd, 6);
	ck_assert_str_eq(t->notify_address, "@0abcd");
	ck_assert_uint_eq(t->n_listeners, 2);
	ck_assert_str_eq(t->listeners[1].name, "my api");
	ck_assert(t->listeners[1].owns_path);
	ck_assert_uint_eq(t->listeners[1].path_ino, 77);
	ck_assert_uint_eq(t->n_workers, 2);
	ck_assert_int_eq(t->workers[0].w.state, ROLLOUT_W_READY);
	ck_assert(t->workers[0].serving);
	ck_assert_int_eq(t->workers[0].channel_fd, 9);
	ck_assert_int_eq(t->workers[1].channel_fd, -1);
	ck_assert_int_eq(t->workers[1].w.pgid, 89);
	ck_assert_uint_eq(t->workers[1].w.deadline_usec, 123456789);
	free(s);
	free(t);
	free(buf);
}
END_TEST

START_TEST(another_state_version_or_garbage_is_refused)
{
	struct upgrade_state *t = calloc(1, sizeof(*t));
	static const char v2[] = "baton-state 2\nend\n";
	static const char junk[] = "baton-state 1\nnotify 5 @x\nworker 1 0 abc\nend\n";
	static const char no_end[] = "baton-state 1\nnotify 5 @x\n";
	static const char no_notify[] = "baton-state 1\nend\n";

	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(upgrade_state_parse(v2, strlen(v2), t), -EPROTONOSUPPORT);
	ck_assert_int_eq(upgrade_state_parse(junk, strlen(junk), t), -EBADMSG);
	ck_assert_int_eq(upgrade_state_parse(no_end, strlen(no_end), t), -EBADMSG);
	ck_assert_int_eq(upgrade_state_parse(no_notify, strlen(no_notify), t), -EBADMSG);
	free(t);
}
END_TEST

START_TEST(state_too_large_for_the_buffer_is_refused)
{
	struct upgrade_state *s = sample();
	char buf[32];

	ck_assert_int_eq(upgrade_state_format(s, buf, sizeof(buf)), -E2BIG);
	free(s);
}
END_TEST

START_TEST(sealed_memfd_reads_back_and_cannot_be_written)
{
	static const char text[] = "baton-state 1\nend\n";
	char buf[64];
	int before = unit_count_fds();
	int fd = upgrade_state_seal(text, strlen(text));

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(upgrade_state_read(fd, buf, sizeof(buf)), (int)strlen(text));
	ck_assert_int_lt(write(fd, "x", 1), 0);
	ck_assert_int_eq(errno, EPERM);
	ck_assert_int_eq(close(fd), 0);
	ck_assert_int_eq(unit_count_fds(), before);
}
END_TEST

START_TEST(a_state_fd_that_is_not_sealed_or_not_a_memfd_is_refused)
{
	char buf[64];
	int fd = memfd_create("baton-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	int p[2];

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "baton-state 1\n", 14), 14);
	/* Writable still: someone could change it between the exec and the read. */
	ck_assert_int_eq(upgrade_state_read(fd, buf, sizeof(buf)), -EPERM);
	ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW), 0);
	ck_assert_int_eq(upgrade_state_read(fd, buf, sizeof(buf)), -EPERM); /* not F_SEAL_SEAL */
	ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL), 0);
	ck_assert_int_eq(upgrade_state_read(fd, buf, sizeof(buf)), 14);
	ck_assert_int_eq(close(fd), 0);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	ck_assert_int_lt(upgrade_state_read(p[0], buf, sizeof(buf)), 0);
	ck_assert_int_eq(close(p[0]), 0);
	ck_assert_int_eq(close(p[1]), 0);
}
END_TEST

Suite *upgrade_suite(void)
{
	Suite *s = suite_create("upgrade");
	TCase *tc = tcase_create("state");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, state_survives_a_round_trip);
	tcase_add_test(tc, another_state_version_or_garbage_is_refused);
	tcase_add_test(tc, state_too_large_for_the_buffer_is_refused);
	tcase_add_test(tc, sealed_memfd_reads_back_and_cannot_be_written);
	tcase_add_test(tc, a_state_fd_that_is_not_sealed_or_not_a_memfd_is_refused);
	suite_add_tcase(s, tc);
	return s;
}
