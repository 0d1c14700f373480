/* test_device.c - outpost-device against a real mosquitto (the project's configuration, real
 * mutual TLS) and the bridge test double: transports, proxy, broker identity, reconnects,
 * durability across outages, forged acks, configuration errors. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev_link.h"
#include "dev_spool.h"
#include "dev_tlscheck.h"
#include "h_device.h"
#include "h_fakebridge.h"
#include "h_mqtt.h"
#include "harness.h"
#include "outpost.pb-c.h"
#include "wire_env.h"
#include "wire_msg.h"

Test(device, wss_first_with_acks, .timeout = 60)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	h_device_start(&d, &b, "dev-a", NULL);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_readings_at_least, 60, &v), "readings: %llu",
		  (unsigned long long)v.readings);
	cr_expect(h_log_count(d.log, "connected to wss://localhost:") == 1, "log %s", d.log);
	cr_expect_eq(v.bad, 0);
	cr_expect(v.in_order);
	cr_expect_geq(v.births, 1);
	cr_expect_gt(v.frontier, 0, "acks follow the chain");
	cr_expect_eq(h_device_stop(&d), 0, "clean stop exits 0");
	h_fakebridge_stop(fb);
	h_broker_free(&b);
	h_device_free(&d);
}

Test(device, falls_back_to_mqtts_when_wss_is_closed, .timeout = 60)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	char *closed = h_strf("%d", h_free_port());
	const char *extra[] = {"--wss-port", closed, NULL};
	h_device_start(&d, &b, "dev-a", extra);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_readings_at_least, 20, &v));
	cr_expect_eq(h_log_count(d.log, "connected to ssl://localhost:"), 1, "log %s", d.log);
	cr_expect_eq(h_log_count(d.log, "connected to wss://"), 0);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
	free(closed);
}

static pid_t start_tinyproxy(const struct h_broker *b, int port, char **log)
{
	char *dir = h_tmpdir("proxy");
	char *conf = h_strf("%s/tinyproxy.conf", dir);
	*log = h_strf("%s/tinyproxy.log", dir);
	FILE *f = fopen(conf, "w");
	cr_assert_not_null(f);
	fprintf(f,
		"Port %d\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nConnectPort %d\n"
		"ConnectPort %d\nLogFile \"%s\"\nLogLevel Connect\nMaxClients 20\n",
		port, b->wss_port, b->mqtts_port, *log);
	fclose(f);
	char *argv[] = {"tinyproxy", "-d", "-c", conf, NULL};
	pid_t pid = h_spawn(argv, NULL, *log);
	cr_assert(h_wait_port(port, 5000), "tinyproxy did not start");
	free(conf);
	free(dir);
	return pid;
}

Test(device, through_an_http_connect_proxy, .timeout = 60)
{
	struct h_broker b = {0};
	struct h_device d = {0}, e = {0};
	struct h_device_view v;
	char *plog;
	h_broker_start(&b, h_pki());
	int port = h_free_port();
	pid_t proxy = start_tinyproxy(&b, port, &plog);
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);

	/* the form users paste (scheme, trailing slash) is normalised to what Paho accepts */
	char *url = h_strf("http://127.0.0.1:%d/", port);
	const char *extra[] = {"--proxy", url, NULL};
	h_device_start(&d, &b, "dev-a", extra);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 20000, h_view_readings_at_least, 20, &v), "no data through the proxy; logs %s %s",
		  d.log, plog);
	cr_expect_geq(h_log_count(plog, "CONNECT"), 1, "the proxy saw the tunnel (%s)", plog);
	cr_expect_geq(h_log_count(d.log, "using HTTP CONNECT proxy 127.0.0.1:"), 1);

	/* the same from the https_proxy environment variable, as a site's IT would set it */
	h_stop(proxy, 3000);
	int before = h_log_count(plog, "CONNECT");
	free(plog);
	proxy = start_tinyproxy(&b, port, &plog);
	char *env = h_strf("https_proxy=http://127.0.0.1:%d", port);
	putenv(env);
	const char *extra2[] = {"--proxy", "", NULL};
	h_device_start(&e, &b, "dev-b", extra2);
	unsetenv("https_proxy");
	free(env);
	cr_assert(h_fakebridge_wait(fb, "dev-b", 20000, h_view_readings_at_least, 20, &v), "no data via https_proxy");
	cr_expect_gt(h_log_count(plog, "CONNECT"), before);
	h_device_free(&d);
	h_device_free(&e);
	h_stop(proxy, 3000);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
	free(url);
	free(plog);
}

/* The values of the exec collector's proxy.env reading (1: the command saw https_proxy as the
 * device was given it, 0: it did not): how many, and whether all were 1. */
static size_t proxy_env_readings(struct h_fakebridge *fb, int *all_seen)
{
	static int64_t t[2000];
	static double val[2000];
	size_t n = h_fakebridge_series(fb, "dev-a", "proxy.env", t, val, 2000);
	*all_seen = 1;
	for (size_t i = 0; i < n; i++)
		if (val[i] != 1)
			*all_seen = 0;
	return n;
}

/* The agent takes the proxy variables out of its environment (Paho would read them itself)
 * but not out of what it starts: a `restart` task's new agent dials through the https_proxy
 * proxy again, and the exec collector's command sees the variable, before and after. */
Test(device, https_proxy_survives_a_restart_task, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	char *plog, msg[256] = "";
	int all_seen;
	h_broker_start(&b, h_pki());
	int port = h_free_port();
	pid_t proxy = start_tinyproxy(&b, port, &plog);
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	char *url = h_strf("http://127.0.0.1:%d", port);
	char *env = h_strf("https_proxy=%s", url);
	char *cmd = h_strf("if [ \"$https_proxy\" = %s ]; then echo proxy.env 1; "
			   "else echo proxy.env 0; fi", url);
	const char *extra[] = {"--proxy", "", "--poll-interval", "1s", "--collectors", "sim,exec",
			       "--exec-command", cmd, NULL};
	putenv(env);
	h_device_start(&d, &b, "dev-a", extra);
	unsetenv("https_proxy");
	free(env);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 20000, h_view_readings_at_least, 20, &v),
		  "no data via https_proxy: %s %s", d.log, plog);
	cr_assert_eq(h_log_count(d.log, "using HTTP CONNECT proxy 127.0.0.1:"), 1, "%s", d.log);
	cr_expect_gt(proxy_env_readings(fb, &all_seen), 0);
	cr_expect(all_seen, "the exec command did not see https_proxy");
	int tunnels = h_log_count(plog, "CONNECT");
	cr_assert_geq(tunnels, 1, "the proxy saw no tunnel (%s)", plog);

	h_fakebridge_queue_task(fb, 1, "restart", NULL, NULL, 0, 0);
	long long end = h_now_ms() + 30000;
	int st;
	while (!(st = h_fakebridge_result(fb, 1, msg, sizeof(msg))) && h_now_ms() < end)
		h_sleep_ms(50);
	cr_assert_eq(st, OUTPOST__TASK_STATUS__TASK_STATUS_SUCCEEDED, "%s; %s", msg, d.log);
	cr_expect_str_eq(msg, "agent restarted");
	cr_expect_eq(h_log_count(d.log, "started: broker"), 2, "%s", d.log);
	cr_expect_eq(h_log_count(d.log, "using HTTP CONNECT proxy 127.0.0.1:"), 2,
		     "the restarted agent has no proxy: %s", d.log);
	cr_expect_gt(h_log_count(plog, "CONNECT"), tunnels,
		     "the restarted agent did not dial through the proxy (%s)", plog);
	/* the restarted agent's readings: a batch (1 s) after the result */
	size_t before = proxy_env_readings(fb, &all_seen), n = before;
	for (end = h_now_ms() + 10000; n <= before + 3 && h_now_ms() < end; h_sleep_ms(50))
		n = proxy_env_readings(fb, &all_seen);
	cr_expect_gt(n, before + 3, "no readings after the restart");
	cr_expect(all_seen, "the exec command of the restarted agent did not see https_proxy");
	h_device_free(&d);
	h_stop(proxy, 3000);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
	free(cmd);
	free(url);
	free(plog);
}

/* A broker presenting pki's certificate and dev-a dialling it: `attempts` failed, none
 * connected (what: the broker, as the failure message names it). */
static void expect_refused(struct h_broker *b, struct h_device *d, const char *pki, int attempts,
			   const char *what)
{
	h_broker_start(b, pki);
	h_device_start(d, b, "dev-a", NULL);
	cr_assert(h_log_wait(d->log, "reconnecting in", attempts, 20000),
		  "expected failed attempts (%s)", d->log);
	cr_expect_eq(h_log_count(d->log, "connected to"), 0, "connected to %s", what);
}

Test(device, refuses_a_broker_from_another_ca, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	d.pki = h_pki();
	/* first connect: the broker presents a certificate of an unrelated CA */
	expect_refused(&b, &d, h_pki_other(), 3, "an impostor broker");
	cr_expect_geq(h_log_count(d.log, "TLS: certificate verify failed"), 1,
		      "the log names the TLS reason (%s)", d.log);
	h_broker_stop(&b);

	/* reconnect: first the real broker, then an impostor on the same address */
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 20000, h_view_readings_at_least, 10, &v));
	h_fakebridge_stop(fb);
	h_broker_stop(&b);
	int fails = h_log_count(d.log, "reconnecting in");
	h_broker_start(&b, h_pki_other());
	cr_assert(h_log_wait(d.log, "reconnecting in", fails + 3, 20000), "no refused attempts (%s)", d.log);
	cr_expect_eq(h_log_count(d.log, "connected to"), 1, "reconnected to an impostor broker");
	h_device_free(&d);
	h_broker_free(&b);
}

