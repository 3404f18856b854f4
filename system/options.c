/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The command line; the contract is in include/system/options.h. */
#include "system/options.h"
#include "crypto/tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-glib/json-glib.h>

#define MiB (1024ULL * 1024)

bool parse_size(const char *s, uint64_t default_unit, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-') {
        return false;
    }
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) {
        return false;
    }
    uint64_t unit = default_unit;
    switch (*end) {
    case '\0':
        break;
    case 'B': case 'b': unit = 1; end++; break;
    case 'K': case 'k': unit = 1024; end++; break;
    case 'M': case 'm': unit = MiB; end++; break;
    case 'G': case 'g': unit = 1024 * MiB; end++; break;
    case 'T': case 't': unit = 1024 * 1024 * MiB; end++; break;
    default:
        return false;
    }
    if (*end || v * unit >= 18446744073709551616.0) {
        return false;
    }
    *out = (uint64_t)(v * unit);
    return true;
}

/* "key=value,key=value" into a table; false on a malformed item. */
static GHashTable *parse_props(const char *s)
{
    GHashTable *t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                          g_free);
    g_auto(GStrv) items = g_strsplit(s, ",", -1);
    for (char **it = items; *it; it++) {
        char *eq = strchr(*it, '=');
        if (!**it) {
            continue;
        }
        g_hash_table_insert(t, g_strndup(*it, eq ? eq - *it : (long)strlen(*it)),
                            g_strdup(eq ? eq + 1 : ""));
    }
    return t;
}

static bool parse_u16(const char *s, uint16_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 0);
    if (errno || end == s || *end || v > 0xffff) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = { "on", "yes", "true", "y", NULL };
    static const char *const no[] = { "off", "no", "false", "n", NULL };
    if (g_strv_contains(yes, v)) {
        *out = true;
    } else if (g_strv_contains(no, v)) {
        *out = false;
    } else {
        return false;
    }
    return true;
}

MemBackendOptions *options_find_backend(const MachineOptions *o, const char *id)
{
    for (guint i = 0; o->objects && i < o->objects->len; i++) {
        MemBackendOptions *b = o->objects->pdata[i];
        if (!strcmp(b->id, id)) {
            return b;
        }
    }
    return NULL;
}

/*
 * -object and -device in JSON, as libvirt writes them ({"qom-type":...}
 * or {"driver":...}): the same as "TYPE,key=value,...", with booleans
 * as on/off.  NULL with @errp if it is not such an object; a value
 * holding a comma (which that syntax would need doubled) is refused.
 */
static char *json_to_keyval(const char *opt, const char *arg,
                            const char *type_key, GError **errp)
{
    g_autoptr(JsonParser) p = json_parser_new();
    g_autoptr(GError) err = NULL;
    if (!json_parser_load_from_data(p, arg, -1, &err) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-%s %s: not a JSON object: %s", opt, arg,
                    err ? err->message : "");
        return NULL;
    }
    JsonObject *obj = json_node_get_object(json_parser_get_root(p));
    const char *type = json_object_get_string_member_with_default(obj, type_key,
                                                                  NULL);
    if (!type) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-%s %s: Parameter '%s' is missing", opt, arg, type_key);
        return NULL;
    }
    g_autoptr(GString) out = g_string_new(type);
    g_autoptr(GList) keys = json_object_get_members(obj);
    for (GList *l = keys; l; l = l->next) {
        if (!strcmp(l->data, type_key)) {
            continue;
        }
        JsonNode *v = json_object_get_member(obj, l->data);
        g_autofree char *text = NULL;
        GType t = JSON_NODE_HOLDS_VALUE(v) ? json_node_get_value_type(v) : 0;
        if (t == G_TYPE_BOOLEAN) {
            text = g_strdup(json_node_get_boolean(v) ? "on" : "off");
        } else if (t == G_TYPE_INT64) {
            text = g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(v));
        } else if (t == G_TYPE_STRING && !strchr(json_node_get_string(v), ',')) {
            text = g_strdup(json_node_get_string(v));
        } else {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-%s %s: unsupported value for '%s'", opt, arg,
                        (char *)l->data);
            return NULL;
        }
        g_string_append_printf(out, ",%s=%s", (char *)l->data, text);
    }
    return g_string_free(g_steal_pointer(&out), false);
}

