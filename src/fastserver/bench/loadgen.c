/*
 * loadgen.c -- the fastserver bench's load generator.
 *
 * One thread, epoll, non-blocking sockets: it drives a server much faster
 * than a Python server can answer, so the bench measures the server, not
 * the client.  It measures operations per second and per-operation latency
 * (p50/p90/p99/max) over a measured window that follows a warm-up, and
 * prints one JSON line on stdout.  On stderr it prints "measure-start" and
 * "measure-end" lines at the edges of the measured window so that a parent
 * can sample the server's CPU time over exactly that window.
 *
 * Modes:
 *   tcp-conn  connect, send one line, read the whole reply (as long as the
 *             line, or until EOF), close; --concurrency connections in
 *             flight (default 8).  Latency includes connect.  The default
 *             line is "hello\n" (--size 6).
 *   tcp-rr    --concurrency persistent connections (default 1), each sends
 *             one line and waits for its echo before sending the next.
 *             After a warm-up, measurement starts only once every
 *             connection has completed one round trip.  --think-ms T:
 *             each connection waits T ms (up to about 1 ms more) after a
 *             reply before it sends the next line, so that a latency probe
 *             is light load instead of back-to-back requests.
 *   udp-rr    --concurrency datagrams in flight, one connected UDP socket
 *             each; every datagram carries a sequence number and waits for
 *             its echo; after --timeout-ms (default 200) it is resent
 *             ("lost" counts resends, "stale" late echoes of resent ones).
 *
 * Build and run (the bench does this itself, on first use, into its cache:
 * fastserver/bench/c_programs.py):
 *   cc -O2 -std=c99 -Wall -o loadgen loadgen.c
 *   loadgen --mode tcp-rr --addr 127.0.0.1:8000 --concurrency 50 \
 *           --size 64 --duration 3 --warmup 1
 *   loadgen --mode tcp-conn --addr /tmp/server.sock --ops 10000
 *
 * With --ops N the server sees exactly the warm-up's operations plus N: no
 * operation beyond the N-th is begun (with --warmup 0, exactly N).
 *
 * It never hangs: every operation has a timeout (--timeout-ms; a timed-out
 * TCP operation is an error and its connection is replaced, a UDP datagram
 * is resent, and given up as an error after 25 resends), and the whole run
 * has a global deadline (--deadline seconds, default warm-up + duration +
 * 15, or warm-up + 60 with --ops); hitting it sets "timed_out" and exit 3.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum mode { TCP_CONN, TCP_RR, UDP_RR };
enum state { ST_IDLE, ST_CONNECTING, ST_SENDING, ST_READING, ST_BACKOFF, ST_THINK };

#define MAX_CONCURRENCY 10000
#define MAX_SIZE (1 << 20)
#define UDP_MAX_RESENDS 25
#define SEQ_DIGITS 10
#define MAX_ERROR_MESSAGES 5

struct slot {
    int fd;
    int state;
    size_t sent, recvd;
    double t_start;     /* when the operation began */
    double t_deadline;  /* per-operation timeout (or end of a back-off) */
    unsigned seq;       /* udp: sequence number of the datagram in flight */
    int resends;        /* udp: resends of the current operation */
    int ready;          /* tcp-rr: completed at least one round trip */
    int busy;           /* an operation is in flight */
};

struct options {
    enum mode mode;
    const char *addr;
    long size;
    long concurrency;
    double duration;
    long ops;           /* > 0: stop after this many measured operations */
    double warmup;
    double timeout;     /* seconds */
    double deadline;    /* seconds from start, whole run */
    double think;       /* tcp-rr: seconds between a reply and the next send */
};

struct stats {
    uint32_t *lat;      /* latencies in microseconds, measured window only */
    size_t n, cap;
    long errors, errors_warmup, lost, stale;
    int measuring;
    long errors_printed;
};

static struct options opt;
static struct stats st;
static struct sockaddr_storage server_addr;
static socklen_t server_addrlen;
static int epfd;
static char *payload;   /* the request line */
static char *rbuf;      /* receive buffer */
static size_t rbuf_size;
static struct slot *slots;
static unsigned next_seq = 1;
static long inflight;   /* operations begun and not yet finished */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6
         + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* Count an error; print the first few so a broken setup is visible. */
static void error(const char *what, int err)
{
    if (st.measuring)
        st.errors++;
    else
        st.errors_warmup++;
    if (st.errors_printed++ < MAX_ERROR_MESSAGES)
        fprintf(stderr, "loadgen: %s: %s\n", what, err ? strerror(err) : "");
}

