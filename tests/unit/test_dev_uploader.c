/* test_dev_uploader.c - windowed upload, fresh-data priority, verified acks only, resends after
 * reconnects, ack timeouts and the resend task. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dev_acktimer.h"
#include "dev_spool.h"
#include "dev_uploader.h"
#include "harness.h"
#include "outpost.pb-c.h"
#include "wire_env.h"
#include "wire_msg.h"

struct sent {
	uint64_t seq[512];
	size_t n;
};

static int send_fn(void *ctx, const struct dev_spool_rec *rec, const uint8_t *env, size_t len)
{
	struct sent *s = ctx;
	(void)env;
	(void)len;
	if (s->n < 512)
		s->seq[s->n++] = rec->seq;
	return 0;
}

/* send_fn that accepts `left` envelopes, then refuses (a link that just died) */
struct refusing {
	struct sent *s;
	int left;
};

static int refusing_send(void *ctx, const struct dev_spool_rec *rec, const uint8_t *env,
			 size_t len)
{
	struct refusing *r = ctx;
	if (r->left-- <= 0)
		return -1;
	return send_fn(r->s, rec, env, len);
}

static int64_t now_wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000;
}

struct fixture {
	char *dir;
	struct dev_spool *spool;
	struct dev_uploader *up;
	struct wire_key *bridge;
	uint64_t seqs[128];
	size_t n;
};

static void add(struct fixture *f)
{
	uint64_t seq;
	cr_assert_eq(dev_spool_take_seq(f->spool, &seq), 0);
	char buf[64];
	int len = snprintf(buf, sizeof(buf), "envelope %llu", (unsigned long long)seq);
	cr_assert_eq(dev_spool_append(f->spool, seq, dev_spool_last_durable(f->spool), WIRE_KIND_BATCH,
				      now_wall(), (uint8_t *)buf, (size_t)len), 0);
	f->seqs[f->n++] = seq;
}

/* setup() with segments of segment_bytes */
static void setup_segments(struct fixture *f, size_t records, int window, int64_t segment_bytes)
{
	memset(f, 0, sizeof(*f));
	f->dir = h_tmpdir("uploader");
	struct dev_spool_opts o = {f->dir, 1 << 20, 86400000, segment_bytes, 0};
	cr_assert_eq(dev_spool_open(&o, &f->spool, NULL), 0);
	for (size_t i = 0; i < records; i++)
		add(f);
	f->bridge = h_pki_key("bridge");
	struct dev_uploader_opts uo = {"dev-a", {{0}}, window, 5000};
	wire_key_public(f->bridge, &uo.bridge_key);
	cr_assert_eq(dev_uploader_new(f->spool, &uo, &f->up), 0);
}

static void setup(struct fixture *f, size_t records, int window)
{
	setup_segments(f, records, window, 1 << 16);
}

/* setup() with the link up at time 0, as most tests start */
static void setup_up(struct fixture *f, size_t records, int window)
{
	setup(f, records, window);
	dev_uploader_link_up(f->up, 0);
}

/* A new record, announced as fresh data (as the collector's seal does) */
static void add_fresh(struct fixture *f)
{
	add(f);
	dev_uploader_fresh(f->up, f->seqs[f->n - 1]);
}

static void teardown(struct fixture *f)
{
	dev_uploader_free(f->up);
	dev_spool_close(f->spool);
	wire_key_free(f->bridge);
	free(f->dir);
}

static uint8_t *ack_env_ranges(struct wire_key *k, const char *device, uint64_t upto,
			       uint64_t first, uint64_t last, size_t *len)
{
	Outpost__Ack a = OUTPOST__ACK__INIT;
	Outpost__SeqRange r = OUTPOST__SEQ_RANGE__INIT, *rp = &r;
	uint8_t *body, *env;
	size_t blen;
	a.upto = upto;
	if (first) {
		r.first = first;
		r.last = last;
		a.n_ranges = 1;
		a.ranges = &rp;
	}
	cr_assert_eq(wire_msg_pack(WIRE_KIND_ACK, &a.base, &body, &blen, NULL), 0);
	struct wire_env e = {.kind = WIRE_KIND_ACK, .seq = upto, .sent_at_ms = 1, .body = body,
			     .body_len = blen};
	strcpy(e.device_id, device);
	cr_assert_eq(wire_env_seal(k, &e, &env, len), 0);
	free(body);
	return env;
}

