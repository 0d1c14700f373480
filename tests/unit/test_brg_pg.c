/* test_brg_pg.c - the writer on PostgreSQL, where SQLite would let things pass: text from
 * devices (PostgreSQL refuses invalid UTF-8: a device must not be able to hand the bridge text
 * that makes a commit fail, as the group would be retried, split, and the item dropped
 * unacknowledged, again on every resend) and the health sweep's arithmetic on parameters. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brg_commit.h"
#include "brg_err.h"
#include "brg_registry.h"
#include "brg_reply.h"
#include "brg_verify.h"
#include "h_simdev.h"
#include "h_pg.h"
#include "harness.h"
#include "outpost.pb-c.h"
#include "store.h"
#include "store_ops.h"
#include "wire_cert.h"
#include "wire_env.h"
#include "wire_msg.h"
#include "wire_batch.h"
#include "wire_limits.h"

static struct store *s;
static struct brg_registry *reg;
static struct brg_verifier *ver;
static struct brg_committer *com;
static struct brg_outcome out;
static char *url;

static struct store *open_store(void)
{
	struct store *st = NULL;
	struct store_opts o = STORE_OPTS_INIT;
	char err[STORE_ERR_MAX];
	o.busy_timeout_ms = 50;
	cr_assert_eq(store_open(url, &o, &st, err), STORE_OK, "%s", err);
	return st;
}

static struct h_pg pg;
static void setup(void)
{
	h_pg_start(&pg);
	url = h_strf("%s", pg.url);
	s = open_store();
	cr_assert_eq(store_migrate(s, NULL, NULL), STORE_OK);
	cr_assert_eq(brg_registry_new(open_store(), 100, &reg), BRG_OK);
	struct wire_ca *ca = NULL;
	char *cap = h_strf("%s/ca.crt", h_pki()), *crl = h_strf("%s/crl.pem", h_pki());
	cr_assert_eq(wire_ca_load(cap, crl, &ca, NULL), WIRE_OK);
	free(cap);
	free(crl);
	cr_assert_eq(brg_verifier_new(reg, ca, &ver), BRG_OK);
	struct brg_commit_opts o = BRG_COMMIT_OPTS_INIT;
	o.gap_grace_ms = 0;
	cr_assert_eq(brg_committer_new(s, &o, &com), STORE_OK);
	memset(&out, 0, sizeof(out));
}

static void teardown(void)
{
	brg_outcome_free(&out);
	brg_committer_free(com);
	brg_verifier_free(ver);
	brg_registry_free(reg);
	store_close(s);
	wire_thread_cleanup();
	free(url);
	h_pg_free(&pg);
}

TestSuite(brg_pg, .init = setup, .fini = teardown);

static struct brg_item *judge(const char *topic, uint8_t *env, size_t len, const char *resp)
{
	struct brg_item *it = NULL;
	static const uint8_t corr[4] = {1, 2, 3, 4};
	struct brg_msg *m = brg_msg_new(topic, env, len, resp, resp ? corr : NULL, resp ? 4 : 0);
	free(env);
	cr_assert_eq(brg_verify(ver, m, &it), BRG_OK);
	return it;
}

static struct brg_item *birth_floor(const char *id, uint64_t seq, uint64_t chain_floor)
{
	size_t blen, n;
	uint8_t *body = h_birth_body(h_pki(), id, 2, chain_floor, &blen);
	char *name = h_strf("devices/%s", id), *topic = h_strf("outpost/v1/%s/birth", id);
	uint8_t *env = h_seal(h_pki(), name, WIRE_KIND_BIRTH, id, seq, body, blen, &n);
	struct brg_item *it = judge(topic, env, n, NULL);
	free(body);
	free(name);
	free(topic);
	return it;
}

static struct brg_item *birth(const char *id, uint64_t seq)
{
	return birth_floor(id, seq, 0);
}

static void commit(struct brg_item **items, size_t n)
{
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_group(com, items, n, store_now_ms(), &out), STORE_OK, "%s",
	             store_errmsg(s));
	for (size_t i = 0; i < out.n_states; i++)
		brg_registry_put(reg, out.states[i].device, &out.states[i].info);
}

/* A group of one item, committed and freed. */
static void commit_one(struct brg_item *it)
{
	commit(&it, 1);
	brg_item_free(it);
}

