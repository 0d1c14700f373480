/* main.c - outpost-bridge: settings, identity, store, pipeline, MQTT, signals and the periodic
 * jobs (CRL reload, statistics). The only place in bridge/ that writes logs. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "otime.h"
#include "brg_config.h"
#include "brg_ingest.h"
#include "brg_mqtt.h"
#include "brg_registry.h"
#include "brg_verify.h"
#include "olog.h"
#include "store.h"
#include "store_ops.h"
#include "wire_cert.h"
#include "wire_sign.h"

#define PROG "outpost-bridge"

static void log_hook(void *ctx, int level, const char *msg)
{
	(void)ctx;
	olog((enum olog_level)level, "%s", msg);
}

/* The transport feeds the pipeline and the pipeline publishes through the transport. */
struct glue {
	struct brg_ingest *in;
	struct brg_mqtt *mq;
};

static int on_message(void *ctx, struct brg_msg *m)
{
	struct glue *g = ctx;
	return brg_ingest_submit(g->in, m);
}

static int publish(void *ctx, const char *topic, const void *payload, size_t len, const void *corr,
                   size_t corr_len)
{
	struct glue *g = ctx;
	return brg_mqtt_publish(g->mq, topic, payload, len, corr, corr_len);
}

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "Usage: " PROG " [--config FILE] [--option VALUE ...]\n"
	    "Receives device telemetry from the broker, verifies it, stores it exactly once and\n"
	    "acknowledges it after the commit; answers task polls; watches device health.\n"
	    "Signals: SIGTERM/SIGINT stop receiving (the broker keeps the rest), commit what was\n"
	    "received, publish its acks and exit;\n"
	    "SIGHUP reloads the CRL. Exit status: 0 ok, 1 runtime failure, 2 usage/config "
	    "error.\n\n"
	    "Options (config file " BRG_DEFAULT_CONFIG ", or --config FILE):\n");
	cfg_print_help(out, brg_config_opts, brg_config_nopts, BRG_ENV_PREFIX);
}

/* A CRL within 30 days of its next update: after it wolfSSL checks no certificate (every
 * Birth is refused) and the bridge will not start. Said at start, then at most once a day. */
static void warn_crl_expiry(const struct brg_config *c, const struct wire_ca *ca)
{
	static int64_t warned_ms;
	int64_t next = wire_ca_crl_next_update(ca), now_ms = otime_mono_ms();
	int64_t left = next - otime_wall_ms() / 1000;
	if (!next || left > 30 * 86400 || (warned_ms && now_ms - warned_ms < 86400 * 1000LL))
		return;
	warned_ms = now_ms;
	char when[OTIME_UTC_LEN], in[32];
	if (left >= 86400)
		snprintf(in, sizeof(in), "in %lld days", (long long)(left / 86400));
	else
		snprintf(in, sizeof(in), "in less than a day");
	olog(OLOG_WARN,
	     "%s: the CRL expires at %s (%s); after it every Birth is refused and the bridge will "
	     "not start: renew it (scripts/provision-certs.sh --out DIR)",
	     c->crl_file, otime_utc(next, when), in);
}

static int load_ca(const struct brg_config *c, struct wire_ca **out)
{
	struct wire_diag d = {""};
	const char *crl = strcmp(c->crl_file, "none") ? c->crl_file : NULL;
	int rc = wire_ca_load(c->ca_file, crl, out, &d);
	if (rc)
		olog(OLOG_ERROR, "%s", d.msg[0] ? d.msg : wire_strerror(rc));
	else
		warn_crl_expiry(c, *out);
	return rc;
}

static void log_stats(struct brg_ingest *in, struct brg_registry *reg, struct brg_stats *last,
                      int64_t period_ms)
{
	struct brg_stats s;
	brg_ingest_stats(in, &s);
	double secs = period_ms > 0 ? (double)period_ms / 1000.0 : 1.0;
	olog(OLOG_INFO,
	     "stats: %.0f msg/s, %.0f envelopes/s, %.0f readings/s; totals: received %llu, "
	     "stored %llu, readings %llu, duplicates %llu, rejected %llu, unjudged %llu, dropped at "
	     "stop %llu, commits %llu (%llu failed), acks %llu, task lists %llu; queued %zu, %zu "
	     "KiB in flight, %zu devices cached",
	     (double)(s.received - last->received) / secs,
	     (double)(s.envelopes - last->envelopes) / secs,
	     (double)(s.readings - last->readings) / secs, (unsigned long long)s.received,
	     (unsigned long long)s.envelopes, (unsigned long long)s.readings,
	     (unsigned long long)s.duplicates, (unsigned long long)s.rejected,
	     (unsigned long long)s.unjudged, (unsigned long long)s.dropped_at_stop,
	     (unsigned long long)s.commits, (unsigned long long)s.commit_failures,
	     (unsigned long long)s.acks, (unsigned long long)s.task_lists, s.queued,
	     s.memory / 1024, brg_registry_size(reg));
	if (s.unjudged > last->unjudged)
		olog(OLOG_WARN, "%llu message(s) dropped unjudged since the last stats line: the store "
		     "could not be read to identify their devices (they are sent again, unacknowledged)",
		     (unsigned long long)(s.unjudged - last->unjudged));
	*last = s;
}

