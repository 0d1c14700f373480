/* test_pki.c - scripts/provision-certs.sh: files, permissions, names, chain, idempotence,
 * revocation and its CRL, argument errors, --count naming, broker names, what stops a run
 * before it changes anything (an unreadable key, a CA without its database, a lost CA without
 * --new-ca), runs with ca.key offline, rotation of the bridge and operator keys and concurrent
 * runs. Every test works on its own fresh directory and checks the result with the openssl
 * command line. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "wire_cert.h"
#include "wire_sign.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Run the script with args; returns the exit status, output in *out (caller frees). */
static int provision(const char *args, char **out)
{
	char *cmd = h_strf("%s/scripts/provision-certs.sh %s", h_source_dir(), args);
	char *o = NULL;
	int rc = h_sh(cmd, &o, 120);
	free(cmd);
	if (out)
		*out = o;
	else
		free(o);
	return rc;
}

/* A fresh PKI in a new directory; returns the directory (caller frees). */
static char *fresh(const char *tag, const char *extra)
{
	char *dir = h_tmpdir(tag);
	char *args = h_strf("--out %s %s", dir, extra), *out = NULL;
	int rc = provision(args, &out);
	cr_assert_eq(rc, 0, "provision-certs.sh %s: exit %d\n%s", args, rc, out);
	free(args);
	free(out);
	return dir;
}

/* Output of a shell command that must succeed (caller frees). */
static char *sh_ok(const char *cmd)
{
	char *out = NULL;
	int rc = h_sh(cmd, &out, 60);
	cr_assert_eq(rc, 0, "%s: exit %d\n%s", cmd, rc, out);
	return out;
}

/* sha256 of every regular file under dir, sorted by path. */
static char *snapshot(const char *dir)
{
	char *cmd = h_strf("cd %s && find . -type f | LC_ALL=C sort | xargs sha256sum", dir);
	char *out = sh_ok(cmd);
	free(cmd);
	return out;
}

static char *file_sha(const char *path)
{
	char *cmd = h_strf("sha256sum < %s", path);
	char *out = sh_ok(cmd);
	free(cmd);
	return out;
}

static int mode_of(const char *dir, const char *name)
{
	struct stat st;
	char *p = h_strf("%s/%s", dir, name);
	int rc = stat(p, &st);
	free(p);
	return rc == 0 ? (int)(st.st_mode & 07777) : -1;
}

static int openssl_verify(const char *dir, const char *crt, int crl_check)
{
	char *out = NULL;
	char *cmd = crl_check ? h_strf("openssl verify -crl_check -CAfile %s/ca.crt "
				       "-CRLfile %s/crl.pem %s/%s",
				       dir, dir, dir, crt)
			      : h_strf("openssl verify -CAfile %s/ca.crt %s/%s", dir, dir, crt);
	int rc = h_sh(cmd, &out, 60);
	free(cmd);
	free(out);
	return rc;
}

static long crl_number(const char *dir)
{
	char *cmd = h_strf("openssl crl -in %s/crl.pem -noout -crlnumber", dir);
	char *out = sh_ok(cmd);
	char *eq = strchr(out, '=');
	cr_assert_not_null(eq, "%s", out);
	long n = strtol(eq + 1, NULL, 16);
	free(out);
	free(cmd);
	return n;
}

static char *serial_of(const char *dir, const char *crt)
{
	char *cmd = h_strf("openssl x509 -in %s/%s -noout -serial", dir, crt);
	char *out = sh_ok(cmd);
	free(cmd);
	char *eq = strchr(out, '=');
	cr_assert_not_null(eq);
	char *s = strdup(eq + 1);
	s[strcspn(s, "\n")] = '\0';
	free(out);
	return s;
}

static const char *const keys[] = {"ca.key", "broker.key", "bridge.key", "operator.key",
				   "devices/dev-a.key", "devices/dev-b.key"};
static const char *const certs[] = {"ca.crt", "broker.crt", "bridge.crt", "operator.crt",
				    "devices/dev-a.crt", "devices/dev-b.crt", "crl.pem"};

Test(pki, creates_every_file_with_its_permissions)
{
	char *dir = fresh("pki-files", "--devices dev-a,dev-b");
	for (size_t i = 0; i < N(keys); i++)
		cr_expect_eq(mode_of(dir, keys[i]), 0600, "%s: mode %o", keys[i],
			     (unsigned)mode_of(dir, keys[i]));
	for (size_t i = 0; i < N(certs); i++)
		cr_expect_eq(mode_of(dir, certs[i]), 0644, "%s: mode %o", certs[i],
			     (unsigned)mode_of(dir, certs[i]));
	cr_expect_eq(mode_of(dir, "devices"), 0755);
	cr_expect_eq(mode_of(dir, ".ca") & 0077, 0, "the CA database is private");
	/* nothing else in devices/, no leftovers anywhere */
	char *cmd = h_strf("cd %s && ls devices | LC_ALL=C sort | tr \"\\n\" \" \"", dir);
	char *out = sh_ok(cmd);
	cr_expect_str_eq(out, "dev-a.crt dev-a.key dev-b.crt dev-b.key ");
	free(out);
	free(cmd);
	cmd = h_strf("cd %s && find . -name \"*.tmp\" -o -name \"*.csr\" -o -name \"*.old\"", dir);
	out = sh_ok(cmd);
	cr_expect_str_eq(out, "", "temporary files left: %s", out);
	free(out);
	free(cmd);
	free(dir);
}

Test(pki, names_key_types_and_purposes)
{
	char *dir = fresh("pki-names", "--devices dev-a,dev-b");
	struct {
		const char *crt, *cn, *key_type, *purpose;
	} want[] = {
		{"ca.crt", "Outpost CA", "EC", NULL},
		{"broker.crt", "outpost-broker", "EC", "sslserver"},
		{"bridge.crt", "outpost-bridge", "ED25519", "sslclient"},
		{"operator.crt", "outpost-operator", "ED25519", "sslclient"},
		{"devices/dev-a.crt", "dev-a", "ED25519", "sslclient"},
		{"devices/dev-b.crt", "dev-b", "ED25519", "sslclient"},
	};
	for (size_t i = 0; i < N(want); i++) {
		char *cmd = h_strf("openssl x509 -in %s/%s -noout -subject -nameopt RFC2253", dir,
				   want[i].crt);
		char *out = sh_ok(cmd), *expect = h_strf("subject=CN=%s\n", want[i].cn);
		cr_expect_str_eq(out, expect, "%s", want[i].crt);
		free(expect);
		free(out);
		free(cmd);

		cmd = h_strf("openssl x509 -in %s/%s -noout -text", dir, want[i].crt);
		out = sh_ok(cmd);
		const char *alg = strcmp(want[i].key_type, "EC") ? "ED25519" : "id-ecPublicKey";
		cr_expect(strstr(out, alg), "%s key type", want[i].crt);
		free(out);
		free(cmd);

		if (want[i].purpose) {
			char *o2 = NULL;
			cmd = h_strf("openssl verify -CAfile %s/ca.crt -purpose %s %s/%s", dir,
				     want[i].purpose, dir, want[i].crt);
			cr_expect_eq(h_sh(cmd, &o2, 60), 0, "%s for %s: %s", want[i].crt,
				     want[i].purpose, o2);
			free(o2);
			free(cmd);
			/* and not the other purpose */
			const char *other =
				strcmp(want[i].purpose, "sslserver") ? "sslserver" : "sslclient";
			cmd = h_strf("openssl verify -CAfile %s/ca.crt -purpose %s %s/%s", dir,
				     other, dir, want[i].crt);
			cr_expect_neq(h_sh(cmd, &o2, 60), 0, "%s must not serve the other side",
				      want[i].crt);
			free(o2);
			free(cmd);
		}
	}

	/* the wire library reads the identities the same way, and keys match certificates */
	const char *ids[][2] = {{"devices/dev-a", "dev-a"}, {"bridge", "outpost-bridge"}};
	for (size_t i = 0; i < N(ids); i++) {
		char *crt = h_strf("%s/%s.crt", dir, ids[i][0]);
		char *key = h_strf("%s/%s.key", dir, ids[i][0]);
		char *pem = NULL;
		size_t len;
		struct wire_cert_info info;
		struct wire_key *k = NULL;
		struct wire_pubkey pub;
		cr_assert_eq(wire_cert_read(crt, &pem, &len), WIRE_OK);
		cr_assert_eq(wire_cert_parse(pem, len, &info, NULL), WIRE_OK);
		cr_expect_str_eq(info.cn, ids[i][1]);
		cr_assert_eq(wire_key_load(key, &k, NULL), WIRE_OK);
		wire_key_public(k, &pub);
		cr_expect_arr_eq(pub.raw, info.key.raw, WIRE_PUBKEY_LEN);
		wire_key_free(k);
		free(pem);
		free(crt);
		free(key);
	}
	free(dir);
}

