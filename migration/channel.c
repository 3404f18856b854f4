/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Migration transports; the contract is in include/migration/channel.h. */
#include "migration/channel.h"
#include "qemu/sockets.h"
#include "crypto/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/*
 * TCP keep-alive for a channel: QEMU's InetSocketAddress options, -1
 * where the URI does not say (ferry's defaults then, CHANNEL_KEEPALIVE_*).
 */
typedef struct KeepAlive {
    int on, count, idle, interval;
} KeepAlive;

typedef struct Uri {
    bool is_unix;
    char *host, *port, *path;
    KeepAlive ka;
} Uri;

static void uri_clear(Uri *u)
{
    g_free(u->host);
    g_free(u->port);
    g_free(u->path);
}

/* A u32 option's value, with QEMU's inet_parse messages. */
static bool opt_u32(const char *name, const char *v, int *out, GError **errp)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-') {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "error parsing %s argument", name);
        return false;
    }
    if (n > INT_MAX) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "%s is too large", name);
        return false;
    }
    *out = (int)n;
    return true;
}

/* ",keep-alive=on,keep-alive-count=N,keep-alive-idle=S,keep-alive-interval=S" */
static bool inet_opts(const char *opts, KeepAlive *ka, GError **errp)
{
    g_auto(GStrv) kv = g_strsplit(opts, ",", -1);
    for (char **o = kv; *o; o++) {
        if (!**o) {
            continue;
        }
        char *eq = strchr(*o, '=');
        g_autofree char *name = eq ? g_strndup(*o, eq - *o) : g_strdup(*o);
        const char *v = eq ? eq + 1 : "on";
        bool ok = true;
        if (!strcmp(name, "keep-alive")) {
            if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
                ka->on = 1;
            } else if (!strcmp(v, "off") || !strcmp(v, "no") ||
                       !strcmp(v, "false")) {
                ka->on = 0;
            } else {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "error parsing keep-alive argument");
                ok = false;
            }
        } else if (!strcmp(name, "keep-alive-count")) {
            ok = opt_u32(name, v, &ka->count, errp);
        } else if (!strcmp(name, "keep-alive-idle")) {
            ok = opt_u32(name, v, &ka->idle, errp);
        } else if (!strcmp(name, "keep-alive-interval")) {
            ok = opt_u32(name, v, &ka->interval, errp);
        } else {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Invalid parameter '%s'", name);
            ok = false;
        }
        if (!ok) {
            return false;
        }
    }
    return true;
}

static bool uri_parse(const char *uri, Uri *u, GError **errp)
{
    memset(u, 0, sizeof(*u));
    u->ka = (KeepAlive) { -1, -1, -1, -1 };
    if (g_str_has_prefix(uri, "unix:") && uri[5]) {
        u->is_unix = true;
        u->path = g_strdup(uri + 5);
        return true;
    }
    if (g_str_has_prefix(uri, "tcp:")) {
        const char *comma = strchr(uri + 4, ',');
        g_autofree char *hp = comma ? g_strndup(uri + 4, comma - (uri + 4))
                                    : g_strdup(uri + 4);
        if (inet_split(hp, &u->host, &u->port)) {
            if (comma && !inet_opts(comma + 1, &u->ka, errp)) {
                uri_clear(u);
                return false;
            }
            return true;
        }
    }
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "unknown migration protocol: %s", uri);
    return false;
}

/*
 * Keep-alive on a TCP socket, ferry's defaults where @ka says nothing:
 * probes after CHANNEL_KEEPALIVE_IDLE_S idle, every
 * CHANNEL_KEEPALIVE_INTERVAL_S, CHANNEL_KEEPALIVE_COUNT unanswered end
 * it; and as long (TCP_USER_TIMEOUT) for data sent and not acknowledged,
 * which keep-alive alone does not cover.  keep-alive=off: the kernel's
 * own (no probes, data retried for about 15 minutes), as QEMU's default.
 */
static bool keepalive_apply(int fd, const KeepAlive *ka, GError **errp)
{
    if (ka->on == 0) {
        return true;
    }
    int on = 1;
    int idle = ka->idle > 0 ? ka->idle : CHANNEL_KEEPALIVE_IDLE_S;
    int intvl = ka->interval > 0 ? ka->interval : CHANNEL_KEEPALIVE_INTERVAL_S;
    int cnt = ka->count > 0 ? ka->count : CHANNEL_KEEPALIVE_COUNT;
    unsigned int user_ms = (unsigned int)(idle + intvl * cnt) * 1000;
    static const struct { int level, name; const char *what; } opts[] = {
        { SOL_SOCKET, SO_KEEPALIVE, "Unable to set KEEPALIVE socket option" },
        { IPPROTO_TCP, TCP_KEEPIDLE,
          "Unable to set TCP keep-alive idle option on socket" },
        { IPPROTO_TCP, TCP_KEEPINTVL,
          "Unable to set TCP keep-alive interval option on socket" },
        { IPPROTO_TCP, TCP_KEEPCNT,
          "Unable to set TCP keep-alive count option on socket" },
        { IPPROTO_TCP, TCP_USER_TIMEOUT,
          "Unable to set TCP user timeout option on socket" },
    };
    int vals[] = { on, idle, intvl, cnt, (int)user_ms };
    for (size_t i = 0; i < G_N_ELEMENTS(opts); i++) {
        if (setsockopt(fd, opts[i].level, opts[i].name, &vals[i],
                       sizeof(vals[i])) < 0) {
            g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno), "%s: %s",
                        opts[i].what, g_strerror(errno));
            return false;
        }
    }
    return true;
}

