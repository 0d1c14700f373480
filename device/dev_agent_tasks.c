/* dev_agent_tasks.c - running verified tasks (ping, set_config, resend, collect_now, restart)
 * and reporting their results durably, waiting in memory while the disk is full. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "dev_agent_int.h"
#include "dev_catalog.h"
#include "dev_config.h"
#include "dev_spool.h"
#include "dev_tasks.h"
#include "dev_uploader.h"
#include "ofile.h"
#include "olog.h"
#include "otime.h"
#include "outpost.pb-c.h"
#include "wire_msg.h"
#include "wire_utf8.h"

#define MAX_RESULT_OUTPUT 24
#define RESTART_MARK "restarting" /* in state_dir: the id of the `restart` task being exec'd */

/* Self-contained (no pointers): it can wait in memory after the task list is freed. */
struct result {
	uint64_t task_id;
	int64_t finished_at_ms;
	int status; /* Outpost__TaskStatus */
	char message[WIRE_MAX_TEXT];
	char keys[MAX_RESULT_OUTPUT][WIRE_MAX_KEY + 1];
	char vals[MAX_RESULT_OUTPUT][160];
	size_t n;
	/* once stored: record in the tasks file that the task ran to its end (end_task) / that its
	 * id was seen (dev_tasks_seen). Until then a restart reports it again (interrupted), or it
	 * is delivered again and judged again: the result cannot be lost in between. */
	int then_end, then_seen;
};

static void out_kv(struct result *r, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void out_kv(struct result *r, const char *key, const char *fmt, ...)
{
	if (r->n == MAX_RESULT_OUTPUT)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->vals[r->n], sizeof(r->vals[r->n]), fmt, ap);
	va_end(ap);
	snprintf(r->keys[r->n], sizeof(r->keys[r->n]), "%s", key);
	r->n++;
}

/* Seal the result into the spool: 0, or why not. */
static int store_result(struct dev_agent *a, struct result *r)
{
	Outpost__TaskResult m = OUTPOST__TASK_RESULT__INIT;
	Outpost__KeyValue kv[MAX_RESULT_OUTPUT], *kvp[MAX_RESULT_OUTPUT];
	uint8_t *body = NULL;
	size_t len;
	uint64_t seq;
	int rc = dev_spool_take_seq(a->spool, &seq);
	if (rc)
		return rc;
	/* texts were cut at byte counts (snprintf), maybe mid-character: whole characters only */
	wire_utf8_sanitize(r->message);
	for (size_t i = 0; i < r->n; i++) {
		wire_utf8_sanitize(r->keys[i]);
		wire_utf8_sanitize(r->vals[i]);
	}
	for (size_t i = 0; i < r->n; i++) {
		outpost__key_value__init(&kv[i]);
		kv[i].key = (char *)r->keys[i];
		kv[i].value = (char *)r->vals[i];
		kvp[i] = &kv[i];
	}
	m.prev_seq = dev_spool_last_durable(a->spool);
	m.task_id = r->task_id;
	m.status = (Outpost__TaskStatus)r->status;
	m.message = (char *)r->message;
	m.n_output = r->n;
	m.output = kvp;
	m.finished_at_ms = r->finished_at_ms;
	struct wire_diag d = {{0}};
	if (wire_msg_pack(WIRE_KIND_TASK_RESULT, &m.base, &body, &len, &d)) {
		/* waiting would not help: give it up (the seq taken is skipped, as after a crash) */
		olog(OLOG_ERROR, "task %" PRIu64 ": result lost: cannot encode it: %s", r->task_id,
		     d.msg[0] ? d.msg : "out of memory");
		return 0;
	}
	rc = agent_spool_durable(a, WIRE_KIND_TASK_RESULT, seq, body, len);
	free(body);
	return rc;
}

static void end_task(struct dev_agent *a, uint64_t id);

/* The result is in the spool: what the tasks file says of the task may follow. */
static void result_stored(struct dev_agent *a, const struct result *r)
{
	if (r->then_end)
		end_task(a, r->task_id);
	if (r->then_seen && dev_tasks_seen(a->tasks, r->task_id))
		olog(OLOG_WARN,
		     "task %" PRIu64 ": cannot record in %s/tasks that it was handled; retrying (it "
		     "is not run or judged again meanwhile)",
		     r->task_id, a->cfg->state_dir);
}

/* Report a task's result, then record what r->then_* ask for. If the spool cannot take it
 * (disk full), it waits in memory, in order, and is stored by retry_results; the tasks file
 * is left as it is until then, so that a restart in between does not lose it. */
