/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Character devices and fd sets; the contract is in include/system/chardev.h. */
#include "system/chardev.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FDSET_PREFIX "/dev/fdset/"

static void chardev_free(gpointer p)
{
    ChardevOptions *d = p;
    g_free(d->id);
    g_free(d->path);
    g_free(d);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ChardevOptions, chardev_free)

void chardevs_init(Chardevs *c)
{
    c->devs = g_ptr_array_new_with_free_func(chardev_free);
    c->fdsets = g_array_new(false, true, sizeof(FdSetEntry));
}

void chardevs_cleanup(Chardevs *c)
{
    if (c->devs) {
        g_ptr_array_unref(c->devs);
    }
    if (c->fdsets) {
        for (guint i = 0; i < c->fdsets->len; i++) {
            FdSetEntry *e = &g_array_index(c->fdsets, FdSetEntry, i);
            close(e->fd);
            g_free(e->opaque);
        }
        g_array_unref(c->fdsets);
    }
    memset(c, 0, sizeof(*c));
}

static bool parse_int(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > INT_MAX) {
        return false;
    }
    *out = (int)v;
    return true;
}

static bool parse_onoff(const char *v, bool *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
        *out = true;
    } else if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")) {
        *out = false;
    } else {
        return false;
    }
    return true;
}

ChardevOptions *chardev_find(Chardevs *c, const char *id)
{
    for (guint i = 0; i < c->devs->len; i++) {
        ChardevOptions *d = c->devs->pdata[i];
        if (!strcmp(d->id, id)) {
            return d;
        }
    }
    return NULL;
}

bool chardev_parse(Chardevs *c, const char *arg, GError **errp)
{
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    const char *backend = items[0];
    g_autoptr(ChardevOptions) d = g_new0(ChardevOptions, 1);
    bool server = false, nowait = false;
    d->fd = -1;
    if (!strcmp(backend, "socket")) {
        d->kind = CHARDEV_SOCKET;
    } else if (!strcmp(backend, "file")) {
        d->kind = CHARDEV_FILE;
    } else if (!strcmp(backend, "null")) {
        d->kind = CHARDEV_NULL;
    } else {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-chardev %s: '%s' is not a valid char driver name "
                    "(socket, file, null)", arg, backend);
        return false;
    }
    for (char **it = items + 1; *it; it++) {
        char *eq = strchr(*it, '=');
        g_autofree char *k = g_strndup(*it, eq ? eq - *it : (long)strlen(*it));
        const char *v = eq ? eq + 1 : "on";
        bool ok = true;
        if (!strcmp(k, "id")) {
            g_free(d->id);
            d->id = g_strdup(v);
        } else if (!strcmp(k, "path") && d->kind != CHARDEV_NULL && *v) {
            g_free(d->path);
            d->path = g_strdup(v);
        } else if (!strcmp(k, "fd") && d->kind == CHARDEV_SOCKET) {
            ok = parse_int(v, &d->fd);
        } else if (!strcmp(k, "server") && d->kind == CHARDEV_SOCKET) {
            ok = parse_onoff(v, &server);
        } else if (!strcmp(k, "wait") && d->kind == CHARDEV_SOCKET) {
            bool wait = true;
            ok = parse_onoff(v, &wait);
            nowait = !wait;
        } else if (!strcmp(k, "nowait") && d->kind == CHARDEV_SOCKET) {
            nowait = true;
        } else if (!strcmp(k, "append") && d->kind == CHARDEV_FILE) {
            ok = parse_onoff(v, &d->append);
        } else {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-chardev %s: Invalid parameter '%s'", arg, k);
            return false;
        }
        if (!ok) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-chardev %s: invalid value '%s' for '%s'", arg, v, k);
            return false;
        }
    }
    if (!d->id) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-chardev %s: Parameter 'id' is missing", arg);
        return false;
    }
    if (chardev_find(c, d->id)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-chardev %s: duplicate chardev: %s", arg, d->id);
        return false;
    }
    if (d->kind == CHARDEV_SOCKET &&
        ((d->fd < 0) == !d->path || !server || !nowait)) {
        /* ferry's monitors serve; they do not connect out or wait. */
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-chardev %s: a socket chardev needs path= or fd= (one "
                    "of them), with server=on,wait=off", arg);
        return false;
    }
    if (d->kind == CHARDEV_FILE && !d->path) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-chardev %s: chardev: file: no filename given", arg);
        return false;
    }
    g_ptr_array_add(c->devs, g_steal_pointer(&d));
    return true;
}

