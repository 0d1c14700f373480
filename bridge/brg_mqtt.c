/* brg_mqtt.c - libmosquitto client of the bridge; the only file that includes mosquitto.h. */
#include <errno.h>
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
#define LOST_STEPS 5 /* after a lost connection: 1, 2, .. 5 s, then every 5 s */

static const char *const uplinks[] = {"birth", "telemetry", "tasks/poll", "tasks/result"};
#define N_UPLINKS (sizeof(uplinks) / sizeof(uplinks[0]))

struct brg_mqtt {
	struct brg_mqtt_opts o;
	char *host, *client_id, *share_group, *ca, *cert, *key;
	struct mosquitto *mosq;
	pthread_t th;
	int started;
	int stuck;           /* the network thread outlived brg_mqtt_stop: never freed */
	int status_read;     /* the retained statuses were asked for once (network thread) */
	char tls_error[128]; /* OpenSSL's reason for the last failure (network thread) */
	pthread_mutex_t mu;  /* below */
	pthread_cond_t cv;
	int stop;
	int connected;
	int accepted; /* subscriptions granted / CONNACK or a subscription refused, since the
		       * network thread last looked */
	int refused;
	int connacked; /* a CONNACK accepted since the network thread last looked */
	/* network thread only: the subscriptions of this connection, sent in rounds; a round
	 * with a refusal is sent again after resub_ms, doubling, while the connection lasts */
	int sub_mid[N_UPLINKS + 1]; /* the round's SUBSCRIBE packets; 0: answered */
	int sub_sent, sub_acked, sub_refused;
	int status_mid; /* the status subscription's, until granted */
	int resub_ms;
	int64_t resub_at_ms; /* monotonic; 0: none due */
	long pending; /* QoS 1 publishes not yet acknowledged */
	int lib;      /* holds a mosquitto_lib_init reference */
	/* Held around each call into the caller (on_message, log). Once brg_mqtt_stop gave up on
	 * the network thread, detached: the caller frees what those calls use, so they stop. */
	pthread_mutex_t cb_mu;
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
	pthread_mutex_lock(&m->cb_mu);
	if (!m->detached)
		m->o.log(m->o.log_ctx, level, line);
	pthread_mutex_unlock(&m->cb_mu);
}

/* libmosquitto reports a TLS failure as "A TLS error occurred" and logs OpenSSL's queue
 * ("OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed"): keep the
 * first reason of a failure for the warning that follows. Set only while not connected: with
 * a log callback libmosquitto formats a debug line for every packet. */
static void on_log(struct mosquitto *mosq, void *ud, int level, const char *line)
{
	struct brg_mqtt *m = ud;
	(void)mosq;
	if (level != MOSQ_LOG_ERR || strncmp(line, "OpenSSL Error", 13) || m->tls_error[0])
		return;
	const char *reason = strrchr(line, ':');
	snprintf(m->tls_error, sizeof(m->tls_error), "%s", reason && reason[1] ? reason + 1 : line);
}

/* the next wait of a series doubling up to BACKOFF_MAX_MS */
static int doubled(int ms)
{
	return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
}

/* One round of the bridge's subscriptions (network thread). Subscriptions live in the
 * persistent session; repeating them is harmless. Without a share group they are plain:
 * mosquitto 2.0.11 restores those from its persistence at a restart, but not shared ones
 * (until the bridge subscribes again, what devices publish reaches no bridge and waits for
 * their ack timeout). */
static void subscribe_all(struct brg_mqtt *m)
{
	char topic[160];
	int mid;
	m->sub_sent = m->sub_acked = m->sub_refused = 0;
	m->resub_at_ms = 0;
	for (size_t i = 0; i < N_UPLINKS; i++) {
		if (m->share_group && *m->share_group)
			snprintf(topic, sizeof(topic), "$share/%s/outpost/v1/+/%s", m->share_group,
			         uplinks[i]);
		else
			snprintf(topic, sizeof(topic), "outpost/v1/+/%s", uplinks[i]);
		if (mosquitto_subscribe_v5(m->mosq, &mid, topic, 1, 0, NULL) == MOSQ_ERR_SUCCESS)
			m->sub_mid[m->sub_sent++] = mid;
		else
			logm(m, OLOG_ERROR, "cannot subscribe to %s", topic);
	}
	/* Status goes to every bridge (a plain subscription, not shared): each follows it. The
	 * broker's plugin lets a device retain nothing but its status. At the first connect of
	 * this process every retained status is asked for again, even in a resumed session: one
	 * that arrived while the last process was stopping was acknowledged and not stored (read
	 * once it is granted). */
	int opts = m->status_read ? MQTT_SUB_OPT_SEND_RETAIN_NEW : MQTT_SUB_OPT_SEND_RETAIN_ALWAYS;
	if (mosquitto_subscribe_v5(m->mosq, &mid, "outpost/v1/+/status", 1, opts, NULL) !=
	    MOSQ_ERR_SUCCESS) {
		logm(m, OLOG_ERROR, "cannot subscribe to outpost/v1/+/status");
	} else {
		m->sub_mid[m->sub_sent++] = mid;
		m->status_mid = mid;
	}
}

