/* dev_tasks.c - task list verification, poll freshness, persisted at-most-once state. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dev_tasks.h"
#include "ofile.h"
#include "wire_env.h"
#include "wire_msg.h"

#define RECENT_POLLS 4

static const char *const allowed[] = {"ping", "set_config", "resend", "collect_now", "restart",
				      NULL};

struct poll_rec {
	uint64_t seq;
	uint8_t corr[DEV_TASK_CORR_LEN];
	int64_t at;
	int used;
};

struct dev_tasks {
	char *path;
	char id[WIRE_ID_MAX + 1];
	struct wire_pubkey bridge;
	uint64_t last_id;
	uint64_t running_id;
	char running_type[WIRE_MAX_TASK_TYPE + 1];
	struct poll_rec polls[RECENT_POLLS];
	unsigned next_poll;
	int unsaved; /* the last write failed: the file may be behind the state in memory */
};

int dev_tasks_type_allowed(const char *type)
{
	for (int i = 0; allowed[i]; i++)
		if (!strcmp(type, allowed[i]))
			return 1;
	return 0;
}

/* 0, or ofile_replace's error. OFILE_NOT_DURABLE too counts as unsaved: the at-most-once
 * promise needs the state on disk before a task runs, not merely in the file. */
static int write_state(struct dev_tasks *t)
{
	char buf[64 + WIRE_MAX_TASK_TYPE];
	int n = snprintf(buf, sizeof(buf), "last_id %llu\nrunning %llu %s\n",
			 (unsigned long long)t->last_id, (unsigned long long)t->running_id,
			 t->running_type[0] ? t->running_type : "-");
	int rc = ofile_replace(t->path, buf, (size_t)n);
	t->unsaved = rc != 0;
	return rc;
}

static int save(struct dev_tasks *t)
{
	return write_state(t) ? WIRE_EIO : WIRE_OK;
}

int dev_tasks_open(const char *state_path, const char *device_id,
		   const struct wire_pubkey *bridge_key, struct dev_tasks **out)
{
	struct dev_tasks *t = calloc(1, sizeof(*t));
	if (!t || !(t->path = strdup(state_path))) {
		free(t);
		return WIRE_ENOMEM;
	}
	snprintf(t->id, sizeof(t->id), "%s", device_id);
	t->bridge = *bridge_key;
	FILE *f = fopen(state_path, "r");
	if (f) {
		unsigned long long last = 0, run = 0;
		char type[WIRE_MAX_TASK_TYPE + 1] = "-";
		int k = fscanf(f, "last_id %llu running %llu %32s", &last, &run, type);
		fclose(f);
		if (k != 3) {
			dev_tasks_close(t);
			return WIRE_EMALFORMED;
		}
		t->last_id = last;
		t->running_id = run;
		if (strcmp(type, "-"))
			snprintf(t->running_type, sizeof(t->running_type), "%s", type);
	} else if (errno != ENOENT) {
		dev_tasks_close(t);
		return WIRE_EIO;
	}
	*out = t;
	return WIRE_OK;
}

void dev_tasks_close(struct dev_tasks *t)
{
	if (!t)
		return;
	if (t->unsaved)
		save(t); /* last chance for a finished task's state; nothing to do if it fails */
	free(t->path);
	free(t);
}

uint64_t dev_tasks_last_id(const struct dev_tasks *t)
{
	return t->last_id;
}

void dev_tasks_poll_sent(struct dev_tasks *t, uint64_t seq, const uint8_t corr[DEV_TASK_CORR_LEN],
			 int64_t now_mono)
{
	struct poll_rec *p = &t->polls[t->next_poll++ % RECENT_POLLS];
	p->seq = seq;
	memcpy(p->corr, corr, DEV_TASK_CORR_LEN);
	p->at = now_mono;
	p->used = 0;
}

static struct poll_rec *find_poll(struct dev_tasks *t, uint64_t seq, const uint8_t *corr,
				  size_t corr_len, int64_t now_mono)
{
	for (int i = 0; i < RECENT_POLLS; i++) {
		struct poll_rec *p = &t->polls[i];
		if (!p->at || p->used || p->seq != seq || now_mono - p->at > DEV_TASK_POLL_TTL_MS)
			continue;
		if (corr_len != DEV_TASK_CORR_LEN || memcmp(corr, p->corr, DEV_TASK_CORR_LEN))
			continue;
		return p;
	}
	return NULL;
}

