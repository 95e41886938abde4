/* SPDX-License-Identifier: MIT */
/* preload.c - LD_PRELOAD shim: a server's bind() of an address batond holds gets its listener. */

/*
 * `batond --preload` puts this library first in each worker's LD_PRELOAD. It lets a server that
 * only knows socket()/bind()/listen() serve batond's listeners unchanged:
 *
 *   load      If LISTEN_PID is this process, remember each fd 3.. (address, type, inode) and
 *             NOTIFY_SOCKET. The fds stay where batond put them, without FD_CLOEXEC, so a
 *             wrapper (sh -c '... exec server') hands them on through exec like any socket
 *             activation.
 *   takeover  At the first bind() of a held address: move every held fd to SHIM_FD_HOME or
 *             above with FD_CLOEXEC (so the server's fds 3.. are its own again and its children
 *             inherit nothing), and drop LISTEN_*, NOTIFY_SOCKET, BATON_* and this library's
 *             entry in LD_PRELOAD from the environment (the server's own preloads stay), so
 *             that the programs it runs (CGI scripts) are not workers and do not load us.
 *   swap      dup3() the held listener onto the server's fd; listen() on it returns 0.
 *   ready     The first time the server waits for a held listener (accept, poll, select,
 *             epoll_ctl), send READY=1 to NOTIFY_SOCKET, once per process tree.
 *   drain     If the server left BATON_DRAIN_SIGNAL at its default action (it would die with
 *             the requests it holds), that signal makes the shim plug the server's listener
 *             fds (no new accept) and exit 0 once every connection it accepted is closed.
 *
 * It runs inside someone else's process, sometimes between fork() and exec() and sometimes in
 * a vfork() child that shares our memory: it never logs, never allocates, and changes its state
 * only in the process that owns that memory (own_memory()). The state is one static struct,
 * because an interposed function has no other place to find it. docs/WRAPPING.md has the
 * matching rules and the limits.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SHIM_FD_FIRST  3    /* SD_LISTEN_FDS_START: batond's first listener */
#define SHIM_MAX_HELD  256  /* listeners taken from LISTEN_FDS; batond passes at most 250 */
#define SHIM_MAX_SLOTS 256  /* server fds swapped for a held listener, tracked per process */
#define SHIM_FD_HOME   1000 /* lowest fd number the held listeners move to at takeover */
#define SHIM_PATH_MAX  sizeof(((struct sockaddr_un *)0)->sun_path) /* bytes of a Unix path */
#define SHIM_READY     "READY=1"
/* Accepted connections are tracked for the drain by fd number below this (a 128 KiB bitmap). */
#define SHIM_MAX_CONN_FD    (1 << 20)
#define SHIM_MAX_WATCHES    64 /* epoll registrations of listener fds remembered per process */
#define SHIM_MAX_PLUGGED    (SHIM_MAX_SLOTS + SHIM_MAX_HELD) /* listener fds a drain can plug */
#define SHIM_ENV_MAX	    4096 /* bytes of "LD_PRELOAD=..." rewritten without our entry */
#define SHIM_ENV_NAME_MAX   256	 /* bytes of a BATON_* variable's name that we unset */
#define SHIM_ENV_FORGET_MAX 64	 /* BATON_* variables unset at most (batond sets a handful) */

#define SHIM_EXPORT __attribute__((visibility("default")))

union shim_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	struct sockaddr_un un;
	struct sockaddr_storage ss;
};

/* One listener batond passed. fd and home change under shim.lock; the rest is fixed at load. */
struct shim_held {
	_Atomic int fd;	   /* our reference: 3+i until it moves home, -1 once lost */
	_Atomic bool home; /* fd was moved to SHIM_FD_HOME or above, with FD_CLOEXEC */
	int family, type, protocol;
	union shim_addr addr;
	socklen_t addr_len;
	dev_t dev; /* the socket's inode: identifies it through the server's dups */
	ino_t ino;
	char path[SHIM_PATH_MAX + 1]; /* Unix path listener: its path, NUL-terminated; else "" */
	bool has_file;		      /* the socket file at path was there at load */
	dev_t file_dev;
	ino_t file_ino;
};

/* A server fd that was swapped for a held listener. */
struct shim_slot {
	_Atomic int fd; /* -1 when free */
	int held;
	/* O_NONBLOCK as the server set it; the shared socket keeps its own. */
	_Atomic bool nonblock;
	_Atomic bool shut; /* the server shut it down for reading: accept() fails as it would */
};

static struct {
	/* Set by the constructor before the program runs; fixed afterwards. */
	size_t n_held; /* 0: inactive, every call passes straight through */
	union shim_addr notify;
	socklen_t notify_len;	/* 0: no NOTIFY_SOCKET */
	atomic_int notify_fd;	/* connected to it at load, at SHIM_FD_HOME or above; or -1 */
	atomic_int *ready_sent; /* shared with every fork() child: one READY=1 per process tree */
	atomic_int ready_local; /* ready_sent when the shared page could not be mapped */
	pid_t pid;		/* the process that owns this memory; a vfork() child does not */

	pthread_mutex_t lock; /* serialises bind(), takeover and moves of held fds */
	struct shim_held held[SHIM_MAX_HELD];
	atomic_int home_lo, home_hi; /* bounds of the home fds: a cheap test in close() */
	atomic_bool taken_over;
	atomic_bool waits;     /* this process waited for a held listener: it is event-driven */
	atomic_size_t n_slots; /* slots in use or freed; only grows */
	struct shim_slot slots[SHIM_MAX_SLOTS];

	/* The drain for servers that have none (drain_arm()). Per process, copied by fork(). */
	int drain_signal;	 /* BATON_DRAIN_SIGNAL, read at load; 0: none */
	atomic_bool drain_tried; /* drain_arm() ran in this process */
	atomic_bool drain_armed; /* our handler is the drain signal's disposition */
	atomic_bool draining;	 /* the drain signal came: listeners plugged, exit when idle */
	atomic_int in_accept;	 /* threads inside accept() on a listener fd */
	atomic_int n_conns;	 /* bits set in conns: accepted connections still open */
	_Atomic uint64_t conns[SHIM_MAX_CONN_FD / 64];
	struct {
		atomic_int epfd1, fd; /* epfd1 is the epoll fd + 1; 0: free */
	} watches[SHIM_MAX_WATCHES];
	/* Listener fds the drain plugged, and whether the server believed them blocking. */
	struct {
		int fd;
		bool blocking;
	} plugged[SHIM_MAX_PLUGGED];
	atomic_size_t n_plugged;

	/* The environment's LD_PRELOAD entry after takeover: ours, so nothing is allocated. */
	char preload_env[SHIM_ENV_MAX];
} shim = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.home_lo = INT_MAX,
	.home_hi = -1,
	.notify_fd = -1,
};

/* The functions we wrap, as the next object in the lookup order (libc) defines them. */
#define REAL_DECL(f) static __typeof__(&f) real_##f
REAL_DECL(bind);
REAL_DECL(listen);
REAL_DECL(setsockopt);
REAL_DECL(shutdown);
REAL_DECL(accept);
REAL_DECL(accept4);
REAL_DECL(close);
REAL_DECL(close_range);
REAL_DECL(closefrom);
REAL_DECL(dup2);
REAL_DECL(dup3);
REAL_DECL(fcntl);
REAL_DECL(fcntl64);
REAL_DECL(ioctl);
REAL_DECL(unlink);
REAL_DECL(unlinkat);
REAL_DECL(remove);
REAL_DECL(poll);
REAL_DECL(ppoll);
REAL_DECL(select);
REAL_DECL(pselect);
REAL_DECL(epoll_ctl);
REAL_DECL(sigaction);
REAL_DECL(signal);