Test(pki, chain_verifies_with_openssl)
{
	char *dir = fresh("pki-chain", "--devices dev-a,dev-b");
	const char *leaf[] = {"broker.crt", "bridge.crt", "operator.crt", "devices/dev-a.crt",
			      "devices/dev-b.crt"};
	for (size_t i = 0; i < N(leaf); i++) {
		cr_expect_eq(openssl_verify(dir, leaf[i], 0), 0, "%s", leaf[i]);
		cr_expect_eq(openssl_verify(dir, leaf[i], 1), 0, "%s with the CRL", leaf[i]);
	}
	/* the CRL is signed by the CA */
	char *cmd = h_strf("openssl crl -in %s/crl.pem -CAfile %s/ca.crt -noout", dir, dir);
	char *out = sh_ok(cmd);
	free(out);
	free(cmd);
	/* and a certificate of another PKI does not verify against this CA */
	char *other = fresh("pki-chain-other", "--devices dev-a");
	cmd = h_strf("openssl verify -CAfile %s/ca.crt %s/devices/dev-a.crt", dir, other);
	cr_expect_neq(h_sh(cmd, &out, 60), 0, "%s", out);
	free(out);
	free(cmd);
	free(other);
	free(dir);
}

Test(pki, second_run_changes_nothing)
{
	const char *opts = "--devices dev-a,dev-b --broker-host mqtt.example.com,fd00::1";
	char *dir = fresh("pki-idem", opts);
	char *before = snapshot(dir);
	char *args = h_strf("--out %s %s", dir, opts);
	char *out = NULL;
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	cr_expect(strstr(out, "0 new keys, 0 new certificates"), "%s", out);
	char *after = snapshot(dir);
	cr_expect_str_eq(after, before, "a second run must change no file");
	free(after);
	free(out);
	free(args);

	/* nor does a run with fewer arguments or the devices in another order */
	args = h_strf("--out %s --devices dev-b", dir);
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	after = snapshot(dir);
	cr_expect_str_eq(after, before);
	free(after);
	free(out);
	free(args);
	free(before);
	free(dir);
}

Test(pki, adding_a_device_keeps_every_existing_key_and_certificate)
{
	char *dir = fresh("pki-add", "--devices dev-a");
	const char *files[] = {"ca.key", "ca.crt", "broker.key", "broker.crt", "bridge.key",
			       "bridge.crt", "operator.key", "operator.crt", "devices/dev-a.key",
			       "devices/dev-a.crt", "crl.pem"};
	char *sha[N(files)];
	for (size_t i = 0; i < N(files); i++) {
		char *p = h_strf("%s/%s", dir, files[i]);
		sha[i] = file_sha(p);
		free(p);
	}
	char *args = h_strf("--out %s --devices dev-a,dev-new", dir), *out = NULL;
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	cr_expect(strstr(out, "1 new keys, 1 new certificates"), "%s", out);
	for (size_t i = 0; i < N(files); i++) {
		char *p = h_strf("%s/%s", dir, files[i]), *now = file_sha(p);
		cr_expect_str_eq(now, sha[i], "%s changed", files[i]);
		free(now);
		free(p);
		free(sha[i]);
	}
	cr_expect_eq(openssl_verify(dir, "devices/dev-new.crt", 1), 0);
	free(out);
	free(args);
	free(dir);
}

Test(pki, a_lost_key_gets_a_matching_certificate)
{
	/* The script never overwrites a key, but when a key is missing it makes a new one; the
	 * old certificate (for the old key) must then be reissued, or the identity is unusable. */
	char *dir = fresh("pki-lostkey", "--devices dev-a");
	char *key = h_strf("%s/devices/dev-a.key", dir), *crt = h_strf("%s/devices/dev-a.crt", dir);
	char *old_crt = file_sha(crt);
	cr_assert_eq(unlink(key), 0);
	char *args = h_strf("--out %s --devices dev-a", dir), *out = NULL;
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	char *cmd1 = h_strf("openssl x509 -in %s -noout -pubkey", crt);
	char *cmd2 = h_strf("openssl pkey -in %s -pubout", key);
	char *pub_crt = sh_ok(cmd1), *pub_key = sh_ok(cmd2);
	cr_expect_str_eq(pub_crt, pub_key, "certificate and key belong together");
	char *new_crt = file_sha(crt);
	cr_expect_str_neq(new_crt, old_crt);
	cr_expect_eq(openssl_verify(dir, "devices/dev-a.crt", 1), 0);
	/* whoever kept the old key must not keep a valid identity: the old one is superseded */
	cr_expect(strstr(out, "old certificate is revoked (superseded)"), "%s", out);
	char *cmd3 = h_strf("grep -c ^R %s/.ca/index.txt && openssl crl -in %s/crl.pem -noout "
			    "-text | grep -c Superseded",
			    dir, dir);
	char *revoked = sh_ok(cmd3);
	cr_expect_str_eq(revoked, "1\n1\n", "one revoked serial, superseded, in the CRL");
	free(revoked);
	free(cmd3);
	free(new_crt);
	free(old_crt);
	free(pub_crt);
	free(pub_key);
	free(cmd1);
	free(cmd2);
	free(out);
	free(args);
	free(key);
	free(crt);
	free(dir);
}