static void record(double latency)
{
    if (!st.measuring || (opt.ops > 0 && (long)st.n >= opt.ops))
        return;
    if (st.n == st.cap) {
        st.cap = st.cap ? st.cap * 2 : 65536;
        st.lat = realloc(st.lat, st.cap * sizeof *st.lat);
        if (!st.lat)
            die("out of memory");
    }
    double us = latency * 1e6;
    st.lat[st.n++] = us > 4e9 ? 4000000000u : (uint32_t)(us + 0.5);
}

/* ---- address and payload ------------------------------------------- */

static void parse_address(const char *addr, int udp)
{
    memset(&server_addr, 0, sizeof server_addr);
    if (strchr(addr, '/')) {
        struct sockaddr_un *un = (struct sockaddr_un *)&server_addr;
        if (udp)
            die("udp-rr needs host:port, not a Unix socket path");
        if (strlen(addr) >= sizeof un->sun_path)
            die("Unix socket path too long: %s", addr);
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, addr);
        server_addrlen = sizeof *un;
        return;
    }
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof host)
        die("address must be host:port or a Unix socket path: %s", addr);
    memcpy(host, addr, colon - addr);
    host[colon - addr] = '\0';
    struct addrinfo hints = {0}, *res;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = udp ? SOCK_DGRAM : SOCK_STREAM;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0)
        die("cannot resolve %s: %s", addr, gai_strerror(rc));
    memcpy(&server_addr, res->ai_addr, res->ai_addrlen);
    server_addrlen = res->ai_addrlen;
    freeaddrinfo(res);
}

/* A line of opt.size bytes ending in '\n'; udp puts a sequence number first. */
static void make_payload(void)
{
    payload = malloc(opt.size + SEQ_DIGITS + 1);
    rbuf_size = opt.size + 65536;
    rbuf = malloc(rbuf_size);
    if (!payload || !rbuf)
        die("out of memory");
    for (long i = 0; i < opt.size; i++)
        payload[i] = "abcdefghijklmnopqrstuvwxyz"[i % 26];
    if (opt.size >= 5 && opt.size < 26)
        memcpy(payload, "hello", 5);
    payload[opt.size - 1] = '\n';
}

/* ---- operations in flight ------------------------------------------- */

/* With --ops, begin no operation beyond those that complete the count, so
 * that the server sees exactly the warm-up's operations plus --ops. */
static int may_begin(void)
{
    return !(st.measuring && opt.ops > 0 && (long)st.n + inflight >= opt.ops);
}

static void op_begin(struct slot *s)
{
    if (!s->busy)
        inflight++;
    s->busy = 1;
}

static void op_end(struct slot *s)
{
    if (s->busy)
        inflight--;
    s->busy = 0;
}

/* ---- TCP ------------------------------------------------------------ */

static void close_slot(struct slot *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->state = ST_IDLE;
}

static void tcp_fail(struct slot *s, const char *what, int err)
{
    error(what, err);
    op_end(s);
    close_slot(s);
    s->ready = 0;
    s->state = ST_BACKOFF;            /* do not spin on a dead server */
    s->t_deadline = now() + 0.01;
}

static void tcp_begin_op(struct slot *s, double t)
{
    s->sent = s->recvd = 0;
    s->t_start = t;
    s->t_deadline = t + opt.timeout;
    s->state = ST_SENDING;
    op_begin(s);
}

static void tcp_connect(struct slot *s)
{
    int family = server_addr.ss_family;
    s->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        tcp_fail(s, "socket", errno);
        return;
    }
    if (family != AF_UNIX && opt.mode == TCP_RR) {  /* one write per connection otherwise */
        int one = 1;
        setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
                             .data.ptr = s};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
        tcp_fail(s, "epoll_ctl", errno);
        return;
    }
    tcp_begin_op(s, now());
    if (connect(s->fd, (struct sockaddr *)&server_addr, server_addrlen) == 0)
        return;                       /* ST_SENDING: the caller sends */
    if (errno == EINPROGRESS) {
        s->state = ST_CONNECTING;     /* wait for EPOLLOUT */
    } else if (errno == EAGAIN && family == AF_UNIX) {
        op_end(s);                    /* backlog full: not queued, retry soon */
        close_slot(s);
        s->state = ST_BACKOFF;
        s->t_deadline = now() + 0.001;
    } else {
        tcp_fail(s, "connect", errno);
    }
}

