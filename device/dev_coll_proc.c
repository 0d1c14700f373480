/* dev_coll_proc.c - Linux host metrics from /proc: CPU, memory, load, network, disks, uptime. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev_collect.h"

#define MAX_IFACES 16
#define MAX_DISKS 16

struct cpu {
	unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
};

struct proc {
	struct cpu last;
	int have_last;
	const char *root; /* "/proc", overridable for tests via OUTPOST_PROC_ROOT */
};

static int proc_open(const struct dev_collect_conf *conf, void **state)
{
	(void)conf;
	struct proc *p = calloc(1, sizeof(*p));
	if (!p)
		return -1;
	p->root = getenv("OUTPOST_PROC_ROOT");
	if (!p->root || !*p->root)
		p->root = "/proc";
	*state = p;
	return 0;
}

static FILE *open_proc(const struct proc *p, const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", p->root, name);
	return fopen(path, "r");
}

/* Interface and disk names become part of metric names: keep [A-Za-z0-9_.-]. */
static void clean(char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '_' || *s == '.' || *s == '-'))
			*s = '_';
}

static double delta(unsigned long long now, unsigned long long before)
{
	return now > before ? (double)(now - before) : 0.0;
}

static int sample_cpu(struct proc *p, dev_sink_fn sink, void *ctx)
{
	FILE *f = open_proc(p, "stat");
	struct cpu c = {0};
	if (!f)
		return -1;
	int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &c.user, &c.nice, &c.system,
		       &c.idle, &c.iowait, &c.irq, &c.softirq, &c.steal);
	fclose(f);
	if (k < 4)
		return -1;
	if (p->have_last) {
		/* The kernel's iowait (and, across CPU hotplug, idle) can go backwards: a counter
		 * that fell counts as no time, not as 2^64 of it. */
		double du = delta(c.user + c.nice, p->last.user + p->last.nice);
		double ds = delta(c.system + c.irq + c.softirq,
				  p->last.system + p->last.irq + p->last.softirq);
		double di = delta(c.idle, p->last.idle);
		double dw = delta(c.iowait, p->last.iowait);
		double dst = delta(c.steal, p->last.steal);
		double total = du + ds + di + dw + dst;
		if (total > 0) {
			/* one decimal of a percent is all a sampling interval can tell */
			sink(ctx, "cpu.user", "%", (double)(long long)(1000.0 * du / total) / 10.0);
			sink(ctx, "cpu.system", "%", (double)(long long)(1000.0 * ds / total) / 10.0);
			sink(ctx, "cpu.iowait", "%", (double)(long long)(1000.0 * dw / total) / 10.0);
			sink(ctx, "cpu.idle", "%", (double)(long long)(1000.0 * di / total) / 10.0);
		}
	}
	p->last = c;
	p->have_last = 1;
	return 0;
}

static int sample_mem(struct proc *p, dev_sink_fn sink, void *ctx)
{
	FILE *f = open_proc(p, "meminfo");
	char key[64];
	unsigned long long v, total = 0, avail = 0, swap_total = 0, swap_free = 0;
	unsigned long long free_etc = 0; /* MemFree + Buffers + Cached */
	int have_avail = 0;
	if (!f)
		return -1;
	while (fscanf(f, "%63s %llu%*[^\n]", key, &v) == 2) {
		if (!strcmp(key, "MemTotal:")) {
			total = v * 1024;
		} else if (!strcmp(key, "MemAvailable:")) {
			avail = v * 1024;
			have_avail = 1;
		} else if (!strcmp(key, "MemFree:") || !strcmp(key, "Buffers:") ||
			   !strcmp(key, "Cached:")) {
			free_etc += v * 1024;
		} else if (!strcmp(key, "SwapTotal:")) {
			swap_total = v * 1024;
		} else if (!strcmp(key, "SwapFree:")) {
			swap_free = v * 1024;
		}
	}
	fclose(f);
	if (!total)
		return -1;
	/* Linux before 3.14 has no MemAvailable: free memory and the caches the kernel gives back
	 * on demand are its usual estimate (it was 0 available, 100 % used) */
	if (!have_avail)
		avail = free_etc;
	if (avail > total)
		avail = total;
	sink(ctx, "mem.total", "bytes", (double)total);
	sink(ctx, "mem.available", "bytes", (double)avail);
	sink(ctx, "mem.used_pct", "%", (double)(long long)(1000.0 * (double)(total - avail) / (double)total) / 10.0);
	sink(ctx, "swap.used", "bytes", (double)(swap_total - swap_free));
	return 0;
}

static int sample_load(struct proc *p, dev_sink_fn sink, void *ctx)
{
	FILE *f = open_proc(p, "loadavg");
	double l1, l5, l15;
	int running, total;
	if (!f)
		return -1;
	int k = fscanf(f, "%lf %lf %lf %d/%d", &l1, &l5, &l15, &running, &total);
	fclose(f);
	if (k != 5)
		return -1;
	sink(ctx, "load.1", "", l1);
	sink(ctx, "load.5", "", l5);
	sink(ctx, "load.15", "", l15);
	sink(ctx, "procs.total", "", total);
	f = open_proc(p, "uptime");
	double up;
	if (f && fscanf(f, "%lf", &up) == 1)
		sink(ctx, "uptime", "s", (double)(long long)up);
	if (f)
		fclose(f);
	return 0;
}

