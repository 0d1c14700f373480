/* ctl_tasks.c - outpostctl task add|list|show|cancel (the operator side of polled tasks). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "ctl.h"
#include "ctl_sql.h"
#include "store_ops.h"
#include "wire_task.h"
#include "wire_topic.h"

#define DEFAULT_EXPIRY "24h"

/* What each task type takes (docs/DEVICE.md "Tasks"), checked when the task is queued: a
 * mistake is told now, not reported by the device a poll later. The device checks again
 * (set_config values included: their bounds are its own). */
static int check_args(const char *type, const struct store_kv *kv, size_t n)
{
	char keys[256];
	if (!strcmp(type, "set_config")) {
		cfg_join(wire_set_config_keys, keys, sizeof(keys));
		if (!n)
			return ctl_err(CTL_USAGE,
			               "task add: set_config needs at least one --arg KEY=VALUE (keys:"
			               " %s)",
			               keys);
		for (size_t i = 0; i < n; i++) {
			if (!wire_set_config_key_ok(kv[i].key))
				return ctl_err(CTL_USAGE,
				               "task add: set_config: '%s' cannot be set remotely"
				               " (settable: %s)",
				               kv[i].key, keys);
			if (!kv[i].value[0])
				return ctl_err(CTL_USAGE,
				               "task add: set_config: --arg %s= needs a value",
				               kv[i].key);
		}
		return CTL_OK;
	}
	if (!strcmp(type, "resend")) {
		const char *from = NULL, *to = NULL;
		int64_t first, last; /* envelope seqs: below 2^63 */
		for (size_t i = 0; i < n; i++) {
			if (!strcmp(kv[i].key, "from"))
				from = kv[i].value;
			else if (!strcmp(kv[i].key, "to"))
				to = kv[i].value;
			else
				return ctl_err(CTL_USAGE,
				               "task add: resend takes only --arg from=SEQ --arg to=SEQ,"
				               " not '%s'",
				               kv[i].key);
		}
		if (!from || !to)
			return ctl_err(CTL_USAGE,
			               "task add: resend needs --arg from=SEQ --arg to=SEQ (the"
			               " envelope seqs to send again)");
		if (ctl_parse_number(from, 0, &first))
			return ctl_err(CTL_USAGE, "task add: --arg from=%s: want a sequence number",
			               from);
		if (ctl_parse_number(to, 0, &last))
			return ctl_err(CTL_USAGE, "task add: --arg to=%s: want a sequence number", to);
		if (first > last)
			return ctl_err(CTL_USAGE, "task add: resend: from %s is after to %s", from,
			               to);
		return CTL_OK;
	}
	if (n)
		return ctl_err(CTL_USAGE, "task add: %s takes no --arg", type);
	return CTL_OK;
}

