/* SPDX-License-Identifier: MIT */
/* inuse.c - who holds an address batond cannot bind, and why a process is closed to batond. */
#include "inuse.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "procscan.h"

#define INUSE_MAX_INODES   256 /* sockets at one address looked for */
#define INUSE_MAX_SHOWN	   8   /* holders named one per line; the rest are counted */
#define CAP_SYS_PTRACE_BIT 19

struct inode_set {
	unsigned long ino[INUSE_MAX_INODES];
	size_t n;
};

static void inode_add(struct inode_set *s, unsigned long ino)
{
	if (ino != 0 && s->n < INUSE_MAX_INODES)
		s->ino[s->n++] = ino;
}

static bool inode_has(const struct inode_set *s, unsigned long ino)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->ino[i] == ino)
			return true;
	return false;
}

/*
 * Whether a socket of /proc/net/tcp6-style address words (addr: 4 words for IPv6, 1 for IPv4,
 * each the kernel's %08X of the address bytes as a native word) collides with l's address:
 * either side a wildcard, the same address, or the IPv4-mapped form of l's IPv4 address.
 */
static bool address_collides(const struct listener *l, const uint32_t *words, bool v6)
{
	struct in6_addr a6 = { 0 };
	struct in_addr a4 = { 0 };

	if (v6)
		memcpy(&a6, words, sizeof(a6));
	else
		memcpy(&a4, words, sizeof(a4));
	if (l->addr.sa.sa_family == AF_INET) {
		struct in_addr mine = l->addr.in.sin_addr;
		bool any = mine.s_addr == htonl(INADDR_ANY);

		if (!v6)
			return any || a4.s_addr == htonl(INADDR_ANY) || a4.s_addr == mine.s_addr;
		/* [::] without IPV6_V6ONLY takes IPv4 too; with it, it is counted all the same. */
		return IN6_IS_ADDR_UNSPECIFIED(&a6) ||
		       (IN6_IS_ADDR_V4MAPPED(&a6) &&
			(any || memcmp(&a6.s6_addr[12], &mine, sizeof(mine)) == 0));
	}
	if (!v6)
		return false; /* batond's IPv6 listeners are IPV6_V6ONLY */
	return IN6_IS_ADDR_UNSPECIFIED(&l->addr.in6.sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&a6) ||
	       memcmp(&a6, &l->addr.in6.sin6_addr, sizeof(a6)) == 0;
}

/* Adds the inodes of /proc/net/FILE's sockets on l's port in state want that collide with it. */
static int scan_inet(const char *file, bool v6, unsigned want, const struct listener *l,
		     struct inode_set *ret)
{
	_cleanup_(fclosep) FILE *f = NULL;
	in_port_t port = ntohs(l->addr.sa.sa_family == AF_INET6 ? l->addr.in6.sin6_port
								: l->addr.in.sin_port);
	char path[64], line[512];

	(void)snprintf(path, sizeof(path), "/proc/net/%s", file);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno; /* no IPv6 in this kernel */
	if (!fgets(line, sizeof(line), f))
		return 0; /* the header */
	while (fgets(line, sizeof(line), f)) {
		char hex[33];
		uint32_t words[4] = { 0 };
		unsigned p, st;
		unsigned long ino;
		size_t n_words = v6 ? 4 : 1;

		/* sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout
		 * inode */
		if (sscanf(line, " %*s %32[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %*u %*u %lu", hex, &p,
			   &st, &ino) != 4 ||
		    strlen(hex) != n_words * 8)
			continue;
		if (p != port || st != want)
			continue;
		for (size_t i = 0; i < n_words; i++) {
			char word[9];

			memcpy(word, hex + 8 * i, 8);
			word[8] = '\0';
			words[i] = (uint32_t)strtoul(word, NULL, 16);
		}
		if (address_collides(l, words, v6))
			inode_add(ret, ino);
	}
	return 0;
}

