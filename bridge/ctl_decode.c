/* ctl_decode.c - outpostctl decode: print Outpost messages captured with
 * `mosquitto_sub -F '%t %x'` (one "topic hexpayload" per line) or one raw payload, verifying
 * signatures with the certificates given (--pki DIR, --cert FILE). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "oarray.h"
#include "ohex.h"
#include "outpost.pb-c.h"
#include "wire_batch.h"
#include "wire_cert.h"
#include "wire_env.h"
#include "wire_msg.h"
#include "wire_topic.h"

#define DECODE_MAX_INPUT (64u << 20)
/* A "topic hex" line: the hex of the largest envelope, and room for any topic. */
#define DECODE_MAX_LINE (2 * (size_t)WIRE_MAX_ENVELOPE + 1024)
#define MAX_CERT_ARGS    64 /* --cert given at most this often */

struct signer {
	char cn[WIRE_ID_MAX + 1];
	struct wire_pubkey key;
	char from[160];
	char refused[160]; /* "" or why the PKI's certificate for cn is not trusted (revoked...) */
	int none;          /* the PKI has no certificate for cn: looked up once, not at every use */
};

/* Metric names learnt from the Births seen earlier in the input. */
struct catalog {
	char device[WIRE_ID_MAX + 1];
	Outpost__Birth *birth;
};

struct dec {
	struct store *store; /* optional: metric names of devices whose Birth is not in the input */
	const char *pki;
	struct wire_ca *ca;
	/* Both grow with the devices met, as far as memory goes: a capture of many devices keeps
	 * every certificate and every Birth's catalog. */
	struct signer *certs;
	size_t n_certs, cap_certs;
	struct catalog *cats;
	size_t n_cats, cap_cats;
	int verify; /* --pki or --cert given: a Birth not verified names no metrics */
	int failures;
};

/* Trust the certificate at path; must: given by the user (a failure is a usage error), else
 * looked up for cn in the PKI directory (absent, or for another CN: a signer for cn that is
 * none; not trusted: a refused signer). Out of memory: said, counted as a failure, CTL_FAIL
 * and nothing added. */
static int add_cert(struct dec *d, const char *path, const char *cn, int must)
{
	char *pem = NULL;
	size_t len = 0;
	struct wire_cert_info info;
	struct wire_diag diag = {""};
	struct signer *s;
	int rc;
	if (oarray_reserve((void **)&d->certs, &d->cap_certs, d->n_certs, sizeof(*d->certs))) {
		d->failures++;
		return ctl_err(CTL_FAIL, "decode: %s: out of memory after %zu certificates", path,
		               d->n_certs);
	}
	if ((rc = wire_cert_read(path, &pem, &len))) {
		int e = errno;
		if (must && rc == WIRE_EIO)
			return ctl_err(CTL_USAGE, "decode: --cert %s: cannot read it: %s", path,
			               e == EINVAL ? "not a regular file" : strerror(e));
		if (must && rc == WIRE_ELIMIT)
			return ctl_err(CTL_USAGE,
			               "decode: --cert %s: over %d bytes, larger than a"
			               " certificate",
			               path, WIRE_MAX_CERT_PEM);
		if (must)
			return ctl_err(CTL_FAIL, "decode: --cert %s: %s", path, wire_strerror(rc));
		goto none;
	}
	rc = d->ca ? wire_ca_verify(d->ca, pem, len, &info, &diag)
	           : wire_cert_parse(pem, len, &info, &diag);
	free(pem);
	if (rc && must)
		return ctl_err(CTL_USAGE, "decode: %s: %s", path,
		               diag.msg[0] ? diag.msg : wire_strerror(rc));
	const char *base = strrchr(path, '/');
	if (!rc && cn && strcmp(info.cn, cn))
		goto none; /* devices/<cn>.crt is another device's: none for cn */
	s = &d->certs[d->n_certs++];
	memset(s, 0, sizeof(*s));
	snprintf(s->from, sizeof(s->from), "%s", base ? base + 1 : path);
	if (rc) {
		/* The PKI has a certificate for cn that is not trusted: what it signed fails,
		 * and the certificate a Birth carries does not stand in for it. */
		snprintf(s->cn, sizeof(s->cn), "%s", cn);
		snprintf(s->refused, sizeof(s->refused), "%s",
		         diag.msg[0] ? diag.msg : wire_strerror(rc));
		return ctl_err(CTL_FAIL, "decode: %s: %s", path, s->refused);
	}
	snprintf(s->cn, sizeof(s->cn), "%s", info.cn);
	s->key = info.key;
	return CTL_OK;
none:
	s = &d->certs[d->n_certs++];
	memset(s, 0, sizeof(*s));
	snprintf(s->cn, sizeof(s->cn), "%s", cn);
	s->none = 1;
	return CTL_OK;
}

