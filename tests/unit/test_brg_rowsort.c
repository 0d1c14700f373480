/* test_brg_rowsort.c - a group's readings in primary key order, against qsort of the same rows. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "brg_err.h"
#include "brg_rowsort.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static int cmp(const void *a, const void *b)
{
	return brg_rowsort_cmp(a, b);
}

/* rs sorts rows as qsort does, and leaves rows as they were. */
static void expect_sorted_like_qsort(struct brg_rowsort *rs, const struct brg_row *rows, size_t n)
{
	struct brg_row *want = malloc(n * sizeof(*want) + 1);
	struct brg_row *before = malloc(n * sizeof(*before) + 1);
	const struct brg_row *got = NULL;
	cr_assert(want && before);
	memcpy(want, rows, n * sizeof(*rows));
	memcpy(before, rows, n * sizeof(*rows));
	qsort(want, n, sizeof(*want), cmp);
	cr_assert_eq(brg_rowsort_sort(rs, rows, n, &got), 0);
	for (size_t i = 0; i < n; i++)
		cr_assert(!memcmp(&got[i], &want[i], sizeof(*got)),
		          "row %zu: device %lld metric %lld ts %lld, want %lld %lld %lld", i,
		          (long long)got[i].device, (long long)got[i].metric, (long long)got[i].ts,
		          (long long)want[i].device, (long long)want[i].metric, (long long)want[i].ts);
	cr_expect(!memcmp(rows, before, n * sizeof(*rows)), "the input rows were changed");
	free(want);
	free(before);
}

/* Batches as devices send them: samples in time, each sample every metric in turn, each
 * device's batches in seq; the devices' batches interleaved. */
static struct brg_row *batches(size_t devices, size_t metrics, size_t samples, size_t per_dev,
                               size_t *n)
{
	*n = devices * metrics * samples * per_dev;
	struct brg_row *r = malloc(*n * sizeof(*r));
	size_t k = 0;
	cr_assert(r);
	for (size_t b = 0; b < per_dev; b++)
		for (size_t d = 0; d < devices; d++)
			for (size_t s = 0; s < samples; s++)
				for (size_t m = 0; m < metrics; m++)
					r[k++] = (struct brg_row){
					    (int64_t)(devices - d), (int64_t)(1000 + m * 7 % metrics),
					    (int64_t)((b * samples + s) * 10000), (int64_t)b + 1,
					    (int64_t)(s * metrics + m), (double)k};
	return r;
}

Test(brg_rowsort, batches_in_order)
{
	struct brg_rowsort *rs = brg_rowsort_new();
	size_t n;
	struct brg_row *r = batches(40, 10, 5, 20, &n);
	cr_assert(rs);
	expect_sorted_like_qsort(rs, r, n);
	free(r);
	brg_rowsort_free(rs);
}

/* A series out of order within itself (a retransmission of an older batch after a newer one,
 * samples listed newest first) is sorted, not only gathered. */
Test(brg_rowsort, series_out_of_order)
{
	struct brg_rowsort *rs = brg_rowsort_new();
	size_t n;
	struct brg_row *r = batches(3, 4, 6, 5, &n);
	cr_assert(rs);
	for (size_t i = 0; i < n / 2; i++) { /* the whole group backwards */
		struct brg_row t = r[i];
		r[i] = r[n - 1 - i];
		r[n - 1 - i] = t;
	}
	expect_sorted_like_qsort(rs, r, n);
	/* one swap inside one series, the rest in order */
	free(r);
	r = batches(3, 4, 6, 5, &n);
	struct brg_row t = r[0];
	r[0] = r[4 * 6 * 3]; /* device 3, metric 1000, of the second batch */
	r[4 * 6 * 3] = t;
	expect_sorted_like_qsort(rs, r, n);
	free(r);
	brg_rowsort_free(rs);
}

/* Random keys: many series (the hash grows past its first size, and collides), equal
 * timestamps ordered by seq then idx, negative and extreme values. Every key is unique, as in
 * the table (idx: the row's place), so the order does not depend on qsort being stable. */
Test(brg_rowsort, random_rows)
{
	struct brg_rowsort *rs = brg_rowsort_new();
	cr_assert(rs);
	rng_state = 0x2545F4914F6CDD1Du;
	for (int round = 0; round < 40; round++) {
		size_t n = (size_t)(rnd() % 20000);
		uint64_t spread = round % 2 ? 3 : 5000; /* few series, then many */
		struct brg_row *r = malloc(n * sizeof(*r) + 1);
		cr_assert(r);
		for (size_t i = 0; i < n; i++)
			r[i] = (struct brg_row){(int64_t)(rnd() % spread) - 2,
			                        round == 7 ? INT64_MIN + (int64_t)(rnd() % 3)
			                                   : (int64_t)(rnd() % spread),
			                        (int64_t)(rnd() % 4), (int64_t)(rnd() % 3),
			                        (int64_t)i, (double)i};
		expect_sorted_like_qsort(rs, r, n);
		free(r);
	}
	brg_rowsort_free(rs);
}

Test(brg_rowsort, empty_one_and_reuse)
{
	struct brg_rowsort *rs = brg_rowsort_new();
	const struct brg_row *got = NULL;
	struct brg_row one = {1, 2, 3, 4, 5, 6.0};
	size_t n;
	cr_assert(rs);
	cr_expect_eq(brg_rowsort_sort(rs, &one, 0, &got), 0); /* a new sorter, no rows */
	expect_sorted_like_qsort(rs, &one, 1);
	struct brg_row *r = batches(50, 100, 2, 3, &n); /* large, then small again */
	expect_sorted_like_qsort(rs, r, n);
	expect_sorted_like_qsort(rs, r + 7, 30);
	free(r);
	cr_expect_eq(brg_rowsort_sort(rs, &one, (size_t)UINT32_MAX + 1, &got), BRG_EINVAL);
	brg_rowsort_free(rs);
	brg_rowsort_free(NULL);
}
