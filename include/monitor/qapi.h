/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The QMP schema at run time: the definitions from the qapi/ schema files (built
 * into the binary by scripts/qapi-gen.py) and the checking of command
 * arguments against them, with QEMU's error texts.
 *
 * Read-only once loaded; any thread may use it.  Error contract:
 * GError **errp last, bool (or pointer) result.
 */
#ifndef MONITOR_QAPI_H
#define MONITOR_QAPI_H

#include <stdbool.h>

#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct QapiSchema QapiSchema;

/* qapi_schema_load: parse @json (a JSON array of definitions). */
QapiSchema *qapi_schema_load(const char *json, GError **errp);
void qapi_schema_free(QapiSchema *s);

/* The schema built into this binary. */
extern const char qapi_schema_json[];

bool qapi_has_command(const QapiSchema *s, const char *name);
bool qapi_has_event(const QapiSchema *s, const char *name);

/* qapi_command_allows_oob: the command is marked 'allow-oob': True. */
bool qapi_command_allows_oob(const QapiSchema *s, const char *name);

/* Names of every command, in schema order; owned by the schema. */
const GPtrArray *qapi_commands(const QapiSchema *s);

/*
 * qapi_check_args: @args (may be NULL: no arguments) against command
 * @name's data: no unknown member, every required one present, each of
 * the right type, enum values among the listed ones.
 */
bool qapi_check_args(const QapiSchema *s, const char *name, JsonObject *args,
                     GError **errp);

/*
 * qapi_schema_introspect: the schema as query-qmp-schema returns it, a
 * new array of SchemaInfo (QEMU's introspection format; see
 * monitor/qapi-introspect.c).  qapi_introspect does it for @defs, an
 * array of definitions as qapi-gen.py writes them.
 */
JsonNode *qapi_schema_introspect(const QapiSchema *s);
JsonNode *qapi_introspect(JsonArray *defs);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(QapiSchema, qapi_schema_free)

#endif
