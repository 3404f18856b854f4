/* SPDX-License-Identifier: GPL-2.0-or-later */
/* TLS credentials and authorization objects; the contract is in include/crypto/tls.h. */
#include "crypto/tls.h"
#include "tls-int.h"

#include <errno.h>
#include <fnmatch.h>
#include <string.h>
#include <unistd.h>

/* The registry: id -> TlsObject, under its lock; objects are refcounted. */
static GMutex objects_lock;
static GHashTable *objects;

static void object_free(TlsObject *o)
{
    if (o->psk_client) {
        gnutls_psk_free_client_credentials(o->psk_client);
    }
    if (o->psk_server) {
        gnutls_psk_free_server_credentials(o->psk_server);
    }
    if (o->cert) {
        gnutls_certificate_free_credentials(o->cert);
    }
    if (o->rules) {
        g_array_unref(o->rules);
    }
    g_free(o->id);
    g_free(o->priority);
    g_free(o->username);
    g_free(o->identity);
    g_free(o);
}

static void rule_clear(gpointer p)
{
    AuthzRule *r = p;
    g_free(r->match);
}

TlsObject *tls_object_ref(TlsObject *o)
{
    g_atomic_int_inc(&o->ref);
    return o;
}

void tls_object_unref(TlsObject *o)
{
    if (o && g_atomic_int_dec_and_test(&o->ref)) {
        object_free(o);
    }
}

void tls_creds_unref(TlsCreds *c)
{
    tls_object_unref((TlsObject *)c);
}

bool tls_creds_is_x509(const TlsCreds *c)
{
    return ((const TlsObject *)c)->kind == TLS_OBJ_X509;
}

static const char *const kind_names[] = {
    [TLS_OBJ_PSK] = "tls-creds-psk",
    [TLS_OBJ_X509] = "tls-creds-x509",
    [TLS_OBJ_AUTHZ_SIMPLE] = "authz-simple",
    [TLS_OBJ_AUTHZ_LIST] = "authz-list",
};

static int kind_of(const char *qom_type)
{
    for (int k = 0; k < (int)G_N_ELEMENTS(kind_names); k++) {
        if (!strcmp(kind_names[k], qom_type)) {
            return k;
        }
    }
    return -1;
}

bool tls_object_type_known(const char *qom_type)
{
    return kind_of(qom_type) >= 0;
}

/* ---- Properties -------------------------------------------------------------- */

static const char *prop_str(JsonObject *p, const char *name)
{
    JsonNode *v = json_object_get_member(p, name);
    if (v && JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == G_TYPE_STRING) {
        return json_node_get_string(v);
    }
    return NULL;
}

/* A boolean as QMP gives it, or as -object's on/off text. */
static bool prop_bool(JsonObject *p, const char *type, const char *name,
                      bool dflt, bool *out, GError **errp)
{
    JsonNode *v = json_object_get_member(p, name);
    *out = dflt;
    if (!v) {
        return true;
    }
    if (JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == G_TYPE_BOOLEAN) {
        *out = json_node_get_boolean(v);
        return true;
    }
    const char *s = prop_str(p, name);
    if (s && (!strcmp(s, "on") || !strcmp(s, "yes") || !strcmp(s, "true"))) {
        *out = true;
        return true;
    }
    if (s && (!strcmp(s, "off") || !strcmp(s, "no") || !strcmp(s, "false"))) {
        *out = false;
        return true;
    }
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "Parameter '%s.%s' expects 'on' or 'off'", type, name);
    return false;
}

static bool check_props(JsonObject *p, const char *type,
                        const char *const *known, GError **errp)
{
    g_autoptr(GList) names = json_object_get_members(p);
    for (GList *l = names; l; l = l->next) {
        const char *n = l->data;
        /* -object's authz-list rules come flattened: rules.N.KEY. */
        if (!g_strv_contains(known, n) &&
            !(g_strv_contains(known, "rules") && g_str_has_prefix(n, "rules."))) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Property '%s.%s' not found", type, n);
            return false;
        }
    }
    return true;
}

static bool prop_endpoint(JsonObject *p, const char *type, TlsEndpoint *out,
                          GError **errp)
{
    const char *e = prop_str(p, "endpoint");
    if (!e || !strcmp(e, "client")) {
        *out = TLS_ENDPOINT_CLIENT;         /* QEMU's default */
    } else if (!strcmp(e, "server")) {
        *out = TLS_ENDPOINT_SERVER;
    } else {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s.endpoint' does not accept value '%s'", type, e);
        return false;
    }
    return true;
}

