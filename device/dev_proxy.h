/* dev_proxy.h - choose and normalise the HTTP CONNECT proxy for the broker connection.
 * Paho wants "host:port" (an "http://" prefix makes it fail silently), so every form users
 * write is turned into that here. */
#ifndef DEV_PROXY_H
#define DEV_PROXY_H

#include <stddef.h>

/* configured: the `proxy` setting ("" = from the environment, "none" = never), else the
 * https_proxy / HTTPS_PROXY environment, unless broker_host matches no_proxy / NO_PROXY.
 * Accepts "host:port", "http://[user:pass@]host[:port][/]" (port defaults to 8080); in
 * user:pass, special characters are %XX escapes (an '@' after a '/', '?' or '#' is refused);
 * empty user:pass is none. An IPv6 host is "[address]": more than one ':' outside brackets
 * is refused, as is any scheme but http.
 * Returns 1 and writes "[user:pass@]host:port" into out, 0 for no proxy, -1 if invalid
 * (*why says what is wrong). */
int dev_proxy_resolve(const char *configured, const char *broker_host, char *out, size_t cap,
		      const char **why);

/* The part of a resolved proxy ("[user:pass@]host:port") that may be logged: host:port,
 * a pointer into proxy. */
const char *dev_proxy_loggable(const char *proxy);

/* The proxy's own address from a resolved proxy: host (brackets of an IPv6 literal removed)
 * into host (cap bytes) and *port. 0, or -1 if proxy is not "[user:pass@]host:port". */
int dev_proxy_endpoint(const char *proxy, char *host, size_t cap, int *port);

/* Ask the proxy connected on fd (blocking; the caller bounds writes with SO_SNDTIMEO and
 * ignores SIGPIPE, as outpost-device does) for a
 * tunnel to host:port by HTTP CONNECT, with Basic credentials when proxy has user:pass@ (%XX
 * decoded, as Paho sends them). Waits at most timeout_ms for the whole reply header and reads
 * nothing after it, so that fd then carries the tunnel. 0, or -1 with why (n bytes; no
 * credentials in it, the proxy's status line with non-printable bytes as '?') filled. */
int dev_proxy_tunnel(int fd, const char *proxy, const char *host, int port, int timeout_ms,
                     char *why, size_t n);

/* 1 if host matches a no_proxy list: "*", "name", "domain", ".domain" and "*.domain"
 * suffixes, exact IPs ("[v6]" too), IPv4 nets "a.b.c.d/len"; a ":port" on an entry and
 * trailing dots are ignored. */
int dev_proxy_excluded(const char *no_proxy, const char *host);

/* The proxy variables of the environment: https_proxy, HTTPS_PROXY, http_proxy, HTTP_PROXY.
 * Paho reads https_proxy and http_proxy itself for a connection given no proxy, and
 * mishandles their usual http:// form, so the agent keeps them out of its own environment
 * while its link exists; what it starts (exec collector commands, itself again after a
 * `restart` task) gets them as they were. */
#define DEV_PROXY_ENV_VARS 4
struct dev_proxy_env {
	char *saved[DEV_PROXY_ENV_VARS + 1]; /* "NAME=value" copies of those that were set,
					      * NULL-terminated; owned */
};

/* Move the proxy variables from the environment into e (zeroed or restored). 0, or -1 (out
 * of memory: the environment is unchanged, e holds nothing). Not while another thread may
 * read the environment. */
int dev_proxy_env_hide(struct dev_proxy_env *e);

/* Put the variables e holds back into the environment, free them and leave e empty (e never
 * hidden into is fine). 0, or -1 (out of memory: some were not set back). Not while another
 * thread may read the environment. */
int dev_proxy_env_restore(struct dev_proxy_env *e);

#endif