static void secret_free(gpointer p)
{
    SecretOptions *x = p;
    g_free(x->id);
    if (x->data) {
        g_bytes_unref(x->data);
    }
    g_free(x);
}

/* -object secret,id=ID,{data=D|file=F}[,format=raw|base64] */
static bool opt_secret(MachineOptions *o, const char *arg, GError **errp)
{
    g_autoptr(GHashTable) p = parse_props(arg);
    const char *id = g_hash_table_lookup(p, "id");
    const char *data = g_hash_table_lookup(p, "data");
    const char *file = g_hash_table_lookup(p, "file");
    const char *format = g_hash_table_lookup(p, "format");
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, p);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        static const char *const known[] = {
            "secret", "id", "data", "file", "format", NULL,
        };
        if (!g_strv_contains(known, k)) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-object %s: Property 'secret.%s' not found", arg,
                        (char *)k);
            return false;
        }
    }
    if (!id || !*id) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-object %s: Parameter 'id' is missing", arg);
        return false;
    }
    if (!data == !file) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-object %s: 'data' and 'file' are mutually exclusive, "
                    "and one of them is required", arg);
        return false;
    }
    if (format && strcmp(format, "raw") != 0 && strcmp(format, "base64") != 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-object %s: Parameter 'format' does not accept value '%s'",
                    arg, format);
        return false;
    }
    gchar *bytes = NULL;
    gsize len = 0;
    if (file) {
        g_autoptr(GError) err = NULL;
        if (!g_file_get_contents(file, &bytes, &len, &err)) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-object %s: Unable to read %s: %s", arg, file,
                        err->message);
            return false;
        }
    } else {
        bytes = g_strdup(data);
        len = strlen(data);
    }
    if (format && !strcmp(format, "base64")) {
        g_autofree gchar *text = g_strndup(bytes, len);
        g_free(bytes);
        bytes = (gchar *)g_base64_decode(text, &len);
    }
    SecretOptions *x = g_new0(SecretOptions, 1);
    x->id = g_strdup(id);
    x->data = g_bytes_new_take(bytes, len);
    g_ptr_array_add(o->secrets, x);
    return true;
}

/*
 * -object tls-creds-psk|tls-creds-x509|authz-simple|authz-list,id=ID,...
 * (crypto/tls.h): made now, in the process's registry, as QEMU does.
 */
static bool opt_tls_object(const char *arg, GError **errp)
{
    g_autoptr(GHashTable) p = parse_props(arg);
    g_autofree char *type = g_strndup(arg, strcspn(arg, ","));
    const char *id = g_hash_table_lookup(p, "id");
    if (!id || !*id) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-object %s: Parameter 'id' is missing", arg);
        return false;
    }
    g_autoptr(JsonObject) props = json_object_new();
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, p);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (strcmp(k, type) != 0 && strcmp(k, "id") != 0) {
            json_object_set_string_member(props, k, v);
        }
    }
    g_autoptr(GError) err = NULL;
    if (!tls_object_add(type, id, props, &err)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-object %s: %s", arg, err->message);
        return false;
    }
    return true;
}

