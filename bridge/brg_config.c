/* brg_config.c - the settings table of outpost-bridge. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "brg_config.h"
#include "crc32.h"
#include "wire_topic.h"

#define O(f)  offsetof(struct brg_config, f)
#define MS(x) ((int64_t)(x))
#define SEC   1000LL
#define DAY   (86400LL * SEC)

static const char *const sync_choices[] = {"off", "normal", "full", NULL};
static const char *const level_choices[] = {"error", "warn", "info", "debug", NULL};

const struct cfg_opt brg_config_opts[] = {
    {"broker_host", CFG_STR, O(broker_host), 1, 255, "127.0.0.1",
     "broker address (its internal listener)", NULL},
    {"broker_port", CFG_INT, O(broker_port), 1, 65535, "8884", "internal MQTT+TLS listener port",
     NULL},
    {"client_id", CFG_STR, O(client_id), 0, 64, "",
     "stable MQTT client id, unique per bridge (empty: outpost-bridge-<hostname>)", NULL},
    {"share_group", CFG_STR, O(share_group), 0, 64, "outpost-bridge",
     "shared subscription group of the bridges splitting the load (empty: plain subscriptions,"
     " one bridge)",
     NULL},
    {"former_share_group", CFG_STR, O(former_share_group), 0, 64, "outpost-bridge",
     "a share group an earlier run with this client id used: its subscriptions are taken out of"
     " the broker session (after renaming share_group; empty: none)",
     NULL},
    {"keepalive", CFG_DURATION, O(keepalive_ms), 5 * SEC, 600 * SEC, "60s", "MQTT keepalive", NULL},
    {"session_expiry", CFG_DURATION, O(session_expiry_ms), 60 * SEC, 3650 * DAY, "7d",
     "how long the broker keeps queueing for this bridge while it is away", NULL},
    {"pki_dir", CFG_STR, O(pki_dir), 1, 1024, "/etc/outpost/pki",
     "directory of scripts/provision-certs.sh (ca.crt, crl.pem, bridge.crt, bridge.key)", NULL},
    {"ca_file", CFG_STR, O(ca_file), 0, 1024, "", "CA certificate [pki_dir/ca.crt]", NULL},
    {"crl_file", CFG_STR, O(crl_file), 0, 1024, "",
     "certificate revocation list [pki_dir/crl.pem]; 'none' disables", NULL},
    {"cert_file", CFG_STR, O(cert_file), 0, 1024, "", "bridge certificate [pki_dir/bridge.crt]",
     NULL},
    {"key_file", CFG_STR, O(key_file), 0, 1024, "",
     "bridge key: TLS and signing acks/tasks [pki_dir/bridge.key]", NULL},
    {"crl_reload", CFG_DURATION, O(crl_reload_ms), 1 * SEC, 7 * DAY, "5m",
     "re-read the CRL this often (also on SIGHUP)", NULL},
    {"store", CFG_STR, O(store), 1, 4096, "sqlite:/var/lib/outpost/outpost.db",
     "store URL: sqlite:PATH or postgresql://...", NULL},
    {"sqlite_sync", CFG_ENUM, O(sqlite_sync), 0, 0, "full",
     "SQLite synchronous mode; full survives power cuts", sync_choices},
    {"busy_timeout", CFG_DURATION, O(busy_timeout_ms), 0, 60 * SEC, "2s",
     "SQLite: wait this long for a lock before retrying the transaction", NULL},
    {"workers", CFG_INT, O(workers), 0, 256, "0", "verification threads (0: one per CPU)", NULL},
    {"queue_depth", CFG_INT, O(queue_depth), 1, 1000000, "1024",
     "messages queued per verification thread", NULL},
    {"writer_queue", CFG_INT, O(writer_queue), 1, 1000000, "4096",
     "verified messages queued for the writer", NULL},
    {"max_memory", CFG_SIZE, O(max_memory), 1 << 20, 64LL << 30, "256MiB",
     "memory for messages in the pipeline (raw and decoded); beyond, intake waits and the broker "
     "queues",
     NULL},
    {"group_max", CFG_INT, O(group_max), 1, 100000, "1024",
     "most messages committed in one transaction", NULL},
    {"group_max_readings", CFG_INT, O(group_max_readings), 1, 10000000, "100000",
     "most readings committed in one transaction", NULL},
    {"retry_min", CFG_DURATION, O(retry_min_ms), 10, 60 * SEC, "100ms",
     "first wait after a failed commit (doubles each time)", NULL},
    {"retry_max", CFG_DURATION, O(retry_max_ms), 10, 600 * SEC, "10s",
     "longest wait between commit attempts", NULL},
    {"shutdown_timeout", CFG_DURATION, O(shutdown_timeout_ms), 1 * SEC, 600 * SEC, "15s",
     "on SIGTERM, how long to try committing and acknowledging what is in flight", NULL},
    {"quarantine_after", CFG_INT, O(quarantine_after), 0, 1000000, "5",
     "consecutive rejected messages that quarantine a device (0: never)", NULL},
    {"offline_factor", CFG_INT, O(offline_factor), 1, 1000, "3",
     "a device silent for this many of its intervals is offline", NULL},
    {"offline_min", CFG_DURATION, O(offline_min_ms), 1 * SEC, 7 * DAY, "30s",
     "... but never after less than this", NULL},
    {"default_interval", CFG_DURATION, O(default_interval_ms), 1 * SEC, 7 * DAY, "60s",
     "interval of a device that did not report one", NULL},
    {"deactivate_after", CFG_DURATION, O(deactivate_after_ms), 0, 3650 * DAY, "90d",
     "a device silent this long is deactivated (0: never)", NULL},
    {"health_interval", CFG_DURATION, O(health_interval_ms), 100, 3600 * SEC, "10s",
     "how often offline devices, deactivations and task expiry are checked", NULL},
    {"event_retention", CFG_DURATION, O(event_retention_ms), 0, 36500 * DAY, "0",
     "delete events older than this (0: keep)", NULL},
    {"gap_grace", CFG_DURATION, O(gap_grace_ms), 0, 30 * DAY, "60s",
     "a hole in a device's chain older than this is recorded as a missing gap", NULL},
    {"max_device_metrics", CFG_INT, O(max_device_metrics), 16, 100000000, "16384",
     "metric names kept per device; the readings of a newer name go under #<id>", NULL},
    {"registry_max", CFG_INT, O(registry_max), 16, 100000000, "1000000",
     "devices kept in the verification cache", NULL},
    {"log_level", CFG_ENUM, O(log_level), 0, 0, "info", "log verbosity", level_choices},
    {"stats_interval", CFG_DURATION, O(stats_interval_ms), 0, 86400 * SEC, "60s",
     "log throughput counters this often (0: never)", NULL},
};
const size_t brg_config_nopts = sizeof(brg_config_opts) / sizeof(brg_config_opts[0]);

static int set_path(char **field, const char *dir, const char *name)
{
	if (*field && **field)
		return 0;
	free(*field);
	*field = NULL;
	if (asprintf(field, "%s/%s", dir, name) < 0) {
		*field = NULL;
		return -1;
	}
	return 0;
}

void brg_config_default_client_id(const char *host, char out[BRG_CLIENT_ID_MAX])
{
	/* A long name is cut, and then told apart from names cut the same by a hash of the whole
	 * (pod names keep their unique part last). */
	if (strlen(host) <= 40)
		snprintf(out, BRG_CLIENT_ID_MAX, "outpost-bridge-%s", host);
	else
		snprintf(out, BRG_CLIENT_ID_MAX, "outpost-bridge-%.31s-%08x", host,
		         (unsigned)crc32_update(0, host, strlen(host)));
	for (char *p = out; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			*p = '-';
}

