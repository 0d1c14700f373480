/* test_brg_commit.c - verifier, writer transactions and signed replies without MQTT: envelopes
 * judged by brg_verify and committed by brg_commit_group on a SQLite store; the outcome's acks
 * must tell exactly what is stored, a failed commit must leave nothing behind. The suite
 * brg_commit_pg runs the writer on a throwaway PostgreSQL cluster where SQLite would let things
 * pass: text from devices (PostgreSQL refuses invalid UTF-8), arithmetic on parameters, row
 * locks. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brg_commit.h"
#include "brg_commit_int.h"
#include "brg_err.h"
#include "brg_registry.h"
#include "brg_reply.h"
#include "brg_verify.h"
#include "h_pg.h"
#include "h_relay.h"
#include "h_simdev.h"
#include "harness.h"
#include "outpost.pb-c.h"
#include "store.h"
#include "store_ops.h"
#include "wire_cert.h"
#include "wire_env.h"
#include "wire_msg.h"

static struct store *s;
static struct brg_registry *reg;
static struct brg_verifier *ver;
static struct brg_committer *com;
static struct brg_outcome out;
static char *url;
static struct h_simdev_opts so = {.rows = 2, .cols = 2, .t0_ms = 1700000000000LL};

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

/* A verifier of the shared PKI's CA and CRL, looking devices up in r. */
static struct brg_verifier *verifier_on(struct brg_registry *r)
{
	struct wire_ca *ca = NULL;
	struct brg_verifier *v = NULL;
	char *cap = h_strf("%s/ca.crt", h_pki()), *crl = h_strf("%s/crl.pem", h_pki());
	cr_assert_eq(wire_ca_load(cap, crl, &ca, NULL), WIRE_OK);
	free(cap);
	free(crl);
	cr_assert_eq(brg_verifier_new(r, ca, &v), BRG_OK);
	return v;
}

/* Everything on the store at url. */
static void setup_store(void)
{
	s = open_store();
	cr_assert_eq(store_migrate(s, NULL, NULL), STORE_OK);
	cr_assert_eq(brg_registry_new(open_store(), 100, &reg), BRG_OK);
	ver = verifier_on(reg);
	struct brg_commit_opts o = BRG_COMMIT_OPTS_INIT;
	o.gap_grace_ms = 0;
	o.env_bulk_min = 1; /* PostgreSQL: every group takes the bulk path (brg_envrows.c) */
	cr_assert_eq(brg_committer_new(s, &o, &com), STORE_OK);
	memset(&out, 0, sizeof(out));
}

static void setup(void)
{
	char *dir = h_tmpdir("commit");
	url = h_strf("sqlite:%s/s.db", dir);
	free(dir);
	setup_store();
}

static void setup_pg(void)
{
	h_pg_start(&pg);
	url = h_strf("%s", pg.url);
	setup_store();
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
}

static void teardown_pg(void)
{
	teardown();
	h_pg_free(&pg);
}

/* brg_commit_pg_cut: the writer reaches PostgreSQL through a relay that can lose an answer. */
static struct h_relay *relay;

static void setup_pg_relay(void)
{
	h_pg_start(&pg);
	relay = h_relay_start(pg.port);
	url = h_strf("postgresql://postgres@127.0.0.1:%d/postgres", h_relay_port(relay));
	setup_store();
}

static void teardown_pg_relay(void)
{
	teardown();
	h_relay_free(relay);
	h_pg_free(&pg);
}

/* brg_commit_pg_role: the role's defaults are what the bridge must not inherit: a COMMIT that
 * returns before the WAL flush, bytea in escape form, LATIN1 text. */
static void setup_pg_role(void)
{
	h_pg_start(&pg);
	cr_assert_eq(h_pg_sql(&pg,
	                      "ALTER ROLE postgres SET synchronous_commit = off;"
	                      " ALTER ROLE postgres SET bytea_output = escape;"
	                      " ALTER ROLE postgres SET client_encoding = LATIN1",
	                      NULL),
	             0);
	url = h_strf("%s", pg.url);
	setup_store();
}

TestSuite(brg_commit, .init = setup, .fini = teardown);
TestSuite(brg_commit_pg, .init = setup_pg, .fini = teardown_pg);
TestSuite(brg_commit_pg_cut, .init = setup_pg_relay, .fini = teardown_pg_relay);
TestSuite(brg_commit_pg_role, .init = setup_pg_role, .fini = teardown_pg);

/* A test run on SQLite (suite brg_commit) and on PostgreSQL (brg_commit_pg): the two store
 * envelopes differently (row by row; in bulk, see brg_envrows.c). */
#define TEST_BOTH(name)                                                                            \
	static void name(void);                                                                    \
	Test(brg_commit, name)                                                                     \
	{                                                                                          \
		name();                                                                            \
	}                                                                                          \
	Test(brg_commit_pg, name)                                                                  \
	{                                                                                          \
		name();                                                                            \
	}                                                                                          \
	static void name(void)

/* env (freed here) published on topic, judged by verifier v. */
static struct brg_item *judge_by(struct brg_verifier *v, const char *topic, uint8_t *env,
                                 size_t len, const char *resp)
{
	struct brg_item *it = NULL;
	static const uint8_t corr[4] = {1, 2, 3, 4};
	struct brg_msg *m = brg_msg_new(topic, env, len, resp, resp ? corr : NULL, resp ? 4 : 0);
	free(env);
	cr_assert_eq(brg_verify(v, m, &it), BRG_OK);
	return it;
}

static struct brg_item *judge(const char *topic, uint8_t *env, size_t len, const char *resp)
{
	return judge_by(ver, topic, env, len, resp);
}

/* body (freed here) sealed by signer's key in pki (a directory laid out like h_pki()) as
 * device id's envelope, judged by v as published on outpost/v1/<id>/<suffix>. */
static struct brg_item *sealed_for(struct brg_verifier *v, const char *pki, const char *signer,
                                   const char *id, uint32_t kind, const char *suffix, uint64_t seq,
                                   uint8_t *body, size_t blen)
{
	size_t n;
	char *name = h_strf("devices/%s", signer), *topic = h_strf("outpost/v1/%s/%s", id, suffix);
	uint8_t *env = h_seal(pki, name, kind, id, seq, body, blen, &n);
	struct brg_item *it = judge_by(v, topic, env, n, NULL);
	free(body);
	free(name);
	free(topic);
	return it;
}

static struct brg_item *sealed_by(const char *pki, const char *signer, const char *id,
                                  uint32_t kind, const char *suffix, uint64_t seq, uint8_t *body,
                                  size_t blen)
{
	return sealed_for(ver, pki, signer, id, kind, suffix, seq, body, blen);
}

static struct brg_item *sealed(const char *signer, const char *id, uint32_t kind,
                               const char *suffix, uint64_t seq, uint8_t *body, size_t blen)
{
	return sealed_by(h_pki(), signer, id, kind, suffix, seq, body, blen);
}

/* A Birth of id defining metrics m1..m<ncols>. */
static struct brg_item *birth_with(const char *id, uint64_t seq, int ncols, uint64_t chain_floor)
{
	size_t blen;
	uint8_t *body = h_birth_body(h_pki(), id, ncols, chain_floor, &blen);
	return sealed(id, id, WIRE_KIND_BIRTH, "birth", seq, body, blen);
}

static struct brg_item *birth_floor(const char *id, uint64_t seq, uint64_t chain_floor)
{
	return birth_with(id, seq, 2, chain_floor);
}

static struct brg_item *birth(const char *id, uint64_t seq)
{
	return birth_with(id, seq, 2, 0);
}

static struct brg_item *batch(const char *signer, const char *id, uint64_t seq, uint64_t prev)
{
	size_t blen;
	uint8_t *body = h_batch_body(&so, seq, prev, &blen);
	return sealed(signer, id, WIRE_KIND_BATCH, "telemetry", seq, body, blen);
}

/* A TaskResult of id for task, status st, message msg (any bytes: packed by protobuf-c itself,
 * as wire_msg_pack would refuse to send bad text); result() a failed one, finished now. */
static struct brg_item *result_as(const char *id, uint64_t seq, uint64_t prev, uint64_t task,
                                  const char *msg, Outpost__TaskStatus st, int64_t finished_ms)
{
	Outpost__TaskResult r = OUTPOST__TASK_RESULT__INIT;
	r.prev_seq = prev;
	r.task_id = task;
	r.status = st;
	r.message = (char *)msg;
	r.finished_at_ms = finished_ms;
	size_t blen = outpost__task_result__get_packed_size(&r);
	uint8_t *body = malloc(blen);
	outpost__task_result__pack(&r, body);
	return sealed(id, id, WIRE_KIND_TASK_RESULT, "tasks/result", seq, body, blen);
}

static struct brg_item *result(const char *id, uint64_t seq, uint64_t prev, uint64_t task,
                               const char *msg)
{
	return result_as(id, seq, prev, task, msg, OUTPOST__TASK_STATUS__TASK_STATUS_FAILED,
	                 store_now_ms());
}

/* What a bridge does with a committed group's device states. */
static void put_states(const struct brg_outcome *o)
{
	brg_outcome_to_registry(o, reg);
}

static void commit(struct brg_item **items, size_t n)
{
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_group(com, items, n, store_now_ms(), &out), STORE_OK, "%s",
	             store_errmsg(s));
	put_states(&out);
}

static const struct brg_reply *ack_of(const char *id)
{
	for (size_t i = 0; i < out.n_replies; i++)
		if (out.replies[i].kind == BRG_REPLY_ACK && !strcmp(out.replies[i].device, id))
			return &out.replies[i];
	return NULL;
}

static int64_t one(const char *sql)
{
	int64_t v = -1;
	cr_assert_eq(store_query_i64(s, &v, sql, 0), STORE_OK, "%s", sql);
	return v;
}

static void free_items(struct brg_item **it, size_t n)
{
	for (size_t i = 0; i < n; i++)
		brg_item_free(it[i]);
}

/* A group of one item, committed and freed. */
static void commit_one(struct brg_item *it)
{
	commit(&it, 1);
	brg_item_free(it);
}

Test(brg_commit, verify_rejections)
{
	struct brg_item *it = batch("dev-a", "dev-a", 2, 0);
	cr_expect_eq(it->kind, BRG_ITEM_REJECT);
	cr_expect_str_eq(it->reason, "unknown_device");
	brg_item_free(it);
	it = birth("dev-a", 1);
	cr_expect_eq(it->kind, BRG_ITEM_BIRTH, "%s", it->detail);
	brg_item_free(it);
	it = batch("dev-b", "dev-a", 3, 0);
	cr_expect_str_eq(it->reason, "bad_signature");
	brg_item_free(it);
	it = batch("dev-b", "dev-b", 3, 0);
	brg_item_free(it);
	size_t n;
	uint8_t *env = h_seal(h_pki(), "devices/dev-b", WIRE_KIND_BATCH, "dev-b", 3, "x", 1, &n);
	it = judge("outpost/v1/dev-a/telemetry", env, n, NULL);
	cr_expect_str_eq(it->reason, "id_mismatch");
	brg_item_free(it);
	env = h_seal(h_pki(), "devices/dev-a", WIRE_KIND_BATCH, "dev-a", 4, "x", 1, &n);
	it = judge("outpost/v1/dev-a/tasks/poll", env, n, "outpost/v1/dev-a/tasks");
	cr_expect_str_eq(it->reason, "kind_mismatch");
	brg_item_free(it);
	env = h_seal(h_pki(), "devices/dev-a", WIRE_KIND_TASK_POLL, "dev-a", 5, NULL, 0, &n);
	it = judge("outpost/v1/dev-a/tasks/poll", env, n, "outpost/v1/dev-c/tasks");
	cr_expect_str_eq(it->reason, "response_topic");
	brg_item_free(it);
	uint8_t *big = calloc(WIRE_MAX_ENVELOPE + 1, 1);
	it = judge("outpost/v1/dev-a/telemetry", big, WIRE_MAX_ENVELOPE + 1, NULL);
	cr_expect_str_eq(it->reason, "oversize");
	brg_item_free(it);
	env = (uint8_t *)strdup("offline");
	it = judge("outpost/v1/dev-a/status", env, 7, NULL);
	cr_expect_eq(it->kind, BRG_ITEM_STATUS);
	cr_expect_eq(it->online, 0);
	brg_item_free(it);
	/* A birth carrying a revoked certificate. */
	size_t blen;
	uint8_t *body = h_birth_body(h_pki(), "dev-revoked", 1, 0, &blen);
	env = h_seal(h_pki(), "devices/dev-revoked", WIRE_KIND_BIRTH, "dev-revoked", 1, body, blen,
	             &n);
	free(body);
	it = judge("outpost/v1/dev-revoked/birth", env, n, NULL);
	cr_expect_str_eq(it->reason, "revoked");
	brg_item_free(it);
	/* topics that are not an Outpost uplink */
	const char *const topics[] = {"outpost/v1/dev-a/nonsense", "outpost/v1/dev-a/tasks",
	                              "outpost/v1/dev-a/ack", "outpost/v2/dev-a/telemetry",
	                              "elsewhere/dev-a/telemetry", "outpost/v1//telemetry"};
	for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
		env = h_seal(h_pki(), "devices/dev-a", WIRE_KIND_BATCH, "dev-a", 6, "x", 1, &n);
		it = judge(topics[i], env, n, NULL);
		cr_expect_str_eq(it->reason ? it->reason : "accepted", "topic", "%s: %s", topics[i],
		                 it->detail);
		brg_item_free(it);
	}
	/* a Birth whose certificate is not one */
	body = h_birth_body(h_pki(), "dev-a", 1, 0, &blen);
	Outpost__Birth *b = outpost__birth__unpack(NULL, blen, body);
	cr_assert(b);
	free(body);
	char *pem = b->cert_pem;
	b->cert_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
	blen = outpost__birth__get_packed_size(b);
	body = malloc(blen);
	outpost__birth__pack(b, body);
	b->cert_pem = pem;
	outpost__birth__free_unpacked(b, NULL);
	it = sealed("dev-a", "dev-a", WIRE_KIND_BIRTH, "birth", 7, body, blen);
	cr_expect_str_eq(it->reason ? it->reason : "accepted", "cert_invalid", "%s", it->detail);
	brg_item_free(it);
}

/* A batch of id with seq/prev carrying dropped records (as a device's spool reports them). */
static struct brg_item *batch_drop(const char *id, uint64_t seq, uint64_t prev,
                                   const struct wire_dropped *d, size_t nd)
{
	struct wire_batch_builder *b = NULL;
	uint8_t *body = NULL;
	size_t blen;
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	cr_assert_eq(wire_batch_row(b, 1700000000000LL + (int64_t)seq), WIRE_OK);
	cr_assert_eq(wire_batch_add(b, 1, (double)seq), WIRE_OK);
	cr_assert_eq(wire_batch_encode(b, prev, d, nd, &body, &blen), WIRE_OK);
	wire_batch_builder_free(b);
	return sealed(id, id, WIRE_KIND_BATCH, "telemetry", seq, body, blen);
}

/* A task takes one result, the first: a second one (another seq, from a confused or hostile
 * device) is stored as an envelope with an event, and neither overwrites the first nor mixes
 * its output in - also when the first left the task in a state that takes results (a rejection
 * after its expiry leaves it expired): the task is read as having a result, on PostgreSQL too
 * (a boolean column, once read as 0 there). A result for a task that is not the device's is an
 * event only. */
TEST_BOTH(a_task_keeps_its_first_result)
{
	commit_one(birth("dev-a", 1));
	int64_t task = 0, now = store_now_ms();
	cr_assert_eq(store_task_add(s, "dev-a", "ping", NULL, 0, now + 3600000, "t", &task),
	             STORE_OK);
	commit_one(result_as("dev-a", 2, 0, (uint64_t)task, "first",
	                     OUTPOST__TASK_STATUS__TASK_STATUS_REJECTED, now + 7200000));
	cr_expect_eq(one("SELECT COUNT(*) FROM tasks WHERE state = 'expired' AND result_seq = 2"
	                 " AND result_message = 'first'"), 1);
	commit_one(result("dev-a", 3, 2, (uint64_t)task, "second"));
	cr_expect_eq(one("SELECT COUNT(*) FROM tasks WHERE state = 'expired' AND result_seq = 2 AND"
	                 " result_message = 'first'"), 1, "a second result overwrote the first");
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'task_result_ignored' AND detail"
	                 " LIKE '%is already expired with a result'"),
	             1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type LIKE 'task_expired'"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type LIKE 'task_failed'"), 0);
	commit_one(result("dev-a", 4, 3, (uint64_t)task + 100, "nobody's"));
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'task_result_unknown'"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq IN (3, 4)"), 2,
	             "the results were not stored as envelopes");
}

/* The verifier's limits on what a device controls in an envelope's numbering and in a poll's
 * MQTT properties: each a rejection with its reason, before anything reaches the writer. */
