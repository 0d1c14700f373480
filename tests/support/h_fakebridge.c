/* h_fakebridge.c - in-memory bridge double for device tests (see h_fakebridge.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h_fakebridge.h"
#include "h_mqtt.h"
#include "outpost.pb-c.h"
#include "wire_batch.h"
#include "wire_cert.h"
#include "wire_env.h"
#include "wire_msg.h"
#include "wire_topic.h"

#define MAX_DEVICES 16
#define MAX_LINKS 200000
#define MAX_READINGS 2000000
#define MAX_NAMES 4096
#define MAX_RESULTS 64

struct link {
	uint64_t seq, prev;
};

struct reading {
	uint32_t metric;
	int64_t t;
	double v;
};

struct result {
	uint64_t task_id;
	int status;
	char message[256];
	char output[1024]; /* "key=value\n" per output pair, cut at the size */
};

struct dev {
	char id[WIRE_ID_MAX + 1];
	struct wire_pubkey key;
	int have_key;
	struct link *links;
	size_t nlinks;
	struct reading *readings;
	size_t nreadings;
	char *names[MAX_NAMES + 1]; /* metric id -> name */
	struct h_device_view v;
	int frontier_set;
	int64_t last_t[MAX_NAMES + 1];
	struct result results[MAX_RESULTS];
	size_t nresults;
};

struct task_answer {
	int pending;
	uint64_t id;
	char type[33];
	char args[256];
	char for_id[WIRE_ID_MAX + 1];
	int64_t expires;
	int bad_sig;
};

struct h_fakebridge {
	pthread_t thread;
	pthread_mutex_t mu;
	atomic_int stop; /* set by h_fakebridge_stop, read by its thread */
	enum h_ack_mode mode;
	struct h_mqtt *cli;
	struct wire_key *bridge_key, *forge_key;
	const char *pki;
	struct dev devs[MAX_DEVICES];
	int ndevs;
	struct task_answer next_task;
	uint8_t *last_list;
	size_t last_list_len;
	char last_list_topic[WIRE_TOPIC_MAX];
	uint8_t last_corr[64];
	size_t last_corr_len;
};

static struct dev *dev_of(struct h_fakebridge *fb, const char *id)
{
	for (int i = 0; i < fb->ndevs; i++)
		if (!strcmp(fb->devs[i].id, id))
			return &fb->devs[i];
	if (fb->ndevs == MAX_DEVICES)
		return NULL;
	struct dev *d = &fb->devs[fb->ndevs++];
	memset(d, 0, sizeof(*d));
	snprintf(d->id, sizeof(d->id), "%s", id);
	d->links = calloc(MAX_LINKS, sizeof(*d->links));
	d->readings = calloc(MAX_READINGS, sizeof(*d->readings));
	d->v.in_order = 1;
	char *path = h_strf("%s/devices/%s.crt", fb->pki, id);
	char *pem = NULL;
	size_t len;
	struct wire_cert_info info;
	if (!wire_cert_read(path, &pem, &len) && !wire_cert_parse(pem, len, &info, NULL)) {
		d->key = info.key;
		d->have_key = 1;
	}
	free(pem);
	free(path);
	return d;
}

static int have_link(const struct dev *d, uint64_t seq)
{
	for (size_t i = d->nlinks; i-- > 0;)
		if (d->links[i].seq == seq)
			return 1;
	return 0;
}

static void advance(struct dev *d)
{
	for (int moved = 1; moved;) {
		moved = 0;
		for (size_t i = 0; i < d->nlinks; i++) {
			if (d->links[i].prev == d->v.frontier && d->links[i].seq > d->v.frontier) {
				d->v.frontier = d->links[i].seq;
				moved = 1;
			}
		}
	}
}

