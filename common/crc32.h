/* crc32.h - CRC-32 (IEEE 802.3, as zlib) for on-disk headers. */
#ifndef CRC32_H
#define CRC32_H

#include <stddef.h>
#include <stdint.h>

/* crc32(0, buf, len) starts a new checksum; pass the result back in to continue. */
uint32_t crc32_update(uint32_t crc, const void *buf, size_t len);

#endif
