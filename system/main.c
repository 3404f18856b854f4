/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ferry: a small KVM machine started the way QEMU is started.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <glib-unix.h>

#include "crypto/tls.h"
#include "migration/migration.h"
#include "qemu/main-loop.h"
#include "monitor/monitor.h"
#include "system/machine.h"
#include "system/options.h"

/*
 * -daemonize: fork before KVM is opened (a VM belongs to the process
 * that made it).  The parent waits for the child's verdict on a pipe and
 * exits with it, so that errors still reach the terminal.  Returns the
 * pipe's write end in the child, or -1 when not daemonizing.
 */
static int daemonize_start(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        perror("ferry: -daemonize: pipe");
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("ferry: -daemonize: fork");
        exit(1);
    }
    if (pid > 0) {
        char ok = 1;
        close(p[1]);
        if (read(p[0], &ok, 1) != 1) {
            ok = 1;
        }
        _exit(ok ? 1 : 0);
    }
    close(p[0]);
    setsid();
    return p[1];
}

/* Tell the parent we are up and leave the terminal. */
static void daemonize_finish(int fd, bool ok)
{
    char v = ok ? 0 : 1;
    if (write(fd, &v, 1) != 1) {
        /* The parent is gone; nothing to tell. */
    }
    close(fd);
    if (ok) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO) {
            close(null);
        }
    }
}

/*
 * -msg timestamp=on: every line on stderr begins with the time, in UTC,
 * as QEMU writes it ("2026-12-01T10:00:00.123456Z ferry: ...").  stderr
 * becomes a stream whose writes add it at each line's start.
 */
static bool msg_line_start = true;

static ssize_t msg_write(void *cookie, const char *buf, size_t n)
{
    (void)cookie;
    for (size_t i = 0; i < n;) {
        if (msg_line_start) {
            g_autoptr(GDateTime) now = g_date_time_new_now_utc();
            g_autofree char *ts = g_date_time_format(now, "%Y-%m-%dT%H:%M:%S");
            char full[64];
            int len = snprintf(full, sizeof(full), "%s.%06dZ ", ts,
                               g_date_time_get_microsecond(now));
            if (write(STDERR_FILENO, full, len) < 0) {
                return -1;
            }
            msg_line_start = false;
        }
        const char *nl = memchr(buf + i, '\n', n - i);
        size_t chunk = nl ? (size_t)(nl - (buf + i)) + 1 : n - i;
        if (write(STDERR_FILENO, buf + i, chunk) < 0) {
            return -1;
        }
        msg_line_start = nl != NULL;
        i += chunk;
    }
    return n;
}

static void msg_timestamps_on(void)
{
    FILE *f = fopencookie(NULL, "w", (cookie_io_functions_t) {
        .write = msg_write,
    });
    if (f) {
        setvbuf(f, NULL, _IOLBF, 0);
        stderr = f;
    }
}

static void emit_event(void *opaque, const char *name, JsonObject *data)
{
    monitors_emit(opaque, name, data);
}

static size_t events_unread(void *opaque)
{
    return monitors_unread(opaque);
}

/* SIGTERM, SIGINT, SIGHUP: end as QEMU does (SHUTDOWN, host-signal). */
static gboolean on_signal(gpointer opaque)
{
    machine_request_exit(opaque, 0, "host-signal", false);
    return G_SOURCE_CONTINUE;
}

/* -no-shutdown: the guest shut down; it stops, and the process stays. */
static void guest_shutdown(void *opaque, const char *cause)
{
    Monitors *mon = opaque;
    Machine *m = mon->m;
    g_autoptr(JsonObject) data = json_object_new();
    json_object_set_boolean_member(data, "guest", true);
    json_object_set_string_member(data, "reason", cause);
    monitors_emit(mon, "SHUTDOWN", data);
    machine_pause(m);
    machine_set_state(m, RUN_STATE_SHUTDOWN);
}

static bool write_pidfile(const char *path, GError **errp)
{
    g_autofree char *pid = g_strdup_printf("%d\n", getpid());
    return g_file_set_contents(path, pid, -1, errp);
}

int main(int argc, char **argv)
{
    MachineOptions opts;
    Machine m;
    Monitors mon = { 0 };
    MigrationState mig = { 0 };
    g_autoptr(GError) err = NULL;
    int status = 1, daemon_fd = -1;

    /* A peer that goes away is an error to handle, not a reason to die. */
    signal(SIGPIPE, SIG_IGN);
    if (!options_parse(&opts, argc, argv, &err)) {
        fprintf(stderr, "ferry: %s\n", err->message);
        options_cleanup(&opts);
        return 1;
    }
    if (opts.msg_timestamp) {
        msg_timestamps_on();
    }
    if (opts.daemonize) {
        daemon_fd = daemonize_start();
    }
    if (opts.pidfile && !write_pidfile(opts.pidfile, &err)) {
        fprintf(stderr, "ferry: -pidfile %s: %s\n", opts.pidfile, err->message);
        goto out_opts;
    }
    main_loop_init();
    mig.emit = emit_event;
    mig.events_unread = events_unread;
    mig.emit_opaque = &mon;
    if (!machine_init(&m, &opts, &err) ||
        !monitors_init(&mon, &m, opts.qmp, opts.monitor, &err) ||
        !migration_init(&mig, &m, &mon.qmp, opts.incoming, &err) ||
        !machine_start(&m, &err)) {
        fprintf(stderr, "ferry: %s\n", err->message);
        goto out;
    }
    m.guest_shutdown = guest_shutdown;
    m.guest_shutdown_opaque = &mon;
    if (daemon_fd >= 0) {
        daemonize_finish(daemon_fd, true);
        daemon_fd = -1;
    }
    guint sigs[] = { g_unix_signal_add(SIGTERM, on_signal, &m),
                     g_unix_signal_add(SIGINT, on_signal, &m),
                     g_unix_signal_add(SIGHUP, on_signal, &m) };
    status = machine_run(&m);
    for (size_t i = 0; i < G_N_ELEMENTS(sigs); i++) {
        g_source_remove(sigs[i]);
    }

    g_mutex_lock(&m.exit_lock);
    const char *cause = m.exit_cause;
    bool guest = m.exit_by_guest;
    g_mutex_unlock(&m.exit_lock);
    if (cause) {
        g_autoptr(JsonObject) data = json_object_new();
        json_object_set_boolean_member(data, "guest", guest);
        json_object_set_string_member(data, "reason", cause);
        monitors_emit(&mon, "SHUTDOWN", data);
    }
    monitors_flush(&mon);
out:
    if (daemon_fd >= 0) {
        daemonize_finish(daemon_fd, false);
    }
    migration_cleanup(&mig);
    main_loop_cleanup();
    monitors_cleanup(&mon);
    machine_cleanup(&m);
out_opts:
    if (opts.pidfile) {
        unlink(opts.pidfile);
    }
    options_cleanup(&opts);
    tls_objects_cleanup();
    return status;
}
