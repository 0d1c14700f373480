/* wire.c - bytes on the wire for the reference profile (100 metrics sampled every 10 s,
 * batched every 60 s), Outpost against JSON and Sparkplug B, with MQTT v5 / WebSocket / TLS 1.3
 * framing, and the traffic per device per month. Prints table rows (bench/run.sh).
 *
 * Bytes per reading are over the profile's 600 readings per batch. The month is simulated
 * batch by batch (30 days, 43,200 batches) with what the device sends: the 600 readings and
 * the sim collector's 2 health readings per sample (612 per batch), every batch acknowledged,
 * a task poll every 300 s, and one PINGREQ/PINGRESP per 60 s keepalive (an upper bound: Paho
 * pings when nothing went either way for a keepalive interval). Not counted: TCP/IP headers,
 * TLS handshakes (one per connection), Births and the retained status (once per connection).
 *
 * Usage: bench_wire PKI_DIR [minutes]   (PKI_DIR from scripts/provision-certs.sh, device-0001;
 *                                        minutes: default a whole month, 43,200) */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "dev_collect.h"
#include "outpost.pb-c.h"
#include "sparkplug_b_subset.pb-c.h"
#include "wire_batch.h"
#include "wire_env.h"
#include "wire_msg.h"

#define METRICS 100
#define HEALTH 2 /* the sim collector's health readings per sample (dev_collect.c) */
#define ROWS_PER_BATCH 6
#define SAMPLE_MS 10000
#define BATCHES_PER_MONTH (30 * 24 * 60)
#define POLLS_PER_MONTH (30 * 24 * 12)
#define PINGS_PER_MONTH (30 * 24 * 60) /* keepalive 60 s, the device's default */
#define DEVICE "device-0001"

#define READINGS_MAX ((METRICS + HEALTH) * ROWS_PER_BATCH)

struct reading {
	char name[32];
	uint32_t id;
	int is_int;   /* this value is a whole number (JSON prints it so) */
	int int_type; /* the metric is an integer one (Sparkplug B declares Int64 in DBIRTH) */
	int health;   /* the collector's own health reading, not part of the profile */
	double v;
	int64_t t;
};

struct batch {
	struct reading r[READINGS_MAX];
	size_t n;
	int64_t t;
};

static int sink(void *ctx, const char *name, const char *unit, double value)
{
	struct batch *b = ctx;
	(void)unit;
	if (b->n >= READINGS_MAX)
		return 0;
	struct reading *r = &b->r[b->n++];
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->health = strncmp(name, "sim.", 4) != 0;
	if (r->health) { /* collector.sim.ok, collector.sim.errors: catalogued after the sensors */
		r->id = METRICS + 1 + (strstr(name, ".errors") != NULL);
		r->int_type = 1;
	} else {
		int i = atoi(name + strlen("sim.sensor_"));
		r->id = (uint32_t)i + 1;
		/* counters and rounded waves are whole numbers (dev_coll_sim.c) */
		r->int_type = i % 4 == 1 || i % 4 == 3;
	}
	r->v = value;
	r->is_int = value == (double)(int64_t)value;
	r->t = b->t;
	return 0;
}

/* --- framing --------------------------------------------------------------------------- */

static size_t varint_len(size_t n)
{
	size_t l = 1;
	while (n >= 128) {
		n >>= 7;
		l++;
	}
	return l;
}

/* MQTT v5 PUBLISH QoS 1, no properties (plus the request properties when props > 0) */
static size_t mqtt_publish(size_t topic_len, size_t payload, size_t props)
{
	size_t rem = 2 + topic_len + 2 + varint_len(props) + props + payload;
	return 1 + varint_len(rem) + rem;
}

#define MQTT_PUBACK 4 /* v5 PUBACK with reason 0 and no properties */

/* One WebSocket frame (client frames are masked) inside one TLS 1.3 record per 16 KiB. */
static size_t ws_tls(size_t mqtt_len, int from_client)
{
	size_t ws = 2 + (mqtt_len >= 126 ? 2 : 0) + (mqtt_len >= 65536 ? 6 : 0) + (from_client ? 4 : 0);
	size_t plain = mqtt_len + ws;
	size_t records = (plain + 16383) / 16384;
	return plain + records * (5 + 1 + 16);
}