/* -object memory-backend-{ram,memfd,file},id=ID,size=S,... */
static bool opt_object(MachineOptions *o, const char *arg, GError **errp)
{
    if (arg[0] == '{') {
        g_autoptr(JsonParser) jp = json_parser_new();
        if (json_parser_load_from_data(jp, arg, -1, NULL) &&
            JSON_NODE_HOLDS_OBJECT(json_parser_get_root(jp))) {
            JsonObject *obj = json_node_get_object(json_parser_get_root(jp));
            const char *t = json_object_get_string_member_with_default(
                obj, "qom-type", "");
            if (tls_object_type_known(t)) {
                /* As object-add's arguments: booleans, and rules arrays. */
                g_autofree char *qt = g_strdup(t);
                g_autofree char *id = g_strdup(
                    json_object_get_string_member_with_default(obj, "id", ""));
                json_object_remove_member(obj, "qom-type");
                json_object_remove_member(obj, "id");
                g_autoptr(GError) err = NULL;
                if (!*id || !tls_object_add(qt, id, obj, &err)) {
                    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                                "-object %s: %s", arg,
                                err ? err->message : "Parameter 'id' is missing");
                    return false;
                }
                return true;
            }
        }
        g_autofree char *kv = json_to_keyval("object", arg, "qom-type", errp);
        return kv && opt_object(o, kv, errp);
    }
    g_autofree char *qom_type = g_strndup(arg, strcspn(arg, ","));
    if (tls_object_type_known(qom_type)) {
        return opt_tls_object(arg, errp);
    }
    if (g_str_has_prefix(arg, "secret,")) {
        return opt_secret(o, arg, errp);
    }
    static const char *const types[] = {
        "memory-backend-ram", "memory-backend-memfd", "memory-backend-file", NULL,
    };
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    const char *type = items[0];
    int t;

    for (t = 0; types[t] && strcmp(types[t], type); t++) {
    }
    if (!types[t]) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-object %s: invalid object type: %s", arg, type);
        return false;
    }
    MemBackendOptions *b = g_new0(MemBackendOptions, 1);
    b->type = t;
    b->share = b->type == MEM_BACKEND_MEMFD;    /* QEMU's defaults */
    g_ptr_array_add(o->objects, b);

    for (char **it = items + 1; *it; it++) {
        char *eq = strchr(*it, '=');
        g_autofree char *k = g_strndup(*it, eq ? eq - *it : (long)strlen(*it));
        const char *v = eq ? eq + 1 : "on";
        bool ok = true;

        if (!strcmp(k, "id")) {
            g_free(b->id);
            b->id = g_strdup(v);
        } else if (!strcmp(k, "size")) {
            ok = parse_size(v, 1, &b->size);
        } else if (!strcmp(k, "share")) {
            ok = parse_bool(v, &b->share);
        } else if (!strcmp(k, "prealloc")) {
            ok = parse_bool(v, &b->prealloc);
        } else if (!strcmp(k, "reserve")) {
            bool reserve = true;
            ok = parse_bool(v, &reserve);
            b->noreserve = !reserve;
        } else if (!strcmp(k, "host-nodes")) {
            g_free(b->host_nodes);
            b->host_nodes = g_strdup(v);
        } else if (!strcmp(k, "policy")) {
            static const char *const pol[] = {
                "default", "preferred", "bind", "interleave", NULL,
            };
            int p;
            for (p = 0; pol[p] && strcmp(pol[p], v); p++) {
            }
            ok = pol[p] != NULL;
            b->policy = p;
        } else if (!strcmp(k, "hugetlb") && b->type == MEM_BACKEND_MEMFD) {
            ok = parse_bool(v, &b->hugetlb);
        } else if (!strcmp(k, "hugetlbsize") && b->type == MEM_BACKEND_MEMFD) {
            ok = parse_size(v, 1, &b->hugetlbsize);
        } else if (!strcmp(k, "mem-path") && b->type == MEM_BACKEND_FILE) {
            g_free(b->mem_path);
            b->mem_path = g_strdup(v);
        } else {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-object %s: Property '%s.%s' not found", arg, type, k);
            return false;
        }
        if (!ok) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-object %s: invalid value '%s' for '%s'", arg, v, k);
            return false;
        }
    }
    if (!b->id) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-object %s: Parameter 'id' is missing", arg);
        return false;
    }
    if (!b->size) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-object %s: can't create backend with size 0", arg);
        return false;
    }
    if (b->type == MEM_BACKEND_FILE && !b->mem_path) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-object %s: mem-path property not set", arg);
        return false;
    }
    for (guint i = 0; i + 1 < o->objects->len; i++) {
        if (!strcmp(((MemBackendOptions *)o->objects->pdata[i])->id, b->id)) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-object %s: duplicate ID '%s' for object", arg, b->id);
            return false;
        }
    }
    return true;
}

/*
 * -accel's and -machine accel='s list, "kvm:tcg" as libvirt's probe
 * gives it: the first that works is used, and ferry has only KVM.
 */
static bool accel_has_kvm(const char *list)
{
    g_auto(GStrv) names = g_strsplit(list, ":", -1);
    return g_strv_contains((const char *const *)names, "kvm");
}

