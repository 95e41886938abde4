/* SPDX-License-Identifier: MIT */
/* intercept.c - --intercept: the seccomp filter installed in the child, batond's answers. */
#include "intercept.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "batond.h"
#include "cleanup.h"
#include "log.h"

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL /* Linux 6.9: a pidfd for one thread */
#endif

int intercept_filter_init(struct intercept_filter *f, bool guard_unlink)
{
	int n = intercept_plan_filter(f->code, guard_unlink);

	if (n < 0)
		return n;
	f->prog = (struct sock_fprog){ .len = (unsigned short)n, .filter = f->code };
	return 0;
}

static long seccomp_filter(unsigned long flags, const struct sock_fprog *prog)
{
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, prog);
}

int intercept_install(const struct sock_fprog *prog)
{
	unsigned long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER;
	long fd;

	fd = seccomp_filter(flags | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, prog);
	if (fd < 0 && errno == EINVAL)
		fd = seccomp_filter(flags, prog); /* before Linux 5.19 */
	else
		flags |= SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
	if (fd < 0 && errno == EACCES) {
		/* Without CAP_SYS_ADMIN a filter needs no_new_privs. */
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
			return -errno;
		fd = seccomp_filter(flags, prog);
	}
	if (fd < 0)
		return -errno;
	return (int)fd;
}

/* "generation G worker W (pid P)" for worker x, or "worker pid P" once its record is gone. */
static void worker_label(const struct worker_extra *x, char *buf, size_t size)
{
	const struct rollout_worker *w = rollout_find_pid(x->b->rollout, x->pid);

	if (w)
		(void)snprintf(buf, size, "generation %u worker %u (pid %d)", w->gen, w->index,
			       x->pid);
	else
		(void)snprintf(buf, size, "worker pid %d", x->pid);
}

/* The thread group of thread tid, from /proc/TID/status; or a negative errno. */
static pid_t tgid_of(pid_t tid)
{
	char path[64], line[128];
	_cleanup_(fclosep) FILE *f = NULL;

	(void)snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		long v;

		if (sscanf(line, "Tgid: %ld", &v) == 1)
			return v > 0 && v <= INT_MAX ? (pid_t)v : -EBADMSG;
	}
	return -EBADMSG;
}

/*
 * A duplicate of fd of thread tid (its own fd table where the kernel can name a thread, else
 * its process's). Returns the fd (CLOEXEC) or a negative errno.
 */
static int fetch_fd(pid_t tid, int fd)
{
	_cleanup_close_ int pidfd = pidfd_open(tid, PIDFD_THREAD);
	int r;

	if (pidfd < 0 && errno == EINVAL) {
		pid_t tgid = tgid_of(tid);

		if (tgid < 0)
			return tgid;
		pidfd = pidfd_open(tgid, 0);
	}
	if (pidfd < 0)
		return -errno;
	r = pidfd_getfd(pidfd, fd, 0);
	return r < 0 ? -errno : r;
}

/* Fills f's socket facts from the server's fd (a duplicate, returned in *ret_dup or -1). */
static void look_at_socket(struct batond *b, pid_t tid, int fd, struct intercept_facts *f,
			   int *ret_dup)
{
	_cleanup_close_ int dup = -1;
	union listener_addr a;
	socklen_t len;
	struct stat st;

	f->held = -1;
	if (fd < 0)
		return;
	dup = fetch_fd(tid, fd);
	if (dup < 0) {
		log_debug("intercept: look at fd %d of pid %d: %s", fd, (int)tid, strerror(-dup));
		return;
	}
	if (fstat(dup, &st) < 0 || !S_ISSOCK(st.st_mode))
		return;
	len = sizeof(int);
	if (getsockopt(dup, SOL_SOCKET, SO_DOMAIN, &f->family, &len) < 0)
		return;
	len = sizeof(int);
	if (getsockopt(dup, SOL_SOCKET, SO_TYPE, &f->type, &len) < 0)
		return;
	len = sizeof(int);
	if (getsockopt(dup, SOL_SOCKET, SO_PROTOCOL, &f->protocol, &len) < 0)
		return;
	len = sizeof(a);
	memset(&a, 0, sizeof(a));
	if (getsockname(dup, &a.sa, &len) < 0)
		return;
	switch (a.sa.sa_family) {
	case AF_INET:
		f->bound = a.in.sin_port != 0;
		break;
	case AF_INET6:
		f->bound = a.in6.sin6_port != 0;
		break;
	case AF_UNIX:
		f->bound = len > offsetof(struct sockaddr_un, sun_path);
		break;
	default:
		f->bound = true;
		break;
	}
	for (size_t i = 0; i < b->cfg.n_listeners; i++)
		if (b->listen_inodes[i] == st.st_ino) {
			f->held = (int)i;
			break;
		}
	f->sock_known = true;
	*ret_dup = TAKE_FD(dup);
}

