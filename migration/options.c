/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Migration capabilities and parameters: QEMU's names, defaults, units
 * and range checks.  Main thread; the migration thread reads them under
 * MigrationState.lock.
 */
#include <string.h>

#include "migration/migration.h"
#include "migration-int.h"
#include "crypto/tls.h"
#include "migration/ram-load.h"
#include "migration/snapshot.h"

/* In the order of MigrationCapability in qapi/migration.json. */
static const struct {
    const char *name;
    bool implemented;           /* may be set to true */
} caps[] = {
    { "xbzrle", false }, { "rdma-pin-all", false }, { "auto-converge", true },
    { "zero-blocks", true },            /* no block devices: nothing to do */
    { "compress", false }, { "events", true }, { "postcopy-ram", true }, { "x-colo", false },
    { "release-ram", false }, { "block", false }, { "return-path", true },
    { "pause-before-switchover", true }, { "multifd", false }, { "dirty-bitmaps", false },
    { "postcopy-blocktime", true }, { "late-block-activate", true },
    { "x-ignore-shared", false }, { "validate-uuid", false }, { "background-snapshot", true },
    { "zero-copy-send", false }, { "postcopy-preempt", true }, { "switchover-ack", false },
    { "dirty-limit", false }, { "mapped-ram", true },
    /* ferry's (docs/postcopy-auto.md, docs/postcopy.md). */
    { "x-postcopy-auto", true }, { "x-postcopy-working-set", true },
};

static int cap_index(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(caps); i++) {
        if (!strcmp(caps[i].name, name)) {
            return i;
        }
    }
    return -1;
}

bool migrate_cap(MigrationState *s, const char *name)
{
    int i = cap_index(name);
    g_mutex_lock(&s->lock);
    bool on = i >= 0 && s->caps[i];
    g_mutex_unlock(&s->lock);
    return on;
}

/* Integer parameters with QEMU's ranges (inclusive). */
static const struct {
    const char *name;
    int64_t min, max;
    const char *unit;
} ranges[] = {
    { "downtime-limit", 0, 2000000, "milliseconds" },
    { "cpu-throttle-initial", 1, 99, NULL },
    { "cpu-throttle-increment", 1, 99, NULL },
    { "max-cpu-throttle", 1, 99, NULL },
    { "throttle-trigger-threshold", 1, 100, NULL },
    { "multifd-channels", 1, 255, NULL },
    { "multifd-zlib-level", 0, 9, NULL },
    { "multifd-zstd-level", 0, 20, NULL },
    { "multifd-qatzip-level", 1, 9, NULL },
    { "compress-level", 0, 9, NULL },
    { "compress-threads", 1, 255, NULL },
    { "decompress-threads", 1, 255, NULL },
    { "announce-initial", 1, 100000, "milliseconds" },
    { "announce-max", 1, 100000, "milliseconds" },
    { "announce-rounds", 1, 1000, NULL },
    { "announce-step", 1, 10000, "milliseconds" },
    { "x-checkpoint-delay", 0, INT64_MAX, NULL },
    { "x-vcpu-dirty-limit-period", 1, 1000, "milliseconds" },
    { "vcpu-dirty-limit", 1, INT64_MAX, NULL },
    /* ferry's: 0 turns the check off (docs/postcopy.md). */
    { "x-postcopy-stall-timeout", 0, 3600000, "milliseconds" },
    /* 0: POSTCOPY_AUTO_BUDGET_PASSES times the first pass. */
    { "x-postcopy-auto-budget", 0, 86400000, "milliseconds" },
    /* The destination's: 0 picks from the vCPUs and host CPUs. */
    { "x-postcopy-fault-threads", 0, RAM_MAX_SHARDS, NULL },
    /* The destination's: bytes; up to 4 GiB of pages held ahead. */
    { "x-postcopy-page-pool", 0, 4LL << 30, NULL },
    /* The source's: bytes of the push past what the destination loaded
     * (include/migration/ram.h); 0: no bound, as QEMU. */
    { "x-postcopy-push-window", 0, 1LL << 30, NULL },
};

