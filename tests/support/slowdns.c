/* slowdns.c - LD_PRELOAD shim for tests: getaddrinfo of the name in OUTPOST_TEST_SLOW_DNS
 * says so on stderr ("slowdns: resolving NAME"), then takes 30 s and finds nothing (a
 * resolver whose servers do not answer); other names are resolved as usual. */
#include <dlfcn.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		struct addrinfo **res)
{
	typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *,
			      struct addrinfo **);
	const char *slow = getenv("OUTPOST_TEST_SLOW_DNS");
	if (node && slow && !strcmp(node, slow)) {
		fprintf(stderr, "slowdns: resolving %s\n", node);
		fflush(stderr);
		for (int left = 30; left > 0;)
			left = (int)sleep((unsigned)left);
		return EAI_AGAIN;
	}
	gai_fn real = (gai_fn)(uintptr_t)dlsym(RTLD_NEXT, "getaddrinfo");
	return real(node, service, hints, res);
}