/* Forget the last connection's rounds (network thread): a new connection starts its own. */
static void subscriptions_lost(struct brg_mqtt *m)
{
	m->sub_sent = m->sub_acked = m->sub_refused = 0;
	m->status_mid = 0;
	m->resub_at_ms = 0;
	m->resub_ms = BACKOFF_MIN_MS;
}

static void on_connect(struct mosquitto *mosq, void *ud, int rc, int flags,
                       const mosquitto_property *props)
{
	struct brg_mqtt *m = ud;
	(void)props;
	if (rc) {
		logm(m, OLOG_ERROR, "broker %s:%d refused the connection: %s", m->host, m->o.port,
		     mosquitto_reason_string(rc));
		pthread_mutex_lock(&m->mu);
		m->refused = 1;
		pthread_mutex_unlock(&m->mu);
		return;
	}
	mosquitto_log_callback_set(mosq, NULL);
	pthread_mutex_lock(&m->mu);
	m->connected = 1;
	m->connacked = 1;
	pthread_mutex_unlock(&m->mu);
	logm(m, OLOG_INFO, "connected to %s:%d as %s (session %s)", m->host, m->o.port,
	     m->client_id, flags & 1 ? "resumed" : "new");
	subscribe_all(m);
}

/* A round is judged once every SUBACK of it is in. The bridge is in service once all its
 * subscriptions are granted, not at the CONNACK. A refusal (the ACL) keeps what was granted
 * and asks again for the whole round after 0.5 s, doubling up to 30 s, without dropping the
 * connection: the granted topics go on flowing meanwhile. */
static void on_subscribe(struct mosquitto *mosq, void *ud, int mid, int n, const int *granted,
                         const mosquitto_property *props)
{
	struct brg_mqtt *m = ud;
	(void)mosq;
	(void)props;
	int i = 0;
	while (i < m->sub_sent && m->sub_mid[i] != mid)
		i++;
	if (i == m->sub_sent || mid == 0)
		return; /* not of this round */
	m->sub_mid[i] = 0;
	if (mid == m->status_mid && n == 1 && granted[0] <= 2) {
		m->status_read = 1;
		m->status_mid = 0;
	}
	for (i = 0; i < n; i++)
		if (granted[i] > 2) {
			m->sub_refused++;
			logm(m, OLOG_ERROR,
			     "broker refused a subscription (reason 0x%02x): check the ACL "
			     "for outpost-bridge",
			     granted[i]);
		}
	if (++m->sub_acked < m->sub_sent)
		return;
	int refused = m->sub_refused > 0;
	if (refused) {
		logm(m, OLOG_WARN, "%d of %d subscriptions refused; asking again in %d ms",
		     m->sub_refused, m->sub_sent, m->resub_ms);
		m->resub_at_ms = otime_mono_ms() + m->resub_ms;
		m->resub_ms = doubled(m->resub_ms);
	} else {
		m->resub_ms = BACKOFF_MIN_MS;
	}
	pthread_mutex_lock(&m->mu);
	m->refused = refused; /* the latest round tells */
	m->accepted = !refused;
	pthread_mutex_unlock(&m->mu);
}

static void on_disconnect(struct mosquitto *mosq, void *ud, int rc, const mosquitto_property *p)
{
	struct brg_mqtt *m = ud;
	(void)mosq;
	(void)p;
	mosquitto_log_callback_set(mosq, on_log);
	pthread_mutex_lock(&m->mu);
	int was = m->connected, stopping = m->stop;
	m->connected = 0;
	pthread_mutex_unlock(&m->mu);
	if (was && !stopping)
		logm(m, OLOG_WARN, "disconnected from the broker: %s; reconnecting",
		     rc ? mosquitto_reason_string(rc) : "by request");
}

