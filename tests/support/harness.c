/* harness.c - process, port, PKI and broker helpers for the Outpost tests. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "wire_sign.h"

extern char **environ;

const char *h_source_dir(void)
{
	return OUTPOST_SOURCE_DIR;
}

const char *h_build_dir(void)
{
	return OUTPOST_BINARY_DIR;
}

char *h_strf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

long long h_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void h_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

char *h_tmpdir(const char *tag)
{
	char *base = h_strf("%s/tests/tmp", h_build_dir());
	mkdir(base, 0755);
	char *tmpl = h_strf("%s/%s-XXXXXX", base, tag);
	free(base);
	if (!mkdtemp(tmpl))
		abort();
	chmod(tmpl, 0755);
	return tmpl;
}

int h_write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	int ok = fwrite(data, 1, len, f) == len;
	return fclose(f) == 0 && ok ? 0 : -1;
}

int h_write_text(const char *path, const char *text)
{
	return h_write_file(path, text, strlen(text));
}

char *h_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	size_t r;
	while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
		n += r;
		if (cap - n - 1 == 0) {
			cap *= 2;
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				buf = NULL;
			}
			buf = nb;
		}
	}
	fclose(f);
	if (!buf)
		return NULL;
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

int h_count(const char *text, const char *needle)
{
	int n = 0;
	for (const char *p = text; p && (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

int h_count_in_file(const char *path, const char *needle)
{
	char *text = h_read_file(path, NULL);
	int n = h_count(text, needle);
	free(text);
	return n;
}

int h_sh(const char *cmd, char **out, int timeout_s)
{
	char *log = NULL;
	char *full;
	if (out) {
		char *dir = h_tmpdir("sh");
		log = h_strf("%s/out", dir);
		full = h_strf("timeout -s KILL %d sh -c '%s' >'%s' 2>&1", timeout_s, cmd, log);
		free(dir);
	} else {
		full = h_strf("timeout -s KILL %d sh -c '%s'", timeout_s, cmd);
	}
	/* cmd must not contain single quotes; tests control their commands. */
	if (strchr(cmd, '\''))
		abort();
	int st = system(full);
	free(full);
	if (out) {
		*out = h_read_file(log, NULL);
		if (!*out)
			*out = strdup("");
		free(log);
	}
	if (st == -1)
		return -1;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}

static const char *make_pki(const char *name, const char *args)
{
	static char paths[2][512];
	int slot = strcmp(name, "pki-main") == 0 ? 0 : 1;
	if (paths[slot][0])
		return paths[slot];
	char *dir = h_strf("%s/tests/%s", h_build_dir(), name);
	char *lock = h_strf("%s/tests/.pki.lock", h_build_dir());
	int fd = open(lock, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
	if (fd < 0)
		abort();
	/* another test process may be provisioning: wait for it, at most 5 minutes */
	long long until = h_now_ms() + 300000;
	while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (h_now_ms() > until) {
			fprintf(stderr, "PKI setup: %s held for 5 minutes\n", lock);
			abort();
		}
		h_sleep_ms(50);
	}
	char *done = h_strf("%s/.complete", dir);
	if (access(done, F_OK) != 0) {
		char *cmd = h_strf("%s/scripts/provision-certs.sh --out %s %s", h_source_dir(), dir, args);
		char *out = NULL;
		if (h_sh(cmd, &out, 120) != 0) {
			fprintf(stderr, "PKI setup failed: %s\n%s\n", cmd, out);
			abort();
		}
		free(out);
		free(cmd);
		if (slot == 0) {
			cmd = h_strf("%s/scripts/provision-certs.sh --out %s --revoke dev-revoked",
				     h_source_dir(), dir);
			if (h_sh(cmd, NULL, 60) != 0)
				abort();
			free(cmd);
		}
		FILE *f = fopen(done, "w");
		if (f)
			fclose(f);
	}
	flock(fd, LOCK_UN);
	close(fd);
	snprintf(paths[slot], sizeof(paths[slot]), "%s", dir);
	free(dir);
	free(lock);
	free(done);
	return paths[slot];
}

const char *h_pki(void)
{
	return make_pki("pki-main", "--devices dev-a,dev-b,dev-c,dev-revoked");
}

const char *h_pki_other(void)
{
	return make_pki("pki-other", "--devices dev-a");
}

void h_pki_gencrl(const char *dir, int copy_main, const char *options)
{
	char *copy = copy_main ? h_strf("cp -a %s/. %s/ && ", h_pki(), dir) : h_strf("%s", "");
	char *cmd = h_strf("%sOUTPOST_PKI=%s OUTPOST_SAN=DNS:localhost openssl ca -config "
			   "%s/certs/openssl.cnf -gencrl -crlexts crl_ext %s -out %s/crl.pem",
			   copy, dir, h_source_dir(), options, dir);
	char *out = NULL;
	if (h_sh(cmd, &out, 60) != 0) {
		fprintf(stderr, "h_pki_gencrl failed: %s\n%s\n", cmd, out);
		abort();
	}
	free(out);
	free(cmd);
	free(copy);
}

