/* SPDX-License-Identifier: MIT */
/* test_listener.c - listener_parse() on every address form, listener_bind() on real sockets. */
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listener.h"

#define POISON_BYTE 0xa5  /* fills a struct listener that a failing parse must not touch */
#define WAIT_MSEC   10000 /* deadline for a connection to show up in an accept queue */
/* Prefix of the abstract socket names the tests bind; the pid makes each one unique. */
#define ABSTRACT_BASE "baton-unit-listener"
#define SUN_PATH_MAX  sizeof(((struct sockaddr_un *)NULL)->sun_path) /* 108 bytes on Linux */
#define UNIX_ARG_MAX  256 /* bytes of a "unix:PATH" argument built by a test */

/* Parses arg, which must succeed; fails the test with the error otherwise. */
static void parse_ok(const char *arg, unsigned index, struct listener *l)
{
	int r = listener_parse(arg, index, l);

	ck_assert_msg(r == 0, "listener_parse(\"%s\") = %d (%s)", arg, r, strerror(-r));
	ck_assert_int_eq(l->fd, -1);
}

/* Parses arg, which must fail with error and leave the output exactly as it was. */
static void assert_refused(const char *arg, int error)
{
	struct listener l, before;
	int r;

	memset(&l, POISON_BYTE, sizeof(l));
	memcpy(&before, &l, sizeof(l));
	r = listener_parse(arg, 0, &l);
	ck_assert_msg(r == error, "listener_parse(\"%s\") = %d (%s), expected %d (%s)", arg, r,
		      strerror(-r), error, strerror(-error));
	ck_assert_msg(memcmp(&l, &before, sizeof(l)) == 0,
		      "listener_parse(\"%s\") wrote its output on failure", arg);
}

static unsigned port_of(const struct listener *l)
{
	if (l->addr.sa.sa_family == AF_INET6)
		return ntohs(l->addr.in6.sin6_port);
	return ntohs(l->addr.in.sin_port);
}

static void assert_ipv4(const struct listener *l, const char *host, unsigned port)
{
	char buf[INET_ADDRSTRLEN];

	ck_assert_int_eq(l->addr.sa.sa_family, AF_INET);
	ck_assert_uint_eq(l->addr_len, sizeof(struct sockaddr_in));
	ck_assert_ptr_nonnull(inet_ntop(AF_INET, &l->addr.in.sin_addr, buf, sizeof(buf)));
	ck_assert_str_eq(buf, host);
	ck_assert_uint_eq(port_of(l), port);
}

static void assert_ipv6(const struct listener *l, const char *host, unsigned port)
{
	char buf[INET6_ADDRSTRLEN];

	ck_assert_int_eq(l->addr.sa.sa_family, AF_INET6);
	ck_assert_uint_eq(l->addr_len, sizeof(struct sockaddr_in6));
	ck_assert_ptr_nonnull(inet_ntop(AF_INET6, &l->addr.in6.sin6_addr, buf, sizeof(buf)));
	ck_assert_str_eq(buf, host);
	ck_assert_uint_eq(port_of(l), port);
}

/* "unix:" followed by a path or "@name" of exactly n bytes. */
static char *unix_spec_of_length(size_t n, char first)
{
	char *s = malloc(5 + n + 1);

	ck_assert_ptr_nonnull(s);
	memcpy(s, "unix:", 5);
	memset(s + 5, 'p', n);
	s[5] = first;
	s[5 + n] = '\0';
	return s;
}

/* --- listener_parse: accepted forms --- */

START_TEST(host_and_port_is_tcp)
{
	struct listener l;

	parse_ok("127.0.0.1:8080", 0, &l);
	ck_assert_int_eq(l.kind, LISTENER_TCP);
	assert_ipv4(&l, "127.0.0.1", 8080);
	ck_assert_str_eq(l.spec, "tcp://127.0.0.1:8080");
	ck_assert_str_eq(l.name, "listen0");
	ck_assert(!l.owns_path);
}
END_TEST

START_TEST(tcp_scheme_is_the_same_as_no_scheme)
{
	struct listener l;

	parse_ok("tcp://127.0.0.1:8080", 0, &l);
	ck_assert_int_eq(l.kind, LISTENER_TCP);
	assert_ipv4(&l, "127.0.0.1", 8080);
	ck_assert_str_eq(l.spec, "tcp://127.0.0.1:8080");
}
END_TEST

