/* SPDX-License-Identifier: MIT */
/*
 * fuzz_upgrade_state.c - upgrade_state_parse(): the text one batond image hands the next.
 *
 * Input: the state text.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "upgrade_state.h"

/* About 450 KiB each: static, allocated once. */
static struct upgrade_state st, again;
static char text[UPGRADE_STATE_MAX], text_again[UPGRADE_STATE_MAX];

static void check_same(const struct upgrade_state *a, const struct upgrade_state *b)
{
	CHECK(a->next_gen == b->next_gen && a->notify_fd == b->notify_fd &&
	      a->control_fd == b->control_fd);
	CHECK(strcmp(a->notify_address, b->notify_address) == 0);
	CHECK(a->n_listeners == b->n_listeners && a->n_workers == b->n_workers);
	for (size_t i = 0; i < a->n_listeners; i++) {
		const struct upgrade_listener *x = &a->listeners[i], *y = &b->listeners[i];

		CHECK(x->fd == y->fd && x->owns_path == y->owns_path &&
		      x->path_dev == y->path_dev && x->path_ino == y->path_ino &&
		      strcmp(x->name, y->name) == 0);
	}
	for (size_t i = 0; i < a->n_workers; i++) {
		const struct upgrade_worker *x = &a->workers[i], *y = &b->workers[i];

		CHECK(x->w.gen == y->w.gen && x->w.index == y->w.index && x->w.pid == y->w.pid &&
		      x->w.pgid == y->w.pgid && x->w.state == y->w.state &&
		      x->w.spawned_usec == y->w.spawned_usec &&
		      x->w.ready_usec == y->w.ready_usec &&
		      x->w.deadline_usec == y->w.deadline_usec && x->serving == y->serving &&
		      x->channel_fd == y->channel_fd);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size ? size : 1);
	int r, n, m;

	if (!copy)
		return 0;
	/* An exact-size heap copy: ASan sees any read past the text. */
	memcpy(copy, data, size);
	r = upgrade_state_parse(copy, size, &st);
	free(copy);
	CHECK(r == 0 || r == -EBADMSG || r == -EPROTONOSUPPORT);
	if (r < 0)
		return 0;

	/* What the new image will use: fds that can be fds, names batond can hold, states. */
	CHECK(st.notify_fd >= 0 && memchr(st.notify_address, '\0', sizeof(st.notify_address)));
	CHECK(st.control_fd >= -1);
	CHECK(st.n_listeners <= CONFIG_MAX_LISTENERS && st.n_workers <= ROLLOUT_MAX_RECORDS);
	for (size_t i = 0; i < st.n_listeners; i++) {
		const struct upgrade_listener *l = &st.listeners[i];
		size_t len = strnlen(l->name, sizeof(l->name));

		CHECK(l->fd >= 0 && len > 0 && len <= LISTENER_NAME_MAX);
	}
	for (size_t i = 0; i < st.n_workers; i++) {
		const struct upgrade_worker *u = &st.workers[i];

		CHECK(u->w.state == ROLLOUT_W_STARTING || u->w.state == ROLLOUT_W_READY ||
		      u->w.state == ROLLOUT_W_DRAINING || u->w.state == ROLLOUT_W_KILLED);
		CHECK(u->channel_fd >= -1);
	}

	/* What parsed formats, parses to the same state, and formats to the same text. */
	n = upgrade_state_format(&st, text, sizeof(text));
	CHECK(n > 0 && (size_t)n < sizeof(text));
	CHECK(upgrade_state_parse(text, (size_t)n, &again) == 0);
	check_same(&st, &again);
	m = upgrade_state_format(&again, text_again, sizeof(text_again));
	CHECK(m == n && memcmp(text, text_again, (size_t)n) == 0);
	return 0;
}