/* Interfaces that container runtimes, hypervisors and overlay networks make, most of them
 * with a new name for every container, VM or network (veth1a2b3c4, cali0123456789a,
 * br-<network id>). Each name would take three entries of the persisted metric catalog for
 * good (dev_catalog.h), until the catalog is full and refuses every new metric: they are not
 * sampled. Names, not /sys/class/net/<if>/device: the uplinks of a field device without a
 * device of their own (ppp*, wg*, tun*, bond*, VLANs, a container's eth0) are still wanted. */
static const char *const container_ifaces[] = {
	"veth", "br-", "docker", "cni", "virbr", "vnet", "cali", "flannel", "vxlan", "weave",
	"cilium", "lxc", "tap", "podman", "kube-",
};

static int is_container_iface(const char *ifc)
{
	for (size_t i = 0; i < sizeof(container_ifaces) / sizeof(container_ifaces[0]); i++)
		if (!strncmp(ifc, container_ifaces[i], strlen(container_ifaces[i])))
			return 1;
	return 0;
}

static int sample_net(struct proc *p, dev_sink_fn sink, void *ctx)
{
	FILE *f = open_proc(p, "net/dev");
	char line[512], name[96];
	int n = 0;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f) && n < MAX_IFACES) {
		char *colon = strchr(line, ':');
		unsigned long long rxb, rxp, rxe, rxd, x, txb, txp, txe;
		if (!colon)
			continue;
		*colon = '\0';
		char *ifc = line;
		while (*ifc == ' ')
			ifc++;
		if (!strcmp(ifc, "lo") || strlen(ifc) > 32 || is_container_iface(ifc))
			continue;
		if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &rxb, &rxp,
			   &rxe, &rxd, &x, &x, &x, &x, &txb, &txp, &txe) != 11)
			continue;
		clean(ifc);
		snprintf(name, sizeof(name), "net.%.32s.rx_bytes", ifc);
		sink(ctx, name, "bytes", (double)rxb);
		snprintf(name, sizeof(name), "net.%.32s.tx_bytes", ifc);
		sink(ctx, name, "bytes", (double)txb);
		snprintf(name, sizeof(name), "net.%.32s.errors", ifc);
		sink(ctx, name, "", (double)(rxe + txe));
		n++;
	}
	fclose(f);
	return 0;
}

static int sample_disks(struct proc *p, dev_sink_fn sink, void *ctx)
{
	FILE *f = open_proc(p, "diskstats");
	char line[512], dev[64], name[128], sys[192];
	int n = 0;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f) && n < MAX_DISKS) {
		unsigned maj, min;
		unsigned long long rd, rdm, rds, rdt, wr, wrm, wrs;
		if (sscanf(line, "%u %u %63s %llu %llu %llu %llu %llu %llu %llu", &maj, &min, dev, &rd,
			   &rdm, &rds, &rdt, &wr, &wrm, &wrs) != 10)
			continue;
		if (!strncmp(dev, "loop", 4) || !strncmp(dev, "ram", 3))
			continue;
		/* whole disks only: partitions have no /sys/block/<name> */
		struct stat st;
		snprintf(sys, sizeof(sys), "/sys/block/%.63s", dev);
		if (stat(sys, &st) != 0)
			continue;
		clean(dev);
		snprintf(name, sizeof(name), "disk.%.63s.read_bytes", dev);
		sink(ctx, name, "bytes", (double)rds * 512);
		snprintf(name, sizeof(name), "disk.%.63s.write_bytes", dev);
		sink(ctx, name, "bytes", (double)wrs * 512);
		n++;
	}
	fclose(f);
	return 0;
}

static int proc_sample(void *state, dev_sink_fn sink, void *ctx, const char **why)
{
	struct proc *p = state;
	int bad = 0;
	if (sample_cpu(p, sink, ctx)) {
		bad++;
		*why = "cannot read /proc/stat";
	}
	if (sample_mem(p, sink, ctx)) {
		bad++;
		*why = "cannot read /proc/meminfo";
	}
	if (sample_load(p, sink, ctx)) {
		bad++;
		*why = "cannot read /proc/loadavg";
	}
	if (sample_net(p, sink, ctx)) {
		bad++;
		*why = "cannot read /proc/net/dev";
	}
	if (sample_disks(p, sink, ctx)) {
		bad++;
		*why = "cannot read /proc/diskstats";
	}
	return bad ? -1 : 0;
}

static void proc_close(void *state)
{
	free(state);
}

const struct dev_collector_ops dev_coll_proc = {"proc", proc_open, proc_sample, proc_close};
