/* brg_verify.h - the checks of docs/PROTOCOL.md section 5 that need no transaction: topic,
 * size, envelope, kind, id, enrolment (Birth certificate against CA and CRL), signature, body.
 * Replay and duplicate checks need the store and are the writer's (brg_commit.h). */
#ifndef BRG_VERIFY_H
#define BRG_VERIFY_H

#include <stddef.h>

#include "brg_item.h"
#include "brg_registry.h"
#include "wire_cert.h"

struct brg_verifier;

/* ca is taken over (freed with the verifier); reg is borrowed. */
int brg_verifier_new(struct brg_registry *reg, struct wire_ca *ca, struct brg_verifier **out);
void brg_verifier_free(struct brg_verifier *v); /* accepts NULL */

/* Swap in a newly loaded CA/CRL (taken over); the old one is freed once no check uses it. */
void brg_verifier_set_ca(struct brg_verifier *v, struct wire_ca *ca);

/* Which CA/CRL is current: 0 for the first, one more at each brg_verifier_set_ca. */
uint64_t brg_verifier_ca_gen(struct brg_verifier *v);

/* wire_ca_verify with the current CA (for re-checking enrolled certificates). */
int brg_verifier_check_cert(struct brg_verifier *v, const char *pem, size_t len,
                            struct wire_cert_info *info);

/* Judge one message. Takes msg (freed before return). *out is always set on BRG_OK: a
 * BIRTH/BATCH/POLL/RESULT/STATUS item for the writer, or a REJECT item with reason and detail.
 * Thread-safe: any number of verifier threads. BRG_ENOMEM only. */
int brg_verify(struct brg_verifier *v, struct brg_msg *msg, struct brg_item **out);

#endif