static JsonObject *default_params(void)
{
    JsonObject *p = json_object_new();
    json_object_set_int_member(p, "announce-initial", 50);
    json_object_set_int_member(p, "announce-max", 550);
    json_object_set_int_member(p, "announce-rounds", 5);
    json_object_set_int_member(p, "announce-step", 100);
    json_object_set_int_member(p, "throttle-trigger-threshold", 50);
    json_object_set_int_member(p, "cpu-throttle-initial", 20);
    json_object_set_int_member(p, "cpu-throttle-increment", 10);
    json_object_set_boolean_member(p, "cpu-throttle-tailslow", false);
    json_object_set_string_member(p, "tls-creds", "");
    json_object_set_string_member(p, "tls-hostname", "");
    json_object_set_string_member(p, "tls-authz", "");
    json_object_set_int_member(p, "max-bandwidth", 128 * 1024 * 1024);
    json_object_set_int_member(p, "avail-switchover-bandwidth", 0);
    json_object_set_int_member(p, "downtime-limit", 300);
    json_object_set_int_member(p, "x-checkpoint-delay", 20000);
    json_object_set_int_member(p, "multifd-channels", 2);
    json_object_set_string_member(p, "multifd-compression", "none");
    json_object_set_int_member(p, "multifd-zlib-level", 1);
    json_object_set_int_member(p, "multifd-zstd-level", 1);
    json_object_set_int_member(p, "multifd-qatzip-level", 1);
    json_object_set_int_member(p, "xbzrle-cache-size", 64 * 1024 * 1024);
    json_object_set_int_member(p, "max-postcopy-bandwidth", 0);
    json_object_set_int_member(p, "max-cpu-throttle", 99);
    json_object_set_int_member(p, "x-vcpu-dirty-limit-period", 1000);
    json_object_set_int_member(p, "vcpu-dirty-limit", 1);
    json_object_set_int_member(p, "x-postcopy-stall-timeout",
                               POSTCOPY_STALL_TIMEOUT_MS);
    json_object_set_int_member(p, "x-postcopy-auto-budget", 0);
    json_object_set_int_member(p, "x-postcopy-fault-threads", 1);
    json_object_set_boolean_member(p, "x-postcopy-minor-faults", false);
    json_object_set_int_member(p, "x-postcopy-page-pool", 0);
    json_object_set_int_member(p, "x-postcopy-push-window", 1 << 20);
    json_object_set_string_member(p, "mode", "normal");
    json_object_set_string_member(p, "zero-page-detection", "multifd");
    json_object_set_boolean_member(p, "direct-io", false);
    /* ferry's: mapped-ram's page I/O through io_uring (docs/snapshot.md). */
    json_object_set_boolean_member(p, "x-io-uring", false);
    return p;
}

static JsonNode *ret_empty(void)
{
    return qmp_return_empty();
}

/*
 * An outgoing migration in progress freezes capabilities; a destination
 * waiting for its stream may still set them (libvirt does), as in QEMU.
 */
/*
 * Capabilities are read by the threads of a migration while it runs, on
 * either side and in postcopy too (turning postcopy-ram off then was
 * accepted): QEMU refuses any change in every running state.
 */
static bool busy(MigrationState *s, GError **errp)
{
    /* A destination still waiting for its connection reads none yet,
     * and users set them then (-incoming tcp:..., then capabilities). */
    if (migration_running(s) &&
        !(s->dst.incoming && migration_status(s) == MIGRATION_STATUS_SETUP)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "There's a migration process in progress");
        return true;
    }
    return false;
}

/* QEMU's check_caps_background_snapshot, in its order. */
static const char *const snapshot_conflicts[] = {
    "postcopy-ram", "dirty-bitmaps", "postcopy-blocktime",
    "late-block-activate", "return-path", "multifd",
    "pause-before-switchover", "auto-converge", "release-ram",
    "rdma-pin-all", "compress", "xbzrle", "x-colo", "validate-uuid",
    "zero-copy-send", NULL
};