Test(brg_commit, verify_refuses_bad_numbering_and_poll_properties)
{
	commit_one(birth("dev-a", 1));
	const uint64_t seqs[] = {0, (uint64_t)INT64_MAX + 1, UINT64_MAX};
	for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
		size_t blen;
		uint8_t *body = h_batch_body(&so, 2, 1, &blen);
		struct brg_item *it = sealed("dev-a", "dev-a", WIRE_KIND_BATCH, "telemetry", seqs[i],
		                             body, blen);
		cr_expect_str_eq(it->reason ? it->reason : "accepted", "seq_range", "seq %llu: %s",
		                 (unsigned long long)seqs[i], it->detail);
		brg_item_free(it);
	}
	/* prev_seq not below the seq: a batch, and a task result */
	struct brg_item *it = batch("dev-a", "dev-a", 5, 5);
	cr_expect_str_eq(it->reason ? it->reason : "accepted", "seq_range", "%s", it->detail);
	brg_item_free(it);
	it = result("dev-a", 6, 9, 1, "done");
	cr_expect_str_eq(it->reason ? it->reason : "accepted", "seq_range", "%s", it->detail);
	brg_item_free(it);
	/* a dropped range that reaches the batch's own seq */
	const struct wire_dropped d = {3, 7, 4};
	it = batch_drop("dev-a", 7, 2, &d, 1);
	cr_expect_str_eq(it->reason ? it->reason : "accepted", "seq_range", "%s", it->detail);
	brg_item_free(it);
	/* a poll without a response topic, and one with correlation data over 64 bytes */
	size_t n;
	uint8_t *env = h_seal(h_pki(), "devices/dev-a", WIRE_KIND_TASK_POLL, "dev-a", 8, NULL, 0, &n);
	it = judge("outpost/v1/dev-a/tasks/poll", env, n, NULL);
	cr_expect_str_eq(it->reason ? it->reason : "accepted", "response_topic", "%s", it->detail);
	brg_item_free(it);
	uint8_t corr[BRG_CORR_MAX + 1] = {0};
	env = h_seal(h_pki(), "devices/dev-a", WIRE_KIND_TASK_POLL, "dev-a", 9, NULL, 0, &n);
	struct brg_msg *m = brg_msg_new("outpost/v1/dev-a/tasks/poll", env, n,
	                                "outpost/v1/dev-a/tasks", corr, sizeof(corr));
	free(env);
	cr_assert_eq(brg_verify(ver, m, &it), BRG_OK);
	cr_expect_str_eq(it->reason ? it->reason : "accepted", "oversize", "%s", it->detail);
	brg_item_free(it);
	/* the same poll with 64 bytes is fine */
	env = h_seal(h_pki(), "devices/dev-a", WIRE_KIND_TASK_POLL, "dev-a", 10, NULL, 0, &n);
	m = brg_msg_new("outpost/v1/dev-a/tasks/poll", env, n, "outpost/v1/dev-a/tasks", corr,
	                BRG_CORR_MAX);
	free(env);
	cr_assert_eq(brg_verify(ver, m, &it), BRG_OK);
	cr_expect_eq(it->kind, BRG_ITEM_POLL, "%s", it->detail);
	brg_item_free(it);
}

/* A Birth on dev-a's topic with envelope id dev-a, carrying <cert_pki>/devices/<cert_of>.crt and
 * signed with <key_pki>/devices/<signer>.key: refused with reason (detail quoting part), and
 * the verifier did not take the certificate's key provisionally (dev-a's next batch is still
 * unknown), and committed it enrols nothing: no key, no metrics, no envelope, no ack. */
static void expect_birth_refused(const char *cert_pki, const char *cert_of, const char *key_pki,
                                 const char *signer, const char *reason, const char *part)
{
	size_t blen, n;
	uint8_t *body = h_birth_body(cert_pki, cert_of, 2, 0, &blen);
	char *name = h_strf("devices/%s", signer);
	uint8_t *env = h_seal(key_pki, name, WIRE_KIND_BIRTH, "dev-a", 1, body, blen, &n);
	free(name);
	free(body);
	struct brg_item *it = judge("outpost/v1/dev-a/birth", env, n, NULL);
	cr_assert_eq(it->kind, BRG_ITEM_REJECT, "a Birth with %s's certificate was accepted",
	             cert_of);
	cr_expect_str_eq(it->reason, reason, "%s", it->detail);
	cr_expect(strstr(it->detail, part), "detail: %s", it->detail);
	/* judged before the writer commits (and puts the store's view back in the registry) */
	struct brg_item *next = batch("dev-a", "dev-a", 2, 0);
	cr_expect_str_eq(next->reason, "unknown_device", "after the refused Birth: %s",
	                 next->reason ? next->reason : "accepted");
	brg_item_free(next);
	commit_one(it);
	cr_expect_null(ack_of("dev-a"), "a refused Birth was acknowledged");
	cr_expect_eq(out.envelopes, 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE pubkey IS NOT NULL"), 0,
	             "a key was enrolled");
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-a' AND state ="
	                 " 'unenrolled' AND cert_pem IS NULL AND enrolled_at IS NULL"),
	             1);
	cr_expect_eq(one("SELECT COUNT(*) FROM metrics"), 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes"), 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM readings"), 0);
	char *sql = h_strf("SELECT count FROM rejections WHERE reason = '%s'", reason);
	cr_expect_eq(one(sql), 1, "the rejection was not counted");
	free(sql);
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections"), 1);
}

Test(brg_commit, birth_with_a_certificate_from_another_ca_is_refused)
{
	/* key and certificate match; only the issuer is wrong */
	expect_birth_refused(h_pki_other(), "dev-a", h_pki_other(), "dev-a", "cert_chain",
	                     "not issued by the trusted CA");
}

Test(brg_commit, birth_with_an_expired_certificate_is_refused)
{
	/* issued for dev-a by the bridge's own CA, valid during 2020 only */
	char *old =
	    h_pki_issue_dated("expired-dev-a", "dev-a", "20200101000000Z", "20210101000000Z");
	expect_birth_refused(old, "dev-a", old, "dev-a", "cert_expired", "validity");
	free(old);
}

Test(brg_commit, birth_with_another_devices_certificate_is_refused)
{
	/* dev-b's valid certificate and key, claiming dev-a's id on dev-a's topic */
	expect_birth_refused(h_pki(), "dev-b", h_pki(), "dev-b", "cert_cn",
	                     "certificate CN 'dev-b' is not the topic's id");
}

Test(brg_commit, birth_signed_with_a_key_not_its_certificates_is_refused)
{
	/* dev-a's valid certificate, signed by dev-b's key */
	expect_birth_refused(h_pki(), "dev-a", h_pki(), "dev-b", "bad_signature",
	                     "does not verify with its certificate");
}

Test(brg_commit, birth_signed_with_another_key_for_the_same_name_is_refused)
{
	/* dev-a's valid certificate, signed by the key the other CA certified as dev-a */
	expect_birth_refused(h_pki(), "dev-a", h_pki_other(), "dev-a", "bad_signature",
	                     "does not verify with its certificate");
}

Test(brg_commit, birth_with_another_devices_revoked_certificate_is_refused)
{
	/* dev-revoked's certificate (on the CRL) and key on dev-a's topic: a forgery like any
	 * other, which must not revoke dev-a */
	expect_birth_refused(h_pki(), "dev-revoked", h_pki(), "dev-revoked", "cert_cn",
	                     "certificate CN 'dev-revoked' is not the topic's id");
}

static struct brg_item *revoked_birth(uint64_t seq)
{
	size_t blen;
	uint8_t *body = h_birth_body(h_pki(), "dev-revoked", 1, 0, &blen);
	return sealed("dev-revoked", "dev-revoked", WIRE_KIND_BIRTH, "birth", seq, body, blen);
}

/* The CRL revokes the key it certifies. A Birth with the device's own revoked certificate
 * revokes the device in the store if that key is the enrolled one (or none is), not when the
 * device has rotated to another key since (an old Birth redelivered, or committed late by
 * another bridge of the group). */
Test(brg_commit, a_revoked_certificate_revokes_only_the_key_it_certifies)
{
	/* not enrolled: what it presents is its own certificate, revoked */
	struct brg_item *it = revoked_birth(4);
	cr_assert_str_eq(it->reason, "revoked", "%s", it->detail);
	uint8_t old_key[WIRE_PUBKEY_LEN];
	memcpy(old_key, it->key.raw, sizeof(old_key));
	commit_one(it);
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-revoked' AND"
	                 " state = 'revoked'"),
	             1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'revoked'"), 1);

	/* enrolled since with another key (dev-a's, for the test): a rotation */
	commit_one(birth("dev-a", 1));
	cr_assert_eq(store_exec(s, "UPDATE devices SET state = 'active', pubkey = (SELECT pubkey"
	                           " FROM devices WHERE device_id = 'dev-a') WHERE device_id ="
	                           " 'dev-revoked'"),
	             STORE_OK, "%s", store_errmsg(s));
	commit_one(revoked_birth(5));
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-revoked' AND"
	                 " state = 'active'"),
	             1, "revoked by a certificate for a key it no longer uses");
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'revoked'"), 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'revoked'"), 1);

	/* the enrolled key is the revoked one: revoked */
	struct store_stmt *st = NULL;
	cr_assert_eq(store_prepare(s, "UPDATE devices SET pubkey = ? WHERE device_id = 'dev-revoked'",
	                           &st),
	             STORE_OK);
	cr_assert_eq(store_bind_blob(st, 1, old_key, sizeof(old_key)), STORE_OK);
	cr_assert_eq(store_step(st), 0, "%s", store_errmsg(s));
	store_stmt_free(st);
	commit_one(revoked_birth(6));
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-revoked' AND"
	                 " state = 'revoked'"),
	             1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'revoked'"), 2);
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'revoked'"), 3);
}

/* Revoked before any key was enrolled (its first Birth carried its revoked certificate): the
 * revoked key is held, so a certificate re-issued for it cannot enrol the id, and a Birth with
 * a new key from the CA does (PROTOCOL 5.4). */
Test(brg_commit, a_device_revoked_before_it_enrolled_comes_back_with_a_new_key)
{
	struct brg_item *first = revoked_birth(4);
	struct store_stmt *st = NULL;
	cr_assert_eq(store_prepare(s, "SELECT COUNT(*) FROM devices WHERE device_id = 'dev-revoked'"
	                              " AND state = 'revoked' AND pubkey = ?",
	                           &st),
	             STORE_OK);
	cr_assert_eq(store_bind_blob(st, 1, first->key.raw, WIRE_PUBKEY_LEN), STORE_OK);
	commit_one(first);
	cr_assert_eq(store_step(st), 1, "%s", store_errmsg(s));
	cr_expect_eq(store_col_i64(st, 0), 1, "the revoked key is held");
	store_stmt_free(st);
	commit_one(revoked_birth(5));
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'revoked'"), 2);
	size_t blen;
	char *k2 = h_pki_issue_dated("revoked-unenrolled", "dev-revoked", "20200101000000Z",
	                             "20991231000000Z");
	uint8_t *body = h_birth_body(k2, "dev-revoked", 2, 0, &blen);
	struct brg_item *b = sealed_by(k2, "dev-revoked", "dev-revoked", WIRE_KIND_BIRTH, "birth",
	                               6, body, blen);
	cr_assert_eq(b->kind, BRG_ITEM_BIRTH, "%s", b->detail);
	commit_one(b);
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-revoked' AND"
	                 " state = 'active' AND pubkey IS NOT NULL"),
	             1, "the new key enrols the id");
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'revoked'"), 2);
	/* the CRL's key is remembered (a certificate re-issued for it stays refused after this
	 * rotation), the new one is not */
	cr_expect_eq(one("SELECT COUNT(*) FROM revoked_keys k JOIN devices d ON d.id = k.device"
	                 " WHERE d.device_id = 'dev-revoked' AND k.key <> d.pubkey"),
	             1);
	cr_expect_eq(one("SELECT COUNT(*) FROM revoked_keys"), 1);
	free(k2);
}

/* A key revoked with `outpostctl device revoke` only (the CRL does not know it: its
 * certificate stays valid at the broker) is refused for good. The reviewer's case: key K1 is
 * stolen and revoked in the store, the device rotates to K2, then the holder of K1 sends a
 * fresher Birth: refused as `revoked`, the device keeps K2 and its envelopes are stored. */
TEST_BOTH(a_key_revoked_in_the_store_never_enrols_again)
{
	commit_one(birth("dev-a", 1)); /* K1: the shared PKI's dev-a key */
	cr_assert_eq(store_device_action(s, "dev-a", "revoke", "outpostctl", "key stolen", NULL),
	             STORE_OK, "%s", store_errmsg(s));
	char *k2 = h_pki_issue_dated("dev-a-k2", "dev-a", "20200101000000Z", "20991231000000Z");
	size_t blen;
	uint8_t *body = h_birth_body(k2, "dev-a", 2, 0, &blen);
	commit_one(sealed_by(k2, "dev-a", "dev-a", WIRE_KIND_BIRTH, "birth", 10, body, blen));
	body = h_batch_body(&so, 11, 0, &blen);
	commit_one(sealed_by(k2, "dev-a", "dev-a", WIRE_KIND_BATCH, "telemetry", 11, body, blen));
	cr_assert_eq(one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-a' AND state ="
	                 " 'active'"),
	             1, "the rotation did not re-enrol the device");
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'reenrolled'"), 1);

	/* the holder of K1, with a seq above the device's */
	struct brg_item *thief = birth("dev-a", 20);
	cr_assert_eq(thief->kind, BRG_ITEM_BIRTH, "the verifier leaves it to the writer: %s",
	             thief->detail);
	commit_one(thief);
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-a' AND state ="
	                 " 'active' AND last_birth_seq = 10"),
	             1);
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'revoked'"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'rejected' AND detail LIKE"
	                 " '%birth seq 20 refused: its key was revoked%'"),
	             1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'reenrolled'"), 1);
	cr_expect_eq(one("SELECT consecutive_rejects FROM devices WHERE device_id = 'dev-a'"), 0,
	             "not the device's fault: no step toward quarantine");

	/* the device goes on with K2 */
	body = h_batch_body(&so, 12, 11, &blen);
	struct brg_item *next =
	    sealed_by(k2, "dev-a", "dev-a", WIRE_KIND_BATCH, "telemetry", 12, body, blen);
	cr_assert_eq(next->kind, BRG_ITEM_BATCH, "%s", next->detail);
	commit_one(next);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq IN (11, 12)"), 2);
	cr_expect_not_null(ack_of("dev-a"));
	/* and K1 stays refused */
	commit_one(birth("dev-a", 21));
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'revoked'"), 2);
	free(k2);
}