static uint8_t *ack_env(struct wire_key *k, const char *device, uint64_t upto, size_t *len)
{
	return ack_env_ranges(k, device, upto, 0, 0, len);
}

/* Nothing acknowledged nor deleted: the spool still holds its records; bad_acks refused. */
static void expect_nothing_acked(struct fixture *f, uint64_t records, uint64_t bad_acks,
				 struct dev_uploader_stats *us)
{
	struct dev_spool_stats st;
	cr_expect_eq(dev_spool_acked_upto(f->spool), 0);
	dev_spool_stats(f->spool, &st);
	cr_expect_eq(st.records, records);
	dev_uploader_stats(f->up, us);
	cr_expect_eq(us->bad_acks, bad_acks);
}

static int ack(struct fixture *f, struct wire_key *k, const char *device, uint64_t upto, int64_t now)
{
	size_t len;
	uint8_t *env = ack_env(k, device, upto, &len);
	int rc = dev_uploader_on_ack(f->up, env, len, now, NULL);
	free(env);
	return rc;
}

Test(dev_uploader, window_and_seq_order)
{
	struct fixture f;
	struct sent s = {0};
	setup(&f, 10, 4);
	cr_expect_eq(dev_uploader_pump(f.up, 0, send_fn, &s), 0, "nothing while the link is down");
	dev_uploader_link_up(f.up, 0);
	cr_expect_eq(dev_uploader_pump(f.up, 0, send_fn, &s), 4);
	for (int i = 0; i < 4; i++)
		cr_expect_eq(s.seq[i], f.seqs[i]);
	cr_expect_eq(dev_uploader_pump(f.up, 1, send_fn, &s), 0, "window full");
	cr_assert_eq(ack(&f, f.bridge, "dev-a", f.seqs[1], 2), 0);
	cr_expect_eq(dev_uploader_pump(f.up, 2, send_fn, &s), 2);
	cr_expect_eq(s.seq[4], f.seqs[4]);
	cr_expect_eq(s.seq[5], f.seqs[5]);
	cr_expect_eq(dev_spool_acked_upto(f.spool), f.seqs[1]);
	teardown(&f);
}

Test(dev_uploader, unverified_acks_change_nothing)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 6, 8);
	dev_uploader_pump(f.up, 0, send_fn, &s);
	struct wire_key *dev_c = h_pki_key("devices/dev-c");
	cr_expect_eq(ack(&f, dev_c, "dev-a", f.seqs[5], 1), WIRE_ESIG, "signed by a device, not the bridge");
	cr_expect_eq(ack(&f, f.bridge, "dev-b", f.seqs[5], 1), WIRE_EID, "another device's ack");
	struct wire_diag d = {{0}};
	cr_expect_eq(dev_uploader_on_ack(f.up, (const uint8_t *)"garbage", 7, 1, &d),
		     WIRE_EMALFORMED, "not an envelope");
	cr_expect(strstr(d.msg, "Envelope"), "diag: %s", d.msg);
	cr_expect_eq(dev_spool_acked_upto(f.spool), 0);
	struct dev_spool_stats st;
	dev_spool_stats(f.spool, &st);
	cr_expect_eq(st.records, 6);
	struct dev_uploader_stats us;
	dev_uploader_stats(f.up, &us);
	cr_expect_eq(us.bad_acks, 3);
	cr_expect_eq(us.inflight, 6);
	wire_key_free(dev_c);
	teardown(&f);
}

/* A verified ack beyond anything the spool handed out (the bridge's frontier from an earlier life
 * of the device, whose state directory was reset) is refused whole with its own code, for the
 * agent's warning, and deletes nothing; the bridge's next real ack still applies. */
