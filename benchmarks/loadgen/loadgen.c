/*
 * loadgen.c - load generator for WebSocket chat servers speaking the
 * trio_chat protocol subset (join / chat / joined / ack).
 *
 * One thread, epoll, non-blocking sockets, a minimal RFC 6455 client:
 * frames to the server are masked with the all-zero key (valid, and it keeps
 * the client from spending CPU on XOR); frames from the server are parsed
 * in place out of one shared receive buffer.  Nothing is JSON-decoded: a
 * delivery is recognised by the content it carries, which starts with
 * "t=<send time, CLOCK_MONOTONIC microseconds> s=<sender> q=<sequence>".
 * Sender and receiver live in this one process, so latency is measured on
 * one clock.
 *
 * Modes (--mode):
 *   fanout     N clients in rooms of --room-size, the first --senders-per-room
 *              of each room send.  Closed loop (default): each sender keeps
 *              --window messages in flight; a slot is released when the
 *              message has reached every other member of the room (or after
 *              --slot-timeout).  Open loop: --rate R messages/s in total,
 *              spread evenly over the senders.
 *   echo       N clients each keep --window messages in flight to an echo
 *              server; counts round trips.
 *   handshake  --concurrency connections at a time: connect, upgrade, close
 *              (close frame, wait for the server's close); counts upgrades.
 *   hold       connect (and join, if --room-size > 0) N clients, print
 *              "EVENT ready", then obey stdin: "broadcast" (one chat from
 *              client 0, wait until every other member got it), "stats",
 *              "quit" (or EOF).
 *   churn      N slots; each connects, joins, chats every --msg-interval
 *              ms, lives a random time in [--life-min, --life-max] s, then
 *              drops abruptly (TCP reset, or close without a close frame)
 *              and reconnects.  Prints "EVENT stats" every --stats-every s.
 *   storm      N clients start connecting at once (--concurrency pending at
 *              most; default all of them), each upgrades and joins its room;
 *              the measured window runs from the first connect() to the last
 *              "joined" (or --connect-timeout).  Reports the time, the
 *              per-client connect-to-joined latency and the retries.
 *
 * --deflate offers permessage-deflate (RFC 7692) with
 * client_no_context_takeover and server_no_context_takeover in every
 * upgrade; where the server accepts, frames with RSV1 set are inflated with
 * zlib (the client's own frames stay uncompressed, which the RFC allows).
 * --words fills the content with words (text-like, for compression) instead
 * of a run of 'x'.  Bytes received are counted either way (--deflate or not), so a run can
 * report bytes on the wire per delivery.
 *
 * Output: "EVENT ..." lines while running (measure_start / measure_end mark
 * the measured window, so a supervisor can sample the server's CPU over the
 * same interval) and one final "RESULT {json}" line on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
#include <time.h>
#include <unistd.h>
#include <zlib.h>

enum { ST_FREE, ST_CONNECTING, ST_HANDSHAKE, ST_JOINING, ST_READY, ST_CLOSING, ST_CLOSED };
enum { M_FANOUT, M_ECHO, M_HANDSHAKE, M_HOLD, M_CHURN, M_STORM };

#define RING 4096

typedef struct conn {
    int fd, idx, state, room, attempts;
    int sender; /* index into senders[], or -1 */
    char *rbuf; size_t rlen, rcap;  /* unparsed leftover */
    char *wbuf; size_t wlen, woff, wcap; /* unsent bytes */
    char *frag; size_t fraglen;
    int wantout;
    int64_t t_state; /* when the current state began */
    int64_t t_die;   /* churn: when to drop; hold/handshake: close deadline */
    int64_t t_next;  /* churn / echo: next send */
    int inflight;    /* echo */
    int64_t t_open;  /* first connect() of this client (storm) */
    int deflate;     /* permessage-deflate negotiated: 1, and 2 if the server resets its context */
    int frag_rsv1;   /* the message being reassembled is compressed */
    z_stream *zs;    /* inflater, created on the first compressed message */
} conn;

typedef struct sender {
    int conn;
    uint32_t next_q, oldest;
    int inflight;
    int expected; /* deliveries per message */
    uint16_t got[RING];
    int64_t sent_at[RING];
    uint8_t open[RING];
} sender;

/* ---------- options ---------- */
static const char *o_host = "127.0.0.1", *o_path = "/ws", *o_prefix = "b";
static int o_port, o_mode = M_FANOUT, o_clients = 200, o_room_size = 200, o_spr = 10;
static int o_window = 8, o_size = 128, o_users = 0, o_conc = 64;
static double o_rate = 0, o_warmup = 1, o_duration = 5, o_drain = 1, o_settle = 0.5;
static double o_slot_timeout = 2, o_connect_timeout = 60, o_msg_interval = 1000;
static double o_life_min = 1, o_life_max = 5, o_stats_every = 10;
static int o_join = 1;
static int o_deflate = 0;
static int o_words = 0;
static int o_poll_us = 0;

/* ---------- state ---------- */
static int ep;
static conn *conns;
static int nconns;
static sender *senders;
static int nsenders;
static int *room_members; /* joined members per room */
static int nrooms;
static char *shared; static size_t shared_cap = 1 << 20;
static int64_t t_ws, t_we; /* measured window, in us */
static int sending;

/* ---------- counters ---------- */
static long long c_connect_fail, c_hs_fail, c_disconnects, c_joined, c_connected;
static long long c_sent, c_sent_win, c_deliv, c_deliv_win_recv, c_deliv_of_win, c_expected_win;
static long long c_acks, c_errors, c_timeouts, c_pings, c_handshakes, c_drops, c_rtt;
static long long c_rbytes, c_rbytes_win, c_deflate_ok, c_deflate_nctx, c_msgs_rsv1, c_msgs;
static long long c_retries;
static long long c_close_codes[5000];
static char first_error[256];
/* latency histogram, log-linear: exact below 1024 us, then 512 sub-buckets
 * per power of two (0.2% resolution); the maximum is kept exactly */
#define HBUCKETS (1024 + 23 * 512)
static uint64_t hist[HBUCKETS];
static size_t nlat;
static uint32_t lat_max;
static int64_t g_now; /* time of the current read: every frame in one recv() arrived by then */
static int hs_status_last;
static int g_pending; /* connections between connect() and ready */