Test(pki, revocation_refreshes_the_crl)
{
	char *dir = fresh("pki-revoke", "--devices dev-a,dev-b,dev-c");
	long before = crl_number(dir);
	char *serial = serial_of(dir, "devices/dev-b.crt");
	char *keys_before = NULL;
	char *cmd = h_strf("cd %s && sha256sum ca.key broker.key bridge.key operator.key "
			   "devices/*.key",
			   dir);
	keys_before = sh_ok(cmd);

	char *args = h_strf("--out %s --revoke dev-b", dir), *out = NULL;
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	cr_expect(strstr(out, "revoked device dev-b"), "%s", out);
	free(out);
	long after = crl_number(dir);
	cr_expect_gt(after, before, "crlNumber %ld -> %ld", before, after);

	char *crl_cmd = h_strf("openssl crl -in %s/crl.pem -noout -text", dir);
	char *crl = sh_ok(crl_cmd);
	char *line = h_strf("Serial Number: %s", serial);
	cr_expect(strstr(crl, line), "%s not listed in\n%s", serial, crl);
	free(line);
	free(crl);

	cr_expect_neq(openssl_verify(dir, "devices/dev-b.crt", 1), 0, "revoked: -crl_check fails");
	cr_expect_eq(openssl_verify(dir, "devices/dev-b.crt", 0), 0, "it still chains");
	const char *others[] = {"devices/dev-a.crt", "devices/dev-c.crt", "bridge.crt",
				"operator.crt", "broker.crt"};
	for (size_t i = 0; i < N(others); i++)
		cr_expect_eq(openssl_verify(dir, others[i], 1), 0, "%s", others[i]);
	char *keys_after = sh_ok(cmd);
	cr_expect_str_eq(keys_after, keys_before, "revocation touches no key");
	free(keys_after);

	/* revoking again is harmless; a normal run afterwards does not resurrect dev-b */
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	cr_expect(strstr(out, "already revoked"), "%s", out);
	free(out);
	cr_expect_gt(crl_number(dir), after);
	char *crt = h_strf("%s/devices/dev-b.crt", dir), *sha = file_sha(crt);
	char *args2 = h_strf("--out %s --devices dev-a,dev-b,dev-c", dir);
	cr_assert_eq(provision(args2, &out), 0, "%s", out);
	cr_expect(strstr(out, "dev-b is revoked; not reissued"), "%s", out);
	char *sha2 = file_sha(crt);
	cr_expect_str_eq(sha2, sha);
	cr_expect_neq(openssl_verify(dir, "devices/dev-b.crt", 1), 0);
	free(out);

	/* revoking what does not exist is a failure, not a usage error */
	char *args3 = h_strf("--out %s --revoke dev-zzz", dir);
	cr_expect_eq(provision(args3, &out), 1, "%s", out);
	cr_expect(strstr(out, "dev-zzz"), "%s", out);
	free(out);

	free(args3);
	free(sha2);
	free(sha);
	free(crt);
	free(args2);
	free(keys_before);
	free(cmd);
	free(crl_cmd);
	free(args);
	free(serial);
	free(dir);
}

/* A revoked device's key is never certified again, even when its certificate no longer
 * proves the revocation: a CA made anew in the same directory (ca.key and ca.crt deleted, the
 * CA's records kept, --new-ca), or a certificate that no longer verifies. */
Test(pki, a_revoked_key_is_never_certified_again)
{
	char *dir = fresh("pki-revoked-key", "--devices dev-a,dev-b");
	char *args = h_strf("--out %s --revoke dev-a", dir), *out = NULL;
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	free(out);
	char *crt = h_strf("%s/devices/dev-a.crt", dir), *sha = file_sha(crt);
	char *rm = h_strf("rm %s/ca.key %s/ca.crt", dir, dir);
	free(sh_ok(rm));
	char *args2 = h_strf("--out %s --devices dev-a,dev-b", dir);
	char *new_ca = h_strf("%s --new-ca", args2);
	cr_assert_eq(provision(new_ca, &out), 0, "%s", out);
	cr_expect(strstr(out, "device dev-a: a certificate for its key was revoked; not reissued"),
		  "%s", out);
	char *sha2 = file_sha(crt);
	cr_expect_str_eq(sha2, sha, "dev-a's certificate was reissued");
	cr_expect_neq(openssl_verify(dir, "devices/dev-a.crt", 0), 0, "it chains to the new CA");
	cr_expect_eq(openssl_verify(dir, "devices/dev-b.crt", 1), 0, "dev-b is reissued");
	free(out);
	/* deleting its files re-provisions it with a new key */
	char *rm2 = h_strf("rm %s/devices/dev-a.key %s/devices/dev-a.crt", dir, dir);
	free(sh_ok(rm2));
	cr_assert_eq(provision(args2, &out), 0, "%s", out);
	cr_expect_eq(openssl_verify(dir, "devices/dev-a.crt", 1), 0, "%s", out);
	free(out);
	free(rm2);
	free(sha2);
	free(new_ca);
	free(args2);
	free(rm);
	free(sha);
	free(crt);
	free(args);
	free(dir);
}

/* Numbers are decimal, and a new output directory's parents stay reachable. */
Test(pki, leading_zeros_and_new_parent_directories)
{
	char *base = h_tmpdir("pki-parents");
	char *dir = h_strf("%s/srv/outpost/pki", base);
	char *args = h_strf("umask 022 && %s/scripts/provision-certs.sh --out %s --count 010",
			    h_source_dir(), dir),
	     *out = NULL;
	cr_assert_eq(h_sh(args, &out, 120), 0, "%s", out);
	cr_expect(strstr(out, "10 devices requested"), "%s", out);
	cr_expect_eq(mode_of(dir, "devices/device-0010.crt"), 0644);
	free(out);
	cr_expect_eq(mode_of(base, "srv") & 0055, 0055, "parents made by the script: %o",
		     mode_of(base, "srv"));
	cr_expect_eq(mode_of(base, "srv/outpost") & 0055, 0055);
	char *args2 = h_strf("--out %s --count 08", dir);
	cr_expect_eq(provision(args2, &out), 0, "%s", out);
	cr_expect(strstr(out, "8 devices requested"), "%s", out);
	free(out);
	free(args2);
	free(args);
	free(dir);
	free(base);
}

/* fmt with its "%s" (if any) replaced by target */
static char *with_target(const char *fmt, const char *target)
{
	const char *at = strstr(fmt, "%s");
	if (!at)
		return strdup(fmt);
	return h_strf("%.*s%s%s", (int)(at - fmt), fmt, target, at + 2);
}

