/* SPDX-License-Identifier: MIT */
/* loop.c - small helpers around sd-event: the monotonic clock and one-shot timers. */
#include "loop.h"

#include <time.h>

uint64_t loop_now_usec(void)
{
	struct timespec ts;

	/* Cannot fail for CLOCK_MONOTONIC with a valid pointer. */
	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int loop_timer_new(sd_event *e, uint64_t accuracy_usec, sd_event_time_handler_t callback,
		   void *userdata, sd_event_source **ret)
{
	sd_event_source *s = NULL;
	int r;

	r = sd_event_add_time(e, &s, CLOCK_MONOTONIC, UINT64_MAX, accuracy_usec, callback,
			      userdata);
	if (r < 0)
		return r;
	r = sd_event_source_set_enabled(s, SD_EVENT_OFF);
	if (r < 0) {
		(void)sd_event_source_unref(s);
		return r;
	}
	*ret = s;
	return 0;
}

int loop_timer_arm(sd_event_source *s, uint64_t usec)
{
	int r;

	if (usec == 0)
		return sd_event_source_set_enabled(s, SD_EVENT_OFF);
	r = sd_event_source_set_time(s, usec);
	if (r < 0)
		return r;
	return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}
