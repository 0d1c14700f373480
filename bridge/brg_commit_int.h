/* brg_commit_int.h - internals shared by the writer's files: brg_commit.c (transactions,
 * devices, rejections and quarantine, births), brg_durable.c (batches, readings, chains, gaps),
 * brg_tasks.c (polls and results) and brg_health.c (sweeps). Not a public interface. */
#ifndef BRG_COMMIT_INT_H
#define BRG_COMMIT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "brg_commit.h"
#include "brg_rowsort.h"
#include "store.h"

#define MAX_LINKS          4096 /* stored links read above a frontier */
#define MAX_DROP_LINKS     1024 /* dropped links read above a frontier */
#define TASKLIST_BUDGET    (WIRE_MAX_BODY - 4096)
#define MCACHE_BUCKETS     4096
#define MCACHE_MAX_DEVICES 65536
#define MCACHE_MAX_ENTRIES (8u << 20) /* metric ids cached, 16 bytes each: 128 MiB at most */

enum {
	S_DEV_INS,
	S_DEV_SEL,
	S_DEV_UPD,
	S_DEV_BIRTH,
	S_DEV_KEY,
	S_EVENT,
	S_REJ,
	S_ENV_INS,
	S_ENV_SIG,
	S_ENV_KNOWN, /* PostgreSQL only (NULL on SQLite): see brg_envrows.c */
	S_LINKS,
	S_DROPS,
	S_GAP_INS,
	S_GAP_GROW_DROP,
	S_GAP_MOVE_MISS,
	S_GAP_FILL,
	S_GAP_FILL_DROPPED,
	S_GAP_SHRINK,
	S_GAP_LOSE,
	S_GAP_IN_LOST,
	S_METRIC_CLEAR,
	S_METRIC_COUNT,
	S_METRIC_SET,
	S_METRIC_ADD,
	S_METRIC_LOAD,
	S_METRIC_PLACE,
	S_TASK_SEL,
	S_TASK_ARGS,
	S_TASK_DELIV,
	S_TASK_GET,
	S_TASK_FINISH,
	S_TASK_OUT,
	S_TASK_BEHIND,
	S_KEY_REVOKED,
	S_KEY_REVOKE,
	S_COUNT
};

/* A device touched by the current transaction. */
struct wdev {
	const char *id; /* borrowed from an item */
	int64_t key;    /* 0: no row (status of a device the store does not know) */
	char state[16];
	char reason[256]; /* holds any state_reason store_device_action writes */
	int state_changed;
	int online;
	int has_key;
	uint8_t pub[WIRE_PUBKEY_LEN];
	int64_t frontier, last_nd_seq, consecutive, sample_s, poll_s, last_seen;
	int64_t last_birth_seq; /* the newest Birth's seq (last_nd_seq: newest Birth or poll) */
	int64_t d_env, d_read, d_dup, d_rej;
	uint8_t boot_id[WIRE_BOOT_ID_LEN];
	int has_boot;
	char agent[WIRE_MAX_AGENT_VERSION + 1];
	int64_t birth_at; /* last_birth_at: which catalog (metric ids) the device uses now */
	int dirty;
	int durable; /* an authentic durable envelope arrived: answer with an ack */
	int needs_row;
	int judged_birth; /* a verified Birth of this group was judged: the last one's key */
	struct wire_pubkey judged_key;
};

/* A durable envelope of the current group, by key (PostgreSQL, brg_envrows.c). */
enum { EK_FREE, EK_STORED, EK_QUEUED };
struct ekey {
	int64_t device;
	int64_t seq;
	int state; /* EK_*: no row yet, a row in the table, queued for the bulk insert */
};
/* An envelope row queued for the bulk insert; the rest of the row is read from the item,
 * borrowed (a group's items live until brg_commit_group returns). */
struct erow {
	int64_t device, kind, n_readings;
	const struct brg_item *it;
};

