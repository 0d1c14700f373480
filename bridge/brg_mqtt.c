/* brg_mqtt.c - libmosquitto clients of the bridge; the only file that includes mosquitto.h. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "brg_mqtt.h"
#include "olog.h"
#include "otime.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define LOST_STEPS     5  /* after a lost connection: 1, 2, .. 5 s, then every 5 s */
#define CLOSE_STEPS    20 /* a DISCONNECT being written: at most 20 waits of 100 ms */

static const char *const uplinks[] = {"birth", "telemetry", "tasks/poll", "tasks/result"};
#define N_UPLINKS (sizeof(uplinks) / sizeof(uplinks[0]))

struct brg_mqtt;

/* One broker connection and its network thread. The subscriber holds the persistent session
 * and its subscriptions and only receives; the publisher (a clean session) carries every
 * publish. So a stop can stop receiving first and still publish the acks of what it received:
 * libmosquitto acknowledges (PUBACK) every delivery it reads, whatever the bridge does with
 * it, and it cannot read the PUBACKs of the bridge's publishes without reading deliveries. */
struct conn {
	struct brg_mqtt *m;
	int subscriber;
	const char *label; /* begins its log lines */
	char *client_id;
	struct mosquitto *mosq;
	pthread_t th;
	int started;
	char tls_error[128]; /* OpenSSL's reason for the last failure (network thread) */
	int tls_eof;         /* that failure was the peer closing mid-handshake (network thread) */
	/* under m->mu */
	int stop;
	int reading; /* in run_connected, where messages are read and handed on */
	int connected;
	int accepted; /* subscriptions granted (the publisher: a CONNACK) / CONNACK or a
		       * subscription refused, since the network thread last looked */
	int refused;
	int connacked; /* a CONNACK accepted since the network thread last looked */
	/* subscriber, network thread only: the subscriptions of this connection, sent in rounds;
	 * a round with a refusal is sent again after resub_ms, doubling, while it lasts */
	int status_read;            /* the retained statuses were asked for once */
	int sub_mid[N_UPLINKS + 1]; /* the round's SUBSCRIBE packets; 0: answered */
	int sub_sent, sub_acked, sub_refused;
	int status_mid; /* the status subscription's, until granted */
	int resub_ms;
	int64_t resub_at_ms; /* monotonic; 0: none due */
};

struct brg_mqtt {
	struct brg_mqtt_opts o;
	char *host, *share_group, *former_group, *ca, *cert, *key;
	struct conn sub, pub;
	int stuck;          /* a network thread outlived brg_mqtt_stop: never freed */
	pthread_mutex_t mu; /* the connections' fields marked so, and below */
	pthread_cond_t cv;
	long pending; /* QoS 1 publishes not yet acknowledged */
	int lib;      /* holds a mosquitto_lib_init reference */
	/* Held around each call into the caller: cb_mu for on_message, log_mu for log (apart, so
	 * the publishing thread can log while the receiving one waits in on_message for room in
	 * the pipeline). Once brg_mqtt_stop gave up on a network thread, detached (set under
	 * both): the caller frees what those calls use, so they stop. */
	pthread_mutex_t cb_mu, log_mu;
	int detached;
};

