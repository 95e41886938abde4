/* SPDX-License-Identifier: MIT */
/* test_notify.c - notify_parse() on sd_notify texts, notify_receive() on real datagrams. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "notify.h"

#define POISON_BYTE 0x5a /* fills a struct notify_message that a failing call must not touch */
#define MANY_FDS \
	64 /* fds attached to one datagram: more than batond takes, fewer than
			    the kernel's SCM_MAX_FD */

static struct notify_message parse_ok(const char *buf, size_t len)
{
	struct notify_message m;
	int r;

	memset(&m, POISON_BYTE, sizeof(m));
	r = notify_parse(buf, len, &m);
	ck_assert_msg(r == 0, "notify_parse(\"%.*s\") = %d", (int)len, buf, r);
	return m;
}

static struct notify_message parse_str(const char *s)
{
	return parse_ok(s, strlen(s));
}

static void assert_parse_refused(const char *s)
{
	struct notify_message m, before;

	memset(&m, POISON_BYTE, sizeof(m));
	memcpy(&before, &m, sizeof(m));
	ck_assert_msg(notify_parse(s, strlen(s), &m) == -EBADMSG, "notify_parse(\"%s\") accepted",
		      s);
	ck_assert_msg(memcmp(&m, &before, sizeof(m)) == 0, "notify_parse(\"%s\") wrote on failure",
		      s);
}

/* --- notify_parse --- */

START_TEST(ready_1_means_ready_and_nothing_else)
{
	struct notify_message m = parse_str("READY=1");

	ck_assert(m.ready);
	ck_assert(!m.stopping);
	ck_assert(!m.reloading);
	ck_assert(!m.watchdog);
	ck_assert(!m.has_status);
	ck_assert_int_eq(m.mainpid, 0);
}
END_TEST

START_TEST(ready_with_status_sets_both)
{
	struct notify_message m = parse_str("READY=1\nSTATUS=hello");

	ck_assert(m.ready);
	ck_assert(m.has_status);
	ck_assert_str_eq(m.status, "hello");
}
END_TEST

START_TEST(the_preload_shims_word_on_the_drain_is_read_and_anything_else_ignored)
{
	ck_assert_int_eq(parse_str("READY=1\nBATON_DRAIN=shim").shim_drain, NOTIFY_SHIM_ARMED);
	ck_assert_int_eq(parse_str("READY=1\nBATON_DRAIN=server").shim_drain, NOTIFY_SHIM_SERVER);
	ck_assert_int_eq(parse_str("READY=1").shim_drain, NOTIFY_SHIM_NONE);
	ck_assert_int_eq(parse_str("BATON_DRAIN=shimx").shim_drain, NOTIFY_SHIM_NONE);
	ck_assert_int_eq(parse_str("BATON_DRAIN=").shim_drain, NOTIFY_SHIM_NONE);
	ck_assert(parse_str("READY=1\nBATON_DRAIN=shim").ready);
}
END_TEST

START_TEST(a_trailing_newline_is_not_part_of_the_status)
{
	struct notify_message m = parse_str("STATUS=x\n");

	ck_assert(!m.ready);
	ck_assert(m.has_status);
	ck_assert_str_eq(m.status, "x");
}
END_TEST

START_TEST(an_empty_status_is_still_a_status)
{
	struct notify_message m = parse_str("STATUS=");

	ck_assert(m.has_status);
	ck_assert_str_eq(m.status, "");
}
END_TEST

START_TEST(stopping_reloading_and_watchdog_are_flags)
{
	struct notify_message m = parse_str("STOPPING=1");

	ck_assert(m.stopping);
	ck_assert(!m.ready);
	m = parse_str("RELOADING=1\nWATCHDOG=1");
	ck_assert(m.reloading);
	ck_assert(m.watchdog);
	ck_assert(!m.stopping);
}
END_TEST