/* wire metric id -> metrics.id of one device. */
struct mentry {
	uint32_t wire;
	int64_t key;
};
struct mcache {
	struct mcache *next;
	int64_t device;
	int64_t birth_at; /* the device's last_birth_at when loaded: another bridge's Birth moves it */
	size_t n, cap;
	struct mentry *e; /* sorted by wire */
};

struct brg_committer {
	struct store *s;
	struct brg_commit_opts o;
	struct store_stmt *st[S_COUNT];
	struct store_copy *copy;
	struct wdev *devs;
	size_t n_devs, cap_devs;
	struct brg_row *rows; /* the group's readings, inserted in bulk at its end */
	size_t n_rows, cap_rows;
	struct brg_rowsort *sorter;
	struct store_copy *env_copy; /* PostgreSQL: new envelope rows go in bulk too */
	struct ekey *ekeys;          /* sorted by (device, seq) */
	size_t n_ekeys, cap_ekeys;
	struct erow *erows;
	size_t n_erows, cap_erows;
	char *arr; /* S_ENV_KNOWN's array arguments */
	size_t cap_arr;
	struct brg_link *links;
	struct mcache *mc[MCACHE_BUCKETS];
	size_t mc_devices, mc_entries;
	size_t mc_max_devices, mc_max_entries; /* MCACHE_MAX_*; tests lower them */
	int64_t now;
	struct brg_outcome *out;
	int unsettled;           /* the last group's COMMIT went unanswered (STORE_EUNKNOWN) */
	struct brg_outcome mark; /* out before that group, for brg_commit_settle() */
};

/* The prepared statements' SQL (brg_commit.c), indexed by the S_* values. */
extern const char *const brg_commit__sql[S_COUNT];

/* Bind to prepared statement c->st[i]; on failure set rc and jump to the function's `out`. */
#define B64(i, n, v)                                                                               \
	do {                                                                                       \
		if ((rc = store_bind_i64(c->st[i], n, (int64_t)(v))))                              \
			goto out;                                                                  \
	} while (0)
#define BTXT(i, n, v)                                                                              \
	do {                                                                                       \
		if ((rc = store_bind_text(c->st[i], n, v)))                                        \
			goto out;                                                                  \
	} while (0)
#define BBLOB(i, n, v, l)                                                                          \
	do {                                                                                       \
		if ((rc = store_bind_blob(c->st[i], n, v, l)))                                     \
			goto out;                                                                  \
	} while (0)

int brg_commit__reserve(void **arr, size_t *cap, size_t n, size_t elem);
/* End the transaction of work that ended in rc (0: done): COMMIT it, or else roll it back and
 * unwind c->out to mark (a failure other than a store error is STORE_EQUERY). STORE_EUNKNOWN,
 * COMMIT unanswered, keeps c->out as it is for brg_commit_settle(). */
