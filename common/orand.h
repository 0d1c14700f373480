/* orand.h - a cheap pseudo-random stream for jitter (reconnect and resend delays). Never for
 * keys, nonces or anything secret: that is wolfCrypt's RNG. */
#ifndef ORAND_H
#define ORAND_H

#include <stdint.h>

/* A seed from /dev/urandom (the clock and pid if that fails); never 0. */
uint64_t orand_seed(void);

/* The next value of the stream in *state (xorshift64*); *state must not be 0. */
uint64_t orand_next(uint64_t *state);

#endif
