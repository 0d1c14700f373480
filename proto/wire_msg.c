/* wire_msg.c - limit-checked protobuf-c decoding and validated packing of Envelope bodies. */
#include <stdlib.h>
#include <string.h>

#include "wire_internal.h"
#include "wire_msg.h"
#include "wire_topic.h"

typedef int (*validate_fn)(const ProtobufCMessage *m, struct wire_diag *diag);

struct kind_codec {
	const ProtobufCMessageDescriptor *desc;
	const struct wire__schema *schema;
	validate_fn validate;
};

int wire_metric_name_check(const char *name)
{
	size_t n = name ? strnlen(name, WIRE_MAX_METRIC_NAME + 1) : 0;
	if (n == 0 || n > WIRE_MAX_METRIC_NAME)
		return WIRE_EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == ':' || c == '/' || c == '-'))
			return WIRE_EINVAL;
	}
	return WIRE_OK;
}

int wire__cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int validate_birth(const ProtobufCMessage *msg, struct wire_diag *diag)
{
	const Outpost__Birth *b = (const Outpost__Birth *)msg;
	int rc = WIRE_OK;

	if (b->boot_id.len != WIRE_BOOT_ID_LEN)
		return wire__fail(diag, WIRE_EMALFORMED, "Birth.boot_id: %zu bytes, expected %d",
				  b->boot_id.len, WIRE_BOOT_ID_LEN);
	if (!b->cert_pem || !b->cert_pem[0])
		return wire__fail(diag, WIRE_EMALFORMED, "Birth.cert_pem: missing");
	if (b->n_metrics == 0)
		return WIRE_OK;
	uint32_t *ids = malloc(b->n_metrics * sizeof(*ids));
	const char **names = malloc(b->n_metrics * sizeof(*names));
	if (!ids || !names) {
		rc = WIRE_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < b->n_metrics; i++) {
		const Outpost__MetricDef *m = b->metrics[i];
		if (m->id == 0) {
			rc = wire__fail(diag, WIRE_EMALFORMED,
					"Birth.metrics[%zu].id: 0 (metric ids start at 1)", i);
			goto out;
		}
		if (m->id > WIRE_MAX_METRIC_ID) {
			rc = wire__fail(diag, WIRE_ELIMIT, "Birth.metrics[%zu].id: %u, limit %u", i,
					m->id, WIRE_MAX_METRIC_ID);
			goto out;
		}
		if (wire_metric_name_check(m->name)) {
			rc = wire__fail(diag, WIRE_EMALFORMED,
					"Birth.metrics[%zu].name: not [A-Za-z0-9_.:/-]{1,%d}", i,
					WIRE_MAX_METRIC_NAME);
			goto out;
		}
		ids[i] = m->id;
		names[i] = m->name;
	}
	qsort(ids, b->n_metrics, sizeof(*ids), wire__cmp_u32);
	for (size_t i = 1; i < b->n_metrics; i++) {
		if (ids[i] == ids[i - 1]) {
			rc = wire__fail(diag, WIRE_EMALFORMED, "Birth.metrics: id %u defined twice",
					ids[i]);
			goto out;
		}
	}
	/* a name under two ids: the store keeps a name once per device, so one id's readings
	 * would go under a placeholder */
	qsort(names, b->n_metrics, sizeof(*names), cmp_name);
	for (size_t i = 1; i < b->n_metrics; i++) {
		if (!strcmp(names[i], names[i - 1])) {
			rc = wire__fail(diag, WIRE_EMALFORMED, "Birth.metrics: name %s defined twice",
					names[i]);
			goto out;
		}
	}
out:
	free(ids);
	free(names);
	return rc;
}

static int validate_ack(const ProtobufCMessage *msg, struct wire_diag *diag)
{
	const Outpost__Ack *a = (const Outpost__Ack *)msg;
	uint64_t floor = a->upto;
	for (size_t i = 0; i < a->n_ranges; i++) {
		const Outpost__SeqRange *r = a->ranges[i];
		if (r->first <= floor || r->last < r->first)
			return wire__fail(diag, WIRE_EMALFORMED,
					  "Ack.ranges[%zu]: not ascending above upto", i);
		floor = r->last;
	}
	return WIRE_OK;
}

static int validate_task_poll(const ProtobufCMessage *msg, struct wire_diag *diag)
{
	const Outpost__TaskPoll *p = (const Outpost__TaskPoll *)msg;
	if (p->max_tasks > WIRE_MAX_TASKS)
		return wire__fail(diag, WIRE_ELIMIT, "TaskPoll.max_tasks: %u, limit %d", p->max_tasks,
				  WIRE_MAX_TASKS);
	return WIRE_OK;
}

static int validate_kvs(Outpost__KeyValue *const *kv, size_t n, const char *what,
			struct wire_diag *diag)
{
	for (size_t i = 0; i < n; i++)
		if (!kv[i]->key || !kv[i]->key[0])
			return wire__fail(diag, WIRE_EMALFORMED, "%s[%zu].key: empty", what, i);
	return WIRE_OK;
}

