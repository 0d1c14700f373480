/* brg_mqtt.h - the bridge's MQTT transport (libmosquitto; this header hides it): MQTT v5 over
 * mutual TLS to the broker's internal listener, two connections. One receives: a persistent
 * session (clean start off, long session expiry, stable client id) so the broker queues while
 * the bridge restarts, the shared subscription
 * $share/<group>/outpost/v1/+/{birth,telemetry,tasks/poll,tasks/result} and a plain one to
 * outpost/v1/+/status. The other (client id <client_id>.pub, a clean session) publishes, so
 * that a stop can stop receiving and still publish the acks of what it received. Each
 * reconnects by itself, with backoff. */
#ifndef BRG_MQTT_H
#define BRG_MQTT_H

#include <stddef.h>
#include <stdint.h>

#include "brg_err.h"
#include "brg_item.h"

/* Receives each message (taken over). May block: that stops reading from the broker.
 * libmosquitto acknowledges the message to the broker (PUBACK) once this returns, whatever it
 * did with it: only the bridge's own Ack means stored. */
typedef int (*brg_mqtt_msg_fn)(void *ctx, struct brg_msg *m);

struct brg_mqtt_opts {
	const char *host;
	int port;
	const char *client_id;
	const char *share_group; /* "" or NULL: plain subscriptions (one bridge), else $share/<group>/… */
	/* "" or NULL, or a group whose subscriptions a resumed session may hold from an earlier
	 * run: they are taken away at each resumed connect (so are the plain ones when
	 * share_group is set) */
	const char *former_share_group;
	int keepalive_s;
	uint32_t session_expiry_s;
	const char *ca_file, *cert_file, *key_file;
	brg_mqtt_msg_fn on_message;
	void *ctx;
	brg_log_fn log;
	void *log_ctx;
};

struct brg_mqtt;

/* Strings in o are copied. err (256 bytes) says what is wrong on failure. */
int brg_mqtt_new(const struct brg_mqtt_opts *o, struct brg_mqtt **out, char *err);

/* Start the network threads: connect (retrying with backoff), subscribe, deliver messages. */
int brg_mqtt_start(struct brg_mqtt *m);

/* Publish QoS 1 on the publishing connection (brg_publish_fn; ctx is the struct brg_mqtt).
 * Queued in memory while disconnected and sent after the reconnect. Thread-safe. */
int brg_mqtt_publish(void *ctx, const char *topic, const void *payload, size_t len,
                     const void *corr, size_t corr_len);

/* Wait until every publish so far was acknowledged by the broker, up to timeout_ms.
 * BRG_ETIMEDOUT if some are still pending. */
int brg_mqtt_flush(struct brg_mqtt *m, int timeout_ms);

/* The first step of a stop: the receiving connection disconnects and is read no more, so what
 * the broker has not delivered yet stays queued in the session for the next run. Returns once
 * on_message will not be called again: a call under way is waited for, and so is every
 * message libmosquitto read before the DISCONNECT (each is handed to on_message: the broker
 * has its PUBACK, but for one read as the DISCONNECT went out, whose PUBACK is not sent: the
 * broker delivers it again next run, a duplicate), so on_message must take messages until
 * this returns. Publishing goes on. */
int brg_mqtt_stop_receiving(struct brg_mqtt *m);

/* Stop receiving (if not done yet), disconnect the publishing connection and join the
 * network threads, waiting at most BRG_MQTT_STOP_S seconds: a connect or TLS handshake under
 * way cannot be interrupted (an unreachable broker: the kernel's SYN retries, minutes).
 * BRG_ETIMEDOUT then: the thread is left running, never calling on_message or log again (what
 * they use may be freed), and brg_mqtt_free() leaves the clients to the process's exit.
 * Flush first: what is not yet acknowledged by the broker is not sent again. */
#define BRG_MQTT_STOP_S 10
int brg_mqtt_stop(struct brg_mqtt *m);
void brg_mqtt_free(struct brg_mqtt *m); /* accepts NULL; stops first */

#endif
