/* SPDX-License-Identifier: MIT */
/* config.c - batond's command line: parse everything, validate everything, bind nothing. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <arpa/inet.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "duration.h"
#include "log.h"
#include "fdsock.h"
#include "spawn.h"
#include "upgrade_state.h"

#ifndef BATON_LIBDIR
#define BATON_LIBDIR "/usr/local/lib/baton"
#endif
#define PRELOAD_NAME	 "libbaton-preload.so"
#define NSS_BUFFER_START 1024	   /* bytes for getpwnam_r()/getgrnam_r() at first */
#define NSS_BUFFER_MAX	 (1 << 20) /* bytes we let one passwd or group entry need */

#ifndef BATON_VERSION
#define BATON_VERSION "0.1.0"
#endif

/* Whether this process may lower its nice value back to where it is now (CAP_SYS_NICE or
 * RLIMIT_NICE): what giving a ready worker its priority back takes. */
static bool nice_can_be_restored(void)
{
	struct rlimit rl;
	int cur;

	if (geteuid() == 0)
		return true;
	errno = 0;
	cur = getpriority(PRIO_PROCESS, 0);
	if (cur == -1 && errno != 0)
		return false;
	/* RLIMIT_NICE n allows nice values down to 20 - n. */
	return getrlimit(RLIMIT_NICE, &rl) == 0 &&
	       (rl.rlim_cur == RLIM_INFINITY || 20 - (long)rl.rlim_cur <= cur);
}

void config_help(FILE *f)
{
	(void)fputs(
		"Usage: batond [OPTIONS] -- COMMAND [ARG]...\n"
		"Hold listening sockets and run COMMAND as workers that inherit them; restart the\n"
		"workers in rolling generations without dropping a connection.\n"
		"\n"
		"  -l, --listen [NAME=]ADDRESS  listen on ADDRESS (repeatable): HOST:PORT,\n"
		"                               [V6ADDR]:PORT, tcp://HOST:PORT, udp://HOST:PORT,\n"
		"                               unix:/path, unix:@abstract; NAME defaults to "
		"listenN\n"
		"      --backlog N              accept queue length for stream listeners (4096)\n"
		"  -n, --workers N              workers per generation (1)\n"
		"      --batch K                replace K workers at a time on reload (all)\n"
		"      --ready MODE             notify (READY=1 via NOTIFY_SOCKET), listening "
		"(waits\n"
		"                               on a listener, seen in /proc), einhorn-ack,\n"
		"                               delay:DUR, none (notify)\n"
		"      --pass FORMATS           how workers learn their listeners: env (systemd's\n"
		"                               LISTEN_FDS), einhorn, server-starter, nginx;\n"
		"                               comma-separated (env); or scm alone: listeners\n"
		"                               over a channel (BATON_FD), for libbaton workers\n"
		"      --fd-socket PATH         let other processes fetch the listeners "
		"(libbaton)\n"
		"      --fd-allow UID|@GROUP    who else may use --fd-socket (root and our uid "
		"may)\n"
		"      --ready-timeout DUR      spawn-to-ready limit per worker (60s; 0: none)\n"
		"      --drain-signal SIG       signal that asks a worker to drain (TERM; USR2\n"
		"                               with --pass einhorn, QUIT with --pass nginx)\n"
		"      --drain-timeout DUR      drain-to-SIGKILL limit per worker (30s; 0: "
		"SIGKILL\n"
		"                               at once, no drain)\n"
		"      --stop-mode MODE         graceful (refuse new connections, serve what is\n"
		"                               queued, then drain) or immediate (graceful)\n"
		"      --stop-timeout DUR       limit on serving the queues at a stop or retire\n"
		"                               (30s; 0: do not wait for the queues)\n"
		"      --preload[=LIB]          preload libbaton-preload.so into workers, so that "
		"a\n"
		"                               server that binds its own sockets gets batond's\n"
		"                               listeners (see batond(8))\n"
		"      --intercept              hand each listener over when the server binds its\n"
		"                               address, through a seccomp filter that sends\n"
		"                               bind/listen to batond (seccomp user notification,\n"
		"                               Linux 5.9 or later): for servers that bind their\n"
		"                               own sockets and that --preload cannot reach "
		"(static\n"
		"                               binaries, Go); see batond(8)\n"
		"      --fdstore                push the listeners to systemd's fd store "
		"(automatic\n"
		"                               when $FDSTORE is set)\n"
		"  -c, --control PATH           control socket for batonctl (default:\n"
		"                               $RUNTIME_DIRECTORY/NAME.sock, "
		"/run/baton/NAME.sock\n"
		"                               as root, else $XDG_RUNTIME_DIR/baton/NAME.sock)\n"
		"      --name NAME              instance name for the control socket (batond)\n"
		"      --no-control             run without a control socket (batonctl cannot\n"
		"                               reach this batond)\n"
		"      --notify-socket PATH     where workers send READY=1 (NOTIFY_SOCKET): a "
		"path\n"
		"                               (default: the control socket's path + .notify), "
		"or\n"
		"                               @ for an abstract socket any local process can "
		"reach\n"
		"      --metrics ADDRESS        serve Prometheus metrics at /metrics: "
		"127.0.0.1:PORT,\n"
		"                               [::1]:PORT, or unix:/path (see batond(8))\n"
		"      --user USER              run the workers as USER (a name or uid), with its\n"
		"                               group and groups; batond must run as root\n"
		"      --group GROUP            ... and with GROUP (a name or gid) as their group\n"
		"      --no-new-privs           workers cannot gain privileges through exec\n"
		"                               (setuid programs, file capabilities)\n"
		"      --reload-on-change PATH  roll out a new generation when PATH (a file, a\n"
		"                               directory or a symlink) changes (up to 8)\n"
		"      --start-nice N           a starting generation runs N nice levels lower\n"
		"                               until it is ready, so that the serving one keeps\n"
		"                               the CPU (0 to 19; default 0: off)\n"
		"      --pid-file PATH          write batond's pid to PATH, removed on exit\n"
		"  -v, --verbose                log debug messages too\n"
		"  -h, --help                   show this help and exit\n"
		"  -V, --version                show the version and exit\n"
		"\n"
		"Durations take a unit: 500ms, 1.5s, 2m (us, ms, s, m, h; none means seconds).\n"
		"Signals: SIGHUP rolls out a new generation; SIGTERM or SIGINT drains every "
		"worker,\n"
		"closes the listeners and exits 0 (a second one kills the workers at once).\n"
		"Workers get the listeners at fds 3.. and LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES,\n"
		"NOTIFY_SOCKET, BATON_GENERATION and BATON_WORKER.\n"
		"Exit status: 0 clean stop, 1 runtime failure, 2 bad usage or configuration.\n"
		"See batond(8).\n",
		f);
}

