/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * HMP: the human monitor.  A thin layer: parse a line, call the QMP
 * handler through qmp_execute(), print QEMU's text.  No logic lives
 * here.  Main thread only.
 */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib-unix.h>

#include "monitor/monitor.h"
#include "qemu/sockets.h"
#include "system/options.h"

#define PROMPT "(ferry) "

typedef struct HmpConsole HmpConsole;

struct HmpServer {
    Monitors *mon;
    int listen_fd;              /* -1 for stdio */
    guint listen_src;
    char *unix_path;
    GList *consoles;
};

struct HmpConsole {
    HmpServer *h;
    int in_fd, out_fd;
    guint src;
    GString *line;
    guint wait_src;             /* migrate without -d: polling, input paused */
};

typedef struct HmpCommand {
    const char *names;          /* "cont|c" */
    const char *params;
    const char *help;
    void (*fn)(HmpConsole *c, char **argv);
} HmpCommand;

static void out(HmpConsole *c, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void out(HmpConsole *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *s = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    for (size_t done = 0, len = strlen(s); done < len; ) {
        ssize_t n = write(c->out_fd, s + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;             /* the peer went away; reading will notice */
        }
        done += n;
    }
}

/* Run a QMP command; print "Error: ..." as QEMU does; the result or NULL. */
static JsonNode *call(HmpConsole *c, const char *cmd, JsonObject *args)
{
    g_autoptr(GError) err = NULL;
    JsonNode *r = qmp_execute(&c->h->mon->qmp, cmd, args, &err);
    if (!r) {
        out(c, "Error: %s\n", err->message);
    }
    return r;
}

static void hmp_info_status(HmpConsole *c, char **argv)
{
    (void)argv;
    g_autoptr(JsonNode) r = call(c, "query-status", NULL);
    if (!r) {
        return;
    }
    JsonObject *o = json_node_get_object(r);
    const char *status = json_object_get_string_member(o, "status");
    bool running = json_object_get_boolean_member(o, "running");
    out(c, "VM status: %s", running ? "running" : "paused");
    if (!running && strcmp(status, "paused") != 0) {
        out(c, " (%s)", status);
    }
    out(c, "\n");
}

static void hmp_simple(HmpConsole *c, const char *cmd)
{
    g_autoptr(JsonNode) r = call(c, cmd, NULL);
}

static void hmp_stop(HmpConsole *c, char **argv)
{
    (void)argv;
    hmp_simple(c, "stop");
}

static void hmp_cont(HmpConsole *c, char **argv)
{
    (void)argv;
    hmp_simple(c, "cont");
}

static void hmp_quit(HmpConsole *c, char **argv)
{
    (void)argv;
    hmp_simple(c, "quit");
}


/* ---- Migration commands: parse, call QMP, print, as QEMU's HMP -------------- */

static JsonObject *args_new(void)
{
    return json_object_new();
}

static void console_resume(HmpConsole *c);

/* migrate without -d: poll the status, print the end, then read input again. */
static gboolean migrate_wait(gpointer opaque)
{
    HmpConsole *c = opaque;
    g_autoptr(JsonNode) r = call(c, "query-migrate", NULL);
    const char *st = r ? json_object_get_string_member_with_default(
                             json_node_get_object(r), "status", "none") : "none";
    if (!strcmp(st, "setup") || !strcmp(st, "active") ||
        !strcmp(st, "cancelling") || !strcmp(st, "postcopy-active") ||
        !strcmp(st, "postcopy-recover-setup") ||
        !strcmp(st, "postcopy-recover") || !strcmp(st, "device")) {
        return G_SOURCE_CONTINUE;
    }
    if (!strcmp(st, "failed")) {
        const char *e = json_object_get_string_member_with_default(
            json_node_get_object(r), "error-desc", "migration failed");
        out(c, "Error: %s\n", e);
    }
    c->wait_src = 0;
    console_resume(c);
    return G_SOURCE_REMOVE;
}

static void hmp_migrate(HmpConsole *c, char **argv)
{
    bool detach = false, postcopy = false, no_push = false, resume = false;
    const char *uri = NULL;
    for (char **a = argv + 1; *a; a++) {
        if (!strcmp(*a, "-d")) {
            detach = true;
        } else if (!strcmp(*a, "-p")) {
            postcopy = true;
        } else if (!strcmp(*a, "-n")) {
            no_push = true;
        } else if (!strcmp(*a, "-r")) {
            resume = true;
        } else if (**a == '-') {
            out(c, "Error: migrate: unknown option '%s'\n", *a);
            return;
        } else if (**a != '-') {
            uri = *a;
        }
    }
    if (!uri) {
        out(c, "Error: migrate: give the URI, e.g. tcp:host:port\n");
        return;
    }
    g_autoptr(JsonObject) args = args_new();
    json_object_set_string_member(args, "uri", uri);
    if (postcopy) {
        json_object_set_boolean_member(args, "x-postcopy-after-pass1", true);
    }
    if (no_push) {
        json_object_set_boolean_member(args, "x-postcopy-no-push", true);
    }
    if (resume) {
        json_object_set_boolean_member(args, "resume", true);
    }
    g_autoptr(JsonNode) r = call(c, "migrate", args);
    if (r && !detach) {
        /* Read no input until the migration ends, as QEMU's monitor; the
         * read callback that called us ends its source when it sees this. */
        c->wait_src = g_timeout_add(50, migrate_wait, c);
    }
}

static void hmp_migrate_start_postcopy(HmpConsole *c, char **argv)
{
    (void)argv;
    hmp_simple(c, "migrate-start-postcopy");
}

static void hmp_migrate_cancel(HmpConsole *c, char **argv)
{
    (void)argv;
    hmp_simple(c, "migrate_cancel");
}

static void hmp_migrate_pause(HmpConsole *c, char **argv)
{
    (void)argv;
    hmp_simple(c, "migrate-pause");
}

static void hmp_migrate_recover(HmpConsole *c, char **argv)
{
    if (!argv[1]) {
        out(c, "Error: migrate_recover: give the URI\n");
        return;
    }
    g_autoptr(JsonObject) args = args_new();
    json_object_set_string_member(args, "uri", argv[1]);
    g_autoptr(JsonNode) r = call(c, "migrate-recover", args);
}

static void hmp_migrate_incoming(HmpConsole *c, char **argv)
{
    if (!argv[1]) {
        out(c, "Error: migrate_incoming: give the URI\n");
        return;
    }
    g_autoptr(JsonObject) args = args_new();
    json_object_set_string_member(args, "uri", argv[1]);
    g_autoptr(JsonNode) r = call(c, "migrate-incoming", args);
}

static bool parse_onoff(const char *v, bool *on)
{
    if (v && !strcmp(v, "on")) {
        *on = true;
    } else if (v && !strcmp(v, "off")) {
        *on = false;
    } else {
        return false;
    }
    return true;
}

static void hmp_migrate_set_capability(HmpConsole *c, char **argv)
{
    bool on;
    if (!argv[1] || !parse_onoff(argv[2], &on)) {
        out(c, "Error: migrate_set_capability: give a name and on or off\n");
        return;
    }
    JsonObject *cap = json_object_new();
    json_object_set_string_member(cap, "capability", argv[1]);
    json_object_set_boolean_member(cap, "state", on);
    JsonArray *list = json_array_new();
    json_array_add_object_element(list, cap);
    g_autoptr(JsonObject) args = args_new();
    json_object_set_array_member(args, "capabilities", list);
    g_autoptr(JsonNode) r = call(c, "migrate-set-capabilities", args);
}

/*
 * migrate_set_parameter NAME VALUE: sizes take suffixes; a plain
 * bandwidth is in MiB/s, as in QEMU's HMP; booleans are on/off.
 */
static void hmp_migrate_set_parameter(HmpConsole *c, char **argv)
{
    const char *name = argv[1], *v = argv[1] ? argv[2] : NULL;
    if (!name || !v) {
        out(c, "Error: migrate_set_parameter: give a name and a value\n");
        return;
    }
    g_autoptr(JsonObject) args = args_new();
    bool on;
    uint64_t n;
    if (parse_onoff(v, &on)) {
        json_object_set_boolean_member(args, name, on);
    } else if (g_str_has_prefix(name, "tls-") || !strcmp(name, "mode") ||
               !strcmp(name, "multifd-compression") ||
               !strcmp(name, "zero-page-detection")) {
        json_object_set_string_member(args, name, v);
    } else if (parse_size(v, strstr(name, "bandwidth") ? 1024 * 1024 : 1, &n)) {
        json_object_set_int_member(args, name, n);
    } else {
        out(c, "Error: Parameter '%s' expects a number\n", name);
        return;
    }
    g_autoptr(JsonNode) r = call(c, "migrate-set-parameters", args);
}

/* "[a, b, c]" from an integer array member, for info migrate. */
static const char *int_list(JsonObject *o, const char *name)
{
    static __thread char buf[512];
    JsonArray *a = json_object_get_array_member(o, name);
    size_t n = 0;
    buf[n++] = '[';
    for (guint i = 0; a && i < json_array_get_length(a) && n < sizeof(buf) - 32; i++) {
        n += g_snprintf(buf + n, sizeof(buf) - n, "%s%" G_GINT64_FORMAT,
                      i ? ", " : "", json_array_get_int_element(a, i));
    }
    g_snprintf(buf + n, sizeof(buf) - n, "]");
    return buf;
}

static void hmp_info_migrate(HmpConsole *c, char **argv)
{
    (void)argv;
    g_autoptr(JsonNode) r = call(c, "query-migrate", NULL);
    if (!r) {
        return;
    }
    JsonObject *o = json_node_get_object(r);
    if (!json_object_has_member(o, "status")) {
        return;                 /* no migration yet: QEMU prints nothing */
    }
    out(c, "Migration status: %s\n", json_object_get_string_member(o, "status"));
    static const char *const times[][2] = {
        { "total-time", "total time" }, { "downtime", "downtime" },
        { "expected-downtime", "expected downtime" }, { "setup-time", "setup" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(times); i++) {
        if (json_object_has_member(o, times[i][0])) {
            out(c, "%s: %" G_GINT64_FORMAT " ms\n", times[i][1],
                json_object_get_int_member(o, times[i][0]));
        }
    }
    if (json_object_has_member(o, "ram")) {
        JsonObject *ram = json_object_get_object_member(o, "ram");
        out(c, "transferred ram: %" G_GINT64_FORMAT " kbytes\n",
            json_object_get_int_member(ram, "transferred") >> 10);
        out(c, "throughput: %0.2f mbps\n",
            json_object_get_double_member(ram, "mbps"));
        out(c, "remaining ram: %" G_GINT64_FORMAT " kbytes\n",
            json_object_get_int_member(ram, "remaining") >> 10);
        out(c, "total ram: %" G_GINT64_FORMAT " kbytes\n",
            json_object_get_int_member(ram, "total") >> 10);
        out(c, "duplicate: %" G_GINT64_FORMAT " pages\n",
            json_object_get_int_member(ram, "duplicate"));
        out(c, "normal: %" G_GINT64_FORMAT " pages\n",
            json_object_get_int_member(ram, "normal"));
        out(c, "normal bytes: %" G_GINT64_FORMAT " kbytes\n",
            json_object_get_int_member(ram, "normal-bytes") >> 10);
        out(c, "dirty sync count: %" G_GINT64_FORMAT "\n",
            json_object_get_int_member(ram, "dirty-sync-count"));
        out(c, "page size: %" G_GINT64_FORMAT " kbytes\n",
            json_object_get_int_member(ram, "page-size") >> 10);
        out(c, "dirty pages rate: %" G_GINT64_FORMAT " pages\n",
            json_object_get_int_member(ram, "dirty-pages-rate"));
        out(c, "postcopy request count: %" G_GINT64_FORMAT "\n",
            json_object_get_int_member(ram, "postcopy-requests"));
        out(c, "postcopy ram: %" G_GINT64_FORMAT " kbytes\n",
            json_object_get_int_member(ram, "postcopy-bytes") >> 10);
    }
    if (json_object_has_member(o, "postcopy-blocktime")) {
        out(c, "postcopy blocktime: %" G_GINT64_FORMAT "\n",
            json_object_get_int_member(o, "postcopy-blocktime"));
        out(c, "postcopy vcpu blocktime: %s\n", int_list(o, "postcopy-vcpu-blocktime"));
        out(c, "postcopy latency: %" G_GINT64_FORMAT " ns\n",
            json_object_get_int_member(o, "postcopy-latency"));
        out(c, "postcopy vcpu latency: %s\n", int_list(o, "postcopy-vcpu-latency"));
        out(c, "postcopy latency distribution (us, power-of-two buckets): %s\n",
            int_list(o, "postcopy-latency-dist"));
        JsonObject *pct = json_object_get_object_member(o,
                                                        "x-postcopy-latency-percentiles");
        if (pct) {
            out(c, "postcopy latency percentiles: p50 %" G_GINT64_FORMAT
                " ns, p90 %" G_GINT64_FORMAT " ns, p99 %" G_GINT64_FORMAT
                " ns, p99.9 %" G_GINT64_FORMAT " ns\n",
                json_object_get_int_member(pct, "p50"),
                json_object_get_int_member(pct, "p90"),
                json_object_get_int_member(pct, "p99"),
                json_object_get_int_member(pct, "p999"));
        }
    }
    if (json_object_has_member(o, "x-postcopy-auto")) {
        JsonObject *a = json_object_get_object_member(o, "x-postcopy-auto");
        out(c, "postcopy auto: %s after pass %" G_GINT64_FORMAT " at %"
            G_GINT64_FORMAT " ms: %s\n",
            json_object_get_string_member(a, "verdict"),
            json_object_get_int_member(a, "pass"),
            json_object_get_int_member(a, "time"),
            json_object_get_string_member(a, "reason"));
    }
    if (json_object_has_member(o, "error-desc")) {
        out(c, "Error: %s\n", json_object_get_string_member(o, "error-desc"));
    }
}

static void hmp_info_migrate_capabilities(HmpConsole *c, char **argv)
{
    (void)argv;
    g_autoptr(JsonNode) r = call(c, "query-migrate-capabilities", NULL);
    if (!r) {
        return;
    }
    JsonArray *a = json_node_get_array(r);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *cap = json_array_get_object_element(a, i);
        out(c, "%s: %s\n", json_object_get_string_member(cap, "capability"),
            json_object_get_boolean_member(cap, "state") ? "on" : "off");
    }
}

static void hmp_info_migrate_parameters(HmpConsole *c, char **argv)
{
    (void)argv;
    g_autoptr(JsonNode) r = call(c, "query-migrate-parameters", NULL);
    if (!r) {
        return;
    }
    JsonObject *o = json_node_get_object(r);
    g_autoptr(GList) names = json_object_get_members(o);
    for (GList *l = names; l; l = l->next) {
        const char *k = l->data;
        JsonNode *v = json_object_get_member(o, k);
        GType t = json_node_get_value_type(v);
        if (t == G_TYPE_BOOLEAN) {
            out(c, "%s: %s\n", k, json_node_get_boolean(v) ? "on" : "off");
        } else if (t == G_TYPE_STRING) {
            out(c, "%s: '%s'\n", k, json_node_get_string(v));
        } else if (!strcmp(k, "downtime-limit") || strstr(k, "announce") ||
                   !strcmp(k, "x-checkpoint-delay")) {
            out(c, "%s: %" G_GINT64_FORMAT " ms\n", k, json_node_get_int(v));
        } else if (strstr(k, "bandwidth")) {
            out(c, "%s: %" G_GINT64_FORMAT " bytes/second\n", k,
                json_node_get_int(v));
        } else if (strstr(k, "throttle-initial") || strstr(k, "increment") ||
                   !strcmp(k, "max-cpu-throttle")) {
            out(c, "%s: %" G_GINT64_FORMAT "%%\n", k, json_node_get_int(v));
        } else if (!strcmp(k, "xbzrle-cache-size")) {
            out(c, "%s: %" G_GINT64_FORMAT " bytes\n", k, json_node_get_int(v));
        } else {
            out(c, "%s: %" G_GINT64_FORMAT "\n", k, json_node_get_int(v));
        }
    }
}

/* object_add TYPE,id=ID,key=value,...: QMP object-add (crypto/tls.h's
 * types); on/off for the boolean properties. */
static void hmp_object_add(HmpConsole *c, char **argv)
{
    if (!argv[1]) {
        out(c, "Error: object_add: give TYPE,id=ID,...\n");
        return;
    }
    g_autoptr(JsonObject) args = args_new();
    g_auto(GStrv) items = g_strsplit(argv[1], ",", -1);
    const char *type = items[0];
    json_object_set_string_member(args, "qom-type",
                                  g_str_has_prefix(type, "qom-type=") ? type + 9 : type);
    for (char **it = items + 1; *it; it++) {
        char *eq = strchr(*it, '=');
        g_autofree char *k = g_strndup(*it, eq ? eq - *it : (long)strlen(*it));
        const char *v = eq ? eq + 1 : "on";
        bool on;
        if ((!strcmp(k, "verify-peer") || !strcmp(k, "sanity-check") ||
             !strcmp(k, "loaded")) && parse_onoff(v, &on)) {
            json_object_set_boolean_member(args, k, on);
        } else {
            json_object_set_string_member(args, k, v);
        }
    }
    g_autoptr(JsonNode) r = call(c, "object-add", args);
}

static void hmp_object_del(HmpConsole *c, char **argv)
{
    if (!argv[1]) {
        out(c, "Error: object_del: give an id\n");
        return;
    }
    g_autoptr(JsonObject) args = args_new();
    json_object_set_string_member(args, "id", argv[1]);
    g_autoptr(JsonNode) r = call(c, "object-del", args);
}

static void hmp_help(HmpConsole *c, char **argv);
static void hmp_info(HmpConsole *c, char **argv);

static const HmpCommand commands[] = {
    { "cont|c", "", "resume emulation", hmp_cont },
    { "help|?", "[cmd]", "show the help", hmp_help },
    { "info", "[subcommand]", "show various information about the system state",
      hmp_info },
    { "migrate", "[-d] [-r] [-p [-n]] uri",
      "migrate to URI (using -d to not wait for completion; -r to resume a "
      "paused postcopy migration; -p switches to postcopy after the first "
      "pass, -n then sends pages only on demand)",
      hmp_migrate },
    { "migrate_start_postcopy", "", "switch a running migration to postcopy",
      hmp_migrate_start_postcopy },
    { "migrate_cancel", "", "cancel the current VM migration", hmp_migrate_cancel },
    { "migrate_pause", "", "Pause an ongoing migration (postcopy-only)",
      hmp_migrate_pause },
    { "migrate_recover", "uri", "Continue a paused incoming postcopy migration",
      hmp_migrate_recover },
    { "migrate_incoming", "uri", "continue an incoming migration from an -incoming defer",
      hmp_migrate_incoming },
    { "migrate_set_capability", "capability state",
      "enable/disable the usage of a capability for migration",
      hmp_migrate_set_capability },
    { "migrate_set_parameter", "parameter value",
      "set a parameter for migration", hmp_migrate_set_parameter },
    { "object_add", "[qom-type=]type,id=str[,prop=value][,...]", "create QOM object",
      hmp_object_add },
    { "object_del", "id", "destroy QOM object", hmp_object_del },
    { "quit|q", "", "quit the emulator", hmp_quit },
    { "stop|s", "", "stop emulation", hmp_stop },
};

static const HmpCommand info_commands[] = {
    { "migrate", "", "show migration status", hmp_info_migrate },
    { "migrate_capabilities", "", "show current migration capabilities",
      hmp_info_migrate_capabilities },
    { "migrate_parameters", "", "show current migration parameters",
      hmp_info_migrate_parameters },
    { "status", "", "show the current VM status (running|paused)",
      hmp_info_status },
};

static const HmpCommand *find(const HmpCommand *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        g_auto(GStrv) names = g_strsplit(t[i].names, "|", -1);
        if (g_strv_contains((const char *const *)names, name)) {
            return &t[i];
        }
    }
    return NULL;
}

