/* SPDX-License-Identifier: MIT */
/* intercept_plan.c - which notified calls batond takes over, which continue, which fail. */
#include "intercept_plan.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define INTERCEPT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define INTERCEPT_ARCH AUDIT_ARCH_AARCH64
#endif

/* The x32 ABI's calls have this bit in their number: not ours to look at (allowed). */
#define X32_SYSCALL_BIT 0x40000000u

enum intercept_call intercept_plan_call(long nr)
{
	switch (nr) {
	case SYS_bind:
		return INTERCEPT_CALL_BIND;
	case SYS_listen:
		return INTERCEPT_CALL_LISTEN;
	case SYS_setsockopt:
		return INTERCEPT_CALL_SETSOCKOPT;
	case SYS_shutdown:
		return INTERCEPT_CALL_SHUTDOWN;
#ifdef SYS_unlink
	case SYS_unlink:
#endif
	case SYS_unlinkat:
		return INTERCEPT_CALL_UNLINK;
	default:
		return INTERCEPT_CALL_OTHER;
	}
}

/* The same list as the preload shim's (docs/WRAPPING.md, "What the shim intercepts"). */
static const int batonds_options[] = {
	SO_REUSEADDR,
	SO_REUSEPORT,	  /* would let a stranger bind the same port and take half the traffic */
	SO_ATTACH_FILTER, /* batond's graceful stop owns the listener's filter */
	SO_ATTACH_BPF,
	SO_DETACH_FILTER,
	SO_LOCK_FILTER,
	SO_ATTACH_REUSEPORT_CBPF,
	SO_ATTACH_REUSEPORT_EBPF,
	SO_DETACH_REUSEPORT_BPF,
};
#define N_BATONDS_OPTIONS (sizeof(batonds_options) / sizeof(batonds_options[0]))

bool intercept_plan_option_is_batonds(int level, int name)
{
	if (level != SOL_SOCKET)
		return false;
	for (size_t i = 0; i < N_BATONDS_OPTIONS; i++)
		if (batonds_options[i] == name)
			return true;
	return false;
}

/* The socket type and protocol of a held listener, as the server's socket would have them. */
static void held_type(const struct listener *l, int *type, int *protocol)
{
	switch (l->kind) {
	case LISTENER_TCP:
		*type = SOCK_STREAM;
		*protocol = IPPROTO_TCP;
		return;
	case LISTENER_UDP:
		*type = SOCK_DGRAM;
		*protocol = IPPROTO_UDP;
		return;
	case LISTENER_UNIX:
	default:
		*type = SOCK_STREAM;
		*protocol = 0;
		return;
	}
}

static bool inet_any(const union listener_addr *a)
{
	if (a->sa.sa_family == AF_INET)
		return a->in.sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&a->in6.sin6_addr);
}

static in_port_t inet_port(const union listener_addr *a)
{
	return a->sa.sa_family == AF_INET ? a->in.sin_port : a->in6.sin6_port;
}

static bool inet_same(const union listener_addr *a, const union listener_addr *b)
{
	if (a->sa.sa_family == AF_INET)
		return a->in.sin_port == b->in.sin_port &&
		       a->in.sin_addr.s_addr == b->in.sin_addr.s_addr;
	return a->in6.sin6_port == b->in6.sin6_port &&
	       a->in6.sin6_scope_id == b->in6.sin6_scope_id &&
	       memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr)) == 0;
}

/*
 * Whether listener l answers for the address in f: pass 0 the exact address (IP and port;
 * Unix path string or abstract name), pass 1 a wildcard IP on either side with the same port,
 * or a Unix path that names the held socket file. The same rules as the preload shim's.
 */
static bool address_matches(const struct listener *l, const struct intercept_facts *f, int pass)
{
	const union listener_addr *a = &f->addr;
	size_t name_len;

	if (l->addr.sa.sa_family != a->sa.sa_family)
		return false;
	if (a->sa.sa_family != AF_UNIX)
		return pass == 0 ? inet_same(&l->addr, a)
				 : inet_port(&l->addr) == inet_port(a) &&
					   (inet_any(&l->addr) || inet_any(a));
	name_len = f->addr_len - offsetof(struct sockaddr_un, sun_path);
	if (a->un.sun_path[0] == '\0')
		return pass == 0 &&
		       (size_t)l->addr_len == offsetof(struct sockaddr_un, sun_path) + name_len &&
		       memcmp(l->addr.un.sun_path, a->un.sun_path, name_len) == 0;
	if (l->addr.un.sun_path[0] == '\0')
		return false;
	if (pass == 0)
		return strncmp(l->addr.un.sun_path, a->un.sun_path, name_len) == 0 &&
		       strnlen(l->addr.un.sun_path, sizeof(l->addr.un.sun_path)) ==
			       strnlen(a->un.sun_path, name_len);
	return f->file_known && l->path_ino != 0 && l->path_dev == f->file_dev &&
	       l->path_ino == f->file_ino;
}

