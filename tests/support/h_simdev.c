/* h_simdev.c - simulated device: birth, chained signed batches, resend until acknowledged.
 * Built on libmosquitto driven from the device's own thread: Paho's synchronous client
 * serialises every client of a process on one global mutex, far too slow for several
 * devices at once. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "h_simdev.h"
#include "harness.h"
#include "outpost.pb-c.h"
#include "wire_batch.h"
#include "wire_cert.h"
#include "wire_env.h"
#include "wire_msg.h"
#include "wire_sign.h"
#include "wire_topic.h"

struct spooled {
	uint64_t seq;
	uint8_t *buf;
	size_t len;
};

struct h_simdev {
	struct h_simdev_opts o;
	char id[WIRE_ID_MAX + 1];
	char pki[512];
	struct wire_key *key;
	struct wire_pubkey bridge;
	pthread_t th;
	pthread_mutex_t mu;
	int stop;
	int done;
	struct h_simdev_stats st;
	struct spooled *spool; /* ascending seq */
	size_t n_spool;
	uint8_t *sent; /* per produced batch index: 1 sent, 2 dropped */
	uint64_t *batch_seq;
	uint64_t next_seq, last_durable;
	struct wire_dropped pending_drop;
	int has_drop;
	struct mosquitto *mosq;
	int connected; /* CONNACK received on the current connection */
	int fresh;     /* connected, birth and resend not done yet */
	long long last_progress;
	long long started_ms;
};

static void die(const char *what)
{
	fprintf(stderr, "h_simdev: %s\n", what);
	abort();
}

double h_simdev_value(uint64_t seq, int r, int c)
{
	return (double)(seq % 1000000) + r * 0.25 + c * 0.001;
}

/* Times stay near t0 also for clock-numbered seqs (a new spool starts at the clock in µs). */
#define SEQ_TIME_WRAP 1000003u

int64_t h_simdev_time(const struct h_simdev_opts *o, uint64_t seq, int r)
{
	return o->t0_ms + (int64_t)(seq % SEQ_TIME_WRAP) * 1000 + r * 10;
}

static struct wire_key *load_key(const char *pki, const char *name)
{
	struct wire_key *k = NULL;
	char *path = h_strf("%s/%s.key", pki, name);
	if (wire_key_load(path, &k, NULL))
		die(path);
	free(path);
	return k;
}

uint8_t *h_seal(const char *pki, const char *name, uint32_t kind, const char *device_id,
                uint64_t seq, const void *body, size_t body_len, size_t *len)
{
	return h_seal_at(pki, name, kind, device_id, seq,
	                 1700000000000LL + (int64_t)(seq % SEQ_TIME_WRAP), body, body_len, len);
}

uint8_t *h_seal_at(const char *pki, const char *name, uint32_t kind, const char *device_id,
                   uint64_t seq, int64_t sent_at_ms, const void *body, size_t body_len,
                   size_t *len)
{
	struct wire_key *k = load_key(pki, name);
	struct wire_env e = {.kind = kind,
	                     .seq = seq,
	                     .sent_at_ms = sent_at_ms,
	                     .body = body,
	                     .body_len = body_len};
	snprintf(e.device_id, sizeof(e.device_id), "%s", device_id);
	uint8_t *out = NULL;
	if (wire_env_seal(k, &e, &out, len))
		die("seal");
	wire_key_free(k);
	return out;
}

uint8_t *h_birth_body(const char *pki, const char *id, int ncols, uint64_t chain_floor, size_t *len)
{
	return h_birth_body_named(pki, id, ncols, chain_floor, "m", len);
}

