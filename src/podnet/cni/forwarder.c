/* /opt/cni/bin/podnet, compiled: hand one CNI call to the podnet agent, or exec the plugin.
 *
 * A runtime starts the plugin as a new process for every call, so start-up is part of every
 * ADD: Debian's python3 -IS starts in ~14 ms, this in ~1 ms. It does what cni/entry.py (the
 * stdlib Python entry) does on its fast path and nothing more:
 *
 *   - read stdin (the network config) and take the CNI_* variables and PODNET_DEBUG;
 *   - send them as JSON {"env": {...}, "stdin": "..."} to the agent's unix socket,
 *     `POST /v1/cni/framed` (HTTP/1.1, one request per connection);
 *   - the agent answers "CODE STDOUT_LEN STDERR_LEN\n" + stdout + stderr, the bytes of
 *     cni.plugin.handle(): they are written out unchanged and CODE is the exit code.
 *
 * Which agent: PODNET_RUN's socket when set; else, with PODNET_STORE naming a cluster store
 * (etcd), the agent of that store, found as podnet.config finds it: the store's identity is
 * in /run/podnet-stores/<first 32 hex digits of SHA-256(the URL exactly as written)> (root's,
 * written by every podnet process that opened the store) and its agent listens on
 * /run/podnet-<first 8 of the identity>/agent.sock (entry.py's _store_socket() does the same);
 * else /run/podnet/agent.sock, the default store's.
 *
 * Whenever that path does not apply it execs the whole plugin, `PODNET_PYTHON -m podnet.cni`,
 * with stdin replayed from a memfd, exactly as entry.py's fallback does: no agent listens
 * (ENOENT, ECONNREFUSED), a cluster store whose identity this host has not recorded, another
 * SQLite root (a PODNET_ROOT other than /var/lib/podnet without PODNET_RUN: the same rule as
 * entry.py's main()), stdin or a variable is not UTF-8, the request would exceed the agent's
 * 1 MiB, or the agent has no framed route (an older agent answers 404 before doing anything).
 *
 * Bounds: every buffer is sized before it is written; stdin is read up to MAX_BODY (the rest
 * is copied to the memfd for the fallback); the answer is read up to MAX_ANSWER; every
 * socket wait has the same deadline as entry.py (TIMEOUT_S: an ADD may wait for the agent's
 * lock; the runtime's own timeout is the real bound).
 *
 * `podnet cni install` builds it with `cc -O2` and PODNET_PYTHON defined as the venv's
 * interpreter (cli/cmd_cni.py).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef PODNET_PYTHON
#define PODNET_PYTHON "/opt/podnet/venv/bin/python"
#endif

#define MAX_BODY (1024 * 1024)       /* agent/server.py MAX_BODY: larger requests run here */
#define MAX_ANSWER (16 * 1024 * 1024) /* an ADD result is a few KiB */
#define TIMEOUT_S 300
#define DEFAULT_RUN "/run/podnet"
#define DEFAULT_ROOT "/var/lib/podnet"
#define STORES_DIR "/run/podnet-stores" /* config._known_ids_file */
#define SCOPE_LEN 8                       /* config.SCOPE_LEN */

extern char **environ;

struct buf {
    char *data;
    size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t more)
{
    if (more > SIZE_MAX / 2 - b->len)
        return -1;
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data)
        return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_add(struct buf *b, const void *data, size_t len)
{
    if (buf_reserve(b, len) < 0)
        return -1;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* read(2), again after a signal: >0 bytes read, 0 at the end, -1 on an error */
static ssize_t read_some(int fd, void *data, size_t len)
{
    for (;;) {
        ssize_t n = read(fd, data, len);
        if (n >= 0 || errno != EINTR)
            return n;
    }
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
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

/* --- JSON strings ------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s (as Python's strict decoder accepts it), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlongs */
        if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* Append s as a quoted JSON string; -1 if it is not UTF-8 or memory ran out. */
static int json_string(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    if (buf_add(b, "\"", 1) < 0)
        return -1;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            if (buf_add(b, esc, 2) < 0)
                return -1;
            i++;
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            if (buf_add(b, esc, 6) < 0)
                return -1;
            i++;
        } else {
            size_t len = utf8_seq(p + i, n - i);
            if (len == 0)
                return -1;
            size_t start = i;
            i += len;
            /* copy a run of plain bytes at once */
            while (i < n && p[i] >= 0x20 && p[i] < 0x80 && p[i] != '"' && p[i] != '\\')
                i++;
            if (buf_add(b, s + start, i - start) < 0)
                return -1;
        }
    }
    return buf_add(b, "\"", 1);
}

