/* test_wire_batch.c - the compact batch codec: exact round trips, builder limits, decoder
 * structural checks, and the size of the reference telemetry profile. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outpost.pb-c.h"
#include "wire_batch.h"
#include "wire_env.h"
#include "wire_msg.h"
#include "wire_sign.h"

/* xorshift64*: deterministic, so a failure reproduces. */
static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
	rng_state = s ? s : 0x9E3779B97F4A7C15ULL;
}

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static int64_t rng_range(int64_t lo, int64_t hi) /* inclusive */
{
	return lo + (int64_t)(rng() % (uint64_t)(hi - lo + 1));
}

static double bits_to_double(uint64_t bits)
{
	double d;
	memcpy(&d, &bits, sizeof(d));
	return d;
}

static uint64_t double_bits(double d)
{
	uint64_t b;
	memcpy(&b, &d, sizeof(b));
	return b;
}

/* ---- a model of what was added, to compare the decoder's output against ---- */

#define MAX_MODEL 70000

struct model {
	struct wire_reading r[MAX_MODEL];
	size_t n;
	size_t rows;
};

static struct model *model_new(void)
{
	struct model *m = calloc(1, sizeof(*m));
	cr_assert_not_null(m);
	return m;
}

static void m_row(struct wire_batch_builder *b, struct model *m, int64_t t)
{
	cr_assert_eq(wire_batch_row(b, t), WIRE_OK, "row at %lld", (long long)t);
	m->rows++;
}

/* Add to builder and model; a metric repeated in a row replaces the earlier value. */
static void m_add(struct wire_batch_builder *b, struct model *m, int64_t t, uint32_t id, double v)
{
	cr_assert_eq(wire_batch_add(b, id, v), WIRE_OK, "add %u", id);
	for (size_t i = m->n; i-- > 0 && m->r[i].t_ms == t;) {
		if (m->r[i].metric_id == id) {
			m->r[i].value = v;
			return;
		}
	}
	cr_assert_lt(m->n, MAX_MODEL);
	m->r[m->n++] = (struct wire_reading){id, t, v};
}

static int cmp_reading(const void *a, const void *b)
{
	const struct wire_reading *x = a, *y = b;
	if (x->t_ms != y->t_ms)
		return x->t_ms < y->t_ms ? -1 : 1;
	return (x->metric_id > y->metric_id) - (x->metric_id < y->metric_id);
}

/* Every decoded reading equals a modelled one bit for bit, and nothing is missing or extra.
 * Rows in these tests have distinct times, so (t, metric) identifies a reading. */
static void expect_same(struct model *m, const struct wire_batch *got)
{
	cr_assert_eq(got->n_readings, m->n, "readings: got %zu, added %zu", got->n_readings, m->n);
	struct wire_reading *g = malloc((got->n_readings + 1) * sizeof(*g));
	memcpy(g, got->readings, got->n_readings * sizeof(*g));
	qsort(g, got->n_readings, sizeof(*g), cmp_reading);
	qsort(m->r, m->n, sizeof(m->r[0]), cmp_reading);
	size_t bad = 0;
	for (size_t i = 0; i < m->n; i++) {
		if (g[i].t_ms != m->r[i].t_ms || g[i].metric_id != m->r[i].metric_id ||
		    double_bits(g[i].value) != double_bits(m->r[i].value)) {
			if (bad++ < 10)
				cr_log_error("reading %zu: got (%u, %lld, %.17g / %016llx), "
					     "want (%u, %lld, %.17g / %016llx)",
					     i, g[i].metric_id, (long long)g[i].t_ms, g[i].value,
					     (unsigned long long)double_bits(g[i].value),
					     m->r[i].metric_id, (long long)m->r[i].t_ms,
					     m->r[i].value,
					     (unsigned long long)double_bits(m->r[i].value));
		}
	}
	cr_expect_eq(bad, 0, "%zu of %zu readings differ", bad, m->n);
	free(g);
}

static struct wire_batch *encode_decode(struct wire_batch_builder *b, uint64_t prev_seq,
					const struct wire_dropped *dropped, size_t ndropped,
					size_t *body_len)
{
	uint8_t *body = NULL;
	size_t len = 0;
	struct wire_batch *got = NULL;
	struct wire_diag d = {""};
	cr_assert_eq(wire_batch_encode(b, prev_seq, dropped, ndropped, &body, &len), WIRE_OK);
	cr_assert_eq(wire_batch_decode(body, len, &got, &d), WIRE_OK, "%s", d.msg);
	free(body);
	if (body_len)
		*body_len = len;
	return got;
}

