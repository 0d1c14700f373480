/* loadgen.c - ingest load generator: many simulated devices publish signed batches through the
 * real broker (MQTT v5 over mutual TLS, one connection and certificate per device).
 *
 * Every envelope is built and signed before the clock starts (devices sign on their own CPUs;
 * here the generator shares the bridge's two cores, so it does as little as possible while
 * measuring). Values come from the device's own `sim` collector.
 *
 * Modes:
 *   bridge  each device sends a Birth and one warm-up batch and waits for its ack; then the
 *           clock starts and every device keeps `window` batches unacknowledged in flight
 *           (bridge Acks, like outpost-device). The figure is batches committed and acknowledged
 *           per second, first timed publish to last ack.
 *   sink    the same envelopes, flow-controlled by MQTT PUBACKs only (window per device): for
 *           bench_sink, the do-nothing subscriber that measures the broker's delivery rate.
 *   json    the same readings as JSON, one object per reading (what a typical agent sends), for
 *           the naive Python subscriber.
 * Prints one line of key=value pairs. Usage: see usage() below. */
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "bench_pki.h"
#include "bench_util.h"
#include "dev_collect.h"
#include "outpost.pb-c.h"
#include "wire_batch.h"
#include "wire_cert.h"
#include "wire_env.h"
#include "wire_msg.h"
#include "wire_topic.h"

#define PROG "bench_loadgen"

enum mode { M_BRIDGE, M_SINK, M_JSON };

struct dev {
	char id[WIRE_ID_MAX + 1];
	char topic[WIRE_TOPIC_MAX], ack_topic[WIRE_TOPIC_MAX], birth_topic[WIRE_TOPIC_MAX];
	struct mosquitto *m;
	/* env[0] = Birth (seq 1), env[k] = batch k (seq k + 1, prev_seq k) for k >= 1; on the wire
	 * every seq is BENCH_SEQ0 more, where a device's new spool starts */
	uint8_t **env;
	size_t *len;
	int n_env;
	int next;          /* next env index to publish */
	int limit;         /* publish env[next] only while next < limit */
	uint64_t upto;     /* highest Ack.upto seen (bridge mode) */
	int pub_inflight;  /* publishes waiting for PUBACK (sink/json modes) */
	int connected, subscribed, failed;
	int64_t last_progress_ms;
	int done;
	uint64_t resent;
};

static struct {
	enum mode mode;
	const char *pki;
	int port, ndev, batches, rows, cols, window, threads, timeout_s;
	const char *prefix;
	int first;
	struct dev *devs;
	atomic_int phase; /* 0 connect, 1 warm-up, 2 timed, 3 stop */
	atomic_int connected, warm, finished;
	int64_t t_start_us;
	atomic_llong t_last_us;
	struct wire_pubkey bridge;
	int verify_acks;
	atomic_ullong bad_acks;
} G;

static void usage(void)
{
	fprintf(stderr,
	        "usage: " PROG " --pki DIR --port MQTTS_PORT --devices N --batches PER_DEVICE\n"
	        "       [--rows R] [--cols C] [--window W] [--mode bridge|sink|json] [--threads T]\n"
	        "       [--prefix device-] [--first 1] [--timeout S] [--verify-acks 0|1]\n");
	exit(2);
}

/* ---- building the messages ---- */

struct rowbuf {
	uint32_t id[4096];
	double v[4096];
	char name[4096][24];
	int n, cap;
};

static int sink_fn(void *ctx, const char *name, const char *unit, double value)
{
	struct rowbuf *r = ctx;
	(void)unit;
	if (strncmp(name, "sim.sensor_", 11) || r->n >= r->cap)
		return 0; /* the collector's own health metrics are not part of the load */
	r->id[r->n] = (uint32_t)atoi(name + 11) + 1;
	snprintf(r->name[r->n], sizeof(r->name[r->n]), "%s", name);
	r->v[r->n] = value;
	r->n++;
	return 0;
}

static uint8_t *seal(const struct wire_key *k, const char *id, uint32_t kind, uint64_t seq,
                     const uint8_t *body, size_t blen, size_t *len)
{
	struct wire_env e = {.kind = kind,
	                     .seq = BENCH_SEQ0 + seq,
	                     .sent_at_ms = BENCH_T0_MS + (int64_t)seq * 1000,
	                     .body = body,
	                     .body_len = blen};
	snprintf(e.device_id, sizeof(e.device_id), "%s", id);
	uint8_t *out = NULL;
	if (wire_env_seal(k, &e, &out, len))
		bench_die(PROG, "cannot seal an envelope for %s", id);
	return out;
}