/* -machine [TYPE][,accel=kvm][,memory-backend=ID]; TYPE none: no guest */
static bool opt_machine(MachineOptions *o, const char *arg, GError **errp)
{
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    for (char **it = items; *it; it++) {
        char *eq = strchr(*it, '=');
        g_autofree char *k = g_strndup(*it, eq ? eq - *it : (long)strlen(*it));
        const char *v = eq ? eq + 1 : NULL;
        if (it == items && !v) {
            k = (g_free(k), g_strdup("type"));
            v = *it;
        }
        if (!strcmp(k, "type") && v && (!strcmp(v, "pc") || !strcmp(v, "q35") ||
                                        g_str_has_prefix(v, "pc-"))) {
            o->machine_none = false;
            continue;
        } else if (!strcmp(k, "type") && v && !strcmp(v, "none")) {
            o->machine_none = true;
            continue;
        } else if (!strcmp(k, "accel") && v && accel_has_kvm(v)) {
            continue;
        } else if (!strcmp(k, "memory-backend") && v && *v) {
            g_free(o->memory_backend);
            o->memory_backend = g_strdup(v);
            continue;
        } else if (!strcmp(k, "usb") && v && !strcmp(v, "off")) {
            continue;                   /* ferry's PC has no USB */
        } else if (!strcmp(k, "dump-guest-core") && v &&
                   parse_bool(v, &o->dump_guest_core)) {
            continue;
        }
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-machine %s: unsupported machine property '%s'", arg, *it);
        return false;
    }
    return true;
}

/* -device isa-serial,chardev=ID[,id=ID][,index=0]: the one serial port. */
static bool opt_isa_serial(MachineOptions *o, const char *arg, GHashTable *p,
                           GError **errp)
{
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, p);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (!strcmp(k, "isa-serial") || !strcmp(k, "chardev") ||
            !strcmp(k, "id") || (!strcmp(k, "index") && !strcmp(v, "0"))) {
            continue;
        }
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-device %s: Property 'isa-serial.%s' %s", arg, (char *)k,
                    strcmp(k, "index") ? "not found" :
                    "can only be 0: ferry has one serial port");
        return false;
    }
    const char *chr = g_hash_table_lookup(p, "chardev");
    if (!chr || !*chr) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-device %s: Property 'chardev' is required", arg);
        return false;
    }
    if (o->serial_chardev) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-device %s: ferry has one serial port", arg);
        return false;
    }
    o->serial_chardev = g_strdup(chr);
    o->serial_dev_id = g_strdup(g_hash_table_lookup(p, "id"));
    return true;
}

static bool opt_device(MachineOptions *o, const char *arg, GError **errp)
{
    if (arg[0] == '{') {
        g_autofree char *kv = json_to_keyval("device", arg, "driver", errp);
        return kv && opt_device(o, kv, errp);
    }
    g_autoptr(GHashTable) p = parse_props(arg);
    g_auto(GStrv) parts = g_strsplit(arg, ",", 2);
    const char *driver = parts[0];
    if (!strcmp(driver, "isa-serial")) {
        return opt_isa_serial(o, arg, p, errp);
    }

    if (strcmp(driver, "isa-debug-exit") != 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-device %s: '%s' is not a valid device model name",
                    arg, driver);
        return false;
    }
    o->debug_exit = true;
    o->debug_exit_iobase = 0x501;       /* QEMU's defaults */
    o->debug_exit_iosize = 2;
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, p);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        uint16_t *dst = !strcmp(k, "iobase") ? &o->debug_exit_iobase :
                        !strcmp(k, "iosize") ? &o->debug_exit_iosize : NULL;
        if (!strcmp(k, driver)) {
            continue;
        }
        if (!dst) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-device %s: Property 'isa-debug-exit.%s' not found",
                        arg, (char *)k);
            return false;
        }
        if (!parse_u16(v, dst) || (dst == &o->debug_exit_iosize && *dst == 0)) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-device %s: invalid value '%s' for '%s'", arg,
                        (char *)v, (char *)k);
            return false;
        }
    }
    return true;
}

static bool opt_serial(MachineOptions *o, const char *arg, GError **errp)
{
    if (!strcmp(arg, "stdio")) {
        o->serial = SERIAL_STDIO;
    } else if (!strcmp(arg, "none") || !strcmp(arg, "null")) {
        o->serial = SERIAL_NONE;
    } else if (g_str_has_prefix(arg, "file:") && arg[5]) {
        o->serial = SERIAL_FILE;
        g_free(o->serial_path);
        o->serial_path = g_strdup(arg + 5);
    } else {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-serial %s: 'serial' backend '%s' is not supported "
                    "(stdio, file:PATH, none)", arg, arg);
        return false;
    }
    return true;
}