/* Fortified callers reach poll() through these; glibc declares them only under fortify. */
int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout, const sigset_t *ss,
		size_t fdslen);
REAL_DECL(__poll_chk);
REAL_DECL(__ppoll_chk);

/*
 * Looked up by the constructor; again on first use if another library's constructor calls us
 * before ours has run. A function libc lacks fails with ENOSYS (see the wrappers).
 */
#define REAL(f)                                                                   \
	({                                                                        \
		__typeof__(&f) f_ = __atomic_load_n(&real_##f, __ATOMIC_ACQUIRE); \
		if (!f_) {                                                        \
			f_ = (__typeof__(&f))dlsym(RTLD_NEXT, #f);                \
			__atomic_store_n(&real_##f, f_, __ATOMIC_RELEASE);        \
		}                                                                 \
		f_;                                                               \
	})

#define NO_REAL(ret)            \
	do {                    \
		errno = ENOSYS; \
		return ret;     \
	} while (0)

static bool active(void)
{
	return shim.n_held > 0;
}

/* False in a vfork() child (and a raw clone()): it shares our memory but not our fd table. */
static bool own_memory(void)
{
	return getpid() == shim.pid;
}

/* Index of the held listener that fd refers to, a dup of it included; -1 if none. Keeps errno. */
static int held_of_fd(int fd)
{
	int saved = errno;
	struct stat st;
	int r = -1;

	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
		for (size_t i = 0; i < shim.n_held; i++) {
			if (shim.held[i].ino == st.st_ino && shim.held[i].dev == st.st_dev) {
				r = (int)i;
				break;
			}
		}
	}
	errno = saved;
	return r;
}

/* Held listener still at the fd batond gave it, or -1. */
static int in_place_of(int fd)
{
	size_t i;

	if (fd < SHIM_FD_FIRST || (size_t)(fd - SHIM_FD_FIRST) >= shim.n_held)
		return -1;
	i = (size_t)(fd - SHIM_FD_FIRST);
	if (atomic_load(&shim.held[i].home) || atomic_load(&shim.held[i].fd) != fd)
		return -1;
	return (int)i;
}

/* Held listener whose home is fd, or -1. */
static int home_of(int fd)
{
	if (fd < atomic_load(&shim.home_lo) || fd > atomic_load(&shim.home_hi))
		return -1;
	for (size_t i = 0; i < shim.n_held; i++)
		if (atomic_load(&shim.held[i].home) && atomic_load(&shim.held[i].fd) == fd)
			return (int)i;
	return -1;
}

/* Our connection to NOTIFY_SOCKET: kept out of the server's close(), dup2() and close_range(). */
static bool is_notify_fd(int fd)
{
	return fd >= 0 && fd == atomic_load(&shim.notify_fd);
}

static struct shim_slot *slot_find(int fd)
{
	size_t n = atomic_load_explicit(&shim.n_slots, memory_order_acquire);

	if (fd < 0)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (atomic_load_explicit(&shim.slots[i].fd, memory_order_acquire) == fd)
			return &shim.slots[i];
	return NULL;
}

static void slot_forget(int fd)
{
	struct shim_slot *s = slot_find(fd);
	int expected = fd;

	if (s && own_memory())
		(void)atomic_compare_exchange_strong(&s->fd, &expected, -1);
}

/*
 * The slot of fd if fd still refers to the held listener it was swapped for. A library may
 * close an fd without our close() (glibc's fclose() does), so a hit is checked before it
 * changes how a call behaves.
 */
static struct shim_slot *slot_verified(int fd)
{
	struct shim_slot *s = slot_find(fd);

	if (!s)
		return NULL;
	if (held_of_fd(fd) != s->held) {
		slot_forget(fd);
		return NULL;
	}
	return s;
}

/* Called with shim.lock held. A full table only loses the extras (docs/WRAPPING.md). */
static void slot_add(int fd, int held, bool nonblock)
{
	size_t n = atomic_load(&shim.n_slots);
	struct shim_slot *s = NULL;

	for (size_t i = 0; i < n && !s; i++)
		if (atomic_load(&shim.slots[i].fd) < 0)
			s = &shim.slots[i];
	if (!s && n == SHIM_MAX_SLOTS)
		return;
	if (!s)
		s = &shim.slots[n];
	s->held = held;
	atomic_store(&s->nonblock, nonblock);
	atomic_store(&s->shut, false);
	/* Readers match on fd: it is published last, and the count after it. */
	atomic_store_explicit(&s->fd, fd, memory_order_release);
	if (s == &shim.slots[n])
		atomic_store_explicit(&shim.n_slots, n + 1, memory_order_release);
}

/*
 * Moves held listener i to a new fd at SHIM_FD_HOME or above (or the lowest free one if the fd
 * limit is below that) with FD_CLOEXEC, and closes the old one. Called with shim.lock held, in
 * the process that owns our memory. Returns 0 or -errno; on failure the old fd stays.
 */
static int held_move(size_t i)
{
	struct shim_held *h = &shim.held[i];
	int old = atomic_load(&h->fd);
	int fd;

	if (old < 0)
		return -EBADF;
	fd = REAL(fcntl)(old, F_DUPFD_CLOEXEC, SHIM_FD_HOME);
	if (fd < 0)
		fd = REAL(fcntl)(old, F_DUPFD_CLOEXEC, SHIM_FD_FIRST);
	if (fd < 0)
		return -errno;
	if (fd < atomic_load(&shim.home_lo))
		atomic_store(&shim.home_lo, fd);
	if (fd > atomic_load(&shim.home_hi))
		atomic_store(&shim.home_hi, fd);
	atomic_store(&h->fd, fd);
	atomic_store(&h->home, true);
	(void)REAL(close)(old);
	return 0;
}

/*
 * Someone is about to close or replace fd, which is one of our references: move ours out of
 * the way first. Returns true if fd no longer holds our listener (moved), so the caller's
 * close is already done.
 */
static bool rescue(int fd)
{
	bool moved = false;
	int i;

	if (!own_memory())
		return false;
	(void)pthread_mutex_lock(&shim.lock);
	i = in_place_of(fd);
	if (i < 0)
		i = home_of(fd);
	if (i >= 0)
		moved = held_move((size_t)i) == 0;
	(void)pthread_mutex_unlock(&shim.lock);
	return moved;
}

/* True if path (with a '/': ld.so searches the others) names this very library. */
static bool is_self(const char *path, size_t len, const struct stat *self)
{
	char buf[PATH_MAX];
	struct stat st;

	if (len >= sizeof(buf) || !memchr(path, '/', len))
		return false;
	memcpy(buf, path, len);
	buf[len] = '\0';
	return stat(buf, &st) == 0 && st.st_dev == self->st_dev && st.st_ino == self->st_ino;
}

/*
 * LD_PRELOAD without our entry, the others in their order. The new string is ours (a static
 * buffer) put in place of the old pointer, as putenv() would: no allocation, and the old one,
 * wherever it lives, is not written to. Left alone if it does not fit.
 */
static void env_forget_preload(void)
{
	static const char key[] = "LD_PRELOAD=";
	const size_t klen = sizeof(key) - 1;
	char *out = shim.preload_env;
	struct stat self;
	Dl_info info;
	const char *v;
	size_t i, n = klen;

	for (i = 0; environ && environ[i]; i++)
		if (strncmp(environ[i], key, klen) == 0)
			break;
	if (!environ || !environ[i])
		return;
	if (!dladdr((void *)&shim, &info) || !info.dli_fname || stat(info.dli_fname, &self) < 0)
		return;
	memcpy(out, key, klen);
	/* ld.so separates entries with ':' or ' '; we write ':'. */
	for (v = environ[i] + klen; *v;) {
		size_t len = strcspn(v, ": ");

		if (len > 0 && !is_self(v, len, &self)) {
			if (len + 1 >= sizeof(shim.preload_env) - n)
				return;
			if (n > klen)
				out[n++] = ':';
			memcpy(out + n, v, len);
			n += len;
		}
		v += len;
		if (*v)
			v++;
	}
	out[n] = '\0';
	if (n == klen)
		(void)unsetenv("LD_PRELOAD");
	else
		environ[i] = out;
}

/* Every BATON_* variable (BATON_GENERATION, BATON_WORKER, BATON_DRAIN_SIGNAL, ...). */
static void env_forget_baton(void)
{
	for (unsigned k = 0; k < SHIM_ENV_FORGET_MAX; k++) {
		char name[SHIM_ENV_NAME_MAX];
		const char *e = NULL;
		size_t len;

		for (size_t i = 0; environ && environ[i] && !e; i++)
			if (strncmp(environ[i], "BATON_", 6) == 0)
				e = environ[i];
		if (!e)
			return;
		len = strcspn(e, "=");
		if (len >= sizeof(name))
			return;
		memcpy(name, e, len);
		name[len] = '\0';
		(void)unsetenv(name);
	}
}

/* The server showed it is the server: make fds 3.. its own and hide socket activation. */
static void takeover(void)
{
	for (size_t i = 0; i < shim.n_held; i++) {
		struct shim_held *h = &shim.held[i];
		int fd = atomic_load(&h->fd);

		if (fd < 0 || atomic_load(&h->home))
			continue;
		/* Replaced behind our back (not through our dup2()): no longer ours to move. */
		if (held_of_fd(fd) != (int)i) {
			atomic_store(&h->fd, -1);
			continue;
		}
		/* On failure it stays at 3.. without FD_CLOEXEC; it still serves. */
		(void)held_move(i);
	}
	/* Nobody after us should take these for its own: the server's children least of all. */
	(void)unsetenv("LISTEN_FDS");
	(void)unsetenv("LISTEN_PID");
	(void)unsetenv("LISTEN_FDNAMES");
	(void)unsetenv("NOTIFY_SOCKET");
	env_forget_baton();
	env_forget_preload();
	atomic_store(&shim.taken_over, true);
}

static bool inet_any(const union shim_addr *a)
{
	if (a->sa.sa_family == AF_INET)
		return a->in.sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&a->in6.sin6_addr);
}

static in_port_t inet_port(const union shim_addr *a)
{
	return a->sa.sa_family == AF_INET ? a->in.sin_port : a->in6.sin6_port;
}

static bool inet_same(const union shim_addr *a, const union shim_addr *b)
{
	if (a->sa.sa_family == AF_INET)
		return a->in.sin_port == b->in.sin_port &&
		       a->in.sin_addr.s_addr == b->in.sin_addr.s_addr;
	return a->in6.sin6_port == b->in6.sin6_port &&
	       a->in6.sin6_scope_id == b->in6.sin6_scope_id &&
	       memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr)) == 0;
}

