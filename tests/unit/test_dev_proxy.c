/* test_dev_proxy.c - proxy selection and normalisation to the host:port form Paho needs, and
 * the CONNECT tunnel of the device's certificate check. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dev_proxy.h"
#include "otime.h"

static int resolve(const char *cfg, const char *host, char *out)
{
	const char *why = NULL;
	return dev_proxy_resolve(cfg, host, out, 300, &why);
}

Test(dev_proxy, normalises_the_forms_users_write)
{
	char out[300];
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	cr_expect_eq(resolve("proxy.corp:3128", "b", out), 1);
	cr_expect_str_eq(out, "proxy.corp:3128");
	cr_expect_str_eq(dev_proxy_loggable(out), "proxy.corp:3128");
	cr_expect_eq(resolve("http://proxy.corp:3128/", "b", out), 1);
	cr_expect_str_eq(out, "proxy.corp:3128");
	cr_expect_eq(resolve("HTTP://10.0.0.1:8888", "b", out), 1);
	cr_expect_str_eq(out, "10.0.0.1:8888");
	cr_expect_eq(resolve("http://user:secret@proxy:3128/path", "b", out), 1);
	cr_expect_str_eq(out, "user:secret@proxy:3128");
	cr_expect_str_eq(dev_proxy_loggable(out), "proxy:3128", "credentials stay out of the log");
	cr_expect_eq(resolve("http://proxy", "b", out), 1);
	cr_expect_str_eq(out, "proxy:8080");
}

Test(dev_proxy, refuses_what_cannot_work)
{
	char out[300];
	cr_expect_eq(resolve("https://proxy:3128", "b", out), -1);
	cr_expect_eq(resolve("proxy:99999", "b", out), -1);
	cr_expect_eq(resolve("proxy:abc", "b", out), -1);
	cr_expect_eq(resolve("http://", "b", out), -1);
	cr_expect_eq(resolve("pro xy:80", "b", out), -1);
	/* a '%' that is no %XX escape: Paho 1.3.12 would spin forever decoding it */
	cr_expect_eq(resolve("http://user:50%off@proxy:3128", "b", out), -1);
	cr_expect_eq(resolve("http://user:50%2@proxy:3128", "b", out), -1);
	cr_expect_eq(resolve("http://us er:x@proxy:3128", "b", out), -1);
	cr_expect_eq(resolve("http://user:50%25off%40x@proxy:3128", "b", out), 1);
	cr_expect_str_eq(out, "user:50%25off%40x@proxy:3128");
}

/* The value is cut at its first '/', '?' or '#' (the path): one of them in the password left
 * the '@' behind the cut, and the user and the password's head read as host:port, dialled and
 * logged. Refused, with a reason that quotes none of it; escaped, they are fine. */
Test(dev_proxy, refuses_a_path_character_in_the_credentials)
{
	const char *bad[] = {"http://alice:2024/pw@proxy.corp:3128",
			     "alice:2024?pw@proxy.corp:3128",
			     "http://alice:2024#pw@proxy.corp:3128/",
			     "http://alice:20%2F24/pw@proxy.corp:3128"};
	char out[300];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;
		strcpy(out, "untouched");
		cr_expect_eq(dev_proxy_resolve(bad[i], "b", out, sizeof(out), &why), -1, "%s: %s",
			     bad[i], out);
		cr_assert_not_null(why, "%s", bad[i]);
		cr_expect(strstr(why, "%XX"), "%s", why);
		cr_expect_null(strstr(why, "alice"), "%s", why);
		cr_expect_null(strstr(why, "2024"), "%s", why);
	}
	/* from the environment alike */
	setenv("https_proxy", bad[0], 1);
	unsetenv("no_proxy");
	unsetenv("NO_PROXY");
	cr_expect_eq(resolve("", "b", out), -1);
	unsetenv("https_proxy");
	cr_expect_eq(resolve("http://alice:2024%2Fpw@proxy.corp:3128/", "b", out), 1);
	cr_expect_str_eq(out, "alice:2024%2Fpw@proxy.corp:3128");
	cr_expect_str_eq(dev_proxy_loggable(out), "proxy.corp:3128");
}

