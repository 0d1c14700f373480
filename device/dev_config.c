/* dev_config.c - the settings table of outpost-device, and persisted remote overrides. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "dev_config.h"
#include "ofile.h"
#include "olog.h"
#include "wire_task.h"

#define S(f) offsetof(struct dev_config, f)
#define SEC 1000LL
#define DAY (86400LL * SEC)

static const char *const transports[] = {"auto", "wss", "mqtts", NULL};
static const char *const levels[] = {"error", "warn", "info", "debug", NULL};

static const struct cfg_opt opts[] = {
	{"id", CFG_STR, S(id), 1, 64, NULL, "device id, equal to the certificate CN", NULL},
	{"ca", CFG_STR, S(ca), 0, 0, "/etc/outpost/ca.crt", "CA certificate (broker and bridge trust anchor)", NULL},
	{"cert", CFG_STR, S(cert), 0, 0, "/etc/outpost/device.crt", "this device's certificate", NULL},
	{"key", CFG_STR, S(key), 0, 0, "/etc/outpost/device.key", "this device's Ed25519 private key", NULL},
	{"bridge_cert", CFG_STR, S(bridge_cert), 0, 0, "/etc/outpost/bridge.crt", "bridge certificate: acks and tasks must be signed by its key", NULL},
	{"broker_host", CFG_STR, S(broker_host), 1, 253, NULL, "broker host name or IP address, no port (checked against its certificate)", NULL},
	{"wss_port", CFG_INT, S(wss_port), 0, 65535, "443", "WebSockets+TLS port (0: skip)", NULL},
	{"mqtts_port", CFG_INT, S(mqtts_port), 0, 65535, "8883", "MQTT+TLS fallback port (0: skip)", NULL},
	{"ws_path", CFG_STR, S(ws_path), 0, 128, "/mqtt", "WebSocket path", NULL},
	{"transport", CFG_ENUM, S(transport), 0, 0, "auto", "auto = WSS first, then MQTTS", transports},
	{"proxy", CFG_STR, S(proxy), 0, 256, "", "HTTP CONNECT proxy host:port; empty = https_proxy; none = never", NULL},
	{"keepalive", CFG_DURATION, S(keepalive_ms), 5 * SEC, 3600 * SEC, "60s", "MQTT keepalive", NULL},
	{"connect_timeout", CFG_DURATION, S(connect_timeout_ms), 1 * SEC, 300 * SEC, "30s", "per connection attempt (TCP, proxy, TLS, MQTT CONNECT)", NULL},
	{"backoff_min", CFG_DURATION, S(backoff_min_ms), 100, 3600 * SEC, "1s", "first reconnect delay cap (full jitter)", NULL},
	{"backoff_max", CFG_DURATION, S(backoff_max_ms), 1 * SEC, 86400 * SEC, "5m", "largest reconnect delay cap", NULL},
	{"reconnect_spread", CFG_DURATION, S(reconnect_spread_ms), 0, 86400 * SEC, "30s", "after a lost connection: first reconnect delay cap (a fleet spreads out after a broker restart)", NULL},
	{"sample_interval", CFG_DURATION, S(sample_interval_ms), 100, DAY, "10s", "how often collectors are sampled", NULL},
	{"batch_interval", CFG_DURATION, S(batch_interval_ms), 100, DAY, "60s", "how often samples are sealed into a batch", NULL},
	{"batch_max_readings", CFG_INT, S(batch_max_readings), 1, 16000, "5000", "seal a batch early at this many readings (16000 keeps even incompressible values under the 256 KiB envelope limit)", NULL},
	{"poll_interval", CFG_DURATION, S(poll_interval_ms), 1 * SEC, DAY, "300s", "how often to ask for tasks", NULL},
	{"ack_timeout", CFG_DURATION, S(ack_timeout_ms), 1 * SEC, 3600 * SEC, "30s", "first resend of unacknowledged data (then backs off)", NULL},
	{"window", CFG_INT, S(window), 1, 1024, "32", "envelopes in flight before waiting for acks", NULL},
	{"state_dir", CFG_STR, S(state_dir), 1, 0, "/var/lib/outpost-device", "catalog, task state, overrides", NULL},
	{"spool_dir", CFG_STR, S(spool_dir), 0, 0, "", "encrypted spool (default: <state_dir>/spool)", NULL},
	{"spool_max_bytes", CFG_SIZE, S(spool_max_bytes), 64 << 10, 1LL << 40, "64MiB", "spool size limit (oldest dropped beyond)", NULL},
	{"spool_max_age", CFG_DURATION, S(spool_max_age_ms), 60 * SEC, 3650 * DAY, "90d", "spool age limit", NULL},
	{"spool_segment_bytes", CFG_SIZE, S(spool_segment_bytes), 4 << 10, 64 << 20, "1MiB", "spool segment size", NULL},
	{"collectors", CFG_STR, S(collectors), 0, 64, "proc", "comma-separated: proc, exec, sim", NULL},
	{"exec_command", CFG_STR, S(exec_command), 0, 1024, "", "command for the exec collector (prints 'name value [unit]' lines)", NULL},
	{"exec_timeout", CFG_DURATION, S(exec_timeout_ms), 100, 600 * SEC, "5s", "exec collector time limit", NULL},
	{"sim_metrics", CFG_INT, S(sim_metrics), 1, 4000, "100", "synthetic sensors of the sim collector", NULL},
	{"log_level", CFG_ENUM, S(log_level), 0, 0, "info", "what the log shows, from the least", levels},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

int dev_config_parse(struct dev_config *c, int argc, char **argv, char *err)
{
	return dev_config__parse(c, argc, argv, DEV_DEFAULT_CONFIG, err);
}

int dev_config__parse(struct dev_config *c, int argc, char **argv, const char *default_config,
                      char *err)
{
	memset(c, 0, sizeof(*c));
	int rc = cfg_parse(opts, NOPTS, c, argc, argv, DEV_ENV_PREFIX, default_config, err);
	if (rc)
		return rc;
	/* the file read, default_config too: the checks of the settings together name it */
	const char *file = cfg_config_file(argc, argv, DEV_ENV_PREFIX, default_config);
	char shown[CFG_ERR_MAX / 2];
	c->source = strdup(file ? cfg_short_path(file, shown, sizeof(shown)) : "configuration");
	if (!c->spool_dir || !*c->spool_dir) {
		free(c->spool_dir);
		if (asprintf(&c->spool_dir, "%s/spool", c->state_dir) < 0)
			c->spool_dir = NULL;
	}
	return c->source && c->spool_dir ? 0 : -1;
}