static bool is_bound(int fd)
{
	union shim_addr a = { 0 };
	socklen_t len = sizeof(a);

	if (getsockname(fd, &a.sa, &len) < 0)
		return true; /* not a socket we understand: hands off */
	switch (a.sa.sa_family) {
	case AF_INET:
	case AF_INET6:
		return inet_port(&a) != 0;
	case AF_UNIX:
		return len > offsetof(struct sockaddr_un, sun_path);
	default:
		return true;
	}
}

/*
 * Which held listener a bind(fd, sa, len) asks for, or -1. The rules (docs/WRAPPING.md):
 * same family, type and protocol; then an exact address (IP and port; Unix path string or
 * abstract name), else a wildcard IP on either side with the same port, else a Unix path that
 * names the held socket file. Ties go to the first in batond's --listen order. Port 0 and
 * Unix autobind never match. Called with shim.lock held.
 */
static int held_match(int fd, const struct sockaddr *sa, socklen_t len)
{
	union shim_addr a = { 0 };
	char path[SHIM_PATH_MAX + 1] = "";
	size_t name_len = 0;
	bool abstract = false;
	int type, family, protocol;
	socklen_t optlen;
	struct stat st = { 0 };
	bool have_file = false;

	if (!sa || len < sizeof(sa_family_t) || len > sizeof(a))
		return -1;
	memcpy(&a, sa, len);
	optlen = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen) < 0)
		return -1;
	optlen = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &optlen) < 0)
		return -1;
	optlen = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &optlen) < 0)
		return -1;
	if (family != a.sa.sa_family)
		return -1;

	switch (family) {
	case AF_INET:
		if (len < sizeof(struct sockaddr_in) || a.in.sin_port == 0)
			return -1;
		break;
	case AF_INET6:
		if (len < sizeof(struct sockaddr_in6) || a.in6.sin6_port == 0)
			return -1;
		break;
	case AF_UNIX:
		name_len = len - offsetof(struct sockaddr_un, sun_path);
		if (name_len == 0 || name_len > SHIM_PATH_MAX)
			return -1; /* autobind, or too long for the kernel anyway */
		abstract = a.un.sun_path[0] == '\0';
		if (!abstract) {
			memcpy(path, a.un.sun_path, strnlen(a.un.sun_path, name_len));
			have_file = stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
		}
		break;
	default:
		return -1;
	}
	/* A bound socket (ours or not) makes bind() fail with EINVAL: let the kernel say so. */
	if (held_of_fd(fd) >= 0 || is_bound(fd))
		return -1;

	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < shim.n_held; i++) {
			const struct shim_held *h = &shim.held[i];
			bool hit;

			if (atomic_load(&h->fd) < 0 || h->family != family || h->type != type ||
			    h->protocol != protocol)
				continue;
			if (family != AF_UNIX) {
				hit = pass == 0 ? inet_same(&h->addr, &a)
						: inet_port(&h->addr) == inet_port(&a) &&
							  (inet_any(&h->addr) || inet_any(&a));
			} else if (abstract) {
				hit = pass == 0 &&
				      h->addr_len ==
					      offsetof(struct sockaddr_un, sun_path) + name_len &&
				      memcmp(h->addr.un.sun_path, a.un.sun_path, name_len) == 0;
			} else {
				hit = pass == 0 ? h->path[0] && strcmp(h->path, path) == 0
						: h->has_file && have_file &&
							  h->file_dev == st.st_dev &&
							  h->file_ino == st.st_ino;
			}
			if (hit)
				return (int)i;
		}
	}
	return -1;
}

/*
 * Puts held listener i in place of the server's socket fd. Returns 0, 1 if the listener was
 * lost (the caller lets the kernel answer the bind), or -errno. Called with shim.lock held.
 */