uint8_t *h_birth_body_named(const char *pki, const char *id, int ncols, uint64_t chain_floor,
                            const char *prefix, size_t *len)
{
	Outpost__Birth b = OUTPOST__BIRTH__INIT;
	Outpost__SpoolStats sp = OUTPOST__SPOOL_STATS__INIT;
	uint8_t boot[WIRE_BOOT_ID_LEN];
	char *path = h_strf("%s/devices/%s.crt", pki, id), *pem = NULL;
	size_t pem_len = 0;
	if (wire_cert_read(path, &pem, &pem_len))
		die(path);
	free(path);
	for (size_t i = 0; i < sizeof(boot); i++)
		boot[i] = (uint8_t)(rand() & 0xff);
	Outpost__MetricDef *defs = calloc((size_t)ncols + 1, sizeof(*defs));
	Outpost__MetricDef **ptrs = calloc((size_t)ncols + 1, sizeof(*ptrs));
	char **names = calloc((size_t)ncols + 1, sizeof(*names));
	for (int i = 0; i < ncols; i++) {
		outpost__metric_def__init(&defs[i]);
		defs[i].id = (uint32_t)i + 1;
		names[i] = h_strf("%s%d", prefix, i + 1);
		defs[i].name = names[i];
		defs[i].unit = "u";
		ptrs[i] = &defs[i];
	}
	b.agent_version = "simdev/1";
	b.boot_id.data = boot;
	b.boot_id.len = sizeof(boot);
	b.cert_pem = pem;
	b.n_metrics = (size_t)ncols;
	b.metrics = ptrs;
	b.spool = &sp;
	b.sample_interval_s = 1;
	b.poll_interval_s = 300;
	b.chain_floor = chain_floor;
	uint8_t *out = NULL;
	if (wire_msg_pack(WIRE_KIND_BIRTH, &b.base, &out, len, NULL))
		die("pack birth");
	for (int i = 0; i < ncols; i++)
		free(names[i]);
	free(names);
	free(defs);
	free(ptrs);
	free(pem);
	return out;
}

static uint8_t *batch_body(const struct h_simdev_opts *o, uint64_t seq, uint64_t prev,
                           const struct wire_dropped *drop, size_t ndrop, size_t *len)
{
	struct wire_batch_builder *b = NULL;
	uint8_t *out = NULL;
	if (wire_batch_builder_new(&b))
		die("builder");
	for (int r = 0; r < o->rows; r++) {
		if (wire_batch_row(b, h_simdev_time(o, seq, r)))
			die("row");
		for (int c = 0; c < o->cols; c++)
			if (wire_batch_add(b, (uint32_t)c + 1, h_simdev_value(seq, r, c)))
				die("add");
	}
	if (wire_batch_encode(b, prev, drop, ndrop, &out, len))
		die("encode");
	wire_batch_builder_free(b);
	return out;
}

uint8_t *h_batch_body(const struct h_simdev_opts *o, uint64_t seq, uint64_t prev_seq, size_t *len)
{
	return batch_body(o, seq, prev_seq, NULL, 0, len);
}

static uint8_t *seal_with(struct h_simdev *d, uint32_t kind, uint64_t seq, const uint8_t *body,
                          size_t body_len, size_t *len)
{
	struct wire_env e = {.kind = kind,
	                     .seq = seq,
	                     .sent_at_ms = 1700000000000LL + (int64_t)(seq % SEQ_TIME_WRAP),
	                     .body = body,
	                     .body_len = body_len};
	snprintf(e.device_id, sizeof(e.device_id), "%s", d->id);
	uint8_t *out = NULL;
	if (wire_env_seal(d->key, &e, &out, len))
		die("seal");
	return out;
}

/* Publish QoS 1 without waiting (libmosquitto queues and retries on its own). */
static int pub(struct h_simdev *d, enum wire_topic t, const void *buf, size_t len, const char *resp,
               const void *corr, size_t corr_len)
{
	char topic[WIRE_TOPIC_MAX];
	mosquitto_property *props = NULL;
	wire_topic_build(topic, sizeof(topic), t, d->id);
	if (resp)
		mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, resp);
	if (corr)
		mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, corr,
		                              (uint16_t)corr_len);
	int rc = mosquitto_publish_v5(d->mosq, NULL, topic, (int)len, buf, 1, false, props);
	mosquitto_property_free_all(&props);
	return rc == MOSQ_ERR_SUCCESS ? 0 : -1;
}

/* After each connect: birth (fresh seq), then everything unacknowledged, in order. */
static int hello(struct h_simdev *d)
{
	size_t blen, elen;
	/* chain_floor: prev_seq of the oldest spooled batch, or the last durable seq. */
	uint64_t floor = d->last_durable;
	if (d->n_spool) {
		struct wire_env e;
		struct wire_batch *b = NULL;
		if (!wire_env_decode(d->spool[0].buf, d->spool[0].len, &e, NULL) &&
		    !wire_batch_decode(e.body, e.body_len, &b, NULL))
			floor = b->prev_seq;
		wire_batch_free(b);
	}
	pthread_mutex_lock(&d->mu);
	uint64_t seq = d->next_seq++;
	pthread_mutex_unlock(&d->mu);
	uint8_t *body = h_birth_body(d->pki, d->id, d->o.cols, floor, &blen);
	uint8_t *env = seal_with(d, WIRE_KIND_BIRTH, seq, body, blen, &elen);
	free(body);
	int rc = pub(d, WIRE_TOPIC_BIRTH, env, elen, NULL, NULL, 0);
	free(env);
	for (size_t i = 0; i < d->n_spool && !rc; i++) {
		rc = pub(d, WIRE_TOPIC_TELEMETRY, d->spool[i].buf, d->spool[i].len, NULL, NULL, 0);
		pthread_mutex_lock(&d->mu);
		d->st.resent++;
		pthread_mutex_unlock(&d->mu);
	}
	return rc;
}