/* A copy of the shared PKI whose broker certificate (same CA, same key) names only `san`
 * (openssl.cnf syntax) and is valid as `validity` says (openssl ca options). Caller frees the
 * directory name. */
static char *pki_with_broker_cert(const char *tag, const char *san, const char *validity)
{
	char *dir = h_tmpdir(tag), *out = NULL;
	char *cmd = h_strf("set -e; cp -a %s/. %s/; cd %s; "
			   "openssl req -new -config %s/certs/openssl.cnf -key broker.key "
			   "-subj /CN=outpost-broker -out broker.csr; "
			   "OUTPOST_PKI=%s OUTPOST_SAN=%s openssl ca -batch -config "
			   "%s/certs/openssl.cnf -extensions server_cert -notext %s "
			   "-in broker.csr -out broker.crt.new; mv broker.crt.new broker.crt; "
			   "echo SAN-FOLLOWS; openssl x509 -in broker.crt -noout -ext subjectAltName",
			   h_pki(), dir, dir, h_source_dir(), dir, san, h_source_dir(), validity);
	cr_assert_eq(h_sh(cmd, &out, 60), 0, "%s\n%s", cmd, out);
	/* the certificate names that one host and nothing else (no localhost, no 127.0.0.1) */
	const char *sans = strstr(out, "SAN-FOLLOWS");
	cr_assert(sans && strstr(sans, san) &&
		  h_count(sans, "DNS:") + h_count(sans, "IP Address:") == 1, "broker SAN: %s", out);
	free(out);
	free(cmd);
	return dir;
}

static char *pki_with_broker_san(const char *tag, const char *san)
{
	return pki_with_broker_cert(tag, san, "-days 30");
}

/* The device dials localhost; the broker's certificate is from the right CA but names another
 * host (broker.invalid: never resolvable, so a regression cannot dial anywhere). The device
 * must refuse it as it refuses an impostor's, on both transports, and say why: Paho 1.3.12
 * checks the name after the handshake (X509_check_host in SSLSocket_connect) without calling
 * ssl_error_cb, so Paho only says "TCP/TLS connect failure", as for a network error; the
 * device then asks wolfSSL about the certificate (dev_tlscheck), once per 10 minutes. */
Test(device, refuses_a_broker_certificate_for_another_name, .timeout = 90)
{
	struct h_broker b = {0}, c = {0};
	struct h_device d = {0}, e = {0};
	char *pki = pki_with_broker_san("pki-san", "DNS:broker.invalid");
	expect_refused(&b, &d, pki, 3, "a broker of another name");
	cr_expect_geq(h_log_count(d.log, "cannot connect: wss://localhost:"), 3, "%s", d.log);
	cr_expect_geq(h_log_count(d.log, "cannot connect: ssl://localhost:"), 3, "%s", d.log);
	cr_expect_geq(h_log_count(d.log, "TCP/TLS connect failure"), 6, "%s", d.log);
	cr_expect_eq(h_log_count(d.log, "error: the broker's certificate at localhost:"), 1, "%s",
		     d.log);
	cr_expect_eq(h_log_count(d.log, "does not name localhost, the host this device dials"), 1,
		     "%s", d.log);
	h_device_free(&d);
	h_broker_free(&b);

	/* control: the same recipe naming localhost is accepted */
	char *good = pki_with_broker_san("pki-san-ok", "DNS:localhost");
	h_broker_start(&c, good);
	h_device_start(&e, &c, "dev-a", NULL);
	cr_expect(h_log_wait(e.log, "connected to wss://localhost:", 1, 20000), "log %s", e.log);
	cr_expect_eq(h_log_count(e.log, "certificate"), 0, "%s", e.log);
	h_device_free(&e);
	h_broker_free(&c);
	free(good);
	free(pki);
}

/* The same behind an HTTP CONNECT proxy: the certificate check goes through the proxy too (a
 * proxy that inspects TLS would show its own certificate, so the verdict says where it looked). */
Test(device, names_a_wrong_broker_certificate_through_a_proxy, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	char *pki = pki_with_broker_san("pki-san-proxy", "DNS:broker.invalid"), *plog;
	h_broker_start(&b, pki);
	int port = h_free_port();
	pid_t proxy = start_tinyproxy(&b, port, &plog);
	char *url = h_strf("http://127.0.0.1:%d", port);
	char *verdict = h_strf("error: the broker's certificate at localhost:%d (through the proxy"
	                       " 127.0.0.1:%d) does not name localhost, the host this device dials",
	                       b.wss_port, port);
	const char *extra[] = {"--proxy", url, NULL};
	h_device_start(&d, &b, "dev-a", extra);
	cr_expect(h_log_wait(d.log, verdict, 1, 30000), "no verdict through the proxy: %s %s",
	          d.log, plog);
	cr_expect_eq(h_log_count(d.log, "connected to"), 0, "%s", d.log);
	h_device_free(&d);
	h_stop(proxy, 3000);
	h_broker_free(&b);
	free(verdict);
	free(url);
	free(plog);
	free(pki);
}

/* A listener that accepts one connection, reads the ClientHello and answers with a fatal TLS
 * alert (handshake_failure) before any certificate, then closes. */
static void *refuse_handshake(void *arg)
{
	static const unsigned char alert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28};
	char hello[4096];
	int fd = accept(*(int *)arg, NULL, NULL);
	if (fd >= 0 && read(fd, hello, sizeof(hello)) > 0 &&
	    write(fd, alert, sizeof(alert)) == (ssize_t)sizeof(alert))
		h_sleep_ms(200);
	if (fd >= 0)
		close(fd);
	return NULL;
}

/* The certificate check behind the device's "TCP/TLS connect failure" says "valid" only about
 * a certificate it saw and verified, and checks an address the device dials against the
 * certificate's IP names, as Paho does. */
Test(device, the_certificate_check_judges_only_what_it_saw, .timeout = 90)
{
	struct h_broker b = {0};
	char why[512];
	char *pki = pki_with_broker_san("pki-tlscheck", "DNS:localhost");
	char *ca = h_strf("%s/ca.crt", pki);
	h_broker_start(&b, pki);
	/* named: valid (the broker then refuses a handshake without a client certificate) */
	cr_expect_eq(dev_tlscheck("localhost", b.mqtts_port, ca, NULL, 3000, why, sizeof(why)),
	             DEV_TLSCHECK_OK, "%s", why);
	cr_expect(strstr(why, "is valid for localhost"), "%s", why);
	/* dialled by address, which the certificate does not name */
	cr_expect_eq(dev_tlscheck("127.0.0.1", b.mqtts_port, ca, NULL, 3000, why, sizeof(why)),
	             DEV_TLSCHECK_BAD_CERT, "%s", why);
	cr_expect(strstr(why, "does not name 127.0.0.1"), "%s", why);
	h_broker_free(&b);

	/* a server that ends the handshake before showing any certificate: no verdict */
	int port;
	int lfd = h_listen_loopback(1, &port);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, refuse_handshake, &lfd), 0);
	cr_expect_eq(dev_tlscheck("localhost", port, ca, NULL, 3000, why,
	                          sizeof(why)),
	             DEV_TLSCHECK_UNKNOWN, "%s", why);
	cr_expect(strstr(why, "ended the handshake before showing a certificate"), "%s", why);
	pthread_join(t, NULL);
	close(lfd);
	free(ca);
	free(pki);
}

/* The broker's certificate names the host but has expired: refused, and OpenSSL says why. */
Test(device, refuses_an_expired_broker_certificate, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	char *pki = pki_with_broker_cert("pki-expired-broker", "DNS:localhost",
					 "-startdate 20200101000000Z -enddate 20210101000000Z");
	expect_refused(&b, &d, pki, 2, "an expired broker");
	cr_expect_geq(h_log_count(d.log, "TLS: certificate verify failed"), 2, "%s", d.log);
	h_device_free(&d);
	h_broker_free(&b);
	free(pki);
}

/* Revoking a connected device: the broker's outpost_auth plugin re-reads the CRL and kicks
 * it with an MQTT v5 DISCONNECT, which Paho does not report as a lost connection. The device
 * must still notice, say why, and keep dialling (with backoff) instead of sitting on a dead
 * link; a refused send is not a spool error. */
Test(device, notices_a_kick_by_the_broker_and_dials_again, .timeout = 180)
{
	/* a private PKI: revoking in the shared one would disturb other tests (dev-c: the fake
	 * bridge's forger) */
	char *pki = h_tmpdir("pki-kick"), *out = NULL;
	char *cmd = h_strf("%s/scripts/provision-certs.sh --out %s --devices dev-x,dev-c",
			   h_source_dir(), pki);
	cr_assert_eq(h_sh(cmd, &out, 120), 0, "%s", out);
	free(out);
	free(cmd);
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	h_broker_start(&b, pki);
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	const char *extra[] = {"--transport", "mqtts", NULL};
	h_device_start(&d, &b, "dev-x", extra);
	cr_assert(h_fakebridge_wait(fb, "dev-x", 20000, h_view_readings_at_least, 10, &v), "log %s", d.log);
	cmd = h_strf("%s/scripts/provision-certs.sh --out %s --revoke dev-x", h_source_dir(), pki);
	cr_assert_eq(h_sh(cmd, &out, 120), 0, "%s", out);
	free(out);
	free(cmd);
	cr_expect(h_log_wait(d.log, "disconnected by the broker", 1, 15000), "kick not seen (%s)",
		  d.log);
	/* 8883 completes TLS (the listeners have no crlfile: the plugin is the CRL check) and the
	 * plugin kicks again: every further "connected to" is a new attempt */
	cr_expect(h_log_wait(d.log, "connected to ssl://", 2, 20000), "no new attempt (%s)", d.log);
	cr_expect_eq(h_log_count(d.log, "spool I/O error"), 0, "a refused send is no spool error");
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
	free(pki);
}

