/* wire_pb.c - bounds-checked protobuf wire reader and the schema-driven limit scanner. */
#include <stdlib.h>
#include <string.h>

#include "wire_internal.h"
#include "wire_limits.h"
#include "wire_utf8.h"

#define WIRE__SCAN_MAX_DEPTH 4
#define WIRE__SCAN_MAX_FIELDS 16

int wire__pb_varint(struct wire__pb *r, uint64_t *v)
{
	uint64_t x = 0;
	for (unsigned i = 0; i < 10; i++) {
		if (r->p >= r->end)
			return WIRE_ETRUNC;
		uint8_t b = *r->p++;
		if (i == 9 && b > 1)
			return WIRE_EMALFORMED; /* more than 64 bits */
		x |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*v = x;
			return WIRE_OK;
		}
	}
	return WIRE_EMALFORMED;
}

int wire__pb_tag(struct wire__pb *r, uint32_t *field, uint32_t *wiretype)
{
	uint64_t t;
	int rc = wire__pb_varint(r, &t);
	if (rc)
		return rc;
	/* protobuf field numbers are 1 .. 2^29-1 */
	if (t >> 32 || (t >> 3) == 0)
		return WIRE_EMALFORMED;
	*field = (uint32_t)(t >> 3);
	*wiretype = (uint32_t)(t & 7);
	return WIRE_OK;
}

int wire__pb_bytes(struct wire__pb *r, const uint8_t **data, size_t *len)
{
	uint64_t n;
	int rc = wire__pb_varint(r, &n);
	if (rc)
		return rc;
	if (n > (uint64_t)(r->end - r->p))
		return WIRE_ETRUNC;
	*data = r->p;
	*len = (size_t)n;
	r->p += n;
	return WIRE_OK;
}

int wire__pb_skip(struct wire__pb *r, uint32_t wiretype)
{
	uint64_t v;
	const uint8_t *d;
	size_t n;

	switch (wiretype) {
	case WIRE__WT_VARINT:
		return wire__pb_varint(r, &v);
	case WIRE__WT_I64:
		if (r->end - r->p < 8)
			return WIRE_ETRUNC;
		r->p += 8;
		return WIRE_OK;
	case WIRE__WT_LEN:
		return wire__pb_bytes(r, &d, &n);
	case WIRE__WT_I32:
		if (r->end - r->p < 4)
			return WIRE_ETRUNC;
		r->p += 4;
		return WIRE_OK;
	}
	return WIRE_EMALFORMED; /* groups (3, 4) and 6, 7 are not used by Outpost */
}

static const struct wire__field *find_field(const struct wire__schema *s, uint32_t num,
					    size_t *index)
{
	for (size_t i = 0; i < s->nfields; i++) {
		if (s->fields[i].num == num) {
			*index = i;
			return &s->fields[i];
		}
	}
	return NULL;
}

/* Number of varints in a packed run; the run must end on a complete varint. */
static int count_packed(const uint8_t *d, size_t n, uint64_t *count)
{
	uint64_t c = 0;
	unsigned run = 0;
	for (size_t i = 0; i < n; i++) {
		if (++run > 10)
			return WIRE_EMALFORMED;
		if (!(d[i] & 0x80)) {
			c++;
			run = 0;
		}
	}
	if (run)
		return WIRE_ETRUNC;
	*count = c;
	return WIRE_OK;
}

static int scan(const struct wire__schema *s, const uint8_t *buf, size_t len, unsigned depth,
		struct wire_diag *diag)
{
	struct wire__pb r = {buf, buf + len};
	uint64_t counts[WIRE__SCAN_MAX_FIELDS] = {0};
	unsigned unknown = 0;
	int rc;

	if (depth > WIRE__SCAN_MAX_DEPTH || s->nfields > WIRE__SCAN_MAX_FIELDS)
		return wire__fail(diag, WIRE_EMALFORMED, "%s: nested too deep", s->name);