static void logm(struct brg_mqtt *m, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logm(struct brg_mqtt *m, int level, const char *fmt, ...)
{
	char line[400];
	va_list ap;
	if (!m->o.log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&m->log_mu);
	if (!m->detached)
		m->o.log(m->o.log_ctx, level, line);
	pthread_mutex_unlock(&m->log_mu);
}

/* libmosquitto reports a TLS failure as "A TLS error occurred" and logs OpenSSL's queue
 * ("OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed"): keep the
 * first reason of a failure for the warning that follows. Set only while not connected: with
 * a log callback libmosquitto formats a debug line for every packet. */
static void on_log(struct mosquitto *mosq, void *ud, int level, const char *line)
{
	struct conn *c = ud;
	(void)mosq;
	if (level != MOSQ_LOG_ERR || strncmp(line, "OpenSSL Error", 13) || c->tls_error[0])
		return;
	const char *reason = strrchr(line, ':');
	snprintf(c->tls_error, sizeof(c->tls_error), "%s", reason && reason[1] ? reason + 1 : line);
	/* OpenSSL 3's SSL_R_UNEXPECTED_EOF_WHILE_READING: the peer went away, it refused nothing */
	c->tls_eof = strstr(c->tls_error, "unexpected eof") != NULL;
}

/* the next wait of a series doubling up to BACKOFF_MAX_MS */
static int doubled(int ms)
{
	return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
}

static void uplink_filter(char *topic, size_t size, const char *group, const char *uplink)
{
	if (group && *group)
		snprintf(topic, size, "$share/%s/outpost/v1/+/%s", group, uplink);
	else
		snprintf(topic, size, "outpost/v1/+/%s", uplink);
}

/* One round of the bridge's subscriptions (network thread). Subscriptions live in the
 * persistent session; repeating them is harmless. Without a share group they are plain:
 * mosquitto 2.0.11 restores those from its persistence at a restart, but not shared ones
 * (until the bridge subscribes again, what devices publish reaches no bridge and waits for
 * their ack timeout). */
static void subscribe_all(struct conn *c)
{
	struct brg_mqtt *m = c->m;
	char topic[160];
	int mid;
	c->sub_sent = c->sub_acked = c->sub_refused = 0;
	c->resub_at_ms = 0;
	for (size_t i = 0; i < N_UPLINKS; i++) {
		uplink_filter(topic, sizeof(topic), m->share_group, uplinks[i]);
		if (mosquitto_subscribe_v5(c->mosq, &mid, topic, 1, 0, NULL) == MOSQ_ERR_SUCCESS)
			c->sub_mid[c->sub_sent++] = mid;
		else
			logm(m, OLOG_ERROR, "cannot subscribe to %s", topic);
	}
	/* Status goes to every bridge (a plain subscription, not shared): each follows it. The
	 * broker's plugin lets a device retain nothing but its status. At the first connect of
	 * this process every retained status is asked for again, even in a resumed session: one
	 * that arrived while the last process was dying was acknowledged and maybe not stored
	 * (read once it is granted). */
	int opts = c->status_read ? MQTT_SUB_OPT_SEND_RETAIN_NEW : MQTT_SUB_OPT_SEND_RETAIN_ALWAYS;
	if (mosquitto_subscribe_v5(c->mosq, &mid, "outpost/v1/+/status", 1, opts, NULL) !=
	    MOSQ_ERR_SUCCESS) {
		logm(m, OLOG_ERROR, "cannot subscribe to outpost/v1/+/status");
	} else {
		c->sub_mid[c->sub_sent++] = mid;
		c->status_mid = mid;
	}
}

/* A resumed session keeps what an earlier run subscribed to, and subscribing only adds to
 * it: after share_group changed, every message would come twice (through the old and the new
 * subscription). MQTT cannot list a session's subscriptions, so the uplink subscriptions of
 * the variants not configured are taken away by name: the plain ones when shared, those of
 * former_share_group (the default group, or the one a rename left) unless it is the one in
 * use. Sent after subscribe_all, so that no moment has neither. Taking away what does not
 * exist is answered "no subscription existed" and harmless. */
static void unsubscribe_former(struct conn *c)
{
	struct brg_mqtt *m = c->m;
	char topics[2 * N_UPLINKS][160];
	char *list[2 * N_UPLINKS];
	int n = 0;
	int shared = m->share_group && *m->share_group;
	int former = m->former_group && *m->former_group &&
	             !(shared && !strcmp(m->former_group, m->share_group));
	for (size_t i = 0; i < N_UPLINKS; i++) {
		if (shared)
			uplink_filter(topics[n++], sizeof(topics[0]), NULL, uplinks[i]);
		if (former)
			uplink_filter(topics[n++], sizeof(topics[0]), m->former_group, uplinks[i]);
	}
	for (int i = 0; i < n; i++)
		list[i] = topics[i];
	if (n && mosquitto_unsubscribe_multiple(c->mosq, NULL, n, list, NULL) != MOSQ_ERR_SUCCESS)
		logm(m, OLOG_ERROR, "cannot take away the subscriptions of a former share group");
}

/* Forget the last connection's rounds (network thread): a new connection starts its own. */
static void subscriptions_lost(struct conn *c)
{
	c->sub_sent = c->sub_acked = c->sub_refused = 0;
	c->status_mid = 0;
	c->resub_at_ms = 0;
	c->resub_ms = BACKOFF_MIN_MS;
}

static void on_connect(struct mosquitto *mosq, void *ud, int rc, int flags,
                       const mosquitto_property *props)
{
	struct conn *c = ud;
	struct brg_mqtt *m = c->m;
	(void)props;
	if (rc) {
		logm(m, OLOG_ERROR, "%sbroker %s:%d refused the connection: %s", c->label, m->host,
		     m->o.port, mosquitto_reason_string(rc));
		pthread_mutex_lock(&m->mu);
		c->refused = 1;
		pthread_mutex_unlock(&m->mu);
		return;
	}
	mosquitto_log_callback_set(mosq, NULL);
	pthread_mutex_lock(&m->mu);
	c->connected = 1;
	c->connacked = 1;
	if (!c->subscriber)
		c->accepted = 1; /* it needs nothing more */
	pthread_mutex_unlock(&m->mu);
	if (!c->subscriber) {
		logm(m, OLOG_INFO, "%sup, to %s:%d as %s", c->label, m->host, m->o.port,
		     c->client_id);
		return;
	}
	logm(m, OLOG_INFO, "connected to %s:%d as %s (session %s)", m->host, m->o.port,
	     c->client_id, flags & 1 ? "resumed" : "new");
	subscribe_all(c);
	if (flags & 1)
		unsubscribe_former(c);
}

/* A round is judged once every SUBACK of it is in. The bridge is in service once all its
 * subscriptions are granted, not at the CONNACK. A refusal (the ACL) keeps what was granted
 * and asks again for the whole round after 0.5 s, doubling up to 30 s, without dropping the
 * connection: the granted topics go on flowing meanwhile. */
static void on_subscribe(struct mosquitto *mosq, void *ud, int mid, int n, const int *granted,
                         const mosquitto_property *props)
{
	struct conn *c = ud;
	struct brg_mqtt *m = c->m;
	(void)mosq;
	(void)props;
	int i = 0;
	while (i < c->sub_sent && c->sub_mid[i] != mid)
		i++;
	if (i == c->sub_sent || mid == 0)
		return; /* not of this round */
	c->sub_mid[i] = 0;
	if (mid == c->status_mid && n == 1 && granted[0] <= 2) {
		c->status_read = 1;
		c->status_mid = 0;
	}
	for (i = 0; i < n; i++)
		if (granted[i] > 2) {
			c->sub_refused++;
			logm(m, OLOG_ERROR,
			     "broker refused a subscription (reason 0x%02x): check the ACL "
			     "for outpost-bridge",
			     granted[i]);
		}
	if (++c->sub_acked < c->sub_sent)
		return;
	int refused = c->sub_refused > 0;
	if (refused) {
		logm(m, OLOG_WARN, "%d of %d subscriptions refused; asking again in %d ms",
		     c->sub_refused, c->sub_sent, c->resub_ms);
		c->resub_at_ms = otime_mono_ms() + c->resub_ms;
		c->resub_ms = doubled(c->resub_ms);
	} else {
		c->resub_ms = BACKOFF_MIN_MS;
	}
	pthread_mutex_lock(&m->mu);
	c->refused = refused; /* the latest round tells */
	c->accepted = !refused;
	pthread_mutex_unlock(&m->mu);
}

static void on_disconnect(struct mosquitto *mosq, void *ud, int rc, const mosquitto_property *p)
{
	struct conn *c = ud;
	struct brg_mqtt *m = c->m;
	(void)p;
	mosquitto_log_callback_set(mosq, on_log);
	pthread_mutex_lock(&m->mu);
	int was = c->connected, stopping = c->stop;
	c->connected = 0;
	pthread_mutex_unlock(&m->mu);
	if (was && !stopping)
		logm(m, OLOG_WARN, "%sdisconnected from the broker: %s; reconnecting", c->label,
		     rc ? mosquitto_reason_string(rc) : "by request");
}

static void on_publish(struct mosquitto *mosq, void *ud, int mid, int reason,
                       const mosquitto_property *props)
{
	struct conn *c = ud;
	struct brg_mqtt *m = c->m;
	(void)mosq;
	(void)mid;
	(void)props;
	if (reason >= 0x80)
		logm(m, OLOG_WARN, "broker refused a reply (reason 0x%02x)", reason);
	pthread_mutex_lock(&m->mu);
	if (m->pending > 0)
		m->pending--;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
}

static void on_message(struct mosquitto *mosq, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
	struct conn *c = ud;
	struct brg_mqtt *m = c->m;
	char *resp = NULL;
	void *corr = NULL;
	uint16_t corr_len = 0;
	(void)mosq;
	mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &resp, false);
	mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false);
	struct brg_msg *bm =
	    brg_msg_new(msg->topic, msg->payload, (size_t)msg->payloadlen, resp, corr, corr_len);
	free(resp);
	free(corr);
	if (!bm) {
		logm(m, OLOG_ERROR, "out of memory: message on %s dropped", msg->topic);
		return;
	}
	bm->retained = msg->retain;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	bm->received_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	/* Blocks while the pipeline is full: the broker then holds the rest. */
	pthread_mutex_lock(&m->cb_mu);
	if (m->detached)
		free(bm); /* never: a detached thread reads no more (close_unread) */
	else
		m->o.on_message(m->o.ctx, bm);
	pthread_mutex_unlock(&m->cb_mu);
}