/* A reply is complete: record it and start the next operation, if any. */
static void tcp_complete(struct slot *s)
{
    double t = now();
    record(t - s->t_start);
    op_end(s);
    s->ready = 1;
    if (opt.mode == TCP_CONN)
        close_slot(s);
    if (!may_begin())
        s->state = ST_IDLE;           /* a tcp-rr connection stays open */
    else if (opt.mode == TCP_CONN)
        tcp_connect(s);
    else if (opt.think > 0) {
        s->state = ST_THINK;          /* tcp_check_timeout() sends the next */
        s->t_deadline = t + opt.think;
    } else
        tcp_begin_op(s, t);
}

/* Drive one connection as far as it goes without blocking (edge-triggered). */
static void tcp_advance(struct slot *s, uint32_t events)
{
    for (;;) {
        if (s->state == ST_CONNECTING) {
            if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                return;
            s->state = ST_SENDING;    /* send() reports a failed connect */
        }
        if (s->state == ST_SENDING) {
            ssize_t n = send(s->fd, payload + s->sent, opt.size - s->sent,
                             MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return;
                tcp_fail(s, "send", errno);
                return;
            }
            s->sent += n;
            if (s->sent < (size_t)opt.size)
                continue;
            s->state = ST_READING;
            return;                   /* the reply comes with an EPOLLIN edge */
        }
        if (s->state != ST_READING)
            return;
        if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
            return;
        ssize_t n = recv(s->fd, rbuf, rbuf_size, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            tcp_fail(s, "recv", errno);
            return;
        }
        if (n == 0) {
            if (opt.mode == TCP_CONN && s->recvd > 0) {
                tcp_complete(s);      /* a reply shorter than the request */
                return;
            }
            tcp_fail(s, s->recvd ? "connection closed in the middle of a reply"
                                 : "connection closed before a reply", 0);
            return;
        }
        s->recvd += n;
        if (s->recvd < (size_t)opt.size)
            continue;
        tcp_complete(s);
        if (s->state != ST_SENDING)
            return;
        events = EPOLLOUT;            /* send the next request now */
    }
}

static void tcp_start_slot(struct slot *s)
{
    tcp_connect(s);
    if (s->state == ST_SENDING)
        tcp_advance(s, EPOLLOUT);
}

static void tcp_check_timeout(struct slot *s, double t)
{
    if (s->state == ST_BACKOFF) {
        if (t >= s->t_deadline && may_begin())
            tcp_start_slot(s);
    } else if (s->state == ST_THINK) {
        if (t < s->t_deadline)
            return;
        if (!may_begin()) {
            s->state = ST_IDLE;
            return;
        }
        tcp_begin_op(s, t);
        tcp_advance(s, EPOLLOUT);
    } else if (s->busy && t >= s->t_deadline) {
        tcp_fail(s, "operation timed out", 0);
    }
}

/* Read what the server sends until EOF; 1 when the connection is done. */
static int tcp_drain_one(struct slot *s)
{
    for (;;) {
        ssize_t got = recv(s->fd, rbuf, rbuf_size, 0);
        if (got > 0)
            continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return 1;                     /* EOF, or an error: done either way */
    }
}

/*
 * After the run: half-close every connection and read until the server
 * closes too (up to a second), so that no reply in flight meets a closed
 * socket and the server sees a clean EOF instead of a reset.
 */
static void tcp_drain_all(void)
{
    int open = 0;
    for (long i = 0; i < opt.concurrency; i++) {
        struct slot *s = &slots[i];
        if (s->fd < 0)
            continue;
        if (s->state == ST_CONNECTING || shutdown(s->fd, SHUT_WR) < 0
                || tcp_drain_one(s))
            close_slot(s);
        else
            open++;
    }
    double end = now() + 1.0;
    struct epoll_event events[256];
    while (open > 0 && now() < end) {
        int n = epoll_wait(epfd, events, 256, 10);
        for (int i = 0; i < n; i++) {
            struct slot *s = events[i].data.ptr;
            if (s->fd >= 0 && tcp_drain_one(s)) {
                close_slot(s);
                open--;
            }
        }
    }
}

/* ---- UDP ------------------------------------------------------------ */

static void udp_send(struct slot *s)
{
    s->seq = next_seq++;
    char digits[SEQ_DIGITS + 1];
    snprintf(digits, sizeof digits, "%0*u", SEQ_DIGITS, s->seq % 1000000000u);
    memcpy(payload, digits, SEQ_DIGITS);
    s->t_deadline = now() + opt.timeout;
    if (send(s->fd, payload, opt.size, 0) < 0 && errno != EAGAIN
            && errno != ECONNREFUSED)
        error("udp send", errno);     /* the timeout resends it */
}

