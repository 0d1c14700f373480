/* dev_link.h - the device's only connection: MQTT v5 over WebSockets+TLS, falling back to
 * MQTT over TLS, optionally through an HTTP CONNECT proxy, with mutual TLS and reconnects
 * with exponential backoff and full jitter. The only module that knows Paho (MQTTAsync).
 *
 * Threading: every dev_link_* function is called from one thread (the agent's). Paho's threads
 * only queue events; the owner drains them with dev_link_next_event() after `wake` fires. */
#ifndef DEV_LINK_H
#define DEV_LINK_H

#include <stddef.h>
#include <stdint.h>

enum dev_link_err {
	DEV_LINK_OK = 0,
	DEV_LINK_ENOMEM = -1,
	DEV_LINK_EINVAL = -2,
	DEV_LINK_ENOTCONN = -3, /* publish while not connected */
	DEV_LINK_EPAHO = -4,	/* the MQTT library refused the call */
};

const char *dev_link_strerror(int err);

struct dev_link_opts {
	const char *client_id;	/* the device id (the broker uses the certificate CN anyway) */
	const char *host;
	int wss_port;		/* 0: do not try WebSockets */
	int mqtts_port;		/* 0: do not try MQTT over TLS */
	const char *ws_path;	/* "/mqtt" */
	const char *ca_file;	/* trust anchor for the broker certificate */
	const char *cert_file;	/* device certificate */
	const char *key_file;	/* device private key */
	const char *proxy;	/* "host:port" (see dev_proxy.h) or NULL */
	const char *will_topic; /* retained "offline" will */
	int keepalive_s;
	int connect_timeout_s;
	int64_t backoff_min_ms; /* first retry within [0, backoff_min_ms] */
	int64_t backoff_max_ms; /* cap of the exponential growth */
	int64_t reconnect_spread_ms; /* after a lost connection: first retry within [0, this],
				      * growing from there (0: backoff_min_ms) */
	const char *const *subscribe; /* topics to subscribe (QoS 1) on every connect; NULL-ended */
};

enum dev_link_event_type {
	DEV_LINK_UP,	  /* connected; text = server URI */
	DEV_LINK_DOWN,	  /* connection lost; text = cause */
	DEV_LINK_FAILED,  /* a connection attempt failed; text = "URI: reason" */
	DEV_LINK_MESSAGE, /* text = topic; data = payload; corr = correlation data */
	DEV_LINK_SUBSCRIBED, /* internal: the broker granted every subscription (never returned) */
};

#define DEV_LINK_TEXT_MAX 320 /* a longer cause is cut; a topic is at most 255 bytes */

struct dev_link_event {
	enum dev_link_event_type type;
	char text[DEV_LINK_TEXT_MAX];
	uint8_t *data;
	size_t len;
	uint8_t *corr;
	size_t corr_len;
	int fallback;    /* FAILED: the next transport is tried at once */
	int unexplained; /* FAILED: no reason from TLS or the broker (see dev_tlscheck.h) */
};

void dev_link_event_free(struct dev_link_event *ev); /* frees data and corr, not ev */

struct dev_link;

/* A connection that stays up this long with its subscriptions granted has worked: the next
 * failure starts the backoff afresh. One lost sooner counts as one more failure in a row. */
#define DEV_LINK_STABLE_MS 60000

/* wake(ctx) is called from Paho threads whenever an event is queued. */
int dev_link_new(const struct dev_link_opts *opts, void (*wake)(void *ctx), void *ctx,
		 struct dev_link **out);
/* Disconnects; accepts NULL. A link still connecting waits at most DEV_LINK_FREE_WAIT_MS for
 * the MQTT library to let go of its client (it holds on to it through a name lookup of the
 * broker, which nothing bounds): past that the link is left to the process's exit, with its
 * client and without calling wake again. */
#define DEV_LINK_FREE_WAIT_MS 2000
void dev_link_free(struct dev_link *l);
/* 1 if dev_link_free left a link to the process's exit: its client's thread may still come
 * back from the name lookup into the MQTT and TLS libraries, which exit() tears down (atexit
 * handlers), so such a process should end with _exit(). Call from the thread that frees. */
int dev_link_any_abandoned(void);

/* Drive reconnects: starts an attempt when one is due. now is CLOCK_MONOTONIC ms. Returns the
 * time the link next needs attention (INT64_MAX if none). */
int64_t dev_link_tick(struct dev_link *l, int64_t now);

/* Pop the next event (owned by the caller: dev_link_event_free), in the order they happened.
 * 1 if one was returned. Messages wait in a queue of 256: one that finds it full, or no
 * memory for its copy, is lost (dev_link_stats.dropped_events). A state change (UP, DOWN,
 * FAILED) is never lost: each kind has a place of its own, filled without allocating. */
int dev_link_next_event(struct dev_link *l, struct dev_link_event *ev);

int dev_link_is_up(const struct dev_link *l);

/* Publish; with response_topic/corr set, as an MQTT v5 request. Only while up. */
int dev_link_publish(struct dev_link *l, const char *topic, const void *payload, size_t len,
		     int qos, int retain, const char *response_topic, const void *corr,
		     size_t corr_len);

/* Drop the connection now (e.g. a forced reconnect); the usual backoff follows. */
void dev_link_drop(struct dev_link *l, const char *why);

struct dev_link_stats {
	uint64_t connects;
	uint64_t disconnects;
	uint64_t failures;
	int64_t last_delay_ms; /* the last backoff delay drawn */
	int64_t last_window_ms; /* ... at random in [0, this] */
	char last_cause[128];
	char uri[160];	       /* the URI of the current or last connection */
	uint64_t dropped_events; /* messages lost: the event queue was full, or memory short */
};

void dev_link_stats(const struct dev_link *l, struct dev_link_stats *st);

#endif
