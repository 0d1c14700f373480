/* dev_catalog.h - the device's metric catalog: stable numeric ids for metric names, persisted
 * so an id means the same metric for the device's whole life (batches carry ids; names travel
 * once, in Birth). File format: one "id name unit" line per metric, append-only. */
#ifndef DEV_CATALOG_H
#define DEV_CATALOG_H

#include <stddef.h>
#include <stdint.h>

enum dev_catalog_err {
	DEV_CATALOG_OK = 0,
	DEV_CATALOG_EIO = -1,
	DEV_CATALOG_ENOMEM = -2,
	DEV_CATALOG_EFULL = -3, /* WIRE_MAX_METRICS names already, or a Birth could not hold more */
	DEV_CATALOG_ENAME = -4, /* not a valid metric name */
	DEV_CATALOG_ECORRUPT = -5,
};

struct dev_catalog;

/* path: the catalog file (created if missing). */
int dev_catalog_open(const char *path, struct dev_catalog **out);
void dev_catalog_close(struct dev_catalog *c); /* accepts NULL */

/* The id of name, adding (and persisting) it if new. unit may be NULL. */
int dev_catalog_id(struct dev_catalog *c, const char *name, const char *unit, uint32_t *id);

size_t dev_catalog_count(const struct dev_catalog *c);

/* The i-th entry (0 <= i < count), borrowed strings valid until close. */
void dev_catalog_entry(const struct dev_catalog *c, size_t i, uint32_t *id, const char **name,
		       const char **unit);

/* 1 if a metric was added since the last call (the agent then sends a fresh Birth). */
int dev_catalog_take_changed(struct dev_catalog *c);

#endif
