/* wire_batch.h - compact telemetry batches: a builder on the device, a decoder on the bridge.
 *
 * A batch is a grid: rows are sample instants, columns are metric ids. Times are delta-coded,
 * each column's values are decimal-scaled integers delta-coded down the column (lossless: the
 * encoder picks, per column, the fewest decimals, up to 9, that reproduce every double exactly,
 * and falls back to raw IEEE-754 bits otherwise). See outpost.proto `Batch`. */
#ifndef WIRE_BATCH_H
#define WIRE_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "wire_err.h"
#include "wire_limits.h"

struct wire_reading {
	uint32_t metric_id;
	int64_t t_ms;
	double value;
};

/* Spooled envelopes prev_seq+1..last_seq (count of them spooled) were discarded unsent. */
struct wire_dropped {
	uint64_t prev_seq;
	uint64_t last_seq;
	uint64_t count;
};

/* ---- building (device side) ---- */

struct wire_batch_builder;

int wire_batch_builder_new(struct wire_batch_builder **out);
void wire_batch_builder_free(struct wire_batch_builder *b); /* accepts NULL */

/* Forget all rows; keeps allocated memory for the next batch. */
void wire_batch_builder_reset(struct wire_batch_builder *b);

/* Start a new row at t_ms. Rows must not go back in time and be < 2^32 ms apart
 * (WIRE_EINVAL); WIRE_ELIMIT past WIRE_MAX_ROWS, or if rows x columns would pass
 * WIRE_MAX_CELLS. After WIRE_ELIMIT the builder still holds an encodable batch. */
int wire_batch_row(struct wire_batch_builder *b, int64_t t_ms);

/* Add a reading to the current row (a row must have been started). A metric given twice in
 * a row keeps the last value. WIRE_ELIMIT past WIRE_MAX_COLS or WIRE_MAX_CELLS (readings
 * added, or rows x columns for a new metric). */
int wire_batch_add(struct wire_batch_builder *b, uint32_t metric_id, double value);

size_t wire_batch_count(const struct wire_batch_builder *b); /* readings added */
size_t wire_batch_rows(const struct wire_batch_builder *b);

/* Encode the Batch body (not the envelope). `dropped` may be NULL when ndropped is 0.
 * *out is malloc'd, caller frees. WIRE_ELIMIT if the body would exceed WIRE_MAX_BODY. */
int wire_batch_encode(struct wire_batch_builder *b, uint64_t prev_seq,
		      const struct wire_dropped *dropped, size_t ndropped, uint8_t **out,
		      size_t *len);

/* ---- decoding (bridge side) ---- */

struct wire_batch {
	uint64_t prev_seq;
	size_t n_rows;
	size_t n_cols;
	size_t n_readings;
	struct wire_reading *readings; /* row-major, in column order within a row */
	size_t n_dropped;
	struct wire_dropped *dropped;
};

/* Decode and fully validate a Batch body. *out is owned by the caller: wire_batch_free(). */
int wire_batch_decode(const uint8_t *body, size_t len, struct wire_batch **out,
		      struct wire_diag *diag);
void wire_batch_free(struct wire_batch *batch); /* accepts NULL */

#endif