/* A bind to an address nobody can listen on by name: port 0, Unix autobind, not inet/unix. */
static bool ephemeral(const struct intercept_facts *f)
{
	switch (f->addr.sa.sa_family) {
	case AF_INET:
		return f->addr_len < sizeof(struct sockaddr_in) || f->addr.in.sin_port == 0;
	case AF_INET6:
		return f->addr_len < sizeof(struct sockaddr_in6) || f->addr.in6.sin6_port == 0;
	case AF_UNIX:
		return f->addr_len <= offsetof(struct sockaddr_un, sun_path);
	default:
		return true;
	}
}

static struct intercept_decision verdict(enum intercept_verdict v, enum intercept_reason why,
					 int held, int error)
{
	return (struct intercept_decision){
		.verdict = v, .reason = why, .held = held, .error = error
	};
}

static struct intercept_decision decide_bind(const struct intercept_facts *f,
					     const struct listener *l, size_t n)
{
	bool other_type = false;

	if (!f->sock_known || !f->addr_known || f->addr_len < sizeof(sa_family_t) ||
	    f->addr_len > sizeof(f->addr))
		return verdict(INTERCEPT_CONTINUE, INTERCEPT_WHY_UNREADABLE, -1, 0);
	if (f->held >= 0) {
		/* Ours already: the same bind again (its answer was cut short by a signal)? */
		if ((size_t)f->held < n &&
		    (address_matches(&l[f->held], f, 0) || address_matches(&l[f->held], f, 1)))
			return verdict(INTERCEPT_RETURN, INTERCEPT_WHY_AGAIN, f->held, 0);
		return verdict(INTERCEPT_RETURN, INTERCEPT_WHY_BOUND, f->held, -EINVAL);
	}
	/* The kernel's own answers: a bound socket (EINVAL), a family mismatch. */
	if (f->bound || f->family != f->addr.sa.sa_family)
		return verdict(INTERCEPT_CONTINUE, INTERCEPT_WHY_BOUND, -1, 0);
	if (ephemeral(f))
		return verdict(INTERCEPT_CONTINUE, INTERCEPT_WHY_EPHEMERAL, -1, 0);
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			int type, protocol;

			if (!address_matches(&l[i], f, pass))
				continue;
			held_type(&l[i], &type, &protocol);
			if (type != f->type || protocol != f->protocol) {
				other_type = true;
				continue;
			}
			return verdict(INTERCEPT_TAKE_OVER, INTERCEPT_WHY_HELD, (int)i, 0);
		}
	}
	return verdict(INTERCEPT_CONTINUE,
		       other_type ? INTERCEPT_WHY_OTHER_TYPE : INTERCEPT_WHY_NOT_HELD, -1, 0);
}

struct intercept_decision intercept_plan_decide(const struct intercept_facts *f,
						const struct listener *l, size_t n)
{
	bool ours = f->sock_known && f->held >= 0 && (size_t)f->held < n;

	switch (f->call) {
	case INTERCEPT_CALL_BIND:
		return decide_bind(f, l, n);
	case INTERCEPT_CALL_LISTEN:
		/* A second listen() would set batond's backlog for every worker. */
		if (ours && l[f->held].kind != LISTENER_UDP)
			return verdict(INTERCEPT_RETURN, INTERCEPT_WHY_SHARED, f->held, 0);
		break;
	case INTERCEPT_CALL_SETSOCKOPT:
		if (ours && intercept_plan_option_is_batonds(f->level, f->name))
			return verdict(INTERCEPT_RETURN, INTERCEPT_WHY_SHARED, f->held, 0);
		break;
	case INTERCEPT_CALL_SHUTDOWN:
		/* SHUT_RD on a listener resets its queue and stops it for every holder. */
		if (ours && f->how != SHUT_WR)
			return verdict(INTERCEPT_RETURN, INTERCEPT_WHY_SHARED, f->held, 0);
		break;
	case INTERCEPT_CALL_UNLINK:
		/* The file clients connect through; a server removes it at close (Go) or before
		 * its bind (a stale file, it thinks). Only the file batond made, by identity. */
		if (f->path_known && !f->removes_dir) {
			for (size_t i = 0; i < n; i++)
				if (l[i].kind == LISTENER_UNIX && l[i].path_ino != 0 &&
				    l[i].path_dev == f->path_dev && l[i].path_ino == f->path_ino)
					return verdict(INTERCEPT_RETURN, INTERCEPT_WHY_SOCKET_FILE,
						       (int)i, 0);
		}
		return verdict(INTERCEPT_CONTINUE, INTERCEPT_WHY_NOT_OURS, -1, 0);
	case INTERCEPT_CALL_OTHER:
	default:
		break;
	}
	return verdict(INTERCEPT_CONTINUE,
		       f->sock_known ? INTERCEPT_WHY_NOT_OURS : INTERCEPT_WHY_UNREADABLE, -1, 0);
}

