// SPDX-License-Identifier: Apache-2.0
/*
 * rategen.c — a constant-rate HTTP/1.1 load generator for the Sidelight benchmark (bench/run).
 *
 * Sends GET requests to 127.0.0.1:PORT at a fixed rate over C keep-alive connections, one
 * request in flight per connection (no pipelining), from one thread (epoll). Request i is due at
 * t0 + i/RATE whatever happened before it; if no connection is free at that moment it waits, and
 * its latency is still measured from its due time (coordinated omission accounted for, as wrk2
 * does). Only requests due in [t0 + WARMUP, t0 + DURATION) are recorded.
 *
 *   rategen -p PORT -r RATE -d SECONDS [-c CONNS=32] [-w WARMUP_S=1] [-u PATH=/]
 *
 * Prints one JSON object on stdout:
 *   rate, conns, seconds (measured window), due (requests due in the window), completed,
 *   errors (connection errors or closes with a request in flight), non2xx, unsent (due in the
 *   window but never sent before the end: the generator or the server could not keep up),
 *   late (completed after the end of the run, within the 2 s drain), achievedRps (recorded
 *   completions ÷ the time from the start of the window to the last of them, at least the window),
 *   p50Us p90Us p99Us p999Us maxUs meanUs (latency from due time to the end of the response),
 *   sentTotal and completedTotal (warm-up included: every request the server saw).
 * Exit 0 on success, 2 on bad usage, 1 if it cannot connect.
 *
 * Loopback only: the address is hard-wired to 127.0.0.1. Timer slack is set to 1 us so a
 * request is sent when due rather than up to 50 us later (Linux's default slack).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 16384

struct conn {
	int fd;
	int busy;
	uint64_t due; /* ns, monotonic */
	uint64_t idx; /* request number */
	size_t len;   /* bytes buffered */
	char buf[BUF_SIZE];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int open_conn(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

/* Length of a complete response at the start of buf, 0 if incomplete, -1 if unparseable. */
static long response_len(const char *buf, size_t len)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	const char *p;
	long head, body = 0;

	if (!end)
		return len >= BUF_SIZE ? -1 : 0;
	head = end - buf + 4;
	for (p = buf; p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
		if (*p == '\n')
			p++;
		if ((size_t)(end - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) {
			body = strtol(p + 15, NULL, 10);
			break;
		}
	}
	if (head + body > BUF_SIZE)
		return -1;
	return (size_t)(head + body) <= len ? head + body : 0;
}

int main(int argc, char **argv)
{
	int port = 0, nconns = 32, opt;
	double rate = 0, seconds = 0, warmup = 1;
	const char *path = "/";

	while ((opt = getopt(argc, argv, "p:r:d:c:w:u:")) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 'r': rate = atof(optarg); break;
		case 'd': seconds = atof(optarg); break;
		case 'c': nconns = atoi(optarg); break;
		case 'w': warmup = atof(optarg); break;
		case 'u': path = optarg; break;
		default: goto usage;
		}
	}
	if (port <= 0 || port > 65535 || rate <= 0 || seconds <= 0 || nconns <= 0 || nconns > 4096 ||
	    warmup < 0 || warmup >= seconds)
		goto usage;

	char req[512];
	int reqlen = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
	if (reqlen <= 0 || (size_t)reqlen >= sizeof(req))
		goto usage;

	struct conn *conns = calloc((size_t)nconns, sizeof(*conns));
	int *freelist = calloc((size_t)nconns, sizeof(int));
	int nfree = 0;
	int ep = epoll_create1(EPOLL_CLOEXEC);

	for (int i = 0; i < nconns; i++) {
		conns[i].fd = open_conn(port);
		if (conns[i].fd < 0) {
			fprintf(stderr, "rategen: connect 127.0.0.1:%d: %s\n", port, strerror(errno));
			return 1;
		}
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
		epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
		freelist[nfree++] = i;
	}

	/* 1 us of timer slack (default 50 us): sends start on time, not up to 50 us late */
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
	const double interval = 1e9 / rate;
	const uint64_t total = (uint64_t)(rate * seconds);
	const uint64_t first_recorded = (uint64_t)(rate * warmup);
	uint64_t *lat = calloc(total + 1, sizeof(uint64_t));
	uint64_t nlat = 0, errors = 0, non2xx = 0, late = 0, sent = 0, inflight = 0, done_total = 0;
	uint64_t last_done = 0; /* completion time of the last recorded request */
	const uint64_t t0 = now_ns() + 10000000ull; /* start 10 ms from now */
	const uint64_t t_end = t0 + (uint64_t)(seconds * 1e9);
	const uint64_t t_drain = t_end + 2000000000ull;
	struct epoll_event evs[256];

	for (;;) {
		uint64_t now = now_ns();

		/* send everything due, as long as a connection is free */
		while (sent < total && nfree > 0 && t0 + (uint64_t)((double)sent * interval) <= now) {
			struct conn *c = &conns[freelist[--nfree]];

			c->due = t0 + (uint64_t)((double)sent * interval);
			c->idx = sent;
			c->busy = 1;
			c->len = 0;
			sent++;
			inflight++;
			if (write(c->fd, req, (size_t)reqlen) != reqlen) { /* tiny request: all or error */
				errors++;
				inflight--;
				c->busy = 0;
				close(c->fd);
				c->fd = open_conn(port);
				if (c->fd < 0)
					return 1;
				struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)(c - conns) };
				epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
				freelist[nfree++] = (int)(c - conns);
			}
		}
		if (sent >= total && inflight == 0)
			break;
		if (now >= t_drain)
			break;

		/* wait until the next request is due (if a connection is free) or a response arrives */
		struct timespec to;
		uint64_t wait_ns = 10000000ull;
		if (sent < total && nfree > 0) {
			uint64_t next = t0 + (uint64_t)((double)sent * interval);
			wait_ns = next > now ? next - now : 0;
		}
		to.tv_sec = (time_t)(wait_ns / 1000000000ull);
		to.tv_nsec = (long)(wait_ns % 1000000000ull);
		int n = epoll_pwait2(ep, evs, 256, &to, NULL);
		if (n < 0 && errno != EINTR) {
			perror("rategen: epoll_pwait2");
			return 1;
		}
		now = now_ns();
		for (int k = 0; k < n; k++) {
			int i = (int)evs[k].data.u32;
			struct conn *c = &conns[i];
			ssize_t r = read(c->fd, c->buf + c->len, BUF_SIZE - c->len);

			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0) { /* closed or failed: reconnect, the request in flight is an error */
				if (c->busy) {
					errors++;
					inflight--;
				}
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				c->fd = open_conn(port);
				if (c->fd < 0) {
					fprintf(stderr, "rategen: reconnect: %s\n", strerror(errno));
					return 1;
				}
				struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
				epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
				c->busy = 0;
				c->len = 0;
				freelist[nfree++] = i;
				continue;
			}
			c->len += (size_t)r;
			if (!c->busy) { /* bytes nobody asked for */
				errors++;
				c->len = 0;
				continue;
			}
			long rl = response_len(c->buf, c->len);
			if (rl == 0)
				continue;
			if (rl < 0 || (size_t)rl != c->len) {
				errors++;
			} else {
				done_total++;
				if (c->len < 12 || c->buf[9] != '2')
					non2xx++;
				if (c->idx >= first_recorded) {
					lat[nlat++] = now - c->due;
					last_done = now;
					if (now > t_end)
						late++;
				}
			}
			c->busy = 0;
			c->len = 0;
			inflight--;
			freelist[nfree++] = i;
		}
	}

	uint64_t due = total - first_recorded;
	uint64_t unsent = total - sent;
	double window = seconds - warmup;
	/* achieved rate: recorded completions over the time they took, the drain included */
	uint64_t w_start = t0 + (uint64_t)(warmup * 1e9);
	double span = (double)((last_done > t_end ? last_done : t_end) - w_start) / 1e9;
	double mean = 0;

	qsort(lat, nlat, sizeof(uint64_t), cmp_u64);
	for (uint64_t i = 0; i < nlat; i++)
		mean += (double)lat[i];
	mean = nlat ? mean / (double)nlat : 0;