int brg_config_parse(struct brg_config *c, int argc, char **argv, char *err)
{
	memset(c, 0, sizeof(*c));
	int rc = cfg_parse(brg_config_opts, brg_config_nopts, c, argc, argv, BRG_ENV_PREFIX,
	                   BRG_DEFAULT_CONFIG, err);
	if (rc)
		return rc;
	/* the checks of the settings together name the file read, as the device's do */
	const char *file = cfg_config_file(argc, argv, BRG_ENV_PREFIX, BRG_DEFAULT_CONFIG);
	char src[CFG_ERR_MAX / 2];
	cfg_short_path(file ? file : "configuration", src, sizeof(src));
	if (set_path(&c->ca_file, c->pki_dir, "ca.crt") ||
	    set_path(&c->crl_file, c->pki_dir, "crl.pem") ||
	    set_path(&c->cert_file, c->pki_dir, "bridge.crt") ||
	    set_path(&c->key_file, c->pki_dir, "bridge.key")) {
		snprintf(err, CFG_ERR_MAX, "out of memory");
		return -1;
	}
	if (!c->client_id[0]) {
		char host[256] = "localhost", id[BRG_CLIENT_ID_MAX];
		gethostname(host, sizeof(host) - 1);
		host[sizeof(host) - 1] = '\0';
		brg_config_default_client_id(host, id);
		free(c->client_id);
		c->client_id = strdup(id);
		if (!c->client_id) {
			snprintf(err, CFG_ERR_MAX, "out of memory");
			return -1;
		}
	}
	if (wire_id_check(c->client_id)) {
		snprintf(err, CFG_ERR_MAX, "%s: client_id: '%s' is not [A-Za-z0-9_-]{1,64}", src,
		         c->client_id);
		return -1;
	}
	const char *groups[][2] = {{"share_group", c->share_group},
	                           {"former_share_group", c->former_share_group}};
	for (size_t i = 0; i < 2; i++) {
		if (strpbrk(groups[i][1], "/+#$")) {
			snprintf(err, CFG_ERR_MAX, "%s: %s: must not contain / + # $", src,
			         groups[i][0]);
			return -1;
		}
	}
	if (c->retry_max_ms < c->retry_min_ms) {
		snprintf(err, CFG_ERR_MAX, "%s: retry_max: must not be below retry_min", src);
		return -1;
	}
	return 0;
}

void brg_config_free(struct brg_config *c)
{
	cfg_free(brg_config_opts, brg_config_nopts, c);
}