static uint8_t *birth(const struct wire_key *k, struct dev *d, size_t *len)
{
	Outpost__Birth b = OUTPOST__BIRTH__INIT;
	Outpost__SpoolStats sp = OUTPOST__SPOOL_STATS__INIT;
	uint8_t boot[WIRE_BOOT_ID_LEN];
	char path[1024], *pem = NULL;
	size_t pem_len = 0;
	snprintf(path, sizeof(path), "%s/devices/%s.crt", G.pki, d->id);
	if (wire_cert_read(path, &pem, &pem_len))
		bench_die(PROG, "cannot read %s", path);
	uint64_t r = (uint64_t)bench_mono_us() | 1;
	for (size_t i = 0; i < sizeof(boot); i++)
		boot[i] = (uint8_t)bench_rnd(&r);
	int n = G.cols;
	Outpost__MetricDef *defs = bench_xcalloc((size_t)n, sizeof(*defs));
	Outpost__MetricDef **ptrs = bench_xcalloc((size_t)n, sizeof(*ptrs));
	char(*names)[24] = bench_xcalloc((size_t)n, sizeof(*names));
	for (int i = 0; i < n; i++) {
		outpost__metric_def__init(&defs[i]);
		defs[i].id = (uint32_t)i + 1;
		snprintf(names[i], sizeof(names[i]), "sim.sensor_%04d", i);
		defs[i].name = names[i];
		defs[i].unit = i % 4 == 1 ? "count" : i % 4 == 3 ? "lx" : "degC";
		ptrs[i] = &defs[i];
	}
	b.agent_version = "bench-loadgen";
	b.boot_id.data = boot;
	b.boot_id.len = sizeof(boot);
	b.cert_pem = pem;
	b.n_metrics = (size_t)n;
	b.metrics = ptrs;
	b.spool = &sp;
	b.sample_interval_s = 10;
	b.poll_interval_s = 300;
	b.chain_floor = BENCH_SEQ0;
	uint8_t *body = NULL, *env;
	size_t blen;
	if (wire_msg_pack(WIRE_KIND_BIRTH, &b.base, &body, &blen, NULL))
		bench_die(PROG, "cannot pack a Birth");
	env = seal(k, d->id, WIRE_KIND_BIRTH, 1, body, blen, len);
	free(body);
	free(defs);
	free(ptrs);
	free(names);
	free(pem);
	return env;
}

static uint8_t *json_batch(struct dev *d, struct rowbuf *rows, int nrows, int64_t t0, size_t *len)
{
	size_t cap = (size_t)nrows * (size_t)G.cols * 128 + 16, n = 0;
	char *buf = bench_xcalloc(cap, 1);
	buf[n++] = '[';
	for (int r = 0; r < nrows; r++)
		for (int c = 0; c < rows[r].n; c++) {
			int64_t t = t0 + (int64_t)r * 10000;
			n += (size_t)snprintf(buf + n, cap - n,
			                      "%s{\"device_id\":\"%s\",\"metric\":\"%s\",\"timestamp\":%" PRId64
			                      ",\"value\":%.15g}",
			                      n > 1 ? "," : "", d->id, rows[r].name[c], t, rows[r].v[c]);
		}
	buf[n++] = ']';
	*len = n;
	return (uint8_t *)buf;
}

