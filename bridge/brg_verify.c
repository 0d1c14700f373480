/* brg_verify.c - per-message verification, in the order of docs/PROTOCOL.md section 5. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "brg_err.h"
#include "brg_verify.h"
#include "wire_env.h"
#include "wire_msg.h"
#include "wire_topic.h"
#include "wire_utf8.h"

/* How long a verifier waits for an unreadable store before dropping a message unjudged. */
#define STORE_RETRY_MS 2000

struct brg_verifier {
	struct brg_registry *reg;
	pthread_rwlock_t ca_lock;
	struct wire_ca *ca;
	uint64_t ca_gen; /* how many times set_ca swapped it */
};

int brg_verifier_new(struct brg_registry *reg, struct wire_ca *ca, struct brg_verifier **out)
{
	struct brg_verifier *v = calloc(1, sizeof(*v));
	if (!v)
		return BRG_ENOMEM;
	v->reg = reg;
	v->ca = ca;
	pthread_rwlock_init(&v->ca_lock, NULL);
	*out = v;
	return BRG_OK;
}

void brg_verifier_free(struct brg_verifier *v)
{
	if (!v)
		return;
	wire_ca_free(v->ca);
	pthread_rwlock_destroy(&v->ca_lock);
	free(v);
}

void brg_verifier_set_ca(struct brg_verifier *v, struct wire_ca *ca)
{
	pthread_rwlock_wrlock(&v->ca_lock);
	struct wire_ca *old = v->ca;
	v->ca = ca;
	v->ca_gen++;
	pthread_rwlock_unlock(&v->ca_lock);
	wire_ca_free(old);
}

static int check_cert(struct brg_verifier *v, const char *pem, size_t len,
                      struct wire_cert_info *info, struct wire_diag *diag, uint64_t *gen)
{
	pthread_rwlock_rdlock(&v->ca_lock);
	int rc = wire_ca_verify(v->ca, pem, len, info, diag);
	if (gen)
		*gen = v->ca_gen;
	pthread_rwlock_unlock(&v->ca_lock);
	return rc;
}

int brg_verifier_check_cert(struct brg_verifier *v, const char *pem, size_t len,
                            struct wire_cert_info *info)
{
	return check_cert(v, pem, len, info, NULL, NULL);
}

uint64_t brg_verifier_ca_gen(struct brg_verifier *v)
{
	pthread_rwlock_rdlock(&v->ca_lock);
	uint64_t gen = v->ca_gen;
	pthread_rwlock_unlock(&v->ca_lock);
	return gen;
}

