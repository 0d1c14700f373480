/* test_wire_msg.c - Envelope bodies: round trip of every message type inside a signed envelope,
 * every limit of wire_limits.h at and one past the limit, and the rules protobuf cannot say. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outpost.pb-c.h"
#include "wire_env.h"
#include "wire_msg.h"
#include "wire_utf8.h"
#include "wire_sign.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const ProtobufCMessageDescriptor *desc_of(uint32_t kind)
{
	switch (kind) {
	case WIRE_KIND_BIRTH: return &outpost__birth__descriptor;
	case WIRE_KIND_BATCH: return &outpost__batch__descriptor;
	case WIRE_KIND_TASK_POLL: return &outpost__task_poll__descriptor;
	case WIRE_KIND_TASK_RESULT: return &outpost__task_result__descriptor;
	case WIRE_KIND_ACK: return &outpost__ack__descriptor;
	case WIRE_KIND_TASK_LIST: return &outpost__task_list__descriptor;
	}
	return NULL;
}

/* Pack with protobuf-c directly: no wire_* checks, so tests can build what decoders refuse. */
static uint8_t *pack(const void *msg, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(*len + 1);
	cr_assert_not_null(buf);
	protobuf_c_message_pack(msg, buf);
	return buf;
}

static char *rep(char c, size_t n)
{
	char *s = malloc(n + 1);
	cr_assert_not_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static int decode_bytes(uint32_t kind, const uint8_t *buf, size_t len, struct wire_diag *d)
{
	ProtobufCMessage *m = NULL;
	int rc = wire_msg_decode(kind, buf, len, &m, d);
	cr_expect((rc == WIRE_OK) == (m != NULL), "output set only on success");
	wire_msg_free(m);
	return rc;
}

static int decode_msg(uint32_t kind, const void *msg, struct wire_diag *d)
{
	size_t len;
	uint8_t *buf = pack(msg, &len);
	int rc = decode_bytes(kind, buf, len, d);
	free(buf);
	return rc;
}

static uint8_t boot_id[WIRE_BOOT_ID_LEN] = {0xb0, 1, 2,  3,  4,  5,  6,  7,
					    8,	  9, 10, 11, 12, 13, 14, 0xbf};

static void birth_base(Outpost__Birth *b)
{
	outpost__birth__init(b);
	b->agent_version = "outpost-device 0.1.0";
	b->boot_id.data = boot_id;
	b->boot_id.len = sizeof(boot_id);
	b->cert_pem = "-----BEGIN CERTIFICATE-----\n...";
}

static void task_base(Outpost__Task *t)
{
	outpost__task__init(t);
	t->id = 1;
	t->device_id = "dev-a";
	t->type = "ping";
}

static void result_base(Outpost__TaskResult *r)
{
	outpost__task_result__init(r);
	r->task_id = 9;
	r->status = OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED;
}

/* ---------------------------------------------------------------------------------------- */
/* Round trips: build every message type, pack with wire_msg_pack, seal in an envelope signed
 * by the right party, decode and verify the envelope, decode the body, compare every field. */

struct sealed {
	uint8_t *buf;
	size_t len;
	struct wire_env env;
};

/* Pack msg as kind, seal it, decode and verify the envelope; returns the decoded body. */
static ProtobufCMessage *through_envelope(uint32_t kind, const void *msg, uint64_t seq,
					  struct sealed *s)
{
	const char *signer = wire_kind_from_device(kind) ? "devices/dev-a" : "bridge";
	struct wire_key *key = h_pki_key(signer);
	struct wire_pubkey pub;
	struct wire_diag d = {""};
	uint8_t *body = NULL;
	size_t body_len = 0;
	ProtobufCMessage *out = NULL;

	cr_assert_eq(wire_msg_pack(kind, msg, &body, &body_len, &d), WIRE_OK, "%s: %s",
		     wire_kind_name(kind), d.msg);
	struct wire_env e = {.kind = kind, .seq = seq, .sent_at_ms = 1763850000123LL,
			     .body = body, .body_len = body_len};
	strcpy(e.device_id, "dev-a");
	cr_assert_eq(wire_env_seal(key, &e, &s->buf, &s->len), WIRE_OK);
	free(body);

	cr_assert_eq(wire_env_decode(s->buf, s->len, &s->env, &d), WIRE_OK, "%s", d.msg);
	wire_key_public(key, &pub);
	cr_expect_eq(wire_env_verify(&s->env, &pub), WIRE_OK);
	cr_expect_eq(s->env.kind, kind);
	cr_expect_eq(s->env.seq, seq);
	cr_expect_eq(s->env.sent_at_ms, 1763850000123LL);
	cr_expect_str_eq(s->env.device_id, "dev-a");
	cr_assert_eq(wire_msg_decode(kind, s->env.body, s->env.body_len, &out, &d), WIRE_OK, "%s",
		     d.msg);
	cr_expect_eq(out->descriptor, desc_of(kind));
	wire_key_free(key);
	return out;
}

Test(wire_msg, round_trip_birth)
{
	Outpost__Birth b;
	Outpost__MetricDef defs[3], *pdefs[3];
	Outpost__SpoolStats spool = OUTPOST__SPOOL_STATS__INIT;
	const char *names[3] = {"cpu.temp", "net/eth0:rx_bytes", "battery-V"};
	const char *units[3] = {"degC", "B", ""};
	birth_base(&b);
	for (int i = 0; i < 3; i++) {
		outpost__metric_def__init(&defs[i]);
		defs[i].id = (uint32_t)(i * 1000 + 7);
		defs[i].name = (char *)names[i];
		defs[i].unit = (char *)units[i];
		pdefs[i] = &defs[i];
	}
	b.n_metrics = 3;
	b.metrics = pdefs;
	spool.records = 12;
	spool.bytes = 123456789012ULL;
	spool.oldest_unsent_age_s = 3600;
	spool.disconnects = 4;
	spool.last_disconnect_cause = "keepalive timeout";
	spool.dropped_total = 99;
	b.spool = &spool;
	b.sample_interval_s = 10;
	b.poll_interval_s = 300;
	b.started_at_ms = 1763850000000LL;
	b.chain_floor = 41;
	b.batch_interval_s = 60;

	struct sealed s;
	Outpost__Birth *got = (Outpost__Birth *)through_envelope(WIRE_KIND_BIRTH, &b, 42, &s);
	cr_expect_str_eq(got->agent_version, b.agent_version);
	cr_assert_eq(got->boot_id.len, WIRE_BOOT_ID_LEN);
	cr_expect_arr_eq(got->boot_id.data, boot_id, WIRE_BOOT_ID_LEN);
	cr_expect_str_eq(got->cert_pem, b.cert_pem);
	cr_assert_eq(got->n_metrics, 3);
	for (int i = 0; i < 3; i++) {
		cr_expect_eq(got->metrics[i]->id, defs[i].id);
		cr_expect_str_eq(got->metrics[i]->name, names[i]);
		cr_expect_str_eq(got->metrics[i]->unit, units[i]);
	}
	cr_assert_not_null(got->spool);
	cr_expect_eq(got->spool->records, 12);
	cr_expect_eq(got->spool->bytes, 123456789012ULL);
	cr_expect_eq(got->spool->oldest_unsent_age_s, 3600);
	cr_expect_eq(got->spool->disconnects, 4);
	cr_expect_str_eq(got->spool->last_disconnect_cause, "keepalive timeout");
	cr_expect_eq(got->spool->dropped_total, 99);
	cr_expect_eq(got->sample_interval_s, 10);
	cr_expect_eq(got->poll_interval_s, 300);
	cr_expect_eq(got->started_at_ms, 1763850000000LL);
	cr_expect_eq(got->chain_floor, 41);
	cr_expect_eq(got->batch_interval_s, 60);
	wire_msg_free(got);
	free(s.buf);
}

/* Two ids under one name: the store keeps a name once per device, so one id's readings would
 * land under a placeholder. Refused, as two definitions of one id are. */
Test(wire_msg, a_birth_naming_a_metric_twice_is_refused)
{
	Outpost__Birth b;
	Outpost__MetricDef defs[3], *p[3] = {&defs[0], &defs[1], &defs[2]};
	const char *names[3] = {"temp", "rh", "temp"};
	struct wire_diag d = {""};
	birth_base(&b);
	for (int i = 0; i < 3; i++) {
		outpost__metric_def__init(&defs[i]);
		defs[i].id = (uint32_t)i + 1;
		defs[i].name = (char *)names[i];
	}
	b.n_metrics = 3;
	b.metrics = p;
	cr_expect_eq(decode_msg(WIRE_KIND_BIRTH, &b, &d), WIRE_EMALFORMED);
	cr_expect(strstr(d.msg, "name temp defined twice"), "%s", d.msg);
	names[2] = "temp2";
	defs[2].name = (char *)names[2];
	cr_expect_eq(decode_msg(WIRE_KIND_BIRTH, &b, &d), WIRE_OK, "%s", d.msg);
}

Test(wire_msg, round_trip_batch_message)
{
	/* The raw protobuf form; the codec on top of it is tested in test_wire_batch.c. */
	uint32_t dt[3] = {0, 10000, 9999}, ids[2] = {5, WIRE_MAX_METRIC_ID};
	int32_t scales[2] = {-2, WIRE_SCALE_RAW};
	int64_t values[6] = {2345, 0x3ff0000000000000LL, -3, 0, 7, 1};
	uint32_t absent[1] = {3};
	Outpost__Dropped d1 = OUTPOST__DROPPED__INIT, *dp[1] = {&d1};
	Outpost__Batch m = OUTPOST__BATCH__INIT;
	d1.prev_seq = 10;
	d1.last_seq = 20;
	d1.count = 4;
	m.prev_seq = 77;
	m.t0_ms = -5;
	m.n_row_dt_ms = 3;
	m.row_dt_ms = dt;
	m.n_metric_ids = 2;
	m.metric_ids = ids;
	m.n_scales = 2;
	m.scales = scales;
	m.n_values = 6;
	m.values = values;
	m.n_absent = 1;
	m.absent = absent;
	m.n_dropped = 1;
	m.dropped = dp;

	struct sealed s;
	Outpost__Batch *got = (Outpost__Batch *)through_envelope(WIRE_KIND_BATCH, &m, 78, &s);
	cr_expect_eq(got->prev_seq, 77);
	cr_expect_eq(got->t0_ms, -5);
	cr_assert_eq(got->n_row_dt_ms, 3);
	cr_expect_arr_eq(got->row_dt_ms, dt, sizeof(dt));
	cr_assert_eq(got->n_metric_ids, 2);
	cr_expect_arr_eq(got->metric_ids, ids, sizeof(ids));
	cr_assert_eq(got->n_scales, 2);
	cr_expect_arr_eq(got->scales, scales, sizeof(scales));
	cr_assert_eq(got->n_values, 6);
	cr_expect_arr_eq(got->values, values, sizeof(values));
	cr_assert_eq(got->n_absent, 1);
	cr_expect_eq(got->absent[0], 3);
	cr_assert_eq(got->n_dropped, 1);
	cr_expect_eq(got->dropped[0]->prev_seq, 10);
	cr_expect_eq(got->dropped[0]->last_seq, 20);
	cr_expect_eq(got->dropped[0]->count, 4);
	wire_msg_free(got);
	free(s.buf);
}

Test(wire_msg, round_trip_ack)
{
	Outpost__SeqRange r[2] = {OUTPOST__SEQ_RANGE__INIT, OUTPOST__SEQ_RANGE__INIT};
	Outpost__SeqRange *pr[2] = {&r[0], &r[1]};
	Outpost__Ack a = OUTPOST__ACK__INIT;
	a.upto = 100;
	r[0].first = 102;
	r[0].last = 102;
	r[1].first = 110;
	r[1].last = UINT64_MAX;
	a.n_ranges = 2;
	a.ranges = pr;
	a.committed_at_ms = 1763850000999LL;

	struct sealed s;
	Outpost__Ack *got = (Outpost__Ack *)through_envelope(WIRE_KIND_ACK, &a, 100, &s);
	cr_expect_eq(got->upto, 100);
	cr_assert_eq(got->n_ranges, 2);
	cr_expect_eq(got->ranges[0]->first, 102);
	cr_expect_eq(got->ranges[0]->last, 102);
	cr_expect_eq(got->ranges[1]->first, 110);
	cr_expect_eq(got->ranges[1]->last, UINT64_MAX);
	cr_expect_eq(got->committed_at_ms, 1763850000999LL);
	wire_msg_free(got);
	free(s.buf);
}

Test(wire_msg, round_trip_task_poll)
{
	Outpost__TaskPoll p = OUTPOST__TASK_POLL__INIT;
	p.last_task_id = 1234567890123ULL;
	p.max_tasks = WIRE_MAX_TASKS;
	struct sealed s;
	Outpost__TaskPoll *got = (Outpost__TaskPoll *)through_envelope(WIRE_KIND_TASK_POLL, &p, 9,
								      &s);
	cr_expect_eq(got->last_task_id, 1234567890123ULL);
	cr_expect_eq(got->max_tasks, WIRE_MAX_TASKS);
	wire_msg_free(got);
	free(s.buf);
}

Test(wire_msg, round_trip_task_list)
{
	Outpost__KeyValue kv[2] = {OUTPOST__KEY_VALUE__INIT, OUTPOST__KEY_VALUE__INIT};
	Outpost__KeyValue *pkv[2] = {&kv[0], &kv[1]};
	Outpost__Task t[2], *pt[2] = {&t[0], &t[1]};
	Outpost__TaskList l = OUTPOST__TASK_LIST__INIT;
	kv[0].key = "sample_interval";
	kv[0].value = "5s";
	kv[1].key = "empty";
	kv[1].value = "";
	task_base(&t[0]);
	t[0].id = 7;
	t[0].type = "set_config";
	t[0].n_args = 2;
	t[0].args = pkv;
	t[0].expires_at_ms = 1763850300000LL;
	t[0].created_at_ms = 1763850000000LL;
	task_base(&t[1]);
	t[1].id = 8;
	t[1].type = "restart";
	l.poll_seq = 55;
	l.n_tasks = 2;
	l.tasks = pt;
	l.issued_at_ms = 1763850000500LL;

	struct sealed s;
	Outpost__TaskList *got = (Outpost__TaskList *)through_envelope(WIRE_KIND_TASK_LIST, &l, 55,
								      &s);
	cr_expect_eq(got->poll_seq, 55);
	cr_expect_eq(got->issued_at_ms, 1763850000500LL);
	cr_assert_eq(got->n_tasks, 2);
	cr_expect_eq(got->tasks[0]->id, 7);
	cr_expect_str_eq(got->tasks[0]->device_id, "dev-a");
	cr_expect_str_eq(got->tasks[0]->type, "set_config");
	cr_expect_eq(got->tasks[0]->expires_at_ms, 1763850300000LL);
	cr_expect_eq(got->tasks[0]->created_at_ms, 1763850000000LL);
	cr_assert_eq(got->tasks[0]->n_args, 2);
	cr_expect_str_eq(got->tasks[0]->args[0]->key, "sample_interval");
	cr_expect_str_eq(got->tasks[0]->args[0]->value, "5s");
	cr_expect_str_eq(got->tasks[0]->args[1]->key, "empty");
	cr_expect_str_eq(got->tasks[0]->args[1]->value, "");
	cr_expect_eq(got->tasks[1]->id, 8);
	cr_expect_str_eq(got->tasks[1]->type, "restart");
	cr_expect_eq(got->tasks[1]->n_args, 0);
	wire_msg_free(got);
	free(s.buf);
}

Test(wire_msg, round_trip_task_result)
{
	Outpost__KeyValue kv = OUTPOST__KEY_VALUE__INIT, *pkv[1] = {&kv};
	Outpost__TaskResult r;
	result_base(&r);
	r.prev_seq = 300;
	r.task_id = 8;
	r.status = OUTPOST__TASK_STATUS__TASK_STATUS_REJECTED;
	r.message = "expired";
	kv.key = "rtt_ms";
	kv.value = "12";
	r.n_output = 1;
	r.output = pkv;
	r.finished_at_ms = 1763850000777LL;

	struct sealed s;
	Outpost__TaskResult *got =
		(Outpost__TaskResult *)through_envelope(WIRE_KIND_TASK_RESULT, &r, 301, &s);
	cr_expect_eq(got->prev_seq, 300);
	cr_expect_eq(got->task_id, 8);
	cr_expect_eq(got->status, OUTPOST__TASK_STATUS__TASK_STATUS_REJECTED);
	cr_expect_str_eq(got->message, "expired");
	cr_assert_eq(got->n_output, 1);
	cr_expect_str_eq(got->output[0]->key, "rtt_ms");
	cr_expect_str_eq(got->output[0]->value, "12");
	cr_expect_eq(got->finished_at_ms, 1763850000777LL);
	wire_msg_free(got);
	free(s.buf);
}

Test(wire_msg, empty_bodies)
{
	/* Every field of TaskPoll and Ack is optional: an empty body is a valid message. */
	struct wire_diag d = {""};
	cr_expect_eq(decode_bytes(WIRE_KIND_TASK_POLL, NULL, 0, &d), WIRE_OK, "%s", d.msg);
	cr_expect_eq(decode_bytes(WIRE_KIND_ACK, (const uint8_t *)"", 0, &d), WIRE_OK, "%s", d.msg);
	/* Birth is not: boot_id and cert_pem are required. */
	cr_expect_eq(decode_bytes(WIRE_KIND_BIRTH, NULL, 0, &d), WIRE_EMALFORMED);
	cr_expect(strstr(d.msg, "boot_id"), "%s", d.msg);
}

/* ---------------------------------------------------------------------------------------- */
/* Every limit: a builder makes a message with n elements/bytes at the limited place; n = limit
 * must decode and pack, n = limit + 1 must fail with the code given and a diagnostic naming the
 * field. */

struct limit_case {
	const char *field; /* must appear in wire_diag.msg */
	uint32_t kind;
	size_t limit;
	uint8_t *(*build)(size_t n, size_t *len);
	int over_rc;
};

static uint8_t *b_agent_version(size_t n, size_t *len)
{
	Outpost__Birth b;
	birth_base(&b);
	b.agent_version = rep('v', n);
	uint8_t *buf = pack(&b, len);
	free(b.agent_version);
	return buf;
}

static uint8_t *b_boot_id(size_t n, size_t *len)
{
	Outpost__Birth b;
	uint8_t id[WIRE_BOOT_ID_LEN + 1] = {0};
	birth_base(&b);
	b.boot_id.data = id;
	b.boot_id.len = n;
	return pack(&b, len);
}

static uint8_t *b_cert_pem(size_t n, size_t *len)
{
	Outpost__Birth b;
	birth_base(&b);
	b.cert_pem = rep('c', n);
	uint8_t *buf = pack(&b, len);
	free(b.cert_pem);
	return buf;
}

/* n metrics; name/unit lengths and the first id as given */
static uint8_t *birth_metrics(size_t n, size_t name_len, size_t unit_len, uint32_t first_id,
			      size_t *len)
{
	Outpost__Birth b;
	Outpost__MetricDef *defs = calloc(n, sizeof(*defs));
	Outpost__MetricDef **p = calloc(n, sizeof(*p));
	char (*names)[24] = calloc(n, sizeof(*names));
	char *long_name = rep('n', name_len ? name_len : 1), *unit = rep('u', unit_len);
	birth_base(&b);
	for (size_t i = 0; i < n; i++) {
		outpost__metric_def__init(&defs[i]);
		defs[i].id = i ? (uint32_t)i + 1 : first_id;
		snprintf(names[i], sizeof(names[i]), "m%zu", i);
		defs[i].name = name_len ? long_name : names[i];
		defs[i].unit = unit;
		p[i] = &defs[i];
	}
	b.n_metrics = n;
	b.metrics = p;
	uint8_t *buf = pack(&b, len);
	free(defs);
	free(p);
	free(names);
	free(long_name);
	free(unit);
	return buf;
}

static uint8_t *b_metrics(size_t n, size_t *len)
{
	return birth_metrics(n, 0, 0, 1, len); /* ids 1..n: all distinct, all within the limit */
}

static uint8_t *b_metric_name(size_t n, size_t *len)
{
	return birth_metrics(1, n, 0, 1, len);
}

static uint8_t *b_metric_unit(size_t n, size_t *len)
{
	return birth_metrics(1, 0, n, 1, len);
}

static uint8_t *b_metric_id(size_t n, size_t *len)
{
	return birth_metrics(1, 0, 0, (uint32_t)n, len);
}

static uint8_t *b_cause(size_t n, size_t *len)
{
	Outpost__Birth b;
	Outpost__SpoolStats s = OUTPOST__SPOOL_STATS__INIT;
	birth_base(&b);
	s.last_disconnect_cause = rep('x', n);
	b.spool = &s;
	uint8_t *buf = pack(&b, len);
	free(s.last_disconnect_cause);
	return buf;
}

/* A rows x cols batch with all cells present (values 0), nscales scales (-2) and
 * nvalues/nabsent given explicitly (SIZE_MAX: derived). */
static uint8_t *batch_grid(size_t rows, size_t cols, size_t nscales, size_t nvalues,
			   size_t nabsent, size_t ndropped, uint32_t first_id, int32_t scale,
			   size_t *len)
{
	Outpost__Batch m = OUTPOST__BATCH__INIT;
	if (nscales == SIZE_MAX)
		nscales = cols;
	if (nvalues == SIZE_MAX)
		nvalues = rows * cols;
	uint32_t *dt = calloc(rows + 1, sizeof(*dt)), *ids = calloc(cols + 1, sizeof(*ids));
	int32_t *sc = calloc(nscales + 1, sizeof(*sc));
	int64_t *vals = calloc(nvalues + 1, sizeof(*vals));
	uint32_t *abs = calloc(nabsent + 1, sizeof(*abs));
	Outpost__Dropped *d = calloc(ndropped + 1, sizeof(*d));
	Outpost__Dropped **pd = calloc(ndropped + 1, sizeof(*pd));
	for (size_t r = 0; r < rows; r++)
		dt[r] = r ? 10000 : 0;
	for (size_t c = 0; c < cols; c++)
		ids[c] = c ? (uint32_t)c + 1 : first_id;
	for (size_t c = 0; c < nscales; c++)
		sc[c] = c ? -2 : scale;
	for (size_t i = 0; i < nabsent; i++)
		abs[i] = (uint32_t)i;
	for (size_t i = 0; i < ndropped; i++) {
		outpost__dropped__init(&d[i]);
		d[i].prev_seq = 100 * i + 1;
		d[i].last_seq = 100 * i + 50;
		d[i].count = 10;
		pd[i] = &d[i];
	}
	m.prev_seq = 1;
	m.t0_ms = 1763850000000LL;
	m.n_row_dt_ms = rows;
	m.row_dt_ms = dt;
	m.n_metric_ids = cols;
	m.metric_ids = ids;
	m.n_scales = nscales;
	m.scales = sc;
	m.n_values = nvalues;
	m.values = vals;
	m.n_absent = nabsent;
	m.absent = abs;
	m.n_dropped = ndropped;
	m.dropped = pd;
	uint8_t *buf = pack(&m, len);
	free(dt);
	free(ids);
	free(sc);
	free(vals);
	free(abs);
	free(d);
	free(pd);
	return buf;
}

static uint8_t *b_rows(size_t n, size_t *len)
{
	return batch_grid(n, 1, SIZE_MAX, SIZE_MAX, 0, 0, 1, -2, len);
}

static uint8_t *b_cols(size_t n, size_t *len)
{
	return batch_grid(1, n, SIZE_MAX, SIZE_MAX, 0, 0, 1, -2, len);
}

static uint8_t *b_scales(size_t n, size_t *len)
{
	return batch_grid(1, WIRE_MAX_COLS, n, SIZE_MAX, 0, 0, 1, -2, len);
}

static uint8_t *b_values(size_t n, size_t *len)
{
	/* 16 x 4096 = WIRE_MAX_CELLS cells */
	return batch_grid(16, WIRE_MAX_COLS, SIZE_MAX, n, 0, 0, 1, -2, len);
}

static uint8_t *b_absent(size_t n, size_t *len)
{
	return batch_grid(16, WIRE_MAX_COLS, SIZE_MAX, SIZE_MAX, n, 0, 1, -2, len);
}

static uint8_t *b_cells(size_t n, size_t *len)
{
	/* n cells as 4096 rows of n / 4096 columns, or 4096 x 16 + one more column */
	size_t cols = (n + WIRE_MAX_ROWS - 1) / WIRE_MAX_ROWS;
	return batch_grid(WIRE_MAX_ROWS, cols, SIZE_MAX, n > WIRE_MAX_CELLS ? 0 : SIZE_MAX, 0, 0,
			  1, -2, len);
}

static uint8_t *b_dropped(size_t n, size_t *len)
{
	return batch_grid(1, 1, SIZE_MAX, SIZE_MAX, 0, n, 1, -2, len);
}

static uint8_t *b_batch_metric_id(size_t n, size_t *len)
{
	return batch_grid(1, 2, SIZE_MAX, SIZE_MAX, 0, 0, (uint32_t)n, -2, len);
}

static uint8_t *b_scale_pos(size_t n, size_t *len)
{
	return batch_grid(2, 2, SIZE_MAX, SIZE_MAX, 0, 0, 7, (int32_t)n, len);
}

static uint8_t *b_scale_neg(size_t n, size_t *len)
{
	return batch_grid(2, 2, SIZE_MAX, SIZE_MAX, 0, 0, 7, -(int32_t)n, len);
}

static uint8_t *b_ack_ranges(size_t n, size_t *len)
{
	Outpost__Ack a = OUTPOST__ACK__INIT;
	Outpost__SeqRange *r = calloc(n + 1, sizeof(*r)), **p = calloc(n + 1, sizeof(*p));
	a.upto = 5;
	for (size_t i = 0; i < n; i++) {
		outpost__seq_range__init(&r[i]);
		r[i].first = 10 + 3 * i;
		r[i].last = 11 + 3 * i;
		p[i] = &r[i];
	}
	a.n_ranges = n;
	a.ranges = p;
	uint8_t *buf = pack(&a, len);
	free(r);
	free(p);
	return buf;
}

static uint8_t *b_max_tasks(size_t n, size_t *len)
{
	Outpost__TaskPoll p = OUTPOST__TASK_POLL__INIT;
	p.max_tasks = (uint32_t)n;
	return pack(&p, len);
}

/* A task list of ntasks tasks; task 0 has the given device id, type and args */
static uint8_t *task_list(size_t ntasks, const char *device_id, const char *type, size_t nargs,
			  const char *key, const char *value, size_t *len)
{
	Outpost__TaskList l = OUTPOST__TASK_LIST__INIT;
	Outpost__Task *t = calloc(ntasks + 1, sizeof(*t)), **pt = calloc(ntasks + 1, sizeof(*pt));
	Outpost__KeyValue *kv = calloc(nargs + 1, sizeof(*kv));
	Outpost__KeyValue **pkv = calloc(nargs + 1, sizeof(*pkv));
	for (size_t i = 0; i < nargs; i++) {
		outpost__key_value__init(&kv[i]);
		kv[i].key = (char *)key;
		kv[i].value = (char *)value;
		pkv[i] = &kv[i];
	}
	for (size_t i = 0; i < ntasks; i++) {
		task_base(&t[i]);
		t[i].id = i + 1;
		pt[i] = &t[i];
	}
	if (ntasks) {
		t[0].device_id = (char *)device_id;
		t[0].type = (char *)type;
		t[0].n_args = nargs;
		t[0].args = pkv;
	}
	l.n_tasks = ntasks;
	l.tasks = pt;
	uint8_t *buf = pack(&l, len);
	free(t);
	free(pt);
	free(kv);
	free(pkv);
	return buf;
}

static uint8_t *b_tasks(size_t n, size_t *len)
{
	return task_list(n, "dev-a", "ping", 0, NULL, NULL, len);
}

static uint8_t *b_task_device_id(size_t n, size_t *len)
{
	char *id = rep('d', n);
	uint8_t *buf = task_list(1, id, "ping", 0, NULL, NULL, len);
	free(id);
	return buf;
}

static uint8_t *b_task_type(size_t n, size_t *len)
{
	char *type = rep('t', n);
	uint8_t *buf = task_list(1, "dev-a", type, 0, NULL, NULL, len);
	free(type);
	return buf;
}

static uint8_t *b_task_args(size_t n, size_t *len)
{
	return task_list(1, "dev-a", "set_config", n, "k", "v", len);
}

static uint8_t *b_task_arg_key(size_t n, size_t *len)
{
	char *key = rep('k', n);
	uint8_t *buf = task_list(1, "dev-a", "set_config", 1, key, "v", len);
	free(key);
	return buf;
}

static uint8_t *b_task_arg_value(size_t n, size_t *len)
{
	char *value = rep('v', n);
	uint8_t *buf = task_list(1, "dev-a", "set_config", 1, "k", value, len);
	free(value);
	return buf;
}

static uint8_t *task_result(size_t msg_len, size_t nout, size_t key_len, size_t value_len,
			    size_t *len)
{
	Outpost__TaskResult r;
	Outpost__KeyValue *kv = calloc(nout + 1, sizeof(*kv));
	Outpost__KeyValue **pkv = calloc(nout + 1, sizeof(*pkv));
	char *key = rep('k', key_len), *value = rep('v', value_len);
	result_base(&r);
	r.message = rep('m', msg_len);
	for (size_t i = 0; i < nout; i++) {
		outpost__key_value__init(&kv[i]);
		kv[i].key = key;
		kv[i].value = value;
		pkv[i] = &kv[i];
	}
	r.n_output = nout;
	r.output = pkv;
	uint8_t *buf = pack(&r, len);
	free(r.message);
	free(kv);
	free(pkv);
	free(key);
	free(value);
	return buf;
}

static uint8_t *b_result_message(size_t n, size_t *len)
{
	return task_result(n, 0, 1, 1, len);
}

static uint8_t *b_result_output(size_t n, size_t *len)
{
	return task_result(0, n, 1, 1, len);
}

static uint8_t *b_result_key(size_t n, size_t *len)
{
	return task_result(0, 1, n, 1, len);
}

static uint8_t *b_result_value(size_t n, size_t *len)
{
	return task_result(0, 1, 1, n, len);
}

/* Append an unknown length-delimited field 15 of pad bytes to buf. */
static size_t put_unknown(uint8_t *p, size_t pad)
{
	size_t n = 0;
	p[n++] = (15 << 3) | 2;
	size_t v = pad;
	do {
		p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	memset(p + n, 'u', pad);
	return n + pad;
}

static uint8_t *b_body_size(size_t n, size_t *len)
{
	/* A TaskPoll of exactly n bytes: max_tasks plus one unknown field as padding. */
	uint8_t *buf = malloc(n + 16);
	size_t at = 0;
	buf[at++] = 0x10; /* field 2 varint */
	buf[at++] = 0x01;
	size_t pad = n - at - 4; /* tag + 3-byte length for pads of 16 KiB .. 2 MiB */
	at += put_unknown(buf + at, pad);
	cr_assert_eq(at, n, "padding arithmetic");
	*len = at;
	return buf;
}

static uint8_t *b_unknown_fields(size_t n, size_t *len)
{
	uint8_t *buf = malloc(2 + n * 8);
	size_t at = 0;
	buf[at++] = 0x10;
	buf[at++] = 0x02;
	for (size_t i = 0; i < n; i++)
		at += put_unknown(buf + at, 3);
	*len = at;
	return buf;
}

static const struct limit_case limit_cases[] = {
	{"Birth.agent_version", WIRE_KIND_BIRTH, WIRE_MAX_AGENT_VERSION, b_agent_version,
	 WIRE_ELIMIT},
	{"Birth.boot_id", WIRE_KIND_BIRTH, WIRE_BOOT_ID_LEN, b_boot_id, WIRE_ELIMIT},
	{"Birth.cert_pem", WIRE_KIND_BIRTH, WIRE_MAX_CERT_PEM, b_cert_pem, WIRE_ELIMIT},
	{"Birth.metrics", WIRE_KIND_BIRTH, WIRE_MAX_METRICS, b_metrics, WIRE_ELIMIT},
	{"MetricDef.name", WIRE_KIND_BIRTH, WIRE_MAX_METRIC_NAME, b_metric_name, WIRE_ELIMIT},
	{"MetricDef.unit", WIRE_KIND_BIRTH, WIRE_MAX_UNIT, b_metric_unit, WIRE_ELIMIT},
	{"Birth.metrics[0].id", WIRE_KIND_BIRTH, WIRE_MAX_METRIC_ID, b_metric_id, WIRE_ELIMIT},
	{"SpoolStats.last_disconnect_cause", WIRE_KIND_BIRTH, WIRE_MAX_CAUSE, b_cause,
	 WIRE_ELIMIT},
	{"Batch.row_dt_ms", WIRE_KIND_BATCH, WIRE_MAX_ROWS, b_rows, WIRE_ELIMIT},
	{"Batch.metric_ids", WIRE_KIND_BATCH, WIRE_MAX_COLS, b_cols, WIRE_ELIMIT},
	{"Batch.scales", WIRE_KIND_BATCH, WIRE_MAX_COLS, b_scales, WIRE_ELIMIT},
	{"Batch.values", WIRE_KIND_BATCH, WIRE_MAX_CELLS, b_values, WIRE_ELIMIT},
	{"Batch.absent", WIRE_KIND_BATCH, WIRE_MAX_CELLS, b_absent, WIRE_ELIMIT},
	{"cells", WIRE_KIND_BATCH, WIRE_MAX_CELLS, b_cells, WIRE_ELIMIT},
	{"Batch.dropped", WIRE_KIND_BATCH, WIRE_MAX_DROPPED, b_dropped, WIRE_ELIMIT},
	{"Batch.metric_ids[0]", WIRE_KIND_BATCH, WIRE_MAX_METRIC_ID, b_batch_metric_id,
	 WIRE_ELIMIT},
	{"Batch.scales[0]", WIRE_KIND_BATCH, WIRE_MAX_SCALE, b_scale_pos, WIRE_EMALFORMED},
	{"Batch.scales[0]", WIRE_KIND_BATCH, WIRE_MAX_SCALE, b_scale_neg, WIRE_EMALFORMED},
	{"Ack.ranges", WIRE_KIND_ACK, WIRE_MAX_ACK_RANGES, b_ack_ranges, WIRE_ELIMIT},
	{"TaskPoll.max_tasks", WIRE_KIND_TASK_POLL, WIRE_MAX_TASKS, b_max_tasks, WIRE_ELIMIT},
	{"TaskList.tasks", WIRE_KIND_TASK_LIST, WIRE_MAX_TASKS, b_tasks, WIRE_ELIMIT},
	{"Task.device_id", WIRE_KIND_TASK_LIST, WIRE_ID_MAX, b_task_device_id, WIRE_ELIMIT},
	{"Task.type", WIRE_KIND_TASK_LIST, WIRE_MAX_TASK_TYPE, b_task_type, WIRE_ELIMIT},
	{"Task.args", WIRE_KIND_TASK_LIST, WIRE_MAX_ARGS, b_task_args, WIRE_ELIMIT},
	{"KeyValue.key", WIRE_KIND_TASK_LIST, WIRE_MAX_KEY, b_task_arg_key, WIRE_ELIMIT},
	{"KeyValue.value", WIRE_KIND_TASK_LIST, WIRE_MAX_VALUE, b_task_arg_value, WIRE_ELIMIT},
	{"TaskResult.message", WIRE_KIND_TASK_RESULT, WIRE_MAX_TEXT, b_result_message,
	 WIRE_ELIMIT},
	{"TaskResult.output", WIRE_KIND_TASK_RESULT, WIRE_MAX_OUTPUT, b_result_output,
	 WIRE_ELIMIT},
	{"KeyValue.key", WIRE_KIND_TASK_RESULT, WIRE_MAX_KEY, b_result_key, WIRE_ELIMIT},
	{"KeyValue.value", WIRE_KIND_TASK_RESULT, WIRE_MAX_VALUE, b_result_value, WIRE_ELIMIT},
	{"TaskPoll", WIRE_KIND_TASK_POLL, WIRE_MAX_BODY, b_body_size, WIRE_ELIMIT},
	{"unknown fields", WIRE_KIND_TASK_POLL, WIRE_MAX_UNKNOWN_FIELDS, b_unknown_fields,
	 WIRE_ELIMIT},
};

/* Criterion runs each parameter in a fresh process image (and ASLR moves code), so the
 * parameters are indices into limit_cases, never pointers. */
ParameterizedTestParameters(wire_msg, limits)
{
	static size_t idx[N(limit_cases)];
	for (size_t i = 0; i < N(limit_cases); i++)
		idx[i] = i;
	return cr_make_param_array(size_t, idx, N(idx));
}

ParameterizedTest(size_t *i, wire_msg, limits)
{
	const struct limit_case *c = &limit_cases[*i];
	struct wire_diag d = {""};
	size_t len;
	uint8_t *buf = c->build(c->limit, &len);
	cr_expect_eq(decode_bytes(c->kind, buf, len, &d), WIRE_OK, "%s: exactly %zu: %s", c->field,
		     c->limit, d.msg);
	/* the encoder accepts what the decoder accepts */
	ProtobufCMessage *raw = protobuf_c_message_unpack(desc_of(c->kind), NULL, len, buf);
	cr_assert_not_null(raw, "%s: protobuf-c unpacks the at-limit message", c->field);
	uint8_t *out = NULL;
	size_t out_len = 0;
	cr_expect_eq(wire_msg_pack(c->kind, raw, &out, &out_len, &d), WIRE_OK, "%s: pack: %s",
		     c->field, d.msg);
	free(out);
	protobuf_c_message_free_unpacked(raw, NULL);
	free(buf);

	memset(&d, 0, sizeof(d));
	buf = c->build(c->limit + 1, &len);
	int rc = decode_bytes(c->kind, buf, len, &d);
	cr_expect_eq(rc, c->over_rc, "%s: %zu (one past the limit) gave %d (%s), want %d", c->field,
		     c->limit + 1, rc, wire_strerror(rc), c->over_rc);
	cr_expect(strstr(d.msg, c->field), "diagnostic '%s' names %s", d.msg, c->field);

	/* and the encoder refuses it the same way (protobuf-c itself has no limits) */
	raw = protobuf_c_message_unpack(desc_of(c->kind), NULL, len, buf);
	cr_assert_not_null(raw, "%s: protobuf-c unpacks the message one past the limit", c->field);
	out = NULL;
	memset(&d, 0, sizeof(d));
	cr_expect_eq(wire_msg_pack(c->kind, raw, &out, &out_len, &d), c->over_rc,
		     "%s: pack one past the limit", c->field);
	cr_expect_null(out, "no output on failure");
	cr_expect(strstr(d.msg, c->field), "pack diagnostic '%s'", d.msg);
	protobuf_c_message_free_unpacked(raw, NULL);
	free(buf);
}

/* Metric ids start at 1, as a device's catalog hands them out: 0 is malformed, in a Birth's
 * catalog and in a Batch's columns, at the decoder and at the encoder. */
Test(wire_msg, metric_id_0_is_refused)
{
	static const struct {
		uint32_t kind;
		const char *field;
	} cases[] = {{WIRE_KIND_BIRTH, "Birth.metrics[0].id"},
		     {WIRE_KIND_BATCH, "Batch.metric_ids[0]"}};
	for (size_t i = 0; i < N(cases); i++) {
		struct wire_diag d = {""};
		size_t len;
		uint8_t *buf = cases[i].kind == WIRE_KIND_BIRTH
				       ? birth_metrics(2, 0, 0, 0, &len)
				       : batch_grid(1, 2, SIZE_MAX, SIZE_MAX, 0, 0, 0, -2, &len);
		cr_expect_eq(decode_bytes(cases[i].kind, buf, len, &d), WIRE_EMALFORMED, "%s: %s",
			     cases[i].field, d.msg);
		cr_expect(strstr(d.msg, cases[i].field), "diagnostic '%s'", d.msg);
		ProtobufCMessage *raw =
			protobuf_c_message_unpack(desc_of(cases[i].kind), NULL, len, buf);
		cr_assert_not_null(raw);
		uint8_t *out = NULL;
		size_t out_len = 0;
		cr_expect_eq(wire_msg_pack(cases[i].kind, raw, &out, &out_len, &d),
			     WIRE_EMALFORMED, "%s: pack", cases[i].field);
		cr_expect_null(out);
		protobuf_c_message_free_unpacked(raw, NULL);
		free(buf);
	}
}

/* ---------------------------------------------------------------------------------------- */
/* Rules beyond sizes. */

static void expect_rule(uint32_t kind, const void *msg, int want, const char *field)
{
	struct wire_diag d = {""};
	int rc = decode_msg(kind, msg, &d);
	cr_expect_eq(rc, want, "%s: got %d (%s)", field, rc, d.msg);
	if (want != WIRE_OK)
		cr_expect(strstr(d.msg, field), "diagnostic '%s' names %s", d.msg, field);
}

Test(wire_msg, birth_rules)
{
	Outpost__Birth b;
	Outpost__MetricDef m[2] = {OUTPOST__METRIC_DEF__INIT, OUTPOST__METRIC_DEF__INIT};
	Outpost__MetricDef *pm[2] = {&m[0], &m[1]};
	birth_base(&b);
	expect_rule(WIRE_KIND_BIRTH, &b, WIRE_OK, "");
	b.boot_id.len = WIRE_BOOT_ID_LEN - 1;
	expect_rule(WIRE_KIND_BIRTH, &b, WIRE_EMALFORMED, "Birth.boot_id");
	b.boot_id.len = 0;
	expect_rule(WIRE_KIND_BIRTH, &b, WIRE_EMALFORMED, "Birth.boot_id");
	birth_base(&b);
	b.cert_pem = "";
	expect_rule(WIRE_KIND_BIRTH, &b, WIRE_EMALFORMED, "Birth.cert_pem");

	birth_base(&b);
	m[0].id = 1;
	m[0].name = "a.b";
	m[1].id = 1;
	m[1].name = "c.d";
	b.n_metrics = 2;
	b.metrics = pm;
	expect_rule(WIRE_KIND_BIRTH, &b, WIRE_EMALFORMED, "Birth.metrics");
	m[1].id = 2;
	expect_rule(WIRE_KIND_BIRTH, &b, WIRE_OK, "");
	m[1].name = "has space";
	expect_rule(WIRE_KIND_BIRTH, &b, WIRE_EMALFORMED, "Birth.metrics[1].name");
	m[1].name = "";
	expect_rule(WIRE_KIND_BIRTH, &b, WIRE_EMALFORMED, "Birth.metrics[1].name");
	m[1].name = "a\x01";
	expect_rule(WIRE_KIND_BIRTH, &b, WIRE_EMALFORMED, "Birth.metrics[1].name");
}

/* Birth.batch_interval_s is field 10, a varint: what a device before it sends (no field 10)
 * decodes as 0, and a bridge before it skips the field as an unknown one. */
Test(wire_msg, birth_batch_interval_is_field_10)
{
	Outpost__Birth b;
	Outpost__Birth *got = NULL;
	struct wire_diag d = {""};
	uint8_t *body = NULL;
	size_t len = 0;
	birth_base(&b);
	b.sample_interval_s = 10;
	b.batch_interval_s = 300;
	cr_assert_eq(wire_msg_pack(WIRE_KIND_BIRTH, &b.base, &body, &len, &d), WIRE_OK, "%s", d.msg);
	/* the last field on the wire: tag (10 << 3 | 0) = 0x50, 300 = 0xac 0x02 */
	const uint8_t tail[] = {0x50, 0xac, 0x02};
	cr_assert_geq(len, sizeof(tail));
	cr_expect_arr_eq(body + len - sizeof(tail), tail, sizeof(tail));
	cr_assert_eq(wire_birth_decode(body, len, &got, &d), WIRE_OK, "%s", d.msg);
	cr_expect_eq(got->batch_interval_s, 300);
	cr_expect_eq(got->sample_interval_s, 10);
	wire_msg_free(got);
	/* an older device's Birth: the field absent */
	cr_assert_eq(wire_birth_decode(body, len - sizeof(tail), &got, &d), WIRE_OK, "%s", d.msg);
	cr_expect_eq(got->batch_interval_s, 0);
	cr_expect_eq(got->sample_interval_s, 10);
	wire_msg_free(got);
	/* a length-delimited value in its place is refused, naming the field */
	uint8_t *bad = malloc(len);
	cr_assert_not_null(bad);
	memcpy(bad, body, len - sizeof(tail));
	const uint8_t wrong[] = {0x52, 0x01, 0x00};
	memcpy(bad + len - sizeof(tail), wrong, sizeof(wrong));
	cr_expect_eq(decode_bytes(WIRE_KIND_BIRTH, bad, len, &d), WIRE_EMALFORMED);
	cr_expect(strstr(d.msg, "Birth.batch_interval_s") && strstr(d.msg, "wire type"), "%s",
		  d.msg);
	free(bad);
	free(body);
}

Test(wire_msg, metric_name_check)
{
	char *at = rep('a', WIRE_MAX_METRIC_NAME), *over = rep('a', WIRE_MAX_METRIC_NAME + 1);
	cr_expect_eq(wire_metric_name_check("cpu.temp"), WIRE_OK);
	cr_expect_eq(wire_metric_name_check("A-z_0.9:/x"), WIRE_OK);
	cr_expect_eq(wire_metric_name_check(at), WIRE_OK);
	cr_expect_eq(wire_metric_name_check(over), WIRE_EINVAL);
	cr_expect_eq(wire_metric_name_check(""), WIRE_EINVAL);
	cr_expect_eq(wire_metric_name_check(NULL), WIRE_EINVAL);
	cr_expect_eq(wire_metric_name_check("a b"), WIRE_EINVAL);
	cr_expect_eq(wire_metric_name_check("a#"), WIRE_EINVAL);
	cr_expect_eq(wire_metric_name_check("a+"), WIRE_EINVAL);
	free(at);
	free(over);
}

Test(wire_msg, ack_rules)
{
	Outpost__SeqRange r[2] = {OUTPOST__SEQ_RANGE__INIT, OUTPOST__SEQ_RANGE__INIT};
	Outpost__SeqRange *pr[2] = {&r[0], &r[1]};
	Outpost__Ack a = OUTPOST__ACK__INIT;
	a.upto = 10;
	a.n_ranges = 2;
	a.ranges = pr;
	r[0].first = 12;
	r[0].last = 14;
	r[1].first = 20;
	r[1].last = 20;
	expect_rule(WIRE_KIND_ACK, &a, WIRE_OK, "");
	r[0].first = 10; /* not above upto */
	expect_rule(WIRE_KIND_ACK, &a, WIRE_EMALFORMED, "Ack.ranges[0]");
	r[0].first = 15; /* last < first */
	expect_rule(WIRE_KIND_ACK, &a, WIRE_EMALFORMED, "Ack.ranges[0]");
	r[0].first = 12;
	r[1].first = 14; /* overlaps the previous range */
	expect_rule(WIRE_KIND_ACK, &a, WIRE_EMALFORMED, "Ack.ranges[1]");
	r[1].first = 13;
	r[0].last = 20; /* not ascending */
	expect_rule(WIRE_KIND_ACK, &a, WIRE_EMALFORMED, "Ack.ranges[1]");
}

Test(wire_msg, task_rules)
{
	Outpost__KeyValue kv = OUTPOST__KEY_VALUE__INIT, *pkv[1] = {&kv};
	Outpost__Task t, *pt[1] = {&t};
	Outpost__TaskList l = OUTPOST__TASK_LIST__INIT;
	l.n_tasks = 1;
	l.tasks = pt;
	task_base(&t);
	expect_rule(WIRE_KIND_TASK_LIST, &l, WIRE_OK, "");
	t.id = 0;
	expect_rule(WIRE_KIND_TASK_LIST, &l, WIRE_EMALFORMED, "TaskList.tasks[0].id");
	task_base(&t);
	t.device_id = "dev/a";
	expect_rule(WIRE_KIND_TASK_LIST, &l, WIRE_EID, "TaskList.tasks[0].device_id");
	t.device_id = "";
	expect_rule(WIRE_KIND_TASK_LIST, &l, WIRE_EID, "TaskList.tasks[0].device_id");
	task_base(&t);
	t.type = "";
	expect_rule(WIRE_KIND_TASK_LIST, &l, WIRE_EMALFORMED, "TaskList.tasks[0].type");
	task_base(&t);
	kv.key = "";
	kv.value = "x";
	t.n_args = 1;
	t.args = pkv;
	expect_rule(WIRE_KIND_TASK_LIST, &l, WIRE_EMALFORMED, "args[0].key");

	Outpost__TaskResult r;
	result_base(&r);
	expect_rule(WIRE_KIND_TASK_RESULT, &r, WIRE_OK, "");
	r.task_id = 0;
	expect_rule(WIRE_KIND_TASK_RESULT, &r, WIRE_EMALFORMED, "TaskResult.task_id");
	result_base(&r);
	r.status = OUTPOST__TASK_STATUS__TASK_STATUS_UNSPECIFIED;
	expect_rule(WIRE_KIND_TASK_RESULT, &r, WIRE_EMALFORMED, "TaskResult.status");
	r.status = (Outpost__TaskStatus)4;
	expect_rule(WIRE_KIND_TASK_RESULT, &r, WIRE_EMALFORMED, "TaskResult.status");
	r.status = OUTPOST__TASK_STATUS__TASK_STATUS_FAILED;
	r.n_output = 1;
	r.output = pkv;
	expect_rule(WIRE_KIND_TASK_RESULT, &r, WIRE_EMALFORMED, "TaskResult.output[0].key");
	kv.key = "k";
	expect_rule(WIRE_KIND_TASK_RESULT, &r, WIRE_OK, "");
}

Test(wire_msg, scanner_rules)
{
	struct wire_diag d = {""};
	/* TaskPoll { last_task_id = 1 } with the field repeated */
	const uint8_t repeated[] = {0x08, 0x01, 0x08, 0x02};
	cr_expect_eq(decode_bytes(WIRE_KIND_TASK_POLL, repeated, sizeof(repeated), &d),
		     WIRE_EMALFORMED);
	cr_expect(strstr(d.msg, "TaskPoll.last_task_id") && strstr(d.msg, "repeated"), "%s",
		  d.msg);
	/* a length-delimited value where a varint belongs */
	const uint8_t wrong_type[] = {0x0a, 0x01, 0x00};
	cr_expect_eq(decode_bytes(WIRE_KIND_TASK_POLL, wrong_type, sizeof(wrong_type), &d),
		     WIRE_EMALFORMED);
	cr_expect(strstr(d.msg, "TaskPoll.last_task_id") && strstr(d.msg, "wire type"), "%s",
		  d.msg);
	/* a string whose length runs past the end */
	const uint8_t trunc[] = {0x0a, 0x05, 'a', 'b'};
	cr_expect_eq(decode_bytes(WIRE_KIND_BIRTH, trunc, sizeof(trunc), &d), WIRE_ETRUNC);
	cr_expect(strstr(d.msg, "Birth.agent_version"), "%s", d.msg);
	/* a varint cut short */
	const uint8_t cut[] = {0x08, 0x80};
	cr_expect_eq(decode_bytes(WIRE_KIND_TASK_POLL, cut, sizeof(cut), &d), WIRE_ETRUNC);
	/* a NUL byte inside text */
	const uint8_t nul[] = {0x0a, 0x03, 'a', 0, 'b'};
	cr_expect_eq(decode_bytes(WIRE_KIND_BIRTH, nul, sizeof(nul), &d), WIRE_EMALFORMED);
	cr_expect(strstr(d.msg, "NUL"), "%s", d.msg);
	/* field number 0 */
	const uint8_t zero[] = {0x00, 0x01};
	cr_expect_eq(decode_bytes(WIRE_KIND_TASK_POLL, zero, sizeof(zero), &d), WIRE_EMALFORMED);
	/* a packed run that ends inside a varint */
	const uint8_t packed[] = {0x1a, 0x02, 0x01, 0x80};
	cr_expect_eq(decode_bytes(WIRE_KIND_BATCH, packed, sizeof(packed), &d), WIRE_ETRUNC);
	cr_expect(strstr(d.msg, "Batch.row_dt_ms"), "%s", d.msg);
	/* a sub-message that is itself malformed */
	const uint8_t sub[] = {0x12, 0x02, 0x08, 0x80};
	cr_expect_eq(decode_bytes(WIRE_KIND_ACK, sub, sizeof(sub), &d), WIRE_ETRUNC);
	cr_expect(strstr(d.msg, "SeqRange"), "%s", d.msg);
	/* unknown fields of every wire type are skipped (forward compatibility) */
	const uint8_t unk[] = {0x78, 0x05, 0x79, 1, 2, 3, 4, 5, 6, 7, 8, 0x7d, 1, 2, 3, 4};
	cr_expect_eq(decode_bytes(WIRE_KIND_TASK_POLL, unk, sizeof(unk), &d), WIRE_OK, "%s", d.msg);
	/* but groups are not */
	const uint8_t group[] = {0x7b, 0x7c};
	cr_expect_eq(decode_bytes(WIRE_KIND_TASK_POLL, group, sizeof(group), &d), WIRE_EMALFORMED);
}

Test(wire_msg, api_misuse)
{
	Outpost__TaskPoll p = OUTPOST__TASK_POLL__INIT;
	ProtobufCMessage *m = NULL;
	uint8_t *out = NULL;
	size_t len = 0;
	cr_expect_eq(wire_msg_decode(0, (const uint8_t *)"", 0, &m, NULL), WIRE_EINVAL);
	cr_expect_eq(wire_msg_decode(WIRE_KIND_MAX + 1, (const uint8_t *)"", 0, &m, NULL),
		     WIRE_EINVAL);
	cr_expect_eq(wire_msg_decode(WIRE_KIND_ACK, NULL, 3, &m, NULL), WIRE_EINVAL);
	cr_expect_eq(wire_msg_decode(WIRE_KIND_ACK, (const uint8_t *)"", 0, NULL, NULL),
		     WIRE_EINVAL);
	cr_expect_eq(wire_msg_pack(WIRE_KIND_ACK, &p.base, &out, &len, NULL), WIRE_EINVAL,
		     "a TaskPoll is not an Ack");
	cr_expect_eq(wire_msg_pack(WIRE_KIND_TASK_POLL, NULL, &out, &len, NULL), WIRE_EINVAL);
	cr_expect_null(out);
	cr_expect_eq(wire_msg_pack(WIRE_KIND_TASK_POLL, &p.base, &out, &len, NULL), WIRE_OK);
	cr_expect_eq(len, 0, "an all-default TaskPoll packs to nothing");
	free(out);
	wire_msg_free(NULL);
}

Test(wire_msg, decode_never_reads_past_the_end)
{
	/* Every prefix of a valid, field-rich body either decodes or fails cleanly (ASan
	 * checks the reads); the full body decodes. */
	Outpost__KeyValue kv = OUTPOST__KEY_VALUE__INIT, *pkv[1] = {&kv};
	Outpost__Task t, *pt[1] = {&t};
	Outpost__TaskList l = OUTPOST__TASK_LIST__INIT;
	task_base(&t);
	kv.key = "key";
	kv.value = "value";
	t.n_args = 1;
	t.args = pkv;
	t.expires_at_ms = 1;
	l.n_tasks = 1;
	l.tasks = pt;
	l.poll_seq = 300;
	size_t len;
	uint8_t *full = pack(&l, &len);
	size_t ok = 0;
	for (size_t n = 0; n <= len; n++) {
		uint8_t *copy = malloc(n + 1); /* exact-size copy so ASan sees overreads */
		memcpy(copy, full, n);
		ok += decode_bytes(WIRE_KIND_TASK_LIST, copy, n, NULL) == WIRE_OK;
		free(copy);
	}
	cr_expect_eq(decode_bytes(WIRE_KIND_TASK_LIST, full, len, NULL), WIRE_OK);
	/* a prefix can decode only where it ends between two top-level fields: the empty one, the
	 * one before poll_seq, and the whole body */
	cr_expect_eq(ok, 3, "%zu of the %zu prefixes decoded", ok, len + 1);
	free(full);
}

Test(wire_msg, utf8_is_checked_and_cut_text_mended)
{
	static const struct {
		const char *s;
		int ok;
	} cases[] = {
	    {"plain ascii", 1},	       {"caf\xc3\xa9", 1},	       {"\xe2\x82\xac 5", 1},
	    {"\xf0\x9f\x98\x80", 1},     {"\xc3", 0},		       {"\xff", 0},
	    {"\xc0\xaf", 0} /* overlong */, {"\xed\xa0\x80", 0} /* surrogate */,
	    {"\xf4\x90\x80\x80", 0} /* above U+10FFFF */, {"\xe2\x82", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_eq(wire_utf8_valid(cases[i].s, strlen(cases[i].s)), cases[i].ok, "case %zu", i);

	/* a TaskResult whose message is not UTF-8 is refused when decoded */
	Outpost__TaskResult r = OUTPOST__TASK_RESULT__INIT;
	r.task_id = 1;
	r.status = OUTPOST__TASK_STATUS__TASK_STATUS_FAILED;
	r.message = "bad \xff";
	size_t len = outpost__task_result__get_packed_size(&r);
	uint8_t *buf = malloc(len);
	outpost__task_result__pack(&r, buf);
	Outpost__TaskResult *out = NULL;
	struct wire_diag d = {{0}};
	cr_expect_eq(wire_task_result_decode(buf, len, &out, &d), WIRE_EMALFORMED);
	cr_expect(strstr(d.msg, "TaskResult.message: not UTF-8"), "%s", d.msg);
	free(buf);

	/* text cut at a byte count keeps its whole characters */
	char cut[8];
	memcpy(cut, "abcde\xc3", 7); /* "abcde\xc3\xa9z" cut to 7 bytes, as snprintf does */
	wire_utf8_sanitize(cut);
	cr_expect_str_eq(cut, "abcde?");
	/* each byte kept of a longer character becomes '?'; one kept whole stays */
	char cut3[] = "x\xe2\x82", cut4[] = "y\xf0\x9f\x98", whole[] = "z\xe2\x82\xac";
	wire_utf8_sanitize(cut3);
	wire_utf8_sanitize(cut4);
	wire_utf8_sanitize(whole);
	cr_expect_str_eq(cut3, "x??");
	cr_expect_str_eq(cut4, "y???");
	cr_expect_str_eq(whole, "z\xe2\x82\xac");
	/* a broken sequence before a cut one: both marked */
	char both[] = "\xe2\x82z\xc3";
	wire_utf8_sanitize(both);
	cr_expect_str_eq(both, "??z?");
	char mixed[] = "ok\xff\xc3\xa9";
	wire_utf8_sanitize(mixed);
	cr_expect_str_eq(mixed, "ok?\xc3\xa9");
}