Test(pki, bad_arguments_exit_2_with_a_message)
{
	char *dir = h_tmpdir("pki-args");
	char *target = h_strf("%s/never-created", dir);
	struct {
		const char *args, *msg;
	} bad[] = {
		{"", "--out DIR is required"},
		{"--devices dev-a", "--out DIR is required"},
		{"--out", "--out needs a directory"},
		{"--out %s --bogus", "unknown argument: --bogus"},
		{"--out %s extra", "unknown argument: extra"},
		{"--out %s --count abc", "--count"},
		{"--out %s --count -1", "--count"},
		{"--out %s --count 100001", "--count"},
		{"--out %s --count", "--count needs a number"},
		{"--out %s --devices dev.a", "invalid device id"},
		{"--out %s --devices dev-a,,dev-b", "invalid device id"},
		{"--out %s --devices outpost-bridge", "invalid device id"},
		{"--out %s --devices "
		 "a2345678901234567890123456789012345678901234567890123456789012345",
		 "invalid device id"},
		{"--out %s --revoke dev/a", "--revoke: invalid device id"},
		{"--out %s --revoke dev-a --revoke dev-b,,dev-c", "--revoke: invalid device id"},
		{"--out %s --revoke \"\"", "--revoke needs an id"},
		{"--out %s --revoke=", "--revoke needs an id"},
		{"--out %s --broker-host 010.0.0.1", "--broker-host: invalid IPv4 address"},
		{"--out %s --broker-host 10.0.0.01", "--broker-host: invalid IPv4 address"},
		{"--out %s --broker-host 300.1.1.1", "--broker-host: invalid IPv4 address"},
		{"--out %s --broker-host 10.0.256.1", "--broker-host: invalid IPv4 address"},
		{"--out %s --broker-host 10.0.0", "--broker-host: invalid IPv4 address"},
		{"--out %s --broker-host 10.0.0.1.", "--broker-host: invalid IPv4 address"},
		{"--out %s --broker-host bad_host!", "--broker-host: invalid name"},
		{"--out %s --broker-host fd00::1::2", "--broker-host: invalid IPv6 address"},
		{"--out %s --broker-host", "--broker-host needs a name"},
	};
	for (size_t i = 0; i < N(bad); i++) {
		char *args = with_target(bad[i].args, target), *out = NULL;
		int rc = provision(args, &out);
		cr_expect_eq(rc, 2, "'%s': exit %d\n%s", args, rc, out);
		cr_expect(strstr(out, "provision-certs: ") && strstr(out, bad[i].msg),
			  "'%s': message should mention '%s':\n%s", args, bad[i].msg, out);
		cr_expect_neq(access(target, F_OK), 0, "'%s' created the output directory", args);
		free(out);
		free(args);
	}
	char *out = NULL;
	cr_expect_eq(provision("--help", &out), 0);
	cr_expect(strstr(out, "Usage:"), "%s", out);
	free(out);
	free(target);
	free(dir);
}

Test(pki, count_names_devices_with_four_digits)
{
	char *dir = fresh("pki-count", "--count 3 --devices extra-1");
	const char *present[] = {"device-0001", "device-0002", "device-0003", "extra-1"};
	for (size_t i = 0; i < N(present); i++) {
		char *crt = h_strf("devices/%s.crt", present[i]);
		char *cmd =
			h_strf("openssl x509 -in %s/%s -noout -subject -nameopt RFC2253", dir, crt);
		char *out = sh_ok(cmd), *want = h_strf("subject=CN=%s\n", present[i]);
		cr_expect_str_eq(out, want);
		cr_expect_eq(mode_of(dir, crt), 0644);
		char *key = h_strf("devices/%s.key", present[i]);
		cr_expect_eq(mode_of(dir, key), 0600);
		free(key);
		free(want);
		free(out);
		free(cmd);
		free(crt);
	}
	cr_expect_eq(mode_of(dir, "devices/device-0004.crt"), -1);
	cr_expect_eq(mode_of(dir, "devices/device-0000.crt"), -1);
	cr_expect_eq(mode_of(dir, "devices/device-1.crt"), -1);
	free(dir);

	dir = fresh("pki-count0", "--count 0");
	char *cmd = h_strf("ls %s/devices | wc -l", dir);
	char *out = sh_ok(cmd);
	cr_expect_eq(atoi(out), 0);
	free(out);
	free(cmd);
	free(dir);
}

static char *broker_sans(const char *dir)
{
	char *cmd = h_strf("openssl x509 -in %s/broker.crt -noout -ext subjectAltName", dir);
	char *out = sh_ok(cmd);
	free(cmd);
	return out;
}

static void expect_sans(const char *dir, const char *const *names, size_t n)
{
	char *sans = broker_sans(dir);
	for (size_t i = 0; i < n; i++)
		cr_expect(strstr(sans, names[i]), "broker.crt lacks %s:\n%s", names[i], sans);
	free(sans);
}

Test(pki, broker_host_adds_names_that_stay)
{
	static const char *const base[] = {"DNS:localhost", "IP Address:127.0.0.1",
					   "IP Address:0:0:0:0:0:0:0:1"};
	static const char *const extra[] = {"DNS:mqtt.example.com", "IP Address:10.1.2.3",
					    "DNS:second.example.org"};
	char *dir = fresh("pki-san", "");
	expect_sans(dir, base, N(base));
	char *sans = broker_sans(dir);
	cr_expect_null(strstr(sans, "example"), "%s", sans);
	free(sans);
	char *key = h_strf("%s/broker.key", dir), *key_sha = file_sha(key);

	char *args = h_strf("--out %s --broker-host mqtt.example.com,10.1.2.3 "
			    "--broker-host=second.example.org",
			    dir),
	     *out = NULL;
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	free(out);
	expect_sans(dir, base, N(base));
	expect_sans(dir, extra, N(extra));
	cr_expect_eq(openssl_verify(dir, "broker.crt", 1), 0);
	char *crt = h_strf("%s/broker.crt", dir), *crt_sha = file_sha(crt);

	/* a later run without --broker-host keeps them (and reissues nothing) */
	char *plain = h_strf("--out %s", dir);
	cr_assert_eq(provision(plain, &out), 0, "%s", out);
	free(out);
	expect_sans(dir, extra, N(extra));
	char *now = file_sha(crt);
	cr_expect_str_eq(now, crt_sha, "broker.crt reissued without need");
	free(now);

	/* a new name is added to the ones the certificate already has */
	char *more = h_strf("--out %s --broker-host third.example.net", dir);
	cr_assert_eq(provision(more, &out), 0, "%s", out);
	free(out);
	static const char *const third[] = {"DNS:third.example.net"};
	expect_sans(dir, third, 1);
	expect_sans(dir, extra, N(extra));
	expect_sans(dir, base, N(base));
	now = file_sha(key);
	cr_expect_str_eq(now, key_sha, "the broker key is never replaced");
	free(now);
	cr_expect_eq(openssl_verify(dir, "broker.crt", 1), 0);

	/* openssl checks the names the way a TLS client does */
	char *cmd = h_strf("openssl verify -CAfile %s/ca.crt -verify_hostname mqtt.example.com %s",
			   dir, crt);
	cr_expect_eq(h_sh(cmd, &out, 60), 0, "%s", out);
	free(out);
	free(cmd);
	cmd = h_strf("openssl verify -CAfile %s/ca.crt -verify_hostname other.example.com %s", dir,
		     crt);
	cr_expect_neq(h_sh(cmd, &out, 60), 0, "%s", out);
	free(out);
	free(cmd);
	free(more);
	free(plain);
	free(crt_sha);
	free(crt);
	free(args);
	free(key_sha);
	free(key);
	free(dir);
}

/* The date provision-certs.sh gives for crl.pem's next update (caller frees). */
static char *crl_next_update(const char *dir)
{
	char *cmd = h_strf("date -u -d \"$(openssl crl -in %s/crl.pem -noout -nextupdate | "
			   "cut -d= -f2)\" \"+%%Y-%%m-%%d %%H:%%M UTC\"",
			   dir);
	char *out = sh_ok(cmd);
	out[strcspn(out, "\n")] = '\0';
	free(cmd);
	return out;
}

/* ca.key kept offline (docs/OPERATIONS.md): a run that needs nothing signed, as the monthly
 * run with the same arguments, succeeds without changing anything and says until when the
 * CRL can do without the key. */