static int add(struct ctl *c, int argc, char **argv)
{
	const char *device = NULL, *type = NULL, *expires = DEFAULT_EXPIRY, *pos[1];
	const char *args[WIRE_MAX_ARGS];
	size_t nargs = 0;
	int npos, rc;
	struct ctl_optdef defs[] = {{"device", 1, &device, NULL, NULL, 0},
	                            {"type", 1, &type, NULL, NULL, 0},
	                            {"arg", 1, NULL, args, &nargs, WIRE_MAX_ARGS},
	                            {"expires", 1, &expires, NULL, NULL, 0},
	                            {NULL, 0, NULL, NULL, NULL, 0}};
	if ((rc = ctl_args(c, "task add", argc, argv, defs, pos, 0, &npos)))
		return rc;
	if (!device || !type)
		return ctl_err(CTL_USAGE, "task add: --device ID and --type TYPE are required");
	if (wire_device_id_check(device))
		return ctl_err(CTL_USAGE, "task add: '%s' is not a device id", device);
	if (!store_task_type_allowed(type)) {
		char list[128];
		return ctl_err(CTL_USAGE, "task add: type '%s' is not allowed (allowed: %s)", type,
		               cfg_join(store_task_types, list, sizeof(list)));
	}
	int64_t ttl;
	if (cfg_parse_duration(expires, &ttl) || ttl <= 0 || ttl > 3650LL * 86400000)
		return ctl_err(CTL_USAGE, "task add: --expires: want a duration like 30m, 24h, 7d");
	struct store_kv kv[WIRE_MAX_ARGS];
	char *copies[WIRE_MAX_ARGS] = {0};
	size_t ncopies = 0;
	struct store *s = NULL;
	int64_t id = 0;
	for (size_t i = 0; i < nargs; i++) {
		const char *eq = strchr(args[i], '=');
		if (!eq || eq == args[i]) {
			rc = ctl_err(CTL_USAGE, "task add: --arg '%s': want key=value", args[i]);
			goto out;
		}
		size_t klen = (size_t)(eq - args[i]);
		if (klen > WIRE_MAX_KEY || strlen(eq + 1) > WIRE_MAX_VALUE) {
			rc = ctl_err(CTL_USAGE,
			             "task add: --arg '%.40s': key over %d or value over %d bytes",
			             args[i], WIRE_MAX_KEY, WIRE_MAX_VALUE);
			goto out;
		}
		for (size_t j = 0; j < i; j++)
			if (strlen(kv[j].key) == klen && !strncmp(kv[j].key, args[i], klen)) {
				rc = ctl_err(CTL_USAGE, "task add: --arg %.*s given twice",
				             (int)klen, args[i]);
				goto out;
			}
		if (!(copies[ncopies++] = strndup(args[i], klen))) {
			rc = ctl_err(CTL_FAIL, "task add: out of memory");
			goto out;
		}
		kv[i].key = copies[i];
		kv[i].value = eq + 1;
	}
	if ((rc = check_args(type, kv, nargs)))
		goto out;
	if (!(s = ctl_store(c))) {
		rc = c->code;
		goto out;
	}
	rc = store_task_add(s, device, type, kv, nargs, store_now_ms() + ttl, CTL_PROG, &id);
	if (rc == STORE_ENOTFOUND)
		rc = ctl_err(CTL_FAIL, "no device '%s' in %s", device, store_url(s));
	else if (rc == STORE_ESTATE)
		rc = ctl_err(CTL_FAIL, "%s is revoked: no tasks for it", device);
	else if (rc == STORE_EINVAL)
		rc = ctl_err(CTL_USAGE, "task add: arguments refused (control characters?)");
	else if (rc)
		rc = ctl_store_err(c, "task add", rc);
	else {
		ctl_done(c, "its id", "task %" PRId64 " queued", id);
		printf("%" PRId64 "\n", id);
	}
out:
	for (size_t i = 0; i < ncopies; i++)
		free(copies[i]);
	return rc;
}

