/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The command line; the contract is in include/system/options.h. */
#include "system/options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024ULL * 1024)

bool parse_size(const char *s, uint64_t default_unit, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-') {
        return false;
    }
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) {
        return false;
    }
    uint64_t unit = default_unit;
    switch (*end) {
    case '\0':
        break;
    case 'B': case 'b': unit = 1; end++; break;
    case 'K': case 'k': unit = 1024; end++; break;
    case 'M': case 'm': unit = MiB; end++; break;
    case 'G': case 'g': unit = 1024 * MiB; end++; break;
    case 'T': case 't': unit = 1024 * 1024 * MiB; end++; break;
    default:
        return false;
    }
    if (*end || v * unit >= 18446744073709551616.0) {
        return false;
    }
    *out = (uint64_t)(v * unit);
    return true;
}

/* "key=value,key=value" into a table; false on a malformed item. */
static GHashTable *parse_props(const char *s)
{
    GHashTable *t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                          g_free);
    g_auto(GStrv) items = g_strsplit(s, ",", -1);
    for (char **it = items; *it; it++) {
        char *eq = strchr(*it, '=');
        if (!**it) {
            continue;
        }
        g_hash_table_insert(t, g_strndup(*it, eq ? eq - *it : (long)strlen(*it)),
                            g_strdup(eq ? eq + 1 : ""));
    }
    return t;
}

static bool parse_u16(const char *s, uint16_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 0);
    if (errno || end == s || *end || v > 0xffff) {
        return false;
    }
    *out = v;
    return true;
}

static bool opt_device(MachineOptions *o, const char *arg, GError **errp)
{
    g_autoptr(GHashTable) p = parse_props(arg);
    g_auto(GStrv) parts = g_strsplit(arg, ",", 2);
    const char *driver = parts[0];

    if (strcmp(driver, "isa-debug-exit") != 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-device %s: '%s' is not a valid device model name",
                    arg, driver);
        return false;
    }
    o->debug_exit = true;
    o->debug_exit_iobase = 0x501;       /* QEMU's defaults */
    o->debug_exit_iosize = 2;
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, p);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        uint16_t *dst = !strcmp(k, "iobase") ? &o->debug_exit_iobase :
                        !strcmp(k, "iosize") ? &o->debug_exit_iosize : NULL;
        if (!strcmp(k, driver)) {
            continue;
        }
        if (!dst) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-device %s: Property 'isa-debug-exit.%s' not found",
                        arg, (char *)k);
            return false;
        }
        if (!parse_u16(v, dst) || (dst == &o->debug_exit_iosize && *dst == 0)) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "-device %s: invalid value '%s' for '%s'", arg,
                        (char *)v, (char *)k);
            return false;
        }
    }
    return true;
}

static bool opt_serial(MachineOptions *o, const char *arg, GError **errp)
{
    if (!strcmp(arg, "stdio")) {
        o->serial = SERIAL_STDIO;
    } else if (!strcmp(arg, "none") || !strcmp(arg, "null")) {
        o->serial = SERIAL_NONE;
    } else if (g_str_has_prefix(arg, "file:") && arg[5]) {
        o->serial = SERIAL_FILE;
        g_free(o->serial_path);
        o->serial_path = g_strdup(arg + 5);
    } else {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-serial %s: 'serial' backend '%s' is not supported "
                    "(stdio, file:PATH, none)", arg, arg);
        return false;
    }
    return true;
}

static bool opt_smp(MachineOptions *o, const char *arg, GError **errp)
{
    g_autoptr(GHashTable) p = parse_props(arg);
    const char *n = g_hash_table_lookup(p, "cpus");
    g_auto(GStrv) parts = g_strsplit(arg, ",", 2);
    if (!n && !strchr(parts[0], '=')) {
        n = parts[0];
    }
    char *end;
    long v = n ? strtol(n, &end, 10) : -1;
    if (!n || end == n || *end || v < 1 || v > MAX_VCPUS) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-smp %s: the number of CPUs must be 1 to %d", arg,
                    MAX_VCPUS);
        return false;
    }
    o->smp = v;
    return true;
}

