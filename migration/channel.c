/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Migration transports; the contract is in include/migration/channel.h. */
#include "migration/channel.h"

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
    if (g_str_has_prefix(uri, "tcp:")) {
        const char *hp = uri + 4, *colon = strrchr(hp, ':');
        if (colon && colon[1]) {
            g_autofree char *host = g_strndup(hp, colon - hp);
            size_t n = strlen(host);
            u->host = n >= 2 && host[0] == '[' && host[n - 1] == ']' ?
                      g_strndup(host + 1, n - 2) : g_strdup(host);
            u->port = g_strdup(colon + 1);
            return true;
        }
    }
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "unknown migration protocol: %s", uri);
    return false;
}

static bool unix_addr(const char *path, struct sockaddr_un *sa, GError **errp)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "UNIX socket path '%s' is too long", path);
        return false;
    }
    strcpy(sa->sun_path, path);
    return true;
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
    int fd = -1;
    if (!uri_parse(uri, &u, errp)) {
        return -1;
    }
    if (u.is_unix) {
        struct sockaddr_un sa;
        if (unix_addr(u.path, &sa, errp)) {
            fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno),
                            "Failed to connect to '%s': %s", u.path,
                            g_strerror(errno));
                close(fd);
                fd = -1;
            } else {
                tune(fd, false);
            }
        }
        uri_clear(&u);
        return fd;
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int gai = getaddrinfo(u.host, u.port, &hints, &res);
    if (gai) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "address resolution failed for %s:%s: %s", u.host, u.port,
                    gai_strerror(gai));
        uri_clear(&u);
        return -1;
    }
    int err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(err),
                    "Failed to connect to '%s:%s': %s", u.host, u.port,
                    g_strerror(err));
    } else {
        tune(fd, true);
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
    int fd = -1, one = 1;
    *addr = NULL;
    if (!uri_parse(uri, &u, errp)) {
        return -1;
    }
    if (u.is_unix) {
        struct sockaddr_un sa;
        if (unix_addr(u.path, &sa, errp)) {
            fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            unlink(u.path);
            if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
                listen(fd, 1) < 0) {
                g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno),
                            "Failed to bind socket to %s: %s", u.path,
                            g_strerror(errno));
                close(fd);
                fd = -1;
            } else {
                JsonObject *a = json_object_new();
                json_object_set_string_member(a, "type", "unix");
                json_object_set_string_member(a, "path", u.path);
                *addr = json_array_new();
                json_array_add_object_element(*addr, a);
            }
        }
        uri_clear(&u);
        return fd;
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE },
                    *res = NULL;
    int gai = getaddrinfo(*u.host ? u.host : NULL, u.port, &hints, &res);
    if (gai) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "address resolution failed for %s:%s: %s", u.host, u.port,
                    gai_strerror(gai));
        uri_clear(&u);
        return -1;
    }
    int err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(err),
                    "Failed to bind socket to %s:%s: %s", u.host, u.port,
                    g_strerror(err));
    } else {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        *addr = json_array_new();
        json_array_add_object_element(*addr, inet_address((struct sockaddr *)&ss));
    }
    uri_clear(&u);
    return fd;
}
