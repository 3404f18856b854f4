/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What a management layer asks a binary about itself before it starts a
 * guest (libvirt's capability probe, ../shared/reference/libvirt-observed.md):
 * the target, KVM, the machine types, the QOM types with their properties,
 * the command-line option groups, and the schema.  Each answer is what
 * this binary implements, so that libvirt builds a command line ferry
 * accepts: a type or a property listed here is one that -object,
 * -device or -machine takes.
 *
 * Threads: the main thread (QMP handlers).  Error contract: QMP
 * handlers, GError **errp last.
 */
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "monitor/monitor.h"
#include "monitor/qapi.h"

typedef struct QomProp {
    const char *name, *type, *description;
} QomProp;

typedef struct QomType {
    const char *name, *parent;
    bool abstract;
    bool device;                /* device-list-properties answers it */
    const QomProp *props;       /* its own, without its parents' */
} QomType;

static const QomProp object_props[] = {
    { "type", "string", NULL },
    { NULL },
};

static const QomProp machine_props[] = {
    { "memory-backend", "link<memory-backend>",
      "Set RAM backend: valid value is ID of hostmem based backend" },
    { "accel", "string", "the accelerator: kvm (a list such as kvm:tcg is "
      "accepted if it names kvm)" },
    { NULL },
};

static const QomProp backend_props[] = {
    { "size", "int", "Size of the memory region (ex: 500M)" },
    { "share", "bool", "Mark the memory as private to QEMU or shared" },
    { "prealloc", "bool", "Preallocate memory" },
    { "reserve", "bool", "Reserve swap space (or huge pages) if applicable" },
    { "host-nodes", "int", "Binds memory to the list of NUMA host nodes" },
    { "policy", "HostMemPolicy", "Set the NUMA policy" },
    { NULL },
};

static const QomProp file_props[] = {
    { "mem-path", "string", "File to be used as memory backing" },
    { NULL },
};

static const QomProp memfd_props[] = {
    { "hugetlb", "bool", "Use huge pages" },
    { "hugetlbsize", "int", "Huge pages size (ex: 2M, 1G)" },
    { NULL },
};

static const QomProp debug_exit_props[] = {
    { "iobase", "uint32", NULL },
    { "iosize", "uint32", NULL },
    { NULL },
};

static const QomProp isa_serial_props[] = {
    { "chardev", "str", "ID of a chardev to use as a backend" },
    { "index", "uint32", "0: ferry has one serial port" },
    { NULL },
};

static const QomProp secret_props[] = {
    { "data", "string", NULL },
    { "file", "string", NULL },
    { "format", "QCryptoSecretFormat", NULL },
    { NULL },
};

static const QomProp tls_creds_props[] = {
    { "dir", "string", NULL },
    { "endpoint", "QCryptoTLSCredsEndpoint", NULL },
    { "verify-peer", "bool", NULL },
    { "priority", "string", NULL },
    { "loaded", "bool", NULL },
    { NULL },
};

static const QomProp tls_psk_props[] = {
    { "username", "string", NULL },
    { NULL },
};

static const QomProp tls_x509_props[] = {
    { "sanity-check", "bool", NULL },
    { "passwordid", "string", NULL },
    { NULL },
};

static const QomProp authz_simple_props[] = {
    { "identity", "string", NULL },
    { NULL },
};

static const QomProp authz_list_props[] = {
    { "policy", "QAuthZListPolicy", NULL },
    { "rules", "QAuthZListRule", NULL },
    { NULL },
};

static const QomType qom_types[] = {
    { "object", NULL, true, false, object_props },
    { "machine", "object", true, false, machine_props },
    { "none-machine", "machine", false, false, NULL },
    { "generic-pc-machine", "machine", true, false, NULL },
    { "pc-i440fx-7.2-machine", "generic-pc-machine", false, false, NULL },
    { "memory-backend", "object", true, false, backend_props },
    { "memory-backend-ram", "memory-backend", false, false, NULL },
    { "memory-backend-file", "memory-backend", false, false, file_props },
    { "memory-backend-memfd", "memory-backend", false, false, memfd_props },
    { "device", "object", true, false, NULL },
    { "isa-device", "device", true, false, NULL },
    { "isa-debug-exit", "isa-device", false, true, debug_exit_props },
    { "isa-serial", "isa-device", false, true, isa_serial_props },
    { "secret", "object", false, false, secret_props },
    { "tls-creds", "object", true, false, tls_creds_props },
    { "tls-creds-psk", "tls-creds", false, false, tls_psk_props },
    { "tls-creds-x509", "tls-creds", false, false, tls_x509_props },
    { "authz", "object", true, false, NULL },
    { "authz-simple", "authz", false, false, authz_simple_props },
    { "authz-list", "authz", false, false, authz_list_props },
    { "cpu", "device", true, false, NULL },
    { "x86_64-cpu", "cpu", true, false, NULL },
    { "host-x86_64-cpu", "x86_64-cpu", false, false, NULL },
};

static const QomType *qom_type(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(qom_types); i++) {
        if (!strcmp(qom_types[i].name, name)) {
            return &qom_types[i];
        }
    }
    return NULL;
}