/* Adds the inodes of Unix sockets bound at l's path (or abstract name): listening, or datagram. */
static int scan_unix(const struct listener *l, struct inode_set *ret)
{
	_cleanup_(fclosep) FILE *f = fopen("/proc/net/unix", "re");
	char want[sizeof(l->addr.un.sun_path) + 2], line[512];

	if (!f)
		return -errno;
	if (l->addr.un.sun_path[0])
		(void)snprintf(want, sizeof(want), "%s", l->addr.un.sun_path);
	else
		(void)snprintf(want, sizeof(want), "@%.*s",
			       (int)(l->addr_len - offsetof(struct sockaddr_un, sun_path) - 1),
			       l->addr.un.sun_path + 1);
	if (!fgets(line, sizeof(line), f))
		return 0; /* the header */
	while (fgets(line, sizeof(line), f)) {
		unsigned flags, type;
		unsigned long ino;
		int off = 0;
		char *name;

		/* Num RefCount Protocol Flags Type St Inode Path */
		if (sscanf(line, "%*s %*x %*x %x %x %*x %lu %n", &flags, &type, &ino, &off) != 3 ||
		    off == 0)
			continue;
		name = line + off;
		name[strcspn(name, "\n")] = '\0';
		/* An accepted connection shows its listener's path too: __SO_ACCEPTCON marks the
		 * listener itself. */
		if (strcmp(name, want) == 0 && ((flags & 0x10000) || type == SOCK_DGRAM))
			inode_add(ret, ino);
	}
	return 0;
}

static void read_comm(pid_t pid, char *buf, size_t size)
{
	_cleanup_(fclosep) FILE *f = NULL;
	char path[64];

	(void)snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (!f || !fgets(buf, (int)size, f))
		(void)snprintf(buf, size, "?");
	buf[strcspn(buf, "\n")] = '\0';
}

int inuse_environ_get(pid_t pid, const char *name, char *buf, size_t size)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *env = NULL;
	size_t len = strlen(name), cap = 1 << 16, n = 0;
	char path[64];

	(void)snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	env = malloc(cap);
	if (!env)
		return -ENOMEM;
	/* Up to 64 KiB: batond's variables come first in what it gives its workers. */
	while (n < cap - 1) {
		ssize_t k = read(fd, env + n, cap - 1 - n);

		if (k < 0)
			return errno == ESRCH ? -ESRCH : -errno;
		if (k == 0)
			break;
		n += (size_t)k;
	}
	if (n == 0)
		return -ESRCH; /* a zombie's is empty */
	env[n] = '\0';
	for (size_t off = 0; off < n;) {
		const char *s = env + off;
		size_t slen = strnlen(s, n - off);

		if (slen > len && memcmp(s, name, len) == 0 && s[len] == '=') {
			(void)snprintf(buf, size, "%.*s", (int)(slen - len - 1), s + len + 1);
			return 1;
		}
		off += slen + 1;
	}
	return 0;
}

static int environ_int(pid_t pid, const char *name)
{
	char v[16], *end;
	long n;

	if (inuse_environ_get(pid, name, v, sizeof(v)) <= 0)
		return -1;
	errno = 0;
	n = strtol(v, &end, 10);
	return errno || end == v || *end || n < 0 || n > 1000000 ? -1 : (int)n;
}

static bool same_binary_as_self(pid_t pid, const char *comm)
{
	struct stat a, b;
	char path[64];

	(void)snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	if (stat(path, &a) == 0 && stat("/proc/self/exe", &b) == 0)
		return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
	return strcmp(comm, "batond") == 0;
}

static void holder_fill(pid_t pid, struct inuse_holder *h)
{
	struct procscan_stat st = { 0 };

	*h = (struct inuse_holder){ .pid = pid, .gen = -1, .worker = -1 };
	read_comm(pid, h->comm, sizeof(h->comm));
	if (procscan_stat(pid, &st) == 0) {
		h->ppid = st.ppid;
		if (st.ppid > 0)
			read_comm(st.ppid, h->parent_comm, sizeof(h->parent_comm));
	}
	h->gen = environ_int(pid, "BATON_GENERATION");
	h->worker = environ_int(pid, "BATON_WORKER");
	h->is_batond = h->gen < 0 && same_binary_as_self(pid, h->comm);
}

/* Whether pid has a socket whose inode is in s among its fds; -errno if they cannot be read. */
static int process_holds(pid_t pid, const struct inode_set *s, size_t *budget)
{
	_cleanup_(closedirp) DIR *d = NULL;
	char path[64];
	struct dirent *de;

	(void)snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d)) && *budget > 0) {
		char link[320], target[64];
		unsigned long ino;
		ssize_t n;

		(*budget)--;
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		(void)snprintf(link, sizeof(link), "%s/%s", path, de->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (sscanf(target, "socket:[%lu]", &ino) == 1 && inode_has(s, ino))
			return 1;
	}
	return 0;
}

/* Field name's words from /proc/PID/status ("Uid:" gives 4), at most max; returns how many. */
static size_t status_field(pid_t pid, const char *name, unsigned long long *ret, size_t max,
			   int base)
{
	_cleanup_(fclosep) FILE *f = NULL;
	char path[64], line[256];
	size_t len = strlen(name), n = 0;

	if (pid > 0)
		(void)snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	else
		(void)snprintf(path, sizeof(path), "/proc/self/status");
	f = fopen(path, "re");
	while (f && fgets(line, sizeof(line), f)) {
		char *p = line + len, *end;

		if (strncmp(line, name, len) != 0)
			continue;
		while (n < max) {
			unsigned long long v = strtoull(p, &end, base);

			if (end == p)
				break;
			ret[n++] = v;
			p = end;
		}
		break;
	}
	return n;
}

