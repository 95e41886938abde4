/* SPDX-License-Identifier: MIT */
/* control.h - batond's control socket: one request line in, one text reply out (batonctl). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

/*
 * Fair limits (docs/DESIGN.md, "The control socket"): no kind of client can take every slot.
 * Clients still sending their request or taking their reply are "talking": each has a deadline,
 * and a new connection that finds CONTROL_MAX_TALKING of them closes the oldest (an idle one
 * first). Clients waiting for an outcome (reload, retire) and streams (events) have no deadline;
 * streams are capped, and a connection that finds every slot taken by those two is told so.
 */
#define CONTROL_MAX_CLIENTS	     64		       /* connections at once, of every kind */
#define CONTROL_MAX_TALKING	     32		       /* ... sending a request or taking a reply */
#define CONTROL_MAX_STREAMS	     16		       /* ... batonctl events streams */
#define CONTROL_REQUEST_TIMEOUT_USEC (5 * 1000 * 1000) /* connect to a whole request line */
#define CONTROL_REPLY_TIMEOUT_USEC   (10 * 1000 * 1000) /* to take a whole reply */
#define CONTROL_REQUEST_MAX	     1024		/* bytes of one request line */
#define CONTROL_REPLY_MAX	     (4 << 20)		/* bytes of one reply */
#define CONTROL_STREAM_MAX	     (32 * 1024)	/* bytes a stream client may have unsent */
#define CONTROL_NAME_DEFAULT	     "batond"		/* NAME in the default path NAME.sock */

struct control;
struct control_client;

/* Called once per request with the line (no newline); the client stays open until replied. */
typedef void (*control_request_fn)(void *userdata, struct control_client *c, const char *line);

/*
 * Listens on the Unix socket path (0600, replaced only if stale) or adopts listen_fd if it is
 * >= 0 (after an upgrade). Peers must be root or our own effective uid (SO_PEERCRED); a worker
 * that runs as another user (--user) is refused. Returns 0 and *ret, or a negative errno.
 */
int control_new(sd_event *e, const char *path, int listen_fd, control_request_fn fn, void *userdata,
		struct control **ret);

/* Also admits peers of uid: einhorn's socket, which workers running as --user must reach. */
void control_allow_uid(struct control *c, uid_t uid);

/* Closes every client and the socket; removes the socket file unless keep_file. */
struct control *control_free(struct control *c, bool keep_file);

/* The listening fd (for the upgrade handoff). */
int control_fd(const struct control *c);

/* Queues text as the whole reply and closes the client once it is written. */
void control_reply(struct control_client *c, const char *text);

/* Asked by a stream for what it has: it appends with control_stream_write(), or nothing. */
typedef void (*control_fill_fn)(void *userdata, struct control_client *c);

/*
 * Turns c into a stream (batonctl events) instead of one reply: first is written, then fill is
 * called whenever all before has been written, until it adds nothing; control_stream_kick()
 * asks again. Writes never block: a client that reads slowly is simply asked less often. The
 * client stays until it hangs up or control_free(); it is not "waiting" for
 * control_foreach_waiting(). Past CONTROL_MAX_STREAMS streams, c gets a "failed" reply instead.
 */
void control_stream_start(struct control_client *c, const char *first, control_fill_fn fill,
			  void *userdata);

/* From a fill callback: appends text. Returns 0, or -ENOBUFS past CONTROL_STREAM_MAX unsent
 * bytes, or -ENOMEM. */
int control_stream_write(struct control_client *c, const char *text, size_t len);

/* There is something new: asks every stream client whose output is all written for more. */
void control_stream_kick(struct control *c);

/* A slot for the caller: e.g. the generation a waiting "reload" is about. */
void control_client_set_data(struct control_client *c, long data);
long control_client_get_data(const struct control_client *c);

/* The client's pid as the kernel recorded it at connect() (SO_PEERCRED). */
pid_t control_client_pid(const struct control_client *c);

/* Calls fn for every client still waiting for a reply. */
void control_foreach_waiting(struct control *c, void (*fn)(struct control_client *, void *),
			     void *userdata);

/*
 * The default control socket path for name: $RUNTIME_DIRECTORY/NAME.sock, else
 * /run/baton/NAME.sock as root, else $XDG_RUNTIME_DIR/baton/NAME.sock. Returns 0 or -ENOENT
 * (no runtime directory known) / -ENAMETOOLONG.
 */
int control_default_path(const char *name, char *ret, size_t size);