static const struct {
	const char *name;
	int signo;
} signal_names[] = {
	{ "HUP", SIGHUP },   { "INT", SIGINT },	  { "QUIT", SIGQUIT }, { "KILL", SIGKILL },
	{ "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "TERM", SIGTERM }, { "WINCH", SIGWINCH },
	{ "CONT", SIGCONT }, { "STOP", SIGSTOP }, { "ALRM", SIGALRM }, { "PWR", SIGPWR },
};

int config_parse_signal(const char *s)
{
	char *end;
	long v;

	if (strncasecmp(s, "SIG", 3) == 0)
		s += 3;
	for (size_t i = 0; i < sizeof(signal_names) / sizeof(signal_names[0]); i++)
		if (strcasecmp(s, signal_names[i].name) == 0)
			return signal_names[i].signo;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 1 || v >= NSIG)
		return -EINVAL;
	return (int)v;
}

int config_parse_ready(const char *s, enum rollout_ready_mode *ret_mode, uint64_t *ret_delay_usec)
{
	uint64_t usec = 0;

	if (strcmp(s, "notify") == 0) {
		*ret_mode = ROLLOUT_READY_NOTIFY;
	} else if (strcmp(s, "none") == 0) {
		*ret_mode = ROLLOUT_READY_NONE;
	} else if (strncmp(s, "delay:", 6) == 0) {
		if (duration_parse(s + 6, &usec) < 0)
			return -EINVAL;
		*ret_mode = ROLLOUT_READY_DELAY;
	} else {
		return -EINVAL;
	}
	*ret_delay_usec = usec;
	return 0;
}

int config_parse_pass(const char *s, unsigned *ret)
{
	static const struct {
		const char *name;
		unsigned bit;
	} formats[] = {
		{ "env", SPAWN_PASS_ENV },	   { "systemd", SPAWN_PASS_ENV },
		{ "einhorn", SPAWN_PASS_EINHORN }, { "server-starter", SPAWN_PASS_SERVER_STARTER },
		{ "nginx", SPAWN_PASS_NGINX },	   { "scm", SPAWN_PASS_SCM },
	};
	unsigned pass = 0;

	while (*s) {
		size_t n = strcspn(s, ",");
		bool found = false;

		for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
			if (strlen(formats[i].name) == n && strncmp(s, formats[i].name, n) == 0) {
				pass |= formats[i].bit;
				found = true;
			}
		}
		if (!found)
			return -EINVAL;
		s += n;
		if (*s == ',')
			s++;
	}
	if (!pass)
		return -EINVAL;
	*ret = pass;
	return 0;
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *ret)
{
	unsigned long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno == ERANGE || *end)
		return errno == ERANGE ? -ERANGE : -EINVAL;
	if (v < min || v > max)
		return -ERANGE;
	*ret = (unsigned)v;
	return 0;
}

