/* brg_tasks.c - the writer's side of polled tasks (PROTOCOL.md 6): answering polls with the
 * device's pending tasks and storing results, moving task states. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brg_commit_int.h"
#include "brg_err.h"
#include "olog.h"
#include "store_ops.h"
#include "wire_env.h"

int brg_commit__do_result(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	const Outpost__TaskResult *r = it->result;
	static const char *const status[] = {"", "succeeded", "failed", "rejected"};
	int rc = brg_commit__store_envelope(c, w, it, WIRE_KIND_TASK_RESULT, 0);
	if (rc <= 0)
		return rc;
	if ((rc = brg_commit__accepted(c, w)))
		return rc;
	B64(S_TASK_GET, 1, r->task_id);
	B64(S_TASK_GET, 2, w->key);
	rc = store_step(c->st[S_TASK_GET]);
	if (rc <= 0) {
		store_reset(c->st[S_TASK_GET]);
		if (rc < 0)
			goto out;
		return brg_commit__event(c, w, "task_result_unknown",
		                         "result for task %llu, not one of this device's",
		                         (unsigned long long)r->task_id);
	}
	char state[16], type[WIRE_MAX_TASK_TYPE + 1];
	snprintf(state, sizeof(state), "%s", store_col_text(c->st[S_TASK_GET], 0));
	int64_t expires = store_col_i64(c->st[S_TASK_GET], 1);
	snprintf(type, sizeof(type), "%s", store_col_text(c->st[S_TASK_GET], 2));
	int has_result = store_col_i64(c->st[S_TASK_GET], 3) != 0;
	store_reset(c->st[S_TASK_GET]);
	/* One result per task, the first: a second (another seq: a hostile or confused device)
	 * must not overwrite it nor mix its output rows in. Queued is accepted: a store restored
	 * from before the delivery has the task the device ran as queued (OPERATIONS.md). */
	if (has_result || (strcmp(state, STORE_TASK_QUEUED) && strcmp(state, STORE_TASK_DELIVERED) &&
	                   strcmp(state, STORE_TASK_EXPIRED)))
		return brg_commit__event(c, w, "task_result_ignored", "task %llu %s is already %s%s",
		                         (unsigned long long)r->task_id, type, state,
		                         has_result ? " with a result" : "");
	const char *to = STORE_TASK_SUCCEEDED;
	if (r->status == OUTPOST__TASK_STATUS__TASK_STATUS_FAILED)
		to = STORE_TASK_FAILED;
	else if (r->status == OUTPOST__TASK_STATUS__TASK_STATUS_REJECTED)
		to = expires <= (r->finished_at_ms ? r->finished_at_ms : c->now)
		         ? STORE_TASK_EXPIRED
		         : STORE_TASK_FAILED;
	BTXT(S_TASK_FINISH, 1, to);
	B64(S_TASK_FINISH, 2, c->now);
	BTXT(S_TASK_FINISH, 3, status[r->status]);
	BTXT(S_TASK_FINISH, 4, r->message ? r->message : "");
	B64(S_TASK_FINISH, 5, it->seq);
	B64(S_TASK_FINISH, 6, r->task_id);
	int64_t changed = 0;
	if ((rc = brg_commit__run_changes(c, S_TASK_FINISH, &changed)))
		goto out;
	if (!changed) /* another bridge stored a result of it since it was read */
		return brg_commit__event(c, w, "task_result_ignored",
		                         "task %llu %s has a result already",
		                         (unsigned long long)r->task_id, type);
	for (size_t i = 0; i < r->n_output; i++) {
		B64(S_TASK_OUT, 1, r->task_id);
		B64(S_TASK_OUT, 2, i);
		BTXT(S_TASK_OUT, 3, r->output[i]->key);
		BTXT(S_TASK_OUT, 4, r->output[i]->value ? r->output[i]->value : "");
		if ((rc = brg_commit__run(c, S_TASK_OUT)))
			goto out;
	}
	rc = brg_commit__event(c, w,
	                       to[0] == 's'   ? "task_succeeded"
	                       : to[0] == 'e' ? "task_expired"
	                                      : "task_failed",
	                       "task %llu %s %s: %.200s", (unsigned long long)r->task_id, type,
	                       status[r->status], r->message ? r->message : "");
out:
	return rc;
}

/* A queued task whose id the device has seen already (last): failed, with its event, unless
 * another bridge's sweep expired it since it was read. */
static int fail_seen_task(struct brg_committer *c, struct wdev *w, const struct brg_task *t,
                          uint64_t last)
{
	char msg[256];
	int64_t failed;
	int rc;
	snprintf(msg, sizeof(msg),
	         "not run: the device has seen task ids up to %llu already; the store's task ids "
	         "went back (a restored backup?): raise them (OPERATIONS.md, Backups) and add the "
	         "task again",
	         (unsigned long long)last);
	B64(S_TASK_BEHIND, 1, c->now);
	BTXT(S_TASK_BEHIND, 2, msg);
	B64(S_TASK_BEHIND, 3, t->id);
	if (!(rc = brg_commit__run_changes(c, S_TASK_BEHIND, &failed)) && failed)
		rc = brg_commit__event(c, w, "task_failed", "task %llu %s failed: %s",
		                       (unsigned long long)t->id, t->type, msg);
out:
	return rc;
}