static bool qom_implements(const QomType *t, const char *ancestor)
{
    for (; t; t = t->parent ? qom_type(t->parent) : NULL) {
        if (!strcmp(t->name, ancestor)) {
            return true;
        }
    }
    return false;
}

/* @t's properties and its ancestors', each once (a subclass's first). */
static JsonArray *qom_props(const QomType *t)
{
    JsonArray *a = json_array_new();
    for (; t; t = t->parent ? qom_type(t->parent) : NULL) {
        for (const QomProp *p = t->props; p && p->name; p++) {
            JsonObject *o = json_object_new();
            json_object_set_string_member(o, "name", p->name);
            json_object_set_string_member(o, "type", p->type);
            if (p->description) {
                json_object_set_string_member(o, "description", p->description);
            }
            json_array_add_object_element(a, o);
        }
    }
    return a;
}

static JsonNode *query_target(JsonObject *args, void *opaque, GError **errp)
{
    (void)args;
    (void)opaque;
    (void)errp;
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "arch", "x86_64");
    return qmp_return_object(o);
}

static JsonNode *query_kvm(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    (void)args;
    (void)errp;
    /* ferry runs only on KVM: the process would not be up without it. */
    bool on = mon->m->kvm.vm_fd >= 0;
    JsonObject *o = json_object_new();
    json_object_set_boolean_member(o, "enabled", on);
    json_object_set_boolean_member(o, "present", on);
    return qmp_return_object(o);
}

static JsonNode *query_machines(JsonObject *args, void *opaque, GError **errp)
{
    (void)args;
    (void)opaque;
    (void)errp;
    JsonArray *a = json_array_new();
    /*
     * One PC: ferry's machine, by the name of the QEMU interface level
     * its PC follows (-machine takes pc, q35 and pc-* for it), and the
     * none machine.  default-ram-id: the RAM is a memory backend that
     * -machine memory-backend= may name.
     */
    JsonObject *pc = json_object_new();
    json_object_set_string_member(pc, "name", "pc-i440fx-7.2");
    json_object_set_string_member(pc, "alias", "pc");
    json_object_set_boolean_member(pc, "is-default", true);
    json_object_set_int_member(pc, "cpu-max", MAX_VCPUS);
    json_object_set_boolean_member(pc, "hotpluggable-cpus", false);
    json_object_set_boolean_member(pc, "numa-mem-supported", false);
    json_object_set_boolean_member(pc, "deprecated", false);
    json_object_set_string_member(pc, "default-cpu-type", "host-x86_64-cpu");
    json_object_set_string_member(pc, "default-ram-id", "pc.ram");
    json_object_set_boolean_member(pc, "acpi", false);
    json_array_add_object_element(a, pc);
    JsonObject *none = json_object_new();
    json_object_set_string_member(none, "name", "none");
    json_object_set_int_member(none, "cpu-max", 1);
    json_object_set_boolean_member(none, "hotpluggable-cpus", false);
    json_object_set_boolean_member(none, "numa-mem-supported", false);
    json_object_set_boolean_member(none, "deprecated", false);
    json_object_set_boolean_member(none, "acpi", false);
    json_array_add_object_element(a, none);
    return qmp_return_array(a);
}

static JsonNode *qom_list_types(JsonObject *args, void *opaque, GError **errp)
{
    (void)opaque;
    const char *implements = args ?
        json_object_get_string_member_with_default(args, "implements", NULL) : NULL;
    bool abstract = args &&
        json_object_get_boolean_member_with_default(args, "abstract", false);
    if (implements && !qom_type(implements)) {
        /* QEMU's words for a class it does not have. */
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Class '%s' not found", implements);
        return NULL;
    }
    JsonArray *a = json_array_new();
    for (size_t i = 0; i < G_N_ELEMENTS(qom_types); i++) {
        const QomType *t = &qom_types[i];
        if ((t->abstract && !abstract) ||
            (implements && !qom_implements(t, implements))) {
            continue;
        }
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "name", t->name);
        if (t->parent) {
            json_object_set_string_member(o, "parent", t->parent);
        }
        if (t->abstract) {
            json_object_set_boolean_member(o, "abstract", true);
        }
        json_array_add_object_element(a, o);
    }
    return qmp_return_array(a);
}

