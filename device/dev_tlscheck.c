/* dev_tlscheck.c - see dev_tlscheck.h. */
#include "dev_tlscheck.h"
#include "dev_proxy.h"
#include "ocall.h"
#include "otime.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

static int is_ip(const char *host)
{
	unsigned char buf[16];
	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* What is left of the time until deadline (monotonic ms), 0 once it has passed. */
static int left_ms(int64_t deadline)
{
	int64_t left = deadline - otime_mono_ms();
	return left > 0 ? (left < INT32_MAX ? (int)left : INT32_MAX) : 0;
}

/* A getaddrinfo that may outlive its caller: the resolver's own timeouts and retries can take
 * half a minute, and nothing cancels a running getaddrinfo. Whichever of the two threads lets
 * go last (the resolver finishing, or the caller giving up) frees it (ocall_until, with
 * lookup_free for late). */
struct lookup {
	int gai;
	struct addrinfo *res;
	char host[256];
	char service[8];
};

static void lookup_free(void *arg)
{
	struct lookup *k = arg;
	freeaddrinfo(k->res);
	free(k);
}

static void lookup_run(void *arg)
{
	struct lookup *k = arg;
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
	k->gai = getaddrinfo(k->host, k->service, &hints, &res);
	k->res = k->gai ? NULL : res;
}

/* The addresses of host:port by deadline (monotonic ms): 0 with *out (freeaddrinfo), or -1 with
 * why filled. An address is taken as it is; a name is resolved on a thread of its own, which
 * is left to finish alone when the deadline passes. */
static int resolve(const char *host, int port, int64_t deadline, struct addrinfo **out,
		   char *why, size_t n)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICHOST};
	struct lookup *k = NULL;
	int gai = 0;
	char service[8];
	snprintf(service, sizeof(service), "%d", port);
	if (is_ip(host)) {
		gai = getaddrinfo(host, service, &hints, out);
		goto out;
	}
	if (strlen(host) >= sizeof(k->host) || !(k = calloc(1, sizeof(*k)))) {
		snprintf(why, n, "cannot resolve %s: %s", host,
			 strlen(host) >= sizeof(k->host) ? "name too long" : "out of memory");
		return -1;
	}
	snprintf(k->host, sizeof(k->host), "%s", host);
	memcpy(k->service, service, sizeof(k->service));
	int rc = ocall_until(lookup_run, k, lookup_free, deadline);
	if (rc == OCALL_ELATE) {
		snprintf(why, n, "cannot resolve %s: no answer in time", host);
		return -1; /* k is the resolver's now */
	}
	if (rc) {
		snprintf(why, n, "cannot resolve %s: %s", host,
			 rc == OCALL_ENOMEM ? "out of memory" : "cannot start a thread");
		lookup_free(k);
		return -1;
	}
	if (!(gai = k->gai)) {
		*out = k->res;
		k->res = NULL;
	}
	lookup_free(k);
out:
	if (gai)
		snprintf(why, n, "cannot resolve %s: %s", host, gai_strerror(gai));
	return gai ? -1 : 0;
}

/* A non-blocking TCP connection to host:port by deadline; -1 with why filled. */
static int dial(const char *host, int port, int64_t deadline, char *why, size_t n)
{
	struct addrinfo *res = NULL;
	int fd = -1, err = 0;
	if (resolve(host, port, deadline, &res, why, n))
		return -1;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		socklen_t len = sizeof(err);
		int ready = 0;
		err = 0;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno != EINPROGRESS) {
			err = errno;
		} else {
			while ((ready = poll(&p, 1, left_ms(deadline))) < 0 && errno == EINTR)
				;
			if (ready == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len))
				err = errno;
			else if (ready == 1 && !err)
				break;
		}
		err = err ? err : ready < 0 ? errno : ETIMEDOUT;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		snprintf(why, n, "cannot reach %s:%d: %s", host, port, strerror(err ? err : ETIMEDOUT));
	return fd;
}

