/* SPDX-License-Identifier: MIT */
/* loop.h - small helpers around sd-event: the monotonic clock and one-shot timers. */
#pragma once

#include <stdint.h>

#include <systemd/sd-event.h>

/* CLOCK_MONOTONIC in microseconds: sd-event's unit, and what rollout events carry. */
uint64_t loop_now_usec(void);

/*
 * Creates a CLOCK_MONOTONIC timer source on e, disabled until loop_timer_arm(). accuracy_usec is
 * the slack sd-event may add (1 for short deadlines: its default is 250 ms). Returns 0 and *ret,
 * or a negative errno.
 */
int loop_timer_new(sd_event *e, uint64_t accuracy_usec, sd_event_time_handler_t callback,
		   void *userdata, sd_event_source **ret);

/* Fires s once at usec (CLOCK_MONOTONIC); 0 disarms it. Returns 0 or a negative errno. */
int loop_timer_arm(sd_event_source *s, uint64_t usec);
