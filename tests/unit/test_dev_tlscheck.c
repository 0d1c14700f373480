/* test_dev_tlscheck.c - the certificate check against loopback peers that are not brokers: it
 * ends within its time limit whatever the peer (or the resolver) does, and names the server it
 * asks for (SNI) as Paho does. Verdicts on real certificates: test_device.c. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dev_tlscheck.h"
#include "harness.h"

#define SLOW_NAME "slow-resolver.test"
#define SLOW_DNS_MS 5000

static atomic_int slow_lookups_running;

/* The resolver, as this process sees it: SLOW_NAME takes SLOW_DNS_MS to fail (a resolver
 * waiting for servers that do not answer); every other name goes to the C library. */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		struct addrinfo **res)
{
	typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *,
			      struct addrinfo **);
	if (node && !strcmp(node, SLOW_NAME)) {
		atomic_fetch_add(&slow_lookups_running, 1);
		h_sleep_ms(SLOW_DNS_MS);
		atomic_fetch_sub(&slow_lookups_running, 1);
		return EAI_AGAIN;
	}
	gai_fn real = (gai_fn)(uintptr_t)dlsym(RTLD_NEXT, "getaddrinfo");
	return real ? real(node, service, hints, res) : EAI_SYSTEM;
}

static char *ca_file(void)
{
	return h_strf("%s/ca.crt", h_pki());
}

enum peer_mode {
	DRIP,          /* a TLS record header announcing 16 KB, then one byte a second */
	SILENT,        /* reads, never writes */
	CAPTURE_HELLO, /* keeps the first TLS record it receives, then closes */
	PROXY_DRIP,    /* an HTTP CONNECT proxy that grants the tunnel, then drips as DRIP */
};

struct peer {
	int lfd, port;
	enum peer_mode mode;
	pthread_t t;
	unsigned char hello[17000];
	size_t hello_len;
};

/* Read until the peer closes or fails, or n bytes (0 = forever). */
static size_t read_some(int fd, unsigned char *buf, size_t n)
{
	size_t got = 0;
	for (;;) {
		unsigned char sink[512];
		unsigned char *to = n ? buf + got : sink;
		size_t room = n ? n - got : sizeof(sink);
		if (n && !room)
			return got;
		ssize_t r = read(fd, to, room);
		if (r <= 0)
			return got;
		got += (size_t)r;
	}
}

/* Drip for at most 30 s, or until the check hangs up. */
static void drip(int fd)
{
	static const unsigned char head[] = {0x16, 0x03, 0x03, 0x40, 0x00};
	for (size_t i = 0; i < 30; i++) {
		unsigned char b = i < sizeof(head) ? head[i] : 0;
		if (send(fd, &b, 1, MSG_NOSIGNAL) != 1)
			return;
		h_sleep_ms(i < sizeof(head) ? 0 : 1000);
	}
}

