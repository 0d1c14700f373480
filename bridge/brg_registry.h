/* brg_registry.h - the verifiers' view of devices: enrolled key and state, cached in memory
 * and loaded from the store on a miss. The writer corrects entries after each commit, so the
 * cache follows the store (including outpostctl's changes) as soon as a device is seen. */
#ifndef BRG_REGISTRY_H
#define BRG_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "wire_sign.h"

enum brg_state {
	BRG_ST_NONE,       /* not in the store */
	BRG_ST_UNENROLLED, /* in the store without a key */
	BRG_ST_ACTIVE,
	BRG_ST_QUARANTINED,
	BRG_ST_REVOKED,
	BRG_ST_DEACTIVATED,
};

/* "active" -> BRG_ST_ACTIVE ...; BRG_ST_NONE for anything else. */
enum brg_state brg_state_parse(const char *s);
const char *brg_state_name(enum brg_state st);

struct brg_dev_info {
	enum brg_state state;
	int has_key;
	struct wire_pubkey key;
	/* Set by brg_registry_get only: key is that of a verified Birth the store does not hold
	 * yet (brg_registry_put_birth), and enrolled (if has_enrolled) the one it still holds;
	 * enrolled_revoked: that one is revoked (revocation holds the key, not the id). */
	int provisional, has_enrolled, enrolled_revoked;
	struct wire_pubkey enrolled;
};

struct brg_registry;

/* reader: a store connection used only by the registry (taken over: freed with the
 * registry). max_entries bounds the cache: when full, it is emptied of all but the pending
 * Births (brg_registry_put_birth), which do not count against it: the pipeline's queues
 * bound them. */
int brg_registry_new(struct store *reader, size_t max_entries, struct brg_registry **out);
void brg_registry_free(struct brg_registry *r); /* accepts NULL */

/* Look a device up. While a verified Birth waits for the writer (brg_registry_put_birth),
 * however long, its view comes back, marked provisional, unless max_age_ms is 0. Entries
 * without a key, quarantined or revoked are re-read from the store after a second (outpostctl
 * changes them behind the bridge's back), and max_age_ms >= 0 forces a re-read of older
 * entries (0: always, and the store's view is returned). Thread-safe.
 * BRG_ESTORE if the store cannot be read (the caller should not reject for that), BRG_ECLOSED
 * when it would have to be read after brg_registry_interrupt. */
int brg_registry_get(struct brg_registry *r, const char *id, int64_t max_age_ms,
                     struct brg_dev_info *out);

/* For a stop past its deadline, from any thread: the store read running (one waiting on a
 * lock another session holds) is cancelled, and from now on a lookup that would read the store
 * fails with BRG_ECLOSED instead (what the cache holds is still answered). Not undone. */
void brg_registry_interrupt(struct brg_registry *r);

/* Replace the store's view of a device (the writer after a commit). A pending Birth whose key
 * it now holds is done; another stays pending (it may be later in the queue). */
void brg_registry_put(struct brg_registry *r, const char *id, const struct brg_dev_info *info);

/* A verifier after a verified Birth: the device's view once the writer has stored it (its key,
 * its state), so that its next envelopes verify before the writer gets to the Birth. The
 * store's view is kept beside it; a later Birth replaces it. Nothing is pending when the
 * store's view already holds that key (a device restarting with its key). */
void brg_registry_put_birth(struct brg_registry *r, const char *id,
                            const struct brg_dev_info *info);

/* The writer judged a Birth with key (stored it, refused it, found a replay) or dropped it
 * because the store refuses it: forget it if it is the pending one, so that the device's
 * state (its stored key, quarantine, revocation) applies again at once. Every Birth the
 * verifiers put ends here (through brg_outcome_to_registry, whose states the writer gathers
 * before COMMIT) or with the pipeline (a stop): a pending Birth has no time limit. */
void brg_registry_birth_judged(struct brg_registry *r, const char *id,
                               const struct wire_pubkey *key);

size_t brg_registry_size(struct brg_registry *r);

/* Tests only: the registry's clock runs ms ahead from now on. */
void brg_registry__age(struct brg_registry *r, int64_t ms);

#endif
