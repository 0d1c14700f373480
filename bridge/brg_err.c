/* brg_err.c - text for the bridge error codes. */
#include <stddef.h>

#include "brg_err.h"

static const char *const texts[] = {
    "ok",
    "out of memory",
    "invalid argument",
    "shut down",
    "timed out",
    "store failure",
    "MQTT failure",
    "not found",
    "cannot read file",
    "wire library failure",
    "cannot start a thread",
};

const char *brg_strerror(int err)
{
	int i = -err;
	if (i < 0 || (size_t)i >= sizeof(texts) / sizeof(texts[0]))
		return "unknown error";
	return texts[i];
}