/* ---------------------------------------------------------------------------------------- */

Test(wire_batch, round_trip_mixed_columns)
{
	enum { COLS = 48, ROWS = 60 };
	struct wire_batch_builder *b = NULL;
	struct model *m = model_new();
	int64_t walk[COLS];
	rng_seed(42);
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	for (int c = 0; c < COLS; c++)
		walk[c] = rng_range(-5000, 5000);

	int64_t t = 1763850000000LL;
	for (int r = 0; r < ROWS; r++) {
		/* irregular sampling: mostly ~10 s, sometimes ms apart, once a ~49-day gap */
		if (r)
			t += r == 30 ? (int64_t)UINT32_MAX : rng_range(1, 20000);
		m_row(b, m, t);
		for (int c = 0; c < COLS; c++) {
			if (rng() % 5 == 0)
				continue; /* absent cell */
			uint32_t id = (uint32_t)(c * 37 + 1);
			double v;
			switch (c % 6) {
			case 0: /* random walk at 2 decimals, e.g. a temperature */
				walk[c] += rng_range(-7, 7);
				v = (double)walk[c] / 100.0;
				break;
			case 1: /* integer counter */
				walk[c] += rng_range(0, 1000000);
				v = (double)(walk[c] + 1000000000000LL);
				break;
			case 2: /* random walk at 3 decimals, negative range */
				walk[c] += rng_range(-20, 20);
				v = (double)(walk[c] - 100000) / 1000.0;
				break;
			case 3: /* needs the raw fallback */
				v = 1.0 / 3.0 * (double)rng_range(1, 1000);
				break;
			case 4: { /* special values, all raw */
				static const uint64_t special[] = {
					0x7ff8000000000000ULL, /* NaN */
					0xfff8000000000001ULL, /* negative NaN with payload */
					0x7ff0000000000000ULL, /* +Inf */
					0xfff0000000000000ULL, /* -Inf */
					0x7fefffffffffffffULL, /* DBL_MAX */
					0x0000000000000001ULL, /* smallest subnormal */
					0x3ff0000000000000ULL, /* 1.0 */
				};
				v = r % 3 ? 1e300 : bits_to_double(special[rng() % 7]);
				break;
			}
			default: /* small integers that sometimes get one decimal */
				v = (double)rng_range(0, 100) + (rng() % 4 == 0 ? 0.5 : 0.0);
				break;
			}
			m_add(b, m, t, id, v);
		}
	}
	struct wire_dropped dropped[3] = {{10, 20, 5}, {30, 31, 1}, {40, UINT64_MAX, 1000}};
	size_t len = 0;
	struct wire_batch *got = encode_decode(b, 999, dropped, 3, &len);
	cr_expect_eq(got->prev_seq, 999);
	cr_expect_eq(got->n_rows, ROWS);
	cr_expect_eq(got->n_cols, COLS);
	expect_same(m, got);
	cr_assert_eq(got->n_dropped, 3);
	for (int i = 0; i < 3; i++) {
		cr_expect_eq(got->dropped[i].prev_seq, dropped[i].prev_seq);
		cr_expect_eq(got->dropped[i].last_seq, dropped[i].last_seq);
		cr_expect_eq(got->dropped[i].count, dropped[i].count);
	}
	cr_log_info("mixed batch: %zu readings in %zu bytes", m->n, len);
	wire_batch_free(got);
	wire_batch_builder_free(b);
	free(m);
}

Test(wire_batch, raw_fallback_is_bit_exact)
{
	const double values[] = {1.0 / 3.0, NAN,	  -NAN,	   INFINITY,  -INFINITY,
				 1e300,	    -1e300,	  DBL_MIN, DBL_TRUE_MIN, DBL_MAX,
				 0.1 + 0.2, 1e-10,	  -0.0,	   0.0,	      9007199254740993.0};
	const size_t n = sizeof(values) / sizeof(values[0]);
	struct wire_batch_builder *b = NULL;
	struct model *m = model_new();
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	/* each value alone in its own column, and all together in one column */
	for (size_t r = 0; r < n; r++) {
		m_row(b, m, (int64_t)r * 1000);
		m_add(b, m, (int64_t)r * 1000, (uint32_t)r + 100, values[r]);
		m_add(b, m, (int64_t)r * 1000, 1, values[r]);
	}
	struct wire_batch *got = encode_decode(b, 0, NULL, 0, NULL);
	expect_same(m, got);
	wire_batch_free(got);
	wire_batch_builder_free(b);
	free(m);
}