/* --- the fallback: the whole plugin in this process's place ------------------------------ */

static int buf_str(struct buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

/* The spec's error JSON on stdout, as entry.py's _error() writes it; exit code 1. */
static int cni_error(int code, const char *msg, const char *details)
{
    struct buf b = {0};
    char num[16];
    snprintf(num, sizeof num, "%d", code);
    int ok = buf_str(&b, "{\"cniVersion\": \"1.1.0\", \"code\": ") == 0 && buf_str(&b, num) == 0
             && buf_str(&b, ", \"msg\": ") == 0 && json_string(&b, msg, strlen(msg)) == 0
             && buf_str(&b, ", \"details\": ") == 0;
    size_t before_details = b.len;
    if (ok && json_string(&b, details, strlen(details)) < 0) { /* cut mid-character, or not UTF-8 */
        b.len = before_details;
        ok = json_string(&b, "", 0) == 0;
    }
    ok = ok && buf_str(&b, "}\n") == 0;
    if (ok)
        write_all(1, b.data, b.len);
    free(b.data);
    return 1;
}

/* exec `PODNET_PYTHON -m podnet.cni` with fd 0 holding what was read of stdin, then the rest. */
static int fallback(const char *read_so_far, size_t len, int more)
{
    if (access(PODNET_PYTHON, X_OK) != 0)
        return cni_error(50, "podnet is not installed: " PODNET_PYTHON " is missing",
                         "run podnet's install.sh, or `podnet cni install` again");
    int fd = memfd_create("cni-config", MFD_CLOEXEC);
    if (fd < 0 || write_all(fd, read_so_far, len) < 0)
        return cni_error(5, "could not keep the configuration for the plugin", strerror(errno));
    if (more) {
        char chunk[65536];
        ssize_t n;
        while ((n = read_some(0, chunk, sizeof chunk)) > 0)
            if (write_all(fd, chunk, (size_t)n) < 0)
                return cni_error(5, "could not keep the configuration for the plugin", strerror(errno));
        if (n < 0)
            return cni_error(5, "could not read the configuration from stdin", strerror(errno));
    }
    if (lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, 0) < 0)
        return cni_error(5, "could not replay the configuration to the plugin", strerror(errno));
    char *argv[] = {PODNET_PYTHON, "-m", "podnet.cni", NULL};
    execv(PODNET_PYTHON, argv);
    return cni_error(50, "could not start the podnet plugin " PODNET_PYTHON, strerror(errno));
}

/* --- the agent ---------------------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait for events on fd until the deadline; -1 with errno ETIMEDOUT when it passed. */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        double left = deadline - now();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* A connected socket; -2 when nobody listens (the caller falls back), -1 on another error. */
static int connect_agent(const char *path, double deadline)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    for (;;) {
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
            return fd;
        if (errno == EAGAIN && now() < deadline) { /* the listen backlog is full: wait a turn */
            struct timespec pause = {0, 2000000};
            nanosleep(&pause, NULL);
            continue;
        }
        if (errno == EINTR)
            continue;
        int err = errno;
        close(fd);
        errno = err;
        return (err == ENOENT || err == ECONNREFUSED) ? -2 : -1;
    }
}

static int send_all(int fd, const char *data, size_t len, double deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN && wait_fd(fd, POLLOUT, deadline) == 0)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int recv_all(int fd, struct buf *answer, double deadline)
{
    for (;;) {
        if (buf_reserve(answer, 65536) < 0)
            return -1;
        ssize_t n = recv(fd, answer->data + answer->len, 65536, 0);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN && wait_fd(fd, POLLIN, deadline) == 0)
                continue;
            return -1;
        }
        answer->len += (size_t)n;
        if (answer->len > MAX_ANSWER) {
            errno = EFBIG;
            return -1;
        }
    }
}