/* What is wrong with broker_host, or NULL. It goes into the broker URLs ("wss://HOST:PORT/path",
 * Paho takes the port after the last ':'), the TLS name check and the proxy's CONNECT request
 * (dev_tlscheck, dev_proxy_tunnel: an IPv6 address bare, bracketed there): a host name, an
 * IPv4 address or an IPv6 address without brackets. */
static const char *host_check(const char *h)
{
	unsigned char addr[16];
	if (*h == '[')
		return "broker_host: an IPv6 address is written without brackets";
	for (const char *p = h; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(".-_:", *p))
			return "broker_host: not a host name or IP address (letters, digits, '.',"
			       " '-' and '_' only; ':' in an IPv6 address)";
	if (*h == '-' || *h == '.')
		return "broker_host: not a host name or IP address (it starts with '-' or '.')";
	if (strchr(h, ':') && inet_pton(AF_INET6, h, addr) != 1)
		return "broker_host: not a host name or IP address (the ports are wss_port and "
		       "mqtts_port)";
	return NULL;
}

/* ws_path goes into the WebSocket URL and its HTTP upgrade request line as it is: a path from
 * '/' of printable ASCII, no space (which would end the request's path, a CR or LF start a
 * header of its own). Empty is the default, /mqtt. */
static const char *ws_path_check(const char *p)
{
	if (!p || !*p)
		return NULL;
	if (*p != '/')
		return "ws_path: must start with '/' (e.g. /mqtt)";
	for (; *p; p++)
		if (*p <= ' ' || *p > '~')
			return "ws_path: only printable ASCII, no spaces or control characters";
	return NULL;
}

/* What is wrong with the settings together ("key: reason"), or NULL. */
static const char *check(const struct dev_config *c)
{
	const char *why;
	if (!c->id || !*c->id)
		return "id: required";
	if (!c->broker_host || !*c->broker_host)
		return "broker_host: required";
	if ((why = host_check(c->broker_host)))
		return why;
	if ((why = ws_path_check(c->ws_path)))
		return why;
	if (c->backoff_max_ms < c->backoff_min_ms)
		return "backoff_max: smaller than backoff_min";
	if (c->batch_interval_ms < c->sample_interval_ms)
		return "batch_interval: shorter than sample_interval";
	if (c->spool_max_bytes < 4 * c->spool_segment_bytes)
		return "spool_max_bytes: must be at least 4 x spool_segment_bytes";
	if (c->transport == DEV_TRANSPORT_WSS && !c->wss_port)
		return "wss_port: 0 but transport is wss";
	if (c->transport == DEV_TRANSPORT_MQTTS && !c->mqtts_port)
		return "mqtts_port: 0 but transport is mqtts";
	if (!c->wss_port && !c->mqtts_port)
		return "wss_port: both ports are 0";
	return NULL;
}

