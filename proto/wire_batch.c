/* wire_batch.c - columnar batch encoder and decoder (delta times, scaled delta values). */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "outpost.pb-c.h"
#include "wire_batch.h"
#include "wire_env.h"
#include "wire_internal.h"
#include "wire_msg.h"

#define MAX_ENCODER_DECIMALS 9
#define EXACT_INT_LIMIT 9007199254740992.0 /* 2^53 */

static const double pow10_tab[WIRE_MAX_SCALE + 1] = {
	1e0,  1e1,  1e2,  1e3,	1e4,  1e5,  1e6,  1e7,	1e8,  1e9,
	1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18};

static double unscale(int64_t v, int scale)
{
	return scale < 0 ? (double)v / pow10_tab[-scale] : (double)v * pow10_tab[scale];
}

/* Lossless means the same bits: == would let -0.0 decode as +0.0. */
static bool same_bits(double a, double b)
{
	return memcmp(&a, &b, sizeof(a)) == 0;
}

/* 1 if x survives scaling by 10^k, rounding and unscaling unchanged (as the decoder does). */
static bool exact_at(double x, int k)
{
	double s = x * pow10_tab[k];
	return fabs(s) < EXACT_INT_LIMIT && same_bits(unscale(llround(s), -k), x);
}

struct cell {
	uint32_t row;
	uint32_t col;
	double value;
};

struct wire_batch_builder {
	int64_t *rows;
	size_t nrows, cap_rows;
	uint32_t *cols;
	size_t ncols, cap_cols;
	struct cell *cells;
	size_t ncells, cap_cells;
	/* metric id -> column + 1 (0 = empty), open addressing, power-of-two size */
	uint32_t *slot_id;
	uint32_t *slot_col;
	size_t nslots;
	size_t hint; /* column expected next: rows usually repeat the same order */
};

static int grow(void **p, size_t *cap, size_t need, size_t elem, size_t max)
{
	if (need <= *cap)
		return WIRE_OK;
	if (need > max)
		return WIRE_ELIMIT;
	size_t n = *cap ? *cap * 2 : 16;
	while (n < need)
		n *= 2;
	if (n > max)
		n = max;
	void *q = realloc(*p, n * elem);
	if (!q)
		return WIRE_ENOMEM;
	*p = q;
	*cap = n;
	return WIRE_OK;
}

int wire_batch_builder_new(struct wire_batch_builder **out)
{
	if (!out)
		return WIRE_EINVAL;
	struct wire_batch_builder *b = calloc(1, sizeof(*b));
	if (!b)
		return WIRE_ENOMEM;
	*out = b;
	return WIRE_OK;
}

void wire_batch_builder_free(struct wire_batch_builder *b)
{
	if (!b)
		return;
	free(b->rows);
	free(b->cols);
	free(b->cells);
	free(b->slot_id);
	free(b->slot_col);
	free(b);
}

void wire_batch_builder_reset(struct wire_batch_builder *b)
{
	b->nrows = b->ncols = b->ncells = 0;
	b->hint = 0;
	if (b->slot_col)
		memset(b->slot_col, 0, b->nslots * sizeof(*b->slot_col));
}

size_t wire_batch_count(const struct wire_batch_builder *b)
{
	return b->ncells;
}

size_t wire_batch_rows(const struct wire_batch_builder *b)
{
	return b->nrows;
}

int wire_batch_row(struct wire_batch_builder *b, int64_t t_ms)
{
	if (!b)
		return WIRE_EINVAL;
	if (b->nrows) {
		int64_t prev = b->rows[b->nrows - 1];
		if (t_ms < prev || (uint64_t)t_ms - (uint64_t)prev > UINT32_MAX)
			return WIRE_EINVAL;
	}
	/* The encoded grid is rows x columns, absent cells included. */
	if ((b->nrows + 1) * b->ncols > WIRE_MAX_CELLS)
		return WIRE_ELIMIT;
	int rc = grow((void **)&b->rows, &b->cap_rows, b->nrows + 1, sizeof(*b->rows), WIRE_MAX_ROWS);
	if (rc)
		return rc;
	b->rows[b->nrows++] = t_ms;
	return WIRE_OK;
}

static size_t slot_of(const struct wire_batch_builder *b, uint32_t id)
{
	size_t mask = b->nslots - 1, i = (id * 2654435761u) & mask;
	while (b->slot_col[i] && b->slot_id[i] != id)
		i = (i + 1) & mask;
	return i;
}