static void handle_ack(struct h_simdev *d, const uint8_t *buf, size_t len)
{
	struct wire_env e;
	Outpost__Ack *a = NULL;
	if (wire_env_decode(buf, len, &e, NULL) || e.kind != WIRE_KIND_ACK ||
	    strcmp(e.device_id, d->id) || wire_env_verify(&e, &d->bridge) ||
	    wire_ack_decode(e.body, e.body_len, &a, NULL) || a->upto != e.seq) {
		pthread_mutex_lock(&d->mu);
		d->st.bad_acks++;
		pthread_mutex_unlock(&d->mu);
		wire_msg_free(a);
		return;
	}
	size_t keep = 0;
	for (size_t i = 0; i < d->n_spool; i++) {
		uint64_t s = d->spool[i].seq;
		int covered = s <= a->upto;
		for (size_t r = 0; r < a->n_ranges && !covered; r++)
			covered = s >= a->ranges[r]->first && s <= a->ranges[r]->last;
		if (covered)
			free(d->spool[i].buf);
		else
			d->spool[keep++] = d->spool[i];
	}
	pthread_mutex_lock(&d->mu);
	d->n_spool = keep;
	d->st.spooled = keep;
	d->st.acks++;
	if (a->upto > d->st.upto)
		d->st.upto = a->upto;
	pthread_mutex_unlock(&d->mu);
	wire_msg_free(a);
}

static int poll_tasks(struct h_simdev *d)
{
	Outpost__TaskPoll p = OUTPOST__TASK_POLL__INIT;
	uint8_t *body = NULL, corr[16];
	size_t blen, elen;
	char resp[WIRE_TOPIC_MAX];
	p.max_tasks = 8;
	if (wire_msg_pack(WIRE_KIND_TASK_POLL, &p.base, &body, &blen, NULL))
		die("pack poll");
	pthread_mutex_lock(&d->mu);
	uint64_t seq = d->next_seq++;
	pthread_mutex_unlock(&d->mu);
	uint8_t *env = seal_with(d, WIRE_KIND_TASK_POLL, seq, body, blen, &elen);
	for (size_t i = 0; i < sizeof(corr); i++)
		corr[i] = (uint8_t)rand();
	wire_topic_build(resp, sizeof(resp), WIRE_TOPIC_TASKS, d->id);
	int rc = pub(d, WIRE_TOPIC_TASKS_POLL, env, elen, resp, corr, sizeof(corr));
	free(body);
	free(env);
	return rc;
}

/* Produce the next batch into the spool (or drop it); publish it. */
static int produce(struct h_simdev *d)
{
	size_t blen, elen;
	int k = d->st.produced;
	if (d->o.poll_every && k && k % d->o.poll_every == 0 && poll_tasks(d))
		return -1;
	pthread_mutex_lock(&d->mu);
	uint64_t seq = d->next_seq++;
	d->batch_seq[k] = seq;
	pthread_mutex_unlock(&d->mu);
	if (d->o.drop_every && (k + 1) % d->o.drop_every == 0 && k + 1 < d->o.batches) {
		/* Spool overflow: this one is never sent; the next batch reports it. */
		if (!d->has_drop)
			d->pending_drop = (struct wire_dropped){d->last_durable, seq, 0};
		d->pending_drop.last_seq = seq;
		d->pending_drop.count++;
		d->has_drop = 1;
		d->last_durable = seq;
		pthread_mutex_lock(&d->mu);
		d->sent[k] = 2;
		d->st.produced++;
		d->st.dropped++;
		d->st.last_seq = seq;
		pthread_mutex_unlock(&d->mu);
		return 0;
	}
	uint8_t *body =
	    batch_body(&d->o, seq, d->last_durable, d->has_drop ? &d->pending_drop : NULL,
	               d->has_drop ? 1 : 0, &blen);
	d->has_drop = 0;
	uint8_t *env = seal_with(d, WIRE_KIND_BATCH, seq, body, blen, &elen);
	free(body);
	d->last_durable = seq;
	d->spool[d->n_spool++] = (struct spooled){seq, env, elen};
	pthread_mutex_lock(&d->mu);
	d->sent[k] = 1;
	d->st.produced++;
	d->st.spooled = d->n_spool;
	d->st.last_seq = seq;
	d->st.sent++;
	pthread_mutex_unlock(&d->mu);
	return pub(d, WIRE_TOPIC_TELEMETRY, env, elen, NULL, NULL, 0);
}

