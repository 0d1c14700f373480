/* dev_link.c - Paho MQTTAsync connection: WSS then MQTTS, proxy, mutual TLS, jittered backoff. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <MQTTAsync.h>

#include "ocall.h"
#include "orand.h"
#include "otime.h"
#include "dev_link.h"

#define EVENT_QUEUE_CAP 256
#define CTX_SLOTS 8 /* callback contexts outlive their Paho client by 8 generations */
#define MAX_SUBS 8

enum state { ST_IDLE, ST_CONNECTING, ST_UP };

struct ctx_slot {
	struct dev_link *link;
	unsigned gen;
	const char *uri;
	char tls_error[128]; /* OpenSSL's first reason for this attempt, "" if none (under mu) */
};

/* A message from the broker, waiting for the agent thread. */
struct queued {
	char *topic;
	uint8_t *data;
	size_t len;
	uint8_t *corr;
	size_t corr_len;
	unsigned gen;
	uint64_t order; /* when it happened, against the state changes */
};

/* The state changes of the current client. Each kind happens at most once per client (one
 * connect, one subscription round; the first DOWN or FAILED ends the client, and what follows
 * it is moot), so each has a place of its own, filled without allocating: a full message queue
 * or a failed malloc cannot lose one, and a link that misses its DOWN would never reconnect. */
enum { PENDING_UP, PENDING_SUBSCRIBED, PENDING_END, PENDING_KINDS };

struct pending {
	int set;
	enum dev_link_event_type type;
	int unexplained;
	uint64_t order;
	char text[DEV_LINK_TEXT_MAX];
};

struct dev_link {
	/* configuration (owned copies) */
	char *client_id, *ca, *cert, *key, *proxy, *will_topic;
	char *uris[2];
	int nuris;
	char *subs[MAX_SUBS];
	int nsubs;
	int keepalive_s, connect_timeout_s;
	int64_t backoff_min_ms, backoff_max_ms, reconnect_spread_ms;
	void (*wake)(void *);
	void *wake_ctx;

	/* agent-thread state */
	MQTTAsync cli;
	int uri;	/* which of uris[] this attempt uses: WSS first, then MQTTS */
	enum state state;
	unsigned gen;
	int64_t next_attempt;
	unsigned failures_in_row;
	int64_t first_window_ms; /* the window of this run of failures' first retry */
	int64_t up_since;	 /* when the current connection got its subscriptions; 0: not */
	uint64_t rng;

	/* shared with Paho threads */
	pthread_mutex_t mu;
	struct ctx_slot slots[CTX_SLOTS];
	struct queued q[EVENT_QUEUE_CAP];
	size_t qhead, qlen;
	struct pending pending[PENDING_KINDS]; /* the current generation's; cleared with it */
	uint64_t order;
	struct dev_link_stats stats;

	/* dev_link_free of a link still connecting: its client, destroyed on a thread of its own
	 * (destroy_connecting_client) */
	MQTTAsync dying;
	int anchored; /* holds a reference to the anchor client (anchor_take) */
	struct dev_link *next_abandoned;
};

/* Links whose client was still being destroyed when dev_link_free gave up waiting: they stay,
 * for the client's late callbacks, until the process ends (a root, so no leak is reported). */
static struct dev_link *abandoned;

const char *dev_link_strerror(int err)
{
	switch (err) {
	case DEV_LINK_OK: return "success";
	case DEV_LINK_ENOMEM: return "out of memory";
	case DEV_LINK_EINVAL: return "invalid argument";
	case DEV_LINK_ENOTCONN: return "not connected";
	case DEV_LINK_EPAHO: return "MQTT library error";
	}
	return "unknown link error";
}

void dev_link_event_free(struct dev_link_event *ev)
{
	if (!ev)
		return;
	free(ev->data);
	free(ev->corr);
	memset(ev, 0, sizeof(*ev));
}

static void queued_free(struct queued *q)
{
	free(q->topic);
	free(q->data);
	free(q->corr);
	memset(q, 0, sizeof(*q));
}

