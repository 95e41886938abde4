/* SPDX-License-Identifier: MIT */
/* test_intercept.c - --intercept: the decisions (pure), and the filter in a real process. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fdpass.h"
#include "intercept.h"

/* Held: 0 tcp://127.0.0.1:8080, 1 tcp://0.0.0.0:9090, 2 udp://127.0.0.1:8080, 3 unix:/run/x.sock
 * (its file dev 1 ino 77), 4 unix:@abs, 5 tcp://[::1]:8080. */
static struct listener held[6];

static void setup(void)
{
	static const char *const specs[] = {
		"127.0.0.1:8080",   "0.0.0.0:9090", "udp://127.0.0.1:8080",
		"unix:/run/x.sock", "unix:@abs",    "[::1]:8080"
	};

	for (size_t i = 0; i < 6; i++)
		ck_assert_int_eq(listener_parse(specs[i], (unsigned)i, &held[i]), 0);
	held[3].path_dev = 1;
	held[3].path_ino = 77;
}

/* A bind of a fresh TCP socket (family of addr) to spec, as batond would have read it. */
static struct intercept_facts tcp_bind(const char *spec)
{
	struct listener l;
	struct intercept_facts f = { .call = INTERCEPT_CALL_BIND,
				     .sock_known = true,
				     .type = SOCK_STREAM,
				     .protocol = IPPROTO_TCP,
				     .held = -1,
				     .addr_known = true };

	ck_assert_int_eq(listener_parse(spec, 0, &l), 0);
	f.addr = l.addr;
	f.addr_len = l.addr_len;
	f.family = l.addr.sa.sa_family;
	if (f.family == AF_UNIX)
		f.protocol = 0;
	return f;
}

static struct intercept_decision decide(const struct intercept_facts *f)
{
	return intercept_plan_decide(f, held, 6);
}

START_TEST(a_bind_to_a_held_address_takes_the_listener_over)
{
	struct intercept_facts f = tcp_bind("127.0.0.1:8080");
	struct intercept_decision d = decide(&f);

	ck_assert_int_eq(d.verdict, INTERCEPT_TAKE_OVER);
	ck_assert_int_eq(d.held, 0);
	f = tcp_bind("[::1]:8080");
	d = decide(&f);
	ck_assert_int_eq(d.verdict, INTERCEPT_TAKE_OVER);
	ck_assert_int_eq(d.held, 5);
}
END_TEST

START_TEST(a_wildcard_matches_a_held_address_on_its_port_and_the_other_way_round)
{
	struct intercept_facts f = tcp_bind("0.0.0.0:8080");
	struct intercept_decision d = decide(&f);

	ck_assert_int_eq(d.verdict, INTERCEPT_TAKE_OVER);
	ck_assert_int_eq(d.held, 0);
	/* Held 0.0.0.0:9090: a server that binds one address on that port gets it. */
	f = tcp_bind("127.0.0.7:9090");
	d = decide(&f);
	ck_assert_int_eq(d.verdict, INTERCEPT_TAKE_OVER);
	ck_assert_int_eq(d.held, 1);
	/* Families are never crossed: [::]:9090 is not 0.0.0.0:9090. */
	f = tcp_bind("[::]:9090");
	d = decide(&f);
	ck_assert_int_eq(d.verdict, INTERCEPT_CONTINUE);
	ck_assert_int_eq(d.reason, INTERCEPT_WHY_NOT_HELD);
}
END_TEST

START_TEST(an_address_batond_does_not_hold_continues_and_says_why)
{
	struct intercept_facts f = tcp_bind("127.0.0.1:8081");
	struct intercept_decision d = decide(&f);

	ck_assert_int_eq(d.verdict, INTERCEPT_CONTINUE);
	ck_assert_int_eq(d.reason, INTERCEPT_WHY_NOT_HELD);
	/* Port 0 and a Unix autobind are never listeners: no word about them. */
	f = tcp_bind("127.0.0.1:0");
	d = decide(&f);
	ck_assert_int_eq(d.verdict, INTERCEPT_CONTINUE);
	ck_assert_int_eq(d.reason, INTERCEPT_WHY_EPHEMERAL);
	f.family = f.addr.sa.sa_family = AF_UNIX;
	f.addr_len = sizeof(sa_family_t);
	d = decide(&f);
	ck_assert_int_eq(d.reason, INTERCEPT_WHY_EPHEMERAL);
}
END_TEST