static bool opt_smp(MachineOptions *o, const char *arg, GError **errp)
{
    g_autoptr(GHashTable) p = parse_props(arg);
    const char *n = g_hash_table_lookup(p, "cpus");
    g_auto(GStrv) parts = g_strsplit(arg, ",", 2);
    if (!n && !strchr(parts[0], '=')) {
        n = parts[0];
    }
    char *end;
    long v = n ? strtol(n, &end, 10) : -1;
    if (!n || end == n || *end || v < 1 || v > MAX_VCPUS) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-smp %s: the number of CPUs must be 1 to %d", arg,
                    MAX_VCPUS);
        return false;
    }
    o->smp = v;
    return true;
}

/* -name NAME or -name guest=NAME[,debug-threads=on|off]: ferry names
 * its threads always ("CPU 0/KVM", "mig/src/...", as QEMU with
 * debug-threads=on). */
static bool opt_name(MachineOptions *o, const char *arg, GError **errp)
{
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    for (char **it = items; *it; it++) {
        bool b;
        if (it == items && !strchr(*it, '=')) {
            g_free(o->name);
            o->name = g_strdup(*it);
        } else if (g_str_has_prefix(*it, "guest=")) {
            g_free(o->name);
            o->name = g_strdup(*it + 6);
        } else if (!(g_str_has_prefix(*it, "debug-threads=") &&
                     parse_bool(*it + 14, &b))) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-name %s: Invalid parameter '%s'", arg, *it);
            return false;
        }
    }
    return true;
}

static bool opt_uuid(MachineOptions *o, const char *arg, GError **errp)
{
    if (!g_uuid_string_is_valid(arg)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-uuid %s: Fail to parse UUID string", arg);
        return false;
    }
    g_free(o->uuid);
    o->uuid = g_ascii_strdown(arg, -1);
    return true;
}

/*
 * Options whose only values ferry takes are what it does anyway:
 * -overcommit mem-lock=off,cpu-pm=off (guest RAM is not locked, vCPUs
 * exit on HLT), -rtc base=utc (the guest's clock is the host's UTC),
 * -boot with -kernel (no firmware boots anything), -audiodev driver=none
 * (no sound device), -msg timestamp=on|off (ferry's messages carry one
 * with on).  Anything else is refused, naming it.
 */
static bool opt_accepted(MachineOptions *o, const char *name, const char *arg,
                         GError **errp)
{
    /* values: the ones taken, '|' between; NULL: any */
    static const struct { const char *opt, *key, *values; } ok[] = {
        { "overcommit", "mem-lock", "off" },
        { "overcommit", "cpu-pm", "off" },
        { "rtc", "base", "utc" },
        { "boot", "strict", "on|off" },
        { "boot", "menu", "off" },
        { "audiodev", "id", NULL },
        { "audiodev", "driver", "none" },
        { "msg", "timestamp", "on|off" },
        { "msg", "guest-name", "off" },
    };

    g_autofree char *kv = NULL;
    if (arg[0] == '{') {
        /* -audiodev {"id":"audio1","driver":"none"} */
        g_autofree char *driver = json_to_keyval(name, arg, "driver", errp);
        if (!driver) {
            return false;
        }
        kv = g_strconcat("driver=", driver, NULL);
        arg = kv;
    }
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    for (char **it = items; *it; it++) {
        char *eq = strchr(*it, '=');
        g_autofree char *k = g_strndup(*it, eq ? eq - *it : (long)strlen(*it));
        const char *v = eq ? eq + 1 : "";
        size_t i;
        for (i = 0; i < G_N_ELEMENTS(ok); i++) {
            g_auto(GStrv) vals = ok[i].values ? g_strsplit(ok[i].values, "|", -1)
                                              : NULL;
            if (!strcmp(ok[i].opt, name) && !strcmp(ok[i].key, k) &&
                (!vals || g_strv_contains((const char *const *)vals, v))) {
                break;
            }
        }
        if (i == G_N_ELEMENTS(ok)) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-%s %s: '%s' is not supported by ferry", name, arg,
                        *it);
            return false;
        }
        if (!strcmp(name, "msg") && !strcmp(k, "timestamp")) {
            o->msg_timestamp = !strcmp(v, "on");
        }
    }
    return true;
}

