/* wire_task.h - what a task may carry beyond the schema, agreed by both ends: the settings a
 * set_config task may change (docs/DEVICE.md "Tasks"). outpostctl checks them when a task is
 * queued; the device checks them again before applying anything. */
#ifndef WIRE_TASK_H
#define WIRE_TASK_H

/* The settings set_config may change remotely: operational tuning, never identity or trust.
 * NULL-terminated. */
extern const char *const wire_set_config_keys[];

/* 1 if key is one of wire_set_config_keys, else 0 (also for NULL). */
int wire_set_config_key_ok(const char *key);

#endif