static void send_ack(struct h_fakebridge *fb, struct dev *d)
{
	Outpost__Ack ack = OUTPOST__ACK__INIT;
	uint8_t *body = NULL, *env = NULL;
	size_t len, env_len;
	char topic[WIRE_TOPIC_MAX];
	if (fb->mode == H_ACK_NONE)
		return;
	ack.upto = d->v.frontier + (fb->mode == H_ACK_FUTURE ? 1000000 : 0);
	if (wire_msg_pack(WIRE_KIND_ACK, &ack.base, &body, &len, NULL))
		return;
	struct wire_env e = {.kind = WIRE_KIND_ACK, .seq = ack.upto, .sent_at_ms = 1, .body = body,
			     .body_len = len};
	snprintf(e.device_id, sizeof(e.device_id), "%s", d->id);
	struct wire_key *k = fb->mode == H_ACK_FORGED ? fb->forge_key : fb->bridge_key;
	if (!wire_env_seal(k, &e, &env, &env_len)) {
		wire_topic_build(topic, sizeof(topic), WIRE_TOPIC_ACK, d->id);
		h_mqtt_pub(fb->cli, topic, env, env_len, 1, 0);
	}
	free(env);
	free(body);
}

static void add_link(struct dev *d, uint64_t seq, uint64_t prev)
{
	if (d->nlinks < MAX_LINKS)
		d->links[d->nlinks++] = (struct link){seq, prev};
}

static void on_batch(struct dev *d, const struct wire_env *e)
{
	struct wire_batch *b = NULL;
	if (wire_batch_decode(e->body, e->body_len, &b, NULL)) {
		d->v.bad++;
		return;
	}
	if (have_link(d, e->seq)) {
		d->v.duplicates++;
		wire_batch_free(b);
		return;
	}
	add_link(d, e->seq, b->prev_seq);
	for (size_t i = 0; i < b->n_dropped; i++) {
		add_link(d, b->dropped[i].last_seq, b->dropped[i].prev_seq);
		d->v.dropped += b->dropped[i].count;
	}
	d->v.batches++;
	for (size_t i = 0; i < b->n_readings; i++) {
		const struct wire_reading *r = &b->readings[i];
		if (d->nreadings < MAX_READINGS)
			d->readings[d->nreadings++] = (struct reading){r->metric_id, r->t_ms, r->value};
		d->v.readings++;
		if (r->metric_id <= MAX_NAMES) {
			if (r->t_ms <= d->last_t[r->metric_id])
				d->v.in_order = 0;
			d->last_t[r->metric_id] = r->t_ms;
		}
	}
	wire_batch_free(b);
}

static void on_result(struct dev *d, const struct wire_env *e)
{
	Outpost__TaskResult *r = NULL;
	if (wire_task_result_decode(e->body, e->body_len, &r, NULL)) {
		d->v.bad++;
		return;
	}
	if (have_link(d, e->seq)) {
		d->v.duplicates++;
	} else {
		add_link(d, e->seq, r->prev_seq);
		d->v.results++;
		struct result *slot = NULL;
		for (size_t i = 0; i < d->nresults; i++)
			if (d->results[i].task_id == r->task_id)
				slot = &d->results[i];
		if (!slot && d->nresults < MAX_RESULTS)
			slot = &d->results[d->nresults++];
		if (slot) {
			slot->task_id = r->task_id;
			slot->status = (int)r->status;
			snprintf(slot->message, sizeof(slot->message), "%s", r->message);
			size_t n = 0;
			slot->output[0] = '\0';
			for (size_t i = 0; i < r->n_output && n < sizeof(slot->output); i++) {
				int k = snprintf(slot->output + n, sizeof(slot->output) - n,
						 "%s=%s\n", r->output[i]->key,
						 r->output[i]->value);
				n += k > 0 ? (size_t)k : 0;
			}
		}
	}
	wire_msg_free(r);
}

static void on_birth(struct dev *d, const struct wire_env *e)
{
	Outpost__Birth *b = NULL;
	if (wire_birth_decode(e->body, e->body_len, &b, NULL)) {
		d->v.bad++;
		return;
	}
	d->v.births++;
	if (!d->frontier_set) {
		d->v.frontier = b->chain_floor;
		d->frontier_set = 1;
	}
	d->v.last_spool_records = b->spool ? b->spool->records : 0;
	d->v.last_sample_interval_s = b->sample_interval_s;
	d->v.last_batch_interval_s = b->batch_interval_s;
	for (size_t i = 0; i < b->n_metrics; i++) {
		uint32_t id = b->metrics[i]->id;
		if (id <= MAX_NAMES && !d->names[id])
			d->names[id] = strdup(b->metrics[i]->name);
	}
	wire_msg_free(b);
}