static char *dup_or_null(const char *s, int *fail)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		*fail = 1;
	return d;
}

/* The publisher's client id: the bridge's and ".pub". A configured client id has no '.'
 * ([A-Za-z0-9_-]), so it is no other bridge's. */
#define PUB_SUFFIX ".pub"

static int conn_new(struct brg_mqtt *m, struct conn *c, int subscriber, char *err)
{
	int rc;
	c->m = m;
	c->subscriber = subscriber;
	c->label = subscriber ? "" : "publishing connection: ";
	c->resub_ms = BACKOFF_MIN_MS;
	size_t len = strlen(m->o.client_id) + sizeof(PUB_SUFFIX);
	if (!(c->client_id = malloc(len))) {
		snprintf(err, 256, "out of memory");
		return BRG_ENOMEM;
	}
	snprintf(c->client_id, len, "%s%s", m->o.client_id, subscriber ? "" : PUB_SUFFIX);
	/* the subscriber's session outlives the connection; the publisher's has nothing to keep */
	if (!(c->mosq = mosquitto_new(c->client_id, !subscriber, c))) {
		snprintf(err, 256, "cannot create the MQTT client: %s", strerror(errno));
		return BRG_ENOMEM;
	}
	mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_threaded_set(c->mosq, true);
	rc = mosquitto_tls_set(c->mosq, m->ca, NULL, m->cert, m->key, NULL);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_tls_opts_set(c->mosq, 1, "tlsv1.2", NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		snprintf(err, 256, "TLS files (%s, %s, %s): %s", m->ca, m->cert, m->key,
		         mosquitto_strerror(rc));
		return BRG_EIO;
	}
	mosquitto_connect_v5_callback_set(c->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(c->mosq, on_disconnect);
	if (subscriber) {
		mosquitto_subscribe_v5_callback_set(c->mosq, on_subscribe);
		mosquitto_message_v5_callback_set(c->mosq, on_message);
	} else {
		mosquitto_publish_v5_callback_set(c->mosq, on_publish);
	}
	mosquitto_log_callback_set(c->mosq, on_log);
	return BRG_OK;
}

int brg_mqtt_new(const struct brg_mqtt_opts *o, struct brg_mqtt **out, char *err)
{
	int fail = 0, rc;
	struct brg_mqtt *m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, 256, "out of memory");
		return BRG_ENOMEM;
	}
	mosquitto_lib_init(); /* reference counted; released in brg_mqtt_free */
	m->lib = 1;
	m->o = *o;
	m->host = dup_or_null(o->host, &fail);
	m->share_group = dup_or_null(o->share_group, &fail);
	m->former_group = dup_or_null(o->former_share_group, &fail);
	m->ca = dup_or_null(o->ca_file, &fail);
	m->cert = dup_or_null(o->cert_file, &fail);
	m->key = dup_or_null(o->key_file, &fail);
	pthread_mutex_init(&m->mu, NULL);
	pthread_mutex_init(&m->cb_mu, NULL);
	pthread_mutex_init(&m->log_mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	if (fail) {
		snprintf(err, 256, "out of memory");
		brg_mqtt_free(m);
		return BRG_ENOMEM;
	}
	if ((rc = conn_new(m, &m->sub, 1, err)) || (rc = conn_new(m, &m->pub, 0, err))) {
		brg_mqtt_free(m);
		return rc;
	}
	*out = m;
	return BRG_OK;
}