static int swap(int fd, size_t i)
{
	struct shim_held *h = &shim.held[i];
	int fd_flags, fl_flags, shared;

	fd_flags = REAL(fcntl)(fd, F_GETFD);
	if (fd_flags < 0)
		return -errno;
	fl_flags = REAL(fcntl)(fd, F_GETFL);
	if (fl_flags < 0)
		return -errno;
	if (!atomic_load(&shim.taken_over))
		takeover();
	if (atomic_load(&h->fd) < 0)
		return 1;
	/*
	 * O_NONBLOCK lives on the open file description, shared with batond and every other
	 * worker: it stays set as batond created it, and the server's own choice is kept in the
	 * slot (see accept_common()).
	 */
	shared = REAL(fcntl)(h->fd, F_GETFL);
	if (shared >= 0 && !(shared & O_NONBLOCK))
		(void)REAL(fcntl)(h->fd, F_SETFL, shared | O_NONBLOCK);
	/* dup3() closes the server's socket and puts ours at its number in one step. */
	if (REAL(dup3)(h->fd, fd, (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)
		return -errno;
	slot_add(fd, (int)i, fl_flags & O_NONBLOCK);
	return 0;
}

/* Sends READY=1 the first time any process of this tree waits for a held listener. */
static void ready_now(void)
{
	const char *msg = SHIM_READY;
	int saved = errno;
	int s;

	if (shim.notify_len == 0 || atomic_exchange(shim.ready_sent, 1))
		return;
	/*
	 * The sd_notify protocol: one datagram; batond identifies us by SO_PASSCRED. Through the
	 * connection made at load first: a server that has since changed its user (nginx's
	 * workers) may no longer open batond's 0600 socket file by name.
	 */
	/*
	 * What became of the drain signal in this process, for batond to tell the operator: the
	 * shim took it (BATON_DRAIN=shim), or the server had its own disposition (=server).
	 */
	if (atomic_load(&shim.drain_armed))
		msg = SHIM_READY "\nBATON_DRAIN=shim";
	else if (atomic_load(&shim.drain_tried))
		msg = SHIM_READY "\nBATON_DRAIN=server";
	s = atomic_load(&shim.notify_fd);
	if (s >= 0 && send(s, msg, strlen(msg), MSG_NOSIGNAL) >= 0) {
		errno = saved;
		return;
	}
	s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s >= 0) {
		(void)sendto(s, msg, strlen(msg), MSG_NOSIGNAL, &shim.notify.sa, shim.notify_len);
		(void)REAL(close)(s);
	}
	errno = saved;
}

static bool parse_decimal(const char *s, unsigned long max, unsigned long *ret)
{
	unsigned long v = 0;

	if (!s || !*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (v > (max - (unsigned long)(*s - '0')) / 10)
			return false;
		v = v * 10 + (unsigned long)(*s - '0');
	}
	*ret = v;
	return true;
}

/*
 * The drain, for servers that have none. Such a server leaves the drain signal at its default
 * action, so batond's drain request kills it with whatever requests its threads hold. Instead:
 * the signal plugs each of its listener fds (an idle socket of the same kind takes the fd
 * number, so no further accept() gets a connection and the queue stays for the other
 * generation), and the process exits 0 when the last connection it accepted is closed.
 *
 * The work is done in the handler, not by setting a flag for later, because the thread the
 * signal lands on may be a request thread while the accepting thread sleeps in a call we
 * never see again; it is all async-signal-safe system calls. A connection counts from the
 * accept() that returned it to the close() (or dup2(), close_range()) of that fd number.
 * in_accept covers the moment in between: while a thread is inside accept(), nobody exits.
 */

static bool conn_mark(int fd)
{
	uint64_t bit;

	if (fd < 0 || fd >= SHIM_MAX_CONN_FD)
		return false;
	bit = UINT64_C(1) << (fd % 64);
	return !(atomic_fetch_or(&shim.conns[fd / 64], bit) & bit);
}

static bool conn_take(int fd)
{
	uint64_t bit;

	if (fd < 0 || fd >= SHIM_MAX_CONN_FD)
		return false;
	bit = UINT64_C(1) << (fd % 64);
	return atomic_fetch_and(&shim.conns[fd / 64], ~bit) & bit;
}

/* Connections among fds [first, last], forgotten: they are about to be closed. */
static int conn_take_range(unsigned int first, unsigned int last)
{
	int n = 0;

	if (first >= SHIM_MAX_CONN_FD)
		return 0;
	if (last >= SHIM_MAX_CONN_FD)
		last = SHIM_MAX_CONN_FD - 1;
	for (unsigned int fd = first; fd <= last; fd++) {
		if (fd % 64 == 0 && fd + 63 <= last && atomic_load(&shim.conns[fd / 64]) == 0) {
			fd += 63;
			continue;
		}
		n += conn_take((int)fd);
	}
	return n;
}

/* Async-signal-safe. Exits 0 if the drain started and nothing accepted is still open. */
static void drain_exit_if_done(void)
{
	if (atomic_load(&shim.draining) && atomic_load(&shim.in_accept) == 0 &&
	    atomic_load(&shim.n_conns) == 0)
		_exit(0);
}

/* n connections were closed. */
static void conn_done(int n)
{
	if (n <= 0)
		return;
	atomic_fetch_sub(&shim.n_conns, n);
	drain_exit_if_done();
}

static void watch_add(int epfd, int fd)
{
	for (size_t i = 0; i < SHIM_MAX_WATCHES; i++) {
		int free_slot = 0;

		if (atomic_load(&shim.watches[i].epfd1) == epfd + 1 &&
		    atomic_load(&shim.watches[i].fd) == fd)
			return;
		atomic_store(&shim.watches[i].fd, fd);
		if (atomic_compare_exchange_strong(&shim.watches[i].epfd1, &free_slot, epfd + 1))
			return;
	}
	/* Full: this registration is not undone at the drain (docs/WRAPPING.md). */
}

static void watch_remove(int epfd, int fd)
{
	for (size_t i = 0; i < SHIM_MAX_WATCHES; i++) {
		int e = epfd + 1;

		if (atomic_load(&shim.watches[i].fd) == fd)
			(void)atomic_compare_exchange_strong(&shim.watches[i].epfd1, &e, 0);
	}
}

/*
 * Async-signal-safe. Puts an idle socket in place of listener fd: an autobound Unix socket of
 * the listener's kind that nobody knows, listening for a stream listener. It is non-blocking
 * whatever the server believes, so that an accept() that raced with the plug returns at once
 * (in_accept must come back to 0); accept_plugged() gives a blocking server the wait it
 * expects. Every epoll set we saw fd join forgets it first: the registration belongs to the
 * listener's open file, which lives on in batond.
 */
static int plug(int fd, int type, bool nonblock)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd_flags = REAL(fcntl)(fd, F_GETFD);
	int d, r;

	if (fd_flags < 0)
		return -1;
	for (size_t i = 0; i < SHIM_MAX_WATCHES; i++) {
		int e = atomic_load(&shim.watches[i].epfd1);

		if (e > 0 && atomic_load(&shim.watches[i].fd) == fd)
			(void)REAL(epoll_ctl)(e - 1, EPOLL_CTL_DEL, fd, NULL);
	}
	type = type == SOCK_DGRAM ? SOCK_DGRAM : SOCK_STREAM;
	d = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (d < 0)
		return -1;
	r = REAL(bind)(d, (struct sockaddr *)&a, sizeof(sa_family_t));
	if (r == 0 && type == SOCK_STREAM)
		r = REAL(listen)(d, 1);
	if (r == 0)
		r = REAL(dup3)(d, fd, (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0);
	(void)REAL(close)(d);
	if (r == 0) {
		size_t i = atomic_load(&shim.n_plugged);

		if (i < SHIM_MAX_PLUGGED) {
			shim.plugged[i].fd = fd;
			shim.plugged[i].blocking = !nonblock;
			atomic_store(&shim.n_plugged, i + 1);
		}
	}
	return r;
}

/*
 * accept() on fd while draining: -1 if fd is not one the drain plugged. Else there is nothing
 * to accept any more: EAGAIN for a server that made its listener non-blocking, and for one
 * that did not, the wait of a blocking accept() that never gets a connection (the process
 * exits when its last connection closes, from another thread).
 */
static int accept_plugged(int fd)
{
	size_t n = atomic_load(&shim.n_plugged);

	for (size_t i = 0; i < n; i++) {
		if (shim.plugged[i].fd != fd)
			continue;
		if (!shim.plugged[i].blocking) {
			errno = EAGAIN;
			return -1;
		}
		for (;;)
			(void)REAL(poll)(NULL, 0, -1);
	}
	return 0;
}

/* The drain signal: stop taking connections, exit once those taken are done. */
static void on_drain_signal(int sig)
{
	int saved = errno;
	size_t n;

	(void)sig;
	if (!own_memory() || atomic_exchange(&shim.draining, true)) {
		errno = saved;
		return;
	}
	n = atomic_load(&shim.n_slots);
	for (size_t i = 0; i < n; i++) {
		struct shim_slot *s = &shim.slots[i];
		int fd = atomic_load(&s->fd);

		if (fd >= 0 && held_of_fd(fd) == s->held &&
		    plug(fd, shim.held[s->held].type, atomic_load(&s->nonblock)) == 0)
			atomic_store(&s->fd, -1);
	}
	/* Held fds the server took from LISTEN_FDS itself, still at 3.. */
	for (size_t i = 0; i < shim.n_held; i++) {
		int fd = SHIM_FD_FIRST + (int)i;
		int fl;

		if (in_place_of(fd) < 0)
			continue;
		fl = REAL(fcntl)(fd, F_GETFL);
		if (fl >= 0 && plug(fd, shim.held[i].type, fl & O_NONBLOCK) == 0)
			atomic_store(&shim.held[i].fd, -1);
	}
	drain_exit_if_done();
	errno = saved;
}

/* BATON_DRAIN_SIGNAL as a signal number: a name without SIG (what batond writes), or digits. */
static int drain_signal_load(void)
{
	const char *e = getenv("BATON_DRAIN_SIGNAL");
	unsigned long n;

	if (!e)
		return 0;
	if (parse_decimal(e, NSIG - 1, &n))
		return (int)n;
	for (int sig = 1; sig < NSIG; sig++)
		if (sigabbrev_np(sig) && strcmp(sigabbrev_np(sig), e) == 0)
			return sig;
	return 0;
}

/*
 * The process showed that it serves a held listener (its first wait on one). If it left the
 * drain signal at the default action and unblocked, the drain is ours. A server that blocks
 * the signal takes it with sigwait() or a signalfd; one that installs a handler later is seen
 * by sigaction()/signal() below, and its handler replaces ours.
 */
static void drain_arm(void)
{
	int saved = errno;
	struct sigaction cur, sa = { .sa_handler = on_drain_signal, .sa_flags = SA_RESTART };
	sigset_t mask;

	if (shim.drain_signal == 0 || !own_memory() || atomic_exchange(&shim.drain_tried, true))
		return;
	if (REAL(sigaction) && REAL(sigaction)(shim.drain_signal, NULL, &cur) == 0 &&
	    cur.sa_handler == SIG_DFL && pthread_sigmask(SIG_SETMASK, NULL, &mask) == 0 &&
	    !sigismember(&mask, shim.drain_signal)) {
		/* Nothing interrupts the plugging, so it always finishes in one go. */
		(void)sigfillset(&sa.sa_mask);
		if (REAL(sigaction)(shim.drain_signal, &sa, NULL) == 0)
			atomic_store(&shim.drain_armed, true);
	}
	errno = saved;
}

/* Whether a wait still tells us anything: READY=1 unsent, or event-driven not yet known. */
static bool watching(void)
{
	if (!active())
		return false;
	if (!atomic_load(&shim.waits))
		return true;
	return shim.notify_len > 0 && !atomic_load(shim.ready_sent);
}

static bool is_listener(int fd)
{
	return slot_find(fd) || in_place_of(fd) >= 0;
}

/* The process waits for a held listener's readability: it is ready and event-driven. */
static void saw_wait(void)
{
	atomic_store(&shim.waits, true);
	/* The drain first: READY=1 says what became of it. */
	if (!atomic_load(&shim.drain_tried))
		drain_arm();
	ready_now();
}

static void watch_pollfds(const struct pollfd *fds, nfds_t n)
{
	if (!fds || !watching())
		return;
	for (nfds_t i = 0; i < n; i++) {
		if ((fds[i].events & POLLIN) && is_listener(fds[i].fd)) {
			saw_wait();
			return;
		}
	}
}

static bool in_fdset(int fd, int nfds, const fd_set *set)
{
	return fd >= 0 && fd < nfds && fd < FD_SETSIZE && FD_ISSET(fd, set);
}

static void watch_fdset(int nfds, const fd_set *rd)
{
	size_t n;

	if (!rd || !watching())
		return;
	n = atomic_load(&shim.n_slots);
	for (size_t i = 0; i < n; i++) {
		if (in_fdset(atomic_load(&shim.slots[i].fd), nfds, rd)) {
			saw_wait();
			return;
		}
	}
	for (size_t i = 0; i < shim.n_held; i++) {
		int fd = SHIM_FD_FIRST + (int)i;

		if (in_place_of(fd) >= 0 && in_fdset(fd, nfds, rd)) {
			saw_wait();
			return;
		}
	}
}

/* Records fds 3.. as LISTEN_FDS describes them. Returns how many, 0 to stay inactive. */
static size_t held_load(void)
{
	unsigned long pid, n;

	if (!parse_decimal(getenv("LISTEN_PID"), INT_MAX, &pid) || (pid_t)pid != getpid())
		return 0;
	/* More than we can track: leave them all to the server's own socket activation. */
	if (!parse_decimal(getenv("LISTEN_FDS"), SHIM_MAX_HELD, &n))
		return 0;
	for (size_t i = 0; i < n; i++) {
		struct shim_held *h = &shim.held[i];
		int fd = SHIM_FD_FIRST + (int)i;
		socklen_t optlen;
		struct stat st;

		if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
			return 0; /* not what batond passes: stay out of the way */
		h->dev = st.st_dev;
		h->ino = st.st_ino;
		optlen = sizeof(int);
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &h->type, &optlen) < 0)
			return 0;
		optlen = sizeof(int);
		if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &h->family, &optlen) < 0)
			return 0;
		optlen = sizeof(int);
		if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &h->protocol, &optlen) < 0)
			return 0;
		h->addr_len = sizeof(h->addr);
		if (getsockname(fd, &h->addr.sa, &h->addr_len) < 0 || h->addr_len > sizeof(h->addr))
			return 0;
		if (h->family == AF_UNIX && h->addr_len > offsetof(struct sockaddr_un, sun_path) &&
		    h->addr.un.sun_path[0] != '\0') {
			size_t k = h->addr_len - offsetof(struct sockaddr_un, sun_path);

			if (k > SHIM_PATH_MAX)
				k = SHIM_PATH_MAX;

			memcpy(h->path, h->addr.un.sun_path, strnlen(h->addr.un.sun_path, k));
			/* Relative to our working directory, which is batond's: the same file. */
			if (stat(h->path, &st) == 0 && S_ISSOCK(st.st_mode)) {
				h->has_file = true;
				h->file_dev = st.st_dev;
				h->file_ino = st.st_ino;
			}
		}
		atomic_store(&h->fd, fd);
	}
	return n;
}