/* The signer cn's signatures are checked with (*s, valid until the next lookup), or NULL if
 * none is known. 0, or -1 when memory ran out before the PKI's certificate was loaded (said,
 * counted as a failure). */
static int signer_for(struct dec *d, const char *cn, const struct signer **s)
{
	*s = NULL;
	for (size_t i = 0; i < d->n_certs; i++)
		if (!strcmp(d->certs[i].cn, cn)) {
			*s = d->certs[i].none ? NULL : &d->certs[i];
			return 0;
		}
	if (!d->pki)
		return 0;
	/* Look the certificate up in the PKI directory on first use. */
	char *path = NULL;
	int bridge = !strcmp(cn, "outpost-bridge");
	if (asprintf(&path, bridge ? "%s/bridge.crt" : "%s/devices/%s.crt", d->pki, cn) < 0) {
		d->failures++;
		ctl_err(CTL_FAIL, "decode: out of memory looking up the certificate of %s", cn);
		return -1;
	}
	size_t before = d->n_certs;
	add_cert(d, path, cn, 0);
	free(path);
	if (d->n_certs == before)
		return -1; /* out of memory: every other outcome adds a signer for cn */
	*s = d->certs[before].none ? NULL : &d->certs[before];
	return 0;
}

/* The catalog of device's last Birth in the input, or NULL. */
static const Outpost__Birth *catalog_of(const struct dec *d, const char *device)
{
	for (size_t i = 0; i < d->n_cats; i++)
		if (!strcmp(d->cats[i].device, device))
			return d->cats[i].birth;
	return NULL;
}

static const char *metric_name(struct dec *d, const Outpost__Birth *b, const char *device,
                               uint32_t id, char *buf /* WIRE_MAX_METRIC_NAME + 1 bytes */)
{
	for (size_t k = 0; b && k < b->n_metrics; k++)
		if (b->metrics[k]->id == id)
			return b->metrics[k]->name;
	if (d->store) {
		struct store_stmt *st = NULL;
		int found = 0;
		if (!store_prepare(d->store,
				   "SELECT m.name FROM metrics m JOIN devices v ON v.id = m.device"
				   " WHERE v.device_id = ? AND m.wire_id = ?",
				   &st) &&
		    !store_bind_text(st, 1, device) && !store_bind_i64(st, 2, id) &&
		    store_step(st) == 1 && store_col_text(st, 0)) {
			snprintf(buf, WIRE_MAX_METRIC_NAME + 1, "%s", store_col_text(st, 0));
			found = 1;
		}
		store_stmt_free(st);
		if (found)
			return buf;
	}
	snprintf(buf, 16, "#%u", id);
	return buf;
}

static void remember_birth(struct dec *d, const char *device, Outpost__Birth *b)
{
	for (size_t i = 0; i < d->n_cats; i++)
		if (!strcmp(d->cats[i].device, device)) {
			wire_msg_free(d->cats[i].birth);
			d->cats[i].birth = b;
			return;
		}
	if (oarray_reserve((void **)&d->cats, &d->cap_cats, d->n_cats, sizeof(*d->cats))) {
		wire_msg_free(b);
		d->failures++;
		ctl_err(CTL_FAIL, "decode: out of memory after %zu Births: %s's metrics not kept",
		        d->n_cats, device);
		return;
	}
	snprintf(d->cats[d->n_cats].device, sizeof(d->cats[0].device), "%s", device);
	d->cats[d->n_cats++].birth = b;
}

/* Text a device sent, for the terminal (ctl_vis); up to four per printf. */
static const char *vis(const char *s)
{
	static char ring[4][CTL_VIS_MAX];
	static int k;
	k = (k + 1) % 4;
	return ctl_vis(s, ring[k], sizeof(ring[k]));
}

/* A message's time: "-" for 0, which protobuf sends for a field not set (a reading's time is
 * a time, 0 included: ctl_time). */
static const char *when(int64_t ms, char *buf)
{
	return ms ? ctl_time(ms, buf) : "-";
}

