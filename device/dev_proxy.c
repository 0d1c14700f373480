/* dev_proxy.c - proxy selection (config, https_proxy, no_proxy), normalisation, and the
 * CONNECT tunnel of the device's own certificate check. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdint.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/coding.h>

#include "ofile.h"
#include "ohex.h"
#include "otime.h"

#include "dev_proxy.h"

/* 1 if host is the IPv4 address in ipv4 or in its net (an entry "a.b.c.d/len"). */
static int in_ipv4_net(const char *host, const char *entry, size_t n)
{
	char net[INET_ADDRSTRLEN + 4];
	struct in_addr h, a;
	const char *slash = memchr(entry, '/', n);
	if (!slash || n >= sizeof(net) || inet_pton(AF_INET, host, &h) != 1)
		return 0;
	memcpy(net, entry, n);
	net[slash - entry] = '\0';
	const char *len = net + (slash - entry) + 1;
	net[n] = '\0';
	char *end;
	long bits = strtol(len, &end, 10);
	if (!isdigit((unsigned char)*len) || *end || bits < 0 || bits > 32 ||
	    inet_pton(AF_INET, net, &a) != 1)
		return 0;
	uint32_t mask = bits ? 0xffffffffu << (32 - bits) : 0;
	return (ntohl(h.s_addr) & mask) == (ntohl(a.s_addr) & mask);
}

int dev_proxy_excluded(const char *no_proxy, const char *host)
{
	if (!no_proxy || !host)
		return 0;
	size_t hl = strlen(host);
	if (hl && host[hl - 1] == '.')
		hl--; /* "broker.example.com." is broker.example.com */
	const char *p = no_proxy;
	while (*p) {
		while (*p == ',' || *p == ' ')
			p++;
		const char *e = p;
		while (*e && *e != ',' && *e != ' ')
			e++;
		const char *dom = p;
		size_t dl = (size_t)(e - p);
		p = e;
		if (dl == 1 && *dom == '*')
			return 1;
		if (dl && memchr(dom, '/', dl)) {
			if (in_ipv4_net(host, dom, dl))
				return 1;
			continue;
		}
		/* "[v6]:port", "[v6]", "host:port": the port is not part of the name; a bare IPv6
		 * address (more than one ':') has none */
		if (dl && *dom == '[') {
			const char *rb = memchr(dom, ']', dl);
			if (!rb)
				continue;
			dl = (size_t)(rb - dom - 1);
			dom++;
		} else {
			const char *colon = memchr(dom, ':', dl);
			if (colon && !memchr(colon + 1, ':', dl - (size_t)(colon + 1 - dom)))
				dl = (size_t)(colon - dom);
		}
		if (dl >= 2 && dom[0] == '*' && dom[1] == '.') {
			dom++; /* "*.example.com" is ".example.com" */
			dl--;
		}
		if (dl && *dom == '.') {
			dom++;
			dl--;
		}
		if (dl && dom[dl - 1] == '.')
			dl--;
		if (dl && hl >= dl && !strncasecmp(host + hl - dl, dom, dl) &&
		    (hl == dl || host[hl - dl - 1] == '.'))
			return 1;
	}
	return 0;
}

const char *dev_proxy_loggable(const char *proxy)
{
	const char *at = strchr(proxy, '@'); /* the first '@', as dev_proxy_resolve splits */
	return at ? at + 1 : proxy;
}

/* Schemes a proxy setting may be written with that Paho cannot use, named in the refusal. */
static const struct {
	const char *name, *why;
} other_schemes[] = {
	{"socks", "unsupported proxy scheme socks (only http)"},
	{"socks4", "unsupported proxy scheme socks4 (only http)"},
	{"socks4a", "unsupported proxy scheme socks4a (only http)"},
	{"socks5", "unsupported proxy scheme socks5 (only http)"},
	{"socks5h", "unsupported proxy scheme socks5h (only http)"},
	{"ftp", "unsupported proxy scheme ftp (only http)"},
};