int inuse_find(const struct listener *l, struct inuse_holder *ret, size_t max,
	       struct inuse_counts *ret_counts)
{
	_cleanup_free_ struct inode_set *s = calloc(1, sizeof(*s));
	_cleanup_(closedirp) DIR *d = NULL;
	struct inuse_counts c = { 0 };
	size_t n = 0, budget = PROCSCAN_MAX_SCAN;
	struct dirent *de;
	int r;

	if (!s)
		return -ENOMEM;
	if (l->kind == LISTENER_UNIX) {
		r = scan_unix(l, s);
	} else {
		const char *v4 = l->kind == LISTENER_TCP ? "tcp" : "udp";
		const char *v6 = l->kind == LISTENER_TCP ? "tcp6" : "udp6";
		unsigned state = l->kind == LISTENER_TCP ? 0x0A /* LISTEN */ : 0x07 /* CLOSE */;

		r = scan_inet(v4, false, state, l, s);
		if (r >= 0)
			r = scan_inet(v6, true, state, l, s);
	}
	if (r < 0)
		return r;
	d = opendir("/proc");
	if (!d)
		return -errno;
	while (s->n > 0 && (de = readdir(d)) && budget > 0) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);

		budget--;
		if (*end || pid <= 0 || pid == getpid())
			continue;
		r = process_holds((pid_t)pid, s, &budget);
		if (r == -EACCES || r == -EPERM) {
			unsigned long long uid[2];

			if (status_field((pid_t)pid, "Uid:", uid, 2, 10) == 2 &&
			    uid[1] == geteuid())
				c.hidden_own++;
			else
				c.hidden_user++;
		}
		if (r <= 0)
			continue;
		if (n < max)
			holder_fill((pid_t)pid, &ret[n]);
		n++;
	}
	c.n = n < max ? n : max;
	*ret_counts = c;
	return 0;
}

static int yama_scope(void)
{
	_cleanup_(fclosep) FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
	int v = -1;

	if (!f || fscanf(f, "%d", &v) != 1)
		return -1;
	return v;
}

void inuse_access_reason(pid_t pid, char *buf, size_t size)
{
	unsigned long long uid[4], gid[4], cap_target = 0, cap_self = 0, cap_eff = 0;
	uid_t me = getuid();
	gid_t my_gid = getgid();
	struct stat st;
	char path[64];
	int scope = yama_scope();

	/* Its files' owner: that of the directory itself may be what it was before a prctl(). */
	(void)snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (stat(path, &st) < 0 || status_field(pid, "Uid:", uid, 4, 10) < 3 ||
	    status_field(pid, "Gid:", gid, 4, 10) < 3) {
		(void)snprintf(buf, size, "pid %d is gone", (int)pid);
		return;
	}
	(void)status_field(pid, "CapPrm:", &cap_target, 1, 16);
	(void)status_field(0, "CapPrm:", &cap_self, 1, 16);
	(void)status_field(0, "CapEff:", &cap_eff, 1, 16);
	if (cap_eff & (1ULL << CAP_SYS_PTRACE_BIT)) {
		(void)snprintf(
			buf, size,
			"batond has CAP_SYS_PTRACE, so a security module refuses it "
			"(kernel.yama.ptrace_scope %d; SELinux or AppArmor: see the audit log)",
			scope);
		return;
	}
	for (int i = 0; i < 3; i++) {
		if (uid[i] != me || gid[i] != my_gid) {
			(void)snprintf(
				buf, size,
				"pid %d runs as uid %llu gid %llu and batond as uid %u gid %u: "
				"run batond as that user, or as root",
				(int)pid, uid[1], gid[1], (unsigned)me, (unsigned)my_gid);
			return;
		}
	}
	/* A process that is not dumpable has its /proc files owned by root, not by its user. */
	if (st.st_uid != (uid_t)uid[1]) {
		(void)snprintf(
			buf, size,
			"pid %d is not dumpable (it called prctl(PR_SET_DUMPABLE, 0), changed "
			"its user or group, or runs a set-user-ID or file-capability program): "
			"only root or a batond with CAP_SYS_PTRACE may take it over",
			(int)pid);
		return;
	}
	if (cap_target & ~cap_self) {
		(void)snprintf(buf, size,
			       "pid %d holds capabilities batond lacks (CapPrm %016llx, batond's "
			       "%016llx): run batond as root or with CAP_SYS_PTRACE",
			       (int)pid, cap_target, cap_self);
		return;
	}
	if (scope >= 1) {
		(void)snprintf(
			buf, size, "kernel.yama.ptrace_scope is %d: %s", scope,
			scope == 1   ? "only a process's ancestors may take its fds, and a batond "
				       "started after a crash is not one: give batond "
				       "CAP_SYS_PTRACE (AmbientCapabilities=CAP_SYS_PTRACE), run "
				       "it as root, or set the sysctl to 0"
			: scope == 2 ? "only CAP_SYS_PTRACE may take a process's fds: give batond "
				       "CAP_SYS_PTRACE or run it as root"
				     : "no process may take another's fds: adoption is impossible");
		return;
	}
	(void)snprintf(buf, size,
		       "a security module (SELinux, AppArmor) refuses ptrace access to pid %d: see "
		       "the audit log",
		       (int)pid);
}