static void hexdump(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
}

static void print_kvs(const char *indent, Outpost__KeyValue *const *kv, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%s%s=%s\n", indent, vis(kv[i]->key), vis(kv[i]->value));
}

/* The body of e; a Birth's catalog names the metrics of the device's later batches only if
 * trusted (its signature verified, or no verification asked for and none failed). */
static int body(struct dec *d, const struct wire_env *e, int trusted)
{
	struct wire_diag diag = {""};
	char t[32], nb[WIRE_MAX_METRIC_NAME + 1];
	int rc = 0;
	switch (e->kind) {
	case WIRE_KIND_BIRTH: {
		Outpost__Birth *b = NULL;
		if ((rc = wire_birth_decode(e->body, e->body_len, &b, &diag)))
			break;
		struct wire_cert_info ci;
		printf("  agent %s, boot id ", vis(b->agent_version));
		hexdump(b->boot_id.data, b->boot_id.len);
		printf(", started %s\n", when(b->started_at_ms, t));
		if (!wire_cert_parse(b->cert_pem, strlen(b->cert_pem), &ci, NULL))
			printf("  certificate CN=%s\n", vis(ci.cn));
		printf("  intervals: sample %us, batch %us, poll %us; chain floor %" PRIu64 "\n",
		       b->sample_interval_s, b->batch_interval_s, b->poll_interval_s,
		       b->chain_floor);
		if (b->spool)
			printf("  spool: %" PRIu64 " records, %" PRIu64
			       " bytes, oldest unsent %" PRIu64 "s, %u disconnects%s%s, %" PRIu64
			       " dropped in total\n",
			       b->spool->records, b->spool->bytes, b->spool->oldest_unsent_age_s,
			       b->spool->disconnects,
			       b->spool->last_disconnect_cause && b->spool->last_disconnect_cause[0]
			           ? " (last: "
			           : "",
			       b->spool->last_disconnect_cause && b->spool->last_disconnect_cause[0]
			           ? vis(b->spool->last_disconnect_cause)
			           : "",
			       b->spool->dropped_total);
		printf("  metrics (%zu):", b->n_metrics);
		for (size_t i = 0; i < b->n_metrics; i++)
			printf(" %u=%s%s%s%s", b->metrics[i]->id, vis(b->metrics[i]->name),
			       b->metrics[i]->unit && b->metrics[i]->unit[0] ? "[" : "",
			       vis(b->metrics[i]->unit),
			       b->metrics[i]->unit && b->metrics[i]->unit[0] ? "]" : "");
		printf("\n");
		if (trusted) {
			remember_birth(d, e->device_id, b);
		} else {
			/* else anyone could rename another device's metrics in what follows */
			printf("  metric names not used for %s's batches: signature not verified\n",
			       e->device_id);
			wire_msg_free(b);
		}
		break;
	}
	case WIRE_KIND_BATCH: {
		struct wire_batch *b = NULL;
		if ((rc = wire_batch_decode(e->body, e->body_len, &b, &diag)))
			break;
		printf("  prev_seq %" PRIu64 ", %zu rows x %zu metrics, %zu readings\n",
		       b->prev_seq, b->n_rows, b->n_cols, b->n_readings);
		for (size_t i = 0; i < b->n_dropped; i++)
			printf("  dropped: seq %" PRIu64 "..%" PRIu64 " (%" PRIu64 " envelopes)\n",
			       b->dropped[i].prev_seq + 1, b->dropped[i].last_seq,
			       b->dropped[i].count);
		const Outpost__Birth *cat = catalog_of(d, e->device_id);
		int64_t row_t = 0;
		int open = 0;
		for (size_t i = 0; i < b->n_readings; i++) {
			const struct wire_reading *r = &b->readings[i];
			if (!open || r->t_ms != row_t) {
				printf("%s  %s", open ? "\n" : "", ctl_time(r->t_ms, t));
				row_t = r->t_ms;
				open = 1;
			}
			char vb[32];
			printf(" %s=%s", vis(metric_name(d, cat, e->device_id, r->metric_id, nb)),
			       ctl_double(r->value, vb));
		}
		if (open)
			printf("\n");
		wire_batch_free(b);
		break;
	}
	case WIRE_KIND_TASK_POLL: {
		Outpost__TaskPoll *p = NULL;
		if ((rc = wire_task_poll_decode(e->body, e->body_len, &p, &diag)))
			break;
		printf("  last task id %" PRIu64 ", at most %u tasks\n", p->last_task_id,
		       p->max_tasks);
		wire_msg_free(p);
		break;
	}
	case WIRE_KIND_TASK_RESULT: {
		Outpost__TaskResult *r = NULL;
		static const char *const st[] = {"?", "succeeded", "failed", "rejected"};
		if ((rc = wire_task_result_decode(e->body, e->body_len, &r, &diag)))
			break;
		printf("  prev_seq %" PRIu64 ", task %" PRIu64 " %s at %s: %s\n", r->prev_seq,
		       r->task_id, st[r->status <= 3 ? r->status : 0],
		       when(r->finished_at_ms, t), vis(r->message));
		print_kvs("    ", r->output, r->n_output);
		wire_msg_free(r);
		break;
	}
	case WIRE_KIND_ACK: {
		Outpost__Ack *a = NULL;
		if ((rc = wire_ack_decode(e->body, e->body_len, &a, &diag)))
			break;
		printf("  upto %" PRIu64 ", committed %s", a->upto,
		       when(a->committed_at_ms, t));
		for (size_t i = 0; i < a->n_ranges; i++)
			printf("%s%" PRIu64 "..%" PRIu64, i ? ", " : "; ranges ",
			       a->ranges[i]->first, a->ranges[i]->last);
		printf("\n");
		wire_msg_free(a);
		break;
	}
	case WIRE_KIND_TASK_LIST: {
		Outpost__TaskList *l = NULL;
		if ((rc = wire_task_list_decode(e->body, e->body_len, &l, &diag)))
			break;
		printf("  answer to poll %" PRIu64 ", issued %s, %zu task(s)\n", l->poll_seq,
		       when(l->issued_at_ms, t), l->n_tasks);
		for (size_t i = 0; i < l->n_tasks; i++) {
			char t2[32];
			printf("  task %" PRIu64 " %s for %s, expires %s (created %s)\n",
			       l->tasks[i]->id, vis(l->tasks[i]->type), vis(l->tasks[i]->device_id),
			       when(l->tasks[i]->expires_at_ms, t),
			       when(l->tasks[i]->created_at_ms, t2));
			print_kvs("    ", l->tasks[i]->args, l->tasks[i]->n_args);
		}
		wire_msg_free(l);
		break;
	}
	default:
		rc = WIRE_EKIND;
	}
	if (rc) {
		printf("  INVALID body: %s\n", diag.msg[0] ? diag.msg : wire_strerror(rc));
		d->failures++;
	}
	return rc;
}

