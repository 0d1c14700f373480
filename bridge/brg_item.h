/* brg_item.h - what flows through the bridge pipeline: an MQTT message as received (brg_msg)
 * and the verifier's verdict on it (brg_item), which the writer commits. */
#ifndef BRG_ITEM_H
#define BRG_ITEM_H

#include <stddef.h>
#include <stdint.h>

#include "outpost.pb-c.h"
#include "wire_batch.h"
#include "wire_limits.h"
#include "wire_sign.h"

/* Bound on the v5 correlation data the bridge echoes (devices send 16 bytes). */
#define BRG_CORR_MAX 64

/* One received message, copied out of the transport in a single allocation:
 * free with free(). Fields point into the same block. */
struct brg_msg {
	char *topic;
	uint8_t *payload;
	size_t len;
	char *resp_topic; /* MQTT v5 Response Topic, NULL if absent */
	uint8_t *corr;    /* MQTT v5 Correlation Data, NULL if absent */
	size_t corr_len;
	int retained; /* delivered because it was retained (not a fresh publish) */
	int64_t received_ms;
	size_t cost; /* bytes charged to the pipeline's memory budget */
};

/* Allocate a message with room for everything (lengths without NULs); payload etc. are set
 * to their places in the block and copied from the arguments (which may be NULL). */
struct brg_msg *brg_msg_new(const char *topic, const void *payload, size_t len,
                            const char *resp_topic, const void *corr, size_t corr_len);

enum brg_item_kind {
	BRG_ITEM_REJECT, /* failed verification: count against the device */
	BRG_ITEM_BIRTH,
	BRG_ITEM_BATCH,
	BRG_ITEM_POLL,
	BRG_ITEM_RESULT,
	BRG_ITEM_STATUS,
	BRG_ITEM_DROP, /* not judged (store unreadable): dropped uncounted, the device resends */
};

/* Verdict on one message. Owned by whoever holds it; free with brg_item_free(). */
struct brg_item {
	enum brg_item_kind kind;
	char device[WIRE_ID_MAX + 1]; /* from the topic; "" if the topic was not an Outpost one */
	const char *reason;           /* REJECT: stable short reason (static string) */
	char detail[160];             /* REJECT: what was wrong, for the event row */
	uint64_t seq;
	uint64_t prev_seq; /* BATCH, RESULT */
	int64_t sent_at_ms;
	uint8_t sig[WIRE_SIG_LEN];
	struct wire_batch *batch;    /* BATCH */
	Outpost__Birth *birth;       /* BIRTH */
	struct wire_pubkey key;      /* BIRTH: key of the verified certificate; REJECT with
	                              * crl_revoked: key of the revoked one; BATCH, RESULT,
	                              * POLL: the key that verified it */
	int provisional;             /* BATCH, RESULT, POLL: verified with the key of a Birth
	                              * the writer may not have stored yet (brg_registry_get) */
	int crl_revoked;             /* REJECT revoked: the device's own certificate (its CN,
	                              * signed with its key) is on the CRL */
	uint64_t ca_gen;             /* BIRTH: brg_verifier_ca_gen of the CA/CRL that checked
	                              * its certificate */
	Outpost__TaskPoll *poll;     /* POLL */
	Outpost__TaskResult *result; /* RESULT */
	uint8_t corr[BRG_CORR_MAX];  /* POLL: correlation data to echo */
	size_t corr_len;
	int has_corr;
	int online;   /* STATUS: 1 online, 0 offline */
	int retained; /* STATUS: a retained (possibly stale) status */
	size_t cost;  /* bytes charged to the memory budget */
};

void brg_item_free(struct brg_item *it); /* accepts NULL */

/* Rejection reasons (stable strings, stored in rejections.reason). */
#define BRG_R_TOPIC       "topic"          /* not an Outpost uplink topic */
#define BRG_R_OVERSIZE    "oversize"       /* payload or a field over a wire limit */
#define BRG_R_DECODE      "decode"         /* not a valid envelope or body */
#define BRG_R_VERSION     "version"        /* unsupported wire version */
#define BRG_R_KIND        "kind_mismatch"  /* envelope kind does not belong on the topic */
#define BRG_R_ID          "id_mismatch"    /* envelope device_id is not the topic's id */
#define BRG_R_UNKNOWN     "unknown_device" /* no Birth enrolled the device yet */
#define BRG_R_SIG         "bad_signature"  /* signature does not verify with the enrolled key */
#define BRG_R_CHAIN       "cert_chain"     /* Birth certificate not issued by the CA */
#define BRG_R_REVOKED     "revoked"        /* revoked by the CRL or in the store */
#define BRG_R_EXPIRED     "cert_expired"   /* Birth certificate outside its validity */
#define BRG_R_CERT        "cert_invalid"   /* Birth certificate unusable (not Ed25519, bad CN) */
#define BRG_R_CN          "cert_cn"        /* Birth certificate CN is not the topic's id */
#define BRG_R_CRL         "crl_expired"    /* the bridge's CRL expired: no Birth can be judged */
#define BRG_R_SEQ         "seq_range"      /* seq 0 or >= 2^63, or prev_seq >= seq */
#define BRG_R_REUSED      "seq_reused"     /* durable seq stored before with another signature */
#define BRG_R_TOO_OLD     "too_old"        /* durable seq at or below the frontier, not stored */
#define BRG_R_REPLAYED    "replayed"       /* birth/poll seq not above the last one seen */
#define BRG_R_RESPONSE    "response_topic" /* poll without the device's own response topic */
#define BRG_R_STATUS      "status"         /* status payload not "online"/"offline" */
#define BRG_R_QUARANTINED "quarantined"    /* dropped: the device is quarantined */

#endif
