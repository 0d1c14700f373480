/* test_dev_tasks.c - task lists: only fresh, bridge-signed lists for this device, each task at
 * most once, even across restarts. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dev_tasks.h"
#include "h_fsync.h"
#include "harness.h"
#include "wire_env.h"
#include "wire_msg.h"

static const uint8_t corr[DEV_TASK_CORR_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static int64_t wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Seal list l as the bridge's answer (signed by k) to poll seq of env_dev. */
static uint8_t *seal_list(struct wire_key *k, const char *env_dev, uint64_t seq,
			  Outpost__TaskList *l, size_t *len)
{
	uint8_t *body, *env;
	size_t blen;
	l->poll_seq = seq;
	cr_assert_eq(wire_msg_pack(WIRE_KIND_TASK_LIST, &l->base, &body, &blen, NULL), 0);
	struct wire_env e = {.kind = WIRE_KIND_TASK_LIST, .seq = seq, .sent_at_ms = 1, .body = body,
			     .body_len = blen};
	strcpy(e.device_id, env_dev);
	cr_assert_eq(wire_env_seal(k, &e, &env, len), 0);
	free(body);
	return env;
}

/* A list with one task; returns the sealed envelope. */
static uint8_t *list(struct wire_key *k, const char *env_dev, uint64_t seq, uint64_t id,
		     const char *task_dev, const char *type, int64_t expires, size_t *len)
{
	Outpost__TaskList l = OUTPOST__TASK_LIST__INIT;
	Outpost__Task t = OUTPOST__TASK__INIT, *tp[1] = {&t};
	t.id = id;
	t.device_id = (char *)task_dev;
	t.type = (char *)type;
	t.expires_at_ms = expires;
	l.n_tasks = 1;
	l.tasks = tp;
	return seal_list(k, env_dev, seq, &l, len);
}

/* What the agent does with a verdict: run the task (begin, end) or mark a rejected one seen. */
static void handle(struct dev_tasks *t, const struct dev_task_verdict *v)
{
	if (!v->reject) {
		cr_assert_eq(dev_tasks_begin(t, v->id, v->task->type), 0);
		cr_assert_eq(dev_tasks_end(t), 0);
	} else if (v->mark_seen) {
		cr_assert_eq(dev_tasks_seen(t, v->id), 0);
	}
}

static const char *judge_env(struct dev_tasks *t, uint8_t *env, size_t len, uint64_t *id)
{
	Outpost__TaskList *l = NULL;
	struct dev_task_verdict v[WIRE_MAX_TASKS];
	size_t n = 0;
	struct wire_diag d = {{0}};
	int rc = dev_tasks_judge(t, env, len, corr, sizeof(corr), wall(), h_now_ms(), &l, v, &n, &d);
	cr_assert_eq(rc, 0, "judge: %s %s", wire_strerror(rc), d.msg);
	cr_assert_eq(n, 1);
	static char reason[128];
	snprintf(reason, sizeof(reason), "%s", v[0].reject ? v[0].reject : "run");
	cr_expect_eq(v[0].seen, v[0].reject && strstr(v[0].reject, "already seen") != NULL,
		     "only a task id already judged is reported by nobody");
	handle(t, &v[0]);
	if (id)
		*id = v[0].id;
	wire_msg_free(l);
	free(env);
	return reason;
}

/* Build the list first: argument evaluation order is unspecified in C. */
static const char *judge(struct dev_tasks *t, struct wire_key *k, const char *env_dev, uint64_t seq,
			 uint64_t id, const char *task_dev, const char *type, int64_t expires)
{
	size_t len;
	uint8_t *env = list(k, env_dev, seq, id, task_dev, type, expires, &len);
	return judge_env(t, env, len, NULL);
}

