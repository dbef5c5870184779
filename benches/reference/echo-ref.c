/*
 * echo-ref: minimal uppercase echo server, the "physical limit" stand-in
 * for a line echo server on this kernel.
 *
 *   cc -O2 -pthread -o echo-ref echo-ref.c   (benches/compare-ref.sh does this)
 *
 *   echo-ref [-b bind_addr] [-p port] [-m thread|epoll] [-t threads] [-l] [-u]
 *
 *  -m thread  (default) one blocking thread per TCP connection:
 *             read() -> uppercase ASCII -> write() all, repeat.
 *  -m epoll   -t N threads (default 2), each with its own SO_REUSEPORT
 *             listener and level-triggered epoll; sockets stay blocking,
 *             so a write to a client that stops reading stalls that thread
 *             (fine for closed-loop load; this is a reference, not a product).
 *  -l         line mode: only write back complete lines (up to the last
 *             '\n' seen), keeping a partial line buffered -- what a server
 *             that frames by '\n' does.  Default is stream mode: every byte
 *             read is uppercased and written back at once (same output).
 *  -u         also serve UDP on the same port: each datagram is uppercased
 *             and sent back to its sender (one thread).
 *
 * Default bind 127.0.0.1, port 9000.  Runs until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF (64 * 1024)
#define LINE_MAX_BUF (1024 * 1024)

static const char *g_bind = "127.0.0.1";
static const char *g_port = "9000";
static int g_line = 0;
static int g_threads = 2;

static inline void upper(char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        p[i] = (char)((unsigned)(c - 'a') < 26u ? c - 32 : c);
    }
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Per-connection state (used by both modes). */
typedef struct {
    int fd;
    char *buf;
    size_t cap, len; /* line mode: buffered bytes not yet written */
} conn_t;

static conn_t *conn_new(int fd) {
    conn_t *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->cap = RBUF;
    c->buf = malloc(c->cap);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return c;
}

static void conn_free(conn_t *c) {
    close(c->fd);
    free(c->buf);
    free(c);
}

/* One read + echo step. Returns 0 to keep going, -1 to close. */
static int conn_step(conn_t *c) {
    if (!g_line) {
        ssize_t n = recv(c->fd, c->buf, c->cap, 0);
        if (n <= 0) return (n < 0 && errno == EINTR) ? 0 : -1;
        upper(c->buf, (size_t)n);
        return write_all(c->fd, c->buf, (size_t)n);
    }
    if (c->len == c->cap) {
        if (c->cap < LINE_MAX_BUF) {
            c->cap *= 2;
            c->buf = realloc(c->buf, c->cap);
        } else { /* over-long line: flush what we have */
            if (write_all(c->fd, c->buf, c->len) < 0) return -1;
            c->len = 0;
        }
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n <= 0) return (n < 0 && errno == EINTR) ? 0 : -1;
    upper(c->buf + c->len, (size_t)n);
    size_t old = c->len;
    c->len += (size_t)n;
    char *nl = memrchr(c->buf + old, '\n', (size_t)n);
    if (!nl) return 0;
    size_t out = (size_t)(nl - c->buf) + 1;
    if (write_all(c->fd, c->buf, out) < 0) return -1;
    memmove(c->buf, c->buf + out, c->len - out);
    c->len -= out;
    return 0;
}

static int make_listener(int type, int reuseport) {
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = type;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(g_bind, g_port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "getaddrinfo: %s\n", gai_strerror(rc));
        exit(1);
    }
    int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0) {
        perror("bind");
        exit(1);
    }
    if (type == SOCK_STREAM && listen(fd, 4096) < 0) {
        perror("listen");
        exit(1);
    }
    freeaddrinfo(res);
    return fd;
}

static void *conn_thread(void *arg) {
    conn_t *c = (conn_t *)arg;
    while (conn_step(c) == 0) {}
    conn_free(c);
    return NULL;
}

static void run_thread_mode(void) {
    int lfd = make_listener(SOCK_STREAM, 0);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 128 * 1024);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            perror("accept");
            continue;
        }
        pthread_t th;
        if (pthread_create(&th, &at, conn_thread, conn_new(fd)) != 0) {
            perror("pthread_create");
            close(fd);
        }
    }
}

static void *epoll_loop(void *arg) {
    (void)arg;
    int lfd = make_listener(SOCK_STREAM, 1);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            exit(1);
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = (conn_t *)evs[i].data.ptr;
            if (!c) {
                int fd = accept(lfd, NULL, NULL);
                if (fd < 0) continue;
                conn_t *nc = conn_new(fd);
                struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = nc};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                continue;
            }
            if (conn_step(c) < 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                conn_free(c);
            }
        }
    }
    return NULL;
}

static void *udp_loop(void *arg) {
    (void)arg;
    int fd = make_listener(SOCK_DGRAM, 0);
    static char buf[65536];
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&ss, &sl);
        if (n < 0) continue;
        upper(buf, (size_t)n);
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&ss, sl);
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = "thread";
    int udp = 0, opt;
    while ((opt = getopt(argc, argv, "b:p:m:t:luh")) != -1) {
        switch (opt) {
        case 'b': g_bind = optarg; break;
        case 'p': g_port = optarg; break;
        case 'm': mode = optarg; break;
        case 't': g_threads = atoi(optarg); break;
        case 'l': g_line = 1; break;
        case 'u': udp = 1; break;
        default:
            fprintf(stderr, "usage: %s [-b addr] [-p port] [-m thread|epoll] [-t n] [-l] [-u]\n",
                    argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (udp) {
        pthread_t th;
        pthread_create(&th, NULL, udp_loop, NULL);
    }
    if (strcmp(mode, "thread") == 0) {
        run_thread_mode();
    } else if (strcmp(mode, "epoll") == 0) {
        if (g_threads < 1) g_threads = 1;
        pthread_t *ths = calloc((size_t)g_threads, sizeof *ths);
        for (int i = 1; i < g_threads; i++) pthread_create(&ths[i], NULL, epoll_loop, NULL);
        epoll_loop(NULL);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