static int validate_task_list(const ProtobufCMessage *msg, struct wire_diag *diag)
{
	const Outpost__TaskList *l = (const Outpost__TaskList *)msg;
	for (size_t i = 0; i < l->n_tasks; i++) {
		const Outpost__Task *t = l->tasks[i];
		if (t->id == 0)
			return wire__fail(diag, WIRE_EMALFORMED, "TaskList.tasks[%zu].id: zero", i);
		if (wire_id_check(t->device_id))
			return wire__fail(diag, WIRE_EID, "TaskList.tasks[%zu].device_id: invalid", i);
		if (!t->type || !t->type[0])
			return wire__fail(diag, WIRE_EMALFORMED, "TaskList.tasks[%zu].type: empty", i);
		int rc = validate_kvs(t->args, t->n_args, "Task.args", diag);
		if (rc)
			return rc;
	}
	return WIRE_OK;
}

static int validate_task_result(const ProtobufCMessage *msg, struct wire_diag *diag)
{
	const Outpost__TaskResult *r = (const Outpost__TaskResult *)msg;
	if (r->task_id == 0)
		return wire__fail(diag, WIRE_EMALFORMED, "TaskResult.task_id: zero");
	if (r->status < OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED ||
	    r->status > OUTPOST__TASK_STATUS__TASK_STATUS_REJECTED)
		return wire__fail(diag, WIRE_EMALFORMED, "TaskResult.status: unknown value %d",
				  (int)r->status);
	return validate_kvs(r->output, r->n_output, "TaskResult.output", diag);
}

static const struct kind_codec codecs[WIRE_KIND_MAX + 1] = {
	[WIRE_KIND_BIRTH] = {&outpost__birth__descriptor, &wire__schema_birth, validate_birth},
	[WIRE_KIND_BATCH] = {&outpost__batch__descriptor, &wire__schema_batch,
			     wire__batch_validate},
	[WIRE_KIND_TASK_POLL] = {&outpost__task_poll__descriptor, &wire__schema_task_poll,
				 validate_task_poll},
	[WIRE_KIND_TASK_RESULT] = {&outpost__task_result__descriptor, &wire__schema_task_result,
				   validate_task_result},
	[WIRE_KIND_ACK] = {&outpost__ack__descriptor, &wire__schema_ack, validate_ack},
	[WIRE_KIND_TASK_LIST] = {&outpost__task_list__descriptor, &wire__schema_task_list,
				 validate_task_list},
};

int wire_msg_decode(uint32_t kind, const uint8_t *body, size_t len, ProtobufCMessage **out,
		    struct wire_diag *diag)
{
	struct wire__budget budget;
	ProtobufCMessage *m;
	int rc;

	if (!out || (!body && len) || kind == 0 || kind > WIRE_KIND_MAX)
		return WIRE_EINVAL;
	const struct kind_codec *c = &codecs[kind];
	if (len > WIRE_MAX_BODY)
		return wire__fail(diag, WIRE_ELIMIT, "%s: %zu bytes, limit %d", c->schema->name, len,
				  WIRE_MAX_BODY);
	rc = wire__scan(c->schema, body, len, diag);
	if (rc)
		return rc;
	wire__budget_init(&budget, len);
	m = protobuf_c_message_unpack(c->desc, &budget.alloc, len, body);
	if (!m)
		return wire__fail(diag, WIRE_EMALFORMED, "%s: not valid protobuf", c->schema->name);
	if (c->validate && (rc = c->validate(m, diag)) != 0) {
		wire_msg_free(m);
		return rc;
	}
	*out = m;
	return WIRE_OK;
}

void wire_msg_free(void *msg)
{
	if (msg)
		protobuf_c_message_free_unpacked(msg, &wire__free_alloc);
}

int wire_msg_pack(uint32_t kind, const ProtobufCMessage *msg, uint8_t **out, size_t *len,
		  struct wire_diag *diag)
{
	ProtobufCMessage *check = NULL;
	if (!msg || !out || !len || kind == 0 || kind > WIRE_KIND_MAX ||
	    msg->descriptor != codecs[kind].desc)
		return WIRE_EINVAL;
	size_t size = protobuf_c_message_get_packed_size(msg);
	if (size > WIRE_MAX_BODY)
		return wire__fail(diag, WIRE_ELIMIT, "%s: %zu bytes, limit %d",
				  codecs[kind].schema->name, size, WIRE_MAX_BODY);
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return WIRE_ENOMEM;
	protobuf_c_message_pack(msg, buf);
	int rc = wire_msg_decode(kind, buf, size, &check, diag);
	wire_msg_free(check);
	if (rc) {
		free(buf);
		return rc;
	}
	*out = buf;
	*len = size;
	return WIRE_OK;
}
