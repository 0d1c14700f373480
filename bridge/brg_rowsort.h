/* brg_rowsort.h - a commit group's readings in the readings table's primary key order.
 *
 * The writer inserts each group's rows sorted by key, so that each device's metric series
 * grows at one place in the index. A group's rows come as batches: within one (device,
 * metric) series they are almost always in order already (a batch's samples in time, a
 * device's batches in seq). So the rows are gathered series by series in the order given (one
 * pass with a hash of the series, and a sort of the distinct series only) and a series is
 * sorted again only if it is out of order within itself: linear time in the usual case,
 * n log n at worst. */
#ifndef BRG_ROWSORT_H
#define BRG_ROWSORT_H

#include <stddef.h>
#include <stdint.h>

/* One row of the readings table: its primary key and its value. */
struct brg_row {
	int64_t device, metric, ts, seq, idx;
	double value;
};

/* The scratch buffers of the sort, kept from one group to the next. */
struct brg_rowsort;

/* NULL if out of memory. */
struct brg_rowsort *brg_rowsort_new(void);
void brg_rowsort_free(struct brg_rowsort *rs);

/* Sorts rows[0..n) by (device, metric, ts, seq, idx) into rs's own buffer. On success
 * *sorted points at the n sorted rows, owned by rs, valid until its next sort or its free
 * (rows itself when n is 0); rows is not changed. 0, BRG_ENOMEM, or BRG_EINVAL if n is above
 * UINT32_MAX. */
int brg_rowsort_sort(struct brg_rowsort *rs, const struct brg_row *rows, size_t n,
                     const struct brg_row **sorted);

/* The order brg_rowsort_sort gives: < 0, 0, > 0. */
int brg_rowsort_cmp(const struct brg_row *a, const struct brg_row *b);

#endif