Test(dev_uploader, an_ack_beyond_the_spool_is_refused_and_deletes_nothing)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 6, 8);
	dev_uploader_pump(f.up, 0, send_fn, &s);
	uint64_t next = dev_spool_next_seq(f.spool);
	struct wire_diag d = {{0}};
	size_t len;
	uint8_t *env = ack_env(f.bridge, "dev-a", next + 1000000, &len);
	cr_expect_eq(dev_uploader_on_ack(f.up, env, len, 1, &d), DEV_UPLOADER_EFUTURE);
	free(env);
	char *want = h_strf("ack up to %llu beyond anything this spool handed out (next %llu)",
			    (unsigned long long)next + 1000000, (unsigned long long)next);
	cr_expect_str_eq(d.msg, want);
	free(want);
	env = ack_env_ranges(f.bridge, "dev-a", f.seqs[1], f.seqs[3], next, &len);
	cr_expect_eq(dev_uploader_on_ack(f.up, env, len, 1, NULL), DEV_UPLOADER_EFUTURE,
		     "a range ending at next");
	free(env);
	struct dev_uploader_stats us;
	expect_nothing_acked(&f, 6, 2, &us);
	cr_expect_eq(us.inflight, 6);
	cr_expect_eq(ack(&f, f.bridge, "dev-a", f.seqs[5], 2), 0);
	cr_expect_eq(dev_spool_acked_upto(f.spool), f.seqs[5]);
	teardown(&f);
}

Test(dev_uploader, fresh_data_goes_before_the_backlog)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 20, 2);
	cr_expect_eq(dev_uploader_pump(f.up, 0, send_fn, &s), 2);
	add_fresh(&f);
	cr_assert_eq(ack(&f, f.bridge, "dev-a", f.seqs[1], 1), 0);
	cr_expect_eq(dev_uploader_pump(f.up, 1, send_fn, &s), 2);
	cr_expect_eq(s.seq[2], f.seqs[20], "the new record jumps the queue");
	cr_expect_eq(s.seq[3], f.seqs[2], "then the backlog resumes in order");
	/* the backlog does not send the fresh record twice while it is in flight */
	for (int i = 0; i < 20; i++) {
		uint64_t upto = s.seq[s.n - 1] < f.seqs[20] ? s.seq[s.n - 1] : f.seqs[19];
		ack(&f, f.bridge, "dev-a", upto, 2 + i);
		dev_uploader_pump(f.up, 2 + i, send_fn, &s);
	}
	int twice = 0;
	for (size_t i = 0; i < s.n; i++)
		twice += s.seq[i] == f.seqs[20];
	cr_expect_eq(twice, 1);
	teardown(&f);
}

Test(dev_uploader, reconnect_and_timeout_resend_the_unacknowledged)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 5, 8);
	cr_expect_eq(dev_uploader_pump(f.up, 0, send_fn, &s), 5);
	cr_assert_eq(ack(&f, f.bridge, "dev-a", f.seqs[1], 10), 0);
	dev_uploader_link_down(f.up);
	dev_uploader_link_up(f.up, 20);
	s.n = 0;
	cr_expect_eq(dev_uploader_pump(f.up, 20, send_fn, &s), 3, "only what was not acknowledged");
	cr_expect_eq(s.seq[0], f.seqs[2]);
	cr_expect_eq(dev_uploader_deadline(f.up), 20 + 5000);
	s.n = 0;
	cr_expect_eq(dev_uploader_pump(f.up, 4000, send_fn, &s), 0);
	cr_expect_eq(dev_uploader_pump(f.up, 5020, send_fn, &s), 1, "ack timeout: probe");
	cr_expect_eq(s.seq[0], f.seqs[2], "with the oldest unacknowledged");
	int64_t next = dev_uploader_deadline(f.up);
	cr_expect_geq(next, 5020 + 5000, "the next wait is longer");
	cr_expect_leq(next, 5020 + 10000);
	/* the probe is acknowledged: the window reopens, twice as wide per ack that moves */
	s.n = 0;
	cr_assert_eq(ack(&f, f.bridge, "dev-a", f.seqs[2], 6000), 0);
	cr_expect_eq(dev_uploader_pump(f.up, 6000, send_fn, &s), 2);
	cr_expect_eq(dev_uploader_deadline(f.up), 6000 + 10000,
		     "the probe was resent: the wait stays backed off until a first send is acked");
	cr_expect_eq(s.seq[0], f.seqs[3]);
	cr_expect_eq(s.seq[1], f.seqs[4]);
	struct dev_uploader_stats us;
	dev_uploader_stats(f.up, &us);
	cr_expect_eq(us.timeouts, 1);
	cr_expect_eq(us.resent, 6);
	teardown(&f);
}