int brg_commit__end_tx(struct brg_committer *c, int rc, const struct brg_outcome *mark);
struct brg_reply *brg_commit__add_reply(struct brg_outcome *o);
void brg_commit__note(struct brg_committer *c, int level, const char *device, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Run c->st[i] to completion and reset it; with changes, also say how many rows it changed. */
int brg_commit__run(struct brg_committer *c, int i);
int brg_commit__run_changes(struct brg_committer *c, int i, int64_t *changes);
/* Insert an event row (and a log note) about w (NULL: about no device). */
int brg_commit__event(struct brg_committer *c, const struct wdev *w, const char *type,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void brg_commit__set_state(struct wdev *w, const char *state, const char *reason);
int brg_commit__is_state(const struct wdev *w, const char *s);
int brg_commit__count_reject(struct brg_committer *c, struct wdev *w, const char *reason,
                             const char *detail, int toward_quarantine);
int brg_commit__accepted(struct brg_committer *c, struct wdev *w);
/* Birth/poll replay check: 1 if it is fresh (and records it), 0 if counted as `replayed` or
 * as a duplicate, < 0 on error. A poll must be above every Birth and poll seen; a Birth above
 * every Birth (PROTOCOL.md 5.7). */
int brg_commit__fresh(struct brg_committer *c, struct wdev *w, const struct brg_item *it,
                      int is_birth);
/* Remember key (WIRE_PUBKEY_LEN bytes) as revoked for w (revoked_keys): no Birth with it, nor
 * any envelope signed with it, is accepted again. A key already there keeps its first row. */
int brg_commit__revoke_key(struct brg_committer *c, const struct wdev *w, const uint8_t *key);
/* Free t's arguments and zero it (the task itself is not freed). */
void brg_commit__clear_task(struct brg_task *t);
void brg_commit__free_tasks(struct brg_task *t, size_t n);
void brg_commit__mcache_clear(struct brg_committer *c);
/* Forget one device's cached metric map (its catalog changed). */
void brg_commit__mcache_forget(struct brg_committer *c, int64_t device);
/* Apply Birth seq's metric catalog to w's metrics rows (brg_durable.c). */
int brg_commit__catalog(struct brg_committer *c, struct wdev *w, const Outpost__Birth *b,
                        uint64_t seq);
void brg_commit__unwind(struct brg_committer *c, struct brg_outcome *out,
                        const struct brg_outcome *mark);
/* Durable envelopes (brg_durable.c): 1 if newly stored, 0 if handled, < 0 store error. */
int brg_commit__store_envelope(struct brg_committer *c, struct wdev *w, const struct brg_item *it,
                               uint32_t kind, size_t n_readings);
int brg_commit__do_batch(struct brg_committer *c, struct wdev *w, const struct brg_item *it);
int brg_commit__insert_readings(struct brg_committer *c);
/* Envelope rows in bulk (brg_envrows.c; PostgreSQL only, no-ops where c->env_copy is NULL).
 * A group adds the key of each durable envelope it may store (after its devices are locked),
 * then looks up which have rows already (a group with fewer than o.env_bulk_min keys drops
 * them: all ENV_DIRECT). queue() then takes a new envelope's row (1), says
 * its key has a row or a queued one (0), or says the key was not added (ENV_DIRECT: insert it
 * row by row). Before a statement reads an envelope's row, visible() flushes the queue if that
 * row is in it; flush() inserts what is queued, before the readings go in. */
#define ENV_DIRECT 2
void brg_commit__env_reset(struct brg_committer *c);
int brg_commit__env_add(struct brg_committer *c, int64_t device, uint64_t seq);
int brg_commit__env_lookup(struct brg_committer *c);
int brg_commit__env_queue(struct brg_committer *c, int64_t device, const struct brg_item *it,
                          uint32_t kind, size_t n_readings);
/* If (device, seq) is queued, flush: statements then see its row. */
int brg_commit__env_visible(struct brg_committer *c, int64_t device, uint64_t seq);
int brg_commit__env_flush(struct brg_committer *c);
int brg_commit__chain(struct brg_committer *c, struct wdev *w);
/* INSERT a gap row (count < 0: NULL); 1 if inserted, 0 if (device, reason, prev) existed. */
int brg_commit__insert_gap(struct brg_committer *c, struct wdev *w, const char *reason,
                           uint64_t prev, uint64_t last, int64_t count);
/* Record (after, upto] as a `lost` gap (nothing of it will come from the device any more; a
 * late envelope of it is still stored) and give up the open holes ending in it. */
int brg_commit__lose(struct brg_committer *c, struct wdev *w, uint64_t after, uint64_t upto);
/* Open `missing` holes reaching above `at` start there (the chain is complete up to it). */
int brg_commit__shrink_holes(struct brg_committer *c, struct wdev *w, uint64_t at);
/* Tasks (brg_tasks.c). */
int brg_commit__do_result(struct brg_committer *c, struct wdev *w, const struct brg_item *it);
int brg_commit__do_poll(struct brg_committer *c, struct wdev *w, const struct brg_item *it);

#endif