static int is_pending(int st) { return st == ST_CONNECTING || st == ST_HANDSHAKE || st == ST_JOINING; }
static void set_state(conn *c, int st) {
    g_pending += is_pending(st) - is_pending(c->state);
    c->state = st;
}

static int64_t now_us(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
static double cpu_s(void) {
    struct timespec ts; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static void die(const char *m) { perror(m); exit(2); }
static void *xrealloc(void *p, size_t n) { p = realloc(p, n); if (!p) die("realloc"); return p; }

static int hbucket(uint32_t v) {
    if (v < 1024) return (int)v;
    int b = 31 - __builtin_clz(v), shift = b - 9;
    return 1024 + (b - 10) * 512 + (int)((v >> shift) - 512);
}
static double hvalue(int i) { /* midpoint of bucket i, in us */
    if (i < 1024) return i;
    int b = (i - 1024) / 512 + 10, shift = b - 9;
    uint32_t mant = (uint32_t)((i - 1024) % 512 + 512);
    return (double)((uint64_t)mant << shift) + (double)(1u << shift) / 2;
}
static void add_lat(int64_t us) {
    uint32_t v = us < 0 ? 0 : us > 0xffffffffLL ? 0xffffffffu : (uint32_t)us;
    hist[hbucket(v)]++;
    nlat++;
    if (v > lat_max) lat_max = v;
}

/* ---------- sockets ---------- */
static void ep_set(conn *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
    c->wantout = out;
}

static void conn_close(conn *c, int rst) {
    if (c->fd >= 0) {
        if (rst) { struct linger l = {1, 0}; setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l); }
        close(c->fd); /* also removes it from epoll */
    }
    if (c->state == ST_READY && c->room >= 0 && o_join && room_members) room_members[c->room]--;
    c->fd = -1; set_state(c, ST_CLOSED); c->rlen = 0; c->wlen = c->woff = 0; c->fraglen = 0;
    c->inflight = 0; c->wantout = 0;
}

static void conn_write(conn *c, const char *buf, size_t len) {
    if (c->fd < 0) return;
    if (c->wlen == c->woff) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n == (ssize_t)len) return;
        if (n < 0) {
            if (errno != EAGAIN) { c_disconnects++; conn_close(c, 0); return; }
            n = 0;
        }
        buf += n; len -= n; c->wlen = c->woff = 0;
    }
    if (c->wlen + len > c->wcap) { c->wcap = (c->wlen + len) * 2; c->wbuf = xrealloc(c->wbuf, c->wcap); }
    memcpy(c->wbuf + c->wlen, buf, len); c->wlen += len;
    if (!c->wantout) ep_set(c, 1);
}

static void conn_flush(conn *c) {
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0) { if (errno == EAGAIN) return; c_disconnects++; conn_close(c, 0); return; }
        c->woff += n;
    }
    c->wlen = c->woff = 0;
    ep_set(c, 0);
}

/* a client frame: FIN + opcode, masked with the zero key */
static size_t frame_hdr(char *out, int opcode, size_t len) {
    size_t h = 0;
    out[h++] = (char)(0x80 | opcode);
    if (len < 126) out[h++] = (char)(0x80 | len);
    else if (len < 65536) { out[h++] = (char)(0x80 | 126); out[h++] = len >> 8; out[h++] = len & 0xff; }
    else { out[h++] = (char)(0x80 | 127); for (int i = 7; i >= 0; i--) out[h++] = (len >> (8 * i)) & 0xff; }
    memset(out + h, 0, 4); h += 4;
    return h;
}

static void send_text(conn *c, const char *payload, size_t len) {
    char buf[16384];
    if (len + 14 > sizeof buf) return;
    size_t h = frame_hdr(buf, 1, len);
    memcpy(buf + h, payload, len);
    conn_write(c, buf, h + len);
}

static void send_control(conn *c, int opcode, const char *payload, size_t len) {
    char buf[160];
    if (len > 125) len = 125;
    size_t h = frame_hdr(buf, opcode, len);
    memcpy(buf + h, payload, len);
    conn_write(c, buf, h + len);
}

static void send_close(conn *c, int code) {
    char p[2] = {(char)(code >> 8), (char)(code & 0xff)};
    send_control(c, 8, p, 2);
}

static void send_join(conn *c) {
    char p[128];
    int n = snprintf(p, sizeof p, "{\"type\":\"join\",\"payload\":{\"room\":\"r%d\"}}", c->room);
    send_text(c, p, n);
}

/* a chat frame whose content is exactly o_size bytes: "t=.. s=.. q=.. xxx" */
static void send_chat(conn *c, int s, uint32_t q, int64_t t) {
    char p[16384];
    int n = snprintf(p, sizeof p,
                     "{\"type\":\"chat\",\"payload\":{\"room\":\"r%d\",\"content\":\"t=%lld s=%d q=%u ",
                     c->room < 0 ? 0 : c->room, (long long)t, s, q);
    int head = (int)(strstr(p, "\"content\":\"") - p) + 11;
    int want = head + o_size;
    if (o_words) {
        /* text-like filler (compresses like prose, not like a run of one letter) */
        static const char *words[] = {
            "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on",
            "are", "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one",
            "had", "by", "word", "but", "not", "what", "all", "were", "we", "when", "your", "can",
            "said", "there", "use", "an", "each", "which", "she", "do", "how", "their", "if",
            "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some",
            "her", "would", "make", "like", "him", "into", "time", "has", "look", "two", "more",
            "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first",
            "water", "been", "call", "who", "oil", "its", "now", "find", "long", "down", "day",
            "did", "get", "come", "made", "may", "part", "meeting", "tomorrow", "deploy", "build",
            "server", "release", "room", "coffee", "lunch", "thanks", "ok", "sure", "yes", "later"};
        uint32_t x = (uint32_t)q * 2654435761u ^ (uint32_t)(s + 1) * 40503u ^ (uint32_t)t;
        while (n < want && n < (int)sizeof p - 24) {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5;
            const char *w = words[x % (sizeof words / sizeof *words)];
            while (*w && n < want) p[n++] = *w++;
            if (n < want) p[n++] = (x >> 24) % 9 ? ' ' : ',';
        }
    }
    while (n < want && n < (int)sizeof p - 8) p[n++] = 'x';
    n += snprintf(p + n, sizeof p - n, "\"}}");
    send_text(c, p, n);
    c_sent++;
    if (t >= t_ws && t < t_we) {
        c_sent_win++;
        if (o_mode == M_FANOUT && s >= 0 && s < nsenders) c_expected_win += senders[s].expected;
    }
}

