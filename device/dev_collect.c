/* dev_collect.c - the set of configured collectors and their health metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dev_collect.h"

#define MAX_COLLECTORS 8

static const struct dev_collector_ops *const kinds[] = {&dev_coll_proc, &dev_coll_exec,
							&dev_coll_sim};

struct active {
	const struct dev_collector_ops *ops;
	void *state;
	uint64_t errors;
};

struct dev_collect {
	struct active a[MAX_COLLECTORS];
	int n;
};

int dev_collect_open(const struct dev_collect_conf *conf, struct dev_collect **out,
		     const char **why)
{
	struct dev_collect *c = calloc(1, sizeof(*c));
	const char *p = conf->list ? conf->list : "";
	if (!c) {
		*why = "out of memory";
		return -1;
	}
	while (*p) {
		while (*p == ',' || *p == ' ')
			p++;
		size_t n = strcspn(p, ", ");
		if (!n)
			break;
		const struct dev_collector_ops *ops = NULL;
		for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
			if (strlen(kinds[i]->name) == n && !strncmp(kinds[i]->name, p, n))
				ops = kinds[i];
		if (!ops) {
			*why = "unknown collector (known: proc, exec, sim)";
			goto fail;
		}
		for (int i = 0; i < c->n; i++)
			if (c->a[i].ops == ops)
				ops = NULL;
		if (ops) {
			if (c->n == MAX_COLLECTORS) {
				*why = "too many collectors";
				goto fail;
			}
			if (ops->open(conf, &c->a[c->n].state)) {
				*why = ops == &dev_coll_exec ? "exec needs exec_command" : "collector failed to start";
				goto fail;
			}
			c->a[c->n++].ops = ops;
		}
		p += n;
	}
	*out = c;
	return 0;
fail:
	dev_collect_close(c);
	return -1;
}

void dev_collect_close(struct dev_collect *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++)
		c->a[i].ops->close(c->a[i].state);
	free(c);
}

int dev_collect_sample(struct dev_collect *c, dev_sink_fn sink, void *ctx,
		       const char **failed_name, const char **why)
{
	int failed = 0;
	char name[64];
	for (int i = 0; i < c->n; i++) {
		struct active *a = &c->a[i];
		const char *reason = NULL;
		int rc = a->ops->sample(a->state, sink, ctx, &reason);
		/* the last sample of a stopping agent: a false ok = 0 and a failure counted in its
		 * final batch would say the collector broke */
		if (rc == DEV_COLLECT_CUT_SHORT)
			continue;
		if (rc) {
			a->errors++;
			failed++;
			*failed_name = a->ops->name;
			*why = reason ? reason : "failed";
		}
		snprintf(name, sizeof(name), "collector.%s.ok", a->ops->name);
		sink(ctx, name, "", rc ? 0 : 1);
		snprintf(name, sizeof(name), "collector.%s.errors", a->ops->name);
		sink(ctx, name, "", (double)a->errors);
	}
	return failed;
}