/* Connects to NOTIFY_SOCKET now, while the server still runs as the user batond started. */
static void notify_connect(void)
{
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int fd;

	if (s < 0)
		return;
	if (connect(s, &shim.notify.sa, shim.notify_len) < 0) {
		(void)REAL(close)(s);
		return;
	}
	/* Out of the server's way, as the held listeners' homes are. */
	fd = REAL(fcntl)(s, F_DUPFD_CLOEXEC, SHIM_FD_HOME);
	if (fd >= 0) {
		(void)REAL(close)(s);
		s = fd;
	}
	atomic_store(&shim.notify_fd, s);
}

static void notify_load(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	size_t n;

	if (!e || (e[0] != '@' && e[0] != '/'))
		return;
	n = strlen(e);
	if (n < 2 || n > SHIM_PATH_MAX)
		return;
	shim.notify.un.sun_family = AF_UNIX;
	memcpy(shim.notify.un.sun_path, e, n);
	if (e[0] == '@')
		shim.notify.un.sun_path[0] = '\0';
	shim.notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	notify_connect();
}

/* fork() copies our memory: the child owns its copy, and the lock is never held across it. */
static void on_fork_prepare(void)
{
	(void)pthread_mutex_lock(&shim.lock);
}

static void on_fork_parent(void)
{
	(void)pthread_mutex_unlock(&shim.lock);
}

