/*
 * refhub.c - a minimal native chat hub, used only to measure the load
 * generator's ceiling.
 *
 * It speaks the same protocol subset as the peers (join -> joined; chat ->
 * relayed to the room's other connections, ack to the sender; "echo" mode
 * echoes) with one thread and epoll.  Frames for a connection are gathered
 * in its output buffer during one pass of the event loop and written with
 * one send(), so it spends well under a microsecond per delivery: against
 * it, the load generator rather than the server is the bottleneck, and the
 * deliveries/s measured then is the generator's ceiling.
 *
 * With --no-batch every frame is written with its own send(), as most
 * servers do; that is the costlier case for the generator (one TCP segment
 * per frame).
 *
 * usage: refhub [serve|echo] [--host 127.0.0.1] [--port 0] [--no-batch]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- SHA-1 and base64, for Sec-WebSocket-Accept ---- */
static uint32_t rol(uint32_t v, int b) { return (v << b) | (v >> (32 - b)); }
static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    unsigned char *m = calloc(total, 1);
    memcpy(m, msg, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) m[total - 1 - i] = bits >> (8 * i);
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = m[off + 4 * i] << 24 | m[off + 4 * i + 1] << 16 | m[off + 4 * i + 2] << 8 | m[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6; }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    free(m);
    for (int i = 0; i < 20; i++) out[i] = h[i / 4] >> (24 - 8 * (i % 4));
}
static void b64(const unsigned char *in, int n, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int o = 0;
    for (int i = 0; i < n; i += 3) {
        uint32_t v = in[i] << 16 | (i + 1 < n ? in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63]; out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = 0;
}

/* ---- connections ---- */
typedef struct client {
    int fd, upgraded, room, dirty;
    char *in; size_t inlen, incap;
    char *out; size_t outlen, outoff, outcap;
} client;

#define MAXROOMS 65536
static char *room_names[MAXROOMS];
static int *room_members[MAXROOMS], room_len[MAXROOMS], room_cap[MAXROOMS], nrooms;
static int ep, echo_mode, no_batch;
static void flush_one(client *c);
static client **dirty; static int ndirty, capdirty;

static void out_append(client *c, const void *p, size_t n) {
    if (c->outlen + n > c->outcap) { c->outcap = (c->outlen + n) * 2; c->out = realloc(c->out, c->outcap); }
    memcpy(c->out + c->outlen, p, n); c->outlen += n;
    if (!c->dirty) {
        c->dirty = 1;
        if (ndirty == capdirty) { capdirty = capdirty ? capdirty * 2 : 1024; dirty = realloc(dirty, capdirty * sizeof *dirty); }
        dirty[ndirty++] = c;
    }
}

static void out_frame(client *c, int op, const char *p, size_t n) {
    unsigned char h[10]; size_t hl = 0;
    h[hl++] = 0x80 | op;
    if (n < 126) h[hl++] = n;
    else if (n < 65536) { h[hl++] = 126; h[hl++] = n >> 8; h[hl++] = n & 255; }
    else { h[hl++] = 127; for (int i = 7; i >= 0; i--) h[hl++] = (n >> (8 * i)) & 255; }
    out_append(c, h, hl); out_append(c, p, n);
    if (no_batch) flush_one(c);
}

static client *by_fd[1 << 20];

static void drop(client *c) {
    if (c->room >= 0) {
        int r = c->room;
        for (int i = 0; i < room_len[r]; i++)
            if (room_members[r][i] == c->fd) { room_members[r][i] = room_members[r][--room_len[r]]; break; }
    }
    by_fd[c->fd] = NULL;
    close(c->fd);
    c->fd = -1; /* freed lazily: it may still be on the dirty list */
}

static int room_id(const char *name, size_t n) {
    for (int i = 0; i < nrooms; i++)
        if (strlen(room_names[i]) == n && !memcmp(room_names[i], name, n)) return i;
    if (nrooms == MAXROOMS) return -1;
    room_names[nrooms] = strndup(name, n);
    return nrooms++;
}

static void on_message(client *c, char *m, size_t n) {
    if (echo_mode) { out_frame(c, 1, m, n); return; }
    char *r = memmem(m, n, "\"room\":\"", 8);
    if (!r) return;
    r += 8;
    char *e = memchr(r, '"', n - (r - m));
    if (!e) return;
    if (memmem(m, n, "\"join\"", 6)) {
        int id = room_id(r, e - r);
        if (id < 0) return;
        if (room_len[id] == room_cap[id]) { room_cap[id] = room_cap[id] ? room_cap[id] * 2 : 16; room_members[id] = realloc(room_members[id], room_cap[id] * sizeof(int)); }
        room_members[id][room_len[id]++] = c->fd;
        c->room = id;
        char j[200];
        int jl = snprintf(j, sizeof j, "{\"type\":\"joined\",\"payload\":{\"room\":\"%.*s\",\"members\":[]}}", (int)(e - r), r);
        out_frame(c, 1, j, jl);
    } else if (memmem(m, n, "\"chat\"", 6) && c->room >= 0) {
        int id = c->room;
        for (int i = 0; i < room_len[id]; i++) {
            client *o = by_fd[room_members[id][i]];
            if (o && o != c) out_frame(o, 1, m, n);
        }
        static const char ack[] = "{\"type\":\"ack\",\"payload\":{}}";
        out_frame(c, 1, ack, sizeof ack - 1);
    }
}

static void on_readable(client *c) {
    if (c->incap - c->inlen < 65536) { c->incap = c->inlen + 65536 * 2; c->in = realloc(c->in, c->incap); }
    ssize_t r = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, 0);
    if (r <= 0) { if (r < 0 && errno == EAGAIN) return; drop(c); return; }
    c->inlen += r;
    size_t off = 0;
    if (!c->upgraded) {
        char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
        if (!end) return;
        char *k = memmem(c->in, end - c->in, "Sec-WebSocket-Key:", 18);
        if (!k) k = memmem(c->in, end - c->in, "sec-websocket-key:", 18);
        if (!k) { drop(c); return; }
        k += 18; while (*k == ' ') k++;
        char *ke = memmem(k, end + 2 - k, "\r\n", 2);
        char buf[128];
        int kl = snprintf(buf, sizeof buf, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)(ke - k), k);
        unsigned char d[20]; char acc[32];
        sha1((unsigned char *)buf, kl, d); b64(d, 20, acc);
        char resp[256];
        int rl = snprintf(resp, sizeof resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acc);
        out_append(c, resp, rl);
        c->upgraded = 1;
        off = end + 4 - c->in;
    }
    while (c->inlen - off >= 2) {
        unsigned char *p = (unsigned char *)c->in + off;
        int op = p[0] & 15, masked = p[1] & 0x80;
        uint64_t len = p[1] & 127; size_t h = 2;
        if (len == 126) { if (c->inlen - off < 4) break; len = p[2] << 8 | p[3]; h = 4; }
        else if (len == 127) { if (c->inlen - off < 10) break; len = 0; for (int i = 2; i < 10; i++) len = len << 8 | p[i]; h = 10; }
        if (masked) h += 4;
        if (c->inlen - off < h + len) break;
        char *pl = (char *)p + h;
        if (masked) { unsigned char *mk = p + h - 4; if (mk[0] | mk[1] | mk[2] | mk[3]) for (uint64_t i = 0; i < len; i++) pl[i] ^= mk[i & 3]; }
        off += h + len;
        if (op == 8) { out_frame(c, 8, pl, len < 2 ? len : 2); break; }
        if (op == 9) { out_frame(c, 10, pl, len); continue; }
        if (op == 1 || op == 2) on_message(c, pl, len);
    }
    memmove(c->in, c->in + off, c->inlen - off);
    c->inlen -= off;
}