START_TEST(mainpid_is_parsed)
{
	struct notify_message m = parse_str("MAINPID=1234");

	ck_assert_int_eq(m.mainpid, 1234);
	m = parse_str("MAINPID=2147483647");
	ck_assert_int_eq(m.mainpid, 2147483647);
}
END_TEST

START_TEST(malformed_mainpid_is_refused_with_ebadmsg)
{
	assert_parse_refused("MAINPID=abc");
	assert_parse_refused("MAINPID=");
	assert_parse_refused("MAINPID=0");
	assert_parse_refused("MAINPID=99999999999");
	assert_parse_refused("MAINPID=2147483648");
	/* Long enough to overflow any integer type on the way, including to a small value. */
	assert_parse_refused("MAINPID=18446744073709551617");
	assert_parse_refused("MAINPID=-1");
	assert_parse_refused("MAINPID=12 ");
	assert_parse_refused("READY=1\nMAINPID=1x\nSTATUS=ok");
}
END_TEST

START_TEST(unknown_assignments_and_odd_lines_are_ignored)
{
	struct notify_message m = parse_str("FOO=bar\nX_READY=1\nREADY\n\nERRNO=2\nREADY=1\n"
					    "FDSTORE=1\nMAINPIDX=abc");

	ck_assert(m.ready);
	ck_assert(!m.has_status);
	ck_assert_int_eq(m.mainpid, 0);
}
END_TEST

START_TEST(ready_other_than_1_is_not_ready)
{
	ck_assert(!parse_str("READY=0").ready);
	ck_assert(!parse_str("READY=").ready);
	ck_assert(!parse_str("READY=10").ready);
	ck_assert(!parse_str("READY=yes").ready);
	ck_assert(!parse_str("ready=1").ready);
	ck_assert(!parse_str(" READY=1").ready);
	/* The last assignment wins, as in systemd. */
	ck_assert(!parse_str("READY=1\nREADY=0").ready);
	ck_assert(parse_str("READY=0\nREADY=1").ready);
}
END_TEST

START_TEST(an_empty_message_sets_nothing)
{
	struct notify_message m = parse_ok("", 0);

	ck_assert(!m.ready);
	ck_assert(!m.has_status);
	ck_assert_int_eq(m.mainpid, 0);
}
END_TEST

START_TEST(a_long_status_is_truncated_and_terminated)
{
	char buf[7 + 2 * NOTIFY_STATUS_MAX + 1];
	struct notify_message m;

	memcpy(buf, "STATUS=", 7);
	memset(buf + 7, 'a', 2 * NOTIFY_STATUS_MAX);
	buf[sizeof(buf) - 1] = '\0';
	m = parse_str(buf);
	ck_assert(m.has_status);
	ck_assert_uint_eq(strlen(m.status), NOTIFY_STATUS_MAX - 1);
	ck_assert_int_eq(m.status[0], 'a');
	ck_assert_int_eq(m.status[NOTIFY_STATUS_MAX - 2], 'a');

	/* Exactly the limit fits whole. */
	buf[7 + NOTIFY_STATUS_MAX - 1] = '\0';
	m = parse_str(buf);
	ck_assert_uint_eq(strlen(m.status), NOTIFY_STATUS_MAX - 1);
}
END_TEST

START_TEST(control_characters_and_nuls_in_status_become_spaces)
{
	static const char msg[] = "STATUS=a\tb\x1b[31mc\x7f"
				  "d\0e\rf";
	struct notify_message m = parse_ok(msg, sizeof(msg) - 1);

	ck_assert(m.has_status);
	ck_assert_str_eq(m.status, "a b [31mc d e f");
	/* UTF-8 is text, not control bytes. */
	m = parse_str("STATUS=caf\xc3\xa9");
	ck_assert_str_eq(m.status, "caf\xc3\xa9");
}
END_TEST