Test(dev_tasks, verdicts)
{
	char *dir = h_tmpdir("tasks");
	char *path = h_strf("%s/tasks", dir);
	struct wire_key *bridge = h_pki_key("bridge"), *other = h_pki_key("devices/dev-c");
	struct wire_pubkey bp;
	wire_key_public(bridge, &bp);
	struct dev_tasks *t;
	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &t), 0);
	int64_t later = wall() + 60000;

	/* not an answer to a poll we sent */
	cr_expect(strstr(judge(t, bridge, "dev-a", 10, 1, "dev-a", "ping", later),
			 "replayed"));
	dev_tasks_poll_sent(t, 10, corr, h_now_ms());
	cr_expect(strstr(judge(t, other, "dev-a", 10, 1, "dev-a", "ping", later),
			 "bad signature"));
	cr_expect(strstr(judge(t, bridge, "dev-b", 10, 1, "dev-b", "ping", later),
			 "another device"));
	cr_expect(strstr(judge(t, bridge, "dev-a", 10, 1, "dev-b", "ping", later),
			 "another device"), "task inside a list for us, addressed to another device");
	dev_tasks_poll_sent(t, 11, corr, h_now_ms());
	cr_expect_str_eq(judge(t, bridge, "dev-a", 11, 5, "dev-a", "ping", later), "run");
	cr_expect_eq(dev_tasks_last_id(t), 5);
	/* the same answer again: the poll is used up */
	cr_expect(strstr(judge(t, bridge, "dev-a", 11, 6, "dev-a", "ping", later),
			 "replayed"));
	dev_tasks_poll_sent(t, 12, corr, h_now_ms());
	cr_expect(strstr(judge(t, bridge, "dev-a", 12, 5, "dev-a", "ping", later),
			 "already seen"));
	dev_tasks_poll_sent(t, 13, corr, h_now_ms());
	cr_expect_str_eq(judge(t, bridge, "dev-a", 13, 7, "dev-a", "ping", wall() - 1),
			 "expired");
	dev_tasks_poll_sent(t, 14, corr, h_now_ms());
	cr_expect(strstr(judge(t, bridge, "dev-a", 14, 8, "dev-a", "rm -rf", later),
			 "not allowed"));
	cr_expect_eq(dev_tasks_last_id(t), 8);

	/* a task running when the agent stopped is reported, never run again */
	cr_assert_eq(dev_tasks_begin(t, 9, "set_config"), 0);
	dev_tasks_close(t);
	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &t), 0);
	uint64_t id;
	char type[WIRE_MAX_TASK_TYPE + 1];
	cr_expect(dev_tasks_interrupted(t, &id, type));
	cr_expect_eq(id, 9);
	cr_expect_str_eq(type, "set_config");
	cr_expect_eq(dev_tasks_last_id(t), 9, "begun is seen, persisted across restarts");
	cr_assert_eq(dev_tasks_end(t), 0);
	cr_expect_not(dev_tasks_interrupted(t, &id, type));
	dev_tasks_close(t);
	wire_key_free(bridge);
	wire_key_free(other);
	free(path);
	free(dir);
}

/* A list of tasks of the given types with ids first, first+1, ...; returns the sealed envelope. */
static uint8_t *list_of(struct wire_key *k, uint64_t seq, uint64_t first, const char **types,
			size_t n, size_t *len)
{
	Outpost__TaskList l = OUTPOST__TASK_LIST__INIT;
	Outpost__Task t[4], *tp[4];
	for (size_t i = 0; i < n; i++) {
		outpost__task__init(&t[i]);
		t[i].id = first + i;
		t[i].device_id = "dev-a";
		t[i].type = (char *)types[i];
		t[i].expires_at_ms = wall() + 60000;
		tp[i] = &t[i];
	}
	l.n_tasks = n;
	l.tasks = tp;
	return seal_list(k, "dev-a", seq, &l, len);
}

/* Answer poll `seq` with a list of `types` (ids first, first+1, ...) and judge it into v;
 * returns how many were judged. *l owns the tasks v points to (wire_msg_free). */
static size_t judge_list(struct dev_tasks *t, struct wire_key *bridge, uint64_t seq,
			 uint64_t first, const char **types, size_t ntypes,
			 struct dev_task_verdict *v, Outpost__TaskList **l)
{
	size_t len, n = 0;
	uint8_t *env = list_of(bridge, seq, first, types, ntypes, &len);
	struct wire_diag d = {{0}};
	dev_tasks_poll_sent(t, seq, corr, h_now_ms());
	cr_assert_eq(dev_tasks_judge(t, env, len, corr, sizeof(corr), wall(), h_now_ms(), l, v, &n,
				     &d), 0, "%s", d.msg);
	free(env);
	return n;
}

Test(dev_tasks, tasks_behind_a_restart_are_left_for_the_next_agent)
{
	char *dir = h_tmpdir("tasks");
	char *path = h_strf("%s/tasks", dir);
	struct wire_key *bridge = h_pki_key("bridge");
	struct wire_pubkey bp;
	wire_key_public(bridge, &bp);
	struct dev_tasks *t;
	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &t), 0);

	const char *types[] = {"ping", "restart", "collect_now"};
	Outpost__TaskList *l = NULL;
	struct dev_task_verdict v[WIRE_MAX_TASKS];
	size_t n = judge_list(t, bridge, 30, 20, types, 3, v, &l);
	cr_assert_eq(n, 2, "judged up to the restart");
	cr_expect_null(v[0].reject);
	cr_expect_null(v[1].reject);
	cr_expect_eq(dev_tasks_last_id(t), 0, "judging marks nothing");
	handle(t, &v[0]);
	cr_assert_eq(dev_tasks_begin(t, v[1].id, v[1].task->type), 0); /* the restart */
	cr_expect_eq(dev_tasks_last_id(t), 21, "task 22 is not marked as seen");
	wire_msg_free(l);
	dev_tasks_close(t);

	/* the restarted agent polls; the bridge delivers what is above last_task_id */
	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &t), 0);
	dev_tasks_poll_sent(t, 31, corr, h_now_ms());
	cr_expect_str_eq(judge(t, bridge, "dev-a", 31, 22, "dev-a", "collect_now", wall() + 60000),
			 "run");
	dev_tasks_close(t);
	wire_key_free(bridge);
	free(path);
	free(dir);
}

