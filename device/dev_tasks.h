/* dev_tasks.h - the device side of polled tasks: freshness of polls, verification of task
 * lists signed by the bridge, and the persisted task state that makes every task run at most
 * once, even across restarts. Execution itself belongs to the agent. */
#ifndef DEV_TASKS_H
#define DEV_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "outpost.pb-c.h"
#include "wire_err.h"
#include "wire_limits.h"
#include "wire_sign.h"

#define DEV_TASK_CORR_LEN 16
#define DEV_TASK_POLL_TTL_MS (10 * 60 * 1000) /* answers to older polls are refused */

struct dev_tasks;

/* state_path: file holding the highest accepted task id and the task being run. */
int dev_tasks_open(const char *state_path, const char *device_id,
		   const struct wire_pubkey *bridge_key, struct dev_tasks **out);
/* Writes the state first if the last write failed (dev_tasks_unsaved). Accepts NULL. */
void dev_tasks_close(struct dev_tasks *t);

uint64_t dev_tasks_last_id(const struct dev_tasks *t);

/* Remember a poll we sent (its envelope seq and correlation data). */
void dev_tasks_poll_sent(struct dev_tasks *t, uint64_t seq, const uint8_t corr[DEV_TASK_CORR_LEN],
			 int64_t now_mono);

/* The verdict on one task of a list. reason is static text when rejected. */
struct dev_task_verdict {
	uint64_t id;
	const Outpost__Task *task; /* NULL when the list itself could not be trusted */
	const char *reject;	    /* NULL: run it */
	int expired;		    /* rejected because expires_at passed */
	int seen;		    /* rejected as an id already judged: it was reported then, so
				     * report nothing (another poll's answer carried it again) */
	int mark_seen;		    /* rejected, ours and new: mark it with dev_tasks_seen */
	int whole_list;		    /* rejected with its list (forged, stale, not ours): the task
				     * stays unseen, so report nothing */
};

/* Judge a message from our tasks topic. On return *list (free with wire_msg_free) owns the
 * tasks the verdicts point to; verdicts[0..*n) are in list order. Nothing is persisted here:
 * the caller takes the verdicts in order and marks each task seen as it handles it
 * (dev_tasks_begin before running one, dev_tasks_seen for a rejected one), so a task is never
 * run twice, and the tasks behind a stop stay unseen for the bridge to deliver again. Judging
 * stops after an accepted `restart` for the same reason. Returns a wire_err when nothing at
 * all could be read (then there is nothing to report). */
int dev_tasks_judge(struct dev_tasks *t, const uint8_t *payload, size_t len, const uint8_t *corr,
		    size_t corr_len, int64_t now_wall_ms, int64_t now_mono,
		    Outpost__TaskList **list, struct dev_task_verdict *verdicts, size_t *n,
		    struct wire_diag *diag);

/* Mark a task's id as seen: one rejected, or one that could not begin (ids never go back).
 * Persisted; when the write fails, the mark holds in memory all the same, as
 * dev_tasks_unsaved says, until dev_tasks_sync: this agent never judges the task again, and
 * one restarted before the write may (it reports the task once more; the bridge keeps the
 * first result). */
int dev_tasks_seen(struct dev_tasks *t, uint64_t id);

/* Mark a task as seen and running, in one write: a failure means it must not run (also when
 * the file says it runs but its directory could not be synced: dev_tasks_unsaved then says
 * that the file, ahead of memory, is to be written again). / Mark the
 * running task finished. Both persisted. When dev_tasks_end cannot write, the task is finished
 * in memory but still running on disk: dev_tasks_unsaved says so until dev_tasks_sync (or any
 * later write) succeeds. A restart before that reports the task again, as interrupted; the
 * bridge keeps the first result and ignores the second. */
int dev_tasks_begin(struct dev_tasks *t, uint64_t id, const char *type);
int dev_tasks_end(struct dev_tasks *t);

/* 1 if the last write of the state failed. / Write the state if so; WIRE_OK if nothing was
 * pending or the write succeeded. */
int dev_tasks_unsaved(const struct dev_tasks *t);
int dev_tasks_sync(struct dev_tasks *t);

/* After a restart: the task that was running when the agent stopped, if any. */
int dev_tasks_interrupted(const struct dev_tasks *t, uint64_t *id, char type[WIRE_MAX_TASK_TYPE + 1]);

/* 1 if type is one the device runs: ping, set_config, resend, collect_now, restart. */
int dev_tasks_type_allowed(const char *type);

#endif