/* A decimal number at *p (no sign, at most 9 digits), advancing *p; -1 if there is none. */
static long number(const char **p, const char *end)
{
    long value = 0;
    int digits = 0;
    while (*p < end && **p >= '0' && **p <= '9' && digits < 9) {
        value = value * 10 + (**p - '0');
        (*p)++;
        digits++;
    }
    return digits ? value : -1;
}

/* Write the framed answer out; the exit code, or -1 when it is not a framed answer. */
static int pass_through(const char *body, size_t len)
{
    const char *p = body, *end = body + len;
    long code = number(&p, end);
    if (code < 0 || code > 255 || p >= end || *p++ != ' ')
        return -1;
    long out_len = number(&p, end);
    if (out_len < 0 || p >= end || *p++ != ' ')
        return -1;
    long err_len = number(&p, end);
    if (err_len < 0 || p >= end || *p++ != '\n')
        return -1;
    if ((size_t)(end - p) != (size_t)out_len + (size_t)err_len)
        return -1;
    if (write_all(1, p, (size_t)out_len) < 0 || write_all(2, p + out_len, (size_t)err_len) < 0)
        return (int)code ? (int)code : 1; /* the runtime went away: nobody reads the answer anyway */
    return (int)code;
}

static int wanted(const char *var)
{
    return strncmp(var, "CNI_", 4) == 0 || strncmp(var, "PODNET_DEBUG=", 13) == 0;
}

/* {"env": {CNI_*, PODNET_DEBUG}, "stdin": "..."}; -1 when something is not UTF-8. */
static int request_body(struct buf *b, const char *in, size_t in_len)
{
    if (buf_str(b, "{\"env\": {") < 0)
        return -1;
    int first = 1;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || !wanted(*e))
            continue;
        if (!first && buf_str(b, ", ") < 0)
            return -1;
        first = 0;
        if (json_string(b, *e, (size_t)(eq - *e)) < 0 || buf_str(b, ": ") < 0
            || json_string(b, eq + 1, strlen(eq + 1)) < 0)
            return -1;
    }
    if (buf_str(b, "}, \"stdin\": ") < 0 || json_string(b, in, in_len) < 0 || buf_str(b, "}") < 0)
        return -1;
    return 0;
}

static const char *nonempty(const char *name)
{
    const char *value = getenv(name);
    return value && *value ? value : NULL;
}

/* --- which agent: a cluster store's is named by its identity -------------------------------- */

/* SHA-256 (FIPS 180-4), only to name the identity file as podnet.config does (hashlib.sha256). */
static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

/* The first 32 hex digits of SHA-256(data) into out (33 bytes with the NUL). */
static void sha256_hex32(const char *data, size_t len, char out[33])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    unsigned char block[64];
    size_t done = 0;
    for (; len - done >= 64; done += 64)
        sha256_block(h, (const unsigned char *)data + done);
    size_t rest = len - done;
    memcpy(block, data + done, rest);
    block[rest++] = 0x80;
    if (rest > 56) {
        memset(block + rest, 0, 64 - rest);
        sha256_block(h, block);
        rest = 0;
    }
    memset(block + rest, 0, 56 - rest);
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_block(h, block);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        unsigned char byte = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
        out[2 * i] = hex[byte >> 4];
        out[2 * i + 1] = hex[byte & 15];
    }
    out[32] = 0;
}

/* The run directory of the agent serving the cluster store at url: /run/podnet-<scope>; 0 when
 * this host has no (trustworthy) record of that store's identity: the plugin then runs here. */
static int store_run_dir(const char *url, char *run, size_t size)
{
    char name[33];
    sha256_hex32(url, strlen(url), name);
    char path[sizeof STORES_DIR + 40];
    snprintf(path, sizeof path, "%s/%s", STORES_DIR, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    struct stat st;
    char id[128];
    ssize_t n = -1;
    /* root's file, written by podnet only (the directory is root's, 0700): anything else is ignored */
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == 0 && !(st.st_mode & 022))
        n = read_some(fd, id, sizeof id - 1);
    close(fd);
    if (n < SCOPE_LEN)
        return 0;
    for (int i = 0; i < SCOPE_LEN; i++) /* the scope becomes part of a path: hex digits only */
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return 0;
    int len = snprintf(run, size, "/run/podnet-%.*s", SCOPE_LEN, id);
    return len > 0 && (size_t)len < size;
}