Test(dev_uploader, late_acks_get_one_probe_per_growing_wait)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 8, 8);
	cr_assert_eq(dev_uploader_pump(f.up, 0, send_fn, &s), 8);
	/* a bridge far behind (a fleet joining at once): no ack for ten minutes */
	int64_t now = 0, last_wait = 0;
	int timeouts = 0;
	s.n = 0;
	while (now < 600000 && timeouts < 100) {
		now = dev_uploader_deadline(f.up);
		cr_assert_lt(now, INT64_MAX);
		cr_expect_eq(dev_uploader_pump(f.up, now, send_fn, &s), 1, "one probe per timeout");
		timeouts++;
		int64_t wait = dev_uploader_deadline(f.up) - now;
		cr_expect_geq(wait, last_wait / 2, "the wait does not shrink below half");
		last_wait = wait;
	}
	/* waits of 5 s, then 5-10, 10-20, 20-40 s and 20-40 s from then on */
	int most = 4 + 600000 / (5000 * DEV_ACKTIMER_MAX_FACTOR / 2);
	cr_expect_leq(timeouts, most, "%d timeouts in 10 minutes, expected <= %d (a resend of the"
		      " whole window every 5 s would be %d)", timeouts, most, 600000 / 5000 * 8);
	cr_expect_geq(timeouts, 600000 / (5000 * DEV_ACKTIMER_MAX_FACTOR), "it keeps probing");
	cr_expect_eq(s.n, (size_t)timeouts);
	for (size_t i = 0; i < s.n; i++)
		cr_expect_eq(s.seq[i], f.seqs[0], "always the oldest unacknowledged");
	teardown(&f);
}

Test(dev_uploader, resend_task_sends_acknowledged_records_still_on_disk)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 10, 16);
	dev_uploader_pump(f.up, 0, send_fn, &s);
	cr_assert_eq(ack(&f, f.bridge, "dev-a", f.seqs[5], 1), 0);
	s.n = 0;
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[2], f.seqs[4]), 0);
	cr_expect_eq(dev_uploader_pump(f.up, 2, send_fn, &s), 3);
	cr_expect_eq(s.seq[0], f.seqs[2]);
	cr_expect_eq(s.seq[2], f.seqs[4]);

	/* the link refuses a send halfway: the rest of the range waits for the next pump */
	s.n = 0;
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[1], f.seqs[3]), 0);
	struct refusing r = {&s, 1};
	cr_expect_eq(dev_uploader_pump(f.up, 3, refusing_send, &r), 1);
	cr_expect_eq(dev_uploader_pump(f.up, 4, send_fn, &s), 2);
	cr_assert_eq(s.n, 3);
	cr_expect_eq(s.seq[1], f.seqs[2]);
	cr_expect_eq(s.seq[2], f.seqs[3]);
	teardown(&f);
}

/* The records of s->seq in [first, last] of f's seqs, each sent once, in order. */
static void expect_sent_once(const struct sent *s, size_t *at, const struct fixture *f,
			     size_t first, size_t last)
{
	for (size_t i = first; i <= last; i++, (*at)++) {
		cr_assert_lt(*at, s->n, "seq %llu was not sent", (unsigned long long)f->seqs[i]);
		cr_expect_eq(s->seq[*at], f->seqs[i], "sent %llu where %llu was due",
			     (unsigned long long)s->seq[*at], (unsigned long long)f->seqs[i]);
	}
}

/* Two `resend` tasks (one list, or the second before the first is sent) each get their range
 * sent: the second does not replace the first. Overlapping and adjacent ranges are merged, so
 * nothing goes twice; the lowest seqs go first. */