static JsonNode *device_list_properties(JsonObject *args, void *opaque,
                                        GError **errp)
{
    (void)opaque;
    const char *name = json_object_get_string_member(args, "typename");
    const QomType *t = qom_type(name);
    if (!t) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND,
                    "Device '%s' not found", name);
        return NULL;
    }
    if (!t->device) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Parameter 'typename' expects %s",
                    t->abstract ? "a non-abstract device type" : "device");
        return NULL;
    }
    return qmp_return_array(qom_props(t));
}

/*
 * qom-list-properties: a list for every type asked, [] for one ferry
 * does not have.  QEMU says DeviceNotFound there, and libvirt 9.0,
 * which asks for types it never listed, dereferences the NULL list it
 * then gets and crashes (libvirt-observed.md 8.3).
 */
static JsonNode *qom_list_properties(JsonObject *args, void *opaque,
                                     GError **errp)
{
    (void)opaque;
    (void)errp;
    const QomType *t = qom_type(json_object_get_string_member(args, "typename"));
    return qmp_return_array(t ? qom_props(t) : json_array_new());
}

/* -machine's and -smp's keys, the option groups that take key=value. */
static const struct {
    const char *option;
    const QomProp *params;
} cmdline_options[] = {
    { "machine", (const QomProp[]) {
        { "type", "string", "emulated machine" },
        { "accel", "string", "accelerator list" },
        { "memory-backend", "string", "ID of the memory backend for RAM" },
        { NULL } } },
    { "smp-opts", (const QomProp[]) {
        { "cpus", "number", NULL },
        { NULL } } },
    { "accel", (const QomProp[]) { { NULL } } },
};

static JsonNode *query_command_line_options(JsonObject *args, void *opaque,
                                            GError **errp)
{
    (void)opaque;
    const char *want = args ?
        json_object_get_string_member_with_default(args, "option", NULL) : NULL;
    JsonArray *a = json_array_new();
    for (size_t i = 0; i < G_N_ELEMENTS(cmdline_options); i++) {
        if (want && strcmp(want, cmdline_options[i].option) != 0) {
            continue;
        }
        JsonArray *params = json_array_new();
        for (const QomProp *p = cmdline_options[i].params; p->name; p++) {
            JsonObject *o = json_object_new();
            json_object_set_string_member(o, "name", p->name);
            json_object_set_string_member(o, "type", p->type);
            if (p->description) {
                json_object_set_string_member(o, "help", p->description);
            }
            json_array_add_object_element(params, o);
        }
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "option", cmdline_options[i].option);
        json_object_set_array_member(o, "parameters", params);
        json_array_add_object_element(a, o);
    }
    if (want && json_array_get_length(a) == 0) {
        json_array_unref(a);
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "invalid option name: %s", want);
        return NULL;
    }
    return qmp_return_array(a);
}

static JsonNode *query_qmp_schema(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    (void)args;
    (void)errp;
    return qapi_schema_introspect(mon->qmp.schema);
}

/* ---- What libvirt asks once a guest is started -------------------------- */

static JsonNode *query_cpus_fast(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    Machine *m = mon->m;
    (void)args;
    (void)errp;
    JsonArray *a = json_array_new();
    for (int i = 0; i < m->ncpus; i++) {
        /* A vCPU thread notes its id first thing; it may be starting. */
        int tid = 0;
        for (int n = 0; n < 10000 &&
             !(tid = __atomic_load_n(&m->vcpus[i].tid, __ATOMIC_ACQUIRE)); n++) {
            g_usleep(100);
        }
        JsonObject *props = json_object_new();
        json_object_set_int_member(props, "core-id", 0);
        json_object_set_int_member(props, "thread-id", 0);
        json_object_set_int_member(props, "socket-id", i);
        JsonObject *c = json_object_new();
        json_object_set_int_member(c, "cpu-index", i);
        g_autofree char *path = g_strdup_printf("/machine/unattached/device[%d]", i);
        json_object_set_string_member(c, "qom-path", path);
        json_object_set_int_member(c, "thread-id", tid);
        json_object_set_object_member(c, "props", props);
        json_object_set_string_member(c, "target", "x86_64");
        json_array_add_object_element(a, c);
    }
    return qmp_return_array(a);
}

static void add_child(JsonArray *a, const char *name, const char *type)
{
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "name", name);
    json_object_set_string_member(o, "type", type);
    json_array_add_object_element(a, o);
}

/*
 * qom-list: the composition tree where a client looks for what it
 * created: /machine/peripheral (devices given an id) and /objects
 * (-object's).  Other paths (a CPU's properties among them) are not
 * modelled: DeviceNotFound, which libvirt takes as "no properties to
 * read".
 */