static int stopping(struct conn *c)
{
	pthread_mutex_lock(&c->m->mu);
	int s = c->stop;
	pthread_mutex_unlock(&c->m->mu);
	return s;
}

static void nap(struct conn *c, int ms)
{
	struct timespec until = otime_after(CLOCK_REALTIME, ms);
	pthread_mutex_lock(&c->m->mu);
	if (!c->stop)
		pthread_cond_timedwait(&c->m->cv, &c->m->mu, &until);
	pthread_mutex_unlock(&c->m->mu);
}

/* Send the DISCONNECT (and what is queued before it: PUBACKs, publishes) without reading
 * again: whatever the broker sent meanwhile stays unacknowledged, so it stays in the session
 * for the next run. libmosquitto closes the socket once the DISCONNECT is written. */
static void close_unread(struct conn *c)
{
	mosquitto_disconnect_v5(c->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL);
	for (int i = 0; i < CLOSE_STEPS; i++) {
		struct pollfd p = {.fd = mosquitto_socket(c->mosq), .events = POLLOUT};
		if (p.fd < 0 || poll(&p, 1, 100) < 0)
			break;
		if (p.revents && mosquitto_loop_write(c->mosq, 1) != MOSQ_ERR_SUCCESS)
			break;
	}
}

/* Service the connection until it fails or a stop is asked for (checked every second, and
 * woken by brg_mqtt_stop*). Not mosquitto_loop_forever: it misses a stop asked for while a
 * reconnect was under way, because the reconnect overwrites the state mosquitto_disconnect
 * set, and then never returns. */