static int open_conn(conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) { c_connect_fail++; return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(o_port)};
    inet_pton(AF_INET, o_host, &a.sin_addr);
    c->fd = fd; set_state(c, ST_CONNECTING); c->t_state = now_us(); c->rlen = 0;
    c->wlen = c->woff = 0; c->fraglen = 0; c->inflight = 0;
    if (c->attempts++ == 0) c->t_open = c->t_state;
    else c_retries++;
    c->deflate = 0; c->frag_rsv1 = 0;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
    c->wantout = 1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        c_connect_fail++; conn_close(c, 0); return -1;
    }
    return 0;
}

static void send_upgrade(conn *c) {
    char req[512];
    int users = o_users > 0 ? o_users : (nconns > 0 ? nconns : 1);
    int n = snprintf(req, sizeof req,
                     "GET %s?user=%s%d&key=loadgen-key HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     o_path, o_prefix, c->idx % users, o_host, o_port,
                     o_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                 "client_no_context_takeover; server_no_context_takeover\r\n"
                               : "");
    set_state(c, ST_HANDSHAKE); c->t_state = now_us();
    ep_set(c, 0);
    conn_write(c, req, n);
}

/* ---------- protocol events ---------- */
static void on_ready(conn *c);
static void on_upgraded(conn *c);

static void release_slot(sender *sd, uint32_t q) {
    int k = q % RING;
    if (!sd->open[k]) return;
    sd->open[k] = 0;
    sd->inflight--;
    while (sd->oldest < sd->next_q && !sd->open[sd->oldest % RING]) sd->oldest++;
}

static void fill_window(int s) {
    sender *sd = &senders[s];
    conn *c = &conns[sd->conn];
    if (c->state != ST_READY) return;
    while (sending && sd->inflight < o_window) {
        uint32_t q = sd->next_q++;
        int k = q % RING;
        int64_t t = now_us();
        sd->got[k] = 0; sd->open[k] = 1; sd->sent_at[k] = t; sd->inflight++;
        send_chat(c, s, q, t);
    }
}

static void on_delivery(conn *c, const char *m, size_t len, const char *tp) {
    int64_t now = g_now;
    /* "t=<digits> s=<digits> q=<digits> ", always within the frame */
    const char *p = tp + 2, *end = m + len;
    long long t = 0; int s = -1; uint32_t q = 0;
    while (p < end && *p >= '0' && *p <= '9') t = t * 10 + (*p++ - '0');
    if (end - p > 3 && p[0] == ' ' && p[1] == 's' && p[2] == '=') {
        p += 3; s = 0;
        while (p < end && *p >= '0' && *p <= '9') s = s * 10 + (*p++ - '0');
        if (end - p > 3 && p[0] == ' ' && p[1] == 'q' && p[2] == '=') {
            p += 3;
            while (p < end && *p >= '0' && *p <= '9') q = q * 10 + (uint32_t)(*p++ - '0');
        }
    }
    if (o_mode == M_ECHO) {
        if (t >= t_ws && now < t_we) { add_lat(now - t); c_rtt++; }
        c->inflight--;
        if (sending) {
            while (c->inflight < o_window) { c->inflight++; send_chat(c, c->idx, q + 1, now_us()); }
        }
        return;
    }
    c_deliv++;
    if (now >= t_ws && now < t_we) c_deliv_win_recv++;
    if (t >= t_ws && t < t_we) { c_deliv_of_win++; add_lat(now - t); }
    if (s >= 0 && s < nsenders) {
        sender *sd = &senders[s];
        int k = q % RING;
        if (sd->open[k] && ++sd->got[k] >= sd->expected) {
            release_slot(sd, q);
            if (o_rate <= 0) fill_window(s);
        }
    }
}

/* the content's "t=": '=' appears in no JSON punctuation, so memchr finds it fast */
static const char *find_stamp(const char *m, size_t len) {
    const char *p = m, *end = m + len;
    while ((p = memchr(p, '=', end - p))) {
        if (p - m >= 2 && p[-1] == 't' && p[-2] == '"') return p - 1;
        p++;
    }
    return NULL;
}

static void on_message(conn *c, const char *m, size_t len) {
    if (c->state == ST_JOINING) {
        /* rooms are fresh: a joined reply carries no history worth counting */
        if (memmem(m, len, "\"joined\"", 8)) {
            set_state(c, ST_READY); c->t_state = now_us(); c_joined++;
            if (o_mode == M_STORM) add_lat(c->t_state - c->t_open);
            if (c->room >= 0 && room_members) room_members[c->room]++;
            on_ready(c);
        } else if (memmem(m, len, "\"error\"", 7)) {
            /* the join was refused: say why, and let the caller retry or give up */
            if (!c_errors) snprintf(first_error, sizeof first_error, "%.*s", (int)(len < 200 ? len : 200), m);
            c_errors++;
            conn_close(c, 0);
        }
        return;
    }
    const char *tp = find_stamp(m, len);
    if (tp) { on_delivery(c, m, len, tp); return; }
    if (memmem(m, len, "\"ack\"", 5)) { c_acks++; return; }
    if (memmem(m, len, "\"error\"", 7)) {
        if (!c_errors) snprintf(first_error, sizeof first_error, "%.*s", (int)(len < 200 ? len : 200), m);
        c_errors++;
    }
}

/* Inflated messages by their compressed bytes.  With server_no_context_takeover
 * a compressed message depends on nothing before it, so the same bytes always
 * inflate to the same text: a fan-out server that sends one compressed frame to
 * 199 recipients costs one inflate here, not 199 (otherwise the generator, at
 * about 2 us per inflate, would be the limit of the compressed fan-out). */
#define ZCACHE 8192
#define ZWAYS 4
/* ZWAYS-way set associative, least recently hit replaced: a direct-mapped
 * cache thrashes when two payloads in flight at once share a slot (each of
 * their 199 recipients would then inflate both). */