static void answer_poll(struct h_fakebridge *fb, struct dev *d, const struct wire_env *e,
			const char *resp, const char *corr, size_t corr_len)
{
	struct task_answer *ta = &fb->next_task;
	Outpost__TaskList l = OUTPOST__TASK_LIST__INIT;
	Outpost__Task t = OUTPOST__TASK__INIT, *tp[1] = {&t};
	Outpost__KeyValue kv[4], *kvp[4];
	char argbuf[256];
	uint8_t *body = NULL, *env = NULL;
	size_t len, env_len;

	d->v.polls++;
	l.poll_seq = e->seq;
	if (ta->pending) {
		t.id = ta->id;
		t.device_id = ta->for_id[0] ? ta->for_id : d->id;
		t.type = ta->type;
		t.expires_at_ms = ta->expires;
		snprintf(argbuf, sizeof(argbuf), "%s", ta->args);
		size_t n = 0;
		for (char *tok = strtok(argbuf, " "); tok && n < 4; tok = strtok(NULL, " ")) {
			char *eq = strchr(tok, '=');
			if (!eq)
				continue;
			*eq = '\0';
			outpost__key_value__init(&kv[n]);
			kv[n].key = tok;
			kv[n].value = eq + 1;
			kvp[n] = &kv[n];
			n++;
		}
		t.n_args = n;
		t.args = kvp;
		l.n_tasks = 1;
		l.tasks = tp;
	}
	if (wire_msg_pack(WIRE_KIND_TASK_LIST, &l.base, &body, &len, NULL))
		return;
	struct wire_env out = {.kind = WIRE_KIND_TASK_LIST, .seq = e->seq, .sent_at_ms = 1,
			       .body = body, .body_len = len};
	snprintf(out.device_id, sizeof(out.device_id), "%s", d->id);
	struct wire_key *k = ta->pending && ta->bad_sig ? fb->forge_key : fb->bridge_key;
	if (!wire_env_seal(k, &out, &env, &env_len)) {
		char topic[WIRE_TOPIC_MAX];
		wire_topic_build(topic, sizeof(topic), WIRE_TOPIC_TASKS, d->id);
		if (!resp || strcmp(resp, topic) == 0) {
			h_mqtt_pub5(fb->cli, topic, env, env_len, 1, NULL, corr, corr_len);
			if (ta->pending) {
				free(fb->last_list);
				fb->last_list = env;
				env = NULL;
				fb->last_list_len = env_len;
				snprintf(fb->last_list_topic, sizeof(fb->last_list_topic), "%s", topic);
				fb->last_corr_len = corr_len < sizeof(fb->last_corr) ? corr_len : 0;
				memcpy(fb->last_corr, corr, fb->last_corr_len);
			}
		}
	}
	ta->pending = 0;
	free(env);
	free(body);
}

static void handle(struct h_fakebridge *fb, const char *topic, const uint8_t *p, size_t len,
		   const char *resp, const char *corr, size_t corr_len)
{
	char id[WIRE_ID_MAX + 1];
	enum wire_topic t;
	struct wire_env e;
	if (wire_topic_parse(topic, strlen(topic), id, &t))
		return;
	pthread_mutex_lock(&fb->mu);
	struct dev *d = dev_of(fb, id);
	if (!d)
		goto out;
	if (wire_env_decode(p, len, &e, NULL) || strcmp(e.device_id, id) || !d->have_key ||
	    wire_env_verify(&e, &d->key)) {
		d->v.bad++;
		goto out;
	}
	switch (t) {
	case WIRE_TOPIC_BIRTH:
		on_birth(d, &e);
		break;
	case WIRE_TOPIC_TELEMETRY:
		on_batch(d, &e);
		advance(d);
		send_ack(fb, d);
		break;
	case WIRE_TOPIC_TASKS_RESULT:
		on_result(d, &e);
		advance(d);
		send_ack(fb, d);
		break;
	case WIRE_TOPIC_TASKS_POLL:
		answer_poll(fb, d, &e, resp, corr, corr_len);
		break;
	default:
		break;
	}
out:
	pthread_mutex_unlock(&fb->mu);
}