Test(dev_proxy, environment_and_no_proxy)
{
	char out[300];
	setenv("https_proxy", "http://envproxy:3128", 1);
	unsetenv("no_proxy");
	unsetenv("NO_PROXY");
	cr_expect_eq(resolve("", "broker.example.com", out), 1);
	cr_expect_str_eq(out, "envproxy:3128");
	cr_expect_eq(resolve("none", "broker.example.com", out), 0, "none disables even the env");
	setenv("no_proxy", "localhost, .example.com", 1);
	cr_expect_eq(resolve("", "broker.example.com", out), 0);
	cr_expect_eq(resolve("", "example.com", out), 0);
	cr_expect_eq(resolve("", "badexample.com", out), 1);
	cr_expect_eq(resolve("explicit:1", "broker.example.com", out), 1, "config beats no_proxy");
	setenv("no_proxy", "*", 1);
	cr_expect_eq(resolve("", "anything", out), 0);
	unsetenv("https_proxy");
	unsetenv("no_proxy");
	cr_expect_eq(resolve("", "anything", out), 0);
}

/* The variables Paho would read leave the environment and come back as they were (a restart
 * re-executes the agent with that environment); the copies are what exec commands get. */
Test(dev_proxy, hidden_proxy_variables_come_back)
{
	struct dev_proxy_env e = {{0}};
	unsetenv("HTTPS_PROXY");
	unsetenv("HTTP_PROXY");
	setenv("https_proxy", "http://u:p@proxy:3128/", 1);
	setenv("http_proxy", "proxy:80", 1);
	setenv("no_proxy", "localhost", 1);
	cr_assert_eq(dev_proxy_env_hide(&e), 0);
	cr_expect_null(getenv("https_proxy"));
	cr_expect_null(getenv("http_proxy"));
	cr_expect_str_eq(getenv("no_proxy"), "localhost", "not a variable Paho reads");
	cr_assert_not_null(e.saved[0]);
	cr_assert_not_null(e.saved[1]);
	cr_expect_str_eq(e.saved[0], "https_proxy=http://u:p@proxy:3128/");
	cr_expect_str_eq(e.saved[1], "http_proxy=proxy:80");
	cr_expect_null(e.saved[2]);
	cr_expect_eq(dev_proxy_env_restore(&e), 0);
	cr_expect_null(e.saved[0]);
	cr_expect_str_eq(getenv("https_proxy"), "http://u:p@proxy:3128/");
	cr_expect_str_eq(getenv("http_proxy"), "proxy:80");
	cr_expect_null(getenv("HTTPS_PROXY"), "an unset variable stays unset");
	cr_expect_eq(dev_proxy_env_restore(&e), 0, "nothing held: nothing to do");
	unsetenv("https_proxy");
	unsetenv("http_proxy");
	unsetenv("no_proxy");
}

Test(dev_proxy, endpoint_of_a_resolved_proxy)
{
	char host[64];
	int port = 0;
	cr_expect_eq(dev_proxy_endpoint("proxy.corp:3128", host, sizeof(host), &port), 0);
	cr_expect_str_eq(host, "proxy.corp");
	cr_expect_eq(port, 3128);
	cr_expect_eq(dev_proxy_endpoint("u:p%40ss@[::1]:8080", host, sizeof(host), &port), 0);
	cr_expect_str_eq(host, "::1");
	cr_expect_eq(port, 8080);
	cr_expect_eq(dev_proxy_endpoint("proxy", host, sizeof(host), &port), -1);
	cr_expect_eq(dev_proxy_endpoint(":80", host, sizeof(host), &port), -1);
	cr_expect_eq(dev_proxy_endpoint("proxy:0", host, sizeof(host), &port), -1);
	cr_expect_eq(dev_proxy_endpoint("a-very-long-proxy-name:80", host, 8, &port), -1);
}

/* dev_proxy_tunnel against a scripted proxy: reply is what the proxy answers, the request it
 * received goes to req (cap bytes); returns the tunnel's result, why in why. */
static int tunnel(const char *proxy, const char *host, const char *reply, char *req, size_t cap,
                  char *why)
{
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	size_t rl = strlen(reply);
	cr_assert_eq(write(sv[1], reply, rl), (ssize_t)rl);
	shutdown(sv[1], SHUT_WR);
	why[0] = '\0';
	int rc = dev_proxy_tunnel(sv[0], proxy, host, 8883, 3000, why, 200);
	ssize_t n = read(sv[1], req, cap - 1);
	req[n > 0 ? n : 0] = '\0';
	if (!rc) { /* what follows the header is the tunnel's: not consumed */
		char rest[16] = "";
		cr_expect_eq(read(sv[0], rest, sizeof(rest)), 3);
		cr_expect_eq(memcmp(rest, "TLS", 3), 0);
	}
	close(sv[0]);
	close(sv[1]);
	return rc;
}

