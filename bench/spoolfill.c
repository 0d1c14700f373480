/* spoolfill.c - writes into a device's state directory exactly what outpost-device would have
 * spooled during N batch intervals offline: the sim collector sampled every sample interval,
 * sealed every batch interval into a Batch envelope (consecutive seqs, prev_seq chain from the
 * spool), signed with the device key and appended to the device's own encrypted spool, with the
 * device's own metric catalog. Only the clock is simulated: the batches end at "now" and go
 * back N intervals. Bench-only (bench/device.sh); aborts on setup failures.
 *
 * bench_spoolfill --state-dir DIR --id ID --key KEY --batches N [--metrics 100]
 *   [--sample-ms 10000] [--batch-ms 60000] [--spool-max-bytes B] [--spool-max-age-ms MS]
 *   [--segment-bytes B] [--fast 1]
 * --fast 1 skips the per-record fdatasync (one sync at the end): only the fill is faster, the
 * bytes on disk are the same. Prints key=value lines on stdout. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench_util.h"
#include "dev_catalog.h"
#include "dev_collect.h"
#include "dev_spool.h"
#include "wire_batch.h"
#include "wire_env.h"
#include "wire_sign.h"

static const char *prog = "bench_spoolfill";
static int fast_sync;

/* The spool calls fdatasync after every append; with --fast it is skipped here (the data
 * reaches the disk by the sync() at the end). Interposes on libc's for this program only. */
int fdatasync(int fd)
{
	if (fast_sync)
		return 0;
	return (int)syscall(SYS_fdatasync, fd);
}

struct fill {
	struct dev_catalog *cat;
	struct wire_batch_builder *b;
	uint64_t readings;
};

static int sink(void *ctx, const char *name, const char *unit, double value)
{
	struct fill *f = ctx;
	uint32_t id;
	int rc = dev_catalog_id(f->cat, name, unit, &id);
	if (rc)
		return rc;
	f->readings++;
	return wire_batch_add(f->b, id, value);
}

static void mkdir_or_die(const char *dir)
{
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		bench_die(prog, "mkdir %s: %s", dir, strerror(errno));
}