TEST_BOTH(exactly_once_and_acks_tell_what_is_stored)
{
	struct brg_item *g1[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0),
	                         batch("dev-a", "dev-a", 4, 2), batch("dev-a", "dev-a", 4, 2)};
	commit(g1, 4);
	free_items(g1, 4);
	const struct brg_reply *a = ack_of("dev-a");
	cr_assert_not_null(a);
	cr_expect_eq(a->seq, 4);
	cr_expect_eq(a->n_ranges, 0);
	cr_expect_eq(out.envelopes, 2);
	cr_expect_eq(out.duplicates, 1, "the same batch twice in one group is one row");
	cr_expect_eq(one("SELECT COUNT(*) FROM readings"), 2 * 4);

	/* 7 (prev 5) and 9 (prev 7) arrive; 5 is missing: ranges cover 6..9, never 5. */
	struct brg_item *g2[] = {batch("dev-a", "dev-a", 7, 5), batch("dev-a", "dev-a", 9, 7)};
	commit(g2, 2);
	free_items(g2, 2);
	a = ack_of("dev-a");
	cr_assert_not_null(a);
	cr_expect_eq(a->seq, 4);
	cr_assert_eq(a->n_ranges, 1);
	cr_expect_eq(a->ranges[0].first, 6);
	cr_expect_eq(a->ranges[0].last, 9);
	cr_expect_eq(
	    one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND resolved_at IS NULL"), 1);

	/* The replies are signed by the bridge and decode as the device will. */
	struct wire_key *k = NULL;
	char *kp = h_strf("%s/bridge.key", h_pki());
	cr_assert_eq(wire_key_load(kp, &k, NULL), WIRE_OK);
	free(kp);
	struct wire_pubkey pub;
	wire_key_public(k, &pub);
	char topic[WIRE_TOPIC_MAX];
	uint8_t *buf;
	size_t len;
	cr_assert_eq(brg_reply_seal(k, a, 1700000000000LL, topic, &buf, &len), WIRE_OK);
	cr_expect_str_eq(topic, "outpost/v1/dev-a/ack");
	struct wire_env e;
	Outpost__Ack *ack = NULL;
	cr_assert_eq(wire_env_decode(buf, len, &e, NULL), WIRE_OK);
	cr_expect_eq(wire_env_verify(&e, &pub), WIRE_OK);
	cr_assert_eq(wire_ack_decode(e.body, e.body_len, &ack, NULL), WIRE_OK);
	cr_expect_eq(ack->upto, 4);
	cr_expect_eq(ack->n_ranges, 1);
	wire_msg_free(ack);
	free(buf);
	wire_key_free(k);

	/* 5 arrives: the chain closes, the gap is filled. Then the old ones: duplicates and
	 * a reused seq, and a seq at the frontier never stored. */
	commit_one(batch("dev-a", "dev-a", 5, 4));
	cr_expect_eq(ack_of("dev-a")->seq, 9);
	cr_expect_eq(ack_of("dev-a")->n_ranges, 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE resolution = 'filled'"), 1);
	so.rows = 3;
	struct brg_item *g4[] = {batch("dev-a", "dev-a", 2, 0), batch("dev-a", "dev-a", 3, 2)};
	so.rows = 2;
	struct brg_item *g5[] = {batch("dev-a", "dev-a", 7, 5)};
	commit(g4, 2);
	commit(g5, 1);
	free_items(g4, 2);
	free_items(g5, 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections WHERE reason = 'seq_reused'"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections WHERE reason = 'too_old'"), 1);
	cr_expect_eq(one("SELECT duplicates FROM devices WHERE device_id = 'dev-a'"), 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes"), 5);
	cr_expect_eq(one("SELECT COUNT(*) FROM readings"), 5 * 4);
}

/* The last group stored `envelopes` and counted `duplicates`, id is acknowledged up to
 * `ack`, and the store holds env_rows envelopes and `readings` readings in all. */
static void expect_group(const char *id, uint64_t envelopes, uint64_t duplicates, uint64_t ack,
                         int64_t env_rows, int64_t readings)
{
	cr_expect_eq(out.envelopes, envelopes);
	cr_expect_eq(out.duplicates, duplicates);
	const struct brg_reply *a = ack_of(id);
	cr_assert_not_null(a, "%s is acknowledged", id);
	cr_expect_eq(a->seq, ack);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes"), env_rows);
	cr_expect_eq(one("SELECT COUNT(*) FROM readings"), readings);
}

/* In one group: a seq twice with different signatures (the first is stored, the second is a
 * reuse), then a resend of a stored envelope between two new ones. */
TEST_BOTH(a_seq_twice_in_one_group_is_stored_once)
{
	so.rows = 3;
	struct brg_item *g1[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0), NULL};
	so.rows = 2;
	g1[2] = batch("dev-a", "dev-a", 2, 0);
	commit(g1, 3);
	cr_expect_eq(out.envelopes, 1);
	cr_expect_eq(out.rejected, 1);
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'seq_reused'"), 1);
	cr_expect_eq(one("SELECT n_readings FROM envelopes WHERE seq = 2"), 3 * 2,
	             "the first of the two is the one stored");
	cr_expect_eq(one("SELECT COUNT(*) FROM readings"), 3 * 2);
	so.rows = 3;
	struct brg_item *g2[] = {batch("dev-a", "dev-a", 3, 2), batch("dev-a", "dev-a", 2, 0),
	                         batch("dev-a", "dev-a", 4, 3)};
	so.rows = 2;
	commit(g2, 3);
	free_items(g1, 3);
	free_items(g2, 3);
	expect_group("dev-a", 2, 1, 4, 3, 3 * 3 * 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE length(sig) = 64"), 3);
}

/* A group that fails after its envelope rows went in (the resend of 2 flushes them; then the
 * readings are refused) leaves nothing behind, and retried unchanged stores each envelope
 * once. */
Test(brg_commit_pg, a_failed_bulk_insert_leaves_nothing_and_retries_cleanly)
{
	commit_one(birth("dev-a", 1));
	struct brg_item *g[] = {batch("dev-a", "dev-a", 2, 0), batch("dev-a", "dev-a", 3, 2),
	                        batch("dev-a", "dev-a", 2, 0)};
	cr_assert_eq(store_exec(s, "ALTER TABLE readings ADD CONSTRAINT no3 CHECK (seq <> 3)"),
	             STORE_OK);
	brg_outcome_clear(&out);
	cr_expect_lt(brg_commit_group(com, g, 3, store_now_ms(), &out), 0);
	cr_expect_eq(out.n_replies, 0, "no ack may leave a failed commit");
	cr_expect_eq(out.envelopes, 0);
	cr_expect_eq(out.duplicates, 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes"), 0);
	cr_assert_eq(store_exec(s, "ALTER TABLE readings DROP CONSTRAINT no3"), STORE_OK);
	commit(g, 3);
	free_items(g, 3);
	expect_group("dev-a", 2, 1, 3, 2, 2 * 4);
	cr_expect_eq(one("SELECT envelopes FROM devices WHERE device_id = 'dev-a'"), 2);
}

/* Below o.env_bulk_min durable envelopes a PostgreSQL group inserts them row by row, with the
 * same outcome. */
Test(brg_commit_pg, a_group_below_the_bulk_minimum_dedupes_the_same)
{
	brg_committer_free(com);
	struct brg_commit_opts o = BRG_COMMIT_OPTS_INIT;
	cr_assert_eq(brg_committer_new(s, &o, &com), STORE_OK);
	struct brg_item *g[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0),
	                        batch("dev-a", "dev-a", 2, 0)};
	commit(g, 3);
	free_items(g, 3);
	expect_group("dev-a", 1, 1, 2, 1, 4);
}

Test(brg_commit, failed_commit_leaves_nothing_and_retries_cleanly)
{
	struct brg_item *g[] = {birth("dev-b", 1), batch("dev-b", "dev-b", 2, 0)};
	/* Another connection holds the write lock: the group fails as a whole. */
	struct store *other = open_store();
	cr_assert_eq(store_begin(other), STORE_OK);
	brg_outcome_clear(&out);
	int rc = brg_commit_group(com, g, 2, store_now_ms(), &out);
	cr_expect_eq(rc, STORE_EBUSY);
	cr_expect_eq(out.n_replies, 0, "no ack may leave a failed commit");
	cr_expect_eq(out.envelopes, 0);
	cr_assert_eq(store_rollback(other), STORE_OK);
	store_close(other);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes"), 0);
	/* The same items, unchanged, commit once the lock is gone. */
	commit(g, 2);
	free_items(g, 2);
	cr_expect_eq(ack_of("dev-b")->seq, 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes"), 1);
}

/* The role's statement_timeout cuts short the writer's wait for a device row another bridge
 * holds (or pg_cancel_backend() cancels it): SQLSTATE 57014 is a transient failure, retried
 * like a lock timeout, not a refusal that splits the group and drops its items. */
Test(brg_commit_pg, a_statement_cancelled_while_waiting_for_a_lock_is_retried, .timeout = 120)
{
	commit_one(birth("dev-a", 1));
	cr_assert_eq(store_exec(s, "SET statement_timeout = 200"), STORE_OK, "%s", store_errmsg(s));
	struct store *other = open_store();
	cr_assert_eq(store_begin(other), STORE_OK);
	cr_assert_eq(store_exec(other, "SELECT 1 FROM devices WHERE device_id = 'dev-a' FOR UPDATE"),
	             STORE_OK, "%s", store_errmsg(other));
	struct brg_item *g[] = {batch("dev-a", "dev-a", 2, 0)};
	brg_outcome_clear(&out);
	int rc = brg_commit_group(com, g, 1, store_now_ms(), &out);
	cr_expect_eq(rc, STORE_EBUSY, "%s: %s", store_strerror(rc), store_errmsg(s));
	cr_expect(store_err_transient(rc));
	cr_expect(strstr(store_errmsg(s), "statement timeout"), "%s", store_errmsg(s));
	cr_expect_eq(out.n_replies, 0, "no ack may leave a failed commit");
	cr_assert_eq(store_rollback(other), STORE_OK);
	store_close(other);
	/* the retry, once the row is free (with no timeout a loaded machine could trip) */
	cr_assert_eq(store_exec(s, "RESET statement_timeout"), STORE_OK, "%s", store_errmsg(s));
	commit(g, 1);
	free_items(g, 1);
	const struct brg_reply *a = ack_of("dev-a");
	cr_assert_not_null(a);
	cr_expect_eq(a->seq, 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes"), 1);
}

/* Whatever the role's defaults, the writer's COMMIT waits for the WAL flush before the ack, a
 * resend is recognised by its stored signature (a duplicate, not seq_reused) and a device's
 * key is read back from the store (by a restarted bridge's registry). */
Test(brg_commit_pg_role, the_roles_settings_do_not_reach_the_writer, .timeout = 120)
{
	cr_expect_eq(one("SELECT COUNT(*) FROM pg_settings WHERE name = 'synchronous_commit' AND"
	                 " setting = 'on'"),
	             1);
	commit_one(birth("dev-a", 1));
	commit_one(batch("dev-a", "dev-a", 2, 0));
	commit_one(batch("dev-a", "dev-a", 2, 0));
	cr_expect_eq(out.duplicates, 1);
	const struct brg_reply *a = ack_of("dev-a");
	cr_assert_not_null(a, "the resend is acknowledged");
	cr_expect_eq(a->seq, 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections"), 0, "the resend was refused");
	struct brg_registry *r2 = NULL;
	cr_assert_eq(brg_registry_new(open_store(), 100, &r2), BRG_OK);
	struct brg_dev_info info;
	cr_assert_eq(brg_registry_get(r2, "dev-a", -1, &info), BRG_OK);
	cr_expect_eq(info.state, BRG_ST_ACTIVE);
	cr_expect(info.has_key, "the stored key was not read back");
	brg_registry_free(r2);
}

/* A batch of dev-a sealed with the key in pki. */
static struct brg_item *batch_keyed(const char *pki, uint64_t seq, uint64_t prev)
{
	size_t blen;
	uint8_t *body = h_batch_body(&so, seq, prev, &blen);
	return sealed_by(pki, "dev-a", "dev-a", WIRE_KIND_BATCH, "telemetry", seq, body, blen);
}

/* dev-a's Birth at seq (chain floor) with a new key, from a new certificate of the same CA in
 * *pki (free it), judged: accepted by the verifier. */
static struct brg_item *new_key_birth(const char *tag, uint64_t seq, uint64_t floor, char **pki)
{
	size_t blen;
	*pki = h_pki_issue_dated(tag, "dev-a", "20200101000000Z", "20991231000000Z");
	uint8_t *body = h_birth_body(*pki, "dev-a", 2, floor, &blen);
	struct brg_item *b =
	    sealed_by(*pki, "dev-a", "dev-a", WIRE_KIND_BIRTH, "birth", seq, body, blen);
	cr_assert_eq(b->kind, BRG_ITEM_BIRTH, "%s", b->detail);
	return b;
}

/* A key rotation while envelopes judged before it are still on their way to the writer: its
 * commit of them puts the store's (old) key back into the registry, and the new Birth's key
 * must stay usable, or the device's next envelopes, signed with it, fail as bad_signature and
 * count toward quarantine. One of them that reaches the writer before the Birth is left
 * unacknowledged (the device sends it again), not refused; one sealed before the rotation
 * still verifies with the old key, and is stored. */
Test(brg_commit, a_key_rotation_survives_the_commits_in_flight)
{
	commit_one(birth("dev-a", 1));
	commit_one(batch("dev-a", "dev-a", 2, 0));
	struct brg_item *early = judge("outpost/v1/dev-a/status", (uint8_t *)strdup("online"), 6,
	                               NULL);
	char *k2;
	struct brg_item *b = new_key_birth("rotation", 10, 3, &k2);
	commit_one(early); /* the registry gets the store's view back: the old key */

	struct brg_item *old = batch_keyed(h_pki(), 3, 2);
	cr_expect_eq(old->kind, BRG_ITEM_BATCH, "sealed before the rotation: %s", old->detail);
	struct brg_item *next = batch_keyed(k2, 11, 3);
	cr_expect_eq(next->kind, BRG_ITEM_BATCH, "signed with the new key: %s", next->detail);
	commit_one(old);
	commit_one(next); /* before its Birth */
	const char *const stored = "SELECT COUNT(*) FROM envelopes WHERE seq = 11";
	cr_expect_eq(one(stored), 0, "judged with a key the store did not hold");
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 3"), 1);
	commit_one(b);
	next = batch_keyed(k2, 11, 3); /* sent again */
	cr_expect_eq(next->kind, BRG_ITEM_BATCH, "after the Birth: %s", next->detail);
	commit_one(next);
	cr_expect_eq(one(stored), 1);
	cr_expect_eq(one("SELECT COALESCE(SUM(count), 0) FROM rejections"), 0);
	cr_expect_eq(one("SELECT consecutive_rejects FROM devices WHERE device_id = 'dev-a'"), 0);
	free(k2);
}

/* A revoked device comes back with a new key (a rotation): while its Birth is on its way to
 * the writer, an envelope still signed with the revoked key (its backlog, sealed before) is
 * refused, not stored once the Birth lifts the revocation. Revocation holds the key. */
Test(brg_commit, a_revoked_key_stays_refused_while_a_new_birth_is_pending)
{
	commit_one(birth("dev-a", 1));
	commit_one(batch("dev-a", "dev-a", 2, 0));
	cr_assert_eq(store_exec(s, "UPDATE devices SET state = 'revoked' WHERE device_id = 'dev-a'"),
	             STORE_OK); /* outpostctl device revoke */
	struct brg_dev_info info; /* the verifiers hold dev-a as active: they have not seen it */
	cr_assert_eq(brg_registry_get(reg, "dev-a", -1, &info), BRG_OK);
	cr_assert_eq(info.state, BRG_ST_ACTIVE);
	char *k2;
	struct brg_item *b = new_key_birth("revoked-rotation", 10, 2, &k2);
	struct brg_item *old = batch_keyed(h_pki(), 3, 2);
	cr_expect_str_eq(old->reason ? old->reason : "accepted", "revoked", "%s", old->detail);
	struct brg_item *g[] = {b, old};
	commit(g, 2);
	free_items(g, 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 3"), 0,
	             "stored under the revoked key");
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-a' AND state ="
	                 " 'active'"),
	             1, "the new key re-enrols the device");
	struct brg_item *next = batch_keyed(k2, 11, 2);
	cr_expect_eq(next->kind, BRG_ITEM_BATCH, "%s", next->detail);
	commit_one(next);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 11"), 1);
	free(k2);
}

/* A signature that fails with the verifiers' cached key is checked against the store's key;
 * with the store unreadable there is no verdict (dropped unacknowledged: the device sends it
 * again), not a bad signature, which would count toward quarantine. */
Test(brg_commit, an_unreadable_store_gives_no_verdict_on_a_signature, .timeout = 60)
{
	commit_one(birth("dev-a", 1));
	commit_one(batch("dev-a", "dev-a", 2, 0)); /* the verifiers hold dev-a's key */
	char *k2 = h_pki_issue_dated("unreadable", "dev-a", "20200101000000Z", "20991231000000Z");
	cr_assert_eq(store_exec(s, "ALTER TABLE devices RENAME TO devices_away"), STORE_OK);
	struct brg_dev_info info; /* from the cache: the first lookup needs no store */
	cr_assert_eq(brg_registry_get(reg, "dev-a", -1, &info), BRG_OK);
	cr_assert_eq(info.has_key, 1);
	struct brg_item *it = batch_keyed(k2, 3, 2);
	cr_assert_eq(store_exec(s, "ALTER TABLE devices_away RENAME TO devices"), STORE_OK);
	cr_expect_eq(it->kind, BRG_ITEM_DROP, "%s: %s", it->reason ? it->reason : "", it->detail);
	brg_item_free(it);
	it = batch_keyed(k2, 3, 2); /* readable again: judged */
	cr_expect_str_eq(it->reason ? it->reason : "accepted", "bad_signature", "%s", it->detail);
	brg_item_free(it);
	free(k2);
}

/* A Birth the writer does not apply (here a replay: older than the device's last Birth)
 * leaves no pending key behind in the verifiers' registry: envelopes signed with that key are
 * refused at once, as any bad signature, instead of waiting unacknowledged for good while
 * the device's own state (quarantine, revocation) went unseen by the verifiers. */
Test(brg_commit, a_birth_the_writer_does_not_apply_leaves_no_pending_key)
{
	commit_one(birth("dev-a", 5));
	char *k2;
	struct brg_item *b = new_key_birth("replayed-birth", 3, 0, &k2);
	commit_one(b);
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections WHERE reason = 'replayed'"), 1);
	struct brg_item *next = batch_keyed(k2, 6, 0);
	cr_expect_str_eq(next->reason ? next->reason : "accepted (pending key)", "bad_signature",
	                 "%s", next->detail);
	brg_item_free(next);
	next = batch_keyed(h_pki(), 7, 0); /* the enrolled key still works */
	cr_expect_eq(next->kind, BRG_ITEM_BATCH, "%s", next->detail);
	cr_expect_eq(next->provisional, 0);
	brg_item_free(next);
	free(k2);
}

/* An envelope of dev-a signed with the key in pki verifies as one waiting for its Birth. */
static void expect_pending_key(const char *pki, uint64_t seq, const char *when)
{
	struct brg_item *next = batch_keyed(pki, seq, 2);
	cr_expect_eq(next->kind, BRG_ITEM_BATCH, "%s: %s", when, next->detail);
	cr_expect_eq(next->provisional, 1, "%s", when);
	brg_item_free(next);
}

/* A pending Birth lasts until the writer judges it, however long that takes (behind a store
 * down for an hour) and however many devices pass through the registry meanwhile (it is
 * emptied when full): envelopes signed with the new key keep verifying, left for the writer,
 * instead of failing as bad_signature and counting toward quarantine. */
Test(brg_commit, a_pending_birth_waits_for_the_writer_however_long)
{
	commit_one(birth("dev-a", 1));
	commit_one(batch("dev-a", "dev-a", 2, 0));
	char *k2;
	struct brg_item *b = new_key_birth("long-wait", 10, 3, &k2);
	brg_registry__age(reg, 3600 * 1000);
	expect_pending_key(k2, 11, "an hour later");
	for (int i = 0; i < 250; i++) {
		char id[16];
		struct brg_dev_info info;
		snprintf(id, sizeof(id), "other-%d", i);
		cr_assert_eq(brg_registry_get(reg, id, -1, &info), BRG_OK);
	}
	cr_expect_leq(brg_registry_size(reg), 100, "the registry is bounded");
	expect_pending_key(k2, 11, "after the registry was emptied");
	commit_one(b);
	struct brg_item *next = batch_keyed(k2, 11, 2);
	cr_expect_eq(next->kind, BRG_ITEM_BATCH, "%s", next->detail);
	cr_expect_eq(next->provisional, 0, "the key is stored");
	commit_one(next);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 11"), 1);
	cr_expect_eq(one("SELECT COALESCE(SUM(count), 0) FROM rejections"), 0);
	free(k2);
}

/* Pending Births do not count against registry_max (they are bounded by the pipeline's
 * queues, not by it): a registry holding more of them than that still takes new devices
 * (it used to spin for ever once they filled its table) and keeps every pending one. */
Test(brg_commit, a_registry_full_of_pending_births_keeps_working, .timeout = 20)
{
	struct brg_registry *r2;
	cr_assert_eq(brg_registry_new(open_store(), 16, &r2), BRG_OK);
	struct brg_dev_info b = {.state = BRG_ST_ACTIVE, .has_key = 1}, got;
	char id[16];
	for (int i = 0; i < 3000; i++) {
		snprintf(id, sizeof(id), "p-%d", i);
		memcpy(b.key.raw, &i, sizeof(i));
		brg_registry_put_birth(r2, id, &b);
	}
	for (int i = 0; i < 100; i++) {
		snprintf(id, sizeof(id), "s-%d", i);
		cr_assert_eq(brg_registry_get(r2, id, -1, &got), BRG_OK);
	}
	cr_expect_leq(brg_registry_size(r2), 3000 + 16);
	for (int i = 0; i < 3000; i++) {
		snprintf(id, sizeof(id), "p-%d", i);
		cr_assert_eq(brg_registry_get(r2, id, -1, &got), BRG_OK);
		memcpy(b.key.raw, &i, sizeof(i));
		cr_assert(got.provisional && !memcmp(got.key.raw, b.key.raw, sizeof(b.key.raw)),
		          "%s: pending Birth lost", id);
	}
	brg_registry_free(r2);
}

Test(brg_commit, five_consecutive_rejections_quarantine)
{
	struct brg_item *b = birth("dev-c", 1);
	commit(&b, 1);
	brg_item_free(b);
	for (int i = 0; i < 5; i++) {
		size_t n;
		uint8_t *env = (uint8_t *)strdup("garbage!");
		n = 8;
		struct brg_item *it = judge("outpost/v1/dev-c/telemetry", env, n, NULL);
		cr_expect_str_eq(it->reason, "decode");
		commit(&it, 1);
		brg_item_free(it);
		cr_expect_eq(
		    one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-c' AND state ="
		        " 'quarantined'"),
		    i == 4, "after %d rejections", i + 1);
	}
	/* The verifier now drops the device's messages, cheaply. */
	struct brg_item *it = batch("dev-c", "dev-c", 2, 0);
	cr_expect_str_eq(it->reason, "quarantined");
	commit(&it, 1);
	brg_item_free(it);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes"), 0);
}

TEST_BOTH(backlog_filling_a_hole_from_below_keeps_one_gap)
{
	/* 2 is stored, then a live batch 10 (prev 9) arrives ahead of the backlog 3..9. */
	struct brg_item *g1[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0),
	                         batch("dev-a", "dev-a", 10, 9)};
	commit(g1, 3);
	free_items(g1, 3);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND resolved_at IS NULL"
	                 " AND prev_seq = 2 AND last_seq = 9"),
	             1);
	/* the backlog arrives in order over several commits: the gap shrinks, no new rows */
	for (uint64_t q = 3; q <= 7; q += 2) {
		struct brg_item *g[] = {batch("dev-a", "dev-a", q, q - 1),
		                        batch("dev-a", "dev-a", q + 1, q)};
		commit(g, 2);
		free_items(g, 2);
		cr_expect_eq(one("SELECT COUNT(*) FROM gaps"), 1, "after %d", (int)q + 1);
		cr_expect_eq(one("SELECT prev_seq FROM gaps WHERE resolved_at IS NULL"), (int64_t)q + 1);
	}
	commit_one(batch("dev-a", "dev-a", 9, 8));
	cr_expect_eq(ack_of("dev-a")->seq, 10);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE resolution = 'filled'"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'gap_missing'"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'gap_filled'"), 1);
}

