/* brg_health.c - the writer's periodic jobs: offline and deactivated devices, expired tasks,
 * event retention, and revoking devices whose certificate a new CRL revokes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brg_commit_int.h"
#include "brg_err.h"
#include "olog.h"
#include "store_ops.h"
#include "store_prune.h"
#include "wire_env.h"

/* ---- health sweep ---- */

struct swept {
	int64_t key;
	char id[WIRE_ID_MAX + 1];
	int64_t a, b;
};

/* Run a SELECT with int64 args and collect (key, id, a, b) rows, at most max. */
static int collect(struct store *s, const char *q, const int64_t *args, int nargs,
                   struct swept **rows, size_t *n, size_t max)
{
	struct store_stmt *st = NULL;
	size_t cap = 0;
	int rc = store_prepare(s, q, &st);
	*rows = NULL;
	*n = 0;
	for (int i = 0; !rc && i < nargs; i++)
		rc = store_bind_i64(st, i + 1, args[i]);
	while (!rc && *n < max && (rc = store_step(st)) == 1) {
		rc = 0;
		if (brg_commit__reserve((void **)rows, &cap, *n, sizeof(**rows))) {
			rc = STORE_ENOMEM;
			break;
		}
		struct swept *r = &(*rows)[(*n)++];
		r->key = store_col_i64(st, 0);
		snprintf(r->id, sizeof(r->id), "%s",
		         store_col_text(st, 1) ? store_col_text(st, 1) : "");
		r->a = store_col_i64(st, 2);
		r->b = store_col_i64(st, 3);
	}
	store_stmt_free(st);
	return rc < 0 ? rc : 0;
}

static int sweep(struct brg_committer *c)
{
	struct swept *rows = NULL;
	size_t n = 0;
	int64_t ch = 0;
	int rc;

	/* Offline: silent for offline_factor x the device's interval, at least offline_min. Its
	 * interval is the larger of its sample and batch intervals (it is heard from once per
	 * batch; a device before Birth.batch_interval_s reports 0 there). The store applies the
	 * rule and returns the limit: of many online devices the first rows are the live ones, so
	 * a cap on rows read must not come before the test. */
	int64_t q[] = {c->o.offline_min_ms, c->o.offline_min_ms,
	               c->o.offline_factor > 0 ? c->o.offline_factor : 3,
	               c->o.default_interval_ms, c->now, c->o.offline_min_ms, c->o.offline_min_ms};
#define I64 "CAST(? AS BIGINT)" /* PostgreSQL would guess int4 from the columns */
	rc = collect(c->s,
	             "SELECT id, device_id, seen, CASE WHEN lim > " I64 " THEN lim ELSE " I64 " END"
	             " FROM (SELECT id, device_id, COALESCE(last_seen_at, created_at) AS seen, " I64
	             " * CASE WHEN batch_interval_s > sample_interval_s"
	             " THEN batch_interval_s * 1000 WHEN sample_interval_s > 0"
	             " THEN sample_interval_s * 1000"
	             " WHEN poll_interval_s > 0 THEN poll_interval_s * 1000 ELSE " I64 " END AS lim"
	             " FROM devices WHERE online = 1 AND state <> 'revoked') d"
	             " WHERE seen < " I64 " - CASE WHEN lim > " I64 " THEN lim ELSE " I64 " END",
	             q, 7, &rows, &n, 100000);
#undef I64
	for (size_t i = 0; !rc && i < n; i++) {
		struct wdev w = {.id = rows[i].id, .key = rows[i].key};
		/* not heard of since it was read (another bridge may have committed meanwhile) */
		int64_t args[] = {rows[i].key, rows[i].a};
		rc = store_exec_i64(c->s,
		                    "UPDATE devices SET online = 0 WHERE id = ? AND online = 1 AND"
		                    " COALESCE(last_seen_at, created_at) <= ?",
		                    args, 2, &ch);
		if (!rc && ch)
			rc = brg_commit__event(c, &w, "offline", "silent for %llds (limit %llds)",
			                       (long long)((c->now - rows[i].a) / 1000),
			                       (long long)(rows[i].b / 1000));
	}
	free(rows);
	rows = NULL;
	if (rc)
		return rc;

	/* Deactivated: silent for deactivate_after. */
	if (c->o.deactivate_after_ms > 0) {
		int64_t a2[] = {c->now - c->o.deactivate_after_ms};
		rc = collect(
		    c->s,
		    "SELECT id, device_id, COALESCE(last_seen_at, created_at), 0 FROM devices"
		    " WHERE state = 'active' AND COALESCE(last_seen_at, created_at) < ?",
		    a2, 1, &rows, &n, 10000);
		for (size_t i = 0; !rc && i < n; i++) {
			struct wdev w = {.id = rows[i].id, .key = rows[i].key};
			int64_t args[] = {c->now, rows[i].key, rows[i].a};
			rc = store_exec_i64(
			    c->s,
			    "UPDATE devices SET state = 'deactivated', state_reason ="
			    " 'silent too long', state_changed_at = ?, online = 0 WHERE id = ?"
			    " AND state = 'active' AND COALESCE(last_seen_at, created_at) <= ?",
			    args, 3, &ch);
			if (!rc && ch)
				rc =
				    brg_commit__event(c, &w, "deactivated", "silent for %lld days",
				                      (long long)((c->now - rows[i].a) / 86400000));
		}
		free(rows);
		rows = NULL;
		if (rc)
			return rc;
	}

	/* Tasks past their expiry are never delivered again. */
	int64_t a3[] = {c->now};
	rc = collect(
	    c->s,
	    "SELECT t.id, d.device_id, t.device, 0 FROM tasks t JOIN devices d ON"
	    " d.id = t.device WHERE t.state IN ('queued', 'delivered') AND t.expires_at <= ?",
	    a3, 1, &rows, &n, 10000);
	for (size_t i = 0; !rc && i < n; i++) {
		struct wdev w = {.id = rows[i].id, .key = rows[i].a};
		int64_t args[] = {c->now, rows[i].key};
		rc = store_exec_i64(c->s,
		              "UPDATE tasks SET state = 'expired', finished_at = ? WHERE id = ? AND"
		              " state IN ('queued', 'delivered')",
		              args, 2, &ch);
		if (!rc && ch)
			rc = brg_commit__event(c, &w, "task_expired",
			                       "task %lld expired before a result",
			                       (long long)rows[i].key);
	}
	free(rows);
	if (rc)
		return rc;

	if (c->o.event_retention_ms > 0)
		rc = store_prune_events_slice(c->s, c->now - c->o.event_retention_ms, NULL);
	return rc;
}

