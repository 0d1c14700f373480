/* h_device.h - run the real outpost-device binary against a test broker. */
#ifndef H_DEVICE_H
#define H_DEVICE_H

#include <sys/types.h>

#include "harness.h"

struct h_device {
	pid_t pid;
	char *id;
	char *dir; /* state directory (spool inside) */
	char *log;
	const char *pki; /* identity and trust from here instead of the broker's PKI */
	const char *clock_shift; /* if set: the device's wall clock runs ahead by the (signed)
				  * milliseconds written in this file, re-read on every reading */
	const char *bin; /* the binary to run, if not the one built (OUTPOST_DEVICE_BIN) */
};

/* Start device `id` (certificates from b->pki) with short test intervals; extra is a
 * NULL-terminated list of more arguments ("--name", "value", ...) that override the
 * defaults. A device restarted with the same struct keeps its state directory and log. */
void h_device_start(struct h_device *d, const struct h_broker *b, const char *id,
		    const char *const *extra);
int h_device_stop(struct h_device *d); /* SIGTERM; returns the exit status */
void h_device_free(struct h_device *d);

/* Count lines of the device log containing needle. */
int h_log_count(const char *log, const char *needle);

/* Wait (bounded) until the log has at least n lines containing needle. */
int h_log_wait(const char *log, const char *needle, int n, int timeout_ms);

/* Resident set size of a process in KiB (0 if unknown). */
long h_rss_kib(pid_t pid);

#endif