static int rehash(struct wire_batch_builder *b)
{
	size_t n = b->nslots ? b->nslots * 2 : 64;
	uint32_t *ids = calloc(n, sizeof(*ids)), *cols = calloc(n, sizeof(*cols));
	if (!ids || !cols) {
		free(ids);
		free(cols);
		return WIRE_ENOMEM;
	}
	free(b->slot_id);
	free(b->slot_col);
	b->slot_id = ids;
	b->slot_col = cols;
	b->nslots = n;
	for (size_t c = 0; c < b->ncols; c++) {
		size_t s = slot_of(b, b->cols[c]);
		b->slot_id[s] = b->cols[c];
		b->slot_col[s] = (uint32_t)c + 1;
	}
	return WIRE_OK;
}

static int column_of(struct wire_batch_builder *b, uint32_t id, size_t *col)
{
	int rc;
	if (b->hint < b->ncols && b->cols[b->hint] == id) {
		*col = b->hint;
		return WIRE_OK;
	}
	if (b->nslots) {
		size_t s = slot_of(b, id);
		if (b->slot_col[s]) {
			*col = b->slot_col[s] - 1;
			return WIRE_OK;
		}
	}
	/* new column; the grid (absent cells included) must stay encodable */
	if (b->nrows * (b->ncols + 1) > WIRE_MAX_CELLS)
		return WIRE_ELIMIT;
	rc = grow((void **)&b->cols, &b->cap_cols, b->ncols + 1, sizeof(*b->cols), WIRE_MAX_COLS);
	if (rc)
		return rc;
	if ((b->ncols + 1) * 2 > b->nslots && (rc = rehash(b)) != 0)
		return rc;
	size_t s = slot_of(b, id);
	b->cols[b->ncols] = id;
	b->slot_id[s] = id;
	b->slot_col[s] = (uint32_t)b->ncols + 1;
	*col = b->ncols++;
	return WIRE_OK;
}

int wire_batch_add(struct wire_batch_builder *b, uint32_t metric_id, double value)
{
	size_t col;
	int rc;
	if (!b || !b->nrows || metric_id == 0 || metric_id > WIRE_MAX_METRIC_ID)
		return WIRE_EINVAL;
	rc = grow((void **)&b->cells, &b->cap_cells, b->ncells + 1, sizeof(*b->cells),
		  WIRE_MAX_CELLS);
	if (rc)
		return rc;
	rc = column_of(b, metric_id, &col);
	if (rc)
		return rc;
	b->hint = col + 1;
	b->cells[b->ncells++] = (struct cell){(uint32_t)(b->nrows - 1), (uint32_t)col, value};
	return WIRE_OK;
}

/* Fewest decimals (0..9) that reproduce x exactly, or -1. */
static int decimals_for(double x)
{
	if (!isfinite(x))
		return -1;
	for (int k = 0; k <= MAX_ENCODER_DECIMALS; k++) {
		if (fabs(x * pow10_tab[k]) >= EXACT_INT_LIMIT)
			return -1;
		if (exact_at(x, k))
			return k;
	}
	return -1;
}

/* Pick each column's scale: the largest per-value decimals, or raw if any value needs more. */
static void pick_scales(const double *grid, const bool *present, size_t nrows, size_t ncols,
			int32_t *scales)
{
	for (size_t c = 0; c < ncols; c++) {
		int k = 0;
		for (size_t r = 0; r < nrows && k >= 0; r++) {
			size_t i = r * ncols + c;
			if (!present[i])
				continue;
			int d = decimals_for(grid[i]);
			k = d < 0 ? -1 : (d > k ? d : k);
		}
		/* Exactness at a smaller k does not imply it at the final one: near 2^53 the
		 * product x * 10^k is no longer an exact integer and can round to a neighbour.
		 * Check every value again at the final k. */
		for (size_t r = 0; r < nrows && k > 0; r++) {
			size_t i = r * ncols + c;
			if (present[i] && !exact_at(grid[i], k))
				k = -1;
		}
		scales[c] = k < 0 ? WIRE_SCALE_RAW : -k;
	}
}