static int stopping(struct h_simdev *d)
{
	pthread_mutex_lock(&d->mu);
	int s = d->stop;
	pthread_mutex_unlock(&d->mu);
	return s;
}

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags,
                       const mosquitto_property *p)
{
	struct h_simdev *d = ud;
	char topic[WIRE_TOPIC_MAX];
	(void)flags;
	(void)p;
	if (rc)
		return;
	wire_topic_build(topic, sizeof(topic), WIRE_TOPIC_ACK, d->id);
	mosquitto_subscribe_v5(m, NULL, topic, 1, 0, NULL);
	d->connected = 1;
	d->fresh = 1;
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc, const mosquitto_property *p)
{
	struct h_simdev *d = ud;
	(void)m;
	(void)rc;
	(void)p;
	d->connected = 0;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *p)
{
	struct h_simdev *d = ud;
	(void)m;
	(void)p;
	handle_ack(d, msg->payload, (size_t)msg->payloadlen);
}

/* libmosquitto initialises OpenSSL lazily at the first connect without a lock (2.0.11): keep
 * the devices' connects apart. */
static pthread_mutex_t connect_mu = PTHREAD_MUTEX_INITIALIZER;

static void *run(void *arg)
{
	struct h_simdev *d = arg;
	uint64_t last_upto = 0;
	size_t last_spooled = 0;
	int have_socket = 0;
	d->last_progress = h_now_ms();
	d->started_ms = h_now_ms();
	while (!stopping(d)) {
		if (!have_socket) {
			pthread_mutex_lock(&connect_mu);
			int rc = mosquitto_connect(d->mosq, "127.0.0.1", d->o.port, 30);
			pthread_mutex_unlock(&connect_mu);
			if (rc != MOSQ_ERR_SUCCESS) {
				h_sleep_ms(200);
				continue;
			}
			have_socket = 1;
		}
		if (mosquitto_loop(d->mosq, 10, 1) != MOSQ_ERR_SUCCESS) {
			d->connected = 0;
			h_sleep_ms(100);
			pthread_mutex_lock(&connect_mu);
			have_socket = mosquitto_reconnect(d->mosq) == MOSQ_ERR_SUCCESS;
			pthread_mutex_unlock(&connect_mu);
			continue;
		}
		if (!d->connected)
			continue;
		int bad = 0;
		if (d->fresh) {
			d->fresh = 0;
			pthread_mutex_lock(&d->mu);
			d->st.reconnects++;
			pthread_mutex_unlock(&d->mu);
			bad = hello(d) != 0;
			d->last_progress = h_now_ms();
		}
		while (!bad && d->st.produced < d->o.batches && d->n_spool < (size_t)d->o.window) {
			if (d->o.rate > 0 &&
			    h_now_ms() <
			        d->started_ms + (long long)d->st.produced * 1000 / d->o.rate)
				break;
			bad = produce(d) != 0;
		}
		if (d->st.upto != last_upto || d->n_spool != last_spooled) {
			last_upto = d->st.upto;
			last_spooled = d->n_spool;
			d->last_progress = h_now_ms();
		}
		/* No ack moved for a while with batches in flight: send them all again. */
		if (!bad && d->n_spool && h_now_ms() - d->last_progress > d->o.ack_timeout_ms) {
			for (size_t i = 0; i < d->n_spool && !bad; i++) {
				bad = pub(d, WIRE_TOPIC_TELEMETRY, d->spool[i].buf, d->spool[i].len,
				          NULL, NULL, 0) != 0;
				pthread_mutex_lock(&d->mu);
				d->st.resent++;
				pthread_mutex_unlock(&d->mu);
			}
			d->last_progress = h_now_ms();
		}
		pthread_mutex_lock(&d->mu);
		d->done = d->st.produced == d->o.batches && d->n_spool == 0 && !d->has_drop;
		pthread_mutex_unlock(&d->mu);
		if (bad)
			mosquitto_disconnect(d->mosq);
	}
	mosquitto_disconnect(d->mosq);
	mosquitto_loop(d->mosq, 10, 1);
	return NULL;
}