void channel_keepalive_default(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
        keepalive_apply(fd, &(KeepAlive) { -1, -1, -1, -1 }, NULL);
    }
}

/*
 * Big socket buffers: migration is a bulk transfer.  No Nagle on TCP:
 * page requests and requested pages are small writes, and with Nagle a
 * small write waits for the ACK of the one before, which the peer may
 * delay up to 40 ms when it has nothing to send back (the main stream
 * of a postcopy with preempt, whose pages take the other connection).
 */
static void tune(int fd, bool tcp)
{
    int one = 1, buf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    if (tcp) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
}

/* file:PATH[,offset=N]: the path and the offset (0 if none). */
static bool file_uri(const char *spec, char **path, off_t *offset, GError **errp)
{
    const char *comma = strstr(spec, ",offset=");
    *offset = 0;
    if (comma) {
        char *end;
        errno = 0;
        long long v = strtoll(comma + 8, &end, 0);
        if (errno || *end || v < 0 || end == comma + 8) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "file: invalid offset '%s'", comma + 8);
            return false;
        }
        *offset = v;
    }
    *path = comma ? g_strndup(spec, comma - spec) : g_strdup(spec);
    if (!**path) {
        g_free(*path);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "file: needs a path");
        return false;
    }
    return true;
}

/* exec:COMMAND through /bin/sh: its stdin (source) or stdout (destination). */
static int exec_command(const char *cmd, bool writing, GError **errp)
{
    const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
    int in = -1, out = -1;
    if (!g_spawn_async_with_pipes(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT,
                                  NULL, NULL, NULL, writing ? &in : NULL,
                                  writing ? NULL : &out, NULL, errp)) {
        return -1;
    }
    return writing ? in : out;
}

int channel_open_file(const char *uri, bool writing, GError **errp)
{
    g_autofree char *path = NULL;
    off_t offset;
    if (!file_uri(uri + 5, &path, &offset, errp)) {
        return -1;
    }
    int fd = open(path, writing ? (O_WRONLY | O_CREAT | (offset ? 0 : O_TRUNC))
                                : O_RDONLY, 0600);
    if (fd < 0 || lseek(fd, offset, SEEK_SET) < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot open migration file %s: %s", path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

int channel_exec(const char *uri, bool writing, GError **errp)
{
    return exec_command(uri + 5, writing, errp);
}

int channel_connect(const char *uri, GError **errp)
{
    Uri u;
    if (g_str_has_prefix(uri, "file:")) {
        return channel_open_file(uri, true, errp);
    }
    if (g_str_has_prefix(uri, "exec:")) {
        return channel_exec(uri, true, errp);
    }
    if (!uri_parse(uri, &u, errp)) {
        return -1;
    }
    int fd = u.is_unix ? unix_connect(u.path, errp)
                       : inet_connect_timeout(u.host, u.port,
                                              CHANNEL_CONNECT_TIMEOUT_S * 1000,
                                              errp);
    if (fd >= 0) {
        channel_tune(fd);
        if (!u.is_unix && !keepalive_apply(fd, &u.ka, errp)) {
            close(fd);
            fd = -1;
        }
    }
    uri_clear(&u);
    return fd;
}

void channel_tune(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        return;                 /* not a socket: a pipe or a file */
    }
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        tune(fd, true);
    } else if (ss.ss_family == AF_UNIX) {
        tune(fd, false);
    }
}

static JsonObject *inet_address(const struct sockaddr *sa)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    getnameinfo(sa, len, host, sizeof(host), port, sizeof(port),
                NI_NUMERICHOST | NI_NUMERICSERV);
    JsonObject *a = json_object_new();
    json_object_set_string_member(a, "type", "inet");
    json_object_set_string_member(a, "host", host);
    json_object_set_string_member(a, "port", port);
    return a;
}

int channel_listen(const char *uri, JsonArray **addr, GError **errp)
{
    Uri u;
    *addr = NULL;
    if (!uri_parse(uri, &u, errp)) {
        return -1;
    }
    int fd = u.is_unix ? unix_listen(u.path, 0, errp)
                       : inet_listen(u.host, u.port, errp);
    /* Accepted connections inherit the listener's keep-alive options. */
    if (fd >= 0 && !u.is_unix && !keepalive_apply(fd, &u.ka, errp)) {
        close(fd);
        fd = -1;
    }
    if (fd >= 0) {
        *addr = json_array_new();
        if (u.is_unix) {
            JsonObject *a = json_object_new();
            json_object_set_string_member(a, "type", "unix");
            json_object_set_string_member(a, "path", u.path);
            json_array_add_object_element(*addr, a);
        } else {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            getsockname(fd, (struct sockaddr *)&ss, &sl);
            json_array_add_object_element(*addr,
                                          inet_address((struct sockaddr *)&ss));
        }
    }
    uri_clear(&u);
    return fd;
}

void channel_close(int fd)
{
    if (fd >= 0) {
        tls_session_detach(fd);
        close(fd);
    }
}

bool channel_peer_sent_tls(int fd)
{
    uint8_t b[3];
    return recv(fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT) == sizeof(b) &&
           (b[0] == 0x15 || b[0] == 0x16) && b[1] == 0x03 && b[2] <= 0x04;
}
