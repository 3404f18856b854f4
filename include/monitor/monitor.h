/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The monitors of one machine: the QMP command handlers, the QMP
 * servers and the HMP consoles, and the events they send.
 *
 * Threads: main thread only.  Error contract: GError **errp last, bool.
 */
#ifndef MONITOR_MONITOR_H
#define MONITOR_MONITOR_H

#include <stdbool.h>

#include <glib.h>

#include "monitor/qmp.h"
#include "system/machine.h"

typedef struct HmpServer HmpServer;

typedef struct Monitors {
    Machine *m;
    QmpDispatcher qmp;
    GPtrArray *qmp_servers;     /* QmpServer * */
    GPtrArray *hmp_servers;     /* HmpServer * */
} Monitors;

/* monitors_init: register every QMP command and start the servers. */
bool monitors_init(Monitors *mon, Machine *m, char **qmp_specs,
                   char **hmp_specs, GError **errp);
void monitors_cleanup(Monitors *mon);

/* monitors_emit: an event to every QMP session in command mode. */
void monitors_emit(Monitors *mon, const char *name, JsonObject *data);

/* monitors_flush: send what is queued (before the process exits). */
void monitors_flush(Monitors *mon);

/* monitors_unread: what the QMP sessions have not read (qmp_server_unread). */
size_t monitors_unread(Monitors *mon);

/* The QMP command handlers (monitor/qmp-cmds.c). */
void qmp_cmds_register(Monitors *mon);

/* The probe's: target, KVM, machines, QOM types (monitor/qmp-machine.c). */
void qmp_machine_register(Monitors *mon);

/*
 * hmp_parse_line: split @line into words as HMP does (shell quoting) and
 * resolve its command: the canonical name ("cont" for "c", "info status"
 * for "info status"), "" for an empty line, or NULL with @errp
 * (QMP_ERROR_COMMAND_NOT_FOUND: "unknown command: 'x'"; G_SHELL_ERROR
 * for bad quoting).  @argv gets the words; the caller frees both.
 */
char *hmp_parse_line(const char *line, GStrv *argv, GError **errp);

/* HMP (monitor/hmp.c): a console on stdio or a listening socket. */
HmpServer *hmp_server_new(Monitors *mon, const char *spec, GError **errp);
void hmp_server_free(HmpServer *h);

#endif