static struct brg_item *result(const char *id, uint64_t seq, uint64_t prev, uint64_t task,
                               const char *msg)
{
	Outpost__TaskResult r = OUTPOST__TASK_RESULT__INIT;
	r.prev_seq = prev;
	r.task_id = task;
	r.status = OUTPOST__TASK_STATUS__TASK_STATUS_FAILED;
	r.message = (char *)msg;
	r.finished_at_ms = store_now_ms();
	/* packed by protobuf-c itself: wire_msg_pack would refuse to send bad text */
	size_t blen = outpost__task_result__get_packed_size(&r), n;
	uint8_t *body = malloc(blen);
	outpost__task_result__pack(&r, body);
	char *name = h_strf("devices/%s", id), *topic = h_strf("outpost/v1/%s/tasks/result", id);
	uint8_t *env = h_seal(h_pki(), name, WIRE_KIND_TASK_RESULT, id, seq, body, blen, &n);
	struct brg_item *it = judge(topic, env, n, NULL);
	free(body);
	free(name);
	free(topic);
	return it;
}

/* A TaskResult whose message is valid UTF-8 with a 2-byte character at bytes 200-201: the
 * bridge's event detail ("%.200s") cuts it in the middle of the character, PostgreSQL refuses
 * the invalid UTF-8 (22021, mapped to a non-transient "statement failed"), the whole group
 * fails; in the bridge it is retried 3 times, split, and the result dropped unacknowledged -
 * on every resend, forever: the device's chain never passes that seq. */
Test(brg_pg, a_message_cut_mid_character_in_an_event_is_stored)
{
	commit_one(birth("dev-a", 1));
	int64_t task = 0;
	cr_assert_eq(store_task_add(s, "dev-a", "ping", NULL, 0, store_now_ms() + 3600000, "t", &task),
	             STORE_OK);
	char msg[256];
	memset(msg, 'a', 199);
	strcpy(msg + 199, "\xc3\xa9 (valid UTF-8)");
	struct brg_item *it = result("dev-a", 2, 0, (uint64_t)task, msg);
	cr_assert_eq(it->kind, BRG_ITEM_RESULT, "%s", it->detail);
	brg_outcome_clear(&out);
	int rc = brg_commit_group(com, &it, 1, store_now_ms(), &out);
	cr_expect_eq(rc, STORE_OK, "a valid TaskResult is refused by the store: %s", store_errmsg(s));
	brg_item_free(it);
}

/* A message that is not UTF-8 at all: refused when decoded, and the rejection is stored. */
Test(brg_pg, a_message_that_is_not_utf8_is_rejected_not_stored)
{
	commit_one(birth("dev-a", 1));
	int64_t task = 0;
	cr_assert_eq(store_task_add(s, "dev-a", "ping", NULL, 0, store_now_ms() + 3600000, "t", &task),
	             STORE_OK);
	struct brg_item *it = result("dev-a", 2, 0, (uint64_t)task, "bad \xff\xfe");
	cr_assert_eq(it->kind, BRG_ITEM_REJECT);
	cr_expect_str_eq(it->reason, "decode");
	cr_expect(strstr(it->detail, "not UTF-8"), "%s", it->detail);
	brg_outcome_clear(&out);
	int rc = brg_commit_group(com, &it, 1, store_now_ms(), &out);
	cr_expect_eq(rc, STORE_OK, "the rejection cannot be recorded: %s", store_errmsg(s));
	brg_item_free(it);
}

/* A poll whose (MQTT-valid, UTF-8) response topic is not the device's own: the rejection's
 * detail quotes it with "%.80s", cutting a 2-byte character; the event row is refused by
 * PostgreSQL and with it the whole group (in the bridge: 3 attempts, then the group is split
 * into single-item transactions and the rejection is lost - it never counts toward
 * quarantine, so a device can repeat this at will). */