int wire_batch_encode(struct wire_batch_builder *b, uint64_t prev_seq,
		      const struct wire_dropped *dropped, size_t ndropped, uint8_t **out,
		      size_t *len)
{
	Outpost__Batch m = OUTPOST__BATCH__INIT;
	Outpost__Dropped dm[WIRE_MAX_DROPPED], *dp[WIRE_MAX_DROPPED];
	double *grid = NULL;
	bool *present = NULL;
	uint32_t *row_dt = NULL, *absent = NULL;
	int32_t *scales = NULL;
	int64_t *values = NULL;
	size_t nabsent = 0;
	int rc = WIRE_ENOMEM;

	if (!b || !out || !len || (ndropped && !dropped))
		return WIRE_EINVAL;
	if (ndropped > WIRE_MAX_DROPPED)
		return WIRE_ELIMIT;
	size_t nrows = b->nrows, ncols = b->ncols, ncells = nrows * ncols;
	if (ncols == 0)
		nrows = ncells = 0; /* rows without readings carry nothing */
	if (ncells > WIRE_MAX_CELLS)
		return WIRE_ELIMIT;

	grid = calloc(ncells + 1, sizeof(*grid));
	present = calloc(ncells + 1, sizeof(*present));
	row_dt = calloc(nrows + 1, sizeof(*row_dt));
	absent = calloc(ncells + 1, sizeof(*absent));
	scales = calloc(ncols + 1, sizeof(*scales));
	values = calloc(ncells + 1, sizeof(*values));
	if (!grid || !present || !row_dt || !absent || !scales || !values)
		goto out;

	for (size_t i = 0; i < b->ncells && ncells; i++) {
		size_t at = (size_t)b->cells[i].row * ncols + b->cells[i].col;
		grid[at] = b->cells[i].value;
		present[at] = true;
	}
	for (size_t r = 0; r < nrows; r++)
		row_dt[r] = r ? (uint32_t)(b->rows[r] - b->rows[r - 1]) : 0;
	pick_scales(grid, present, nrows, ncols, scales);

	for (size_t c = 0; c < ncols; c++) {
		int64_t prev = 0;
		uint64_t prev_bits = 0;
		for (size_t r = 0; r < nrows; r++) {
			size_t i = r * ncols + c;
			if (!present[i])
				continue;
			if (scales[c] == WIRE_SCALE_RAW) {
				uint64_t bits;
				memcpy(&bits, &grid[i], sizeof(bits));
				values[i] = (int64_t)(bits ^ prev_bits);
				prev_bits = bits;
			} else {
				int64_t v = llround(grid[i] * pow10_tab[-scales[c]]);
				values[i] = v - prev;
				prev = v;
			}
		}
	}
	for (size_t i = 0; i < ncells; i++)
		if (!present[i])
			absent[nabsent++] = (uint32_t)i;

	for (size_t i = 0; i < ndropped; i++) {
		outpost__dropped__init(&dm[i]);
		dm[i].prev_seq = dropped[i].prev_seq;
		dm[i].last_seq = dropped[i].last_seq;
		dm[i].count = dropped[i].count;
		dp[i] = &dm[i];
	}
	m.prev_seq = prev_seq;
	m.t0_ms = nrows ? b->rows[0] : 0;
	m.n_row_dt_ms = nrows;
	m.row_dt_ms = row_dt;
	m.n_metric_ids = ncols;
	m.metric_ids = b->cols;
	m.n_scales = ncols;
	m.scales = scales;
	m.n_values = ncells;
	m.values = values;
	m.n_absent = nabsent;
	m.absent = absent;
	m.n_dropped = ndropped;
	m.dropped = dp;
	rc = wire_msg_pack(WIRE_KIND_BATCH, &m.base, out, len, NULL);
out:
	free(grid);
	free(present);
	free(row_dt);
	free(absent);
	free(scales);
	free(values);
	return rc;
}