static void print_help(HmpConsole *c, const char *prefix, const HmpCommand *t,
                       size_t n, const char *only)
{
    for (size_t i = 0; i < n; i++) {
        if (only && &t[i] != find(t, n, only)) {
            continue;
        }
        out(c, "%s%s %s -- %s\n", prefix, t[i].names, t[i].params, t[i].help);
    }
}

static void hmp_help(HmpConsole *c, char **argv)
{
    const char *only = argv[1];
    if (only && !find(commands, G_N_ELEMENTS(commands), only)) {
        out(c, "unknown command: '%s'\n", only);
        return;
    }
    print_help(c, "", commands, G_N_ELEMENTS(commands), only);
}

/* "info" alone; "info SUB" is resolved to SUB's handler by resolve(). */
static void hmp_info(HmpConsole *c, char **argv)
{
    (void)argv;
    print_help(c, "info ", info_commands, G_N_ELEMENTS(info_commands), NULL);
}

/*
 * Resolve @line to its command (and, for info, its subcommand, whose
 * handler is returned instead).  NULL with @errp when there is none.
 */
static const HmpCommand *resolve(const char *line, GStrv *argv, char **name,
                                 GError **errp)
{
    g_autofree char *trimmed = g_strstrip(g_strdup(line));

    *argv = NULL;
    *name = NULL;
    if (!*trimmed) {
        *name = g_strdup("");
        return NULL;
    }
    if (!g_shell_parse_argv(trimmed, NULL, argv, errp)) {
        return NULL;
    }
    char **a = *argv;
    const HmpCommand *cmd = find(commands, G_N_ELEMENTS(commands), a[0]);
    if (!cmd) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "unknown command: '%s'", a[0]);
        return NULL;
    }
    g_auto(GStrv) names = g_strsplit(cmd->names, "|", 2);
    if (cmd->fn == hmp_info && a[1]) {
        const HmpCommand *sub = find(info_commands, G_N_ELEMENTS(info_commands),
                                     a[1]);
        if (!sub) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                        "unknown command: 'info %s'", a[1]);
            return NULL;
        }
        g_auto(GStrv) subnames = g_strsplit(sub->names, "|", 2);
        *name = g_strconcat("info ", subnames[0], NULL);
        return sub;
    }
    *name = g_strdup(names[0]);
    return cmd;
}