/* The low 32 bits of argument i, wherever the byte order puts them. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + (i) * sizeof(__u64))
#else
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + (i) * sizeof(__u64) + sizeof(__u32))
#endif

/* Layout of the filter: each jump's offset counts from the instruction after it. */
enum {
	AT_LD_ARCH,
	AT_ARCH,
	AT_LD_NR,
	AT_X32,
	AT_BIND,
	AT_LISTEN,
	AT_SHUTDOWN,
	AT_SETSOCKOPT,
	AT_UNLINK,
	AT_UNLINKAT,
	AT_RET_ALLOW_1,
	AT_LD_HOW,
	AT_HOW,
	AT_LD_LEVEL,
	AT_LEVEL,
	AT_LD_NAME,
	AT_NAMES, /* one test per option */
	AT_RET_ALLOW_2 = AT_NAMES + N_BATONDS_OPTIONS,
	AT_NOTIFY,
	AT_ALLOW,
	AT_END,
};
_Static_assert(AT_END <= INTERCEPT_FILTER_MAX, "INTERCEPT_FILTER_MAX too small");

#define TO(target, at) ((__u8)((target) - (at)-1))

bool intercept_plan_guards_unlink(const struct listener *l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (l[i].kind == LISTENER_UNIX && l[i].addr.un.sun_path[0] != '\0')
			return true;
	return false;
}

/* unlink() is unlinkat() on architectures that never had it (aarch64): never matched. */
#ifdef SYS_unlink
#define NR_UNLINK SYS_unlink
#else
#define NR_UNLINK SYS_unlinkat
#endif

int intercept_plan_filter(struct sock_filter out[static INTERCEPT_FILTER_MAX], bool guard_unlink)
{
#ifndef INTERCEPT_ARCH
	(void)out;
	(void)guard_unlink;
	return -ENOTSUP;
#else
	struct sock_filter *f = out;
	/* Without a socket file to guard, every unlink stays in the kernel. */
	int unlink_to = guard_unlink ? AT_NOTIFY : AT_ALLOW;

	f[AT_LD_ARCH] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
						     offsetof(struct seccomp_data, arch));
	/* Another architecture's calls (a 32-bit program) are not looked at. */
	f[AT_ARCH] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, INTERCEPT_ARCH, 0,
						  TO(AT_ALLOW, AT_ARCH));
	f[AT_LD_NR] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
						   offsetof(struct seccomp_data, nr));
	f[AT_X32] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT,
						 TO(AT_ALLOW, AT_X32), 0);
	f[AT_BIND] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_bind,
						  TO(AT_NOTIFY, AT_BIND), 0);
	f[AT_LISTEN] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_listen,
						    TO(AT_NOTIFY, AT_LISTEN), 0);
	f[AT_SHUTDOWN] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_shutdown,
						      TO(AT_LD_HOW, AT_SHUTDOWN), 0);
	f[AT_SETSOCKOPT] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_setsockopt,
							TO(AT_LD_LEVEL, AT_SETSOCKOPT), 0);
	f[AT_UNLINK] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_UNLINK,
						    TO(unlink_to, AT_UNLINK), 0);
	f[AT_UNLINKAT] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_unlinkat,
						      TO(unlink_to, AT_UNLINKAT), 0);
	f[AT_RET_ALLOW_1] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	/* shutdown(SHUT_WR) is what servers do to every connection: never worth a round trip. */
	f[AT_LD_HOW] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1));
	f[AT_HOW] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SHUT_WR,
						 TO(AT_ALLOW, AT_HOW), TO(AT_NOTIFY, AT_HOW));
	/* setsockopt: only the options that would change a shared listener (TCP_NODELAY on
	 * every accepted connection stays in the kernel). */
	f[AT_LD_LEVEL] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1));
	f[AT_LEVEL] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SOL_SOCKET, 0,
						   TO(AT_ALLOW, AT_LEVEL));
	f[AT_LD_NAME] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(2));
	for (size_t i = 0; i < N_BATONDS_OPTIONS; i++)
		f[AT_NAMES + i] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
							       (__u32)batonds_options[i],
							       TO(AT_NOTIFY, AT_NAMES + i), 0);
	f[AT_RET_ALLOW_2] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	f[AT_NOTIFY] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
	f[AT_ALLOW] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	return AT_END;
#endif
}