Test(device, reconnects_after_broker_restart_with_jitter, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	const char *extra[] = {"--backoff-min", "100ms", "--backoff-max", "1s",
			       "--reconnect-spread", "100ms", NULL};
	h_device_start(&d, &b, "dev-a", extra);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_births_at_least, 1, &v));
	h_fakebridge_stop(fb);
	h_broker_stop(&b);
	cr_assert(h_log_wait(d.log, "reconnecting in", 6, 30000), "log %s", d.log);
	h_broker_start(&b, h_pki());
	fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 20000, h_view_births_at_least, 1, &v), "no reconnect (%s)", d.log);
	cr_expect_eq(h_log_count(d.log, "connected to"), 2);

	/* delays are random within a growing cap: not all equal, none above the cap, and drawn
	 * below it (a delay of the whole window each time would still give distinct delays while
	 * the window grows) */
	FILE *f = fopen(d.log, "r");
	char line[1024];
	long delays[64];
	int n = 0, distinct = 0, below = 0;
	while (f && fgets(line, sizeof(line), f) && n < 64) {
		char *p = strstr(line, "reconnecting in "), *w = strstr(line, "(at random in 0..");
		if (!p)
			continue;
		cr_assert(w, "no window: %s", line);
		delays[n] = strtol(p + 16, NULL, 10);
		below += delays[n] < strtol(w + 17, NULL, 10);
		n++;
	}
	if (f)
		fclose(f);
	for (int i = 0; i < n; i++) {
		cr_expect_leq(delays[i], 1000, "delay %ld above backoff_max", delays[i]);
		int seen = 0;
		for (int j = 0; j < i; j++)
			seen |= delays[j] == delays[i];
		distinct += !seen;
	}
	cr_expect_geq(distinct, n / 2, "%d distinct delays of %d: no jitter?", distinct, n);
	cr_expect_geq(below, n / 2, "%d of %d delays below their window: no jitter?", below, n);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
}

/* A lost connection is likely the whole fleet's (a broker restart): the first retry is drawn
 * from [0, reconnect_spread] and the windows double from there, while a device that has not
 * connected yet starts from backoff_min. */
Test(device, spreads_its_first_reconnect_after_a_lost_connection, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	const char *extra[] = {"--backoff-min", "100ms", "--backoff-max", "6s",
			       "--reconnect-spread", "1500ms", NULL};
	h_device_start(&d, &b, "dev-a", extra);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_births_at_least, 1, &v));
	cr_expect_eq(h_log_count(d.log, "reconnecting in"), 0, "%s", d.log);
	h_fakebridge_stop(fb);
	h_broker_stop(&b);
	cr_assert(h_log_wait(d.log, "at random in 0..6000)", 1, 30000), "log %s", d.log);
	/* lost: 1.5 s; then failures: 3 s, 6 s (backoff_max) */
	const char *windows[] = {"connection lost", "(at random in 0..1500)",
				 "cannot connect", "(at random in 0..3000)",
				 "cannot connect", "(at random in 0..6000)"};
	const long caps[] = {1500, 3000, 6000};
	FILE *f = fopen(d.log, "r");
	char line[1024];
	int n = 0, below = 0;
	while (f && fgets(line, sizeof(line), f) && n < 3) {
		if (!strstr(line, "reconnecting in "))
			continue;
		cr_expect(strstr(line, windows[2 * n]) && strstr(line, windows[2 * n + 1]),
			  "retry %d: %s", n + 1, line);
		long delay = strtol(strstr(line, "reconnecting in ") + 16, NULL, 10);
		cr_expect(delay >= 0 && delay <= caps[n], "retry %d: %s", n + 1, line);
		below += delay < caps[n];
		n++;
	}
	if (f)
		fclose(f);
	cr_expect_eq(n, 3, "%s", d.log);
	/* drawn at random in each window, not its end: all three at the end is 1 in ~2.7e10 */
	cr_expect_geq(below, 1, "every delay was its whole window: no jitter? (%s)", d.log);
	h_device_free(&d);
	h_broker_free(&b);
}

/* Sum the rows of the batches the device logged with seq <= max_seq, and the largest seq. */
static uint64_t logged_rows(const char *log, uint64_t *max_seq)
{
	FILE *f = fopen(log, "r");
	char line[1024];
	uint64_t rows = 0;
	*max_seq = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long seq;
		size_t readings, r;
		char *p = strstr(line, "debug: batch ");
		if (p && sscanf(p, "debug: batch %llu: %zu readings in %zu rows", &seq, &readings, &r) == 3) {
			rows += r;
			if (seq > *max_seq)
				*max_seq = seq;
		}
	}
	if (f)
		fclose(f);
	return rows;
}

Test(device, outage_loses_nothing_and_spool_empties_only_on_acks, .timeout = 120)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NONE);
	h_device_start(&d, &b, "dev-a", NULL);

	/* no acks yet: data arrives, but the spool must keep all of it */
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_readings_at_least, 40, &v));
	h_sleep_ms(1500);
	kill(d.pid, SIGUSR1); /* reconnect: the new Birth reports the spool */
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_births_at_least, 2, &v));
	cr_expect_geq(v.last_spool_records, v.batches > 0 ? v.batches - 1 : 0,
		      "unacknowledged data left the spool (%llu records, %llu batches seen)",
		      (unsigned long long)v.last_spool_records, (unsigned long long)v.batches);
	cr_expect_gt(v.last_spool_records, 0);

	/* acks again, then a broker outage during sampling */
	h_fakebridge_mode(fb, H_ACK_NORMAL);
	h_sleep_ms(1500);
	h_fakebridge_stop(fb);
	int connects = h_count_in_file(d.log, "connected to");
	h_broker_stop(&b);
	h_sleep_ms(4000);
	h_broker_start(&b, h_pki());
	fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	for (int i = 0; i < 200 && h_count_in_file(d.log, "connected to") <= connects; i++)
		h_sleep_ms(100);
	cr_assert_gt(h_count_in_file(d.log, "connected to"), connects, "no reconnect");
	/* the fake bridge's session queued the Birth if the device was back first */
	cr_assert(h_fakebridge_wait(fb, "dev-a", 20000, h_view_births_at_least, 1, &v), "no Birth after reconnect");
	h_sleep_ms(2000);
	uint64_t max_seq, rows = logged_rows(d.log, &max_seq);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 30000, h_view_frontier_at_least, max_seq, &v),
		  "frontier %llu never reached batch %llu", (unsigned long long)v.frontier,
		  (unsigned long long)max_seq);

	/* every sample row the device sealed since the outage began is here, in order: the
	 * fake bridge only kept what arrived after its restart, so count rows of one metric
	 * there against the time span */
	int64_t t[4000];
	double val[4000];
	size_t n = h_fakebridge_series(fb, "dev-a", "sim.sensor_0001", t, val, 4000);
	cr_assert_gt(n, 20);
	for (size_t i = 1; i < n; i++) {
		cr_expect_gt(t[i], t[i - 1], "out of order at %zu", i);
		cr_expect_leq(t[i] - t[i - 1], 600, "a %lld ms hole in the data at %zu",
			      (long long)(t[i] - t[i - 1]), i);
		cr_expect_geq(val[i], val[i - 1], "a counter went backwards");
	}
	cr_expect(v.in_order);
	cr_log_info("%zu rows of sim.sensor_0001 after the outage, %llu rows logged in total", n,
		    (unsigned long long)rows);

	/* and the spool is empty again once everything was acknowledged */
	int births = (int)v.births;
	kill(d.pid, SIGUSR1);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_births_at_least, (uint64_t)births + 1, &v));
	cr_expect_leq(v.last_spool_records, 2, "spool still holds %llu records",
		      (unsigned long long)v.last_spool_records);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	cr_assert(f && fputs(text, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

/* The wall clock steps back an hour in the middle of a batch (NTP, a device without a
 * real-time clock): the batch so far is sealed, the next sample starts a new one, and every
 * sample on both sides of the step arrives. */
Test(device, a_clock_step_back_seals_the_batch_and_loses_no_sample, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	char *dir = h_tmpdir("clock");
	char *shift = h_strf("%s/shift_ms", dir);
	write_text(shift, "0");
	d.clock_shift = shift;
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	const char *const extra[] = {"--batch-interval", "4s", NULL};
	h_device_start(&d, &b, "dev-a", extra);
	cr_assert(h_log_wait(d.log, "debug: batch ", 1, 20000), "no batch sealed: %s", d.log);
	h_sleep_ms(1500); /* mid-batch: several samples buffered */
	write_text(shift, "-3600000");
	cr_assert(h_log_wait(d.log, "batch sealed early", 1, 5000), "the step sealed nothing: %s",
		  d.log);
	uint64_t before = h_log_count(d.log, "debug: batch ");
	cr_assert(h_log_wait(d.log, "debug: batch ", (int)before + 1, 10000));
	cr_expect_eq(h_device_stop(&d), 0);
	uint64_t max_seq;
	logged_rows(d.log, &max_seq);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_frontier_at_least, max_seq, &v));
	cr_expect_eq(h_log_count(d.log, "dropping"), 0, "readings dropped: %s", d.log);

	int64_t t[1000];
	double val[1000];
	size_t n = h_fakebridge_series(fb, "dev-a", "sim.sensor_0001", t, val, 1000);
	cr_assert_gt(n, 20);
	int steps = 0;
	for (size_t i = 1; i < n; i++) {
		int64_t dt = t[i] - t[i - 1];
		if (dt < -3500000 && dt > -3700000) {
			steps++;
			continue;
		}
		cr_expect(dt > 0 && dt <= 600, "a %lld ms hole in the data at %zu of %zu",
			  (long long)dt, i, n);
	}
	cr_expect_eq(steps, 1, "the series shows the step back once");
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
	free(shift);
	free(dir);
}