char *hmp_parse_line(const char *line, GStrv *argv, GError **errp)
{
    char *name;
    resolve(line, argv, &name, errp);
    return name;
}

static void run_line(HmpConsole *c, const char *line)
{
    g_auto(GStrv) argv = NULL;
    g_autofree char *name = NULL;
    g_autoptr(GError) err = NULL;
    const HmpCommand *cmd = resolve(line, &argv, &name, &err);

    if (err) {
        out(c, err->domain == QMP_ERROR ? "%s\n" : "Error: %s\n", err->message);
        return;
    }
    if (cmd) {
        /* An info subcommand's handler sees its own name first. */
        cmd->fn(c, g_str_has_prefix(name, "info ") ? argv + 1 : argv);
    }
}

static void console_close(HmpConsole *c)
{
    c->h->consoles = g_list_remove(c->h->consoles, c);
    if (c->src) {
        g_source_remove(c->src);
    }
    if (c->wait_src) {
        g_source_remove(c->wait_src);
    }
    if (c->in_fd > STDERR_FILENO) {
        close(c->in_fd);
    }
    g_string_free(c->line, true);
    g_free(c);
}

static gboolean console_readable(gint fd, GIOCondition cond, gpointer opaque)
{
    HmpConsole *c = opaque;
    char buf[4096];
    (void)cond;

    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return G_SOURCE_CONTINUE;
    }
    if (n <= 0) {
        c->src = 0;
        console_close(c);
        return G_SOURCE_REMOVE;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] != '\n') {
            /* A line longer than any command is cut, not accumulated. */
            if (c->line->len < 4096) {
                g_string_append_c(c->line, buf[i]);
            }
            continue;
        }
        g_autofree char *line = g_string_free(c->line, false);
        c->line = g_string_new(NULL);
        run_line(c, line);
        if (c->wait_src) {
            /* Suspended by migrate; what was typed after it is dropped. */
            c->src = 0;
            return G_SOURCE_REMOVE;
        }
        out(c, PROMPT);
    }
    return G_SOURCE_CONTINUE;
}