static void report(struct dev_agent *a, uint64_t task_id, struct result *r)
{
	r->task_id = task_id;
	r->finished_at_ms = otime_wall_ms();
	int rc = a->n_unreported ? DEV_SPOOL_ENOSPC : store_result(a, r);
	if (!rc) {
		result_stored(a, r);
		return;
	}
	struct result *keep = a->n_unreported < WIRE_MAX_TASKS ? malloc(sizeof(*keep)) : NULL;
	if (!keep) {
		olog(OLOG_ERROR, "task %" PRIu64 ": result lost: %s, and no room to keep it", task_id,
		     dev_spool_strerror(rc));
		result_stored(a, r); /* nothing to wait for */
		return;
	}
	*keep = *r;
	a->unreported[a->n_unreported++] = keep;
	olog(OLOG_WARN, "task %" PRIu64 ": result kept in memory until the spool takes it (%s)",
	     task_id, dev_spool_strerror(rc));
}

void agent_retry_results(struct dev_agent *a)
{
	while (a->n_unreported && !store_result(a, a->unreported[0])) {
		olog(OLOG_INFO, "task %" PRIu64 ": result stored", a->unreported[0]->task_id);
		result_stored(a, a->unreported[0]);
		free(a->unreported[0]);
		memmove(a->unreported, a->unreported + 1, --a->n_unreported * sizeof(a->unreported[0]));
	}
}

static const char *arg_of(const Outpost__Task *t, const char *key)
{
	for (size_t i = 0; i < t->n_args; i++)
		if (!strcmp(t->args[i]->key, key))
			return t->args[i]->value;
	return NULL;
}

static void task_ping(struct dev_agent *a, struct result *r)
{
	struct dev_spool_stats st;
	struct dev_link_stats ls;
	struct dev_uploader_stats us;
	dev_spool_stats(a->spool, &st);
	dev_link_stats(a->link, &ls);
	dev_uploader_stats(a->up, &us);
	out_kv(r, "agent_version", "%s", OUTPOST_VERSION);
	out_kv(r, "uptime_s", "%lld", (long long)((otime_mono_ms() - a->started_mono) / 1000));
	out_kv(r, "spool_records", "%" PRIu64, st.records);
	out_kv(r, "spool_bytes", "%" PRIu64, st.bytes);
	int64_t age_ms = st.oldest_unsent_ms ? otime_wall_ms() - st.oldest_unsent_ms : 0;
	/* the clock stepped back since the record was made: 0, as in the Birth, not a negative
	 * age */
	out_kv(r, "oldest_unsent_age_s", "%lld", age_ms > 0 ? (long long)(age_ms / 1000) : 0LL);
	out_kv(r, "dropped_total", "%" PRIu64, st.dropped_total);
	out_kv(r, "link_uri", "%s", ls.uri);
	out_kv(r, "link_connects", "%" PRIu64, ls.connects);
	out_kv(r, "link_disconnects", "%" PRIu64, ls.disconnects);
	out_kv(r, "link_last_cause", "%s", ls.last_cause);
	out_kv(r, "sent", "%" PRIu64, us.sent);
	out_kv(r, "resent", "%" PRIu64, us.resent);
	out_kv(r, "batches", "%" PRIu64, a->batches);
	out_kv(r, "sample_errors", "%" PRIu64, a->sample_errors);
	out_kv(r, "metrics", "%zu", dev_catalog_count(a->catalog));
	r->status = OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED;
	snprintf(r->message, sizeof(r->message), "pong");
}

static void task_set_config(struct dev_agent *a, const Outpost__Task *t, struct result *r)
{
	char err[CFG_ERR_MAX];
	r->status = OUTPOST__TASK_STATUS__TASK_STATUS_FAILED;
	const char *keys[WIRE_MAX_ARGS], *values[WIRE_MAX_ARGS];
	if (!t->n_args || t->n_args > WIRE_MAX_ARGS) {
		snprintf(r->message, sizeof(r->message), "set_config needs 1 to %d key=value arguments",
			 WIRE_MAX_ARGS);
		return;
	}
	for (size_t i = 0; i < t->n_args; i++) {
		keys[i] = t->args[i]->key;
		values[i] = t->args[i]->value;
	}
	int rc = dev_config_set_overrides(a->cfg, t->n_args, keys, values, err);
	if (rc < 0) {
		snprintf(r->message, sizeof(r->message), "%s", err);
		return;
	}
	for (size_t i = 0; i < t->n_args; i++)
		out_kv(r, keys[i], "%s", values[i]);
	olog_set_level((enum olog_level)a->cfg->log_level);
	int64_t now = otime_mono_ms();
	a->next_sample = now + a->cfg->sample_interval_ms;
	a->next_flush = now + a->cfg->batch_interval_ms;
	a->next_poll = now + a->cfg->poll_interval_ms;
	a->birth_due = 1; /* intervals travel in Birth */
	r->status = OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED;
	if (rc) {
		olog(OLOG_WARN, "task %" PRIu64 ": set_config: %s", t->id, err);
		snprintf(r->message, sizeof(r->message), "applied %zu setting(s); %s", t->n_args,
		         err);
		return;
	}
	snprintf(r->message, sizeof(r->message), "applied and persisted %zu setting(s)", t->n_args);
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;
	if (!s || *s < '0' || *s > '9')
		return -1; /* strtoull would take "-1" as the largest seq */
	errno = 0;
	unsigned long long x = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*v = x;
	return 0;
}