static void build_device(struct dev *d)
{
	char path[1024];
	struct wire_key *k = NULL;
	snprintf(path, sizeof(path), "%s/devices/%s.key", G.pki, d->id);
	if (G.mode != M_JSON && wire_key_load(path, &k, NULL))
		bench_die(PROG, "cannot load %s", path);
	struct dev_collect_conf cc = {.list = "sim", .sim_metrics = G.cols, .seed = d->id};
	struct dev_collect *sim;
	const char *why, *failed;
	if (dev_collect_open(&cc, &sim, &why))
		bench_die(PROG, "sim collector: %s", why);
	d->n_env = G.batches + 1;
	d->env = bench_xcalloc((size_t)d->n_env, sizeof(*d->env));
	d->len = bench_xcalloc((size_t)d->n_env, sizeof(*d->len));
	if (G.mode != M_JSON)
		d->env[0] = birth(k, d, &d->len[0]);
	struct rowbuf *rows = bench_xcalloc((size_t)G.rows, sizeof(*rows));
	struct wire_batch_builder *bb;
	if (wire_batch_builder_new(&bb))
		bench_die(PROG, "out of memory");
	for (int i = 1; i < d->n_env; i++) {
		int64_t t0 = BENCH_T0_MS + (int64_t)(i - 1) * G.rows * 10000;
		for (int r = 0; r < G.rows; r++) {
			rows[r].n = 0;
			rows[r].cap = G.cols;
			dev_collect_sample(sim, sink_fn, &rows[r], &failed, &why);
		}
		if (G.mode == M_JSON) {
			d->env[i] = json_batch(d, rows, G.rows, t0, &d->len[i]);
			continue;
		}
		wire_batch_builder_reset(bb);
		for (int r = 0; r < G.rows; r++) {
			wire_batch_row(bb, t0 + (int64_t)r * 10000);
			for (int c = 0; c < rows[r].n; c++)
				wire_batch_add(bb, rows[r].id[c], rows[r].v[c]);
		}
		uint8_t *body;
		size_t blen;
		if (wire_batch_encode(bb, BENCH_SEQ0 + (i == 1 ? 0 : (uint64_t)i), NULL, 0, &body, &blen))
			bench_die(PROG, "cannot encode a batch");
		d->env[i] = seal(k, d->id, WIRE_KIND_BATCH, (uint64_t)i + 1, body, blen, &d->len[i]);
		free(body);
	}
	wire_batch_builder_free(bb);
	free(rows);
	dev_collect_close(sim);
	wire_key_free(k);
	wire_thread_cleanup();
}

struct build_arg {
	int from, to;
};

static void *build_main(void *p)
{
	struct build_arg *a = p;
	for (int i = a->from; i < a->to; i++)
		build_device(&G.devs[i]);
	return NULL;
}

/* ---- MQTT ---- */

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *p)
{
	struct dev *d = ud;
	(void)flags;
	(void)p;
	if (rc) {
		fprintf(stderr, PROG ": %s: CONNACK %d (%s)\n", d->id, rc, mosquitto_reason_string(rc));
		d->failed = 1;
		return;
	}
	if (G.mode == M_BRIDGE)
		mosquitto_subscribe_v5(m, NULL, d->ack_topic, 1, 0, NULL);
	else
		d->subscribed = 1;
	if (!d->connected) {
		d->connected = 1;
		atomic_fetch_add(&G.connected, 1);
	}
	/* A reconnect: everything not acknowledged goes again (like the device). */
	if (G.mode == M_BRIDGE && d->next > 1 && d->upto + 1 < (uint64_t)d->next + 1) {
		d->next = (int)d->upto; /* env index of seq upto + 1 */
		if (d->next < 1)
			d->next = 1;
	}
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *q,
                         const mosquitto_property *p)
{
	struct dev *d = ud;
	(void)m;
	(void)mid;
	(void)n;
	(void)q;
	(void)p;
	d->subscribed = 1;
}

static void on_publish(struct mosquitto *m, void *ud, int mid, int rc, const mosquitto_property *p)
{
	struct dev *d = ud;
	(void)m;
	(void)mid;
	(void)rc;
	(void)p;
	if (d->pub_inflight > 0)
		d->pub_inflight--;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *p)
{
	struct dev *d = ud;
	struct wire_env e;
	(void)m;
	(void)p;
	if (wire_env_decode(msg->payload, (size_t)msg->payloadlen, &e, NULL) ||
	    e.kind != WIRE_KIND_ACK || strcmp(e.device_id, d->id) ||
	    (G.verify_acks && wire_env_verify(&e, &G.bridge))) {
		atomic_fetch_add(&G.bad_acks, 1);
		return;
	}
	if (e.seq >= BENCH_SEQ0 && e.seq - BENCH_SEQ0 > d->upto) {
		d->upto = e.seq - BENCH_SEQ0;
		d->last_progress_ms = bench_mono_ms();
		atomic_store(&G.t_last_us, bench_mono_us());
	}
}