static void message(struct dec *d, const char *topic, const uint8_t *p, size_t n)
{
	char id[WIRE_ID_MAX + 1] = "", t[32];
	enum wire_topic tk = WIRE_TOPIC_COUNT;
	struct wire_env e;
	struct wire_diag diag = {""};
	if (topic && wire_topic_parse(topic, strlen(topic), id, &tk))
		tk = WIRE_TOPIC_COUNT;
	if (tk == WIRE_TOPIC_STATUS) {
		char st[65];
		snprintf(st, sizeof(st), "%.*s", (int)(n > 64 ? 64 : n), (const char *)p);
		printf("%s  status  %s\n", vis(topic), vis(st));
		return;
	}
	int rc = wire_env_decode(p, n, &e, &diag);
	if (rc) {
		printf("%s  INVALID envelope (%zu bytes): %s\n", topic ? vis(topic) : "-", n,
		       diag.msg[0] ? diag.msg : wire_strerror(rc));
		d->failures++;
		return;
	}
	printf("%s  %s  %s  seq %" PRIu64 "  sent %s  ", topic ? vis(topic) : "-",
	       wire_kind_name(e.kind), e.device_id, e.seq, when(e.sent_at_ms, t));
	/* Who signed: the device for device kinds, the bridge for acks and task lists. */
	const char *cn = wire_kind_from_device(e.kind) ? e.device_id : "outpost-bridge";
	const struct signer *s = NULL;
	int oom = signer_for(d, cn, &s);
	struct wire_pubkey birth_key;
	int have_birth_key = 0;
	char birth_refused[160] = "";
	int trusted = 0;
	if (!s && !oom && e.kind == WIRE_KIND_BIRTH) {
		/* The certificate the Birth carries: with the PKI's CA, only if the CA issued it
		 * (and the CRL does not revoke it), as the bridge would judge it; a certificate
		 * anyone can make for any id is no proof. */
		Outpost__Birth *b = NULL;
		struct wire_cert_info ci;
		struct wire_diag cd = {""};
		if (!wire_birth_decode(e.body, e.body_len, &b, NULL)) {
			size_t pem_len = strlen(b->cert_pem);
			int crc = d->ca ? wire_ca_verify(d->ca, b->cert_pem, pem_len, &ci, &cd)
			                : wire_cert_parse(b->cert_pem, pem_len, &ci, NULL);
			if (!crc && !strcmp(ci.cn, cn)) {
				birth_key = ci.key;
				have_birth_key = 1;
			} else if (crc && d->ca) {
				snprintf(birth_refused, sizeof(birth_refused), "%s",
				         cd.msg[0] ? cd.msg : wire_strerror(crc));
			}
		}
		wire_msg_free(b);
	}
	if (oom) {
		/* The PKI may hold a certificate not trusted: the Birth's is no fallback. */
		printf("signature not checked (out of memory loading the certificate of %s)\n", cn);
		trusted = !d->verify;
	} else if (s && s->refused[0]) {
		printf("signature NOT TRUSTED (%s: %s)\n", s->from, s->refused);
		d->failures++;
	} else if (birth_refused[0]) {
		printf("signature NOT TRUSTED (certificate in the birth: %s)\n", birth_refused);
		d->failures++;
	} else if (!s && !have_birth_key) {
		printf("signature not checked (no certificate for %s)\n", cn);
		trusted = !d->verify;
	} else if (wire_env_verify(&e, s ? &s->key : &birth_key)) {
		printf("signature BAD (%s)\n", s ? s->from : "certificate in the birth");
		d->failures++;
	} else {
		printf("signature ok (%s)\n",
		       s      ? s->from
		       : d->ca ? "certificate in the birth, issued by the CA"
		               : "certificate in the birth, chain not checked");
		trusted = 1;
	}
	if (topic && tk != WIRE_TOPIC_COUNT && strcmp(id, e.device_id))
		printf("  WARNING: envelope of %s on %s's topic\n", e.device_id, id);
	body(d, &e, trusted);
}