bool options_parse(MachineOptions *o, int argc, char **argv, GError **errp)
{
    /* Options that take an argument, and those that take none. */
    static const char *const with_arg[] = {
        "m", "smp", "kernel", "append", "serial", "device", "display",
        "accel", "cpu", "name", "pidfile", "machine", "qmp", "monitor", NULL,
    };
    static const char *const flags[] = {
        "S", "enable-kvm", "no-reboot", "nodefaults", "daemonize", NULL,
    };
    g_autoptr(GStrvBuilder) qmp = g_strv_builder_new();
    g_autoptr(GStrvBuilder) monitor = g_strv_builder_new();

    memset(o, 0, sizeof(*o));
    o->ram_size = 128 * MiB;
    o->smp = 1;
    o->serial = SERIAL_STDIO;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (opt[0] != '-') {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION,
                        "%s: invalid option", opt);
            return false;
        }
        const char *name = opt + (opt[1] == '-' ? 2 : 1);
        if (g_strv_contains(flags, name)) {
            if (!strcmp(name, "S")) {
                o->start_paused = true;
            } else if (!strcmp(name, "no-reboot")) {
                o->no_reboot = true;
            } else if (!strcmp(name, "daemonize")) {
                o->daemonize = true;
            }
            continue;
        }
        if (!g_strv_contains(with_arg, name)) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION,
                        "%s: invalid option", opt);
            return false;
        }
        if (i + 1 >= argc) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "%s: requires an argument", opt);
            return false;
        }
        const char *arg = argv[++i];
        bool ok = true;

        if (!strcmp(name, "m")) {
            g_autoptr(GHashTable) p = parse_props(arg);
            const char *sz = g_hash_table_lookup(p, "size");
            g_auto(GStrv) parts = g_strsplit(arg, ",", 2);
            ok = parse_size(sz ? sz : parts[0], MiB, &o->ram_size) &&
                 o->ram_size >= 2 * MiB && o->ram_size % 4096 == 0;
            if (!ok) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "-m %s: invalid RAM size (at least 2M, a "
                            "multiple of 4K)", arg);
            }
        } else if (!strcmp(name, "smp")) {
            ok = opt_smp(o, arg, errp);
        } else if (!strcmp(name, "kernel")) {
            g_free(o->kernel);
            o->kernel = g_strdup(arg);
        } else if (!strcmp(name, "append")) {
            g_free(o->append);
            o->append = g_strdup(arg);
        } else if (!strcmp(name, "serial")) {
            ok = opt_serial(o, arg, errp);
        } else if (!strcmp(name, "device")) {
            ok = opt_device(o, arg, errp);
        } else if (!strcmp(name, "display")) {
            if (strcmp(arg, "none") != 0) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "-display %s: only 'none' is supported", arg);
                ok = false;
            }
        } else if (!strcmp(name, "accel")) {
            g_auto(GStrv) parts = g_strsplit(arg, ",", 2);
            if (strcmp(parts[0], "kvm") != 0) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "-accel %s: only the kvm accelerator is supported",
                            arg);
                ok = false;
            }
        } else if (!strcmp(name, "cpu")) {
            g_auto(GStrv) parts = g_strsplit(arg, ",", 2);
            if (strcmp(parts[0], "host") != 0 && strcmp(parts[0], "max") != 0) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "-cpu %s: unable to find CPU model '%s' (host, max)",
                            arg, parts[0]);
                ok = false;
            }
        } else if (!strcmp(name, "name")) {
            g_free(o->name);
            o->name = g_strdup(arg);
        } else if (!strcmp(name, "qmp")) {
            g_strv_builder_add(qmp, arg);
        } else if (!strcmp(name, "monitor")) {
            g_strv_builder_add(monitor, arg);
        } else if (!strcmp(name, "pidfile")) {
            g_free(o->pidfile);
            o->pidfile = g_strdup(arg);
        } else if (!strcmp(name, "machine")) {
            g_auto(GStrv) parts = g_strsplit(arg, ",", 2);
            if (strchr(parts[0], '=') == NULL && strcmp(parts[0], "pc") != 0 &&
                strcmp(parts[0], "q35") != 0) {
                g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "-machine %s: unsupported machine type '%s'", arg,
                            parts[0]);
                ok = false;
            }
        }
        if (!ok) {
            return false;
        }
    }
    o->qmp = g_strv_builder_end(qmp);
    o->monitor = g_strv_builder_end(monitor);
    if (!o->kernel) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-kernel is required: ferry boots a Multiboot kernel");
        return false;
    }
    if (o->daemonize && (o->serial == SERIAL_STDIO ||
                         g_strv_contains((const char *const *)o->monitor,
                                         "stdio"))) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "-daemonize cannot be used with stdio (give -serial "
                    "file:PATH or none, and a socket monitor)");
        return false;
    }
    return true;
}

void options_cleanup(MachineOptions *o)
{
    g_free(o->kernel);
    g_free(o->append);
    g_free(o->serial_path);
    g_free(o->name);
    g_free(o->pidfile);
    g_strfreev(o->qmp);
    g_strfreev(o->monitor);
    memset(o, 0, sizeof(*o));
}
