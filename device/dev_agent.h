/* dev_agent.h - the outpost-device main loop: samples collectors, seals batches into the spool,
 * keeps the link up, uploads, applies acks, polls for tasks and runs them. This is the
 * program's top level, so it is the one device module that logs. */
#ifndef DEV_AGENT_H
#define DEV_AGENT_H

#include "dev_config.h"

struct dev_agent;

/* Load keys and certificates, open the spool and state. The config is borrowed and must
 * outlive the agent. The proxy variables (https_proxy, http_proxy, either case) leave the
 * process environment until dev_agent_free (dev_proxy.h). On failure err says why; the return
 * value is the exit code to use (2: configuration, 1: runtime). */
int dev_agent_new(struct dev_config *cfg, struct dev_agent **out, char *err, size_t errlen);

/* Run until dev_agent_stop(). Returns 0, or DEV_AGENT_RESTART if a `restart` task asked for
 * the process to be started again and no dev_agent_stop() came (a stop wins). */
#define DEV_AGENT_RESTART 75
int dev_agent_run(struct dev_agent *a);

/* After dev_agent_run returned DEV_AGENT_RESTART: the id of the `restart` task. */
uint64_t dev_agent_restart_task(const struct dev_agent *a);

/* Just before the process executes itself again for `restart` task task_id: record that in
 * <state_dir>/restarting, durably. The next agent reports the task succeeded only if it finds
 * this record; without it (a stop that came first, a failed execv, a crash, a power cut) the
 * task failed: "agent stopped before restarting". 0, or -1 with errno set. /
 * Remove the record (the execv failed). */
int dev_agent_restart_mark(const struct dev_config *cfg, uint64_t task_id);
void dev_agent_restart_unmark(const struct dev_config *cfg);

/* Async-signal-safe. */
void dev_agent_stop(struct dev_agent *a);
void dev_agent_reconnect(struct dev_agent *a);

/* Accepts NULL. Puts the proxy variables back into the environment (a `restart` task's
 * execv follows). */
void dev_agent_free(struct dev_agent *a);

#endif
