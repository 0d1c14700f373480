/* brg_item.c - allocation of pipeline messages and items. */
#include <stdlib.h>
#include <string.h>

#include "brg_item.h"
#include "wire_msg.h"

struct brg_msg *brg_msg_new(const char *topic, const void *payload, size_t len,
                            const char *resp_topic, const void *corr, size_t corr_len)
{
	size_t tl = strlen(topic), rl = resp_topic ? strlen(resp_topic) : 0;
	size_t size = sizeof(struct brg_msg) + tl + 1 + len + 1 + (resp_topic ? rl + 1 : 0) +
	              (corr ? corr_len : 0);
	struct brg_msg *m = malloc(size);
	if (!m)
		return NULL;
	memset(m, 0, sizeof(*m));
	char *p = (char *)(m + 1);
	m->topic = p;
	memcpy(p, topic, tl + 1);
	p += tl + 1;
	m->payload = (uint8_t *)p;
	if (len)
		memcpy(p, payload, len);
	p[len] = '\0';
	m->len = len;
	p += len + 1;
	if (resp_topic) {
		m->resp_topic = p;
		memcpy(p, resp_topic, rl + 1);
		p += rl + 1;
	}
	if (corr) {
		m->corr = (uint8_t *)p;
		memcpy(p, corr, corr_len);
		m->corr_len = corr_len;
	}
	m->cost = size;
	return m;
}

void brg_item_free(struct brg_item *it)
{
	if (!it)
		return;
	wire_batch_free(it->batch);
	wire_msg_free(it->birth);
	wire_msg_free(it->poll);
	wire_msg_free(it->result);
	free(it);
}