Test(device, forged_ack_deletes_nothing, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_FORGED);
	h_device_start(&d, &b, "dev-a", NULL);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_readings_at_least, 50, &v));
	cr_assert(h_log_wait(d.log, "ignored an ack that failed verification", 2, 10000));
	kill(d.pid, SIGUSR1);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_births_at_least, 2, &v));
	cr_expect_geq(v.last_spool_records, v.batches, "forged acks deleted spooled data (%llu left of %llu)",
		      (unsigned long long)v.last_spool_records, (unsigned long long)v.batches);
	cr_expect_gt(v.batches, 1);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
}

/* Acks beyond anything the device sent (a bridge whose store was restored over a state
 * directory that was reset, say) delete nothing, and the device says so once per ten minutes,
 * not once per ack, counting them. */
Test(device, acks_beyond_the_spool_delete_nothing_and_are_reported_once, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	const char *warn = "ignored, nothing deleted; was the device's state directory reset?";
	const char *const info[] = {"--log-level", "info", NULL}; /* debug logs every one */
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_FUTURE);
	h_device_start(&d, &b, "dev-a", info);
	/* an ack for each: three batches, and the Birth sent again for want of an ack */
	cr_assert(h_fakebridge_wait(fb, "dev-a", 20000, h_view_batches_at_least, 3, &v));
	cr_assert(h_fakebridge_wait(fb, "dev-a", 20000, h_view_births_at_least, 2, &v));
	h_sleep_ms(1000); /* the last ack arrives */
	cr_expect_eq(h_log_count(d.log, warn), 1, "not warned of exactly once: %s", d.log);
	cr_expect(h_log_count(d.log, "beyond anything this spool handed out (next "),
		  "the warning does not name the ack: %s", d.log);
	kill(d.pid, SIGUSR1);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_births_at_least, v.births + 1, &v));
	cr_expect_geq(v.last_spool_records, v.batches, "acks from the future deleted spooled data "
		      "(%llu left of %llu)", (unsigned long long)v.last_spool_records,
		      (unsigned long long)v.batches);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
}

/* The last "birth:" line of a device log: its spool records and chain floor; and how many
 * batches the device logged before it with a seq above that floor (they must still be in the
 * spool: only an ack deletes, and the floor is never below the cumulative ack point). Returns
 * the number of births logged. */
static int last_birth(const char *log, uint64_t *records, uint64_t *floor, uint64_t *above)
{
	FILE *f = fopen(log, "r");
	char line[1024];
	int births = 0;
	uint64_t batch_seqs[4096];
	size_t nb = 0, nb_at_birth = 0;
	*records = *floor = *above = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long seq, r, fl;
		size_t m;
		char *p;
		if ((p = strstr(line, "debug: batch ")) && sscanf(p, "debug: batch %llu:", &seq) == 1) {
			if (nb < sizeof(batch_seqs) / sizeof(batch_seqs[0]))
				batch_seqs[nb++] = seq;
		} else if ((p = strstr(line, "debug: birth: ")) &&
			   sscanf(p, "debug: birth: %zu metrics, spool %llu records, floor %llu", &m,
				  &r, &fl) == 3) {
			births++;
			*records = r;
			*floor = fl;
			nb_at_birth = nb;
		}
	}
	if (f)
		fclose(f);
	for (size_t i = 0; i < nb_at_birth; i++)
		*above += batch_seqs[i] > *floor;
	return births;
}

/* The n-th (from 0) batch seq the device logged; 0 if there are not that many. */
static uint64_t logged_batch(const char *log, int n)
{
	FILE *f = fopen(log, "r");
	char line[1024];
	uint64_t out = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long seq;
		char *p = strstr(line, "debug: batch ");
		if (p && sscanf(p, "debug: batch %llu:", &seq) == 1 && n-- == 0) {
			out = seq;
			break;
		}
	}
	if (f)
		fclose(f);
	return out;
}

/* Seal a message body of `kind` (outpost.Ack or TaskList, packed as ack_kind) for dev-a with
 * the bridge key. A TaskList with poll_seq s and an Ack with upto s are the same bytes (field 1,
 * a varint): only the envelope kind tells them apart. */
static uint8_t *bridge_sealed(struct wire_key *k, uint32_t kind, uint64_t upto, size_t *len)
{
	Outpost__Ack a = OUTPOST__ACK__INIT;
	Outpost__TaskList l = OUTPOST__TASK_LIST__INIT;
	uint8_t *body, *env;
	size_t blen;
	a.upto = upto;
	l.poll_seq = upto;
	if (kind == WIRE_KIND_ACK)
		cr_assert_eq(wire_msg_pack(kind, &a.base, &body, &blen, NULL), 0);
	else
		cr_assert_eq(wire_msg_pack(kind, &l.base, &body, &blen, NULL), 0);
	struct wire_env e = {.kind = kind, .seq = upto, .sent_at_ms = 1, .body = body,
			     .body_len = blen};
	snprintf(e.device_id, sizeof(e.device_id), "dev-a");
	cr_assert_eq(wire_env_seal(k, &e, &env, len), 0);
	free(body);
	return env;
}

/* Publish as the bridge (QoS 1) and wait for the n-th device log line naming it. */
static void hostile_pub(struct h_mqtt *c, const struct h_device *d, const char *topic,
			const void *msg, size_t len, const char *log_line, int n)
{
	cr_assert_eq(h_mqtt_pub(c, topic, msg, len, 1, 0), 0, "publish on %s", topic);
	cr_expect(h_log_wait(d->log, log_line, n, 10000), "no '%s' (x%d) after a message on %s: %s",
		  log_line, n, topic, d->log);
}

/* A reconnect (SIGUSR1) and its Birth: the spool as the device sees it then. */
static void rebirth(const struct h_device *d, int births, uint64_t *records, uint64_t *floor,
		    uint64_t *above)
{
	kill(d->pid, SIGUSR1);
	cr_assert(h_log_wait(d->log, "debug: birth: ", births, 15000), "no Birth %d: %s", births,
		  d->log);
	cr_assert_eq(last_birth(d->log, records, floor, above), births);
	cr_expect_eq(h_wait_exit(d->pid, 0), -1, "the agent exited: %s", d->log);
	cr_expect_geq(*records, *above, "spooled data above the floor %llu was deleted (%llu "
		      "records left, %llu batches logged above it): %s", (unsigned long long)*floor,
		      (unsigned long long)*records, (unsigned long long)*above, d->log);
}

/* Whoever holds the bridge's identity on the internal listener can put anything on a device's
 * downlink topics, the real bridge's messages are reordered or late: what does not decode, a
 * signed message of the wrong kind on either topic, and an ack older than one applied are
 * each logged and change nothing. The acked position only moves forward. */
Test(device, bad_downlink_messages_are_logged_and_change_nothing, .timeout = 120)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	/* no fake bridge: the only acks are ours (and Paho's synchronous clients do not share a
	 * process well: one's receive loop can take the other's handshake) */
	h_broker_start(&b, h_pki());
	/* no ack comes but ours: without a long ack timeout the device would also send its Birth
	 * again after each timeout (DEVICE.md, lost Birth), and Births are what this test counts */
	const char *extra[] = {"--ack-timeout", "1h", NULL};
	h_device_start(&d, &b, "dev-a", extra);
	cr_assert(h_log_wait(d.log, "debug: batch ", 4, 20000), "log %s", d.log);
	uint64_t records, floor0, floor, above;
	cr_assert_geq(last_birth(d.log, &records, &floor0, &above), 1);

	char *uri = h_strf("ssl://127.0.0.1:%d", b.internal_port);
	int why = 0;
	struct h_mqtt *c = h_mqtt_connect(uri, b.pki, "bridge", "outpost-bridge-hostile", &why);
	cr_assert_not_null(c, "Paho %d", why);
	struct wire_key *bk = h_pki_key("bridge");
	const char *ack_t = "outpost/v1/dev-a/ack", *tasks_t = "outpost/v1/dev-a/tasks";
	const char *bad_ack = "ignored an ack that failed verification: ";
	char *garbage_ack = h_strf("%smalformed message: Envelope: unknown field 12", bad_ack);
	char *kind_ack = h_strf("%sunexpected message kind", bad_ack);

	/* the newest batch logged: if a hostile message were taken as an ack up to it, the spool
	 * would be emptied */
	uint64_t newest = logged_batch(d.log, 3);
	cr_assert_gt(newest, floor0);
	size_t len;
	uint8_t *env;
	hostile_pub(c, &d, ack_t, "garbage", 7, garbage_ack, 1);
	hostile_pub(c, &d, tasks_t, "garbage", 7,
		    "ignored an unreadable task list: Envelope: unknown field 12", 1);
	env = bridge_sealed(bk, WIRE_KIND_TASK_LIST, newest, &len);
	hostile_pub(c, &d, ack_t, env, len, kind_ack, 1);
	free(env);
	env = bridge_sealed(bk, WIRE_KIND_ACK, newest, &len);
	hostile_pub(c, &d, tasks_t, env, len, "ignored an unreadable task list: unexpected message kind",
		    1);
	free(env);
	rebirth(&d, 2, &records, &floor, &above);
	cr_expect_eq(floor, floor0, "a bad downlink message moved the acked position");

	/* an ack up to the second batch logged, then an older one (the first batch) */
	uint64_t newer = logged_batch(d.log, 1), older = logged_batch(d.log, 0);
	cr_assert(older > floor0 && newer > older, "batches %llu %llu", (unsigned long long)older,
		  (unsigned long long)newer);
	env = bridge_sealed(bk, WIRE_KIND_ACK, newer, &len);
	cr_assert_eq(h_mqtt_pub(c, ack_t, env, len, 1, 0), 0);
	free(env);
	/* a marker after it on the same topic: once it is logged, the ack was handled */
	hostile_pub(c, &d, ack_t, "garbage", 7, garbage_ack, 2);
	rebirth(&d, 3, &records, &floor, &above);
	cr_expect_eq(floor, newer, "a signed ack up to %llu was not applied",
		     (unsigned long long)newer);
	env = bridge_sealed(bk, WIRE_KIND_ACK, older, &len);
	cr_assert_eq(h_mqtt_pub(c, ack_t, env, len, 1, 0), 0);
	free(env);
	hostile_pub(c, &d, ack_t, "garbage", 7, garbage_ack, 3);
	rebirth(&d, 4, &records, &floor, &above);
	cr_expect_eq(floor, newer, "an older ack moved the acked position from %llu",
		     (unsigned long long)newer);
	cr_expect_eq(h_log_count(d.log, bad_ack), 4, "only the bad ones were refused: %s", d.log);
	cr_expect_eq(h_device_stop(&d), 0, "clean stop exits 0");

	wire_key_free(bk);
	free(garbage_ack);
	free(kind_ack);
	h_mqtt_close(c);
	free(uri);
	h_device_free(&d);
	h_broker_free(&b);
}

