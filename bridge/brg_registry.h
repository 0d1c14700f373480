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
};

struct brg_registry;

/* reader: a store connection used only by the registry (taken over: freed with the
 * registry). max_entries bounds the cache (it is emptied when full). */
int brg_registry_new(struct store *reader, size_t max_entries, struct brg_registry **out);
void brg_registry_free(struct brg_registry *r); /* accepts NULL */

/* Look a device up. Entries without a key, quarantined or revoked are re-read from the store
 * after a second (outpostctl changes them behind the bridge's back), and
 * max_age_ms >= 0 forces a re-read of older entries (0: always). Thread-safe.
 * BRG_ESTORE if the store cannot be read (the caller should not reject for that). */
int brg_registry_get(struct brg_registry *r, const char *id, int64_t max_age_ms,
                     struct brg_dev_info *out);

/* Replace the cached entry (the writer after a commit, a verifier after a verified Birth).
 * A re-read never replaces a cached key with "no key": that is a Birth not committed yet. */
void brg_registry_put(struct brg_registry *r, const char *id, const struct brg_dev_info *info);

size_t brg_registry_size(struct brg_registry *r);

#endif