static void on_publish(struct mosquitto *mosq, void *ud, int mid, int reason,
                       const mosquitto_property *props)
{
	struct brg_mqtt *m = ud;
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
	struct brg_mqtt *m = ud;
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
		free(bm); /* a connection made after the bridge stopped */
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
	m->resub_ms = BACKOFF_MIN_MS;
	m->host = dup_or_null(o->host, &fail);
	m->client_id = dup_or_null(o->client_id, &fail);
	m->share_group = dup_or_null(o->share_group, &fail);
	m->ca = dup_or_null(o->ca_file, &fail);
	m->cert = dup_or_null(o->cert_file, &fail);
	m->key = dup_or_null(o->key_file, &fail);
	pthread_mutex_init(&m->mu, NULL);
	pthread_mutex_init(&m->cb_mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	if (fail || !(m->mosq = mosquitto_new(m->client_id, false, m))) {
		snprintf(err, 256, "cannot create the MQTT client: %s",
		         fail ? "out of memory" : strerror(errno));
		brg_mqtt_free(m);
		return BRG_ENOMEM;
	}
	mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_int_option(m->mosq, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_threaded_set(m->mosq, true);
	rc = mosquitto_tls_set(m->mosq, m->ca, NULL, m->cert, m->key, NULL);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_tls_opts_set(m->mosq, 1, "tlsv1.2", NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		snprintf(err, 256, "TLS files (%s, %s, %s): %s", m->ca, m->cert, m->key,
		         mosquitto_strerror(rc));
		brg_mqtt_free(m);
		return BRG_EIO;
	}
	mosquitto_connect_v5_callback_set(m->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(m->mosq, on_disconnect);
	mosquitto_subscribe_v5_callback_set(m->mosq, on_subscribe);
	mosquitto_publish_v5_callback_set(m->mosq, on_publish);
	mosquitto_message_v5_callback_set(m->mosq, on_message);
	mosquitto_log_callback_set(m->mosq, on_log);
	*out = m;
	return BRG_OK;
}

static int stopping(struct brg_mqtt *m)
{
	pthread_mutex_lock(&m->mu);
	int s = m->stop;
	pthread_mutex_unlock(&m->mu);
	return s;
}

static void nap(struct brg_mqtt *m, int ms)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&m->mu);
	if (!m->stop)
		pthread_cond_timedwait(&m->cv, &m->mu, &until);
	pthread_mutex_unlock(&m->mu);
}

/* Service the connection until it fails or a stop is asked for (checked every second). Not
 * mosquitto_loop_forever: it misses a stop asked for while a reconnect was under way, because
 * the reconnect overwrites the state mosquitto_disconnect set, and then never returns. */
static int run_connected(struct brg_mqtt *m)
{
	int rc = MOSQ_ERR_SUCCESS;
	subscriptions_lost(m); /* before this connection's CONNACK */
	while (rc == MOSQ_ERR_SUCCESS && !stopping(m)) {
		int wait_ms = 1000;
		if (m->resub_at_ms) {
			int64_t left = m->resub_at_ms - otime_mono_ms();
			if (left <= 0)
				subscribe_all(m); /* clears resub_at_ms */
			else if (left < wait_ms)
				wait_ms = (int)left;
		}
		rc = mosquitto_loop(m->mosq, wait_ms, 1);
	}
	if (stopping(m)) {
		mosquitto_disconnect_v5(m->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL);
		for (int i = 0; i < 20 && mosquitto_loop(m->mosq, 100, 1) == MOSQ_ERR_SUCCESS; i++)
			; /* sends the DISCONNECT, then reports the closed connection */
	}
	return rc;
}

/* The wait before the next attempt. A connection that failed or was lost (the broker away,
 * restarting) is tried again after 1, 2, 3, 4, then every 5 s: a bridge is one client, not a
 * fleet, and every second it is away delays every device's acks. A broker that refuses the
 * bridge (CONNACK, a subscription, TLS, protocol) is asked again after 0.5 s, doubling up to
 * 30 s, until it grants the subscriptions. */
static int next_delay(struct brg_mqtt *m, int rc, int *lost, int *backoff)
{
	pthread_mutex_lock(&m->mu);
	/* dropped between the CONNACK and the grant: refused too (the broker's ACL plugin drops
	 * a revoked certificate at once, before or after the SUBACK) */
	int accepted = m->accepted, refused = m->refused || (m->connacked && !m->accepted);
	m->accepted = m->refused = m->connacked = 0;
	pthread_mutex_unlock(&m->mu);
	if (accepted && !refused) { /* a partial grant is a refusal */
		*lost = 0;
		*backoff = BACKOFF_MIN_MS;
	}
	int transient = rc == MOSQ_ERR_ERRNO || rc == MOSQ_ERR_CONN_LOST ||
	                rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_KEEPALIVE || rc == MOSQ_ERR_EAI;
	if (refused || !transient) {
		int delay = *backoff;
		*backoff = doubled(*backoff);
		return delay;
	}
	if (*lost < LOST_STEPS)
		++*lost;
	return *lost * 1000;
}

static void *net_main(void *arg)
{
	struct brg_mqtt *m = arg;
	mosquitto_property *props = NULL;
	int first = 1, backoff = BACKOFF_MIN_MS, lost = 0;
	mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
	                             m->o.session_expiry_s);
	while (!stopping(m)) {
		int rc = first ? mosquitto_connect_bind_v5(m->mosq, m->host, m->o.port,
		                                           m->o.keepalive_s, NULL, props)
		               : mosquitto_reconnect(m->mosq);
		if (rc == MOSQ_ERR_SUCCESS) {
			first = 0;
			rc = run_connected(m);
			if (stopping(m))
				break;
		}
		const char *why = rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc);
		const char *tls = m->tls_error;
		int delay = next_delay(m, rc, &lost, &backoff);
		logm(m, OLOG_WARN, "broker %s:%d: %s%s%s%s; retrying in %d ms", m->host, m->o.port,
		     why, *tls ? " (TLS: " : "", tls, *tls ? ")" : "", delay);
		m->tls_error[0] = '\0';
		nap(m, delay);
	}
	mosquitto_property_free_all(&props);
	return NULL;
}

