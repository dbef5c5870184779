/*
 * echo-rtt: minimal closed-loop round-trip load client for uppercase line
 * echo servers (TCP or UDP).  Reference tool: the numbers it prints are
 * what a lean C client sees; compare other clients/servers against it.
 *
 *   cc -O2 -pthread -o echo-rtt echo-rtt.c   (benches/compare-ref.sh does this)
 *
 *   echo-rtt [-u] [-H host] [-p port] [-n msgs] [-s size] [-c conns]
 *            [-w warmup] [-x] [-t timeout_s] [-L label]
 *
 * Each connection (thread) sends -n messages of -s lowercase letters
 * followed by '\n', and waits for the complete reply (size bytes + '\n')
 * before sending the next one (closed loop).  Every reply must equal the
 * uppercase of its request; others are counted as mismatches.  Each RTT is
 * taken with clock_gettime(CLOCK_MONOTONIC) around send..last byte received.
 * The first -w messages per connection are warm-up and not recorded.
 *
 *  -u  UDP: one datagram of size+1 bytes out, one datagram back.  A reply
 *      not received within -t seconds counts as "lost" (no RTT recorded).
 *  -x  send the payload WITHOUT the trailing '\n' (still expect size+1
 *      bytes back).  For servers that append '\n' to every chunk they read.
 *
 * Output: one line of JSON.  Latencies in microseconds, nearest-rank
 * percentiles over all recorded RTTs of all connections.  msgs_per_s is the
 * aggregate over all connections; mb_per_s = msgs_per_s * (size+1) / 1e6,
 * i.e. payload bytes per second in ONE direction (like iperf3).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NROT 26

static const char *g_host = "127.0.0.1";
static const char *g_port = "9000";
static const char *g_label = "";
static long g_n = 20000;
static long g_warm = 100;
static size_t g_size = 64;
static int g_conns = 1;
static int g_udp = 0;
static int g_nonl = 0;
static double g_timeout = 5.0;

static char *g_req[NROT]; /* rotated lowercase payloads + '\n' */
static char *g_exp[NROT]; /* expected uppercase replies + '\n' */
static pthread_barrier_t g_barrier;

typedef struct {
    int id;
    pthread_t th;
    uint64_t *lat;
    long nlat;
    long mismatches;
    long lost;
    int error;
    char errmsg[160];
} worker_t;

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int dial(char *err, size_t errlen) {
    struct addrinfo hints, *res, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = g_udp ? SOCK_DGRAM : SOCK_STREAM;
    int rc = getaddrinfo(g_host, g_port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "getaddrinfo: %s", gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    if (fd < 0) snprintf(err, errlen, "connect: %s", strerror(errno));
    freeaddrinfo(res);
    if (fd < 0) return -1;
    if (!g_udp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    struct timeval tv;
    tv.tv_sec = (time_t)g_timeout;
    tv.tv_usec = (suseconds_t)((g_timeout - (double)tv.tv_sec) * 1e6);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* TCP: one request/reply.  Returns 0 ok, -1 error.  Sets *match. */
static int tcp_roundtrip(int fd, const char *req, size_t reqlen, char *buf,
                         size_t replen, int *match, const char *exp) {
    size_t sent = 0, got = 0;
    while (sent < reqlen) {
        ssize_t k = send(fd, req + sent, reqlen - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0) { sent += (size_t)k; continue; }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* send buffer full: drain replies so the server never blocks */
            struct pollfd p = {fd, POLLOUT | (got < replen ? POLLIN : 0), 0};
            if (poll(&p, 1, (int)(g_timeout * 1000)) <= 0) return -1;
            if ((p.revents & POLLIN) && got < replen) {
                ssize_t r = recv(fd, buf + got, replen - got, MSG_DONTWAIT);
                if (r == 0) { errno = ECONNRESET; return -1; }
                if (r > 0) got += (size_t)r;
            }
            continue;
        }
        return -1;
    }
    while (got < replen) {
        ssize_t r = recv(fd, buf + got, replen - got, 0);
        if (r > 0) { got += (size_t)r; continue; }
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) errno = ECONNRESET;
        return -1;
    }
    *match = memcmp(buf, exp, replen) == 0;
    return 0;
}

static void *worker(void *arg) {
    worker_t *w = (worker_t *)arg;
    size_t reqlen = g_nonl ? g_size : g_size + 1;
    size_t replen = g_size + 1;
    char *buf = malloc(replen + 16);
    int fd = dial(w->errmsg, sizeof w->errmsg);
    if (fd < 0) w->error = 1;

    long total = g_warm + g_n;
    int started = 0;
    for (long i = 0; i < total && !w->error; i++) {
        if (i == g_warm) { pthread_barrier_wait(&g_barrier); started = 1; }
        const char *req = g_req[(i + w->id) % NROT];
        const char *exp = g_exp[(i + w->id) % NROT];
        int match = 0;
        uint64_t t0 = now_ns(), t1;
        if (!g_udp) {
            if (tcp_roundtrip(fd, req, reqlen, buf, replen, &match, exp) < 0) {
                snprintf(w->errmsg, sizeof w->errmsg, "tcp msg %ld: %s", i,
                         (errno == EAGAIN || errno == EWOULDBLOCK) ? "timeout: no complete reply"
                                                                    : strerror(errno));
                w->error = 1;
                break;
            }
            t1 = now_ns();
        } else {
            if (send(fd, req, reqlen, 0) < 0) {
                snprintf(w->errmsg, sizeof w->errmsg, "udp send %ld: %s", i, strerror(errno));
                w->error = 1;
                break;
            }
            ssize_t r = recv(fd, buf, replen + 16, 0);
            t1 = now_ns();
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    if (i >= g_warm) w->lost++;
                    continue;
                }
                snprintf(w->errmsg, sizeof w->errmsg, "udp recv %ld: %s", i, strerror(errno));
                w->error = 1;
                break;
            }
            match = (size_t)r == replen && memcmp(buf, exp, replen) == 0;
        }
        if (i >= g_warm) {
            w->lat[w->nlat++] = t1 - t0;
            if (!match) w->mismatches++;
        } else if (!match) {
            w->mismatches++;
        }
    }
    if (!started) pthread_barrier_wait(&g_barrier); /* never leave others hanging */
    if (fd >= 0) close(fd);
    free(buf);
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *v, long n, double p) {
    if (n == 0) return 0.0;
    long idx = (long)((p / 100.0) * (double)n + 0.999999999) - 1;
    if (idx < 0) idx = 0;
    if (idx >= n) idx = n - 1;
    return (double)v[idx] / 1000.0;
}