typedef struct { uint64_t h, used; size_t inlen, outlen, incap, outcap; char *in, *out; } zentry;
static zentry zcache[ZCACHE];
static uint64_t zclock;
static long long c_inflates;
/* a slot index from the length and eight words spread over the message
 * (memcmp checks every byte on a hit) */
static uint64_t zhash(const char *m, size_t len) {
    uint64_t h = len * 0x9E3779B97F4A7C15ULL, w;
    if (len < 8) {
        for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)m[i]) * 0x100000001b3ULL;
        return h;
    }
    for (size_t k = 0; k < 8; k++) {
        memcpy(&w, m + (len - 8) * k / 7, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
    }
    return h;
}

/* RFC 7692: inflate one compressed message (the 00 00 ff ff tail restored)
 * and hand it on; a server that keeps its context keeps our inflater's */
static char *zout; static size_t zout_cap = 1 << 16;
static void on_compressed(conn *c, const char *m, size_t len) {
    static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
    zentry *ze = NULL;
    uint64_t h = 0;
    if (c->deflate == 2) {
        h = zhash(m, len);
        zentry *set = &zcache[(h % (ZCACHE / ZWAYS)) * ZWAYS];
        for (int w = 0; w < ZWAYS; w++) {
            zentry *e = &set[w];
            if (e->in && e->h == h && e->inlen == len && !memcmp(e->in, m, len)) {
                e->used = ++zclock;
                c_msgs_rsv1++;
                on_message(c, e->out, e->outlen);
                return;
            }
            if (!ze || e->used < ze->used) ze = e;
        }
    }
    c_inflates++;
    if (!c->zs) {
        c->zs = calloc(1, sizeof(z_stream));
        if (!c->zs || inflateInit2(c->zs, -15) != Z_OK) die("inflateInit2");
    }
    if (!zout) zout = xrealloc(NULL, zout_cap);
    z_stream *zs = c->zs;
    size_t out = 0;
    int ended = 0;
    for (int part = 0; part < 2 && !ended; part++) {
        zs->next_in = (Bytef *)(part ? (const char *)tail : m);
        zs->avail_in = part ? 4 : (uInt)len;
        while (zs->avail_in > 0) {
            if (zout_cap - out < 4096) { zout_cap *= 2; zout = xrealloc(zout, zout_cap); }
            zs->next_out = (Bytef *)zout + out;
            zs->avail_out = (uInt)(zout_cap - out);
            int rc = inflate(zs, Z_SYNC_FLUSH);
            out = zout_cap - zs->avail_out;
            if (rc == Z_STREAM_END) { inflateReset(zs); ended = 1; break; } /* a final block: done */
            if (rc == Z_BUF_ERROR && zs->avail_out > 0) break;
            if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) {
                c_errors++;
                if (!first_error[0]) snprintf(first_error, sizeof first_error, "inflate failed: %d", rc);
                inflateReset(zs);
                return;
            }
        }
    }
    if (c->deflate == 2) inflateReset(zs);
    c_msgs_rsv1++;
    if (ze) {
        if (ze->incap < len) { ze->incap = len * 2; ze->in = xrealloc(ze->in, ze->incap); }
        if (ze->outcap < out + 1) { ze->outcap = out * 2 + 1; ze->out = xrealloc(ze->out, ze->outcap); }
        memcpy(ze->in, m, len); memcpy(ze->out, zout, out);
        ze->h = h; ze->inlen = len; ze->outlen = out; ze->used = ++zclock;
    }
    on_message(c, zout, out);
}

static void on_data(conn *c, const char *m, size_t len, int rsv1) {
    c_msgs++;
    if (rsv1 && c->deflate) on_compressed(c, m, len);
    else on_message(c, m, len);
}

/* parse complete frames in buf; returns bytes consumed */
static size_t parse_frames(conn *c, char *buf, size_t n) {
    size_t off = 0;
    while (n - off >= 2 && c->fd >= 0) {
        unsigned char *p = (unsigned char *)buf + off;
        int fin = p[0] & 0x80, op = p[0] & 0x0f, masked = p[1] & 0x80, rsv1 = p[0] & 0x40;
        uint64_t len = p[1] & 0x7f; size_t h = 2;
        if (len == 126) { if (n - off < 4) break; len = (p[2] << 8) | p[3]; h = 4; }
        else if (len == 127) {
            if (n - off < 10) break;
            len = 0; for (int i = 2; i < 10; i++) len = (len << 8) | p[i];
            h = 10;
        }
        if (masked) h += 4;
        if (n - off < h + len) {
            if (h + len > shared_cap / 2) { shared_cap = (h + len) * 4; shared = xrealloc(shared, shared_cap); }
            break;
        }
        char *pl = (char *)p + h;
        if (masked) for (uint64_t i = 0; i < len; i++) pl[i] ^= p[h - 4 + (i & 3)];
        off += h + len;
        if (op == 8) {
            int code = len >= 2 ? ((unsigned char)pl[0] << 8 | (unsigned char)pl[1]) : 1005;
            if (code >= 0 && code < 5000) c_close_codes[code]++;
            if (c->state != ST_CLOSING) { c_disconnects++; send_close(c, code == 1005 ? 1000 : code); }
            conn_close(c, 0);
            return off;
        } else if (op == 9) { c_pings++; send_control(c, 10, pl, len); }
        else if (op == 10) { }
        else if (op == 0 || !fin) {
            if (op != 0) c->frag_rsv1 = rsv1; /* the first frame says whether it is compressed */
            c->frag = xrealloc(c->frag, c->fraglen + len + 1);
            memcpy(c->frag + c->fraglen, pl, len); c->fraglen += len;
            if (fin) { on_data(c, c->frag, c->fraglen, c->frag_rsv1); c->fraglen = 0; }
        } else on_data(c, pl, len, rsv1);
    }
    return off;
}

