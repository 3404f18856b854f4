/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * TLS on the migration channels (docs/tls.md): the tls-creds,
 * tls-hostname and tls-authz parameters applied to a connection before
 * any migration byte.  The contract is in migration-int.h.
 */
#include "migration-int.h"

#include <stdio.h>
#include <string.h>

#include "crypto/tls.h"
#include "migration/channel.h"
#include "qemu/sockets.h"

char *migration_param_str(MigrationState *s, const char *name)
{
    g_mutex_lock(&s->lock);
    const char *v = json_object_get_string_member_with_default(s->params, name, "");
    char *copy = g_strdup(v ? v : "");
    g_mutex_unlock(&s->lock);
    return copy;
}

bool migration_tls_enabled(MigrationState *s)
{
    g_autofree char *creds = migration_param_str(s, "tls-creds");
    return *creds != '\0';
}

/* The name a client's certificate check expects: tls-hostname, else
 * the host of a tcp: URI, as QEMU. */
static char *tls_hostname(MigrationState *s, const char *uri)
{
    char *h = migration_param_str(s, "tls-hostname");
    if (*h || !g_str_has_prefix(uri, "tcp:")) {
        return h;
    }
    g_free(h);
    g_autofree char *port = NULL;
    char *host = NULL;
    if (!inet_split(uri + 4, &host, &port)) {
        return g_strdup("");
    }
    return host;
}

bool migration_tls_connect(MigrationState *s, int fd, const char *uri,
                           const char *what, GError **errp)
{
    g_autofree char *id = migration_param_str(s, "tls-creds");
    if (!*id) {
        return true;
    }
    g_autoptr(GError) err = NULL;
    TlsCreds *creds = tls_creds_get(id, TLS_ENDPOINT_CLIENT, &err);
    if (!creds) {
        g_propagate_error(errp, g_steal_pointer(&err));
        return false;
    }
    g_autofree char *host = tls_hostname(s, uri);
    if (tls_creds_is_x509(creds) && !*host) {
        tls_creds_unref(creds);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "No hostname available for TLS");
        return false;
    }
    TlsSession *t = tls_session_new(creds, TLS_ENDPOINT_CLIENT, fd,
                                    *host ? host : NULL, NULL, errp);
    tls_creds_unref(creds);
    if (!t) {
        return false;
    }
    if (!tls_session_handshake(t, CHANNEL_CONNECT_TIMEOUT_S * 1000, &err)) {
        tls_session_unref(t);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s%s%s",
                    what ? what : "", what ? ": " : "", err->message);
        return false;
    }
    tls_session_attach(t);
    g_autofree char *d = tls_session_describe(t);
    g_debug("tls %s: %s", what ? what : "main channel", d);
    tls_session_unref(t);
    return true;
}

TlsSession *migration_tls_accept(MigrationState *s, int fd, GError **errp)
{
    g_autofree char *id = migration_param_str(s, "tls-creds");
    if (!*id) {
        return NULL;
    }
    TlsCreds *creds = tls_creds_get(id, TLS_ENDPOINT_SERVER, errp);
    if (!creds) {
        return NULL;
    }
    g_autofree char *authz = migration_param_str(s, "tls-authz");
    TlsSession *t = tls_session_new(creds, TLS_ENDPOINT_SERVER, fd, NULL,
                                    *authz ? authz : NULL, errp);
    tls_creds_unref(creds);
    return t;
}

bool migration_tls_uri_ok(MigrationState *s, const char *uri, GError **errp)
{
    if (migration_tls_enabled(s) &&
        (g_str_has_prefix(uri, "file:") || g_str_has_prefix(uri, "exec:"))) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "TLS is not supported with %.5s migration (tls-creds is "
                    "set; it applies to tcp:, unix: and fd: sockets)", uri);
        return false;
    }
    return true;
}