START_TEST(only_len_bytes_are_read)
{
	/* Neither terminated nor cut at a line end: the length alone bounds the parse. */
	static const char buf[] = { 'M', 'A', 'I', 'N', 'P', 'I', 'D', '=', '1', '2', '3', '4' };
	static const char ready[] = "READY=1READY=0";
	static const char status[] = "STATUS=hello world";
	struct notify_message m = parse_ok(buf, 10), x;

	ck_assert_int_eq(m.mainpid, 12);
	ck_assert(parse_ok(ready, 7).ready);
	m = parse_ok(status, 12);
	ck_assert_str_eq(m.status, "hello");
	/* A newline just past the end does not extend the last line. */
	m = parse_ok("STATUS=ab\nREADY=1", 8);
	ck_assert_str_eq(m.status, "a");
	ck_assert(!m.ready);
	/* A cut right after "MAINPID=" leaves the value empty, which is malformed. */
	ck_assert_int_eq(notify_parse(buf, 8, &x), -EBADMSG);
}
END_TEST

/* --- notify_open and notify_receive on real sockets --- */

/* The abstract address that NOTIFY_SOCKET "@name" stands for. */
static socklen_t address_of(const char *notify_socket, struct sockaddr_un *sa)
{
	size_t n = strlen(notify_socket);

	ck_assert(notify_socket[0] == '@' || notify_socket[0] == '/');
	ck_assert_uint_lt(n, sizeof(sa->sun_path));
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, notify_socket, n);
	if (notify_socket[0] == '@')
		sa->sun_path[0] = '\0';
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
			   (n && notify_socket[0] == '/'));
}

/* Sends one datagram to the notify socket as sd_notify() would, with fds attached if any. */
static void send_notify(const char *address, const void *buf, size_t len, const int *fds,
			size_t n_fds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * MANY_FDS)];
	} control;
	struct sockaddr_un sa;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = {
		.msg_name = &sa,
		.msg_namelen = address_of(address, &sa),
		.msg_iov = &iov,
		.msg_iovlen = 1,
	};
	int fd;

	ck_assert_uint_le(n_fds, MANY_FDS);
	if (n_fds > 0) {
		struct cmsghdr *c;

		memset(&control, 0, sizeof(control));
		mh.msg_control = &control;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		c = CMSG_FIRSTHDR(&mh);
		ck_assert_ptr_nonnull(c);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(sendmsg(fd, &mh, 0), (ssize_t)len);
	ck_assert_int_eq(close(fd), 0);
}

static void send_text(const char *address, const char *s)
{
	send_notify(address, s, strlen(s), NULL, 0);
}

/* notify_open(), which must succeed. */
static int open_ok(char address[NOTIFY_ADDRESS_MAX])
{
	int fd = notify_open(NULL, address);

	ck_assert_int_ge(fd, 0);
	return fd;
}

/* A pipe whose read end a test sends along; with SIGPIPE ignored, unit_read_end_is_gone() sees
 * when the last copy of it is closed. */
static void make_pipe(int p[2])
{
	ck_assert(signal(SIGPIPE, SIG_IGN) != SIG_ERR);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
}