static void on_readable(conn *c) {
    if (c->rlen + 65536 > shared_cap) { shared_cap = (c->rlen + 65536) * 2; shared = xrealloc(shared, shared_cap); }
    if (c->rlen) memcpy(shared, c->rbuf, c->rlen);
    ssize_t r = recv(c->fd, shared + c->rlen, shared_cap - c->rlen, 0);
    g_now = now_us();
    if (r > 0) {
        c_rbytes += r;
        if (g_now >= t_ws && g_now < t_we) c_rbytes_win += r;
    }
    if (r <= 0) {
        if (r < 0 && errno == EAGAIN) return;
        if (c->state != ST_CLOSING) c_disconnects++;
        conn_close(c, 0);
        return;
    }
    size_t n = c->rlen + r, off = 0;
    if (c->state == ST_HANDSHAKE) {
        char *end = memmem(shared, n, "\r\n\r\n", 4);
        if (!end) goto keep;
        int status = 0;
        sscanf(shared, "HTTP/1.%*d %d", &status);
        if (status != 101) {
            hs_status_last = status; c_hs_fail++;
            conn_close(c, 0);
            return;
        }
        off = end + 4 - shared;
        c_connected++;
        if (o_deflate) {
            /* the accepted extension, if any: lower-case copy of the header block */
            size_t hl = (size_t)(end - shared);
            char *h = malloc(hl + 1);
            for (size_t i = 0; i < hl; i++) h[i] = (char)(shared[i] >= 'A' && shared[i] <= 'Z' ? shared[i] + 32 : shared[i]);
            h[hl] = 0;
            char *x = strstr(h, "\r\nsec-websocket-extensions:");
            if (x) {
                char *eol = strstr(x + 2, "\r\n");
                if (eol) *eol = 0;
                if (strstr(x, "permessage-deflate")) {
                    c->deflate = strstr(x, "server_no_context_takeover") ? 2 : 1;
                    c_deflate_ok++;
                    if (c->deflate == 2) c_deflate_nctx++;
                    if (c->zs) inflateReset(c->zs);
                }
            }
            free(h);
        }
        on_upgraded(c);
        if (c->fd < 0) return;
    }
    off += parse_frames(c, shared + off, n - off);
    if (c->fd < 0) return;
keep:
    c->rlen = n - off;
    if (c->rlen) {
        if (c->rlen > c->rcap) { c->rcap = c->rlen * 2; c->rbuf = xrealloc(c->rbuf, c->rcap); }
        memmove(c->rbuf, shared + off, c->rlen);
    }
}

static int64_t rnd_us(double lo_s, double hi_s) {
    return (int64_t)((lo_s + (hi_s - lo_s) * (rand() / (double)RAND_MAX)) * 1e6);
}

/* the upgrade succeeded: join a room first where the mode uses rooms */
static void on_upgraded(conn *c) {
    if (o_join && c->room >= 0 && o_mode != M_ECHO && o_mode != M_HANDSHAKE) {
        set_state(c, ST_JOINING); c->t_state = now_us();
        send_join(c);
        return;
    }
    set_state(c, ST_READY); c->t_state = now_us();
    on_ready(c);
}

/* the connection is ready for the mode's traffic */
static void on_ready(conn *c) {
    int64_t now = now_us();
    c->t_die = 0;
    switch (o_mode) {
    case M_HANDSHAKE:
        if (now >= t_ws && now < t_we) c_handshakes++;
        set_state(c, ST_CLOSING); c->t_die = now + 2000000;
        send_close(c, 1000);
        break;
    case M_CHURN:
        c->t_die = now + rnd_us(o_life_min, o_life_max);
        c->t_next = now + rnd_us(0, o_msg_interval / 1000.0);
        break;
    default:
        break;
    }
}

/* ---------- results ---------- */
static double pct(double p) { /* in ms */
    if (!nlat) return -1;
    uint64_t rank = (uint64_t)(p * (nlat - 1) + 0.5), seen = 0;
    for (int i = 0; i < HBUCKETS; i++) {
        seen += hist[i];
        if (seen > rank) { double v = hvalue(i); return (v > lat_max ? lat_max : v) / 1000.0; }
    }
    return lat_max / 1000.0;
}

static double win_cpu0, win_cpu1;
static int64_t win_t0, win_t1;

static void print_result(void) {
    double win_s = (win_t1 > win_t0 ? win_t1 - win_t0 : 1) / 1e6;
    double gcpu = win_cpu1 - win_cpu0;
    printf("RESULT {\"mode\":%d,\"clients\":%d,\"connected\":%lld,\"joined\":%lld,"
           "\"connect_fail\":%lld,\"handshake_fail\":%lld,\"last_bad_status\":%d,"
           "\"sent\":%lld,\"sent_in_window\":%lld,\"deliveries\":%lld,"
           "\"deliveries_in_window\":%lld,\"deliveries_of_window_msgs\":%lld,"
           "\"expected_of_window_msgs\":%lld,\"window_s\":%.4f,"
           "\"deliveries_per_s\":%.1f,\"delivery_ratio\":%.5f,"
           "\"round_trips\":%lld,\"round_trips_per_s\":%.1f,"
           "\"handshakes\":%lld,\"handshakes_per_s\":%.1f,"
           "\"latency_ms\":{\"n\":%zu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
           "\"acks\":%lld,\"errors\":%lld,\"slot_timeouts\":%lld,\"pings\":%lld,"
           "\"disconnects\":%lld,\"drops\":%lld,\"gen_cpu_s\":%.4f,\"gen_cpu_frac\":%.4f,"
           "\"retries\":%lld,\"rbytes\":%lld,\"rbytes_in_window\":%lld,\"deflate_offered\":%d,"
           "\"deflate_accepted\":%lld,\"deflate_no_context\":%lld,\"messages\":%lld,"
           "\"messages_compressed\":%lld,\"inflates\":%lld,",
           o_mode, o_clients, c_connected, c_joined, c_connect_fail, c_hs_fail, hs_status_last,
           c_sent, c_sent_win, c_deliv, c_deliv_win_recv, c_deliv_of_win, c_expected_win, win_s,
           c_deliv_win_recv / win_s, c_expected_win ? (double)c_deliv_of_win / c_expected_win : 0.0,
           c_rtt, c_rtt / win_s, c_handshakes, c_handshakes / win_s,
           nlat, pct(0.5), pct(0.9), pct(0.99), nlat ? lat_max / 1000.0 : -1.0,
           c_acks, c_errors, c_timeouts, c_pings, c_disconnects, c_drops, gcpu, gcpu / win_s,
           c_retries, c_rbytes, c_rbytes_win, o_deflate, c_deflate_ok, c_deflate_nctx, c_msgs, c_msgs_rsv1, c_inflates);
    printf("\"close_codes\":{");
    int first = 1;
    for (int i = 0; i < 5000; i++)
        if (c_close_codes[i]) { printf("%s\"%d\":%lld", first ? "" : ",", i, c_close_codes[i]); first = 0; }
    printf("},\"first_error\":\"");
    for (char *p = first_error; *p; p++) if (*p != '"' && *p != '\\') putchar(*p); else putchar('\'');
    printf("\"}\n");
    fflush(stdout);
}

