/* test_dev_proxy.c - proxy selection and normalisation to the host:port form Paho needs. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "dev_proxy.h"

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