Test(wire_batch, negative_zero_keeps_its_sign)
{
	struct wire_batch_builder *b = NULL;
	struct model *m = model_new();
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	m_row(b, m, 0);
	m_add(b, m, 0, 1, -0.0);
	m_add(b, m, 0, 2, 0.0);
	m_row(b, m, 10);
	m_add(b, m, 10, 1, 1.25);
	m_add(b, m, 10, 2, -0.0);
	struct wire_batch *got = encode_decode(b, 0, NULL, 0, NULL);
	expect_same(m, got);
	wire_batch_free(got);
	wire_batch_builder_free(b);
	free(m);
}

Test(wire_batch, mixed_decimals_in_one_column_stay_exact)
{
	/* One value needs 9 decimals, so the column is scaled by 1e9; the others have 2 decimals
	 * and magnitudes near 2^53 / 1e9, where x * 1e9 is no longer an exact integer. Whatever
	 * scale the encoder picks, every value must come back unchanged. */
	struct wire_batch_builder *b = NULL;
	struct model *m = model_new();
	rng_seed(7);
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	m_row(b, m, 0);
	m_add(b, m, 0, 1, 0.000000001);
	for (int r = 1; r < 2000; r++) {
		m_row(b, m, r);
		int64_t cents = rng_range(400000000, 900000000); /* 4e6 .. 9e6 */
		m_add(b, m, r, 1, (double)cents / 100.0);
	}
	struct wire_batch *got = encode_decode(b, 0, NULL, 0, NULL);
	expect_same(m, got);
	wire_batch_free(got);

	/* the same with random decimals 0..9 and random magnitudes in every column */
	wire_batch_builder_reset(b);
	free(m);
	m = model_new();
	static const double p10[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
	for (int r = 0; r < 1000; r++) {
		m_row(b, m, r);
		for (uint32_t c = 0; c < 8; c++) {
			int d = (int)rng_range(0, 9);
			int64_t mant = rng_range(-(1LL << 53) + 1, (1LL << 53) - 1);
			mant >>= rng_range(0, 50);
			m_add(b, m, r, c + 1, (double)mant / p10[d]);
		}
	}
	got = encode_decode(b, 0, NULL, 0, NULL);
	expect_same(m, got);
	wire_batch_free(got);
	wire_batch_builder_free(b);
	free(m);
}

Test(wire_batch, integers_and_extremes)
{
	struct wire_batch_builder *b = NULL;
	struct model *m = model_new();
	const double v[] = {0, 1, -1, 9007199254740991.0, -9007199254740991.0, 9007199254740992.0,
			    123456789012345.6, 4294967296.0, 1e15, 1e-9, -1e-9, 0.000000123};
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	for (size_t r = 0; r < sizeof(v) / sizeof(v[0]); r++) {
		m_row(b, m, (int64_t)r);
		m_add(b, m, (int64_t)r, WIRE_MAX_METRIC_ID, v[r]);
		m_add(b, m, (int64_t)r, 1, (double)r);
	}
	struct wire_batch *got = encode_decode(b, 0, NULL, 0, NULL);
	expect_same(m, got);
	wire_batch_free(got);
	wire_batch_builder_free(b);
	free(m);
}

Test(wire_batch, absent_cells_and_sparse_rows)
{
	struct wire_batch_builder *b = NULL;
	struct model *m = model_new();
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	/* row 0: metrics 1 2 3; row 1: only 3; row 2: nothing; row 3: 4 (a new column) and 1 */
	m_row(b, m, 100);
	m_add(b, m, 100, 1, 1.5);
	m_add(b, m, 100, 2, 2.5);
	m_add(b, m, 100, 3, 3.5);
	m_row(b, m, 200);
	m_add(b, m, 200, 3, 3.75);
	m_row(b, m, 300);
	m_row(b, m, 400);
	m_add(b, m, 400, 4, -4);
	m_add(b, m, 400, 1, 1.25);
	cr_expect_eq(wire_batch_count(b), 6);
	cr_expect_eq(wire_batch_rows(b), 4);
	struct wire_batch *got = encode_decode(b, 5, NULL, 0, NULL);
	cr_expect_eq(got->n_rows, 4);
	cr_expect_eq(got->n_cols, 4);
	expect_same(m, got);
	cr_expect_eq(got->n_dropped, 0);
	wire_batch_free(got);
	wire_batch_builder_free(b);
	free(m);
}

Test(wire_batch, metric_repeated_in_a_row_keeps_the_last_value)
{
	struct wire_batch_builder *b = NULL;
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	cr_assert_eq(wire_batch_row(b, 1000), WIRE_OK);
	cr_assert_eq(wire_batch_add(b, 9, 1.0), WIRE_OK);
	cr_assert_eq(wire_batch_add(b, 8, 5.0), WIRE_OK);
	cr_assert_eq(wire_batch_add(b, 9, 2.0), WIRE_OK);
	struct wire_batch *got = encode_decode(b, 0, NULL, 0, NULL);
	cr_assert_eq(got->n_readings, 2);
	for (size_t i = 0; i < 2; i++) {
		cr_expect_eq(got->readings[i].t_ms, 1000);
		if (got->readings[i].metric_id == 9)
			cr_expect_eq(got->readings[i].value, 2.0);
		else
			cr_expect_eq(got->readings[i].value, 5.0);
	}
	wire_batch_free(got);
	wire_batch_builder_free(b);
}

Test(wire_batch, same_time_rows)
{
	/* Rows may share a time (dt 0): both rows survive. */
	struct wire_batch_builder *b = NULL;
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	cr_assert_eq(wire_batch_row(b, 5000), WIRE_OK);
	cr_assert_eq(wire_batch_add(b, 1, 1.0), WIRE_OK);
	cr_assert_eq(wire_batch_row(b, 5000), WIRE_OK);
	cr_assert_eq(wire_batch_add(b, 1, 2.0), WIRE_OK);
	struct wire_batch *got = encode_decode(b, 0, NULL, 0, NULL);
	cr_assert_eq(got->n_readings, 2);
	cr_expect_eq(got->readings[0].t_ms, 5000);
	cr_expect_eq(got->readings[1].t_ms, 5000);
	cr_expect_eq(got->readings[0].value, 1.0, "row order is kept");
	cr_expect_eq(got->readings[1].value, 2.0);
	wire_batch_free(got);
	wire_batch_builder_free(b);
}

Test(wire_batch, empty_and_reset)
{
	struct wire_batch_builder *b = NULL;
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	struct wire_batch *got = encode_decode(b, 3, NULL, 0, NULL);
	cr_expect_eq(got->n_readings, 0);
	cr_expect_eq(got->n_rows, 0);
	cr_expect_eq(got->prev_seq, 3);
	wire_batch_free(got);

	/* rows without readings carry nothing */
	cr_assert_eq(wire_batch_row(b, 1), WIRE_OK);
	got = encode_decode(b, 0, NULL, 0, NULL);
	cr_expect_eq(got->n_readings, 0);
	wire_batch_free(got);

	/* after reset nothing of the previous batch remains, and times may start over */
	for (int r = 0; r < 10; r++) {
		cr_assert_eq(wire_batch_row(b, 100000 + r), WIRE_OK);
		for (uint32_t c = 0; c < 300; c++)
			cr_assert_eq(wire_batch_add(b, c * 7 + 1, c), WIRE_OK);
	}
	wire_batch_builder_reset(b);
	cr_expect_eq(wire_batch_count(b), 0);
	cr_expect_eq(wire_batch_rows(b), 0);
	cr_assert_eq(wire_batch_row(b, 5), WIRE_OK);
	cr_assert_eq(wire_batch_add(b, 14, 1.0), WIRE_OK); /* a metric of the old batch */
	cr_assert_eq(wire_batch_add(b, 3, 2.0), WIRE_OK);  /* a new one */
	got = encode_decode(b, 0, NULL, 0, NULL);
	cr_expect_eq(got->n_cols, 2);
	cr_expect_eq(got->n_rows, 1);
	cr_assert_eq(got->n_readings, 2);
	for (size_t i = 0; i < 2; i++) {
		cr_expect_eq(got->readings[i].t_ms, 5);
		cr_expect_eq(got->readings[i].value, got->readings[i].metric_id == 14 ? 1.0 : 2.0);
	}
	wire_batch_free(got);
	wire_batch_builder_free(b);
	wire_batch_builder_free(NULL);
}

Test(wire_batch, builder_argument_rules)
{
	struct wire_batch_builder *b = NULL;
	uint8_t *out = NULL;
	size_t len;
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	cr_expect_eq(wire_batch_add(b, 1, 1.0), WIRE_EINVAL, "no row started");
	cr_expect_eq(wire_batch_row(b, 1000), WIRE_OK);
	cr_expect_eq(wire_batch_row(b, 999), WIRE_EINVAL, "back in time");
	cr_expect_eq(wire_batch_row(b, 1000 + (int64_t)UINT32_MAX + 1), WIRE_EINVAL, "gap >= 2^32");
	cr_expect_eq(wire_batch_row(b, 1000 + (int64_t)UINT32_MAX), WIRE_OK, "gap 2^32 - 1");
	cr_expect_eq(wire_batch_rows(b), 2, "refused rows are not added");
	cr_expect_eq(wire_batch_add(b, WIRE_MAX_METRIC_ID + 1, 1.0), WIRE_EINVAL);
	cr_expect_eq(wire_batch_add(b, 0, 1.0), WIRE_EINVAL, "metric ids start at 1");
	cr_expect_eq(wire_batch_add(b, WIRE_MAX_METRIC_ID, 1.0), WIRE_OK);
	cr_expect_eq(wire_batch_count(b), 1);
	struct wire_dropped dr[WIRE_MAX_DROPPED + 1];
	for (size_t i = 0; i <= WIRE_MAX_DROPPED; i++)
		dr[i] = (struct wire_dropped){10 * i, 10 * i + 5, 5};
	cr_expect_eq(wire_batch_encode(b, 0, dr, WIRE_MAX_DROPPED + 1, &out, &len), WIRE_ELIMIT);
	cr_expect_null(out);
	cr_expect_eq(wire_batch_encode(b, 0, NULL, 1, &out, &len), WIRE_EINVAL);
	cr_expect_eq(wire_batch_encode(b, 0, dr, WIRE_MAX_DROPPED, &out, &len), WIRE_OK);
	free(out);
	out = NULL;
	/* an inconsistent dropped range is not encoded (the decoder would refuse it) */
	struct wire_dropped bad = {20, 10, 1};
	cr_expect_neq(wire_batch_encode(b, 0, &bad, 1, &out, &len), WIRE_OK);
	cr_expect_null(out);
	cr_expect_eq(wire_batch_row(NULL, 1), WIRE_EINVAL);
	cr_expect_eq(wire_batch_add(NULL, 1, 1), WIRE_EINVAL);
	cr_expect_eq(wire_batch_builder_new(NULL), WIRE_EINVAL);
	wire_batch_builder_free(b);
}

/* ---- builder limits: each refuses one past the limit with WIRE_ELIMIT, keeps what it had, and
 * what it had still encodes and decodes ---- */

static void expect_encodes(struct wire_batch_builder *b, size_t readings)
{
	uint8_t *body = NULL;
	size_t len = 0;
	struct wire_batch *got = NULL;
	struct wire_diag d = {""};
	cr_assert_eq(wire_batch_encode(b, 0, NULL, 0, &body, &len), WIRE_OK,
		     "what the builder accepted must encode");
	cr_assert_eq(wire_batch_decode(body, len, &got, &d), WIRE_OK, "%s", d.msg);
	cr_expect_eq(got->n_readings, readings);
	wire_batch_free(got);
	free(body);
}

Test(wire_batch, builder_row_limit)
{
	struct wire_batch_builder *b = NULL;
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	for (int r = 0; r < WIRE_MAX_ROWS; r++) {
		cr_assert_eq(wire_batch_row(b, r * 10), WIRE_OK, "row %d", r);
		cr_assert_eq(wire_batch_add(b, 1, r), WIRE_OK);
	}
	cr_expect_eq(wire_batch_row(b, WIRE_MAX_ROWS * 10), WIRE_ELIMIT);
	cr_expect_eq(wire_batch_rows(b), WIRE_MAX_ROWS);
	expect_encodes(b, WIRE_MAX_ROWS);
	wire_batch_builder_free(b);
}

Test(wire_batch, builder_column_limit)
{
	struct wire_batch_builder *b = NULL;
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	cr_assert_eq(wire_batch_row(b, 0), WIRE_OK);
	for (uint32_t c = 0; c < WIRE_MAX_COLS; c++)
		cr_assert_eq(wire_batch_add(b, c + 1, c), WIRE_OK, "column %u", c);
	/* WIRE_MAX_COLS is every metric id there is: no valid id makes one more column */
	cr_expect_eq(WIRE_MAX_COLS, WIRE_MAX_METRIC_ID);
	cr_expect_eq(wire_batch_add(b, WIRE_MAX_METRIC_ID + 1, 1.0), WIRE_EINVAL);
	cr_expect_eq(wire_batch_add(b, 3, 7.0), WIRE_OK, "an existing column is still fine");
	expect_encodes(b, WIRE_MAX_COLS);
	wire_batch_builder_free(b);
}

Test(wire_batch, builder_cell_limit)
{
	/* 16 full rows of 4096 columns are WIRE_MAX_CELLS readings */
	struct wire_batch_builder *b = NULL;
	int rc = WIRE_OK;
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	for (int r = 0; r < WIRE_MAX_CELLS / WIRE_MAX_COLS; r++) {
		cr_assert_eq(wire_batch_row(b, r), WIRE_OK);
		for (uint32_t c = 0; c < WIRE_MAX_COLS; c++)
			cr_assert_eq(wire_batch_add(b, c + 1, r), WIRE_OK);
	}
	cr_expect_eq(wire_batch_count(b), WIRE_MAX_CELLS);
	rc = wire_batch_row(b, 100);
	if (rc == WIRE_OK)
		rc = wire_batch_add(b, 1, 1.0);
	cr_expect_eq(rc, WIRE_ELIMIT, "reading %d", WIRE_MAX_CELLS + 1);
	expect_encodes(b, WIRE_MAX_CELLS);
	wire_batch_builder_free(b);
}

Test(wire_batch, builder_sparse_grid_limit)
{
	/* A new metric in every row: few readings, but the grid (rows x columns) grows
	 * quadratically. The builder must refuse before the grid passes WIRE_MAX_CELLS, so that
	 * everything it accepted can still be encoded. */
	struct wire_batch_builder *b = NULL;
	size_t added = 0;
	int rc = WIRE_OK;
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	for (int r = 0; r < 1000 && rc == WIRE_OK; r++) {
		rc = wire_batch_row(b, r);
		if (rc == WIRE_OK)
			rc = wire_batch_add(b, (uint32_t)r + 1, r);
		if (rc == WIRE_OK)
			added++;
	}
	cr_expect_eq(rc, WIRE_ELIMIT);
	cr_expect_leq(added, 256, "256 x 256 = WIRE_MAX_CELLS");
	expect_encodes(b, added);
	wire_batch_builder_free(b);
}

Test(wire_batch, encode_refuses_a_body_over_the_limit)
{
	/* Incompressible values (raw bits, random) in a full grid exceed WIRE_MAX_BODY: the
	 * encoder says so instead of producing what the decoder would refuse. */
	struct wire_batch_builder *b = NULL;
	uint8_t *out = NULL;
	size_t len = 0;
	rng_seed(99);
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);
	for (int r = 0; r < 16; r++) {
		cr_assert_eq(wire_batch_row(b, r), WIRE_OK);
		for (uint32_t c = 0; c < WIRE_MAX_COLS; c++) {
			double v = bits_to_double(rng() & ~(0x7ffULL << 52)); /* subnormal */
			cr_assert_eq(wire_batch_add(b, c + 1, v), WIRE_OK);
		}
	}
	cr_expect_eq(wire_batch_encode(b, 0, NULL, 0, &out, &len), WIRE_ELIMIT);
	cr_expect_null(out);
	wire_batch_builder_free(b);
}