static int run_connected(struct conn *c)
{
	struct brg_mqtt *m = c->m;
	int rc = MOSQ_ERR_SUCCESS;
	subscriptions_lost(c); /* before this connection's CONNACK */
	pthread_mutex_lock(&m->mu);
	c->reading = !c->stop; /* a connection made after the stop reads nothing */
	pthread_mutex_unlock(&m->mu);
	while (rc == MOSQ_ERR_SUCCESS && !stopping(c)) {
		int wait_ms = 1000;
		if (c->resub_at_ms) {
			int64_t left = c->resub_at_ms - otime_mono_ms();
			if (left <= 0)
				subscribe_all(c); /* clears resub_at_ms */
			else if (left < wait_ms)
				wait_ms = (int)left;
		}
		rc = mosquitto_loop(c->mosq, wait_ms, 1);
	}
	if (stopping(c))
		close_unread(c);
	pthread_mutex_lock(&m->mu);
	c->reading = 0;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
	return rc;
}

/* The wait before the next attempt. A connection that failed or was lost (the broker away,
 * restarting, or a proxy in front of it closing the connection during the TLS handshake) is
 * tried again after 1, 2, 3, 4, then every 5 s: a bridge is two clients, not a fleet, and
 * every second it is away delays every device's acks. A broker that refuses the bridge
 * (CONNACK, a subscription, TLS, protocol) is asked again after 0.5 s, doubling up to 30 s,
 * until it grants the subscriptions. */
