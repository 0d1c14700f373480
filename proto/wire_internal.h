/* wire_internal.h - helpers shared between wire_* modules; not part of the public API. */
#ifndef WIRE_INTERNAL_H
#define WIRE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "wire_err.h"

/* Fill diag (if any) with a printf-style message and return err. */
int wire__fail(struct wire_diag *diag, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* --- protobuf wire reader (bounds-checked, never reads past end) --- */
enum { WIRE__WT_VARINT = 0, WIRE__WT_I64 = 1, WIRE__WT_LEN = 2, WIRE__WT_I32 = 5 };

struct wire__pb {
	const uint8_t *p;
	const uint8_t *end;
};

int wire__pb_varint(struct wire__pb *r, uint64_t *v);
int wire__pb_tag(struct wire__pb *r, uint32_t *field, uint32_t *wiretype);
int wire__pb_bytes(struct wire__pb *r, const uint8_t **data, size_t *len);
int wire__pb_skip(struct wire__pb *r, uint32_t wiretype);

/* --- limit scanner: walks raw protobuf against a schema before anything is allocated --- */
enum wire__st {
	WIRE__ST_VARINT, /* singular or repeated (unpacked) varint scalar */
	WIRE__ST_STRING, /* length-delimited text, no NUL byte */
	WIRE__ST_BYTES,  /* length-delimited bytes */
	WIRE__ST_MSG,    /* embedded message, scanned recursively */
	WIRE__ST_PACKED, /* repeated varint scalar, packed or not; max_count counts elements */
};

struct wire__schema;

struct wire__field {
	uint32_t num;
	uint8_t type;         /* enum wire__st */
	uint32_t max_count;   /* 1 for singular fields: a repeated singular field is refused */
	uint32_t max_len;     /* STRING/BYTES: max bytes */
	const struct wire__schema *sub;
	const char *name;
};

struct wire__schema {
	const char *name;
	const struct wire__field *fields;
	size_t nfields;
};

/* 0 if buf obeys the schema's counts and lengths, else WIRE_ETRUNC/EMALFORMED/ELIMIT. */
int wire__scan(const struct wire__schema *schema, const uint8_t *buf, size_t len,
	       struct wire_diag *diag);

/* Schemas of the messages in outpost.proto (wire_schema.c). */
extern const struct wire__schema wire__schema_birth;
extern const struct wire__schema wire__schema_batch;
extern const struct wire__schema wire__schema_ack;
extern const struct wire__schema wire__schema_task_poll;
extern const struct wire__schema wire__schema_task_list;
extern const struct wire__schema wire__schema_task_result;

/* protobuf-c allocator that refuses to hand out more than `budget` bytes in total: a second
 * line of defence behind wire__scan. */
struct wire__budget {
	ProtobufCAllocator alloc;
	size_t used;
	size_t budget;
};
void wire__budget_init(struct wire__budget *b, size_t input_len);

/* qsort comparator for uint32_t. */
int wire__cmp_u32(const void *a, const void *b);

/* Structural checks of a Batch (wire_batch.c), run by wire_msg_decode. */
int wire__batch_validate(const ProtobufCMessage *msg, struct wire_diag *diag);

/* Allocator used to free messages unpacked with a wire__budget (plain malloc/free). */
extern ProtobufCAllocator wire__free_alloc;

#endif
