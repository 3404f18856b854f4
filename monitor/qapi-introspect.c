/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * query-qmp-schema: ferry's own schema (the qapi/ files) in QAPI's
 * introspection format, SchemaInfo as QEMU returns it.  libvirt reads
 * its features from this (a command, an argument, an enum value, a
 * member of a reply), so it is derived from the same definitions that
 * check every command's arguments: it can say nothing ferry refuses.
 *
 * Type names are left unmasked (QEMU numbers them; clients follow the
 * references and never read the names).  An inline struct becomes an
 * implicit object type named q_obj_<owner>-<member>, a command's or an
 * event's data q_obj_<name>-arg, none q_empty, and an array [T], as in
 * QEMU.
 */
#include "monitor/qapi.h"

#include <string.h>

typedef struct Introspect {
    JsonArray *out;
    GHashTable *emitted;        /* type names already in out */
    GHashTable *types;          /* struct and enum name -> definition */
} Introspect;

static const char *type_ref(Introspect *in, JsonNode *type, const char *owner);

static void emit_builtin(Introspect *in, const char *name)
{
    static const struct { const char *name, *json; } builtins[] = {
        { "str", "string" }, { "int", "int" }, { "size", "int" },
        { "number", "number" }, { "bool", "boolean" }, { "null", "null" },
        { "any", "value" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(builtins); i++) {
        if (!strcmp(builtins[i].name, name)) {
            JsonObject *o = json_object_new();
            json_object_set_string_member(o, "name", name);
            json_object_set_string_member(o, "meta-type", "builtin");
            json_object_set_string_member(o, "json-type", builtins[i].json);
            json_array_add_object_element(in->out, o);
            return;
        }
    }
}

/* An object type @name with the members of @data ("*" marks optional). */
static void emit_object(Introspect *in, const char *name, JsonObject *data)
{
    if (!g_hash_table_add(in->emitted, g_strdup(name))) {
        return;
    }
    JsonArray *members = json_array_new();
    if (data) {
        g_autoptr(GList) keys = json_object_get_members(data);
        for (GList *l = keys; l; l = l->next) {
            const char *m = l->data;
            bool optional = m[0] == '*';
            const char *bare = optional ? m + 1 : m;
            const char *base = g_str_has_prefix(name, "q_obj_") ? name + 6 : name;
            g_autofree char *owner = g_strdup_printf("%s-%s", base, bare);
            JsonObject *mo = json_object_new();
            json_object_set_string_member(mo, "name", bare);
            json_object_set_string_member(
                mo, "type", type_ref(in, json_object_get_member(data, m), owner));
            if (optional) {
                json_object_set_null_member(mo, "default");
            }
            json_array_add_object_element(members, mo);
        }
    }
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "name", name);
    json_object_set_string_member(o, "meta-type", "object");
    json_object_set_array_member(o, "members", members);
    json_array_add_object_element(in->out, o);
}

static void emit_enum(Introspect *in, const char *name, JsonArray *vals)
{
    JsonArray *values = json_array_new(), *members = json_array_new();
    for (guint i = 0; i < json_array_get_length(vals); i++) {
        const char *v = json_array_get_string_element(vals, i);
        json_array_add_string_element(values, v);
        JsonObject *mo = json_object_new();
        json_object_set_string_member(mo, "name", v);
        json_array_add_object_element(members, mo);
    }
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "name", name);
    json_object_set_string_member(o, "meta-type", "enum");
    json_object_set_array_member(o, "values", values);
    json_object_set_array_member(o, "members", members);
    json_array_add_object_element(in->out, o);
}