static void on_fork_child(void)
{
	(void)pthread_mutex_init(&shim.lock, NULL);
	shim.pid = getpid();
}

__attribute__((constructor)) static void shim_load(void)
{
	size_t n;
	void *page;

	(void)REAL(bind);
	(void)REAL(listen);
	(void)REAL(setsockopt);
	(void)REAL(shutdown);
	(void)REAL(accept);
	(void)REAL(accept4);
	(void)REAL(close);
	(void)REAL(close_range);
	(void)REAL(closefrom);
	(void)REAL(dup2);
	(void)REAL(dup3);
	(void)REAL(fcntl);
	(void)REAL(fcntl64);
	(void)REAL(ioctl);
	(void)REAL(unlink);
	(void)REAL(unlinkat);
	(void)REAL(remove);
	(void)REAL(poll);
	(void)REAL(ppoll);
	(void)REAL(select);
	(void)REAL(pselect);
	(void)REAL(epoll_ctl);
	(void)REAL(sigaction);
	(void)REAL(signal);
	(void)REAL(__poll_chk);
	(void)REAL(__ppoll_chk);

	n = held_load();
	if (n == 0)
		return;
	notify_load();
	shim.drain_signal = drain_signal_load();
	shim.pid = getpid();
	page = mmap(NULL, sizeof(atomic_int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		    -1, 0);
	shim.ready_sent = page == MAP_FAILED ? &shim.ready_local : page;
	if (pthread_atfork(on_fork_prepare, on_fork_parent, on_fork_child) != 0)
		return; /* without it a fork could copy a held lock: stay inactive */
	/* Last: every wrapper tests this first, so the state above is complete when it is seen. */
	shim.n_held = n;
}

SHIM_EXPORT int bind(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
	__typeof__(&bind) real = REAL(bind);
	int saved = errno;
	int i, r = 1;

	if (!real)
		NO_REAL(-1);
	if (!active() || !own_memory())
		return real(fd, addr, len);
	(void)pthread_mutex_lock(&shim.lock);
	i = held_match(fd, addr.__sockaddr__, len);
	if (i >= 0)
		r = swap(fd, (size_t)i);
	(void)pthread_mutex_unlock(&shim.lock);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	/* Our look at the socket may have set errno; the caller sees only the bind's. */
	errno = saved;
	return r > 0 ? real(fd, addr, len) : 0;
}

/* The shared listener already listens with batond's backlog: a second listen() would change it. */
SHIM_EXPORT int listen(int fd, int backlog)
{
	__typeof__(&listen) real = REAL(listen);

	if (!real)
		NO_REAL(-1);
	if (active() && held_of_fd(fd) >= 0)
		return 0;
	return real(fd, backlog);
}

/* Options a server sets on its own listener that must not reach a shared one. */
static bool option_is_batonds(int level, int name)
{
	if (level != SOL_SOCKET)
		return false;
	switch (name) {
	case SO_REUSEADDR:
	case SO_REUSEPORT: /* would let a stranger bind the same port and take half the traffic */
	case SO_ATTACH_FILTER: /* batond's graceful stop owns the listener's filter */
	case SO_ATTACH_BPF:
	case SO_DETACH_FILTER:
	case SO_LOCK_FILTER:
	case SO_ATTACH_REUSEPORT_CBPF:
	case SO_ATTACH_REUSEPORT_EBPF:
	case SO_DETACH_REUSEPORT_BPF:
		return true;
	default:
		return false;
	}
}

SHIM_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	__typeof__(&setsockopt) real = REAL(setsockopt);

	if (!real)
		NO_REAL(-1);
	if (active() && option_is_batonds(level, name) && held_of_fd(fd) >= 0)
		return 0;
	return real(fd, level, name, val, len);
}

/*
 * shutdown(SHUT_RD) of a listener stops it for every process that shares it: queued
 * connections are reset, new ones refused, batond's own accept() fails. A server does it to
 * its own listener to stop accepting (or to wake its threads blocked in accept()); the shared
 * one is left alone and only this fd behaves as shut down. SHUT_WR changes nothing on a
 * listener, and is what servers call on every connection, so it passes without a look.
 */
SHIM_EXPORT int shutdown(int fd, int how)
{
	__typeof__(&shutdown) real = REAL(shutdown);
	struct shim_slot *s;

	if (!real)
		NO_REAL(-1);
	if (!active() || how == SHUT_WR || held_of_fd(fd) < 0)
		return real(fd, how);
	s = slot_find(fd);
	if (s)
		atomic_store(&s->shut, true);
	return 0;
}

/* Waits until fd is readable, as a blocking accept() would; -1 with errno EINTR on a signal. */
static int wait_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	__typeof__(&poll) real = REAL(poll);

	if (!real)
		NO_REAL(-1);
	return real(&p, 1, -1) < 0 ? -1 : 0;
}

/*
 * The shared listener is non-blocking. A server that left its socket blocking and calls
 * accept() without waiting first gets a blocking accept (poll, then accept again). A server
 * that waits with poll/select/epoll gets EAGAIN when another process took the connection
 * first, so it goes back to its event loop instead of sitting in accept().
 */