int brg_commit_maintain(struct brg_committer *c, int64_t now_ms, struct brg_outcome *out)
{
	struct brg_outcome mark = *out;
	int rc;
	c->now = now_ms;
	c->out = out;
	if ((rc = store_begin(c->s)))
		return rc;
	return brg_commit__end_tx(c, sweep(c), &mark);
}

int brg_commit_recheck_certs(struct brg_committer *c, struct brg_verifier *v, int64_t now_ms,
                             struct brg_outcome *out)
{
	struct brg_outcome mark = *out;
	struct store_stmt *st = NULL;
	struct {
		int64_t key;
		char id[WIRE_ID_MAX + 1];
		int has_pub;
		struct wire_pubkey pub; /* the certificate's key, remembered as revoked */
	} *hit = NULL;
	size_t n = 0, cap = 0;
	int rc;
	c->now = now_ms;
	c->out = out;
	if ((rc = store_begin(c->s)))
		return rc;
	rc =
	    store_prepare(c->s,
	                  "SELECT id, device_id, cert_pem FROM devices WHERE state <> 'revoked' AND"
	                  " cert_pem IS NOT NULL",
	                  &st);
	while (!rc && (rc = store_step(st)) == 1) {
		rc = 0;
		struct wire_cert_info info;
		const char *pem = store_col_text(st, 2);
		if (!pem || brg_verifier_check_cert(v, pem, strlen(pem), &info) != WIRE_EREVOKED)
			continue;
		if (brg_commit__reserve((void **)&hit, &cap, n, sizeof(*hit))) {
			rc = STORE_ENOMEM;
			break;
		}
		hit[n].key = store_col_i64(st, 0);
		snprintf(hit[n].id, sizeof(hit[n].id), "%s", store_col_text(st, 1));
		/* wire_ca_verify fills info only for a certificate it accepts */
		hit[n].has_pub = !wire_cert_parse(pem, strlen(pem), &info, NULL);
		if (hit[n].has_pub)
			hit[n].pub = info.key;
		n++;
	}
	store_stmt_free(st);
	for (size_t i = 0; rc >= 0 && i < n; i++) {
		struct wdev w = {.id = hit[i].id, .key = hit[i].key};
		int64_t ch = 0;
		struct store_stmt *u = NULL;
		rc = store_prepare(
		    c->s,
		    "UPDATE devices SET state = 'revoked', state_reason = 'certificate"
		    " revoked by the CRL', state_changed_at = ? WHERE id = ? AND"
		    " state <> 'revoked'",
		    &u);
		if (!rc && !(rc = store_bind_i64(u, 1, now_ms)) &&
		    !(rc = store_bind_i64(u, 2, hit[i].key))) {
			rc = store_step(u);
			ch = store_changes(u);
		}
		store_stmt_free(u);
		if (rc >= 0 && ch)
			rc = brg_commit__event(c, &w, "revoked", "certificate revoked by the CRL");
		if (rc >= 0 && ch && hit[i].has_pub)
			rc = brg_commit__revoke_key(c, &w, hit[i].pub.raw);
		if (rc >= 0 && !brg_commit__reserve((void **)&out->states, &out->cap_states,
		                                    out->n_states, sizeof(*out->states))) {
			struct brg_devstate *s = &out->states[out->n_states++];
			memset(s, 0, sizeof(*s));
			snprintf(s->device, sizeof(s->device), "%s", hit[i].id);
			s->info.state = BRG_ST_REVOKED;
		}
	}
	free(hit);
	return brg_commit__end_tx(c, rc < 0 ? rc : 0, &mark);
}