/* Closes the notify socket fd; the test leaves no fd open of the n_fds it began with. */
static void close_last(int fd, int n_fds)
{
	ck_assert_int_eq(close(fd), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}

START_TEST(open_gives_a_cloexec_nonblocking_abstract_socket_with_credentials)
{
	int n_fds = unit_count_fds();
	char address[NOTIFY_ADDRESS_MAX], other[NOTIFY_ADDRESS_MAX];
	int fd, fd2, one = 0, type = 0;
	socklen_t len = sizeof(one);

	fd = notify_open(NULL, address);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(address[0], '@');
	ck_assert_uint_ge(strlen(address), 2);
	ck_assert_uint_lt(strlen(address), NOTIFY_ADDRESS_MAX);
	ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
	ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, &len), 0);
	ck_assert_int_eq(one, 1);
	len = sizeof(type);
	ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len), 0);
	ck_assert_int_eq(type, SOCK_DGRAM);

	/* Two supervisors never share an address. */
	fd2 = notify_open(NULL, other);
	ck_assert_int_ge(fd2, 0);
	ck_assert_str_ne(address, other);

	ck_assert_int_eq(close(fd2), 0);
	ck_assert_int_eq(close(fd), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_datagram_is_received_with_the_senders_pid)
{
	int n_fds = unit_count_fds();
	char address[NOTIFY_ADDRESS_MAX];
	struct notify_message m;
	int fd = open_ok(address);

	send_text(address, "READY=1\nSTATUS=serving on :8080\nMAINPID=4321");
	memset(&m, POISON_BYTE, sizeof(m));
	ck_assert_int_eq(notify_receive(fd, &m), 0);
	ck_assert_int_eq(m.pid, getpid());
	ck_assert_int_eq(m.uid, getuid());
	ck_assert(m.ready);
	ck_assert(!m.stopping);
	ck_assert(m.has_status);
	ck_assert_str_eq(m.status, "serving on :8080");
	ck_assert_int_eq(m.mainpid, 4321);

	/* One datagram, one message: the next receive finds nothing. */
	ck_assert_int_eq(notify_receive(fd, &m), -EAGAIN);
	close_last(fd, n_fds);
}
END_TEST

