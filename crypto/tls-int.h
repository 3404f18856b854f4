/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What tls-creds.c and tls-session.c share; not for other modules. */
#ifndef CRYPTO_TLS_INT_H
#define CRYPTO_TLS_INT_H

#include "crypto/tls.h"

#include <gnutls/gnutls.h>

typedef enum {
    TLS_OBJ_PSK,
    TLS_OBJ_X509,
    TLS_OBJ_AUTHZ_SIMPLE,
    TLS_OBJ_AUTHZ_LIST,
} TlsObjKind;

typedef struct AuthzRule {
    char *match;
    bool glob;                  /* fnmatch(3), else an exact match */
    bool allow;
} AuthzRule;

/*
 * One object of the registry; a TlsCreds is a TlsObject of kind PSK or
 * X509.  Immutable once added (so readable from any thread holding a
 * reference), except ref.
 */
typedef struct TlsObject {
    gint ref;
    TlsObjKind kind;
    char *id;
    /* Credentials */
    TlsEndpoint endpoint;
    bool verify_peer;
    char *priority;             /* NULL: GnuTLS's "NORMAL" */
    char *username;             /* a PSK client's */
    gnutls_psk_client_credentials_t psk_client;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_certificate_credentials_t cert;
    /* Authorization */
    char *identity;             /* authz-simple */
    GArray *rules;              /* authz-list: AuthzRule, first match wins */
    bool allow_default;         /* authz-list: when no rule matches */
} TlsObject;

TlsObject *tls_object_ref(TlsObject *o);
void tls_object_unref(TlsObject *o);

/*
 * tls_authz_allows: whether authz object @authz_id lets @identity in;
 * false with @errp set when there is no such object, false without one
 * when it denies.
 */
bool tls_authz_allows(const char *authz_id, const char *identity, GError **errp);

#endif
