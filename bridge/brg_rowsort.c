/* brg_rowsort.c - readings sorted by key: gathered by series, each series sorted only if
 * it needs it (see brg_rowsort.h). */
#include <stdlib.h>
#include <string.h>

#include "brg_err.h"
#include "brg_rowsort.h"
#include "oarray.h"

#define MIN_SLOTS 256u /* power of two */

/* One distinct (device, metric) of the rows. */
struct series {
	int64_t device, metric;
	size_t count;
	uint32_t id; /* its index before the series are sorted */
};

struct brg_rowsort {
	struct brg_row *out;
	size_t cap_out;
	uint32_t *series_of; /* per row: its series' id */
	size_t cap_of;
	struct series *s;
	size_t n_s, cap_s;
	size_t *at; /* per series id: where its next row goes in out */
	size_t cap_at;
	uint32_t *slot; /* hash of the series: id + 1, 0 if free */
	size_t n_slots; /* a power of two, at least twice n_s */
};

/* Room for want entries: 0 or BRG_ENOMEM. */
static int grow(void **p, size_t *cap, size_t want, size_t size)
{
	return oarray_reserve_n(p, cap, want, size) ? BRG_ENOMEM : 0;
}

struct brg_rowsort *brg_rowsort_new(void)
{
	return calloc(1, sizeof(struct brg_rowsort));
}

void brg_rowsort_free(struct brg_rowsort *rs)
{
	if (!rs)
		return;
	free(rs->out);
	free(rs->series_of);
	free(rs->s);
	free(rs->at);
	free(rs->slot);
	free(rs);
}

#define CMP_FIELD(f)                                                                               \
	if (a->f != b->f)                                                                          \
	return a->f < b->f ? -1 : 1

int brg_rowsort_cmp(const struct brg_row *a, const struct brg_row *b)
{
	CMP_FIELD(device);
	CMP_FIELD(metric);
	CMP_FIELD(ts);
	CMP_FIELD(seq);
	CMP_FIELD(idx);
	return 0;
}

/* Within one series: device and metric are equal. */
static int cmp_in_series(const struct brg_row *a, const struct brg_row *b)
{
	CMP_FIELD(ts);
	CMP_FIELD(seq);
	CMP_FIELD(idx);
	return 0;
}
#undef CMP_FIELD

static int cmp_row(const void *a, const void *b)
{
	return brg_rowsort_cmp(a, b);
}

static int cmp_series(const void *x, const void *y)
{
	const struct series *a = x, *b = y;
	if (a->device != b->device)
		return a->device < b->device ? -1 : 1;
	if (a->metric != b->metric)
		return a->metric < b->metric ? -1 : 1;
	return 0;
}

static size_t hash(int64_t device, int64_t metric, size_t n_slots)
{
	uint64_t h = (uint64_t)device * 0x9E3779B97F4A7C15u ^ (uint64_t)metric * 0xC2B2AE3D27D4EB4Fu;
	return (size_t)(h ^ h >> 29) & (n_slots - 1);
}

static void place(struct brg_rowsort *rs, uint32_t id)
{
	size_t i = hash(rs->s[id].device, rs->s[id].metric, rs->n_slots);
	while (rs->slot[i])
		i = (i + 1) & (rs->n_slots - 1);
	rs->slot[i] = id + 1;
}

/* Clears the hash, sized for at least `want` series. */
static int slots_reset(struct brg_rowsort *rs, size_t want)
{
	size_t n = MIN_SLOTS;
	while (n < 2 * want)
		n *= 2;
	if (n > rs->n_slots) {
		uint32_t *p = realloc(rs->slot, n * sizeof(*p));
		if (!p)
			return BRG_ENOMEM;
		rs->slot = p;
		rs->n_slots = n;
	}
	memset(rs->slot, 0, rs->n_slots * sizeof(*rs->slot));
	return 0;
}

/* The id of row r's series, added if new. */
static int series_id(struct brg_rowsort *rs, const struct brg_row *r, uint32_t *id)
{
	size_t i = hash(r->device, r->metric, rs->n_slots);
	for (;; i = (i + 1) & (rs->n_slots - 1)) {
		uint32_t v = rs->slot[i];
		if (!v)
			break;
		if (rs->s[v - 1].device == r->device && rs->s[v - 1].metric == r->metric) {
			*id = v - 1;
			return 0;
		}
	}
	if (grow((void **)&rs->s, &rs->cap_s, rs->n_s + 1, sizeof(*rs->s)))
		return BRG_ENOMEM;
	*id = (uint32_t)rs->n_s;
	rs->s[rs->n_s++] = (struct series){r->device, r->metric, 0, *id};
	if (2 * rs->n_s > rs->n_slots) { /* keep it at most half full: rebuild it larger */
		if (slots_reset(rs, rs->n_s))
			return BRG_ENOMEM;
		for (uint32_t k = 0; k < rs->n_s; k++)
			place(rs, k);
	} else {
		rs->slot[i] = *id + 1;
	}
	return 0;
}

int brg_rowsort_sort(struct brg_rowsort *rs, const struct brg_row *rows, size_t n,
                     const struct brg_row **sorted)
{
	int rc;
	if (n > UINT32_MAX)
		return BRG_EINVAL;
	if (!n) {
		*sorted = rows;
		return 0;
	}
	if ((rc = grow((void **)&rs->out, &rs->cap_out, n, sizeof(*rs->out))) ||
	    (rc = grow((void **)&rs->series_of, &rs->cap_of, n, sizeof(*rs->series_of))) ||
	    (rc = slots_reset(rs, 0)))
		return rc;
	rs->n_s = 0;
	/* Which series each row is in; rows in a run of one series look it up once. */
	for (size_t i = 0; i < n; i++) {
		uint32_t id;
		if (i && rows[i].device == rows[i - 1].device && rows[i].metric == rows[i - 1].metric)
			id = rs->series_of[i - 1];
		else if ((rc = series_id(rs, &rows[i], &id)))
			return rc;
		rs->series_of[i] = id;
		rs->s[id].count++;
	}
	/* The series in key order, and where each one's rows begin. */
	qsort(rs->s, rs->n_s, sizeof(*rs->s), cmp_series);
	if ((rc = grow((void **)&rs->at, &rs->cap_at, rs->n_s, sizeof(*rs->at))))
		return rc;
	size_t start = 0;
	for (size_t k = 0; k < rs->n_s; k++) {
		rs->at[rs->s[k].id] = start;
		start += rs->s[k].count;
	}
	for (size_t i = 0; i < n; i++)
		rs->out[rs->at[rs->series_of[i]]++] = rows[i];
	/* Each series in its given order: sort the ones that are not in key order. */
	start = 0;
	for (size_t k = 0; k < rs->n_s; k++) {
		struct brg_row *r = rs->out + start;
		size_t m = rs->s[k].count;
		for (size_t i = 1; i < m; i++)
			if (cmp_in_series(&r[i - 1], &r[i]) > 0) {
				qsort(r, m, sizeof(*r), cmp_row);
				break;
			}
		start += m;
	}
	*sorted = rs->out;
	return 0;
}