/* ---------- events (any thread) ---------- */

/* A state change of slot's client. One of an earlier client is dropped: the agent would skip
 * it anyway. */
static void push_state(struct ctx_slot *slot, enum dev_link_event_type type, int unexplained,
		       const char *text)
{
	struct dev_link *l = slot->link;
	int kind = type == DEV_LINK_UP ? PENDING_UP
		 : type == DEV_LINK_SUBSCRIBED ? PENDING_SUBSCRIBED : PENDING_END;
	pthread_mutex_lock(&l->mu);
	struct pending *p = &l->pending[kind];
	if (slot->gen == l->gen && !p->set) {
		p->set = 1;
		p->type = type;
		p->unexplained = unexplained;
		p->order = l->order++;
		snprintf(p->text, sizeof(p->text), "%s", text ? text : "");
		if (l->wake) /* under the lock: a link given up at dev_link_free clears it */
			l->wake(l->wake_ctx);
	}
	pthread_mutex_unlock(&l->mu);
}

/* A message: copied, and queued if there is room. */
static void push_message(struct ctx_slot *slot, const char *topic, const void *data, size_t len,
			 const void *corr, size_t corr_len)
{
	struct dev_link *l = slot->link;
	struct queued e = {.len = len, .corr_len = corr_len};
	e.topic = strdup(topic);
	if (len && (e.data = malloc(len)))
		memcpy(e.data, data, len);
	if (corr_len && (e.corr = malloc(corr_len)))
		memcpy(e.corr, corr, corr_len);
	int ok = e.topic && (!len || e.data) && (!corr_len || e.corr);
	pthread_mutex_lock(&l->mu);
	if (ok && l->qlen < EVENT_QUEUE_CAP) {
		e.gen = slot->gen;
		e.order = l->order++;
		l->q[(l->qhead + l->qlen) % EVENT_QUEUE_CAP] = e;
		l->qlen++;
		ok = 2;
	} else {
		l->stats.dropped_events++;
	}
	if (l->wake) /* under the lock: a link given up at dev_link_free clears it */
		l->wake(l->wake_ctx);
	pthread_mutex_unlock(&l->mu);
	if (ok != 2)
		queued_free(&e);
}

/* ---------- Paho callbacks (Paho threads) ---------- */

static void on_connected(void *context, MQTTAsync_successData5 *resp)
{
	(void)resp;
	/* The agent thread subscribes when it takes this event (dev_link_next_event), before it
	 * publishes anything: the client is its to use, and no ack can slip past. */
	push_state(context, DEV_LINK_UP, 0, ((struct ctx_slot *)context)->uri);
}

/* A refused subscription (an ACL that does not match the device id) means no ack and no task
 * ever arrives: the connection is useless, and the log must say why. */
static void subscription_refused(struct ctx_slot *slot, int reason)
{
	char why[160];
	const char *name = MQTTReasonCode_toString((enum MQTTReasonCodes)reason);
	snprintf(why, sizeof(why), "the broker refused the subscriptions: %s (reason %d)",
		 name ? name : "?", reason);
	push_state(slot, DEV_LINK_DOWN, 0, why);
}

static void on_subscribed(void *context, MQTTAsync_successData5 *r)
{
	if (r->alt.sub.reasonCodeCount > 0 && r->alt.sub.reasonCodes) {
		for (int i = 0; i < r->alt.sub.reasonCodeCount; i++)
			if (r->alt.sub.reasonCodes[i] >= MQTTREASONCODE_UNSPECIFIED_ERROR) {
				subscription_refused(context, r->alt.sub.reasonCodes[i]);
				return;
			}
	} else if (r->reasonCode >= MQTTREASONCODE_UNSPECIFIED_ERROR) {
		subscription_refused(context, r->reasonCode);
		return;
	}
	push_state(context, DEV_LINK_SUBSCRIBED, 0, "");
}

static void on_subscribe_failed(void *context, MQTTAsync_failureData5 *r)
{
	subscription_refused(context, r ? (int)r->reasonCode : -1);
}