static void task_resend(struct dev_agent *a, const Outpost__Task *t, struct result *r)
{
	uint64_t from, to;
	r->status = OUTPOST__TASK_STATUS__TASK_STATUS_FAILED;
	if (parse_u64(arg_of(t, "from"), &from) || parse_u64(arg_of(t, "to"), &to) || from > to) {
		snprintf(r->message, sizeof(r->message), "resend needs from=SEQ to=SEQ with from <= to");
		return;
	}
	/* what is still on disk in that range, from the spool's index and a few headers: reading
	 * (and decrypting) each record would stall the agent on a big spool */
	uint64_t n = 0;
	int rc = dev_spool_count(a->spool, from, to, &n);
	if (rc) {
		snprintf(r->message, sizeof(r->message), "cannot read the spool: %s",
			 dev_spool_strerror(rc));
		return;
	}
	if (!n) {
		snprintf(r->message, sizeof(r->message), "nothing in %" PRIu64 "..%" PRIu64 " is still in the spool",
			 from, to);
		return;
	}
	if (dev_uploader_resend(a->up, from, to) == DEV_UPLOADER_EBUSY) {
		snprintf(r->message, sizeof(r->message),
			 "%d resend ranges are waiting to be sent already; ask again once they are",
			 DEV_UPLOADER_MAX_RESENDS);
		return;
	}
	out_kv(r, "records", "%" PRIu64, n);
	out_kv(r, "ranges_waiting", "%zu", dev_uploader_resends_pending(a->up));
	r->status = OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED;
	snprintf(r->message, sizeof(r->message), "resending %" PRIu64 " spooled envelope(s)", n);
}

static void end_task(struct dev_agent *a, uint64_t id)
{
	if (dev_tasks_end(a->tasks))
		olog(OLOG_WARN,
		     "task %" PRIu64 ": cannot record that it finished in %s/tasks; retrying (should "
		     "the agent restart first, it reports the task again, as interrupted)",
		     id, a->cfg->state_dir);
}

void agent_sync_tasks(struct dev_agent *a)
{
	if (!dev_tasks_sync(a->tasks))
		olog(OLOG_INFO, "tasks: the task state is recorded now");
}

static void run_task(struct dev_agent *a, const Outpost__Task *t)
{
	struct result r = {0};
	olog(OLOG_INFO, "task %" PRIu64 ": running %s", t->id, t->type);
	r.then_end = 1;
	if (dev_tasks_begin(a->tasks, t->id, t->type)) {
		r.then_end = 0; /* not begun: nothing to end; and never to run once reported */
		r.then_seen = 1;
		r.status = OUTPOST__TASK_STATUS__TASK_STATUS_FAILED;
		snprintf(r.message, sizeof(r.message), "cannot persist task state; not run");
		report(a, t->id, &r);
		return;
	}
	a->tasks_run++;
	if (!strcmp(t->type, "ping")) {
		task_ping(a, &r);
	} else if (!strcmp(t->type, "set_config")) {
		task_set_config(a, t, &r);
	} else if (!strcmp(t->type, "resend")) {
		task_resend(a, t, &r);
	} else if (!strcmp(t->type, "collect_now")) {
		agent_sample(a);
		uint64_t before = a->batches;
		agent_flush_batch(a);
		r.status = a->batches > before ? OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED
					       : OUTPOST__TASK_STATUS__TASK_STATUS_FAILED;
		out_kv(&r, "batch_seq", "%" PRIu64, dev_spool_last_durable(a->spool));
		snprintf(r.message, sizeof(r.message), "%s",
			 a->batches > before ? "sampled and sealed a batch" : "could not store the batch");
	} else if (!strcmp(t->type, "restart")) {
		/* the result is reported by the next agent: see on_interrupted_task */
		olog(OLOG_INFO, "task %" PRIu64 ": restarting the agent", t->id);
		a->restart = 1;
		a->restart_task = t->id;
		a->stop = 1;
		return;
	}
	report(a, t->id, &r);
	olog(OLOG_INFO, "task %" PRIu64 ": %s: %s", t->id,
	     r.status == OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED ? "succeeded" : "failed", r.message);
}

