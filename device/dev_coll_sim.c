/* dev_coll_sim.c - synthetic sensors for demos and load tests: temperatures (random walk at
 * 0.01 resolution), counters, and slow sine waves, deterministic per device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "dev_collect.h"

#define SIM_MAX 4000

struct sim {
	int n;
	uint64_t rng;
	double *v;
	uint64_t tick;
};

static uint64_t rnd(struct sim *s)
{
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng;
}

static int sim_open(const struct dev_collect_conf *conf, void **state)
{
	struct sim *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	s->n = conf->sim_metrics > 0 ? conf->sim_metrics : 10;
	if (s->n > SIM_MAX)
		s->n = SIM_MAX;
	s->v = calloc((size_t)s->n, sizeof(*s->v));
	if (!s->v) {
		free(s);
		return -1;
	}
	s->rng = 88172645463325252ULL;
	for (const char *p = conf->seed ? conf->seed : ""; *p; p++)
		s->rng = (s->rng ^ (uint8_t)*p) * 1099511628211ULL;
	s->rng |= 1;
	for (int i = 0; i < s->n; i++)
		s->v[i] = i % 4 == 1 ? 0 : 15 + (double)(rnd(s) % 1000) / 100.0;
	*state = s;
	return 0;
}

static int sim_sample(void *state, dev_sink_fn sink, void *ctx, const char **why)
{
	struct sim *s = state;
	char name[32];
	(void)why;
	s->tick++;
	for (int i = 0; i < s->n; i++) {
		double x;
		const char *unit;
		switch (i % 4) {
		case 1: /* a counter, e.g. pulses */
			s->v[i] += (double)(rnd(s) % 50);
			x = s->v[i];
			unit = "count";
			break;
		case 3: /* a slow wave, e.g. daylight */
			x = round(500.0 + 400.0 * sin((double)s->tick / 360.0 + i)) ;
			unit = "lx";
			break;
		default: /* a temperature drifting by a few hundredths */
			s->v[i] += ((double)(rnd(s) % 7) - 3.0) / 100.0;
			x = round(s->v[i] * 100.0) / 100.0;
			unit = "degC";
			break;
		}
		snprintf(name, sizeof(name), "sim.sensor_%04d", i);
		sink(ctx, name, unit, x);
	}
	return 0;
}

static void sim_close(void *state)
{
	struct sim *s = state;
	if (s)
		free(s->v);
	free(s);
}

const struct dev_collector_ops dev_coll_sim = {"sim", sim_open, sim_sample, sim_close};