static int reject(struct brg_item *it, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int reject(struct brg_item *it, const char *reason, const char *fmt, ...)
{
	va_list ap;
	/* What was decoded so far is of no use to the writer. */
	wire_batch_free(it->batch);
	wire_msg_free(it->birth);
	wire_msg_free(it->poll);
	wire_msg_free(it->result);
	it->batch = NULL;
	it->birth = NULL;
	it->poll = NULL;
	it->result = NULL;
	it->kind = BRG_ITEM_REJECT;
	it->reason = reason;
	va_start(ap, fmt);
	vsnprintf(it->detail, sizeof(it->detail), fmt, ap);
	va_end(ap);
	wire_utf8_sanitize(it->detail); /* it quotes the peer, maybe cut mid-character */
	return BRG_OK;
}

/* Map a body/envelope decode failure to a reason. */
static const char *decode_reason(int rc)
{
	if (rc == WIRE_ELIMIT)
		return BRG_R_OVERSIZE;
	if (rc == WIRE_EVERSION)
		return BRG_R_VERSION;
	return BRG_R_DECODE;
}

static const char *cert_reason(int rc)
{
	switch (rc) {
	case WIRE_ECHAIN:
		return BRG_R_CHAIN;
	case WIRE_EREVOKED:
		return BRG_R_REVOKED;
	case WIRE_EEXPIRED:
		return BRG_R_EXPIRED;
	case WIRE_ELIMIT:
		return BRG_R_OVERSIZE;
	case WIRE_ECRL:
		return BRG_R_CRL;
	default:
		return BRG_R_CERT;
	}
}

static uint32_t topic_kind(enum wire_topic t)
{
	switch (t) {
	case WIRE_TOPIC_BIRTH:
		return WIRE_KIND_BIRTH;
	case WIRE_TOPIC_TELEMETRY:
		return WIRE_KIND_BATCH;
	case WIRE_TOPIC_TASKS_POLL:
		return WIRE_KIND_TASK_POLL;
	case WIRE_TOPIC_TASKS_RESULT:
		return WIRE_KIND_TASK_RESULT;
	default:
		return 0;
	}
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Registry lookup that rides out a short store outage. */
static int lookup(struct brg_verifier *v, const char *id, int64_t max_age,
                  struct brg_dev_info *info)
{
	for (int waited = 0;; waited += 100) {
		int rc = brg_registry_get(v->reg, id, max_age, info);
		if (rc != BRG_ESTORE || waited >= STORE_RETRY_MS)
			return rc;
		sleep_ms(100);
	}
}

/* The store could not be read: the message is dropped without a verdict (and without an
 * acknowledgement: the device sends it again). */
static int unjudged(struct brg_item *it)
{
	it->kind = BRG_ITEM_DROP;
	snprintf(it->detail, sizeof(it->detail), "store unreadable: message dropped unjudged");
	return BRG_OK;
}

static int status(struct brg_item *it, const struct brg_msg *m)
{
	it->kind = BRG_ITEM_STATUS;
	it->retained = m->retained;
	if (m->len == 6 && !memcmp(m->payload, "online", 6))
		it->online = 1;
	else if (m->len == 7 && !memcmp(m->payload, "offline", 7))
		it->online = 0;
	else
		return reject(it, BRG_R_STATUS, "status payload is not online/offline (%zu bytes)",
		              m->len);
	return BRG_OK;
}

static int birth(struct brg_verifier *v, struct brg_item *it, const struct wire_env *env,
                 const struct brg_dev_info *info)
{
	struct wire_diag d = {""};
	struct wire_cert_info cert;
	int rc = wire_birth_decode(env->body, env->body_len, &it->birth, &d);
	if (rc)
		return reject(it, decode_reason(rc), "birth: %s", d.msg);
	const char *pem = it->birth->cert_pem;
	rc = check_cert(v, pem, strlen(pem), &cert, &d, &it->ca_gen);
	if (rc == WIRE_EREVOKED && !wire_cert_parse(pem, strlen(pem), &cert, NULL)) {
		/* Only the device's own certificate, with its key, may revoke it in the store:
		 * another's on its topic is a forgery like any other. */
		if (strcmp(cert.cn, it->device))
			return reject(it, BRG_R_CN,
			              "birth: certificate CN '%s' is not the topic's id (and it is "
			              "revoked)",
			              cert.cn);
		if (wire_env_verify(env, &cert.key))
			return reject(
			    it, BRG_R_SIG,
			    "birth seq %llu: signature does not verify with its (revoked) "
			    "certificate",
			    (unsigned long long)env->seq);
		reject(it, BRG_R_REVOKED, "birth: %s", d.msg[0] ? d.msg : wire_strerror(rc));
		it->key = cert.key;
		it->crl_revoked = 1;
		return BRG_OK;
	}
	if (rc)
		return reject(it, cert_reason(rc), "birth: %s",
		              d.msg[0] ? d.msg : wire_strerror(rc));
	if (strcmp(cert.cn, it->device))
		return reject(it, BRG_R_CN, "birth: certificate CN '%s' is not the topic's id",
		              cert.cn);
	if (wire_env_verify(env, &cert.key))
		return reject(it, BRG_R_SIG,
		              "birth seq %llu: signature does not verify with its certificate",
		              (unsigned long long)env->seq);
	/* A new key for a device cached with one: the store's view of the device, not the
	 * cache's (a device the verifiers hold as active for good may have been revoked by
	 * outpostctl since), so that what stays beside the pending Birth (the key and whether it
	 * is revoked) is what the store holds. Without a key the cache is at most a second old
	 * (brg_registry_get): a new device's first Birth costs no second read. */
	struct brg_dev_info stored;
	if (info->has_key && memcmp(info->key.raw, cert.key.raw, sizeof(cert.key.raw))) {
		if (lookup(v, it->device, 0, &stored))
			return unjudged(it);
		info = &stored;
	}
	/* Revocation holds the enrolled key: a certificate re-issued for it (not on the CRL, or
	 * a device revoked in the store only) does not lift it; a new key does (a rotation). The
	 * writer's gate decides with the store's key; this saves it the obvious cases. */
	if (info->state == BRG_ST_REVOKED && info->has_key &&
	    !memcmp(info->key.raw, cert.key.raw, sizeof(cert.key.raw)))
		return reject(it, BRG_R_REVOKED, "birth refused: device revoked (same key)");
	it->kind = BRG_ITEM_BIRTH;
	it->key = cert.key;
	/* Provisional, so this device's next envelopes verify before the writer commits the
	 * enrolment (they are marked so, and the writer judges them only once it holds this
	 * key); the store's view stays beside it until the writer has stored the key. */
	struct brg_dev_info now = {.state = info->state, .has_key = 1, .key = cert.key};
	if (now.state == BRG_ST_NONE || now.state == BRG_ST_UNENROLLED ||
	    now.state == BRG_ST_REVOKED)
		now.state = BRG_ST_ACTIVE;
	brg_registry_put_birth(v->reg, it->device, &now);
	return BRG_OK;
}

static int body(struct brg_item *it, const struct wire_env *env, const struct brg_msg *m)
{
	struct wire_diag d = {""};
	char own[WIRE_TOPIC_MAX];
	int rc;

	switch (env->kind) {
	case WIRE_KIND_BATCH:
		rc = wire_batch_decode(env->body, env->body_len, &it->batch, &d);
		if (rc)
			return reject(it, decode_reason(rc), "batch seq %llu: %s",
			              (unsigned long long)env->seq, d.msg);
		it->prev_seq = it->batch->prev_seq;
		for (size_t i = 0; i < it->batch->n_dropped; i++)
			if (it->batch->dropped[i].last_seq >= env->seq)
				return reject(it, BRG_R_SEQ,
				              "batch seq %llu: dropped range ends at %llu",
				              (unsigned long long)env->seq,
				              (unsigned long long)it->batch->dropped[i].last_seq);
		it->kind = BRG_ITEM_BATCH;
		break;
	case WIRE_KIND_TASK_RESULT:
		rc = wire_task_result_decode(env->body, env->body_len, &it->result, &d);
		if (rc)
			return reject(it, decode_reason(rc), "task result seq %llu: %s",
			              (unsigned long long)env->seq, d.msg);
		it->prev_seq = it->result->prev_seq;
		it->kind = BRG_ITEM_RESULT;
		break;
	case WIRE_KIND_TASK_POLL:
		wire_topic_build(own, sizeof(own), WIRE_TOPIC_TASKS, it->device);
		/* Answer only on the polling device's own tasks topic (PROTOCOL.md 6). */
		if (!m->resp_topic || strcmp(m->resp_topic, own))
			return reject(it, BRG_R_RESPONSE, "poll seq %llu: response topic %s%.80s%s",
			              (unsigned long long)env->seq, m->resp_topic ? "'" : "",
			              m->resp_topic ? m->resp_topic : "missing",
			              m->resp_topic ? "' is not the device's own" : "");
		if (m->corr && m->corr_len > BRG_CORR_MAX)
			return reject(it, BRG_R_OVERSIZE,
			              "poll seq %llu: correlation data %zu bytes, limit %d",
			              (unsigned long long)env->seq, m->corr_len, BRG_CORR_MAX);
		rc = wire_task_poll_decode(env->body, env->body_len, &it->poll, &d);
		if (rc)
			return reject(it, decode_reason(rc), "poll seq %llu: %s",
			              (unsigned long long)env->seq, d.msg);
		if (m->corr) {
			memcpy(it->corr, m->corr, m->corr_len);
			it->corr_len = m->corr_len;
			it->has_corr = 1;
		}
		it->kind = BRG_ITEM_POLL;
		return BRG_OK;
	default:
		return reject(it, BRG_R_KIND, "kind %u", env->kind);
	}
	if (it->prev_seq >= env->seq)
		return reject(it, BRG_R_SEQ, "seq %llu: prev_seq %llu is not below it",
		              (unsigned long long)env->seq, (unsigned long long)it->prev_seq);
	return BRG_OK;
}

static int judge(struct brg_verifier *v, struct brg_item *it, const struct brg_msg *m)
{
	enum wire_topic t;
	struct wire_env env;
	struct wire_diag d = {""};
	struct brg_dev_info info;
	int rc;

	/* 1. topic */
	if (wire_topic_parse(m->topic, strlen(m->topic), it->device, &t)) {
		it->device[0] = '\0';
		return reject(it, BRG_R_TOPIC, "not an Outpost topic: %.100s", m->topic);
	}
	if (t == WIRE_TOPIC_STATUS)
		return status(it, m);
	uint32_t want = topic_kind(t);
	if (!want)
		return reject(it, BRG_R_TOPIC, "not an uplink topic: %.100s", m->topic);
	rc = lookup(v, it->device, -1, &info);
	if (rc)
		return unjudged(it);
	/* Quarantined and revoked devices: dropped and counted without further work. */
	if (info.state == BRG_ST_QUARANTINED)
		return reject(it, BRG_R_QUARANTINED, "%s dropped: device quarantined",
		              wire_topic_suffix(t));
	/* A revoked device comes back only through a Birth with a new key (below). */
	if (info.state == BRG_ST_REVOKED && t != WIRE_TOPIC_BIRTH)
		return reject(it, BRG_R_REVOKED, "%s refused: device revoked",
		              wire_topic_suffix(t));

	/* 2. size, envelope, kind */
	if (m->len > WIRE_MAX_ENVELOPE)
		return reject(it, BRG_R_OVERSIZE, "payload %zu bytes, limit %d", m->len,
		              WIRE_MAX_ENVELOPE);
	rc = wire_env_decode(m->payload, m->len, &env, &d);
	if (rc)
		return reject(it, decode_reason(rc), "envelope: %s",
		              d.msg[0] ? d.msg : wire_strerror(rc));
	if (env.kind != want)
		return reject(it, BRG_R_KIND, "%s envelope on the %s topic",
		              wire_kind_name(env.kind), wire_topic_suffix(t));
	/* 3. id */
	if (strcmp(env.device_id, it->device))
		return reject(it, BRG_R_ID, "envelope of '%s' on this device's topic",
		              env.device_id);
	if (env.seq == 0 || env.seq > (uint64_t)INT64_MAX)
		return reject(it, BRG_R_SEQ, "seq %llu out of range", (unsigned long long)env.seq);
	it->seq = env.seq;
	it->sent_at_ms = env.sent_at_ms;
	memcpy(it->sig, env.sig, sizeof(it->sig));

	/* 4-5. enrolment and signature (a Birth brings its own certificate) */
	if (env.kind == WIRE_KIND_BIRTH)
		return birth(v, it, &env, &info);
	if (!info.has_key)
		return reject(it, BRG_R_UNKNOWN, "%s seq %llu before any valid birth",
		              wire_kind_name(env.kind), (unsigned long long)env.seq);
	/* it->key: the key that verified it, which the writer compares with the one it holds
	 * (this cache may hold a key another bridge of the group has rotated away from) */
	if (!wire_env_verify(&env, &info.key)) {
		it->key = info.key;
		/* a Birth's key the writer may not hold yet: it judges the item once it does */
		it->provisional = info.provisional;
	} else if (info.provisional && info.has_enrolled &&
	           !wire_env_verify(&env, &info.enrolled)) {
		/* with the key the store holds: sealed before the device's new Birth; a Birth
		 * with a new key does not lift a revocation of this one */
		if (info.enrolled_revoked)
			return reject(it, BRG_R_REVOKED,
			              "%s seq %llu refused: signed with the revoked key",
			              wire_kind_name(env.kind), (unsigned long long)env.seq);
		it->key = info.enrolled;
	} else {
		/* Another bridge may have re-enrolled the device: ask the store once (unreadable:
		 * no verdict, a bad signature counts toward quarantine). */
		struct brg_dev_info again;
		if (lookup(v, it->device, 0, &again))
			return unjudged(it);
		if (!again.has_key ||
		    !memcmp(again.key.raw, info.key.raw, sizeof(info.key.raw)) ||
		    wire_env_verify(&env, &again.key))
			return reject(it, BRG_R_SIG, "%s seq %llu: signature does not verify",
			              wire_kind_name(env.kind), (unsigned long long)env.seq);
		it->key = again.key;
	}
	/* 6. body */
	return body(it, &env, m);
}

int brg_verify(struct brg_verifier *v, struct brg_msg *msg, struct brg_item **out)
{
	struct brg_item *it = calloc(1, sizeof(*it));
	if (!it) {
		free(msg);
		return BRG_ENOMEM;
	}
	it->cost = msg->cost;
	judge(v, it, msg);
	free(msg);
	*out = it;
	return BRG_OK;
}
