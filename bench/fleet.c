/* fleet.c - fleet simulator: N device sessions in one process, each with its own certificate,
 * on the device's own link module (device/dev_link.c: Paho MQTTAsync, WSS first then MQTTS,
 * mutual TLS, reconnects with exponential backoff and full jitter: the device's defaults).
 *
 * Each session behaves like outpost-device at the reference profile: after every connect it
 * publishes a retained `online` status and a signed Birth (certificate and 100-metric
 * catalog) and a signed task poll (again every poll interval, 300 s, as the agent; the bridge
 * answers each with a signed TaskList, counted here), then one signed batch of 600 readings every
 * batch interval, and verifies the bridge's signed acks; what is not acknowledged goes again on
 * the device's own ack timer (device/dev_acktimer.c: backoff, one probe at a time).
 * One difference from the agent: every connect also seals a batch at once (the agent seals only
 * every batch interval), so that each session has something the bridge must acknowledge right
 * after each connect, which the level and restart measurements time; that is one extra batch
 * per session per connect (up to N extra batches at a broker restart: more load, not less).
 *
 * 1. Ramp: sessions are added level by level (--levels 2500,5000,10000); a level is held when
 *    every session is connected and has had a batch acknowledged by the bridge, within
 *    --level-timeout. After each level the broker's RSS is read (--broker-pidfile).
 * 2. Restart: at the largest level held, --restart-cmd restarts the broker; the time until
 *    every session is connected again (and has had a batch acknowledged again) is measured.
 * Prints key=value lines ("fleet level ...", "fleet restart ..."). */
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench_pki.h"
#include "bench_util.h"
#include "dev_acktimer.h"
#include "dev_link.h"
#include "dev_spool.h"
#include "orand.h"
#include "outpost.pb-c.h"
#include "wire_batch.h"
#include "wire_cert.h"
#include "wire_env.h"
#include "wire_msg.h"
#include "wire_topic.h"

#define PROG "bench_fleet"
#define METRICS 100
#define ROWS 6
#define MAX_PEND 8
#define ACK_TIMEOUT_MS 30000 /* the device's default ack_timeout */
#define POLL_MS 300000       /* the device's default poll_interval */

struct sess {
	char id[WIRE_ID_MAX + 1];
	char topic[WIRE_TOPIC_COUNT][WIRE_TOPIC_MAX];
	struct dev_link *link;
	struct wire_key *key;
	char *cert_pem;
	uint64_t seq, last_durable, upto;
	struct pend {
		uint64_t seq, prev;
		int64_t made_ms; /* when sealed (monotonic): its age is the ingest lag */
		int64_t sent_ms; /* its latest send, 0 = not sent yet */
		int resent;	 /* sent more than once: its ack latency teaches nothing */
		uint8_t *env;
		size_t len;
	} pend[MAX_PEND]; /* sealed, not acknowledged yet, oldest first */
	int npend;
	int nout; /* pend[0..nout) are on their way; the rest wait for the window */
	struct dev_acktimer timer; /* the device's ack timeout: backoff, probe window */
	int up, wss; /* wss: up on WebSockets (else the MQTTS fallback) */
	int64_t next_batch;
	int64_t next_poll;
	int64_t up_at_ms;
	int64_t acked_at_ms; /* when everything sent was acknowledged after the latest connect */
	uint64_t connects, failures, bad_acks;
	atomic_int queued; /* on the ready list */
};

static struct {
	const char *pki, *certs, *prefix, *host, *restart_cmd, *broker_pidfile, *sync_dir;
	int width, wss_port, mqtts_port;
	int offset, procs, proc_index; /* several simulator processes: ids offset+1.. */
	int64_t batch_ms, level_timeout_ms, restart_timeout_ms, soak_ms;
	int backoff_min_ms, backoff_max_ms, reconnect_spread_ms, connect_timeout_s;
	int ramp_rate; /* new sessions started per second */
	struct sess *s;
	int n; /* sessions created */
	struct wire_pubkey bridge;
	int wake_fd;
	uint64_t rng; /* seeds each session's ack timer */
	pthread_mutex_t mu;
	int *ready;
	int n_ready, cap_ready;
	double grid[ROWS][METRICS];
	uint32_t ids[METRICS];
	Outpost__MetricDef defs[METRICS];
	Outpost__MetricDef *defp[METRICS];
	char names[METRICS][24];
	uint64_t batches_sent, acks, births, polls, task_lists;
	int restart_running;
	atomic_int restart_done;
} G;