int brg_mqtt_start(struct brg_mqtt *m)
{
	if (pthread_create(&m->th, NULL, net_main, m))
		return BRG_ETHREAD;
	m->started = 1;
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
	int rc = mosquitto_publish_v5(m->mosq, NULL, topic, (int)len, payload, 1, false, props);
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
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&m->mu);
	int rc = 0;
	while (m->pending > 0 && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&m->cv, &m->mu, &until);
	long left = m->pending;
	pthread_mutex_unlock(&m->mu);
	return left > 0 ? BRG_ETIMEDOUT : BRG_OK;
}

int brg_mqtt_connected(struct brg_mqtt *m)
{
	pthread_mutex_lock(&m->mu);
	int c = m->connected;
	pthread_mutex_unlock(&m->mu);
	return c;
}

int brg_mqtt_stop(struct brg_mqtt *m)
{
	if (!m || !m->started)
		return m && m->stuck ? BRG_ETIMEDOUT : BRG_OK;
	pthread_mutex_lock(&m->mu);
	m->stop = 1;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
	mosquitto_disconnect_v5(m->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += BRG_MQTT_STOP_S;
	m->started = 0;
	if (pthread_timedjoin_np(m->th, NULL, &until)) {
		m->stuck = 1; /* in a blocking connect or TLS handshake: left to process exit */
		pthread_mutex_lock(&m->cb_mu);
		m->detached = 1;
		pthread_mutex_unlock(&m->cb_mu);
		return BRG_ETIMEDOUT;
	}
	return BRG_OK;
}

void brg_mqtt_free(struct brg_mqtt *m)
{
	if (!m)
		return;
	if (brg_mqtt_stop(m))
		return; /* the network thread still uses everything */
	mosquitto_destroy(m->mosq);
	pthread_mutex_destroy(&m->mu);
	pthread_mutex_destroy(&m->cb_mu);
	pthread_cond_destroy(&m->cv);
	free(m->host);
	free(m->client_id);
	free(m->share_group);
	free(m->ca);
	free(m->cert);
	free(m->key);
	if (m->lib)
		mosquitto_lib_cleanup();
	free(m);
}