/* A committer with the bridge's default grace (60 s) before a hole is recorded, and a group
 * committed at a chosen bridge time: holes young and old side by side. */
static void commit_at(struct brg_committer *cm, int64_t now, struct brg_item **items, size_t n)
{
	brg_outcome_clear(&out);
	int rc = brg_commit_group(cm, items, n, now, &out);
	cr_assert_eq(rc, STORE_OK, "commit at %lld: %s", (long long)now, store_errmsg(s));
	put_states(&out);
	free_items(items, n);
}

/* The open 'missing' rows of a device, as "prev-last prev-last ...". */
static char *open_gaps_of(const char *id)
{
	static char buf[256];
	struct store_stmt *st = NULL;
	size_t len = 0;
	buf[0] = '\0';
	cr_assert_eq(store_prepare(s,
	                           "SELECT g.prev_seq, g.last_seq FROM gaps g JOIN devices d ON"
	                           " d.id = g.device WHERE d.device_id = ? AND g.reason = 'missing'"
	                           " AND g.resolved_at IS NULL ORDER BY g.prev_seq",
	                           &st),
	             STORE_OK, "%s", store_errmsg(s));
	cr_assert_eq(store_bind_text(st, 1, id), STORE_OK);
	while (store_step(st) == 1 && len < sizeof(buf) - 48)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%lld-%lld", len ? " " : "",
		                        (long long)store_col_i64(st, 0), (long long)store_col_i64(st, 1));
	store_stmt_free(st);
	return buf;
}

static char *open_gaps(void)
{
	return open_gaps_of("dev-a");
}

/* Batches arriving inside a recorded hole split it or fill it from below; the rows follow,
 * never two over the same envelopes: two rows moved to one prev_seq broke the unique key,
 * and every later batch of the device was refused (found by review). */
TEST_BOTH(batches_arriving_inside_a_recorded_hole_keep_the_rows_apart)
{
	struct brg_committer *cm = NULL;
	struct brg_commit_opts o = BRG_COMMIT_OPTS_INIT;
	cr_assert_eq(o.gap_grace_ms, 60000);
	cr_assert_eq(brg_committer_new(s, &o, &cm), STORE_OK);
	const int64_t t = 1700000000000LL;

	/* A split: 2 and 10 stored; the hole 3..9 is recorded once older than the grace. */
	commit_at(cm, t, (struct brg_item *[]){birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0),
	                                       batch("dev-a", "dev-a", 10, 9)},
	          3);
	commit_at(cm, t + 100000, (struct brg_item *[]){batch("dev-a", "dev-a", 11, 10)}, 1);
	cr_expect_str_eq(open_gaps(), "2-9");
	/* 5 arrives inside it: 3..4 (new, young) and 6..9 (old) are missing now */
	commit_at(cm, t + 110000, (struct brg_item *[]){batch("dev-a", "dev-a", 5, 4)}, 1);
	cr_expect_str_eq(open_gaps(), "2-4 5-9");
	commit_at(cm, t + 120000,
	          (struct brg_item *[]){batch("dev-a", "dev-a", 3, 2), batch("dev-a", "dev-a", 4, 3)},
	          2);
	cr_expect_str_eq(open_gaps(), "5-9");
	commit_at(cm, t + 130000, (struct brg_item *[]){batch("dev-a", "dev-a", 6, 5)}, 1);
	cr_expect_str_eq(open_gaps(), "6-9");
	cr_expect_eq(ack_of("dev-a")->seq, 6);

	/* Filled from below above the frontier: 13 and 20 stored, then 14 (prev 13). */
	commit_at(cm, t + 140000,
	          (struct brg_item *[]){batch("dev-a", "dev-a", 13, 12), batch("dev-a", "dev-a", 20, 19)},
	          2);
	commit_at(cm, t + 300000, (struct brg_item *[]){batch("dev-a", "dev-a", 21, 20)}, 1);
	cr_expect_str_eq(open_gaps(), "6-9 11-12 13-19");
	commit_at(cm, t + 310000, (struct brg_item *[]){batch("dev-a", "dev-a", 14, 13)}, 1);
	cr_expect_str_eq(open_gaps(), "6-9 11-12 14-19");
	/* everything below 16 arrives: the frontier moves into the last hole */
	commit_at(cm, t + 320000,
	          (struct brg_item *[]){batch("dev-a", "dev-a", 7, 6), batch("dev-a", "dev-a", 8, 7),
	                                batch("dev-a", "dev-a", 9, 8), batch("dev-a", "dev-a", 12, 11),
	                                batch("dev-a", "dev-a", 15, 14), batch("dev-a", "dev-a", 16, 15)},
	          6);
	cr_expect_eq(ack_of("dev-a")->seq, 16);
	cr_expect_str_eq(open_gaps(), "16-19");
	commit_at(cm, t + 330000,
	          (struct brg_item *[]){batch("dev-a", "dev-a", 17, 16), batch("dev-a", "dev-a", 18, 17),
	                                batch("dev-a", "dev-a", 19, 18)},
	          3);
	cr_expect_eq(ack_of("dev-a")->seq, 21);
	cr_expect_str_eq(open_gaps(), "");
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections"), 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq BETWEEN 2 AND 21"), 20);

	/* A store written before the fix may hold two open rows over the same envelopes: the
	 * frontier moving into both moves one of them, and the batch is taken. */
	commit_at(cm, t, (struct brg_item *[]){birth("dev-b", 1), batch("dev-b", "dev-b", 2, 0),
	                                       batch("dev-b", "dev-b", 10, 9)},
	          3);
	cr_assert_eq(store_exec(s, "INSERT INTO gaps (device, reason, prev_seq, last_seq,"
	                           " opened_at) SELECT id, 'missing', 2, 9, 0 FROM devices WHERE"
	                           " device_id = 'dev-b' UNION ALL SELECT id, 'missing', 5, 9, 0"
	                           " FROM devices WHERE device_id = 'dev-b'"),
	             STORE_OK, "%s", store_errmsg(s));
	commit_at(cm, t + 1000,
	          (struct brg_item *[]){batch("dev-b", "dev-b", 3, 2), batch("dev-b", "dev-b", 4, 3),
	                                batch("dev-b", "dev-b", 5, 4), batch("dev-b", "dev-b", 6, 5)},
	          4);
	cr_expect_eq(ack_of("dev-b")->seq, 6);
	cr_expect_str_eq(open_gaps_of("dev-b"), "5-9 6-9");
	commit_at(cm, t + 2000,
	          (struct brg_item *[]){batch("dev-b", "dev-b", 7, 6), batch("dev-b", "dev-b", 8, 7),
	                                batch("dev-b", "dev-b", 9, 8)},
	          3);
	cr_expect_eq(ack_of("dev-b")->seq, 10);
	cr_expect_str_eq(open_gaps_of("dev-b"), "");
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections"), 0);
	brg_committer_free(cm);
}

TEST_BOTH(wiped_device_numbering_afresh_continues_as_a_chain)
{
	/* First life: 2..4 stored, 6 (prev 5) stored, 5 never arrives. */
	struct brg_item *g1[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0),
	                         batch("dev-a", "dev-a", 3, 2), batch("dev-a", "dev-a", 4, 3),
	                         batch("dev-a", "dev-a", 6, 5)};
	commit(g1, 5);
	free_items(g1, 5);
	cr_expect_eq(ack_of("dev-a")->seq, 4);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND resolved_at IS NULL"
	                 " AND prev_seq = 4 AND last_seq = 5"),
	             1);
	/* Its state directory is wiped: the new spool numbers from the clock and owes nothing
	 * below it. Its Birth says so; the batches after it continue from the floor. */
	const uint64_t f = 824252801ULL;
	struct brg_item *g2[] = {birth_floor("dev-a", f + 1, f), batch("dev-a", "dev-a", f + 2, f),
	                         batch("dev-a", "dev-a", f + 3, f + 2)};
	commit(g2, 3);
	free_items(g2, 3);
	const struct brg_reply *a = ack_of("dev-a");
	cr_assert_not_null(a);
	cr_expect_eq(a->seq, f + 3, "acknowledged as a chain");
	cr_expect_eq(a->n_ranges, 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM readings"), 6 * 4);
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"), (int64_t)(f + 3));
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'lost' AND prev_seq = 4"
	                 " AND last_seq = 824252801 AND count IS NULL"),
	             1);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND resolution = 'lost'"
	                 " AND resolved_at IS NOT NULL"),
	             1, "the hole of the first life is given up, not left open");
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE resolved_at IS NULL AND reason = 'missing'"), 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'chain_floor_ahead'"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections"), 0);

	/* A replay of the old Birth, or an old batch, changes nothing. */
	struct brg_item *g3[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 3, 2)};
	commit(g3, 2);
	free_items(g3, 2);
	cr_expect_eq(ack_of("dev-a")->seq, f + 3);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps"), 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'chain_floor_ahead'"), 1);
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"), (int64_t)(f + 3));

	/* A floor at or above the Birth's own seq is nonsense: noted, not followed. */
	commit_one(birth_floor("dev-a", f + 10, f + 10));
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"), (int64_t)(f + 3));
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'chain_floor_ignored'"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps"), 2);
}

TEST_BOTH(chain_floor_edges)
{
	/* 2..4 stored; 6 (prev 5) and 10 (prev 8) too: holes 5 and 7..8 */
	struct brg_item *g1[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0),
	                         batch("dev-a", "dev-a", 3, 2), batch("dev-a", "dev-a", 4, 3),
	                         batch("dev-a", "dev-a", 6, 5), batch("dev-a", "dev-a", 10, 8)};
	commit(g1, 6);
	free_items(g1, 6);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing'"), 2);
	/* a restart whose floor is the frontier changes nothing */
	commit_one(birth_floor("dev-a", 20, 4));
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'lost'"), 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE resolved_at IS NULL"), 2);
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"), 4);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type LIKE 'chain_floor%'"), 0);
	/* a withheld older Birth with a floor ahead is refused as replayed, not followed */
	commit_one(birth_floor("dev-a", 15, 7));
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'replayed'"), 1);
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"), 4);

	/* floor 7, alone in its group: hole 5 is lost, hole 7..8 now starts at 7 and stays open,
	 * and the device is acknowledged at once */
	commit_one(birth_floor("dev-a", 21, 7));
	const struct brg_reply *a = ack_of("dev-a");
	cr_assert_not_null(a, "a Birth that moves the floor is answered");
	cr_expect_eq(a->seq, 7);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND prev_seq = 4 AND"
	                 " resolution = 'lost'"),
	             1);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND resolved_at IS NULL"
	                 " AND prev_seq = 7 AND last_seq = 8"),
	             1, "the part above the floor is still owed");
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'lost' AND prev_seq = 4 AND"
	                 " last_seq = 7"),
	             1);
	/* 8 arrives: the chain runs on to 10; 5, declared lost, arrives late: stored, not refused */
	struct brg_item *g5[] = {batch("dev-a", "dev-a", 8, 7), batch("dev-a", "dev-a", 5, 4)};
	commit(g5, 2);
	free_items(g5, 2);
	cr_expect_eq(ack_of("dev-a")->seq, 10);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 5"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM readings WHERE seq = 5"), 4);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE resolution = 'filled'"), 1);
	/* 7, the last seq of the lost stretch, is new too; resends of 5 and 6 are duplicates; 1,
	 * below the frontier, outside any lost stretch and never stored, is too_old */
	struct brg_item *g7[] = {batch("dev-a", "dev-a", 7, 6), batch("dev-a", "dev-a", 5, 4),
	                         batch("dev-a", "dev-a", 6, 5), batch("dev-a", "dev-a", 1, 0)};
	commit(g7, 4);
	free_items(g7, 4);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 7"), 1);
	cr_expect_eq(one("SELECT duplicates FROM devices WHERE device_id = 'dev-a'"), 2);
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'too_old'"), 1);
	cr_expect_eq(ack_of("dev-a")->seq, 10);

	/* a store meeting a device whose floor is not below its Birth: the floor is ignored */
	commit_one(birth_floor("dev-b", 5, 9));
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-b'"), 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'chain_floor_ignored'"), 1);
}