/* bind's address, read from the server's memory; for a Unix path, the socket file there. */
static void read_address(pid_t tid, uint64_t ptr, uint64_t len, struct intercept_facts *f)
{
	struct iovec local = { .iov_base = &f->addr, .iov_len = (size_t)len };
	struct iovec remote = { .iov_base = (void *)(uintptr_t)ptr, .iov_len = (size_t)len };
	char path[PATH_MAX];
	size_t name_len;
	struct stat st;

	if (len < sizeof(sa_family_t) || len > sizeof(f->addr))
		return;
	if (process_vm_readv(tid, &local, 1, &remote, 1, 0) != (ssize_t)len)
		return;
	f->addr_len = (size_t)len;
	f->addr_known = true;
	if (f->addr.sa.sa_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path) ||
	    f->addr.un.sun_path[0] == '\0')
		return;
	/* The path as the server sees it: from its root, or from its working directory. */
	name_len = strnlen(f->addr.un.sun_path, len - offsetof(struct sockaddr_un, sun_path));
	if ((size_t)snprintf(path, sizeof(path), "/proc/%d/%s/%.*s", (int)tid,
			     f->addr.un.sun_path[0] == '/' ? "root" : "cwd", (int)name_len,
			     f->addr.un.sun_path) >= sizeof(path))
		return;
	if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
		f->file_known = true;
		f->file_dev = st.st_dev;
		f->file_ino = st.st_ino;
	}
}

/*
 * unlink()'s or unlinkat()'s path, read from the server's memory a page at a time (a string
 * may end just before an unmapped page), then the file it names for the server: from its
 * root, its working directory, or dirfd. Not followed if it is a symlink, as unlink() would.
 */
static void read_unlink_path(pid_t tid, long nr, const struct seccomp_data *data,
			     struct intercept_facts *f)
{
	bool at = nr == SYS_unlinkat;
	uint64_t ptr = at ? data->args[1] : data->args[0];
	int dirfd = at ? (int)data->args[0] : AT_FDCWD;
	long page = sysconf(_SC_PAGESIZE);
	char path[PATH_MAX], where[PATH_MAX + 64];
	size_t have = 0;
	struct stat st;

	f->removes_dir = at && (data->args[2] & AT_REMOVEDIR);
	if (page <= 0)
		return;
	while (have < sizeof(path)) {
		uint64_t addr = ptr + have;
		size_t chunk = (size_t)page - (size_t)(addr % (uint64_t)page);
		struct iovec local, remote;
		ssize_t n;

		if (chunk > sizeof(path) - have)
			chunk = sizeof(path) - have;
		local = (struct iovec){ .iov_base = path + have, .iov_len = chunk };
		remote = (struct iovec){ .iov_base = (void *)(uintptr_t)addr, .iov_len = chunk };
		n = process_vm_readv(tid, &local, 1, &remote, 1, 0);
		if (n <= 0)
			return;
		if (memchr(path + have, '\0', (size_t)n))
			break;
		have += (size_t)n;
	}
	if (have >= sizeof(path) || path[0] == '\0')
		return;
	if (path[0] == '/')
		(void)snprintf(where, sizeof(where), "/proc/%d/root%s", (int)tid, path);
	else if (dirfd == AT_FDCWD)
		(void)snprintf(where, sizeof(where), "/proc/%d/cwd/%s", (int)tid, path);
	else
		(void)snprintf(where, sizeof(where), "/proc/%d/fd/%d/%s", (int)tid, dirfd, path);
	if (lstat(where, &st) == 0) {
		f->path_known = true;
		f->path_dev = st.st_dev;
		f->path_ino = st.st_ino;
	}
}

/* Whether fd of thread tid is close-on-exec, from /proc/TID/fdinfo/FD ("flags:", octal). */
static bool fd_cloexec(pid_t tid, int fd)
{
	_cleanup_(fclosep) FILE *f = NULL;
	char path[64], line[128];

	(void)snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)tid, fd);
	f = fopen(path, "re");
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long flags;

		if (sscanf(line, "flags: %lo", &flags) == 1)
			return flags & O_CLOEXEC;
	}
	return true; /* the safer guess: no program the server runs inherits the listener */
}

