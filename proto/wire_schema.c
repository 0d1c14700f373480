/* wire_schema.c - size and count limits of every message in outpost.proto, as scanner tables.
 * Keep in step with outpost.proto and wire_limits.h; tests/unit/test_wire_msg.c checks each. */
#include "wire_internal.h"
#include "wire_limits.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define VARINT(num, name) {num, WIRE__ST_VARINT, 1, 0, NULL, name}
#define TEXT(num, max, name) {num, WIRE__ST_STRING, 1, max, NULL, name}
#define BYTES(num, max, name) {num, WIRE__ST_BYTES, 1, max, NULL, name}
#define MSG(num, sub, name) {num, WIRE__ST_MSG, 1, 0, &sub, name}
#define MSGS(num, max, sub, name) {num, WIRE__ST_MSG, max, 0, &sub, name}
#define PACKED(num, max, name) {num, WIRE__ST_PACKED, max, 0, NULL, name}
#define SCHEMA(var, name, fields) const struct wire__schema var = {name, fields, N(fields)}

static const struct wire__field seq_range_f[] = {VARINT(1, "first"), VARINT(2, "last")};
static SCHEMA(seq_range, "SeqRange", seq_range_f);

static const struct wire__field dropped_f[] = {
	VARINT(1, "prev_seq"), VARINT(2, "last_seq"), VARINT(3, "count")};
static SCHEMA(dropped, "Dropped", dropped_f);

static const struct wire__field metric_def_f[] = {
	VARINT(1, "id"), TEXT(2, WIRE_MAX_METRIC_NAME, "name"), TEXT(3, WIRE_MAX_UNIT, "unit")};
static SCHEMA(metric_def, "MetricDef", metric_def_f);

static const struct wire__field spool_stats_f[] = {
	VARINT(1, "records"),	  VARINT(2, "bytes"),
	VARINT(3, "oldest_unsent_age_s"), VARINT(4, "disconnects"),
	TEXT(5, WIRE_MAX_CAUSE, "last_disconnect_cause"), VARINT(6, "dropped_total")};
static SCHEMA(spool_stats, "SpoolStats", spool_stats_f);

static const struct wire__field birth_f[] = {
	TEXT(1, WIRE_MAX_AGENT_VERSION, "agent_version"),
	BYTES(2, WIRE_BOOT_ID_LEN, "boot_id"),
	TEXT(3, WIRE_MAX_CERT_PEM, "cert_pem"),
	MSGS(4, WIRE_MAX_METRICS, metric_def, "metrics"),
	MSG(5, spool_stats, "spool"),
	VARINT(6, "sample_interval_s"),
	VARINT(7, "poll_interval_s"),
	VARINT(8, "started_at_ms"),
	VARINT(9, "chain_floor"),
	VARINT(10, "batch_interval_s")};
SCHEMA(wire__schema_birth, "Birth", birth_f);

static const struct wire__field batch_f[] = {
	VARINT(1, "prev_seq"),
	VARINT(2, "t0_ms"),
	PACKED(3, WIRE_MAX_ROWS, "row_dt_ms"),
	PACKED(4, WIRE_MAX_COLS, "metric_ids"),
	PACKED(5, WIRE_MAX_COLS, "scales"),
	PACKED(6, WIRE_MAX_CELLS, "values"),
	PACKED(7, WIRE_MAX_CELLS, "absent"),
	MSGS(8, WIRE_MAX_DROPPED, dropped, "dropped")};
SCHEMA(wire__schema_batch, "Batch", batch_f);

static const struct wire__field ack_f[] = {
	VARINT(1, "upto"), MSGS(2, WIRE_MAX_ACK_RANGES, seq_range, "ranges"),
	VARINT(3, "committed_at_ms")};
SCHEMA(wire__schema_ack, "Ack", ack_f);

static const struct wire__field key_value_f[] = {
	TEXT(1, WIRE_MAX_KEY, "key"), TEXT(2, WIRE_MAX_VALUE, "value")};
static SCHEMA(key_value, "KeyValue", key_value_f);

static const struct wire__field task_poll_f[] = {VARINT(1, "last_task_id"), VARINT(2, "max_tasks")};
SCHEMA(wire__schema_task_poll, "TaskPoll", task_poll_f);

static const struct wire__field task_f[] = {
	VARINT(1, "id"),
	TEXT(2, WIRE_ID_MAX, "device_id"),
	TEXT(3, WIRE_MAX_TASK_TYPE, "type"),
	MSGS(4, WIRE_MAX_ARGS, key_value, "args"),
	VARINT(5, "expires_at_ms"),
	VARINT(6, "created_at_ms")};
static SCHEMA(task, "Task", task_f);

static const struct wire__field task_list_f[] = {
	VARINT(1, "poll_seq"), MSGS(2, WIRE_MAX_TASKS, task, "tasks"), VARINT(3, "issued_at_ms")};
SCHEMA(wire__schema_task_list, "TaskList", task_list_f);

static const struct wire__field task_result_f[] = {
	VARINT(1, "prev_seq"),
	VARINT(2, "task_id"),
	VARINT(3, "status"),
	TEXT(4, WIRE_MAX_TEXT, "message"),
	MSGS(5, WIRE_MAX_OUTPUT, key_value, "output"),
	VARINT(6, "finished_at_ms")};
SCHEMA(wire__schema_task_result, "TaskResult", task_result_f);
