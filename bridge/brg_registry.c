/* brg_registry.c - device key/state cache: an open hash table under one mutex. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "otime.h"
#include "brg_err.h"
#include "brg_registry.h"
#include "store_ops.h"
#include "wire_limits.h"

#define NOKEY_TTL_MS 1000 /* see brg_registry_get */

struct entry {
	char id[WIRE_ID_MAX + 1]; /* "" = free slot */
	struct brg_dev_info info; /* the store's view */
	int64_t loaded_ms;
	struct brg_dev_info birth; /* a verified Birth's view, while the writer has not judged it */
	int pending;               /* birth is set */
};

struct brg_registry {
	pthread_mutex_t mu;       /* the table */
	pthread_mutex_t store_mu; /* the reader connection */
	struct store *reader;
	struct entry *slots;
	size_t cap, used, max;
	size_t pending; /* entries with a pending Birth: not counted against max */
	int64_t clock_shift_ms; /* brg_registry__age() */
	atomic_int interrupted; /* brg_registry_interrupt(): no more store reads */
};

static const char *const names[] = {"",
                                    STORE_ST_UNENROLLED,
                                    STORE_ST_ACTIVE,
                                    STORE_ST_QUARANTINED,
                                    STORE_ST_REVOKED,
                                    STORE_ST_DEACTIVATED};

enum brg_state brg_state_parse(const char *s)
{
	for (int i = 1; s && i <= BRG_ST_DEACTIVATED; i++)
		if (!strcmp(s, names[i]))
			return (enum brg_state)i;
	return BRG_ST_NONE;
}

const char *brg_state_name(enum brg_state st)
{
	return st >= BRG_ST_NONE && st <= BRG_ST_DEACTIVATED && st != BRG_ST_NONE ? names[st]
	                                                                          : "unknown";
}

static int64_t now_ms(const struct brg_registry *r)
{
	return otime_mono_ms() + r->clock_shift_ms;
}

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

int brg_registry_new(struct store *reader, size_t max_entries, struct brg_registry **out)
{
	struct brg_registry *r = calloc(1, sizeof(*r));
	if (!r)
		return BRG_ENOMEM;
	/* Start small (a power of two); grow while at most half full, up to max entries. */
	r->cap = 1024;
	r->slots = calloc(r->cap, sizeof(*r->slots));
	if (!r->slots) {
		free(r);
		return BRG_ENOMEM;
	}
	r->max = max_entries < 16 ? 16 : max_entries;
	pthread_mutex_init(&r->mu, NULL);
	pthread_mutex_init(&r->store_mu, NULL);
	r->reader = reader;
	*out = r;
	return BRG_OK;
}

void brg_registry_free(struct brg_registry *r)
{
	if (!r)
		return;
	store_close(r->reader);
	pthread_mutex_destroy(&r->mu);
	pthread_mutex_destroy(&r->store_mu);
	free(r->slots);
	free(r);
}

/* Slot for id (existing or the free one where it would go). Caller holds mu. */
static struct entry *find(struct brg_registry *r, const char *id)
{
	size_t mask = r->cap - 1, i = (size_t)hash(id) & mask;
	while (r->slots[i].id[0] && strcmp(r->slots[i].id, id))
		i = (i + 1) & mask;
	return &r->slots[i];
}

static int grow(struct brg_registry *r)
{
	size_t ncap = r->cap * 2;
	struct entry *old = r->slots, *n = calloc(ncap, sizeof(*n));
	if (!n)
		return BRG_ENOMEM;
	size_t ocap = r->cap;
	r->slots = n;
	r->cap = ncap;
	for (size_t i = 0; i < ocap; i++)
		if (old[i].id[0])
			*find(r, old[i].id) = old[i];
	free(old);
	return BRG_OK;
}

static void set_pending(struct brg_registry *r, struct entry *e, int pending)
{
	if (pending && !e->pending)
		r->pending++;
	else if (!pending && e->pending)
		r->pending--;
	e->pending = pending;
}

/* Bounded: start over, keeping only the pending Births (at most one per Birth in the
 * pipeline, which is bounded by its queues); other entries come back from the store on
 * demand. Without memory for a new table, the pending Births go too (their envelopes then
 * wait for the writer to store the key, and the device sends them again). */
static void forget_settled(struct brg_registry *r)
{
	struct entry *old = r->slots, *n = calloc(r->cap, sizeof(*n));
	if (n)
		r->slots = n;
	else
		memset(old, 0, r->cap * sizeof(*old));
	r->used = r->pending = 0;
	for (size_t i = 0; n && i < r->cap; i++)
		if (old[i].id[0] && old[i].pending) {
			*find(r, old[i].id) = old[i];
			r->used++;
			r->pending++;
		}
	if (n)
		free(old);
}

/* The entry of id, created (empty, to be loaded) if need be; NULL without memory. */
static struct entry *entry_for(struct brg_registry *r, const char *id)
{
	struct entry *e = find(r, id);
	if (!e->id[0]) {
		if (r->used - r->pending >= r->max)
			forget_settled(r);
		if ((r->used + 1) * 2 > r->cap && grow(r))
			return NULL; /* no memory: just do not cache */
		e = find(r, id);
		strcpy(e->id, id);
		r->used++;
	}
	return e;
}

