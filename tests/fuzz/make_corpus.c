/* make_corpus.c - writes the seed corpus for fuzz_envelope: one valid signed envelope of each
 * kind. Run from the repository root: build/tests/fuzz_make_corpus tests/fuzz/corpus/fuzz_envelope */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_key.h"
#include "outpost.pb-c.h"
#include "wire_batch.h"
#include "wire_env.h"
#include "wire_msg.h"

static void write_env(const char *dir, const char *name, struct wire_key *k, uint32_t kind,
		      const uint8_t *body, size_t len)
{
	struct wire_env e = {.kind = kind, .seq = 42, .sent_at_ms = 1767225600000LL,
			     .body = body, .body_len = len};
	strcpy(e.device_id, "dev-a");
	uint8_t *buf;
	size_t n;
	if (wire_env_seal(k, &e, &buf, &n))
		abort();
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, n, f) != n)
		abort();
	fclose(f);
	free(buf);
}

static void pack_and_write(const char *dir, const char *name, struct wire_key *k, uint32_t kind,
			   const ProtobufCMessage *m)
{
	uint8_t *body;
	size_t len;
	if (wire_msg_pack(kind, m, &body, &len, NULL))
		abort();
	write_env(dir, name, k, kind, body, len);
	free(body);
}

int main(int argc, char **argv)
{
	struct wire_key *k = NULL;
	if (argc != 2 || wire_key_parse(fuzz_key_pem, sizeof(fuzz_key_pem) - 1, &k))
		return 2;
	const char *dir = argv[1];

	/* Batch: 3 rows x 3 metrics with a gap, a raw column and a dropped range */
	struct wire_batch_builder *bb;
	wire_batch_builder_new(&bb);
	for (int r = 0; r < 3; r++) {
		wire_batch_row(bb, 1767225600000LL + r * 10000);
		wire_batch_add(bb, 1, 21.5 + r * 0.25);
		if (r != 1)
			wire_batch_add(bb, 2, 1000 + r);
		wire_batch_add(bb, 3, 1.0 / 3.0 * r);
	}
	struct wire_dropped d = {10, 20, 5};
	uint8_t *body;
	size_t len;
	if (wire_batch_encode(bb, 41, &d, 1, &body, &len))
		return 1;
	write_env(dir, "batch", k, WIRE_KIND_BATCH, body, len);
	free(body);
	wire_batch_builder_free(bb);

	Outpost__MetricDef md = OUTPOST__METRIC_DEF__INIT, *mds[1] = {&md};
	md.id = 1;
	md.name = "cpu.util";
	md.unit = "%";
	Outpost__SpoolStats ss = OUTPOST__SPOOL_STATS__INIT;
	ss.records = 3;
	ss.last_disconnect_cause = "keepalive";
	Outpost__Birth b = OUTPOST__BIRTH__INIT;
	uint8_t boot[16] = {1, 2, 3};
	b.agent_version = "0.1.0";
	b.boot_id.data = boot;
	b.boot_id.len = 16;
	b.cert_pem = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
	b.n_metrics = 1;
	b.metrics = mds;
	b.spool = &ss;
	pack_and_write(dir, "birth", k, WIRE_KIND_BIRTH, &b.base);

	Outpost__SeqRange sr = OUTPOST__SEQ_RANGE__INIT, *srs[1] = {&sr};
	sr.first = 50;
	sr.last = 60;
	Outpost__Ack a = OUTPOST__ACK__INIT;
	a.upto = 41;
	a.n_ranges = 1;
	a.ranges = srs;
	pack_and_write(dir, "ack", k, WIRE_KIND_ACK, &a.base);

	Outpost__TaskPoll tp = OUTPOST__TASK_POLL__INIT;
	tp.last_task_id = 7;
	tp.max_tasks = 8;
	pack_and_write(dir, "task_poll", k, WIRE_KIND_TASK_POLL, &tp.base);

	Outpost__KeyValue kv = OUTPOST__KEY_VALUE__INIT, *kvs[1] = {&kv};
	kv.key = "sample_interval_s";
	kv.value = "5";
	Outpost__Task t = OUTPOST__TASK__INIT, *ts[1] = {&t};
	t.id = 8;
	t.device_id = "dev-a";
	t.type = "set_config";
	t.n_args = 1;
	t.args = kvs;
	t.expires_at_ms = 1767229200000LL;
	Outpost__TaskList tl = OUTPOST__TASK_LIST__INIT;
	tl.poll_seq = 42;
	tl.n_tasks = 1;
	tl.tasks = ts;
	pack_and_write(dir, "task_list", k, WIRE_KIND_TASK_LIST, &tl.base);

	Outpost__TaskResult tr = OUTPOST__TASK_RESULT__INIT;
	tr.prev_seq = 41;
	tr.task_id = 8;
	tr.status = OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED;
	tr.message = "ok";
	tr.n_output = 1;
	tr.output = kvs;
	pack_and_write(dir, "task_result", k, WIRE_KIND_TASK_RESULT, &tr.base);

	wire_key_free(k);
	return 0;
}