/* entry.py's rule: another SQLite root has its own agent, named by its identity: the plugin runs here. */
static int other_root(void)
{
    if (nonempty("PODNET_RUN") || nonempty("PODNET_STORE"))
        return 0;
    const char *root = nonempty("PODNET_ROOT");
    if (!root)
        return 0;
    char real[PATH_MAX];
    return !realpath(root, real) || strcmp(real, DEFAULT_ROOT) != 0;
}

int main(void)
{
    /* stdin, up to MAX_BODY bytes: anything larger goes to the plugin in-process */
    struct buf in = {0};
    int more = 0;
    for (;;) {
        if (buf_reserve(&in, 65536) < 0)
            return cni_error(5, "out of memory reading the configuration", "");
        size_t room = MAX_BODY + 1 - in.len;
        ssize_t n = read_some(0, in.data + in.len, room < 65536 ? room : 65536);
        if (n == 0)
            break;
        if (n < 0)
            return cni_error(5, "could not read the configuration from stdin", strerror(errno));
        in.len += (size_t)n;
        if (in.len > MAX_BODY) {
            more = 1;
            break;
        }
    }
    if (more || other_root())
        return fallback(in.data, in.len, more);
    const char *run = nonempty("PODNET_RUN");
    const char *url = nonempty("PODNET_STORE");
    char store_run[64];
    if (!run && url) {
        if (!store_run_dir(url, store_run, sizeof store_run))
            return fallback(in.data, in.len, 0);
        run = store_run;
    }

    struct buf body = {0};
    if (request_body(&body, in.data ? in.data : "", in.len) < 0 || body.len > MAX_BODY)
        return fallback(in.data, in.len, 0); /* the plugin answers the spec's decode error itself */

    char path[PATH_MAX];
    int len = snprintf(path, sizeof path, "%s/agent.sock", run ? run : DEFAULT_RUN);
    if (len < 0 || (size_t)len >= sizeof path)
        return fallback(in.data, in.len, 0);
    double deadline = now() + TIMEOUT_S;
    int fd = connect_agent(path, deadline);
    if (fd == -2)
        return fallback(in.data, in.len, 0);
    if (fd < 0)
        return cni_error(11, "the podnet agent did not answer", strerror(errno));

    char head[256];
    len = snprintf(head, sizeof head,
                   "POST /v1/cni/framed HTTP/1.1\r\nHost: podnet-agent\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n", body.len);
    struct buf answer = {0};
    if (len < 0 || (size_t)len >= sizeof head || send_all(fd, head, (size_t)len, deadline) < 0
        || send_all(fd, body.data, body.len, deadline) < 0 || recv_all(fd, &answer, deadline) < 0) {
        int err = errno;
        close(fd);
        return cni_error(11, "the podnet agent did not answer", strerror(err));
    }
    close(fd);

    /* "HTTP/1.1 200 OK\r\n...\r\n\r\n" then the framed answer */
    char *sep = answer.len ? memmem(answer.data, answer.len, "\r\n\r\n", 4) : NULL;
    if (!sep || answer.len < 12 || memcmp(answer.data, "HTTP/1.", 7) != 0)
        return cni_error(11, "the podnet agent gave an unreadable answer", "");
    char status[4] = {answer.data[9], answer.data[10], answer.data[11], 0};
    const char *payload = sep + 4;
    size_t payload_len = answer.len - (size_t)(payload - answer.data);
    if (strcmp(status, "404") == 0) /* an agent without the framed route: nothing was done */
        return fallback(in.data, in.len, 0);
    if (strcmp(status, "200") != 0) {
        /* the agent refused the request itself ({"code", "message", "hint"}): say so, with its words */
        char details[512];
        size_t n = payload_len < sizeof details - 1 ? payload_len : sizeof details - 1;
        memcpy(details, payload, n);
        details[n] = 0;
        char msg[64];
        snprintf(msg, sizeof msg, "the podnet agent refused the call (HTTP %s)", status);
        return cni_error(100, msg, details);
    }
    int code = pass_through(payload, payload_len);
    if (code < 0)
        return cni_error(11, "the podnet agent gave an unreadable answer", "");
    return code;
}
