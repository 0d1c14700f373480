/* outpost_auth.c - mosquitto 2.0 plugin: the broker-side checks the stock configuration cannot
 * express.
 *   1. The CRL on every listener. mosquitto 2.0.11 ignores `crlfile` on websockets listeners,
 *      so a revoked device could still reach port 443. Here every ACL check (publish, delivery,
 *      subscribe) refuses a client whose certificate is in the CRL, and the client is
 *      disconnected on the next tick. The CRL file is re-read when it changes: revoking takes
 *      effect without restarting or reloading the broker. A CRL is used only if the CA signed
 *      it (every PKI provision-certs.sh makes has a CA named "Outpost CA": the issuer name
 *      alone proves nothing); any other keeps the previous one. This is the only CRL check:
 *      the listeners have no crlfile (docker/mosquitto/mosquitto.conf says why), so no reload
 *      is ever needed and an expired CRL locks nobody out; its revocations still apply. The
 *      broker drops the will of a client it disconnects (and would refuse a revoked client's
 *      will anyway), so the plugin itself sets the device's retained status to `offline`.
 *      There is no check at CONNECT: on use_identity_as_username listeners mosquitto 2.0.11
 *      calls no authentication plugin, so a revoked certificate still connects (and takes over
 *      the session of its client id) before its first ACL check refuses it.
 *   2. Subscriptions. mosquitto 2.0.11 does not check SUBSCRIBE against the ACL file; a device
 *      may subscribe only to its own outpost/v1/<id>/ack and outpost/v1/<id>/tasks.
 *   3. Retained messages: a device may retain only its status. A retained envelope would be
 *      replayed to every bridge on every reconnect (mosquitto 2.0.11 sends retained messages
 *      to shared subscriptions too).
 *   Rules 2 and 3 refuse a client whose certificate name holds '/', '+' or '#' (infra clients
 *   too): it cannot stand in a topic level (a CN of "+" would own outpost/v1/+/ack).
 * Everything else defers to the ACL file. Options: plugin_opt_crl_file (required),
 * plugin_opt_ca_file (required: the CA that must have signed the CRL, read at start),
 * plugin_opt_infra_prefix (usernames exempt from rules 2 and 3, default "outpost-"). Given
 * twice, an option's last value counts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define KICK_MAX 64
#define ID_MAX 128

struct kick {
	char client_id[ID_MAX]; /* "" = a client id too long to keep: kicked by login instead */
	char login[ID_MAX];     /* certificate identity */
	int device;             /* publish its retained offline status */
};

struct auth {
	mosquitto_plugin_id_t *id;
	char *crl_file;
	char *ca_file;
	char *infra_prefix;
	X509 *ca; /* the CRL's signer */
	X509_CRL *crl;
	struct timespec crl_mtime;
	struct timespec refused_mtime; /* the CRL file last refused (and logged), and why */
	int refused_rc;
	time_t checked_at;
	struct kick kick[KICK_MAX];
	int nkick;
};

enum { CRL_OK = 0, CRL_UNREADABLE = -1, CRL_NOT_THE_CAS = -2 };

static int same_time(struct timespec x, struct timespec y)
{
	return x.tv_sec == y.tv_sec && x.tv_nsec == y.tv_nsec;
}

static X509 *load_ca(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	X509 *ca = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	return ca;
}

/* The CA issued this CRL: its name, and a signature its key verifies. */
static int signed_by_ca(X509_CRL *crl, X509 *ca)
{
	EVP_PKEY *key = X509_get0_pubkey(ca);
	return key && X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) == 0 &&
	       X509_CRL_verify(crl, key) == 1;
}

/* Read the CRL file; on success it replaces the CRL in use. *mtime: the file's, if it could
 * be looked at. */
static int load_crl(struct auth *a, struct timespec *mtime)
{
	struct stat st;
	if (stat(a->crl_file, &st) != 0)
		return CRL_UNREADABLE;
	*mtime = st.st_mtim;
	FILE *f = fopen(a->crl_file, "r");
	if (!f)
		return CRL_UNREADABLE;
	X509_CRL *crl = PEM_read_X509_CRL(f, NULL, NULL, NULL);
	fclose(f);
	if (!crl)
		return CRL_UNREADABLE;
	if (!signed_by_ca(crl, a->ca)) {
		X509_CRL_free(crl);
		return CRL_NOT_THE_CAS;
	}
	X509_CRL_free(a->crl);
	a->crl = crl;
	a->crl_mtime = st.st_mtim;
	return CRL_OK;
}

/* Re-read the CRL when its file changed (checked at most once a second). A CRL that cannot be
 * read, or that the CA did not sign, keeps the previous one: revocations are never forgotten
 * by accident. A refused file is tried again every second (it may have been read half
 * written) but logged once. */