int dev_proxy_resolve(const char *configured, const char *broker_host, char *out, size_t cap,
		      const char **why)
{
	const char *v = configured;
	const char *dummy;
	if (!why)
		why = &dummy;
	if (v && !strcasecmp(v, "none"))
		return 0;
	if (!v || !*v) {
		v = getenv("https_proxy");
		if (!v || !*v)
			v = getenv("HTTPS_PROXY");
		if (!v || !*v)
			return 0;
		const char *np = getenv("no_proxy");
		if (!np || !*np) /* set but empty is unset, as for https_proxy */
			np = getenv("NO_PROXY");
		if (dev_proxy_excluded(np, broker_host))
			return 0;
	}
	if (!strncasecmp(v, "https://", 8)) {
		*why = "TLS to the proxy itself is not supported: use http://host:port";
		return -1;
	}
	size_t sl = strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
	if (sl && !strncmp(v + sl, "://", 3)) {
		if (sl != 4 || strncasecmp(v, "http", 4)) {
			*why = "unsupported proxy scheme (only http)";
			for (size_t i = 0; i < sizeof(other_schemes) / sizeof(other_schemes[0]); i++)
				if (strlen(other_schemes[i].name) == sl &&
				    !strncasecmp(v, other_schemes[i].name, sl))
					*why = other_schemes[i].why;
			return -1;
		}
		v += 7;
	}
	size_t n = strcspn(v, "/?#");
	/* a '/', '?' or '#' in the user:password would cut the value before its '@', and the user
	 * and the password's head would read as host:port (then be dialled, and logged) */
	if (strchr(v + n, '@')) {
		*why = "'/', '?' or '#' in the proxy user:password: write special characters as %XX"
		       " ('/' as %2F, '?' as %3F, '#' as %23, '@' as %40)";
		return -1;
	}
	if (n == 0 || n + 6 >= cap) {
		*why = "expected host:port or http://host:port";
		return -1;
	}
	const char *at = memchr(v, '@', n);
	/* user:password: printable, and a '%' starts a %XX escape (Paho decodes them, and loops
	 * forever on a '%' that is not one) */
	for (const char *p = v; at && p < at; p++) {
		if (*p <= ' ' || *p > '~' ||
		    (*p == '%' && (p + 2 >= at || !isxdigit((unsigned char)p[1]) ||
				   !isxdigit((unsigned char)p[2])))) {
			*why = "invalid proxy user:password: write special characters as %XX"
			       " (a '%' itself as %25)";
			return -1;
		}
	}
	/* none written ("http://@proxy", "http://:@proxy"): no credentials */
	size_t cl = at ? (size_t)(at - v) : 0;
	if (cl == 0 || (cl == 1 && *v == ':'))
		cl = 0;
	const char *hostpart = at ? at + 1 : v;
	size_t hn = n - (size_t)(hostpart - v);
	const char *colon = NULL; /* before the port, if there is one */
	if (hn && *hostpart == '[') {
		/* an IPv6 literal: "[addr]" or "[addr]:port" */
		const char *rb = memchr(hostpart, ']', hn);
		size_t an = rb ? (size_t)(rb - hostpart - 1) : 0;
		if (!rb || !an || strspn(hostpart + 1, "0123456789abcdefABCDEF:.") < an ||
		    !memchr(hostpart + 1, ':', an) || (rb + 1 < hostpart + hn && rb[1] != ':')) {
			*why = "invalid IPv6 proxy address: expected [address]:port";
			return -1;
		}
		if (rb + 1 < hostpart + hn)
			colon = rb + 1;
	} else {
		for (size_t i = 0; i < hn; i++) {
			char c = hostpart[i];
			if (!(isalnum((unsigned char)c) || c == '.' || c == '-' || c == ':' ||
			      c == '_')) {
				*why = "invalid character in the proxy host";
				return -1;
			}
		}
		colon = memchr(hostpart, ':', hn);
		if (colon && memchr(colon + 1, ':', hn - (size_t)(colon + 1 - hostpart))) {
			*why = "more than one ':' in the proxy host:port (an IPv6 address goes in "
			       "brackets: [address]:port)";
			return -1;
		}
		if (colon == hostpart || hn == 0) {
			*why = "missing proxy host";
			return -1;
		}
	}
	if (colon) {
		size_t pl = hn - (size_t)(colon + 1 - hostpart);
		long port = pl && pl <= 5 && strspn(colon + 1, "0123456789") >= pl
				    ? strtol(colon + 1, NULL, 10) : 0;
		if (port < 1 || port > 65535) {
			*why = "invalid proxy port";
			return -1;
		}
	}
	snprintf(out, cap, "%.*s%s%.*s%s", (int)cl, v, cl ? "@" : "", (int)hn, hostpart,
		 colon ? "" : ":8080");
	return 1;
}

int dev_proxy_endpoint(const char *proxy, char *host, size_t cap, int *port)
{
	const char *h = dev_proxy_loggable(proxy), *colon = strrchr(h, ':');
	char *end;
	if (!colon || colon == h)
		return -1;
	long p = strtol(colon + 1, &end, 10);
	size_t len = (size_t)(colon - h);
	if (*end || p < 1 || p > 65535)
		return -1;
	if (*h == '[' && len >= 2 && h[len - 1] == ']') {
		h++;
		len -= 2;
	}
	if (!len || len >= cap)
		return -1;
	memcpy(host, h, len);
	host[len] = '\0';
	*port = (int)p;
	return 0;
}

#define TUNNEL_CRED_MAX   256
#define TUNNEL_HEADER_MAX 4096

/* The reply's header, byte by byte up to the blank line (what follows is the tunnel's), all of
 * it by deadline (monotonic ms): 0 with head (cap bytes) NUL-terminated, or -1 with *err a
 * reason. */
static int read_header(int fd, char *head, size_t cap, int64_t deadline, const char **err)
{
	size_t got = 0;
	while (got < 4 || memcmp(head + got - 4, "\r\n\r\n", 4)) {
		int64_t left = deadline - otime_mono_ms();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (got + 1 >= cap) {
			*err = "reply header too long";
			return -1;
		}
		int ready = left > 0 ? poll(&p, 1, (int)left) : 0;
		if (ready < 0 && errno == EINTR)
			continue;
		ssize_t r = ready > 0 ? recv(fd, head + got, 1, 0) : -1;
		if (r < 0 && ready > 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			*err = r == 0 ? "closed the connection before replying to CONNECT"
			       : ready == 0 ? "no reply to CONNECT in time"
			                    : strerror(errno);
			return -1;
		}
		got++;
	}
	head[got] = '\0';
	return 0;
}