static void wake(void *ctx)
{
	struct sess *s = ctx;
	if (!atomic_exchange(&s->queued, 1)) {
		pthread_mutex_lock(&G.mu);
		if (G.n_ready == G.cap_ready) {
			G.cap_ready = G.cap_ready ? G.cap_ready * 2 : 1024;
			G.ready = realloc(G.ready, (size_t)G.cap_ready * sizeof(*G.ready));
			if (!G.ready)
				abort();
		}
		G.ready[G.n_ready++] = (int)(s - G.s);
		pthread_mutex_unlock(&G.mu);
	}
	uint64_t one = 1;
	ssize_t w = write(G.wake_fd, &one, sizeof(one));
	(void)w;
}

static long rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = 0;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

static long broker_rss(void)
{
	if (!G.broker_pidfile)
		return 0;
	FILE *f = fopen(G.broker_pidfile, "r");
	int pid = 0;
	if (f) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return pid > 0 ? rss_kib(pid) : 0;
}

/* A crash inside Paho (1.3.x has races between MQTTAsync_destroy and its own threads, which
 * thousands of clients in one process make likely) is reported with a backtrace. */
static void on_crash(int sig)
{
	static const char msg[] = PROG ": fatal signal; backtrace (addr2line -e bench_fleet):\n";
	void *frames[32];
	ssize_t w = write(2, msg, sizeof(msg) - 1);
	(void)w;
	int n = backtrace(frames, 32);
	backtrace_symbols_fd(frames, n, 2);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ---- messages ---- */

static uint8_t *seal(struct sess *s, uint32_t kind, const uint8_t *body, size_t len,
                     uint64_t seq, size_t *elen)
{
	struct wire_env e = {.kind = kind, .seq = seq, .sent_at_ms = bench_wall_ms(), .body = body,
	                     .body_len = len};
	snprintf(e.device_id, sizeof(e.device_id), "%s", s->id);
	uint8_t *env = NULL;
	if (wire_env_seal(s->key, &e, &env, elen))
		return NULL;
	return env;
}

static void send_birth(struct sess *s)
{
	Outpost__Birth b = OUTPOST__BIRTH__INIT;
	Outpost__SpoolStats sp = OUTPOST__SPOOL_STATS__INIT;
	uint8_t boot[WIRE_BOOT_ID_LEN] = {1, 2, 3};
	uint8_t *body = NULL;
	size_t len;
	b.agent_version = "bench-fleet";
	b.boot_id.data = boot;
	b.boot_id.len = sizeof(boot);
	b.cert_pem = s->cert_pem;
	b.n_metrics = METRICS;
	b.metrics = G.defp;
	b.spool = &sp;
	b.sample_interval_s = 10;
	b.poll_interval_s = 300;
	b.chain_floor = s->npend ? s->pend[0].prev : s->last_durable;
	if (wire_msg_pack(WIRE_KIND_BIRTH, &b.base, &body, &len, NULL))
		return;
	size_t elen;
	uint8_t *env = seal(s, WIRE_KIND_BIRTH, body, len, ++s->seq, &elen);
	if (env && !dev_link_publish(s->link, s->topic[WIRE_TOPIC_BIRTH], env, elen, 1, 0, NULL,
	                             NULL, 0))
		G.births++;
	free(env);
	free(body);
}

/* A task poll as the agent sends it (dev_agent.c send_poll): it takes a seq, carries a v5
 * response topic and correlation data, and the bridge answers on the tasks topic. */
static void send_poll(struct sess *s)
{
	Outpost__TaskPoll p = OUTPOST__TASK_POLL__INIT;
	uint8_t corr[16], *body = NULL;
	size_t len, elen;
	for (size_t i = 0; i < sizeof(corr); i += 8) {
		uint64_t r = orand_next(&G.rng);
		memcpy(corr + i, &r, 8);
	}
	p.max_tasks = 8;
	if (wire_msg_pack(WIRE_KIND_TASK_POLL, &p.base, &body, &len, NULL))
		return;
	uint8_t *env = seal(s, WIRE_KIND_TASK_POLL, body, len, ++s->seq, &elen);
	if (env && !dev_link_publish(s->link, s->topic[WIRE_TOPIC_TASKS_POLL], env, elen, 1, 0,
	                             s->topic[WIRE_TOPIC_TASKS], corr, sizeof(corr)))
		G.polls++;
	free(env);
	free(body);
}

/* Publish what the ack window allows, oldest first (the device's uploader, in small). */
static void send_pending(struct sess *s)
{
	while (s->up && s->nout < s->npend && s->nout < dev_acktimer_allowed(&s->timer)) {
		if (!s->nout)
			dev_acktimer_arm(&s->timer, bench_mono_ms());
		struct pend *p = &s->pend[s->nout++];
		p->resent = p->sent_ms != 0;
		p->sent_ms = bench_mono_ms();
		dev_link_publish(s->link, s->topic[WIRE_TOPIC_TELEMETRY], p->env, p->len, 1, 0, NULL,
		                 NULL, 0);
	}
}

static void send_batch(struct sess *s)
{
	struct wire_batch_builder *bb;
	uint8_t *body = NULL;
	size_t len;
	if (s->npend == MAX_PEND || wire_batch_builder_new(&bb))
		return; /* the bridge is not keeping up: sample later */
	int64_t t0 = bench_wall_ms() - 60000;
	for (int r = 0; r < ROWS; r++) {
		wire_batch_row(bb, t0 + r * 10000);
		for (int c = 0; c < METRICS; c++)
			wire_batch_add(bb, G.ids[c], G.grid[r][c]);
	}
	uint64_t seq = ++s->seq;
	if (!wire_batch_encode(bb, s->last_durable, NULL, 0, &body, &len)) {
		struct pend *p = &s->pend[s->npend];
		p->env = seal(s, WIRE_KIND_BATCH, body, len, seq, &p->len);
		if (p->env) {
			p->seq = seq;
			p->prev = s->last_durable;
			p->made_ms = bench_mono_ms();
			p->sent_ms = 0;
			p->resent = 0;
			s->npend++;
			s->last_durable = seq;
			send_pending(s);
			G.batches_sent++;
		}
	}
	free(body);
	wire_batch_builder_free(bb);
}

static void on_ack(struct sess *s, const struct dev_link_event *ev, int64_t now)
{
	struct wire_env e;
	if (wire_env_decode(ev->data, ev->len, &e, NULL) || e.kind != WIRE_KIND_ACK ||
	    strcmp(e.device_id, s->id) || wire_env_verify(&e, &G.bridge)) {
		s->bad_acks++;
		return;
	}
	G.acks++;
	if (e.seq > s->upto)
		s->upto = e.seq;
	int keep = 0;
	int64_t latency = -1;
	for (int i = 0; i < s->npend; i++) {
		struct pend *p = &s->pend[i];
		if (p->seq > s->upto) {
			s->pend[keep++] = *p;
			continue;
		}
		dev_acktimer_note_latency(&latency, now, p->sent_ms, !p->sent_ms || p->resent);
		free(p->env);
	}
	if (keep < s->npend) {
		s->nout = s->nout > s->npend - keep ? s->nout - (s->npend - keep) : 0;
		dev_acktimer_progress(&s->timer, now, latency);
	}
	s->npend = keep;
	send_pending(s);
	if (!s->npend && !s->acked_at_ms)
		s->acked_at_ms = now;
}

static void handle(struct sess *s, int64_t now)
{
	struct dev_link_event ev;
	while (dev_link_next_event(s->link, &ev)) {
		switch (ev.type) {
		case DEV_LINK_UP:
			s->up = 1;
			s->wss = !strncmp(ev.text, "wss://", 6);
			s->up_at_ms = now;
			s->connects++;
			s->acked_at_ms = 0;
			dev_link_publish(s->link, s->topic[WIRE_TOPIC_STATUS], "online", 6, 1, 1, NULL,
			                 NULL, 0);
			send_birth(s);
			s->nout = 0; /* unacknowledged: again, oldest first */
			dev_acktimer_start(&s->timer, now);
			send_pending(s);
			send_poll(s); /* the agent polls on connect, then every poll interval */
			s->next_poll = now + POLL_MS;
			send_batch(s); /* not the agent's: see the top of this file */
			break;
		case DEV_LINK_DOWN:
		case DEV_LINK_FAILED:
			s->up = 0;
			if (ev.type == DEV_LINK_FAILED) {
				static int logged;
				if (logged < 20) {
					logged++;
					fprintf(stderr, PROG ": %s: %s\n", s->id, ev.text);
				}
				s->failures++;
			}
			break;
		case DEV_LINK_MESSAGE: {
			char id[WIRE_ID_MAX + 1];
			enum wire_topic t;
			if (wire_topic_parse(ev.text, strlen(ev.text), id, &t))
				break;
			if (t == WIRE_TOPIC_ACK)
				on_ack(s, &ev, now);
			else if (t == WIRE_TOPIC_TASKS)
				G.task_lists++; /* the answer to a poll, not checked */
			break;
		}
		case DEV_LINK_SUBSCRIBED: /* kept inside the link */
			break;
		}
		dev_link_event_free(&ev);
	}
}

static void new_session(int i)
{
	struct sess *s = &G.s[i];
	char ca[1024], crt[1024], key[1024];
	snprintf(s->id, sizeof(s->id), "%s%0*d", G.prefix, G.width, G.offset + i + 1);
	for (int t = 0; t < WIRE_TOPIC_COUNT; t++)
		wire_topic_build(s->topic[t], WIRE_TOPIC_MAX, (enum wire_topic)t, s->id);
	snprintf(ca, sizeof(ca), "%s/ca.crt", G.pki);
	snprintf(crt, sizeof(crt), "%s/%s.crt", G.certs, s->id);
	snprintf(key, sizeof(key), "%s/%s.key", G.certs, s->id);
	size_t len;
	if (wire_key_load(key, &s->key, NULL) || wire_cert_read(crt, &s->cert_pem, &len))
		bench_die(PROG, "cannot read %s / %s", key, crt);
	/* numbered as a device's new spool numbers them: from its clock, owing nothing below */
	s->seq = s->last_durable = s->upto = dev_spool_clock_seq(bench_wall_ms()) - 1;
	const char *subs[] = {s->topic[WIRE_TOPIC_ACK], s->topic[WIRE_TOPIC_TASKS], NULL};
	struct dev_link_opts lo = {
	    .client_id = s->id,
	    .host = G.host,
	    .wss_port = G.wss_port,
	    .mqtts_port = G.mqtts_port,
	    .ws_path = "/mqtt",
	    .ca_file = ca,
	    .cert_file = crt,
	    .key_file = key,
	    .proxy = NULL,
	    .will_topic = s->topic[WIRE_TOPIC_STATUS],
	    .keepalive_s = 60,
	    .connect_timeout_s = G.connect_timeout_s,
	    .backoff_min_ms = G.backoff_min_ms,
	    .backoff_max_ms = G.backoff_max_ms,
	    .reconnect_spread_ms = G.reconnect_spread_ms,
	    .subscribe = subs,
	};
	if (dev_link_new(&lo, wake, s, &s->link))
		bench_die(PROG, "dev_link_new");
	s->next_batch = INT64_MAX; /* the first batch follows the first connect */
	dev_acktimer_init(&s->timer, ACK_TIMEOUT_MS, MAX_PEND, orand_next(&G.rng));
}

/* Every 10 s on stderr: how many sessions are up, acknowledged, on WSS; connection failures. */
static void progress(int64_t now)
{
	static int64_t next;
	if (now < next)
		return;
	next = now + 10000;
	int up = 0, acked = 0, wss = 0;
	uint64_t fails = 0;
	for (int i = 0; i < G.n; i++) {
		up += G.s[i].up;
		acked += G.s[i].up && G.s[i].acked_at_ms;
		wss += G.s[i].up && G.s[i].wss;
		fails += G.s[i].failures;
	}
	fprintf(stderr, PROG "[%d]: n=%d up=%d acked=%d on_wss=%d failures=%" PRIu64
	                " batches=%" PRIu64 " acks=%" PRIu64 "\n",
	        G.proc_index, G.n, up, acked, wss, fails, G.batches_sent, G.acks);
}

/* One pass of the event loop: ready sessions, then timers (every 100 ms). */
static void loop_once(int64_t *next_scan)
{
	struct pollfd p = {G.wake_fd, POLLIN, 0};
	int64_t now = bench_mono_ms();
	int timeout = *next_scan > now ? (int)(*next_scan - now) : 0;
	if (poll(&p, 1, timeout) > 0) {
		uint64_t v;
		ssize_t r = read(G.wake_fd, &v, sizeof(v));
		(void)r;
	}
	pthread_mutex_lock(&G.mu);
	int n = G.n_ready;
	int *list = G.ready;
	G.ready = NULL;
	G.n_ready = G.cap_ready = 0;
	pthread_mutex_unlock(&G.mu);
	now = bench_mono_ms();
	for (int k = 0; k < n; k++) {
		struct sess *s = &G.s[list[k]];
		atomic_store(&s->queued, 0);
		handle(s, now);
	}
	free(list);
	if (now >= *next_scan) {
		for (int i = 0; i < G.n; i++) {
			struct sess *s = &G.s[i];
			dev_link_tick(s->link, now);
			if (s->up && s->next_batch == INT64_MAX)
				s->next_batch = now + G.batch_ms;
			if (s->up && s->nout && dev_acktimer_expired(&s->timer, now)) {
				/* like the device's uploader: no ack moved, probe with the oldest */
				s->nout = 0;
				send_pending(s);
			}
			if (s->up && now >= s->next_poll) {
				send_poll(s);
				s->next_poll = now + POLL_MS;
			}
			if (s->up && now >= s->next_batch) {
				send_batch(s);
				s->next_batch += G.batch_ms;
				if (s->next_batch <= now)
					s->next_batch = now + G.batch_ms;
			}
			handle(s, now);
		}
		*next_scan = now + 100;
		progress(now);
	}
}

static void count(int *up, int *acked)
{
	*up = *acked = 0;
	for (int i = 0; i < G.n; i++) {
		*up += G.s[i].up;
		*acked += G.s[i].up && G.s[i].acked_at_ms;
	}
}

static void *restart_main(void *arg)
{
	(void)arg;
	int rc = G.restart_cmd ? system(G.restart_cmd) : 0;
	if (rc)
		fprintf(stderr, PROG ": restart command exited %d\n", rc);
	atomic_store(&G.restart_done, 1);
	return NULL;
}

/* ---- restart (several processes: index 0 restarts once all are ready; files in sync_dir) ---- */

static int64_t file_i64(const char *dir, const char *name)
{
	char path[1024];
	long long v = -1;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%lld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static void file_put(const char *dir, const char *name, int64_t v)
{
	char path[1024], tmp[1100];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
	FILE *f = fopen(tmp, "w");
	if (!f)
		bench_die(PROG, "cannot write %s", tmp);
	fprintf(f, "%lld\n", (long long)v);
	fclose(f);
	rename(tmp, path);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static void measure_restart(int held, int64_t *next_scan)
{
	char name[64];
	/* every simulator says which level it held; all go on with the smallest (the sessions
	 * beyond it are dropped), so that the restart covers one complete level */
	if (G.sync_dir) {
		snprintf(name, sizeof(name), "ready.%d", G.proc_index);
		file_put(G.sync_dir, name, held);
		int64_t wait_end = bench_mono_ms() + G.level_timeout_ms + 60000;
		int all = 0, min = held;
		while (!all && bench_mono_ms() < wait_end) {
			loop_once(next_scan);
			all = 1;
			min = held;
			for (int p = 0; p < G.procs; p++) {
				snprintf(name, sizeof(name), "ready.%d", p);
				int64_t v = file_i64(G.sync_dir, name);
				all = all && v >= 0;
				if (v >= 0 && v < min)
					min = (int)v;
			}
		}
		if (!all)
			min = 0;
		for (int i = min; i < G.n; i++) {
			dev_link_drop(G.s[i].link, "level not held by every simulator");
			G.s[i].up = 0;
		}
		if (min < G.n)
			G.n = min;
		held = min;
	}
	if (!held) {
		fprintf(stderr, PROG ": no level held by every simulator: no restart\n");
		return;
	}
	/* settle: let the level's births and batches drain */
	int64_t settle = bench_mono_ms() + 3000;
	while (bench_mono_ms() < settle)
		loop_once(next_scan);
	uint64_t fails0 = 0;
	for (int i = 0; i < G.n; i++)
		fails0 += G.s[i].failures;
	int64_t t0 = 0, t_ready = 0; /* monotonic ms: SIGTERM, broker listening again */
	pthread_t th;
	int have_thread = 0;
	if (G.proc_index == 0) {
		if (G.sync_dir)
			file_put(G.sync_dir, "restart.t0", bench_wall_ms());
		t0 = bench_mono_ms();
		pthread_create(&th, NULL, restart_main, NULL);
		have_thread = 1;
	}
	int64_t deadline = bench_mono_ms() + G.restart_timeout_ms + G.level_timeout_ms;
	int64_t t_up = 0, t_ack = 0;
	int up = 0, acked = 0, on_wss = 0;
	int64_t *back_at = bench_xcalloc((size_t)G.n, sizeof(int64_t));
	while (bench_mono_ms() < deadline) {
		loop_once(next_scan);
		if (!t0) { /* another process restarts: learn when */
			if (file_i64(G.sync_dir, "restart.skip") > 0)
				break;
			int64_t w = file_i64(G.sync_dir, "restart.t0");
			if (w <= 0)
				continue;
			t0 = bench_mono_ms() - (bench_wall_ms() - w);
			deadline = t0 + G.restart_timeout_ms;
		}
		if (!t_ready) {
			if (G.proc_index == 0 && atomic_load(&G.restart_done))
				t_ready = bench_mono_ms();
			if (G.proc_index == 0 && t_ready && G.sync_dir)
				file_put(G.sync_dir, "restart.t1", bench_wall_ms());
			if (G.proc_index != 0 && file_i64(G.sync_dir, "restart.t1") > 0)
				t_ready = bench_mono_ms() -
				          (bench_wall_ms() - file_i64(G.sync_dir, "restart.t1"));
			if (!t_ready)
				continue;
			deadline = t0 + G.restart_timeout_ms;
		}
		up = acked = on_wss = 0;
		for (int i = 0; i < G.n; i++) {
			struct sess *s = &G.s[i];
			int again = s->up && s->up_at_ms > t0;
			if (again && !back_at[i])
				back_at[i] = s->up_at_ms;
			up += again;
			acked += again && s->acked_at_ms;
			on_wss += again && s->wss;
		}
		if (up == G.n && !t_up)
			t_up = bench_mono_ms();
		if (acked == G.n) {
			t_ack = bench_mono_ms();
			break;
		}
	}
	if (have_thread)
		pthread_join(th, NULL);
	/* percentiles of the time back */
	int64_t *d = bench_xcalloc((size_t)G.n, sizeof(int64_t));
	int nd = 0;
	for (int i = 0; i < G.n; i++)
		if (back_at[i])
			d[nd++] = back_at[i] - t0;
	qsort(d, (size_t)nd, sizeof(*d), cmp_i64);
	uint64_t fails = 0;
	for (int i = 0; i < G.n; i++)
		fails += G.s[i].failures;
	printf("fleet restart n=%d ok=%d back=%d acked=%d on_wss=%d back_s=%.1f acked_s=%.1f "
	       "ready_s=%.1f p50_s=%.1f p90_s=%.1f p99_s=%.1f failed_attempts=%" PRIu64
	       " broker_rss_kb=%ld\n",
	       G.n, t_up > 0, up, acked, on_wss, t_up ? (double)(t_up - t0) / 1000 : -1,
	       t_ack ? (double)(t_ack - t0) / 1000 : -1,
	       t_ready ? (double)(t_ready - t0) / 1000 : -1, nd ? (double)d[nd / 2] / 1000 : -1,
	       nd ? (double)d[nd * 9 / 10] / 1000 : -1, nd ? (double)d[nd * 99 / 100] / 1000 : -1,
	       fails - fails0, broker_rss());
	fflush(stdout);
	free(d);
	free(back_at);
}

int main(int argc, char **argv)
{
	G.pki = bench_arg(argc, argv, "--pki", NULL);
	G.certs = bench_arg(argc, argv, "--certs", NULL);
	G.prefix = bench_arg(argc, argv, "--prefix", "fleet-");
	G.width = (int)bench_arg_l(argc, argv, "--width", 5);
	G.host = bench_arg(argc, argv, "--host", "localhost");
	G.wss_port = (int)bench_arg_l(argc, argv, "--wss-port", 0);
	G.mqtts_port = (int)bench_arg_l(argc, argv, "--mqtts-port", 0);
	G.batch_ms = bench_arg_l(argc, argv, "--batch-interval-ms", 60000);
	G.level_timeout_ms = bench_arg_l(argc, argv, "--level-timeout", 180) * 1000;
	G.soak_ms = bench_arg_l(argc, argv, "--soak", 60) * 1000;
	G.restart_timeout_ms = bench_arg_l(argc, argv, "--restart-timeout", 300) * 1000;
	G.backoff_min_ms = (int)bench_arg_l(argc, argv, "--backoff-min-ms", 1000);
	G.reconnect_spread_ms = (int)bench_arg_l(argc, argv, "--reconnect-spread-ms", 30000);
	G.backoff_max_ms = (int)bench_arg_l(argc, argv, "--backoff-max-ms", 300000);
	G.connect_timeout_s = (int)bench_arg_l(argc, argv, "--connect-timeout", 0); /* 0: the device's */
	G.ramp_rate = (int)bench_arg_l(argc, argv, "--ramp-rate", 1000);
	G.restart_cmd = bench_arg(argc, argv, "--restart-cmd", NULL);
	G.broker_pidfile = bench_arg(argc, argv, "--broker-pidfile", NULL);
	G.sync_dir = bench_arg(argc, argv, "--sync-dir", NULL);
	G.offset = (int)bench_arg_l(argc, argv, "--offset", 0);
	G.procs = (int)bench_arg_l(argc, argv, "--procs", 1);
	G.proc_index = (int)bench_arg_l(argc, argv, "--proc-index", 0);
	if (G.procs < 1 || G.proc_index < 0 || G.proc_index >= G.procs ||
	    (G.procs > 1 && !G.sync_dir))
		bench_die(PROG, "--procs/--proc-index need --sync-dir");
	const char *levels_arg = bench_arg(argc, argv, "--levels", "1000");
	if (!G.pki || !G.certs || (!G.wss_port && !G.mqtts_port)) {
		fprintf(stderr, "usage: " PROG " --pki DIR --certs DIR --wss-port P --mqtts-port P"
		                " --levels N,N,... [--restart-cmd CMD --broker-pidfile F]\n");
		return 2;
	}
	int levels[32], nlev = 0;
	for (const char *p = levels_arg; *p && nlev < 32;) {
		levels[nlev++] = atoi(p);
		p = strchr(p, ',');
		if (!p)
			break;
		p++;
	}
	int max_n = 0;
	for (int i = 0; i < nlev; i++)
		if (levels[i] > max_n)
			max_n = levels[i];
	struct rlimit rl;
	if (!getrlimit(RLIMIT_NOFILE, &rl)) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
		if ((long)rl.rlim_cur < max_n + 100)
			fprintf(stderr, PROG ": RLIMIT_NOFILE %ld is too small for %d sessions\n",
			        (long)rl.rlim_cur, max_n);
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGSEGV, on_crash);
	signal(SIGBUS, on_crash);
	signal(SIGABRT, on_crash);

	G.bridge = bench_bridge_key(PROG, G.pki);

	/* the reference profile: 100 metrics x 6 rows */
	for (int c = 0; c < METRICS; c++) {
		G.ids[c] = (uint32_t)c + 1;
		snprintf(G.names[c], sizeof(G.names[c]), "sim.sensor_%04d", c);
		outpost__metric_def__init(&G.defs[c]);
		G.defs[c].id = G.ids[c];
		G.defs[c].name = G.names[c];
		G.defs[c].unit = "u";
		G.defp[c] = &G.defs[c];
	}
	uint64_t rng = 88172645463325252ULL;
	for (int r = 0; r < ROWS; r++)
		for (int c = 0; c < METRICS; c++)
			G.grid[r][c] = c % 4 == 1 ? (double)(r * 37 + c)
			                          : 15.0 + (double)(bench_rnd(&rng) % 1000) / 100.0;

	pthread_mutex_init(&G.mu, NULL);
	G.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	G.rng = orand_seed();
	G.s = bench_xcalloc((size_t)max_n, sizeof(*G.s));
	printf("fleet start broker_rss_kb=%ld sessions_max=%d nofile=%ld\n", broker_rss(), max_n,
	       (long)rl.rlim_cur);
	fflush(stdout);

	int64_t next_scan = 0;
	int held = 0;
	for (int li = 0; li < nlev; li++) {
		int target = levels[li];
		int64_t t0 = bench_mono_ms(), t_up = 0, t_ack = 0, deadline = t0 + G.level_timeout_ms;
		int up = 0, acked = 0;
		while (bench_mono_ms() < deadline) {
			/* start new sessions at ramp_rate per second */
			int64_t now = bench_mono_ms();
			int allowed = (int)((now - t0) * G.ramp_rate / 1000) + 1 + held;
			while (G.n < target && G.n < allowed)
				new_session(G.n++);
			loop_once(&next_scan);
			count(&up, &acked);
			if (G.n == target && up == target && !t_up)
				t_up = bench_mono_ms();
			if (G.n == target && acked == target) {
				t_ack = bench_mono_ms();
				break;
			}
		}
		/* soak: a level is held only if, one batch interval later, every session is still up
		 * and no batch waits longer than the ack timeout (the bridge keeps up) */
		int lagging = 0, soak_up = 0;
		int64_t max_lag = 0;
		if (t_ack && G.soak_ms) {
			int64_t soak_end = bench_mono_ms() + G.soak_ms;
			while (bench_mono_ms() < soak_end)
				loop_once(&next_scan);
			int64_t now = bench_mono_ms();
			for (int i = 0; i < G.n; i++) {
				struct sess *s = &G.s[i];
				soak_up += s->up;
				int64_t lag = s->npend ? now - s->pend[0].made_ms : 0;
				lagging += lag > ACK_TIMEOUT_MS;
				if (lag > max_lag)
					max_lag = lag;
			}
		}
		int ok = t_ack > 0 && (!G.soak_ms || (soak_up == target && !lagging));
		fprintf(stderr, PROG "[%d]: level %d: soak up=%d lagging=%d max_lag_s=%.1f\n",
		        G.proc_index, target, soak_up, lagging, (double)max_lag / 1000);
		uint64_t fails = 0;
		int on_wss = 0;
		for (int i = 0; i < G.n; i++) {
			fails += G.s[i].failures;
			on_wss += G.s[i].up && G.s[i].wss;
		}
		printf("fleet level n=%d ok=%d up=%d acked=%d on_wss=%d up_s=%.1f acked_s=%.1f "
		       "soak_up=%d lagging=%d max_lag_s=%.1f broker_rss_kb=%ld fleet_rss_kb=%ld "
		       "failures=%" PRIu64 "\n",
		       target, ok, up, acked, on_wss, t_up ? (double)(t_up - t0) / 1000 : -1,
		       t_ack ? (double)(t_ack - t0) / 1000 : -1, soak_up, lagging,
		       (double)max_lag / 1000, broker_rss(), rss_kib(getpid()), fails);
		fflush(stdout);
		if (!ok)
			break;
		held = target;
	}
	/* a level not held: its sessions go (no clean disconnect), the restart runs at `held` */
	for (int i = held; i < G.n; i++) {
		dev_link_drop(G.s[i].link, "level not held");
		G.s[i].up = 0;
	}
	if (held < G.n)
		G.n = held;
	/* the restart is measured only when every level held: after a level that did not, the
	 * broker and the bridge are still digesting its backlog (fleet.sh then runs the held
	 * level again, fresh, for the restart) */
	if ((held && G.restart_cmd) || G.sync_dir)
		measure_restart(held == max_n ? held : 0, &next_scan);
	printf("fleet done held=%d batches=%" PRIu64 " acks=%" PRIu64 " births=%" PRIu64
	       " polls=%" PRIu64 " task_lists=%" PRIu64 "\n",
	       held, G.batches_sent, G.acks, G.births, G.polls, G.task_lists);
	fflush(stdout);
	fflush(stderr);
	/* no clean disconnect of thousands of clients (seconds each): the broker sees them drop */
	_exit(held ? 0 : 1);
}