Test(pki, an_offline_ca_key_is_enough_when_nothing_needs_signing)
{
	char *dir = fresh("pki-offline-ok", "--devices dev-a,dev-b --broker-host mqtt.example.com");
	char *mv = h_strf("mv %s/ca.key %s/../ca.key.offline-%d", dir, dir, (int)getpid());
	free(sh_ok(mv));
	char *before = snapshot(dir), *next = crl_next_update(dir);
	const char *runs[] = {"", "--devices dev-a,dev-b", "--devices dev-b --broker-host mqtt.example.com",
			      "--count 0"};
	for (size_t i = 0; i < N(runs); i++) {
		char *args = h_strf("--out %s %s", dir, runs[i]), *out = NULL;
		int rc = provision(args, &out);
		cr_expect_eq(rc, 0, "%s: exit %d\n%s", args, rc, out);
		char *said = h_strf("crl.pem's next update is %s", next);
		cr_expect(strstr(out, "WARNING") && strstr(out, "ca.key is absent") && strstr(out, said),
			  "%s: no warning with the CRL's next update (%s):\n%s", args, next, out);
		cr_expect(strstr(out, "0 new keys, 0 new certificates"), "%s", out);
		char *after = snapshot(dir);
		cr_expect_str_eq(after, before, "%s changed the PKI", args);
		free(after);
		free(said);
		free(out);
		free(args);
	}
	/* a copy without the CA database (`cp DIR/[*] NEW/`), as kept beside an offline key: checked
	 * as it is, no database started */
	char *copy = h_tmpdir("pki-offline-copy");
	char *cp = h_strf("cp -r %s/* %s/", dir, copy);
	free(sh_ok(cp));
	char *cargs = h_strf("--out %s --devices dev-a,dev-b", copy), *cout = NULL;
	cr_expect_eq(provision(cargs, &cout), 0, "%s", cout);
	cr_expect(strstr(cout, "ca.key is absent"), "%s", cout);
	cr_expect_eq(mode_of(copy, ".ca"), -1, "a CA database was started");
	free(cout);
	free(cargs);
	cargs = h_strf("--out %s --devices dev-new", copy);
	cr_expect_eq(provision(cargs, &cout), 3, "%s", cout);
	cr_expect_eq(mode_of(copy, "devices/dev-new.key"), -1);
	cr_expect_eq(mode_of(copy, ".ca"), -1);
	free(cout);
	free(cargs);
	free(cp);
	free(copy);
	/* a revoked device asked for again needs nothing either: the CRL lists it */
	free(before);
	char *back = h_strf("mv %s/../ca.key.offline-%d %s/ca.key", dir, (int)getpid(), dir);
	free(sh_ok(back));
	char *args = h_strf("--out %s --revoke dev-b", dir), *out = NULL;
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	free(out);
	free(sh_ok(mv));
	before = snapshot(dir);
	cr_expect_eq(provision(args, &out), 0, "%s", out);
	cr_expect(strstr(out, "device dev-b was already revoked"), "%s", out);
	char *after = snapshot(dir);
	cr_expect_str_eq(after, before);
	free(after);
	free(out);
	free(args);
	free(back);
	free(before);
	free(next);
	free(mv);
	free(dir);
}

/* ... and one that needs the key (a new device, key or broker name, a revocation, a CRL due
 * for renewal) says what, changes nothing and exits 3; with the key back the same run goes
 * through. */
Test(pki, an_offline_ca_key_that_is_needed_stops_the_run)
{
	char *dir = fresh("pki-offline-need", "--devices dev-a,dev-b");
	char *key = h_strf("%s/ca.key", dir), *saved = h_strf("%s.saved-%d", dir, (int)getpid());
	cr_assert_eq(rename(key, saved), 0);
	char *before = snapshot(dir);
	char *rm = h_strf("rm %s/devices/dev-b.key", dir);
	struct {
		const char *args, *said;
	} runs[] = {
		{"--devices dev-a,dev-new", "a new key and certificate for device dev-new"},
		{"--revoke dev-a", "revoke device dev-a"},
		{"--broker-host new.example.com", "a new certificate for broker, with a name it lacks"},
		{"--devices dev-new --revoke dev-new", "revoke device dev-new"},
	};
	for (size_t i = 0; i < N(runs); i++) {
		char *args = h_strf("--out %s %s", dir, runs[i].args), *out = NULL;
		int rc = provision(args, &out);
		cr_expect_eq(rc, 3, "%s: exit %d\n%s", args, rc, out);
		cr_expect(strstr(out, "ca.key is absent") && strstr(out, runs[i].said) &&
				  strstr(out, "Put ca.key back") && strstr(out, "Nothing was changed"),
			  "%s: the message should name '%s':\n%s", args, runs[i].said, out);
		char *after = snapshot(dir);
		cr_expect_str_eq(after, before, "%s changed the PKI", args);
		free(after);
		free(out);
		free(args);
	}
	cr_expect_eq(openssl_verify(dir, "devices/dev-a.crt", 1), 0, "dev-a was revoked");
	/* a lost device key: no new key made, the old certificate not revoked */
	free(sh_ok(rm));
	free(before);
	before = snapshot(dir);
	char *args = h_strf("--out %s --devices dev-a,dev-b", dir), *out = NULL;
	cr_expect_eq(provision(args, &out), 3, "%s", out);
	cr_expect(strstr(out, "a new key and certificate for device dev-b"), "%s", out);
	char *after = snapshot(dir);
	cr_expect_str_eq(after, before);
	free(after);
	free(out);
	free(args);

	/* a CRL within 30 days of its next update */
	cr_assert_eq(rename(saved, key), 0);
	char *cmd = h_strf("OUTPOST_PKI=%s OUTPOST_SAN=DNS:localhost openssl ca -config "
			   "%s/certs/openssl.cnf -gencrl -crlexts crl_ext -crldays 10 -out %s/crl.pem",
			   dir, h_source_dir(), dir);
	free(sh_ok(cmd));
	cr_assert_eq(rename(key, saved), 0);
	char *next = crl_next_update(dir);
	free(before);
	before = snapshot(dir);
	args = h_strf("--out %s", dir);
	cr_expect_eq(provision(args, &out), 3, "%s", out);
	char *said = h_strf("renew crl.pem: it expires %s, within 30 days", next);
	cr_expect(strstr(out, said), "%s", out);
	after = snapshot(dir);
	cr_expect_str_eq(after, before);
	free(after);
	free(out);
	/* with the key back, renewed */
	cr_assert_eq(rename(saved, key), 0);
	long number = crl_number(dir);
	cr_expect_eq(provision(args, &out), 0, "%s", out);
	cr_expect_gt(crl_number(dir), number);
	char *renewed = crl_next_update(dir);
	cr_expect_str_neq(renewed, next);
	free(renewed);
	free(out);
	free(args);
	free(said);
	free(next);
	free(cmd);
	free(rm);
	free(before);
	free(saved);
	free(key);
	free(dir);
}

/* ca.key and ca.crt both gone (lost, or not restored with the rest) while the PKI holds what
 * the CA issued: a new CA would issue everything again, silently orphaning every deployed
 * device (the docker provision service runs the script at every `up`). Refused unless asked
 * for with --new-ca. */