static int check_executable(const char *p)
{
	struct stat st;

	if (stat(p, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (access(p, X_OK) < 0)
		return -errno;
	return 0;
}

int config_find_executable(const char *name, const char *path, char *ret, size_t size)
{
	int first_error = -ENOENT;

	if (*name == '\0')
		return -ENOENT;
	if (strchr(name, '/')) {
		int r = check_executable(name);

		if (r < 0)
			return r;
		if (strlen(name) >= size)
			return -ENAMETOOLONG;
		strcpy(ret, name);
		return 0;
	}
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");
		char buf[PATH_MAX];
		int r;

		/* An empty PATH element means the current directory. */
		if (n == 0)
			r = snprintf(buf, sizeof(buf), "./%s", name);
		else
			r = snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, name);
		if (r > 0 && (size_t)r < sizeof(buf)) {
			int e = check_executable(buf);

			if (e == 0) {
				if ((size_t)r >= size)
					return -ENAMETOOLONG;
				memcpy(ret, buf, (size_t)r + 1);
				return 0;
			}
			if (e == -EACCES)
				first_error = e;
		}
		path += n;
		if (*path == ':')
			path++;
	}
	return first_error;
}

/* path, made exact (ld.so resolves a name without '/' through its search path), into ret. */
static int preload_exact(const char *path, char *ret, size_t size)
{
	char buf[PATH_MAX];

	if (access(path, R_OK) < 0)
		return -errno;
	if (!realpath(path, buf))
		return -errno;
	if (strlen(buf) >= size)
		return -ENAMETOOLONG;
	strcpy(ret, buf);
	return 0;
}

int config_find_preload(const char *path, char *ret, size_t size)
{
	char self[PATH_MAX], tried[3][PATH_MAX];
	size_t n_tried = 0;
	ssize_t n;

	if (path)
		return preload_exact(path, ret, size);
	/*
	 * Beside batond (the build tree), then where an install at any prefix puts it relative
	 * to batond (BINDIR/../lib/baton), then where this build's prefix put it: an install
	 * with another PREFIX than the build's still finds its own shim.
	 */
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		char *slash;

		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			if (snprintf(tried[n_tried], PATH_MAX, "%s/%s", self, PRELOAD_NAME) <
			    PATH_MAX)
				n_tried++;
			if (snprintf(tried[n_tried], PATH_MAX, "%s/../lib/baton/%s", self,
				     PRELOAD_NAME) < PATH_MAX)
				n_tried++;
		}
	}
	(void)snprintf(tried[n_tried++], PATH_MAX, "%s", BATON_LIBDIR "/" PRELOAD_NAME);
	for (size_t i = 0; i < n_tried; i++)
		if (preload_exact(tried[i], ret, size) == 0)
			return 0;
	for (size_t i = 0; i < n_tried; i++)
		log_error("preload library %s not found: tried %s", PRELOAD_NAME, tried[i]);
	return -ENOENT;
}

/*
 * Every problem of a command line is reported, each on its own line, before batond gives up:
 * a user who fixes one should not meet the next only on the following try. Returns -EINVAL.
 */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("%s", msg);
	return -EINVAL;
}

/* --NAME N into *ret; a usage error otherwise. */
static int uint_option(const char *name, const char *arg, unsigned min, unsigned max, unsigned *ret)
{
	if (parse_uint(arg, min, max, ret) == 0)
		return 0;
	if (max == INT_MAX)
		return usage_error("invalid --%s '%s': expected %u or more", name, arg, min);
	return usage_error("invalid --%s '%s': expected %u to %u", name, arg, min, max);
}

/* --NAME DURATION into *ret; a usage error otherwise. */
static int duration_option(const char *name, const char *arg, uint64_t *ret)
{
	if (duration_parse(arg, ret) < 0)
		return usage_error(
			"invalid --%s '%s': expected a duration such as 500ms, 1.5s or 2m", name,
			arg);
	return 0;
}

/*
 * getpwnam_r()/getgrnam_r() and the by-id forms report "not found" as 0 with no entry: -ESRCH.
 * A decimal s is an id. On success *ret_buf holds the entry's strings (the caller frees it).
 */