char *h_pki_issue_dated(const char *tag, const char *cn, const char *start, const char *end)
{
	return h_pki_issue_dated_by(h_pki(), NULL, tag, cn, start, end);
}

char *h_pki_issue_dated_by(const char *pki, const char *key, const char *tag, const char *cn,
			   const char *start, const char *end)
{
	char *dir = h_tmpdir(tag);
	const char *src = h_source_dir();
	char *get_key = key ? h_strf("cp %s devices/%s.key", key, cn)
			    : h_strf("openssl genpkey -algorithm ed25519 -out devices/%s.key", cn);
	/* its own CA database (.ca) beside a copy of the CA: the shared one stays as it is */
	char *cmd =
	    h_strf("set -e; cd %s; cp %s/ca.crt %s/ca.key .; mkdir -p .ca/issued devices; "
	           ": > .ca/index.txt; echo 01 > .ca/serial; echo 01 > .ca/crlnumber; %s; "
	           "openssl req -new -config %s/certs/openssl.cnf -key devices/%s.key -subj /CN=%s "
	           "-out leaf.csr; "
	           "OUTPOST_PKI=%s OUTPOST_SAN=DNS:localhost openssl ca -batch -config "
	           "%s/certs/openssl.cnf -extensions client_cert -notext -startdate %s -enddate %s "
	           "-in leaf.csr -out devices/%s.crt",
	           dir, pki, pki, get_key, src, cn, cn, dir, src, start, end, cn);
	char *out = NULL;
	if (h_sh(cmd, &out, 60) != 0) {
		fprintf(stderr, "h_pki_issue_dated failed: %s\n%s\n", cmd, out);
		abort();
	}
	free(out);
	free(cmd);
	free(get_key);
	return dir;
}

struct wire_key *h_pki_key(const char *name)
{
	struct wire_key *k = NULL;
	char *path = h_strf("%s/%s.key", h_pki(), name);
	if (wire_key_load(path, &k, NULL) != WIRE_OK) {
		fprintf(stderr, "cannot load %s\n", path);
		abort();
	}
	free(path);
	return k;
}

/* The low end of the kernel's ephemeral range (outgoing connections take their local ports
 * from it), 32768 if unknown. */
static int ephemeral_low(void)
{
	int low = 32768, high = 0;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	if (f) {
		if (fscanf(f, "%d %d", &low, &high) != 2 || low < 12000 || low > 65535)
			low = 32768;
		fclose(f);
	}
	return low;
}

int h_listen_loopback(int backlog, int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, backlog) ||
	    getsockname(fd, (struct sockaddr *)&a, &len)) {
		perror("h_listen_loopback");
		abort();
	}
	*port = ntohs(a.sin_port);
	return fd;
}

int h_free_port(void)
{
	/* Chosen below the ephemeral range, so that no outgoing connection (a device's, a
	 * client's, of any test running alongside) takes the port between this check and the
	 * listener's bind; at random, so that tests running alongside rarely pick the same one.
	 * A collision that happens anyway shows as a failed bind, which h_broker_start retries. */
	static pid_t seeded_for;
	static unsigned int seed;
	static int handed[64];
	static unsigned int n_handed;
	if (seeded_for != getpid()) { /* Criterion forks a process per test */
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		seed = (unsigned int)getpid() * 2654435761u ^ (unsigned int)ts.tv_nsec;
		seeded_for = getpid();
		n_handed = 0;
	}
	int low = 10000, span = ephemeral_low() - low;
	for (int attempt = 0; attempt < 500; attempt++) {
		int port = low + (int)(rand_r(&seed) % (unsigned int)span);
		bool again = false;
		for (unsigned int i = 0; i < n_handed && i < 64; i++)
			again |= handed[i] == port;
		if (again)
			continue;
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_port = htons((uint16_t)port),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		if (fd < 0)
			abort();
		int ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (ok) {
			handed[n_handed++ % 64] = port;
			return port;
		}
	}
	fprintf(stderr, "no free port below %d\n", low + span);
	abort();
}

bool h_wait_port(int port, int timeout_ms)
{
	long long end = h_now_ms() + timeout_ms;
	for (;;) { /* one try at least, even with timeout_ms 0 */
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_port = htons((uint16_t)port),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (ok)
			return true;
		if (h_now_ms() >= end)
			return false;
		h_sleep_ms(20);
	}
}

