/* dev_agent.c - the device main loop (see dev_agent.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/random.h>

#include "otime.h"
#include "cfg.h"
#include "dev_agent_int.h"
#include "dev_catalog.h"
#include "dev_collect.h"
#include "dev_link.h"
#include "dev_proxy.h"
#include "dev_spool.h"
#include "dev_tasks.h"
#include "dev_tlscheck.h"
#include "dev_uploader.h"
#include "ofile.h"
#include "olog.h"
#include "outpost.pb-c.h"
#include "wire_batch.h"
#include "wire_cert.h"
#include "wire_env.h"
#include "wire_msg.h"
#include "wire_topic.h"

#define BRIDGE_CN "outpost-bridge"

/* ---------- time ---------- */

static void wake(void *ctx)
{
	struct dev_agent *a = ctx;
	uint64_t one = 1;
	ssize_t w = write(a->wake_fd, &one, sizeof(one));
	(void)w;
}

void dev_agent_stop(struct dev_agent *a)
{
	a->stop_asked = 1; /* before stop: a `restart` task under way gives way to it */
	a->stop = 1;
	wake(a);
}

uint64_t dev_agent_restart_task(const struct dev_agent *a)
{
	return a->restart_task;
}

void dev_agent_reconnect(struct dev_agent *a)
{
	a->reconnect = 1;
	wake(a);
}

/* Return the free pages of the heap to the system. What start-up (certificate checks) and
 * each TLS handshake allocate is freed below live blocks, where glibc never trims it by itself:
 * ~1.4 MB that would otherwise stay resident for the life of the agent. Only called on rare
 * events (start, connect). */