int brg_commit__do_poll(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	const Outpost__TaskPoll *p = it->poll;
	struct brg_task *tasks = NULL;
	size_t n = 0, budget = TASKLIST_BUDGET;
	uint32_t max = p->max_tasks ? p->max_tasks : WIRE_MAX_TASKS;
	struct store_stmt *st = c->st[S_TASK_SEL];
	int rc = brg_commit__fresh(c, w, it, 0);
	if (rc <= 0)
		return rc;
	if ((rc = brg_commit__accepted(c, w)))
		return rc;
	tasks = calloc(max, sizeof(*tasks));
	if (!tasks)
		return STORE_ENOMEM;
	B64(S_TASK_SEL, 1, w->key);
	B64(S_TASK_SEL, 2, c->now);
	B64(S_TASK_SEL, 3, p->last_task_id > INT64_MAX ? INT64_MAX : p->last_task_id);
	B64(S_TASK_SEL, 4, max);
	int queued[WIRE_MAX_TASKS] = {0};
	while (n < max && (rc = store_step(st)) == 1) {
		tasks[n].id = (uint64_t)store_col_i64(st, 0);
		snprintf(tasks[n].type, sizeof(tasks[n].type), "%s", store_col_text(st, 1));
		tasks[n].expires_at_ms = store_col_i64(st, 2);
		tasks[n].created_at_ms = store_col_i64(st, 3);
		queued[n] = !strcmp(store_col_text(st, 4), STORE_TASK_QUEUED);
		n++;
	}
	store_reset(st);
	if (rc < 0)
		goto out;
	/* Never delivered, and yet at or below what the device has seen: the store's ids went
	 * back (restored from a backup). The device would take it for one it handled and say
	 * nothing: failed here instead, loudly. (No arguments are loaded yet.) */
	size_t left = 0;
	for (size_t i = 0; i < n; i++) {
		if (queued[i] && tasks[i].id <= p->last_task_id) {
			if ((rc = fail_seen_task(c, w, &tasks[i], p->last_task_id)))
				goto out;
			continue;
		}
		queued[left] = queued[i];
		tasks[left++] = tasks[i];
	}
	memset(&tasks[left], 0, (n - left) * sizeof(*tasks));
	n = left;
	/* Arguments, within what one TaskList envelope can carry. */
	for (size_t i = 0; i < n; i++) {
		struct brg_task *t = &tasks[i];
		size_t size = 64 + strlen(t->type) + WIRE_ID_MAX;
		t->keys = calloc(WIRE_MAX_ARGS, sizeof(char *));
		t->values = calloc(WIRE_MAX_ARGS, sizeof(char *));
		if (!t->keys || !t->values) {
			rc = STORE_ENOMEM;
			goto out;
		}
		B64(S_TASK_ARGS, 1, t->id);
		while ((rc = store_step(c->st[S_TASK_ARGS])) == 1 && t->n_args < WIRE_MAX_ARGS) {
			const char *k = store_col_text(c->st[S_TASK_ARGS], 0);
			const char *v = store_col_text(c->st[S_TASK_ARGS], 1);
			t->keys[t->n_args] = strdup(k ? k : "");
			t->values[t->n_args] = strdup(v ? v : "");
			if (!t->keys[t->n_args] || !t->values[t->n_args]) {
				free(t->keys[t->n_args]);
				free(t->values[t->n_args]);
				rc = STORE_ENOMEM;
				break;
			}
			size += 8 + strlen(t->keys[t->n_args]) + strlen(t->values[t->n_args]);
			t->n_args++;
		}
		store_reset(c->st[S_TASK_ARGS]);
		if (rc < 0)
			goto out;
		if (size > budget) {
			/* Does not fit this time: the device gets it at its next poll. */
			brg_commit__clear_task(t);
			n = i;
			break;
		}
		budget -= size;
	}
	size_t kept = 0;
	for (size_t i = 0; i < n; i++) {
		B64(S_TASK_DELIV, 1, c->now);
		B64(S_TASK_DELIV, 2, tasks[i].id);
		int64_t delivered;
		if ((rc = brg_commit__run_changes(c, S_TASK_DELIV, &delivered)))
			goto out;
		if (!delivered) {
			/* another bridge's sweep expired it since it was read: it is not sent */
			brg_commit__clear_task(&tasks[i]);
			continue;
		}
		if (queued[i] &&
		    (rc = brg_commit__event(c, w, "task_delivered", "task %llu %s",
		                            (unsigned long long)tasks[i].id, tasks[i].type)))
			goto out;
		if (kept != i) {
			tasks[kept] = tasks[i];
			memset(&tasks[i], 0, sizeof(tasks[i]));
		}
		kept++;
	}
	n = kept;
	struct brg_reply *r = brg_commit__add_reply(c->out);
	if (!r) {
		rc = STORE_ENOMEM;
		goto out;
	}
	r->kind = BRG_REPLY_TASKS;
	snprintf(r->device, sizeof(r->device), "%s", w->id);
	r->seq = it->seq;
	r->tasks = tasks;
	r->n_tasks = n;
	memcpy(r->corr, it->corr, it->corr_len);
	r->corr_len = it->corr_len;
	r->has_corr = it->has_corr;
	return 0;
out:
	brg_commit__free_tasks(tasks, max); /* unused entries are zero */
	return rc;
}