Test(dev_uploader, resend_ranges_wait_their_turn_and_merge)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 30, 64);
	cr_assert_eq(dev_uploader_pump(f.up, 0, send_fn, &s), 30);
	/* acknowledged, still on disk (28 and 29 are not: the segment stays) */
	cr_assert_eq(ack(&f, f.bridge, "dev-a", f.seqs[27], 1), 0);
	s.n = 0;
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[20], f.seqs[22]), 0);
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[2], f.seqs[4]), 0);
	cr_expect_eq(dev_uploader_resends_pending(f.up), 2);
	cr_expect_eq(dev_uploader_pump(f.up, 2, send_fn, &s), 6);
	size_t at = 0;
	expect_sent_once(&s, &at, &f, 2, 4);
	expect_sent_once(&s, &at, &f, 20, 22);
	cr_expect_eq(dev_uploader_resends_pending(f.up), 0);

	/* 5..7, 7..9 overlap, 10..10 touches 9, 12..13 stands apart: two ranges */
	s.n = 0;
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[5], f.seqs[7]), 0);
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[12], f.seqs[13]), 0);
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[7], f.seqs[9]), 0);
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[10], f.seqs[10]), 0);
	cr_expect_eq(dev_uploader_resends_pending(f.up), 2);
	cr_expect_eq(dev_uploader_pump(f.up, 3, send_fn, &s), 8);
	at = 0;
	expect_sent_once(&s, &at, &f, 5, 10);
	expect_sent_once(&s, &at, &f, 12, 13);

	/* a range that arrives while one is half sent (the link refused a send) joins the queue */
	s.n = 0;
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[0], f.seqs[3]), 0);
	struct refusing r = {&s, 2};
	cr_expect_eq(dev_uploader_pump(f.up, 4, refusing_send, &r), 2);
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[25], f.seqs[26]), 0);
	cr_expect_eq(dev_uploader_pump(f.up, 5, send_fn, &s), 4);
	at = 0;
	expect_sent_once(&s, &at, &f, 0, 3);
	expect_sent_once(&s, &at, &f, 25, 26);
	cr_expect_eq(s.n, at);
	teardown(&f);
}

/* The list of waiting ranges is bounded: one more apart from all of them is refused, changing
 * nothing (the task then fails and says so), while one that joins a waiting range is taken. */
Test(dev_uploader, resend_ranges_are_bounded)
{
	struct fixture f;
	struct sent s = {0};
	setup(&f, 30, 64); /* link down: nothing drains */
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[3], f.seqs[2]), WIRE_EINVAL);
	for (size_t i = 0; i < DEV_UPLOADER_MAX_RESENDS; i++)
		cr_expect_eq(dev_uploader_resend(f.up, f.seqs[3 * i], f.seqs[3 * i]), 0);
	cr_expect_eq(dev_uploader_resends_pending(f.up), DEV_UPLOADER_MAX_RESENDS);
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[28], f.seqs[29]), DEV_UPLOADER_EBUSY);
	cr_expect_eq(dev_uploader_resend(f.up, f.seqs[1], f.seqs[1]), 0, "it touches 0..0");
	cr_expect_eq(dev_uploader_resends_pending(f.up), DEV_UPLOADER_MAX_RESENDS);
	/* the ranges go first, each once; the backlog brings the rest (what is in flight already
	 * is not sent twice) */
	dev_uploader_link_up(f.up, 0);
	cr_expect_eq(dev_uploader_pump(f.up, 0, send_fn, &s), 30);
	size_t at = 0;
	expect_sent_once(&s, &at, &f, 0, 1);
	for (size_t i = 1; i < DEV_UPLOADER_MAX_RESENDS; i++)
		expect_sent_once(&s, &at, &f, 3 * i, 3 * i);
	cr_expect_eq(dev_uploader_resends_pending(f.up), 0);
	for (size_t i = 0; i < 30; i++) {
		size_t times = 0;
		for (size_t j = 0; j < s.n; j++)
			times += s.seq[j] == f.seqs[i];
		cr_expect_eq(times, 1, "seq %llu sent %zu times", (unsigned long long)f.seqs[i],
			     times);
	}
	teardown(&f);
}

/* Acks that are late but do come (a bridge behind, steadily): once learned, no more timeouts
 * and no duplicates; a timeout's probe is resent, so its late ack teaches nothing. */
Test(dev_uploader, steadily_late_acks_are_learned_not_probed)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 0, 8);
	int64_t now = 0;
	uint64_t timeouts_late = 0;
	for (int i = 0; i < 30; i++) {
		add_fresh(&f);
		cr_assert_eq(dev_uploader_pump(f.up, now, send_fn, &s), 1);
		/* the ack comes 12 s later (the timeout is 5 s); pump on every deadline before */
		int64_t ack_at = now + 12000;
		while (dev_uploader_deadline(f.up) <= ack_at)
			dev_uploader_pump(f.up, dev_uploader_deadline(f.up), send_fn, &s);
		cr_assert_eq(ack(&f, f.bridge, "dev-a", f.seqs[f.n - 1], ack_at), 0);
		now += 20000;
		struct dev_uploader_stats us;
		dev_uploader_stats(f.up, &us);
		if (i == 19)
			timeouts_late = us.timeouts;
	}
	struct dev_uploader_stats us;
	dev_uploader_stats(f.up, &us);
	cr_expect_gt(timeouts_late, 0, "the first late acks did time out");
	cr_expect_eq(us.timeouts, timeouts_late, "no timeouts once the latency is learned");
	cr_expect_lt(us.timeouts, 10, "%llu timeouts for 30 envelopes", (unsigned long long)us.timeouts);
	teardown(&f);
}