static void event(const char *name, const char *json) {
    printf("EVENT %s %s\n", name, json ? json : "{}");
    fflush(stdout);
}

/* ---------- main loop pieces ---------- */
static int pending_connects(void) { return g_pending; }

static int next_to_open;
static void open_more(int limit_total) {
    int pend = pending_connects();
    while (pend < o_conc && next_to_open < limit_total) {
        conn *c = &conns[next_to_open++];
        if (open_conn(c) == 0) pend++;
    }
}

static void poll_once(int timeout_ms) {
    static int64_t last_poll;
    struct epoll_event evs[1024];
    if (o_poll_us > 0) {
        /* pace the reads: fewer, larger recv()s (and fewer wake-ups) per delivery */
        int64_t wait = last_poll + o_poll_us - now_us();
        if (wait > 0) {
            if (timeout_ms >= 0 && wait > (int64_t)timeout_ms * 1000) wait = (int64_t)timeout_ms * 1000;
            struct timespec ts = {wait / 1000000, (wait % 1000000) * 1000};
            nanosleep(&ts, NULL);
            timeout_ms = 0;
        }
        last_poll = now_us();
    }
    int n = epoll_wait(ep, evs, 1024, timeout_ms);
    if (n < 0) { if (errno == EINTR) return; die("epoll_wait"); }
    for (int i = 0; i < n; i++) {
        conn *c = evs[i].data.ptr;
        if (c == NULL) continue; /* stdin handled elsewhere */
        if (c->fd < 0) continue;
        if (c->state == ST_CONNECTING) {
            int err = 0; socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err) { c_connect_fail++; conn_close(c, 0); continue; }
            if (evs[i].events & EPOLLOUT) send_upgrade(c);
            continue;
        }
        if ((evs[i].events & EPOLLOUT) && c->wantout) { conn_flush(c); if (c->fd < 0) continue; }
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
    }
}

/* connect and (optionally) join all clients; retry failed ones a few times */
static void connect_all(void) {
    int64_t deadline = now_us() + (int64_t)(o_connect_timeout * 1e6);
    next_to_open = 0;
    for (;;) {
        open_more(nconns);
        int done = 1;
        for (int i = 0; i < nconns; i++) {
            conn *c = &conns[i];
            if (c->state == ST_CLOSED && c->attempts < 5 && next_to_open >= nconns &&
                pending_connects() < o_conc)
                open_conn(c);
            if (c->state != ST_READY && !(c->state == ST_CLOSED && c->attempts >= 5)) done = 0;
        }
        if (done && next_to_open >= nconns) break;
        if (now_us() > deadline) break;
        poll_once(10);
    }
}

static void settle(double secs) {
    int64_t end = now_us() + (int64_t)(secs * 1e6);
    while (now_us() < end) poll_once(10);
}

static void check_slot_timeouts(int64_t now) {
    int64_t lim = (int64_t)(o_slot_timeout * 1e6);
    for (int s = 0; s < nsenders; s++) {
        sender *sd = &senders[s];
        if (!sd->inflight) continue;
        for (uint32_t q = sd->oldest; q < sd->next_q; q++) {
            int k = q % RING;
            if (!sd->open[k]) continue;
            if (now - sd->sent_at[k] <= lim) break;
            release_slot(sd, q); c_timeouts++;
        }
        if (o_rate <= 0) fill_window(s);
    }
}

static void setup_senders(void) {
    nsenders = 0;
    senders = calloc(nconns, sizeof(sender));
    int *taken = calloc(nrooms, sizeof(int));
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        if (c->state != ST_READY || c->room < 0 || taken[c->room] >= o_spr) { c->sender = -1; continue; }
        taken[c->room]++;
        c->sender = nsenders;
        senders[nsenders].conn = i;
        senders[nsenders].expected = room_members[c->room] - 1;
        nsenders++;
    }
    free(taken);
}

static void run_fanout(void) {
    connect_all();
    char j[160];
    snprintf(j, sizeof j, "{\"connected\":%lld,\"joined\":%lld}", c_connected, c_joined);
    event("connected", j);
    settle(o_settle);
    setup_senders();
    int64_t t0 = now_us();
    t_ws = t0 + (int64_t)(o_warmup * 1e6);
    t_we = t_ws + (int64_t)(o_duration * 1e6);
    int64_t t_end = t_we + (int64_t)(o_drain * 1e6);
    sending = 1;
    int started = 0, ended = 0;
    double interval = o_rate > 0 ? 1e6 / o_rate : 0, next_send = t0;
    uint64_t rr = 0;
    if (o_rate <= 0) for (int s = 0; s < nsenders; s++) fill_window(s);
    int64_t last_check = t0;
    for (;;) {
        int64_t now = now_us();
        if (!started && now >= t_ws) { started = 1; win_t0 = now; win_cpu0 = cpu_s(); event("measure_start", NULL); }
        if (!ended && now >= t_we) {
            ended = 1; sending = 0; win_t1 = now; win_cpu1 = cpu_s(); event("measure_end", NULL);
        }
        if (now >= t_end) break;
        if (sending && o_rate > 0 && nsenders) {
            while (now >= next_send) {
                int s = rr++ % nsenders;
                sender *sd = &senders[s];
                uint32_t q = sd->next_q++;
                if (conns[sd->conn].state == ST_READY) send_chat(&conns[sd->conn], s, q, now);
                next_send += interval;
            }
        }
        if (o_rate <= 0 && now - last_check > 100000) { check_slot_timeouts(now); last_check = now; }
        int64_t wake = t_end;
        if (!started && t_ws < wake) wake = t_ws;
        if (!ended && t_we < wake) wake = t_we;
        if (sending && o_rate > 0 && next_send < wake) wake = (int64_t)next_send;
        int64_t dt = wake - now_us();
        int ms = dt <= 0 ? 0 : (int)((dt + 999) / 1000);
        if (ms > 100) ms = 100;
        poll_once(ms);
    }
}