bool options_parse(MachineOptions *o, int argc, char **argv, GError **errp)
{
    /* Options that take an argument, and those that take none. */
    static const char *const with_arg[] = {
        "m", "smp", "kernel", "append", "serial", "device", "display",
        "accel", "cpu", "name", "pidfile", "machine", "qmp", "monitor",
        "object", "incoming", "chardev", "add-fd", "mon", "uuid",
        "overcommit", "rtc", "boot", "audiodev", "msg", NULL,
    };
    static const char *const flags[] = {
        "S", "enable-kvm", "no-reboot", "nodefaults", "daemonize",
        "no-user-config", "nographic", "no-shutdown", "no-acpi", NULL,
    };
    g_autoptr(GPtrArray) mons = g_ptr_array_new();     /* -mon, resolved last */
    bool serial_given = false, nodefaults = false;
    g_autoptr(GStrvBuilder) qmp = g_strv_builder_new();
    g_autoptr(GStrvBuilder) monitor = g_strv_builder_new();

    memset(o, 0, sizeof(*o));
    o->objects = g_ptr_array_new_with_free_func(
        (GDestroyNotify)mem_backend_options_free);
    o->ram_size = 128 * MiB;
    o->smp = 1;
    o->serial = SERIAL_STDIO;
    o->dump_guest_core = true;
    o->secrets = g_ptr_array_new_with_free_func(secret_free);
    chardevs_init(&o->chardevs);

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (opt[0] != '-') {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION,
                        "%s: invalid option", opt);
            return false;
        }
        const char *name = opt + (opt[1] == '-' ? 2 : 1);
        if (g_strv_contains(flags, name)) {
            if (!strcmp(name, "S")) {
                o->start_paused = true;
            } else if (!strcmp(name, "no-reboot")) {
                o->no_reboot = true;
            } else if (!strcmp(name, "daemonize")) {
                o->daemonize = true;
            } else if (!strcmp(name, "nodefaults")) {
                nodefaults = true;
            } else if (!strcmp(name, "no-shutdown")) {
                o->no_shutdown = true;
            }
            /* -no-acpi: ferry's PC has no ACPI. */
            /* -no-user-config: ferry reads no configuration file anyway.
             * -nographic: ferry has no display, and with -nodefaults
             * (libvirt's way) nothing goes to stdio. */
            continue;
        }
        if (!g_strv_contains(with_arg, name)) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION,
                        "%s: invalid option", opt);
            return false;
        }
        if (i + 1 >= argc) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "%s: requires an argument", opt);
            return false;
        }
        const char *arg = argv[++i];
        bool ok = true;

        if (!strcmp(name, "m")) {
            g_autoptr(GHashTable) p = parse_props(arg);
            const char *sz = g_hash_table_lookup(p, "size");
            g_auto(GStrv) parts = g_strsplit(arg, ",", 2);
            ok = parse_size(sz ? sz : parts[0], MiB, &o->ram_size) &&
                 o->ram_size >= 2 * MiB && o->ram_size % TARGET_PAGE_SIZE == 0;
            o->ram_size_given = true;
            if (!ok) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "-m %s: invalid RAM size (at least 2M, a "
                            "multiple of 4K)", arg);
            }
        } else if (!strcmp(name, "smp")) {
            ok = opt_smp(o, arg, errp);
        } else if (!strcmp(name, "kernel")) {
            g_free(o->kernel);
            o->kernel = g_strdup(arg);
        } else if (!strcmp(name, "append")) {
            g_free(o->append);
            o->append = g_strdup(arg);
        } else if (!strcmp(name, "serial")) {
            ok = opt_serial(o, arg, errp);
            serial_given = true;
        } else if (!strcmp(name, "device")) {
            ok = opt_device(o, arg, errp);
        } else if (!strcmp(name, "display")) {
            if (strcmp(arg, "none") != 0) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "-display %s: only 'none' is supported", arg);
                ok = false;
            }
        } else if (!strcmp(name, "accel")) {
            g_auto(GStrv) parts = g_strsplit(arg, ",", 2);
            if (!accel_has_kvm(parts[0])) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "-accel %s: only the kvm accelerator is supported",
                            arg);
                ok = false;
            }
        } else if (!strcmp(name, "cpu")) {
            g_auto(GStrv) parts = g_strsplit(arg, ",", 2);
            if (strcmp(parts[0], "host") != 0 && strcmp(parts[0], "max") != 0) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "-cpu %s: unable to find CPU model '%s' (host, max)",
                            arg, parts[0]);
                ok = false;
            }
        } else if (!strcmp(name, "name")) {
            ok = opt_name(o, arg, errp);
        } else if (!strcmp(name, "chardev")) {
            ok = chardev_parse(&o->chardevs, arg, errp);
        } else if (!strcmp(name, "add-fd")) {
            ok = add_fd_parse(&o->chardevs, arg, errp);
        } else if (!strcmp(name, "mon")) {
            g_ptr_array_add(mons, (char *)arg);
        } else if (!strcmp(name, "uuid")) {
            ok = opt_uuid(o, arg, errp);
        } else if (!strcmp(name, "overcommit") || !strcmp(name, "rtc") ||
                   !strcmp(name, "boot") || !strcmp(name, "audiodev") ||
                   !strcmp(name, "msg")) {
            ok = opt_accepted(o, name, arg, errp);
        } else if (!strcmp(name, "incoming")) {
            g_free(o->incoming);
            o->incoming = g_strdup(arg);
        } else if (!strcmp(name, "qmp")) {
            g_strv_builder_add(qmp, arg);
        } else if (!strcmp(name, "monitor")) {
            g_strv_builder_add(monitor, arg);
        } else if (!strcmp(name, "pidfile")) {
            g_free(o->pidfile);
            o->pidfile = g_strdup(arg);
        } else if (!strcmp(name, "machine")) {
            ok = opt_machine(o, arg, errp);
        } else if (!strcmp(name, "object")) {
            ok = opt_object(o, arg, errp);
        }
        if (!ok) {
            return false;
        }
    }
    if (nodefaults && !serial_given) {
        o->serial = SERIAL_NONE;    /* QEMU: no default serial port */
    }
    if (o->serial_chardev) {
        if (serial_given && o->serial != SERIAL_NONE) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-device isa-serial and -serial: ferry has one "
                        "serial port");
            return false;
        }
        ChardevOptions *c = chardev_find(&o->chardevs, o->serial_chardev);
        if (!c || c->used) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-device isa-serial: chardev '%s' %s", o->serial_chardev,
                        c ? "is in use already" : "not found");
            return false;
        }
        c->used = true;
        o->serial = SERIAL_CHARDEV;
    }
    for (guint i = 0; i < mons->len; i++) {
        bool control;
        g_autofree char *spec = mon_resolve(&o->chardevs, mons->pdata[i],
                                            &control, errp);
        if (!spec) {
            return false;
        }
        g_strv_builder_add(control ? qmp : monitor, spec);
    }
    o->qmp = g_strv_builder_end(qmp);
    o->monitor = g_strv_builder_end(monitor);
    if (o->memory_backend) {
        MemBackendOptions *b = options_find_backend(o, o->memory_backend);
        if (!b) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Memory backend '%s' not found", o->memory_backend);
            return false;
        }
        if (o->ram_size_given && o->ram_size != b->size) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-m %" G_GUINT64_FORMAT "M does not match the size of "
                        "memory-backend '%s' (%" G_GUINT64_FORMAT "M)",
                        o->ram_size >> 20, b->id, b->size >> 20);
            return false;
        }
        o->ram_size = b->size;
    }
    if (!o->kernel && !o->incoming && !o->machine_none) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-kernel is required: ferry boots a Multiboot kernel "
                    "(or give -incoming)");
        return false;
    }
    if (o->daemonize && (o->serial == SERIAL_STDIO ||
                         g_strv_contains((const char *const *)o->monitor,
                                         "stdio"))) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-daemonize cannot be used with stdio (give -serial "
                    "file:PATH or none, and a socket monitor)");
        return false;
    }
    return true;
}

void options_cleanup(MachineOptions *o)
{
    chardevs_cleanup(&o->chardevs);
    if (o->secrets) {
        g_ptr_array_unref(o->secrets);
    }
    g_free(o->serial_chardev);
    g_free(o->serial_dev_id);
    g_free(o->uuid);
    g_free(o->kernel);
    g_free(o->append);
    g_free(o->serial_path);
    g_free(o->name);
    g_free(o->pidfile);
    g_strfreev(o->qmp);
    g_strfreev(o->monitor);
    if (o->objects) {
        g_ptr_array_unref(o->objects);
    }
    g_free(o->memory_backend);
    g_free(o->incoming);
    memset(o, 0, sizeof(*o));
}
