/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The QMP server: sockets, sessions, negotiation, events.  The contract
 * is in include/monitor/qmp.h.  Everything runs in the main loop.
 */
#include "monitor/qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib-unix.h>

#include "monitor/json-stream.h"
#include "qemu/main-loop.h"
#include "qemu/sockets.h"

/* The QEMU version whose QMP interface ferry follows (docs/qmp.md). */
#define QEMU_MAJOR 10
#define QEMU_MINOR 1
#define QEMU_MICRO 0

/*
 * A session whose replies pile up unread is not read from until they
 * drain below OUT_HIGH (QEMU suspends the monitor): a client that sends
 * and never reads costs this much, not one reply per command.  Events
 * are queued whatever the client does: a session whose queue passes
 * OUT_MAX is closed.
 */
#define OUT_HIGH    (64 << 10)
#define OUT_MAX     (16 << 20)

typedef struct QmpSession {
    QmpServer *srv;
    int fd;
    guint in_src, out_src;
    JsonStream js;
    QmpSessionState st;
    GString *out;               /* queued, not yet written */
    GArray *fds;                /* received with SCM_RIGHTS, not yet used */
} QmpSession;

struct QmpServer {
    QmpDispatcher *d;
    int listen_fd;
    guint listen_src;
    char *unix_path;            /* removed at free */
    GList *sessions;
};

/* ---- Addresses ------------------------------------------------------------ */

bool monitor_addr_parse(const char *spec, MonitorAddr *a, GError **errp)
{
    memset(a, 0, sizeof(*a));
    a->fd = -1;
    if (!strcmp(spec, "stdio")) {
        a->is_stdio = true;
        return true;
    }
    g_auto(GStrv) parts = g_strsplit(spec, ",", -1);
    if (g_str_has_prefix(parts[0], "unix:") && parts[0][5]) {
        a->is_unix = true;
        a->path = g_strdup(parts[0] + 5);
    } else if (g_str_has_prefix(parts[0], "tcp:") &&
               inet_split(parts[0] + 4, &a->host, &a->port)) {
        /* split into a->host and a->port */
    } else if (g_str_has_prefix(parts[0], "fd:") && parts[0][3]) {
        char *end;
        long n = strtol(parts[0] + 3, &end, 10);
        if (*end || n < 0 || n > INT_MAX) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "'%s': fd: takes a file descriptor number", spec);
            return false;
        }
        a->fd = (int)n;
    } else {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "'%s': expected unix:PATH, tcp:HOST:PORT or fd:N", spec);
        return false;
    }
    bool server = false, nowait = false;
    for (char **p = parts + 1; *p; p++) {
        if (!strcmp(*p, "server") || !strcmp(*p, "server=on")) {
            server = true;
        } else if (!strcmp(*p, "nowait") || !strcmp(*p, "wait=off")) {
            nowait = true;
        } else if (!strcmp(*p, "server=off") || !strcmp(*p, "wait=on")) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "'%s': only server=on,wait=off is supported", spec);
            goto fail;
        } else {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "'%s': unknown option '%s'", spec, *p);
            goto fail;
        }
    }
    if (!server || !nowait) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "'%s': give server=on,wait=off", spec);
        goto fail;
    }
    return true;
fail:
    monitor_addr_cleanup(a);
    return false;
}

void monitor_addr_cleanup(MonitorAddr *a)
{
    g_free(a->path);
    g_free(a->host);
    g_free(a->port);
    memset(a, 0, sizeof(*a));
    a->fd = -1;
}

int monitor_listen(const MonitorAddr *a, GError **errp)
{
    if (a->fd >= 0) {
        /* Inherited: it must be a socket that listens already. */
        int on = 0;
        socklen_t len = sizeof(on);
        errno = 0;
        if (getsockopt(a->fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0 || !on) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "fd %d is not a listening socket%s%s", a->fd,
                        errno ? ": " : "", errno ? g_strerror(errno) : "");
            return -1;
        }
        fcntl(a->fd, F_SETFD, FD_CLOEXEC);
        fcntl(a->fd, F_SETFL, fcntl(a->fd, F_GETFL) | O_NONBLOCK);
        return a->fd;
    }
    /* Unix sockets 0600: only the owner may drive the VM. */
    return a->is_unix ? unix_listen(a->path, 0600, errp)
                      : inet_listen(a->host, a->port, errp);
}

/* ---- Sessions ----------------------------------------------------------------- */

static void session_close(QmpSession *s)
{
    QmpServer *srv = s->srv;
    srv->sessions = g_list_remove(srv->sessions, s);
    if (s->in_src) {
        g_source_remove(s->in_src);
    }
    if (s->out_src) {
        g_source_remove(s->out_src);
    }
    close(s->fd);
    json_stream_cleanup(&s->js);
    g_string_free(s->out, true);
    for (guint i = 0; i < s->fds->len; i++) {
        close(g_array_index(s->fds, int, i));
    }
    g_array_free(s->fds, true);
    g_free(s);
}