/* A file of the credentials' directory: required ones must be readable. */
static char *cred_path(const char *dir, const char *file, bool required,
                       GError **errp)
{
    char *path = g_build_filename(dir, file, NULL);
    if (access(path, R_OK) == 0) {
        return path;
    }
    if (required || errno != ENOENT) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "Unable to access credentials %s: %s", path, g_strerror(errno));
    }
    g_free(path);
    return NULL;
}

/* The credentials' directory, which both kinds must have. */
static const char *prop_dir(JsonObject *p, const TlsObject *o, GError **errp)
{
    const char *dir = prop_str(p, "dir");
    if (!dir) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s.dir' is missing", kind_names[o->kind]);
    }
    return dir;
}

/* ---- tls-creds-psk -------------------------------------------------------------- */

/* The key of @user in keys.psk (hex), for a client. */
static char *psk_find_key(const char *path, const char *user, GError **errp)
{
    g_autofree char *text = NULL;
    g_autoptr(GError) err = NULL;
    if (!g_file_get_contents(path, &text, NULL, &err)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "Cannot read PSK file %s: %s", path, err->message);
        return NULL;
    }
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    size_t ul = strlen(user);
    for (char **l = lines; *l; l++) {
        if (!strncmp(*l, user, ul) && (*l)[ul] == ':' && (*l)[ul + 1]) {
            return g_strstrip(g_strdup(*l + ul + 1));
        }
    }
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                "Username '%s' not found in %s", user, path);
    return NULL;
}

static bool psk_load(TlsObject *o, JsonObject *p, GError **errp)
{
    const char *dir = prop_dir(p, o, errp);
    if (!dir) {
        return false;
    }
    g_autofree char *path = cred_path(dir, "keys.psk", true, errp);
    if (!path) {
        return false;
    }
    int ret;
    if (o->endpoint == TLS_ENDPOINT_SERVER) {
        if (prop_str(p, "username")) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "tls-creds-psk: username should not be set when "
                        "endpoint=server");
            return false;
        }
        ret = gnutls_psk_allocate_server_credentials(&o->psk_server);
        if (ret == 0) {
            /* GnuTLS reads the file at each handshake: keys can change. */
            ret = gnutls_psk_set_server_credentials_file(o->psk_server, path);
        }
        if (ret == 0) {
            ret = gnutls_psk_set_server_known_dh_params(o->psk_server,
                                                        GNUTLS_SEC_PARAM_MEDIUM);
        }
    } else {
        const char *user = prop_str(p, "username");
        o->username = g_strdup(user ? user : "qemu");
        g_autofree char *hex = psk_find_key(path, o->username, errp);
        if (!hex) {
            return false;
        }
        gnutls_datum_t key = { (unsigned char *)hex, strlen(hex) };
        ret = gnutls_psk_allocate_client_credentials(&o->psk_client);
        if (ret == 0) {
            ret = gnutls_psk_set_client_credentials(o->psk_client, o->username,
                                                    &key, GNUTLS_PSK_KEY_HEX);
        }
        explicit_bzero(hex, strlen(hex));
    }
    if (ret < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "Cannot load PSK credentials %s: %s", path, gnutls_strerror(ret));
        return false;
    }
    return true;
}

/* ---- tls-creds-x509 ------------------------------------------------------------- */

static bool x509_load(TlsObject *o, JsonObject *p, GError **errp)
{
    const char *dir = prop_dir(p, o, errp);
    if (!dir) {
        return false;
    }
    if (prop_str(p, "passwordid")) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "tls-creds-x509: encrypted private keys (passwordid) are "
                    "not supported; give the key unencrypted");
        return false;
    }
    bool server = o->endpoint == TLS_ENDPOINT_SERVER;
    g_autoptr(GError) err = NULL;
    g_autofree char *ca = cred_path(dir, "ca-cert.pem", true, errp);
    if (!ca) {
        return false;
    }
    g_autofree char *crl = cred_path(dir, "ca-crl.pem", false, &err);
    g_autofree char *cert = err ? NULL :
        cred_path(dir, server ? "server-cert.pem" : "client-cert.pem", server, &err);
    g_autofree char *key = err ? NULL :
        cred_path(dir, server ? "server-key.pem" : "client-key.pem", server, &err);
    if (err) {
        g_propagate_error(errp, g_steal_pointer(&err));
        return false;
    }
    if (!cert != !key) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "tls-creds-x509: %s has a client certificate without its "
                    "key, or a key without its certificate", dir);
        return false;
    }
    int ret = gnutls_certificate_allocate_credentials(&o->cert);
    if (ret < 0) {
        goto fail;
    }
    ret = gnutls_certificate_set_x509_trust_file(o->cert, ca, GNUTLS_X509_FMT_PEM);
    if (ret < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "Cannot load CA certificate %s: %s", ca, gnutls_strerror(ret));
        return false;
    }
    if (crl) {
        ret = gnutls_certificate_set_x509_crl_file(o->cert, crl, GNUTLS_X509_FMT_PEM);
        if (ret < 0) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                        "Cannot load CRL %s: %s", crl, gnutls_strerror(ret));
            return false;
        }
    }
    if (cert) {
        ret = gnutls_certificate_set_x509_key_file(o->cert, cert, key,
                                                   GNUTLS_X509_FMT_PEM);
        if (ret < 0) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                        "Cannot load certificate '%s' & key '%s': %s", cert, key,
                        gnutls_strerror(ret));
            return false;
        }
    }
    if (server) {
        ret = gnutls_certificate_set_known_dh_params(o->cert, GNUTLS_SEC_PARAM_MEDIUM);
        if (ret < 0) {
            goto fail;
        }
    }
    return true;
