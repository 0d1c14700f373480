/* brg_envrows.c - a group's envelope rows in bulk on PostgreSQL.
 *
 * Row by row, every durable envelope costs PostgreSQL an INSERT ... ON CONFLICT DO NOTHING and
 * a round trip, which is most of the database's share of a 1-reading message. Instead the
 * group asks once which of its envelopes have rows already (S_ENV_KNOWN, the keys as two
 * arrays), queues the rows of the others, and COPYs them with the readings. Nothing else can
 * insert those keys meanwhile: the group holds its devices' rows (SELECT ... FOR UPDATE), and
 * every envelope insert runs in a group. SQLite keeps the plain INSERT, a function call there. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "brg_commit_int.h"

static int cmp_ekey(const void *a, const void *b)
{
	const struct ekey *x = a, *y = b;
	if (x->device != y->device)
		return (x->device > y->device) - (x->device < y->device);
	return (x->seq > y->seq) - (x->seq < y->seq);
}

static int cmp_erow(const void *a, const void *b)
{
	const struct erow *x = a, *y = b;
	if (x->device != y->device)
		return (x->device > y->device) - (x->device < y->device);
	return (x->it->seq > y->it->seq) - (x->it->seq < y->it->seq);
}

static struct ekey *find(const struct brg_committer *c, int64_t device, uint64_t seq)
{
	struct ekey k = {device, (int64_t)seq, 0};
	return c->n_ekeys ? bsearch(&k, c->ekeys, c->n_ekeys, sizeof(k), cmp_ekey) : NULL;
}

void brg_commit__env_reset(struct brg_committer *c)
{
	c->n_ekeys = 0;
	c->n_erows = 0;
}

int brg_commit__env_add(struct brg_committer *c, int64_t device, uint64_t seq)
{
	if (!c->env_copy)
		return 0;
	if (brg_commit__reserve((void **)&c->ekeys, &c->cap_ekeys, c->n_ekeys, sizeof(*c->ekeys)))
		return STORE_ENOMEM;
	c->ekeys[c->n_ekeys++] = (struct ekey){device, (int64_t)seq, EK_FREE};
	return 0;
}

/* Append "{a,b,...}" of one field of the keys to c->arr at *at. */
static void put_array(struct brg_committer *c, size_t *at, int seqs)
{
	c->arr[(*at)++] = '{';
	for (size_t i = 0; i < c->n_ekeys; i++) {
		int64_t v = seqs ? c->ekeys[i].seq : c->ekeys[i].device;
		*at += (size_t)snprintf(c->arr + *at, c->cap_arr - *at, "%s%" PRId64, i ? "," : "",
		                        v);
	}
	c->arr[(*at)++] = '}';
	c->arr[(*at)++] = '\0';
}

int brg_commit__env_lookup(struct brg_committer *c)
{
	struct store_stmt *st = c->st[S_ENV_KNOWN];
	size_t n = 0, at = 0;
	int rc;
	if (!c->env_copy || !c->n_ekeys || c->n_ekeys < (size_t)c->o.env_bulk_min) {
		c->n_ekeys = 0; /* few: row by row (ENV_DIRECT) */
		return 0;
	}
	qsort(c->ekeys, c->n_ekeys, sizeof(*c->ekeys), cmp_ekey);
	for (size_t i = 0; i < c->n_ekeys; i++) /* a key twice in a group: once here */
		if (!n || cmp_ekey(&c->ekeys[n - 1], &c->ekeys[i]))
			c->ekeys[n++] = c->ekeys[i];
	c->n_ekeys = n;
	/* Two arrays of up to 20 digits and a comma per key, braces and NULs. */
	size_t need = 2 * (21 * n + 3);
	if (need > c->cap_arr) {
		char *a = realloc(c->arr, need);
		if (!a)
			return STORE_ENOMEM;
		c->arr = a;
		c->cap_arr = need;
	}
	put_array(c, &at, 0);
	size_t seqs = at;
	put_array(c, &at, 1);
	if ((rc = store_bind_text(st, 1, c->arr)) || (rc = store_bind_text(st, 2, c->arr + seqs)))
		goto out;
	while ((rc = store_step(st)) == 1) {
		struct ekey *k = find(c, store_col_i64(st, 0), (uint64_t)store_col_i64(st, 1));
		if (k)
			k->state = EK_STORED;
	}
out:
	store_reset(st);
	return rc < 0 ? rc : 0;
}

int brg_commit__env_queue(struct brg_committer *c, int64_t device, const struct brg_item *it,
                          uint32_t kind, size_t n_readings)
{
	struct ekey *k = c->env_copy ? find(c, device, it->seq) : NULL;
	if (!k)
		return ENV_DIRECT;
	if (k->state != EK_FREE)
		return 0;
	if (brg_commit__reserve((void **)&c->erows, &c->cap_erows, c->n_erows, sizeof(*c->erows)))
		return STORE_ENOMEM;
	struct erow *r = &c->erows[c->n_erows++];
	*r = (struct erow){device, kind, (int64_t)n_readings, it};
	k->state = EK_QUEUED;
	return 1;
}

int brg_commit__env_visible(struct brg_committer *c, int64_t device, uint64_t seq)
{
	const struct ekey *k = find(c, device, seq);
	return k && k->state == EK_QUEUED ? brg_commit__env_flush(c) : 0;
}

int brg_commit__env_flush(struct brg_committer *c)
{
	if (!c->n_erows)
		return 0;
	qsort(c->erows, c->n_erows, sizeof(*c->erows), cmp_erow);
	int rc = store_copy_start(c->env_copy);
	for (size_t i = 0; i < c->n_erows && !rc; i++) {
		const struct erow *r = &c->erows[i];
		if (!(rc = store_copy_i64(c->env_copy, r->device)) &&
		    !(rc = store_copy_i64(c->env_copy, (int64_t)r->it->seq)) &&
		    !(rc = store_copy_i64(c->env_copy, (int64_t)r->it->prev_seq)) &&
		    !(rc = store_copy_i64(c->env_copy, r->kind)) &&
		    !(rc = store_copy_i64(c->env_copy, r->it->sent_at_ms)) &&
		    !(rc = store_copy_i64(c->env_copy, c->now)) &&
		    !(rc = store_copy_i64(c->env_copy, r->n_readings)) &&
		    !(rc = store_copy_blob(c->env_copy, r->it->sig, WIRE_SIG_LEN)))
			rc = store_copy_end_row(c->env_copy);
	}
	int rc2 = store_copy_finish(c->env_copy);
	c->n_erows = 0;
	for (size_t i = 0; i < c->n_ekeys; i++) /* in the table now (or the group fails) */
		if (c->ekeys[i].state == EK_QUEUED)
			c->ekeys[i].state = EK_STORED;
	return rc ? rc : rc2;
}
