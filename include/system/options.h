/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ferry's command line, parsed the way QEMU parses the same options.
 *
 * Error contract: options_parse takes GError **errp last and returns
 * bool; the message is QEMU's shape without the program name, e.g.
 * "-foo: invalid option".
 */
#ifndef SYSTEM_OPTIONS_H
#define SYSTEM_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "system/chardev.h"
#include "system/ramblock.h"

#define MAX_VCPUS 16

typedef enum SerialKind {
    SERIAL_STDIO,
    SERIAL_FILE,
    SERIAL_NONE,
    SERIAL_CHARDEV,             /* -device isa-serial,chardev=ID */
} SerialKind;

/* -object secret: QEMU's secret object (libvirt's masterKey0). */
typedef struct SecretOptions {
    char *id;
    GBytes *data;               /* decoded (format=base64) */
} SecretOptions;

typedef struct MachineOptions {
    uint64_t ram_size;          /* bytes; -m, default 128 MiB as QEMU */
    bool ram_size_given;        /* -m was given */
    GPtrArray *objects;         /* -object memory-backend-*: MemBackendOptions */
    char *memory_backend;       /* -machine memory-backend=ID */
    bool machine_none;          /* -machine none: no RAM, no vCPUs, only
                                 * the monitors (libvirt's probe) */
    int smp;                    /* -smp, 1 to MAX_VCPUS */
    char *kernel;               /* -kernel */
    char *append;               /* -append */
    SerialKind serial;          /* -serial */
    char *serial_path;          /* -serial file:PATH */
    char *serial_chardev;       /* -device isa-serial,chardev=ID */
    char *serial_dev_id;        /* -device isa-serial,id=ID: a peripheral */
    Chardevs chardevs;          /* -chardev, -add-fd */
    GPtrArray *secrets;         /* -object secret: SecretOptions */
    char *uuid;                 /* -uuid */
    bool no_shutdown;           /* -no-shutdown */
    bool dump_guest_core;       /* -machine dump-guest-core= (default on) */
    bool msg_timestamp;         /* -msg timestamp=on */
    bool debug_exit;            /* -device isa-debug-exit */
    uint16_t debug_exit_iobase, debug_exit_iosize;
    bool start_paused;          /* -S */
    bool no_reboot;             /* -no-reboot */
    char *name;                 /* -name [guest=]NAME */
    char *pidfile;              /* -pidfile */
    GStrv qmp;                  /* -qmp, in order (may be NULL) */
    GStrv monitor;              /* -monitor, in order (may be NULL) */
    bool daemonize;             /* -daemonize */
    char *incoming;             /* -incoming URI|defer */
} MachineOptions;

/* options_parse: fill @o from argv (argv[0] is the program). */
bool options_parse(MachineOptions *o, int argc, char **argv, GError **errp);
void options_cleanup(MachineOptions *o);

/* options_find_backend: the -object with @id, or NULL. */
MemBackendOptions *options_find_backend(const MachineOptions *o, const char *id);

/*
 * parse_size: QEMU's size syntax: a number with an optional suffix
 * B, K, M, G, T (powers of 1024); a plain number means @default_unit.
 */
bool parse_size(const char *s, uint64_t default_unit, uint64_t *out);

#endif
