/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The QMP schema at run time; the contract is in include/monitor/qapi.h. */
#include "monitor/qapi.h"

#include <string.h>

#include "monitor/qmp.h"

struct QapiSchema {
    JsonNode *root;             /* the parsed array; owns everything below */
    GHashTable *commands;       /* name -> JsonObject (the definition) */
    GHashTable *events;
    GHashTable *types;          /* struct and enum name -> JsonObject */
    GPtrArray *command_names;
};

static void index_def(JsonArray *a, guint i, JsonNode *n, gpointer opaque)
{
    QapiSchema *s = opaque;
    (void)a;
    (void)i;
    JsonObject *d = json_node_get_object(n);
    const char *name;

    if ((name = json_object_get_string_member_with_default(d, "command", NULL))) {
        g_hash_table_insert(s->commands, (char *)name, d);
        g_ptr_array_add(s->command_names, (char *)name);
    } else if ((name = json_object_get_string_member_with_default(d, "event", NULL))) {
        g_hash_table_insert(s->events, (char *)name, d);
    } else if ((name = json_object_get_string_member_with_default(d, "struct", NULL)) ||
               (name = json_object_get_string_member_with_default(d, "enum", NULL))) {
        g_hash_table_insert(s->types, (char *)name, d);
    }
}

QapiSchema *qapi_schema_load(const char *json, GError **errp)
{
    g_autoptr(JsonParser) p = json_parser_new_immutable();
    if (!json_parser_load_from_data(p, json, -1, errp)) {
        return NULL;
    }
    JsonNode *root = json_parser_get_root(p);
    if (!root || !JSON_NODE_HOLDS_ARRAY(root)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "QAPI schema is not an array");
        return NULL;
    }
    QapiSchema *s = g_new0(QapiSchema, 1);
    s->root = json_node_ref(root);
    s->commands = g_hash_table_new(g_str_hash, g_str_equal);
    s->events = g_hash_table_new(g_str_hash, g_str_equal);
    s->types = g_hash_table_new(g_str_hash, g_str_equal);
    s->command_names = g_ptr_array_new();
    json_array_foreach_element(json_node_get_array(root), index_def, s);
    return s;
}

void qapi_schema_free(QapiSchema *s)
{
    if (!s) {
        return;
    }
    g_hash_table_unref(s->commands);
    g_hash_table_unref(s->events);
    g_hash_table_unref(s->types);
    g_ptr_array_unref(s->command_names);
    json_node_unref(s->root);
    g_free(s);
}

bool qapi_has_command(const QapiSchema *s, const char *name)
{
    return g_hash_table_contains(s->commands, name);
}

bool qapi_command_allows_oob(const QapiSchema *s, const char *name)
{
    JsonObject *d = g_hash_table_lookup(s->commands, name);
    return d && json_object_get_boolean_member_with_default(d, "allow-oob", false);
}

bool qapi_has_event(const QapiSchema *s, const char *name)
{
    return g_hash_table_contains(s->events, name);
}

JsonNode *qapi_schema_introspect(const QapiSchema *s)
{
    return qapi_introspect(json_node_get_array(s->root));
}

const GPtrArray *qapi_commands(const QapiSchema *s)
{
    return s->command_names;
}

static bool check_value(const QapiSchema *s, JsonNode *v, JsonNode *type,
                        const char *path, GError **errp);

/* Members of @data (an object of "name" or "*name" -> type) in @obj. */
static bool check_members(const QapiSchema *s, JsonObject *data,
                          JsonObject *obj, const char *prefix, GError **errp)
{
    g_autoptr(GList) given = obj ? json_object_get_members(obj) : NULL;
    for (GList *l = given; l; l = l->next) {
        g_autofree char *opt = g_strconcat("*", l->data, NULL);
        if (!json_object_has_member(data, l->data) &&
            !json_object_has_member(data, opt)) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter '%s%s' is unexpected", prefix,
                        (char *)l->data);
            return false;
        }
    }
    g_autoptr(GList) members = json_object_get_members(data);
    for (GList *l = members; l; l = l->next) {
        const char *m = l->data;
        bool optional = m[0] == '*';
        const char *bare = optional ? m + 1 : m;
        g_autofree char *path = g_strconcat(prefix, bare, NULL);
        JsonNode *v = obj ? json_object_get_member(obj, bare) : NULL;
        if (!v) {
            if (!optional) {
                g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                            "Parameter '%s' is missing", path);
                return false;
            }
            continue;
        }
        if (!check_value(s, v, json_object_get_member(data, m), path, errp)) {
            return false;
        }
    }
    return true;
}

