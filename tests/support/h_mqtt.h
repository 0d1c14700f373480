/* h_mqtt.h - a small synchronous MQTT v5 client for tests (Paho MQTTClient, mutual TLS). */
#ifndef H_MQTT_H
#define H_MQTT_H

#include <stddef.h>

struct h_mqtt;

/* Connect to uri ("ssl://127.0.0.1:P" or "wss://localhost:P/mqtt") with identity
 * <pki>/<name>.crt/.key (for example devices/dev-a or bridge; NULL: no client certificate) and CA
* <ca_pki>/ca.crt. Returns NULL if the connection is refused; *why gets the Paho code. */
struct h_mqtt *h_mqtt_connect(const char *uri, const char *pki, const char *name,
			      const char *client_id, int *why);
struct h_mqtt *h_mqtt_connect_ca(const char *uri, const char *pki, const char *name,
				 const char *ca_pki, const char *client_id, int *why);
/* A persistent session (clean start off, session expiry expiry_s > 0): the broker queues for
 * it while it is away, across a broker restart too (plain subscriptions). */
struct h_mqtt *h_mqtt_connect_session(const char *uri, const char *pki, const char *name,
				      const char *client_id, int expiry_s);

/* Publish and wait for the PUBACK (qos 1); returns its MQTT v5 reason code (0 = success,
 * 0x10 = no subscribers, 0x87 = not authorised), or -1 if the connection failed. */
int h_mqtt_pub(struct h_mqtt *c, const char *topic, const void *payload, size_t len, int qos,
	       int retain);

/* Like h_mqtt_pub with MQTT v5 Response Topic and Correlation Data (either may be NULL). */
int h_mqtt_pub5(struct h_mqtt *c, const char *topic, const void *payload, size_t len, int qos,
		const char *resp_topic, const void *corr, size_t corr_len);

/* Subscribe; returns the granted QoS / reason code from the SUBACK, or -1. */
int h_mqtt_sub(struct h_mqtt *c, const char *filter, int qos);

/* Wait up to timeout_ms for a message. Returns 1 and fills topic and payload (caller frees both,
 * payload NUL-terminated) or 0 on timeout, -1 on disconnect. */
int h_mqtt_recv(struct h_mqtt *c, char **topic, char **payload, size_t *len, int timeout_ms);

/* Like h_mqtt_recv, also returning the v5 Correlation Data (caller frees; NULL if absent). */
int h_mqtt_recv5(struct h_mqtt *c, char **topic, char **payload, size_t *len, void **corr,
		 size_t *corr_len, int timeout_ms);

void h_mqtt_close(struct h_mqtt *c); /* accepts NULL */


/* As h_mqtt_recv, also returning the v5 response topic and correlation data (malloc'd or NULL;
 * caller frees). */
int h_mqtt_recv_props(struct h_mqtt *c, char **topic, char **payload, size_t *len,
		      char **response_topic, char **corr, size_t *corr_len, int timeout_ms);

#endif