/* ---- decoder structural checks on hand-built batches ---- */

struct raw_batch {
	Outpost__Batch m;
	uint32_t dt[4], ids[4], absent[4];
	int32_t scales[4];
	int64_t values[8];
	Outpost__Dropped d;
	Outpost__Dropped *pd[1];
};

/* A valid 2 x 2 batch: rows at t0 and t0+10, metrics 1 and 2 at scale -2. */
static void raw_init(struct raw_batch *r)
{
	memset(r, 0, sizeof(*r));
	outpost__batch__init(&r->m);
	outpost__dropped__init(&r->d);
	r->dt[1] = 10;
	r->ids[0] = 1;
	r->ids[1] = 2;
	r->scales[0] = r->scales[1] = -2;
	r->values[0] = 100;
	r->values[1] = 200;
	r->values[2] = 1;
	r->values[3] = -1;
	r->d.prev_seq = 5;
	r->d.last_seq = 9;
	r->d.count = 4;
	r->pd[0] = &r->d;
	r->m.t0_ms = 1000;
	r->m.n_row_dt_ms = 2;
	r->m.row_dt_ms = r->dt;
	r->m.n_metric_ids = 2;
	r->m.metric_ids = r->ids;
	r->m.n_scales = 2;
	r->m.scales = r->scales;
	r->m.n_values = 4;
	r->m.values = r->values;
	r->m.absent = r->absent;
	r->m.dropped = r->pd;
}

