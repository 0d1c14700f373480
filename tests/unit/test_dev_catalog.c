/* test_dev_catalog.c - stable metric ids across restarts, validation, torn lines. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dev_catalog.h"
#include "outpost.pb-c.h"
#include "wire_limits.h"
#include "harness.h"

/* realloc() fails while this is set, as when memory runs out: interposed in this program (the
 * catalog is linked in), forwarding to the real one (libc's, or a sanitizer's) otherwise. */
static volatile int realloc_fails;

void *realloc(void *p, size_t n)
{
	static void *(*real)(void *, size_t);
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "realloc");
	if (realloc_fails) {
		errno = ENOMEM;
		return NULL;
	}
	return real(p, n);
}

Test(dev_catalog, ids_are_stable_and_persisted)
{
	char *dir = h_tmpdir("catalog");
	char *path = h_strf("%s/metrics", dir);
	struct dev_catalog *c;
	uint32_t a, b, a2;
	cr_assert_eq(dev_catalog_open(path, &c), 0);
	cr_assert_eq(dev_catalog_id(c, "cpu.user", "%", &a), 0);
	cr_assert_eq(dev_catalog_id(c, "mem.total", "bytes", &b), 0);
	cr_expect_neq(a, b);
	cr_assert_eq(dev_catalog_id(c, "cpu.user", "%", &a2), 0);
	cr_expect_eq(a, a2);
	cr_expect(dev_catalog_take_changed(c));
	cr_expect_not(dev_catalog_take_changed(c));
	cr_expect_eq(dev_catalog_id(c, "bad name", NULL, &a2), DEV_CATALOG_ENAME);
	/* a unit that is not UTF-8 (an exec collector's odd output) is dropped, not kept */
	uint32_t odd;
	const char *oname, *ounit;
	cr_assert_eq(dev_catalog_id(c, "odd.unit", "\xff\xfe", &odd), 0);
	dev_catalog_entry(c, dev_catalog_count(c) - 1, &odd, &oname, &ounit);
	cr_expect_str_eq(ounit, "");
	dev_catalog_close(c);

	/* a torn last line (power cut while appending) is forgotten, not fatal */
	FILE *f = fopen(path, "a");
	fputs("4 torn.metr", f);
	fclose(f);
	cr_assert_eq(dev_catalog_open(path, &c), 0);
	cr_expect_eq(dev_catalog_count(c), 3);
	cr_assert_eq(dev_catalog_id(c, "mem.total", NULL, &a2), 0);
	cr_expect_eq(a2, b);
	uint32_t id;
	const char *name, *unit;
	dev_catalog_entry(c, 0, &id, &name, &unit);
	cr_expect_str_eq(name, "cpu.user");
	cr_expect_str_eq(unit, "%");
	/* the next entry takes the torn one's place, it is not glued to it */
	uint32_t d;
	cr_assert_eq(dev_catalog_id(c, "disk.free", "bytes", &d), 0);
	cr_expect_eq(d, 4);
	dev_catalog_close(c);
	cr_assert_eq(dev_catalog_open(path, &c), 0);
	cr_assert_eq(dev_catalog_count(c), 4);
	dev_catalog_entry(c, 3, &id, &name, &unit);
	cr_expect_eq(id, 4);
	cr_expect_str_eq(name, "disk.free");
	cr_expect_str_eq(unit, "bytes");
	dev_catalog_close(c);
	free(path);
	free(dir);
}

Test(dev_catalog, corrupt_file_is_refused)
{
	char *dir = h_tmpdir("catalog");
	char *path = h_strf("%s/metrics", dir);
	FILE *f = fopen(path, "w");
	fputs("1 ok.metric -\n7 skipped.id -\n", f);
	fclose(f);
	struct dev_catalog *c;
	cr_expect_eq(dev_catalog_open(path, &c), DEV_CATALOG_ECORRUPT);
	/* an over-long line in the middle is damage, not a torn tail: refused, nothing cut */
	f = fopen(path, "w");
	fputs("1 ok.metric -\n", f);
	for (int i = 0; i < 300; i++)
		fputc('x', f);
	fputs("\n2 next.metric -\n", f);
	fclose(f);
	cr_expect_eq(dev_catalog_open(path, &c), DEV_CATALOG_ECORRUPT);
	size_t len = 0;
	free(h_read_file(path, &len));
	cr_expect_eq(len, 14 + 301 + 16);
	free(path);
	free(dir);
}

