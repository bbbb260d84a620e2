/*
 * refserver.c -- the bench's reference: each workload served by the least a
 * C server has to do, so the table shows how close a Python server gets to
 * the kernel's own cost: a single-threaded C epoll echo server.
 *
 * One thread, epoll, no Python.  Per workload it makes the system calls a
 * socketserver server must make for the same protocol, and no others:
 *
 *   tcp-base, tcp-stream  accept4() until EAGAIN; per connection (blocking,
 *                   as socketserver's): recv(), send() the reply (tcp-base
 *                   upper-cases it, as its Python handler does),
 *                   shutdown(SHUT_WR), close() -- TCPServer.shutdown_request.
 *   udp-base, udp-dgram   recvmmsg() batches of up to 32 until a short one,
 *                   a sendto() per datagram, echoing it.
 *   tcp-persistent  every connection non-blocking in the one epoll set;
 *                   what arrives is sent back (an echo of lines is an echo
 *                   of bytes).  No threads: the floor for the workload, not
 *                   for ThreadingTCPServer's design.
 *
 * Same command line as servers.py beside it, so run.py starts it the same
 * way: it prints "PORT <n>" (and writes <n> to --ready-file, atomically)
 * once listening, serves until SIGTERM or SIGINT and exits 0.  The bench
 * builds it on first use, as the load generator (c_programs.py).
 *
 *   cc -O2 -std=c99 -Wall -o refserver refserver.c
 *   refserver --workload udp-base --port 0 --ready-file /tmp/port
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum workload { TCP_BASE, TCP_STREAM, UDP_ECHO, TCP_PERSISTENT };

#define MAX_EVENTS 64
#define DATAGRAM_BATCH 32
#define BUFFER_SIZE 65536

static volatile sig_atomic_t stopping;

static void on_stop_signal(int signo)
{
    (void)signo;
    stopping = 1;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One request per connection, as TCPServer + a handler serves it. */
static void serve_connection(int conn, enum workload workload, char *buffer)
{
    ssize_t n;
    do {
        n = recv(conn, buffer, BUFFER_SIZE, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        if (workload == TCP_BASE)
            for (ssize_t i = 0; i < n; i++)
                buffer[i] = (char)toupper((unsigned char)buffer[i]);
        send_all(conn, buffer, (size_t)n);
    }
    shutdown(conn, SHUT_WR);
    close(conn);
}

static void accept_all(int listener, enum workload workload, int epoll_fd, char *buffer)
{
    for (;;) {
        int flags = workload == TCP_PERSISTENT ? SOCK_CLOEXEC | SOCK_NONBLOCK : SOCK_CLOEXEC;
        int conn = accept4(listener, NULL, NULL, flags);
        if (conn < 0) {
            if (errno == EINTR)
                continue;
            return;  /* EAGAIN: drained; anything else: the client's trouble */
        }
        if (workload != TCP_PERSISTENT) {
            serve_connection(conn, workload, buffer);
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = conn};
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, conn, &ev) < 0)
            close(conn);
    }
}

/* A persistent connection is readable: echo what came, or close at EOF. */
static void echo_ready(int conn, char *buffer)
{
    for (;;) {
        ssize_t n = recv(conn, buffer, BUFFER_SIZE, 0);
        if (n > 0) {
            /* The client waits for each echo, so the reply always fits the
             * send buffer; one that does not is a client to drop. */
            if (send(conn, buffer, (size_t)n, MSG_NOSIGNAL) == n)
                continue;
            close(conn);
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        close(conn);  /* EOF or error; closing removes it from the epoll set */
        return;
    }
}

static void echo_datagrams(int fd, char *buffer)
{
    struct mmsghdr msgs[DATAGRAM_BATCH];
    struct iovec iovs[DATAGRAM_BATCH];
    struct sockaddr_storage addrs[DATAGRAM_BATCH];
    size_t size = BUFFER_SIZE / DATAGRAM_BATCH;  /* 2 KiB: the bench sends 64 bytes */
    for (;;) {
        memset(msgs, 0, sizeof(msgs));
        for (int i = 0; i < DATAGRAM_BATCH; i++) {
            iovs[i].iov_base = buffer + (size_t)i * size;
            iovs[i].iov_len = size;
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
        }
        int n = recvmmsg(fd, msgs, DATAGRAM_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        for (int i = 0; i < n; i++)
            sendto(fd, iovs[i].iov_base, msgs[i].msg_len, 0,
                   (struct sockaddr *)&addrs[i], msgs[i].msg_hdr.msg_namelen);
        if (n < DATAGRAM_BATCH)
            return;  /* a short batch: drained (epoll is level-triggered) */
    }
}

static int open_listener(enum workload workload, const char *host, int port, int backlog)
{
    int type = workload == UDP_ECHO ? SOCK_DGRAM : SOCK_STREAM;
    int fd = socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    if (type == SOCK_STREAM)  /* as TCPServer's allow_reuse_address on the bench */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "refserver: not an IPv4 address: %s\n", host);
        exit(2);
    }
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        die("bind");
    if (type == SOCK_STREAM && listen(fd, backlog > 0 ? backlog : 5) < 0)
        die("listen");
    return fd;
}

static void announce_port(int fd, const char *ready_file)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
        die("getsockname");
    int port = ntohs(addr.sin_port);
    printf("PORT %d\n", port);
    fflush(stdout);
    if (!ready_file)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", ready_file);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d", port) < 0 || fclose(f) != 0 || rename(tmp, ready_file) < 0)
        die(ready_file);
}

static enum workload parse_workload(const char *name)
{
    if (!strcmp(name, "tcp-base"))
        return TCP_BASE;
    if (!strcmp(name, "tcp-stream"))
        return TCP_STREAM;
    if (!strcmp(name, "udp-base") || !strcmp(name, "udp-dgram"))
        return UDP_ECHO;
    if (!strcmp(name, "tcp-persistent"))
        return TCP_PERSISTENT;
    fprintf(stderr, "refserver: no reference for workload %s\n", name);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *workload_name = NULL, *host = "127.0.0.1", *ready_file = NULL;
    int port = 0, backlog = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--workload"))
            workload_name = argv[i + 1];
        else if (!strcmp(argv[i], "--host"))
            host = argv[i + 1];
        else if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ready-file"))
            ready_file = argv[i + 1];
        else if (!strcmp(argv[i], "--backlog"))
            backlog = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "refserver: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!workload_name) {
        fprintf(stderr, "usage: refserver --workload NAME [--host H] [--port N] "
                        "[--ready-file F] [--backlog N]\n");
        return 2;
    }
    enum workload workload = parse_workload(workload_name);

    struct sigaction sa = {.sa_handler = on_stop_signal};  /* no SA_RESTART */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int listener = open_listener(workload, host, port, backlog);
    int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0)
        die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listener, &ev) < 0)
        die("epoll_ctl");
    char *buffer = malloc(BUFFER_SIZE);
    if (!buffer)
        die("malloc");
    announce_port(listener, ready_file);

    struct epoll_event events[MAX_EVENTS];
    while (!stopping) {
        int n = epoll_wait(epoll_fd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd != listener)
                echo_ready(fd, buffer);
            else if (workload == UDP_ECHO)
                echo_datagrams(fd, buffer);
            else
                accept_all(fd, workload, epoll_fd, buffer);
        }
    }
    return 0;
}
