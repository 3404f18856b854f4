/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Stream sockets; the contract is in include/qemu/sockets.h. */
#include "qemu/sockets.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

bool inet_split(const char *hp, char **host, char **port)
{
    const char *colon = strrchr(hp, ':');
    if (!colon || !colon[1]) {
        return false;
    }
    size_t n = colon - hp;
    if (n >= 2 && hp[0] == '[' && hp[n - 1] == ']') {
        *host = g_strndup(hp + 1, n - 2);
    } else {
        *host = g_strndup(hp, n);
    }
    *port = g_strdup(colon + 1);
    return true;
}

/*
 * Try each address of @host:@port (bind+listen, or connect, for at most
 * @timeout_ms each where it is not 0).
 */
static int inet_open(const char *host, const char *port, bool listening,
                     int timeout_ms, GError **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                              .ai_flags = listening ? AI_PASSIVE : 0 };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
    if (gai) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "address resolution failed for %s:%s: %s", host, port,
                    gai_strerror(gai));
        return -1;
    }
    int fd = -1, err = 0, one = 1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        bool ok;
        if (listening) {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            ok = bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0;
        } else {
            struct timeval tv = { timeout_ms / 1000, timeout_ms % 1000 * 1000 };
            /* A blocking connect gives up after SO_SNDTIMEO (EINPROGRESS). */
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
            ok = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
            if (!ok && errno == EINPROGRESS) {
                errno = ETIMEDOUT;
            }
            tv = (struct timeval) { 0, 0 };
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        }
        if (!ok) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(err),
                    "Failed to %s %s:%s: %s",
                    listening ? "bind socket to" : "connect to", host, port,
                    g_strerror(err));
    }
    return fd;
}

int inet_listen(const char *host, const char *port, GError **errp)
{
    return inet_open(host, port, true, 0, errp);
}

int inet_connect(const char *host, const char *port, GError **errp)
{
    return inet_open(host, port, false, 0, errp);
}

int inet_connect_timeout(const char *host, const char *port, int timeout_ms,
                         GError **errp)
{
    return inet_open(host, port, false, timeout_ms, errp);
}

static bool unix_addr(const char *path, struct sockaddr_un *sa, GError **errp)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "UNIX socket path '%s' is too long", path);
        return false;
    }
    strcpy(sa->sun_path, path);
    return true;
}

int unix_listen(const char *path, mode_t mode, GError **errp)
{
    struct sockaddr_un sa;
    if (!unix_addr(path, &sa, errp)) {
        return -1;
    }
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
        /* Only a stale socket is replaced: a file or a directory there is
         * the user's (bind would say only 'Address already in use'). */
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_EXIST,
                    "Failed to bind socket to %s: it exists and is not a "
                    "socket", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        goto fail;
    }
    unlink(path);       /* a stale socket of an earlier run, as QEMU does */
    /* With @mode, the socket never exists with wider permissions. */
    mode_t old = mode ? umask(~mode & 0777) : 0;
    int ret = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (mode) {
        umask(old);
    }
    if (ret < 0 || (mode && chmod(path, mode) < 0) || listen(fd, 16) < 0) {
        goto fail;
    }
    return fd;
fail:
    g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                "Failed to bind socket to %s: %s", path, g_strerror(errno));
    if (fd >= 0) {
        close(fd);
    }
    return -1;
}

int unix_connect(const char *path, GError **errp)
{
    struct sockaddr_un sa;
    if (!unix_addr(path, &sa, errp)) {
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "Failed to connect to '%s': %s", path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

typedef struct AcceptBackoff {
    int fd;
    guint *src;
    GUnixFDSourceFunc fn;
    gpointer data;
} AcceptBackoff;

static gboolean accept_again(gpointer opaque)
{
    AcceptBackoff *b = opaque;
    *b->src = g_unix_fd_add(b->fd, G_IO_IN, b->fn, b->data);
    return G_SOURCE_REMOVE;
}

bool accept_backoff(int err, int listen_fd, guint *src, GUnixFDSourceFunc fn,
                    gpointer data)
{
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
        return false;
    }
    AcceptBackoff *b = g_new(AcceptBackoff, 1);
    *b = (AcceptBackoff) { listen_fd, src, fn, data };
    *src = g_timeout_add_full(G_PRIORITY_DEFAULT, ACCEPT_BACKOFF_MS,
                              accept_again, b, g_free);
    return true;
}