static void publish_next(struct dev *d)
{
	int rc = mosquitto_publish_v5(d->m, NULL, d->next == 0 ? d->birth_topic : d->topic,
	                              (int)d->len[d->next], d->env[d->next], 1, false, NULL);
	if (rc == MOSQ_ERR_SUCCESS) {
		d->next++;
		d->pub_inflight++;
	}
}

/* Publish what the window allows for d; 1 when d is done. */
static int pump(struct dev *d, int phase, int64_t now)
{
	if (!d->connected || !d->subscribed || d->failed)
		return 0;
	if (G.mode == M_BRIDGE) {
		uint64_t last = (uint64_t)d->n_env; /* seq of the last batch */
		if (phase == 1) {
			while (d->next < 2)
				publish_next(d);
			return d->upto >= 2;
		}
		if (phase < 2)
			return 0;
		if (d->upto >= last)
			return 1;
		/* unacknowledged batches: seqs upto+1 .. next (env index next-1 has seq next) */
		while (d->next < d->n_env && (uint64_t)d->next - d->upto < (uint64_t)G.window)
			publish_next(d);
		if (now - d->last_progress_ms > 10000 && d->next > (int)d->upto) {
			/* no ack moved for 10 s: send the unacknowledged ones again */
			d->resent += (uint64_t)d->next - d->upto;
			d->next = (int)d->upto;
			d->last_progress_ms = now;
		}
		return 0;
	}
	if (phase < 2)
		return 0;
	while (d->next < d->n_env && d->pub_inflight < G.window)
		publish_next(d);
	return d->next == d->n_env && d->pub_inflight == 0;
}

struct loop_arg {
	int from, to;
};

static void *loop_main(void *p)
{
	struct loop_arg *a = p;
	int n = a->to - a->from;
	struct pollfd *pf = bench_xcalloc((size_t)n, sizeof(*pf));
	int phase_seen = 0, warm_done = 0, done = 0;
	uint8_t *finished = bench_xcalloc((size_t)n, 1);
	while (atomic_load(&G.phase) < 3) {
		int phase = atomic_load(&G.phase);
		if (phase != phase_seen) {
			phase_seen = phase;
			for (int i = 0; i < n; i++)
				G.devs[a->from + i].last_progress_ms = bench_mono_ms();
		}
		for (int i = 0; i < n; i++) {
			struct dev *d = &G.devs[a->from + i];
			pf[i].fd = mosquitto_socket(d->m);
			pf[i].events = POLLIN | (mosquitto_want_write(d->m) ? POLLOUT : 0);
			pf[i].revents = 0;
		}
		poll(pf, (nfds_t)n, 5);
		int64_t now = bench_mono_ms();
		for (int i = 0; i < n; i++) {
			struct dev *d = &G.devs[a->from + i];
			int rc = MOSQ_ERR_SUCCESS;
			if (pf[i].revents & (POLLIN | POLLHUP | POLLERR))
				rc = mosquitto_loop_read(d->m, 1000);
			if (rc == MOSQ_ERR_SUCCESS && (pf[i].revents & POLLOUT))
				rc = mosquitto_loop_write(d->m, 1000);
			if (rc == MOSQ_ERR_SUCCESS)
				rc = mosquitto_loop_misc(d->m);
			if (rc != MOSQ_ERR_SUCCESS) {
				d->subscribed = 0;
				if (mosquitto_reconnect(d->m) != MOSQ_ERR_SUCCESS)
					bench_sleep_ms(1);
				continue;
			}
			int fin = pump(d, phase, now);
			if (phase == 1 && fin && !finished[i]) {
				finished[i] = 1;
				warm_done++;
				atomic_fetch_add(&G.warm, 1);
			}
			if (phase == 2 && fin && finished[i] != 2) {
				finished[i] = 2;
				done++;
				atomic_fetch_add(&G.finished, 1);
			}
		}
	}
	(void)warm_done;
	(void)done;
	for (int i = 0; i < n; i++) {
		mosquitto_disconnect_v5(G.devs[a->from + i].m, 0, NULL);
		mosquitto_loop_write(G.devs[a->from + i].m, 1);
	}
	free(pf);
	free(finished);
	return NULL;
}

static int wait_count(atomic_int *c, int want, int timeout_ms)
{
	int64_t end = bench_mono_ms() + timeout_ms;
	while (atomic_load(c) < want && bench_mono_ms() < end)
		bench_sleep_ms(2);
	return atomic_load(c) >= want;
}