static int list(struct ctl *c, int argc, char **argv)
{
	const char *device = NULL, *state = NULL, *limit = NULL, *format = "table", *pos[1];
	int64_t max = 100;
	enum ctl_fmt fmt;
	int npos, rc;
	struct ctl_optdef defs[] = {{"device", 1, &device, NULL, NULL, 0},
	                            {"state", 1, &state, NULL, NULL, 0},
	                            {"limit", 1, &limit, NULL, NULL, 0},
	                            {"format", 1, &format, NULL, NULL, 0},
	                            {NULL, 0, NULL, NULL, NULL, 0}};
	if ((rc = ctl_args(c, "task list", argc, argv, defs, pos, 0, &npos)))
		return rc;
	if (ctl_fmt_parse(format, &fmt))
		return ctl_err(CTL_USAGE, "task list: --format: want table, csv or json");
	if (state && (rc = ctl_check_choice("task list", "state", state, store_task_states)))
		return rc;
	if (limit && ctl_parse_number(limit, 1, &max))
		return ctl_err(CTL_USAGE, "task list: --limit: want a positive number");
	if (!ctl_store(c))
		return c->code;
	int64_t key = 0;
	if (device && (rc = ctl_device_key(c, device, &key)))
		return rc; /* a typo in the id is said, not shown as an empty list */
	struct store_stmt *st = NULL;
	rc = store_prepare(c->s, device ? CTL_SQL_TASKS_DEVICE : CTL_SQL_TASKS, &st);
	int col = 1;
	if (!rc && !(rc = device ? store_bind_i64(st, col++, key) : 0) &&
	    !(rc = store_bind_text(st, col++, state)) && !(rc = store_bind_text(st, col++, state)))
		rc = store_bind_i64(st, col, max);
	if (rc) {
		store_stmt_free(st);
		return ctl_store_err(c, "task list", rc);
	}
	static const char *const names[] = {"id",      "device",  "type",      "state",
	                                    "created", "expires", "delivered", "finished",
	                                    "result",  "message"};
	static const enum ctl_coltype types[] = {CTL_NUM, CTL_STR, CTL_STR, CTL_STR, CTL_STR,
	                                         CTL_STR, CTL_STR, CTL_STR, CTL_STR, CTL_STR};
	struct ctl_out o;
	ctl_out_begin(&o, fmt, c->raw, stdout, 10, names, types);
	while ((rc = store_step(st)) == 1) {
		char id[24], t[4][32];
		snprintf(id, sizeof(id), "%" PRId64, store_col_i64(st, 0));
		const char *v[10] = {
		    id,
		    store_col_text(st, 1),
		    store_col_text(st, 2),
		    store_col_text(st, 3),
		    ctl_time(store_col_i64(st, 4), t[0]),
		    ctl_time(store_col_i64(st, 5), t[1]),
		    store_col_null(st, 6) ? NULL : ctl_time(store_col_i64(st, 6), t[2]),
		    store_col_null(st, 7) ? NULL : ctl_time(store_col_i64(st, 7), t[3]),
		    store_col_text(st, 8),
		    store_col_text(st, 9)};
		if (ctl_out_row(&o, v))
			break;
	}
	int out_rc = ctl_out_end(&o, rc < 0);
	store_stmt_free(st);
	return rc < 0 ? ctl_store_err(c, "task list", rc) : out_rc;
}

static int kvs(struct ctl *c, const char *table, int64_t id, const char *title)
{
	struct store_stmt *st = NULL;
	char sql[128];
	snprintf(sql, sizeof(sql), "SELECT key, value FROM %s WHERE task = ? ORDER BY idx", table);
	int rc = store_prepare(c->s, sql, &st), n = 0;
	if (rc || (rc = store_bind_i64(st, 1, id)))
		goto out;
	while ((rc = store_step(st)) == 1) {
		char k[CTL_VIS_MAX], v[CTL_VIS_MAX];
		printf("%s%s=%s\n", n++ ? "            " : title,
		       ctl_vis(store_col_text(st, 0), k, sizeof(k)),
		       ctl_vis(store_col_text(st, 1), v, sizeof(v)));
	}
	if (!n && rc == 0)
		printf("%s-\n", title);
out:
	store_stmt_free(st);
	return rc < 0 ? rc : 0;
}

