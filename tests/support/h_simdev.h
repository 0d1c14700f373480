/* h_simdev.h - a simulated Outpost device for tests, until and beside the real agent.
 * With a device key/certificate from a test PKI it connects to the broker's MQTTS listener,
 * publishes a Birth, then a chain of signed Batches (wire_batch + wire_env_seal, libmosquitto),
 * keeps every batch in an in-memory "spool" until a verified bridge Ack covers it, and resends
 * everything unacknowledged after each reconnect and whenever no ack moved for ack_timeout_ms, as
 * docs/PROTOCOL.md section 4 asks of the real device. It runs in its own thread. */
#ifndef H_SIMDEV_H
#define H_SIMDEV_H

#include <stddef.h>
#include <stdint.h>

struct h_simdev_opts {
	const char *pki;    /* h_pki() */
	const char *id;     /* device id; key and cert at <pki>/devices/<id>.{key,crt} */
	int port;           /* broker MQTTS port */
	int batches;        /* how many batches to produce */
	int rows;           /* rows (sample instants) per batch, >= 1 */
	int cols;           /* metrics per row (ids 1..cols), >= 1 */
	int window;         /* unacknowledged batches in flight before waiting for acks */
	int ack_timeout_ms; /* resend everything when no ack moved this long */
	int poll_every;     /* a TaskPoll (non-durable, consumes a seq) every N batches; 0 none */
	int drop_every;     /* every Nth batch is "dropped" unsent and reported; 0 none */
	int rate;           /* batches per second at most; 0 = as fast as acks allow */
	uint64_t first_seq; /* seq of the Birth (default 1) */
	uint64_t prev_durable; /* last durable seq before this run (a device restarting) */
	int64_t t0_ms;         /* time of the first sample */
};

struct h_simdev_stats {
	uint64_t sent;     /* batch publishes, first sends */
	uint64_t resent;   /* batch publishes, resends */
	uint64_t acks;     /* verified acks received */
	uint64_t bad_acks; /* acks that failed verification */
	uint64_t reconnects;
	uint64_t upto;     /* highest Ack.upto */
	size_t spooled;    /* unacknowledged batches now */
	int produced;      /* batches produced (including dropped ones) */
	int dropped;       /* batches dropped on purpose */
	uint64_t last_seq; /* last seq used */
};

struct h_simdev;

struct h_simdev *h_simdev_start(const struct h_simdev_opts *o);

/* Wait until every batch was produced and acknowledged; 1 if so, 0 after timeout_ms. */
int h_simdev_wait(struct h_simdev *d, int timeout_ms);

void h_simdev_stats(struct h_simdev *d, struct h_simdev_stats *out);

/* Stop the thread and free. Accepts NULL. */
void h_simdev_stop(struct h_simdev *d);

/* What the device stored for batch `seq`, row r, column c: value and time. */
double h_simdev_value(uint64_t seq, int r, int c);
int64_t h_simdev_time(const struct h_simdev_opts *o, uint64_t seq, int r);

/* Seq of the k-th produced batch (0-based); *sent = 1 if it was sent, 0 if dropped. */
uint64_t h_simdev_batch(struct h_simdev *d, int k, int *sent);

/* 1 if batch seq was produced and sent (not dropped) by d. */
int h_simdev_was_sent(struct h_simdev *d, uint64_t seq);

/* Seal an envelope as device/bridge `name` of pki (e.g. "devices/dev-a", "bridge"):
 * returns malloc'd bytes (caller frees). Aborts on failure (tests only). */
uint8_t *h_seal(const char *pki, const char *name, uint32_t kind, const char *device_id,
                uint64_t seq, const void *body, size_t body_len, size_t *len);
/* The same, sent at sent_at_ms (h_seal: a time near 2023-11-14 that grows with seq). */
uint8_t *h_seal_at(const char *pki, const char *name, uint32_t kind, const char *device_id,
                   uint64_t seq, int64_t sent_at_ms, const void *body, size_t body_len,
                   size_t *len);

/* A Birth body for device id of pki with metrics 1..ncols named m1..mN and chain_floor. */
uint8_t *h_birth_body(const char *pki, const char *id, int ncols, uint64_t chain_floor,
                      size_t *len);
/* The same with metrics named <prefix>1..<prefix>N. */
uint8_t *h_birth_body_named(const char *pki, const char *id, int ncols, uint64_t chain_floor,
                            const char *prefix, size_t *len);

/* A Batch body: rows x cols readings as h_simdev would send for seq. */
uint8_t *h_batch_body(const struct h_simdev_opts *o, uint64_t seq, uint64_t prev_seq, size_t *len);

#endif
