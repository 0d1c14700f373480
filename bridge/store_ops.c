/* store_ops.c - device records, operator state changes, events and task queueing. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ovis.h"
#include "store_ops.h"
#include "wire_msg.h"
#include "wire_topic.h"
#include "wire_utf8.h"

const char *const store_task_types[] = {"ping",        "set_config", "resend",
                                        "collect_now", "restart",    NULL};

const char *const store_device_states[] = {STORE_ST_UNENROLLED, STORE_ST_ACTIVE,
                                           STORE_ST_QUARANTINED, STORE_ST_REVOKED,
                                           STORE_ST_DEACTIVATED, NULL};

const char *const store_task_states[] = {STORE_TASK_QUEUED,    STORE_TASK_DELIVERED,
                                         STORE_TASK_SUCCEEDED, STORE_TASK_FAILED,
                                         STORE_TASK_EXPIRED,   STORE_TASK_CANCELLED,
                                         NULL};

/* In the order of docs/BRIDGE.md "Health". tests/unit/test_store.c checks that every type the
 * bridge sources write is here. */
const char *const store_event_types[] = {
    "enrolled", "reenrolled", "birth", "chain_floor_ahead", "chain_floor_ignored", "chain_forked",
    "online",
    "offline", "rejected", "quarantined", "released", "revoked", "deactivated", "reactivated",
    "gap_dropped", "gap_missing", "gap_filled", "metric_unnamed", "metric_limit", "clock_ahead",
    "task_queued", "task_delivered", "task_succeeded", "task_failed", "task_expired",
    "task_cancelled", "task_result_unknown", "task_result_ignored", "pruned", NULL};

int store_name_in(const char *name, const char *const *list)
{
	for (size_t i = 0; name && list[i]; i++)
		if (!strcmp(name, list[i]))
			return 1;
	return 0;
}

