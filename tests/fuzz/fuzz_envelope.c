/* fuzz_envelope.c - libFuzzer target: envelope decode + verify, then the body decoder of its
 * kind; also every body decoder directly on the raw input. Nothing may crash, leak or read out
 * of bounds, whatever the bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_key.h"
#include "wire_batch.h"
#include "wire_env.h"
#include "wire_msg.h"

static struct wire_pubkey pub;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct wire_key *k = NULL;
	(void)argc;
	(void)argv;
	if (wire_key_parse(fuzz_key_pem, sizeof(fuzz_key_pem) - 1, &k) != WIRE_OK)
		abort();
	wire_key_public(k, &pub);
	wire_key_free(k);
	return 0;
}

static void decode_body(uint32_t kind, const uint8_t *body, size_t len)
{
	struct wire_diag diag;
	if (kind == WIRE_KIND_BATCH) {
		struct wire_batch *b = NULL;
		if (wire_batch_decode(body, len, &b, &diag) == WIRE_OK)
			wire_batch_free(b);
		return;
	}
	ProtobufCMessage *m = NULL;
	if (wire_msg_decode(kind, body, len, &m, &diag) == WIRE_OK)
		wire_msg_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_env env;
	struct wire_diag diag;

	if (wire_env_decode(data, size, &env, &diag) == WIRE_OK) {
		(void)wire_env_verify(&env, &pub);
		decode_body(env.kind, env.body, env.body_len);
	}
	if (size > 0)
		decode_body(1u + data[0] % WIRE_KIND_MAX, data + 1, size - 1);
	return 0;
}
