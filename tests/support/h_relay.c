/* h_relay.c - see h_relay.h. */
#include "h_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"

#define MAX_PAIRS 16

struct pair {
	int cfd, sfd;       /* client side, server side; -1 when unused */
	long long close_at; /* cut: the server's answers are dropped until then */
};

struct h_relay {
	int lfd, port, upstream;
	pthread_t thread;
	pthread_mutex_t mu;
	int stop;
	char needle[64]; /* armed cut, "" if none */
	bool before, done;
	bool strand;                 /* the armed cut strands the server's side */
	int stranded[MAX_PAIRS];     /* server sides kept open, -1 if unused */
	int wait_ms;
	bool down; /* h_relay_down */
	struct pair p[MAX_PAIRS];
};

/* Writes give up after 2 s: a peer that stops reading cannot hold the relay's thread. */
static void bound_writes(int fd)
{
	struct timeval tv = {2, 0};
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int dial(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void drop(struct pair *p)
{
	close(p->cfd);
	close(p->sfd);
	p->cfd = p->sfd = -1;
	p->close_at = 0;
}

/* Keep p's server side open and silent; close its client side. */
static void strand(struct h_relay *r, struct pair *p)
{
	for (int i = 0; i < MAX_PAIRS; i++)
		if (r->stranded[i] < 0) {
			r->stranded[i] = p->sfd;
			p->sfd = -1;
			break;
		}
	drop(p);
}

/* Whether the chunk a client sent triggers the armed cut; 1 = cut before forwarding, 3 = and
 * strand the server's side. */
static int check_cut(struct h_relay *r, struct pair *p, const char *buf, size_t n)
{
	int cut = 0;
	pthread_mutex_lock(&r->mu);
	if (r->needle[0] && memmem(buf, n, r->needle, strlen(r->needle))) {
		r->needle[0] = '\0';
		r->done = true;
		cut = r->strand ? 3 : r->before ? 1 : 2;
		if (cut == 2)
			p->close_at = h_now_ms() + r->wait_ms;
	}
	pthread_mutex_unlock(&r->mu);
	return cut;
}

/* Move what is readable on from to the other side; false when the pair is finished. */
static bool pump(struct h_relay *r, struct pair *p, bool from_client)
{
	char buf[16384];
	ssize_t n = read(from_client ? p->cfd : p->sfd, buf, sizeof(buf));
	if (n <= 0)
		return false;
	if (!from_client && p->close_at)
		return true; /* cut: the answer is lost */
	int cut = from_client && !p->close_at ? check_cut(r, p, buf, (size_t)n) : 0;
	if (cut == 3)
		strand(r, p);
	if (cut == 1 || cut == 3)
		return false;
	int to = from_client ? p->sfd : p->cfd;
	for (ssize_t off = 0; off < n;) {
		ssize_t w = write(to, buf + off, (size_t)(n - off));
		if (w <= 0)
			return false;
		off += w;
	}
	return true;
}

/* down: the server is unreachable (h_relay_down): refuse the connection. */
static void accept_one(struct h_relay *r, bool down)
{
	int cfd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (cfd < 0)
		return;
	if (down) {
		close(cfd);
		return;
	}
	for (int i = 0; i < MAX_PAIRS; i++) {
		if (r->p[i].cfd >= 0)
			continue;
		int sfd = dial(r->upstream);
		if (sfd < 0)
			break;
		bound_writes(cfd);
		bound_writes(sfd);
		r->p[i] = (struct pair){cfd, sfd, 0};
		return;
	}
	close(cfd); /* no room or no upstream: refused */
}

static void *run(void *arg)
{
	struct h_relay *r = arg;
	for (;;) {
		pthread_mutex_lock(&r->mu);
		int stop = r->stop;
		bool down = r->down;
		pthread_mutex_unlock(&r->mu);
		if (stop)
			break;
		for (int i = 0; down && i < MAX_PAIRS; i++)
			if (r->p[i].cfd >= 0)
				drop(&r->p[i]);
		struct pollfd fds[1 + 2 * MAX_PAIRS];
		int who[1 + 2 * MAX_PAIRS], nf = 0;
		fds[nf] = (struct pollfd){.fd = r->lfd, .events = POLLIN};
		who[nf++] = -1;
		for (int i = 0; i < MAX_PAIRS; i++) {
			if (r->p[i].cfd < 0)
				continue;
			if (r->p[i].close_at && h_now_ms() >= r->p[i].close_at) {
				drop(&r->p[i]);
				continue;
			}
			fds[nf] = (struct pollfd){.fd = r->p[i].cfd, .events = POLLIN};
			who[nf++] = 2 * i;
			fds[nf] = (struct pollfd){.fd = r->p[i].sfd, .events = POLLIN};
			who[nf++] = 2 * i + 1;
		}
		if (poll(fds, (nfds_t)nf, 20) <= 0)
			continue;
		for (int k = 0; k < nf; k++) {
			if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (who[k] < 0) {
				accept_one(r, down);
				continue;
			}
			struct pair *p = &r->p[who[k] / 2];
			if (p->cfd >= 0 && !pump(r, p, who[k] % 2 == 0) && p->cfd >= 0)
				drop(p);
		}
	}
	return NULL;
}

struct h_relay *h_relay_start(int upstream_port)
{
	struct h_relay *r = calloc(1, sizeof(*r));
	if (!r)
		abort();
	r->upstream = upstream_port;
	for (int i = 0; i < MAX_PAIRS; i++)
		r->p[i].cfd = r->p[i].sfd = r->stranded[i] = -1;
	pthread_mutex_init(&r->mu, NULL);
	r->lfd = h_listen_loopback(16, &r->port);
	if (pthread_create(&r->thread, NULL, run, r)) {
		perror("h_relay_start");
		abort();
	}
	return r;
}

int h_relay_port(const struct h_relay *r)
{
	return r->port;
}

static void arm(struct h_relay *r, const char *needle, bool before, int wait_ms, bool strand)
{
	pthread_mutex_lock(&r->mu);
	snprintf(r->needle, sizeof(r->needle), "%s", needle);
	r->strand = strand;
	r->before = before;
	r->wait_ms = wait_ms;
	r->done = false;
	pthread_mutex_unlock(&r->mu);
}

void h_relay_cut_on(struct h_relay *r, const char *needle, bool before, int wait_ms)
{
	arm(r, needle, before, wait_ms, false);
}

void h_relay_strand_on(struct h_relay *r, const char *needle)
{
	arm(r, needle, true, 0, true);
}

void h_relay_down(struct h_relay *r, bool down)
{
	pthread_mutex_lock(&r->mu);
	r->down = down;
	pthread_mutex_unlock(&r->mu);
}

bool h_relay_cut_done(struct h_relay *r)
{
	pthread_mutex_lock(&r->mu);
	bool done = r->done;
	pthread_mutex_unlock(&r->mu);
	return done;
}

void h_relay_free(struct h_relay *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = 1;
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	for (int i = 0; i < MAX_PAIRS; i++) {
		if (r->p[i].cfd >= 0)
			drop(&r->p[i]);
		if (r->stranded[i] >= 0)
			close(r->stranded[i]);
	}
	close(r->lfd);
	pthread_mutex_destroy(&r->mu);
	free(r);
}