fail:
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                "Cannot allocate credentials: %s", gnutls_strerror(ret));
    return false;
}

/* ---- authz-simple, authz-list ----------------------------------------------------- */

static bool policy_of(const char *s, bool dflt, bool *allow, const char *what,
                      GError **errp)
{
    if (!s) {
        *allow = dflt;
    } else if (!strcmp(s, "allow")) {
        *allow = true;
    } else if (!strcmp(s, "deny")) {
        *allow = false;
    } else {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s' does not accept value '%s'", what, s);
        return false;
    }
    return true;
}

static bool rule_add(TlsObject *o, const char *match, const char *policy,
                     const char *format, GError **errp)
{
    AuthzRule r = { 0 };
    if (!match) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter 'rules[%u].match' is missing", o->rules->len);
        return false;
    }
    if (!policy_of(policy, false, &r.allow, "policy", errp)) {
        return false;
    }
    if (format && strcmp(format, "exact") && strcmp(format, "glob")) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter 'format' does not accept value '%s'", format);
        return false;
    }
    r.glob = format && !strcmp(format, "glob");
    r.match = g_strdup(match);
    g_array_append_val(o->rules, r);
    return true;
}

static bool authz_load(TlsObject *o, JsonObject *p, GError **errp)
{
    if (o->kind == TLS_OBJ_AUTHZ_SIMPLE) {
        const char *id = prop_str(p, "identity");
        if (!id) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "The 'identity' property must be set");
            return false;
        }
        o->identity = g_strdup(id);
        return true;
    }
    o->rules = g_array_new(false, true, sizeof(AuthzRule));
    g_array_set_clear_func(o->rules, rule_clear);
    if (!policy_of(prop_str(p, "policy"), false, &o->allow_default, "policy", errp)) {
        return false;
    }
    JsonNode *rules = json_object_get_member(p, "rules");
    if (rules && JSON_NODE_HOLDS_ARRAY(rules)) {
        JsonArray *a = json_node_get_array(rules);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            JsonNode *n = json_array_get_element(a, i);
            if (!JSON_NODE_HOLDS_OBJECT(n)) {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "Invalid parameter type for 'rules[%u]', expected: "
                            "QAuthZListRule", i);
                return false;
            }
            JsonObject *r = json_node_get_object(n);
            if (!rule_add(o, prop_str(r, "match"), prop_str(r, "policy"),
                          prop_str(r, "format"), errp)) {
                return false;
            }
        }
        return true;
    }
    /* -object's flattened form: rules.0.match=...,rules.0.policy=... */
    for (guint i = 0;; i++) {
        g_autofree char *m = g_strdup_printf("rules.%u.match", i);
        g_autofree char *pol = g_strdup_printf("rules.%u.policy", i);
        g_autofree char *fmt = g_strdup_printf("rules.%u.format", i);
        if (!json_object_has_member(p, m) && !json_object_has_member(p, pol)) {
            return true;
        }
        if (!rule_add(o, prop_str(p, m), prop_str(p, pol), prop_str(p, fmt), errp)) {
            return false;
        }
    }
}