static int raw_decode(struct raw_batch *r, struct wire_diag *d)
{
	size_t len = protobuf_c_message_get_packed_size(&r->m.base);
	uint8_t *buf = malloc(len + 1);
	protobuf_c_message_pack(&r->m.base, buf);
	struct wire_batch *got = NULL;
	memset(d, 0, sizeof(*d));
	int rc = wire_batch_decode(buf, len, &got, d);
	cr_expect((rc == WIRE_OK) == (got != NULL), "output set only on success");
	if (rc == WIRE_OK && got->n_readings == 4) {
		/* the valid base batch: 1.00 2.00 / 1.01 1.99 */
		cr_expect_eq(got->readings[0].value, 1.0);
		cr_expect_eq(got->readings[1].value, 2.0);
		cr_expect_eq(got->readings[2].value, 1.01);
		cr_expect_eq(got->readings[3].value, 1.99);
		cr_expect_eq(got->readings[3].t_ms, 1010);
	}
	wire_batch_free(got);
	free(buf);
	return rc;
}

#define EXPECT_BAD(r, want, field)                                                               \
	do {                                                                                     \
		struct wire_diag d_;                                                             \
		int rc_ = raw_decode(r, &d_);                                                    \
		cr_expect_eq(rc_, want, "%s: got %d (%s)", field, rc_, d_.msg);                  \
		cr_expect(strstr(d_.msg, field), "diagnostic '%s' names %s", d_.msg, field);    \
	} while (0)