Test(pki, a_lost_ca_is_replaced_only_with_new_ca)
{
	char *dir = fresh("pki-lost-ca", "--devices dev-a,dev-b");
	char *rm = h_strf("rm %s/ca.key %s/ca.crt", dir, dir);
	free(sh_ok(rm));
	char *crt = h_strf("%s/devices/dev-a.crt", dir), *sha = file_sha(crt);
	char *before = snapshot(dir);
	char *args = h_strf("--out %s --devices dev-a,dev-b", dir), *out = NULL;
	cr_expect_eq(provision(args, &out), 1, "%s", out);
	cr_expect(strstr(out, "neither ca.key nor ca.crt") && strstr(out, "--new-ca") &&
			  strstr(out, "broker.crt") && strstr(out, "2 device certificates") &&
			  strstr(out, "Nothing was changed"),
		  "%s", out);
	char *after = snapshot(dir), *now = file_sha(crt);
	cr_expect_str_eq(now, sha, "dev-a's certificate was overwritten");
	cr_expect_str_eq(after, before, "the PKI was changed");
	cr_expect_eq(mode_of(dir, "ca.key"), -1, "a CA key was made");
	free(now);
	free(after);
	free(out);
	/* the CA database alone is enough to tell (the certificates deleted too) */
	char *rm2 = h_strf("rm %s/*.crt %s/devices/*.crt", dir, dir);
	free(sh_ok(rm2));
	cr_expect_eq(provision(args, &out), 1, "%s", out);
	cr_expect(strstr(out, ".ca/index.txt (") && strstr(out, "--new-ca"), "%s", out);
	cr_expect_eq(mode_of(dir, "ca.crt"), -1);
	free(out);
	/* asked for: a new CA, everything issued again under it */
	char *args2 = h_strf("--out %s --devices dev-a,dev-b --new-ca", dir);
	cr_expect_eq(provision(args2, &out), 0, "%s", out);
	cr_expect(strstr(out, "a new CA"), "%s", out);
	const char *leaf[] = {"broker.crt", "bridge.crt", "operator.crt", "devices/dev-a.crt",
			      "devices/dev-b.crt"};
	for (size_t i = 0; i < N(leaf); i++)
		cr_expect_eq(openssl_verify(dir, leaf[i], 1), 0, "%s", leaf[i]);
	now = file_sha(crt);
	cr_expect_str_neq(now, sha);
	free(now);
	free(out);
	/* not once the CA is there: --new-ca replaces no CA */
	free(before);
	before = snapshot(dir);
	cr_expect_eq(provision(args2, &out), 1, "%s", out);
	cr_expect(strstr(out, "--new-ca only makes a new CA where both"), "%s", out);
	after = snapshot(dir);
	cr_expect_str_eq(after, before);
	free(after);
	free(out);
	/* nor is it needed for a directory that holds nothing yet */
	char *empty = h_tmpdir("pki-lost-ca-empty");
	char *args3 = h_strf("--out %s --new-ca --devices dev-a", empty);
	cr_expect_eq(provision(args3, &out), 0, "%s", out);
	free(out);
	free(args3);
	free(empty);
	free(args2);
	free(rm2);
	free(args);
	free(before);
	free(sha);
	free(crt);
	free(rm);
	free(dir);
}

/* Rotating a leaked bridge or operator key (docs/OPERATIONS.md): delete the key, run again: a
 * new key and certificate, and the old certificate revoked as superseded in the new CRL. */
Test(pki, a_deleted_bridge_or_operator_key_is_rotated)
{
	char *dir = fresh("pki-rotate", "--devices dev-a");
	char *keep = h_strf("cd %s && cp bridge.crt old-bridge.crt && cp operator.crt old-operator.crt "
			    "&& cp bridge.key old-bridge.key && rm bridge.key operator.key",
			    dir);
	free(sh_ok(keep));
	char *dev = h_strf("%s/devices/dev-a.crt", dir), *dev_sha = file_sha(dev);
	char *args = h_strf("--out %s --devices dev-a", dir), *out = NULL;
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	cr_expect(strstr(out, "bridge has a new key; its old certificate is revoked (superseded)"),
		  "%s", out);
	cr_expect(strstr(out, "operator has a new key; its old certificate is revoked (superseded)"),
		  "%s", out);
	cr_expect(strstr(out, "2 new keys, 2 new certificates"), "%s", out);
	free(out);
	const char *names[] = {"bridge", "operator"};
	for (size_t i = 0; i < N(names); i++) {
		char *crt = h_strf("%s.crt", names[i]), *old = h_strf("old-%s.crt", names[i]);
		cr_expect_eq(openssl_verify(dir, crt, 1), 0, "the new %s certificate", names[i]);
		cr_expect_eq(openssl_verify(dir, old, 0), 0, "the old one still chains");
		cr_expect_neq(openssl_verify(dir, old, 1), 0, "the old %s certificate is revoked",
			      names[i]);
		char *cmd = h_strf("test \"$(openssl x509 -in %s/%s.crt -noout -pubkey)\" = "
				   "\"$(openssl pkey -in %s/%s.key -pubout)\"",
				   dir, names[i], dir, names[i]);
		free(sh_ok(cmd));
		free(cmd);
		free(old);
		free(crt);
	}
	char *cmd = h_strf("openssl crl -in %s/crl.pem -noout -text | grep -c Superseded", dir);
	out = sh_ok(cmd);
	cr_expect_str_eq(out, "2\n");
	free(out);
	free(cmd);
	/* and the old bridge key is never certified again */
	cmd = h_strf("cd %s && rm bridge.key bridge.crt && cp old-bridge.key bridge.key", dir);
	free(sh_ok(cmd));
	cr_expect_eq(provision(args, &out), 0, "%s", out);
	cr_expect(strstr(out, "bridge: a certificate for its key was revoked; not reissued"), "%s",
		  out);
	cr_expect_eq(mode_of(dir, "bridge.crt"), -1);
	free(out);
	char *now = file_sha(dev);
	cr_expect_str_eq(now, dev_sha, "the device certificate is unchanged");
	free(now);
	free(cmd);
	free(args);
	free(dev_sha);
	free(dev);
	free(keep);
	free(dir);
}

/* How many lines of the CA database start with `status` (V valid, R revoked). */
static int index_lines(const char *dir, const char *status)
{
	char *cmd = h_strf("grep -c \"^%s\" %s/.ca/index.txt || true", status, dir);
	char *out = sh_ok(cmd);
	int n = atoi(out);
	free(out);
	free(cmd);
	return n;
}

/* A key openssl cannot read is no lost key: its certificate, still valid, must not be revoked
 * as superseded (the run then died at `openssl req` before the CRL, leaving a revocation
 * nobody asked for in the database, the device refused by the next run). The run stops
 * before it changes anything, whichever key it is and wherever it comes in the run. */
