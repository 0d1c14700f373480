/* test_bridge_tasks.c - the bridge side of polled tasks (PROTOCOL.md 6): outpostctl queues,
 * the bridge answers a poll only on the device's own tasks topic with a TaskList signed by the
 * bridge (seq = the poll's seq, correlation data echoed), marks tasks delivered, never
 * delivers expired or cancelled ones, and stores results (durable, chained, acknowledged). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "h_bridge.h"
#include "h_mqtt.h"
#include "h_simdev.h"
#include "harness.h"
#include "outpost.pb-c.h"
#include "wire_cert.h"
#include "wire_env.h"
#include "wire_msg.h"

static struct h_broker b;
static struct h_bridge br;
static struct h_mqtt *dev;

static int64_t q(const char *sql, int64_t arg)
{
	return h_store_i64(br.store, sql, 1, arg);
}

static char *task_state(int64_t id)
{
	static const char *const states[] = {"queued", "delivered", "succeeded",
	                                     "failed", "expired",   "cancelled"};
	for (size_t i = 0; i < 6; i++) {
		char *sql =
		    h_strf("SELECT COUNT(*) FROM tasks WHERE id = ? AND state = '%s'", states[i]);
		int64_t n = q(sql, id);
		free(sql);
		if (n == 1)
			return (char *)states[i];
	}
	return "none";
}

static int64_t add_task(const char *args)
{
	char *out = NULL;
	int rc = h_ctl(br.store, args, &out);
	cr_assert_eq(rc, 0, "outpostctl %s: %s", args, out);
	int64_t id = strtoll(out, NULL, 10);
	free(out);
	cr_assert_gt(id, 0);
	return id;
}

static void pub(const char *suffix, const void *p, size_t n, const char *resp, const void *corr,
                size_t corr_len)
{
	char *topic = h_strf("outpost/v1/dev-a/%s", suffix);
	cr_assert_eq(h_mqtt_pub5(dev, topic, p, n, 1, resp, corr, corr_len), 0);
	free(topic);
}

static uint8_t *poll_env(uint64_t seq, uint64_t last_task, size_t *len)
{
	Outpost__TaskPoll p = OUTPOST__TASK_POLL__INIT;
	uint8_t *body;
	size_t blen;
	p.last_task_id = last_task;
	p.max_tasks = 8;
	cr_assert_eq(wire_msg_pack(WIRE_KIND_TASK_POLL, &p.base, &body, &blen, NULL), 0);
	uint8_t *env =
	    h_seal(h_pki(), "devices/dev-a", WIRE_KIND_TASK_POLL, "dev-a", seq, body, blen, len);
	free(body);
	return env;
}

/* Receive the next message on topic suffix (others are skipped); NULL after timeout. */
static uint8_t *recv_on(const char *suffix, size_t *len, void **corr, size_t *corr_len, int ms)
{
	long long end = h_now_ms() + ms;
	char *want = h_strf("outpost/v1/dev-a/%s", suffix);
	while (h_now_ms() < end) {
		char *topic = NULL, *payload = NULL;
		void *c = NULL;
		size_t cl = 0;
		int got =
		    h_mqtt_recv5(dev, &topic, &payload, len, &c, &cl, (int)(end - h_now_ms()));
		if (got != 1)
			break;
		if (!strcmp(topic, want)) {
			free(topic);
			free(want);
			if (corr)
				*corr = c;
			else
				free(c);
			if (corr_len)
				*corr_len = cl;
			return (uint8_t *)payload;
		}
		free(topic);
		free(payload);
		free(c);
	}
	free(want);
	return NULL;
}

static struct wire_pubkey bridge_key(void)
{
	char *path = h_strf("%s/bridge.crt", h_pki()), *pem = NULL;
	size_t len;
	struct wire_cert_info ci;
	cr_assert_eq(wire_cert_read(path, &pem, &len), 0);
	cr_assert_eq(wire_cert_parse(pem, len, &ci, NULL), 0);
	free(pem);
	free(path);
	return ci.key;
}

/* Decode and verify a TaskList answer for poll seq; caller frees with wire_msg_free. */
static Outpost__TaskList *task_list(const uint8_t *buf, size_t len, uint64_t seq)
{
	struct wire_env e;
	Outpost__TaskList *l = NULL;
	struct wire_pubkey k = bridge_key();
	cr_assert_eq(wire_env_decode(buf, len, &e, NULL), 0);
	cr_expect_eq(e.kind, WIRE_KIND_TASK_LIST);
	cr_expect_str_eq(e.device_id, "dev-a");
	cr_expect_eq(e.seq, seq, "TaskList seq must echo the poll's seq");
	cr_expect_eq(wire_env_verify(&e, &k), 0, "TaskList not signed by the bridge");
	cr_assert_eq(wire_task_list_decode(e.body, e.body_len, &l, NULL), 0);
	cr_expect_eq(l->poll_seq, seq);
	return l;
}