int dev_config_check(const struct dev_config *c, char *err)
{
	const char *why = check(c);
	if (why)
		return snprintf(err, CFG_ERR_MAX, "%s: %s", c->source ? c->source : "configuration",
				why), -1;
	return 0;
}

static char *override_path(const struct dev_config *c)
{
	char *p = NULL;
	if (asprintf(&p, "%s/config.override", c->state_dir) < 0)
		return NULL;
	return p;
}

/* A usable line of the override file: a remotely settable key with a valid value. */
struct override {
	char *src; /* "path:line" */
	char *key;
	char *value;
};

struct overrides {
	const struct dev_config *c;
	struct override *v;
	size_t n, cap;
	dev_config_warn_fn warn;
	void *arg;
	int stopped; /* override_line stopped the read (out of memory) */
};

static void warnf(const struct overrides *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void warnf(const struct overrides *o, const char *fmt, ...)
{
	char msg[2 * CFG_ERR_MAX];
	va_list ap;
	if (!o->warn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	o->warn(o->arg, msg);
}

static int override_line(void *arg, const char *src, const char *key, const char *value,
			 char *err)
{
	struct overrides *o = arg;
	if (!key) {
		warnf(o, "%s; the line is ignored", err);
		return 0;
	}
	if (!wire_set_config_key_ok(key)) {
		char keys[128];
		warnf(o, "%s: %s: ignored: not a setting set_config may change (%s)", src, key,
		      cfg_join(wire_set_config_keys, keys, sizeof(keys)));
		return 0;
	}
	/* the value alone, on a scratch copy (remote keys are never strings: nothing shared is
	 * freed) */
	struct dev_config probe = *o->c;
	if (cfg_set(opts, NOPTS, &probe, key, value, src, err)) {
		warnf(o, "%s; the line is ignored", err);
		return 0;
	}
	if (o->n == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : 8;
		struct override *v = realloc(o->v, cap * sizeof(*v));
		if (!v) {
			o->stopped = 1;
			return snprintf(err, CFG_ERR_MAX, "%s: out of memory", src), -1;
		}
		o->v = v;
		o->cap = cap;
	}
	struct override *l = &o->v[o->n];
	l->src = strdup(src);
	l->key = strdup(key);
	l->value = strdup(value);
	if (!l->src || !l->key || !l->value) {
		free(l->src);
		free(l->key);
		free(l->value);
		o->stopped = 1;
		return snprintf(err, CFG_ERR_MAX, "%s: out of memory", src), -1;
	}
	o->n++;
	return 0;
}

int dev_config_load_overrides(struct dev_config *c, dev_config_warn_fn warn, void *arg, char *err)
{
	char *path = override_path(c);
	struct overrides o = {.c = c, .warn = warn, .arg = arg};
	int rc = -1;
	if (!path) {
		snprintf(err, CFG_ERR_MAX, "out of memory");
		goto out;
	}
	/* a file that cannot be read (a directory in its place, a bad block, its mode) is damage
	 * to say, not a reason to stay down: the agent starts with its configuration alone */
	if (access(path, F_OK) != 0) {
		if (errno != ENOENT)
			warnf(&o, "%s: %s; the agent starts without the overrides", path,
			      strerror(errno));
		rc = 0;
		goto out;
	}
	if (cfg_read_file(path, override_line, &o, err)) {
		if (o.stopped)
			goto out;
		warnf(&o, "%s; the agent starts without the overrides", err);
		rc = 0;
		goto out;
	}
	/* all of them, as set_config left them (the last of a key wins) */
	struct dev_config probe = *c;
	for (size_t i = 0; i < o.n; i++)
		cfg_set(opts, NOPTS, &probe, o.v[i].key, o.v[i].value, o.v[i].src, err);
	const char *why = check(&probe);
	/* refused together: the main configuration changed since (a set_config is checked
	 * against the settings of its time). One by one then, in file order, each kept only if
	 * the settings stay valid: the agent starts, without what conflicts. */
	for (size_t i = 0; why && i < o.n; i++) {
		probe = *c;
		cfg_set(opts, NOPTS, &probe, o.v[i].key, o.v[i].value, o.v[i].src, err);
		const char *conflict = check(&probe);
		if (conflict) {
			warnf(&o, "%s: %s = %s: ignored: the settings with it are refused (%s); a "
				  "set_config of %s replaces the line", o.v[i].src, o.v[i].key,
			      o.v[i].value, conflict, o.v[i].key);
			continue;
		}
		*c = probe;
	}
	if (!why)
		*c = probe;
	rc = 0;
out:
	for (size_t i = 0; i < o.n; i++) {
		free(o.v[i].src);
		free(o.v[i].key);
		free(o.v[i].value);
	}
	free(o.v);
	free(path);
	return rc;
}

static int remote_check(const char *key, const char *value, char *err)
{
	/* what set_config may change remotely: wire_task.h, shared with outpostctl */
	if (!wire_set_config_key_ok(key))
		return snprintf(err, CFG_ERR_MAX, "set_config: %s: not remotely settable", key), -1;
	if (strpbrk(value, "\n\r\"#") || strlen(value) > 64)
		return snprintf(err, CFG_ERR_MAX, "set_config: %s: invalid value", key), -1;
	return 0;
}

static int is_one_of(const char *line, size_t n, const char *const *keys)
{
	for (size_t i = 0; i < n; i++) {
		size_t kl = strlen(keys[i]);
		if (!strncmp(line, keys[i], kl) && (line[kl] == ' ' || line[kl] == '='))
			return 1;
	}
	return 0;
}

/* Rewrite the override file with these pairs replacing earlier values of their keys
 * (ofile_replace: a crash leaves the old file or the new one). 0; 1 when the file was replaced
 * but its directory not synced (err says so); -1 with err, the file as it was. */
static int persist(const struct dev_config *c, size_t n, const char *const *keys,
		   const char *const *values, char *err)
{
	char *path = override_path(c), *text = NULL, line[256];
	size_t len = 0;
	FILE *in = path ? fopen(path, "r") : NULL;
	int in_err = in ? 0 : errno;
	FILE *out = open_memstream(&text, &len);
	int ok = path && out && (in || in_err == ENOENT); /* unreadable: its pairs would be lost */
	if (!ok && in_err)
		errno = in_err;
	while (ok && in && fgets(line, sizeof(line), in))
		if (!is_one_of(line, n, keys))
			ok = fputs(line, out) >= 0;
	if (in)
		fclose(in);
	for (size_t i = 0; ok && i < n; i++) /* a key given twice: the last wins, as on load */
		ok = fprintf(out, "%s = %s\n", keys[i], values[i]) > 0;
	if (out)
		ok = fclose(out) == 0 && ok;
	int rc = ok ? ofile_replace(path, text, len) : -1;
	if (rc == OFILE_NOT_DURABLE) {
		/* the next start reads the new file: refused now, the change would still take
		 * effect then, unannounced */
		snprintf(err, CFG_ERR_MAX,
		         "%s written, but its directory cannot be synced (%s): a power cut may "
		         "undo the change",
		         path, strerror(errno));
		rc = 1;
	} else if (rc) {
		snprintf(err, CFG_ERR_MAX, "set_config: cannot persist %s: %s", path ? path : "overrides",
			 strerror(errno));
	}
	free(text);
	free(path);
	return rc;
}

int dev_config_set_overrides(struct dev_config *c, size_t n, const char *const *keys,
			     const char *const *values, char *err)
{
	/* every pair on one scratch copy, then the cross-field checks once: the pairs must make
	 * a valid configuration together (remote keys are never strings, so the shallow copy
	 * shares nothing that cfg_set would free) */
	struct dev_config probe = *c;
	probe.source = "set_config";
	if (!n)
		return snprintf(err, CFG_ERR_MAX, "set_config: no key=value pairs"), -1;
	for (size_t i = 0; i < n; i++)
		if (remote_check(keys[i], values[i], err) ||
		    cfg_set(opts, NOPTS, &probe, keys[i], values[i], "set_config", err))
			return -1;
	if (dev_config_check(&probe, err))
		return -1;
	int rc = persist(c, n, keys, values, err);
	if (rc < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		cfg_set(opts, NOPTS, c, keys[i], values[i], "set_config", NULL);
	return rc;
}

void dev_config_help(FILE *out)
{
	cfg_print_help(out, opts, NOPTS, DEV_ENV_PREFIX);
	fprintf(out, "Above all of them: settings changed remotely by set_config tasks, kept in\n"
		     "<state_dir>/config.override (delete it to return to the above).\n");
}

void dev_config_free(struct dev_config *c)
{
	cfg_free(opts, NOPTS, c);
	free(c->source);
	c->source = NULL;
}