/* A device whose state directory was restored from a backup taken at seq 2 numbers on from
 * the clock, but links its first new envelope to 2, below the frontier (4) its later life
 * reached. That link waits like a hole (the grace), then the chain goes on by it: the stretch
 * in between is lost, the later life's open hole is given up, and the device is acknowledged
 * as a chain again (before, that envelope was never acknowledged). */
TEST_BOTH(a_restored_state_directory_forks_the_chain_and_it_goes_on)
{
	struct brg_committer *cm = NULL;
	struct brg_commit_opts o = BRG_COMMIT_OPTS_INIT;
	cr_assert_eq(brg_committer_new(s, &o, &cm), STORE_OK);
	const int64_t t = 1700000000000LL;
	const uint64_t f = 824252801ULL;
	/* the later life: 2..4, and 6 above a hole (5) */
	commit_at(cm, t,
	          (struct brg_item *[]){birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0),
	                                batch("dev-a", "dev-a", 3, 2), batch("dev-a", "dev-a", 4, 3),
	                                batch("dev-a", "dev-a", 6, 5)},
	          5);
	/* the restored copy's first new envelope: too young to follow */
	commit_at(cm, t + 1000, (struct brg_item *[]){batch("dev-a", "dev-a", f, 2)}, 1);
	cr_expect_eq(ack_of("dev-a")->seq, 4);
	commit_at(cm, t + 60500, (struct brg_item *[]){batch("dev-a", "dev-a", f + 1, f)}, 1);
	cr_expect_eq(ack_of("dev-a")->seq, 4);
	cr_expect_str_eq(open_gaps(), "4-5", "the later life's hole is recorded");
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'chain_forked'"), 0);
	/* old enough: followed */
	commit_at(cm, t + 61500, (struct brg_item *[]){batch("dev-a", "dev-a", f + 2, f + 1)}, 1);
	const struct brg_reply *a = ack_of("dev-a");
	cr_assert_not_null(a);
	cr_expect_eq(a->seq, f + 2);
	cr_expect_eq(a->n_ranges, 0);
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"), (int64_t)(f + 2));
	cr_expect_str_eq(open_gaps(), "");
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND resolution = 'lost'"),
	             1, "the hole is given up, not marked filled");
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'lost' AND prev_seq = 4 AND"
	                 " last_seq = 824252801"),
	             1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'chain_forked'"), 1);
	/* 5, from the later life, arrives late: stored; a resend of 3 is a duplicate */
	commit_at(cm, t + 62000,
	          (struct brg_item *[]){batch("dev-a", "dev-a", 5, 4), batch("dev-a", "dev-a", 3, 2)},
	          2);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 5"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections"), 0);
	cr_expect_eq(ack_of("dev-a")->seq, f + 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'chain_forked'"), 1);
	brg_committer_free(cm);
}

/* A fork is followed only when the slice of links read holds every link above the frontier:
 * here 4,100 stored links above a hole push the link that does leave the frontier (4 -> 9000)
 * out of the 4,096 read, and the old fork (2 -> 100) must wait, not be taken. */
Test(brg_commit, a_fork_is_not_followed_past_a_truncated_slice, .timeout = 60)
{
	struct brg_committer *cm = NULL;
	struct brg_commit_opts o = BRG_COMMIT_OPTS_INIT;
	cr_assert_eq(brg_committer_new(s, &o, &cm), STORE_OK);
	const int64_t t = 1700000000000LL;
	commit_at(cm, t,
	          (struct brg_item *[]){birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0),
	                                batch("dev-a", "dev-a", 3, 2), batch("dev-a", "dev-a", 4, 3)},
	          4);
	cr_assert_eq(store_exec(s, "WITH RECURSIVE n(i) AS (SELECT 200 UNION ALL SELECT i + 1 FROM"
	                           " n WHERE i < 4300) INSERT INTO envelopes (device, seq, prev_seq,"
	                           " kind, sent_at, stored_at, n_readings, sig) SELECT d.id, i + 1, i,"
	                           " 1, 0, 0, 0, x'00' FROM n, devices d WHERE d.device_id = 'dev-a'"
	                           " UNION ALL SELECT id, 9000, 4, 1, 0, 0, 0, x'00' FROM devices"
	                           " WHERE device_id = 'dev-a'"),
	             STORE_OK, "%s", store_errmsg(s));
	commit_at(cm, t, (struct brg_item *[]){batch("dev-a", "dev-a", 100, 2)}, 1);
	commit_at(cm, t + 120000, (struct brg_item *[]){batch("dev-a", "dev-a", 3, 2)}, 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'chain_forked'"), 0);
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"), 4);
	brg_committer_free(cm);
}

/* The device's acks for 2..4 were lost (connection dropped right after the bridge committed);
 * it stays offline until its spool overflows and drops its oldest unacknowledged records,
 * 2..10, reporting Dropped{prev 0, last 10} (dev_spool.c drop_seg: prev = prev_seq of the first
 * unacknowledged record). Everything up to 10 is then either stored or dropped: the chain is
 * complete and the next batch (12, prev 10) must move the frontier to 12. */
Test(brg_commit, dropped_range_starting_below_the_frontier_closes_the_chain)
{
	struct brg_item *g1[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0),
	                         batch("dev-a", "dev-a", 3, 2), batch("dev-a", "dev-a", 4, 3)};
	commit(g1, 4);
	free_items(g1, 4);
	cr_assert_eq(ack_of("dev-a")->seq, 4);

	struct wire_dropped d = {0, 10, 7};
	commit_one(batch_drop("dev-a", 12, 10, &d, 1));
	const struct brg_reply *a = ack_of("dev-a");
	cr_assert_not_null(a);
	cr_expect_eq(a->seq, 12, "frontier stuck at %llu", (unsigned long long)a->seq);
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"), 12);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing'"), 0,
	             "a 'missing' gap was opened for seqs the device reported dropped");
	/* later batches: still no cumulative progress */
	commit_one(batch_drop("dev-a", 13, 12, NULL, 0));
	cr_expect_eq(ack_of("dev-a")->seq, 13, "frontier still stuck at %llu",
	             (unsigned long long)ack_of("dev-a")->seq);
}

/* Dropped records at or below the frontier change nothing: the chain is settled there. A device
 * repeats a range until the envelope carrying it is acknowledged, and a hostile one could
 * otherwise add gap rows and events at will, which every later group of the device would
 * read back. One that reaches past the frontier is still recorded. */
TEST_BOTH(dropped_records_at_or_below_the_frontier_add_nothing)
{
	struct brg_item *g1[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0),
	                         batch("dev-a", "dev-a", 3, 2), batch("dev-a", "dev-a", 4, 3)};
	commit(g1, 4);
	free_items(g1, 4);
	cr_assert_eq(ack_of("dev-a")->seq, 4);
	const int64_t gaps = one("SELECT COUNT(*) FROM gaps");
	const int64_t events = one("SELECT COUNT(*) FROM events WHERE type = 'gap_dropped'");
	const struct wire_dropped below[] = {{0, 1, 1}, {1, 2, 1}, {3, 4, 1}};
	commit_one(batch_drop("dev-a", 5, 4, below, 3));
	cr_expect_eq(ack_of("dev-a")->seq, 5);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps"), gaps, "gap rows for settled seqs");
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'gap_dropped'"), events);
	const struct wire_dropped past = {5, 7, 2};
	commit_one(batch_drop("dev-a", 8, 7, &past, 1));
	cr_expect_eq(ack_of("dev-a")->seq, 8);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'dropped' AND prev_seq = 5 AND"
	                 " last_seq = 7"),
	             1);
}

/* Commit dev-a's n batches from seq first + 1 on, in groups of 200: in a row (batch s has prev
 * s - 1) or each after an envelope the device dropped (after_drops: batch s has prev s - 1 and
 * reports Dropped{s - 2, s - 1}, and the next is s + 2). Returns the last seq. */
static uint64_t commit_run(uint64_t first, size_t n, int after_drops)
{
	struct brg_item *g[200];
	size_t k = 0;
	uint64_t seq = first;
	for (size_t i = 0; i < n; i++) {
		seq += after_drops ? 2 : 1;
		struct wire_dropped d = {seq - 2, seq - 1, 1};
		g[k++] = after_drops ? batch_drop("dev-a", seq, seq - 1, &d, 1)
		                     : batch("dev-a", "dev-a", seq, seq - 1);
		if (k == 200 || i + 1 == n) {
			commit(g, k);
			free_items(g, k);
			k = 0;
		}
	}
	return seq;
}

/* More links above the frontier than one group reads (MAX_LINKS stored, MAX_DROP_LINKS
 * dropped): the writer reads a bounded slice of the chain per group and records no hole at
 * the edge of what it read, whichever read stopped first. The frontier moves up by slices,
 * with each group of the device, up to the end. Here a hole at seq 3 holds back a run of
 * batches each after a dropped envelope and a run of batches in a row, until 3 arrives. */
static void chain_by_slices(int drops_first)
{
	struct brg_item *g1[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0)};
	commit(g1, 2);
	free_items(g1, 2);
	const size_t n_drops = MAX_DROP_LINKS + 76, n_rows = MAX_LINKS + 104;
	uint64_t seq = 3; /* batch 4 (prev 3) comes first */
	seq = commit_run(seq, drops_first ? n_drops : n_rows, drops_first);
	seq = commit_run(seq, drops_first ? n_rows : n_drops, !drops_first);
	cr_expect_str_eq(open_gaps(), "2-3", "only the hole at 3: %s", open_gaps());
	const int64_t events = one("SELECT COUNT(*) FROM events WHERE type = 'gap_missing'");
	commit_one(batch("dev-a", "dev-a", 3, 2));
	cr_expect_str_eq(open_gaps(), "", "a hole recorded at the edge of a slice: %s",
	                 open_gaps());
	uint64_t f = (uint64_t)one("SELECT frontier FROM devices WHERE device_id = 'dev-a'");
	cr_expect_gt(f, 3, "the frontier did not move");
	for (int i = 0; i < 10 && f < seq; i++) {
		seq = commit_run(seq, 1, 0);
		f = (uint64_t)one("SELECT frontier FROM devices WHERE device_id = 'dev-a'");
		cr_expect_str_eq(open_gaps(), "", "at frontier %llu: %s", (unsigned long long)f,
		                 open_gaps());
	}
	cr_expect_eq(f, seq, "the frontier did not reach the end in 10 groups");
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'gap_missing'"), events);
}

TEST_BOTH(a_chain_longer_than_one_read_closes_by_slices_drops_first)
{
	chain_by_slices(1);
}

TEST_BOTH(a_chain_longer_than_one_read_closes_by_slices_rows_first)
{
	chain_by_slices(0);
}

/* A dropped range that starts below the edge of the slice read and ends beyond it still
 * closes the chain (a device's spool discarded a long stretch, some of it stored here): the
 * slice keeps every link it read, and only the holes reaching its edge wait. */
TEST_BOTH(a_dropped_range_across_the_edge_of_a_read_closes_the_chain)
{
	struct brg_item *g1[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0)};
	commit(g1, 2);
	free_items(g1, 2);
	commit_run(3, MAX_LINKS + 200, 0); /* 4 .. 4300, 3 missing */
	cr_expect_str_eq(open_gaps(), "2-3", "%s", open_gaps());
	struct wire_dropped d = {2, 5000, 700};
	commit_one(batch_drop("dev-a", 5001, 5000, &d, 1));
	cr_expect_str_eq(open_gaps(), "", "%s", open_gaps());
	cr_expect_geq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"), 5000);
	commit_run(5001, 1, 0);
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"), 5002);
}

/* More dropped ranges end at one seq than the writer reads at once (overlapping reports; a
 * hostile device can send them), and the one starting at the frontier came last: it is still
 * in the slice, and the chain goes on. Read in arrival order, it fell off every slice. */
TEST_BOTH(dropped_ranges_ending_together_are_read_lowest_start_first)
{
	struct brg_item *g1[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0)};
	commit(g1, 2);
	free_items(g1, 2);
	const uint64_t end = 5000, batches = MAX_DROP_LINKS / WIRE_MAX_DROPPED + 2;
	struct wire_dropped d[WIRE_MAX_DROPPED];
	for (uint64_t b = 0; b < batches; b++) {
		for (uint64_t k = 0; k < WIRE_MAX_DROPPED; k++) {
			uint64_t prev = 3 + b * WIRE_MAX_DROPPED + k;
			d[k] = (struct wire_dropped){prev, end, end - prev};
		}
		commit_one(batch_drop("dev-a", end + 1 + b, end + b, d, WIRE_MAX_DROPPED));
	}
	cr_assert_gt(one("SELECT COUNT(*) FROM gaps WHERE reason = 'dropped' AND last_seq = 5000"),
	             MAX_DROP_LINKS);
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"), 2);
	d[0] = (struct wire_dropped){2, end, end - 2};
	commit_one(batch_drop("dev-a", end + 1 + batches, end + batches, d, 1));
	cr_expect_eq(one("SELECT frontier FROM devices WHERE device_id = 'dev-a'"),
	             (int64_t)(end + 1 + batches));
	cr_expect_eq(ack_of("dev-a")->seq, end + 1 + batches);
	cr_expect_str_eq(open_gaps(), "", "%s", open_gaps());
}

/* The writer's reads of a device's gaps, in every group of that device, use indexes that leave
 * its past gaps aside (SQLite's plans; PostgreSQL has the same indexes): dropped ranges by where
 * they end, holes among the open ones. Before, each walked every gap row the device ever had. */
Test(brg_commit, gap_reads_do_not_walk_a_device_s_history)
{
	const struct {
		int stmt;
		const char *index;
	} want[] = {{S_DROPS, "gaps_dropped"},         {S_GAP_FILL, "gaps_open"},
	            {S_GAP_FILL_DROPPED, "gaps_open"}, {S_GAP_LOSE, "gaps_open"},
	            {S_GAP_SHRINK, "gaps_open"},       {S_GAP_IN_LOST, "prev_seq<?"}};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		char *sql = h_strf("EXPLAIN QUERY PLAN %s", brg_commit__sql[want[i].stmt]);
		struct store_stmt *st = NULL;
		cr_assert_eq(store_prepare(s, sql, &st), STORE_OK, "%s: %s", sql, store_errmsg(s));
		char plan[1024] = "";
		while (store_step(st) == 1) {
			const char *d = store_col_text(st, 3);
			snprintf(plan + strlen(plan), sizeof(plan) - strlen(plan), "%s\n", d ? d : "");
		}
		store_stmt_free(st);
		cr_expect(strstr(plan, want[i].index), "%s\nplan:\n%s", sql, plan);
		/* S_GAP_IN_LOST: one step back from the seq, newest first (LIMIT 1) */
		if (want[i].stmt == S_GAP_IN_LOST)
			cr_expect(strstr(brg_commit__sql[want[i].stmt], "DESC LIMIT 1"), "%s", sql);
		free(sql);
	}
}

/* A hole that the device then reports dropped (its spool overflowed before it could resend) is
 * not "filled": the missing gap is resolved as dropped, next to the dropped gap's own row. */
TEST_BOTH(a_missing_gap_then_reported_dropped_is_resolved_dropped)
{
	struct brg_item *g1[] = {birth("dev-a", 1), batch("dev-a", "dev-a", 2, 0),
	                         batch("dev-a", "dev-a", 6, 4)};
	commit(g1, 3);
	free_items(g1, 3);
	cr_assert_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND resolved_at IS NULL"),
	             1);
	struct wire_dropped d = {2, 4, 1};
	commit_one(batch_drop("dev-a", 8, 6, &d, 1));
	cr_expect_eq(ack_of("dev-a")->seq, 8);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND resolution ="
	                 " 'dropped' AND resolved_at IS NOT NULL"),
	             1);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'dropped' AND prev_seq = 2 AND"
	                 " last_seq = 4"),
	             1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'gap_filled'"), 0,
	             "nothing arrived");
	/* a later hole that does fill is still "filled" */
	commit_one(batch("dev-a", "dev-a", 12, 10));
	commit_one(batch("dev-a", "dev-a", 10, 8));
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE resolution = 'filled' AND prev_seq = 8"), 1);
	/* a hole of which part arrives and part is reported dropped is "filled": 13 arrived, and
	 * the dropped 14 has its own row */
	commit_one(batch("dev-a", "dev-a", 16, 14));
	cr_assert_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND prev_seq = 12 AND"
	                 " last_seq = 14 AND resolved_at IS NULL"),
	             1);
	struct wire_dropped top = {13, 14, 1};
	commit_one(batch_drop("dev-a", 18, 16, &top, 1));
	commit_one(batch("dev-a", "dev-a", 13, 12));
	cr_expect_eq(ack_of("dev-a")->seq, 18);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND prev_seq = 12 AND"
	                 " resolution = 'filled'"),
	             1, "13 arrived: not all of it was dropped");
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE reason = 'dropped' AND prev_seq = 13"), 1);
}