	while (r.p < r.end) {
		uint32_t num, wt;
		size_t idx;
		rc = wire__pb_tag(&r, &num, &wt);
		if (rc)
			return wire__fail(diag, rc, "%s: bad field tag", s->name);
		const struct wire__field *f = find_field(s, num, &idx);
		if (!f) {
			if (++unknown > WIRE_MAX_UNKNOWN_FIELDS)
				return wire__fail(diag, WIRE_ELIMIT, "%s: more than %d unknown fields",
						  s->name, WIRE_MAX_UNKNOWN_FIELDS);
			rc = wire__pb_skip(&r, wt);
			if (rc)
				return wire__fail(diag, rc, "%s: unknown field %u is malformed", s->name,
						  num);
			continue;
		}

		uint64_t add = 1;
		const uint8_t *d = NULL;
		size_t n = 0;
		switch (f->type) {
		case WIRE__ST_VARINT: {
			uint64_t v;
			if (wt != WIRE__WT_VARINT)
				return wire__fail(diag, WIRE_EMALFORMED, "%s.%s: wrong wire type %u",
						  s->name, f->name, wt);
			rc = wire__pb_varint(&r, &v);
			break;
		}
		case WIRE__ST_PACKED:
			if (wt == WIRE__WT_VARINT) {
				uint64_t v;
				rc = wire__pb_varint(&r, &v);
			} else if (wt == WIRE__WT_LEN) {
				rc = wire__pb_bytes(&r, &d, &n);
				if (!rc)
					rc = count_packed(d, n, &add);
			} else {
				return wire__fail(diag, WIRE_EMALFORMED, "%s.%s: wrong wire type %u",
						  s->name, f->name, wt);
			}
			break;
		default: /* STRING, BYTES, MSG */
			if (wt != WIRE__WT_LEN)
				return wire__fail(diag, WIRE_EMALFORMED, "%s.%s: wrong wire type %u",
						  s->name, f->name, wt);
			rc = wire__pb_bytes(&r, &d, &n);
			if (rc)
				break;
			if (f->type != WIRE__ST_MSG && n > f->max_len)
				return wire__fail(diag, WIRE_ELIMIT, "%s.%s: %zu bytes, limit %u", s->name,
						  f->name, n, f->max_len);
			if (f->type == WIRE__ST_STRING && memchr(d, 0, n))
				return wire__fail(diag, WIRE_EMALFORMED, "%s.%s: NUL byte in text",
						  s->name, f->name);
			if (f->type == WIRE__ST_STRING && !wire_utf8_valid(d, n))
				return wire__fail(diag, WIRE_EMALFORMED, "%s.%s: not UTF-8 text",
						  s->name, f->name);
			if (f->type == WIRE__ST_MSG) {
				rc = scan(f->sub, d, n, depth + 1, diag);
				if (rc)
					return rc;
			}
			break;
		}
		if (rc)
			return wire__fail(diag, rc, "%s.%s: %s", s->name, f->name, wire_strerror(rc));
		counts[idx] += add;
		if (counts[idx] > f->max_count) {
			if (f->max_count == 1)
				return wire__fail(diag, WIRE_EMALFORMED, "%s.%s: field repeated", s->name,
						  f->name);
			return wire__fail(diag, WIRE_ELIMIT, "%s.%s: more than %u elements", s->name,
					  f->name, f->max_count);
		}
	}
	return WIRE_OK;
}

int wire__scan(const struct wire__schema *schema, const uint8_t *buf, size_t len,
	       struct wire_diag *diag)
{
	if (!buf && len)
		return WIRE_EINVAL;
	return scan(schema, buf, len, 0, diag);
}

static void *budget_alloc(void *data, size_t size)
{
	struct wire__budget *b = data;
	if (size > b->budget - b->used)
		return NULL;
	void *p = malloc(size);
	if (p)
		b->used += size;
	return p;
}

static void plain_free(void *data, void *ptr)
{
	(void)data;
	free(ptr);
}

void wire__budget_init(struct wire__budget *b, size_t input_len)
{
	b->alloc.alloc = budget_alloc;
	b->alloc.free = plain_free;
	b->alloc.allocator_data = b;
	b->used = 0;
	/* Worst case is an empty sub-message per 2 input bytes, each a ~64-byte struct. */
	b->budget = 48 * input_len + 64 * 1024;
}

static void *plain_alloc(void *data, size_t size)
{
	(void)data;
	return malloc(size);
}

ProtobufCAllocator wire__free_alloc = {plain_alloc, plain_free, NULL};