int64_t store_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* src into dst, cut if it must be before a whole character, never inside one. */
static void copy_text(char *dst, size_t cap, const char *src)
{
	size_t n = src ? ovis_fit(src, strlen(src), cap - 1) : 0;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

static int64_t col_opt(struct store_stmt *st, int col, int64_t none)
{
	return store_col_null(st, col) ? none : store_col_i64(st, col);
}

int store_device_get(struct store *s, const char *device_id, struct store_device *out)
{
	struct store_stmt *st = NULL;
	struct store_device d;
	int rc = store_prepare(
	    s,
	    "SELECT id, device_id, state, state_reason, online, pubkey, agent_version,"
	    " sample_interval_s, poll_interval_s, frontier, last_nd_seq, consecutive_rejects,"
	    " envelopes, readings, duplicates, rejected, spool_records, spool_bytes,"
	    " spool_dropped_total, created_at, enrolled_at, last_seen_at, last_birth_at,"
	    " state_changed_at, batch_interval_s FROM devices WHERE device_id = ?",
	    &st);
	if (rc)
		return rc;
	if ((rc = store_bind_text(st, 1, device_id)))
		goto out;
	rc = store_step(st);
	if (rc <= 0) {
		rc = rc == 0 ? STORE_ENOTFOUND : rc;
		goto out;
	}
	memset(&d, 0, sizeof(d));
	d.key = store_col_i64(st, 0);
	copy_text(d.device_id, sizeof(d.device_id), store_col_text(st, 1));
	copy_text(d.state, sizeof(d.state), store_col_text(st, 2));
	copy_text(d.state_reason, sizeof(d.state_reason), store_col_text(st, 3));
	d.online = (int)store_col_i64(st, 4);
	size_t klen = 0;
	const void *k = store_col_blob(st, 5, &klen);
	if (k && klen == WIRE_PUBKEY_LEN) {
		memcpy(d.pubkey, k, WIRE_PUBKEY_LEN);
		d.has_pubkey = 1;
	}
	copy_text(d.agent_version, sizeof(d.agent_version), store_col_text(st, 6));
	d.sample_interval_s = store_col_i64(st, 7);
	d.poll_interval_s = store_col_i64(st, 8);
	d.frontier = store_col_i64(st, 9);
	d.last_nd_seq = store_col_i64(st, 10);
	d.consecutive_rejects = store_col_i64(st, 11);
	d.envelopes = store_col_i64(st, 12);
	d.readings = store_col_i64(st, 13);
	d.duplicates = store_col_i64(st, 14);
	d.rejected = store_col_i64(st, 15);
	d.spool_records = col_opt(st, 16, -1);
	d.spool_bytes = col_opt(st, 17, -1);
	d.spool_dropped_total = col_opt(st, 18, -1);
	d.created_at = store_col_i64(st, 19);
	d.enrolled_at = col_opt(st, 20, 0);
	d.last_seen_at = col_opt(st, 21, 0);
	d.last_birth_at = col_opt(st, 22, 0);
	d.state_changed_at = store_col_i64(st, 23);
	d.batch_interval_s = store_col_i64(st, 24);
	*out = d;
	rc = STORE_OK;
out:
	store_stmt_free(st);
	return rc;
}

int store_event_add(struct store *s, int64_t device_key, int64_t at, const char *type,
                    const char *detail)
{
	struct store_stmt *st = NULL;
	int rc = store_prepare(
	    s, "INSERT INTO events (at, device, type, detail) VALUES (?, ?, ?, ?)", &st);
	if (rc)
		return rc;
	if (!(rc = store_bind_i64(st, 1, at)) &&
	    !(rc = device_key ? store_bind_i64(st, 2, device_key) : store_bind_null(st, 2)) &&
	    !(rc = store_bind_text(st, 3, type)) &&
	    !(rc = store_bind_text(st, 4, detail ? detail : ""))) {
		rc = store_step(st);
		rc = rc < 0 ? rc : STORE_OK;
	}
	store_stmt_free(st);
	return rc;
}

/* Remember the key d holds as revoked (revoked_keys): the bridge refuses every Birth with it,
 * and every envelope signed with it, from now on, also once the device has re-enrolled with a
 * new key. */
static int remember_revoked_key(struct store *s, const struct store_device *d, int64_t now)
{
	struct store_stmt *st = NULL;
	int rc;
	if (!d->has_pubkey)
		return STORE_OK; /* never enrolled: any verified Birth enrols it (a new key) */
	rc = store_prepare(s, STORE_SQL_KEY_REVOKE, &st);
	if (!rc && !(rc = store_bind_blob(st, 1, d->pubkey, WIRE_PUBKEY_LEN)) &&
	    !(rc = store_bind_i64(st, 2, d->key)) && !(rc = store_bind_i64(st, 3, now))) {
		rc = store_step(st);
		rc = rc < 0 ? rc : STORE_OK;
	}
	store_stmt_free(st);
	return rc;
}

/* What an action turns a state into; NULL if it does not apply. */
static const char *transition(const char *action, const char *state, int has_key)
{
	if (!strcmp(action, "quarantine"))
		return strcmp(state, STORE_ST_REVOKED) && strcmp(state, STORE_ST_QUARANTINED)
		           ? STORE_ST_QUARANTINED
		           : NULL;
	if (!strcmp(action, "release")) {
		if (strcmp(state, STORE_ST_QUARANTINED) && strcmp(state, STORE_ST_DEACTIVATED))
			return NULL;
		return has_key ? STORE_ST_ACTIVE : STORE_ST_UNENROLLED;
	}
	if (!strcmp(action, "revoke"))
		return strcmp(state, STORE_ST_REVOKED) ? STORE_ST_REVOKED : NULL;
	return NULL;
}

int store_device_action(struct store *s, const char *device_id, const char *action, const char *by,
                        const char *reason, char *old_state)
{
	struct store_device d;
	struct store_stmt *st = NULL;
	char detail[STORE_STATE_REASON_MAX + 1];
	int rc;

	if (strcmp(action, "quarantine") && strcmp(action, "release") && strcmp(action, "revoke"))
		return STORE_EINVAL;
	if (reason && strlen(reason) > STORE_REASON_MAX)
		return STORE_EINVAL; /* never cut: the caller refuses it first */
	if ((rc = store_begin(s)))
		return rc;
	/* Under the write lock (SQLite) the row cannot change; on PostgreSQL the conditional
	 * UPDATE below only succeeds if the state is still the one read. */
	if ((rc = store_device_get(s, device_id, &d)))
		goto fail;
	if (old_state)
		snprintf(old_state, 16, "%s", d.state);
	const char *to = transition(action, d.state, d.has_pubkey);
	if (!to) {
		rc = STORE_ESTATE;
		goto fail;
	}
	int64_t now = store_now_ms();
	snprintf(detail, sizeof(detail), "%s -> %s by %s%s%s", d.state, to, by ? by : "operator",
	         reason && *reason ? ": " : "", reason ? reason : "");
	wire_utf8_sanitize(detail); /* only a long 'by' can cut it */
	rc = store_prepare(s,
	                   "UPDATE devices SET state = ?, state_reason = ?, state_changed_at = ?,"
	                   " consecutive_rejects = CASE WHEN ? = 'release' THEN 0 ELSE"
	                   " consecutive_rejects END, last_seen_at = CASE WHEN ? = 'release' AND"
	                   " state = 'deactivated' THEN ? ELSE last_seen_at END"
	                   " WHERE id = ? AND state = ?",
	                   &st);
	if (rc)
		goto fail;
	if ((rc = store_bind_text(st, 1, to)) || (rc = store_bind_text(st, 2, detail)) ||
	    (rc = store_bind_i64(st, 3, now)) || (rc = store_bind_text(st, 4, action)) ||
	    (rc = store_bind_text(st, 5, action)) || (rc = store_bind_i64(st, 6, now)) ||
	    (rc = store_bind_i64(st, 7, d.key)) || (rc = store_bind_text(st, 8, d.state)))
		goto fail;
	rc = store_step(st);
	if (rc < 0)
		goto fail;
	if (store_changes(st) != 1) {
		rc = STORE_EBUSY;
		goto fail;
	}
	store_stmt_free(st);
	st = NULL;
	const char *type = !strcmp(action, "quarantine") ? "quarantined"
	                   : !strcmp(action, "revoke")   ? "revoked"
	                                                 : "released";
	if (!strcmp(action, "revoke") && (rc = remember_revoked_key(s, &d, now)))
		goto fail;
	if ((rc = store_event_add(s, d.key, now, type, detail)))
		goto fail;
	return store_commit(s);
fail:
	store_stmt_free(st);
	store_rollback(s);
	return rc;
}

int store_task_type_allowed(const char *type)
{
	return store_name_in(type, store_task_types);
}

static int valid_text(const char *s, size_t max)
{
	size_t n = s ? strnlen(s, max + 1) : 0;
	if (n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 && s[i] != '\t')
			return 0;
	/* the device refuses a TaskList that is not UTF-8, and PostgreSQL refuses to store one */
	return wire_utf8_valid(s, n);
}

/* Take a device's row for the rest of the transaction (PostgreSQL; SQLite's one writer holds
 * the whole database already). Task changes do this first, in the order the bridge does. */
static int lock_device_row(struct store *s, int64_t key)
{
	int64_t args[] = {key}, n = 0;
	if (store_dialect(s) != STORE_PG)
		return STORE_OK;
	return store_exec_i64(s, "SELECT id FROM devices WHERE id = ? FOR UPDATE", args, 1, &n);
}

int store_task_add(struct store *s, const char *device_id, const char *type,
                   const struct store_kv *args, size_t nargs, int64_t expires_at, const char *by,
                   int64_t *id)
{
	struct store_device d;
	struct store_stmt *st = NULL;
	char detail[256];
	int64_t now = store_now_ms(), task = 0;
	int rc;

	if (!store_task_type_allowed(type) || nargs > WIRE_MAX_ARGS || expires_at <= now)
		return STORE_EINVAL;
	for (size_t i = 0; i < nargs; i++) {
		if (!args[i].key || !args[i].key[0] || !valid_text(args[i].key, WIRE_MAX_KEY) ||
		    !valid_text(args[i].value, WIRE_MAX_VALUE))
			return STORE_EINVAL;
	}
	if ((rc = store_begin(s)))
		return rc;
	if ((rc = store_device_get(s, device_id, &d)))
		goto fail;
	if (!strcmp(d.state, STORE_ST_REVOKED)) {
		rc = STORE_ESTATE;
		goto fail;
	}
	/* PostgreSQL hands out ids at INSERT and shows rows at COMMIT: two adds for one device in
	 * flight could become visible out of id order, and a device refuses an id below one it has
	 * seen. Taking the device's row first makes them take turns. */
	if ((rc = lock_device_row(s, d.key)))
		goto fail;
	rc = store_prepare(
	    s,
	    "INSERT INTO tasks (device, type, state, created_at, expires_at, created_by)"
	    " VALUES (?, ?, 'queued', ?, ?, ?) RETURNING id",
	    &st);
	if (rc)
		goto fail;
	if ((rc = store_bind_i64(st, 1, d.key)) || (rc = store_bind_text(st, 2, type)) ||
	    (rc = store_bind_i64(st, 3, now)) || (rc = store_bind_i64(st, 4, expires_at)) ||
	    (rc = store_bind_text(st, 5, by ? by : "")))
		goto fail;
	rc = store_step(st);
	if (rc != 1) {
		rc = rc < 0 ? rc : STORE_EQUERY;
		goto fail;
	}
	task = store_col_i64(st, 0);
	store_reset(st); /* drain RETURNING before the next statement */
	store_stmt_free(st);
	st = NULL;
	if (nargs) {
		rc = store_prepare(
		    s, "INSERT INTO task_args (task, idx, key, value) VALUES (?, ?, ?, ?)", &st);
		for (size_t i = 0; i < nargs && !rc; i++) {
			if (!(rc = store_bind_i64(st, 1, task)) &&
			    !(rc = store_bind_i64(st, 2, (int64_t)i)) &&
			    !(rc = store_bind_text(st, 3, args[i].key)) &&
			    !(rc = store_bind_text(st, 4, args[i].value ? args[i].value : ""))) {
				rc = store_step(st);
				rc = rc < 0 ? rc : STORE_OK;
			}
			store_reset(st);
		}
		if (rc)
			goto fail;
		store_stmt_free(st);
		st = NULL;
	}
	snprintf(detail, sizeof(detail), "task %lld %s queued by %s", (long long)task, type,
	         by ? by : "operator");
	wire_utf8_sanitize(detail);
	if ((rc = store_event_add(s, d.key, now, "task_queued", detail)))
		goto fail;
	if ((rc = store_commit(s)))
		goto fail;
	*id = task;
	return STORE_OK;
fail:
	store_stmt_free(st);
	store_rollback(s);
	return rc;
}

int store_task_cancel(struct store *s, int64_t id, const char *by, char *state)
{
	struct store_stmt *st = NULL;
	char detail[128];
	int64_t device = 0, now = store_now_ms();
	int rc;

	if ((rc = store_begin(s)))
		return rc;
	rc = store_prepare(s, "SELECT device, state, type FROM tasks WHERE id = ?", &st);
	if (rc || (rc = store_bind_i64(st, 1, id)))
		goto fail;
	rc = store_step(st);
	if (rc <= 0) {
		rc = rc == 0 ? STORE_ENOTFOUND : rc;
		goto fail;
	}
	device = store_col_i64(st, 0);
	const char *cur = store_col_text(st, 1);
	if (state)
		snprintf(state, 16, "%s", cur ? cur : "");
	if (!cur || strcmp(cur, STORE_TASK_QUEUED)) {
		rc = STORE_ESTATE;
		goto fail;
	}
	snprintf(detail, sizeof(detail), "task %lld %s cancelled by %s", (long long)id,
	         store_col_text(st, 2), by ? by : "operator");
	wire_utf8_sanitize(detail);
	store_stmt_free(st);
	st = NULL;
	/* The device's row first, as the bridge answering a poll takes it: PostgreSQL would
	 * otherwise find the two waiting on each other. */
	if ((rc = lock_device_row(s, device)))
		goto fail;
	rc = store_prepare(s,
	                   "UPDATE tasks SET state = 'cancelled', finished_at = ? WHERE id = ? AND"
	                   " state = 'queued'",
	                   &st);
	if (rc || (rc = store_bind_i64(st, 1, now)) || (rc = store_bind_i64(st, 2, id)))
		goto fail;
	rc = store_step(st);
	if (rc < 0)
		goto fail;
	if (store_changes(st) != 1) { /* delivered (or expired) since we looked: say what it is */
		store_stmt_free(st);
		st = NULL;
		if (state && !store_prepare(s, "SELECT state FROM tasks WHERE id = ?", &st) &&
		    !store_bind_i64(st, 1, id) && store_step(st) == 1 && store_col_text(st, 0))
			snprintf(state, 16, "%s", store_col_text(st, 0));
		rc = STORE_ESTATE;
		goto fail;
	}
	store_stmt_free(st);
	st = NULL;
	if ((rc = store_event_add(s, device, now, "task_cancelled", detail)))
		goto fail;
	return store_commit(s);
fail:
	store_stmt_free(st);
	store_rollback(s);
	return rc;
}