/* Structural rules of a Batch, used by wire_msg_decode for KIND_BATCH. */
int wire__batch_validate(const ProtobufCMessage *msg, struct wire_diag *diag)
{
	const Outpost__Batch *m = (const Outpost__Batch *)msg;
	size_t nrows = m->n_row_dt_ms, ncols = m->n_metric_ids, ncells = nrows * ncols;
	int rc = WIRE_OK;

	if (m->n_scales != ncols)
		return wire__fail(diag, WIRE_EMALFORMED, "Batch.scales: %zu entries for %zu columns",
				  m->n_scales, ncols);
	if (nrows && !ncols)
		return wire__fail(diag, WIRE_EMALFORMED, "Batch: %zu rows without columns", nrows);
	if (ncells > WIRE_MAX_CELLS)
		return wire__fail(diag, WIRE_ELIMIT, "Batch: %zu cells, limit %d", ncells,
				  WIRE_MAX_CELLS);
	if (m->n_values != ncells)
		return wire__fail(diag, WIRE_EMALFORMED, "Batch.values: %zu entries for %zu cells",
				  m->n_values, ncells);
	if (m->t0_ms > (int64_t)EXACT_INT_LIMIT || m->t0_ms < -(int64_t)EXACT_INT_LIMIT)
		return wire__fail(diag, WIRE_EMALFORMED, "Batch.t0_ms: out of range");
	for (size_t i = 0; i < m->n_absent; i++) {
		if (m->absent[i] >= ncells || (i && m->absent[i] <= m->absent[i - 1]))
			return wire__fail(diag, WIRE_EMALFORMED,
					  "Batch.absent[%zu]: not ascending cell index", i);
	}
	for (size_t c = 0; c < ncols; c++) {
		int32_t s = m->scales[c];
		if (s != WIRE_SCALE_RAW && (s < -WIRE_MAX_SCALE || s > WIRE_MAX_SCALE))
			return wire__fail(diag, WIRE_EMALFORMED, "Batch.scales[%zu]: %d out of range", c,
					  s);
		if (m->metric_ids[c] == 0)
			return wire__fail(diag, WIRE_EMALFORMED,
					  "Batch.metric_ids[%zu]: 0 (metric ids start at 1)", c);
		if (m->metric_ids[c] > WIRE_MAX_METRIC_ID)
			return wire__fail(diag, WIRE_ELIMIT, "Batch.metric_ids[%zu]: %u, limit %u", c,
					  m->metric_ids[c], WIRE_MAX_METRIC_ID);
	}
	for (size_t i = 0; i < m->n_dropped; i++) {
		const Outpost__Dropped *d = m->dropped[i];
		if (d->last_seq <= d->prev_seq || d->count == 0 || d->count > d->last_seq - d->prev_seq)
			return wire__fail(diag, WIRE_EMALFORMED, "Batch.dropped[%zu]: inconsistent range",
					  i);
	}
	if (ncols > 1) {
		uint32_t *ids = malloc(ncols * sizeof(*ids));
		if (!ids)
			return WIRE_ENOMEM;
		memcpy(ids, m->metric_ids, ncols * sizeof(*ids));
		qsort(ids, ncols, sizeof(*ids), wire__cmp_u32);
		for (size_t c = 1; c < ncols && !rc; c++)
			if (ids[c] == ids[c - 1])
				rc = wire__fail(diag, WIRE_EMALFORMED, "Batch.metric_ids: %u twice", ids[c]);
		free(ids);
	}
	return rc;
}

int wire_batch_decode(const uint8_t *body, size_t len, struct wire_batch **out,
		      struct wire_diag *diag)
{
	Outpost__Batch *m = NULL;
	struct wire_batch *b = NULL;
	int rc = wire_msg_decode(WIRE_KIND_BATCH, body, len, (ProtobufCMessage **)&m, diag);
	if (rc)
		return rc;
	if (!out) {
		rc = WIRE_EINVAL;
		goto out;
	}
	size_t nrows = m->n_row_dt_ms, ncols = m->n_metric_ids, ncells = nrows * ncols;
	rc = WIRE_ENOMEM;
	b = calloc(1, sizeof(*b));
	if (!b)
		goto out;
	b->readings = malloc((ncells - m->n_absent + 1) * sizeof(*b->readings));
	b->dropped = malloc((m->n_dropped + 1) * sizeof(*b->dropped));
	if (!b->readings || !b->dropped)
		goto out;
	b->prev_seq = m->prev_seq;
	b->n_rows = nrows;
	b->n_cols = ncols;

	/* Expand row-major; per-column running state lives in two small arrays. */
	int64_t *acc = calloc(ncols + 1, sizeof(*acc));
	if (!acc)
		goto out;
	int64_t t = m->t0_ms;
	size_t next_absent = 0, n = 0;
	rc = WIRE_OK;
	for (size_t r = 0; r < nrows && !rc; r++) {
		t += m->row_dt_ms[r];
		for (size_t c = 0; c < ncols; c++) {
			size_t i = r * ncols + c;
			if (next_absent < m->n_absent && m->absent[next_absent] == i) {
				next_absent++;
				continue;
			}
			double value;
			if (m->scales[c] == WIRE_SCALE_RAW) {
				uint64_t bits = (uint64_t)acc[c] ^ (uint64_t)m->values[i];
				acc[c] = (int64_t)bits;
				memcpy(&value, &bits, sizeof(value));
			} else {
				if (__builtin_add_overflow(acc[c], m->values[i], &acc[c])) {
					rc = wire__fail(diag, WIRE_EMALFORMED,
							"Batch.values[%zu]: delta overflows", i);
					break;
				}
				value = unscale(acc[c], m->scales[c]);
			}
			b->readings[n++] = (struct wire_reading){m->metric_ids[c], t, value};
		}
	}
	free(acc);
	if (rc)
		goto out;
	b->n_readings = n;
	for (size_t i = 0; i < m->n_dropped; i++)
		b->dropped[i] = (struct wire_dropped){m->dropped[i]->prev_seq, m->dropped[i]->last_seq,
						      m->dropped[i]->count};
	b->n_dropped = m->n_dropped;
	*out = b;
	b = NULL;
out:
	wire_msg_free(m);
	wire_batch_free(b);
	return rc;
}

void wire_batch_free(struct wire_batch *batch)
{
	if (!batch)
		return;
	free(batch->readings);
	free(batch->dropped);
	free(batch);
}