static void give_back_memory(void)
{
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

/* ---------- construction ---------- */

static int load_identity(struct dev_agent *a, char *err, size_t errlen)
{
	struct dev_config *c = a->cfg;
	struct wire_diag d = {{0}};
	struct wire_cert_info info, binfo;
	struct wire_ca *ca = NULL;
	char *pem = NULL;
	size_t len;
	int rc = 2;

	if (wire_device_id_check(c->id)) {
		snprintf(err, errlen, "%s: id: '%s' is not [A-Za-z0-9_-]{1,64} (and not outpost-*)",
			 c->source, c->id);
		return 2;
	}
	if (wire_key_load(c->key, &a->key, &d)) {
		snprintf(err, errlen, "%s: key: %s", c->source, d.msg);
		return 2;
	}
	if (wire_cert_read(c->cert, &a->cert_pem, &len) ||
	    wire_cert_parse(a->cert_pem, len, &info, &d)) {
		snprintf(err, errlen, "%s: cert: %s: %s", c->source, c->cert,
			 d.msg[0] ? d.msg : "cannot read");
		return 2;
	}
	if (strcmp(info.cn, c->id)) {
		snprintf(err, errlen, "%s: cert: CN is '%s', not the device id '%s'", c->source, info.cn,
			 c->id);
		return 2;
	}
	struct wire_pubkey mine;
	wire_key_public(a->key, &mine);
	if (memcmp(mine.raw, info.key.raw, sizeof(mine.raw))) {
		snprintf(err, errlen, "%s: key: does not match the certificate %s", c->source, c->cert);
		return 2;
	}
	if (wire_ca_load(c->ca, NULL, &ca, &d)) {
		snprintf(err, errlen, "%s: ca: %s", c->source, d.msg);
		goto out;
	}
	/* a certificate of another PKI would be refused by the broker at every attempt,
	 * forever: say so now, naming the file. One out of its dates (or a clock wrong here) is
	 * warned of and the agent runs: it samples into the spool, which is delivered once the
	 * certificate is renewed, where an exit would lose every reading meanwhile. */
	int vrc = wire_ca_verify(ca, a->cert_pem, len, &info, &d);
	if (vrc == WIRE_ECHAIN) {
		snprintf(err, errlen, "%s: cert: %s: not issued by the CA of ca_file %s", c->source,
			 c->cert, c->ca);
		goto out;
	}
	if (vrc == WIRE_EEXPIRED) {
		olog(OLOG_WARN, "cert: %s: %s: the broker refuses it until it is renewed; sampling"
		     " into the spool meanwhile", c->cert, d.msg[0] ? d.msg : wire_strerror(vrc));
	} else if (vrc) {
		snprintf(err, errlen, "%s: cert: %s: %s", c->source, c->cert,
			 d.msg[0] ? d.msg : wire_strerror(vrc));
		goto out;
	}
	/* the bridge key must come from a certificate our CA issued to outpost-bridge. One out
	 * of its dates still carries that key (wire_ca_verify says WIRE_EEXPIRED only of a
	 * certificate the CA signed): warned of and used, as the agent's own certificate above,
	 * where an exit would lose every reading until the file is replaced. */
	errno = 0;
	int rrc = wire_cert_read(c->bridge_cert, &pem, &len);
	if (rrc) {
		const char *why = errno ? strerror(errno) : wire_strerror(rrc);
		if (rrc == WIRE_ELIMIT)
			why = "larger than a certificate may be";
		snprintf(err, errlen, "%s: bridge_cert: %s: cannot read: %s", c->source,
			 c->bridge_cert, why);
		goto out;
	}
	char dates[sizeof(d.msg)] = "";
	d.msg[0] = '\0';
	vrc = wire_ca_verify(ca, pem, len, &binfo, &d);
	if (vrc == WIRE_EEXPIRED) {
		snprintf(dates, sizeof(dates), "%s", d.msg[0] ? d.msg : wire_strerror(vrc));
		vrc = wire_cert_parse(pem, len, &binfo, &d);
	}
	if (vrc == WIRE_ECHAIN) {
		snprintf(err, errlen, "%s: bridge_cert: %s: not issued by the CA of ca_file %s",
			 c->source, c->bridge_cert, c->ca);
		goto out;
	}
	if (vrc) {
		snprintf(err, errlen, "%s: bridge_cert: %s: %s", c->source, c->bridge_cert,
			 d.msg[0] ? d.msg : wire_strerror(vrc));
		goto out;
	}
	if (strcmp(binfo.cn, BRIDGE_CN)) {
		snprintf(err, errlen, "%s: bridge_cert: CN is '%s', not %s", c->source, binfo.cn, BRIDGE_CN);
		goto out;
	}
	if (dates[0])
		olog(OLOG_WARN, "bridge_cert: %s: %s: acks and task lists are still verified with "
		     "its key; replace the file with the renewed certificate (provision-certs.sh "
		     "keeps the key)", c->bridge_cert, dates);
	a->bridge_pub = binfo.key;
	rc = 0;
out:
	free(pem);
	wire_ca_free(ca);
	return rc;
}

int dev_agent_new(struct dev_config *cfg, struct dev_agent **out, char *err, size_t errlen)
{
	struct dev_agent *a = calloc(1, sizeof(*a));
	const char *why = NULL;
	char path[4096], *proxy = a ? a->proxy : NULL;
	int rc = 1;

	if (!a) {
		snprintf(err, errlen, "out of memory");
		return 1;
	}
	a->cfg = cfg;
	a->wake_fd = -1;
	rc = load_identity(a, err, errlen);
	/* checking bridge.crt's ECDSA signature filled wolfSSL's ECC cache (~1.6 MB); the device
	 * never verifies ECDSA again, so give it back */
	wire_thread_cleanup();
	give_back_memory();
	if (rc)
		goto fail;
	rc = 1;
	a->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->wake_fd < 0 || wc_InitRng(&a->rng) != 0) {
		snprintf(err, errlen, "cannot set up the event loop");
		goto fail;
	}
	a->rng_ready = 1;
	if (ofile_mkdir_p(cfg->state_dir, 0700)) {
		snprintf(err, errlen, "%s: state_dir: cannot create %s: %s", cfg->source, cfg->state_dir,
			 strerror(errno));
		goto fail;
	}
	struct dev_spool_opts so = {cfg->spool_dir, cfg->spool_max_bytes, cfg->spool_max_age_ms,
				    cfg->spool_segment_bytes,
				    dev_spool_clock_seq(otime_wall_ms())};
	int src = dev_spool_open(&so, &a->spool, &why);
	if (src == DEV_SPOOL_EBUSY) {
		snprintf(err, errlen, "spool %s is in use by another outpost-device (two agents "
			 "with one state_dir or spool_dir?)", cfg->spool_dir);
		goto fail;
	}
	if (src) {
		int eio = src == DEV_SPOOL_EIO;
		snprintf(err, errlen, "spool %s: %s: %s%s%s", cfg->spool_dir,
			 dev_spool_strerror(src), why ? why : "", eio ? ": " : "",
			 eio ? strerror(errno) : "");
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/metrics", cfg->state_dir);
	if (dev_catalog_open(path, &a->catalog)) {
		/* its ids name what the spooled batches hold: a new catalog would give them to
		 * other names */
		snprintf(err, errlen, "metric catalog %s: unreadable (restore it; removing it to "
			 "start afresh is safe only once the spool backlog is 0: "
			 "docs/TROUBLESHOOTING.md)", path);
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/tasks", cfg->state_dir);
	if (dev_tasks_open(path, cfg->id, &a->bridge_pub, &a->tasks)) {
		snprintf(err, errlen, "task state %s: unreadable", path);
		goto fail;
	}
	int have_proxy =
	    dev_proxy_resolve(cfg->proxy, cfg->broker_host, proxy, sizeof(a->proxy), &why);
	if (have_proxy < 0) {
		snprintf(err, errlen, "%s: proxy: %s", cfg->source, why);
		rc = 2;
		goto fail;
	}
	/* Paho reads these itself, and mishandles the usual http:// form: we decided above.
	 * The exec command gets them, and dev_agent_free puts them back for a restart. */
	if (dev_proxy_env_hide(&a->proxy_env)) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	struct dev_collect_conf cc = {.list = cfg->collectors,
				      .exec_command = cfg->exec_command,
				      .exec_timeout_ms = cfg->exec_timeout_ms,
				      .sim_metrics = (int)cfg->sim_metrics,
				      .seed = cfg->id,
				      .stop = &a->stop,
				      .exec_env = (const char *const *)a->proxy_env.saved};
	if (dev_collect_open(&cc, &a->collect, &why)) {
		snprintf(err, errlen, "%s: collectors: %s", cfg->source, why);
		rc = 2;
		goto fail;
	}
	if (wire_batch_builder_new(&a->builder)) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	struct dev_uploader_opts uo = {cfg->id, a->bridge_pub, (int)cfg->window, cfg->ack_timeout_ms};
	if (dev_uploader_new(a->spool, &uo, &a->up)) {
		snprintf(err, errlen, "cannot create the uploader");
		goto fail;
	}
	for (int t = 0; t < WIRE_TOPIC_COUNT; t++)
		wire_topic_build(a->topic[t], WIRE_TOPIC_MAX, (enum wire_topic)t, cfg->id);

	const char *subs[] = {a->topic[WIRE_TOPIC_ACK], a->topic[WIRE_TOPIC_TASKS], NULL};
	struct dev_link_opts lo = {
		.client_id = cfg->id,
		.host = cfg->broker_host,
		.wss_port = cfg->transport == DEV_TRANSPORT_MQTTS ? 0 : (int)cfg->wss_port,
		.mqtts_port = cfg->transport == DEV_TRANSPORT_WSS ? 0 : (int)cfg->mqtts_port,
		.ws_path = cfg->ws_path,
		.ca_file = cfg->ca,
		.cert_file = cfg->cert,
		.key_file = cfg->key,
		.proxy = have_proxy ? proxy : NULL,
		.will_topic = a->topic[WIRE_TOPIC_STATUS],
		.keepalive_s = (int)(cfg->keepalive_ms / 1000),
		.connect_timeout_s = (int)((cfg->connect_timeout_ms + 999) / 1000),
		.backoff_min_ms = cfg->backoff_min_ms,
		.backoff_max_ms = cfg->backoff_max_ms,
		.reconnect_spread_ms = cfg->reconnect_spread_ms,
		.subscribe = subs,
	};
	if (dev_link_new(&lo, wake, a, &a->link)) {
		snprintf(err, errlen, "cannot create the MQTT client");
		goto fail;
	}
	if (have_proxy)
		olog(OLOG_INFO, "using HTTP CONNECT proxy %s%s", dev_proxy_loggable(proxy),
		     dev_proxy_loggable(proxy) != proxy ? " (with credentials)" : "");
	wc_RNG_GenerateBlock(&a->rng, a->boot_id, sizeof(a->boot_id));
	a->started_at_ms = otime_wall_ms();
	a->started_mono = otime_mono_ms();
	agent_on_interrupted_task(a);
	*out = a;
	return 0;
fail:
	dev_agent_free(a);
	return rc;
}

void dev_agent_free(struct dev_agent *a)
{
	if (!a)
		return;
	dev_link_free(a->link);
	/* Paho is gone: a program the caller executes next (a `restart` task re-executes the
	 * agent) sees the proxy variables the agent was started with */
	dev_proxy_env_restore(&a->proxy_env);
	dev_uploader_free(a->up);
	wire_batch_builder_free(a->builder);
	dev_collect_close(a->collect);
	dev_tasks_close(a->tasks);
	agent_forget_results(a);
	dev_catalog_close(a->catalog);
	dev_spool_close(a->spool);
	wire_key_free(a->key);
	free(a->cert_pem);
	if (a->rng_ready)
		wc_FreeRng(&a->rng);
	if (a->wake_fd >= 0)
		close(a->wake_fd);
	free(a);
}

/* ---------- sealing and spooling ---------- */

static int seal(struct dev_agent *a, uint32_t kind, uint64_t seq, const uint8_t *body, size_t len,
		uint8_t **env, size_t *env_len)
{
	struct wire_env e = {.kind = kind, .seq = seq, .sent_at_ms = otime_wall_ms(), .body = body,
			     .body_len = len};
	snprintf(e.device_id, sizeof(e.device_id), "%s", a->cfg->id);
	return wire_env_seal(a->key, &e, env, env_len);
}

/* A warning that repeats is logged the first time, then at most once per every_ms (at every
 * occurrence with debug logging); *last is when it was last logged, 0 never. */
static int log_due(int64_t *last, int64_t every_ms)
{
	int64_t now = otime_mono_ms();
	if (*last && now - *last < every_ms && !olog_enabled(OLOG_DEBUG))
		return 0;
	*last = now ? now : 1;
	return 1;
}

/* Spool errors repeat on every sample while a disk is full: logged at most once a minute. */
static int spool_error_due(struct dev_agent *a)
{
	a->spool_errors++;
	return log_due(&a->last_spool_error_log, 60000);
}

/* A bridge that holds a frontier from an earlier life of the device acknowledges it on every
 * batch it refuses: warned of once, then at most every 10 minutes. */
static int future_ack_due(struct dev_agent *a)
{
	a->future_acks++;
	return log_due(&a->last_future_ack_log, 600000);
}

/* Readings the metric catalog refuses (it is full, or a collector makes up bad names) come
 * back at every sample: warned of once, then at most every 10 minutes. */
static int catalog_error_due(struct dev_agent *a, int n)
{
	a->catalog_errors += (uint64_t)n;
	return log_due(&a->last_catalog_error_log, 600000);
}

static void log_spool_error(struct dev_agent *a, const char *what, int rc)
{
	if (spool_error_due(a))
		olog(OLOG_ERROR, "spool: cannot store %s: %s (%s); keeping it in memory and retrying",
		     what, dev_spool_strerror(rc), strerror(errno));
}

/* A segment the spool cannot read (a bad block) comes back at every pass of a reader until it
 * is mended or passed over: logged with its file and errno when one is new, at most once a
 * minute (at every one with debug logging). */
static void log_read_errors(struct dev_agent *a)
{
	struct dev_spool_read_error re;
	dev_spool_read_error(a->spool, &re);
	if (re.count == a->read_errors_logged || !log_due(&a->last_read_error_log, 60000))
		return;
	a->read_errors_logged = re.count;
	if (re.dropped)
		olog(OLOG_WARN, "spool: cannot read %s: %s; the unacknowledged records it cost are "
		     "reported dropped (%" PRIu64 " read errors since the start)",
		     re.path ? re.path : "a segment", strerror(re.err), re.count);
	else
		olog(OLOG_ERROR, "spool: cannot read %s: %s; retrying (%" PRIu64 " read errors "
		     "since the start)", re.path ? re.path : "a segment", strerror(re.err),
		     re.count);
}

/* Seal a durable body (batch or task result, whose prev_seq the caller set) and spool it. */
int agent_spool_durable(struct dev_agent *a, uint32_t kind, uint64_t seq, const uint8_t *body,
			 size_t len)
{
	uint8_t *env = NULL;
	size_t env_len;
	int rc = seal(a, kind, seq, body, len, &env, &env_len);
	if (rc) {
		olog(OLOG_ERROR, "cannot seal %s %" PRIu64 ": %s", wire_kind_name(kind), seq,
		     wire_strerror(rc));
		return rc;
	}
	rc = dev_spool_append(a->spool, seq, dev_spool_last_durable(a->spool), kind, otime_wall_ms(), env,
			      env_len);
	free(env);
	if (rc)
		return rc;
	dev_uploader_fresh(a->up, seq);
	a->birth_next_try = 0; /* the spool numbers and stores again: a waiting Birth can go */
	return 0;
}

int agent_flush_batch(struct dev_agent *a)
{
	struct wire_dropped dropped[WIRE_MAX_DROPPED];
	uint8_t *body = NULL;
	size_t len;
	uint64_t seq;

	if (!wire_batch_count(a->builder))
		return 0;
	int rc = dev_spool_take_seq(a->spool, &seq);
	if (rc) {
		log_spool_error(a, "a batch", rc);
		return rc;
	}
	size_t nd = dev_spool_dropped(a->spool, dropped, WIRE_MAX_DROPPED);
	rc = wire_batch_encode(a->builder, dev_spool_last_durable(a->spool), dropped, nd, &body, &len);
	if (rc) {
		olog(OLOG_ERROR, "cannot encode a batch of %zu readings: %s; discarding it",
		     wire_batch_count(a->builder), wire_strerror(rc));
		wire_batch_builder_reset(a->builder);
		return rc;
	}
	rc = agent_spool_durable(a, WIRE_KIND_BATCH, seq, body, len);
	free(body);
	if (rc) {
		log_spool_error(a, "a batch", rc);
		return rc;
	}
	if (nd)
		dev_spool_dropped_reported(a->spool, seq, dropped, nd);
	olog(OLOG_DEBUG, "batch %" PRIu64 ": %zu readings in %zu rows, %zu bytes", seq,
	     wire_batch_count(a->builder), wire_batch_rows(a->builder), len);
	wire_batch_builder_reset(a->builder);
	a->batches++;
	return 0;
}

struct sample_ctx {
	struct dev_agent *a;
	int catalog_errors;
};

static int sink(void *ctx, const char *name, const char *unit, double value)
{
	struct sample_ctx *s = ctx;
	uint32_t id;
	int rc = dev_catalog_id(s->a->catalog, name, unit, &id);
	if (rc) {
		s->catalog_errors++;
		return rc;
	}
	return wire_batch_add(s->a->builder, id, value);
}

/* Open the row of a new sample. A batch's rows go forward in time by less than 2^32 ms and its
 * grid is bounded: when the clock stepped back (NTP, a device without a real-time clock setting
 * it) or leapt ahead, or the grid is full, the batch so far is sealed and the row starts the
 * next one. Buffered readings are dropped only when that seal fails too (the spool has been
 * failing): the newest data is kept. */
static void start_row(struct dev_agent *a, int64_t now)
{
	if (!wire_batch_row(a->builder, now))
		return;
	size_t rows = wire_batch_rows(a->builder), n = wire_batch_count(a->builder);
	if (n && agent_flush_batch(a) != 0)
		olog(OLOG_WARN, "the spool fails and the batch cannot take another sample; dropping"
		     " %zu buffered readings", n);
	else if (n)
		olog(OLOG_INFO, "batch sealed early after %zu samples: the next one cannot join it"
		     " (clock stepped or batch full)", rows);
	wire_batch_builder_reset(a->builder);
	if (wire_batch_row(a->builder, now))
		olog(OLOG_ERROR, "cannot start a batch row: out of memory");
}

/* A collector that fails fails at every sample (a broken exec command, every 10 s): a failure
 * is warned of when it first shows or changes, then at most every 10 minutes, and the end of
 * a warned failure once; one that comes and goes (every other sample) is the same failure and
 * is not warned of again sooner. collector.NAME.ok and .errors say it at every sample.
 * failed: NULL if none failed. */
static void log_collect(struct dev_agent *a, const char *failed, const char *why)
{
	char now[sizeof(a->collect_failure)];
	if (!failed) {
		if (a->collect_warned)
			olog(OLOG_INFO, "collectors: sampling again (%" PRIu64 " failed samples since"
			     " the start)", a->sample_errors);
		a->collect_warned = 0;
		return;
	}
	snprintf(now, sizeof(now), "%s: %s", failed, why);
	if (strcmp(now, a->collect_failure))
		a->last_collect_log = 0; /* another failure: said at once */
	if (!log_due(&a->last_collect_log, 600000))
		return;
	memcpy(a->collect_failure, now, sizeof(now));
	a->collect_warned = 1;
	olog(OLOG_WARN, "collector %s (%" PRIu64 " failed samples since the start; said again at"
	     " most every 10 minutes)", now, a->sample_errors);
}

void agent_sample(struct dev_agent *a)
{
	struct sample_ctx s = {a, 0};
	const char *failed = NULL, *why = NULL;

	/* A batch must hold a whole row: seal early if this one might not fit. */
	if (wire_batch_rows(a->builder) + 1 >= WIRE_MAX_ROWS ||
	    wire_batch_count(a->builder) + 2 * dev_catalog_count(a->catalog) + 64 > WIRE_MAX_CELLS)
		agent_flush_batch(a);
	start_row(a, otime_wall_ms());
	int failures = dev_collect_sample(a->collect, sink, &s, &failed, &why);
	a->samples++;
	if (failures)
		a->sample_errors++;
	log_collect(a, failures ? failed : NULL, why);
	if (s.catalog_errors && catalog_error_due(a, s.catalog_errors))
		olog(OLOG_WARN,
		     "%d readings had invalid names or exceeded the metric catalog (%" PRIu64
		     " since the start; said at most every 10 minutes)",
		     s.catalog_errors, a->catalog_errors);
	if (dev_catalog_take_changed(a->catalog))
		a->birth_due = 1;
}

/* ---------- messages to the bridge ---------- */

static int publish_env(struct dev_agent *a, enum wire_topic t, uint32_t kind, const uint8_t *body,
		       size_t len, const char *response_topic, const uint8_t *corr, size_t corr_len,
		       uint64_t *seq_out)
{
	uint64_t seq;
	uint8_t *env = NULL;
	size_t env_len;
	int rc = dev_spool_take_seq(a->spool, &seq);
	if (rc)
		return rc;
	rc = seal(a, kind, seq, body, len, &env, &env_len);
	if (rc)
		return rc;
	rc = dev_link_publish(a->link, a->topic[t], env, env_len, 1, 0, response_topic, corr, corr_len);
	free(env);
	if (!rc && seq_out)
		*seq_out = seq;
	return rc;
}

/* The bridge takes nothing from a device before its Birth, and a Birth published before the
 * bridge's subscription exists (a fresh broker, a bridge whose session expired) is dropped by
 * the broker: no ack since the Birth and an ack timeout due, the Birth goes again, before the
 * resend, at growing intervals (ack_timeout, twice that, ... up to 8 times; reset on connect)
 * so that a bridge that is only slow is not flooded with Births. */
static void birth_again(struct dev_agent *a, int64_t now)
{
	struct dev_uploader_stats us;
	if (a->birth_due || now < dev_uploader_deadline(a->up) ||
	    now - a->birth_sent < a->birth_retry_ms)
		return;
	dev_uploader_stats(a->up, &us);
	if (us.acks != a->birth_acks)
		return;
	olog(OLOG_INFO, "no ack since the Birth %lld s ago; sending it again (the bridge may not "
	     "have been subscribed yet)", (long long)((now - a->birth_sent) / 1000));
	a->birth_due = 1;
	if (a->birth_retry_ms < 8 * a->cfg->ack_timeout_ms)
		a->birth_retry_ms *= 2;
}

/* A Birth that could not go (the spool cannot number it: a full disk) is tried again after
 * this long, not on every pass of the loop: each try reads the header of every
 * unacknowledged spool record (dev_spool_stats) and tries to rewrite the spool's state. It
 * goes at once when the spool takes a batch or a task result again (agent_spool_durable). */
#define BIRTH_RETRY_MS 2000

static void send_birth(struct dev_agent *a)
{
	Outpost__Birth b = OUTPOST__BIRTH__INIT;
	Outpost__SpoolStats ss = OUTPOST__SPOOL_STATS__INIT;
	struct dev_spool_stats st;
	struct dev_link_stats ls;
	size_t n = dev_catalog_count(a->catalog);
	Outpost__MetricDef *defs = calloc(n + 1, sizeof(*defs));
	Outpost__MetricDef **ptrs = calloc(n + 1, sizeof(*ptrs));
	uint8_t *body = NULL;
	size_t len;

	a->birth_due = 1; /* until it is published */
	if (!defs || !ptrs)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const char *name, *unit;
		outpost__metric_def__init(&defs[i]);
		dev_catalog_entry(a->catalog, i, &defs[i].id, &name, &unit);
		defs[i].name = (char *)name;
		defs[i].unit = (char *)unit;
		ptrs[i] = &defs[i];
	}
	dev_spool_stats(a->spool, &st);
	dev_link_stats(a->link, &ls);
	ss.records = st.records;
	ss.bytes = st.bytes;
	int64_t age_ms = st.oldest_unsent_ms ? otime_wall_ms() - st.oldest_unsent_ms : 0;
	ss.oldest_unsent_age_s = age_ms > 0 ? (uint64_t)(age_ms / 1000) : 0; /* clock stepped back: 0 */
	ss.disconnects = (uint32_t)ls.disconnects;
	ss.last_disconnect_cause = ls.last_cause;
	ss.dropped_total = st.dropped_total;
	b.agent_version = OUTPOST_VERSION;
	b.boot_id.data = a->boot_id;
	b.boot_id.len = sizeof(a->boot_id);
	b.cert_pem = a->cert_pem;
	b.n_metrics = n;
	b.metrics = ptrs;
	b.spool = &ss;
	b.sample_interval_s = (uint32_t)((a->cfg->sample_interval_ms + 999) / 1000);
	b.poll_interval_s = (uint32_t)((a->cfg->poll_interval_ms + 999) / 1000);
	b.batch_interval_s = (uint32_t)((a->cfg->batch_interval_ms + 999) / 1000);
	b.started_at_ms = a->started_at_ms;
	b.chain_floor = st.chain_floor;
	struct wire_diag d = {{0}};
	int rc = wire_msg_pack(WIRE_KIND_BIRTH, &b.base, &body, &len, &d);
	if (rc) {
		olog(OLOG_ERROR, "cannot build Birth: %s", d.msg);
		goto out;
	}
	rc = publish_env(a, WIRE_TOPIC_BIRTH, WIRE_KIND_BIRTH, body, len, NULL, NULL, 0, NULL);
	if (!rc) {
		struct dev_uploader_stats us;
		dev_uploader_stats(a->up, &us);
		a->birth_due = 0;
		a->birth_acks = us.acks;
		a->birth_sent = otime_mono_ms();
	}
	if (rc && spool_error_due(a))
		olog(OLOG_WARN, "cannot send Birth (error %d); it goes again in %d s", rc,
		     BIRTH_RETRY_MS / 1000);
	olog(OLOG_DEBUG, "birth: %zu metrics, spool %" PRIu64 " records, floor %" PRIu64, n, st.records,
	     st.chain_floor);
out:
	if (a->birth_due)
		a->birth_next_try = otime_mono_ms() + BIRTH_RETRY_MS;
	free(body);
	free(defs);
	free(ptrs);
}

static void send_poll(struct dev_agent *a)
{
	Outpost__TaskPoll p = OUTPOST__TASK_POLL__INIT;
	uint8_t corr[DEV_TASK_CORR_LEN], *body = NULL;
	size_t len;
	uint64_t seq;
	if (a->n_unreported)
		return; /* no new tasks before the spool has taken the results it owes */
	p.last_task_id = dev_tasks_last_id(a->tasks);
	p.max_tasks = 8;
	if (wc_RNG_GenerateBlock(&a->rng, corr, sizeof(corr)) ||
	    wire_msg_pack(WIRE_KIND_TASK_POLL, &p.base, &body, &len, NULL))
		return;
	if (!publish_env(a, WIRE_TOPIC_TASKS_POLL, WIRE_KIND_TASK_POLL, body, len,
			 a->topic[WIRE_TOPIC_TASKS], corr, sizeof(corr), &seq))
		dev_tasks_poll_sent(a->tasks, seq, corr, otime_mono_ms());
	free(body);
}

static int send_spooled(void *ctx, const struct dev_spool_rec *rec, const uint8_t *env, size_t len)
{
	struct dev_agent *a = ctx;
	enum wire_topic t = rec->kind == WIRE_KIND_TASK_RESULT ? WIRE_TOPIC_TASKS_RESULT : WIRE_TOPIC_TELEMETRY;
	return dev_link_publish(a->link, a->topic[t], env, len, 1, 0, NULL, NULL, 0);
}

/* ---------- events ---------- */

#define CERT_CHECK_EVERY_MS (10 * 60 * 1000)
#define CERT_CHECK_MS 5000 /* the whole check: resolve, connect, the proxy, the handshake */

/* A connection failed and nobody said why: ask wolfSSL what it thinks of the broker's
 * certificate (dev_tlscheck.h), through the proxy if there is one. Blocks the agent for at
 * most CERT_CHECK_MS in all (a peer that sends a byte now and then cannot stretch it), once
 * per 10 minutes of such failures. */
static void check_broker_cert(struct dev_agent *a, const struct dev_link_event *ev)
{
	char why[400];
	int64_t now = otime_mono_ms();
	if (!ev->unexplained || now < a->next_cert_check)
		return;
	a->next_cert_check = now + CERT_CHECK_EVERY_MS;
	int port = (int)(strncmp(ev->text, "wss://", 6) ? a->cfg->mqtts_port : a->cfg->wss_port);
	enum dev_tlscheck_result r = dev_tlscheck(a->cfg->broker_host, port, a->cfg->ca,
						  a->proxy[0] ? a->proxy : NULL, CERT_CHECK_MS, why,
						  sizeof(why));
	if (r == DEV_TLSCHECK_BAD_CERT)
		olog(OLOG_ERROR, "%s", why);
	else
		olog(OLOG_INFO, "certificate check: %s%s", why,
		     r == DEV_TLSCHECK_OK ? "; the connection fails for another reason" : "");
}

static void on_event(struct dev_agent *a, struct dev_link_event *ev)
{
	struct dev_link_stats ls;
	switch (ev->type) {
	case DEV_LINK_UP:
		olog(OLOG_INFO, "connected to %s", ev->text);
		a->next_cert_check = 0;
		dev_link_publish(a->link, a->topic[WIRE_TOPIC_STATUS], "online", 6, 1, 1, NULL, NULL, 0);
		a->birth_retry_ms = a->cfg->ack_timeout_ms;
		send_birth(a);
		dev_uploader_link_up(a->up, otime_mono_ms());
		send_poll(a);
		a->next_poll = otime_mono_ms() + a->cfg->poll_interval_ms;
		give_back_memory(); /* what the handshake used */
		break;
	case DEV_LINK_DOWN:
	case DEV_LINK_FAILED:
		dev_uploader_link_down(a->up);
		if (ev->fallback) {
			olog(OLOG_INFO, "cannot connect: %s; trying the next transport", ev->text);
		} else {
			dev_link_stats(a->link, &ls);
			olog(ev->type == DEV_LINK_DOWN ? OLOG_WARN : OLOG_INFO,
			     "%s: %s; reconnecting in %lld ms (at random in 0..%lld)",
			     ev->type == DEV_LINK_DOWN ? "connection lost" : "cannot connect", ev->text,
			     (long long)ls.last_delay_ms, (long long)ls.last_window_ms);
		}
		if (ev->type == DEV_LINK_FAILED)
			check_broker_cert(a, ev);
		break;
	case DEV_LINK_MESSAGE: {
		char id[WIRE_ID_MAX + 1];
		enum wire_topic t;
		if (wire_topic_parse(ev->text, strlen(ev->text), id, &t) || strcmp(id, a->cfg->id)) {
			olog(OLOG_WARN, "message on unexpected topic %s ignored", ev->text);
			break;
		}
		if (t == WIRE_TOPIC_ACK) {
			struct wire_diag d = {{0}};
			int rc = dev_uploader_on_ack(a->up, ev->data, ev->len, otime_mono_ms(), &d);
			if (rc == WIRE_EIO) {
				if (spool_error_due(a))
					olog(OLOG_ERROR, "spool: an ack was applied but not recorded on disk "
					     "(%s); after a restart those envelopes may be sent again",
					     strerror(errno));
			} else if (rc == DEV_UPLOADER_EFUTURE) {
				a->bad_acks++;
				if (future_ack_due(a))
					olog(OLOG_WARN, "spool: %s: ignored, nothing deleted; was "
					     "the device's state directory reset? (%" PRIu64
					     " such acks)", d.msg, a->future_acks);
			} else if (rc) {
				a->bad_acks++;
				olog(OLOG_WARN, "ignored an ack that failed verification: %s%s%s", wire_strerror(rc),
				     d.msg[0] ? ": " : "", d.msg);
			}
		} else if (t == WIRE_TOPIC_TASKS) {
			agent_on_tasks(a, ev);
		}
		break;
	}
	case DEV_LINK_SUBSCRIBED: /* kept inside the link */
		break;
	}
}

int dev_agent_run(struct dev_agent *a)
{
	struct dev_config *c = a->cfg;
	int64_t now = otime_mono_ms();
	a->next_sample = now;
	a->next_flush = now + c->batch_interval_ms;
	a->next_poll = INT64_MAX;
	olog(OLOG_INFO, "started: broker %s (wss %lld, mqtts %lld), spool %s", c->broker_host,
	     (long long)c->wss_port, (long long)c->mqtts_port, c->spool_dir);
	log_read_errors(a); /* found by the open */

	while (!a->stop) {
		struct dev_link_event ev;
		now = otime_mono_ms();
		if (a->reconnect) {
			a->reconnect = 0;
			dev_uploader_link_down(a->up);
			dev_link_drop(a->link, "reconnect requested");
		}
		while (!a->stop && dev_link_next_event(a->link, &ev)) {
			on_event(a, &ev);
			dev_link_event_free(&ev);
		}
		if (a->stop)
			break;
		/* after the events: a failure just handled sets when the next attempt is due */
		now = otime_mono_ms();
		int64_t link_next = dev_link_tick(a->link, now);
		if (now >= a->next_sample) {
			agent_sample(a);
			a->next_sample += c->sample_interval_ms;
			if (a->next_sample <= now) /* we fell behind (suspend, slow disk): skip ahead */
				a->next_sample = now + c->sample_interval_ms;
		}
		if (a->n_unreported && now >= a->next_flush)
			agent_retry_results(a);
		if (dev_tasks_unsaved(a->tasks) && now >= a->next_flush)
			agent_sync_tasks(a);
		if (wire_batch_count(a->builder) &&
		    (now >= a->next_flush || wire_batch_count(a->builder) >= (size_t)c->batch_max_readings)) {
			agent_flush_batch(a);
			a->next_flush = now + c->batch_interval_ms;
		} else if (!wire_batch_count(a->builder) && now >= a->next_flush) {
			a->next_flush = now + c->batch_interval_ms;
		}
		if (dev_link_is_up(a->link)) {
			birth_again(a, now);
			if (a->birth_due && now >= a->birth_next_try)
				send_birth(a);
			if (now >= a->next_poll) {
				send_poll(a);
				a->next_poll = now + c->poll_interval_ms;
			}
			int rc = dev_uploader_pump(a->up, now, send_spooled, a);
			if (rc == DEV_UPLOADER_ESEND)
				olog(OLOG_DEBUG, "upload: the link refused an envelope; it stays spooled");
			else if (rc < 0 && log_due(&a->last_upload_error_log, 60000))
				olog(OLOG_ERROR, "upload: %s (%s); said again at most once a"
				     " minute", dev_spool_strerror(rc), strerror(errno));
			log_read_errors(a);
		}

		int64_t until = a->next_sample;
		if (wire_batch_count(a->builder) && a->next_flush < until)
			until = a->next_flush;
		if (link_next < until)
			until = link_next;
		int64_t d = dev_uploader_deadline(a->up);
		if (d < until)
			until = d;
		if (dev_link_is_up(a->link) && a->next_poll < until)
			until = a->next_poll;
		if (dev_link_is_up(a->link) && a->birth_due && a->birth_next_try < until)
			until = a->birth_next_try;
		now = otime_mono_ms();
		int timeout = until <= now ? 0 : (until - now > 60000 ? 60000 : (int)(until - now));
		struct pollfd p = {a->wake_fd, POLLIN, 0};
		if (poll(&p, 1, timeout) > 0) {
			uint64_t v;
			ssize_t r = read(a->wake_fd, &v, sizeof(v));
			(void)r;
		}
	}

	/* Stopping: whatever was sampled goes to the spool, and we leave as "offline". What the
	 * spool cannot take now (a full disk) is lost with the process: said once, past the rate
	 * limit of spool errors, which may have kept this failure quiet. */
	if (agent_flush_batch(a) && wire_batch_count(a->builder))
		olog(OLOG_ERROR,
		     "stopping: %zu readings sampled since the last stored batch cannot be stored "
		     "(the spool fails) and are discarded",
		     wire_batch_count(a->builder));
	if (dev_link_is_up(a->link))
		dev_link_publish(a->link, a->topic[WIRE_TOPIC_STATUS], "offline", 7, 1, 1, NULL, NULL, 0);
	/* a stop asked for wins over a `restart` task: whoever asked (systemd, docker) waits for
	 * the process to end */
	int restart = a->restart && !a->stop_asked;
	olog(OLOG_INFO, "stopping%s", restart ? " for a restart" : "");
	return restart ? DEV_AGENT_RESTART : 0;
}