/* The agent stops (SIGTERM) after the first task of a list: the others were never marked seen,
 * so the next agent's polls ask for them again and runs them. */
Test(dev_tasks, tasks_behind_a_stop_are_left_for_the_next_agent)
{
	char *dir = h_tmpdir("tasks");
	char *path = h_strf("%s/tasks", dir);
	struct wire_key *bridge = h_pki_key("bridge");
	struct wire_pubkey bp;
	wire_key_public(bridge, &bp);
	struct dev_tasks *t;
	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &t), 0);

	const char *types[] = {"collect_now", "ping", "ping"};
	Outpost__TaskList *l = NULL;
	struct dev_task_verdict v[WIRE_MAX_TASKS];
	size_t n = judge_list(t, bridge, 40, 40, types, 3, v, &l);
	cr_assert_eq(n, 3);
	handle(t, &v[0]); /* then the stop */
	wire_msg_free(l);
	dev_tasks_close(t);

	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &t), 0);
	cr_expect_eq(dev_tasks_last_id(t), 40, "only the task handled is seen");
	dev_tasks_poll_sent(t, 41, corr, h_now_ms());
	cr_expect_str_eq(judge(t, bridge, "dev-a", 41, 41, "dev-a", "ping", wall() + 60000), "run");
	dev_tasks_close(t);
	wire_key_free(bridge);
	free(path);
	free(dir);
}

/* Seal body (packed or not) as an envelope of `kind` for dev-a, seq, signed by the bridge. */
static uint8_t *seal_raw(struct wire_key *k, uint32_t kind, uint64_t seq, const uint8_t *body,
			 size_t blen, size_t *len)
{
	struct wire_env e = {.kind = kind, .seq = seq, .sent_at_ms = 1, .body = body,
			     .body_len = blen};
	strcpy(e.device_id, "dev-a");
	uint8_t *env;
	cr_assert_eq(wire_env_seal(k, &e, &env, len), 0);
	return env;
}

/* Judge a message that must be refused whole with `want`: nothing judged, no list, no state. */
static void expect_unreadable(struct dev_tasks *t, const uint8_t *msg, size_t len, int want,
			      const char *diag_has, const char *what)
{
	Outpost__TaskList *l = (Outpost__TaskList *)&l; /* any non-NULL: must be reset */
	struct dev_task_verdict v[WIRE_MAX_TASKS];
	size_t n = 99;
	struct wire_diag d = {{0}};
	int rc = dev_tasks_judge(t, msg, len, corr, sizeof(corr), wall(), h_now_ms(), &l, v, &n, &d);
	cr_expect_eq(rc, want, "%s: %s (%s), want %s", what, wire_strerror(rc), d.msg,
		     wire_strerror(want));
	cr_expect_eq(n, 0, "%s: %zu verdicts", what, n);
	cr_expect_null(l, "%s: a list came back", what);
	if (diag_has)
		cr_expect(strstr(d.msg, diag_has), "%s: diag '%s'", what, d.msg);
	if (!rc)
		wire_msg_free(l);
}

/* What does not decode, and a correctly signed message of another kind, are refused before any
 * task is judged: nothing is seen, and the poll they claim to answer stays open for the real
 * answer. */
