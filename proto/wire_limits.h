/* wire_limits.h - hard limits on everything a peer controls. Decoders check each one before
 * allocating; encoders refuse to produce what a decoder would reject. */
#ifndef WIRE_LIMITS_H
#define WIRE_LIMITS_H

#define WIRE_VERSION 1u

#define WIRE_ID_MAX 64          /* device id / CN: [A-Za-z0-9_-]{1,64} */
#define WIRE_SIG_LEN 64         /* Ed25519 signature */
#define WIRE_PUBKEY_LEN 32      /* Ed25519 public key */

#define WIRE_MAX_ENVELOPE (256 * 1024) /* whole envelope; the broker's max_packet_size is above */
#define WIRE_MAX_BODY (WIRE_MAX_ENVELOPE - 256)
#define WIRE_MAX_UNKNOWN_FIELDS 8      /* unknown fields skipped per message (forward compat) */

/* Birth */
#define WIRE_MAX_AGENT_VERSION 64
#define WIRE_BOOT_ID_LEN 16
#define WIRE_MAX_CERT_PEM 8192
#define WIRE_MAX_METRICS 4096
#define WIRE_MAX_METRIC_NAME 128
#define WIRE_MAX_UNIT 32
#define WIRE_MAX_CAUSE 128

/* Batch */
#define WIRE_MAX_ROWS 4096
#define WIRE_MAX_COLS 4096
#define WIRE_MAX_CELLS 65536
#define WIRE_MAX_DROPPED 64
#define WIRE_MAX_METRIC_ID WIRE_MAX_METRICS /* ids 1.., as a catalog hands them out: this
						     * also bounds what a device can make a
						     * bridge create (placeholder metrics) */
#define WIRE_MAX_SCALE 18       /* |decimal exponent| */
#define WIRE_SCALE_RAW 127      /* column holds IEEE-754 bits */

/* Ack */
#define WIRE_MAX_ACK_RANGES 256

/* Tasks */
#define WIRE_MAX_TASKS 32
#define WIRE_MAX_TASK_TYPE 32
#define WIRE_MAX_ARGS 16
#define WIRE_MAX_KEY 64
#define WIRE_MAX_VALUE 1024
#define WIRE_MAX_TEXT 1024      /* TaskResult.message */
#define WIRE_MAX_OUTPUT 64      /* TaskResult.output entries */

#endif