static int next_delay(struct conn *c, int rc, int *lost, int *backoff)
{
	pthread_mutex_lock(&c->m->mu);
	/* dropped between the CONNACK and the grant: refused too (the broker's ACL plugin drops
	 * a revoked certificate at once, before or after the SUBACK) */
	int accepted = c->accepted, refused = c->refused || (c->connacked && !c->accepted);
	c->accepted = c->refused = c->connacked = 0;
	pthread_mutex_unlock(&c->m->mu);
	if (accepted && !refused) { /* a partial grant is a refusal */
		*lost = 0;
		*backoff = BACKOFF_MIN_MS;
	}
	int transient = rc == MOSQ_ERR_ERRNO || rc == MOSQ_ERR_CONN_LOST ||
	                rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_KEEPALIVE || rc == MOSQ_ERR_EAI ||
	                (rc == MOSQ_ERR_TLS && c->tls_eof);
	if (refused || !transient) {
		int delay = *backoff;
		*backoff = doubled(*backoff);
		return delay;
	}
	if (*lost < LOST_STEPS)
		++*lost;
	return *lost * 1000;
}

/* libmosquitto 2.0.11 sets OpenSSL up (net__init_tls) at the first TLS connect of the
 * process, unguarded: two connects at once both make it, one leaks, and a connection can be
 * given the index of the other's data, which its certificate check then reads back as NULL.
 * So the connects wait for each other until one has been through TLS. */
static pthread_mutex_t tls_init_mu = PTHREAD_MUTEX_INITIALIZER;
static int tls_init_done; /* under tls_init_mu */

static int connect_once(struct conn *c, int first, const mosquitto_property *props)
{
	struct brg_mqtt *m = c->m;
	pthread_mutex_lock(&tls_init_mu);
	int guard = !tls_init_done;
	if (!guard)
		pthread_mutex_unlock(&tls_init_mu);
	int rc = first ? mosquitto_connect_bind_v5(c->mosq, m->host, m->o.port, m->o.keepalive_s,
	                                           NULL, props)
	               : mosquitto_reconnect(c->mosq);
	if (guard) {
		tls_init_done = rc == MOSQ_ERR_SUCCESS;
		pthread_mutex_unlock(&tls_init_mu);
	}
	return rc;
}

static void *net_main(void *arg)
{
	struct conn *c = arg;
	struct brg_mqtt *m = c->m;
	mosquitto_property *props = NULL;
	int first = 1, backoff = BACKOFF_MIN_MS, lost = 0;
	if (c->subscriber)
		mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
		                             m->o.session_expiry_s);
	while (!stopping(c)) {
		int rc = connect_once(c, first, props);
		if (rc == MOSQ_ERR_SUCCESS) {
			first = 0;
			rc = run_connected(c);
			if (stopping(c))
				break;
		}
		const char *why = rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc);
		const char *tls = c->tls_error;
		int delay = next_delay(c, rc, &lost, &backoff);
		logm(m, OLOG_WARN, "%sbroker %s:%d: %s%s%s%s; retrying in %d ms", c->label, m->host,
		     m->o.port, why, *tls ? " (TLS: " : "", tls, *tls ? ")" : "", delay);
		c->tls_error[0] = '\0';
		c->tls_eof = 0;
		nap(c, delay);
	}
	mosquitto_property_free_all(&props);
	return NULL;
}

static int conn_start(struct conn *c)
{
	if (pthread_create(&c->th, NULL, net_main, c))
		return BRG_ETHREAD;
	c->started = 1;
	return BRG_OK;
}

int brg_mqtt_start(struct brg_mqtt *m)
{
	if (conn_start(&m->pub) || conn_start(&m->sub))
		return BRG_ETHREAD;
	return BRG_OK;
}