START_TEST(bracketed_ipv6_address_is_tcp_over_ipv6)
{
	struct listener l;

	parse_ok("[::1]:8080", 0, &l);
	ck_assert_int_eq(l.kind, LISTENER_TCP);
	assert_ipv6(&l, "::1", 8080);
	ck_assert_str_eq(l.spec, "tcp://[::1]:8080");

	parse_ok("tcp://[::1]:0", 0, &l);
	assert_ipv6(&l, "::1", 0);
	ck_assert_str_eq(l.spec, "tcp://[::1]:0");

	parse_ok("udp://[::1]:53", 0, &l);
	ck_assert_int_eq(l.kind, LISTENER_UDP);
	assert_ipv6(&l, "::1", 53);
	ck_assert_str_eq(l.spec, "udp://[::1]:53");
}
END_TEST

START_TEST(ipv6_spec_is_canonical)
{
	struct listener l;

	parse_ok("[0:0:0:0:0:0:0:1]:8080", 0, &l);
	ck_assert_str_eq(l.spec, "tcp://[::1]:8080");
	parse_ok("[::]:443", 0, &l);
	assert_ipv6(&l, "::", 443);
	ck_assert_str_eq(l.spec, "tcp://[::]:443");
}
END_TEST

START_TEST(udp_scheme_gives_a_udp_listener)
{
	struct listener l;

	parse_ok("udp://127.0.0.1:53", 0, &l);
	ck_assert_int_eq(l.kind, LISTENER_UDP);
	assert_ipv4(&l, "127.0.0.1", 53);
	ck_assert_str_eq(l.spec, "udp://127.0.0.1:53");
}
END_TEST

START_TEST(unix_path_is_a_unix_listener)
{
	struct listener l;

	parse_ok("unix:/run/x.sock", 0, &l);
	ck_assert_int_eq(l.kind, LISTENER_UNIX);
	ck_assert_int_eq(l.addr.un.sun_family, AF_UNIX);
	ck_assert_str_eq(l.addr.un.sun_path, "/run/x.sock");
	ck_assert_uint_eq(l.addr_len,
			  offsetof(struct sockaddr_un, sun_path) + strlen("/run/x.sock") + 1);
	ck_assert_str_eq(l.spec, "unix:/run/x.sock");
}
END_TEST

START_TEST(unix_at_name_is_an_abstract_socket)
{
	struct listener l;

	parse_ok("unix:@abstract", 0, &l);
	ck_assert_int_eq(l.kind, LISTENER_UNIX);
	ck_assert_int_eq(l.addr.un.sun_family, AF_UNIX);
	ck_assert_int_eq(l.addr.un.sun_path[0], '\0');
	/* The length, not a NUL, ends an abstract name. */
	ck_assert_uint_eq(l.addr_len,
			  offsetof(struct sockaddr_un, sun_path) + 1 + strlen("abstract"));
	ck_assert_mem_eq(l.addr.un.sun_path + 1, "abstract", strlen("abstract"));
	ck_assert_str_eq(l.spec, "unix:@abstract");
}
END_TEST

START_TEST(star_means_any_ipv4_address)
{
	struct listener l;

	parse_ok("*:80", 0, &l);
	ck_assert_int_eq(l.kind, LISTENER_TCP);
	assert_ipv4(&l, "0.0.0.0", 80);
	ck_assert_str_eq(l.spec, "tcp://0.0.0.0:80");
}
END_TEST

START_TEST(localhost_resolves_through_etc_hosts)
{
	struct listener l;

	parse_ok("localhost:80", 0, &l);
	ck_assert_int_eq(l.kind, LISTENER_TCP);
	ck_assert_msg(l.addr.sa.sa_family == AF_INET || l.addr.sa.sa_family == AF_INET6,
		      "localhost resolved to family %d", l.addr.sa.sa_family);
	ck_assert_uint_eq(port_of(&l), 80);
	if (l.addr.sa.sa_family == AF_INET) {
		ck_assert_uint_eq(l.addr_len, sizeof(struct sockaddr_in));
		ck_assert_uint_eq(ntohl(l.addr.in.sin_addr.s_addr) >> 24, 127);
	} else {
		ck_assert_uint_eq(l.addr_len, sizeof(struct sockaddr_in6));
	}
	/* The spec shows the address it resolved to, not the name. */
	ck_assert_msg(strstr(l.spec, "localhost") == NULL, "spec is %s", l.spec);
	ck_assert_msg(strncmp(l.spec, "tcp://", 6) == 0, "spec is %s", l.spec);
}
END_TEST

START_TEST(a_host_that_is_not_a_valid_name_is_not_found)
{
	/* Not a valid DNS name, so the resolver refuses it without asking the network. */
	assert_refused("no such host:80", -EADDRNOTAVAIL);
}
END_TEST

START_TEST(name_before_equals_sign_names_the_listener)
{
	struct listener l;

	parse_ok("web=127.0.0.1:80", 5, &l);
	ck_assert_str_eq(l.name, "web");
	assert_ipv4(&l, "127.0.0.1", 80);
	ck_assert_str_eq(l.spec, "tcp://127.0.0.1:80");
}
END_TEST

