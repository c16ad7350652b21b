/*
 * The floor: the least a server with upcase's TCP semantics can do, to
 * measure upcase against (benchmarks/compare.py builds it with cc -O2).
 * Not product code.
 *
 * One thread, one epoll set, level-triggered. Accept every pending
 * connection (nonblocking accept4); on each readable connection, read up
 * to 256 KiB into the one shared buffer, upper-case its ASCII letters in
 * place, write the whole reply (what the socket does not take at once is
 * copied aside and waits for EPOLLOUT, and reading stops meanwhile, as
 * upcase's backpressure does); close after the client closes, without an
 * EPOLL_CTL_DEL (close does it). A connection costs a 32-byte struct. No limits, no logs, no UTF-8 (upcase maps non-ASCII letters
 * too, which the 64-byte ASCII loads here never contain).
 *
 * usage: floor_server PORT   (prints "listening on tcp 127.0.0.1:PORT")
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (256 * 1024)

/* A connection: its descriptor and, only while the socket would not take
 * a whole reply, what is left of it. */
struct conn {
    int fd;
    char *out;
    size_t pending, sent;
};

/* One buffer for every connection: read into it, upper-case in place,
 * write from it. */
static char buf[BUF];

static void closeconn(struct conn *c) {
    close(c->fd); /* which also takes it out of the epoll set */
    free(c->out);
    free(c);
}

/* Writes what is pending; returns -1 on error, 0 if some is left, 1 if all went. */
static int flush(struct conn *c) {
    while (c->sent < c->pending) {
        ssize_t n = write(c->fd, c->out + c->sent, c->pending - c->sent);
        if (n < 0) return errno == EAGAIN ? 0 : -1;
        c->sent += (size_t)n;
    }
    free(c->out);
    c->out = NULL;
    c->pending = c->sent = 0;
    return 1;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 12000;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* inherited */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1024)) {
        perror("bind/listen");
        return 1;
    }
    socklen_t len = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &len);
    printf("listening on tcp 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    c = malloc(sizeof *c);
                    c->fd = fd;
                    c->out = NULL;
                    c->pending = c->sent = 0;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (c->pending) { /* EPOLLOUT: finish the reply, then read again */
                int f = flush(c);
                if (f < 0) closeconn(c);
                else if (f > 0) {
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
                }
                continue;
            }
            ssize_t got = read(c->fd, buf, BUF);
            if (got == 0 || (got < 0 && errno != EAGAIN)) {
                closeconn(c);
                continue;
            }
            if (got < 0) continue;
            for (ssize_t k = 0; k < got; k++) {
                char b = buf[k];
                buf[k] = (b >= 'a' && b <= 'z') ? (char)(b - 32) : b;
            }
            ssize_t n = write(c->fd, buf, (size_t)got);
            int f = 1;
            if (n < 0 && errno != EAGAIN) f = -1;
            else if (n < got) { /* keep the rest until the socket has room */
                size_t done = n < 0 ? 0 : (size_t)n;
                c->pending = (size_t)got - done;
                c->out = malloc(c->pending);
                memcpy(c->out, buf + done, c->pending);
                c->sent = 0;
                f = 0;
            }
            if (f < 0) closeconn(c);
            else if (f == 0) {
                struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
            }
        }
    }
}