int main(int argc, char **argv)
{
	const char *mode = bench_arg(argc, argv, "--mode", "bridge");
	G.mode = !strcmp(mode, "bridge") ? M_BRIDGE : !strcmp(mode, "sink") ? M_SINK
	                                          : !strcmp(mode, "json")   ? M_JSON
	                                                                    : (usage(), M_BRIDGE);
	G.pki = bench_arg(argc, argv, "--pki", NULL);
	G.port = (int)bench_arg_l(argc, argv, "--port", 0);
	G.ndev = (int)bench_arg_l(argc, argv, "--devices", 10);
	G.batches = (int)bench_arg_l(argc, argv, "--batches", 100);
	G.rows = (int)bench_arg_l(argc, argv, "--rows", 1);
	G.cols = (int)bench_arg_l(argc, argv, "--cols", 1);
	G.window = (int)bench_arg_l(argc, argv, "--window", 32);
	G.threads = (int)bench_arg_l(argc, argv, "--threads", 2);
	G.timeout_s = (int)bench_arg_l(argc, argv, "--timeout", 120);
	G.prefix = bench_arg(argc, argv, "--prefix", "device-");
	G.first = (int)bench_arg_l(argc, argv, "--first", 1);
	G.verify_acks = (int)bench_arg_l(argc, argv, "--verify-acks", 0);
	if (!G.pki || !G.port || G.ndev < 1 || G.batches < 1 || G.rows < 1 || G.cols < 1 ||
	    G.cols > 4000 || G.window < 1 || G.window > 100 || G.threads < 1)
		usage();
	if (G.threads > G.ndev)
		G.threads = G.ndev;
	signal(SIGPIPE, SIG_IGN);

	if (G.verify_acks)
		G.bridge = bench_bridge_key(PROG, G.pki);

	/* 1. Build and sign everything, on all cores, before the clock starts. */
	int64_t t_build = bench_mono_ms();
	G.devs = bench_xcalloc((size_t)G.ndev, sizeof(*G.devs));
	for (int i = 0; i < G.ndev; i++) {
		struct dev *d = &G.devs[i];
		snprintf(d->id, sizeof(d->id), "%s%04d", G.prefix, G.first + i);
		wire_topic_build(d->topic, sizeof(d->topic), WIRE_TOPIC_TELEMETRY, d->id);
		wire_topic_build(d->ack_topic, sizeof(d->ack_topic), WIRE_TOPIC_ACK, d->id);
		wire_topic_build(d->birth_topic, sizeof(d->birth_topic), WIRE_TOPIC_BIRTH, d->id);
		d->next = G.mode == M_BRIDGE ? 0 : 1; /* sink/json: batches only */
	}
	{
		int nt = 2;
		pthread_t th[2];
		struct build_arg ba[2];
		for (int t = 0; t < nt; t++) {
			ba[t] = (struct build_arg){G.ndev * t / nt, G.ndev * (t + 1) / nt};
			pthread_create(&th[t], NULL, build_main, &ba[t]);
		}
		for (int t = 0; t < nt; t++)
			pthread_join(th[t], NULL);
	}
	size_t bytes = 0;
	for (int i = 0; i < G.ndev; i++)
		for (int k = 1; k < G.devs[i].n_env; k++)
			bytes += G.devs[i].len[k];
	t_build = bench_mono_ms() - t_build;

	/* 2. Connect every device (mutual TLS with its own certificate). */
	mosquitto_lib_init();
	for (int i = 0; i < G.ndev; i++) {
		struct dev *d = &G.devs[i];
		char ca[1024], crt[1024], key[1024];
		d->m = mosquitto_new(d->id, true, d);
		if (!d->m)
			bench_die(PROG, "mosquitto_new");
		mosquitto_int_option(d->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
		mosquitto_int_option(d->m, MOSQ_OPT_TCP_NODELAY, 1);
		mosquitto_int_option(d->m, MOSQ_OPT_SEND_MAXIMUM, 100);
		mosquitto_max_inflight_messages_set(d->m, 100);
		snprintf(ca, sizeof(ca), "%s/ca.crt", G.pki);
		snprintf(crt, sizeof(crt), "%s/devices/%s.crt", G.pki, d->id);
		snprintf(key, sizeof(key), "%s/devices/%s.key", G.pki, d->id);
		if (mosquitto_tls_set(d->m, ca, NULL, crt, key, NULL) ||
		    mosquitto_tls_opts_set(d->m, 1, "tlsv1.2", NULL))
			bench_die(PROG, "TLS files of %s", d->id);
		mosquitto_connect_v5_callback_set(d->m, on_connect);
		mosquitto_subscribe_v5_callback_set(d->m, on_subscribe);
		mosquitto_publish_v5_callback_set(d->m, on_publish);
		mosquitto_message_v5_callback_set(d->m, on_message);
		int rc = mosquitto_connect_bind_v5(d->m, "127.0.0.1", G.port, 60, NULL, NULL);
		if (rc != MOSQ_ERR_SUCCESS)
			bench_die(PROG, "%s: connect: %s", d->id, mosquitto_strerror(rc));
		mosquitto_loop_write(d->m, 1);
	}
	pthread_t *th = bench_xcalloc((size_t)G.threads, sizeof(*th));
	struct loop_arg *la = bench_xcalloc((size_t)G.threads, sizeof(*la));
	for (int t = 0; t < G.threads; t++) {
		la[t] = (struct loop_arg){G.ndev * t / G.threads, G.ndev * (t + 1) / G.threads};
		pthread_create(&th[t], NULL, loop_main, &la[t]);
	}
	int ok = wait_count(&G.connected, G.ndev, 30000);
	if (ok) {
		/* 3. Warm-up (bridge: births enrol the devices, one batch each is acknowledged). */
		bench_sleep_ms(200); /* SUBACKs */
		atomic_store(&G.phase, 1);
		if (G.mode == M_BRIDGE)
			ok = wait_count(&G.warm, G.ndev, 60000);
	}
	int64_t t0 = 0, t1 = 0;
	if (ok) {
		/* 4. The measured run. */
		t0 = bench_mono_us();
		G.t_start_us = t0;
		atomic_store(&G.t_last_us, t0);
		atomic_store(&G.phase, 2);
		ok = wait_count(&G.finished, G.ndev, G.timeout_s * 1000);
		t1 = bench_mono_us();
		if (G.mode == M_BRIDGE)
			t1 = atomic_load(&G.t_last_us);
	}
	atomic_store(&G.phase, 3);
	for (int t = 0; t < G.threads; t++)
		pthread_join(th[t], NULL);

	uint64_t resent = 0, msgs = 0;
	for (int i = 0; i < G.ndev; i++) {
		resent += G.devs[i].resent;
		if (G.mode == M_BRIDGE)
			msgs += G.devs[i].upto >= 2 ? G.devs[i].upto - 2 : 0;
		else
			msgs += (uint64_t)(G.devs[i].next > 1 ? G.devs[i].next - 1 : 0);
	}
	if (G.mode != M_BRIDGE && ok)
		msgs = (uint64_t)G.ndev * (uint64_t)(G.batches); /* json/sink: all of them */
	double secs = (double)(t1 - t0) / 1e6;
	uint64_t per = (uint64_t)G.rows * (uint64_t)G.cols;
	printf("loadgen mode=%s ok=%d devices=%d msgs=%" PRIu64 " readings=%" PRIu64
	       " secs=%.3f msg_s=%.0f rd_s=%.0f bytes_per_msg=%.0f resent=%" PRIu64
	       " bad_acks=%llu build_ms=%lld connected=%d\n",
	       mode, ok, G.ndev, msgs, msgs * per, secs, secs > 0 ? (double)msgs / secs : 0,
	       secs > 0 ? (double)(msgs * per) / secs : 0,
	       (double)bytes / ((double)G.ndev * G.batches), resent,
	       (unsigned long long)atomic_load(&G.bad_acks), (long long)t_build,
	       atomic_load(&G.connected));
	fflush(stdout);
	for (int i = 0; i < G.ndev; i++) {
		mosquitto_destroy(G.devs[i].m);
		for (int k = 0; k < G.devs[i].n_env; k++)
			free(G.devs[i].env[k]);
		free(G.devs[i].env);
		free(G.devs[i].len);
	}
	mosquitto_lib_cleanup();
	free(G.devs);
	free(th);
	free(la);
	return ok ? 0 : 1;
}