Test(pki, an_unreadable_key_stops_the_run_and_changes_nothing)
{
	char *dir = fresh("pki-badkey", "--devices dev-a,dev-b");
	char *save = h_strf("cp %s/devices/dev-a.key %s/dev-a.key.saved && "
			    "echo garbage > %s/devices/dev-a.key && "
			    "printf \"%%s\\n\" -----BEGIN\\ PRIVATE\\ KEY----- AAAA "
			    "-----END\\ PRIVATE\\ KEY----- > %s/devices/dev-b.key",
			    dir, dir, dir, dir);
	free(sh_ok(save));
	char *before = snapshot(dir);
	const char *runs[][2] = {
		{"--devices dev-a,dev-b", "devices/dev-a.key"},
		{"--devices dev-a", "devices/dev-a.key"},
		/* dev-b comes after a new device: nothing for dev-new either */
		{"--devices dev-new,dev-b", "devices/dev-b.key"},
		{"--devices dev-new --revoke dev-b,dev-a", "devices/dev-new.key"},
	};
	for (size_t i = 0; i < N(runs); i++) {
		char *args = h_strf("--out %s %s", dir, runs[i][0]), *out = NULL;
		int rc = provision(args, &out);
		if (i < 3) {
			cr_expect_eq(rc, 1, "%s: exit %d\n%s", args, rc, out);
			cr_expect(strstr(out, runs[i][1]) &&
					  strstr(out, "cannot read this private key"),
				  "%s: the message names %s:\n%s", args, runs[i][1], out);
			cr_expect(strstr(out, "nothing was changed"), "%s", out);
			char *after = snapshot(dir);
			cr_expect_str_eq(after, before, "%s changed the PKI", args);
			free(after);
		} else {
			/* revoking does not read the keys: the revocation goes ahead */
			cr_expect_eq(rc, 0, "%s: exit %d\n%s", args, rc, out);
		}
		free(out);
		free(args);
	}
	cr_expect_eq(index_lines(dir, "R"), 2, "dev-a and dev-b revoked as asked, nothing else");
	char *cmd = h_strf("openssl crl -in %s/crl.pem -noout -text | grep -c \"Key Compromise\"; "
			   "openssl crl -in %s/crl.pem -noout -text | grep -c Superseded || true",
			   dir, dir);
	char *reasons = sh_ok(cmd);
	cr_expect_str_eq(reasons, "2\n0\n", "no certificate revoked as superseded");
	free(reasons);
	free(cmd);
	free(before);
	free(save);
	free(dir);

	/* the key restored, the next run accepts the device again and changes nothing */
	dir = fresh("pki-badkey-restored", "--devices dev-a");
	char *crt = h_strf("%s/devices/dev-a.crt", dir), *sha = file_sha(crt);
	save = h_strf("cp %s/devices/dev-a.key %s/saved && echo garbage > %s/devices/dev-a.key",
		      dir, dir, dir);
	free(sh_ok(save));
	char *args = h_strf("--out %s --devices dev-a", dir), *out = NULL;
	cr_expect_eq(provision(args, &out), 1, "%s", out);
	free(out);
	char *restore = h_strf("cp %s/saved %s/devices/dev-a.key", dir, dir);
	free(sh_ok(restore));
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	cr_expect(strstr(out, "0 new keys, 0 new certificates"), "%s", out);
	cr_expect_null(strstr(out, "revoked"), "%s", out);
	char *sha2 = file_sha(crt);
	cr_expect_str_eq(sha2, sha);
	cr_expect_eq(openssl_verify(dir, "devices/dev-a.crt", 1), 0, "dev-a is still valid");
	cr_expect_eq(index_lines(dir, "R"), 0);
	free(out);
	free(sha2);
	free(restore);
	free(args);
	free(save);
	free(sha);
	free(crt);
	free(dir);
}

/* --revoke is repeatable and takes lists: every device named is revoked, with one new CRL.
 * One that has no certificate stops the run before any is revoked. */
Test(pki, several_devices_revoked_in_one_run)
{
	char *dir = fresh("pki-revoke-many", "--devices dev-a,dev-b,dev-c,dev-d,dev-e");
	long before = crl_number(dir);
	const char *gone[] = {"dev-a", "dev-b", "dev-c"};
	char *serial[N(gone)];
	for (size_t i = 0; i < N(gone); i++) {
		char *crt = h_strf("devices/%s.crt", gone[i]);
		serial[i] = serial_of(dir, crt);
		free(crt);
	}
	char *args = h_strf("--out %s --revoke dev-a --revoke dev-b,dev-c", dir), *out = NULL;
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	char *cmd = h_strf("openssl crl -in %s/crl.pem -noout -text", dir);
	char *crl = sh_ok(cmd);
	for (size_t i = 0; i < N(gone); i++) {
		char *said = h_strf("revoked device %s\n", gone[i]);
		cr_expect(strstr(out, said), "%s not revoked:\n%s", gone[i], out);
		char *line = h_strf("Serial Number: %s", serial[i]);
		cr_expect(strstr(crl, line), "%s not in the CRL:\n%s", gone[i], crl);
		char *crt = h_strf("devices/%s.crt", gone[i]);
		cr_expect_neq(openssl_verify(dir, crt, 1), 0, "%s still verifies", gone[i]);
		free(crt);
		free(line);
		free(said);
		free(serial[i]);
	}
	cr_expect_eq(h_count(crl, "Serial Number:"), 3, "%s", crl);
	cr_expect_eq(crl_number(dir), before + 1, "one CRL for the three revocations");
	cr_expect_eq(openssl_verify(dir, "devices/dev-d.crt", 1), 0);
	free(crl);
	free(out);
	free(args);

	/* one unknown id: nothing revoked, not even the devices named before it */
	args = h_strf("--out %s --revoke dev-d --revoke dev-nope,dev-e", dir);
	cr_expect_eq(provision(args, &out), 1, "%s", out);
	cr_expect(strstr(out, "dev-nope") && strstr(out, "nothing was revoked"), "%s", out);
	cr_expect_eq(index_lines(dir, "R"), 3);
	cr_expect_eq(openssl_verify(dir, "devices/dev-d.crt", 1), 0, "dev-d was revoked");
	cr_expect_eq(openssl_verify(dir, "devices/dev-e.crt", 1), 0, "dev-e was revoked");
	cr_expect_eq(crl_number(dir), before + 1);
	free(out);
	free(args);
	/* nor is anything issued first */
	args = h_strf("--out %s --devices dev-f --revoke dev-nope", dir);
	cr_expect_eq(provision(args, &out), 1, "%s", out);
	cr_expect_eq(mode_of(dir, "devices/dev-f.key"), -1, "dev-f was provisioned");
	free(out);
	free(args);
	/* a device whose certificate this run refused to issue (its key was revoked) */
	char *rm = h_strf("rm %s/devices/dev-a.crt", dir);
	free(sh_ok(rm));
	args = h_strf("--out %s --devices dev-a --revoke dev-a,dev-d", dir);
	cr_expect_eq(provision(args, &out), 1, "%s", out);
	cr_expect(strstr(out, "device 'dev-a' has no certificate (its issue was refused above)"),
		  "%s", out);
	cr_expect_eq(openssl_verify(dir, "devices/dev-d.crt", 1), 0, "dev-d was revoked");
	free(out);
	free(args);
	free(rm);
	free(cmd);
	free(dir);
}

/* `cp DIR/[*] NEW/` leaves the hidden CA database behind. The script used to start an empty one
 * beside the old CA: the next CRL forgot every revocation and restarted its numbering. */