Test(dev_tasks, unreadable_lists_and_other_kinds_are_refused_whole)
{
	char *dir = h_tmpdir("tasks");
	char *path = h_strf("%s/tasks", dir);
	struct wire_key *bridge = h_pki_key("bridge");
	struct wire_pubkey bp;
	wire_key_public(bridge, &bp);
	struct dev_tasks *t;
	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &t), 0);
	dev_tasks_poll_sent(t, 50, corr, h_now_ms());

	/* not an envelope at all ('g' is the tag of field 12) */
	expect_unreadable(t, (const uint8_t *)"garbage", 7, WIRE_EMALFORMED, "Envelope",
			  "garbage");
	/* a bridge-signed envelope of the right kind whose body is no TaskList: field 2 (tasks)
	 * claims 5 bytes, 2 follow */
	size_t len;
	uint8_t *env = seal_raw(bridge, WIRE_KIND_TASK_LIST, 50, (const uint8_t *)"\x12\x05" "ab", 4,
				&len);
	expect_unreadable(t, env, len, WIRE_ETRUNC, "TaskList", "undecodable body");
	free(env);
	/* a correctly signed Ack for us, answering the same seq: a body that would decode as a
	 * TaskList (field 1 is a varint in both), so only the kind check refuses it */
	Outpost__Ack a = OUTPOST__ACK__INIT;
	uint8_t *body;
	size_t blen;
	a.upto = 50;
	cr_assert_eq(wire_msg_pack(WIRE_KIND_ACK, &a.base, &body, &blen, NULL), 0);
	env = seal_raw(bridge, WIRE_KIND_ACK, 50, body, blen, &len);
	expect_unreadable(t, env, len, WIRE_EKIND, NULL, "an Ack");
	free(env);
	free(body);
	cr_expect_eq(dev_tasks_last_id(t), 0, "nothing was seen");

	/* the poll was not used up: its real answer runs */
	cr_expect_str_eq(judge(t, bridge, "dev-a", 50, 3, "dev-a", "ping", wall() + 60000), "run");
	cr_expect_eq(dev_tasks_last_id(t), 3);
	dev_tasks_close(t);
	wire_key_free(bridge);
	free(path);
	free(dir);
}

/* A finished task whose state cannot be written (here: its directory has gone away) stays
 * finished in memory and is written by the next sync; before that, a restart would find it
 * still running, which is the one thing a failed write may cost. */
Test(dev_tasks, a_finish_that_cannot_be_written_is_written_later)
{
	char *dir = h_tmpdir("tasks"), *away = h_strf("%s.away", dir);
	char *path = h_strf("%s/tasks", dir);
	struct wire_key *bridge = h_pki_key("bridge");
	struct wire_pubkey bp;
	wire_key_public(bridge, &bp);
	struct dev_tasks *t, *r;
	uint64_t id;
	char type[WIRE_MAX_TASK_TYPE + 1];
	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &t), 0);
	cr_assert_eq(dev_tasks_sync(t), 0, "nothing pending");
	cr_assert_eq(dev_tasks_begin(t, 7, "ping"), 0);

	cr_assert_eq(rename(dir, away), 0);
	cr_expect_neq(dev_tasks_end(t), 0, "the write failed");
	cr_expect(dev_tasks_unsaved(t));
	cr_expect_eq(dev_tasks_interrupted(t, &id, type), 0, "finished in memory");
	cr_expect_neq(dev_tasks_sync(t), 0, "still cannot write");
	cr_assert_eq(rename(away, dir), 0);

	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &r), 0);
	cr_expect_eq(dev_tasks_interrupted(r, &id, type), 1, "the file is behind");
	cr_expect_eq(id, 7);
	dev_tasks_close(r);

	cr_expect_eq(dev_tasks_sync(t), 0);
	cr_expect_eq(dev_tasks_unsaved(t), 0);
	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &r), 0);
	cr_expect_eq(dev_tasks_interrupted(r, &id, type), 0, "recorded as finished");
	cr_expect_eq(dev_tasks_last_id(r), 7);
	dev_tasks_close(r);

	dev_tasks_close(t);
	wire_key_free(bridge);
	free(path);
	free(away);
	free(dir);
}

/* A start whose write reaches the file but not the disk (its directory cannot be synced) is a
 * failed start: the task must not run, as a power cut could forget it ran. The file says it
 * runs all the same, so it is to be written again: else a restart, even a clean one, reports
 * a task that never ran as interrupted. */
Test(dev_tasks, a_start_written_but_not_durable_is_not_run_and_written_again)
{
	char *dir = h_tmpdir("tasks"), *path = h_strf("%s/tasks", dir);
	struct wire_key *bridge = h_pki_key("bridge");
	struct wire_pubkey bp;
	wire_key_public(bridge, &bp);
	struct dev_tasks *t, *r;
	uint64_t id;
	char type[WIRE_MAX_TASK_TYPE + 1];
	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &t), 0);
	h_fail_dir_fsync(EIO);
	cr_expect_neq(dev_tasks_begin(t, 7, "ping"), 0, "not durable: not begun");
	h_fail_dir_fsync(0);
	cr_expect_eq(dev_tasks_interrupted(t, &id, type), 0, "not running in memory");
	cr_expect_eq(dev_tasks_last_id(t), 0);
	cr_expect(dev_tasks_unsaved(t), "the file is ahead of memory");
	cr_expect_eq(dev_tasks_sync(t), 0);
	dev_tasks_close(t);
	cr_assert_eq(dev_tasks_open(path, "dev-a", &bp, &r), 0);
	cr_expect_eq(dev_tasks_interrupted(r, &id, type), 0, "reported interrupted, never run");
	dev_tasks_close(r);
	wire_key_free(bridge);
	free(path);
	free(dir);
}