START_TEST(a_held_address_with_another_socket_type_continues)
{
	struct intercept_facts f = tcp_bind("0.0.0.0:9090");
	struct intercept_decision d;

	f.type = SOCK_DGRAM;
	f.protocol = IPPROTO_UDP;
	d = decide(&f);
	ck_assert_int_eq(d.verdict, INTERCEPT_CONTINUE);
	ck_assert_int_eq(d.reason, INTERCEPT_WHY_OTHER_TYPE);
	/* A UDP socket on 127.0.0.1:8080 gets the UDP listener, not the TCP one. */
	f = tcp_bind("127.0.0.1:8080");
	f.type = SOCK_DGRAM;
	f.protocol = IPPROTO_UDP;
	d = decide(&f);
	ck_assert_int_eq(d.verdict, INTERCEPT_TAKE_OVER);
	ck_assert_int_eq(d.held, 2);
}
END_TEST

START_TEST(unix_paths_match_by_name_or_by_the_socket_file_and_abstract_names_by_name)
{
	struct intercept_facts f = tcp_bind("unix:/run/x.sock");
	struct intercept_decision d = decide(&f);

	ck_assert_int_eq(d.verdict, INTERCEPT_TAKE_OVER);
	ck_assert_int_eq(d.held, 3);
	/* Another name for the same file (a relative path, a symlinked directory). */
	f = tcp_bind("unix:x.sock");
	f.file_known = true;
	f.file_dev = 1;
	f.file_ino = 77;
	d = decide(&f);
	ck_assert_int_eq(d.verdict, INTERCEPT_TAKE_OVER);
	ck_assert_int_eq(d.held, 3);
	f.file_ino = 78;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
	f = tcp_bind("unix:@abs");
	d = decide(&f);
	ck_assert_int_eq(d.verdict, INTERCEPT_TAKE_OVER);
	ck_assert_int_eq(d.held, 4);
	f = tcp_bind("unix:@ab");
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
}
END_TEST

START_TEST(a_listener_bound_again_to_its_address_succeeds_and_elsewhere_fails)
{
	struct intercept_facts f = tcp_bind("127.0.0.1:8080");
	struct intercept_decision d;

	/* The same bind after its answer was cut short: already done. */
	f.held = 0;
	f.bound = true;
	d = decide(&f);
	ck_assert_int_eq(d.verdict, INTERCEPT_RETURN);
	ck_assert_int_eq(d.error, 0);
	ck_assert_int_eq(d.reason, INTERCEPT_WHY_AGAIN);
	f = tcp_bind("127.0.0.1:7000");
	f.held = 0;
	f.bound = true;
	d = decide(&f);
	ck_assert_int_eq(d.verdict, INTERCEPT_RETURN);
	ck_assert_int_eq(d.error, -EINVAL);
	/* A socket of the server's own that is bound already: the kernel says so. */
	f = tcp_bind("127.0.0.1:8080");
	f.bound = true;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
}
END_TEST

START_TEST(what_batond_could_not_read_continues)
{
	struct intercept_facts f = tcp_bind("127.0.0.1:8080");

	f.addr_known = false;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
	ck_assert_int_eq(decide(&f).reason, INTERCEPT_WHY_UNREADABLE);
	f = tcp_bind("127.0.0.1:8080");
	f.sock_known = false;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
	f = tcp_bind("127.0.0.1:8080");
	f.addr_len = sizeof(f.addr) + 1;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
}
END_TEST