/* one message from the device and the broker's PUBACK back */
static uint64_t pub_wire(size_t topic_len, size_t payload)
{
	return ws_tls(mqtt_publish(topic_len, payload, 0), 1) + ws_tls(MQTT_PUBACK, 0);
}

/* --- encoders -------------------------------------------------------------------------- */

/* all: with the health readings (what the device sends), else the profile's readings only */
static size_t outpost_batch(struct wire_key *key, const struct batch *b, uint64_t seq, int all)
{
	struct wire_batch_builder *bb;
	uint8_t *body, *env;
	size_t blen, elen;
	wire_batch_builder_new(&bb);
	int64_t row_t = -1;
	for (size_t i = 0; i < b->n; i++) {
		if (b->r[i].health && !all)
			continue;
		if (b->r[i].t != row_t) {
			wire_batch_row(bb, b->r[i].t);
			row_t = b->r[i].t;
		}
		wire_batch_add(bb, b->r[i].id, b->r[i].v);
	}
	if (wire_batch_encode(bb, seq - 1, NULL, 0, &body, &blen))
		abort();
	struct wire_env e = {.kind = WIRE_KIND_BATCH, .seq = seq, .sent_at_ms = b->t, .body = body,
			     .body_len = blen};
	strcpy(e.device_id, DEVICE);
	if (wire_env_seal(key, &e, &env, &elen))
		abort();
	free(body);
	free(env);
	wire_batch_builder_free(bb);
	return elen;
}

static size_t outpost_small(struct wire_key *key, uint32_t kind, const ProtobufCMessage *m,
			    uint64_t seq)
{
	uint8_t *body, *env;
	size_t blen, elen;
	if (wire_msg_pack(kind, m, &body, &blen, NULL))
		abort();
	struct wire_env e = {.kind = kind, .seq = seq, .sent_at_ms = BENCH_T0_MS, .body = body, .body_len = blen};
	strcpy(e.device_id, DEVICE);
	if (wire_env_seal(key, &e, &env, &elen))
		abort();
	free(body);
	free(env);
	return elen;
}

/* What a typical agent sends: one JSON object per reading, a minute of them in one array. */
static size_t json_batch(const struct batch *b, int all)
{
	size_t total = 2; /* [ ] */
	char buf[256];
	int first = 1;
	for (size_t i = 0; i < b->n; i++) {
		const struct reading *r = &b->r[i];
		int64_t s = r->t / 1000;
		int n;
		if (r->health && !all)
			continue;
		if (r->is_int)
			n = snprintf(buf, sizeof(buf),
				     "{\"device_id\":\"%s\",\"metric\":\"%s\",\"timestamp\":%" PRId64
				     ",\"value\":%" PRId64 "}",
				     DEVICE, r->name, s * 1000, (int64_t)r->v);
		else
			n = snprintf(buf, sizeof(buf),
				     "{\"device_id\":\"%s\",\"metric\":\"%s\",\"timestamp\":%" PRId64
				     ",\"value\":%.2f}",
				     DEVICE, r->name, s * 1000, r->v);
		total += (size_t)n + (first ? 0 : 1);
		first = 0;
	}
	return total;
}

/* Sparkplug B DDATA for the sample taken at time t: one message per sample, the sample time as
 * the payload timestamp, each metric by its alias (the names and datatypes went in DBIRTH)
 * with only its value: no per-metric timestamp or datatype (the specification: datatype
 * SHOULD NOT be sent in DATA messages). Int64 for the integer metrics, Double for the others. */