static size_t pid_list(const struct inuse_holder *h, size_t n, bool workers, char *buf, size_t size)
{
	size_t len = 0, count = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		int k;

		if ((h[i].gen >= 0) != workers || h[i].is_batond)
			continue;
		k = snprintf(buf + len, size - len, "%s%d", count ? " " : "", (int)h[i].pid);
		if (k < 0 || (size_t)k >= size - len)
			break;
		len += (size_t)k;
		count++;
	}
	return count;
}

void inuse_explain(const struct listener *l, const char *record_path)
{
	struct inuse_holder h[INUSE_MAX_HOLDERS];
	struct inuse_counts c;
	size_t n, n_workers, n_others;
	char pids[256];
	int r;

	r = inuse_find(l, h, ELEMENTSOF(h), &c);
	if (r < 0) {
		log_error_errno(r, "find who holds %s", l->spec);
		return;
	}
	n = c.n;
	for (size_t i = 0; i < n && i < INUSE_MAX_SHOWN; i++) {
		if (h[i].is_batond)
			log_error("%s is held by pid %d (%s), a batond", l->spec, (int)h[i].pid,
				  h[i].comm);
		else if (h[i].gen >= 0)
			log_error("%s is held by pid %d (%s), generation %d worker %d of a batond; "
				  "its parent is pid %d (%s)",
				  l->spec, (int)h[i].pid, h[i].comm, h[i].gen, h[i].worker,
				  (int)h[i].ppid, h[i].parent_comm);
		else
			log_error("%s is held by pid %d (%s); its parent is pid %d (%s)", l->spec,
				  (int)h[i].pid, h[i].comm, (int)h[i].ppid, h[i].parent_comm);
	}
	if (n > INUSE_MAX_SHOWN)
		log_error("%s is held by %zu more processes", l->spec, n - INUSE_MAX_SHOWN);
	for (size_t i = 0; i < n; i++) {
		if (h[i].is_batond) {
			log_error(
				"a batond runs with %s (pid %d): stop it (kill -TERM %d), or give "
				"this batond another address",
				l->spec, (int)h[i].pid, (int)h[i].pid);
			return;
		}
	}
	n_workers = pid_list(h, n, true, pids, sizeof(pids));
	if (n_workers > 0) {
		if (record_path && record_path[0])
			log_error(
				"these are workers of a batond that is gone, and no record lets "
				"this batond take them over (%s): if that batond had another "
				"control socket (-c, --name), start this one with it; otherwise "
				"send them their drain signal (kill -TERM %s unless --drain-signal "
				"said otherwise: they finish what they accepted and exit) and "
				"start "
				"batond again",
				record_path, pids);
		else
			log_error("these are workers of a batond that is gone; without a control "
				  "socket (--no-control) batond keeps no record to take them over "
				  "by: send them their drain signal (kill -TERM %s unless "
				  "--drain-signal said otherwise) and start batond again",
				  pids);
	}
	n_others = pid_list(h, n, false, pids, sizeof(pids));
	if (n_others > 0)
		log_error("no batond started %s: stop %s, or give batond another address",
			  n_others == 1 ? "that process" : "those processes", pids);
	if (n == 0 && c.hidden_own + c.hidden_user > 0)
		log_error("no process batond may look into holds %s (%zu of its user's are not "
			  "dumpable, %zu are other users'): as root, ss -ltup or ss -xlp names "
			  "the holder",
			  l->spec, c.hidden_own, c.hidden_user);
	else if (n == 0)
		log_error("no process holds %s now (or one in another namespace): try again",
			  l->spec);
}