Test(wire_batch, decoder_accepts_the_base_batch)
{
	struct raw_batch r;
	struct wire_diag d;
	raw_init(&r);
	cr_expect_eq(raw_decode(&r, &d), WIRE_OK, "%s", d.msg);
	r.m.n_dropped = 1;
	cr_expect_eq(raw_decode(&r, &d), WIRE_OK, "%s", d.msg);
}

Test(wire_batch, decoder_structural_errors)
{
	struct raw_batch r;

	raw_init(&r);
	r.m.n_scales = 1;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.scales");
	r.m.n_scales = 3;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.scales");

	raw_init(&r);
	r.m.n_values = 3;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.values");
	r.m.n_values = 5;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.values");

	raw_init(&r);
	r.absent[0] = 2;
	r.absent[1] = 1;
	r.m.n_absent = 2;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.absent[1]");
	r.absent[1] = 2; /* duplicate */
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.absent[1]");
	r.absent[0] = 4; /* past the last cell */
	r.m.n_absent = 1;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.absent[0]");
	r.absent[0] = 3; /* the last cell is fine */
	struct wire_diag d;
	cr_expect_eq(raw_decode(&r, &d), WIRE_OK, "%s", d.msg);

	raw_init(&r);
	r.ids[1] = 1;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.metric_ids");

	raw_init(&r);
	r.values[0] = INT64_MAX;
	r.values[2] = 1;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.values[2]");
	raw_init(&r);
	r.values[1] = INT64_MIN;
	r.values[3] = -1;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.values[3]");

	raw_init(&r);
	r.m.n_dropped = 1;
	r.d.last_seq = 5; /* not after prev_seq */
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.dropped[0]");
	raw_init(&r);
	r.m.n_dropped = 1;
	r.d.count = 0;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.dropped[0]");
	raw_init(&r);
	r.m.n_dropped = 1;
	r.d.count = 5; /* more than the 4 seqs in 6..9 */
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.dropped[0]");

	raw_init(&r);
	r.m.n_metric_ids = 0;
	r.m.n_scales = 0;
	r.m.n_values = 0;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "without columns");

	raw_init(&r);
	r.m.t0_ms = (1LL << 53) + 1;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.t0_ms");
	r.m.t0_ms = -(1LL << 53) - 1;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.t0_ms");

	raw_init(&r);
	r.scales[1] = WIRE_SCALE_RAW - 1;
	EXPECT_BAD(&r, WIRE_EMALFORMED, "Batch.scales[1]");
}

