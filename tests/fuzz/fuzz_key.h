/* fuzz_key.h - a fixed, public Ed25519 test key so that corpus envelopes verify. Not a secret:
 * it signs nothing but fuzz inputs. */
#ifndef FUZZ_KEY_H
#define FUZZ_KEY_H

static const char fuzz_key_pem[] = "-----BEGIN PRIVATE KEY-----\n"
				   "MC4CAQAwBQYDK2VwBCIEIHazflRjI7x37FT475vadj01hx8YMI6YBs3a0yECS78c\n"
				   "-----END PRIVATE KEY-----\n";

#endif
