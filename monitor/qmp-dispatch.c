/* SPDX-License-Identifier: GPL-2.0-or-later */
/* QMP requests and responses; the contract is in include/monitor/qmp.h. */
#include "monitor/qmp.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

G_DEFINE_QUARK(qmp-error-quark, qmp_error)

typedef struct QmpCommandEntry {
    QmpCommandFunc fn;
    void *opaque;
} QmpCommandEntry;

const char *qmp_error_class(const GError *err)
{
    if (err->domain == QMP_ERROR) {
        switch (err->code) {
        case QMP_ERROR_COMMAND_NOT_FOUND:
            return "CommandNotFound";
        case QMP_ERROR_DEVICE_NOT_ACTIVE:
            return "DeviceNotActive";
        case QMP_ERROR_DEVICE_NOT_FOUND:
            return "DeviceNotFound";
        }
    }
    return "GenericError";
}

static void close_fd(gpointer p)
{
    close(GPOINTER_TO_INT(p));
}

bool qmp_dispatcher_init(QmpDispatcher *d, GError **errp)
{
    d->schema = qapi_schema_load(qapi_schema_json, errp);
    d->commands = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    d->named_fds = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                         close_fd);
    d->request_fds = NULL;
    return d->schema != NULL;
}

void qmp_dispatcher_cleanup(QmpDispatcher *d)
{
    qapi_schema_free(d->schema);
    g_hash_table_unref(d->commands);
    if (d->named_fds) {
        g_hash_table_unref(d->named_fds);
    }
    d->schema = NULL;
    d->commands = NULL;
    d->named_fds = NULL;
}

int qmp_take_fd(QmpDispatcher *d, const char *name, GError **errp)
{
    gpointer key, value;
    if (!d->named_fds ||
        !g_hash_table_steal_extended(d->named_fds, name, &key, &value)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "File descriptor named '%s' not found", name);
        return -1;
    }
    g_free(key);
    return GPOINTER_TO_INT(value);
}

void qmp_register(QmpDispatcher *d, const char *name, QmpCommandFunc fn,
                  void *opaque)
{
    g_assert(qapi_has_command(d->schema, name));
    QmpCommandEntry *e = g_new(QmpCommandEntry, 1);
    e->fn = fn;
    e->opaque = opaque;
    g_hash_table_replace(d->commands, g_strdup(name), e);
}

JsonNode *qmp_execute(QmpDispatcher *d, const char *name, JsonObject *args,
                      GError **errp)
{
    QmpCommandEntry *e = g_hash_table_lookup(d->commands, name);
    if (!e) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "The command %s has not been found", name);
        return NULL;
    }
    if (!qapi_check_args(d->schema, name, args, errp)) {
        return NULL;
    }
    return e->fn(args, e->opaque, errp);
}

JsonObject *qmp_error_response(const GError *err, JsonNode *id)
{
    JsonObject *e = json_object_new();
    json_object_set_string_member(e, "class", qmp_error_class(err));
    json_object_set_string_member(e, "desc", err->message);
    JsonObject *r = json_object_new();
    json_object_set_object_member(r, "error", e);
    if (id) {
        json_object_set_member(r, "id", json_node_copy(id));
    }
    return r;
}

/*
 * Check the request's shape as QEMU does; the command name, or NULL.
 * "exec-oob" is a member only where @allow_oob (*@oob says it came).
 */
static const char *request_command(JsonObject *req, JsonObject **args,
                                   bool allow_oob, bool *oob, GError **errp)
{
    g_autoptr(GList) members = json_object_get_members(req);
    const char *cmd = NULL, *exec_key = NULL;

    *args = NULL;
    *oob = false;
    for (GList *l = members; l; l = l->next) {
        const char *k = l->data;
        JsonNode *v = json_object_get_member(req, k);
        if (!strcmp(k, "execute") || (!strcmp(k, "exec-oob") && allow_oob)) {
            if (!JSON_NODE_HOLDS_VALUE(v) ||
                json_node_get_value_type(v) != G_TYPE_STRING) {
                g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                            "QMP input member '%s' must be a string", k);
                return NULL;
            }
            if (exec_key) {
                g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                            "QMP input member '%s' clashes with '%s'", k,
                            exec_key);
                return NULL;
            }
            exec_key = k;
            *oob = !strcmp(k, "exec-oob");
            cmd = json_node_get_string(v);
        } else if (!strcmp(k, "arguments")) {
            if (!JSON_NODE_HOLDS_OBJECT(v)) {
                g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                            "QMP input member 'arguments' must be an object");
                return NULL;
            }
            *args = json_node_get_object(v);
        } else if (strcmp(k, "id") != 0) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "QMP input member '%s' is unexpected", k);
            return NULL;
        }
    }
    if (!cmd) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "QMP input lacks member 'execute'");
    }
    return cmd;
}