int dev_tasks_judge(struct dev_tasks *t, const uint8_t *payload, size_t len, const uint8_t *corr,
		    size_t corr_len, int64_t now_wall_ms, int64_t now_mono,
		    Outpost__TaskList **list, struct dev_task_verdict *verdicts, size_t *n,
		    struct wire_diag *diag)
{
	struct wire_env env;
	Outpost__TaskList *l = NULL;
	const char *all = NULL; /* a reason that condemns the whole list */
	*n = 0;
	*list = NULL;

	int rc = wire_env_decode(payload, len, &env, diag);
	if (rc)
		return rc;
	if (env.kind != WIRE_KIND_TASK_LIST)
		return WIRE_EKIND;
	rc = wire_task_list_decode(env.body, env.body_len, &l, diag);
	if (rc)
		return rc;
	if (wire_env_verify(&env, &t->bridge) != WIRE_OK)
		all = "bad signature";
	else if (strcmp(env.device_id, t->id))
		all = "task list for another device";
	else if (!find_poll(t, env.seq, corr, corr_len, now_mono))
		all = "replayed: not an answer to a recent poll";

	uint64_t last = t->last_id;
	for (size_t i = 0; i < l->n_tasks && i < WIRE_MAX_TASKS; i++) {
		const Outpost__Task *k = l->tasks[i];
		struct dev_task_verdict *v = &verdicts[(*n)++];
		*v = (struct dev_task_verdict){
		    .id = k->id, .task = k, .reject = all, .whole_list = all != NULL};
		if (v->reject)
			continue;
		if (strcmp(k->device_id, t->id))
			v->reject = "task for another device";
		else if (k->id <= last) {
			v->reject = "replayed: task id already seen";
			v->seen = 1;
		} else if (k->expires_at_ms <= now_wall_ms) {
			v->reject = "expired";
			v->expired = 1;
		} else if (!dev_tasks_type_allowed(k->type))
			v->reject = "task type not allowed";
		if (k->id > last && !strcmp(k->device_id, t->id)) {
			last = k->id; /* judged once, whatever the verdict: a later copy is a replay */
			v->mark_seen = v->reject != NULL;
		}
		if (!v->reject && !strcmp(k->type, "restart"))
			break; /* what follows is for the next agent: left unjudged, the bridge
				* delivers it again (its id is above the poll's last_task_id) */
	}
	if (!all) {
		struct poll_rec *p = find_poll(t, env.seq, corr, corr_len, now_mono);
		if (p)
			p->used = 1; /* one answer per poll */
	}
	*list = l;
	return WIRE_OK;
}

int dev_tasks_seen(struct dev_tasks *t, uint64_t id)
{
	if (id <= t->last_id)
		return WIRE_OK;
	t->last_id = id; /* not written: seen in memory all the same (dev_tasks_sync) */
	return save(t);
}

int dev_tasks_begin(struct dev_tasks *t, uint64_t id, const char *type)
{
	uint64_t keep = t->last_id;
	int unsaved = t->unsaved;
	if (id > t->last_id)
		t->last_id = id;
	t->running_id = id;
	snprintf(t->running_type, sizeof(t->running_type), "%s", type);
	int rc = write_state(t);
	if (rc) {
		/* not persisted: running now could mean running twice later */
		t->last_id = keep;
		t->running_id = 0;
		t->running_type[0] = '\0';
		/* a file replaced all the same says the task runs: written again from memory at
		 * the next sync, a restart does not report it interrupted */
		t->unsaved = unsaved || rc == OFILE_NOT_DURABLE;
		return WIRE_EIO;
	}
	return WIRE_OK;
}

int dev_tasks_end(struct dev_tasks *t)
{
	t->running_id = 0;
	t->running_type[0] = '\0';
	return save(t);
}

int dev_tasks_unsaved(const struct dev_tasks *t)
{
	return t->unsaved;
}

int dev_tasks_sync(struct dev_tasks *t)
{
	return t->unsaved ? save(t) : WIRE_OK;
}

int dev_tasks_interrupted(const struct dev_tasks *t, uint64_t *id, char type[WIRE_MAX_TASK_TYPE + 1])
{
	if (!t->running_id)
		return 0;
	*id = t->running_id;
	snprintf(type, WIRE_MAX_TASK_TYPE + 1, "%s", t->running_type);
	return 1;
}