static int accept_common(int fd, struct sockaddr *addr, socklen_t *len, int flags, bool four)
{
	__typeof__(&accept4) real4 = REAL(accept4);
	__typeof__(&accept) real = REAL(accept);
	struct shim_slot *s = NULL;
	bool listener = false, counted = false;

	if (four ? !real4 : !real)
		NO_REAL(-1);
	if (active() && atomic_load(&shim.draining) && own_memory() && accept_plugged(fd) < 0)
		return -1;
	if (active() && fd >= 0) {
		s = slot_find(fd);
		if (s && atomic_load(&s->shut) && slot_verified(fd) == s) {
			errno = EINVAL; /* what accept() says on a listener that was shut down */
			return -1;
		}
		listener = (s || in_place_of(fd) >= 0) && own_memory();
		/*
		 * The shared listener is non-blocking, so an accept() on it returns at once and may
		 * hold the drain's exit meanwhile. One the server took from LISTEN_FDS and made
		 * blocking could hold it up in the kernel: not counted (docs/WRAPPING.md).
		 */
		counted = listener && (s || (REAL(fcntl)(fd, F_GETFL) & O_NONBLOCK));
		if (listener && !atomic_load(&shim.drain_tried))
			drain_arm();
		if (s || in_place_of(fd) >= 0)
			ready_now();
	}
	for (;;) {
		int r, saved;

		if (counted)
			atomic_fetch_add(&shim.in_accept, 1);
		r = four ? real4(fd, addr, len, flags) : real(fd, addr, len);
		if (listener) {
			saved = errno;
			if (r >= 0 && conn_mark(r))
				atomic_fetch_add(&shim.n_conns, 1);
			if (counted)
				atomic_fetch_sub(&shim.in_accept, 1);
			drain_exit_if_done();
			errno = saved;
			/* The drain plugged fd while we were in accept() on it. */
			if (r < 0 && errno == EAGAIN && atomic_load(&shim.draining) &&
			    accept_plugged(fd) < 0)
				return -1;
		}
		if (r >= 0 || errno != EAGAIN || !s || atomic_load(&s->nonblock) ||
		    atomic_load(&shim.waits) || slot_verified(fd) != s)
			return r;
		if (wait_readable(fd) < 0)
			return -1;
	}
}

SHIM_EXPORT int accept(int fd, __SOCKADDR_ARG addr, socklen_t *restrict len)
{
	return accept_common(fd, addr.__sockaddr__, len, 0, false);
}

SHIM_EXPORT int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *restrict len, int flags)
{
	return accept_common(fd, addr.__sockaddr__, len, flags, true);
}

/*
 * The server closing its swapped fd is fine: batond keeps its own reference. Closing one of
 * ours (a close-everything loop) is answered as done without touching the listener.
 */
SHIM_EXPORT int close(int fd)
{
	__typeof__(&close) real = REAL(close);

	bool conn = false;
	int r, saved;

	if (!real)
		NO_REAL(-1);
	if (active() && fd >= 0) {
		if (home_of(fd) >= 0 || is_notify_fd(fd))
			return 0; /* FD_CLOEXEC: it never reaches a child program anyway */
		if (in_place_of(fd) >= 0 && rescue(fd))
			return 0;
		slot_forget(fd);
		/* Before the close: afterwards another thread's accept() may get the same number. */
		conn = own_memory() && conn_take(fd);
	}
	r = real(fd);
	saved = errno;
	conn_done(conn);
	errno = saved;
	return r;
}

/* close_range() on [first, last] minus our home fds, which are FD_CLOEXEC already. */
static int close_range_around(unsigned int first, unsigned int last, int flags)
{
	__typeof__(&close_range) real = REAL(close_range);
	unsigned int keep[SHIM_MAX_HELD + 1];
	unsigned int from = first;
	size_t n = 0;
	int nfd = atomic_load(&shim.notify_fd);

	for (size_t i = 0; i < shim.n_held; i++) {
		int fd = atomic_load(&shim.held[i].fd);

		if (fd >= 0 && atomic_load(&shim.held[i].home) && (unsigned int)fd >= first &&
		    (unsigned int)fd <= last) {
			size_t j = n++;

			for (; j > 0 && keep[j - 1] > (unsigned int)fd; j--)
				keep[j] = keep[j - 1];
			keep[j] = (unsigned int)fd;
		}
	}
	if (nfd >= 0 && (unsigned int)nfd >= first && (unsigned int)nfd <= last) {
		size_t j = n++;

		for (; j > 0 && keep[j - 1] > (unsigned int)nfd; j--)
			keep[j] = keep[j - 1];
		keep[j] = (unsigned int)nfd;
	}
	for (size_t k = 0; k < n; k++) {
		if (keep[k] > from && real(from, keep[k] - 1, flags) < 0)
			return -1;
		from = keep[k] + 1;
	}
	if (from > last)
		return 0;
	return real(from, last, flags);
}

SHIM_EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	__typeof__(&close_range) real = REAL(close_range);

	if (!real)
		NO_REAL(-1);
	if (!active() || first > last)
		return real(first, last, flags);
	if (!(flags & CLOSE_RANGE_CLOEXEC) && own_memory()) {
		size_t n = atomic_load(&shim.n_slots);
		int conns, r, saved;

		for (size_t i = 0; i < shim.n_held; i++) {
			int fd = SHIM_FD_FIRST + (int)i;

			if ((unsigned int)fd >= first && (unsigned int)fd <= last &&
			    in_place_of(fd) >= 0)
				(void)rescue(fd);
		}
		for (size_t i = 0; i < n; i++) {
			int fd = atomic_load(&shim.slots[i].fd);

			if (fd >= 0 && (unsigned int)fd >= first && (unsigned int)fd <= last)
				slot_forget(fd);
		}
		conns = conn_take_range(first, last);
		r = close_range_around(first, last, flags);
		saved = errno;
		conn_done(conns);
		errno = saved;
		return r;
	}
	return close_range_around(first, last, flags);
}

SHIM_EXPORT void closefrom(int lowfd)
{
	__typeof__(&closefrom) real = REAL(closefrom);

	if (!real)
		return;
	if (!active()) {
		real(lowfd);
		return;
	}
	/* glibc's own fallback would close our fds too; it is only for kernels before 5.9. */
	if (close_range(lowfd < 0 ? 0 : (unsigned int)lowfd, ~0U, 0) < 0)
		real(lowfd);
}

/*
 * newfd is about to be replaced: if it is one of ours, move ours; forget a swapped one.
 * Returns whether it was an accepted connection, which the caller counts as closed after.
 */
static bool before_replace(int oldfd, int newfd)
{
	if (!active() || newfd < 0 || oldfd == newfd)
		return false;
	if (in_place_of(newfd) >= 0 || home_of(newfd) >= 0)
		(void)rescue(newfd);
	if (is_notify_fd(newfd)) {
		int moved = REAL(fcntl)(newfd, F_DUPFD_CLOEXEC, newfd + 1);

		atomic_store(&shim.notify_fd, moved); /* -1 if none: READY=1 then uses sendto() */
	}
	slot_forget(newfd);
	return own_memory() && conn_take(newfd);
}

/* After dup2()/dup3() replaced a connection's fd (conn) or not. Returns r with its errno. */
static int after_replace(int r, bool conn)
{
	int saved = errno;

	conn_done(conn);
	errno = saved;
	return r;
}

SHIM_EXPORT int dup2(int oldfd, int newfd)
{
	__typeof__(&dup2) real = REAL(dup2);
	bool conn;

	if (!real)
		NO_REAL(-1);
	conn = before_replace(oldfd, newfd);
	return after_replace(real(oldfd, newfd), conn);
}

SHIM_EXPORT int dup3(int oldfd, int newfd, int flags)
{
	__typeof__(&dup3) real = REAL(dup3);
	bool conn;

	if (!real)
		NO_REAL(-1);
	conn = before_replace(oldfd, newfd);
	return after_replace(real(oldfd, newfd, flags), conn);
}

