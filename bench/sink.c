/* sink.c - the do-nothing subscriber: the broker's own delivery rate, the ceiling of the ingest
 * benchmark. Subscribes like outpost-bridge as the benchmark runs it (MQTT v5, mutual TLS on the
 * internal listener, QoS 1 plain subscription to the telemetry topics: the single bridge of the
 * shipped stack has an empty share_group) and only counts what arrives.
 *
 * Usage: bench_sink --pki DIR --port INTERNAL_PORT --expect N [--ready FILE] [--timeout S]
 *                   [--topic FILTER]
 * Creates FILE once subscribed; prints one key=value line when N messages arrived (or at the
 * timeout, or after 5 s without messages): rate from the first to the last message. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "bench_util.h"

#define PROG "bench_sink"

static long long count, expect;
static int64_t first_us, last_us;
static int subscribed;
static size_t bytes;

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *p)
{
	(void)flags;
	(void)p;
	if (rc)
		bench_die(PROG, "CONNACK %d", rc);
	mosquitto_subscribe_v5(m, NULL, ud, 1, 0, NULL);
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *q,
                         const mosquitto_property *p)
{
	(void)m;
	(void)ud;
	(void)mid;
	(void)n;
	(void)q;
	(void)p;
	subscribed = 1;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *p)
{
	(void)m;
	(void)ud;
	(void)p;
	int64_t now = bench_mono_us();
	if (!count)
		first_us = now;
	last_us = now;
	count++;
	bytes += (size_t)msg->payloadlen;
}

int main(int argc, char **argv)
{
	const char *pki = bench_arg(argc, argv, "--pki", NULL);
	int port = (int)bench_arg_l(argc, argv, "--port", 0);
	expect = bench_arg_l(argc, argv, "--expect", 0);
	const char *ready = bench_arg(argc, argv, "--ready", NULL);
	int timeout_s = (int)bench_arg_l(argc, argv, "--timeout", 120);
	char *topic = (char *)bench_arg(argc, argv, "--topic", "outpost/v1/+/telemetry");
	if (!pki || !port || expect < 1) {
		fprintf(stderr, "usage: " PROG " --pki DIR --port PORT --expect N [--ready FILE]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	char ca[1024], crt[1024], key[1024];
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
	snprintf(crt, sizeof(crt), "%s/bridge.crt", pki);
	snprintf(key, sizeof(key), "%s/bridge.key", pki);
	mosquitto_lib_init();
	struct mosquitto *m = mosquitto_new("bench-sink", true, topic);
	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
	if (mosquitto_tls_set(m, ca, NULL, crt, key, NULL) ||
	    mosquitto_tls_opts_set(m, 1, "tlsv1.2", NULL))
		bench_die(PROG, "TLS files in %s", pki);
	mosquitto_connect_v5_callback_set(m, on_connect);
	mosquitto_subscribe_v5_callback_set(m, on_subscribe);
	mosquitto_message_v5_callback_set(m, on_message);
	if (mosquitto_connect_bind_v5(m, "127.0.0.1", port, 60, NULL, NULL))
		bench_die(PROG, "cannot connect to 127.0.0.1:%d", port);
	int64_t end = bench_mono_ms() + (int64_t)timeout_s * 1000;
	int announced = 0;
	while (count < expect && bench_mono_ms() < end) {
		int rc = mosquitto_loop(m, 100, 1000);
		if (rc != MOSQ_ERR_SUCCESS)
			bench_die(PROG, "connection lost: %s", mosquitto_strerror(rc));
		if (subscribed && !announced && ready) {
			FILE *f = fopen(ready, "w");
			if (f)
				fclose(f);
			announced = 1;
		}
		if (count && bench_mono_us() - last_us > 5000000)
			break;
	}
	double secs = (double)(last_us - first_us) / 1e6;
	printf("sink ok=%d msgs=%lld secs=%.3f msg_s=%.0f bytes_per_msg=%.0f\n", count >= expect,
	       count, secs, secs > 0 ? (double)(count - 1) / secs : 0,
	       count ? (double)bytes / (double)count : 0);
	fflush(stdout);
	mosquitto_disconnect_v5(m, 0, NULL);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	return count >= expect ? 0 : 1;
}