static void run_storm(void) {
    t_ws = 0; t_we = INT64_MAX; /* bytes and deliveries all count */
    win_t0 = now_us(); win_cpu0 = cpu_s();
    event("measure_start", NULL);
    connect_all();
    win_t1 = now_us(); win_cpu1 = cpu_s();
    event("measure_end", NULL);
    char j[200];
    snprintf(j, sizeof j, "{\"connected\":%lld,\"joined\":%lld,\"retries\":%lld}",
             c_connected, c_joined, c_retries);
    event("joined", j);
    for (int i = 0; i < nconns; i++) if (conns[i].fd >= 0) conn_close(&conns[i], 1);
}

static void run_echo(void) {
    o_join = 0;
    for (int i = 0; i < nconns; i++) conns[i].room = -1;
    connect_all();
    event("connected", NULL);
    int64_t t0 = now_us();
    t_ws = t0 + (int64_t)(o_warmup * 1e6);
    t_we = t_ws + (int64_t)(o_duration * 1e6);
    int64_t t_end = t_we + (int64_t)(o_drain * 1e6);
    sending = 1;
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        if (c->state != ST_READY) continue;
        while (c->inflight < o_window) { c->inflight++; send_chat(c, i, 0, now_us()); }
    }
    int started = 0, ended = 0;
    for (;;) {
        int64_t now = now_us();
        if (!started && now >= t_ws) { started = 1; win_t0 = now; win_cpu0 = cpu_s(); event("measure_start", NULL); }
        if (!ended && now >= t_we) { ended = 1; sending = 0; win_t1 = now; win_cpu1 = cpu_s(); event("measure_end", NULL); }
        if (now >= t_end) break;
        poll_once(10);
    }
}

static void run_handshake(void) {
    o_join = 0;
    int64_t t0 = now_us();
    t_ws = t0 + (int64_t)(o_warmup * 1e6);
    t_we = t_ws + (int64_t)(o_duration * 1e6);
    int started = 0;
    for (int i = 0; i < nconns; i++) set_state(&conns[i], ST_FREE);
    for (;;) {
        int64_t now = now_us();
        if (!started && now >= t_ws) { started = 1; win_t0 = now; win_cpu0 = cpu_s(); event("measure_start", NULL); }
        if (now >= t_we) { win_t1 = now; win_cpu1 = cpu_s(); event("measure_end", NULL); break; }
        for (int i = 0; i < nconns; i++) {
            conn *c = &conns[i];
            if (c->state == ST_FREE || c->state == ST_CLOSED) { c->attempts = 0; c->room = -1; open_conn(c); }
            else if (c->state == ST_CLOSING && now > c->t_die) conn_close(c, 0);
        }
        poll_once(5);
    }
}

static void run_hold(void) {
    connect_all();
    char j[200];
    snprintf(j, sizeof j, "{\"connected\":%lld,\"joined\":%lld,\"connect_fail\":%lld,\"handshake_fail\":%lld}",
             c_connected, c_joined, c_connect_fail, c_hs_fail);
    event("ready", j);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    char line[256]; size_t ll = 0;
    int64_t bc_start = 0; long long bc_expected = 0, bc_base = 0;
    t_ws = 0; t_we = INT64_MAX; /* every delivery counts */
    for (;;) {
        struct epoll_event evs[1024];
        int n = epoll_wait(ep, evs, 1024, 50);
        int stdin_ready = 0;
        for (int i = 0; i < n; i++) if (evs[i].data.ptr == NULL) stdin_ready = 1;
        if (n > 0) {
            /* reuse poll_once's handler by re-dispatching */
            for (int i = 0; i < n; i++) {
                conn *c = evs[i].data.ptr;
                if (!c || c->fd < 0) continue;
                if ((evs[i].events & EPOLLOUT) && c->wantout) { conn_flush(c); if (c->fd < 0) continue; }
                if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
            }
        }
        if (bc_start) {
            long long got = c_deliv - bc_base;
            int64_t el = now_us() - bc_start;
            if (got >= bc_expected || el > 120000000) {
                snprintf(j, sizeof j, "{\"received\":%lld,\"expected\":%lld,\"ms\":%.1f}", got, bc_expected, el / 1000.0);
                event("broadcast", j);
                bc_start = 0;
            }
        }
        if (!stdin_ready) continue;
        ssize_t r = read(0, line + ll, sizeof line - 1 - ll);
        if (r <= 0) break;
        ll += r; line[ll] = 0;
        char *nl;
        int quit = 0;
        while ((nl = strchr(line, '\n'))) {
            *nl = 0;
            if (!strcmp(line, "quit")) quit = 1;
            else if (!strcmp(line, "stats")) {
                long long open = 0;
                for (int i = 0; i < nconns; i++) open += conns[i].fd >= 0;
                snprintf(j, sizeof j, "{\"open\":%lld,\"disconnects\":%lld,\"pings\":%lld}", open, c_disconnects, c_pings);
                event("stats", j);
            } else if (!strcmp(line, "broadcast")) {
                conn *c = &conns[0];
                bc_base = c_deliv; bc_start = now_us();
                bc_expected = 0;
                for (int i = 1; i < nconns; i++)
                    if (conns[i].state == ST_READY && conns[i].room == c->room) bc_expected++;
                send_chat(c, 0, 0, now_us());
            }
            size_t rest = ll - (nl + 1 - line);
            memmove(line, nl + 1, rest); ll = rest; line[ll] = 0;
        }
        if (quit) break;
    }
}