/* Write what is queued without blocking; false if the peer is gone. */
static bool session_flush(QmpSession *s)
{
    while (s->out->len) {
        ssize_t n = send(s->fd, s->out->str, s->out->len, MSG_NOSIGNAL);
        if (n < 0) {
            return errno == EAGAIN || errno == EINTR;
        }
        g_string_erase(s->out, 0, n);
    }
    return true;
}

static gboolean session_writable(gint fd, GIOCondition cond, gpointer opaque);
static gboolean session_readable(gint fd, GIOCondition cond, gpointer opaque);

/* Read from the client only while its replies are being taken. */
static void session_update_read(QmpSession *s)
{
    bool want = s->out->len < OUT_HIGH;
    if (want && !s->in_src) {
        s->in_src = g_unix_fd_add(s->fd, G_IO_IN | G_IO_HUP | G_IO_ERR,
                                  session_readable, s);
    } else if (!want && s->in_src) {
        g_source_remove(s->in_src);
        s->in_src = 0;
    }
}

/*
 * Queue @msg (taken: freed here), with @raw_id (the request's id as the
 * client wrote it, or NULL) as its last member, write what the socket
 * takes, and stop reading from the client while its replies pile up.
 * A reply adds at most one read buffer's worth of commands' replies
 * past OUT_HIGH.
 */
static void session_send_id(QmpSession *s, JsonObject *msg, const char *raw_id)
{
    g_autofree char *text = qmp_reply_text(msg, raw_id);
    g_string_append(s->out, text);
    g_string_append(s->out, "\r\n");
    if (session_flush(s) && s->out->len && !s->out_src) {
        s->out_src = g_unix_fd_add(s->fd, G_IO_OUT, session_writable, s);
    }
    session_update_read(s);
}

static void session_send(QmpSession *s, JsonObject *msg)
{
    session_send_id(s, msg, NULL);
}

static gboolean session_writable(gint fd, GIOCondition cond, gpointer opaque)
{
    QmpSession *s = opaque;
    (void)fd;
    (void)cond;
    bool ok = session_flush(s);
    if (ok) {
        session_update_read(s);
    }
    if (!ok || !s->out->len) {
        s->out_src = 0;
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

static void session_text(void *opaque, const char *text, const char *error)
{
    QmpSession *s = opaque;
    g_autoptr(GError) err = NULL;
    JsonObject *resp;

    if (!text) {
        g_set_error(&err, QMP_ERROR, QMP_ERROR_GENERIC, "%s", error);
        resp = qmp_error_response(err, NULL);
    } else {
        g_autoptr(JsonParser) p = json_parser_new_immutable();
        if (!json_parser_load_from_data(p, text, -1, &err)) {
            g_autoptr(GError) e2 = NULL;
            g_set_error(&e2, QMP_ERROR, QMP_ERROR_GENERIC,
                        "JSON parse error, %s", err->message);
            resp = qmp_error_response(e2, NULL);
        } else {
            /* The fds that came with (or before) this request are its own;
             * those a command does not take are closed after it. */
            QmpDispatcher *d = s->srv->d;
            d->request_fds = s->fds;
            resp = qmp_dispatch(d, json_parser_get_root(p), &s->st);
            d->request_fds = NULL;
            main_loop_run_pending();    /* its events first */
            for (guint i = 0; i < s->fds->len; i++) {
                close(g_array_index(s->fds, int, i));
            }
            g_array_set_size(s->fds, 0);
        }
    }
    /* The id as the client wrote it (json-glib turned 2^64 into -1). */
    g_autofree char *raw_id = text ? json_stream_member_raw(text, "id") : NULL;
    session_send_id(s, resp, raw_id && json_object_has_member(resp, "id")
                             ? raw_id : NULL);
}

static gboolean session_readable(gint fd, GIOCondition cond, gpointer opaque)
{
    QmpSession *s = opaque;
    char buf[65536];
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(int) * 16)];
    } ctl;
    struct iovec iov = { buf, sizeof(buf) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = &ctl, .msg_controllen = sizeof(ctl) };
    (void)cond;

    ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    for (struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&msg) : NULL; c;
         c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            const int *passed = (const int *)CMSG_DATA(c);
            for (int i = 0; i < count; i++) {
                g_array_append_val(s->fds, passed[i]);
            }
        }
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return G_SOURCE_CONTINUE;
    }
    if (n <= 0) {
        s->in_src = 0;
        session_close(s);
        return G_SOURCE_REMOVE;
    }
    json_stream_feed(&s->js, buf, n, session_text, s);
    return G_SOURCE_CONTINUE;
}

