/* harness.h - test support: paths, temp dirs, child processes, loopback ports, PKI, broker.
 * Every wait is bounded in time; every process a test starts is stopped by the test. */
#ifndef HARNESS_H
#define HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Source and build directories (compiled in by CMake). */
const char *h_source_dir(void);
const char *h_build_dir(void);

/* printf into a malloc'd string; aborts on allocation failure (tests only). */
char *h_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A fresh directory under <build>/tests/tmp; caller frees the string. */
char *h_tmpdir(const char *tag);

/* Run `sh -c cmd`; returns the exit status (or 128+signal), captures stdout+stderr into *out
 * when out is non-NULL (caller frees). Killed after timeout_s seconds. */
int h_sh(const char *cmd, char **out, int timeout_s);

/* Read a whole file (caller frees), NULL if unreadable. */
char *h_read_file(const char *path, size_t *len);
/* The text appended to path after byte `from` (one attempt's part of a log). Caller frees. */
char *h_read_file_from(const char *path, size_t from);
/* Create or replace path with len bytes of data: 0, or -1 if it cannot be written. */
int h_write_file(const char *path, const void *data, size_t len);
/* The same with a string. */
int h_write_text(const char *path, const char *text);
/* The size of a file, 0 if it does not exist. */
size_t h_file_size(const char *path);

/* How often needle occurs in text (0 for NULL), and in the file at path (0 if unreadable). */
int h_count(const char *text, const char *needle);
int h_count_in_file(const char *path, const char *needle);

/* Shared test PKIs, created once per build by scripts/provision-certs.sh (under a lock):
 *   h_pki():       devices dev-a, dev-b, dev-c, dev-revoked (revoked in crl.pem)
 *   h_pki_other(): an unrelated CA with device dev-a */
const char *h_pki(void);
const char *h_pki_other(void);

/* Write <dir>/crl.pem again from the CA in dir (a provision-certs.sh directory) with extra
 * `openssl ca -gencrl` options (dates: -crlsec 3, -crl_nextupdate 20210101000000Z...); when
 * copy_main, dir first receives a copy of h_pki(). Aborts on failure. */
void h_pki_gencrl(const char *dir, int copy_main, const char *options);

/* A device certificate for cn issued by h_pki()'s CA with the given validity (openssl ca
 * -startdate/-enddate, e.g. "20200101000000Z"), in a fresh directory laid out like a PKI:
 * <dir>/devices/<cn>.{key,crt} (a new Ed25519 key). The shared PKI's CA database is not
 * touched. Caller frees the string; aborts on failure. */
char *h_pki_issue_dated(const char *tag, const char *cn, const char *start, const char *end);

/* The same by the CA of pki (h_pki(), h_pki_other()), for a copy of the key file key (an
 * existing key, e.g. <h_pki()>/bridge.key; NULL: a new one). */
char *h_pki_issue_dated_by(const char *pki, const char *key, const char *tag, const char *cn,
			   const char *start, const char *end);

/* Load <h_pki()>/<name>.key (e.g. "devices/dev-a", "bridge"); aborts if it cannot. */
struct wire_key *h_pki_key(const char *name);

/* A TCP port on 127.0.0.1 that was free a moment ago, below the ephemeral range, never the
 * same twice in one process (of the last 64). */
int h_free_port(void);

/* A socket listening on 127.0.0.1 at a port the kernel picks (*port), with backlog; the
 * caller closes it. Aborts on failure (tests only). */
int h_listen_loopback(int backlog, int *port);

/* Wait until something listens on 127.0.0.1:port (one try at least); false after timeout_ms. */
bool h_wait_port(int port, int timeout_ms);

/* Start argv[0] with extra environment entries ("K=V", NULL-terminated, may be NULL),
 * stdout+stderr appended to log_path. Returns the pid (aborts on failure). */
pid_t h_spawn(char *const argv[], char *const env[], const char *log_path);

/* SIGTERM, then SIGKILL after timeout_ms. Returns the exit status (128+sig if signalled). */
int h_stop(pid_t pid, int timeout_ms);

/* Wait for a child to exit by itself; -1 if still running after timeout_ms. */
int h_wait_exit(pid_t pid, int timeout_ms);

/* A real mosquitto from docker/mosquitto/run-broker.sh on free loopback ports. */
struct h_broker {
	pid_t pid;
	int wss_port;
	int mqtts_port;
	int internal_port;
	char *dir;
	char *log;
	const char *pki;
};

/* Start on new ports (or the ports already in b when b->wss_port != 0: a restart). */
void h_broker_start(struct h_broker *b, const char *pki);
void h_broker_stop(struct h_broker *b);
void h_broker_free(struct h_broker *b);

/* Milliseconds on the monotonic clock. */
long long h_now_ms(void);
void h_sleep_ms(int ms);

#endif