/* The bridge lost one envelope (e.g. taken by MQTT just before it stopped) while it stores and
 * acknowledges the newer ones: acks of the newer ones must not keep the lost one from timing
 * out, and the probe is that one, ahead of fresh data. */
Test(dev_uploader, a_hole_below_acknowledged_ranges_times_out)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 4, 8);
	cr_assert_eq(dev_uploader_pump(f.up, 0, send_fn, &s), 4);
	/* the first is lost; the bridge keeps acknowledging later ones, every second */
	for (int64_t t = 1000; t < 5000; t += 1000) {
		size_t len;
		add_fresh(&f);
		dev_uploader_pump(f.up, t, send_fn, &s);
		uint8_t *env = ack_env_ranges(f.bridge, "dev-a", 0, f.seqs[1], f.seqs[f.n - 1], &len);
		cr_assert_eq(dev_uploader_on_ack(f.up, env, len, t, NULL), 0);
		free(env);
	}
	cr_expect_eq(dev_uploader_deadline(f.up), 5000, "the wait runs from the lost one's send");
	add_fresh(&f);
	s.n = 0;
	cr_expect_eq(dev_uploader_pump(f.up, 5000, send_fn, &s), 1, "a probe");
	cr_expect_eq(s.seq[0], f.seqs[0], "the lost envelope, before fresh data");
	teardown(&f);
}

/* A bridge that acknowledges only the cumulative point (an older bridge, or one whose range list
 * is full): after an ack timeout, with fresh data arriving faster than it went out, the backlog
 * must still drain at once, without waiting out a timeout per envelope. Fresh data keeps at
 * most half the window, so the cumulative point moves with every round trip. */
static void backlog_drains_without_ack_ranges(int window)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 4, window);
	cr_assert_eq(dev_uploader_pump(f.up, 0, send_fn, &s), window < 4 ? window : 4);
	/* no ack: a timeout, a probe; more fresh records than the fresh list holds pile up */
	int64_t now = dev_uploader_deadline(f.up);
	cr_assert_eq(dev_uploader_pump(f.up, now, send_fn, &s), 1);
	for (int i = 0; i < 24; i++) {
		add_fresh(&f);
		cr_expect_eq(dev_uploader_pump(f.up, now, send_fn, &s), 0, "the probe's wait");
	}
	/* the bridge got all it was sent; from now on it acks the highest contiguous seq it has,
	 * every 10 ms, well inside the ack timeout (5 s or more) */
	int got[64] = {0};
	size_t upto = 0; /* f.seqs[0..upto) acknowledged */
	struct dev_uploader_stats before, after;
	dev_uploader_stats(f.up, &before);
	for (int step = 0; step < 100 && upto < f.n; step++) {
		for (size_t i = 0; i < s.n; i++)
			for (size_t k = 0; k < f.n; k++)
				if (s.seq[i] == f.seqs[k])
					got[k] = 1;
		s.n = 0;
		while (upto < f.n && got[upto])
			upto++;
		now += 10;
		if (upto)
			cr_assert_eq(ack(&f, f.bridge, "dev-a", f.seqs[upto - 1], now), 0);
		dev_uploader_pump(f.up, now, send_fn, &s);
	}
	dev_uploader_stats(f.up, &after);
	cr_expect_eq(upto, f.n, "window %d: %zu of %zu acknowledged within 1 s", window, upto, f.n);
	cr_expect_eq(after.timeouts, before.timeouts, "window %d: no further ack timeout was needed",
		     window);
	teardown(&f);
}

Test(dev_uploader, the_backlog_drains_without_ack_ranges)
{
	backlog_drains_without_ack_ranges(8);
	backlog_drains_without_ack_ranges(1); /* no room for fresh data while a backlog waits */
}

/* A correctly signed envelope of another kind on the ack path: its body is a real Ack (upto
 * all six), so only the kind check keeps it from deleting the spool. */
