/* h_mqtt.c - synchronous Paho MQTT v5 client used by the integration tests. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <MQTTClient.h>

#include "h_mqtt.h"
#include "harness.h"

struct h_mqtt {
	MQTTClient cli;
	int last_reason;
	int last_token;
};

static void on_published(void *ctx, int token, int packet_type, MQTTProperties *props,
			 enum MQTTReasonCodes rc)
{
	struct h_mqtt *c = ctx;
	(void)packet_type;
	(void)props;
	c->last_token = token;
	c->last_reason = (int)rc;
}

static struct h_mqtt *connect_with(const char *uri, const char *pki, const char *name,
				   const char *ca_pki, const char *client_id, int expiry_s, int *why)
{
	struct h_mqtt *c = calloc(1, sizeof(*c));
	/* a write to a connection the broker closed must fail, not kill the test */
	signal(SIGPIPE, SIG_IGN);
	MQTTClient_createOptions co = MQTTClient_createOptions_initializer;
	co.MQTTVersion = MQTTVERSION_5;
	MQTTClient_connectOptions opts = MQTTClient_connectOptions_initializer5_ws;
	MQTTClient_SSLOptions ssl = MQTTClient_SSLOptions_initializer;
	char *ca = h_strf("%s/ca.crt", ca_pki);
	char *crt = name ? h_strf("%s/%s.crt", pki, name) : NULL;
	char *key = name ? h_strf("%s/%s.key", pki, name) : NULL;
	int rc;

	if (strncmp(uri, "wss://", 6) != 0) {
		MQTTClient_connectOptions plain = MQTTClient_connectOptions_initializer5;
		opts = plain;
	}
	rc = MQTTClient_createWithOptions(&c->cli, uri, client_id ? client_id : "test", MQTTCLIENT_PERSISTENCE_NONE,
					  NULL, &co);
	if (rc != MQTTCLIENT_SUCCESS)
		goto fail;
	MQTTClient_setPublished(c->cli, c, on_published);
	ssl.trustStore = ca;
	ssl.keyStore = crt;
	ssl.privateKey = key;
	ssl.enableServerCertAuth = 1;
	ssl.verify = 1;
	ssl.sslVersion = MQTT_SSL_VERSION_TLS_1_2;
	opts.ssl = &ssl;
	opts.cleanstart = expiry_s == 0;
	opts.keepAliveInterval = 30;
	opts.connectTimeout = 5;
	MQTTProperties props = MQTTProperties_initializer;
	if (expiry_s > 0) {
		MQTTProperty p = {.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL};
		p.value.integer4 = (unsigned int)expiry_s;
		MQTTProperties_add(&props, &p);
	}
	MQTTResponse r = MQTTClient_connect5(c->cli, &opts, &props, NULL);
	MQTTProperties_free(&props);
	rc = r.reasonCode;
	MQTTResponse_free(r);
	if (rc != MQTTCLIENT_SUCCESS)
		goto fail;
	free(ca);
	free(crt);
	free(key);
	if (why)
		*why = 0;
	return c;
fail:
	if (why)
		*why = rc ? rc : -1;
	if (c->cli)
		MQTTClient_destroy(&c->cli);
	free(c);
	free(ca);
	free(crt);
	free(key);
	return NULL;
}

struct h_mqtt *h_mqtt_connect_ca(const char *uri, const char *pki, const char *name,
				 const char *ca_pki, const char *client_id, int *why)
{
	return connect_with(uri, pki, name, ca_pki, client_id, 0, why);
}

struct h_mqtt *h_mqtt_connect(const char *uri, const char *pki, const char *name,
			      const char *client_id, int *why)
{
	return connect_with(uri, pki, name, pki, client_id, 0, why);
}

struct h_mqtt *h_mqtt_connect_session(const char *uri, const char *pki, const char *name,
				      const char *client_id, int expiry_s)
{
	return connect_with(uri, pki, name, pki, client_id, expiry_s, NULL);
}