JsonObject *qmp_dispatch(QmpDispatcher *d, JsonNode *request,
                         QmpSessionState *st)
{
    bool *negotiating = &st->negotiating;
    g_autoptr(GError) err = NULL;
    JsonNode *id = NULL;
    JsonObject *args;

    if (!request || !JSON_NODE_HOLDS_OBJECT(request)) {
        g_set_error(&err, QMP_ERROR, QMP_ERROR_GENERIC,
                    "QMP input must be a JSON object");
        return qmp_error_response(err, NULL);
    }
    JsonObject *req = json_node_get_object(request);
    id = json_object_get_member(req, "id");
    bool oob;
    const char *cmd = request_command(req, &args, st->oob && !st->negotiating,
                                      &oob, &err);
    if (!cmd) {
        return qmp_error_response(err, id);
    }
    if (oob && !qapi_command_allows_oob(d->schema, cmd)) {
        g_set_error(&err, QMP_ERROR, QMP_ERROR_GENERIC,
                    "The command %s does not support OOB", cmd);
        return qmp_error_response(err, id);
    }
    bool caps = !strcmp(cmd, "qmp_capabilities");
    if (*negotiating && !caps) {
        g_set_error(&err, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "Expecting capabilities negotiation with 'qmp_capabilities'");
        return qmp_error_response(err, id);
    }
    if (!*negotiating && caps) {
        g_set_error(&err, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "Capabilities negotiation is already complete, command "
                    "ignored");
        return qmp_error_response(err, id);
    }
    JsonNode *ret = qmp_execute(d, cmd, args, &err);
    if (!ret) {
        return qmp_error_response(err, id);
    }
    if (caps) {
        *negotiating = false;
        JsonArray *en = args && json_object_has_member(args, "enable")
                        ? json_object_get_array_member(args, "enable") : NULL;
        for (guint i = 0; en && i < json_array_get_length(en); i++) {
            st->oob |= !strcmp(json_array_get_string_element(en, i), "oob");
        }
    }
    JsonObject *r = json_object_new();
    json_object_set_member(r, "return", ret);
    if (id) {
        json_object_set_member(r, "id", json_node_copy(id));
    }
    return r;
}

/* JSON has no infinity or NaN: such a number goes out as null. */
static void finite_only(JsonNode *n)
{
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        JsonObjectIter it;
        JsonNode *v;
        json_object_iter_init(&it, json_node_get_object(n));
        while (json_object_iter_next(&it, NULL, &v)) {
            finite_only(v);
        }
    } else if (JSON_NODE_HOLDS_ARRAY(n)) {
        JsonArray *a = json_node_get_array(n);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            finite_only(json_array_get_element(a, i));
        }
    } else if (JSON_NODE_HOLDS_VALUE(n) &&
               json_node_get_value_type(n) == G_TYPE_DOUBLE &&
               !isfinite(json_node_get_double(n))) {
        json_node_init_null(n);
    }
}

char *qmp_reply_text(JsonObject *msg, const char *raw_id)
{
    g_autoptr(JsonNode) node = json_node_alloc();
    json_node_take_object(json_node_init(node, JSON_NODE_OBJECT), msg);
    finite_only(node);
    if (!raw_id) {
        return json_to_string(node, false);
    }
    json_object_remove_member(msg, "id");
    g_autofree char *text = json_to_string(node, false);
    text[strlen(text) - 1] = '\0';              /* the closing brace */
    return g_strdup_printf("%s%s\"id\": %s}", text,
                           json_object_get_size(msg) ? ", " : "", raw_id);
}