Test(dev_proxy, tunnel_asks_for_the_broker_with_the_credentials_paho_sends)
{
	char req[1024], why[200];
	cr_expect_eq(tunnel("proxy:3128", "broker.example.com",
	                    "HTTP/1.1 200 Connection established\r\n\r\nTLS", req, sizeof(req), why),
	             0, "%s", why);
	cr_expect_str_eq(req, "CONNECT broker.example.com:8883 HTTP/1.1\r\n"
	                      "Host: broker.example.com:8883\r\n\r\n");
	/* %XX decoded before Base64, as Paho does: "user:p@ss" */
	cr_expect_eq(tunnel("user:p%40ss@proxy:3128", "::1",
	                    "HTTP/1.0 200 OK\r\nProxy-Agent: x\r\n\r\nTLS", req, sizeof(req), why),
	             0, "%s", why);
	cr_expect_str_eq(req, "CONNECT [::1]:8883 HTTP/1.1\r\nHost: [::1]:8883\r\n"
	                      "Proxy-Authorization: Basic dXNlcjpwQHNz\r\n\r\n");
}

Test(dev_proxy, tunnel_refused_says_why_without_the_credentials)
{
	char req[1024], why[200];
	cr_expect_eq(tunnel("user:secret@proxy:3128", "b",
	                    "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", req,
	                    sizeof(req), why),
	             -1);
	cr_expect_str_eq(why, "proxy proxy:3128 refused the tunnel to b:8883: HTTP/1.1 407 Proxy "
	                      "Authentication Required");
	cr_expect_eq(tunnel("proxy:3128", "b", "HTTP/1.1 200 OK\r\n", req, sizeof(req), why), -1);
	cr_expect_str_eq(why, "proxy proxy:3128: closed the connection before replying to CONNECT");
	cr_expect_eq(tunnel("proxy:3128", "b", "SSH-2.0-OpenSSH\r\n\r\n", req, sizeof(req), why),
	             -1);
	cr_expect(strstr(why, "refused the tunnel to b:8883: SSH-2.0-OpenSSH"), "%s", why);
	cr_expect_null(strstr(why, "secret"));
	/* 200 must be the status, not the start of one; the proxy's bytes are quoted printable */
	cr_expect_eq(tunnel("proxy:3128", "b", "HTTP/1.1 2000 x\r\n\r\n", req, sizeof(req), why),
	             -1);
	cr_expect_eq(tunnel("proxy:3128", "b", "HTTP/1.1200 x\r\n\r\n", req, sizeof(req), why), -1);
	cr_expect_eq(tunnel("proxy:3128", "b", "HTTP/1.1 403 \x1b[2Jgone\r\n\r\n", req,
	                    sizeof(req), why),
	             -1);
	cr_expect_str_eq(why, "proxy proxy:3128 refused the tunnel to b:8883: HTTP/1.1 403 ?[2Jgone");
}

/* A proxy that accepts the connection and says nothing holds the check for timeout_ms in all,
 * not per byte; one whose header never ends is cut off. */
Test(dev_proxy, tunnel_waits_for_the_reply_at_most_its_timeout)
{
	int sv[2];
	char why[200];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	cr_assert_eq(write(sv[1], "HTTP/1.1 200 OK\r\n", 17), 17); /* and no blank line */
	int64_t t0 = otime_mono_ms();
	cr_expect_eq(dev_proxy_tunnel(sv[0], "proxy:3128", "b", 443, 300, why, sizeof(why)), -1);
	int64_t took = otime_mono_ms() - t0;
	cr_expect(took >= 250 && took < 3000, "%lld ms", (long long)took);
	cr_expect_str_eq(why, "proxy proxy:3128: no reply to CONNECT in time");
	close(sv[0]);
	close(sv[1]);

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	static char endless[5000];
	memset(endless, 'x', sizeof(endless));
	memcpy(endless, "HTTP/1.1 200 OK\r\nX: ", 20);
	cr_assert_eq(write(sv[1], endless, sizeof(endless)), (ssize_t)sizeof(endless));
	cr_expect_eq(dev_proxy_tunnel(sv[0], "proxy:3128", "b", 443, 3000, why, sizeof(why)), -1);
	cr_expect_str_eq(why, "proxy proxy:3128: reply header too long");
	close(sv[0]);
	close(sv[1]);
}

/* An IPv6 literal goes in brackets; anything else with more than one ':' (or a stray bracket)
 * is refused, not read as host ":" port (`::1` as host ":" port 1). Another scheme is refused
 * by name; empty credentials are none. */
