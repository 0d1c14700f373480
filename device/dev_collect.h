/* dev_collect.h - collectors: sources of named readings, sampled together every interval.
 * Each kind (proc, exec, sim) is a small vtable in its own file. A collector that fails is
 * reported through metrics (collector.<name>.ok = 0, collector.<name>.errors += 1), never by
 * stopping the agent. */
#ifndef DEV_COLLECT_H
#define DEV_COLLECT_H

#include <signal.h>
#include <stdint.h>

/* Receives one reading; returns 0 or a negative error (the collector keeps going). */
typedef int (*dev_sink_fn)(void *ctx, const char *name, const char *unit, double value);

struct dev_collect_conf {
	const char *list;	   /* "proc,exec,sim" */
	const char *exec_command;  /* sh -c command printing "name value [unit]" lines */
	int64_t exec_timeout_ms;
	int sim_metrics;	   /* synthetic sensors */
	const char *seed;	   /* makes sim deterministic per device (the device id) */
	const volatile sig_atomic_t *stop; /* optional: set when the agent is asked to stop, so a
					    * slow exec command is not waited for */
	const char *const *exec_env; /* optional, NULL-terminated "NAME=value" entries the exec
				      * command gets on top of the agent's environment (replacing
				      * a variable of that name); copied at open */
};

/* What a collector's sample returns when it was cut short because the agent is stopping: no
 * readings this time, and no failure either. */
#define DEV_COLLECT_CUT_SHORT 1

struct dev_collector_ops {
	const char *name;
	int (*open)(const struct dev_collect_conf *conf, void **state);
	/* 0 on success, DEV_COLLECT_CUT_SHORT, or -1 on failure with a short static reason in
	 * *why */
	int (*sample)(void *state, dev_sink_fn sink, void *ctx, const char **why);
	void (*close)(void *state);
};

extern const struct dev_collector_ops dev_coll_proc;
extern const struct dev_collector_ops dev_coll_exec;
extern const struct dev_collector_ops dev_coll_sim;

struct dev_collect;

/* Open every collector named in conf->list. Unknown names fail with *why set. */
int dev_collect_open(const struct dev_collect_conf *conf, struct dev_collect **out,
		     const char **why);
void dev_collect_close(struct dev_collect *c); /* accepts NULL */

/* Sample every collector into sink, each followed by its health (collector.<name>.ok and
 * .errors), except one cut short by the agent's stop, which gives nothing this time and is no
 * failure. Returns the number of collectors that failed; the last failure's collector name
 * and reason go to *failed_name and *why (static strings). */
int dev_collect_sample(struct dev_collect *c, dev_sink_fn sink, void *ctx,
		       const char **failed_name, const char **why);

#endif