/* 1 if every non-empty line is "TOPIC HEX". */
static int is_lines(const char *buf, size_t len)
{
	int lines = 0;
	if (memchr(buf, '\0', len))
		return 0;
	for (const char *p = buf, *end = buf + len; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		while (le > p && (le[-1] == '\r' || le[-1] == ' '))
			le--;
		if (le > p) {
			const char *sp = memchr(p, ' ', (size_t)(le - p));
			if (!sp || sp == p || (le - sp - 1) % 2)
				return 0;
			for (const char *h = sp + 1; h < le; h++)
				if (ohex_digit((unsigned char)*h) < 0)
					return 0;
			lines++;
		}
		p = nl ? nl + 1 : end;
	}
	return lines > 0;
}

enum { DECODE_EREAD = -1, DECODE_EBIG = -2, DECODE_ENOMEM = -3 };

/* The rest of f into *out (NUL-terminated, its length in *len): 0, DECODE_EREAD (errno says
 * why), DECODE_EBIG (over DECODE_MAX_INPUT bytes) or DECODE_ENOMEM; *out NULL on failure. */
static int slurp(FILE *f, char **out, size_t *len)
{
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap + 1);
	size_t r;
	int rc = 0, e;
	*out = NULL;
	*len = 0;
	if (!buf)
		return DECODE_ENOMEM;
	while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
		n += r;
		if (n == cap) {
			if (cap >= DECODE_MAX_INPUT) {
				rc = DECODE_EBIG;
				goto fail;
			}
			char *nb = realloc(buf, cap * 2 + 1);
			if (!nb) {
				rc = DECODE_ENOMEM;
				goto fail;
			}
			buf = nb;
			cap *= 2;
		}
	}
	if (ferror(f)) {
		rc = DECODE_EREAD;
		goto fail;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
fail:
	e = errno;
	free(buf);
	errno = e;
	return rc;
}

/* The next line of in, with its '\n' if it has one, into *buf (grown, NUL-terminated; its
 * length in *len): 1, 0 at the end of the input (nothing read), -1 if the line is over
 * DECODE_MAX_LINE bytes (*buf holds the first DECODE_MAX_LINE + 1 of them, the rest is left
 * unread), -2 when memory ran out, -3 when the input could not be read (errno says why). */