Test(device, rss_stable_across_200_reconnects, .timeout = 300)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	const char *extra[] = {"--log-level", "warn", "--sample-interval", "1s", "--batch-interval", "5s", NULL};
#ifdef __SANITIZE_ADDRESS__
	/* ASan keeps freed memory in quarantine (256 MiB by default), which would look like a
	 * leak here; LeakSanitizer checks real leaks when the device exits */
	setenv("ASAN_OPTIONS", "detect_leaks=1:quarantine_size_mb=0:thread_local_quarantine_size_kb=0", 1);
#endif
	h_device_start(&d, &b, "dev-a", extra);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_births_at_least, 1, &v));
	long rss10 = 0, rss200 = 0;
	for (int i = 1; i <= 200; i++) {
		kill(d.pid, SIGUSR1);
		cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_births_at_least, (uint64_t)i + 1, &v),
			  "cycle %d: no reconnect", i);
		if (i == 10)
			rss10 = h_rss_kib(d.pid);
	}
	h_sleep_ms(300);
	rss200 = h_rss_kib(d.pid);
	cr_log_info("RSS after 10 reconnects %ld KiB, after 200: %ld KiB", rss10, rss200);
	cr_expect_gt(rss10, 0);
#ifdef __SANITIZE_ADDRESS__
	const long bound = 4096; /* allocator caches of the sanitizer runtime */
#else
	const long bound = 1024;
#endif
	cr_expect_leq(rss200 - rss10, bound, "RSS grew by %ld KiB over 190 reconnects", rss200 - rss10);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
}

static int run_device(const char *args, char **out)
{
	char *cmd = h_strf("%s %s", OUTPOST_DEVICE_BIN, args);
	int rc = h_sh(cmd, out, 20);
	free(cmd);
	return rc;
}

/* wolfSSL and OpenSSL share a process in each program: Paho's TLS (device), libmosquitto's and
 * libpq's (bridge, outpostctl) are OpenSSL. wolfSSL exports some functions under OpenSSL's
 * names, and the dynamic linker binds libssl, libcrypto, Paho, libmosquitto and libpq to
 * wolfSSL for one of them only: SSL_COMP_get_compression_methods, whose stub leaves TLS
 * compression off (docs/DEVICE.md, The link). A library update that adds another binding,
 * which could hand OpenSSL a wolfSSL object, fails here. */
Test(device, openssl_binds_to_wolfssl_only_where_known)
{
	char *bins[] = {h_strf("%s", OUTPOST_DEVICE_BIN),
	                h_strf("%s/bridge/outpost-bridge", h_build_dir()),
	                h_strf("%s/bridge/outpostctl", h_build_dir())};
	for (size_t i = 0; i < sizeof(bins) / sizeof(bins[0]); i++) {
		char *out = NULL;
		char *cmd = h_strf("LD_BIND_NOW=1 LD_DEBUG=bindings %s --version 2>&1 | "
		                   "grep -c \"binding file\"", bins[i]);
		cr_assert_eq(h_sh(cmd, &out, 20), 0, "%s: LD_DEBUG shows no binding: %s", bins[i], out);
		cr_assert_gt(atoi(out), 100, "%s: LD_DEBUG shows no binding: %s", bins[i], out);
		free(out);
		free(cmd);
		cmd = h_strf("LD_BIND_NOW=1 LD_DEBUG=bindings %s --version 2>&1 | grep -E \"binding "
		             "file [^ ]*(libssl|libcrypto|libpaho|libmosquitto|libpq)[^ ]* .* to "
		             "[^ ]*libwolfssl\"", bins[i]);
		out = NULL;
		h_sh(cmd, &out, 20); /* grep: 1 when there is none */
		for (char *line = out, *nl; line && *line; line = nl ? nl + 1 : NULL) {
			nl = strchr(line, '\n');
			if (nl)
				*nl = '\0';
			cr_expect(strstr(line, "`SSL_COMP_get_compression_methods'"),
			          "%s: OpenSSL's side binds to wolfSSL: %s", bins[i], line);
		}
		free(out);
		free(cmd);
		free(bins[i]);
	}
}

Test(device, configuration_errors_exit_2_naming_the_field)
{
	char *out = NULL;
	const char *pki = h_pki();
	cr_expect_eq(run_device("--help", &out), 0);
	cr_expect(strstr(out, "--sample-interval"), "%s", out);
	cr_expect(strstr(out, "config.override"), "the precedence names set_config: %s", out);
	free(out);
	cr_expect_eq(run_device("--version", &out), 0);
	cr_expect(strstr(out, "outpost-device "), "%s", out);
	free(out);

	char *dir = h_tmpdir("devconf");
	char *conf = h_strf("%s/device.conf", dir);
	FILE *f = fopen(conf, "w");
	fprintf(f, "# test\nid = dev-a\nsample_interval = 10 parsecs\n");
	fclose(f);
	char *args = h_strf("--config %s", conf);
	cr_expect_eq(run_device(args, &out), 2);
	char *want = h_strf("%s:3: sample_interval:", conf);
	cr_expect(strstr(out, want), "%s", out);
	free(out);
	free(want);
	free(args);

	f = fopen(conf, "w");
	fprintf(f, "id = dev-a\nbogus_key = 1\n");
	fclose(f);
	args = h_strf("--config %s", conf);
	cr_expect_eq(run_device(args, &out), 2);
	cr_expect(strstr(out, ":2: bogus_key: unknown setting"), "%s", out);
	free(out);
	free(args);

	/* the certificate must belong to the id */
	args = h_strf("--id dev-a --broker-host localhost --ca %s/ca.crt --cert %s/devices/dev-b.crt "
		      "--key %s/devices/dev-b.key --bridge-cert %s/bridge.crt --state-dir %s/s",
		      pki, pki, pki, pki, dir);
	cr_expect_eq(run_device(args, &out), 2);
	cr_expect(strstr(out, "cert: CN is 'dev-b', not the device id 'dev-a'"), "%s", out);
	free(out);
	free(args);

	/* acks are only trusted from the CA's outpost-bridge certificate */
	args = h_strf("--id dev-a --broker-host localhost --ca %s/ca.crt --cert %s/devices/dev-a.crt "
		      "--key %s/devices/dev-a.key --bridge-cert %s/devices/dev-b.crt --state-dir %s/s",
		      pki, pki, pki, pki, dir);
	cr_expect_eq(run_device(args, &out), 2);
	cr_expect(strstr(out, "bridge_cert: CN is 'dev-b'"), "%s", out);
	free(out);
	free(args);

	cr_expect_eq(run_device("--id dev-a", &out), 2);
	cr_expect(strstr(out, "broker_host: required"), "%s", out);
	free(out);
	/* an empty state_dir (an empty compose variable) is a configuration error */
	cr_expect_eq(run_device("--id dev-a --broker-host localhost --state-dir=", &out), 2);
	cr_expect(strstr(out, "state_dir: must not be empty"), "%s", out);
	free(out);

	/* an unreadable key names the file once, and why */
	args = h_strf("--id dev-a --broker-host localhost --ca %s/ca.crt --cert %s/devices/dev-a.crt "
		      "--key %s/nonexistent.key --bridge-cert %s/bridge.crt --state-dir %s/s",
		      pki, pki, dir, pki, dir);
	cr_expect_eq(run_device(args, &out), 2);
	cr_expect(strstr(out, "nonexistent.key: cannot read key: No such file or directory"), "%s",
		  out);
	cr_expect_eq(h_count(out, "nonexistent.key"), 1, "%s", out);
	free(out);
	free(args);
	cr_expect_eq(run_device("--id dev-a --broker-host localhost --transport carrier-pigeon", &out),
		     2);
	cr_expect(strstr(out, "'carrier-pigeon' is not one of: auto, wss, mqtts"), "%s", out);
	free(out);

	/* a port in broker_host was dialled as part of the name */
	cr_expect_eq(run_device("--id dev-a --broker-host localhost:8883", &out), 2);
	cr_expect(strstr(out, "broker_host: not a host name or IP address"), "%s", out);
	free(out);

	/* the settings together, of the configuration alone: the message names its file */
	f = fopen(conf, "w");
	fprintf(f, "id = dev-a\nbroker_host = localhost\nsample_interval = 30s\n"
		   "batch_interval = 20s\n");
	fclose(f);
	args = h_strf("--config %s --state-dir %s/s", conf, dir);
	cr_expect_eq(run_device(args, &out), 2);
	want = h_strf("%s: batch_interval: shorter than sample_interval", conf);
	cr_expect(strstr(out, want), "%s", out);
	free(want);
	free(out);
	free(args);

	/* a '/' in the proxy password: refused, and neither user nor password shown */
	args = h_strf("--id dev-a --broker-host localhost --ca %s/ca.crt "
		      "--cert %s/devices/dev-a.crt --key %s/devices/dev-a.key "
		      "--bridge-cert %s/bridge.crt --state-dir %s/s "
		      "--proxy http://alice:2024/pw@proxy.corp:3128",
		      pki, pki, pki, pki, dir);
	cr_expect_eq(run_device(args, &out), 2);
	cr_expect(strstr(out, "proxy: '/', '?' or '#' in the proxy user:password"), "%s", out);
	cr_expect_null(strstr(out, "alice"), "%s", out);
	cr_expect_null(strstr(out, "2024"), "%s", out);
	free(out);
	free(args);
	free(conf);
	free(dir);
}