/* An active device marked online, last seen at seen_ms, sampling every minute. */
static void online_device(const char *id, int64_t seen_ms)
{
	char *sql = h_strf("INSERT INTO devices (device_id, state, created_at, state_changed_at, online,"
	                   " last_seen_at, sample_interval_s) VALUES ('%s', 'active', %lld, %lld, 1,"
	                   " %lld, 60)",
	                   id, (long long)seen_ms, (long long)seen_ms, (long long)seen_ms);
	cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
	free(sql);
}

/* One run of the writer's periodic jobs (the health sweep among them). */
static void sweep(void)
{
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_maintain(com, store_now_ms(), &out), STORE_OK, "%s", store_errmsg(s));
}

/* The offline limit is offline_factor (3) x the larger of the device's sample and batch
 * intervals, at least offline_min (30 s): a device sampling every 10 s and sending a batch a
 * minute (the defaults) is heard from once a minute, so 100 s of silence is not offline;
 * one whose Birth said no batch interval (0: an agent before Birth.batch_interval_s) is
 * judged by its sample interval, as before. */
TEST_BOTH(the_offline_limit_is_3_x_the_larger_of_sample_and_batch_intervals)
{
	int64_t now = store_now_ms();
	const struct {
		const char *id;
		int sample, batch, silent_s, offline;
		const char *limit;
	} dev[] = {
	    {"between-batches", 10, 60, 100, 0, NULL},   {"silent", 10, 60, 200, 1, "180s"},
	    {"old-agent", 10, 0, 100, 1, "30s"},         {"batch-below", 20, 5, 50, 0, NULL},
	    {"batch-below-silent", 20, 5, 70, 1, "60s"},
	};
	for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) {
		online_device(dev[i].id, now - dev[i].silent_s * 1000LL);
		char *sql =
		    h_strf("UPDATE devices SET sample_interval_s = %d, batch_interval_s = %d"
		           " WHERE device_id = '%s'",
		           dev[i].sample, dev[i].batch, dev[i].id);
		cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
		free(sql);
	}
	sweep();
	for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) {
		char *sql = h_strf("SELECT online FROM devices WHERE device_id = '%s'", dev[i].id);
		cr_expect_eq(one(sql), !dev[i].offline, "%s", dev[i].id);
		free(sql);
		if (!dev[i].limit)
			continue;
		sql = h_strf("SELECT COUNT(*) FROM events e JOIN devices d ON d.id = e.device WHERE"
		             " d.device_id = '%s' AND e.type = 'offline' AND e.detail LIKE"
		             " '%%(limit %s)'",
		             dev[i].id, dev[i].limit);
		cr_expect_eq(one(sql), 1, "%s", sql);
		free(sql);
	}
}

/* With more than 100,000 devices online (the most a sweep reads), a silent one further down the
 * table is still found: the store filters the silent ones, not the sweep after reading. */
Test(brg_commit, offline_sweep_reaches_past_100000_online_devices, .timeout = 120)
{
	int64_t now = store_now_ms();
	char *sql = h_strf(
	    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)"
	    " INSERT INTO devices (device_id, state, created_at, state_changed_at, online,"
	    " last_seen_at, sample_interval_s) SELECT 'd' || i, 'active', %lld, %lld, 1, %lld, 60"
	    " FROM n",
	    (long long)now, (long long)now, (long long)now);
	cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
	free(sql);
	online_device("silent", now - 86400000);
	for (int k = 0; k < 3; k++)
		sweep();
	cr_expect_eq(one("SELECT online FROM devices WHERE device_id = 'silent'"), 0,
	             "silent for a day, still online after 3 sweeps");
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'offline' AND"
	                 " detail LIKE '%(limit 180s)'"),
	             1, "3 x its 60 s interval");
}

/* Two bridges on one store (BRIDGE.md "Running several bridges"): the broker spreads one
 * device's messages over both. Bridge A caches the device's wire id -> metric map; the device's
 * catalog grows (a new metric: the agent sends a new Birth), the Birth lands at bridge B, the
 * next batches at A: A must not file the new metric's readings under a placeholder "#3" (with
 * a false metric_unnamed event) from its stale map, although the store names it m3. */
Test(brg_commit, a_birth_at_another_bridge_renews_the_metric_map)
{
	struct brg_committer *other = NULL; /* bridge B: its own connection and cache */
	struct store *s2 = open_store();
	struct brg_commit_opts o = BRG_COMMIT_OPTS_INIT;
	o.gap_grace_ms = 0;
	cr_assert_eq(brg_committer_new(s2, &o, &other), STORE_OK);

	commit_one(birth_with("dev-a", 1, 2, 0));
	so.cols = 2;
	commit_one(batch("dev-a", "dev-a", 2, 0)); /* A caches {1: m1, 2: m2} */

	struct brg_item *b = birth_with("dev-a", 3, 3, 0); /* m3 = wire id 3, at bridge B */
	struct brg_outcome o2 = {0};
	cr_assert_eq(brg_commit_group(other, &b, 1, store_now_ms(), &o2), STORE_OK);
	brg_item_free(b);
	brg_outcome_free(&o2);
	so.cols = 3;
	commit_one(batch("dev-a", "dev-a", 4, 2)); /* at bridge A again */
	so.cols = 2;
	int64_t m3 = one("SELECT COUNT(*) FROM readings r JOIN metrics m ON m.id = r.metric WHERE"
	                 " r.seq = 4 AND m.name = 'm3'");
	int64_t ph = one("SELECT COUNT(*) FROM readings r JOIN metrics m ON m.id = r.metric WHERE"
	                 " r.seq = 4 AND m.name = '#3'");
	cr_expect_eq(ph, 0, "readings of m3 filed under a placeholder metric '#3'");
	cr_expect_eq(m3, 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'metric_unnamed'"), 0);
	brg_committer_free(other);
	store_close(s2);
}

/* Readings of batch seq stored under metric `name` (test text, quoted as is). */
static int64_t readings_under(uint64_t seq, const char *name)
{
	char *sql = h_strf("SELECT COUNT(*) FROM readings r JOIN metrics m ON m.id = r.metric"
	                   " WHERE r.seq = %llu AND m.name = '%s'",
	                   (unsigned long long)seq, name);
	int64_t v = one(sql);
	free(sql);
	return v;
}

static struct brg_item *birth_named(const char *id, uint64_t seq, int ncols, const char *prefix)
{
	size_t blen;
	uint8_t *body = h_birth_body_named(h_pki(), id, ncols, 0, prefix, &blen);
	return sealed(id, id, WIRE_KIND_BIRTH, "birth", seq, body, blen);
}

/* A device keeps at most max_device_metrics metric names (BRIDGE.md "Tables"): one that
 * renames its metrics in every Birth cannot grow the store without bound. At the limit, names
 * it has take their new ids; a new name is not stored, its id maps to the placeholder #<id>
 * (nothing is lost, no metric_unnamed), and an event says which name went where. */
TEST_BOTH(a_device_keeps_at_most_max_device_metrics_names)
{
	struct brg_commit_opts o = BRG_COMMIT_OPTS_INIT;
	o.gap_grace_ms = 0;
	o.max_device_metrics = 10;
	brg_committer_free(com);
	cr_assert_eq(brg_committer_new(s, &o, &com), STORE_OK);
	so.cols = 2;
	commit_one(birth_named("dev-a", 1, 9, "a")); /* a1..a9 */
	commit_one(birth_named("dev-a", 2, 6, "b")); /* b1..b6: b1 is the 10th name */
	cr_expect_eq(one("SELECT COUNT(*) FROM metrics WHERE name NOT LIKE '#%'"), 10);
	cr_expect_eq(one("SELECT COUNT(*) FROM metrics WHERE wire_id IS NOT NULL AND name ="
	                 " '#' || wire_id"),
	             5, "b2..b6's ids map to their placeholders");
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'metric_limit' AND detail ="
	                 " 'Birth seq 2: 5 metric names not stored (b2 as #2, b3 as #3, b4 as #4,"
	                 " b5 as #5, b6 as #6): the device has 10 names, limit 10'"),
	             1);
	commit_one(batch("dev-a", "dev-a", 3, 0)); /* metric ids 1 and 2 */
	cr_expect_eq(readings_under(3, "b1"), 2);
	cr_expect_eq(readings_under(3, "#2"), 2, "the readings of b2 are lost");
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'metric_unnamed'"), 0);

	commit_one(birth_named("dev-a", 4, 2, "a")); /* names it has: a1, a2 */
	commit_one(batch("dev-a", "dev-a", 5, 3));
	cr_expect_eq(readings_under(5, "a1"), 2);
	cr_expect_eq(readings_under(5, "a2"), 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM metrics"), 15); /* and the 5 placeholders */
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'metric_limit'"), 1);

	cr_expect_eq(one("SELECT COUNT(*) FROM readings"), 8);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'metric_unnamed'"), 0);
}

/* Rounds of one batch per device (3 metrics each, 2 of them in the batches), from seq
 * first on; the writer's metric cache stays within max_devices devices and max_entries
 * entries, plus the one device loaded last. */
static void cache_rounds(const char *const *ids, size_t n, uint64_t first, size_t max_entries)
{
	for (uint64_t seq = first; seq < first + 4; seq++) {
		struct brg_item *g[3];
		for (size_t i = 0; i < n; i++)
			g[i] = batch(ids[i], ids[i], seq, seq - 1);
		commit(g, n);
		free_items(g, n);
		cr_expect_leq(com->mc_devices, com->mc_max_devices);
		cr_expect_leq(com->mc_entries, max_entries - 1 + 3, "%zu entries cached",
		              com->mc_entries);
	}
}

/* The writer's cache of each device's metric ids is bounded in devices and in entries (a
 * device may have up to 4096 metrics): when either bound is reached it starts over, and every
 * reading still goes to its own device's metric. */
Test(brg_commit, the_metric_cache_is_bounded_and_starts_over_correctly)
{
	const char *const ids[] = {"dev-a", "dev-b", "dev-c"};
	for (size_t i = 0; i < 3; i++) {
		char prefix[2] = {(char)('a' + i), '\0'};
		commit_one(birth_named(ids[i], 1, 3, prefix));
	}
	com->mc_max_devices = 2;
	cache_rounds(ids, 3, 2, com->mc_max_entries);
	com->mc_max_devices = 100;
	com->mc_max_entries = 5;
	cache_rounds(ids, 3, 6, com->mc_max_entries);
	cr_expect_eq(one("SELECT COUNT(*) FROM readings"), 8 * 3 * 4);
	cr_expect_eq(one("SELECT COUNT(*) FROM readings r JOIN metrics m ON m.id = r.metric"
	                 " JOIN devices d ON d.id = r.device WHERE m.device = r.device AND"
	                 " substr(m.name, 1, 1) = substr(d.device_id, 5, 1)"),
	             8 * 3 * 4, "readings filed under another device's metric");
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'metric_unnamed'"), 0);
}

/* Far from the limit a Birth takes the one-statement path; a name twice in it is one row. */
TEST_BOTH(a_birth_far_from_the_metric_limit_names_everything)
{
	commit_one(birth_named("dev-a", 1, 300, "m"));
	commit_one(birth_named("dev-a", 2, 300, "m"));
	cr_expect_eq(one("SELECT COUNT(*) FROM metrics"), 300);
	cr_expect_eq(one("SELECT COUNT(*) FROM metrics WHERE wire_id IS NOT NULL"), 300);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'metric_limit'"), 0);
}

/* A Birth signed more than 5 minutes after the bridge's time: the device's clock runs ahead
 * (its readings will be dated in the future), an event says so. Behind is not reported: a Birth
 * that waited at the broker looks the same. (Test envelopes are signed at 2023-11-14.) */
Test(brg_commit, a_birth_signed_ahead_of_the_bridges_clock_is_reported)
{
	const int64_t signed_at = 1700000000000LL;
	commit_one(birth("dev-a", 1)); /* signed three years "behind": not reported */
	struct brg_item *b = birth("dev-a", 2);
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_group(com, &b, 1, signed_at - 4 * 60 * 1000, &out), STORE_OK);
	brg_item_free(b);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'clock_ahead'"), 0,
	             "4 minutes ahead is within the tolerance");
	b = birth("dev-a", 3);
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_group(com, &b, 1, signed_at - 3600 * 1000, &out), STORE_OK);
	brg_item_free(b);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'clock_ahead' AND detail ="
	                 " 'device clock 3600 s ahead of the bridge''s (Birth seq 3)'"),
	             1);
	cr_expect_eq(one("SELECT last_birth_seq FROM devices WHERE device_id = 'dev-a'"), 3,
	             "the Birth is taken all the same");
}

/* A task argument that is not UTF-8 (typed on a Latin-1 terminal) is refused when added: the
 * device would refuse its TaskList, and every task behind it would be stuck as delivered. */
Test(brg_commit, a_task_argument_that_is_not_utf8_is_refused)
{
	commit_one(birth("dev-a", 1));
	struct store_kv kv = {"log_level", "d\xe9" "bug"};
	int64_t task = 0;
	cr_expect_eq(store_task_add(s, "dev-a", "set_config", &kv, 1, store_now_ms() + 3600000, "t",
	                            &task),
	             STORE_EINVAL);
	kv.value = "d\xc3\xa9" "bug";
	cr_expect_eq(store_task_add(s, "dev-a", "set_config", &kv, 1, store_now_ms() + 3600000, "t",
	                            &task),
	             STORE_OK, "valid UTF-8 is accepted");
}


/* A TaskResult whose message is valid UTF-8 with a 2-byte character at bytes 200-201: the
 * bridge's event detail ("%.200s") cuts it in the middle of the character, PostgreSQL refuses
 * the invalid UTF-8 (22021, mapped to a non-transient "statement failed"), the whole group
 * fails; in the bridge it is retried 3 times, split, and the result dropped unacknowledged -
 * on every resend, forever: the device's chain never passes that seq. */
Test(brg_commit_pg, a_message_cut_mid_character_in_an_event_is_stored)
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

/* An operator's reason that fills the 255 bytes of a state change, in two-byte characters: the
 * bridge reads it back with the device's row and writes it again at the device's next message.
 * Cut mid-character, PostgreSQL refused every later message of that device, forever. Today
 * store_device_action takes at most STORE_REASON_MAX bytes, which fit whole; a store written by
 * an older outpostctl can hold the long one, set here directly. */
Test(brg_commit_pg, a_long_operator_reason_does_not_block_the_device)
{
	commit_one(birth("dev-a", 1));
	cr_assert_eq(store_device_action(s, "dev-a", "quarantine", "outpostctl", NULL, NULL),
	             STORE_OK, "%s", store_errmsg(s));
	char reason[256] = "a";
	for (int i = 0; i < 120; i++)
		strcat(reason, "\xc3\xa9");
	cr_expect_eq(store_device_action(s, "dev-a", "release", "outpostctl", reason, NULL),
	             STORE_EINVAL, "over STORE_REASON_MAX: refused, never cut");
	char *sql = h_strf("UPDATE devices SET state_reason = 'active -> active by an older"
	                   " outpostctl: %s' WHERE device_id = 'dev-a'", reason);
	reason[STORE_REASON_MAX - 1] = '\0'; /* "a" and 99 two-byte characters */
	cr_assert_eq(store_device_action(s, "dev-a", "release", "outpostctl", reason, NULL),
	             STORE_OK, "%s", store_errmsg(s));
	cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
	free(sql);
	cr_assert_gt(one("SELECT octet_length(state_reason) FROM devices WHERE device_id = 'dev-a'"),
	             STORE_STATE_REASON_MAX);
	struct brg_item *it = batch("dev-a", "dev-a", 2, 0);
	brg_outcome_clear(&out);
	cr_expect_eq(brg_commit_group(com, &it, 1, store_now_ms(), &out), STORE_OK, "%s",
	             store_errmsg(s));
	brg_item_free(it);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 2"), 1);
}

/* A message that is not UTF-8 at all: refused when decoded, and the rejection is stored. */
Test(brg_commit_pg, a_message_that_is_not_utf8_is_rejected_not_stored)
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
Test(brg_commit_pg, a_rejection_quoting_text_cut_mid_character_is_stored)
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
Test(brg_commit_pg, the_offline_sweep_runs_on_postgresql)
{
	int64_t now = store_now_ms();
	online_device("silent", now - 86400000);
	online_device("alive", now);
	sweep();
	cr_expect_eq(one("SELECT online FROM devices WHERE device_id = 'silent'"), 0,
	             "silent for a day, still online");
	cr_expect_eq(one("SELECT online FROM devices WHERE device_id = 'alive'"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'offline' AND"
	                 " detail LIKE '%(limit 180s)'"),
	             1, "3 x its 60 s interval");
}

/* Wait (at most 10 s) until a session of the cluster waits for a lock: the thread under test
 * has reached the row another transaction holds. (On a connection of its own: the thread may
 * be using s.) */