/*
 * background-snapshot in @next: what the kernel, the memory and the other
 * capabilities allow, with QEMU's errors.  The kernel and the memory are
 * probed only when it turns on (@probe): the probe registers all of RAM
 * and unregisters it, a page-table walk that stalls the guest.
 */
static bool snapshot_caps_ok(MigrationState *s, const bool *next, bool probe,
                             GError **errp)
{
    if (s->dst.incoming) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Background-snapshot is not compatible with an incoming "
                    "migration");
        return false;
    }
    if (probe && s->m->ram && !snapshot_supported(s->m->ram, errp)) {
        return false;
    }
    for (size_t i = 0; snapshot_conflicts[i]; i++) {
        if (next[cap_index(snapshot_conflicts[i])]) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Background-snapshot is not compatible with %s",
                        snapshot_conflicts[i]);
            return false;
        }
    }
    return true;
}

static JsonNode *set_capabilities(JsonObject *args, void *opaque, GError **errp)
{
    MigrationState *s = opaque;
    JsonArray *list = json_object_get_array_member(args, "capabilities");
    g_autofree bool *next = NULL;

    if (busy(s, errp)) {
        return NULL;
    }
    g_mutex_lock(&s->lock);
    next = g_memdup2(s->caps, G_N_ELEMENTS(caps) * sizeof(bool));
    g_mutex_unlock(&s->lock);
    /* All or nothing: check every entry first. */
    for (guint i = 0; i < json_array_get_length(list); i++) {
        JsonObject *c = json_array_get_object_element(list, i);
        const char *name = json_object_get_string_member(c, "capability");
        bool on = json_object_get_boolean_member(c, "state");
        int idx = cap_index(name);
        if (on && !caps[idx].implemented) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Capability '%s' is not supported by ferry yet", name);
            return NULL;
        }
        next[idx] = on;
    }
    if (next[cap_index("postcopy-preempt")] && !next[cap_index("postcopy-ram")]) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Postcopy preempt requires postcopy-ram");
        return NULL;
    }
    if (next[cap_index("x-postcopy-auto")] && !next[cap_index("postcopy-ram")]) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Postcopy auto requires postcopy-ram");
        return NULL;
    }
    if (next[cap_index("x-postcopy-working-set")] && !next[cap_index("postcopy-ram")]) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Postcopy working set requires postcopy-ram");
        return NULL;
    }
    /* ferry's restore on demand: a destination loading a mapped-ram file
     * with postcopy-ram (docs/snapshot.md); a source refuses the pair,
     * as QEMU does anywhere. */
    if (next[cap_index("mapped-ram")] && next[cap_index("postcopy-ram")] &&
        !s->dst.incoming) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Mapped-ram migration is incompatible with postcopy");
        return NULL;
    }
    int bg = cap_index("background-snapshot");
    if (next[bg] && !snapshot_caps_ok(s, next, !s->caps[bg], errp)) {
        return NULL;
    }
    g_mutex_lock(&s->lock);
    memcpy(s->caps, next, G_N_ELEMENTS(caps) * sizeof(bool));
    g_mutex_unlock(&s->lock);
    return ret_empty();
}

static JsonNode *query_capabilities(JsonObject *args, void *opaque, GError **errp)
{
    MigrationState *s = opaque;
    JsonArray *a = json_array_new();
    (void)args;
    (void)errp;
    g_mutex_lock(&s->lock);
    for (size_t i = 0; i < G_N_ELEMENTS(caps); i++) {
        JsonObject *c = json_object_new();
        json_object_set_string_member(c, "capability", caps[i].name);
        json_object_set_boolean_member(c, "state", s->caps[i]);
        json_array_add_object_element(a, c);
    }
    g_mutex_unlock(&s->lock);
    return qmp_return_array(a);
}