START_TEST(datagrams_are_received_one_at_a_time_in_order)
{
	char address[NOTIFY_ADDRESS_MAX];
	struct notify_message m;
	int fd = open_ok(address);

	send_text(address, "STATUS=starting");
	send_text(address, "READY=1");
	send_text(address, "STOPPING=1");
	ck_assert_int_eq(notify_receive(fd, &m), 0);
	ck_assert(!m.ready);
	ck_assert_str_eq(m.status, "starting");
	ck_assert_int_eq(notify_receive(fd, &m), 0);
	ck_assert(m.ready);
	ck_assert(!m.has_status);
	ck_assert_int_eq(notify_receive(fd, &m), 0);
	ck_assert(m.stopping);
	ck_assert_int_eq(notify_receive(fd, &m), -EAGAIN);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

START_TEST(a_datagram_from_a_child_carries_the_childs_pid)
{
	char address[NOTIFY_ADDRESS_MAX];
	struct notify_message m;
	int fd = open_ok(address);
	int status;
	pid_t child;

	child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		struct sockaddr_un sa;
		socklen_t len = address_of(address, &sa);
		int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

		_exit(s >= 0 && sendto(s, "READY=1", 7, 0, (struct sockaddr *)&sa, len) == 7 ? 0
											     : 1);
	}
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_eq(notify_receive(fd, &m), 0);
	ck_assert_int_eq(m.pid, child);
	ck_assert(m.ready);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

START_TEST(receive_with_nothing_pending_is_eagain)
{
	int n_fds = unit_count_fds();
	char address[NOTIFY_ADDRESS_MAX];
	struct notify_message m;
	int fd = open_ok(address);

	ck_assert_int_eq(notify_receive(fd, &m), -EAGAIN);
	close_last(fd, n_fds);
}
END_TEST

START_TEST(a_malformed_datagram_is_refused_with_ebadmsg)
{
	char address[NOTIFY_ADDRESS_MAX];
	struct notify_message m;
	int fd = open_ok(address);

	send_text(address, "READY=1\nMAINPID=abc");
	ck_assert_int_eq(notify_receive(fd, &m), -EBADMSG);
	/* It was consumed all the same. */
	ck_assert_int_eq(notify_receive(fd, &m), -EAGAIN);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

START_TEST(fds_attached_to_a_datagram_are_closed)
{
	int n_fds = unit_count_fds();
	char address[NOTIFY_ADDRESS_MAX];
	struct notify_message m;
	int fd = open_ok(address);
	int p[2];

	make_pipe(p);
	send_notify(address, "FDSTORE=1\nREADY=1", 17, &p[0], 1);
	ck_assert_int_eq(close(p[0]), 0);
	/* The datagram in the queue still holds the read end. */
	ck_assert(!unit_read_end_is_gone(p[1]));

	ck_assert_int_eq(notify_receive(fd, &m), 0);
	ck_assert(m.ready);
	ck_assert_int_eq(m.pid, getpid());
	ck_assert(unit_read_end_is_gone(p[1]));

	ck_assert_int_eq(close(p[1]), 0);
	close_last(fd, n_fds);
}
END_TEST

START_TEST(a_datagram_of_exactly_the_maximum_size_is_accepted)
{
	int n_fds = unit_count_fds();
	char address[NOTIFY_ADDRESS_MAX];
	char *buf = malloc(NOTIFY_MESSAGE_MAX);
	struct notify_message m;
	int fd = open_ok(address);

	ck_assert_ptr_nonnull(buf);
	/* "READY=1\nX=aaaa...": an ignored assignment pads it to the limit. */
	memset(buf, 'a', NOTIFY_MESSAGE_MAX);
	memcpy(buf, "READY=1\nX=", 10);
	send_notify(address, buf, NOTIFY_MESSAGE_MAX, NULL, 0);
	ck_assert_int_eq(notify_receive(fd, &m), 0);
	ck_assert(m.ready);
	free(buf);
	close_last(fd, n_fds);
}
END_TEST

START_TEST(a_datagram_over_the_maximum_size_is_refused_with_eproto_and_its_fd_closed)
{
	int n_fds = unit_count_fds();
	char address[NOTIFY_ADDRESS_MAX];
	char *buf = malloc(NOTIFY_MESSAGE_MAX + 1);
	struct notify_message m, before;
	int fd = open_ok(address);
	int p[2];

	ck_assert_ptr_nonnull(buf);
	make_pipe(p);
	memset(buf, 'a', NOTIFY_MESSAGE_MAX + 1);
	memcpy(buf, "READY=1\nX=", 10);
	send_notify(address, buf, NOTIFY_MESSAGE_MAX + 1, &p[0], 1);
	ck_assert_int_eq(close(p[0]), 0);

	memset(&m, POISON_BYTE, sizeof(m));
	memcpy(&before, &m, sizeof(m));
	ck_assert_int_eq(notify_receive(fd, &m), -EPROTO);
	ck_assert(memcmp(&m, &before, sizeof(m)) == 0);
	ck_assert(unit_read_end_is_gone(p[1]));
	/* The oversized datagram is gone, not stuck at the head of the queue. */
	ck_assert_int_eq(notify_receive(fd, &m), -EAGAIN);

	free(buf);
	ck_assert_int_eq(close(p[1]), 0);
	close_last(fd, n_fds);
}
END_TEST

START_TEST(more_fds_than_fit_are_refused_with_eproto_and_all_closed)
{
	int n_fds = unit_count_fds();
	char address[NOTIFY_ADDRESS_MAX];
	struct notify_message m;
	int fd = open_ok(address);
	int p[2], dups[MANY_FDS];

	make_pipe(p);
	for (size_t i = 0; i < MANY_FDS; i++)
		dups[i] = p[0];
	send_notify(address, "READY=1", 7, dups, MANY_FDS);
	ck_assert_int_eq(close(p[0]), 0);

	/* Those that fit the control buffer arrive and must be closed; the kernel drops the rest. */
	ck_assert_int_eq(notify_receive(fd, &m), -EPROTO);
	ck_assert(unit_read_end_is_gone(p[1]));
	ck_assert_int_eq(notify_receive(fd, &m), -EAGAIN);

	ck_assert_int_eq(close(p[1]), 0);
	close_last(fd, n_fds);
}
END_TEST

START_TEST(a_path_socket_is_0600_replaces_a_stale_file_and_refuses_a_live_one_or_a_file)
{
	int n_fds = unit_count_fds();
	char dir[] = "/tmp/baton-unit-notify-XXXXXX", path[128], address[NOTIFY_ADDRESS_MAX];
	char other[NOTIFY_ADDRESS_MAX];
	struct notify_message m;
	struct stat st;
	int fd, fd2;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	(void)snprintf(path, sizeof(path), "%s/notify", dir);
	fd = notify_open(path, address);
	ck_assert_int_ge(fd, 0);
	ck_assert_str_eq(address, path);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	/* A client that only connects to paths reaches it, and the sender's pid comes along. */
	send_text(address, "READY=1");
	ck_assert_int_eq(notify_receive(fd, &m), 0);
	ck_assert(m.ready);
	ck_assert_int_eq(m.pid, getpid());

	/* Someone answers there: not ours to take. */
	ck_assert_int_eq(notify_open(path, other), -EADDRINUSE);
	/* The batond behind it died: its file is stale and replaced. */
	ck_assert_int_eq(close(fd), 0);
	fd2 = notify_open(path, other);
	ck_assert_int_ge(fd2, 0);
	send_text(other, "STATUS=again");
	ck_assert_int_eq(notify_receive(fd2, &m), 0);
	ck_assert_str_eq(m.status, "again");
	ck_assert_int_eq(close(fd2), 0);
	/* Something that is not a socket is never touched. */
	ck_assert_int_eq(unlink(path), 0);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(close(fd), 0);
	ck_assert_int_eq(notify_open(path, other), -EEXIST);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

Suite *notify_suite(void)
{
	Suite *s = suite_create("notify");
	TCase *tc = tcase_create("parse");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, ready_1_means_ready_and_nothing_else);
	tcase_add_test(tc, ready_with_status_sets_both);
	tcase_add_test(tc, the_preload_shims_word_on_the_drain_is_read_and_anything_else_ignored);
	tcase_add_test(tc, a_trailing_newline_is_not_part_of_the_status);
	tcase_add_test(tc, an_empty_status_is_still_a_status);
	tcase_add_test(tc, stopping_reloading_and_watchdog_are_flags);
	tcase_add_test(tc, mainpid_is_parsed);
	tcase_add_test(tc, malformed_mainpid_is_refused_with_ebadmsg);
	tcase_add_test(tc, unknown_assignments_and_odd_lines_are_ignored);
	tcase_add_test(tc, ready_other_than_1_is_not_ready);
	tcase_add_test(tc, an_empty_message_sets_nothing);
	tcase_add_test(tc, a_long_status_is_truncated_and_terminated);
	tcase_add_test(tc, control_characters_and_nuls_in_status_become_spaces);
	tcase_add_test(tc, only_len_bytes_are_read);
	suite_add_tcase(s, tc);

	tc = tcase_create("socket");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, open_gives_a_cloexec_nonblocking_abstract_socket_with_credentials);
	tcase_add_test(tc, a_datagram_is_received_with_the_senders_pid);
	tcase_add_test(tc, datagrams_are_received_one_at_a_time_in_order);
	tcase_add_test(tc, a_datagram_from_a_child_carries_the_childs_pid);
	tcase_add_test(tc, receive_with_nothing_pending_is_eagain);
	tcase_add_test(tc, a_malformed_datagram_is_refused_with_ebadmsg);
	tcase_add_test(tc, fds_attached_to_a_datagram_are_closed);
	tcase_add_test(tc, a_datagram_of_exactly_the_maximum_size_is_accepted);
	tcase_add_test(tc,
		       a_datagram_over_the_maximum_size_is_refused_with_eproto_and_its_fd_closed);
	tcase_add_test(tc, more_fds_than_fit_are_refused_with_eproto_and_all_closed);
	tcase_add_test(
		tc, a_path_socket_is_0600_replaces_a_stale_file_and_refuses_a_live_one_or_a_file);
	suite_add_tcase(s, tc);
	return s;
}
