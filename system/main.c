/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ferry: a small KVM machine started the way QEMU is started.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <glib.h>

#include "system/machine.h"
#include "system/options.h"

static bool write_pidfile(const char *path, GError **errp)
{
    g_autofree char *pid = g_strdup_printf("%d\n", getpid());
    return g_file_set_contents(path, pid, -1, errp);
}

int main(int argc, char **argv)
{
    MachineOptions opts;
    Machine m;
    g_autoptr(GError) err = NULL;
    int status = 1;

    if (!options_parse(&opts, argc, argv, &err)) {
        fprintf(stderr, "ferry: %s\n", err->message);
        options_cleanup(&opts);
        return 1;
    }
    if (opts.pidfile && !write_pidfile(opts.pidfile, &err)) {
        fprintf(stderr, "ferry: -pidfile %s: %s\n", opts.pidfile, err->message);
        options_cleanup(&opts);
        return 1;
    }
    if (!machine_init(&m, &opts, &err)) {
        fprintf(stderr, "ferry: %s\n", err->message);
        goto out;
    }
    if (opts.start_paused) {
        /* No monitor can resume it yet: say so rather than hang silently. */
        fprintf(stderr, "ferry: -S: starting paused needs a monitor, which "
                "this build does not have yet\n");
        goto out;
    }
    if (!machine_start(&m, &err)) {
        fprintf(stderr, "ferry: %s\n", err->message);
        goto out;
    }
    status = machine_run(&m);
out:
    machine_cleanup(&m);
    if (opts.pidfile) {
        unlink(opts.pidfile);
    }
    options_cleanup(&opts);
    return status;
}