START_TEST(listen_setsockopt_and_shutdown_leave_a_shared_listener_alone)
{
	struct intercept_facts f = { .sock_known = true, .held = 0, .level = SOL_SOCKET };
	struct intercept_decision d;

	f.call = INTERCEPT_CALL_LISTEN;
	d = decide(&f);
	ck_assert_int_eq(d.verdict, INTERCEPT_RETURN);
	ck_assert_int_eq(d.error, 0);
	f.call = INTERCEPT_CALL_SETSOCKOPT;
	f.name = SO_REUSEPORT;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_RETURN);
	f.name = SO_ATTACH_FILTER;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_RETURN);
	f.name = SO_RCVBUF; /* everybody's, and harmless */
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
	f.call = INTERCEPT_CALL_SHUTDOWN;
	f.how = SHUT_RDWR;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_RETURN);
	f.how = SHUT_RD;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_RETURN);
	f.how = SHUT_WR;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
	/* The server's own sockets: the kernel's business. */
	f.held = -1;
	for (int c = INTERCEPT_CALL_LISTEN; c <= INTERCEPT_CALL_SHUTDOWN; c++) {
		f.call = (enum intercept_call)c;
		f.name = SO_REUSEPORT;
		f.how = SHUT_RDWR;
		ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
	}
	/* listen() on a held UDP listener is the kernel's error to give. */
	f.held = 2;
	f.call = INTERCEPT_CALL_LISTEN;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
}
END_TEST

START_TEST(unlink_of_a_held_socket_file_is_answered_and_any_other_continues)
{
	struct intercept_facts f = { .call = INTERCEPT_CALL_UNLINK,
				     .held = -1,
				     .path_known = true,
				     .path_dev = 1,
				     .path_ino = 77 };
	struct intercept_decision d = decide(&f);

	ck_assert_int_eq(d.verdict, INTERCEPT_RETURN);
	ck_assert_int_eq(d.error, 0);
	ck_assert_int_eq(d.held, 3);
	f.removes_dir = true; /* rmdir() of it fails in the kernel, as it should */
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
	f.removes_dir = false;
	f.path_ino = 78;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
	f.path_ino = 77;
	f.path_known = false;
	ck_assert_int_eq(decide(&f).verdict, INTERCEPT_CONTINUE);
	/* The filter sends unlink only while some listener is a Unix path. */
	ck_assert(intercept_plan_guards_unlink(held, 6));
	ck_assert(!intercept_plan_guards_unlink(held, 3));
	ck_assert(!intercept_plan_guards_unlink(&held[4], 1)); /* abstract: no file */
}
END_TEST

START_TEST(system_call_numbers_map_to_the_calls)
{
	ck_assert_int_eq(intercept_plan_call(SYS_bind), INTERCEPT_CALL_BIND);
	ck_assert_int_eq(intercept_plan_call(SYS_listen), INTERCEPT_CALL_LISTEN);
	ck_assert_int_eq(intercept_plan_call(SYS_setsockopt), INTERCEPT_CALL_SETSOCKOPT);
	ck_assert_int_eq(intercept_plan_call(SYS_shutdown), INTERCEPT_CALL_SHUTDOWN);
	ck_assert_int_eq(intercept_plan_call(SYS_unlinkat), INTERCEPT_CALL_UNLINK);
	ck_assert_int_eq(intercept_plan_call(SYS_close), INTERCEPT_CALL_OTHER);
}
END_TEST

