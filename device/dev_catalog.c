/* dev_catalog.c - persistent metric name -> id map (open addressing over the entry array). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dev_catalog.h"
#include "ofile.h"
#include "wire_limits.h"
#include "wire_msg.h"
#include "wire_utf8.h"

struct entry {
	uint32_t id;
	char *name;
	char *unit;
};

struct dev_catalog {
	char *path;
	int dir_synced;	 /* path's directory was fsync'ed since open: its entry there is on disk */
	struct entry *e;
	size_t n, cap;
	uint32_t *slots; /* index+1 into e, 0 = empty */
	size_t nslots;
	int changed;
	long size; /* bytes of complete lines in the file: where the next one is written */
	size_t birth_bytes; /* what the names and units weigh in a Birth */
};

/* A Birth carries every name and unit once, beside the certificate (at most WIRE_MAX_CERT_PEM)
 * and a few small fields: the catalog stops growing before the Birth would not pack. A
 * MetricDef costs at most 16 bytes beside its strings. */
#define BIRTH_PER_METRIC 16
#define BIRTH_CATALOG_BUDGET (WIRE_MAX_BODY - WIRE_MAX_CERT_PEM - 4096)

static uint32_t hash(const char *s)
{
	uint32_t h = 2166136261u;
	while (*s)
		h = (h ^ (uint8_t)*s++) * 16777619u;
	return h;
}

static size_t find_slot(const struct dev_catalog *c, const char *name)
{
	size_t mask = c->nslots - 1, i = hash(name) & mask;
	while (c->slots[i] && strcmp(c->e[c->slots[i] - 1].name, name))
		i = (i + 1) & mask;
	return i;
}

/* Room in the arrays for one more entry. A new name gets it before its line is written: nothing
 * may fail between the line on disk and the entry in memory, or the next sample would write a
 * second line with the same id, which the next start refuses (DEV_CATALOG_ECORRUPT). */
static int reserve(struct dev_catalog *c)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct entry *e = realloc(c->e, cap * sizeof(*e));
		if (!e)
			return DEV_CATALOG_ENOMEM;
		c->e = e;
		c->cap = cap;
	}
	if ((c->n + 1) * 2 > c->nslots) {
		size_t ns = c->nslots ? c->nslots * 2 : 128;
		uint32_t *s = calloc(ns, sizeof(*s));
		if (!s)
			return DEV_CATALOG_ENOMEM;
		free(c->slots);
		c->slots = s;
		c->nslots = ns;
		for (size_t i = 0; i < c->n; i++)
			c->slots[find_slot(c, c->e[i].name)] = (uint32_t)i + 1;
	}
	return DEV_CATALOG_OK;
}

/* Enter an entry in the room reserve() made; name and unit (malloc'd) are taken. Cannot fail. */
static void insert(struct dev_catalog *c, uint32_t id, char *name, char *unit)
{
	c->e[c->n] = (struct entry){id, name, unit};
	c->slots[find_slot(c, name)] = (uint32_t)++c->n;
	c->birth_bytes += strlen(name) + strlen(unit) + BIRTH_PER_METRIC;
}

static int add_entry(struct dev_catalog *c, uint32_t id, const char *name, const char *unit)
{
	char *n = strdup(name), *u = strdup(unit);
	int rc = n && u ? reserve(c) : DEV_CATALOG_ENOMEM;
	if (rc) {
		free(n);
		free(u);
		return rc;
	}
	insert(c, id, n, u);
	return DEV_CATALOG_OK;
}