/* Paho hands OpenSSL's error queue here, one line per error, as
 * "thread:error:code:library:function:reason:file:line:data". Keep the first reason: Paho's
 * own failure text ("TCP/TLS connect failure") does not tell a blocked port from a refused
 * certificate. */
static int on_tls_error(const char *str, size_t len, void *context)
{
	struct ctx_slot *slot = context;
	char line[512];
	snprintf(line, sizeof(line), "%.*s", (int)(len < sizeof(line) ? len : sizeof(line) - 1), str);
	line[strcspn(line, "\r\n")] = '\0';
	char *reason = line;
	for (int field = 0; field < 5 && reason; field++)
		if ((reason = strchr(reason, ':')))
			reason++;
	if (reason && *reason)
		reason[strcspn(reason, ":")] = '\0';
	else
		reason = line; /* another shape: keep the whole line */
	pthread_mutex_lock(&slot->link->mu);
	if (!slot->tls_error[0])
		snprintf(slot->tls_error, sizeof(slot->tls_error), "%.127s", reason);
	pthread_mutex_unlock(&slot->link->mu);
	return 0;
}

static void on_connect_failed(void *context, MQTTAsync_failureData5 *resp)
{
	struct ctx_slot *slot = context;
	char why[300], tls[sizeof(slot->tls_error)];
	pthread_mutex_lock(&slot->link->mu);
	snprintf(tls, sizeof(tls), "%s", slot->tls_error);
	pthread_mutex_unlock(&slot->link->mu);
	snprintf(why, sizeof(why), "%s: %s (code %d, reason %d)%s%s", slot->uri,
		 resp && resp->message ? resp->message : "connection failed", resp ? resp->code : 0,
		 resp ? (int)resp->reasonCode : 0, tls[0] ? "; TLS: " : "", tls);
	/* neither TLS nor the broker said why: a refused, unreachable or unnamed broker */
	int unexplained = !tls[0] && (!resp || (resp->code == MQTTASYNC_FAILURE && !resp->reasonCode));
	push_state(context, DEV_LINK_FAILED, unexplained, why);
}

static void on_lost(void *context, char *cause)
{
	push_state(context, DEV_LINK_DOWN, 0, cause ? cause : "connection lost");
}

/* An MQTT v5 DISCONNECT from the broker (a kick: revoked certificate, session taken over,
 * administrative action). Paho does not report it as a lost connection. */
static void on_disconnected(void *context, MQTTProperties *props, enum MQTTReasonCodes reason)
{
	char why[160];
	(void)props;
	snprintf(why, sizeof(why), "disconnected by the broker: %s (reason %d)",
		 MQTTReasonCode_toString(reason) ? MQTTReasonCode_toString(reason) : "?",
		 (int)reason);
	push_state(context, DEV_LINK_DOWN, 0, why);
}