Test(brg_pg, a_rejection_quoting_text_cut_mid_character_is_stored)
{
	commit_one(birth("dev-a", 1));
	char resp[128];
	memset(resp, 'x', sizeof(resp));
	memcpy(resp, "outpost/v1/dev-b/", 17);
	memcpy(resp + 79, "\xc3\xa9", 2);
	resp[100] = '\0';
	size_t n;
	uint8_t *env = h_seal(h_pki(), "devices/dev-a", WIRE_KIND_TASK_POLL, "dev-a", 2, NULL, 0, &n);
	struct brg_item *it = judge("outpost/v1/dev-a/tasks/poll", env, n, resp);
	cr_assert_str_eq(it->reason, "response_topic");
	brg_outcome_clear(&out);
	int rc = brg_commit_group(com, &it, 1, store_now_ms(), &out);
	cr_expect_eq(rc, STORE_OK, "the rejection cannot be recorded: %s", store_errmsg(s));
	brg_item_free(it);
}

/* The offline sweep's threshold is computed by the store, on 64-bit milliseconds. */
Test(brg_pg, the_offline_sweep_runs_on_postgresql)
{
	int64_t now = store_now_ms();
	char *sql = h_strf("INSERT INTO devices (device_id, state, created_at, state_changed_at, online,"
	                   " last_seen_at, sample_interval_s) VALUES ('silent', 'active', %lld, %lld,"
	                   " 1, %lld, 60), ('alive', 'active', %lld, %lld, 1, %lld, 60)",
	                   (long long)(now - 86400000), (long long)(now - 86400000),
	                   (long long)(now - 86400000), (long long)now, (long long)now,
	                   (long long)now);
	cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
	free(sql);
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_maintain(com, store_now_ms(), &out), STORE_OK, "%s", store_errmsg(s));
	int64_t v = -1;
	cr_assert_eq(store_query_i64(s, &v, "SELECT online FROM devices WHERE device_id = 'silent'", 0),
	             STORE_OK);
	cr_expect_eq(v, 0, "silent for a day, still online");
	cr_assert_eq(store_query_i64(s, &v, "SELECT online FROM devices WHERE device_id = 'alive'", 0),
	             STORE_OK);
	cr_expect_eq(v, 1);
}

struct adder {
	struct store *s;
	int rc;
	volatile int done;
};

static void *add_task(void *arg)
{
	struct adder *a = arg;
	int64_t id = 0;
	a->rc = store_task_add(a->s, "dev-a", "ping", NULL, 0, store_now_ms() + 3600000, "t", &id);
	a->done = 1;
	return NULL;
}

/* Two task adds for one device take turns on its row: PostgreSQL assigns the id at INSERT and
 * shows the row at COMMIT, so overlapping adds could become visible out of id order (and the
 * device refuses an id below one it has seen). */
Test(brg_pg, task_adds_for_one_device_take_turns)
{
	commit_one(birth("dev-a", 1));
	struct store *other = open_store(); /* another add in flight: inserted, not committed */
	cr_assert_eq(store_begin(other), STORE_OK);
	int64_t now = store_now_ms(), args[] = {now, now + 3600000}, n = 0;
	cr_assert_eq(store_exec_i64(other,
	                            "INSERT INTO tasks (device, type, state, created_at, expires_at,"
	                            " created_by) SELECT id, 'ping', 'queued', ?, ?, 'x' FROM devices"
	                            " WHERE device_id = 'dev-a'",
	                            args, 2, &n),
	             STORE_OK);
	cr_assert_eq(n, 1);
	struct adder a = {open_store(), -1, 0};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, add_task, &a), 0);
	h_sleep_ms(500);
	cr_expect_not(a.done, "the add did not wait for the device's row");
	cr_assert_eq(store_commit(other), STORE_OK);
	pthread_join(t, NULL);
	cr_expect_eq(a.rc, STORE_OK);
	store_close(a.s);
	store_close(other);
}