START_TEST(equals_sign_inside_a_unix_path_is_part_of_the_address)
{
	struct listener l;

	parse_ok("unix:/tmp/a=b", 1, &l);
	ck_assert_str_eq(l.name, "listen1");
	ck_assert_int_eq(l.kind, LISTENER_UNIX);
	ck_assert_str_eq(l.addr.un.sun_path, "/tmp/a=b");
	ck_assert_str_eq(l.spec, "unix:/tmp/a=b");

	parse_ok("api=unix:/tmp/a=b", 1, &l);
	ck_assert_str_eq(l.name, "api");
	ck_assert_str_eq(l.addr.un.sun_path, "/tmp/a=b");
	ck_assert_str_eq(l.spec, "unix:/tmp/a=b");
}
END_TEST

START_TEST(unnamed_listeners_are_named_after_their_index)
{
	struct listener l;

	parse_ok("127.0.0.1:80", 0, &l);
	ck_assert_str_eq(l.name, "listen0");
	parse_ok("127.0.0.1:80", 1, &l);
	ck_assert_str_eq(l.name, "listen1");
	parse_ok("unix:@x", 249, &l);
	ck_assert_str_eq(l.name, "listen249");
}
END_TEST

START_TEST(port_boundaries_are_zero_and_65535)
{
	struct listener l;

	parse_ok("127.0.0.1:0", 0, &l);
	ck_assert_uint_eq(port_of(&l), 0);
	ck_assert_str_eq(l.spec, "tcp://127.0.0.1:0");
	parse_ok("127.0.0.1:65535", 0, &l);
	ck_assert_uint_eq(port_of(&l), 65535);
	ck_assert_str_eq(l.spec, "tcp://127.0.0.1:65535");
}
END_TEST

START_TEST(a_name_of_255_bytes_is_accepted)
{
	char arg[LISTENER_NAME_MAX + 32];
	struct listener l;

	memset(arg, 'n', LISTENER_NAME_MAX);
	(void)snprintf(arg + LISTENER_NAME_MAX, sizeof(arg) - LISTENER_NAME_MAX, "=127.0.0.1:1");
	parse_ok(arg, 0, &l);
	ck_assert_uint_eq(strlen(l.name), LISTENER_NAME_MAX);
	ck_assert_int_eq(l.name[0], 'n');
}
END_TEST

START_TEST(a_unix_path_of_107_bytes_fits)
{
	char *arg = unix_spec_of_length(SUN_PATH_MAX - 1, '/');
	struct listener l;

	parse_ok(arg, 0, &l);
	ck_assert_uint_eq(strlen(l.addr.un.sun_path), 107);
	ck_assert_str_eq(l.spec, arg);
	free(arg);
}
END_TEST

START_TEST(an_abstract_name_may_use_all_107_bytes_after_the_leading_nul)
{
	/* "@" becomes the leading NUL, so "@" and 107 bytes fill sun_path's 108 exactly. */
	char *arg = unix_spec_of_length(SUN_PATH_MAX, '@');
	struct listener l;
	int r = listener_parse(arg, 0, &l);

	ck_assert_msg(r == 0, "listener_parse(unix:@ + 107 bytes) = %d (%s)", r, strerror(-r));
	ck_assert_uint_eq(l.addr_len, sizeof(struct sockaddr_un));
	ck_assert_str_eq(l.spec, arg);
	free(arg);
}
END_TEST

/* --- listener_parse: refused forms --- */