/* The notification is still pending: the thread waits in the call, so tid is still it. */
static bool still_valid(int nfd, uint64_t id)
{
	return ioctl(nfd, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

/*
 * The server's socket was blocking or not: the shared listener follows it, or a blocking
 * accept() would fail with EAGAIN (O_NONBLOCK belongs to the open file, and the file is
 * batond's and every worker's). All workers of one batond run the same server.
 */
static void follow_blocking(struct batond *b, size_t i, int server_dup, const char *label)
{
	int want = fcntl(server_dup, F_GETFL);
	int have = fcntl(b->listen_fds[i], F_GETFL);

	if (want < 0 || have < 0 || (want & O_NONBLOCK) == (have & O_NONBLOCK))
		return;
	if (fcntl(b->listen_fds[i], F_SETFL, (have & ~O_NONBLOCK) | (want & O_NONBLOCK)) < 0) {
		log_warning_errno(-errno, "%s: make listener %s %sblocking, ignoring", label,
				  b->cfg.listeners[i].spec, want & O_NONBLOCK ? "non-" : "");
		return;
	}
	log_info("%s: listener %s is now %sblocking, as the server's own socket was", label,
		 b->cfg.listeners[i].spec, want & O_NONBLOCK ? "non-" : "");
}

/* The address the server asked for, as batond would write it (tcp://..., unix:...). */
static void format_request(const struct intercept_facts *f, char *buf, size_t size)
{
	enum listener_kind kind = f->addr.sa.sa_family == AF_UNIX ? LISTENER_UNIX
				  : f->type == SOCK_DGRAM	  ? LISTENER_UDP
								  : LISTENER_TCP;

	listener_format(kind, &f->addr, (socklen_t)f->addr_len, buf, size);
}

/* Answers one notified call. Any failure to look leaves the call to the kernel. */
static void answer(struct batond *b, struct worker_extra *x, int nfd,
		   const struct seccomp_notif *req)
{
	struct seccomp_notif_resp resp = { .id = req->id };
	struct intercept_facts f = { .call = intercept_plan_call(req->data.nr), .held = -1 };
	_cleanup_close_ int dup = -1;
	struct intercept_decision d;
	int fd = (int)req->data.args[0];
	pid_t tid = (pid_t)req->pid;
	char label[96], addr[LISTENER_SPEC_MAX];
	bool cloexec = true;

	if (f.call == INTERCEPT_CALL_UNLINK)
		read_unlink_path(tid, req->data.nr, &req->data, &f);
	else
		look_at_socket(b, tid, fd, &f, &dup);
	if (f.call == INTERCEPT_CALL_BIND)
		read_address(tid, req->data.args[1], req->data.args[2], &f);
	f.level = (int)req->data.args[1];
	f.name = (int)req->data.args[2];
	f.how = (int)req->data.args[1];
	d = intercept_plan_decide(&f, b->cfg.listeners, b->cfg.n_listeners);
	if (d.verdict == INTERCEPT_TAKE_OVER)
		cloexec = fd_cloexec(tid, fd);
	/* What was read belongs to the thread that waits in this very call, or to nobody. */
	if (!still_valid(nfd, req->id))
		return;

	worker_label(x, label, sizeof(label));
	if (f.call == INTERCEPT_CALL_BIND && f.addr_known)
		format_request(&f, addr, sizeof(addr));
	switch (d.verdict) {
	case INTERCEPT_TAKE_OVER: {
		struct seccomp_notif_addfd add = {
			.id = req->id,
			.flags = SECCOMP_ADDFD_FLAG_SETFD,
			.srcfd = (uint32_t)b->listen_fds[d.held],
			.newfd = (uint32_t)fd,
			.newfd_flags = cloexec ? O_CLOEXEC : 0,
		};

		follow_blocking(b, (size_t)d.held, dup, label);
		/* The server's socket at fd is closed, and batond's listener takes its number. */
		if (ioctl(nfd, SECCOMP_IOCTL_NOTIF_ADDFD, &add) < 0) {
			if (errno == ENOENT)
				return; /* it left the call: a fatal signal */
			log_error_errno(-errno,
					"%s: bind %s on fd %d: put listener %s in its place "
					"(SECCOMP_IOCTL_NOTIF_ADDFD, Linux 5.9); the kernel "
					"binds it instead",
					label, addr, fd, b->cfg.listeners[d.held].name);
			resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
			break;
		}
		log_info("%s: bind %s on fd %d: listener %s put in place", label, addr, fd,
			 b->cfg.listeners[d.held].name);
		break;
	}
	case INTERCEPT_RETURN:
		resp.error = d.error;
		if (f.call == INTERCEPT_CALL_UNLINK) {
			log_info("%s: unlink of listener %s's socket file answered 0; the file "
				 "stays for the other workers",
				 label, b->cfg.listeners[d.held].name);
			break;
		}
		log_debug("%s: %s on listener %s (fd %d) answered %s, not run", label,
			  f.call == INTERCEPT_CALL_BIND		? "bind"
			  : f.call == INTERCEPT_CALL_LISTEN	? "listen"
			  : f.call == INTERCEPT_CALL_SETSOCKOPT ? "setsockopt"
								: "shutdown",
			  b->cfg.listeners[d.held].name, fd, d.error ? strerror(-d.error) : "0");
		break;
	case INTERCEPT_CONTINUE:
	default:
		resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
		if (d.reason == INTERCEPT_WHY_NOT_HELD || d.reason == INTERCEPT_WHY_OTHER_TYPE)
			log_warning("%s: binds %s itself: batond holds no such listener%s, so the "
				    "socket is the worker's alone (never handed to the next "
				    "generation)",
				    label, addr,
				    d.reason == INTERCEPT_WHY_OTHER_TYPE ? " of that type" : "");
		break;
	}
	if (ioctl(nfd, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno != ENOENT)
		log_warning_errno(-errno, "%s: answer a notified call, ignoring", label);
}

static int on_notification(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct worker_extra *x = userdata;
	struct seccomp_notif req;

	if (!(revents & EPOLLIN)) {
		/* Every process under the filter is gone. */
		x->intercept_source = sd_event_source_disable_unref(x->intercept_source);
		return 0;
	}
	(void)s;
	/*
	 * EPOLLIN means a call waits for batond, so this does not block: if its thread left the
	 * call meanwhile, the kernel answers ENOENT.
	 */
	memset(&req, 0, sizeof(req));
	if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
		if (errno != ENOENT && errno != EINTR)
			log_warning_errno(
				-errno, "worker pid %d: receive a notified call, ignoring", x->pid);
		return 0;
	}
	answer(x->b, x, fd, &req);
	return 0;
}

int intercept_watch(struct batond *b, struct worker_extra *x, int fd)
{
	_cleanup_close_ int nfd = fd;
	sd_event_source *src = NULL;
	int r;

	r = sd_event_add_io(b->event, &src, nfd, EPOLLIN, on_notification, x);
	if (r >= 0)
		r = sd_event_source_set_io_fd_own(src, true);
	if (r < 0) {
		(void)sd_event_source_disable_unref(src);
		return log_error_errno(r, "worker pid %d: watch its seccomp listener", x->pid);
	}
	TAKE_FD(nfd);
	x->intercept_source = sd_event_source_disable_unref(x->intercept_source);
	x->intercept_source = src;
	return 0;
}

#define SHSTRTAB_MAX (64 * 1024) /* bytes of section names read; more is not a program's */

/* Whether the section headers name a ".go.buildinfo" (every Go program has one). */
static bool has_go_section(int fd, const Elf64_Ehdr *eh)
{
	_cleanup_free_ char *names = NULL;
	Elf64_Shdr strtab;
	size_t n_names;

	if (eh->e_shoff == 0 || eh->e_shentsize != sizeof(Elf64_Shdr) ||
	    eh->e_shstrndx >= eh->e_shnum ||
	    pread(fd, &strtab, sizeof(strtab),
		  (off_t)(eh->e_shoff + (uint64_t)eh->e_shstrndx * sizeof(strtab))) !=
		    (ssize_t)sizeof(strtab) ||
	    strtab.sh_size == 0 || strtab.sh_size > SHSTRTAB_MAX)
		return false;
	n_names = (size_t)strtab.sh_size;
	names = malloc(n_names + 1);
	if (!names || pread(fd, names, n_names, (off_t)strtab.sh_offset) != (ssize_t)n_names)
		return false;
	names[n_names] = '\0';
	for (unsigned i = 0; i < eh->e_shnum; i++) {
		Elf64_Shdr sh;

		if (pread(fd, &sh, sizeof(sh), (off_t)(eh->e_shoff + (uint64_t)i * sizeof(sh))) !=
		    (ssize_t)sizeof(sh))
			return false;
		if (sh.sh_name < n_names && strcmp(names + sh.sh_name, ".go.buildinfo") == 0)
			return true;
	}
	return false;
}

int intercept_exec_kind(const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool interp = false;
	Elf64_Ehdr eh;

	if (fd < 0)
		return -errno;
	if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_phentsize != sizeof(Elf64_Phdr))
		return INTERCEPT_EXEC_OTHER; /* a script: its interpreter is what runs */
	for (unsigned i = 0; i < eh.e_phnum && !interp; i++) {
		Elf64_Phdr ph;

		if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + (uint64_t)i * sizeof(ph))) !=
		    (ssize_t)sizeof(ph))
			return -EBADMSG;
		interp = ph.p_type == PT_INTERP;
	}
	if (has_go_section(fd, &eh))
		return INTERCEPT_EXEC_GO;
	return interp ? INTERCEPT_EXEC_OTHER : INTERCEPT_EXEC_STATIC;
}
