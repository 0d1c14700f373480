/* brg_reply.c - Ack and TaskList construction and sealing with the bridge key. */
#include <stdlib.h>
#include <string.h>

#include "brg_reply.h"
#include "wire_env.h"
#include "wire_msg.h"
#include "wire_topic.h"

static int seal(const struct wire_key *key, uint32_t kind, const char *device, uint64_t seq,
                int64_t now, const uint8_t *body, size_t body_len, uint8_t **out, size_t *len)
{
	struct wire_env e = {
	    .kind = kind, .seq = seq, .sent_at_ms = now, .body = body, .body_len = body_len};
	strcpy(e.device_id, device);
	return wire_env_seal(key, &e, out, len);
}

static int ack(const struct wire_key *key, const struct brg_reply *r, int64_t now, uint8_t **out,
               size_t *len)
{
	Outpost__Ack a = OUTPOST__ACK__INIT;
	Outpost__SeqRange *ranges = NULL, **ptrs = NULL;
	uint8_t *body = NULL;
	size_t body_len = 0;
	int rc = WIRE_ENOMEM;

	a.upto = r->seq;
	a.committed_at_ms = now;
	if (r->n_ranges) {
		ranges = calloc(r->n_ranges, sizeof(*ranges));
		ptrs = calloc(r->n_ranges, sizeof(*ptrs));
		if (!ranges || !ptrs)
			goto out;
		for (size_t i = 0; i < r->n_ranges; i++) {
			outpost__seq_range__init(&ranges[i]);
			ranges[i].first = r->ranges[i].first;
			ranges[i].last = r->ranges[i].last;
			ptrs[i] = &ranges[i];
		}
		a.n_ranges = r->n_ranges;
		a.ranges = ptrs;
	}
	rc = wire_msg_pack(WIRE_KIND_ACK, &a.base, &body, &body_len, NULL);
	if (!rc)
		rc = seal(key, WIRE_KIND_ACK, r->device, r->seq, now, body, body_len, out, len);
out:
	free(body);
	free(ranges);
	free(ptrs);
	return rc;
}

static int tasks(const struct wire_key *key, const struct brg_reply *r, int64_t now, uint8_t **out,
                 size_t *len)
{
	Outpost__TaskList l = OUTPOST__TASK_LIST__INIT;
	Outpost__Task *t = calloc(r->n_tasks + 1, sizeof(*t));
	Outpost__Task **tp = calloc(r->n_tasks + 1, sizeof(*tp));
	Outpost__KeyValue *kv = NULL, **kvp = NULL;
	size_t nkv = 0;
	uint8_t *body = NULL;
	size_t body_len = 0;
	int rc = WIRE_ENOMEM;

	for (size_t i = 0; i < r->n_tasks; i++)
		nkv += r->tasks[i].n_args;
	kv = calloc(nkv + 1, sizeof(*kv));
	kvp = calloc(nkv + 1, sizeof(*kvp));
	if (!t || !tp || !kv || !kvp)
		goto out;
	size_t k = 0;
	for (size_t i = 0; i < r->n_tasks; i++) {
		const struct brg_task *bt = &r->tasks[i];
		outpost__task__init(&t[i]);
		t[i].id = bt->id;
		t[i].device_id = (char *)r->device;
		t[i].type = (char *)bt->type;
		t[i].expires_at_ms = bt->expires_at_ms;
		t[i].created_at_ms = bt->created_at_ms;
		t[i].args = &kvp[k];
		t[i].n_args = bt->n_args;
		for (size_t j = 0; j < bt->n_args; j++, k++) {
			outpost__key_value__init(&kv[k]);
			kv[k].key = bt->keys[j];
			kv[k].value = bt->values[j];
			kvp[k] = &kv[k];
		}
		tp[i] = &t[i];
	}
	l.poll_seq = r->seq;
	l.issued_at_ms = now;
	l.n_tasks = r->n_tasks;
	l.tasks = tp;
	rc = wire_msg_pack(WIRE_KIND_TASK_LIST, &l.base, &body, &body_len, NULL);
	if (!rc)
		rc = seal(key, WIRE_KIND_TASK_LIST, r->device, r->seq, now, body, body_len, out,
		          len);
out:
	free(body);
	free(t);
	free(tp);
	free(kv);
	free(kvp);
	return rc;
}

int brg_reply_seal(const struct wire_key *key, const struct brg_reply *r, int64_t now_ms,
                   char *topic, uint8_t **out, size_t *len)
{
	int rc = wire_topic_build(topic, WIRE_TOPIC_MAX,
	                          r->kind == BRG_REPLY_ACK ? WIRE_TOPIC_ACK : WIRE_TOPIC_TASKS,
	                          r->device);
	if (rc)
		return rc;
	return r->kind == BRG_REPLY_ACK ? ack(key, r, now_ms, out, len)
	                                : tasks(key, r, now_ms, out, len);
}