Test(dev_uploader, an_envelope_of_another_kind_is_no_ack)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 6, 8);
	cr_assert_eq(dev_uploader_pump(f.up, 0, send_fn, &s), 6);
	Outpost__Ack a = OUTPOST__ACK__INIT;
	uint8_t *body, *env;
	size_t blen, len;
	a.upto = f.seqs[5];
	cr_assert_eq(wire_msg_pack(WIRE_KIND_ACK, &a.base, &body, &blen, NULL), 0);
	const uint32_t kinds[] = {WIRE_KIND_TASK_LIST, WIRE_KIND_BATCH};
	for (size_t i = 0; i < 2; i++) {
		struct wire_env e = {.kind = kinds[i], .seq = f.seqs[5], .sent_at_ms = 1, .body = body,
				     .body_len = blen};
		strcpy(e.device_id, "dev-a");
		cr_assert_eq(wire_env_seal(f.bridge, &e, &env, &len), 0);
		cr_expect_eq(dev_uploader_on_ack(f.up, env, len, 1, NULL), WIRE_EKIND, "kind %s",
			     wire_kind_name(kinds[i]));
		free(env);
	}
	free(body);
	struct dev_uploader_stats us;
	expect_nothing_acked(&f, 6, 2, &us);
	cr_expect_eq(us.acks, 0);
	cr_expect_eq(us.inflight, 6);
	/* control: the same body in an Ack envelope is applied */
	cr_expect_eq(ack(&f, f.bridge, "dev-a", f.seqs[5], 2), 0);
	cr_expect_eq(dev_spool_acked_upto(f.spool), f.seqs[5]);
	teardown(&f);
}

/* A backlog envelope the link refuses while still up (Paho's queue of 100 publishes full, say)
 * goes next, not never: with everything after it acknowledged, no timeout would resend it. */
Test(dev_uploader, a_backlog_envelope_the_link_refused_is_not_skipped)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 4, 8);
	struct refusing r = {&s, 1};
	cr_assert_eq(dev_uploader_pump(f.up, 0, refusing_send, &r), 1); /* seqs[1] refused */
	cr_expect_eq(dev_uploader_pump(f.up, 1, send_fn, &s), 3);
	cr_expect_eq(s.seq[1], f.seqs[1], "the refused envelope goes next");
	size_t len;
	uint8_t *env = ack_env_ranges(f.bridge, "dev-a", f.seqs[1], f.seqs[2], f.seqs[3], &len);
	cr_assert_eq(dev_uploader_on_ack(f.up, env, len, 2, NULL), 0);
	free(env);
	cr_expect_eq(dev_spool_acked_upto(f.spool), f.seqs[3], "all four acknowledged");
	teardown(&f);
}

/* The second of three records rots on disk: it is skipped, counted as corrupt and reported as
 * dropped (the link the bridge needs to pass over it), and the others are sent; a resend after a
 * reconnect does not meet it again (it was cut out). */
Test(dev_uploader, a_corrupt_record_is_skipped_and_reported_dropped)
{
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, 3, 8);
	char *seg = h_strf("%s/seg-%020llu.log", f.dir, (unsigned long long)f.seqs[0]);
	char *first = h_strf("envelope %llu", (unsigned long long)f.seqs[0]);
	off_t at = (off_t)(48 + 12 + strlen(first) + 16) + 48 + 12 + 2; /* the 2nd's ciphertext */
	int fd = open(seg, O_RDWR);
	uint8_t b;
	cr_assert_geq(fd, 0, "%s", seg);
	cr_assert_eq(pread(fd, &b, 1, at), 1);
	b ^= 0x01;
	cr_assert_eq(pwrite(fd, &b, 1, at), 1);
	close(fd);
	cr_expect_eq(dev_uploader_pump(f.up, 0, send_fn, &s), 2);
	cr_expect_eq(s.seq[0], f.seqs[0]);
	cr_expect_eq(s.seq[1], f.seqs[2]);
	struct dev_uploader_stats us;
	dev_uploader_stats(f.up, &us);
	cr_expect_eq(us.corrupt, 1);
	cr_expect_eq(us.inflight, 2);
	struct wire_dropped d[4];
	cr_assert_eq(dev_spool_dropped(f.spool, d, 4), 1);
	cr_expect_eq(d[0].prev_seq, f.seqs[0]);
	cr_expect_eq(d[0].last_seq, f.seqs[1]);
	cr_expect_eq(d[0].count, 1);
	dev_uploader_link_down(f.up);
	dev_uploader_link_up(f.up, 10);
	s.n = 0;
	cr_expect_eq(dev_uploader_pump(f.up, 10, send_fn, &s), 2);
	dev_uploader_stats(f.up, &us);
	cr_expect_eq(us.corrupt, 1);
	cr_expect_eq(dev_spool_dropped(f.spool, d, 4), 1);
	free(first);
	free(seg);
	teardown(&f);
}

