/* wire.c - bytes on the wire for the reference profile (100 metrics sampled every 10 s,
 * batched every 60 s), Outpost against JSON and Sparkplug B, with MQTT v5 / WebSocket / TLS 1.3
 * framing, and the traffic per device per month. Prints table rows (bench/run.sh).
 *
 * Usage: bench_wire PKI_DIR [minutes]   (PKI_DIR from scripts/provision-certs.sh, device-0001) */
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
#define ROWS_PER_BATCH 6
#define SAMPLE_MS 10000
#define BATCHES_PER_MONTH (30 * 24 * 60)
#define POLLS_PER_MONTH (30 * 24 * 12)
#define DEVICE "device-0001"

struct reading {
	char name[32];
	uint32_t id;
	int is_int;
	double v;
	int64_t t;
};

struct batch {
	struct reading r[METRICS * ROWS_PER_BATCH];
	size_t n;
	int64_t t;
};

static int sink(void *ctx, const char *name, const char *unit, double value)
{
	struct batch *b = ctx;
	(void)unit;
	if (strncmp(name, "sim.", 4) || b->n >= METRICS * ROWS_PER_BATCH)
		return 0; /* the collector's own health metrics are not part of the profile */
	struct reading *r = &b->r[b->n++];
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->id = (uint32_t)atoi(name + strlen("sim.sensor_")) + 1;
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

/* --- encoders -------------------------------------------------------------------------- */

static size_t outpost_batch(struct wire_key *key, const struct batch *b, uint64_t seq)
{
	struct wire_batch_builder *bb;
	uint8_t *body, *env;
	size_t blen, elen;
	wire_batch_builder_new(&bb);
	int64_t row_t = -1;
	for (size_t i = 0; i < b->n; i++) {
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
static size_t json_batch(const struct batch *b)
{
	size_t total = 2; /* [ ] */
	char buf[256];
	for (size_t i = 0; i < b->n; i++) {
		const struct reading *r = &b->r[i];
		int64_t s = r->t / 1000;
		int n;
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
		total += (size_t)n + (i ? 1 : 0);
	}
	return total;
}

/* Sparkplug B DDATA at its most compact: aliases (names went in DBIRTH), a timestamp per
 * metric value because the 6 samples of a minute travel together, Int64 or Double types. */
static size_t sparkplug_batch(const struct batch *b, uint64_t seq)
{
	Sparkplug__Payload p = SPARKPLUG__PAYLOAD__INIT;
	Sparkplug__Payload__Metric *m = calloc(b->n, sizeof(*m));
	Sparkplug__Payload__Metric **mp = calloc(b->n, sizeof(*mp));
	for (size_t i = 0; i < b->n; i++) {
		sparkplug__payload__metric__init(&m[i]);
		m[i].has_alias = 1;
		m[i].alias = b->r[i].id;
		m[i].has_timestamp = 1;
		m[i].timestamp = (uint64_t)b->r[i].t;
		m[i].has_datatype = 1;
		if (b->r[i].is_int) {
			m[i].datatype = 8; /* Int64 */
			m[i].value_case = SPARKPLUG__PAYLOAD__METRIC__VALUE_LONG_VALUE;
			m[i].long_value = (uint64_t)(int64_t)b->r[i].v;
		} else {
			m[i].datatype = 10; /* Double */
			m[i].value_case = SPARKPLUG__PAYLOAD__METRIC__VALUE_DOUBLE_VALUE;
			m[i].double_value = b->r[i].v;
		}
		mp[i] = &m[i];
	}
	p.has_timestamp = 1;
	p.timestamp = (uint64_t)b->t;
	p.n_metrics = b->n;
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
	int minutes = argc > 2 ? atoi(argv[2]) : 60;
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
	uint64_t readings = 0, out_payload = 0, json_payload = 0, sp_payload = 0;
	uint64_t out_wire = 0, json_wire = 0, sp_wire = 0;
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

	for (int m = 0; m < minutes; m++) {
		b->n = 0;
		for (int r = 0; r < ROWS_PER_BATCH; r++) {
			b->t = BENCH_T0_MS + ((int64_t)m * ROWS_PER_BATCH + r) * SAMPLE_MS;
			dev_collect_sample(sim, sink, b, &failed, &why);
		}
		b->t = BENCH_T0_MS + (int64_t)m * 60000;
		readings += b->n;
		size_t o = outpost_batch(key, b, BENCH_SEQ0 + (uint64_t)m + 1);
		size_t j = json_batch(b);
		size_t s = sparkplug_batch(b, (uint64_t)m);
		out_payload += o;
		json_payload += j;
		sp_payload += s;
		/* device -> broker PUBLISH + PUBACK back; Outpost adds the bridge's signed ack
		 * (PUBLISH to the device and the device's PUBACK) */
		out_wire += ws_tls(mqtt_publish(topic, o, 0), 1) + ws_tls(MQTT_PUBACK, 0) +
			    ws_tls(mqtt_publish(ack_topic, ack_env, 0), 0) + ws_tls(MQTT_PUBACK, 1);
		json_wire += ws_tls(mqtt_publish(json_topic, j, 0), 1) + ws_tls(MQTT_PUBACK, 0);
		sp_wire += ws_tls(mqtt_publish(sp_topic, s, 0), 1) + ws_tls(MQTT_PUBACK, 0);
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
	size_t poll_wire = ws_tls(mqtt_publish(strlen("outpost/v1/" DEVICE "/tasks/poll"),
					       outpost_small(key, WIRE_KIND_TASK_POLL, &poll.base, BENCH_SEQ0 + 1), props),
				  1) +
			   ws_tls(MQTT_PUBACK, 0) +
			   ws_tls(mqtt_publish(strlen("outpost/v1/" DEVICE "/tasks"),
					       outpost_small(key, WIRE_KIND_TASK_LIST, &list.base, BENCH_SEQ0 + 123456), 19),
				  0) +
			   ws_tls(MQTT_PUBACK, 1);

	double n = (double)readings, per_min = (double)minutes;
	double month_out = ((double)out_wire / per_min * BATCHES_PER_MONTH + (double)poll_wire * POLLS_PER_MONTH) / 1e6;
	double month_json = (double)json_wire / per_min * BATCHES_PER_MONTH / 1e6;
	double month_sp = (double)sp_wire / per_min * BATCHES_PER_MONTH / 1e6;
	double bo = (double)out_payload / n, bj = (double)json_payload / n, bs = (double)sp_payload / n;

	printf("wire|Outpost signed batch (payload)|%.2f B/reading|target <= 3\n", bo);
	printf("wire|Outpost on the wire (MQTT v5+WS+TLS1.3, with signed acks)|%.2f B/reading|\n",
	       (double)out_wire / n);
	printf("wire|JSON, one object per reading (payload)|%.1f B/reading|%.1fx Outpost (target >= 10x)\n", bj,
	       bj / bo);
	printf("wire|Sparkplug B DDATA with aliases (payload)|%.1f B/reading|%.1fx Outpost (target >= 4x)\n", bs,
	       bs / bo);
	printf("wire|traffic per device per month, Outpost (incl. framing, acks, task polls)|%.1f MB|target <= 150 MB\n",
	       month_out);
	printf("wire|traffic per device per month, JSON / Sparkplug B (framing, no app acks)|%.0f MB / %.1f MB|\n",
	       month_json, month_sp);
	free(b);
	dev_collect_close(sim);
	wire_key_free(key);
	return 0;
}