/* The name @type is known by, emitting its definition once. */
static const char *type_ref(Introspect *in, JsonNode *type, const char *owner)
{
    if (JSON_NODE_HOLDS_ARRAY(type)) {
        JsonNode *elem = json_array_get_element(json_node_get_array(type), 0);
        g_autofree char *elem_owner = g_strdup_printf("%s-elem", owner);
        const char *e = type_ref(in, elem, elem_owner);
        g_autofree char *name = g_strdup_printf("[%s]", e);
        if (g_hash_table_add(in->emitted, g_strdup(name))) {
            JsonObject *o = json_object_new();
            json_object_set_string_member(o, "name", name);
            json_object_set_string_member(o, "meta-type", "array");
            json_object_set_string_member(o, "element-type", e);
            json_array_add_object_element(in->out, o);
        }
        return g_hash_table_lookup(in->emitted, name);
    }
    if (JSON_NODE_HOLDS_OBJECT(type)) {
        g_autofree char *name = g_strdup_printf("q_obj_%s", owner);
        emit_object(in, name, json_node_get_object(type));
        return g_hash_table_lookup(in->emitted, name);
    }
    const char *t = json_node_get_string(type);
    if (!g_hash_table_contains(in->emitted, t)) {
        g_hash_table_add(in->emitted, g_strdup(t));
        JsonObject *def = g_hash_table_lookup(in->types, t);
        if (!def) {
            emit_builtin(in, t);
        } else if (json_object_has_member(def, "enum")) {
            emit_enum(in, t, json_object_get_array_member(def, "data"));
        } else {
            /* emit_object adds the name itself: take it back first. */
            g_hash_table_remove(in->emitted, t);
            emit_object(in, t, json_object_get_object_member(def, "data"));
        }
    }
    return g_hash_table_lookup(in->emitted, t);
}

/* A command's or an event's data: q_obj_<name>-arg, or q_empty. */
static const char *arg_type(Introspect *in, JsonObject *def, const char *name)
{
    if (!json_object_has_member(def, "data")) {
        emit_object(in, "q_empty", NULL);
        return "q_empty";
    }
    g_autofree char *owner = g_strdup_printf("%s-arg", name);
    return type_ref(in, json_object_get_member(def, "data"), owner);
}

static void index_type(JsonArray *a, guint i, JsonNode *n, gpointer opaque)
{
    (void)a;
    (void)i;
    JsonObject *d = json_node_get_object(n);
    const char *name = json_object_get_string_member_with_default(d, "struct", NULL);
    if (!name) {
        name = json_object_get_string_member_with_default(d, "enum", NULL);
    }
    if (name) {
        g_hash_table_insert(opaque, (char *)name, d);
    }
}

JsonNode *qapi_introspect(JsonArray *defs)
{
    Introspect in = {
        .out = json_array_new(),
        .emitted = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL),
        .types = g_hash_table_new(g_str_hash, g_str_equal),
    };
    json_array_foreach_element(defs, index_type, in.types);
    for (guint i = 0; i < json_array_get_length(defs); i++) {
        JsonObject *d = json_array_get_object_element(defs, i);
        const char *name;
        if ((name = json_object_get_string_member_with_default(d, "command", NULL))) {
            const char *arg = arg_type(&in, d, name);
            const char *ret = "q_empty";
            if (json_object_has_member(d, "returns")) {
                g_autofree char *owner = g_strdup_printf("%s-ret", name);
                ret = type_ref(&in, json_object_get_member(d, "returns"), owner);
            } else {
                emit_object(&in, "q_empty", NULL);
            }
            JsonObject *o = json_object_new();
            json_object_set_string_member(o, "name", name);
            json_object_set_string_member(o, "meta-type", "command");
            json_object_set_string_member(o, "arg-type", arg);
            json_object_set_string_member(o, "ret-type", ret);
            if (json_object_get_boolean_member_with_default(d, "allow-oob", false)) {
                json_object_set_boolean_member(o, "allow-oob", true);
            }
            json_array_add_object_element(in.out, o);
        } else if ((name = json_object_get_string_member_with_default(d, "event", NULL))) {
            JsonObject *o = json_object_new();
            json_object_set_string_member(o, "name", name);
            json_object_set_string_member(o, "meta-type", "event");
            json_object_set_string_member(o, "arg-type", arg_type(&in, d, name));
            json_array_add_object_element(in.out, o);
        }
    }
    g_hash_table_unref(in.types);
    g_hash_table_unref(in.emitted);
    JsonNode *n = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(n, in.out);
    return n;
}