static void *run(void *arg)
{
	struct h_fakebridge *fb = arg;
	while (!fb->stop) {
		char *topic = NULL, *payload = NULL, *resp = NULL, *corr = NULL;
		size_t len = 0, corr_len = 0;
		int r = h_mqtt_recv_props(fb->cli, &topic, &payload, &len, &resp, &corr, &corr_len, 100);
		if (r == 1)
			handle(fb, topic, (const uint8_t *)payload, len, resp, corr, corr_len);
		free(topic);
		free(payload);
		free(resp);
		free(corr);
		if (r < 0)
			h_sleep_ms(50);
	}
	return NULL;
}

struct h_fakebridge *h_fakebridge_start(const struct h_broker *b, enum h_ack_mode mode)
{
	struct h_fakebridge *fb = calloc(1, sizeof(*fb));
	char *uri = h_strf("ssl://127.0.0.1:%d", b->internal_port);
	char *key = h_strf("%s/bridge.key", b->pki), *forge = h_strf("%s/devices/dev-c.key", b->pki);
	fb->pki = b->pki;
	fb->mode = mode;
	pthread_mutex_init(&fb->mu, NULL);
	if (wire_key_load(key, &fb->bridge_key, NULL) || wire_key_load(forge, &fb->forge_key, NULL))
		abort();
	/* persistent, like the real bridge: what devices send while it is away (a broker
	 * restart included) waits for it */
	fb->cli = h_mqtt_connect_session(uri, b->pki, "bridge", "fakebridge", 600);
	if (!fb->cli)
		abort();
	const char *subs[] = {"outpost/v1/+/birth", "outpost/v1/+/telemetry", "outpost/v1/+/tasks/poll",
			      "outpost/v1/+/tasks/result"};
	for (int i = 0; i < 4; i++)
		if (h_mqtt_sub(fb->cli, subs[i], 1) < 0)
			abort();
	free(uri);
	free(key);
	free(forge);
	pthread_create(&fb->thread, NULL, run, fb);
	return fb;
}

void h_fakebridge_mode(struct h_fakebridge *fb, enum h_ack_mode mode)
{
	pthread_mutex_lock(&fb->mu);
	fb->mode = mode;
	pthread_mutex_unlock(&fb->mu);
}

void h_fakebridge_stop(struct h_fakebridge *fb)
{
	if (!fb)
		return;
	fb->stop = 1;
	pthread_join(fb->thread, NULL);
	h_mqtt_close(fb->cli);
	for (int i = 0; i < fb->ndevs; i++) {
		free(fb->devs[i].links);
		free(fb->devs[i].readings);
		for (int k = 0; k <= MAX_NAMES; k++)
			free(fb->devs[i].names[k]);
	}
	wire_key_free(fb->bridge_key);
	wire_key_free(fb->forge_key);
	free(fb->last_list);
	pthread_mutex_destroy(&fb->mu);
	free(fb);
}

void h_fakebridge_view(struct h_fakebridge *fb, const char *id, struct h_device_view *v)
{
	memset(v, 0, sizeof(*v));
	pthread_mutex_lock(&fb->mu);
	for (int i = 0; i < fb->ndevs; i++)
		if (!strcmp(fb->devs[i].id, id))
			*v = fb->devs[i].v;
	pthread_mutex_unlock(&fb->mu);
}

size_t h_fakebridge_series(struct h_fakebridge *fb, const char *id, const char *metric,
			   int64_t *t, double *value, size_t cap)
{
	size_t n = 0;
	pthread_mutex_lock(&fb->mu);
	for (int i = 0; i < fb->ndevs; i++) {
		struct dev *d = &fb->devs[i];
		if (strcmp(d->id, id))
			continue;
		uint32_t mid = 0;
		for (uint32_t k = 1; k <= MAX_NAMES; k++)
			if (d->names[k] && !strcmp(d->names[k], metric))
				mid = k;
		for (size_t r = 0; mid && r < d->nreadings; r++) {
			if (d->readings[r].metric != mid)
				continue;
			if (n < cap) {
				t[n] = d->readings[r].t;
				value[n] = d->readings[r].v;
			}
			n++;
		}
	}
	pthread_mutex_unlock(&fb->mu);
	return n;
}