static void udp_begin_op(struct slot *s, double t)
{
    s->t_start = t;
    s->resends = 0;
    op_begin(s);
    udp_send(s);
}

/* An operation is over: begin the next one, if any. */
static void udp_next(struct slot *s, double t)
{
    op_end(s);
    if (may_begin())
        udp_begin_op(s, t);
}

static void udp_open(struct slot *s)
{
    s->fd = socket(server_addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0)
        die("socket: %s", strerror(errno));
    if (connect(s->fd, (struct sockaddr *)&server_addr, server_addrlen) < 0)
        die("udp connect: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    s->state = ST_READING;
    s->ready = 1;
    udp_begin_op(s, now());
}

static void udp_advance(struct slot *s)
{
    for (;;) {
        ssize_t n = recv(s->fd, rbuf, rbuf_size, 0);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNREFUSED)
                error("udp recv", errno);
            return;
        }
        char digits[SEQ_DIGITS + 1];
        memcpy(digits, rbuf, n < SEQ_DIGITS ? (size_t)n : SEQ_DIGITS);
        digits[n < SEQ_DIGITS ? n : SEQ_DIGITS] = '\0';
        if (!s->busy || n != opt.size
                || strtoul(digits, NULL, 10) != s->seq % 1000000000u) {
            st.stale += st.measuring;
            continue;
        }
        double t = now();
        record(t - s->t_start);
        udp_next(s, t);
    }
}

static void udp_check_timeout(struct slot *s, double t)
{
    if (!s->busy || t < s->t_deadline)
        return;
    if (s->resends++ >= UDP_MAX_RESENDS) {
        error("udp operation given up after resends", 0);
        udp_next(s, t);
        return;
    }
    st.lost += st.measuring;
    udp_send(s);
}

/* ---- the run -------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
        "usage: loadgen --mode tcp-conn|tcp-rr|udp-rr --addr HOST:PORT|PATH\n"
        "               [--size BYTES] [--concurrency N] [--duration S | --ops N]\n"
        "               [--warmup S] [--timeout-ms MS] [--deadline S]\n"
        "               [--think-ms MS (tcp-rr)]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    long timeout_ms = -1;
    opt.size = -1;
    opt.concurrency = -1;
    opt.duration = 3;
    opt.warmup = 1;
    opt.deadline = -1;
    int have_mode = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--mode")) {
            have_mode = 1;
            if (!strcmp(v, "tcp-conn")) opt.mode = TCP_CONN;
            else if (!strcmp(v, "tcp-rr")) opt.mode = TCP_RR;
            else if (!strcmp(v, "udp-rr")) opt.mode = UDP_RR;
            else usage();
        } else if (!strcmp(a, "--addr")) opt.addr = v;
        else if (!strcmp(a, "--size")) opt.size = atol(v);
        else if (!strcmp(a, "--concurrency")) opt.concurrency = atol(v);
        else if (!strcmp(a, "--duration")) opt.duration = atof(v);
        else if (!strcmp(a, "--ops")) opt.ops = atol(v);
        else if (!strcmp(a, "--warmup")) opt.warmup = atof(v);
        else if (!strcmp(a, "--timeout-ms")) timeout_ms = atol(v);
        else if (!strcmp(a, "--deadline")) opt.deadline = atof(v);
        else if (!strcmp(a, "--think-ms")) opt.think = atof(v) / 1000.0;
        else usage();
    }
    if (!have_mode || !opt.addr)
        usage();
    if (opt.size < 0)
        opt.size = opt.mode == TCP_CONN ? 6 : 64;
    if (opt.concurrency < 0)
        opt.concurrency = opt.mode == TCP_CONN ? 8 : opt.mode == UDP_RR ? 32 : 1;
    if (timeout_ms < 0)
        timeout_ms = opt.mode == UDP_RR ? 200 : 5000;
    opt.timeout = timeout_ms / 1000.0;
    if (opt.deadline < 0)
        opt.deadline = opt.warmup + (opt.ops > 0 ? 60 : opt.duration + 15);
    if (opt.size < 1 || opt.size > MAX_SIZE)
        die("--size must be 1..%d", MAX_SIZE);
    if (opt.mode == UDP_RR && opt.size < SEQ_DIGITS + 1)
        die("udp-rr needs --size >= %d (it carries a sequence number)", SEQ_DIGITS + 1);
    if (opt.concurrency < 1 || opt.concurrency > MAX_CONCURRENCY)
        die("--concurrency must be 1..%d", MAX_CONCURRENCY);
    if (opt.duration <= 0 && opt.ops <= 0)
        die("--duration or --ops must be positive");
    if (opt.think < 0 || (opt.think > 0 && opt.mode != TCP_RR))
        die("--think-ms must be positive, and is for tcp-rr only");
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double percentile(double p)
{
    if (!st.n)
        return 0;
    return st.lat[(size_t)(p * (st.n - 1) + 0.5)];
}

static void report(double seconds, double cpu, int timed_out)
{
    static const char *names[] = {"tcp-conn", "tcp-rr", "udp-rr"};
    qsort(st.lat, st.n, sizeof *st.lat, cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < st.n; i++)
        sum += st.lat[i];
    printf("{\"mode\": \"%s\", \"ops\": %zu, \"seconds\": %.6f, "
           "\"ops_per_sec\": %.1f, \"p50_us\": %.0f, \"p90_us\": %.0f, "
           "\"p99_us\": %.0f, \"max_us\": %.0f, \"mean_us\": %.1f, "
           "\"errors\": %ld, \"errors_warmup\": %ld, \"lost\": %ld, "
           "\"stale\": %ld, \"client_cpu_pct\": %.1f, \"concurrency\": %ld, "
           "\"size\": %ld, \"timed_out\": %s}\n",
           names[opt.mode], st.n, seconds, seconds > 0 ? st.n / seconds : 0,
           percentile(0.50), percentile(0.90), percentile(0.99),
           st.n ? (double)st.lat[st.n - 1] : 0, st.n ? sum / st.n : 0,
           st.errors, st.errors_warmup, st.lost, st.stale,
           seconds > 0 ? 100 * cpu / seconds : 0, opt.concurrency, opt.size,
           timed_out ? "true" : "false");
    fflush(stdout);
}

static void check_timeouts(double t)
{
    for (long i = 0; i < opt.concurrency; i++) {
        if (opt.mode == UDP_RR)
            udp_check_timeout(&slots[i], t);
        else
            tcp_check_timeout(&slots[i], t);
    }
}

/* After a warm-up, tcp-rr measures only once every connection is up and
 * has echoed once; with --warmup 0 it measures from the first connect. */