/* "HTTP/1.x 200 ..." */
static int status_ok(const char *head)
{
	return !strncmp(head, "HTTP/1.", 7) && (head[7] == '0' || head[7] == '1') &&
	       !strncmp(head + 8, " 200", 4) && (head[12] == ' ' || head[12] == '\r');
}

int dev_proxy_tunnel(int fd, const char *proxy, const char *host, int port, int timeout_ms,
                     char *why, size_t n)
{
	const char *at = strchr(proxy, '@'), *where = dev_proxy_loggable(proxy), *err = NULL;
	unsigned char cred[TUNNEL_CRED_MAX];
	char auth[4 * (TUNNEL_CRED_MAX / 3 + 1) + 1] = "", req[1400], head[TUNNEL_HEADER_MAX + 1];
	const char *lb = strchr(host, ':') ? "[" : "", *rb = *lb ? "]" : "";
	size_t cn = 0;
	word32 alen = sizeof(auth) - 1;
	int rc = -1, len;
	for (const char *p = proxy; at && p < at; p++) {
		if (cn == sizeof(cred)) {
			snprintf(why, n, "proxy %s: user:password too long", where);
			goto out;
		}
		/* dev_proxy_resolve let only well-formed %XX escapes through */
		if (*p == '%' && p + 2 < at) {
			cred[cn++] = (unsigned char)(ohex_digit(p[1]) << 4 | ohex_digit(p[2]));
			p += 2;
		} else {
			cred[cn++] = (unsigned char)*p;
		}
	}
	if (at && Base64_Encode_NoNl(cred, (word32)cn, (byte *)auth, &alen)) {
		snprintf(why, n, "proxy %s: cannot encode the credentials", where);
		goto out;
	}
	auth[at ? alen : 0] = '\0';
	len = snprintf(req, sizeof(req),
	               "CONNECT %s%s%s:%d HTTP/1.1\r\nHost: %s%s%s:%d\r\n%s%s%s\r\n", lb, host, rb,
	               port, lb, host, rb, port, at ? "Proxy-Authorization: Basic " : "", auth,
	               at ? "\r\n" : "");
	if (len < 0 || (size_t)len >= sizeof(req)) {
		snprintf(why, n, "proxy %s: broker host too long", where);
		goto out;
	}
	if (ofile_write_all(fd, req, (size_t)len)) {
		snprintf(why, n, "proxy %s: cannot send CONNECT: %s", where, strerror(errno));
		goto out;
	}
	if (read_header(fd, head, sizeof(head), otime_mono_ms() + timeout_ms, &err)) {
		snprintf(why, n, "proxy %s: %s", where, err);
		goto out;
	}
	if (!status_ok(head)) {
		/* the proxy's words, quoted: its first line, printable ASCII only */
		size_t line = strcspn(head, "\r\n");
		line = line > 80 ? 80 : line;
		for (size_t i = 0; i < line; i++)
			if (head[i] < ' ' || head[i] > '~')
				head[i] = '?';
		snprintf(why, n, "proxy %s refused the tunnel to %s%s%s:%d: %.*s", where, lb, host, rb,
		         port, (int)line, head);
		goto out;
	}
	rc = 0;
out:
	explicit_bzero(cred, sizeof(cred));
	explicit_bzero(auth, sizeof(auth));
	explicit_bzero(req, sizeof(req));
	return rc;
}

static const char *const proxy_vars[DEV_PROXY_ENV_VARS] = {"https_proxy", "HTTPS_PROXY",
							    "http_proxy", "HTTP_PROXY"};

int dev_proxy_env_hide(struct dev_proxy_env *e)
{
	size_t n = 0;
	memset(e, 0, sizeof(*e));
	for (size_t i = 0; i < DEV_PROXY_ENV_VARS; i++) {
		const char *v = getenv(proxy_vars[i]);
		if (!v)
			continue;
		if (asprintf(&e->saved[n], "%s=%s", proxy_vars[i], v) < 0) {
			e->saved[n] = NULL;
			goto fail;
		}
		n++;
	}
	for (size_t i = 0; i < DEV_PROXY_ENV_VARS; i++)
		unsetenv(proxy_vars[i]);
	return 0;
fail:
	while (n) {
		free(e->saved[--n]);
		e->saved[n] = NULL; /* holds nothing: restore and free may still be called */
	}
	return -1;
}

int dev_proxy_env_restore(struct dev_proxy_env *e)
{
	int rc = 0;
	for (size_t i = 0; e->saved[i]; i++) {
		char *eq = strchr(e->saved[i], '=');
		*eq = '\0';
		if (setenv(e->saved[i], eq + 1, 1))
			rc = -1;
		free(e->saved[i]);
		e->saved[i] = NULL;
	}
	return rc;
}