void h_fakebridge_queue_task(struct h_fakebridge *fb, uint64_t task_id, const char *type,
			     const char *args, const char *for_id, int64_t expires_ms, int bad_sig)
{
	pthread_mutex_lock(&fb->mu);
	struct task_answer *ta = &fb->next_task;
	ta->id = task_id;
	snprintf(ta->type, sizeof(ta->type), "%s", type);
	snprintf(ta->args, sizeof(ta->args), "%s", args ? args : "");
	snprintf(ta->for_id, sizeof(ta->for_id), "%s", for_id ? for_id : "");
	if (!expires_ms) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		expires_ms = (int64_t)ts.tv_sec * 1000 + 3600 * 1000;
	}
	ta->expires = expires_ms;
	ta->bad_sig = bad_sig;
	ta->pending = 1;
	pthread_mutex_unlock(&fb->mu);
}

int h_fakebridge_result(struct h_fakebridge *fb, uint64_t task_id, char *message, size_t cap)
{
	int status = 0;
	pthread_mutex_lock(&fb->mu);
	for (int i = 0; i < fb->ndevs; i++)
		for (size_t k = 0; k < fb->devs[i].nresults; k++)
			if (fb->devs[i].results[k].task_id == task_id) {
				status = fb->devs[i].results[k].status;
				if (message)
					snprintf(message, cap, "%s", fb->devs[i].results[k].message);
			}
	pthread_mutex_unlock(&fb->mu);
	return status;
}

int h_fakebridge_result_output(struct h_fakebridge *fb, uint64_t task_id, const char *key,
			       char *value, size_t cap)
{
	int found = 0;
	size_t klen = strlen(key);
	pthread_mutex_lock(&fb->mu);
	for (int i = 0; i < fb->ndevs; i++)
		for (size_t k = 0; k < fb->devs[i].nresults; k++) {
			const struct result *r = &fb->devs[i].results[k];
			if (r->task_id != task_id)
				continue;
			for (const char *line = r->output; *line;) {
				size_t len = strcspn(line, "\n");
				if (len > klen && !strncmp(line, key, klen) && line[klen] == '=') {
					snprintf(value, cap, "%.*s", (int)(len - klen - 1),
						 line + klen + 1);
					found = 1;
				}
				line += len + (line[len] == '\n');
			}
		}
	pthread_mutex_unlock(&fb->mu);
	return found;
}

void h_fakebridge_replay_tasks(struct h_fakebridge *fb)
{
	pthread_mutex_lock(&fb->mu);
	if (fb->last_list)
		h_mqtt_pub5(fb->cli, fb->last_list_topic, fb->last_list, fb->last_list_len, 1, NULL,
			    fb->last_corr, fb->last_corr_len);
	pthread_mutex_unlock(&fb->mu);
}

int h_fakebridge_wait(struct h_fakebridge *fb, const char *id, int timeout_ms,
                      int (*pred)(const struct h_device_view *v, uint64_t arg), uint64_t arg,
                      struct h_device_view *out)
{
	long long end = h_now_ms() + timeout_ms;
	do {
		h_fakebridge_view(fb, id, out);
		if (pred(out, arg))
			return 1;
		h_sleep_ms(50);
	} while (h_now_ms() < end);
	return 0;
}

int h_view_readings_at_least(const struct h_device_view *v, uint64_t n)
{
	return v->readings >= n;
}

int h_view_births_at_least(const struct h_device_view *v, uint64_t n)
{
	return v->births >= n;
}

int h_view_batches_at_least(const struct h_device_view *v, uint64_t n)
{
	return v->batches >= n;
}

int h_view_frontier_at_least(const struct h_device_view *v, uint64_t n)
{
	return v->frontier >= n;
}