/* What a wolfSSL verification error says about the certificate: 1 with text filled, 0 if err
 * is not one. */
static int verdict(int err, const char *host, const char *ca, char *text, size_t n)
{
	switch (err) {
	case DOMAIN_NAME_MISMATCH:
		snprintf(text, n, "does not name %s, the host this device dials (broker_host)", host);
		return 1;
	case ASN_AFTER_DATE_E:
		snprintf(text, n, "has expired (or this device's clock is ahead)");
		return 1;
	case ASN_BEFORE_DATE_E:
		snprintf(text, n, "is not valid yet (check this device's clock)");
		return 1;
	case ASN_NO_SIGNER_E:
	case ASN_SELF_SIGNED_E:
		snprintf(text, n, "is not signed by the CA in %s (ca)", ca);
		return 1;
	case ASN_SIG_CONFIRM_E:
		snprintf(text, n, "has a signature the CA in %s (ca) does not confirm", ca);
		return 1;
	}
	return 0;
}

static int set_blocking(int fd, int blocking)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK);
}

/* A non-blocking connection to host:port by deadline, direct or through the proxy's tunnel; -1
 * with why filled. */
static int reach(const char *host, int port, const char *proxy, int64_t deadline, char *why,
		 size_t n)
{
	char phost[256];
	int pport, fd;
	if (!proxy)
		return dial(host, port, deadline, why, n);
	if (dev_proxy_endpoint(proxy, phost, sizeof(phost), &pport)) {
		snprintf(why, n, "invalid proxy %s", dev_proxy_loggable(proxy));
		return -1;
	}
	if ((fd = dial(phost, pport, deadline, why, n)) < 0)
		return -1;
	/* dev_proxy_tunnel writes its CONNECT blocking (a few hundred bytes into the empty buffer
	 * of a new connection: it does not wait, and SO_SNDTIMEO bounds it if it did) and waits
	 * for the reply by a deadline of its own: what is left of ours */
	int left = left_ms(deadline);
	struct timeval tv = {left / 1000, (left % 1000) * 1000};
	if (!left) {
		snprintf(why, n, "proxy %s: no time left to ask for the tunnel",
			 dev_proxy_loggable(proxy));
	} else if (set_blocking(fd, 1) ||
		   setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))) {
		snprintf(why, n, "proxy %s: %s", dev_proxy_loggable(proxy), strerror(errno));
	} else if (!dev_proxy_tunnel(fd, proxy, host, port, left, why, n) && !set_blocking(fd, 0)) {
		return fd;
	}
	close(fd);
	return -1;
}

/* wolfSSL_connect on the non-blocking fd until it ends or deadline passes: 0 when it
 * succeeded, else the wolfSSL error, with *timed_out set if it was still under way. */