/* write what is buffered for c; on EAGAIN wait for EPOLLOUT */
static void flush_one(client *c) {
        if (c->fd < 0) return;
        while (c->outoff < c->outlen) {
            ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno != EAGAIN) { drop(c); break; }
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                break;
            }
            c->outoff += n;
        }
        if (c->fd >= 0 && c->outoff == c->outlen) c->outoff = c->outlen = 0;
}

static void flush_dirty(void) {
    for (int i = 0; i < ndirty; i++) {
        client *c = dirty[i];
        c->dirty = 0;
        flush_one(c);
    }
    ndirty = 0;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1"; int port = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "echo")) echo_mode = 1;
        else if (!strcmp(argv[i], "serve")) echo_mode = 0;
        else if (!strcmp(argv[i], "--no-batch")) no_batch = 1;
        else if (!strcmp(argv[i], "--host") && i + 1 < argc) host = argv[++i];
        else if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl; getrlimit(RLIMIT_NOFILE, &rl); rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) { perror("listen"); return 1; }
    socklen_t al = sizeof a; getsockname(ls, (struct sockaddr *)&a, &al);
    printf("refhub listening on ws://%s:%d/ws\n", host, ntohs(a.sin_port));
    fflush(stdout);
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[1024];
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, -1);
        for (int i = 0; i < n; i++) {
            client *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    client *nc = calloc(1, sizeof *nc);
                    nc->fd = fd; nc->room = -1; by_fd[fd] = nc;
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e2);
                }
                continue;
            }
            if (c->fd < 0) continue;
            if (evs[i].events & EPOLLOUT) {
                struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e2);
                out_append(c, "", 0);
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
        }
        flush_dirty();
    }
}