static int pub(struct h_mqtt *c, const char *topic, const void *payload, size_t len, int qos,
	       int retain, const char *resp_topic, const void *corr, size_t corr_len)
{
	MQTTClient_message m = MQTTClient_message_initializer;
	MQTTProperty p;
	if (resp_topic) {
		p.identifier = MQTTPROPERTY_CODE_RESPONSE_TOPIC;
		p.value.data.data = (char *)resp_topic;
		p.value.data.len = (int)strlen(resp_topic);
		MQTTProperties_add(&m.properties, &p);
	}
	if (corr) {
		p.identifier = MQTTPROPERTY_CODE_CORRELATION_DATA;
		p.value.data.data = (char *)corr;
		p.value.data.len = (int)corr_len;
		MQTTProperties_add(&m.properties, &p);
	}
	MQTTClient_deliveryToken tok = 0;
	m.payload = (void *)payload;
	m.payloadlen = (int)len;
	m.qos = qos;
	m.retained = retain;
	c->last_reason = -1;
	MQTTResponse r = MQTTClient_publishMessage5(c->cli, topic, &m, &tok);
	int rc = r.reasonCode;
	MQTTResponse_free(r);
	MQTTProperties_free(&m.properties);
	if (rc != MQTTCLIENT_SUCCESS)
		return -1;
	if (qos == 0)
		return 0;
	if (MQTTClient_waitForCompletion(c->cli, tok, 5000) != MQTTCLIENT_SUCCESS)
		return c->last_reason >= 0x80 ? c->last_reason : -1;
	return c->last_reason < 0 ? 0 : c->last_reason;
}

int h_mqtt_pub(struct h_mqtt *c, const char *topic, const void *payload, size_t len, int qos,
	       int retain)
{
	return pub(c, topic, payload, len, qos, retain, NULL, NULL, 0);
}

int h_mqtt_pub5(struct h_mqtt *c, const char *topic, const void *payload, size_t len, int qos,
		const char *resp_topic, const void *corr, size_t corr_len)
{
	return pub(c, topic, payload, len, qos, 0, resp_topic, corr, corr_len);
}

int h_mqtt_sub(struct h_mqtt *c, const char *filter, int qos)
{
	MQTTSubscribe_options so = MQTTSubscribe_options_initializer;
	MQTTResponse r = MQTTClient_subscribe5(c->cli, filter, qos, &so, NULL);
	int rc = r.reasonCode;
	MQTTResponse_free(r);
	return rc;
}

int h_mqtt_recv(struct h_mqtt *c, char **topic, char **payload, size_t *len, int timeout_ms)
{
	return h_mqtt_recv5(c, topic, payload, len, NULL, NULL, timeout_ms);
}

int h_mqtt_recv5(struct h_mqtt *c, char **topic, char **payload, size_t *len, void **corr,
		 size_t *corr_len, int timeout_ms)
{
	char *resp = NULL, *cd = NULL;
	size_t cl = 0;
	int r = h_mqtt_recv_props(c, topic, payload, len, &resp, &cd, &cl, timeout_ms);
	free(resp);
	if (corr)
		*corr = cd;
	else
		free(cd);
	if (corr_len)
		*corr_len = cl;
	return r;
}

void h_mqtt_close(struct h_mqtt *c)
{
	if (!c)
		return;
	if (MQTTClient_isConnected(c->cli))
		MQTTClient_disconnect5(c->cli, 1000, MQTTREASONCODE_SUCCESS, NULL);
	MQTTClient_destroy(&c->cli);
	free(c);
}

int h_mqtt_recv_props(struct h_mqtt *c, char **topic, char **payload, size_t *len,
		      char **response_topic, char **corr, size_t *corr_len, int timeout_ms)
{
	long long end = h_now_ms() + timeout_ms;
	*response_topic = NULL;
	*corr = NULL;
	*corr_len = 0;
	while (h_now_ms() < end) {
		char *t = NULL;
		int tlen = 0;
		MQTTClient_message *m = NULL;
		long left = (long)(end - h_now_ms());
		int rc = MQTTClient_receive(c->cli, &t, &tlen, &m, (unsigned long)(left > 0 ? left : 1));
		if (rc != MQTTCLIENT_SUCCESS && rc != MQTTCLIENT_TOPICNAME_TRUNCATED)
			return -1;
		if (!m)
			continue;
		*topic = strndup(t, tlen > 0 ? (size_t)tlen : strlen(t));
		*payload = malloc((size_t)m->payloadlen + 1);
		memcpy(*payload, m->payload, (size_t)m->payloadlen);
		(*payload)[m->payloadlen] = '\0';
		if (len)
			*len = (size_t)m->payloadlen;
		MQTTProperty *p = MQTTProperties_getProperty(&m->properties, MQTTPROPERTY_CODE_RESPONSE_TOPIC);
		if (p)
			*response_topic = strndup(p->value.data.data, (size_t)p->value.data.len);
		p = MQTTProperties_getProperty(&m->properties, MQTTPROPERTY_CODE_CORRELATION_DATA);
		if (p && p->value.data.len > 0) {
			*corr = malloc((size_t)p->value.data.len);
			memcpy(*corr, p->value.data.data, (size_t)p->value.data.len);
			*corr_len = (size_t)p->value.data.len;
		}
		MQTTClient_freeMessage(&m);
		MQTTClient_free(t);
		return 1;
	}
	return 0;
}