static void *peer_run(void *arg)
{
	struct peer *p = arg;
	int fd = accept(p->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	if (p->mode == PROXY_DRIP) {
		unsigned char req[2048];
		size_t got = 0;
		while (got < sizeof(req) - 1 && (got < 4 || memcmp(req + got - 4, "\r\n\r\n", 4)) &&
		       read(fd, req + got, 1) == 1)
			got++;
		static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
		if (send(fd, ok, sizeof(ok) - 1, MSG_NOSIGNAL) == (ssize_t)sizeof(ok) - 1)
			drip(fd);
	} else if (p->mode == DRIP) {
		drip(fd);
	} else if (p->mode == SILENT) {
		read_some(fd, NULL, 0);
	} else {
		/* one record: its 5-byte header says how long it is */
		p->hello_len = read_some(fd, p->hello, 5);
		if (p->hello_len == 5)
			p->hello_len += read_some(fd, p->hello + 5,
						  (size_t)(p->hello[3] << 8 | p->hello[4]));
	}
	close(fd);
	return NULL;
}

static void peer_start(struct peer *p, enum peer_mode mode)
{
	memset(p, 0, sizeof(*p));
	p->mode = mode;
	p->lfd = h_listen_loopback(1, &p->port);
	cr_assert_eq(pthread_create(&p->t, NULL, peer_run, p), 0);
}

static void peer_stop(struct peer *p)
{
	shutdown(p->lfd, SHUT_RDWR); /* a peer never dialled stops waiting in accept */
	pthread_join(p->t, NULL);
	close(p->lfd);
}

/* The check against host:port through proxy must be over within limit_ms (plus scheduling
 * slack) without a verdict, and say why in a line containing expect. */
static void expect_gives_up(const char *host, int port, const char *proxy, int limit_ms,
			    const char *expect)
{
	char why[512], *ca = ca_file();
	long long t0 = h_now_ms();
	enum dev_tlscheck_result r =
		dev_tlscheck(host, port, ca, proxy, limit_ms, why, sizeof(why));
	long long took = h_now_ms() - t0;
	cr_expect_eq(r, DEV_TLSCHECK_UNKNOWN, "%s", why);
	cr_expect_lt(took, limit_ms + 500, "took %lld ms with a limit of %d ms: %s", took, limit_ms,
		     why);
	cr_expect(strstr(why, expect), "%s", why);
	free(ca);
}

/* A peer that sends a byte a second (each read waits less than any per-read timeout) keeps the
 * handshake going for as long as it likes, unless the check has one deadline for the whole. */
Test(dev_tlscheck, a_peer_that_drips_bytes_cannot_stretch_the_check, .timeout = 60)
{
	struct peer p;
	peer_start(&p, DRIP);
	expect_gives_up("localhost", p.port, NULL, 2500, "TLS handshake was not over within");
	peer_stop(&p);
}

Test(dev_tlscheck, a_silent_peer_or_proxy_gives_no_verdict_in_time, .timeout = 60)
{
	struct peer p;
	peer_start(&p, SILENT);
	expect_gives_up("127.0.0.1", p.port, NULL, 1500, "TLS handshake was not over within");
	peer_stop(&p);
	/* a proxy that never answers CONNECT: its wait is part of the whole */
	peer_start(&p, SILENT);
	char *proxy = h_strf("127.0.0.1:%d", p.port);
	expect_gives_up("broker.test", 8883, proxy, 1500, "no reply to CONNECT in time");
	free(proxy);
	peer_stop(&p);
}

/* Through a proxy: the tunnel is granted, then the far end drips. The deadline runs from the
 * start, across the proxy's reply. */
Test(dev_tlscheck, the_deadline_holds_through_a_proxy_tunnel, .timeout = 60)
{
	struct peer p;
	peer_start(&p, PROXY_DRIP);
	char *proxy = h_strf("127.0.0.1:%d", p.port);
	expect_gives_up("broker.test", 8883, proxy, 2500, "TLS handshake was not over within");
	free(proxy);
	peer_stop(&p);
}

/* A resolver that takes its time (servers that do not answer: half a minute and more with
 * glibc's retries) holds up the check no longer than its limit. */
Test(dev_tlscheck, a_slow_resolver_cannot_stretch_the_check, .timeout = 60)
{
	expect_gives_up(SLOW_NAME, 8883, NULL, 1500, "cannot resolve " SLOW_NAME ": no answer");
	/* through a proxy named so: the same */
	expect_gives_up("broker.test", 8883, SLOW_NAME ":3128", 1500,
			"cannot resolve " SLOW_NAME ": no answer");
	/* the abandoned lookups finish (and free what they hold) by themselves */
	long long end = h_now_ms() + 2 * SLOW_DNS_MS;
	while (atomic_load(&slow_lookups_running) && h_now_ms() < end)
		h_sleep_ms(50);
	cr_expect_eq(atomic_load(&slow_lookups_running), 0);
	h_sleep_ms(100);
}

/* The bytes of a server_name extension (RFC 6066 section 3) naming host. */
static size_t sni_ext(const char *host, unsigned char *out)
{
	size_t len = strlen(host), n = 0;
	const unsigned char head[] = {0x00, 0x00, /* extension type: server_name */
				      (unsigned char)((len + 5) >> 8), (unsigned char)(len + 5),
				      (unsigned char)((len + 3) >> 8), (unsigned char)(len + 3),
				      0x00, /* host_name */
				      (unsigned char)(len >> 8), (unsigned char)len};
	memcpy(out, head, sizeof(head));
	n += sizeof(head);
	memcpy(out + n, host, len);
	return n + len;
}

/* Paho sends the broker's name in its ClientHello, so a front end that routes TLS by name
 * (SNI) shows the broker's certificate; the check must ask the same way, or it judges the
 * front end's default certificate. An address is never sent as a name (RFC 6066). */
Test(dev_tlscheck, the_client_hello_names_the_broker, .timeout = 60)
{
	struct peer p;
	char why[512], *ca = ca_file();
	unsigned char want[300];
	size_t wlen = sni_ext("localhost", want);
	peer_start(&p, CAPTURE_HELLO);
	cr_expect_eq(dev_tlscheck("localhost", p.port, ca, NULL, 3000, why, sizeof(why)),
		     DEV_TLSCHECK_UNKNOWN, "%s", why);
	peer_stop(&p);
	cr_assert_gt(p.hello_len, 5, "no ClientHello");
	cr_expect_eq(p.hello[0], 0x16, "not a handshake record");
	cr_expect_not_null(memmem(p.hello, p.hello_len, want, wlen),
			   "no server_name extension for localhost in the ClientHello");

	peer_start(&p, CAPTURE_HELLO);
	cr_expect_eq(dev_tlscheck("127.0.0.1", p.port, ca, NULL, 3000, why, sizeof(why)),
		     DEV_TLSCHECK_UNKNOWN, "%s", why);
	peer_stop(&p);
	cr_assert_gt(p.hello_len, 5, "no ClientHello");
	cr_expect_null(memmem(p.hello, p.hello_len, "127.0.0.1", 9),
		       "an address was sent as the server name");
	free(ca);
}