/* The device certificate is checked against ca_file at start: one of another PKI would be
 * refused by the broker at every attempt, forever: exit 2, naming the file. One expired or not
 * yet valid is warned of, and the agent runs and samples into its spool (an exit would lose
 * every reading until it is renewed). */
Test(device, a_certificate_the_ca_does_not_vouch_for_exits_2_one_out_of_date_runs,
     .timeout = 60)
{
	const char *pki = h_pki(), *other = h_pki_other();
	char *dir = h_tmpdir("devcert");
	char *expired = h_pki_issue_dated("devcert-expired", "dev-a", "20200101000000Z",
					  "20210101000000Z");
	char *future = h_pki_issue_dated("devcert-future", "dev-a", "20900101000000Z",
					 "20991231000000Z");
	struct {
		const char *pki, *why;
		int exit;
	} cases[] = {
		{other, "not issued by the CA of ca_file", 2},
		{expired, "certificate: expired", 0},
		{future, "certificate: not yet valid", 0},
		{pki, NULL, 0}, /* the good one: it starts */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = NULL;
		char *args = h_strf("--id dev-a --broker-host localhost --ca %s/ca.crt "
				    "--cert %s/devices/dev-a.crt --key %s/devices/dev-a.key "
				    "--bridge-cert %s/bridge.crt --state-dir %s/s%zu "
				    "--collectors sim --proxy none --connect-timeout 1s & "
				    "sleep 2; kill $!; wait $!",
				    pki, cases[i].pki, cases[i].pki, pki, dir, i);
		int rc = run_device(args, &out);
		if (!cases[i].why) {
			cr_expect_eq(rc, 0, "the CA's certificate: exit %d: %s", rc, out);
			cr_expect_null(strstr(out, "cert:"), "%s", out);
		} else {
			char *want = h_strf("cert: %s/devices/dev-a.crt: %s", cases[i].pki,
					    cases[i].why);
			cr_expect_eq(rc, cases[i].exit, "%s: exit %d: %s", cases[i].why, rc, out);
			cr_expect(strstr(out, want), "want '%s': %s", want, out);
			if (!cases[i].exit)
				cr_expect(strstr(out, "sampling into the spool"), "%s", out);
			free(want);
		}
		free(out);
		free(args);
	}
	free(expired);
	free(future);
	free(dir);
}

/* The bridge certificate, whose key verifies acks and task lists, is checked at start as the
 * device's own is: one another CA issued (also out of its dates), or for another CN, exits 2
 * naming the file; one our CA issued to outpost-bridge out of its dates (or with the clock
 * wrong here) is warned of, and the agent runs with its key. An unreadable one is named as
 * such, not by the device certificate's warning. */
Test(device, a_bridge_cert_the_ca_does_not_vouch_for_exits_2_one_out_of_date_runs,
     .timeout = 90)
{
	const char *pki = h_pki(), *other = h_pki_other();
	char *dir = h_tmpdir("bridgecert");
	char *bridge_key = h_strf("%s/bridge.key", pki);
	char *expired = h_pki_issue_dated_by(pki, bridge_key, "bridgecert-expired",
					     "outpost-bridge", "20200101000000Z",
					     "20210101000000Z");
	char *future = h_pki_issue_dated_by(pki, bridge_key, "bridgecert-future", "outpost-bridge",
					    "20900101000000Z", "20991231000000Z");
	char *other_expired = h_pki_issue_dated_by(other, NULL, "bridgecert-other-expired",
						   "outpost-bridge", "20200101000000Z",
						   "20210101000000Z");
	char *cn_expired = h_pki_issue_dated("bridgecert-cn-expired", "dev-b", "20200101000000Z",
					     "20210101000000Z");
	char *dev_expired = h_pki_issue_dated("bridgecert-dev-expired", "dev-a",
					      "20200101000000Z", "20210101000000Z");
	char *bridge[] = {
	    h_strf("%s/bridge.crt", other),
	    h_strf("%s/devices/outpost-bridge.crt", other_expired),
	    h_strf("%s/devices/dev-b.crt", cn_expired),
	    h_strf("%s/devices/outpost-bridge.crt", expired),
	    h_strf("%s/devices/outpost-bridge.crt", future),
	    h_strf("%s/nonexistent.crt", dir),
	};
	char *ca = h_strf("%s/ca.crt", pki);
	struct {
		const char *dev; /* the PKI of the device's own certificate */
		char *why;
		int exit;
	} cases[] = {
	    {pki, h_strf("bridge_cert: %s: not issued by the CA of ca_file %s", bridge[0], ca), 2},
	    {pki, h_strf("bridge_cert: %s: not issued by the CA of ca_file %s", bridge[1], ca), 2},
	    {pki, h_strf("bridge_cert: CN is 'dev-b', not outpost-bridge"), 2},
	    {pki, h_strf("bridge_cert: %s: certificate: expired", bridge[3]), 0},
	    {pki, h_strf("bridge_cert: %s: certificate: not yet valid", bridge[4]), 0},
	    {dev_expired, h_strf("bridge_cert: %s: cannot read: No such file", bridge[5]), 2},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = NULL;
		char *args = h_strf("--id dev-a --broker-host localhost --ca %s "
				    "--cert %s/devices/dev-a.crt --key %s/devices/dev-a.key "
				    "--bridge-cert %s --state-dir %s/s%zu "
				    "--collectors sim --proxy none --connect-timeout 1s & "
				    "sleep 2; kill $!; wait $!",
				    ca, cases[i].dev, cases[i].dev, bridge[i], dir, i);
		int rc = run_device(args, &out);
		cr_expect_eq(rc, cases[i].exit, "%s: exit %d: %s", bridge[i], rc, out);
		cr_expect(strstr(out, cases[i].why), "want '%s': %s", cases[i].why, out);
		if (!cases[i].exit) {
			cr_expect(strstr(out, "warn: bridge_cert: "), "not a warning: %s", out);
			cr_expect(strstr(out, "acks and task lists are still verified with its key"),
				  "%s", out);
			cr_expect_eq(h_count(out, "bridge_cert:"), 1, "%s", out);
		}
		free(out);
		free(args);
		free(cases[i].why);
		free(bridge[i]);
	}
	free(ca);
	free(bridge_key);
	free(expired);
	free(future);
	free(other_expired);
	free(cn_expired);
	free(dev_expired);
	free(dir);
}

/* An expired bridge certificate still carries the bridge's key: the agent runs, warns, and
 * takes the bridge's acks (the spool drains; forged_ack_deletes_nothing is the other side). */
Test(device, a_bridge_cert_out_of_its_dates_still_verifies_acks, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	char *bridge_key = h_strf("%s/bridge.key", h_pki());
	char *expired = h_pki_issue_dated_by(h_pki(), bridge_key, "bridgecert-acks",
					     "outpost-bridge", "20200101000000Z",
					     "20210101000000Z");
	char *crt = h_strf("%s/devices/outpost-bridge.crt", expired);
	const char *const extra[] = {"--bridge-cert", crt, NULL};
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	h_device_start(&d, &b, "dev-a", extra);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 20000, h_view_batches_at_least, 4, &v),
		  "batches: %llu: %s", (unsigned long long)v.batches, d.log);
	char *warn = h_strf("warn: bridge_cert: %s: certificate: expired", crt);
	cr_expect_eq(h_log_count(d.log, warn), 1, "%s", d.log);
	h_sleep_ms(1000); /* the last ack arrives */
	kill(d.pid, SIGUSR1); /* reconnect: the new Birth reports the spool */
	cr_assert(h_fakebridge_wait(fb, "dev-a", 15000, h_view_births_at_least, v.births + 1, &v));
	cr_expect_leq(v.last_spool_records, 2, "the acks deleted nothing: %llu records of %llu "
		      "batches left: %s", (unsigned long long)v.last_spool_records,
		      (unsigned long long)v.batches, d.log);
	cr_expect_eq(h_log_count(d.log, "ignored an ack that failed verification"), 0, "%s",
		     d.log);
	cr_expect_eq(v.bad, 0);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
	free(warn);
	free(crt);
	free(expired);
	free(bridge_key);
}

/* The exec collector's command gets stdin, stdout and stderr of the agent and nothing else
 * (the agent holds its spool, its catalog and Paho's TLS connection to the broker, whose
 * socket is not close-on-exec); and an agent started with SIGCHLD ignored (a disposition that
 * survives exec) still learns its command's exit status. Each sample reports how many
 * descriptors the command's shell has: 0, 1, 2 and the one listing them opens. */