static bool type_error(const char *path, const char *expected, GError **errp)
{
    g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                "Invalid parameter type for '%s', expected: %s", path, expected);
    return false;
}

static bool check_value(const QapiSchema *s, JsonNode *v, JsonNode *type,
                        const char *path, GError **errp)
{
    if (JSON_NODE_HOLDS_ARRAY(type)) {
        if (!JSON_NODE_HOLDS_ARRAY(v)) {
            return type_error(path, "array", errp);
        }
        JsonNode *elem = json_array_get_element(json_node_get_array(type), 0);
        JsonArray *a = json_node_get_array(v);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            g_autofree char *p = g_strdup_printf("%s[%u]", path, i);
            if (!check_value(s, json_array_get_element(a, i), elem, p, errp)) {
                return false;
            }
        }
        return true;
    }
    if (JSON_NODE_HOLDS_OBJECT(type)) {         /* an inline struct */
        if (!JSON_NODE_HOLDS_OBJECT(v)) {
            return type_error(path, "object", errp);
        }
        g_autofree char *prefix = g_strconcat(path, ".", NULL);
        return check_members(s, json_node_get_object(type),
                             json_node_get_object(v), prefix, errp);
    }
    const char *t = json_node_get_string(type);
    GType vt = JSON_NODE_HOLDS_VALUE(v) ? json_node_get_value_type(v) : G_TYPE_INVALID;

    if (!strcmp(t, "any")) {
        return true;
    } else if (!strcmp(t, "str")) {
        return vt == G_TYPE_STRING || type_error(path, "string", errp);
    } else if (!strcmp(t, "bool")) {
        return vt == G_TYPE_BOOLEAN || type_error(path, "boolean", errp);
    } else if (!strcmp(t, "int")) {
        return vt == G_TYPE_INT64 || type_error(path, "integer", errp);
    } else if (!strcmp(t, "size")) {
        return (vt == G_TYPE_INT64 && json_node_get_int(v) >= 0) ||
               type_error(path, "size", errp);
    } else if (!strcmp(t, "number")) {
        return vt == G_TYPE_INT64 || vt == G_TYPE_DOUBLE ||
               type_error(path, "number", errp);
    } else if (!strcmp(t, "null")) {
        return JSON_NODE_HOLDS_NULL(v) || type_error(path, "null", errp);
    }
    JsonObject *def = g_hash_table_lookup(s->types, t);
    if (!def) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "schema names unknown type '%s'", t);
        return false;
    }
    if (json_object_has_member(def, "enum")) {
        if (vt != G_TYPE_STRING) {
            return type_error(path, "string", errp);
        }
        JsonArray *vals = json_object_get_array_member(def, "data");
        for (guint i = 0; i < json_array_get_length(vals); i++) {
            if (!strcmp(json_array_get_string_element(vals, i),
                        json_node_get_string(v))) {
                return true;
            }
        }
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Parameter '%s' does not accept value '%s'", path,
                    json_node_get_string(v));
        return false;
    }
    if (!JSON_NODE_HOLDS_OBJECT(v)) {
        return type_error(path, "object", errp);
    }
    g_autofree char *prefix = g_strconcat(path, ".", NULL);
    return check_members(s, json_object_get_object_member(def, "data"),
                         json_node_get_object(v), prefix, errp);
}

bool qapi_check_args(const QapiSchema *s, const char *name, JsonObject *args,
                     GError **errp)
{
    JsonObject *def = g_hash_table_lookup(s->commands, name);
    if (!def) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "The command %s has not been found", name);
        return false;
    }
    JsonObject *data = json_object_has_member(def, "data") ?
                       json_object_get_object_member(def, "data") : NULL;
    if (!data) {
        if (args && json_object_get_size(args)) {
            g_autoptr(GList) m = json_object_get_members(args);
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter '%s' is unexpected", (char *)m->data);
            return false;
        }
        return true;
    }
    return check_members(s, data, args, "", errp);
}
