// SPDX-License-Identifier: Apache-2.0
/*
 * sockpump.c — a syscall producer for the kernel → JS micro-benchmark (bench/micro/kernel-to-js.ts).
 *
 * Opens one TCP connection over loopback to itself (listen on 127.0.0.1:0, connect, accept) and
 * then, from one thread, repeats: write(SIZE bytes) on one end, read them back on the other.
 * Each iteration is two socket syscalls on a TCP fd, i.e. two records for Sidelight's probes.
 * The payload is an HTTP-looking request line padded with 'x', so captured bytes are realistic.
 *
 *   sockpump -n ITERATIONS [-s SIZE=100]     a fixed number of iterations
 *   sockpump -d SECONDS    [-s SIZE=100]     as many as fit in SECONDS
 *
 * Prints one JSON object: {"iterations":N,"syscalls":2N,"seconds":S}. Loopback only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	long iterations = -1, size = 100;
	double seconds = -1;
	int opt;

	while ((opt = getopt(argc, argv, "n:d:s:")) != -1) {
		switch (opt) {
		case 'n': iterations = atol(optarg); break;
		case 'd': seconds = atof(optarg); break;
		case 's': size = atol(optarg); break;
		default: goto usage;
		}
	}
	if ((iterations < 0) == (seconds < 0) || size < 16 || size > 65536)
		goto usage;

	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t salen = sizeof(sa);
	int one = 1;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) {
		perror("sockpump: listen");
		return 1;
	}
	int cfd = socket(AF_INET, SOCK_STREAM, 0);
	if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("sockpump: connect");
		return 1;
	}
	int sfd = accept(lfd, NULL, NULL);
	if (sfd < 0) {
		perror("sockpump: accept");
		return 1;
	}
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	char *out = malloc((size_t)size), *in = malloc((size_t)size);
	memset(out, 'x', (size_t)size);
	memcpy(out, "GET /pump HTTP/1.1\r\n", 20 < size ? 20 : (size_t)size);

	double t0 = now_s(), end = seconds > 0 ? t0 + seconds : 0;
	long n = 0;
	for (;;) {
		if (iterations >= 0 ? n >= iterations : ((n & 255) == 0 && now_s() >= end))
			break;
		if (write(cfd, out, (size_t)size) != size) {
			perror("sockpump: write");
			return 1;
		}
		for (long got = 0; got < size;) {
			ssize_t r = read(sfd, in + got, (size_t)(size - got));
			if (r <= 0) {
				perror("sockpump: read");
				return 1;
			}
			got += r;
		}
		n++;
	}
	double secs = now_s() - t0;
	close(cfd);
	close(sfd);
	close(lfd);
	printf("{\"iterations\":%ld,\"syscalls\":%ld,\"seconds\":%.3f}\n", n, 2 * n, secs);
	return 0;

usage:
	fprintf(stderr, "usage: sockpump (-n ITERATIONS | -d SECONDS) [-s SIZE=100]\n");
	return 2;
}