static int lookup_user(const char *s, struct passwd *ret, char **ret_buf)
{
	bool numeric = *s >= '0' && *s <= '9' && strspn(s, "0123456789") == strlen(s);
	size_t size = NSS_BUFFER_START;

	for (;;) {
		_cleanup_free_ char *buf = malloc(size);
		struct passwd *p = NULL;
		unsigned long id;
		int r;

		if (!buf)
			return -ENOMEM;
		errno = 0;
		id = numeric ? strtoul(s, NULL, 10) : 0;
		if (numeric && (errno || id >= UINT32_MAX))
			return -ERANGE;
		r = numeric ? getpwuid_r((uid_t)id, ret, buf, size, &p)
			    : getpwnam_r(s, ret, buf, size, &p);
		if (r == ERANGE && size < NSS_BUFFER_MAX) {
			size *= 2;
			continue;
		}
		if (r != 0)
			return -r;
		if (!p)
			return -ESRCH;
		*ret_buf = TAKE_PTR(buf);
		return 0;
	}
}

/* --group GROUP: a name or gid, through --fd-allow's look-up of "@GROUP". */
static int lookup_group(const char *s, gid_t *ret)
{
	_cleanup_free_ char *at = NULL;
	bool is_group;
	uid_t unused;

	if (asprintf(&at, "@%s", s) < 0) {
		at = NULL;
		return -ENOMEM;
	}
	return fdsock_parse_allow(at, &unused, ret, &is_group);
}

/* --user USER: its uid, primary gid, name and home, from the user database, now. */
static int user_option(struct config *c, const char *arg)
{
	_cleanup_free_ char *buf = NULL;
	struct passwd pw;
	int r = lookup_user(arg, &pw, &buf);

	if (r == -ESRCH)
		return usage_error("invalid --user '%s': no such user", arg);
	if (r < 0)
		return usage_error("invalid --user '%s': %s", arg, strerror(-r));
	if (strlen(pw.pw_name) >= sizeof(c->user) || strlen(pw.pw_dir) >= sizeof(c->user_home))
		return usage_error("invalid --user '%s': name or home directory too long", arg);
	strcpy(c->user, pw.pw_name);
	strcpy(c->user_home, pw.pw_dir);
	c->creds.set_ids = true;
	c->creds.uid = pw.pw_uid;
	c->creds.gid = pw.pw_gid;
	return 0;
}

/*
 * After every option: --user and --group together. The supplementary groups are the user's
 * (getgrouplist(), as initgroups() would set them in the child, which must not read files);
 * --group alone keeps batond's uid with that one group. Only root can give workers other ids.
 */
static int creds_finish(struct config *c, bool group_given, gid_t group)
{
	struct spawn_creds *k = &c->creds;
	int n = SPAWN_MAX_GROUPS;

	if (!k->set_ids && !group_given)
		return 0;
	k->set_ids = true;
	if (group_given)
		k->gid = group;
	if (!c->user[0]) {
		k->uid = geteuid();
		k->groups[0] = k->gid;
		k->n_groups = 1;
	} else if (getgrouplist(c->user, k->gid, k->groups, &n) < 0) {
		return usage_error("invalid --user '%s': in more than %d groups", c->user,
				   SPAWN_MAX_GROUPS);
	} else {
		k->n_groups = (size_t)n;
	}
	if (geteuid() == 0)
		return 0;
	/* Not root: nothing to change is fine (setgroups() would need CAP_SETGID even then). */
	if (k->uid == geteuid() && k->gid == getegid()) {
		k->set_ids = false;
		return 0;
	}
	return usage_error("--user/--group: batond runs as uid %u, not root: it cannot start "
			   "workers as uid %u gid %u",
			   (unsigned)geteuid(), (unsigned)k->uid, (unsigned)k->gid);
}

/* Counts a problem (r < 0); the first one's errno is what config_parse() returns. */
static void count_problem(int r, unsigned *n, int *first)
{
	if (r >= 0)
		return;
	(*n)++;
	if (!*first)
		*first = r;
}

/* --metrics ADDRESS: TCP on a loopback address, or a Unix socket. */
static int metrics_option(struct config *c, const char *arg)
{
	struct listener *l = &c->metrics;
	bool loopback;
	int r = listener_parse(arg, 0, l);

	if (r < 0 || l->kind == LISTENER_UDP)
		return usage_error("invalid --metrics '%s': expected 127.0.0.1:PORT, [::1]:PORT, "
				   "unix:/path or unix:@name",
				   arg);
	if (l->kind == LISTENER_TCP) {
		if (l->addr.sa.sa_family == AF_INET)
			loopback = (ntohl(l->addr.in.sin_addr.s_addr) >> 24) == 127;
		else
			loopback = IN6_IS_ADDR_LOOPBACK(&l->addr.in6.sin6_addr);
		/* Plain HTTP without authentication: other hosts reach it through a proxy. */
		if (!loopback)
			return usage_error("invalid --metrics '%s': TCP on a loopback address only "
					   "(127.0.0.0/8, ::1), or a Unix socket",
					   arg);
	}
	c->has_metrics = true;
	return 0;
}