pid_t h_spawn(char *const argv[], char *const env[], const char *log_path)
{
	pid_t pid = fork();
	if (pid < 0)
		abort();
	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		for (size_t i = 0; env && env[i]; i++)
			putenv(env[i]);
		setpgid(0, 0);
		/* If the test dies (crash, Criterion timeout) before stopping the child, the child
		 * must not outlive it holding ports and files. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() == 1)
			_exit(127);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

int h_wait_exit(pid_t pid, int timeout_ms)
{
	long long end = h_now_ms() + timeout_ms;
	int st;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (r < 0)
			return -2;
		if (h_now_ms() >= end)
			return -1;
		h_sleep_ms(10);
	}
}

int h_stop(pid_t pid, int timeout_ms)
{
	if (pid <= 0)
		return -2;
	kill(pid, SIGTERM);
	int rc = h_wait_exit(pid, timeout_ms);
	if (rc == -1) {
		kill(pid, SIGKILL);
		rc = h_wait_exit(pid, 5000);
	}
	return rc;
}

/* Whether the broker still runs after `ms`; if not, b->pid is 0 (it has been reaped). */
static bool broker_alive(struct h_broker *b, int ms)
{
	int st;
	if (ms)
		h_sleep_ms(ms);
	if (waitpid(b->pid, &st, WNOHANG) != b->pid)
		return true;
	b->pid = 0;
	return false;
}

/* Whether the broker listens on all three ports within 20 s; false at once if it exits. It
 * opens them one after the other: one taken by another process answers, then the broker exits
 * on it, so it must still run a moment after the last one answered. */
static bool broker_listening(struct h_broker *b)
{
	const int ports[] = {b->mqtts_port, b->wss_port, b->internal_port};
	long long end = h_now_ms() + 20000;
	for (size_t i = 0; i < 3;) {
		if (!broker_alive(b, 0))
			return false;
		if (h_wait_port(ports[i], 0))
			i++;
		else if (h_now_ms() >= end)
			return false;
		else
			h_sleep_ms(20);
	}
	return broker_alive(b, 200);
}

char *h_read_file_from(const char *path, size_t from)
{
	size_t len = 0;
	char *all = h_read_file(path, &len);
	if (!all || from == 0 || from > len)
		return all;
	memmove(all, all + from, len - from + 1);
	return all;
}

size_t h_file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

void h_broker_start(struct h_broker *b, const char *pki)
{
	bool new_ports = !b->wss_port;
	if (new_ports) {
		b->dir = h_tmpdir("broker");
		b->log = h_strf("%s/mosquitto.log", b->dir);
	}
	b->pki = pki;
	char *script = h_strf("%s/docker/mosquitto/run-broker.sh", h_source_dir());
	/* A port picked by h_free_port can still be taken by a test running alongside before
	 * mosquitto binds it: on new ports, such a start is retried on other ones. */
	for (int attempt = 1;; attempt++) {
		if (new_ports) {
			b->wss_port = h_free_port();
			b->mqtts_port = h_free_port();
			b->internal_port = h_free_port();
		}
		char *env[] = {
			h_strf("OUTPOST_PKI_DIR=%s", pki),
			h_strf("OUTPOST_BROKER_DIR=%s", b->dir),
			h_strf("OUTPOST_WSS_PORT=%d", b->wss_port),
			h_strf("OUTPOST_MQTTS_PORT=%d", b->mqtts_port),
			h_strf("OUTPOST_INTERNAL_PORT=%d", b->internal_port),
			h_strf("OUTPOST_BROKER_BIND=127.0.0.1"),
			h_strf("OUTPOST_INTERNAL_BIND=127.0.0.1"),
			h_strf("OUTPOST_AUTH_PLUGIN=%s", OUTPOST_AUTH_PLUGIN),
			NULL,
		};
		char *argv[] = {script, NULL};
		size_t log_from = h_file_size(b->log);
		b->pid = h_spawn(argv, env, b->log);
		/* putenv in the child kept pointers; the parent can free its copies now. */
		for (size_t i = 0; env[i]; i++)
			free(env[i]);
		if (broker_listening(b))
			break;
		h_broker_stop(b);
		char *log = h_read_file_from(b->log, log_from);
		bool collided = log && (strstr(log, "Address already in use") ||
					strstr(log, "Unable to create websockets listener"));
		if (!new_ports || !collided || attempt == 3) {
			fprintf(stderr, "broker did not start (attempt %d); log %s:\n%s\n", attempt,
				b->log, log ? log : "(none)");
			abort();
		}
		fprintf(stderr, "broker: a port was taken, starting again on other ports\n");
		free(log);
	}
	free(script);
}

void h_broker_stop(struct h_broker *b)
{
	if (b->pid > 0)
		h_stop(b->pid, 5000);
	b->pid = 0;
}

void h_broker_free(struct h_broker *b)
{
	h_broker_stop(b);
	free(b->dir);
	free(b->log);
	b->dir = b->log = NULL;
}