static void run_churn(void) {
    int64_t t0 = now_us(), t_end = t0 + (int64_t)(o_duration * 1e6);
    int64_t next_stats = t0 + (int64_t)(o_stats_every * 1e6);
    t_ws = t0; t_we = t_end;
    win_t0 = t0; win_cpu0 = cpu_s();
    long long connects = 0;
    uint32_t q = 0;
    for (int i = 0; i < nconns; i++) set_state(&conns[i], ST_FREE);
    for (;;) {
        int64_t now = now_us();
        if (now >= t_end) break;
        int pend = pending_connects();
        for (int i = 0; i < nconns; i++) {
            conn *c = &conns[i];
            if ((c->state == ST_FREE || c->state == ST_CLOSED) && pend < o_conc) {
                c->attempts = 0; c->room = i / o_room_size; c->t_die = 0;
                if (open_conn(c) == 0) { connects++; pend++; }
            } else if (c->state == ST_READY && c->t_die > 0) {
                if (now >= c->t_die) {
                    /* abrupt drop: alternate TCP reset and a plain close (FIN, no close frame) */
                    c_drops++;
                    conn_close(c, c_drops % 2);
                } else if (now >= c->t_next) {
                    send_chat(c, i, q++, now);
                    c->t_next = now + (int64_t)(o_msg_interval * 1000) / 2 + rnd_us(0, o_msg_interval / 1000.0);
                }
            } else if ((c->state == ST_CONNECTING || c->state == ST_HANDSHAKE || c->state == ST_JOINING) &&
                       now - c->t_state > 15000000) {
                c_connect_fail++; conn_close(c, 1);
            }
        }
        if (now >= next_stats) {
            char j[300];
            long long open = 0;
            for (int i = 0; i < nconns; i++) open += conns[i].state == ST_READY;
            snprintf(j, sizeof j, "{\"t\":%.1f,\"open\":%lld,\"connects\":%lld,\"drops\":%lld,\"sent\":%lld,"
                     "\"deliveries\":%lld,\"errors\":%lld,\"connect_fail\":%lld,\"handshake_fail\":%lld}",
                     (now - t0) / 1e6, open, connects, c_drops, c_sent, c_deliv, c_errors, c_connect_fail, c_hs_fail);
            event("stats", j);
            next_stats += (int64_t)(o_stats_every * 1e6);
        }
        poll_once(20);
    }
    win_t1 = now_us(); win_cpu1 = cpu_s();
    for (int i = 0; i < nconns; i++) if (conns[i].fd >= 0) conn_close(&conns[i], 1);
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port P [--host H] [--path /ws] [--mode fanout|echo|handshake|hold|churn|storm]\n"
            "  [--clients N] [--room-size K] [--senders-per-room S] [--window W] [--rate R]\n"
            "  [--size BYTES] [--users U] [--user-prefix P] [--concurrency C]\n"
            "  [--warmup S] [--duration S] [--drain S] [--settle S] [--slot-timeout S]\n"
            "  [--connect-timeout S] [--msg-interval MS] [--life-min S] [--life-max S]\n"
            "  [--stats-every S] [--poll-us US] [--no-join] [--deflate] [--words]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define ARG(name) (!strcmp(a, name) && i + 1 < argc)
        if (ARG("--host")) o_host = argv[++i];
        else if (ARG("--port")) o_port = atoi(argv[++i]);
        else if (ARG("--path")) o_path = argv[++i];
        else if (ARG("--user-prefix")) o_prefix = argv[++i];
        else if (ARG("--mode")) {
            const char *m = argv[++i];
            o_mode = !strcmp(m, "fanout") ? M_FANOUT : !strcmp(m, "echo") ? M_ECHO
                   : !strcmp(m, "handshake") ? M_HANDSHAKE : !strcmp(m, "hold") ? M_HOLD
                   : !strcmp(m, "churn") ? M_CHURN : !strcmp(m, "storm") ? M_STORM : -1;
            if (o_mode < 0) usage();
        }
        else if (ARG("--clients")) o_clients = atoi(argv[++i]);
        else if (ARG("--room-size")) o_room_size = atoi(argv[++i]);
        else if (ARG("--senders-per-room")) o_spr = atoi(argv[++i]);
        else if (ARG("--window")) o_window = atoi(argv[++i]);
        else if (ARG("--rate")) o_rate = atof(argv[++i]);
        else if (ARG("--size")) o_size = atoi(argv[++i]);
        else if (ARG("--users")) o_users = atoi(argv[++i]);
        else if (ARG("--concurrency")) o_conc = atoi(argv[++i]);
        else if (ARG("--warmup")) o_warmup = atof(argv[++i]);
        else if (ARG("--duration")) o_duration = atof(argv[++i]);
        else if (ARG("--drain")) o_drain = atof(argv[++i]);
        else if (ARG("--settle")) o_settle = atof(argv[++i]);
        else if (ARG("--slot-timeout")) o_slot_timeout = atof(argv[++i]);
        else if (ARG("--connect-timeout")) o_connect_timeout = atof(argv[++i]);
        else if (ARG("--msg-interval")) o_msg_interval = atof(argv[++i]);
        else if (ARG("--life-min")) o_life_min = atof(argv[++i]);
        else if (ARG("--life-max")) o_life_max = atof(argv[++i]);
        else if (ARG("--stats-every")) o_stats_every = atof(argv[++i]);
        else if (ARG("--poll-us")) o_poll_us = atoi(argv[++i]);
        else if (!strcmp(a, "--no-join")) o_join = 0;
        else if (!strcmp(a, "--deflate")) o_deflate = 1;
        else if (!strcmp(a, "--words")) o_words = 1;
        else usage();
    }
    if (!o_port) usage();
    if (o_window > RING / 2) o_window = RING / 2;
    if (o_size < 40) o_size = 40;
    if (o_size > 15000) o_size = 15000;
    if (o_room_size <= 0) { o_join = 0; o_room_size = o_clients; }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    ep = epoll_create1(0);
    shared = malloc(shared_cap);
    srand(12345);
    if (o_mode == M_HANDSHAKE) nconns = o_conc; else nconns = o_clients;
    conns = calloc(nconns, sizeof(conn));
    nrooms = (nconns + o_room_size - 1) / o_room_size;
    room_members = calloc(nrooms > 0 ? nrooms : 1, sizeof(int));
    for (int i = 0; i < nconns; i++) {
        conns[i].idx = i; conns[i].fd = -1; conns[i].room = o_join ? i / o_room_size : -1;
        conns[i].sender = -1;
    }
    if (o_mode == M_HANDSHAKE) { o_conc = nconns; }
    switch (o_mode) {
    case M_FANOUT: run_fanout(); break;
    case M_ECHO: run_echo(); break;
    case M_HANDSHAKE: run_handshake(); break;
    case M_HOLD: run_hold(); break;
    case M_CHURN: run_churn(); break;
    case M_STORM: run_storm(); break;
    }
    print_result();
    return 0;
}