static int all_ready(void)
{
    if (opt.mode != TCP_RR || opt.warmup <= 0)
        return 1;
    for (long i = 0; i < opt.concurrency; i++)
        if (!slots[i].ready)
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    parse_address(opt.addr, opt.mode == UDP_RR);
    make_payload();
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    slots = calloc(opt.concurrency, sizeof *slots);
    if (!slots)
        die("out of memory");

    double t0 = now(), deadline = t0 + opt.deadline;
    double warm_end = t0 + opt.warmup, measure_start = 0, next_check = t0;
    double cpu_start = 0;
    for (long i = 0; i < opt.concurrency; i++) {
        slots[i].fd = -1;
        if (opt.mode == UDP_RR)
            udp_open(&slots[i]);
        else
            tcp_start_slot(&slots[i]);
    }

    struct epoll_event events[256];
    int timed_out = 0;
    for (;;) {
        double t = now();
        if (t >= deadline) {
            timed_out = 1;
            fprintf(stderr, "loadgen: global deadline of %.1f s reached\n", opt.deadline);
            break;
        }
        if (!st.measuring && t >= warm_end && all_ready()) {
            st.measuring = 1;
            measure_start = t;
            cpu_start = cpu_seconds();
            fprintf(stderr, "measure-start\n");
            fflush(stderr);
        }
        if (st.measuring && ((opt.ops > 0 && (long)st.n >= opt.ops) ||
                             (opt.ops <= 0 && t - measure_start >= opt.duration)))
            break;
        /* Thinking connections are due at any moment: check every wake-up,
         * and wake up every millisecond (epoll_wait's resolution). */
        if (t >= next_check) {
            check_timeouts(t);
            next_check = t + (opt.think > 0 ? 0 : 0.005);
        }
        int n = epoll_wait(epfd, events, 256, opt.think > 0 ? 1 : 5);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            struct slot *s = events[i].data.ptr;
            if (opt.mode == UDP_RR)
                udp_advance(s);
            else
                tcp_advance(s, events[i].events);
        }
    }
    double end = now();
    double cpu = st.measuring ? cpu_seconds() - cpu_start : 0;
    if (st.measuring) {
        fprintf(stderr, "measure-end\n");
        fflush(stderr);
    }
    report(st.measuring ? end - measure_start : 0, cpu, timed_out);
    if (opt.mode != UDP_RR)
        tcp_drain_all();
    for (long i = 0; i < opt.concurrency; i++)
        close_slot(&slots[i]);
    return timed_out ? 3 : 0;
}
