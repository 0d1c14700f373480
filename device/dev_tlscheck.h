/* dev_tlscheck.h - a second opinion on the broker's certificate when a connection fails
 * without a reason. Paho (on OpenSSL) checks the broker's name after the handshake and then
 * says only "TCP/TLS connect failure", as for a network error; one TLS handshake with wolfSSL
 * against the same trust anchor names the problem (wrong name, expired, not yet valid, another
 * CA). Blocking, for at most its timeout; no client certificate is sent and nothing is
 * published. */
#ifndef DEV_TLSCHECK_H
#define DEV_TLSCHECK_H

#include <stddef.h>

enum dev_tlscheck_result {
	DEV_TLSCHECK_OK = 0,       /* the certificate is valid for host: the cause is elsewhere */
	DEV_TLSCHECK_BAD_CERT = 1, /* why says what is wrong with it */
	DEV_TLSCHECK_UNKNOWN = 2,  /* no verdict (no connection, another error): why says why */
};

/* Connect to host:port, through proxy's HTTP CONNECT tunnel unless proxy is NULL (a resolved
 * "[user:pass@]host:port", dev_proxy.h), and verify the broker's certificate against the CA
 * file ca and, unless host is an IP address, that it names host (sent as the server name,
 * SNI, as Paho sends it). All of it (resolving the names, each connect, the proxy's reply,
 * the whole handshake) ends within timeout_ms: past that there is no verdict
 * (DEV_TLSCHECK_UNKNOWN). A name is resolved on a thread of its own, left to finish alone if
 * the time runs out (nothing cancels a resolver waiting for its servers). The handshake's
 * writes never raise SIGPIPE (the CONNECT to a proxy may: dev_proxy_tunnel). why (n bytes)
 * receives one line for the log (never the proxy's credentials). */
enum dev_tlscheck_result dev_tlscheck(const char *host, int port, const char *ca,
				      const char *proxy, int timeout_ms, char *why, size_t n);

#endif