/* --pass, checked whole: scm goes alone. */
static int pass_option(const char *arg, unsigned *ret)
{
	unsigned pass;

	if (config_parse_pass(arg, &pass) < 0)
		return usage_error("invalid --pass '%s': expected env, einhorn, server-starter or "
				   "nginx, comma-separated, or scm",
				   arg);
	if ((pass & SPAWN_PASS_SCM) && pass != SPAWN_PASS_SCM)
		return usage_error("invalid --pass '%s': scm goes alone (the listeners travel over "
				   "the channel)",
				   arg);
	*ret = pass;
	return 0;
}

/* -l [NAME=]ADDRESS, appended to c->listeners. */
static int listen_option(struct config *c, const char *arg)
{
	struct listener *l;
	int r;

	if (c->n_listeners >= CONFIG_MAX_LISTENERS)
		return usage_error("too many listeners (at most %d)", CONFIG_MAX_LISTENERS);
	l = &c->listeners[c->n_listeners];
	r = listener_parse(arg, (unsigned)c->n_listeners, l);
	if (r == -EINVAL)
		return usage_error("invalid listen address '%s': expected [NAME=]HOST:PORT, "
				   "[V6ADDR]:PORT, tcp://, udp://, unix:/path or unix:@name",
				   arg);
	if (r == -ERANGE) {
		(void)usage_error("invalid listen address '%s': port out of range (0 to 65535)",
				  arg);
		return r;
	}
	if (r == -EADDRNOTAVAIL)
		return usage_error(
			"invalid listen address '%s': the host does not resolve (expected "
			"a numeric address, a name from /etc/hosts, or *)",
			arg);
	if (r < 0)
		return log_error_errno(r, "invalid listen address '%s'", arg);
	for (size_t i = 0; i < c->n_listeners; i++)
		if (strcmp(c->listeners[i].name, l->name) == 0)
			return usage_error("duplicate listener name '%s'", l->name);
	c->n_listeners++;
	return 0;
}