static void wait_for_a_lock_wait(void)
{
	struct store *watch = open_store();
	int64_t n = 0;
	for (int i = 0; i < 1000 && n < 1; i++) {
		h_sleep_ms(10);
		cr_assert_eq(store_query_i64(watch, &n,
		                             "SELECT COUNT(*) FROM pg_stat_activity WHERE"
		                             " wait_event_type = 'Lock'",
		                             0),
		             STORE_OK);
	}
	store_close(watch);
	cr_assert_eq(n, 1, "no session waits for a row lock");
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
Test(brg_commit_pg, task_adds_for_one_device_take_turns)
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
	wait_for_a_lock_wait();
	cr_expect_not(a.done, "the add did not wait for the device's row");
	cr_assert_eq(store_commit(other), STORE_OK);
	pthread_join(t, NULL);
	cr_expect_eq(a.rc, STORE_OK);
	store_close(a.s);
	store_close(other);
}

struct canceller {
	struct store *s;
	int64_t task;
	char state[16];
	int rc;
	volatile int done;
};

static void *cancel_task(void *arg)
{
	struct canceller *c = arg;
	c->rc = store_task_cancel(c->s, c->task, "t", c->state);
	c->done = 1;
	return NULL;
}

/* An operator cancels a task while a bridge answers the device's poll (holding the device's
 * row, about to mark the task delivered): the cancel waits for the device's row, then finds
 * the task delivered and says so. Taking the task's row first would deadlock: the cancel's
 * event references the device, whose row the poll holds, and the poll waits for the task. */
Test(brg_commit_pg, a_cancel_during_a_poll_waits_for_the_device_and_finds_the_task_delivered)
{
	commit_one(birth("dev-a", 1));
	struct canceller c = {open_store(), 0, "", -1, 0};
	cr_assert_eq(store_task_add(s, "dev-a", "ping", NULL, 0, store_now_ms() + 3600000, "t", &c.task),
	             STORE_OK);
	struct store *poll = open_store(); /* what the poll's group does, step by step */
	cr_assert_eq(store_begin(poll), STORE_OK);
	int64_t locked = 0;
	cr_assert_eq(store_query_i64(poll, &locked,
	                             "SELECT id FROM devices WHERE device_id = 'dev-a' FOR UPDATE", 0),
	             STORE_OK);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, cancel_task, &c), 0);
	wait_for_a_lock_wait();
	cr_expect_not(c.done, "the cancel did not wait for the device's row");
	int64_t args[] = {store_now_ms(), c.task}, n = 0;
	cr_assert_eq(store_exec_i64(poll,
	                            "UPDATE tasks SET state = 'delivered', delivered_at = ? WHERE id = ?",
	                            args, 2, &n),
	             STORE_OK, "%s", store_errmsg(poll));
	cr_assert_eq(n, 1);
	cr_assert_eq(store_commit(poll), STORE_OK, "%s", store_errmsg(poll));
	pthread_join(t, NULL);
	cr_expect_eq(c.rc, STORE_ESTATE, "%s", store_errmsg(c.s));
	cr_expect_str_eq(c.state, "delivered");
	cr_expect_eq(one("SELECT COUNT(*) FROM tasks WHERE state = 'delivered'"), 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'task_cancelled'"), 0);
	store_close(c.s);
	store_close(poll);
}

/* A poll of device id, which has seen task ids up to last_seen. */
static struct brg_item *poll_seen(const char *id, uint64_t seq, uint64_t last_seen)
{
	size_t n, blen;
	Outpost__TaskPoll p = OUTPOST__TASK_POLL__INIT;
	uint8_t *body = NULL;
	p.last_task_id = last_seen;
	cr_assert_eq(wire_msg_pack(WIRE_KIND_TASK_POLL, &p.base, &body, &blen, NULL), WIRE_OK);
	char *name = h_strf("devices/%s", id), *topic = h_strf("outpost/v1/%s/tasks/poll", id);
	char *resp = h_strf("outpost/v1/%s/tasks", id);
	uint8_t *env = h_seal(h_pki(), name, WIRE_KIND_TASK_POLL, id, seq, body, blen, &n);
	struct brg_item *it = judge(topic, env, n, resp);
	cr_assert_eq(it->kind, BRG_ITEM_POLL, "%s", it->detail);
	free(body);
	free(name);
	free(topic);
	free(resp);
	return it;
}

static struct brg_item *poll_item(const char *id, uint64_t seq)
{
	return poll_seen(id, seq, 0);
}

struct poller {
	struct brg_item *it;
	int rc;
};

/* A Birth or poll seen again (the broker redelivering it) is a duplicate: the device's own
 * message, which resets its count toward quarantine like any accepted one (BRIDGE.md). */
Test(brg_commit, a_duplicate_poll_resets_the_count_toward_quarantine)
{
	commit_one(birth("dev-c", 1));
	commit_one(poll_item("dev-c", 2));
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 4; i++)
			commit_one(judge("outpost/v1/dev-c/telemetry", (uint8_t *)strdup("garbage!"),
			                 8, NULL));
		commit_one(poll_item("dev-c", 2)); /* redelivered */
	}
	commit_one(judge("outpost/v1/dev-c/telemetry", (uint8_t *)strdup("garbage!"), 8, NULL));
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'decode'"), 9);
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-c' AND state ="
	                 " 'quarantined'"),
	             0, "9 rejections, never 5 in a row");
}

static void *commit_poll(void *arg)
{
	struct poller *p = arg;
	brg_outcome_clear(&out);
	p->rc = brg_commit_group(com, &p->it, 1, store_now_ms(), &out);
	return NULL;
}

/* Another bridge's sweep expires a task while this bridge answers a poll that read it as
 * queued: the task stays expired and is not sent (PostgreSQL re-checks only the UPDATE's own
 * condition once the sweep's row lock is released). */
Test(brg_commit_pg, a_task_expired_by_another_bridge_during_a_poll_stays_expired)
{
	commit_one(birth("dev-a", 1));
	int64_t task = 0;
	cr_assert_eq(store_task_add(s, "dev-a", "ping", NULL, 0, store_now_ms() + 3600000, "t", &task),
	             STORE_OK);
	struct store *other = open_store();
	int64_t args[] = {store_now_ms(), task}, n = 0;
	cr_assert_eq(store_begin(other), STORE_OK);
	cr_assert_eq(store_exec_i64(other,
	                            "UPDATE tasks SET state = 'expired', finished_at = ? WHERE id = ?"
	                            " AND state IN ('queued', 'delivered')",
	                            args, 2, &n),
	             STORE_OK);
	cr_assert_eq(n, 1);
	struct poller p = {poll_item("dev-a", 2), -1};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, commit_poll, &p), 0);
	wait_for_a_lock_wait();
	cr_assert_eq(store_commit(other), STORE_OK);
	pthread_join(t, NULL);
	cr_expect_eq(p.rc, STORE_OK, "%s", store_errmsg(s));
	brg_item_free(p.it);
	store_close(other);
	char *q = h_strf("SELECT COUNT(*) FROM tasks WHERE id = %lld AND state = 'expired'",
	                 (long long)task);
	cr_expect_eq(one(q), 1, "the poll delivered an expired task");
	free(q);
	size_t sent = 0;
	for (size_t i = 0; i < out.n_replies; i++)
		if (out.replies[i].kind == BRG_REPLY_TASKS)
			sent += out.replies[i].n_tasks;
	cr_expect_eq(sent, 0, "the expired task was sent");
}

/* A store restored from a backup hands out task ids the device has seen already: such a task,
 * still queued (never delivered) with an id at or below the poll's last_task_id, would be
 * skipped by the device without a word and wait for its expiry. It fails at once, saying
 * why; the tasks above go out as usual. */
TEST_BOTH(a_queued_task_the_device_has_seen_the_id_of_fails_at_once)
{
	commit_one(birth("dev-a", 1));
	int64_t a = 0, b = 0, until = store_now_ms() + 3600000;
	cr_assert_eq(store_task_add(s, "dev-a", "ping", NULL, 0, until, "t", &a), STORE_OK);
	cr_assert_eq(store_task_add(s, "dev-a", "ping", NULL, 0, until, "t", &b), STORE_OK);
	commit_one(poll_seen("dev-a", 2, (uint64_t)a));
	char *q = h_strf("SELECT COUNT(*) FROM tasks WHERE id = %lld AND state = 'failed' AND"
	                 " result_message LIKE 'not run: the device has seen task ids up to %lld%%'",
	                 (long long)a, (long long)a);
	cr_expect_eq(one(q), 1, "the task the device cannot tell from one it handled");
	free(q);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'task_failed'"), 1);
	size_t sent = 0;
	for (size_t i = 0; i < out.n_replies; i++)
		if (out.replies[i].kind == BRG_REPLY_TASKS) {
			sent += out.replies[i].n_tasks;
			cr_expect_eq(out.replies[i].tasks[0].id, (uint64_t)b);
		}
	cr_expect_eq(sent, 1);
}

/* One bridge's group, committed on its own thread once both are ready. */
struct bridge_run {
	struct brg_committer *com;
	struct brg_item *items[24];
	size_t n;
	struct brg_outcome out;
	pthread_barrier_t *go;
	int rc;
};

static void *run_group(void *arg)
{
	struct bridge_run *r = arg;
	pthread_barrier_wait(r->go);
	r->rc = brg_commit_group(r->com, r->items, r->n, store_now_ms(), &r->out);
	return NULL;
}

/* Batches first..last of id, chained from seq 2 on (1 is the Birth), appended to r. */
static void add_chain(struct bridge_run *r, const char *id, uint64_t first, uint64_t last)
{
	for (uint64_t q = first; q <= last; q++)
		r->items[r->n++] = batch(id, id, q, q > 2 ? q - 1 : 0);
}

/* Two bridges (two committers on two connections) commit at once groups that hold the same
 * envelopes of two devices, listing the devices in opposite orders: a device's resend reaching
 * the other bridge. The bulk envelope path looks up which keys are stored and then COPYs the
 * rest (brg_envrows.c); that is sound only because every envelope insert holds its device's
 * row. Without the lock a group fails on the primary key; locking the devices in another
 * order than by id deadlocks. Every group must commit, and each envelope be stored once. */
Test(brg_commit_pg, two_bridges_committing_the_same_envelopes_at_once_store_each_once,
     .timeout = 120)
{
	commit_one(birth("dev-a", 1));
	commit_one(birth("dev-b", 1));
	struct store *s2 = open_store();
	struct brg_committer *com2 = NULL;
	struct brg_commit_opts o = BRG_COMMIT_OPTS_INIT;
	o.gap_grace_ms = 0;
	o.env_bulk_min = 1;
	cr_assert_eq(brg_committer_new(s2, &o, &com2), STORE_OK);
	pthread_barrier_t go;
	cr_assert_eq(pthread_barrier_init(&go, NULL, 2), 0);
	enum { ROUNDS = 12, SPAN = 9, OVERLAP = 3 };
	uint64_t stored = 0, dups = 0, next = 2;
	for (int round = 0; round < ROUNDS; round++, next += SPAN) {
		struct bridge_run r[2] = {{.com = com, .go = &go}, {.com = com2, .go = &go}};
		/* bridge 0: next..next+5 of a, then of b; bridge 1: next+3..next+8 of b, then a */
		uint64_t last0 = next + 5, first1 = last0 - OVERLAP + 1, end = next + SPAN - 1;
		add_chain(&r[0], "dev-a", next, last0);
		add_chain(&r[0], "dev-b", next, last0);
		add_chain(&r[1], "dev-b", first1, end);
		add_chain(&r[1], "dev-a", first1, end);
		pthread_t t[2];
		for (int i = 0; i < 2; i++)
			cr_assert_eq(pthread_create(&t[i], NULL, run_group, &r[i]), 0);
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		for (int i = 0; i < 2; i++) {
			cr_assert_eq(r[i].rc, STORE_OK, "round %d, bridge %d: %d %s", round, i, r[i].rc,
			             store_errmsg(i ? s2 : s));
			stored += r[i].out.envelopes;
			dups += r[i].out.duplicates;
			put_states(&r[i].out);
			free_items(r[i].items, r[i].n);
			brg_outcome_free(&r[i].out);
		}
	}
	pthread_barrier_destroy(&go);
	brg_committer_free(com2);
	store_close(s2);
	cr_expect_eq(stored, 2 * SPAN * ROUNDS, "envelopes stored by the two bridges");
	cr_expect_eq(dups, 2 * OVERLAP * ROUNDS, "the envelopes both had are duplicates once");
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes"), 2 * SPAN * ROUNDS);
	cr_expect_eq(one("SELECT COUNT(*) FROM readings"), 2 * SPAN * ROUNDS * 4);
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections"), 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM gaps WHERE resolved_at IS NULL"), 0,
	             "a chain left open");
	cr_expect_eq(one("SELECT SUM(envelopes) FROM devices"), 2 * SPAN * ROUNDS);
}

/* A device sends its Birth and then a poll, back to back; bridges sharing its messages may
 * commit the poll first. The Birth is still fresh: it need only be newer than every Birth. */
Test(brg_commit, a_birth_overtaken_by_the_poll_behind_it_is_accepted)
{
	commit_one(birth("dev-a", 10));
	commit_one(poll_item("dev-a", 21));
	commit_one(birth("dev-a", 20));
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections"), 0, "the Birth was refused");
	cr_expect_eq(one("SELECT last_birth_seq FROM devices WHERE device_id = 'dev-a'"), 20);
	cr_expect_eq(one("SELECT last_nd_seq FROM devices WHERE device_id = 'dev-a'"), 21);
	/* the broker redelivering it: a duplicate */
	commit_one(birth("dev-a", 20));
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections"), 0);
	/* older than the last Birth, or a poll older than the last Birth or poll: replayed */
	commit_one(birth("dev-a", 15));
	commit_one(poll_item("dev-a", 19));
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'replayed'"), 2);
	cr_expect_eq(one("SELECT last_birth_seq FROM devices WHERE device_id = 'dev-a'"), 20);
}

/* Ask the store what became of an unanswered COMMIT (bounded); 1, 0 or the last error. */
static int resolve_commit(void)
{
	int r = STORE_EBUSY;
	for (int i = 0; i < 100 && r < 0 && store_err_transient(r); i++)
		if ((r = store_commit_resolve(s)) < 0 && store_err_transient(r))
			h_sleep_ms(100);
	return r;
}

/* A group with a stored batch and a forged one, committed with the COMMIT's answer lost:
 * the outcome waits for the database to say what happened, and the rejection is counted once
 * whether the transaction committed (outcome kept) or not (unwound, retried). */
Test(brg_commit_pg_cut, an_unanswered_commit_is_settled_not_applied_twice, .timeout = 120)
{
	commit_one(birth("dev-a", 1));
	struct brg_item *g[] = {batch("dev-a", "dev-a", 2, 0), batch("dev-b", "dev-a", 3, 2)};
	cr_assert_str_eq(g[1]->reason, "bad_signature");

	/* Stored, answer lost: settled as committed, the ack is kept for publishing. */
	h_relay_cut_on(relay, "COMMIT", false, 300);
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_group(com, g, 2, store_now_ms(), &out), STORE_EUNKNOWN, "%s",
	             store_errmsg(s));
	cr_assert_eq(resolve_commit(), 1, "%s", store_errmsg(s));
	brg_commit_settle(com, 1, &out);
	const struct brg_reply *a = ack_of("dev-a");
	cr_assert_not_null(a, "the committed group's ack was thrown away");
	cr_expect_eq(a->seq, 2);
	cr_expect_eq(out.envelopes, 1);
	cr_expect_eq(out.rejected, 1);
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'bad_signature'"), 1);
	cr_expect_eq(one("SELECT rejected FROM devices WHERE device_id = 'dev-a'"), 1);

	/* Never reached the server: settled as not committed, out as before, the retry counts
	 * the rejection (once). */
	struct brg_item *g2[] = {batch("dev-a", "dev-a", 4, 2), batch("dev-b", "dev-a", 5, 4)};
	h_relay_cut_on(relay, "COMMIT", true, 0);
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_group(com, g2, 2, store_now_ms(), &out), STORE_EUNKNOWN, "%s",
	             store_errmsg(s));
	cr_assert_eq(resolve_commit(), 0, "%s", store_errmsg(s));
	brg_commit_settle(com, 0, &out);
	cr_expect_eq(out.n_replies, 0, "an outcome of a group that was not stored");
	cr_expect_eq(out.envelopes, 0);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 4"), 0);
	commit(g2, 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 4"), 1);
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'bad_signature'"), 2);
	free_items(g, 2);
	free_items(g2, 2);
}

/* The connection vanished silently while COMMIT was on its way (a cut cable: no FIN reaches
 * the server): the server's process still holds the transaction open, and would for hours
 * (until its TCP keepalive gives up). The writer ends that process, so the outcome is known
 * at once (aborted) and the group is retried, stored once. */