static JsonNode *qom_list(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    MachineOptions *o = mon->m->opts;
    const char *path = json_object_get_string_member(args, "path");
    JsonArray *a = json_array_new();
    add_child(a, "type", "string");
    if (!strcmp(path, "/machine/peripheral")) {
        if (o->serial_dev_id) {
            add_child(a, o->serial_dev_id, "child<isa-serial>");
        }
    } else if (!strcmp(path, "/machine/peripheral-anon")) {
        if (o->serial == SERIAL_CHARDEV && !o->serial_dev_id) {
            add_child(a, "device[0]", "child<isa-serial>");
        }
    } else if (!strcmp(path, "/objects")) {
        for (guint i = 0; i < o->objects->len; i++) {
            MemBackendOptions *b = o->objects->pdata[i];
            static const char *const types[] = {
                "child<memory-backend-ram>", "child<memory-backend-memfd>",
                "child<memory-backend-file>",
            };
            add_child(a, b->id, types[b->type]);
        }
        for (guint i = 0; i < o->secrets->len; i++) {
            add_child(a, ((SecretOptions *)o->secrets->pdata[i])->id,
                      "child<secret>");
        }
    } else {
        json_array_unref(a);
        g_set_error(errp, QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND,
                    "Device '%s' not found", path);
        return NULL;
    }
    return qmp_return_array(a);
}

static JsonNode *query_chardev(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    Chardevs *c = &mon->m->opts->chardevs;
    (void)args;
    (void)errp;
    JsonArray *a = json_array_new();
    for (guint i = 0; i < c->devs->len; i++) {
        ChardevOptions *d = c->devs->pdata[i];
        g_autofree char *name = NULL;
        if (d->kind == CHARDEV_FILE) {
            name = g_strdup("file");
        } else if (d->kind == CHARDEV_NULL) {
            name = g_strdup("null");
        } else {
            /* An inherited socket's path is the one it is bound to. */
            struct sockaddr_un sa = { 0 };
            socklen_t len = sizeof(sa);
            const char *path = d->path;
            if (!path && getsockname(d->fd, (struct sockaddr *)&sa, &len) == 0 &&
                sa.sun_family == AF_UNIX) {
                path = sa.sun_path;
            }
            name = g_strdup_printf("unix:%s,server=on", path ? path : "");
        }
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "label", d->id);
        json_object_set_string_member(o, "filename", name);
        json_object_set_boolean_member(o, "frontend-open", d->used);
        json_array_add_object_element(a, o);
    }
    return qmp_return_array(a);
}

/* No block devices: -drive and -blockdev are not options of ferry. */
static JsonNode *query_block(JsonObject *args, void *opaque, GError **errp)
{
    (void)args;
    (void)opaque;
    (void)errp;
    return qmp_return_array(json_array_new());
}

/*
 * qom-get: ferry keeps no QOM properties to read.  A vCPU's path is
 * known, so its property is "not found" (GenericError, QEMU's words):
 * libvirt's reconnect asks the CPU's "migratable" and takes that as
 * "the attribute as the domain XML says".  Any other path does not
 * exist (DeviceNotFound).
 */
static JsonNode *qom_get(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    const char *path = json_object_get_string_member(args, "path");
    const char *prop = json_object_get_string_member(args, "property");
    for (int i = 0; i < mon->m->ncpus; i++) {
        g_autofree char *cpu = g_strdup_printf("/machine/unattached/device[%d]", i);
        if (!strcmp(path, cpu)) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Property 'host-x86_64-cpu.%s' not found", prop);
            return NULL;
        }
    }
    g_set_error(errp, QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND,
                "Device '%s' not found", path);
    return NULL;
}

/* No block jobs: ferry has no block layer (libvirt asks on reconnect). */
static JsonNode *query_jobs(JsonObject *args, void *opaque, GError **errp)
{
    return query_block(args, opaque, errp);
}

void qmp_machine_register(Monitors *mon)
{
    QmpDispatcher *d = &mon->qmp;
    qmp_register(d, "query-target", query_target, mon);
    qmp_register(d, "query-kvm", query_kvm, mon);
    qmp_register(d, "query-machines", query_machines, mon);
    qmp_register(d, "qom-list-types", qom_list_types, mon);
    qmp_register(d, "device-list-properties", device_list_properties, mon);
    qmp_register(d, "qom-list-properties", qom_list_properties, mon);
    qmp_register(d, "query-command-line-options", query_command_line_options,
                 mon);
    qmp_register(d, "query-qmp-schema", query_qmp_schema, mon);
    qmp_register(d, "query-cpus-fast", query_cpus_fast, mon);
    qmp_register(d, "qom-list", qom_list, mon);
    qmp_register(d, "query-chardev", query_chardev, mon);
    qmp_register(d, "query-block", query_block, mon);
    qmp_register(d, "query-named-block-nodes", query_block, mon);
    qmp_register(d, "query-jobs", query_jobs, mon);
    qmp_register(d, "qom-get", qom_get, mon);
}