static JsonObject *greeting(void)
{
    JsonObject *ver = json_object_new();
    json_object_set_int_member(ver, "major", QEMU_MAJOR);
    json_object_set_int_member(ver, "minor", QEMU_MINOR);
    json_object_set_int_member(ver, "micro", QEMU_MICRO);
    JsonObject *v = json_object_new();
    json_object_set_object_member(v, "qemu", ver);
    json_object_set_string_member(v, "package", "ferry-" FERRY_VERSION);
    JsonObject *qmp = json_object_new();
    json_object_set_object_member(qmp, "version", v);
    JsonArray *caps = json_array_new();
    json_array_add_string_element(caps, "oob");
    json_object_set_array_member(qmp, "capabilities", caps);
    JsonObject *g = json_object_new();
    json_object_set_object_member(g, "QMP", qmp);
    return g;
}

static gboolean server_accept(gint fd, GIOCondition cond, gpointer opaque)
{
    QmpServer *srv = opaque;
    (void)cond;
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) {
        return accept_backoff(errno, fd, &srv->listen_src, server_accept, srv)
               ? G_SOURCE_REMOVE : G_SOURCE_CONTINUE;
    }
    QmpSession *s = g_new0(QmpSession, 1);
    s->srv = srv;
    s->fd = c;
    s->st = (QmpSessionState) { .negotiating = true };
    s->out = g_string_new(NULL);
    s->fds = g_array_new(false, false, sizeof(int));
    json_stream_init(&s->js);
    srv->sessions = g_list_append(srv->sessions, s);
    s->in_src = g_unix_fd_add(c, G_IO_IN | G_IO_HUP | G_IO_ERR,
                              session_readable, s);
    session_send(s, greeting());
    return G_SOURCE_CONTINUE;
}

/* ---- Server ----------------------------------------------------------------------- */

QmpServer *qmp_server_new(QmpDispatcher *d, const char *spec, GError **errp)
{
    MonitorAddr a;
    if (!monitor_addr_parse(spec, &a, errp)) {
        return NULL;
    }
    if (a.is_stdio) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "-qmp stdio is not supported; use unix: or tcp:");
        monitor_addr_cleanup(&a);
        return NULL;
    }
    int fd = monitor_listen(&a, errp);
    if (fd < 0) {
        monitor_addr_cleanup(&a);
        return NULL;
    }
    QmpServer *srv = g_new0(QmpServer, 1);
    srv->d = d;
    srv->listen_fd = fd;
    srv->unix_path = a.is_unix ? g_strdup(a.path) : NULL;
    srv->listen_src = g_unix_fd_add(fd, G_IO_IN, server_accept, srv);
    monitor_addr_cleanup(&a);
    return srv;
}

void qmp_server_free(QmpServer *srv)
{
    if (!srv) {
        return;
    }
    while (srv->sessions) {
        session_close(srv->sessions->data);
    }
    g_source_remove(srv->listen_src);
    close(srv->listen_fd);
    if (srv->unix_path) {
        unlink(srv->unix_path);
    }
    g_free(srv->unix_path);
    g_free(srv);
}

void qmp_server_emit(QmpServer *srv, const char *name, JsonObject *data)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    g_assert(qapi_has_event(srv->d->schema, name));

    for (GList *l = srv->sessions; l; l = l->next) {
        QmpSession *s = l->data;
        if (s->st.negotiating) {
            continue;
        }
        JsonObject *ts = json_object_new();
        json_object_set_int_member(ts, "seconds", tv.tv_sec);
        json_object_set_int_member(ts, "microseconds", tv.tv_usec);
        JsonObject *ev = json_object_new();
        json_object_set_string_member(ev, "event", name);
        if (data) {
            json_object_set_object_member(ev, "data", json_object_ref(data));
        }
        json_object_set_object_member(ev, "timestamp", ts);
        session_send(s, ev);
    }
    /* Events come whether or not a client reads them: one that has let
     * OUT_MAX pile up is gone for good (not closed while it is read). */
    for (GList *l = srv->sessions, *next; l; l = next) {
        QmpSession *s = l->data;
        next = l->next;
        if (s->out->len > OUT_MAX) {
            g_warning("QMP: closing a session that has not read %zu bytes of "
                      "replies and events", s->out->len);
            session_close(s);
        }
    }
}

void qmp_server_flush(QmpServer *srv)
{
    for (GList *l = srv ? srv->sessions : NULL; l; l = l->next) {
        QmpSession *s = l->data;
        for (int i = 0; i < 100 && s->out->len && session_flush(s); i++) {
            g_usleep(1000);
        }
    }
}

size_t qmp_server_unread(QmpServer *srv)
{
    size_t n = 0;
    for (GList *l = srv ? srv->sessions : NULL; l; l = l->next) {
        QmpSession *s = l->data;
        if (s->st.negotiating) {
            continue;           /* sent no event, and waits for none */
        }
        int q = 0;
        n += s->out->len;
        if (ioctl(s->fd, SIOCOUTQ, &q) == 0 && q > 0) {
            n += (size_t)q;
        }
    }
    return n;
}