static void setup(void)
{
	memset(&b, 0, sizeof(b));
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, "tasks");
	h_bridge_start(&br);
	char *uri = h_strf("ssl://127.0.0.1:%d", b.mqtts_port);
	dev = h_mqtt_connect(uri, h_pki(), "devices/dev-a", "dev-a", NULL);
	free(uri);
	cr_assert_not_null(dev);
	cr_assert_eq(h_mqtt_sub(dev, "outpost/v1/dev-a/tasks", 1), 1);
	cr_assert_eq(h_mqtt_sub(dev, "outpost/v1/dev-a/ack", 1), 1);
	size_t blen, n;
	uint8_t *body = h_birth_body(h_pki(), "dev-a", 2, 0, &blen);
	uint8_t *env =
	    h_seal(h_pki(), "devices/dev-a", WIRE_KIND_BIRTH, "dev-a", 1, body, blen, &n);
	pub("birth", env, n, NULL, NULL, 0);
	free(env);
	free(body);
	/* dev-b must exist for a task to be queued for it. */
	struct h_simdev_opts o = {
	    .pki = h_pki(), .id = "dev-b", .port = b.mqtts_port, .batches = 1};
	struct h_simdev *d = h_simdev_start(&o);
	cr_assert(h_simdev_wait(d, 20000));
	h_simdev_stop(d);
	/* dev-a's Birth went out before dev-b's: enrolled by now, or within 10 s */
	int64_t active = 0;
	long long end = h_now_ms() + 10000;
	while ((active = h_store_i64(br.store,
	                             "SELECT COUNT(*) FROM devices WHERE device_id = 'dev-a' AND"
	                             " state = 'active'",
	                             0)) != 1 &&
	       h_now_ms() < end)
		h_sleep_ms(20);
	cr_assert_eq(active, 1, "dev-a's Birth was not enrolled within 10 s (log %s)", br.log);
}

static void teardown(void)
{
	h_mqtt_close(dev);
	h_bridge_free(&br);
	h_broker_free(&b);
}

TestSuite(bridge_tasks, .init = setup, .fini = teardown, .timeout = 120);