static void console_resume(HmpConsole *c)
{
    c->src = g_unix_fd_add(c->in_fd, G_IO_IN | G_IO_HUP | G_IO_ERR,
                           console_readable, c);
    out(c, PROMPT);
}

static void console_new(HmpServer *h, int in_fd, int out_fd)
{
    HmpConsole *c = g_new0(HmpConsole, 1);
    c->h = h;
    c->in_fd = in_fd;
    c->out_fd = out_fd;
    c->line = g_string_new(NULL);
    c->src = g_unix_fd_add(in_fd, G_IO_IN | G_IO_HUP | G_IO_ERR,
                           console_readable, c);
    h->consoles = g_list_append(h->consoles, c);
    out(c, "ferry %s monitor - type 'help' for more information\n" PROMPT,
        FERRY_VERSION);
}

static gboolean hmp_accept(gint fd, GIOCondition cond, gpointer opaque)
{
    HmpServer *h = opaque;
    (void)cond;
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
        return accept_backoff(errno, fd, &h->listen_src, hmp_accept, h)
               ? G_SOURCE_REMOVE : G_SOURCE_CONTINUE;
    }
    console_new(h, c, c);
    return G_SOURCE_CONTINUE;
}

HmpServer *hmp_server_new(Monitors *mon, const char *spec, GError **errp)
{
    MonitorAddr a;
    if (!monitor_addr_parse(spec, &a, errp)) {
        return NULL;
    }
    HmpServer *h = g_new0(HmpServer, 1);
    h->mon = mon;
    h->listen_fd = -1;
    if (a.is_stdio) {
        console_new(h, STDIN_FILENO, STDOUT_FILENO);
    } else {
        h->listen_fd = monitor_listen(&a, errp);
        if (h->listen_fd < 0) {
            monitor_addr_cleanup(&a);
            g_free(h);
            return NULL;
        }
        h->unix_path = a.is_unix ? g_strdup(a.path) : NULL;
        h->listen_src = g_unix_fd_add(h->listen_fd, G_IO_IN, hmp_accept, h);
    }
    monitor_addr_cleanup(&a);
    return h;
}

void hmp_server_free(HmpServer *h)
{
    if (!h) {
        return;
    }
    while (h->consoles) {
        console_close(h->consoles->data);
    }
    if (h->listen_fd >= 0) {
        g_source_remove(h->listen_src);
        close(h->listen_fd);
    }
    if (h->unix_path) {
        unlink(h->unix_path);
    }
    g_free(h->unix_path);
    g_free(h);
}