bool add_fd_parse(Chardevs *c, const char *arg, GError **errp)
{
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    FdSetEntry e = { .set = -1, .fd = -1 };
    for (char **it = items; *it; it++) {
        char *eq = strchr(*it, '=');
        g_autofree char *k = g_strndup(*it, eq ? eq - *it : (long)strlen(*it));
        const char *v = eq ? eq + 1 : "";
        bool ok = true;
        if (!strcmp(k, "fd")) {
            ok = parse_int(v, &e.fd);
        } else if (!strcmp(k, "set")) {
            ok = parse_int(v, &e.set);
        } else if (!strcmp(k, "opaque")) {
            g_free(e.opaque);
            e.opaque = g_strdup(v);
        } else {
            g_free(e.opaque);
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-add-fd %s: Invalid parameter '%s'", arg, k);
            return false;
        }
        if (!ok) {
            g_free(e.opaque);
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-add-fd %s: invalid value '%s' for '%s'", arg, v, k);
            return false;
        }
    }
    /* QEMU's checks and words. */
    const char *why = e.fd < 0 ? "fd option is required" :
                      e.set < 0 ? "set option is required" :
                      e.fd <= STDERR_FILENO ? "fd cannot be a standard I/O stream" :
                      fcntl(e.fd, F_GETFD) < 0 ? "fd is not valid or already in use" :
                      NULL;
    if (why) {
        g_free(e.opaque);
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-add-fd %s: %s", arg, why);
        return false;
    }
    fcntl(e.fd, F_SETFD, FD_CLOEXEC);
    g_array_append_val(c->fdsets, e);
    return true;
}

char *mon_resolve(Chardevs *c, const char *arg, bool *qmp, GError **errp)
{
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    const char *id = NULL, *mode = "readline";
    for (char **it = items; *it; it++) {
        if (g_str_has_prefix(*it, "chardev=")) {
            id = *it + 8;
        } else if (g_str_has_prefix(*it, "mode=")) {
            mode = *it + 5;
        } else if (g_str_has_prefix(*it, "id=") || !strcmp(*it, "pretty=off")) {
            continue;
        } else {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-mon %s: Invalid parameter '%s'", arg, *it);
            return NULL;
        }
    }
    if (strcmp(mode, "control") != 0 && strcmp(mode, "readline") != 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-mon %s: Parameter 'mode' does not accept value '%s'",
                    arg, mode);
        return NULL;
    }
    ChardevOptions *d = id ? chardev_find(c, id) : NULL;
    if (!d) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-mon %s: chardev \"%s\" not found", arg, id ? id : "");
        return NULL;
    }
    if (d->kind != CHARDEV_SOCKET || d->used) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-mon %s: chardev '%s' %s", arg, id,
                    d->used ? "is in use already" :
                    "is not a socket (ferry's monitors serve sockets)");
        return NULL;
    }
    d->used = true;
    *qmp = !strcmp(mode, "control");
    return d->fd >= 0 ? g_strdup_printf("fd:%d,server=on,wait=off", d->fd)
                      : g_strdup_printf("unix:%s,server=on,wait=off", d->path);
}

bool chardev_open_output(Chardevs *c, ChardevOptions *d, int *fd, GError **errp)
{
    *fd = -1;
    if (d->kind == CHARDEV_NULL) {
        return true;
    }
    if (d->kind != CHARDEV_FILE) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "chardev '%s': only a file or null chardev can take a "
                    "device's output here", d->id);
        return false;
    }
    int set;
    if (g_str_has_prefix(d->path, FDSET_PREFIX) &&
        parse_int(d->path + strlen(FDSET_PREFIX), &set)) {
        /* As QEMU: an fd of the set that allows writing, duplicated. */
        for (guint i = 0; i < c->fdsets->len; i++) {
            FdSetEntry *e = &g_array_index(c->fdsets, FdSetEntry, i);
            int fl = fcntl(e->fd, F_GETFL);
            if (e->set == set && fl >= 0 && (fl & O_ACCMODE) != O_RDONLY) {
                *fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);
                if (*fd < 0) {
                    g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                                "chardev '%s': %s: %s", d->id, d->path,
                                g_strerror(errno));
                    return false;
                }
                if (d->append) {
                    fcntl(*fd, F_SETFL, fl | O_APPEND);
                }
                return true;
            }
        }
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOENT,
                    "chardev '%s': %s: no fd in set %d that can be written",
                    d->id, d->path, set);
        return false;
    }
    *fd = open(d->path, O_WRONLY | O_CREAT | O_CLOEXEC |
               (d->append ? O_APPEND : O_TRUNC), 0644);
    if (*fd < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "chardev '%s': Could not open '%s': %s", d->id, d->path,
                    g_strerror(errno));
        return false;
    }
    return true;
}