int dev_catalog_open(const char *path, struct dev_catalog **out)
{
	struct dev_catalog *c = calloc(1, sizeof(*c));
	int rc = DEV_CATALOG_ENOMEM;
	if (!c || !(c->path = strdup(path)))
		goto fail;
	FILE *f = fopen(path, "r");
	if (!f && errno != ENOENT) {
		rc = DEV_CATALOG_EIO;
		goto fail;
	}
	char line[WIRE_MAX_METRIC_NAME + WIRE_MAX_UNIT + 32];
	while (f && fgets(line, sizeof(line), f)) {
		unsigned id;
		char name[WIRE_MAX_METRIC_NAME + 1], unit[WIRE_MAX_UNIT + 1] = "";
		if (!strchr(line, '\n')) {
			/* a torn last line (power cut while appending) is forgotten: the next entry
			 * is written where it started, never glued to it */
			if (fgetc(f) == EOF && truncate(path, c->size) == 0)
				break;
			fclose(f);
			rc = DEV_CATALOG_ECORRUPT;
			goto fail;
		}
		c->size += (long)strlen(line);
		int k = sscanf(line, "%u %128s %32s", &id, name, unit);
		if (k < 2 || wire_metric_name_check(name) || c->n >= WIRE_MAX_METRICS ||
		    id != c->n + 1) {
			fclose(f);
			rc = DEV_CATALOG_ECORRUPT;
			goto fail;
		}
		if ((rc = add_entry(c, id, name, unit)) != 0) {
			fclose(f);
			goto fail;
		}
	}
	if (f)
		fclose(f);
	*out = c;
	return DEV_CATALOG_OK;
fail:
	dev_catalog_close(c);
	return rc;
}

void dev_catalog_close(struct dev_catalog *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		free(c->e[i].name);
		free(c->e[i].unit);
	}
	free(c->e);
	free(c->slots);
	free(c->path);
	free(c);
}

int dev_catalog_id(struct dev_catalog *c, const char *name, const char *unit, uint32_t *id)
{
	if (c->nslots) {
		size_t s = find_slot(c, name);
		if (c->slots[s]) {
			*id = c->e[c->slots[s] - 1].id;
			return DEV_CATALOG_OK;
		}
	}
	if (wire_metric_name_check(name))
		return DEV_CATALOG_ENAME;
	if (unit && (strlen(unit) > WIRE_MAX_UNIT || strpbrk(unit, " \t\n") ||
		     !wire_utf8_valid(unit, strlen(unit))))
		unit = ""; /* a collector's odd unit is dropped, not sent (the Birth would not pack) */
	if (c->n >= WIRE_MAX_METRICS ||
	    c->birth_bytes + strlen(name) + (unit ? strlen(unit) : 0) + BIRTH_PER_METRIC >
	        BIRTH_CATALOG_BUDGET)
		return DEV_CATALOG_EFULL;
	uint32_t nid = (uint32_t)c->n + 1;
	char *ename = strdup(name), *eunit = strdup(unit && strcmp(unit, "-") ? unit : "");
	int rc = ename && eunit ? reserve(c) : DEV_CATALOG_ENOMEM;
	if (rc)
		goto out;
	/* persist before use: an id in a spooled batch must always resolve to its name */
	rc = DEV_CATALOG_EIO;
	int fd = open(c->path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		goto out;
	char line[WIRE_MAX_METRIC_NAME + WIRE_MAX_UNIT + 32];
	int len = snprintf(line, sizeof(line), "%u %s %s\n", nid, name, unit && *unit ? unit : "-");
	/* the first entry written since open also fsyncs the directory, or the file this run
	 * created (or a crashed one created and never synced) could vanish at a power cut
	 * with ids already spooled */
	int ok = pwrite(fd, line, (size_t)len, c->size) == len && fdatasync(fd) == 0 &&
		 (c->dir_synced || ofile_sync_parent(c->path) == 0);
	if (!ok && ftruncate(fd, c->size) == 0) /* a short write leaves no partial line */
		fdatasync(fd);
	close(fd);
	if (!ok)
		goto out;
	c->size += len;
	c->dir_synced = 1;
	insert(c, nid, ename, eunit);
	ename = eunit = NULL;
	c->changed = 1;
	*id = nid;
	rc = DEV_CATALOG_OK;
out:
	free(ename);
	free(eunit);
	return rc;
}

size_t dev_catalog_count(const struct dev_catalog *c)
{
	return c->n;
}

void dev_catalog_entry(const struct dev_catalog *c, size_t i, uint32_t *id, const char **name,
		       const char **unit)
{
	*id = c->e[i].id;
	*name = c->e[i].name;
	*unit = strcmp(c->e[i].unit, "-") ? c->e[i].unit : "";
}

int dev_catalog_take_changed(struct dev_catalog *c)
{
	int ch = c->changed;
	c->changed = 0;
	return ch;
}