Test(brg_commit_pg_cut, a_commit_lost_with_its_connection_is_settled_at_once, .timeout = 120)
{
	commit_one(birth("dev-a", 1));
	struct brg_item *g[] = {batch("dev-a", "dev-a", 2, 0)};
	h_relay_strand_on(relay, "COMMIT");
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_group(com, g, 1, store_now_ms(), &out), STORE_EUNKNOWN, "%s",
	             store_errmsg(s));
	cr_assert(h_relay_cut_done(relay));
	cr_assert_eq(resolve_commit(), 0, "%s", store_errmsg(s));
	brg_commit_settle(com, 0, &out);
	cr_expect_eq(one("SELECT COUNT(*) FROM pg_stat_activity WHERE state LIKE 'idle in"
	                 " transaction%'"),
	             0);
	commit(g, 1);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 2"), 1);
	cr_expect_not_null(ack_of("dev-a"));
	free_items(g, 1);
}

/* id's Birth at seq with the key in pki (a certificate of the same CA), judged and committed
 * by bridge B of the share group, with its own connections, registry and verifier: this
 * bridge's registry hears nothing of it. */
static void birth_at_bridge_b(const char *pki, const char *id, uint64_t seq)
{
	struct store *s2 = open_store();
	struct brg_registry *reg2 = NULL;
	cr_assert_eq(brg_registry_new(open_store(), 100, &reg2), BRG_OK);
	struct brg_verifier *ver2 = verifier_on(reg2);
	struct brg_committer *com2 = NULL;
	struct brg_commit_opts o = BRG_COMMIT_OPTS_INIT;
	cr_assert_eq(brg_committer_new(s2, &o, &com2), STORE_OK);
	size_t blen;
	uint8_t *body = h_birth_body(pki, id, 2, 0, &blen);
	struct brg_item *b =
	    sealed_for(ver2, pki, id, id, WIRE_KIND_BIRTH, "birth", seq, body, blen);
	cr_assert_eq(b->kind, BRG_ITEM_BIRTH, "%s", b->detail);
	struct brg_outcome o2 = {0};
	cr_assert_eq(brg_commit_group(com2, &b, 1, store_now_ms(), &o2), STORE_OK, "%s",
	             store_errmsg(s2));
	brg_outcome_to_registry(&o2, reg2);
	brg_item_free(b);
	brg_outcome_free(&o2);
	brg_committer_free(com2);
	brg_verifier_free(ver2);
	brg_registry_free(reg2);
	store_close(s2);
}

/* Bridges of a share group each have a registry, which trusts a key it read for as long as
 * signatures verify with it. Bridge A (this one) holds dev-a's key K1; outpostctl revokes
 * dev-a (K1 stolen) and the device's Birth with a new key K2 re-enrols it at bridge B. The
 * holder of K1 then reaches bridge A: its batch, task result and poll verify with A's key, and
 * the writer, which holds K2, refuses them as `revoked` (K1 is in revoked_keys): nothing
 * stored, no task finished or delivered, nothing acknowledged or answered. The device's own
 * envelopes (K2) are stored, and so is what dev-b, which rotated without a revocation, sealed
 * with its old key (BRIDGE.md, Verification). */
TEST_BOTH(a_key_revoked_at_another_bridge_stays_refused_where_it_is_cached)
{
	commit_one(birth("dev-a", 1));
	commit_one(batch("dev-a", "dev-a", 2, 0)); /* bridge A's registry: dev-a active, K1 */
	commit_one(birth("dev-b", 1));
	commit_one(batch("dev-b", "dev-b", 2, 0));
	cr_assert_eq(store_device_action(s, "dev-a", "revoke", "outpostctl", "key stolen", NULL),
	             STORE_OK, "%s", store_errmsg(s));
	char *k2 = h_pki_issue_dated("dev-a-k2", "dev-a", "20200101000000Z", "20991231000000Z");
	char *k2b = h_pki_issue_dated("dev-b-k2", "dev-b", "20200101000000Z", "20991231000000Z");
	birth_at_bridge_b(k2, "dev-a", 10);
	birth_at_bridge_b(k2b, "dev-b", 10);
	cr_assert_eq(one("SELECT COUNT(*) FROM devices WHERE state = 'active'"), 2,
	             "the rotations did not re-enrol the devices");
	cr_assert_eq(one("SELECT COUNT(*) FROM revoked_keys"), 1);

	int64_t task = 0;
	cr_assert_eq(
	    store_task_add(s, "dev-a", "ping", NULL, 0, store_now_ms() + 3600000, "t", &task),
	    STORE_OK);
	struct brg_item *thief[] = {batch("dev-a", "dev-a", 20, 2), poll_item("dev-a", 21),
	                            result_as("dev-a", 22, 20, (uint64_t)task, "done",
	                                      OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED,
	                                      store_now_ms())};
	for (size_t i = 0; i < 3; i++)
		cr_assert_neq(thief[i]->kind, BRG_ITEM_REJECT, "A's registry let it by: %s",
		              thief[i]->detail);
	commit(thief, 3);
	free_items(thief, 3);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq >= 20"), 0,
	             "stored envelopes signed with the revoked key");
	cr_expect_eq(one("SELECT COUNT(*) FROM tasks WHERE state = 'queued'"), 1,
	             "a task delivered to or finished by the holder of the revoked key");
	cr_expect_eq(out.n_replies, 0, "acknowledged or answered");
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'revoked'"), 3);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'rejected' AND detail LIKE"
	                 " '%refused: signed with a revoked key%'"),
	             3);
	cr_expect_eq(one("SELECT consecutive_rejects FROM devices WHERE device_id = 'dev-a'"), 0,
	             "not the device's fault: no step toward quarantine");

	/* dev-a's own with K2: A's registry reads the store's key again */
	size_t blen;
	uint8_t *body = h_batch_body(&so, 11, 2, &blen);
	struct brg_item *own =
	    sealed_by(k2, "dev-a", "dev-a", WIRE_KIND_BATCH, "telemetry", 11, body, blen);
	cr_expect_eq(own->kind, BRG_ITEM_BATCH, "%s", own->detail);
	commit_one(own);
	cr_expect_not_null(ack_of("dev-a"));
	/* dev-b's old key K1 was not revoked: what it sealed before the rotation is stored */
	commit_one(batch("dev-b", "dev-b", 3, 2));
	cr_expect_not_null(ack_of("dev-b"));
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq IN (3, 11)"), 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM rejections WHERE reason <> 'revoked'"), 0);
	free(k2);
	free(k2b);
}

/* The same with the device's Birth with K2 pending at bridge A (verified before the
 * revocation, not committed yet) when its copy sent again re-enrols it at bridge B: an
 * envelope of the holder of K1 does not verify with K2 but with the key A's registry keeps
 * beside the pending one (K1, not revoked as far as A knows), and the writer refuses it. */
TEST_BOTH(a_key_revoked_at_another_bridge_stays_refused_beside_a_pending_birth)
{
	commit_one(birth("dev-a", 1));
	commit_one(batch("dev-a", "dev-a", 2, 0)); /* bridge A's registry: dev-a active, K1 */
	char *k2 = h_pki_issue_dated("dev-a-k2", "dev-a", "20200101000000Z", "20991231000000Z");
	size_t blen;
	uint8_t *body = h_birth_body(k2, "dev-a", 2, 0, &blen);
	struct brg_item *b =
	    sealed_by(k2, "dev-a", "dev-a", WIRE_KIND_BIRTH, "birth", 10, body, blen);
	cr_assert_eq(b->kind, BRG_ITEM_BIRTH, "%s", b->detail);
	cr_assert_eq(store_device_action(s, "dev-a", "revoke", "outpostctl", "key stolen", NULL),
	             STORE_OK, "%s", store_errmsg(s));
	birth_at_bridge_b(k2, "dev-a", 10);
	struct brg_item *thief = batch("dev-a", "dev-a", 20, 2);
	cr_assert_eq(thief->kind, BRG_ITEM_BATCH, "A's registry let it by: %s", thief->detail);
	cr_assert_eq(thief->provisional, 0);
	struct brg_item *g[] = {thief, b};
	commit(g, 2);
	free_items(g, 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM envelopes WHERE seq = 20"), 0,
	             "stored an envelope signed with the revoked key");
	cr_expect_eq(one("SELECT count FROM rejections WHERE reason = 'revoked'"), 1);
	cr_expect_eq(out.duplicates, 1, "the Birth B committed");
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-a' AND state ="
	                 " 'active'"),
	             1);
	free(k2);
}

/* A quarantined or revoked device's `online` status is dropped and counted like its other
 * messages: the device does not go online, and there is no online/offline event per message.
 * Its `offline` is taken (its will, or the broker plugin's for a device the CRL revokes). */
Test(brg_commit, a_quarantined_or_revoked_devices_status_is_counted_but_offline)
{
	commit_one(birth("dev-a", 1));
	commit_one(birth("dev-b", 1));
	cr_assert_eq(one("SELECT COUNT(*) FROM devices WHERE online = 1"), 2);
	cr_assert_eq(store_device_action(s, "dev-a", "quarantine", "outpostctl", "x", NULL),
	             STORE_OK);
	cr_assert_eq(store_device_action(s, "dev-b", "revoke", "outpostctl", "x", NULL), STORE_OK);
	int64_t events = one("SELECT COUNT(*) FROM events");
	for (int i = 0; i < 10; i++) {
		const char *p = i % 2 ? "online" : "offline";
		commit_one(judge("outpost/v1/dev-a/status", (uint8_t *)strdup(p), strlen(p), NULL));
		commit_one(judge("outpost/v1/dev-b/status", (uint8_t *)strdup(p), strlen(p), NULL));
	}
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE online = 0"), 2);
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'offline'"), 2,
	             "the first offline is taken, once for each");
	cr_expect_eq(one("SELECT COUNT(*) FROM events WHERE type = 'online'"), 2,
	             "online events besides the Births'");
	cr_expect_eq(one("SELECT r.count FROM rejections r JOIN devices d ON d.id = r.device WHERE"
	                 " d.device_id = 'dev-a' AND r.reason = 'quarantined'"),
	             5);
	cr_expect_eq(one("SELECT r.count FROM rejections r JOIN devices d ON d.id = r.device WHERE"
	                 " d.device_id = 'dev-b' AND r.reason = 'revoked'"),
	             5);
	/* 2 offline, 5 rejected (revoked: counted with an event, as the device's other messages) */
	cr_expect_eq(one("SELECT COUNT(*) FROM events") - events, 7);
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE state IN ('quarantined', 'revoked')"),
	             2);
}

/* A group committed again on another thread (brg_commit_group blocks while PostgreSQL makes it
 * wait for a lock). */
struct again {
	struct brg_item **items;
	size_t n;
	int rc;
	int done; /* under again_mu */
};
static pthread_mutex_t again_mu = PTHREAD_MUTEX_INITIALIZER;

static void *commit_again(void *arg)
{
	struct again *a = arg;
	brg_outcome_clear(&out);
	int rc = brg_commit_group(com, a->items, a->n, store_now_ms(), &out);
	pthread_mutex_lock(&again_mu);
	a->rc = rc;
	a->done = 1;
	pthread_mutex_unlock(&again_mu);
	return NULL;
}

/* The connection vanished silently in the middle of a group (a NAT or firewall dropped its
 * state: no FIN reaches the server), after the group had locked its device's row: the
 * server's process sits idle in that transaction, holding the lock, until its TCP keepalive
 * gives up (hours). The group retried on a new connection waited behind it for as long, and
 * intake stopped. The writer ends its previous server process at the reconnect: the retry is
 * stored once and acknowledged within seconds. */
Test(brg_commit_pg_cut, a_group_cut_off_mid_transaction_does_not_wait_for_its_old_session,
     .timeout = 120)
{
	commit_one(birth("dev-a", 1));
	struct brg_item *g[] = {batch("dev-a", "dev-a", 2, 0)};
	/* the envelope rows go by COPY after the device's row is locked (FOR UPDATE) */
	h_relay_strand_on(relay, "COPY envelopes");
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_group(com, g, 1, store_now_ms(), &out), STORE_ECONN, "%s",
	             store_errmsg(s));
	cr_assert(h_relay_cut_done(relay));
	struct store *admin = NULL; /* straight to the server, beside the relay */
	struct store_opts o = STORE_OPTS_INIT;
	char err[STORE_ERR_MAX];
	cr_assert_eq(store_open(pg.url, &o, &admin, err), STORE_OK, "%s", err);
	int64_t idle = -1;
	cr_assert_eq(store_query_i64(admin, &idle,
	                             "SELECT COUNT(*) FROM pg_stat_activity WHERE state ="
	                             " 'idle in transaction'",
	                             0),
	             STORE_OK);
	cr_assert_eq(idle, 1, "the stranded session is not idle in its transaction");

	struct again a = {g, 1, 0, 0};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, commit_again, &a), 0);
	long long t0 = h_now_ms();
	int done = 0;
	while (!done && h_now_ms() - t0 < 10000) {
		h_sleep_ms(50);
		pthread_mutex_lock(&again_mu);
		done = a.done;
		pthread_mutex_unlock(&again_mu);
	}
	if (!done) /* let the thread go: end the stranded session from here */
		store_exec(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE"
		                  " state = 'idle in transaction'");
	pthread_join(t, NULL);
	cr_expect(done, "the retry waited %lld ms for the stranded session's lock",
	          h_now_ms() - t0);
	cr_expect_eq(a.rc, STORE_OK, "%s", store_errmsg(s));
	put_states(&out);
	int64_t n = -1;
	cr_expect_eq(store_query_i64(admin, &n, "SELECT COUNT(*) FROM envelopes WHERE seq = 2", 0),
	             STORE_OK);
	cr_expect_eq(n, 1);
	const struct brg_reply *ack = ack_of("dev-a");
	cr_expect(ack && ack->seq == 2, "no ack of seq 2");
	store_close(admin);
	free_items(g, 1);
}

/* The health sweep and the certificate re-check have their COMMIT's answer lost too: the
 * outcome is kept until the database says what became of it, as a group's (before, it was
 * thrown away at once: a committed revocation never reached the registry, and the re-check
 * after it no longer finds the device, already revoked). */
Test(brg_commit_pg_cut, an_unanswered_sweep_or_recheck_is_settled, .timeout = 120)
{
	online_device("silent", store_now_ms() - 86400000);
	h_relay_cut_on(relay, "COMMIT", false, 300);
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_maintain(com, store_now_ms(), &out), STORE_EUNKNOWN, "%s",
	             store_errmsg(s));
	cr_assert_eq(resolve_commit(), 1, "%s", store_errmsg(s));
	brg_commit_settle(com, 1, &out);
	cr_expect_eq(out.n_notes, 1, "the committed sweep's log line was thrown away");
	cr_expect(out.n_notes && strstr(out.notes[0].text, "offline"), "%s",
	          out.n_notes ? out.notes[0].text : "");
	cr_expect_eq(one("SELECT online FROM devices WHERE device_id = 'silent'"), 0);

	char *path = h_strf("%s/devices/dev-revoked.crt", h_pki());
	char *pem = h_read_file(path, NULL);
	cr_assert_not_null(pem, "%s", path);
	struct store_stmt *st = NULL;
	cr_assert_eq(store_prepare(s,
	                           "INSERT INTO devices (device_id, state, created_at,"
	                           " state_changed_at, cert_pem) VALUES ('dev-revoked', 'active',"
	                           " 1, 1, ?)",
	                           &st),
	             STORE_OK);
	cr_assert_eq(store_bind_text(st, 1, pem), STORE_OK);
	cr_assert_eq(store_step(st), 0, "%s", store_errmsg(s));
	store_stmt_free(st);
	h_relay_cut_on(relay, "COMMIT", false, 300);
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_recheck_certs(com, ver, store_now_ms(), &out), STORE_EUNKNOWN, "%s",
	             store_errmsg(s));
	cr_assert_eq(resolve_commit(), 1, "%s", store_errmsg(s));
	brg_commit_settle(com, 1, &out);
	cr_expect_eq(out.n_states, 1, "the committed revocation does not reach the registry");
	cr_expect(out.n_states && out.states[0].info.state == BRG_ST_REVOKED &&
	          !strcmp(out.states[0].device, "dev-revoked"));
	cr_expect_eq(one("SELECT COUNT(*) FROM devices WHERE device_id = 'dev-revoked' AND"
	                 " state = 'revoked'"),
	             1);

	/* not committed: unwound, as before */
	cr_assert_eq(store_exec(s, "UPDATE devices SET state = 'active' WHERE device_id ="
	                           " 'dev-revoked'"),
	             STORE_OK);
	h_relay_cut_on(relay, "COMMIT", true, 0);
	brg_outcome_clear(&out);
	cr_assert_eq(brg_commit_recheck_certs(com, ver, store_now_ms(), &out), STORE_EUNKNOWN, "%s",
	             store_errmsg(s));
	cr_assert_eq(resolve_commit(), 0, "%s", store_errmsg(s));
	brg_commit_settle(com, 0, &out);
	cr_expect_eq(out.n_states, 0);
	cr_expect_eq(out.n_notes, 0);
	free(pem);
	free(path);
}
