/* dev_proxy.c - proxy selection (config, https_proxy, no_proxy) and normalisation. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dev_proxy.h"

int dev_proxy_excluded(const char *no_proxy, const char *host)
{
	if (!no_proxy || !host)
		return 0;
	size_t hl = strlen(host);
	const char *p = no_proxy;
	while (*p) {
		while (*p == ',' || *p == ' ')
			p++;
		const char *e = p;
		while (*e && *e != ',' && *e != ' ')
			e++;
		size_t n = (size_t)(e - p);
		if (n == 1 && *p == '*')
			return 1;
		const char *dom = p;
		size_t dl = n;
		if (dl && *dom == '.') {
			dom++;
			dl--;
		}
		if (dl && hl >= dl && !strncasecmp(host + hl - dl, dom, dl) &&
		    (hl == dl || host[hl - dl - 1] == '.'))
			return 1;
		p = e;
	}
	return 0;
}

const char *dev_proxy_loggable(const char *proxy)
{
	const char *at = strchr(proxy, '@'); /* the first '@', as dev_proxy_resolve splits */
	return at ? at + 1 : proxy;
}

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
		if (!np)
			np = getenv("NO_PROXY");
		if (dev_proxy_excluded(np, broker_host))
			return 0;
	}
	if (!strncasecmp(v, "https://", 8)) {
		*why = "TLS to the proxy itself is not supported: use http://host:port";
		return -1;
	}
	if (!strncasecmp(v, "http://", 7))
		v += 7;
	size_t n = strcspn(v, "/?#");
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
	const char *hostpart = at ? at + 1 : v;
	size_t hn = n - (size_t)(hostpart - v);
	const char *colon = memrchr(hostpart, ':', hn);
	/* an IPv6 literal's colons sit inside brackets */
	if (colon && memchr(colon, ']', hn - (size_t)(colon - hostpart)))
		colon = NULL;
	for (size_t i = 0; i < hn; i++) {
		char c = hostpart[i];
		if (!(isalnum((unsigned char)c) || c == '.' || c == '-' || c == ':' || c == '[' ||
		      c == ']' || c == '_')) {
			*why = "invalid character in the proxy host";
			return -1;
		}
	}
	if (colon) {
		char *end;
		long port = strtol(colon + 1, &end, 10);
		if (end != hostpart + hn || port < 1 || port > 65535 || colon == hostpart) {
			*why = "invalid proxy port";
			return -1;
		}
		snprintf(out, cap, "%.*s", (int)n, v);
	} else {
		if (hn == 0) {
			*why = "missing proxy host";
			return -1;
		}
		snprintf(out, cap, "%.*s:8080", (int)n, v);
	}
	return 1;
}