int main(int argc, char **argv)
{
	struct brg_config c;
	char err[CFG_ERR_MAX] = "";
	char serr[STORE_ERR_MAX] = "";
	struct wire_key *key = NULL;
	struct wire_ca *ca = NULL;
	struct store *writer = NULL, *reader = NULL;
	struct brg_registry *reg = NULL;
	struct brg_verifier *ver = NULL;
	struct brg_ingest *in = NULL;
	struct brg_mqtt *mq = NULL;
	struct glue glue = {NULL, NULL};
	int status = 1, rc;

	rc = brg_config_parse(&c, argc, argv, err);
	if (rc == 1) {
		usage(stdout);
		brg_config_free(&c);
		return 0;
	}
	if (rc == 2) {
		printf(PROG " %s\n", OUTPOST_VERSION);
		brg_config_free(&c);
		return 0;
	}
	olog_init(PROG, NULL, OLOG_INFO);
	if (rc) {
		olog(OLOG_ERROR, "%s", err);
		brg_config_free(&c);
		return 2;
	}
	olog_set_level((enum olog_level)c.log_level);

	/* Signals go to this thread only (sigtimedwait below), never to the workers. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* a file size limit is a full disk, not a crash - the device's main.c does the same */
	signal(SIGXFSZ, SIG_IGN);

	struct wire_diag d = {""};
	if ((rc = wire_key_load(c.key_file, &key, &d))) {
		if (d.msg[0]) /* it names the file */
			olog(OLOG_ERROR, "key_file: %s", d.msg);
		else
			olog(OLOG_ERROR, "key_file: %s: %s", c.key_file, wire_strerror(rc));
		status = 2;
		goto out;
	}
	if (load_ca(&c, &ca)) {
		status = 2;
		goto out;
	}

	struct store_opts so = STORE_OPTS_INIT;
	so.sync = c.sqlite_sync;
	so.busy_timeout_ms = (int)c.busy_timeout_ms;
	so.app_name = PROG;
	if ((rc = store_open(c.store, &so, &writer, serr))) {
		olog(OLOG_ERROR, "store: %s", serr);
		status = rc == STORE_EURL || rc == STORE_ENOTSUP ? 2 : 1;
		goto out;
	}
	/* An ack tells the device to delete the data: below "full", a power cut can lose what
	 * SQLite's WAL had not synced yet, after its ack went out (PostgreSQL forces
	 * synchronous_commit=on for the same reason). Allowed, for benchmarks and tests. */
	if (c.sqlite_sync != STORE_SYNC_FULL && !strncmp(store_url(writer), "sqlite:", 7))
		olog(OLOG_WARN,
		     "sqlite_sync=%s: a power cut can lose messages already acknowledged to "
		     "their devices (which then delete them); use full in production",
		     c.sqlite_sync == STORE_SYNC_OFF ? "off" : "normal");
	int from = 0, to = 0;
	if ((rc = store_migrate(writer, &from, &to)) == STORE_ESCHEMA) {
		/* "store schema 6 is newer than this program's 5": a newer bridge migrated it */
		olog(OLOG_ERROR,
		     "store %s: %s: upgrade " PROG " (every bridge on this store: a newer one has"
		     " migrated it)",
		     store_url(writer), store_errmsg(writer));
		goto out;
	}
	if (rc) {
		olog(OLOG_ERROR, "store %s: schema migration failed: %s%s%s", store_url(writer),
		     store_strerror(rc), store_errmsg(writer)[0] ? ": " : "", store_errmsg(writer));
		goto out;
	}
	if (from != to)
		olog(OLOG_INFO, "store %s: schema migrated from version %d to %d",
		     store_url(writer), from, to);
	if ((rc = store_open(c.store, &so, &reader, serr))) {
		olog(OLOG_ERROR, "store: %s", serr);
		goto out;
	}
	if ((rc = brg_registry_new(reader, (size_t)c.registry_max, &reg))) {
		store_close(reader);
		olog(OLOG_ERROR, "%s", brg_strerror(rc));
		goto out;
	}
	if ((rc = brg_verifier_new(reg, ca, &ver))) {
		olog(OLOG_ERROR, "%s", brg_strerror(rc));
		goto out;
	}
	const struct wire_ca *in_use = ca; /* owned by the verifier; valid until the next swap */
	ca = NULL;

	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int workers = c.workers ? (int)c.workers : (int)(cpus > 0 ? cpus : 1);
	struct brg_ingest_opts io = {
	    .workers = workers,
	    .queue_depth = (size_t)c.queue_depth,
	    .writer_queue = (size_t)c.writer_queue,
	    .max_memory = (size_t)c.max_memory,
	    .group_max = (size_t)c.group_max,
	    .group_max_readings = (size_t)c.group_max_readings,
	    .retry_min_ms = c.retry_min_ms,
	    .retry_max_ms = c.retry_max_ms,
	    .shutdown_timeout_ms = c.shutdown_timeout_ms,
	    .health_interval_ms = c.health_interval_ms,
	    .commit = {(int)c.quarantine_after, (int)c.offline_factor, c.offline_min_ms,
	               c.default_interval_ms, c.deactivate_after_ms, c.event_retention_ms,
	               c.gap_grace_ms, BRG_ENV_BULK_MIN, c.max_device_metrics},
	    .bridge_key = key,
	    .publish = publish,
	    .publish_ctx = &glue,
	    .log = log_hook,
	};
	struct brg_mqtt_opts mo = {
	    .host = c.broker_host,
	    .port = (int)c.broker_port,
	    .client_id = c.client_id,
	    .share_group = c.share_group,
	    .former_share_group = c.former_share_group,
	    .keepalive_s = (int)(c.keepalive_ms / 1000),
	    .session_expiry_s = (uint32_t)(c.session_expiry_ms / 1000),
	    .ca_file = c.ca_file,
	    .cert_file = c.cert_file,
	    .key_file = c.key_file,
	    .on_message = on_message,
	    .ctx = &glue,
	    .log = log_hook,
	};
	char merr[256] = "";
	if ((rc = brg_mqtt_new(&mo, &mq, merr))) {
		olog(OLOG_ERROR, "%s", merr);
		status = rc == BRG_EIO ? 2 : 1;
		goto out;
	}
	if ((rc = brg_ingest_new(writer, reg, ver, &io, &in))) {
		olog(OLOG_ERROR, "pipeline: %s: %s", brg_strerror(rc), store_errmsg(writer));
		goto out;
	}
	glue.in = in;
	glue.mq = mq;
	if ((rc = brg_ingest_start(in)) || (rc = brg_mqtt_start(mq))) {
		olog(OLOG_ERROR, "cannot start: %s", brg_strerror(rc));
		goto out;
	}
	olog(OLOG_INFO, "started: store %s, broker %s:%lld, client id %s, %d verifier thread(s)",
	     store_url(writer), c.broker_host, (long long)c.broker_port, c.client_id, workers);

	int64_t next_crl = otime_mono_ms() + c.crl_reload_ms;
	int64_t next_stats = c.stats_interval_ms ? otime_mono_ms() + c.stats_interval_ms : INT64_MAX;
	int64_t last_stats = otime_mono_ms();
	struct brg_stats last = {0};
	for (;;) {
		struct timespec tick = {0, 250 * 1000000L};
		int sig = sigtimedwait(&sigs, NULL, &tick);
		int64_t now = otime_mono_ms();
		if (sig == SIGTERM || sig == SIGINT) {
			olog(OLOG_INFO,
			     "%s: finishing what was received (no more is taken from the broker)",
			     strsignal(sig));
			break;
		}
		if (sig == SIGHUP || now >= next_crl) {
			struct wire_ca *nca = NULL;
			if (!load_ca(&c, &nca)) {
				/* Re-checking every enrolled certificate holds the writer: only when
				 * the files changed (or the operator asks, with SIGHUP). */
				if (sig != SIGHUP && wire_ca_same_files(nca, in_use)) {
					wire_ca_free(nca);
				} else {
					brg_verifier_set_ca(ver, nca);
					in_use = nca;
					brg_ingest_recheck_certs(in);
				}
				if (sig == SIGHUP)
					olog(OLOG_INFO, "SIGHUP: CA and CRL reloaded");
			}
			next_crl = now + c.crl_reload_ms;
		}
		if (now >= next_stats) {
			log_stats(in, reg, &last, now - last_stats);
			last_stats = now;
			next_stats = now + c.stats_interval_ms;
		}
	}
	/* Receiving stops before the intake closes: libmosquitto acknowledges to the broker what
	 * it reads, so whatever it still reads is taken into the pipeline, and what it does not
	 * read stays queued at the broker for the next run. */
	brg_ingest_begin_stop(in);
	brg_mqtt_stop_receiving(mq);
	rc = brg_ingest_stop(in);
	if (brg_mqtt_flush(mq, 5000))
		olog(OLOG_WARN,
		     "some acks were not confirmed by the broker before exit; devices resend "
		     "and get them again");
	if (brg_mqtt_stop(mq))
		olog(OLOG_WARN,
		     "the broker connection was still being made after %d s; exiting "
		     "without it",
		     BRG_MQTT_STOP_S);
	log_stats(in, reg, &last, otime_mono_ms() - last_stats);
	status = rc ? 1 : 0;
	olog(OLOG_INFO, "stopped%s", rc ? " (some messages were not committed)" : "");
out:
	brg_ingest_free(in);
	brg_mqtt_free(mq);
	brg_verifier_free(ver);
	brg_registry_free(reg);
	store_close(writer);
	wire_ca_free(ca);
	wire_key_free(key);
	brg_config_free(&c);
	wire_thread_cleanup();
	return status;
}