Test(device, exec_commands_get_no_descriptor_of_the_agent, .timeout = 60)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	static int64_t t[4000];
	static double val[4000];
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	const char *extra[] = {
	    "--collectors", "sim,exec", "--exec-command",
	    "n=0; for f in /proc/$$/fd/*; do n=$((n + 1)); done; echo exec.fds $n", NULL};
	struct sigaction ign = {.sa_handler = SIG_IGN}, old;
	sigemptyset(&ign.sa_mask);
	sigaction(SIGCHLD, &ign, &old);
	h_device_start(&d, &b, "dev-a", extra);
	sigaction(SIGCHLD, &old, NULL);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 20000, h_view_readings_at_least, 20, &v),
		  "no data: %s", d.log);
	cr_assert(h_log_wait(d.log, "connected to", 1, 10000), "%s", d.log);
	/* samples taken while connected: a batch (1 s) after the connection, and more */
	size_t n = 0;
	for (long long end = h_now_ms() + 15000; n < 15 && h_now_ms() < end; h_sleep_ms(100))
		n = h_fakebridge_series(fb, "dev-a", "exec.fds", t, val, 4000);
	cr_assert_geq(n, 15, "%zu readings of the command; %s", n, d.log);
	for (size_t i = 0; i < n; i++)
		cr_expect_eq(val[i], 4, "reading %zu: the command had %g descriptors", i, val[i]);
	cr_expect_eq(h_log_count(d.log, "collector exec:"), 0, "%s", d.log);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
}

/* A collector that fails fails at every sample: warned of once, again when the failure
 * changes, and its end said once; not a warning every sample (every 200 ms here, 10 s by
 * default: 8,640 lines a day for one broken exec command). */
Test(device, a_failing_collector_is_warned_of_once_per_failure, .timeout = 60)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	h_broker_start(&b, h_pki());
	char *dir = h_tmpdir("collect-fail"), *out = h_strf("%s/out", dir);
	char *cmd = h_strf("if [ -e %s ]; then sh %s; else exit 3; fi", out, out);
	/* at debug level every occurrence is logged */
	const char *extra[] = {"--log-level", "info", "--collectors", "sim,exec", "--exec-command",
			       cmd, NULL};
	h_device_start(&d, &b, "dev-a", extra);
	cr_assert(h_log_wait(d.log, "collector exec: command exited with an error", 1, 10000),
		  "%s", d.log);
	h_sleep_ms(3000); /* 15 more failed samples */
	cr_expect_eq(h_log_count(d.log, "collector exec:"), 1, "%s", d.log);
	cr_assert_eq(h_write_text(out, "echo t.x 1\n"), 0);
	cr_assert(h_log_wait(d.log, "collectors: sampling again", 1, 10000), "%s", d.log);
	cr_assert_eq(h_write_text(out, "echo t.x 1 u extra\n"), 0);
	cr_assert(h_log_wait(d.log, "collector exec: output lines", 1, 10000), "%s", d.log);
	h_sleep_ms(2000);
	cr_expect_eq(h_log_count(d.log, "collector exec:"), 2, "%s", d.log);
	cr_expect_eq(h_log_count(d.log, "sampling again"), 1, "%s", d.log);
	/* a failure that comes and goes (every other sample) is the same failure: its next end
	 * is said once, nothing more */
	char *flip = h_strf("%s/flip", dir);
	char *flap = h_strf("if [ -e %s ]; then rm %s; echo t.x 1; else touch %s; echo t.x 1 u x;"
			    " fi\n", flip, flip, flip);
	cr_assert_eq(h_write_text(out, flap), 0);
	cr_assert(h_log_wait(d.log, "sampling again", 2, 10000), "%s", d.log);
	h_sleep_ms(3000); /* 15 samples, every other one failing */
	cr_expect_eq(h_log_count(d.log, "collector exec:"), 2, "%s", d.log);
	cr_expect_eq(h_log_count(d.log, "sampling again"), 2, "%s", d.log);
	free(flap);
	free(flip);
	h_device_free(&d);
	h_broker_free(&b);
	free(cmd);
	free(out);
	free(dir);
}

static int polls_at_least(const struct h_device_view *v, uint64_t n)
{
	return v->polls >= n;
}

/* config.override from set_config tasks of long ago: one no longer fits the configuration
 * (sample_interval = 2s, above the batch_interval of 1 s the device now has), one is a setting
 * set_config may not change (written by hand). The agent starts all the same, and says which
 * lines of config.override it ignored; the one that fits applies. */
Test(device, starts_despite_an_override_the_configuration_refuses, .timeout = 60)
{
	struct h_broker b = {0};
	struct h_device d = {.id = strdup("dev-a"), .dir = h_tmpdir("device")};
	struct h_device_view v;
	d.log = h_strf("%s/device.log", d.dir);
	char *state = h_strf("%s/state", d.dir), *override = h_strf("%s/config.override", state);
	cr_assert_eq(mkdir(state, 0700), 0);
	FILE *f = fopen(override, "w");
	cr_assert_not_null(f);
	fputs("sample_interval = 2s\nexec_command = touch /tmp/outpost-owned\n"
	      "poll_interval = 1s\n", f);
	fclose(f);
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	h_device_start(&d, &b, "dev-a", NULL);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 20000, h_view_readings_at_least, 20, &v),
		  "no data: %s", d.log);
	char *line1 = h_strf("warn: %s:1: sample_interval = 2s: ignored: the settings with it are "
			     "refused (batch_interval: shorter than sample_interval)", override);
	char *line2 = h_strf("warn: %s:2: exec_command: ignored: not a setting set_config may "
			     "change", override);
	cr_expect_eq(h_log_count(d.log, line1), 1, "%s", d.log);
	cr_expect_eq(h_log_count(d.log, line2), 1, "%s", d.log);
	/* poll_interval = 1s applies (polls every second rather than every hour), the samples
	 * keep the configuration's 200 ms */
	cr_expect(h_fakebridge_wait(fb, "dev-a", 10000, polls_at_least, 3, &v), "%" PRIu64 " polls",
		  v.polls);
	static int64_t t[100];
	static double val[100];
	size_t n = h_fakebridge_series(fb, "dev-a", "collector.sim.ok", t, val, 100);
	cr_assert_geq(n, 2);
	cr_expect_lt(t[n - 1] - t[n - 2], 1000, "sampled every %" PRId64 " ms",
		     t[n - 1] - t[n - 2]);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
	free(line1);
	free(line2);
	free(override);
	free(state);
}

/* An override file that cannot be read (a directory in its place) does not stop the agent
 * either: it warns, naming the file and the error, and starts without the overrides (it exited
 * 2). */
Test(device, starts_despite_an_unreadable_override_file, .timeout = 60)
{
	struct h_broker b = {0};
	struct h_device d = {.id = strdup("dev-a"), .dir = h_tmpdir("device")};
	struct h_device_view v;
	d.log = h_strf("%s/device.log", d.dir);
	char *state = h_strf("%s/state", d.dir), *override = h_strf("%s/config.override", state);
	cr_assert_eq(mkdir(state, 0700), 0);
	cr_assert_eq(mkdir(override, 0700), 0);
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	h_device_start(&d, &b, "dev-a", NULL);
	cr_expect(h_fakebridge_wait(fb, "dev-a", 20000, h_view_readings_at_least, 5, &v),
		  "no data: %s", d.log);
	char *line = h_strf("warn: %s: read error (%s); the agent starts without the overrides",
			    override, strerror(EISDIR));
	cr_expect_eq(h_log_count(d.log, line), 1, "%s", d.log);
	cr_expect_eq(kill(d.pid, 0), 0, "%s", d.log);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
	free(line);
	free(override);
	free(state);
}

/* An agent started with descriptors 0-2 closed (a careless init script, `2>&-`) puts /dev/null
 * on them before it opens anything: its eventfd, spool segments or sockets took those numbers
 * and the log lines went into them (a spool segment corrupted). It runs, stops cleanly, and the
 * spool it wrote reads back whole at the next start. */
Test(device, starts_with_descriptors_0_to_2_closed, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	char *dir = h_tmpdir("nofds"), *script = h_strf("%s/outpost-device", dir);
	char *text = h_strf("#!/bin/sh\nexec '%s' \"$@\" <&- >&- 2>&-\n", OUTPOST_DEVICE_BIN);
	cr_assert_eq(h_write_text(script, text), 0);
	cr_assert_eq(chmod(script, 0755), 0);
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NONE);
	d.bin = script;
	h_device_start(&d, &b, "dev-a", NULL);
	cr_assert(h_fakebridge_wait(fb, "dev-a", 20000, h_view_batches_at_least, 3, &v),
		  "no data from the agent without descriptors 0-2");
	for (int fd = 0; fd < 3; fd++) {
		char *link = h_strf("/proc/%d/fd/%d", (int)d.pid, fd), target[256] = "";
		ssize_t n = readlink(link, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		cr_expect_str_eq(target, "/dev/null", "descriptor %d", fd);
		free(link);
	}
	cr_expect_eq(h_device_stop(&d), 0);
	/* what it spooled, unacknowledged, is read back whole and sent */
	uint64_t batches = v.batches;
	d.bin = NULL;
	h_fakebridge_mode(fb, H_ACK_NORMAL);
	h_device_start(&d, &b, "dev-a", NULL);
	cr_expect(h_fakebridge_wait(fb, "dev-a", 20000, h_view_frontier_at_least, batches, &v),
		  "frontier %" PRIu64 ": %s", v.frontier, d.log);
	cr_expect_eq(v.dropped, 0, "%s", d.log);
	cr_expect_eq(v.bad, 0, "%s", d.log);
	cr_expect_eq(h_log_count(d.log, "read error"), 0, "%s", d.log);
	cr_expect_eq(h_log_count(d.log, "damaged"), 0, "%s", d.log);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
	free(text);
	free(script);
	free(dir);
}