static size_t sparkplug_ddata(const struct batch *b, int64_t t, uint64_t seq, int all)
{
	Sparkplug__Payload p = SPARKPLUG__PAYLOAD__INIT;
	Sparkplug__Payload__Metric *m = calloc(b->n, sizeof(*m));
	Sparkplug__Payload__Metric **mp = calloc(b->n, sizeof(*mp));
	size_t n = 0;
	for (size_t i = 0; i < b->n; i++) {
		const struct reading *r = &b->r[i];
		if (r->t != t || (r->health && !all))
			continue;
		sparkplug__payload__metric__init(&m[n]);
		m[n].has_alias = 1;
		m[n].alias = r->id;
		if (r->int_type) {
			m[n].value_case = SPARKPLUG__PAYLOAD__METRIC__VALUE_LONG_VALUE;
			m[n].long_value = (uint64_t)(int64_t)r->v;
		} else {
			m[n].value_case = SPARKPLUG__PAYLOAD__METRIC__VALUE_DOUBLE_VALUE;
			m[n].double_value = r->v;
		}
		mp[n] = &m[n];
		n++;
	}
	p.has_timestamp = 1;
	p.timestamp = (uint64_t)t;
	p.n_metrics = n;
	p.metrics = mp;
	p.has_seq = 1;
	p.seq = seq % 256;
	size_t len = sparkplug__payload__get_packed_size(&p);
	free(m);
	free(mp);
	return len;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s PKI_DIR [minutes]\n", argv[0]);
		return 2;
	}
	int minutes = argc > 2 ? atoi(argv[2]) : BATCHES_PER_MONTH;
	if (minutes < 1)
		minutes = 1;
	char path[1024];
	struct wire_key *key = NULL;
	snprintf(path, sizeof(path), "%s/devices/" DEVICE ".key", argv[1]);
	if (wire_key_load(path, &key, NULL)) {
		fprintf(stderr, "bench_wire: cannot load %s\n", path);
		return 1;
	}
	struct dev_collect_conf cc = {.list = "sim", .sim_metrics = METRICS, .seed = DEVICE};
	struct dev_collect *sim;
	const char *why;
	if (dev_collect_open(&cc, &sim, &why))
		return 1;

	struct batch *b = calloc(1, sizeof(*b));
	/* the profile's readings: payload bytes per reading */
	uint64_t readings = 0, out_payload = 0, json_payload = 0, sp_payload = 0, out_wire = 0;
	/* what the device sends (health readings included): the month */
	uint64_t sent_readings = 0, out_month = 0, json_month = 0, sp_month = 0;
	const char *failed;
	size_t topic = strlen("outpost/v1/" DEVICE "/telemetry");
	size_t ack_topic = strlen("outpost/v1/" DEVICE "/ack");
	/* Sparkplug topic spBv1.0/<group>/DDATA/<edge node>/<device> */
	size_t sp_topic = strlen("spBv1.0/outpost/DDATA/edge-0001/" DEVICE);
	size_t json_topic = strlen("telemetry/" DEVICE);

	Outpost__Ack ack = OUTPOST__ACK__INIT;
	ack.upto = BENCH_SEQ0 + 123456;
	ack.committed_at_ms = BENCH_T0_MS;
	size_t ack_env = outpost_small(key, WIRE_KIND_ACK, &ack.base, BENCH_SEQ0 + 123456);
	/* the bridge's signed ack back for every batch (PUBLISH to the device and its PUBACK) */
	size_t ack_wire = ws_tls(mqtt_publish(ack_topic, ack_env, 0), 0) + ws_tls(MQTT_PUBACK, 1);
	uint64_t sp_seq = 0;

	for (int m = 0; m < minutes; m++) {
		b->n = 0;
		for (int r = 0; r < ROWS_PER_BATCH; r++) {
			b->t = BENCH_T0_MS + ((int64_t)m * ROWS_PER_BATCH + r) * SAMPLE_MS;
			dev_collect_sample(sim, sink, b, &failed, &why);
		}
		b->t = BENCH_T0_MS + (int64_t)m * 60000;
		for (size_t i = 0; i < b->n; i++)
			readings += !b->r[i].health;
		sent_readings += b->n;
		uint64_t seq = BENCH_SEQ0 + (uint64_t)m + 1;
		for (int all = 0; all <= 1; all++) {
			size_t o = outpost_batch(key, b, seq, all), j = json_batch(b, all);
			/* device -> broker PUBLISH and the broker's PUBACK back, per message */
			uint64_t ow = pub_wire(topic, o), jw = pub_wire(json_topic, j);
			uint64_t sp = 0, sw = 0;
			for (int r = 0; r < ROWS_PER_BATCH; r++) {
				int64_t t = b->t + (int64_t)r * SAMPLE_MS;
				size_t s = sparkplug_ddata(b, t, sp_seq + (uint64_t)r, all);
				sp += s;
				sw += pub_wire(sp_topic, s);
			}
			if (!all) {
				out_payload += o;
				json_payload += j;
				sp_payload += sp;
				out_wire += ow + ack_wire;
			} else {
				out_month += ow + ack_wire;
				json_month += jw;
				sp_month += sw;
			}
		}
		sp_seq += ROWS_PER_BATCH;
	}

	/* task polls every 300 s: an empty poll (v5 response topic + 16 bytes correlation) and an
	 * empty signed task list back, each with its PUBACK */
	Outpost__TaskPoll poll = OUTPOST__TASK_POLL__INIT;
	poll.last_task_id = 42;
	poll.max_tasks = 8;
	Outpost__TaskList list = OUTPOST__TASK_LIST__INIT;
	list.poll_seq = BENCH_SEQ0 + 123456;
	list.issued_at_ms = BENCH_T0_MS;
	size_t props = (1 + 2 + strlen("outpost/v1/" DEVICE "/tasks")) + (1 + 2 + 16);
	size_t poll_env = outpost_small(key, WIRE_KIND_TASK_POLL, &poll.base, BENCH_SEQ0 + 1);
	size_t list_env =
	    outpost_small(key, WIRE_KIND_TASK_LIST, &list.base, BENCH_SEQ0 + 123456);
	size_t poll_wire =
	    ws_tls(mqtt_publish(strlen("outpost/v1/" DEVICE "/tasks/poll"), poll_env, props), 1) +
	    ws_tls(MQTT_PUBACK, 0) +
	    ws_tls(mqtt_publish(strlen("outpost/v1/" DEVICE "/tasks"), list_env, 19), 0) +
	    ws_tls(MQTT_PUBACK, 1);
	/* PINGREQ (device) and PINGRESP (broker): 2 bytes each, every protocol alike */
	size_t ping_wire = ws_tls(2, 1) + ws_tls(2, 0);

	/* a shorter run than a month is scaled up to one, and says so */
	double scale = (double)BATCHES_PER_MONTH / minutes;
	double pings = (double)ping_wire * PINGS_PER_MONTH;
	double polls = (double)poll_wire * POLLS_PER_MONTH;
	double mo_out = ((double)out_month * scale + polls + pings) / 1e6;
	double mo_json = ((double)json_month * scale + pings) / 1e6;
	double mo_sp = ((double)sp_month * scale + pings) / 1e6;
	double n = (double)readings;
	double bo = (double)out_payload / n, bj = (double)json_payload / n;
	double bs = (double)sp_payload / n;
	char span[64];
	if (minutes == BATCHES_PER_MONTH)
		snprintf(span, sizeof(span), "30 days simulated");
	else
		snprintf(span, sizeof(span), "%d min simulated, x %.0f", minutes, scale);

	printf("wire|Outpost signed batch (payload)|%.2f B/reading|target <= 3\n", bo);
	printf("wire|Outpost on the wire (MQTT v5+WS+TLS1.3, with signed acks)|%.2f B/reading|\n",
	       (double)out_wire / n);
	printf("wire|JSON, one object per reading (payload)|%.1f B/reading|%.1fx Outpost (target "
	       ">= 10x)\n",
	       bj, bj / bo);
	printf("wire|Sparkplug B, one DDATA per sample, aliases (payload)|%.1f B/reading|%.1fx "
	       "Outpost (target >= 4x)\n",
	       bs, bs / bo);
	printf("wire|traffic per device per month, Outpost|%.1f MB (10^6 B)|%.0f readings/batch "
	       "(health included), framing, acks, task polls, pings; no TCP/IP; %s (target <= "
	       "150 MB)\n",
	       mo_out, (double)sent_readings / minutes, span);
	printf("wire|traffic per device per month, JSON / Sparkplug B|%.0f MB / %.1f MB|the same "
	       "readings, framing, pings, no app acks; no TCP/IP\n",
	       mo_json, mo_sp);
	free(b);
	dev_collect_close(sim);
	wire_key_free(key);
	return 0;
}