bool tls_authz_allows(const char *authz_id, const char *identity, GError **errp)
{
    g_mutex_lock(&objects_lock);
    TlsObject *o = objects ? g_hash_table_lookup(objects, authz_id) : NULL;
    if (o) {
        tls_object_ref(o);
    }
    g_mutex_unlock(&objects_lock);
    if (!o || (o->kind != TLS_OBJ_AUTHZ_SIMPLE && o->kind != TLS_OBJ_AUTHZ_LIST)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                    "No authorization object with id '%s'", authz_id);
        tls_object_unref(o);
        return false;
    }
    bool allow = o->allow_default;
    if (o->kind == TLS_OBJ_AUTHZ_SIMPLE) {
        allow = !strcmp(o->identity, identity);
    } else {
        for (guint i = 0; i < o->rules->len; i++) {
            AuthzRule *r = &g_array_index(o->rules, AuthzRule, i);
            if (r->glob ? fnmatch(r->match, identity, 0) == 0
                        : !strcmp(r->match, identity)) {
                allow = r->allow;
                break;
            }
        }
    }
    tls_object_unref(o);
    return allow;
}

/* ---- The registry ------------------------------------------------------------------ */

bool tls_object_add(const char *qom_type, const char *id, JsonObject *props,
                    GError **errp)
{
    static const char *const psk_props[] = {
        "dir", "endpoint", "username", "priority", "verify-peer", "loaded", NULL,
    };
    static const char *const x509_props[] = {
        "dir", "endpoint", "verify-peer", "priority", "sanity-check", "loaded",
        "passwordid", NULL,
    };
    static const char *const simple_props[] = { "identity", "loaded", NULL };
    static const char *const list_props[] = { "policy", "rules", "loaded", NULL };
    static const char *const *const known[] = {
        [TLS_OBJ_PSK] = psk_props, [TLS_OBJ_X509] = x509_props,
        [TLS_OBJ_AUTHZ_SIMPLE] = simple_props, [TLS_OBJ_AUTHZ_LIST] = list_props,
    };
    int kind = kind_of(qom_type);
    g_assert(kind >= 0);
    if (!check_props(props, qom_type, known[kind], errp)) {
        return false;
    }
    if (tls_object_exists(id)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_EXISTS,
                    "attempt to add duplicate property '%s' to object (type "
                    "'container')", id);
        return false;
    }
    TlsObject *o = g_new0(TlsObject, 1);
    o->ref = 1;
    o->kind = kind;
    o->id = g_strdup(id);
    bool ok;
    if (kind == TLS_OBJ_PSK || kind == TLS_OBJ_X509) {
        const char *prio = prop_str(props, "priority");
        o->priority = g_strdup(prio);
        ok = prop_endpoint(props, qom_type, &o->endpoint, errp) &&
             prop_bool(props, qom_type, "verify-peer", true, &o->verify_peer, errp) &&
             (kind == TLS_OBJ_PSK ? psk_load(o, props, errp)
                                  : x509_load(o, props, errp));
    } else {
        ok = authz_load(o, props, errp);
    }
    if (!ok) {
        tls_object_unref(o);
        return false;
    }
    g_mutex_lock(&objects_lock);
    if (!objects) {
        objects = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                        (GDestroyNotify)tls_object_unref);
    }
    g_hash_table_insert(objects, o->id, o);
    g_mutex_unlock(&objects_lock);
    return true;
}

bool tls_object_exists(const char *id)
{
    g_mutex_lock(&objects_lock);
    bool found = objects && g_hash_table_contains(objects, id);
    g_mutex_unlock(&objects_lock);
    return found;
}

bool tls_object_del(const char *id, GError **errp)
{
    g_mutex_lock(&objects_lock);
    bool found = objects && g_hash_table_remove(objects, id);
    g_mutex_unlock(&objects_lock);
    if (!found) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                    "object '%s' not found", id);
    }
    return found;
}

void tls_objects_cleanup(void)
{
    g_mutex_lock(&objects_lock);
    g_clear_pointer(&objects, g_hash_table_unref);
    g_mutex_unlock(&objects_lock);
}

TlsCreds *tls_creds_get(const char *id, TlsEndpoint endpoint, GError **errp)
{
    g_mutex_lock(&objects_lock);
    TlsObject *o = objects ? g_hash_table_lookup(objects, id) : NULL;
    if (o) {
        tls_object_ref(o);
    }
    g_mutex_unlock(&objects_lock);
    if (!o) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                    "No TLS credentials with id '%s'", id);
        return NULL;
    }
    if (o->kind != TLS_OBJ_PSK && o->kind != TLS_OBJ_X509) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Object with id '%s' is not TLS credentials", id);
        tls_object_unref(o);
        return NULL;
    }
    if (o->endpoint != endpoint) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Expected TLS credentials for a %s endpoint",
                    endpoint == TLS_ENDPOINT_CLIENT ? "client" : "server");
        tls_object_unref(o);
        return NULL;
    }
    return (TlsCreds *)o;
}
