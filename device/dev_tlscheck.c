/* dev_tlscheck.c - see dev_tlscheck.h. */
#include "dev_tlscheck.h"
#include "dev_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
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

/* A TCP connection to host:port within timeout_ms, blocking afterwards with the same bound
 * on every read and write; -1 with why filled. */
static int dial(const char *host, int port, int timeout_ms, char *why, size_t n)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
	char service[8];
	int fd = -1, err = 0;
	snprintf(service, sizeof(service), "%d", port);
	int gai = getaddrinfo(host, service, &hints, &res);
	if (gai) {
		snprintf(why, n, "cannot resolve %s: %s", host, gai_strerror(gai));
		return -1;
	}
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		socklen_t len = sizeof(err);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
		    (errno == EINPROGRESS && poll(&p, 1, timeout_ms) == 1 &&
		     !getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) && !err))
			break;
		err = err ? err : errno ? errno : ETIMEDOUT;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(why, n, "cannot reach %s:%d: %s", host, port, strerror(err ? err : ETIMEDOUT));
		return -1;
	}
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
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

/* A connection to host:port, direct or through the proxy's tunnel; -1 with why filled. */
static int reach(const char *host, int port, const char *proxy, int timeout_ms, char *why,
                 size_t n)
{
	char phost[256];
	int pport, fd;
	if (!proxy)
		return dial(host, port, timeout_ms, why, n);
	if (dev_proxy_endpoint(proxy, phost, sizeof(phost), &pport)) {
		snprintf(why, n, "invalid proxy %s", dev_proxy_loggable(proxy));
		return -1;
	}
	if ((fd = dial(phost, pport, timeout_ms, why, n)) >= 0 &&
	    dev_proxy_tunnel(fd, proxy, host, port, timeout_ms, why, n)) {
		close(fd);
		fd = -1;
	}
	return fd;
}

enum dev_tlscheck_result dev_tlscheck(const char *host, int port, const char *ca,
				      const char *proxy, int timeout_ms, char *why, size_t n)
{
	enum dev_tlscheck_result res = DEV_TLSCHECK_UNKNOWN;
	WOLFSSL_CTX *ctx = NULL;
	WOLFSSL *ssl = NULL;
	int fd = -1, inited = wolfSSL_Init() == WOLFSSL_SUCCESS;
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
	if ((fd = reach(host, port, proxy, timeout_ms, why, n)) < 0)
		goto out;
	if (!(ssl = wolfSSL_new(ctx)) || wolfSSL_set_fd(ssl, fd) != WOLFSSL_SUCCESS ||
	    (!is_ip(host) && wolfSSL_check_domain_name(ssl, host) != WOLFSSL_SUCCESS)) {
		snprintf(why, n, "out of memory");
		goto out;
	}
	int rc = wolfSSL_connect(ssl), err = rc == WOLFSSL_SUCCESS ? 0 : wolfSSL_get_error(ssl, rc);
	char text[300], via[300] = "";
	if (proxy) /* a proxy that inspects TLS shows its own certificate: say where we looked */
		snprintf(via, sizeof(via), " (through the proxy %s)", dev_proxy_loggable(proxy));
	/* Verified, if wolfSSL kept it: the broker may then refuse us for want of a client
	 * certificate (an alert, a close), which says nothing about its certificate. */
	int bad = err && verdict(err, host, ca, text, sizeof(text));
	int ended = !err || err == SOCKET_PEER_CLOSED_E || err == FATAL_ERROR;
	WOLFSSL_X509 *peer = bad ? NULL : wolfSSL_get_peer_certificate(ssl);
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
	wolfSSL_X509_free(peer);
out:
	wolfSSL_free(ssl);
	if (fd >= 0)
		close(fd);
	wolfSSL_CTX_free(ctx);
	if (inited)
		wolfSSL_Cleanup();
	return res;
}