int config_parse(int argc, char **argv, struct config *c)
{
	enum {
		OPT_BACKLOG = 0x100,
		OPT_BATCH,
		OPT_READY,
		OPT_READY_TIMEOUT,
		OPT_DRAIN_SIGNAL,
		OPT_DRAIN_TIMEOUT,
		OPT_PID_FILE,
		OPT_STOP_MODE,
		OPT_STOP_TIMEOUT,
		OPT_PRELOAD,
		OPT_FDSTORE,
		OPT_UPGRADE_CHECK,
		OPT_NAME,
		OPT_PASS,
		OPT_FD_SOCKET,
		OPT_FD_ALLOW,
		OPT_NO_CONTROL,
		OPT_METRICS,
		OPT_NOTIFY_SOCKET,
		OPT_USER,
		OPT_GROUP,
		OPT_NO_NEW_PRIVS,
		OPT_INTERCEPT,
		OPT_START_NICE,
		OPT_RELOAD_ON_CHANGE,
	};
	static const struct option options[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "backlog", required_argument, NULL, OPT_BACKLOG },
		{ "workers", required_argument, NULL, 'n' },
		{ "batch", required_argument, NULL, OPT_BATCH },
		{ "ready", required_argument, NULL, OPT_READY },
		{ "ready-timeout", required_argument, NULL, OPT_READY_TIMEOUT },
		{ "drain-signal", required_argument, NULL, OPT_DRAIN_SIGNAL },
		{ "drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT },
		{ "pid-file", required_argument, NULL, OPT_PID_FILE },
		{ "stop-mode", required_argument, NULL, OPT_STOP_MODE },
		{ "stop-timeout", required_argument, NULL, OPT_STOP_TIMEOUT },
		{ "preload", optional_argument, NULL, OPT_PRELOAD },
		{ "intercept", no_argument, NULL, OPT_INTERCEPT },
		{ "fdstore", no_argument, NULL, OPT_FDSTORE },
		{ "control", required_argument, NULL, 'c' },
		{ "no-control", no_argument, NULL, OPT_NO_CONTROL },
		{ "metrics", required_argument, NULL, OPT_METRICS },
		{ "notify-socket", required_argument, NULL, OPT_NOTIFY_SOCKET },
		{ "start-nice", required_argument, NULL, OPT_START_NICE },
		{ "reload-on-change", required_argument, NULL, OPT_RELOAD_ON_CHANGE },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "pass", required_argument, NULL, OPT_PASS },
		{ "fd-socket", required_argument, NULL, OPT_FD_SOCKET },
		{ "fd-allow", required_argument, NULL, OPT_FD_ALLOW },
		{ "user", required_argument, NULL, OPT_USER },
		{ "group", required_argument, NULL, OPT_GROUP },
		{ "no-new-privs", no_argument, NULL, OPT_NO_NEW_PRIVS },
		{ &UPGRADE_CHECK_OPTION[2], no_argument, NULL, OPT_UPGRADE_CHECK },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	bool upgrade_check = false, drain_signal_given = false, group_given = false;
	bool start_nice_given = false;
	bool intercept = false;
	gid_t group = 0;
	unsigned u, problems = 0;
	int longindex = 0, first_error = 0;
	int opt, r;

	memset(c, 0, sizeof(*c));
	c->backlog = LISTENER_BACKLOG_DEFAULT;
	c->start_nice = CONFIG_START_NICE_DEFAULT;
	c->rollout.n_workers = 1;
	c->rollout.ready_mode = ROLLOUT_READY_NOTIFY;
	c->rollout.ready_timeout_usec = CONFIG_READY_TIMEOUT_DEFAULT_USEC;
	c->rollout.drain_timeout_usec = CONFIG_DRAIN_TIMEOUT_DEFAULT_USEC;
	c->drain_signal = SIGTERM;
	c->stop_mode = CONFIG_STOP_GRACEFUL;
	c->stop_timeout_usec = CONFIG_STOP_TIMEOUT_DEFAULT_USEC;
	c->log_level = LOG_INFO;

	optind = 0; /* full reset: config_parse may run more than once (tests) */
	opterr = 0;
	/*
	 * '+': stop at the first non-option, which is the worker command. Each option is checked
	 * whole where it is parsed; a problem is logged and counted, and parsing goes on, so that
	 * every problem of the command line is reported at once.
	 */
	while ((opt = getopt_long(argc, argv, "+:l:n:c:vhV", options, &longindex)) >= 0) {
		switch (opt) {
		case 'l':
			r = listen_option(c, optarg);
			break;
		case OPT_BACKLOG:
			r = uint_option("backlog", optarg, 1, INT_MAX, &u);
			if (r >= 0)
				c->backlog = (int)u;
			break;
		case OPT_RELOAD_ON_CHANGE:
			if (!*optarg)
				r = usage_error("invalid --reload-on-change '': empty path");
			else if (c->n_reload_on_change >= CONFIG_MAX_WATCH)
				r = usage_error("--reload-on-change %s: at most %d paths", optarg,
						CONFIG_MAX_WATCH);
			else {
				c->reload_on_change[c->n_reload_on_change++] = optarg;
				r = 0;
			}
			break;
		case OPT_START_NICE:
			r = uint_option("start-nice", optarg, 0, 19, &u);
			if (r >= 0) {
				c->start_nice = (int)u;
				start_nice_given = true;
			}
			break;
		case 'n':
		case OPT_BATCH:
			r = uint_option(opt == 'n' ? "workers" : "batch", optarg, 1,
					ROLLOUT_MAX_WORKERS, &u);
			if (r >= 0)
				*(opt == 'n' ? &c->rollout.n_workers : &c->rollout.batch) = u;
			break;
		case OPT_PASS:
			r = pass_option(optarg, &c->pass);
			break;
		case OPT_FD_SOCKET:
			r = *optarg ? 0 : usage_error("invalid --fd-socket '': empty path");
			if (r >= 0)
				c->fd_socket = optarg;
			break;
		case OPT_FD_ALLOW: {
			uid_t uid;
			gid_t gid;
			bool is_group;

			r = fdsock_parse_allow(optarg, &uid, &gid, &is_group);
			if (r < 0) {
				r = usage_error("invalid --fd-allow '%s': expected a user (name or "
						"uid) or @group (name or gid): %s",
						optarg, strerror(-r));
				break;
			}
			if (c->n_fd_allow_uids >= CONFIG_MAX_ALLOW ||
			    c->n_fd_allow_gids >= CONFIG_MAX_ALLOW)
				r = usage_error("too many --fd-allow (at most %d)",
						CONFIG_MAX_ALLOW);
			else if (is_group)
				c->fd_allow_gids[c->n_fd_allow_gids++] = gid;
			else
				c->fd_allow_uids[c->n_fd_allow_uids++] = uid;
			break;
		}
		case OPT_READY:
			/* einhorn's own readiness: the worker's "worker:ack" on its socket. */
			c->ready_einhorn = strcmp(optarg, "einhorn-ack") == 0;
			c->ready_listening = strcmp(optarg, "listening") == 0;
			r = 0;
			if (c->ready_einhorn || c->ready_listening)
				c->rollout.ready_mode = ROLLOUT_READY_NOTIFY;
			else if (config_parse_ready(optarg, &c->rollout.ready_mode,
						    &c->rollout.ready_delay_usec) < 0)
				r = usage_error("invalid --ready '%s': expected notify, listening, "
						"einhorn-ack, delay:DURATION or none",
						optarg);
			break;
		case OPT_READY_TIMEOUT:
		case OPT_DRAIN_TIMEOUT:
		case OPT_STOP_TIMEOUT:
			/* Only long options: longindex names the one given. */
			r = duration_option(
				options[longindex].name, optarg,
				opt == OPT_READY_TIMEOUT   ? &c->rollout.ready_timeout_usec
				: opt == OPT_DRAIN_TIMEOUT ? &c->rollout.drain_timeout_usec
							   : &c->stop_timeout_usec);
			break;
		case OPT_DRAIN_SIGNAL:
			r = config_parse_signal(optarg);
			if (r < 0) {
				r = usage_error(
					"invalid --drain-signal '%s': expected a signal name "
					"such as TERM or QUIT, or a number",
					optarg);
				break;
			}
			/* Neither can be caught: the worker would die with its requests, not drain. */
			if (r == SIGKILL || r == SIGSTOP) {
				r = usage_error(
					"invalid --drain-signal '%s': a worker cannot catch "
					"SIG%s, so it could not finish what it holds (for no "
					"drain at all: --drain-timeout 0)",
					optarg, sigabbrev_np(r));
				break;
			}
			c->drain_signal = r;
			drain_signal_given = true;
			break;
		case OPT_STOP_MODE:
			r = 0;
			if (strcmp(optarg, "graceful") == 0)
				c->stop_mode = CONFIG_STOP_GRACEFUL;
			else if (strcmp(optarg, "immediate") == 0)
				c->stop_mode = CONFIG_STOP_IMMEDIATE;
			else
				r = usage_error("invalid --stop-mode '%s': expected graceful or "
						"immediate",
						optarg);
			break;
		case OPT_PRELOAD:
			r = config_find_preload(optarg, c->preload, sizeof(c->preload));
			if (r < 0 && optarg)
				(void)log_error_errno(r, "preload library %s", optarg);
			break;
		case OPT_INTERCEPT:
			intercept = true;
			r = 0;
			break;
		case OPT_UPGRADE_CHECK:
			upgrade_check = true;
			r = 0;
			break;
		case 'c':
			r = *optarg ? 0 : usage_error("invalid --control '': empty path");
			if (r >= 0)
				c->control = optarg;
			break;
		case OPT_NO_CONTROL:
			c->no_control = true;
			r = 0;
			break;
		case OPT_METRICS:
			r = metrics_option(c, optarg);
			break;
		case OPT_NOTIFY_SOCKET:
			/* Checked here, bound at start: nothing is bound before the whole line is valid. */
			r = strcmp(optarg, "@") == 0 || (optarg[0] == '/' &&
							 strlen(optarg) < NOTIFY_ADDRESS_MAX)
				    ? 0
				    : usage_error(
					      "invalid --notify-socket '%s': expected an absolute "
					      "path (under %d bytes) or @",
					      optarg, NOTIFY_ADDRESS_MAX);
			if (r >= 0)
				c->notify_socket = optarg;
			break;
		case OPT_NAME:
			r = 0;
			if (!listener_name_is_valid(optarg) || strchr(optarg, '/'))
				r = usage_error(
					"invalid --name '%s': expected printable characters "
					"without '/' or ':'",
					optarg);
			else
				c->name = optarg;
			break;
		case OPT_FDSTORE:
			c->fdstore = true;
			r = 0;
			break;
		case OPT_USER:
			r = user_option(c, optarg);
			break;
		case OPT_GROUP:
			r = lookup_group(optarg, &group);
			if (r == -ESRCH)
				r = usage_error("invalid --group '%s': no such group", optarg);
			else if (r < 0)
				r = usage_error("invalid --group '%s': %s", optarg, strerror(-r));
			else
				group_given = true;
			break;
		case OPT_NO_NEW_PRIVS:
			c->creds.no_new_privs = true;
			r = 0;
			break;
		case OPT_PID_FILE:
			r = *optarg ? 0 : usage_error("invalid --pid-file '': empty path");
			if (r >= 0)
				c->pid_file = optarg;
			break;
		case 'v':
			c->log_level = LOG_DEBUG;
			r = 0;
			break;
		case 'h':
			config_help(stdout);
			return CONFIG_EXIT;
		case 'V':
			(void)printf("batond %s\n", BATON_VERSION);
			return CONFIG_EXIT;
		case ':':
			r = usage_error("option '%s' needs an argument", argv[optind - 1]);
			break;
		default:
			r = usage_error("unknown option '%s'", argv[optind - 1]);
			break;
		}
		count_problem(r, &problems, &first_error);
	}

	/* What options say together, each problem reported. */
	/*
	 * Sockets from systemd (LISTEN_FDS) may be all there is; sysd_inherit() takes them. They
	 * are not in the environment any more when batond upgrades itself: the preflight and the
	 * new image take them from the running batond, whose command line may have no --listen.
	 */
	if (c->n_listeners == 0 && !getenv("LISTEN_FDS") && !upgrade_check &&
	    !getenv(UPGRADE_ENV_STATE) && !getenv("BATON_HANDOFF_LISTENERS"))
		count_problem(usage_error("no listener: give at least one --listen ADDRESS"),
			      &problems, &first_error);
	/* --intercept is a hand-off of its own: nothing at fds 3.., nothing in the environment. */
	if (intercept && c->pass)
		count_problem(
			usage_error("--intercept hands the listeners over at bind(): not with "
				    "--pass"),
			&problems, &first_error);
	if (intercept && c->preload[0])
		count_problem(usage_error("--intercept and --preload exclude each other (both "
					  "swap listeners in at bind())"),
			      &problems, &first_error);
	if (intercept)
		c->pass = SPAWN_PASS_INTERCEPT;
	if (!c->pass)
		c->pass = SPAWN_PASS_ENV;
	if ((c->pass & SPAWN_PASS_SCM) && c->preload[0])
		count_problem(
			usage_error("--preload needs the listeners at fds 3..: not with --pass "
				    "scm"),
			&problems, &first_error);
	if ((c->n_fd_allow_uids || c->n_fd_allow_gids) && !c->fd_socket)
		count_problem(usage_error("--fd-allow needs --fd-socket"), &problems, &first_error);
	if (c->no_control && c->control)
		count_problem(usage_error("--no-control and --control exclude each other"),
			      &problems, &first_error);
	/*
	 * Lowering a priority is free; giving it back needs CAP_SYS_NICE or an RLIMIT_NICE that
	 * reaches batond's own nice value. Without either, --start-nice would leave every new
	 * generation slow for good: refused when asked for, and the default is off.
	 */
	if (c->start_nice > 0 && !nice_can_be_restored()) {
		if (start_nice_given)
			count_problem(usage_error("--start-nice %d: this batond could not give a "
						  "ready worker its priority back (needs "
						  "CAP_SYS_NICE, or RLIMIT_NICE of %d or more: "
						  "LimitNICE= in a unit, ulimit -e)",
						  c->start_nice, 20 - getpriority(PRIO_PROCESS, 0)),
				      &problems, &first_error);
		else
			c->start_nice = 0;
	}
	/* The shim learns the listeners from LISTEN_FDS, whatever else the server reads. */
	if (c->preload[0])
		c->pass |= SPAWN_PASS_ENV;
	if (c->ready_einhorn && !(c->pass & SPAWN_PASS_EINHORN))
		count_problem(usage_error("--ready einhorn-ack needs --pass einhorn"), &problems,
			      &first_error);
	/* Each server's own graceful signal, unless told otherwise: einhorn USR2, nginx QUIT. */
	if (!drain_signal_given && c->pass == SPAWN_PASS_EINHORN)
		c->drain_signal = SIGUSR2;
	else if (!drain_signal_given && (c->pass & SPAWN_PASS_NGINX))
		c->drain_signal = SIGQUIT;
	if (c->rollout.batch > c->rollout.n_workers)
		c->rollout.batch = c->rollout.n_workers;
	count_problem(creds_finish(c, group_given, group), &problems, &first_error);
	if (optind >= argc) {
		count_problem(
			usage_error("no worker command: batond [OPTIONS] -- COMMAND [ARG]..."),
			&problems, &first_error);
	} else {
		c->argv = argv + optind;
		r = config_find_executable(c->argv[0], getenv("PATH"), c->exec_path,
					   sizeof(c->exec_path));
		if (r < 0)
			count_problem(log_error_errno(r, "worker command '%s'", c->argv[0]),
				      &problems, &first_error);
	}
	if (problems) {
		log_error("%u problem%s with the command line (try 'batond --help')", problems,
			  problems == 1 ? "" : "s");
		return first_error;
	}
	if (upgrade_check) {
		/* The running batond asks before it execs us: can we take over its state? */
		(void)printf("baton-upgrade-ok %d\n", UPGRADE_STATE_VERSION);
		return CONFIG_EXIT;
	}
	return CONFIG_RUN;
}