/* The child's calls, in order; the marker listen(-1) is always sent to batond. */
static void __attribute__((noreturn)) filtered_child(int sock, bool guard_unlink)
{
	struct intercept_filter f;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1, zero = 0;
	int fd, s;

	if (intercept_filter_init(&f, guard_unlink) < 0)
		_exit(10);
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	fd = intercept_install(&f.prog);
	if (s < 0 || fd < 0 || proto_send(sock, &zero, sizeof(zero), &fd, 1) < 0)
		_exit(11);
	(void)close(fd);
	/* Not sent: SHUT_WR, other levels and options, everything else. */
	(void)shutdown(s, SHUT_WR);
	(void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	(void)getpid();
	if (!guard_unlink)
		(void)unlinkat(AT_FDCWD, "/nonexistent/baton-test", 0);
	(void)listen(-1, 1);
	/* Sent. */
	(void)setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	(void)shutdown(s, SHUT_RD);
	(void)bind(s, (struct sockaddr *)&a, sizeof(a));
	(void)listen(s, 1);
	if (guard_unlink)
		(void)unlinkat(AT_FDCWD, "/nonexistent/baton-test", 0);
	_exit(0);
}

/* Receives the next notified call (answered: continue); its number, or -1 after 10 s. */
static long next_call(int nfd, uint64_t *ret_arg1)
{
	struct pollfd p = { .fd = nfd, .events = POLLIN };
	struct seccomp_notif req;
	struct seccomp_notif_resp resp;

	if (poll(&p, 1, 10000) != 1 || !(p.revents & POLLIN))
		return -1;
	memset(&req, 0, sizeof(req));
	if (ioctl(nfd, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0)
		return -1;
	resp = (struct seccomp_notif_resp){ .id = req.id,
					    .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE };
	ck_assert_int_eq(ioctl(nfd, SECCOMP_IOCTL_NOTIF_SEND, &resp), 0);
	*ret_arg1 = req.data.args[1];
	return (long)req.data.nr;
}

/* Forks filtered_child(); returns its pid and the listener its filter made. */
static pid_t start_filtered_child(bool guard_unlink, int *ret_nfd)
{
	int sv[2], err = 0;
	size_t n_fds = 0;
	pid_t pid;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		filtered_child(sv[1], guard_unlink);
	(void)close(sv[1]);
	ck_assert_int_eq(proto_recv(sv[0], &err, sizeof(err), ret_nfd, 1, &n_fds),
			 (ssize_t)sizeof(err));
	ck_assert_int_eq(n_fds, 1);
	(void)close(sv[0]);
	return pid;
}

static void check_calls(bool guard_unlink)
{
	int nfd = -1, status = 0;
	uint64_t arg1 = 0;
	pid_t pid = start_filtered_child(guard_unlink, &nfd);

	ck_assert_int_eq(next_call(nfd, &arg1), SYS_listen); /* the marker came first */
	ck_assert_int_eq(next_call(nfd, &arg1), SYS_setsockopt);
	ck_assert_int_eq(next_call(nfd, &arg1), SYS_shutdown);
	ck_assert_int_eq(arg1, SHUT_RD);
	ck_assert_int_eq(next_call(nfd, &arg1), SYS_bind);
	ck_assert_int_eq(next_call(nfd, &arg1), SYS_listen);
	if (guard_unlink)
		ck_assert_int_eq(next_call(nfd, &arg1), SYS_unlinkat);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	(void)close(nfd);
}

START_TEST(the_filter_sends_batond_exactly_the_calls_it_decides_on)
{
	check_calls(false);
}
END_TEST

START_TEST(the_filter_sends_unlink_only_while_a_socket_file_is_held)
{
	check_calls(true);
}
END_TEST

Suite *intercept_suite(void)
{
	Suite *s = suite_create("intercept");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, a_bind_to_a_held_address_takes_the_listener_over);
	tcase_add_test(tc, a_wildcard_matches_a_held_address_on_its_port_and_the_other_way_round);
	tcase_add_test(tc, an_address_batond_does_not_hold_continues_and_says_why);
	tcase_add_test(tc, a_held_address_with_another_socket_type_continues);
	tcase_add_test(tc,
		       unix_paths_match_by_name_or_by_the_socket_file_and_abstract_names_by_name);
	tcase_add_test(tc, a_listener_bound_again_to_its_address_succeeds_and_elsewhere_fails);
	tcase_add_test(tc, what_batond_could_not_read_continues);
	tcase_add_test(tc, listen_setsockopt_and_shutdown_leave_a_shared_listener_alone);
	tcase_add_test(tc, unlink_of_a_held_socket_file_is_answered_and_any_other_continues);
	tcase_add_test(tc, system_call_numbers_map_to_the_calls);
	tcase_add_test(tc, the_filter_sends_batond_exactly_the_calls_it_decides_on);
	tcase_add_test(tc, the_filter_sends_unlink_only_while_a_socket_file_is_held);
	suite_add_tcase(s, tc);
	return s;
}