START_TEST(malformed_addresses_are_refused_with_einval)
{
	static const char *const bad[] = {
		"",
		"127.0.0.1",
		"127.0.0.1:",
		"127.0.0.1:http",
		"127.0.0.1:-1",
		"127.0.0.1:80 ",
		"::1:80",
		"[::1]80",
		"[::1",
		"[::1]:",
		"[127.0.0.1]:80",
		"[]:80",
		"ftp://1.2.3.4:1",
		"http://127.0.0.1:80",
		"unix:",
		"unix:@",
		"tcp://",
		"udp://127.0.0.1",
		"=127.0.0.1:80",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_refused(bad[i], -EINVAL);
}
END_TEST

START_TEST(ports_above_65535_are_refused_with_erange)
{
	assert_refused("127.0.0.1:65536", -ERANGE);
	assert_refused("[::1]:99999", -ERANGE);
	assert_refused("udp://127.0.0.1:18446744073709551617", -ERANGE);
}
END_TEST

START_TEST(a_unix_path_of_108_bytes_is_refused_with_enametoolong)
{
	char *arg = unix_spec_of_length(SUN_PATH_MAX, '/');

	assert_refused(arg, -ENAMETOOLONG);
	free(arg);
	arg = unix_spec_of_length(300, '/');
	assert_refused(arg, -ENAMETOOLONG);
	free(arg);
	arg = unix_spec_of_length(300, '@');
	assert_refused(arg, -ENAMETOOLONG);
	free(arg);
}
END_TEST

START_TEST(colon_before_equals_sign_makes_the_whole_argument_an_address)
{
	struct listener l;

	/* A name cannot contain ':', so this is HOST:PORT with host "bad:name=127.0.0.1". */
	assert_refused("bad:name=127.0.0.1:80", -EINVAL);
	/* ... and a "name" with '/' or '[' likewise never splits off. */
	parse_ok("unix:/a=b", 0, &l);
	ck_assert_str_eq(l.name, "listen0");
}
END_TEST

START_TEST(names_with_spaces_or_control_characters_are_refused)
{
	assert_refused("my web=127.0.0.1:80", -EINVAL);
	assert_refused("web\t=127.0.0.1:80", -EINVAL);
	assert_refused("we\x01"
		       "b=127.0.0.1:80",
		       -EINVAL);
	assert_refused("web\x7f=127.0.0.1:80", -EINVAL);
	assert_refused("w\xc3\xa9"
		       "b=127.0.0.1:80",
		       -EINVAL);
}
END_TEST

START_TEST(names_over_255_bytes_are_refused_with_enametoolong)
{
	char arg[LISTENER_NAME_MAX + 32];

	memset(arg, 'n', LISTENER_NAME_MAX + 1);
	(void)snprintf(arg + LISTENER_NAME_MAX + 1, sizeof(arg) - LISTENER_NAME_MAX - 1,
		       "=127.0.0.1:1");
	assert_refused(arg, -ENAMETOOLONG);
}
END_TEST

START_TEST(a_valid_name_with_a_bad_address_is_still_refused)
{
	assert_refused("web=127.0.0.1", -EINVAL);
	assert_refused("web=", -EINVAL);
	assert_refused("web=127.0.0.1:65536", -ERANGE);
}
END_TEST

START_TEST(a_second_name_is_refused_as_malformed_not_looked_up_as_a_host)
{
	assert_refused("a=b=127.0.0.1:80", -EINVAL);
	assert_refused("a=b=localhost:80", -EINVAL);
	assert_refused("a=tcp://b=127.0.0.1:80", -EINVAL);
}
END_TEST

/* --- listener_name_is_valid --- */

START_TEST(names_are_1_to_255_printable_ascii_characters_without_colon)
{
	char name[LISTENER_NAME_MAX + 2];

	ck_assert(listener_name_is_valid("web"));
	ck_assert(listener_name_is_valid("a"));
	ck_assert(listener_name_is_valid("listen0"));
	ck_assert(listener_name_is_valid("a=b/c[d]~!"));
	memset(name, 'x', LISTENER_NAME_MAX);
	name[LISTENER_NAME_MAX] = '\0';
	ck_assert(listener_name_is_valid(name));

	name[LISTENER_NAME_MAX] = 'x';
	name[LISTENER_NAME_MAX + 1] = '\0';
	ck_assert(!listener_name_is_valid(name));
	ck_assert(!listener_name_is_valid(""));
	ck_assert(!listener_name_is_valid("a:b"));
	ck_assert(!listener_name_is_valid(":"));
	ck_assert(!listener_name_is_valid("a b"));
	ck_assert(!listener_name_is_valid(" "));
	ck_assert(!listener_name_is_valid("a\tb"));
	ck_assert(!listener_name_is_valid("a\nb"));
	ck_assert(!listener_name_is_valid("a\x7f"));
	ck_assert(!listener_name_is_valid("\x1b[31m"));
	ck_assert(!listener_name_is_valid("caf\xc3\xa9"));
}
END_TEST

START_TEST(kind_names_are_tcp_udp_and_unix)
{
	ck_assert_str_eq(listener_kind_to_string(LISTENER_TCP), "tcp");
	ck_assert_str_eq(listener_kind_to_string(LISTENER_UDP), "udp");
	ck_assert_str_eq(listener_kind_to_string(LISTENER_UNIX), "unix");
}
END_TEST

/* --- listener_bind and listener_close on real sockets --- */

static void assert_cloexec_nonblock(int fd)
{
	int fdfl = fcntl(fd, F_GETFD);
	int fl = fcntl(fd, F_GETFL);

	ck_assert_int_ge(fdfl, 0);
	ck_assert_int_ge(fl, 0);
	ck_assert_msg(fdfl & FD_CLOEXEC, "fd %d lacks FD_CLOEXEC", fd);
	ck_assert_msg(fl & O_NONBLOCK, "fd %d lacks O_NONBLOCK", fd);
}

static int sock_type(int fd)
{
	int type = -1;
	socklen_t len = sizeof(type);

	ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len), 0);
	return type;
}

