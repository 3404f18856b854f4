/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * QMP: the command dispatcher and the server.
 *
 * Threads: everything here runs in the main thread (the GMainLoop);
 * command handlers too.  Error contract: handlers take GError **errp
 * last and return the result node (a new reference), or NULL with the
 * error set; the error's code picks QMP's error class.
 */
#ifndef MONITOR_QMP_H
#define MONITOR_QMP_H

#include <stdbool.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "monitor/qapi.h"

#define QMP_ERROR (qmp_error_quark())
GQuark qmp_error_quark(void);

typedef enum QmpErrorCode {
    QMP_ERROR_GENERIC,              /* "GenericError" */
    QMP_ERROR_COMMAND_NOT_FOUND,    /* "CommandNotFound" */
    QMP_ERROR_DEVICE_NOT_ACTIVE,    /* "DeviceNotActive" */
    QMP_ERROR_DEVICE_NOT_FOUND,     /* "DeviceNotFound" */
} QmpErrorCode;

const char *qmp_error_class(const GError *err);

/*
 * A handler's result that owns @o (or @a): the reply frees it.  (A node
 * made with json_node_init_object() takes a reference of its own, so
 * the handler's was never dropped: every reply leaked its tree.)
 */
static inline JsonNode *qmp_return_object(JsonObject *o)
{
    JsonNode *n = json_node_init(json_node_alloc(), JSON_NODE_OBJECT);
    json_node_take_object(n, o);
    return n;
}

static inline JsonNode *qmp_return_array(JsonArray *a)
{
    JsonNode *n = json_node_init(json_node_alloc(), JSON_NODE_ARRAY);
    json_node_take_array(n, a);
    return n;
}

/* {} */
static inline JsonNode *qmp_return_empty(void)
{
    return qmp_return_object(json_object_new());
}

/* A handler: the arguments have already been checked against the schema. */
typedef JsonNode *(*QmpCommandFunc)(JsonObject *args, void *opaque,
                                    GError **errp);

typedef struct QmpDispatcher {
    QapiSchema *schema;
    GHashTable *commands;       /* name -> QmpCommandEntry */
    GHashTable *named_fds;      /* getfd: name -> fd (GINT_TO_POINTER) */
    GArray *request_fds;        /* fds passed with the request being run, or NULL */
} QmpDispatcher;

bool qmp_dispatcher_init(QmpDispatcher *d, GError **errp);
void qmp_dispatcher_cleanup(QmpDispatcher *d);

/* qmp_register: @name must be in the schema (checked: a programming error). */
void qmp_register(QmpDispatcher *d, const char *name, QmpCommandFunc fn,
                  void *opaque);

/*
 * qmp_execute: run @name with @args (may be NULL) after checking them;
 * for HMP and for the server.  Returns the result, or NULL and @errp.
 */
JsonNode *qmp_execute(QmpDispatcher *d, const char *name, JsonObject *args,
                      GError **errp);

/* What a session has negotiated (qmp_dispatch keeps it). */
typedef struct QmpSessionState {
    bool negotiating;           /* qmp_capabilities not sent yet */
    bool oob;                   /* qmp_capabilities enabled "oob" */
} QmpSessionState;

/*
 * qmp_dispatch: one request object; returns the response object
 * ({"return": ...} or {"error": {"class", "desc"}}, with "id" echoed).
 * "exec-oob" runs a command marked allow-oob, once @st has "oob", as
 * QEMU: every command runs to its end in the main loop as it is read,
 * without waiting on another, so out-of-band is as immediate as in-band
 * here, and the point is the interface (libvirt sends migrate-recover
 * and migrate-pause with it).
 */
JsonObject *qmp_dispatch(QmpDispatcher *d, JsonNode *request,
                         QmpSessionState *st);

/*
 * qmp_take_fd: the fd filed under @name by getfd, now the caller's to
 * close; -1 and @errp if there is none.
 */
int qmp_take_fd(QmpDispatcher *d, const char *name, GError **errp);

/*
 * qmp_reply_text: @msg (taken: freed here) as one line of JSON, with
 * non-finite numbers as null (JSON has none), and with @raw_id, if
 * non-NULL, as its "id" member exactly as the client wrote it (see
 * json_stream_member_raw).
 */
char *qmp_reply_text(JsonObject *msg, const char *raw_id);

/* qmp_error_response: {"error": {...}} for @err, with @id if non-NULL. */
JsonObject *qmp_error_response(const GError *err, JsonNode *id);

/* ---- The server --------------------------------------------------------- */

typedef struct QmpServer QmpServer;

/*
 * qmp_server_new: listen on @spec, QEMU's chardev syntax:
 * "unix:PATH,server=on,wait=off" (socket mode 0600) or
 * "tcp:HOST:PORT,server=on,wait=off".
 */
QmpServer *qmp_server_new(QmpDispatcher *d, const char *spec, GError **errp);
void qmp_server_free(QmpServer *s);

/* qmp_server_emit: send event @name (@data may be NULL) to every session
 * in command mode, with QMP's timestamp. */
void qmp_server_emit(QmpServer *s, const char *name, JsonObject *data);

/* qmp_server_flush: write what is queued, blocking briefly (before exit). */
void qmp_server_flush(QmpServer *s);

/*
 * qmp_server_unread: bytes of replies and events that the sessions in
 * command mode have not read yet: queued here, or in the socket (a unix
 * socket's unread data, a TCP socket's unacknowledged).  Main thread.
 */
size_t qmp_server_unread(QmpServer *s);

/* Parsing of the chardev syntax, shared with HMP. */
typedef struct MonitorAddr {
    bool is_unix;               /* else TCP */
    bool is_stdio;
    char *path;                 /* unix */
    char *host, *port;          /* tcp */
    int fd;                     /* fd:N, an inherited listening socket
                                 * (libvirt's -chardev socket,fd=N); else -1 */
} MonitorAddr;

bool monitor_addr_parse(const char *spec, MonitorAddr *a, GError **errp);
void monitor_addr_cleanup(MonitorAddr *a);

/* monitor_listen: a listening socket for @a; -1 and @errp on failure. */
int monitor_listen(const MonitorAddr *a, GError **errp);

#endif