static int handshake(WOLFSSL *ssl, int fd, int64_t deadline, int *timed_out)
{
	*timed_out = 0;
	for (;;) {
		int rc = wolfSSL_connect(ssl);
		if (rc == WOLFSSL_SUCCESS)
			return 0;
		int err = wolfSSL_get_error(ssl, rc);
		if (err != WOLFSSL_ERROR_WANT_READ && err != WOLFSSL_ERROR_WANT_WRITE)
			return err;
		struct pollfd p = {.fd = fd,
				   .events = err == WOLFSSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
		int left = left_ms(deadline), ready = left ? poll(&p, 1, left) : 0;
		if (ready == 0) {
			*timed_out = 1;
			return err;
		}
		if (ready < 0 && errno != EINTR)
			return SOCKET_ERROR_E;
	}
}

enum dev_tlscheck_result dev_tlscheck(const char *host, int port, const char *ca,
				      const char *proxy, int timeout_ms, char *why, size_t n)
{
	enum dev_tlscheck_result res = DEV_TLSCHECK_UNKNOWN;
	int64_t deadline = otime_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	WOLFSSL_CTX *ctx = NULL;
	WOLFSSL *ssl = NULL;
	WOLFSSL_X509 *peer = NULL;
	size_t hlen = strlen(host);
	int fd = -1, timed_out, inited = wolfSSL_Init() == WOLFSSL_SUCCESS;
	char text[300], via[300] = "";
	if (!inited) {
		snprintf(why, n, "wolfSSL_Init failed");
		goto out;
	}
	if (!(ctx = wolfSSL_CTX_new(wolfSSLv23_client_method()))) {
		snprintf(why, n, "out of memory");
		goto out;
	}
	if (wolfSSL_CTX_load_verify_locations(ctx, ca, NULL) != WOLFSSL_SUCCESS) {
		snprintf(why, n, "cannot load the CA certificate %s", ca);
		goto out;
	}
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
	if ((fd = reach(host, port, proxy, deadline, why, n)) < 0)
		goto out;
	/* the server name goes in the ClientHello as Paho sends it (RFC 6066: never an address),
	 * or a front end that routes by it would show its default certificate */
	if (!(ssl = wolfSSL_new(ctx)) || wolfSSL_set_fd(ssl, fd) != WOLFSSL_SUCCESS ||
	    (!is_ip(host) && (hlen > UINT16_MAX ||
			      wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME, host, (unsigned short)hlen)
				  != WOLFSSL_SUCCESS ||
			      wolfSSL_check_domain_name(ssl, host) != WOLFSSL_SUCCESS))) {
		snprintf(why, n, "out of memory");
		goto out;
	}
	wolfSSL_SetIOWriteFlags(ssl, MSG_NOSIGNAL); /* a peer gone mid-handshake: no SIGPIPE */
	int err = handshake(ssl, fd, deadline, &timed_out);
	if (proxy) /* a proxy that inspects TLS shows its own certificate: say where we looked */
		snprintf(via, sizeof(via), " (through the proxy %s)", dev_proxy_loggable(proxy));
	if (timed_out) {
		snprintf(why, n, "no verdict on %s:%d%s: the TLS handshake was not over within the"
			 " check's %d ms", host, port, via, timeout_ms);
		goto out;
	}
	/* Verified, if wolfSSL kept it: the broker may then refuse us for want of a client
	 * certificate (an alert, a close), which says nothing about its certificate. */
	int bad = err && verdict(err, host, ca, text, sizeof(text));
	int ended = !err || err == SOCKET_PEER_CLOSED_E || err == FATAL_ERROR;
	peer = bad ? NULL : wolfSSL_get_peer_certificate(ssl);
	if (peer && is_ip(host) && wolfSSL_X509_check_ip_asc(peer, host, 0) != WOLFSSL_SUCCESS)
		bad = verdict(DOMAIN_NAME_MISMATCH, host, ca, text, sizeof(text)); /* as Paho */
	if (bad) {
		snprintf(why, n, "the broker's certificate at %s:%d%s %s", host, port, via, text);
		res = DEV_TLSCHECK_BAD_CERT;
	} else if (ended && peer) {
		snprintf(why, n, "the broker's certificate at %s:%d%s is valid for %s", host, port, via,
		         host);
		res = DEV_TLSCHECK_OK;
	} else if (ended) {
		snprintf(why, n, "no verdict on %s:%d%s: it ended the handshake before showing a"
		         " certificate", host, port, via);
	} else {
		wolfSSL_ERR_error_string_n((unsigned long)err, text, sizeof(text));
		snprintf(why, n, "no verdict on %s:%d%s: %s (%d)", host, port, via, text, err);
	}
out:
	wolfSSL_X509_free(peer);
	wolfSSL_free(ssl);
	if (fd >= 0)
		close(fd);
	wolfSSL_CTX_free(ctx);
	if (inited)
		wolfSSL_Cleanup();
	return res;
}