Test(bridge_tasks, queue_poll_deliver_result)
{
	char *out = NULL;
	int64_t ping = add_task("task add --device dev-a --type ping");
	int64_t cfg = add_task("task add --device dev-a --type set_config --arg sample_interval=5s"
	                       " --arg log_level=debug --expires 1h");
	int64_t soon = add_task("task add --device dev-a --type collect_now --expires 1s");
	int64_t other = add_task("task add --device dev-b --type restart");
	int64_t gone = add_task("task add --device dev-a --type resend --arg from=1 --arg to=9");
	cr_expect_eq(h_ctl(br.store, "task cancel 5", &out), 0, "%s", out);
	free(out);
	cr_expect_eq(gone, 5);
	/* Not allowlisted: refused at task add. */
	cr_expect_eq(h_ctl(br.store, "task add --device dev-a --type shell --arg cmd=reboot", &out),
	             2);
	cr_expect(strstr(out, "not allowed"), "%s", out);
	free(out);
	/* Unknown device: refused. */
	cr_expect_eq(h_ctl(br.store, "task add --device nobody --type ping", &out), 1);
	free(out);
	h_sleep_ms(2200); /* `soon` expires; the health sweep marks it */
	cr_expect_str_eq(task_state(soon), "expired");

	/* A poll answered on the device's own topic, correlation data echoed. */
	uint8_t corr[16] = "0123456789abcde";
	size_t n, len, clen = 0;
	void *c = NULL;
	uint8_t *poll = poll_env(2, 0, &n);
	pub("tasks/poll", poll, n, "outpost/v1/dev-a/tasks", corr, sizeof(corr));
	uint8_t *ans = recv_on("tasks", &len, &c, &clen, 10000);
	cr_assert_not_null(ans, "no task list");
	cr_expect_eq(clen, sizeof(corr));
	cr_expect(c && !memcmp(c, corr, sizeof(corr)), "correlation data not echoed");
	free(c);
	Outpost__TaskList *l = task_list(ans, len, 2);
	cr_assert_eq(l->n_tasks, 2,
	             "want ping and set_config only (not expired, cancelled, dev-b's)");
	cr_expect_eq((int64_t)l->tasks[0]->id, ping);
	cr_expect_str_eq(l->tasks[0]->type, "ping");
	cr_expect_str_eq(l->tasks[0]->device_id, "dev-a");
	cr_expect_eq((int64_t)l->tasks[1]->id, cfg);
	cr_expect_str_eq(l->tasks[1]->type, "set_config");
	cr_assert_eq(l->tasks[1]->n_args, 2);
	cr_expect_str_eq(l->tasks[1]->args[0]->key, "sample_interval");
	cr_expect_str_eq(l->tasks[1]->args[0]->value, "5s");
	cr_expect_gt(l->tasks[1]->expires_at_ms, l->tasks[1]->created_at_ms);
	wire_msg_free(l);
	free(ans);
	cr_expect_str_eq(task_state(ping), "delivered");
	cr_expect_str_eq(task_state(cfg), "delivered");
	cr_expect_str_eq(task_state(other), "queued");
	cr_expect_str_eq(task_state(gone), "cancelled");
	/* Delivered: too late to cancel. */
	cr_expect_eq(h_ctl(br.store, "task cancel 1", &out), 1);
	cr_expect(strstr(out, "delivered"), "%s", out);
	free(out);

	/* The same poll again (the broker redelivering it): a duplicate, not answered again. */
	pub("tasks/poll", poll, n, "outpost/v1/dev-a/tasks", corr, sizeof(corr));
	free(poll);
	/* An older one: replayed, refused, no answer. */
	poll = poll_env(1, 0, &n);
	pub("tasks/poll", poll, n, "outpost/v1/dev-a/tasks", corr, sizeof(corr));
	free(poll);
	/* A poll asking for an answer elsewhere: refused, no answer. */
	poll = poll_env(3, 0, &n);
	pub("tasks/poll", poll, n, "outpost/v1/dev-b/tasks", corr, sizeof(corr));
	free(poll);
	cr_expect_null(recv_on("tasks", &len, NULL, NULL, 1500), "answered a refused poll");
	cr_expect_eq(h_store_i64(br.store,
	                         "SELECT COUNT(*) FROM rejections WHERE reason IN"
	                         " ('replayed', 'response_topic')",
	                         0),
	             2);
	cr_expect_eq(h_store_i64(br.store, "SELECT duplicates FROM devices WHERE device_id = 'dev-a'",
	                         0),
	             1);

	/* Results: durable, chained, acknowledged; they move the task's state. */
	Outpost__TaskResult r = OUTPOST__TASK_RESULT__INIT;
	Outpost__KeyValue kv = OUTPOST__KEY_VALUE__INIT, *kvp = &kv;
	kv.key = "rtt_ms";
	kv.value = "12";
	r.prev_seq = 0;
	r.task_id = (uint64_t)ping;
	r.status = OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED;
	r.message = "pong";
	r.n_output = 1;
	r.output = &kvp;
	r.finished_at_ms = 1700000000000LL;
	uint8_t *body;
	size_t blen;
	cr_assert_eq(wire_msg_pack(WIRE_KIND_TASK_RESULT, &r.base, &body, &blen, NULL), 0);
	uint8_t *env =
	    h_seal(h_pki(), "devices/dev-a", WIRE_KIND_TASK_RESULT, "dev-a", 4, body, blen, &n);
	free(body);
	pub("tasks/result", env, n, NULL, NULL, 0);
	free(env);
	r.prev_seq = 4;
	r.task_id = (uint64_t)cfg;
	r.status = OUTPOST__TASK_STATUS__TASK_STATUS_FAILED;
	r.message = "unknown key log_level";
	r.n_output = 0;
	cr_assert_eq(wire_msg_pack(WIRE_KIND_TASK_RESULT, &r.base, &body, &blen, NULL), 0);
	env = h_seal(h_pki(), "devices/dev-a", WIRE_KIND_TASK_RESULT, "dev-a", 5, body, blen, &n);
	free(body);
	pub("tasks/result", env, n, NULL, NULL, 0);
	free(env);
	/* The acks of the results. */
	uint64_t upto = 0;
	long long end = h_now_ms() + 10000;
	while (upto < 5 && h_now_ms() < end) {
		uint8_t *a = recv_on("ack", &len, NULL, NULL, (int)(end - h_now_ms()));
		if (!a)
			break;
		struct wire_env e;
		Outpost__Ack *ack = NULL;
		struct wire_pubkey k = bridge_key();
		cr_assert_eq(wire_env_decode(a, len, &e, NULL), 0);
		cr_assert_eq(wire_env_verify(&e, &k), 0);
		cr_assert_eq(wire_ack_decode(e.body, e.body_len, &ack, NULL), 0);
		upto = ack->upto;
		wire_msg_free(ack);
		free(a);
	}
	cr_expect_eq(upto, 5, "results acknowledged up to seq 5");
	cr_expect_str_eq(task_state(ping), "succeeded");
	cr_expect_str_eq(task_state(cfg), "failed");
	cr_expect_eq(h_ctl(br.store, "task show 1", &out), 0);
	cr_expect(strstr(out, "succeeded") && strstr(out, "pong") && strstr(out, "rtt_ms=12"), "%s",
	          out);
	free(out);
	cr_expect_eq(h_ctl(br.store, "task list --device dev-a", &out), 0);
	cr_expect(strstr(out, "set_config") && strstr(out, "failed") && strstr(out, "cancelled") &&
	              strstr(out, "expired") && !strstr(out, "restart"),
	          "%s", out);
	free(out);

	/* A later poll: nothing new for the device. */
	poll = poll_env(6, (uint64_t)cfg, &n);
	pub("tasks/poll", poll, n, "outpost/v1/dev-a/tasks", corr, sizeof(corr));
	free(poll);
	ans = recv_on("tasks", &len, NULL, NULL, 10000);
	cr_assert_not_null(ans);
	l = task_list(ans, len, 6);
	cr_expect_eq(l->n_tasks, 0);
	wire_msg_free(l);
	free(ans);
}