Test(wire_batch, decoder_refuses_garbage)
{
	struct wire_batch *got = (struct wire_batch *)&got;
	struct wire_batch *const sentinel = got;
	struct wire_diag d = {""};
	const uint8_t junk[] = {0x1a, 0x05, 0x01};
	cr_expect_eq(wire_batch_decode(junk, sizeof(junk), &got, &d), WIRE_ETRUNC);
	cr_expect_eq(got, sentinel, "output untouched on failure");
	cr_expect_eq(wire_batch_decode(NULL, 5, &got, &d), WIRE_EINVAL);
	cr_expect_eq(got, sentinel);
	wire_batch_free(NULL);
}

/* ---- compactness: the reference profile ---- */

/* 100 metrics sampled every 10 s, 6 rows per batch: 40 temperature-like gauges at 0.01
 * resolution, 20 supply voltages/currents at 0.01, 20 byte/packet counters, 20 integer
 * percentages. Slowly varying, as real sensors are. */
enum { REF_METRICS = 100, REF_ROWS = 6 };

struct ref_state {
	int64_t v[REF_METRICS];
};

static void ref_init(struct ref_state *s)
{
	for (int i = 0; i < REF_METRICS; i++) {
		if (i < 40)
			s->v[i] = rng_range(1500, 3500); /* 15.00 .. 35.00 degC */
		else if (i < 60)
			s->v[i] = i % 2 ? rng_range(1190, 1210)  /* 12 V */
					: rng_range(325, 335);   /* 3.3 V */
		else if (i < 80)
			s->v[i] = rng_range(0, 1LL << 40); /* counters */
		else
			s->v[i] = rng_range(0, 100); /* percent */
	}
}