static void usage(const char *a0) {
    fprintf(stderr,
            "usage: %s [-u] [-H host] [-p port] [-n msgs/conn] [-s size] [-c conns]\n"
            "          [-w warmup/conn] [-x] [-t timeout_s] [-L label]\n",
            a0);
    exit(2);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "uH:p:n:s:c:w:xt:L:h")) != -1) {
        switch (opt) {
        case 'u': g_udp = 1; break;
        case 'H': g_host = optarg; break;
        case 'p': g_port = optarg; break;
        case 'n': g_n = atol(optarg); break;
        case 's': g_size = (size_t)atol(optarg); break;
        case 'c': g_conns = atoi(optarg); break;
        case 'w': g_warm = atol(optarg); break;
        case 'x': g_nonl = 1; break;
        case 't': g_timeout = atof(optarg); break;
        case 'L': g_label = optarg; break;
        default: usage(argv[0]);
        }
    }
    if (g_n <= 0 || g_conns <= 0 || g_size == 0 || g_warm < 0) usage(argv[0]);
    if (g_udp && g_size + 1 > 65507) { fprintf(stderr, "UDP size too large\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);

    for (int r = 0; r < NROT; r++) {
        g_req[r] = malloc(g_size + 1);
        g_exp[r] = malloc(g_size + 1);
        for (size_t j = 0; j < g_size; j++) {
            char c = (char)('a' + (int)((j + (size_t)r) % 26));
            g_req[r][j] = c;
            g_exp[r][j] = (char)(c - 'a' + 'A');
        }
        g_req[r][g_size] = '\n';
        g_exp[r][g_size] = '\n';
    }

    worker_t *ws = calloc((size_t)g_conns, sizeof *ws);
    pthread_barrier_init(&g_barrier, NULL, (unsigned)g_conns + 1);
    for (int i = 0; i < g_conns; i++) {
        ws[i].id = i;
        ws[i].lat = malloc(sizeof(uint64_t) * (size_t)g_n);
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 256 * 1024);
        if (pthread_create(&ws[i].th, &at, worker, &ws[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
        pthread_attr_destroy(&at);
    }
    pthread_barrier_wait(&g_barrier);
    uint64_t t_start = now_ns();
    for (int i = 0; i < g_conns; i++) pthread_join(ws[i].th, NULL);
    uint64_t t_end = now_ns();

    long n = 0, mism = 0, lost = 0, errs = 0;
    for (int i = 0; i < g_conns; i++) {
        n += ws[i].nlat;
        mism += ws[i].mismatches;
        lost += ws[i].lost;
        if (ws[i].error) {
            errs++;
            fprintf(stderr, "conn %d: %s\n", i, ws[i].errmsg);
        }
    }
    uint64_t *all = malloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
    long k = 0;
    double sum = 0;
    for (int i = 0; i < g_conns; i++)
        for (long j = 0; j < ws[i].nlat; j++) { all[k++] = ws[i].lat[j]; sum += (double)ws[i].lat[j]; }
    qsort(all, (size_t)n, sizeof(uint64_t), cmp_u64);

    double secs = (double)(t_end - t_start) / 1e9;
    double mps = secs > 0 ? (double)n / secs : 0.0;
    printf("{\"label\":\"%s\",\"proto\":\"%s\",\"host\":\"%s\",\"port\":\"%s\",\"conns\":%d,"
           "\"size\":%zu,\"msgs\":%ld,\"warmup_per_conn\":%ld,\"mismatches\":%ld,\"lost\":%ld,"
           "\"errors\":%ld,\"elapsed_s\":%.3f,\"msgs_per_s\":%.0f,\"mb_per_s\":%.2f,"
           "\"min_us\":%.1f,\"mean_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
           "\"p999_us\":%.1f,\"max_us\":%.1f}\n",
           g_label, g_udp ? "udp" : "tcp", g_host, g_port, g_conns, g_size, n, g_warm, mism,
           lost, errs, secs, mps, mps * (double)(g_size + 1) / 1e6,
           n ? (double)all[0] / 1000.0 : 0.0, n ? sum / (double)n / 1000.0 : 0.0,
           pct_us(all, n, 50), pct_us(all, n, 90), pct_us(all, n, 99), pct_us(all, n, 99.9),
           n ? (double)all[n - 1] / 1000.0 : 0.0);
    return (errs || mism) ? 1 : 0;
}