int brg_mqtt_publish(void *ctx, const char *topic, const void *payload, size_t len,
                     const void *corr, size_t corr_len)
{
	struct brg_mqtt *m = ctx;
	mosquitto_property *props = NULL;
	if (corr && mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, corr,
	                                          (uint16_t)corr_len) != MOSQ_ERR_SUCCESS)
		return BRG_ENOMEM;
	pthread_mutex_lock(&m->mu);
	m->pending++;
	pthread_mutex_unlock(&m->mu);
	int rc = mosquitto_publish_v5(m->pub.mosq, NULL, topic, (int)len, payload, 1, false, props);
	mosquitto_property_free_all(&props);
	/* Disconnected: libmosquitto keeps a QoS 1 message queued and sends it after the
	 * reconnect (it still says NO_CONN), so it stays pending for brg_mqtt_flush. */
	if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) {
		pthread_mutex_lock(&m->mu);
		m->pending--;
		pthread_mutex_unlock(&m->mu);
		return BRG_EMQTT;
	}
	return BRG_OK;
}

int brg_mqtt_flush(struct brg_mqtt *m, int timeout_ms)
{
	struct timespec until = otime_after(CLOCK_REALTIME, timeout_ms);
	pthread_mutex_lock(&m->mu);
	int rc = 0;
	while (m->pending > 0 && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&m->cv, &m->mu, &until);
	long left = m->pending;
	pthread_mutex_unlock(&m->mu);
	return left > 0 ? BRG_ETIMEDOUT : BRG_OK;
}

/* Ask c's network thread to stop; mosquitto_disconnect wakes its mosquitto_loop. */
static void conn_ask_stop(struct conn *c)
{
	pthread_mutex_lock(&c->m->mu);
	c->stop = 1;
	pthread_cond_broadcast(&c->m->cv);
	pthread_mutex_unlock(&c->m->mu);
	mosquitto_disconnect_v5(c->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL);
}

int brg_mqtt_stop_receiving(struct brg_mqtt *m)
{
	if (!m || !m->sub.started)
		return BRG_OK;
	conn_ask_stop(&m->sub);
	pthread_mutex_lock(&m->mu);
	while (m->sub.reading)
		pthread_cond_wait(&m->cv, &m->mu);
	pthread_mutex_unlock(&m->mu);
	return BRG_OK;
}

int brg_mqtt_stop(struct brg_mqtt *m)
{
	if (!m || (!m->sub.started && !m->pub.started))
		return m && m->stuck ? BRG_ETIMEDOUT : BRG_OK;
	brg_mqtt_stop_receiving(m);
	if (m->pub.started)
		conn_ask_stop(&m->pub);
	struct timespec until = otime_after(CLOCK_REALTIME, BRG_MQTT_STOP_S * 1000);
	struct conn *both[] = {&m->sub, &m->pub};
	for (int i = 0; i < 2; i++) {
		if (both[i]->started && pthread_timedjoin_np(both[i]->th, NULL, &until))
			m->stuck = 1; /* in a blocking connect or TLS handshake: left to exit */
		both[i]->started = 0;
	}
	if (m->stuck) {
		pthread_mutex_lock(&m->cb_mu);
		pthread_mutex_lock(&m->log_mu);
		m->detached = 1;
		pthread_mutex_unlock(&m->log_mu);
		pthread_mutex_unlock(&m->cb_mu);
		return BRG_ETIMEDOUT;
	}
	return BRG_OK;
}

static void conn_free(struct conn *c)
{
	if (c->mosq)
		mosquitto_destroy(c->mosq);
	free(c->client_id);
}

void brg_mqtt_free(struct brg_mqtt *m)
{
	if (!m)
		return;
	if (brg_mqtt_stop(m))
		return; /* a network thread still uses everything */
	conn_free(&m->sub);
	conn_free(&m->pub);
	pthread_mutex_destroy(&m->mu);
	pthread_mutex_destroy(&m->cb_mu);
	pthread_mutex_destroy(&m->log_mu);
	pthread_cond_destroy(&m->cv);
	free(m->host);
	free(m->share_group);
	free(m->former_group);
	free(m->ca);
	free(m->cert);
	free(m->key);
	if (m->lib)
		mosquitto_lib_cleanup();
	free(m);
}
