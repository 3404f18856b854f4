/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The monitors of one machine; the contract is in include/monitor/monitor.h. */
#include "monitor/monitor.h"

/* Run-state changes become QMP events, as in QEMU. */
static void state_changed(void *opaque, RunState old, RunState now)
{
    Monitors *mon = opaque;
    if (old == RUN_STATE_RUNNING && now != RUN_STATE_RUNNING) {
        monitors_emit(mon, "STOP", NULL);
    } else if (now == RUN_STATE_RUNNING) {
        monitors_emit(mon, "RESUME", NULL);
    }
}

bool monitors_init(Monitors *mon, Machine *m, char **qmp_specs,
                   char **hmp_specs, GError **errp)
{
    mon->m = m;
    mon->qmp_servers = g_ptr_array_new_with_free_func((GDestroyNotify)qmp_server_free);
    mon->hmp_servers = g_ptr_array_new_with_free_func((GDestroyNotify)hmp_server_free);
    if (!qmp_dispatcher_init(&mon->qmp, errp)) {
        return false;
    }
    qmp_cmds_register(mon);
    qmp_machine_register(mon);
    m->state_changed = state_changed;
    m->state_opaque = mon;

    for (char **s = qmp_specs; s && *s; s++) {
        g_autoptr(GError) err = NULL;
        QmpServer *srv = qmp_server_new(&mon->qmp, *s, &err);
        if (!srv) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "-qmp %s: %s", *s,
                        err->message);
            return false;
        }
        g_ptr_array_add(mon->qmp_servers, srv);
    }
    for (char **s = hmp_specs; s && *s; s++) {
        g_autoptr(GError) err = NULL;
        HmpServer *h = hmp_server_new(mon, *s, &err);
        if (!h) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "-monitor %s: %s",
                        *s, err->message);
            return false;
        }
        g_ptr_array_add(mon->hmp_servers, h);
    }
    return true;
}

void monitors_cleanup(Monitors *mon)
{
    if (mon->m) {
        mon->m->state_changed = NULL;
    }
    if (mon->hmp_servers) {
        g_ptr_array_unref(mon->hmp_servers);
    }
    if (mon->qmp_servers) {
        g_ptr_array_unref(mon->qmp_servers);
    }
    if (mon->qmp.schema) {
        qmp_dispatcher_cleanup(&mon->qmp);
    }
    mon->hmp_servers = mon->qmp_servers = NULL;
}

void monitors_emit(Monitors *mon, const char *name, JsonObject *data)
{
    for (guint i = 0; i < mon->qmp_servers->len; i++) {
        qmp_server_emit(mon->qmp_servers->pdata[i], name, data);
    }
}

void monitors_flush(Monitors *mon)
{
    for (guint i = 0; i < mon->qmp_servers->len; i++) {
        qmp_server_flush(mon->qmp_servers->pdata[i]);
    }
}

size_t monitors_unread(Monitors *mon)
{
    size_t n = 0;
    for (guint i = 0; i < mon->qmp_servers->len; i++) {
        n += qmp_server_unread(mon->qmp_servers->pdata[i]);
    }
    return n;
}