/* One parameter's value, checked beyond its schema type. */
static bool check_param(const char *name, JsonNode *v, GError **errp)
{
    for (size_t i = 0; i < G_N_ELEMENTS(ranges); i++) {
        if (strcmp(ranges[i].name, name) != 0) {
            continue;
        }
        int64_t n = json_node_get_int(v);
        if (n < ranges[i].min || n > ranges[i].max) {
            g_autofree char *u = g_strdup_printf(" %s", ranges[i].unit);
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter '%s' expects an integer in the range of "
                        "%" G_GINT64_FORMAT " to %" G_GINT64_FORMAT "%s", name,
                        ranges[i].min, ranges[i].max, ranges[i].unit ? u : "");
            return false;
        }
    }
    if (g_str_has_prefix(name, "tls-")) {
        /* QEMU's StrOrNull: a string, or null for "". */
        if (!JSON_NODE_HOLDS_NULL(v) &&
            !(JSON_NODE_HOLDS_VALUE(v) &&
              json_node_get_value_type(v) == G_TYPE_STRING)) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Invalid parameter type for '%s', expected: string",
                        name);
            return false;
        }
        if (!strcmp(name, "tls-creds") && !JSON_NODE_HOLDS_NULL(v) &&
            *json_node_get_string(v) && !tls_object_exists(json_node_get_string(v))) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "No TLS credentials with id '%s'",
                        json_node_get_string(v));
            return false;
        }
    }
    /* String parameters and the values QEMU accepts for them. */
    static const struct {
        const char *name;
        const char *const values[8];
    } choices[] = {
        { "multifd-compression", { "none", "zlib", "zstd", "qatzip", "qpl",
                                   "uadk", NULL } },
        { "zero-page-detection", { "none", "legacy", "multifd", NULL } },
        { "mode", { "normal", "cpr-reboot", NULL } },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(choices); i++) {
        if (!strcmp(name, choices[i].name) &&
            !g_strv_contains(choices[i].values, json_node_get_string(v))) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter '%s' does not accept value '%s'", name,
                        json_node_get_string(v));
            return false;
        }
    }
    return true;
}

static JsonNode *set_parameters(JsonObject *args, void *opaque, GError **errp)
{
    MigrationState *s = opaque;
    g_autoptr(GList) names = json_object_get_members(args);

    for (GList *l = names; l; l = l->next) {
        if (!check_param(l->data, json_object_get_member(args, l->data), errp)) {
            return NULL;
        }
    }
    g_mutex_lock(&s->lock);
    for (GList *l = names; l; l = l->next) {
        JsonNode *v = json_object_get_member(args, l->data);
        if (JSON_NODE_HOLDS_NULL(v)) {
            json_object_set_string_member(s->params, l->data, "");
        } else {
            json_object_set_member(s->params, l->data, json_node_copy(v));
        }
    }
    /* The running pass or push takes a new limit at once, as QEMU's
     * (virsh migrate-setspeed [--postcopy] during the job). */
    migration_rate_update_locked(s);
    g_mutex_unlock(&s->lock);
    return ret_empty();
}

static JsonNode *query_parameters(JsonObject *args, void *opaque, GError **errp)
{
    MigrationState *s = opaque;
    (void)args;
    (void)errp;
    g_mutex_lock(&s->lock);
    JsonNode *n = json_node_init_object(json_node_alloc(), s->params);
    JsonNode *copy = json_node_copy(n);
    g_mutex_unlock(&s->lock);
    json_node_unref(n);
    return copy;
}

void migration_options_register(MigrationState *s, QmpDispatcher *d)
{
    s->caps = g_new0(bool, G_N_ELEMENTS(caps));
    s->params = default_params();
    qmp_register(d, "migrate-set-capabilities", set_capabilities, s);
    qmp_register(d, "query-migrate-capabilities", query_capabilities, s);
    qmp_register(d, "migrate-set-parameters", set_parameters, s);
    qmp_register(d, "query-migrate-parameters", query_parameters, s);
}