/* A stop while the broker's name is being looked up (a resolver that does not answer: 30 s
 * here, and connect_timeout does not bound it): the agent exits 0 within about
 * DEV_LINK_FREE_WAIT_MS, where it waited for the lookup to end (Paho's destroy waits for the
 * lock its thread holds through getaddrinfo). */
Test(device, a_stop_does_not_wait_for_a_slow_name_lookup, .timeout = 90)
{
	const char *pki = h_pki();
	char *dir = h_tmpdir("slowdns"), *log = h_strf("%s/device.log", dir);
	char *ca = h_strf("%s/ca.crt", pki), *cert = h_strf("%s/devices/dev-a.crt", pki);
	char *key = h_strf("%s/devices/dev-a.key", pki), *bridge = h_strf("%s/bridge.crt", pki);
	char *state = h_strf("%s/state", dir);
	const char *argv[] = {OUTPOST_DEVICE_BIN, "--id", "dev-a", "--broker-host",
			      "broker.slowdns.invalid", "--ca", ca, "--cert", cert, "--key", key,
			      "--bridge-cert", bridge, "--state-dir", state, "--collectors", "sim",
			      "--proxy", "none", "--log-level", "debug", NULL};
	const char *asan = getenv("ASAN_OPTIONS");
	char *env[] = {h_strf("LD_PRELOAD=%s", OUTPOST_SLOWDNS_LIB),
		       h_strf("OUTPOST_TEST_SLOW_DNS=broker.slowdns.invalid"),
		       /* the shim is loaded ahead of the sanitizer runtime */
		       h_strf("ASAN_OPTIONS=%s%sverify_asan_link_order=0", asan ? asan : "",
			      asan && *asan ? ":" : ""),
		       NULL};
	pid_t pid = h_spawn((char *const *)argv, env, log);
	cr_assert(h_log_wait(log, "slowdns: resolving broker.slowdns.invalid", 1, 15000),
		  "the agent did not dial: %s", log);
	h_sleep_ms(500); /* well inside the lookup */
	long long t0 = h_now_ms();
	cr_assert_eq(kill(pid, SIGTERM), 0);
	int st = h_wait_exit(pid, 20000);
	long long took = h_now_ms() - t0;
	if (st == -1)
		h_stop(pid, 1000);
	cr_expect_eq(st, 0, "exit status %d (-1: still running 20 s after SIGTERM): %s", st, log);
	cr_expect_lt(took, DEV_LINK_FREE_WAIT_MS + 3000, "the stop took %lld ms: %s", took, log);
	cr_expect_eq(h_count_in_file(log, "Sanitizer"), 0, "%s", log);
	for (int i = 0; env[i]; i++)
		free(env[i]);
	free(state);
	free(bridge);
	free(key);
	free(cert);
	free(ca);
	free(log);
	free(dir);
}

/* Start d (device dev-a) held early in its start: its config.override is a FIFO, which the
 * agent reads before it opens its spool. Returns the FIFO's write end once the agent has the
 * other end open (so it waits for the file's text, or its end: close the descriptor to let
 * the start go on). */
static int start_held(struct h_device *d, const struct h_broker *b)
{
	if (!d->id) {
		d->id = strdup("dev-a");
		d->dir = h_tmpdir("device");
		d->log = h_strf("%s/device.log", d->dir);
	}
	char *state = h_strf("%s/state", d->dir), *fifo = h_strf("%s/config.override", state);
	mkdir(state, 0700);
	unlink(fifo);
	cr_assert_eq(mkfifo(fifo, 0600), 0, "%s", fifo);
	h_device_start(d, b, "dev-a", NULL);
	int fd = -1;
	/* a writer's non-blocking open succeeds only once a reader has the FIFO open */
	for (int i = 0; i < 1000 && fd < 0; i++) {
		fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			h_sleep_ms(10);
	}
	cr_assert_geq(fd, 0, "the agent never read its config.override: %s", d->log);
	free(fifo);
	free(state);
	return fd;
}

/* Signals that come while the agent starts: the handlers are in place from the first moment.
 * A USR1 (reconnect) is ignored, where its default action killed the agent; a HUP or a TERM is
 * a stop, remembered until the agent has opened its state: it exits 0 without sampling or
 * connecting (HUP killed it, and TERM too, before the handlers were installed). */
Test(device, signals_during_start_up_are_handled, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	h_broker_start(&b, h_pki());
	int fd = start_held(&d, &b);
	h_sleep_ms(200);
	cr_assert_eq(kill(d.pid, SIGUSR1), 0);
	h_sleep_ms(300);
	close(fd);
	cr_expect(h_log_wait(d.log, "connected to", 1, 15000), "USR1 during start: %s", d.log);
	cr_expect_eq(kill(d.pid, 0), 0, "a USR1 during start killed the agent");
	cr_expect_eq(h_device_stop(&d), 0);
	const int stops[] = {SIGHUP, SIGTERM};
	for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++) {
		int started = h_log_count(d.log, "started: broker");
		fd = start_held(&d, &b);
		/* the agent is waiting in read() by now: the signal must not fail that read
		 * (without SA_RESTART: "config.override: read error", exit 2) */
		h_sleep_ms(200);
		cr_assert_eq(kill(d.pid, stops[i]), 0);
		h_sleep_ms(300);
		close(fd);
		int st = h_wait_exit(d.pid, 15000);
		if (st == -1)
			h_device_stop(&d);
		d.pid = 0;
		cr_expect_eq(st, 0, "signal %d during start: exit status %d: %s", stops[i], st,
			     d.log);
		cr_expect_eq(h_log_count(d.log, "started: broker"), started, "ran after signal %d",
			     stops[i]);
		cr_expect_eq(h_log_count(d.log, "stopping: asked to before the agent started"),
			     (int)i + 1, "%s", d.log);
		cr_expect_eq(h_log_count(d.log, "Sanitizer"), 0, "%s", d.log);
	}
	h_device_free(&d);
	h_broker_free(&b);
}

/* A stop seals the partial batch: with a 60 s batch, a TERM after ~3 s of sampling (and a HUP,
 * which stops the same way) puts the rows sampled so far into the spool, and the next start
 * sends them: the bridge acknowledges up to that batch. */
Test(device, a_stop_seals_the_partial_batch, .timeout = 120)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	struct h_device_view v;
	const char *const extra[] = {"--batch-interval", "60s", NULL};
	const int stops[] = {SIGTERM, SIGHUP};
	uint64_t rows_before = 0, max_seq = 0;
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++) {
		h_device_start(&d, &b, "dev-a", extra);
		cr_assert(h_log_wait(d.log, "connected to", (int)i + 1, 15000), "%s", d.log);
		h_sleep_ms(3000);
		int batches = h_log_count(d.log, "debug: batch ");
		cr_assert_eq(batches, (int)i, "a batch was sealed before the stop: %s", d.log);
		cr_assert_eq(kill(d.pid, stops[i]), 0);
		int st = h_wait_exit(d.pid, 10000);
		if (st == -1)
			h_device_stop(&d);
		d.pid = 0;
		cr_expect_eq(st, 0, "signal %d: exit status %d", stops[i], st);
		uint64_t rows = logged_rows(d.log, &max_seq);
		cr_expect_geq(rows - rows_before, 10, "signal %d: %llu rows sealed at the stop: %s",
			      stops[i], (unsigned long long)(rows - rows_before), d.log);
		rows_before = rows;
	}
	cr_assert_gt(max_seq, 0);
	h_device_start(&d, &b, "dev-a", extra);
	cr_expect(h_fakebridge_wait(fb, "dev-a", 20000, h_view_frontier_at_least, max_seq, &v),
		  "the batches sealed at the stops never arrived: frontier %llu, batch %llu",
		  (unsigned long long)v.frontier, (unsigned long long)max_seq);
	cr_expect_eq(v.bad, 0);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
}

/* The number an exec command's counter file holds (the samples it ran), 0 if none yet. */
static long samples_run(const char *counter)
{
	char *text = h_read_file(counter, NULL);
	long n = text ? strtol(text, NULL, 10) : 0;
	free(text);
	return n;
}

/* A full metric catalog (here an exec command makes up 256 new names at every sample, so that
 * 4,096 are reached in 16) refuses readings at every sample: that is warned of once, then at
 * most every 10 minutes (debug logging aside), where it was a warning per sample. */
Test(device, a_full_metric_catalog_is_warned_of_once, .timeout = 90)
{
	struct h_broker b = {0};
	struct h_device d = {0};
	char *dir = h_tmpdir("names"), *counter = h_strf("%s/n", dir);
	char *cmd = h_strf("i=$(cat %s 2>/dev/null || echo 0); echo $((i + 1)) > %s; awk -v s=$i "
			   "'BEGIN { for (k = 0; k < 256; k++) printf \"m%%d_%%d 1\\n\", s, k }'",
			   counter, counter);
	const char *const extra[] = {"--collectors", "exec", "--exec-command", cmd, "--log-level",
				     "info", NULL};
	h_broker_start(&b, h_pki());
	struct h_fakebridge *fb = h_fakebridge_start(&b, H_ACK_NORMAL);
	h_device_start(&d, &b, "dev-a", extra);
	cr_assert(h_log_wait(d.log, "exceeded the metric catalog", 1, 30000), "%s", d.log);
	long before = samples_run(counter);
	for (int i = 0; i < 100 && samples_run(counter) < before + 8; i++)
		h_sleep_ms(100);
	cr_assert_geq(samples_run(counter), before + 8, "the agent stopped sampling: %s", d.log);
	cr_expect_eq(h_log_count(d.log, "exceeded the metric catalog"), 1, "%s", d.log);
	cr_expect_eq(h_device_stop(&d), 0);
	h_device_free(&d);
	h_fakebridge_stop(fb);
	h_broker_free(&b);
	free(cmd);
	free(counter);
	free(dir);
}
