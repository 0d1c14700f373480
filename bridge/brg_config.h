/* brg_config.h - outpost-bridge settings: one table (common/cfg.h) for defaults, config file
 * (/etc/outpost/bridge.conf), OUTPOST_BRIDGE_* environment and --options. */
#ifndef BRG_CONFIG_H
#define BRG_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

struct brg_config {
	/* broker */
	char *broker_host;
	int64_t broker_port;
	char *client_id; /* "" = outpost-bridge-<hostname> */
	char *share_group;
	char *former_share_group; /* its subscriptions are taken out of a resumed session */
	int64_t keepalive_ms;
	int64_t session_expiry_ms;
	/* identity */
	char *pki_dir;
	char *ca_file, *crl_file, *cert_file, *key_file; /* "" = in pki_dir */
	int64_t crl_reload_ms;
	/* store */
	char *store;
	int sqlite_sync; /* enum store_sync */
	int64_t busy_timeout_ms;
	/* pipeline */
	int64_t workers; /* 0 = number of CPUs */
	int64_t queue_depth;
	int64_t writer_queue;
	int64_t max_memory;
	int64_t group_max;
	int64_t group_max_readings;
	int64_t retry_min_ms, retry_max_ms;
	int64_t shutdown_timeout_ms;
	/* verification and health */
	int64_t quarantine_after;
	int64_t offline_factor;
	int64_t offline_min_ms;
	int64_t default_interval_ms;
	int64_t deactivate_after_ms;
	int64_t health_interval_ms;
	int64_t event_retention_ms;
	int64_t gap_grace_ms;
	int64_t max_device_metrics;
	int64_t registry_max;
	/* operations */
	int log_level; /* enum olog_level */
	int64_t stats_interval_ms;
};

extern const struct cfg_opt brg_config_opts[];
extern const size_t brg_config_nopts;

#define BRG_ENV_PREFIX     "OUTPOST_BRIDGE_"
#define BRG_DEFAULT_CONFIG "/etc/outpost/bridge.conf"

/* cfg_parse with the bridge's table, then derived defaults (file paths in pki_dir, client id)
 * and cross-checks. Returns like cfg_parse (0, 1 = --help, 2 = --version, -1 = error in err).
 * On success *c owns strings: brg_config_free(). */
int brg_config_parse(struct brg_config *c, int argc, char **argv, char *err);

/* The client id of a bridge on host when client_id is not set: outpost-bridge-<host>, with
 * characters other than [A-Za-z0-9_-] made '-'; a host name longer than 40 characters is cut
 * to 31 and followed by the CRC-32 of the whole name in hex. */
#define BRG_CLIENT_ID_MAX 64
void brg_config_default_client_id(const char *host, char out[BRG_CLIENT_ID_MAX]);
void brg_config_free(struct brg_config *c);

#endif