static void put_locked(struct brg_registry *r, const char *id, const struct brg_dev_info *info,
                       int64_t now)
{
	struct entry *e = entry_for(r, id);
	if (!e)
		return;
	e->info = *info;
	e->info.provisional = e->info.has_enrolled = e->info.enrolled_revoked = 0;
	e->loaded_ms = now;
	if (e->pending && info->has_key &&
	    !memcmp(info->key.raw, e->birth.key.raw, sizeof(info->key.raw)))
		set_pending(r, e, 0); /* stored */
}

void brg_registry_put(struct brg_registry *r, const char *id, const struct brg_dev_info *info)
{
	if (strlen(id) > WIRE_ID_MAX || !id[0])
		return;
	pthread_mutex_lock(&r->mu);
	put_locked(r, id, info, now_ms(r));
	pthread_mutex_unlock(&r->mu);
}

void brg_registry_put_birth(struct brg_registry *r, const char *id,
                            const struct brg_dev_info *info)
{
	if (strlen(id) > WIRE_ID_MAX || !id[0] || !info->has_key)
		return;
	pthread_mutex_lock(&r->mu);
	struct entry *e = entry_for(r, id);
	/* the store holds that key already (a device's restart): nothing is pending */
	if (e && e->loaded_ms && e->info.has_key &&
	    !memcmp(e->info.key.raw, info->key.raw, sizeof(info->key.raw)))
		set_pending(r, e, 0);
	else if (e) {
		e->birth = *info;
		set_pending(r, e, 1);
	}
	pthread_mutex_unlock(&r->mu);
}

void brg_registry_interrupt(struct brg_registry *r)
{
	atomic_store(&r->interrupted, 1);
	store_interrupt(r->reader); /* without store_mu: the read holds it */
}

int brg_registry_get(struct brg_registry *r, const char *id, int64_t max_age_ms,
                     struct brg_dev_info *out)
{
	int64_t now;
	struct entry *e;
	if (strlen(id) > WIRE_ID_MAX || !id[0])
		return BRG_EINVAL;
	pthread_mutex_lock(&r->mu);
	now = now_ms(r);
	e = find(r, id);
	if (e->id[0] && e->pending && max_age_ms != 0) {
		*out = e->birth;
		out->provisional = 1;
		out->has_enrolled = e->info.has_key;
		out->enrolled_revoked = e->info.state == BRG_ST_REVOKED;
		out->enrolled = e->info.key;
		pthread_mutex_unlock(&r->mu);
		return BRG_OK;
	}
	if (e->id[0] && e->loaded_ms) {
		int64_t age = now - e->loaded_ms;
		/* Entries that make the verifiers drop messages (no key, quarantined, revoked) are
		 * re-read after a second, so outpostctl's changes take effect quickly. */
		int settled = e->info.has_key && (e->info.state == BRG_ST_ACTIVE ||
		                                  e->info.state == BRG_ST_DEACTIVATED);
		int fresh =
		    (max_age_ms < 0 || (max_age_ms > 0 && age <= max_age_ms)) &&
		    (settled || age <= NOKEY_TTL_MS);
		if (fresh) {
			*out = e->info;
			pthread_mutex_unlock(&r->mu);
			return BRG_OK;
		}
	}
	pthread_mutex_unlock(&r->mu);

	struct store_device d;
	struct brg_dev_info info = {0};
	pthread_mutex_lock(&r->store_mu);
	/* checked with the connection taken: the lookups queued behind a cancelled one */
	int rc = atomic_load(&r->interrupted) ? STORE_EBUSY : store_device_get(r->reader, id, &d);
	pthread_mutex_unlock(&r->store_mu);
	if (rc && rc != STORE_ENOTFOUND)
		return atomic_load(&r->interrupted) ? BRG_ECLOSED : BRG_ESTORE;
	if (!rc) {
		info.state = brg_state_parse(d.state);
		info.has_key = d.has_pubkey;
		memcpy(info.key.raw, d.pubkey, sizeof(info.key.raw));
	}
	pthread_mutex_lock(&r->mu);
	/* The writer's put after a commit, made while this read ran, is newer than what was read:
	 * kept, not overwritten with the older view. */
	e = find(r, id);
	if (e->id[0] && e->loaded_ms >= now)
		info = e->info;
	else
		put_locked(r, id, &info, now);
	pthread_mutex_unlock(&r->mu);
	*out = info;
	return BRG_OK;
}

void brg_registry_birth_judged(struct brg_registry *r, const char *id,
                                const struct wire_pubkey *key)
{
	if (strlen(id) > WIRE_ID_MAX || !id[0])
		return;
	pthread_mutex_lock(&r->mu);
	struct entry *e = find(r, id);
	if (e->id[0] && e->pending && !memcmp(e->birth.key.raw, key->raw, sizeof(key->raw)))
		set_pending(r, e, 0);
	pthread_mutex_unlock(&r->mu);
}

size_t brg_registry_size(struct brg_registry *r)
{
	pthread_mutex_lock(&r->mu);
	size_t n = r->used;
	pthread_mutex_unlock(&r->mu);
	return n;
}

void brg_registry__age(struct brg_registry *r, int64_t ms)
{
	pthread_mutex_lock(&r->mu);
	r->clock_shift_ms += ms;
	pthread_mutex_unlock(&r->mu);
}