Test(pki, a_ca_without_its_database_is_refused)
{
	char *dir = fresh("pki-nodb", "--devices dev-a,dev-b --revoke dev-a");
	long number = crl_number(dir);
	char *copy = h_tmpdir("pki-nodb-copy");
	char *cmd = h_strf("cp -r %s/* %s/", dir, copy);
	free(sh_ok(cmd));
	free(cmd);
	char *before = snapshot(copy);
	char *args = h_strf("--out %s --devices dev-a,dev-b,dev-c", copy), *out = NULL;
	cr_expect_eq(provision(args, &out), 1, "%s", out);
	cr_expect(strstr(out, ".ca/index.txt") && strstr(out, "nothing was changed"), "%s", out);
	char *after = snapshot(copy);
	cr_expect_str_eq(after, before, "the copy was changed");
	cr_expect_eq(mode_of(copy, ".ca"), -1, "an empty database was started");
	free(after);
	free(out);
	free(args);
	/* without one of its files, the same */
	const char *files[] = {"index.txt", "serial", "crlnumber"};
	for (size_t i = 0; i < N(files); i++) {
		char *one = h_tmpdir("pki-nodb-file");
		cmd = h_strf("cp -a %s/. %s/ && rm %s/.ca/%s", dir, one, one, files[i]);
		free(sh_ok(cmd));
		args = h_strf("--out %s --devices dev-c", one);
		cr_expect_eq(provision(args, &out), 1, "without .ca/%s: %s", files[i], out);
		cr_expect(strstr(out, files[i]), "%s", out);
		cr_expect_eq(mode_of(one, "devices/dev-c.crt"), -1, "without .ca/%s", files[i]);
		free(out);
		free(args);
		free(cmd);
		free(one);
	}
	/* copied with its hidden files, the PKI goes on: the revocation stays, numbering goes up */
	char *good = h_tmpdir("pki-nodb-good");
	cmd = h_strf("cp -a %s/. %s/", dir, good);
	free(sh_ok(cmd));
	args = h_strf("--out %s --devices dev-a,dev-b,dev-c --revoke dev-b", good);
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	cr_expect_neq(openssl_verify(good, "devices/dev-a.crt", 1), 0, "dev-a's revocation lost");
	cr_expect_gt(crl_number(good), number);
	free(out);
	free(args);
	free(cmd);
	free(good);
	free(before);
	free(copy);
	free(dir);
}

/* A revocation in the database that the CRL does not list (a run stopped between the two) is
 * published by the next run. */
Test(pki, a_revocation_missing_from_the_crl_is_published)
{
	char *dir = fresh("pki-stale-crl", "--devices dev-a,dev-b");
	char *cmd = h_strf("OUTPOST_PKI=%s openssl ca -config %s/certs/openssl.cnf -revoke "
			   "%s/devices/dev-a.crt",
			   dir, h_source_dir(), dir);
	free(sh_ok(cmd));
	cr_expect_eq(openssl_verify(dir, "devices/dev-a.crt", 1), 0, "the CRL is not stale");
	char *args = h_strf("--out %s", dir), *out = NULL;
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	cr_expect_neq(openssl_verify(dir, "devices/dev-a.crt", 1), 0, "not published: %s", out);
	cr_expect_eq(openssl_verify(dir, "devices/dev-b.crt", 1), 0);
	free(out);
	/* and then the CRL is left alone */
	char *before = snapshot(dir);
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	char *after = snapshot(dir);
	cr_expect_str_eq(after, before);
	free(after);
	free(before);
	free(out);
	free(args);
	free(cmd);
	free(dir);
}

/* openssl ca does no locking: runs on one directory take turns (DIR/.ca/lock). */
Test(pki, concurrent_runs_take_turns, .timeout = 240)
{
	/* two first runs at once, on a new directory: one CA, every serial once */
	char *dir = h_tmpdir("pki-concurrent");
	const char *s = h_source_dir();
	char *cmd = h_strf("%s/scripts/provision-certs.sh --out %s/pki --devices a1,a2,a3,a4,a5,a6 "
			   ">%s/1.log 2>&1 & p1=$!; "
			   "%s/scripts/provision-certs.sh --out %s/pki --devices b1,b2,b3,b4,b5,b6 "
			   ">%s/2.log 2>&1 & p2=$!; "
			   "r1=0; wait $p1 || r1=$?; r2=0; wait $p2 || r2=$?; echo $r1 $r2; "
			   "cat %s/1.log %s/2.log",
			   s, dir, dir, s, dir, dir, dir, dir);
	char *out = sh_ok(cmd);
	cr_expect(!strncmp(out, "0 0\n", 4), "both runs succeed:\n%s", out);
	free(out);
	free(cmd);
	char *pki = h_strf("%s/pki", dir);
	cr_expect_eq(index_lines(pki, "V"), 15, "3 + 12 certificates");
	cmd = h_strf("cut -f4 %s/.ca/index.txt | sort | uniq -d | wc -l", pki);
	out = sh_ok(cmd);
	cr_expect_eq(atoi(out), 0, "a serial issued twice");
	free(out);
	free(cmd);
	const char *ids[] = {"a1", "a6", "b1", "b6"};
	for (size_t i = 0; i < N(ids); i++) {
		char *crt = h_strf("devices/%s.crt", ids[i]);
		cr_expect_eq(openssl_verify(pki, crt, 1), 0, "%s", ids[i]);
		free(crt);
	}
	/* a run that cannot get the lock within OUTPOST_PKI_LOCK_WAIT changes nothing */
	char *before = snapshot(pki);
	cmd = h_strf("flock %s/.ca/lock sleep 4 & sleep 0.5; OUTPOST_PKI_LOCK_WAIT=1 "
		     "%s/scripts/provision-certs.sh --out %s --devices c1 --revoke a1",
		     pki, s, pki);
	cr_expect_eq(h_sh(cmd, &out, 60), 1, "%s", out);
	cr_expect(strstr(out, "still holds") && strstr(out, "nothing was changed"), "%s", out);
	char *after = snapshot(pki);
	cr_expect_str_eq(after, before);
	free(after);
	free(out);
	free(cmd);
	/* one that can, waits and goes on */
	cmd = h_strf("flock %s/.ca/lock sleep 2 & sleep 0.5; start=$(date +%%s%%N); "
		     "%s/scripts/provision-certs.sh --out %s --devices c1 && "
		     "echo waited $((($(date +%%s%%N) - start) / 1000000))",
		     pki, s, pki);
	cr_expect_eq(h_sh(cmd, &out, 60), 0, "%s", out);
	cr_expect(strstr(out, "waiting up to 300s"), "%s", out);
	const char *w = strstr(out, "waited ");
	cr_expect(w && atoi(w + 7) >= 1000, "did not wait for the lock: %s", out);
	cr_expect_eq(openssl_verify(pki, "devices/c1.crt", 1), 0);
	free(out);
	free(cmd);
	/* the wait is a number of seconds */
	cmd = h_strf("OUTPOST_PKI_LOCK_WAIT=soon %s/scripts/provision-certs.sh --out %s", s, pki);
	cr_expect_eq(h_sh(cmd, &out, 60), 2, "%s", out);
	cr_expect(strstr(out, "OUTPOST_PKI_LOCK_WAIT"), "%s", out);
	free(out);
	free(cmd);
	free(before);
	free(pki);
	free(dir);
}

/* An IPv4 address is certified as given, so the next run finds it and reissues nothing. */
Test(pki, an_ipv4_broker_host_is_certified_once)
{
	char *dir = fresh("pki-ipv4", "--broker-host 10.0.0.1,0.0.0.0,255.255.255.255");
	static const char *const want[] = {"IP Address:10.0.0.1", "IP Address:0.0.0.0",
					   "IP Address:255.255.255.255"};
	expect_sans(dir, want, N(want));
	char *before = snapshot(dir);
	char *args = h_strf("--out %s --broker-host 10.0.0.1,255.255.255.255", dir), *out = NULL;
	cr_assert_eq(provision(args, &out), 0, "%s", out);
	cr_expect(strstr(out, "0 new keys, 0 new certificates"), "%s", out);
	char *after = snapshot(dir);
	cr_expect_str_eq(after, before, "broker.crt reissued");
	free(after);
	free(before);
	free(out);
	free(args);
	free(dir);
}
