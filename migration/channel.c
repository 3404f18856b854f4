/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Migration transports; the contract is in include/migration/channel.h. */
#include "migration/channel.h"
#include "qemu/sockets.h"

#include <errno.h>
#include <stdbool.h>
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

/* Big socket buffers: migration is a bulk transfer. */
static void tune(int fd, bool tcp)
{
    int one = 1, buf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    if (tcp) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
}

int channel_connect(const char *uri, GError **errp)
{
    Uri u;
    if (!uri_parse(uri, &u, errp)) {
        return -1;
    }
    int fd = u.is_unix ? unix_connect(u.path, errp)
                       : inet_connect(u.host, u.port, errp);
    if (fd >= 0) {
        tune(fd, !u.is_unix);
    }
    uri_clear(&u);
    return fd;
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