static double ref_step(struct ref_state *s, int i)
{
	if (i < 40) {
		s->v[i] += rng_range(-3, 3);
		return (double)s->v[i] / 100.0;
	}
	if (i < 60) {
		s->v[i] += rng_range(-1, 1);
		return (double)s->v[i] / 100.0;
	}
	if (i < 80) {
		s->v[i] += rng_range(0, 20000);
		return (double)s->v[i];
	}
	s->v[i] += rng_range(-1, 1);
	if (s->v[i] < 0)
		s->v[i] = 0;
	if (s->v[i] > 100)
		s->v[i] = 100;
	return (double)s->v[i];
}

Test(wire_batch, reference_profile_is_at_most_3_bytes_per_reading)
{
	struct wire_key *key = NULL;
	struct wire_pubkey pub;
	char *path = h_strf("%s/devices/dev-a.key", h_pki());
	cr_assert_eq(wire_key_load(path, &key, NULL), WIRE_OK);
	free(path);
	wire_key_public(key, &pub);

	struct wire_batch_builder *b = NULL;
	struct ref_state st;
	struct model *m = model_new();
	rng_seed(2024);
	ref_init(&st);
	cr_assert_eq(wire_batch_builder_new(&b), WIRE_OK);

	int64_t t = 1763850000000LL;
	size_t total_bytes = 0, total_readings = 0;
	double worst = 0;
	for (int batch = 0; batch < 20; batch++) {
		wire_batch_builder_reset(b);
		m->n = m->rows = 0;
		for (int r = 0; r < REF_ROWS; r++, t += 10000) {
			m_row(b, m, t);
			for (int i = 0; i < REF_METRICS; i++)
				m_add(b, m, t, (uint32_t)i + 1, ref_step(&st, i));
		}
		uint8_t *body = NULL, *env_buf = NULL;
		size_t body_len = 0, env_len = 0;
		uint64_t prev = 1000 + (uint64_t)batch;
		cr_assert_eq(wire_batch_encode(b, prev, NULL, 0, &body, &body_len), WIRE_OK);
		struct wire_env e = {.kind = WIRE_KIND_BATCH, .seq = prev + 1,
				     .sent_at_ms = t, .body = body, .body_len = body_len};
		strcpy(e.device_id, "dev-a");
		cr_assert_eq(wire_env_seal(key, &e, &env_buf, &env_len), WIRE_OK);

		/* it is a faithful batch, not just a small one */
		struct wire_env got_env;
		struct wire_batch *got = NULL;
		cr_assert_eq(wire_env_decode(env_buf, env_len, &got_env, NULL), WIRE_OK);
		cr_assert_eq(wire_env_verify(&got_env, &pub), WIRE_OK);
		cr_assert_eq(wire_batch_decode(got_env.body, got_env.body_len, &got, NULL),
			     WIRE_OK);
		cr_assert_eq(m->n, REF_METRICS * REF_ROWS);
		expect_same(m, got);
		wire_batch_free(got);

		double per = (double)env_len / (double)(REF_METRICS * REF_ROWS);
		if (per > worst)
			worst = per;
		total_bytes += env_len;
		total_readings += REF_METRICS * REF_ROWS;
		free(body);
		free(env_buf);
	}
	double avg = (double)total_bytes / (double)total_readings;
	cr_log_info("reference profile (%d metrics x %d rows, sealed envelope): %.3f bytes/reading "
		    "on average, %.3f worst, over %zu batches",
		    REF_METRICS, REF_ROWS, avg, worst, total_readings / (REF_METRICS * REF_ROWS));
	cr_expect_leq(worst, 3.0, "worst batch: %.3f bytes per reading", worst);
	wire_batch_builder_free(b);
	wire_key_free(key);
	free(m);
}