static int read_line(FILE *in, char **buf, size_t *cap, size_t *len)
{
	size_t n = 0;
	int ch;
	while ((ch = getc(in)) != EOF) {
		if (n + 2 > *cap) {
			size_t ncap = *cap ? *cap * 2 : 4096;
			ncap = ncap < DECODE_MAX_LINE + 2 ? ncap : DECODE_MAX_LINE + 2;
			char *nb = realloc(*buf, ncap);
			if (!nb)
				return -2;
			*buf = nb;
			*cap = ncap;
		}
		(*buf)[n++] = (char)ch;
		if (ch == '\n' || n > DECODE_MAX_LINE)
			break;
	}
	if (n)
		(*buf)[n] = '\0';
	*len = n;
	if (ch == EOF && ferror(in))
		return -3;
	return n > DECODE_MAX_LINE && ch != '\n' ? -1 : n > 0;
}

/* Decode one "topic hexpayload" line in place. */
static void decode_line(struct dec *d, char *p, char *end)
{
	char *le = end;
	while (le > p && (le[-1] == '\n' || le[-1] == '\r' || le[-1] == ' '))
		le--;
	if (le <= p)
		return;
	char *sp = memchr(p, ' ', (size_t)(le - p));
	if (!sp)
		return;
	*sp = '\0';
	size_t n = (size_t)(le - sp - 1) / 2;
	uint8_t *bytes = (uint8_t *)sp + 1; /* decode in place */
	for (size_t i = 0; i < n; i++)
		bytes[i] = (uint8_t)(ohex_digit((unsigned char)sp[1 + 2 * i]) << 4 |
				     ohex_digit((unsigned char)sp[2 + 2 * i]));
	message(d, p, bytes, n);
}