static void maybe_reload(struct auth *a)
{
	time_t now = time(NULL);
	struct stat st;
	struct timespec mtime = {0, 0};
	if (now == a->checked_at)
		return;
	a->checked_at = now;
	/* unchanged since it was loaded, or since it was refused (not parsed every second) */
	if (stat(a->crl_file, &st) != 0 || same_time(st.st_mtim, a->crl_mtime) ||
	    same_time(st.st_mtim, a->refused_mtime))
		return;
	int rc = load_crl(a, &mtime);
	if (rc == CRL_OK) {
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "outpost_auth: reloaded CRL %s", a->crl_file);
		return;
	}
	if (same_time(mtime, a->refused_mtime) && rc == a->refused_rc)
		return;
	a->refused_mtime = mtime;
	a->refused_rc = rc;
	if (rc == CRL_NOT_THE_CAS)
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				     "outpost_auth: refused CRL %s: not signed by the CA %s; "
				     "keeping the previous one",
				     a->crl_file, a->ca_file);
	else
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				     "outpost_auth: cannot read CRL %s; keeping the previous one",
				     a->crl_file);
}

static int revoked(struct auth *a, struct mosquitto *client)
{
	X509 *cert = mosquitto_client_certificate(client);
	X509_REVOKED *entry = NULL;
	int r = 0;
	if (!cert)
		return 0;
	if (a->crl && X509_CRL_get0_by_cert(a->crl, &entry, cert) == 1)
		r = 1;
	X509_free(cert);
	return r;
}

/* A device id that can stand in a topic level: no wildcard, no separator. */
static int topic_level_ok(const char *s)
{
	return *s && !strpbrk(s, "/+#");
}

static void schedule_kick(struct auth *a, const char *client_id, const char *user)
{
	int by_login = !client_id || strlen(client_id) >= ID_MAX;
	if (!user || strlen(user) >= ID_MAX)
		user = "";
	if (by_login && !*user)
		return; /* identities are certificate CNs: at most 64 characters */
	for (int i = 0; i < a->nkick; i++)
		if (by_login ? !a->kick[i].client_id[0] && !strcmp(a->kick[i].login, user)
		             : !strcmp(a->kick[i].client_id, client_id))
			return;
	if (a->nkick == KICK_MAX)
		return;
	struct kick *k = &a->kick[a->nkick++];
	snprintf(k->client_id, ID_MAX, "%s", by_login ? "" : client_id);
	snprintf(k->login, ID_MAX, "%s", user);
	k->device = topic_level_ok(user) && strncmp(user, a->infra_prefix, strlen(a->infra_prefix));
}

/* outpost/v1/<user>/<leaf>: the user's own topic `leaf` */
static int own_topic(const char *user, const char *topic, const char *leaf)
{
	const char *prefix = "outpost/v1/";
	size_t pl = strlen(prefix), ul = strlen(user);
	return !strncmp(topic, prefix, pl) && !strncmp(topic + pl, user, ul) &&
	       topic[pl + ul] == '/' && !strcmp(topic + pl + ul + 1, leaf);
}

/* outpost/v1/<user>/ack or outpost/v1/<user>/tasks, nothing else, no wildcards */
static int own_downlink(const char *user, const char *topic)
{
	return own_topic(user, topic, "ack") || own_topic(user, topic, "tasks");
}

static int on_acl(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	struct auth *a = userdata;
	(void)event;

	if (revoked(a, ed->client)) {
		const char *id = mosquitto_client_id(ed->client);
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				     "outpost_auth: denied %s: certificate revoked; disconnecting it",
				     id ? id : "?");
		schedule_kick(a, id, mosquitto_client_username(ed->client));
		return MOSQ_ERR_ACL_DENIED;
	}
	int subscribe = ed->access == MOSQ_ACL_SUBSCRIBE;
	if (!subscribe && !(ed->access == MOSQ_ACL_WRITE && ed->retain))
		return MOSQ_ERR_PLUGIN_DEFER;
	const char *user = mosquitto_client_username(ed->client);
	if (!user)
		return MOSQ_ERR_ACL_DENIED;
	/* The rules below put the CN in a topic level: one with a wildcard or a separator is no
	 * name for that (a CN of "+" would have outpost/v1/+/ack as its own downlink). */
	if (!topic_level_ok(user)) {
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				     "outpost_auth: denied %s: %s '%s': a certificate name with"
				     " '/', '+' or '#' cannot stand in a topic",
				     user, subscribe ? "subscribe to" : "retained publish to",
				     ed->topic);
		return MOSQ_ERR_ACL_DENIED;
	}
	if (subscribe) {
		if (!strncmp(user, a->infra_prefix, strlen(a->infra_prefix)))
			return MOSQ_ERR_PLUGIN_DEFER;
		if (own_downlink(user, ed->topic))
			return MOSQ_ERR_SUCCESS;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "outpost_auth: denied %s: subscribe to '%s'", user,
				     ed->topic);
		return MOSQ_ERR_ACL_DENIED;
	}
	if (!strncmp(user, a->infra_prefix, strlen(a->infra_prefix)) ||
	    own_topic(user, ed->topic, "status"))
		return MOSQ_ERR_PLUGIN_DEFER;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "outpost_auth: denied %s: retained publish to '%s'",
			     user, ed->topic);
	return MOSQ_ERR_ACL_DENIED;
}