static int on_message(void *context, char *topic, int topic_len, MQTTAsync_message *m)
{
	char t[256];
	size_t tl = topic_len > 0 ? (size_t)topic_len : strlen(topic);
	const void *corr = NULL;
	size_t corr_len = 0;
	if (tl >= sizeof(t))
		tl = sizeof(t) - 1;
	memcpy(t, topic, tl);
	t[tl] = '\0';
	MQTTProperty *p = MQTTProperties_getProperty(&m->properties, MQTTPROPERTY_CODE_CORRELATION_DATA);
	if (p) {
		corr = p->value.data.data;
		corr_len = (size_t)p->value.data.len;
	}
	push_message(context, t, m->payload, (size_t)m->payloadlen, corr, corr_len);
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

/* ---------- lifecycle (agent thread) ---------- */

static char *dup_or_null(const char *s)
{
	return s && *s ? strdup(s) : NULL;
}

/* Paho tears its global state down when its last client goes (MQTTAsync_terminate) and sets
 * it up again at the next create. Its threads log on after they report themselves stopped, and
 * a line logged during the teardown allocates the trace buffer anew, which the next set-up
 * then loses: LeakSanitizer found 124,800 bytes (400 trace entries) lost in libpaho-mqtt3as
 * now and then after a reconnect, and the heap records of allocations under way. One client
 * that never connects, held while any link lives, keeps that state: a reconnect destroys one
 * client and creates the next without a teardown, and Paho's two threads stay up between
 * connections instead of being stopped (up to 10 s) and started again. One per process, not
 * per link: Paho's threads walk every client at each turn (bench_fleet runs 10,000 links). */
static pthread_mutex_t anchor_mu = PTHREAD_MUTEX_INITIALIZER;
static MQTTAsync anchor;  /* under anchor_mu */
static size_t anchor_refs; /* under anchor_mu */

static int anchor_take(void)
{
	int rc = 0;
	pthread_mutex_lock(&anchor_mu);
	if (!anchor_refs && MQTTAsync_create(&anchor, "tcp://127.0.0.1:1", "outpost-anchor",
					     MQTTCLIENT_PERSISTENCE_NONE, NULL) != MQTTASYNC_SUCCESS)
		rc = -1;
	else
		anchor_refs++;
	pthread_mutex_unlock(&anchor_mu);
	return rc;
}

/* The last link gone: Paho's state goes with the anchor. */
static void anchor_release(void)
{
	pthread_mutex_lock(&anchor_mu);
	if (anchor_refs && !--anchor_refs)
		MQTTAsync_destroy(&anchor);
	pthread_mutex_unlock(&anchor_mu);
}

int dev_link_new(const struct dev_link_opts *o, void (*wake)(void *ctx), void *ctx,
		 struct dev_link **out)
{
	if (!o || !out || !o->host || !o->client_id || !o->ca_file || !o->cert_file ||
	    !o->key_file || (!o->wss_port && !o->mqtts_port))
		return DEV_LINK_EINVAL;
	struct dev_link *l = calloc(1, sizeof(*l));
	if (!l)
		return DEV_LINK_ENOMEM;
	pthread_mutex_init(&l->mu, NULL);
	l->client_id = strdup(o->client_id);
	l->ca = strdup(o->ca_file);
	l->cert = strdup(o->cert_file);
	l->key = strdup(o->key_file);
	l->proxy = dup_or_null(o->proxy);
	l->will_topic = dup_or_null(o->will_topic);
	if (o->wss_port && asprintf(&l->uris[l->nuris++], "wss://%s:%d%s", o->host, o->wss_port,
				    o->ws_path && *o->ws_path ? o->ws_path : "/mqtt") < 0)
		l->uris[--l->nuris] = NULL;
	if (o->mqtts_port && asprintf(&l->uris[l->nuris++], "ssl://%s:%d", o->host, o->mqtts_port) < 0)
		l->uris[--l->nuris] = NULL;
	for (int i = 0; o->subscribe && o->subscribe[i] && i < MAX_SUBS; i++)
		l->subs[l->nsubs++] = strdup(o->subscribe[i]);
	l->keepalive_s = o->keepalive_s > 0 ? o->keepalive_s : 60;
	l->connect_timeout_s = o->connect_timeout_s > 0 ? o->connect_timeout_s : 30;
	l->backoff_min_ms = o->backoff_min_ms > 0 ? o->backoff_min_ms : 1000;
	l->backoff_max_ms = o->backoff_max_ms >= l->backoff_min_ms ? o->backoff_max_ms : 300000;
	l->reconnect_spread_ms = o->reconnect_spread_ms > 0 ? o->reconnect_spread_ms : 0;
	l->wake = wake;
	l->wake_ctx = ctx;
	l->state = ST_IDLE;
	l->next_attempt = 0; /* connect at once */

	l->rng = orand_seed();
	l->anchored = anchor_take() == 0;

	int ok = l->anchored && l->client_id && l->ca && l->cert && l->key && l->nuris &&
		 (!o->proxy || !*o->proxy || l->proxy) && (!o->will_topic || l->will_topic);
	for (int i = 0; i < l->nsubs; i++)
		ok = ok && l->subs[i];
	if (!ok) {
		dev_link_free(l);
		return DEV_LINK_ENOMEM;
	}
	*out = l;
	return DEV_LINK_OK;
}

/* The link's client, taken out of it: from here on its callbacks change nothing. */
static MQTTAsync take_client(struct dev_link *l)
{
	pthread_mutex_lock(&l->mu);
	MQTTAsync cli = l->cli;
	l->cli = NULL;
	l->gen++; /* late callbacks of the old client are ignored */
	memset(l->pending, 0, sizeof(l->pending));
	pthread_mutex_unlock(&l->mu);
	return cli;
}

static void destroy_client(struct dev_link *l, int disconnect)
{
	if (!l->cli)
		return;
	if (disconnect && l->state == ST_UP) {
		MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
		d.timeout = 1000;
		MQTTAsync_disconnect(l->cli, &d);
		/* give the DISCONNECT a moment to leave; the will must not fire on a clean stop */
		for (int i = 0; i < 50 && MQTTAsync_isConnected(l->cli); i++)
			usleep(20000);
	}
	MQTTAsync cli = take_client(l);
	MQTTAsync_destroy(&cli);
	l->state = ST_IDLE;
}

/* MQTTAsync_destroy of the client of a link still connecting, on a thread of ocall_until's. */
static void destroy_dying(void *arg)
{
	struct dev_link *l = arg;
	MQTTAsync_destroy(&l->dying);
}

/* Destroy the client of a link that is still connecting, waiting at most ms. Paho's destroy
 * waits for its global lock, which its thread holds through the name lookup of the broker
 * (getaddrinfo: no connect_timeout bounds it) and the proxy's CONNECT: a stop would wait for
 * a slow resolver. 0, or -1 if the destroy is still under way: then the link must stay (the
 * client may still call back into it), and its owner is not woken again. */
static int destroy_connecting_client(struct dev_link *l, int64_t ms)
{
	l->dying = take_client(l); /* read only by destroy_dying, on the thread started after */
	l->state = ST_IDLE;
	/* no late: a link given up on is kept to the process's exit (abandoned), so the destroy
	 * and the client's callbacks never outlive it */
	int rc = ocall_until(destroy_dying, l, NULL, otime_mono_ms() + ms);
	if (rc == OCALL_ELATE) {
		pthread_mutex_lock(&l->mu);
		l->wake = NULL;
		pthread_mutex_unlock(&l->mu);
		return -1;
	}
	if (rc)
		destroy_dying(l); /* no thread: wait as long as it takes */
	return 0;
}

int dev_link_any_abandoned(void)
{
	return abandoned != NULL;
}

void dev_link_free(struct dev_link *l)
{
	if (!l)
		return;
	if (l->cli && l->state == ST_CONNECTING) {
		if (destroy_connecting_client(l, DEV_LINK_FREE_WAIT_MS)) {
			l->next_abandoned = abandoned;
			abandoned = l;
			return;
		}
	}
	destroy_client(l, 1);
	if (l->anchored)
		anchor_release();
	for (size_t i = 0; i < l->qlen; i++)
		queued_free(&l->q[(l->qhead + i) % EVENT_QUEUE_CAP]);
	free(l->client_id);
	free(l->ca);
	free(l->cert);
	free(l->key);
	free(l->proxy);
	free(l->will_topic);
	for (int i = 0; i < 2; i++)
		free(l->uris[i]);
	for (int i = 0; i < l->nsubs; i++)
		free(l->subs[i]);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

/* A connection that worked: the next failure starts the backoff afresh. */
static void settled(struct dev_link *l)
{
	l->failures_in_row = 0;
	l->first_window_ms = 0;
}

/* The current connection ends: it worked if it was up, with its subscriptions, for
 * DEV_LINK_STABLE_MS. One that is dropped sooner (a broker that takes the session over for
 * another client on the same certificate, kicks at once, or refuses the subscriptions) is one
 * more failure: its retries back off to backoff_max like those of any failure. */
static void connection_ended(struct dev_link *l, int64_t now)
{
	if (l->up_since && now - l->up_since >= DEV_LINK_STABLE_MS)
		settled(l);
	l->up_since = 0;
}

static void schedule_retry(struct dev_link *l, int64_t now)
{
	unsigned shift = l->failures_in_row > 0 ? l->failures_in_row - 1 : 0;
	int64_t cap = l->first_window_ms > l->backoff_min_ms ? l->first_window_ms : l->backoff_min_ms;
	while (shift-- && cap < l->backoff_max_ms)
		cap *= 2;
	if (cap > l->backoff_max_ms)
		cap = l->backoff_max_ms;
	/* full jitter: anywhere in [0, cap], so a fleet spreads out after a broker restart */
	int64_t delay = (int64_t)(orand_next(&l->rng) % (uint64_t)(cap + 1));
	l->next_attempt = now + delay;
	pthread_mutex_lock(&l->mu);
	l->stats.last_delay_ms = delay;
	l->stats.last_window_ms = cap;
	pthread_mutex_unlock(&l->mu);
}

static int start_connect(struct dev_link *l)
{
	MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
	MQTTAsync_connectOptions c = MQTTAsync_connectOptions_initializer5_ws;
	if (strncmp(l->uris[l->uri], "wss://", 6) != 0) {
		MQTTAsync_connectOptions plain = MQTTAsync_connectOptions_initializer5;
		c = plain;
	}
	MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
	MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
	MQTTAsync cli = NULL;

	co.sendWhileDisconnected = 0;
	/* One client per URI: Paho 1.3.12 keeps the WebSocket flag when its own serverURIs list
	 * moves from wss:// to ssl://, so the fallback would speak HTTP to an MQTT port. */
	if (MQTTAsync_createWithOptions(&cli, l->uris[l->uri], l->client_id,
					MQTTCLIENT_PERSISTENCE_NONE, NULL, &co) != MQTTASYNC_SUCCESS)
		return DEV_LINK_EPAHO;
	pthread_mutex_lock(&l->mu);
	struct ctx_slot *slot = &l->slots[l->gen % CTX_SLOTS];
	slot->link = l;
	slot->gen = l->gen;
	slot->uri = l->uris[l->uri];
	slot->tls_error[0] = '\0';
	l->cli = cli;
	pthread_mutex_unlock(&l->mu);
	if (MQTTAsync_setCallbacks(cli, slot, on_lost, on_message, NULL) != MQTTASYNC_SUCCESS ||
	    MQTTAsync_setDisconnected(cli, slot, on_disconnected) != MQTTASYNC_SUCCESS)
		goto fail;

	ssl.trustStore = l->ca;
	ssl.keyStore = l->cert;
	ssl.privateKey = l->key;
	ssl.enableServerCertAuth = 1;
	ssl.verify = 1; /* check the broker's name against its certificate */
	/* ignored by Paho 1.3.x on OpenSSL >= 1.1.0 (TLS_client_method: 1.3 when the broker
	 * offers it; OpenSSL 3 refuses < 1.2 at Paho's security level 1); pins 1.2 on 1.0.x */
	ssl.sslVersion = MQTT_SSL_VERSION_TLS_1_2;
	ssl.disableDefaultTrustStore = 1; /* only the provisioned CA */
	ssl.ssl_error_cb = on_tls_error;
	ssl.ssl_error_context = slot;
	if (l->will_topic) {
		will.topicName = l->will_topic;
		will.message = "offline";
		will.retained = 1;
		will.qos = 1;
		c.will = &will;
	}
	c.ssl = &ssl;
	c.keepAliveInterval = l->keepalive_s;
	c.connectTimeout = l->connect_timeout_s;
	c.cleanstart = 1;
	c.automaticReconnect = 0; /* ours has jitter */
	c.httpsProxy = l->proxy;
	c.maxInflight = 1024;
	c.onSuccess5 = on_connected;
	c.onFailure5 = on_connect_failed;
	c.context = slot;
	/* Paho starts its send and receive threads here: signals are the agent thread's
	 * business (a TERM taken on one of them, while main is deciding to execute itself again
	 * for a restart task, would go unread), so they start with every signal blocked. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int crc = MQTTAsync_connect(cli, &c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (crc != MQTTASYNC_SUCCESS)
		goto fail;
	l->state = ST_CONNECTING;
	return DEV_LINK_OK;
fail:
	destroy_client(l, 0);
	return DEV_LINK_EPAHO;
}

int64_t dev_link_tick(struct dev_link *l, int64_t now)
{
	if (l->state != ST_IDLE)
		return INT64_MAX;
	if (now < l->next_attempt)
		return l->next_attempt;
	if (start_connect(l) != DEV_LINK_OK) {
		l->failures_in_row++;
		pthread_mutex_lock(&l->mu);
		l->stats.failures++;
		snprintf(l->stats.last_cause, sizeof(l->stats.last_cause), "cannot start a connection");
		pthread_mutex_unlock(&l->mu);
		schedule_retry(l, now);
		return l->next_attempt;
	}
	return INT64_MAX;
}

static void subscribe(struct dev_link *l)
{
	char *topics[MAX_SUBS];
	int qos[MAX_SUBS];
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	if (!l->nsubs || !l->cli)
		return;
	for (int i = 0; i < l->nsubs; i++) {
		topics[i] = l->subs[i];
		qos[i] = 1;
	}
	ro.onSuccess5 = on_subscribed;
	ro.onFailure5 = on_subscribe_failed;
	ro.context = &l->slots[l->gen % CTX_SLOTS];
	/* a failure to even send it is followed by the connection-lost event */
	MQTTAsync_subscribeMany(l->cli, l->nsubs, topics, qos, &ro);
}

int dev_link_next_event(struct dev_link *l, struct dev_link_event *ev)
{
	for (;;) {
		struct dev_link_event e = {.type = DEV_LINK_MESSAGE};
		struct queued m = {0};
		struct pending *p = NULL;
		int stale = 0;
		/* the oldest of the state changes and the messages */
		pthread_mutex_lock(&l->mu);
		for (int k = 0; k < PENDING_KINDS; k++)
			if (l->pending[k].set && (!p || l->pending[k].order < p->order))
				p = &l->pending[k];
		if (!p && !l->qlen) {
			pthread_mutex_unlock(&l->mu);
			return 0;
		}
		if (p && (!l->qlen || p->order < l->q[l->qhead].order)) {
			e.type = p->type;
			e.unexplained = p->unexplained;
			memcpy(e.text, p->text, sizeof(e.text));
			p->set = 0;
		} else {
			m = l->q[l->qhead];
			l->qhead = (l->qhead + 1) % EVENT_QUEUE_CAP;
			l->qlen--;
			stale = m.gen != l->gen;
		}
		pthread_mutex_unlock(&l->mu);
		if (stale) {
			queued_free(&m); /* from a client already destroyed */
			continue;
		}
		if (m.topic) {
			snprintf(e.text, sizeof(e.text), "%s", m.topic);
			free(m.topic);
			e.data = m.data;
			e.len = m.len;
			e.corr = m.corr;
			e.corr_len = m.corr_len;
		}
		int64_t now = otime_mono_ms();
		switch (e.type) {
		case DEV_LINK_UP:
			if (!l->nsubs)
				l->up_since = now; /* nothing to be granted: up is up */
			subscribe(l);
			l->state = ST_UP; /* failures_in_row is reset once the connection has stayed
					   * up, with its subscriptions granted, for a while
					   * (connection_ended): a broker refusing them, or kicking
					   * the device at once, must not be dialled every 30 s */
			pthread_mutex_lock(&l->mu);
			l->stats.connects++;
			snprintf(l->stats.uri, sizeof(l->stats.uri), "%.*s",
				 (int)sizeof(l->stats.uri) - 1, e.text); /* cut if longer */
			pthread_mutex_unlock(&l->mu);
			break;
		case DEV_LINK_DOWN:
		case DEV_LINK_FAILED:
			pthread_mutex_lock(&l->mu);
			if (e.type == DEV_LINK_DOWN)
				l->stats.disconnects++;
			else
				l->stats.failures++;
			snprintf(l->stats.last_cause, sizeof(l->stats.last_cause), "%.*s",
				 (int)sizeof(l->stats.last_cause) - 1, e.text); /* cut if longer */
			pthread_mutex_unlock(&l->mu);
			destroy_client(l, 0);
			connection_ended(l, now);
			if (e.type == DEV_LINK_FAILED && l->uri + 1 < l->nuris) {
				/* same attempt, next transport: no delay */
				l->uri++;
				l->next_attempt = now;
				e.fallback = 1;
				pthread_mutex_lock(&l->mu);
				l->stats.last_delay_ms = 0;
				l->stats.last_window_ms = 0;
				pthread_mutex_unlock(&l->mu);
				break;
			}
			l->uri = 0;
			/* a lost connection is likely everyone's (a broker restart): the fleet spreads
			 * its first retry over reconnect_spread, and the windows grow from there */
			if (e.type == DEV_LINK_DOWN)
				l->first_window_ms = l->reconnect_spread_ms;
			l->failures_in_row++;
			schedule_retry(l, now);
			break;
		case DEV_LINK_MESSAGE:
			break;
		case DEV_LINK_SUBSCRIBED:
			l->up_since = now;
			continue;
		}
		*ev = e;
		return 1;
	}
}

int dev_link_is_up(const struct dev_link *l)
{
	return l->state == ST_UP;
}

int dev_link_publish(struct dev_link *l, const char *topic, const void *payload, size_t len,
		     int qos, int retain, const char *response_topic, const void *corr,
		     size_t corr_len)
{
	MQTTAsync_message m = MQTTAsync_message_initializer;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	int rc;

	if (l->state != ST_UP || !l->cli)
		return DEV_LINK_ENOTCONN;
	if (len > INT32_MAX)
		return DEV_LINK_EINVAL;
	m.payload = (void *)payload;
	m.payloadlen = (int)len;
	m.qos = qos;
	m.retained = retain;
	if (response_topic) {
		MQTTProperty p = {.identifier = MQTTPROPERTY_CODE_RESPONSE_TOPIC};
		p.value.data.data = (char *)response_topic;
		p.value.data.len = (int)strlen(response_topic);
		MQTTProperties_add(&m.properties, &p);
	}
	if (corr && corr_len) {
		MQTTProperty p = {.identifier = MQTTPROPERTY_CODE_CORRELATION_DATA};
		p.value.data.data = (char *)corr;
		p.value.data.len = (int)corr_len;
		MQTTProperties_add(&m.properties, &p);
	}
	rc = MQTTAsync_sendMessage(l->cli, topic, &m, &ro);
	MQTTProperties_free(&m.properties);
	if (rc == MQTTASYNC_SUCCESS)
		return DEV_LINK_OK;
	if (!MQTTAsync_isConnected(l->cli)) {
		/* gone without a callback we saw: report it, so the link reconnects */
		push_state(&l->slots[l->gen % CTX_SLOTS], DEV_LINK_DOWN, 0,
			   "connection gone (send failed)");
		return DEV_LINK_ENOTCONN;
	}
	return DEV_LINK_EPAHO;
}

void dev_link_drop(struct dev_link *l, const char *why)
{
	int was_up = l->state != ST_IDLE;
	destroy_client(l, 0);
	l->up_since = 0;
	if (was_up) {
		pthread_mutex_lock(&l->mu);
		l->stats.disconnects++;
		snprintf(l->stats.last_cause, sizeof(l->stats.last_cause), "%s", why ? why : "dropped");
		pthread_mutex_unlock(&l->mu);
	}
	settled(l);
	l->uri = 0;
	l->next_attempt = otime_mono_ms(); /* a deliberate drop reconnects at once */
}

void dev_link_stats(const struct dev_link *l, struct dev_link_stats *st)
{
	pthread_mutex_lock((pthread_mutex_t *)&l->mu);
	*st = l->stats;
	pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
}