static bool sock_is_listening(int fd)
{
	int on = 0;
	socklen_t len = sizeof(on);

	ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len), 0);
	return on != 0;
}

/* Connects a blocking client to l's address, then accepts it within a deadline. */
static void assert_accepts_a_connection(const struct listener *l)
{
	struct pollfd p = { .fd = l->fd, .events = POLLIN };
	char b = 0;
	int c, a;

	c = socket(l->addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(c, 0);
	ck_assert_msg(connect(c, &l->addr.sa, l->addr_len) == 0, "connect %s: %s", l->spec,
		      strerror(errno));
	ck_assert_int_eq(poll(&p, 1, WAIT_MSEC), 1);
	a = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_msg(a >= 0, "accept on %s: %s", l->spec, strerror(errno));
	ck_assert_int_eq(write(c, "x", 1), 1);
	ck_assert_int_eq(read(a, &b, 1), 1);
	ck_assert_int_eq(b, 'x');
	ck_assert_int_eq(close(a), 0);
	ck_assert_int_eq(close(c), 0);
}

/* Accepts and closes whatever is queued (a liveness probe may have connected); fd is O_NONBLOCK. */
static void drain_accept_queue(int fd)
{
	int a;

	while ((a = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
		ck_assert_int_eq(close(a), 0);
	ck_assert_msg(errno == EAGAIN || errno == EWOULDBLOCK, "accept: %s", strerror(errno));
}

/* A mkdtemp() directory for Unix socket files; the test removes what it made in it. */
static void make_dir(char *dir, size_t size)
{
	ck_assert_int_lt(snprintf(dir, size, "/tmp/baton-unit-listener-XXXXXX"), (int)size);
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void path_in(char *buf, size_t size, const char *dir, const char *name)
{
	ck_assert_int_lt(snprintf(buf, size, "%s/%s", dir, name), (int)size);
}

/* Parses "unix:PATH" into l and binds it, which must return expected (0 or -errno). */
static void bind_unix_path(struct listener *l, const char *path, int expected)
{
	char arg[UNIX_ARG_MAX];

	ck_assert_int_lt(snprintf(arg, sizeof(arg), "unix:%s", path), (int)sizeof(arg));
	parse_ok(arg, 0, l);
	ck_assert_int_eq(listener_bind(l, 16), expected);
}

START_TEST(tcp_port_zero_binds_a_free_port_and_updates_the_spec)
{
	int n_fds = unit_count_fds();
	struct listener l;
	union listener_addr got;
	socklen_t len = sizeof(got);
	char expected[LISTENER_SPEC_MAX];

	parse_ok("127.0.0.1:0", 0, &l);
	ck_assert_int_eq(listener_bind(&l, 16), 0);
	ck_assert_int_ge(l.fd, 0);
	ck_assert_int_ne(port_of(&l), 0);
	ck_assert_int_eq(getsockname(l.fd, &got.sa, &len), 0);
	ck_assert_int_eq(got.sa.sa_family, AF_INET);
	ck_assert_uint_eq(ntohs(got.in.sin_port), port_of(&l));
	ck_assert_uint_eq(ntohl(got.in.sin_addr.s_addr), INADDR_LOOPBACK);
	(void)snprintf(expected, sizeof(expected), "tcp://127.0.0.1:%u", port_of(&l));
	ck_assert_str_eq(l.spec, expected);
	ck_assert_int_eq(sock_type(l.fd), SOCK_STREAM);
	ck_assert(sock_is_listening(l.fd));
	assert_cloexec_nonblock(l.fd);
	assert_accepts_a_connection(&l);

	listener_close(&l);
	ck_assert_int_eq(l.fd, -1);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(ipv6_loopback_port_zero_binds_a_free_port)
{
	int n_fds = unit_count_fds();
	struct listener l;
	char expected[LISTENER_SPEC_MAX];
	int r, v6only = 0;
	socklen_t len = sizeof(v6only);

	parse_ok("tcp://[::1]:0", 0, &l);
	r = listener_bind(&l, 16);
	if (r == -EADDRNOTAVAIL || r == -EAFNOSUPPORT) {
		/* No IPv6 loopback on this machine: nothing to test. */
		(void)fprintf(stderr, "listener: no ::1 here (%s), IPv6 bind test skipped\n",
			      strerror(-r));
		return;
	}
	ck_assert_int_eq(r, 0);
	ck_assert_int_ne(port_of(&l), 0);
	(void)snprintf(expected, sizeof(expected), "tcp://[::1]:%u", port_of(&l));
	ck_assert_str_eq(l.spec, expected);
	ck_assert_int_eq(getsockopt(l.fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len), 0);
	ck_assert_int_eq(v6only, 1);
	assert_cloexec_nonblock(l.fd);
	assert_accepts_a_connection(&l);
	listener_close(&l);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(udp_binds_a_datagram_socket_that_receives)
{
	int n_fds = unit_count_fds();
	struct listener l;
	struct pollfd p;
	char expected[LISTENER_SPEC_MAX];
	char buf[8] = { 0 };
	int c;

	parse_ok("udp://127.0.0.1:0", 0, &l);
	ck_assert_int_eq(listener_bind(&l, 16), 0);
	ck_assert_int_ne(port_of(&l), 0);
	(void)snprintf(expected, sizeof(expected), "udp://127.0.0.1:%u", port_of(&l));
	ck_assert_str_eq(l.spec, expected);
	ck_assert_int_eq(sock_type(l.fd), SOCK_DGRAM);
	assert_cloexec_nonblock(l.fd);

	c = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(c, 0);
	ck_assert_int_eq(sendto(c, "ping", 4, 0, &l.addr.sa, l.addr_len), 4);
	p = (struct pollfd){ .fd = l.fd, .events = POLLIN };
	ck_assert_int_eq(poll(&p, 1, WAIT_MSEC), 1);
	ck_assert_int_eq(recv(l.fd, buf, sizeof(buf), 0), 4);
	ck_assert_str_eq(buf, "ping");
	ck_assert_int_eq(close(c), 0);

	listener_close(&l);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(unix_path_bind_creates_the_socket_and_close_removes_it)
{
	int n_fds = unit_count_fds();
	char dir[64], path[SUN_PATH_MAX];
	struct listener l;
	struct stat st;

	make_dir(dir, sizeof(dir));
	path_in(path, sizeof(path), dir, "s.sock");
	bind_unix_path(&l, path, 0);
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert(l.owns_path);
	ck_assert_int_eq(sock_type(l.fd), SOCK_STREAM);
	ck_assert(sock_is_listening(l.fd));
	assert_cloexec_nonblock(l.fd);
	assert_accepts_a_connection(&l);

	listener_close(&l);
	ck_assert_int_eq(lstat(path, &st), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_int_eq(rmdir(dir), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_stale_socket_file_is_replaced)
{
	int n_fds = unit_count_fds();
	char dir[64], path[SUN_PATH_MAX];
	struct listener l, old;
	struct stat before, after;

	make_dir(dir, sizeof(dir));
	path_in(path, sizeof(path), dir, "s.sock");
	/* A server that died without unlinking its socket file. */
	bind_unix_path(&old, path, 0);
	ck_assert_int_eq(close(old.fd), 0);
	ck_assert_int_eq(lstat(path, &before), 0);
	ck_assert(S_ISSOCK(before.st_mode));

	bind_unix_path(&l, path, 0);
	ck_assert_int_eq(lstat(path, &after), 0);
	ck_assert(S_ISSOCK(after.st_mode));
	ck_assert(l.owns_path);
	/* Answering on the path proves the file is ours now (tmpfs may reuse the inode number). */
	assert_accepts_a_connection(&l);

	listener_close(&l);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(rmdir(dir), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_live_socket_file_is_left_alone_with_eaddrinuse)
{
	int n_fds = unit_count_fds();
	char dir[64], path[SUN_PATH_MAX];
	struct listener l, live;
	struct stat before, after;

	make_dir(dir, sizeof(dir));
	path_in(path, sizeof(path), dir, "s.sock");
	bind_unix_path(&live, path, 0);
	ck_assert_int_eq(lstat(path, &before), 0);

	bind_unix_path(&l, path, -EADDRINUSE);
	ck_assert_int_eq(l.fd, -1);
	ck_assert(!l.owns_path);
	ck_assert_int_eq(lstat(path, &after), 0);
	ck_assert_uint_eq(after.st_ino, before.st_ino);
	ck_assert_int_eq(unit_count_fds(), n_fds + 1);

	/* The owner still answers: its file was not replaced under it. */
	drain_accept_queue(live.fd);
	assert_accepts_a_connection(&live);

	listener_close(&l);
	listener_close(&live);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(rmdir(dir), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_live_datagram_socket_file_is_left_alone_with_eaddrinuse)
{
	int n_fds = unit_count_fds();
	char dir[64], path[SUN_PATH_MAX];
	struct listener l;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat before, after;
	int live;

	make_dir(dir, sizeof(dir));
	path_in(path, sizeof(path), dir, "d.sock");
	live = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(live, 0);
	(void)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ck_assert_int_eq(bind(live, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(lstat(path, &before), 0);

	bind_unix_path(&l, path, -EADDRINUSE);
	ck_assert_int_eq(l.fd, -1);
	ck_assert_int_eq(lstat(path, &after), 0);
	ck_assert_uint_eq(after.st_ino, before.st_ino);

	ck_assert_int_eq(close(live), 0);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_regular_file_in_the_way_is_left_untouched_with_eexist)
{
	static const char content[] = "precious data\n";
	int n_fds = unit_count_fds();
	char dir[64], path[SUN_PATH_MAX], buf[64] = { 0 };
	struct listener l;
	struct stat st;
	int fd;

	make_dir(dir, sizeof(dir));
	path_in(path, sizeof(path), dir, "not-a-socket");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	ck_assert_int_eq(close(fd), 0);

	bind_unix_path(&l, path, -EEXIST);
	ck_assert_int_eq(l.fd, -1);
	ck_assert(!l.owns_path);
	ck_assert_int_eq(unit_count_fds(), n_fds);

	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(read(fd, buf, sizeof(buf) - 1), (ssize_t)strlen(content));
	ck_assert_str_eq(buf, content);
	ck_assert_int_eq(close(fd), 0);

	/* A close after the failed bind must not remove what was never ours. */
	listener_close(&l);
	ck_assert_int_eq(access(path, F_OK), 0);

	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(close_does_not_remove_a_file_that_replaced_ours)
{
	int n_fds = unit_count_fds();
	char dir[64], path[SUN_PATH_MAX];
	struct listener l, newer;

	make_dir(dir, sizeof(dir));
	path_in(path, sizeof(path), dir, "s.sock");
	bind_unix_path(&l, path, 0);
	/* A newer batond took the path over: it unlinked ours and bound its own. */
	ck_assert_int_eq(unlink(path), 0);
	bind_unix_path(&newer, path, 0);

	listener_close(&l);
	ck_assert_int_eq(access(path, F_OK), 0);
	assert_accepts_a_connection(&newer);

	listener_close(&newer);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(rmdir(dir), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(abstract_socket_binds_and_accepts)
{
	int n_fds = unit_count_fds();
	char arg[96];
	struct listener l, again;

	(void)snprintf(arg, sizeof(arg), "unix:@" ABSTRACT_BASE "-%ld", (long)getpid());
	parse_ok(arg, 0, &l);
	ck_assert_int_eq(listener_bind(&l, 16), 0);
	ck_assert(!l.owns_path);
	ck_assert_str_eq(l.spec, arg);
	ck_assert(sock_is_listening(l.fd));
	assert_cloexec_nonblock(l.fd);
	assert_accepts_a_connection(&l);

	/* The abstract namespace has no files to go stale: a second bind is simply refused. */
	parse_ok(arg, 1, &again);
	ck_assert_int_eq(listener_bind(&again, 16), -EADDRINUSE);
	ck_assert_int_eq(again.fd, -1);

	listener_close(&l);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_second_bind_of_the_same_tcp_port_fails_without_leaking)
{
	int n_fds = unit_count_fds();
	struct listener first, second;
	char arg[64];

	parse_ok("127.0.0.1:0", 0, &first);
	ck_assert_int_eq(listener_bind(&first, 16), 0);
	(void)snprintf(arg, sizeof(arg), "127.0.0.1:%u", port_of(&first));
	parse_ok(arg, 1, &second);

	ck_assert_int_eq(listener_bind(&second, 16), -EADDRINUSE);
	ck_assert_int_eq(second.fd, -1);
	ck_assert_int_eq(unit_count_fds(), n_fds + 1);

	listener_close(&first);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(a_second_bind_of_the_same_udp_port_fails_with_eaddrinuse)
{
	int n_fds = unit_count_fds();
	struct listener first, second;
	char arg[64];
	int r;

	/* Were it to succeed, the kernel would deliver every datagram to the newer socket only:
	 * a second batond would silently take the port over instead of failing to start. */
	parse_ok("udp://127.0.0.1:0", 0, &first);
	ck_assert_int_eq(listener_bind(&first, 16), 0);
	(void)snprintf(arg, sizeof(arg), "udp://127.0.0.1:%u", port_of(&first));
	parse_ok(arg, 1, &second);

	r = listener_bind(&second, 16);
	if (r == 0)
		listener_close(&second);
	ck_assert_msg(r == -EADDRINUSE, "second bind of %s = %d (%s), expected -EADDRINUSE", arg, r,
		      strerror(-r));
	ck_assert_int_eq(second.fd, -1);
	ck_assert_int_eq(unit_count_fds(), n_fds + 1);

	listener_close(&first);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(close_twice_is_safe)
{
	int n_fds = unit_count_fds();
	char dir[64], path[SUN_PATH_MAX];
	struct listener tcp, un;
	int fd;

	parse_ok("127.0.0.1:0", 0, &tcp);
	ck_assert_int_eq(listener_bind(&tcp, 16), 0);
	make_dir(dir, sizeof(dir));
	path_in(path, sizeof(path), dir, "s.sock");
	bind_unix_path(&un, path, 0);

	listener_close(&tcp);
	listener_close(&tcp);
	ck_assert_int_eq(tcp.fd, -1);
	listener_close(&un);
	ck_assert_int_eq(access(path, F_OK), -1);
	/* A file put there after our close is not ours, even to a second close. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(close(fd), 0);
	listener_close(&un);
	ck_assert_int_eq(un.fd, -1);
	ck_assert_int_eq(access(path, F_OK), 0);

	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

START_TEST(close_of_a_listener_that_was_never_bound_is_safe)
{
	int n_fds = unit_count_fds();
	struct listener l;

	parse_ok("unix:/nonexistent/never-bound.sock", 0, &l);
	listener_close(&l);
	ck_assert_int_eq(l.fd, -1);
	ck_assert_int_eq(unit_count_fds(), n_fds);
}
END_TEST

Suite *listener_suite(void)
{
	Suite *s = suite_create("listener");
	TCase *tc = tcase_create("parse");

	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, host_and_port_is_tcp);
	tcase_add_test(tc, tcp_scheme_is_the_same_as_no_scheme);
	tcase_add_test(tc, bracketed_ipv6_address_is_tcp_over_ipv6);
	tcase_add_test(tc, ipv6_spec_is_canonical);
	tcase_add_test(tc, udp_scheme_gives_a_udp_listener);
	tcase_add_test(tc, unix_path_is_a_unix_listener);
	tcase_add_test(tc, unix_at_name_is_an_abstract_socket);
	tcase_add_test(tc, star_means_any_ipv4_address);
	tcase_add_test(tc, localhost_resolves_through_etc_hosts);
	tcase_add_test(tc, a_host_that_is_not_a_valid_name_is_not_found);
	tcase_add_test(tc, name_before_equals_sign_names_the_listener);
	tcase_add_test(tc, equals_sign_inside_a_unix_path_is_part_of_the_address);
	tcase_add_test(tc, unnamed_listeners_are_named_after_their_index);
	tcase_add_test(tc, port_boundaries_are_zero_and_65535);
	tcase_add_test(tc, a_name_of_255_bytes_is_accepted);
	tcase_add_test(tc, a_unix_path_of_107_bytes_fits);
	tcase_add_test(tc, an_abstract_name_may_use_all_107_bytes_after_the_leading_nul);
	tcase_add_test(tc, malformed_addresses_are_refused_with_einval);
	tcase_add_test(tc, ports_above_65535_are_refused_with_erange);
	tcase_add_test(tc, a_unix_path_of_108_bytes_is_refused_with_enametoolong);
	tcase_add_test(tc, colon_before_equals_sign_makes_the_whole_argument_an_address);
	tcase_add_test(tc, names_with_spaces_or_control_characters_are_refused);
	tcase_add_test(tc, names_over_255_bytes_are_refused_with_enametoolong);
	tcase_add_test(tc, a_valid_name_with_a_bad_address_is_still_refused);
	tcase_add_test(tc, a_second_name_is_refused_as_malformed_not_looked_up_as_a_host);
	tcase_add_test(tc, names_are_1_to_255_printable_ascii_characters_without_colon);
	tcase_add_test(tc, kind_names_are_tcp_udp_and_unix);
	suite_add_tcase(s, tc);

	tc = tcase_create("bind");
	tcase_set_timeout(tc, UNIT_TIMEOUT_SEC);
	tcase_add_test(tc, tcp_port_zero_binds_a_free_port_and_updates_the_spec);
	tcase_add_test(tc, ipv6_loopback_port_zero_binds_a_free_port);
	tcase_add_test(tc, udp_binds_a_datagram_socket_that_receives);
	tcase_add_test(tc, unix_path_bind_creates_the_socket_and_close_removes_it);
	tcase_add_test(tc, a_stale_socket_file_is_replaced);
	tcase_add_test(tc, a_live_socket_file_is_left_alone_with_eaddrinuse);
	tcase_add_test(tc, a_live_datagram_socket_file_is_left_alone_with_eaddrinuse);
	tcase_add_test(tc, a_regular_file_in_the_way_is_left_untouched_with_eexist);
	tcase_add_test(tc, close_does_not_remove_a_file_that_replaced_ours);
	tcase_add_test(tc, abstract_socket_binds_and_accepts);
	tcase_add_test(tc, a_second_bind_of_the_same_tcp_port_fails_without_leaking);
	tcase_add_test(tc, a_second_bind_of_the_same_udp_port_fails_with_eaddrinuse);
	tcase_add_test(tc, close_twice_is_safe);
	tcase_add_test(tc, close_of_a_listener_that_was_never_bound_is_safe);
	suite_add_tcase(s, tc);
	return s;
}