int main(int argc, char **argv)
{
	const char *state = bench_arg(argc, argv, "--state-dir", NULL);
	const char *id = bench_arg(argc, argv, "--id", NULL);
	const char *keyf = bench_arg(argc, argv, "--key", NULL);
	long n = bench_arg_l(argc, argv, "--batches", 0);
	long metrics = bench_arg_l(argc, argv, "--metrics", 100);
	int64_t sample_ms = bench_arg_l(argc, argv, "--sample-ms", 10000);
	int64_t batch_ms = bench_arg_l(argc, argv, "--batch-ms", 60000);
	struct dev_spool_opts so = {
		.max_bytes = bench_arg_l(argc, argv, "--spool-max-bytes", 64L << 20),
		.max_age_ms = bench_arg_l(argc, argv, "--spool-max-age-ms", 90L * 86400000),
		.segment_bytes = bench_arg_l(argc, argv, "--segment-bytes", 1L << 20),
	};
	fast_sync = bench_arg_l(argc, argv, "--fast", 0) != 0;
	if (!state || !id || !keyf || n <= 0 || metrics <= 0 || sample_ms <= 0 || batch_ms < sample_ms)
		bench_die(prog, "usage: --state-dir DIR --id ID --key KEY --batches N [--metrics M] "
				"[--sample-ms MS] [--batch-ms MS] [--spool-max-bytes B] [--spool-max-age-ms MS] "
				"[--segment-bytes B] [--fast 1]");

	struct wire_diag d = {{0}};
	struct wire_key *key = NULL;
	if (wire_key_load(keyf, &key, &d))
		bench_die(prog, "key %s: %s", keyf, d.msg);

	/* the same layout as dev_agent_new: <state>/spool, <state>/metrics */
	char spool_dir[4096], cat_path[4096];
	mkdir_or_die(state);
	snprintf(spool_dir, sizeof(spool_dir), "%s/spool", state);
	snprintf(cat_path, sizeof(cat_path), "%s/metrics", state);
	so.dir = spool_dir;
	struct dev_spool *sp = NULL;
	const char *why = NULL;
	int rc = dev_spool_open(&so, &sp, &why);
	if (rc)
		bench_die(prog, "spool %s: %s: %s", spool_dir, dev_spool_strerror(rc), why ? why : "");
	struct fill f = {0};
	if (dev_catalog_open(cat_path, &f.cat) || wire_batch_builder_new(&f.b))
		bench_die(prog, "catalog %s or builder: cannot open", cat_path);
	struct dev_collect *coll = NULL;
	struct dev_collect_conf cc = {
	    .list = "sim", .exec_timeout_ms = 5000, .sim_metrics = (int)metrics, .seed = id};
	if (dev_collect_open(&cc, &coll, &why))
		bench_die(prog, "collectors: %s", why);

	int64_t t_start_us = bench_mono_us();
	int64_t now = bench_wall_ms();
	/* batch i is sealed at t_end - (n-1-i) * batch_ms; its rows are the samples before it */
	int64_t t_end = now;
	int64_t rows_per_batch = batch_ms / sample_ms;
	uint64_t first_seq = 0, last_seq = 0, bytes = 0;
	for (long i = 0; i < n; i++) {
		int64_t sealed = t_end - (int64_t)(n - 1 - i) * batch_ms;
		for (int64_t r = 0; r < rows_per_batch; r++) {
			int64_t t = sealed - batch_ms + (r + 1) * sample_ms - sample_ms / 2;
			if (wire_batch_row(f.b, t))
				bench_die(prog, "batch row %" PRId64 " rejected", r);
			const char *failed = NULL;
			if (dev_collect_sample(coll, sink, &f, &failed, &why))
				bench_die(prog, "collector %s: %s", failed, why);
		}
		/* flush_batch + spool_durable + seal, as dev_agent.c does them */
		uint64_t seq;
		struct wire_dropped dropped[WIRE_MAX_DROPPED];
		uint8_t *body = NULL, *env = NULL;
		size_t blen, elen;
		if ((rc = dev_spool_take_seq(sp, &seq)))
			bench_die(prog, "take_seq: %s", dev_spool_strerror(rc));
		size_t nd = dev_spool_dropped(sp, dropped, WIRE_MAX_DROPPED);
		uint64_t prev = dev_spool_last_durable(sp);
		if (wire_batch_encode(f.b, prev, dropped, nd, &body, &blen))
			bench_die(prog, "batch encode failed");
		struct wire_env e = {.kind = WIRE_KIND_BATCH, .seq = seq, .sent_at_ms = sealed,
				     .body = body, .body_len = blen};
		snprintf(e.device_id, sizeof(e.device_id), "%s", id);
		if (wire_env_seal(key, &e, &env, &elen))
			bench_die(prog, "seal failed");
		rc = dev_spool_append(sp, seq, prev, WIRE_KIND_BATCH, sealed, env, elen);
		if (rc)
			bench_die(prog, "append %" PRIu64 ": %s", seq, dev_spool_strerror(rc));
		if (nd)
			dev_spool_dropped_reported(sp, seq, dropped, nd);
		free(body);
		free(env);
		wire_batch_builder_reset(f.b);
		if (!first_seq)
			first_seq = seq;
		last_seq = seq;
		bytes += elen;
	}
	struct dev_spool_stats st;
	dev_spool_stats(sp, &st);
	dev_collect_close(coll);
	dev_catalog_close(f.cat);
	wire_batch_builder_free(f.b);
	dev_spool_close(sp);
	wire_key_free(key);
	sync();
	double secs = (double)(bench_mono_us() - t_start_us) / 1e6;
	printf("batches=%ld readings=%" PRIu64 " first_seq=%" PRIu64 " last_seq=%" PRIu64
	       " env_bytes=%" PRIu64 " bytes_per_reading=%.3f spool_records=%" PRIu64
	       " spool_bytes=%" PRIu64 " dropped=%" PRIu64 " oldest_ms=%" PRId64 " fill_s=%.1f\n",
	       n, f.readings, first_seq, last_seq, bytes, f.readings ? (double)bytes / (double)f.readings : 0.0,
	       st.records, st.bytes, st.dropped_total, st.oldest_unsent_ms, secs);
	return 0;
}
