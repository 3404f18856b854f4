/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * QMP commands of the machine: negotiation, introspection, run state.
 * Each handler runs in the main thread with arguments already checked
 * against the qapi/ schema files.
 */
#include <string.h>
#include <unistd.h>

#include "crypto/tls.h"
#include "monitor/monitor.h"

static JsonNode *empty_return(void)
{
    return qmp_return_empty();
}

/* The schema admits only "oob", which every session is offered; the
 * dispatcher turns it on for the session (qmp_dispatch). */
static JsonNode *qmp_capabilities(JsonObject *args, void *opaque, GError **errp)
{
    (void)opaque;
    (void)args;
    (void)errp;
    return empty_return();
}

static JsonNode *query_version(JsonObject *args, void *opaque, GError **errp)
{
    (void)args;
    (void)opaque;
    (void)errp;
    JsonObject *q = json_object_new();
    json_object_set_int_member(q, "major", 10);
    json_object_set_int_member(q, "minor", 1);
    json_object_set_int_member(q, "micro", 0);
    JsonObject *v = json_object_new();
    json_object_set_object_member(v, "qemu", q);
    json_object_set_string_member(v, "package", "ferry-" FERRY_VERSION);
    return qmp_return_object(v);
}

static JsonNode *query_commands(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    const GPtrArray *names = qapi_commands(mon->qmp.schema);
    JsonArray *a = json_array_new();
    (void)args;
    (void)errp;
    for (guint i = 0; i < names->len; i++) {
        JsonObject *c = json_object_new();
        json_object_set_string_member(c, "name", names->pdata[i]);
        json_array_add_object_element(a, c);
    }
    return qmp_return_array(a);
}

static JsonNode *query_status(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    JsonObject *s = json_object_new();
    (void)args;
    (void)errp;
    json_object_set_boolean_member(s, "running",
                                   mon->m->state == RUN_STATE_RUNNING);
    json_object_set_string_member(s, "status", runstate_name(mon->m->state));
    return qmp_return_object(s);
}

static JsonNode *qmp_stop(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    Machine *m = mon->m;
    (void)args;
    (void)errp;
    if (m->state == RUN_STATE_RUNNING) {
        machine_pause(m);
        machine_set_state(m, RUN_STATE_PAUSED);
    } else if (m->state == RUN_STATE_PRELAUNCH) {
        machine_set_state(m, RUN_STATE_PAUSED);
    }
    return empty_return();
}

static JsonNode *qmp_cont(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    Machine *m = mon->m;
    (void)args;
    if (m->state == RUN_STATE_SHUTDOWN || m->state == RUN_STATE_INTERNAL_ERROR) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Resetting the Virtual Machine is required");
        return NULL;
    }
    if (m->state == RUN_STATE_FINISH_MIGRATE) {
        /*
         * The source stopped its guest for the switch (pre-switchover,
         * device, every postcopy state): the destination may run it
         * now, and running it here too would split it in two.
         */
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Migration is not finalized yet");
        return NULL;
    }
    if (m->state == RUN_STATE_INMIGRATE) {
        /* QEMU: run once the incoming migration is in (autostart). */
        m->opts->start_paused = false;
        return empty_return();
    }
    if (m->state != RUN_STATE_RUNNING) {
        machine_set_state(m, RUN_STATE_RUNNING);
        machine_resume(m);
    }
    return empty_return();
}

static JsonNode *qmp_quit(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    (void)args;
    (void)errp;
    /* The reply goes out first; the main loop then ends the process. */
    machine_request_exit(mon->m, 0, "host-qmp-quit", false);
    return empty_return();
}

static JsonNode *qmp_getfd(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    QmpDispatcher *d = &mon->qmp;
    const char *name = json_object_get_string_member(args, "fdname");

    if (!d->request_fds || d->request_fds->len == 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "No file descriptor supplied via SCM_RIGHTS");
        return NULL;
    }
    if (g_ascii_isdigit(name[0])) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Parameter 'fdname' may not start with a digit");
        return NULL;
    }
    /* The last fd passed with this request; the others are closed. */
    int fd = g_array_index(d->request_fds, int, d->request_fds->len - 1);
    g_array_set_size(d->request_fds, d->request_fds->len - 1);
    g_hash_table_replace(d->named_fds, g_strdup(name), GINT_TO_POINTER(fd));
    return empty_return();
}

static JsonNode *qmp_closefd(JsonObject *args, void *opaque, GError **errp)
{
    Monitors *mon = opaque;
    int fd = qmp_take_fd(&mon->qmp, json_object_get_string_member(args, "fdname"),
                         errp);
    if (fd < 0) {
        return NULL;
    }
    close(fd);
    return empty_return();
}

/* object-add: the TLS objects (crypto/tls.h); the rest only by -object. */
static JsonNode *qmp_object_add(JsonObject *args, void *opaque, GError **errp)
{
    (void)opaque;
    const char *type = json_object_get_string_member(args, "qom-type");
    const char *id = json_object_get_string_member(args, "id");
    if (!tls_object_type_known(type)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    g_str_has_prefix(type, "memory-backend") || !strcmp(type, "secret")
                    ? "Parameter 'qom-type': ferry makes '%s' objects only with -object"
                    : "Parameter 'qom-type' does not accept value '%s'", type);
        return NULL;
    }
    g_autoptr(JsonObject) props = json_object_new();
    JsonNode *legacy = json_object_get_member(args, "props");
    if (legacy && !JSON_NODE_HOLDS_OBJECT(legacy)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Invalid parameter type for 'props', expected: object");
        return NULL;
    }
    /* The members, and libvirt's older form: the same in "props". */
    JsonObject *from[2] = { args, legacy ? json_node_get_object(legacy) : NULL };
    for (int i = 0; i < 2 && from[i]; i++) {
        g_autoptr(GList) names = json_object_get_members(from[i]);
        for (GList *l = names; l; l = l->next) {
            if (strcmp(l->data, "qom-type") != 0 && strcmp(l->data, "id") != 0 &&
                strcmp(l->data, "props") != 0) {
                json_object_set_member(props, l->data, json_node_copy(
                    json_object_get_member(from[i], l->data)));
            }
        }
    }
    g_autoptr(GError) err = NULL;
    if (!tls_object_add(type, id, props, &err)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "%s", err->message);
        return NULL;
    }
    return empty_return();
}

static JsonNode *qmp_object_del(JsonObject *args, void *opaque, GError **errp)
{
    (void)opaque;
    g_autoptr(GError) err = NULL;
    if (!tls_object_del(json_object_get_string_member(args, "id"), &err)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "%s", err->message);
        return NULL;
    }
    return empty_return();
}

void qmp_cmds_register(Monitors *mon)
{
    QmpDispatcher *d = &mon->qmp;
    qmp_register(d, "qmp_capabilities", qmp_capabilities, mon);
    qmp_register(d, "query-version", query_version, mon);
    qmp_register(d, "query-commands", query_commands, mon);
    qmp_register(d, "query-status", query_status, mon);
    qmp_register(d, "stop", qmp_stop, mon);
    qmp_register(d, "cont", qmp_cont, mon);
    qmp_register(d, "quit", qmp_quit, mon);
    qmp_register(d, "getfd", qmp_getfd, mon);
    qmp_register(d, "closefd", qmp_closefd, mon);
    qmp_register(d, "object-add", qmp_object_add, mon);
    qmp_register(d, "object-del", qmp_object_del, mon);
}