/* The device's last word, as its will would have said it: retained, QoS 1, from the broker. */
static void set_offline(const char *user)
{
	char topic[ID_MAX + 32];
	snprintf(topic, sizeof(topic), "outpost/v1/%s/status", user);
	if (mosquitto_broker_publish_copy(NULL, topic, 7, "offline", 1, true, NULL) != MOSQ_ERR_SUCCESS)
		mosquitto_log_printf(MOSQ_LOG_WARNING, "outpost_auth: cannot publish %s offline", topic);
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct auth *a = userdata;
	(void)event;
	(void)event_data;
	maybe_reload(a); /* at most once a second; every loop pass ticks */
	for (int i = 0; i < a->nkick; i++) {
		if (a->kick[i].client_id[0])
			mosquitto_kick_client_by_clientid(a->kick[i].client_id, false);
		else
			mosquitto_kick_client_by_username(a->kick[i].login, false);
		if (a->kick[i].device)
			set_offline(a->kick[i].login);
	}
	a->nkick = 0;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++)
		if (supported_versions[i] == 5)
			return 5;
	return -1;
}

static void auth_free(struct auth *a)
{
	if (!a)
		return;
	X509_CRL_free(a->crl);
	X509_free(a->ca);
	free(a->crl_file);
	free(a->ca_file);
	free(a->infra_prefix);
	free(a);
}

/* Keep an option's value in *dst; given twice, the last one counts (and nothing leaks). */
static int set_opt(char **dst, const char *key, const char *value)
{
	if (*dst)
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				     "outpost_auth: plugin_opt_%s given twice; using the last "
				     "one, %s",
				     key, value);
	free(*dst);
	*dst = strdup(value);
	return *dst ? 0 : -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
			  struct mosquitto_opt *options, int option_count)
{
	struct auth *a = calloc(1, sizeof(*a));
	struct timespec mtime;
	int rc = MOSQ_ERR_INVAL;
	if (!a)
		return MOSQ_ERR_NOMEM;
	a->id = identifier;
	for (int i = 0; i < option_count; i++) {
		char **dst = !strcmp(options[i].key, "crl_file")       ? &a->crl_file
			     : !strcmp(options[i].key, "ca_file")      ? &a->ca_file
			     : !strcmp(options[i].key, "infra_prefix") ? &a->infra_prefix
								       : NULL;
		if (dst && set_opt(dst, options[i].key, options[i].value) != 0) {
			rc = MOSQ_ERR_NOMEM;
			goto fail;
		}
	}
	if (!a->infra_prefix && !(a->infra_prefix = strdup("outpost-"))) {
		rc = MOSQ_ERR_NOMEM;
		goto fail;
	}
	if (!*a->infra_prefix) {
		/* every login would begin with it: every client exempt from the device rules */
		mosquitto_log_printf(MOSQ_LOG_ERR,
				     "outpost_auth: plugin_opt_infra_prefix must not be empty");
		goto fail;
	}
	if (!a->ca_file || !(a->ca = load_ca(a->ca_file))) {
		mosquitto_log_printf(MOSQ_LOG_ERR,
				     "outpost_auth: plugin_opt_ca_file %s: not a readable PEM "
				     "certificate (the CA that signs the CRL)",
				     a->ca_file ? a->ca_file : "(missing)");
		goto fail;
	}
	switch (a->crl_file ? load_crl(a, &mtime) : CRL_UNREADABLE) {
	case CRL_OK:
		break;
	case CRL_NOT_THE_CAS:
		mosquitto_log_printf(MOSQ_LOG_ERR,
				     "outpost_auth: plugin_opt_crl_file %s: not signed by the "
				     "CA %s",
				     a->crl_file, a->ca_file);
		goto fail;
	default:
		mosquitto_log_printf(MOSQ_LOG_ERR,
				     "outpost_auth: plugin_opt_crl_file %s: not a readable PEM CRL",
				     a->crl_file ? a->crl_file : "(missing)");
		goto fail;
	}
	a->checked_at = time(NULL);
	*userdata = a;
	if (mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl, NULL, a) ||
	    mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, a))
		return MOSQ_ERR_UNKNOWN;
	mosquitto_log_printf(MOSQ_LOG_INFO,
			     "outpost_auth: enforcing CRL %s (signed by %s) on every listener",
			     a->crl_file, a->ca_file);
	return MOSQ_ERR_SUCCESS;
fail:
	auth_free(a);
	return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct auth *a = userdata;
	(void)options;
	(void)option_count;
	if (!a)
		return MOSQ_ERR_SUCCESS;
	mosquitto_callback_unregister(a->id, MOSQ_EVT_ACL_CHECK, on_acl, NULL);
	mosquitto_callback_unregister(a->id, MOSQ_EVT_TICK, on_tick, NULL);
	auth_free(a);
	return MOSQ_ERR_SUCCESS;
}