/* 67 records in a row rot on disk, more than one call of send_next passes over: the pump
 * returns how many it sent (the 3 after them), not one more for the call that sent nothing
 * (before, it counted that call as a send). */
Test(dev_uploader, a_long_run_of_corrupt_records_is_not_counted_as_sent)
{
	enum { ROT = 67, N = 70 };
	struct fixture f;
	struct sent s = {0};
	setup_up(&f, N, 8);
	char *seg = h_strf("%s/seg-%020llu.log", f.dir, (unsigned long long)f.seqs[0]);
	int fd = open(seg, O_RDWR);
	cr_assert_geq(fd, 0, "%s", seg);
	off_t at = 0;
	for (size_t i = 0; i < N; i++) {
		char *body = h_strf("envelope %llu", (unsigned long long)f.seqs[i]);
		uint8_t b;
		if (i < ROT) { /* a byte of its ciphertext */
			cr_assert_eq(pread(fd, &b, 1, at + 48 + 12 + 2), 1);
			b ^= 0x01;
			cr_assert_eq(pwrite(fd, &b, 1, at + 48 + 12 + 2), 1);
		}
		at += (off_t)(48 + 12 + strlen(body) + 16);
		free(body);
	}
	close(fd);
	cr_expect_eq(dev_uploader_pump(f.up, 0, send_fn, &s), N - ROT);
	cr_expect_eq(s.n, N - ROT);
	cr_expect_eq(s.seq[0], f.seqs[ROT]);
	struct dev_uploader_stats us;
	dev_uploader_stats(f.up, &us);
	cr_expect_eq(us.corrupt, ROT);
	cr_expect_eq(us.sent, N - ROT);
	free(seg);
	teardown(&f);
}

/* An ack the spool applies but cannot record on disk (its state file cannot be written: here its
 * temporary file is a directory; a full disk in the field): WIRE_EIO, and yet what it
 * acknowledges leaves the in-flight window and the ack timer moves on, so nothing is resent
 * for it and the rest is not held up. */
Test(dev_uploader, an_ack_whose_state_cannot_be_written_still_moves_the_window)
{
	struct fixture f;
	struct sent s = {0};
	setup_segments(&f, 4, 8, 200); /* two records per segment */
	dev_uploader_link_up(f.up, 0);
	cr_assert_eq(dev_uploader_pump(f.up, 0, send_fn, &s), 4);
	cr_assert_eq(dev_uploader_deadline(f.up), 5000);
	char *tmp = h_strf("%s/state.tmp", f.dir);
	cr_assert_eq(mkdir(tmp, 0700), 0);
	/* the first segment is acknowledged and deleted: the state must be written */
	cr_expect_eq(ack(&f, f.bridge, "dev-a", f.seqs[1], 3000), WIRE_EIO);
	cr_expect_eq(dev_spool_acked_upto(f.spool), f.seqs[1]);
	struct dev_uploader_stats us;
	dev_uploader_stats(f.up, &us);
	cr_expect_eq(us.inflight, 2);
	cr_expect_eq(us.acks, 1);
	cr_expect_eq(us.bad_acks, 0);
	cr_expect_gt(dev_uploader_deadline(f.up), 5000, "the ack timer moved on");
	s.n = 0;
	cr_expect_eq(dev_uploader_pump(f.up, 5000, send_fn, &s), 0, "no timeout, no resend");
	cr_assert_eq(rmdir(tmp), 0);
	cr_expect_eq(ack(&f, f.bridge, "dev-a", f.seqs[3], 5001), 0);
	dev_uploader_stats(f.up, &us);
	cr_expect_eq(us.inflight, 0);
	cr_expect_eq(us.timeouts, 0);
	free(tmp);
	teardown(&f);
}
