/* wire_task.c - the task arguments both ends agree on. */
#include <string.h>

#include "wire_task.h"

const char *const wire_set_config_keys[] = {
    "sample_interval", "batch_interval", "batch_max_readings", "poll_interval", "log_level", NULL};

int wire_set_config_key_ok(const char *key)
{
	for (int i = 0; key && wire_set_config_keys[i]; i++)
		if (!strcmp(key, wire_set_config_keys[i]))
			return 1;
	return 0;
}
