/* store_ops.h - domain operations on the store shared by outpost-bridge and outpostctl:
 * device records and their state changes, events, and the operator side of tasks.
 * Every state change writes an event row in the same transaction. */
#ifndef STORE_OPS_H
#define STORE_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "wire_limits.h"

/* Unix milliseconds now. */
int64_t store_now_ms(void);

/* Device states (devices.state). */
#define STORE_ST_UNENROLLED  "unenrolled"  /* seen (e.g. rejected), never enrolled by a Birth */
#define STORE_ST_ACTIVE      "active"      /* enrolled, messages accepted */
#define STORE_ST_QUARANTINED "quarantined" /* messages dropped until `device release` */
#define STORE_ST_REVOKED     "revoked"     /* refused (store or CRL revocation) until a new key */
#define STORE_ST_DEACTIVATED "deactivated" /* silent too long; any verified message revives */

/* NULL-terminated lists of the values the programs write, for checking operator input:
 * devices.state (the STORE_ST_* above), tasks.state (STORE_TASK_* below) and events.type
 * (docs/BRIDGE.md "Health"; a new event type is added here). */
extern const char *const store_device_states[];
extern const char *const store_task_states[];
extern const char *const store_event_types[];

/* 1 if name (may be NULL) is in the NULL-terminated list, else 0. */
int store_name_in(const char *name, const char *const *list);

/* An operator's reason for a device action (store_device_action) holds at most this many
 * bytes: with "active -> quarantined by outpostctl: " before it, all of it is kept in the
 * device's state_reason and the event. */
#define STORE_REASON_MAX 200
/* Bytes of a device's state_reason kept in struct store_device (whole characters). */
#define STORE_STATE_REASON_MAX 255

struct store_device {
	int64_t key; /* devices.id */
	char device_id[WIRE_ID_MAX + 1];
	char state[16];
	char state_reason[STORE_STATE_REASON_MAX + 1];
	int online;
	int has_pubkey;
	uint8_t pubkey[WIRE_PUBKEY_LEN];
	char agent_version[WIRE_MAX_AGENT_VERSION + 1];
	int64_t sample_interval_s, poll_interval_s, batch_interval_s; /* from the last Birth */
	int64_t frontier, last_nd_seq, consecutive_rejects;
	int64_t envelopes, readings, duplicates, rejected;
	int64_t spool_records, spool_bytes, spool_dropped_total; /* -1 if never reported */
	int64_t created_at, enrolled_at, last_seen_at, last_birth_at,
	    state_changed_at; /* 0: never */
};

/* Read one device by id. STORE_ENOTFOUND if the store never saw it. */
int store_device_get(struct store *s, const char *device_id, struct store_device *out);

/* Operator actions on a device, each in its own transaction with an event row:
 *   "quarantine": any state but revoked -> quarantined
 *   "release":    quarantined -> active (unenrolled if it never enrolled), rejections reset;
 *                 deactivated -> active
 *   "revoke":     any state -> revoked. The key the device holds is refused for good: it
 *                 goes to revoked_keys and stays refused after the device re-enrolled. The
 *                 device itself is refused until a Birth with a certificate for a new key
 *                 (never revoked, chaining to the CA, not on the CRL) re-enrols it: a key
 *                 rotation (`reenrolled` event). Only the CA issues such a certificate.
 * by names the actor for the event ("outpostctl"); reason may be NULL.
 * *old_state (16 bytes, may be NULL) receives the state before. STORE_ENOTFOUND for an
 * unknown device, STORE_ESTATE if the action does not apply (e.g. releasing an active device:
 * nothing changes, no event; outpostctl calls that done). */
int store_device_action(struct store *s, const char *device_id, const char *action, const char *by,
                        const char *reason, char *old_state);

/* Append an event (device_key 0 = not about one device). Inside or outside a transaction. */
int store_event_add(struct store *s, int64_t device_key, int64_t at, const char *type,
                    const char *detail);

/* ---- tasks (operator side) ---- */

/* Remember a key as revoked: binds key (blob, WIRE_PUBKEY_LEN), device (its row key), the time.
 * A key revoked once is refused for good, whatever device presents it; the first revocation
 * stays. The bridge (CRL) and outpostctl (`device revoke`) write it through this one text. */
#define STORE_SQL_KEY_REVOKE                                                                       \
	"INSERT INTO revoked_keys (key, device, revoked_at) VALUES (?, ?, ?)"                      \
	" ON CONFLICT (key) DO NOTHING"

/* Task states (tasks.state). */
#define STORE_TASK_QUEUED    "queued"
#define STORE_TASK_DELIVERED "delivered"
#define STORE_TASK_SUCCEEDED "succeeded"
#define STORE_TASK_FAILED    "failed"
#define STORE_TASK_EXPIRED   "expired"
#define STORE_TASK_CANCELLED "cancelled"

/* 1 if type is one of the allowlisted task types: ping, set_config, resend, collect_now,
 * restart. */
int store_task_type_allowed(const char *type);

/* NULL-terminated list of the allowlisted types (for help texts). */
extern const char *const store_task_types[];

struct store_kv {
	const char *key;
	const char *value;
};

/* Queue a task for device_id (must exist in the store, must not be revoked) expiring at
 * expires_at (ms). Arguments are checked against the wire limits (WIRE_MAX_ARGS, WIRE_MAX_KEY,
 * WIRE_MAX_VALUE). *id receives the new task id. STORE_ENOTFOUND (device), STORE_EINVAL
 * (type not allowlisted, bad arguments, expiry in the past), STORE_ESTATE (device revoked). */
int store_task_add(struct store *s, const char *device_id, const char *type,
                   const struct store_kv *args, size_t nargs, int64_t expires_at, const char *by,
                   int64_t *id);

/* Cancel a queued task. STORE_ENOTFOUND, or STORE_ESTATE once it was delivered or finished;
 * state (16 bytes, may be NULL) then receives its current state. */
int store_task_cancel(struct store *s, int64_t id, const char *by, char *state);

#endif
