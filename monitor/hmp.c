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

static void hmp_help(HmpConsole *c, char **argv);
static void hmp_info(HmpConsole *c, char **argv);

static const HmpCommand commands[] = {
    { "cont|c", "", "resume emulation", hmp_cont },
    { "help|?", "[cmd]", "show the help", hmp_help },
    { "info", "[subcommand]", "show various information about the system state",
      hmp_info },
    { "quit|q", "", "quit the emulator", hmp_quit },
    { "stop|s", "", "stop emulation", hmp_stop },
};

static const HmpCommand info_commands[] = {
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
        out(c, PROMPT);
    }
    return G_SOURCE_CONTINUE;
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
    (void)cond;
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (c >= 0) {
        console_new(opaque, c, c);
    }
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