struct h_simdev *h_simdev_start(const struct h_simdev_opts *o)
{
	struct h_simdev *d = calloc(1, sizeof(*d));
	d->o = *o;
	if (d->o.rows < 1)
		d->o.rows = 1;
	if (d->o.cols < 1)
		d->o.cols = 1;
	if (d->o.window < 1)
		d->o.window = 16;
	if (d->o.ack_timeout_ms <= 0)
		d->o.ack_timeout_ms = 2000;
	snprintf(d->id, sizeof(d->id), "%s", o->id);
	snprintf(d->pki, sizeof(d->pki), "%s", o->pki);
	d->o.id = d->id;
	d->o.pki = d->pki;
	char *name = h_strf("devices/%s", o->id);
	d->key = load_key(o->pki, name);
	free(name);
	char *bpath = h_strf("%s/bridge.crt", o->pki), *pem = NULL;
	size_t plen;
	struct wire_cert_info info;
	if (wire_cert_read(bpath, &pem, &plen) || wire_cert_parse(pem, plen, &info, NULL))
		die(bpath);
	d->bridge = info.key;
	free(pem);
	free(bpath);
	d->spool = calloc((size_t)d->o.window + 1, sizeof(*d->spool));
	d->sent = calloc((size_t)d->o.batches + 1, 1);
	d->batch_seq = calloc((size_t)d->o.batches + 1, sizeof(*d->batch_seq));
	d->next_seq = o->first_seq ? o->first_seq : 1;
	d->last_durable = o->prev_durable;
	pthread_mutex_init(&d->mu, NULL);
	mosquitto_lib_init();
	d->mosq = mosquitto_new(d->id, true, d);
	if (!d->mosq)
		die("mosquitto_new");
	mosquitto_int_option(d->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_int_option(d->mosq, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_max_inflight_messages_set(d->mosq, 100);
	char *ca = h_strf("%s/ca.crt", o->pki), *crt = h_strf("%s/devices/%s.crt", o->pki, o->id),
	     *key = h_strf("%s/devices/%s.key", o->pki, o->id);
	if (mosquitto_tls_set(d->mosq, ca, NULL, crt, key, NULL) ||
	    mosquitto_tls_opts_set(d->mosq, 1, "tlsv1.2", NULL))
		die("tls files");
	free(ca);
	free(crt);
	free(key);
	mosquitto_connect_v5_callback_set(d->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(d->mosq, on_disconnect);
	mosquitto_message_v5_callback_set(d->mosq, on_message);
	if (pthread_create(&d->th, NULL, run, d))
		die("thread");
	return d;
}

int h_simdev_wait(struct h_simdev *d, int timeout_ms)
{
	long long end = h_now_ms() + timeout_ms;
	while (h_now_ms() < end) {
		pthread_mutex_lock(&d->mu);
		int done = d->done;
		pthread_mutex_unlock(&d->mu);
		if (done)
			return 1;
		h_sleep_ms(20);
	}
	return 0;
}

void h_simdev_stats(struct h_simdev *d, struct h_simdev_stats *out)
{
	pthread_mutex_lock(&d->mu);
	*out = d->st;
	pthread_mutex_unlock(&d->mu);
}

uint64_t h_simdev_batch(struct h_simdev *d, int k, int *sent)
{
	pthread_mutex_lock(&d->mu);
	uint64_t seq = k < d->st.produced ? d->batch_seq[k] : 0;
	*sent = k < d->st.produced && d->sent[k] == 1;
	pthread_mutex_unlock(&d->mu);
	return seq;
}

int h_simdev_was_sent(struct h_simdev *d, uint64_t seq)
{
	pthread_mutex_lock(&d->mu);
	int sent = 0;
	for (int i = 0; i < d->st.produced; i++)
		if (d->batch_seq[i] == seq)
			sent = d->sent[i] == 1;
	pthread_mutex_unlock(&d->mu);
	return sent;
}

void h_simdev_stop(struct h_simdev *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->mu);
	d->stop = 1;
	pthread_mutex_unlock(&d->mu);
	pthread_join(d->th, NULL);
	for (size_t i = 0; i < d->n_spool; i++)
		free(d->spool[i].buf);
	free(d->spool);
	free(d->sent);
	free(d->batch_seq);
	wire_key_free(d->key);
	mosquitto_destroy(d->mosq);
	mosquitto_lib_cleanup();
	pthread_mutex_destroy(&d->mu);
	free(d);
}