int ctl_cmd_decode(struct ctl *c, int argc, char **argv)
{
	const char *pki = NULL, *topic = NULL, *pos[1], *certs[MAX_CERT_ARGS];
	const char *name;
	size_t ncerts = 0, len = 0;
	int npos, rc, sr;
	struct dec d;
	FILE *in = NULL;
	struct ctl_optdef defs[] = {{"pki", 1, &pki, NULL, NULL, 0},
	                            {"cert", 1, NULL, certs, &ncerts, MAX_CERT_ARGS},
	                            {"topic", 1, &topic, NULL, NULL, 0},
	                            {NULL, 0, NULL, NULL, NULL, 0}};
	if ((rc = ctl_args(c, "decode", argc, argv, defs, pos, 1, &npos)))
		return rc;
	memset(&d, 0, sizeof(d));
	/* decode needs no store, but uses one quietly for metric names when there is one */
	struct store_opts so = STORE_OPTS_INIT;
	char serr[STORE_ERR_MAX];
	so.create = 0;
	so.writable = 0;
	so.app_name = CTL_PROG;
	if (c->store_url && store_open(c->store_url, &so, &d.store, serr))
		d.store = NULL;
	d.pki = pki;
	d.verify = pki || ncerts;
	if (pki) {
		char *ca = NULL, *crl = NULL;
		struct wire_diag diag = {""};
		if (asprintf(&ca, "%s/ca.crt", pki) < 0 || asprintf(&crl, "%s/crl.pem", pki) < 0) {
			free(ca);
			rc = ctl_err(CTL_FAIL, "decode: out of memory");
			goto out;
		}
		FILE *probe = fopen(crl, "r");
		if (probe)
			fclose(probe);
		else /* said, not silently skipped: a revoked device's messages would pass */
			fprintf(stderr,
			        CTL_PROG ": decode: warning: --pki %s: no crl.pem there (%s):"
			        " revocations are not checked\n",
			        pki, strerror(errno));
		rc = wire_ca_load(ca, probe ? crl : NULL, &d.ca, &diag);
		free(ca);
		free(crl);
		if (rc) {
			rc = ctl_err(CTL_USAGE, "decode: --pki %s: %s", pki, diag.msg);
			goto out;
		}
	}
	for (size_t i = 0; i < ncerts; i++)
		if ((rc = add_cert(&d, certs[i], NULL, 1)))
			goto out;
	in = stdin;
	name = "the standard input";
	if (npos && strcmp(pos[0], "-")) {
		name = pos[0];
		in = fopen(pos[0], "rb");
		if (!in) {
			rc = ctl_err(CTL_FAIL, "decode: cannot open %s: %s", pos[0], strerror(errno));
			goto out;
		}
	}
	char *buf = NULL;
	if (!topic) {
		/* "topic hex" lines are decoded as they come, so that `mosquitto_sub ... | outpostctl
		 * decode` shows each message at once; anything else is one raw payload. Blank lines
		 * before the first one that decides are passed over and kept nowhere (an envelope
		 * begins with its field 1, a varint: 0x08). */
		size_t cap = 0, skipped = 0, n = 0, lineno = 1;
		int r;
		while ((r = read_line(in, &buf, &cap, &n)) == 1 && strspn(buf, "\r\n") == n)
			lineno++;
		if (r == -3) {
			free(buf);
			rc = ctl_err(CTL_FAIL, "decode: cannot read %s: %s", name, strerror(errno));
			goto out;
		}
		/* a first line too long (r == -1) that begins as "topic hex" is lines too: what
		 * was read of it may end in the middle of a byte's two hex digits */
		if ((r == 1 && is_lines(buf, n)) ||
		    (r == -1 && (is_lines(buf, n) || is_lines(buf, n - 1)))) {
			for (; r == 1; lineno++, r = read_line(in, &buf, &cap, &n)) {
				if (is_lines(buf, n))
					decode_line(&d, buf, buf + n);
				else if (strspn(buf, "\r\n") != n)
					skipped++; /* not "topic hex" */
				fflush(stdout);
			}
			free(buf);
			if (skipped)
				fprintf(stderr, CTL_PROG ": decode: %zu line(s) were not 'topic hex' and "
				        "were skipped\n", skipped);
			rc = d.failures ? CTL_FAIL : CTL_OK;
			if (r == -1)
				rc = ctl_err(CTL_FAIL,
				             "decode: line %zu is over %zu bytes, longer than the"
				             " 'topic hex' of any envelope: stopped there",
				             lineno, DECODE_MAX_LINE);
			if (r == -2)
				rc = ctl_err(CTL_FAIL, "decode: out of memory reading line %zu",
				             lineno);
			if (r == -3)
				rc = ctl_err(CTL_FAIL, "decode: cannot read %s at line %zu: %s",
				             name, lineno, strerror(errno));
			goto out;
		}
		if (r == -2) {
			free(buf);
			rc = ctl_err(CTL_FAIL, "decode: out of memory reading the input");
			goto out;
		}
		/* raw: what was read so far (the first line, or DECODE_MAX_LINE + 1 bytes of it),
		 * then the rest */
		char *rest = NULL;
		sr = slurp(in, &rest, &len);
		if (!sr && n + len > DECODE_MAX_INPUT)
			sr = DECODE_EBIG;
		char *all = sr ? NULL : malloc(n + len + 1);
		if (all) {
			if (n)
				memcpy(all, buf, n);
			memcpy(all + n, rest, len + 1);
			len += n;
		} else if (!sr) {
			sr = DECODE_ENOMEM;
		}
		free(buf);
		buf = all;
		free(rest);
	} else {
		sr = slurp(in, &buf, &len);
	}
	if (in != stdin)
		fclose(in);
	in = NULL;
	if (sr == DECODE_EREAD) {
		rc = ctl_err(CTL_FAIL, "decode: cannot read %s: %s", name, strerror(errno));
		goto out;
	}
	if (sr == DECODE_EBIG) {
		rc = ctl_err(CTL_FAIL,
		             "decode: %s is over %u MiB, more than any capture decode reads", name,
		             DECODE_MAX_INPUT >> 20);
		goto out;
	}
	if (sr) {
		rc = ctl_err(CTL_FAIL, "decode: out of memory reading %s", name);
		goto out;
	}
	if (!len) { /* e.g. mosquitto_sub could not connect, or timed out without a message */
		free(buf);
		rc = ctl_err(CTL_FAIL, "decode: no input, nothing to decode");
		goto out;
	}
	message(&d, topic, (const uint8_t *)buf, len);
	free(buf);
	rc = d.failures ? CTL_FAIL : CTL_OK;
out:
	if (in && in != stdin)
		fclose(in);
	for (size_t i = 0; i < d.n_cats; i++)
		wire_msg_free(d.cats[i].birth);
	free(d.cats);
	free(d.certs);
	wire_ca_free(d.ca);
	store_close(d.store);
	return rc;
}
