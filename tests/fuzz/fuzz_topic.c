/* fuzz_topic.c - libFuzzer target: the topic parser and id rules, which the bridge runs on
 * every topic the broker delivers. What wire_topic_parse accepts must build back to the same
 * bytes, and what wire_id_check_n accepts must be 1-64 characters of [A-Za-z0-9_-]. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire_topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int id_char(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, so a read past the length is caught */
	char *in = malloc(size ? size : 1);
	if (!in)
		return 0;
	memcpy(in, data, size);

	if (wire_id_check_n(in, size) == WIRE_OK) {
		if (size < 1 || size > WIRE_ID_MAX)
			abort();
		for (size_t i = 0; i < size; i++)
			if (!id_char(data[i]))
				abort();
	}

	char id[WIRE_ID_MAX + 1], back[WIRE_TOPIC_MAX];
	enum wire_topic t;
	if (wire_topic_parse(in, size, id, &t) == WIRE_OK) {
		if (wire_topic_build(back, sizeof(back), t, id) != WIRE_OK ||
		    strlen(back) != size || memcmp(back, data, size))
			abort(); /* accepted a topic that is not the one it names */
	}
	free(in);
	return 0;
}