/*
 * F_GETFL/F_SETFL on a swapped fd see and set the server's own O_NONBLOCK; the shared file
 * description keeps O_NONBLOCK set. The third argument is read as a pointer whatever its
 * type, as glibc's own fcntl() does.
 */
static int fcntl_common(__typeof__(&fcntl) real, int fd, int cmd, void *arg)
{
	struct shim_slot *s;
	int r;

	if (!real)
		NO_REAL(-1);
	if ((cmd != F_GETFL && cmd != F_SETFL) || !active() || !(s = slot_verified(fd)))
		return real(fd, cmd, arg);
	if (cmd == F_GETFL) {
		r = real(fd, F_GETFL);
		if (r >= 0)
			r = (r & ~O_NONBLOCK) | (atomic_load(&s->nonblock) ? O_NONBLOCK : 0);
		return r;
	}
	r = real(fd, F_SETFL, (int)(intptr_t)arg | O_NONBLOCK);
	if (r == 0)
		atomic_store(&s->nonblock, ((int)(intptr_t)arg & O_NONBLOCK) != 0);
	return r;
}

SHIM_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return fcntl_common(REAL(fcntl), fd, cmd, arg);
}

SHIM_EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return fcntl_common(REAL(fcntl64), fd, cmd, arg);
}

/* FIONBIO (how Python and nginx switch blocking) is fcntl(F_SETFL, O_NONBLOCK) by other means. */
SHIM_EXPORT int ioctl(int fd, unsigned long request, ...)
{
	__typeof__(&ioctl) real = REAL(ioctl);
	struct shim_slot *s;
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!real)
		NO_REAL(-1);
	if (request == FIONBIO && arg && active() && (s = slot_verified(fd))) {
		atomic_store(&s->nonblock, *(const int *)arg != 0);
		return 0;
	}
	return real(fd, request, arg);
}

/* Whether path names the socket file of a held Unix listener. Keeps errno. */
static bool is_held_file(int dirfd, const char *path)
{
	int saved = errno;
	struct stat st;
	bool r = false;

	if (path && fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode)) {
		for (size_t i = 0; i < shim.n_held && !r; i++)
			r = shim.held[i].has_file && shim.held[i].file_dev == st.st_dev &&
			    shim.held[i].file_ino == st.st_ino;
	}
	errno = saved;
	return r;
}

/*
 * A server removes a stale socket file before bind() and its own at exit; this one is
 * batond's, and new connections need it. Answered as done, file left in place.
 */
SHIM_EXPORT int unlink(const char *path)
{
	__typeof__(&unlink) real = REAL(unlink);

	if (!real)
		NO_REAL(-1);
	if (active() && is_held_file(AT_FDCWD, path))
		return 0;
	return real(path);
}

SHIM_EXPORT int unlinkat(int dirfd, const char *path, int flags)
{
	__typeof__(&unlinkat) real = REAL(unlinkat);

	if (!real)
		NO_REAL(-1);
	if (active() && !(flags & AT_REMOVEDIR) && is_held_file(dirfd, path))
		return 0;
	return real(dirfd, path, flags);
}

SHIM_EXPORT int remove(const char *path)
{
	__typeof__(&remove) real = REAL(remove);

	if (!real)
		NO_REAL(-1);
	if (active() && is_held_file(AT_FDCWD, path))
		return 0;
	return real(path);
}

SHIM_EXPORT int poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
	__typeof__(&poll) real = REAL(poll);

	if (!real)
		NO_REAL(-1);
	watch_pollfds(fds, nfds);
	return real(fds, nfds, timeout);
}

SHIM_EXPORT int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen)
{
	__typeof__(&__poll_chk) real = REAL(__poll_chk);

	if (!real)
		NO_REAL(-1);
	watch_pollfds(fds, nfds);
	return real(fds, nfds, timeout, fdslen);
}

SHIM_EXPORT int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout,
		      const sigset_t *ss)
{
	__typeof__(&ppoll) real = REAL(ppoll);

	if (!real)
		NO_REAL(-1);
	watch_pollfds(fds, nfds);
	return real(fds, nfds, timeout, ss);
}

SHIM_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout,
			    const sigset_t *ss, size_t fdslen)
{
	__typeof__(&__ppoll_chk) real = REAL(__ppoll_chk);

	if (!real)
		NO_REAL(-1);
	watch_pollfds(fds, nfds);
	return real(fds, nfds, timeout, ss, fdslen);
}

SHIM_EXPORT int select(int nfds, fd_set *restrict rd, fd_set *restrict wr, fd_set *restrict ex,
		       struct timeval *restrict timeout)
{
	__typeof__(&select) real = REAL(select);

	if (!real)
		NO_REAL(-1);
	watch_fdset(nfds, rd);
	return real(nfds, rd, wr, ex, timeout);
}

SHIM_EXPORT int pselect(int nfds, fd_set *restrict rd, fd_set *restrict wr, fd_set *restrict ex,
			const struct timespec *restrict timeout, const sigset_t *restrict ss)
{
	__typeof__(&pselect) real = REAL(pselect);

	if (!real)
		NO_REAL(-1);
	watch_fdset(nfds, rd);
	return real(nfds, rd, wr, ex, timeout, ss);
}

/* Registering a held listener for input counts as waiting for it: the loop is about to run. */
SHIM_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	__typeof__(&epoll_ctl) real = REAL(epoll_ctl);

	int r;

	if (!real)
		NO_REAL(-1);
	if (!active())
		return real(epfd, op, fd, ev);
	if ((op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD) && ev && (ev->events & EPOLLIN) &&
	    watching() && is_listener(fd))
		saw_wait();
	r = real(epfd, op, fd, ev);
	/* Remembered so that the drain can take the listener out of the set before it plugs it. */
	if (r == 0 && own_memory()) {
		if (op == EPOLL_CTL_ADD && is_listener(fd))
			watch_add(epfd, fd);
		else if (op == EPOLL_CTL_DEL)
			watch_remove(epfd, fd);
	}
	return r;
}

/*
 * Our drain handler stands in for the default action only. A server that sets its own
 * disposition for the drain signal gets it, and sees SIG_DFL as the one it replaced.
 */
static void drain_disarm(int sig, const void *handler, struct sigaction *old)
{
	if (sig != shim.drain_signal || !atomic_load(&shim.drain_armed) || !own_memory())
		return;
	if (old && old->sa_handler == on_drain_signal) {
		old->sa_handler = SIG_DFL;
		old->sa_flags = 0;
		(void)sigemptyset(&old->sa_mask);
	}
	if (handler)
		atomic_store(&shim.drain_armed, false);
}

SHIM_EXPORT int sigaction(int sig, const struct sigaction *restrict act,
			  struct sigaction *restrict old)
{
	__typeof__(&sigaction) real = REAL(sigaction);
	int r;

	if (!real)
		NO_REAL(-1);
	r = real(sig, act, old);
	if (r == 0)
		drain_disarm(sig, act, old);
	return r;
}

SHIM_EXPORT sighandler_t signal(int sig, sighandler_t handler)
{
	__typeof__(&signal) real = REAL(signal);
	struct sigaction old = { 0 };

	if (!real) {
		errno = ENOSYS;
		return SIG_ERR;
	}
	old.sa_handler = real(sig, handler);
	if (old.sa_handler != SIG_ERR)
		drain_disarm(sig, &handler, &old);
	return old.sa_handler;
}
