/* dev_config.h - outpost-device settings: one table (dev_config.c) drives the config file,
 * OUTPOST_DEVICE_* environment variables, command-line options and --help. */
#ifndef DEV_CONFIG_H
#define DEV_CONFIG_H

#include <stdint.h>
#include <stdio.h>

enum dev_transport { DEV_TRANSPORT_AUTO, DEV_TRANSPORT_WSS, DEV_TRANSPORT_MQTTS };

struct dev_config {
	char *id;
	char *ca;
	char *cert;
	char *key;
	char *bridge_cert;
	char *broker_host;
	int64_t wss_port;
	int64_t mqtts_port;
	char *ws_path;
	int transport;
	char *proxy;
	int64_t keepalive_ms;
	int64_t connect_timeout_ms;
	int64_t backoff_min_ms;
	int64_t backoff_max_ms;
	int64_t reconnect_spread_ms;
	int64_t sample_interval_ms;
	int64_t batch_interval_ms;
	int64_t batch_max_readings;
	int64_t poll_interval_ms;
	int64_t ack_timeout_ms;
	int64_t window;
	char *state_dir;
	char *spool_dir;
	int64_t spool_max_bytes;
	int64_t spool_max_age_ms;
	int64_t spool_segment_bytes;
	char *collectors;
	char *exec_command;
	int64_t exec_timeout_ms;
	int64_t sim_metrics;
	int log_level;
	char *source; /* the settings file read ("configuration" if none), for error messages */
};

#define DEV_ENV_PREFIX "OUTPOST_DEVICE_"
#define DEV_DEFAULT_CONFIG "/etc/outpost/device.conf"

/* Parse defaults, file, environment and options. Returns 0, 1 for --help, 2 for --version,
 * -1 on error with a one-line message in err (CFG_ERR_MAX bytes). */
int dev_config_parse(struct dev_config *c, int argc, char **argv, char *err);

/* dev_config_parse with another file in place of DEV_DEFAULT_CONFIG (tests). */
int dev_config__parse(struct dev_config *c, int argc, char **argv, const char *default_config,
                      char *err);

/* Receives one warning: a line of the override file that was ignored, and why. */
typedef void (*dev_config_warn_fn)(void *arg, const char *msg);

/* Apply the persisted set_config overrides from <state_dir>/config.override, if any, to c,
 * which passes dev_config_check; so does c afterwards. The file never stops the agent: a line
 * that is not a remotely settable key (wire_task.h) with a valid value is ignored; if the
 * overrides together make settings dev_config_check refuses (the main configuration changed
 * since the set_config), they are applied one by one in file order and each with which the
 * settings would be refused is ignored. warn (may be NULL) gets one message for each ignored
 * line, naming the file and line. A file that exists but cannot be read (a directory in its
 * place, EIO, EACCES) is ignored whole, with one warning naming it and errno. Nothing is
 * rewritten: an ignored line or file is judged again at the next start. 0, or -1 with err when
 * out of memory. */
int dev_config_load_overrides(struct dev_config *c, dev_config_warn_fn warn, void *arg,
			      char *err);

/* set_config: apply n key=value pairs all or nothing. Each key must be remotely settable, each
 * value valid, and the pairs together must pass dev_config_check; then they are persisted in
 * one atomic rewrite of <state_dir>/config.override (so they survive restarts) and applied to
 * c: 0. Otherwise -1, nothing changes and err gets the reason. 1 when the file was rewritten
 * but its directory could not be synced: applied all the same (the next start reads the new
 * file), and err says that a power cut may undo the change. */
int dev_config_set_overrides(struct dev_config *c, size_t n, const char *const *keys,
			     const char *const *values, char *err);

/* Cross-field checks that need no file access (intervals, sizes). */
int dev_config_check(const struct dev_config *c, char *err);

void dev_config_help(FILE *out);
void dev_config_free(struct dev_config *c);

#endif
