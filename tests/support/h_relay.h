/* h_relay.h - a TCP relay on loopback that can break a connection at a chosen moment: tests
 * of what a client does when its server's answer never arrives (a COMMIT whose outcome is
 * unknown), or when it cannot reach its server for a while. Plain TCP only; one thread; every
 * connection through it is relayed both ways. */
#ifndef H_RELAY_H
#define H_RELAY_H

#include <stdbool.h>

struct h_relay;

/* Listen on a free 127.0.0.1 port and relay each connection to 127.0.0.1:upstream_port.
 * Aborts on failure. */
struct h_relay *h_relay_start(int upstream_port);

int h_relay_port(const struct h_relay *r);

/* Arm one cut: the next chunk a client sends that contains needle ends its connection.
 * before: the chunk is not forwarded. Otherwise it is, the server's answer is thrown away,
 * and both sides are closed wait_ms later. */
void h_relay_cut_on(struct h_relay *r, const char *needle, bool before, int wait_ms);

/* Arm one strand: the next chunk a client sends that contains needle is not forwarded, the
 * client's side is closed and the server's is kept open, silent, until h_relay_free(): to the
 * server the client is still there (a connection that vanished without a FIN, as when a cable
 * is cut). */
void h_relay_strand_on(struct h_relay *r, const char *needle);

/* true once an armed cut (or strand) has happened. */
bool h_relay_cut_done(struct h_relay *r);

/* down: close every connection (within 20 ms) and refuse new ones (the server is unreachable) until
 * called again with false. */
void h_relay_down(struct h_relay *r, bool down);

/* Close every connection and stop. Accepts NULL. */
void h_relay_free(struct h_relay *r);

#endif
