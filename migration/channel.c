/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Migration transports; the contract is in include/migration/channel.h. */
#include "migration/channel.h"
#include "qemu/sockets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct Uri {
    bool is_unix;
    char *host, *port, *path;
} Uri;

static void uri_clear(Uri *u)
{
    g_free(u->host);
    g_free(u->port);
    g_free(u->path);
}

static bool uri_parse(const char *uri, Uri *u, GError **errp)
{
    memset(u, 0, sizeof(*u));
    if (g_str_has_prefix(uri, "unix:") && uri[5]) {
        u->is_unix = true;
        u->path = g_strdup(uri + 5);
        return true;
    }
    if (g_str_has_prefix(uri, "tcp:") && inet_split(uri + 4, &u->host, &u->port)) {
        return true;
    }
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "unknown migration protocol: %s", uri);
    return false;
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
                       : inet_connect(u.host, u.port, errp);
    if (fd >= 0) {
        channel_tune(fd);
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