Test(dev_proxy, refuses_ambiguous_hosts_and_other_schemes)
{
	char out[300];
	const char *why = NULL;
	const char *bad[] = {"::1", "fe80::1", "[::1", "proxy:3128:99", "]:80", "a]b:80",
			     "[]:80", "[proxy]:80", "[::1]x", "[::1]:", "[::1]:0", "proxy:",
			     ":3128", "proxy:+80", "proxy: 80", "http://[::1", "a[b:80"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(dev_proxy_resolve(bad[i], "b", out, sizeof(out), &why), -1,
			     "%s accepted as %s", bad[i], out);
	cr_expect_eq(dev_proxy_resolve("fe80::1", "b", out, sizeof(out), &why), -1);
	cr_expect(strstr(why, "brackets"), "%s", why);
	cr_expect_eq(resolve("[::1]:3128", "b", out), 1);
	cr_expect_str_eq(out, "[::1]:3128");
	cr_expect_eq(resolve("http://[fd00::1]", "b", out), 1);
	cr_expect_str_eq(out, "[fd00::1]:8080");
	cr_expect_eq(resolve("http://u:p@[::ffff:10.0.0.1]:3128/", "b", out), 1);
	cr_expect_str_eq(out, "u:p@[::ffff:10.0.0.1]:3128");

	cr_expect_eq(dev_proxy_resolve("socks5://proxy:1080", "b", out, sizeof(out), &why), -1);
	cr_expect_str_eq(why, "unsupported proxy scheme socks5 (only http)");
	cr_expect_eq(dev_proxy_resolve("SOCKS5H://u:p@proxy:1080", "b", out, sizeof(out), &why),
		     -1);
	cr_expect_str_eq(why, "unsupported proxy scheme socks5h (only http)");
	cr_expect_eq(dev_proxy_resolve("gopher://proxy:70", "b", out, sizeof(out), &why), -1);
	cr_expect_str_eq(why, "unsupported proxy scheme (only http)");

	cr_expect_eq(resolve("http://@proxy:3128", "b", out), 1);
	cr_expect_str_eq(out, "proxy:3128", "empty credentials are none");
	cr_expect_eq(resolve("http://:@proxy", "b", out), 1);
	cr_expect_str_eq(out, "proxy:8080");
}

/* no_proxy as curl and most tools read it: a port on an entry is not part of the name, "*."
 * is ".", a trailing dot changes nothing, an IPv4 net in CIDR form covers its addresses. */
Test(dev_proxy, no_proxy_forms)
{
	struct {
		const char *list, *host;
		int excluded;
	} cases[] = {
		{"broker.example.com:8883", "broker.example.com", 1},
		{"example.com:443", "broker.example.com", 1},
		{"*.example.com", "broker.example.com", 1},
		{"*.example.com", "badexample.com", 0},
		{"example.com.", "broker.example.com", 1},
		{"example.com", "broker.example.com.", 1},
		{".example.com.", "broker.example.com.", 1},
		{"10.0.0.0/8", "10.20.30.40", 1},
		{"10.0.0.0/8", "11.0.0.1", 0},
		{"192.168.1.0/24", "192.168.1.255", 1},
		{"192.168.1.0/24", "192.168.2.1", 0},
		{"0.0.0.0/0", "8.8.8.8", 1},
		{"10.0.0.0/8", "broker.example.com", 0},
		{"10.0.0.0/33, 10.0.0.0/x", "10.0.0.1", 0},
		{"10.1.2.3/32", "10.1.2.3", 1},
		{"fd00::1", "fd00::1", 1},
		{"[fd00::1]:8883", "fd00::1", 1},
		{"[fd00::1]", "fd00::2", 0},
		{"localhost, other.org", "broker.example.com", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_eq(dev_proxy_excluded(cases[i].list, cases[i].host), cases[i].excluded,
			     "no_proxy=%s host %s: not %d", cases[i].list, cases[i].host,
			     cases[i].excluded);

	/* no_proxy set but empty is unset: NO_PROXY applies */
	char out[300];
	setenv("https_proxy", "http://envproxy:3128", 1);
	setenv("no_proxy", "", 1);
	setenv("NO_PROXY", ".example.com", 1);
	cr_expect_eq(resolve("", "broker.example.com", out), 0, "NO_PROXY ignored");
	unsetenv("https_proxy");
	unsetenv("no_proxy");
	unsetenv("NO_PROXY");
}