static int show(struct ctl *c, const char *ids)
{
	int64_t id;
	if (ctl_parse_number(ids, 1, &id))
		return ctl_err(CTL_USAGE, "task show: '%s' is not a task id", ids);
	if (!ctl_store(c))
		return c->code;
	struct store_stmt *st = NULL;
	int rc = store_prepare(c->s,
	                       "SELECT d.device_id, t.type, t.state, t.created_at, t.created_by,"
	                       " t.expires_at, t.delivered_at, t.deliveries, t.finished_at,"
	                       " t.result_status, t.result_message, t.result_seq FROM tasks t JOIN"
	                       " devices d ON d.id = t.device WHERE t.id = ?",
	                       &st);
	if (rc || (rc = store_bind_i64(st, 1, id)) || (rc = store_step(st)) < 0) {
		store_stmt_free(st);
		return ctl_store_err(c, "task show", rc);
	}
	if (rc == 0) {
		store_stmt_free(st);
		return ctl_err(CTL_FAIL, "no task %" PRId64 " in %s", id, store_url(c->s));
	}
	char t[32];
	printf("task        %" PRId64 "\n", id);
	printf("device      %s\n", store_col_text(st, 0));
	printf("type        %s\n", store_col_text(st, 1));
	printf("state       %s\n", store_col_text(st, 2));
	printf("created     %s by %s\n", ctl_time(store_col_i64(st, 3), t),
	       store_col_text(st, 4) ? store_col_text(st, 4) : "-");
	printf("expires     %s\n", ctl_time(store_col_i64(st, 5), t));
	if (store_col_null(st, 6))
		printf("delivered   no\n");
	else
		printf("delivered   %s (%" PRId64 " time(s))\n", ctl_time(store_col_i64(st, 6), t),
		       store_col_i64(st, 7));
	printf("finished    %s\n",
	       store_col_null(st, 8) ? "no" : ctl_time(store_col_i64(st, 8), t));
	if (!store_col_null(st, 9)) {
		printf("result      %s (envelope seq %" PRId64 ")\n", store_col_text(st, 9),
		       store_col_i64(st, 11));
		char v[CTL_VIS_MAX];
		printf("message     %s\n", ctl_vis(store_col_text(st, 10), v, sizeof(v)));
	}
	int has_result = !store_col_null(st, 9);
	store_stmt_free(st);
	if ((rc = kvs(c, "task_args", id, "args        ")))
		return ctl_store_err(c, "task show", rc);
	if (has_result && (rc = kvs(c, "task_output", id, "output      ")))
		return ctl_store_err(c, "task show", rc);
	return CTL_OK;
}

static int cancel(struct ctl *c, const char *ids)
{
	char state[16] = "";
	int64_t id;
	if (ctl_parse_number(ids, 1, &id))
		return ctl_err(CTL_USAGE, "task cancel: '%s' is not a task id", ids);
	struct store *s = ctl_store(c);
	if (!s)
		return c->code;
	int rc = store_task_cancel(s, id, CTL_PROG, state);
	if (rc == STORE_ENOTFOUND)
		return ctl_err(CTL_FAIL, "no task %" PRId64 " in %s", id, store_url(s));
	if (rc == STORE_ESTATE)
		return ctl_err(CTL_FAIL, "task %" PRId64 " is %s: only queued tasks can be cancelled", id,
		               state);
	if (rc)
		return ctl_store_err(c, "task cancel", rc);
	ctl_done(c, "the output saying so", "task %" PRId64 " cancelled", id);
	printf("task %" PRId64 ": queued -> cancelled\n", id);
	return CTL_OK;
}

int ctl_cmd_task(struct ctl *c, int argc, char **argv)
{
	int i = 0;
	while (i < argc && ctl_global_opt(c, argc, argv, &i)) /* e.g. task --help */
		i++;
	argc -= i;
	argv += i;
	if (argc < 1 || argv[0][0] == '-') {
		int rc = ctl_settle(c);
		if (rc)
			return rc;
		if (argc >= 1)
			return ctl_err(CTL_USAGE, "task: unknown option '%s' (try --help)",
			               argv[0]);
		return ctl_err(CTL_USAGE, "task: want add, list, show ID or cancel ID");
	}
	const char *sub = argv[0];
	if (!strcmp(sub, "add"))
		return add(c, argc - 1, argv + 1);
	if (!strcmp(sub, "list"))
		return list(c, argc - 1, argv + 1);
	if (!strcmp(sub, "show") || !strcmp(sub, "cancel")) {
		const char *pos[1];
		int npos, rc;
		struct ctl_optdef none[] = {{NULL, 0, NULL, NULL, NULL, 0}};
		if ((rc = ctl_args(c, sub, argc - 1, argv + 1, none, pos, 1, &npos)))
			return rc;
		if (npos != 1)
			return ctl_err(CTL_USAGE, "task %s: want a task id", sub);
		return !strcmp(sub, "show") ? show(c, pos[0]) : cancel(c, pos[0]);
	}
	return ctl_err(CTL_USAGE, "task: unknown action '%s' (add, list, show, cancel)", sub);
}