/* Long names (an exec collector's): the catalog stops growing before the Birth that must carry
 * every name would be too large to send. */
Test(dev_catalog, stops_before_the_birth_would_not_pack)
{
	char *dir = h_tmpdir("catalog");
	char *path = h_strf("%s/metrics", dir);
	struct dev_catalog *c;
	cr_assert_eq(dev_catalog_open(path, &c), 0);
	char name[WIRE_MAX_METRIC_NAME + 1], unit[WIRE_MAX_UNIT + 1];
	memset(unit, 'u', WIRE_MAX_UNIT);
	unit[WIRE_MAX_UNIT] = '\0';
	int rc = 0;
	size_t n = 0;
	for (; n < WIRE_MAX_METRICS; n++) {
		memset(name, 'm', WIRE_MAX_METRIC_NAME);
		name[WIRE_MAX_METRIC_NAME] = '\0';
		memcpy(name, "00000", 5); /* a distinct name of the maximal length */
		for (size_t k = n, d = 5; d-- > 0; k /= 10)
			name[d] = (char)('0' + k % 10);
		uint32_t id;
		if ((rc = dev_catalog_id(c, name, unit, &id)))
			break;
	}
	cr_assert_eq(rc, DEV_CATALOG_EFULL, "%zu metrics of 160 bytes: %d", n, rc);
	cr_expect_gt(n, 1000);

	/* the Birth with all of them, and the largest certificate, still packs */
	Outpost__Birth b = OUTPOST__BIRTH__INIT;
	Outpost__MetricDef *defs = calloc(n, sizeof(*defs)), **ptrs = calloc(n, sizeof(*ptrs));
	for (size_t i = 0; i < n; i++) {
		const char *nm, *un;
		outpost__metric_def__init(&defs[i]);
		dev_catalog_entry(c, i, &defs[i].id, &nm, &un);
		defs[i].name = (char *)nm;
		defs[i].unit = (char *)un;
		ptrs[i] = &defs[i];
	}
	char *pem = malloc(WIRE_MAX_CERT_PEM + 1);
	memset(pem, 'A', WIRE_MAX_CERT_PEM);
	pem[WIRE_MAX_CERT_PEM] = '\0';
	uint8_t boot[WIRE_BOOT_ID_LEN] = {1};
	b.cert_pem = pem;
	b.agent_version = "0.0.0-test";
	b.boot_id.data = boot;
	b.boot_id.len = sizeof(boot);
	b.n_metrics = n;
	b.metrics = ptrs;
	size_t len = outpost__birth__get_packed_size(&b);
	cr_expect_leq(len, WIRE_MAX_BODY, "a Birth of %zu bytes", len);
	free(pem);
	free(defs);
	free(ptrs);
	dev_catalog_close(c);
	free(path);
	free(dir);
}

/* Memory runs out as a new name needs more room (the 65th: the entry array doubles): nothing is
 * written, and the name is added at the next sample, once. Before, its line was written first
 * and the next sample wrote a second one with the same id: the next start refused the file. */
Test(dev_catalog, a_name_that_cannot_be_kept_in_memory_is_not_written)
{
	char *dir = h_tmpdir("catalog");
	char *path = h_strf("%s/metrics", dir);
	struct dev_catalog *c;
	uint32_t id;
	char name[32];
	cr_assert_eq(dev_catalog_open(path, &c), 0);
	for (int i = 0; i < 64; i++) {
		snprintf(name, sizeof(name), "m.%d", i);
		cr_assert_eq(dev_catalog_id(c, name, "u", &id), 0);
	}
	realloc_fails = 1;
	int rc = dev_catalog_id(c, "m.64", "u", &id);
	realloc_fails = 0;
	cr_assert_eq(rc, DEV_CATALOG_ENOMEM);
	cr_expect_eq(dev_catalog_count(c), 64);
	cr_assert_eq(dev_catalog_id(c, "m.64", "u", &id), 0);
	cr_expect_eq(id, 65);
	dev_catalog_close(c);
	char *text = h_read_file(path, NULL);
	cr_assert_not_null(text);
	cr_expect_eq(h_count(text, "\n65 "), 1, "%s", text);
	cr_assert_eq(dev_catalog_open(path, &c), 0, "the file was refused");
	cr_expect_eq(dev_catalog_count(c), 65);
	cr_assert_eq(dev_catalog_id(c, "m.64", NULL, &id), 0);
	cr_expect_eq(id, 65);
	dev_catalog_close(c);
	free(text);
	free(path);
	free(dir);
}