static int restart_mark_path(const struct dev_config *cfg, char *path, size_t cap)
{
	int n = snprintf(path, cap, "%s/" RESTART_MARK, cfg->state_dir);
	if (n < 0 || (size_t)n >= cap) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int dev_agent_restart_mark(const struct dev_config *cfg, uint64_t task_id)
{
	char path[4096], text[32];
	if (restart_mark_path(cfg, path, sizeof(path)))
		return -1;
	int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", task_id);
	return ofile_replace(path, text, (size_t)n) ? -1 : 0;
}

void dev_agent_restart_unmark(const struct dev_config *cfg)
{
	char path[4096];
	if (!restart_mark_path(cfg, path, sizeof(path)))
		unlink(path);
}

/* The `restart` task the previous agent recorded just before it executed itself again; 0 if
 * none. */
static uint64_t restart_marked(const struct dev_config *cfg)
{
	char path[4096], text[32];
	uint64_t id = 0;
	FILE *f = restart_mark_path(cfg, path, sizeof(path)) ? NULL : fopen(path, "r");
	if (f && fgets(text, sizeof(text), f))
		id = strtoull(text, NULL, 10);
	if (f)
		fclose(f);
	return id;
}

void agent_on_interrupted_task(struct dev_agent *a)
{
	uint64_t id;
	char type[WIRE_MAX_TASK_TYPE + 1];
	struct result r = {0};
	uint64_t marked = restart_marked(a->cfg);
	int interrupted = dev_tasks_interrupted(a->tasks, &id, type);
	int restarted = interrupted && !strcmp(type, "restart") && marked == id;
	/* the record has served once its task is no longer reported as interrupted (a task id is
	 * never used twice, so it cannot speak for another task meanwhile) */
	if (marked && !restarted)
		dev_agent_restart_unmark(a->cfg);
	if (!interrupted)
		return;
	if (restarted) {
		r.status = OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED;
		snprintf(r.message, sizeof(r.message), "agent restarted");
		out_kv(&r, "boot", "%s", "new");
	} else if (!strcmp(type, "restart")) {
		/* a stop that won over it, a failed execv, a crash or a power cut */
		r.status = OUTPOST__TASK_STATUS__TASK_STATUS_FAILED;
		snprintf(r.message, sizeof(r.message), "agent stopped before restarting");
	} else {
		/* it may or may not have taken effect; it is never run again */
		r.status = OUTPOST__TASK_STATUS__TASK_STATUS_FAILED;
		snprintf(r.message, sizeof(r.message), "interrupted by an agent restart; not run again");
	}
	r.then_end = 1;
	report(a, id, &r);
	olog(OLOG_INFO, "task %" PRIu64 " (%s): reported after restart: %s", id, type, r.message);
}

void agent_on_tasks(struct dev_agent *a, const struct dev_link_event *ev)
{
	struct dev_task_verdict v[WIRE_MAX_TASKS];
	Outpost__TaskList *list = NULL;
	size_t n = 0;
	struct wire_diag d = {{0}};
	int rc = dev_tasks_judge(a->tasks, ev->data, ev->len, ev->corr, ev->corr_len, otime_wall_ms(),
				 otime_mono_ms(), &list, v, &n, &d);
	if (rc) {
		olog(OLOG_WARN, "ignored an unreadable task list: %s", d.msg[0] ? d.msg : wire_strerror(rc));
		return;
	}
	if (n && v[0].whole_list) {
		/* Forged, stale or not ours: its tasks are not judged, so they stay unseen. A result
		 * here would let whoever sent it fail real tasks; the bridge delivers them again. */
		olog(OLOG_WARN, "ignored a task list of %zu task(s), first id %" PRIu64 ": %s", n,
		     v[0].id, v[0].reject);
		wire_msg_free(list);
		return;
	}
	/* One task at a time, each marked seen as it is handled: the tasks behind a stop, or
	 * behind a result the spool could not take, stay unseen, and the bridge delivers them
	 * again (to the next agent, or once the results are stored: no poll goes out before). */
	for (size_t i = 0; i < n && !a->stop && !a->n_unreported; i++) {
		if (v[i].seen) {
			olog(OLOG_DEBUG, "task %" PRIu64 ": delivered again; already handled", v[i].id);
			continue;
		}
		if (v[i].reject) {
			struct result r = {.then_seen = v[i].mark_seen};
			r.status = OUTPOST__TASK_STATUS__TASK_STATUS_REJECTED;
			snprintf(r.message, sizeof(r.message), "%s", v[i].reject);
			olog(OLOG_WARN, "task %" PRIu64 ": rejected: %s", v[i].id, v[i].reject);
			if (v[i].id)
				report(a, v[i].id, &r);
			continue;
		}
		run_task(a, v[i].task);
	}
	wire_msg_free(list);
}

void agent_forget_results(struct dev_agent *a)
{
	for (size_t i = 0; i < a->n_unreported; i++)
		free(a->unreported[i]);
	a->n_unreported = 0;
}