#define PCT(p) (nlat ? (double)lat[(uint64_t)((double)(nlat - 1) * (p))] / 1e3 : 0.0)
	printf("{\"rate\":%.1f,\"conns\":%d,\"seconds\":%.3f,\"due\":%llu,\"completed\":%llu,\"errors\":%llu,"
	       "\"non2xx\":%llu,\"unsent\":%llu,\"late\":%llu,\"achievedRps\":%.1f,\"p50Us\":%.1f,\"p90Us\":%.1f,"
	       "\"p99Us\":%.1f,\"p999Us\":%.1f,\"maxUs\":%.1f,\"meanUs\":%.1f,\"sentTotal\":%llu,\"completedTotal\":%llu}\n",
	       rate, nconns, window, (unsigned long long)due, (unsigned long long)nlat,
	       (unsigned long long)errors, (unsigned long long)non2xx, (unsigned long long)unsent,
	       (unsigned long long)late, (double)nlat / span, PCT(0.50), PCT(0.90), PCT(0.99),
	       PCT(0.999), nlat ? (double)lat[nlat - 1] / 1e3 : 0.0, mean / 1e3, (unsigned long long)sent,
	       (unsigned long long)done_total);
	return 0;

usage:
	fprintf(stderr, "usage: rategen -p PORT -r RATE -d SECONDS [-c CONNS=32] [-w WARMUP_S=1] [-u PATH=/]\n");
	return 2;
}
