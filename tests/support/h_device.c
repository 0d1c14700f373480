/* h_device.c - spawn and observe outpost-device for integration tests. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h_device.h"

void h_device_start(struct h_device *d, const struct h_broker *b, const char *id,
		    const char *const *extra)
{
	if (!d->id) {
		d->id = strdup(id);
		d->dir = h_tmpdir("device");
		d->log = h_strf("%s/device.log", d->dir);
	}
	const char *pki = d->pki ? d->pki : b->pki;
	char *state = h_strf("%s/state", d->dir);
	char *wss = h_strf("%d", b->wss_port), *mqtts = h_strf("%d", b->mqtts_port);
	char *ca = h_strf("%s/ca.crt", pki), *bridge = h_strf("%s/bridge.crt", pki);
	char *cert = h_strf("%s/devices/%s.crt", pki, id), *key = h_strf("%s/devices/%s.key", pki, id);
	const char *base[] = {
		d->bin ? d->bin : OUTPOST_DEVICE_BIN, "--id", id, "--broker-host", "localhost", "--wss-port", wss,
		"--mqtts-port", mqtts, "--ca", ca, "--cert", cert, "--key", key, "--bridge-cert", bridge,
		"--state-dir", state, "--sample-interval", "200ms", "--batch-interval", "1s",
		"--collectors", "sim", "--sim-metrics", "5", "--backoff-min", "200ms", "--backoff-max",
		"2s", "--reconnect-spread", "200ms", "--ack-timeout", "3s", "--connect-timeout", "3s", "--poll-interval", "1h",
		"--log-level", "debug", "--proxy", "none"};
	size_t nb = sizeof(base) / sizeof(base[0]), ne = 0;
	while (extra && extra[ne])
		ne++;
	const char **argv = calloc(nb + ne + 1, sizeof(*argv));
	memcpy(argv, base, sizeof(base));
	if (ne)
		memcpy(argv + nb, extra, ne * sizeof(*argv));
	char *env[4] = {NULL};
	if (d->clock_shift) {
		const char *asan = getenv("ASAN_OPTIONS");
		env[0] = h_strf("LD_PRELOAD=%s", OUTPOST_CLOCKSHIFT_LIB);
		env[1] = h_strf("OUTPOST_TEST_CLOCK_SHIFT=%s", d->clock_shift);
		/* the shim is loaded ahead of the sanitizer runtime */
		env[2] = h_strf("ASAN_OPTIONS=%s%sverify_asan_link_order=0", asan ? asan : "",
				asan && *asan ? ":" : "");
	}
	d->pid = h_spawn((char *const *)argv, env, d->log);
	for (int i = 0; env[i]; i++)
		free(env[i]);
	free(argv);
	free(state);
	free(wss);
	free(mqtts);
	free(ca);
	free(bridge);
	free(cert);
	free(key);
}

int h_device_stop(struct h_device *d)
{
	int rc = h_stop(d->pid, 10000);
	d->pid = 0;
	/* a sanitizer report in the device (leak, overflow, UB) fails the test that ran it */
	if (h_log_count(d->log, "Sanitizer") || h_log_count(d->log, "runtime error")) {
		fprintf(stderr, "sanitizer report in %s\n", d->log);
		abort();
	}
	return rc;
}

void h_device_free(struct h_device *d)
{
	if (d->pid > 0)
		h_device_stop(d);
	free(d->id);
	free(d->dir);
	free(d->log);
	memset(d, 0, sizeof(*d));
}

int h_log_count(const char *log, const char *needle)
{
	FILE *f = fopen(log, "r");
	char line[2048];
	int n = 0;
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			n++;
	if (f)
		fclose(f);
	return n;
}

int h_log_wait(const char *log, const char *needle, int n, int timeout_ms)
{
	long long end = h_now_ms() + timeout_ms;
	while (h_now_ms() < end) {
		if (h_log_count(log, needle) >= n)
			return 1;
		h_sleep_ms(50);
	}
	return h_log_count(log, needle) >= n;
}

long h_rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = 0;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}
