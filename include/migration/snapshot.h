/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Background snapshots (QEMU's background-snapshot capability;
 * migration/snapshot.c, docs/snapshot.md): `migrate file:` or `exec:`
 * while the guest runs.  The guest stops only for its device state to be
 * taken and all of RAM to be write-protected (UFFDIO_WRITEPROTECT); then
 * it runs while RAM is saved in address order, each range unprotected
 * once written.  A guest write to a page not saved yet faults to the
 * write-fault thread, which saves that page first, unprotects it and so
 * wakes the vCPU.  The snapshot is RAM as it was when the guest stopped,
 * each page once.
 *
 * Invariant: a page is unprotected only by the thread that claimed it
 * (one bit per host page, test-and-set), after its save is written:
 * before that, the page in memory is still the snapshot's.
 *
 * Threads: "bg_snapshot" (the migration thread) runs snapshot_run() and
 * the scan; "mig/snap/wp" serves write faults.  With mapped-ram both
 * write pages into their slots; without, records on the stream under one
 * lock.  Error contract: GError **errp last, bool.
 */
#ifndef MIGRATION_SNAPSHOT_H
#define MIGRATION_SNAPSHOT_H

#include <stdbool.h>

#include <glib.h>

#include "system/ramblock.h"

typedef struct MigrationState MigrationState;
typedef struct QEMUFile QEMUFile;

/*
 * snapshot_supported: whether write-protection works for @rb here:
 * QEMU's "Background-snapshot is not supported by host kernel" (no
 * userfaultfd write-protect) or "... not compatible with guest memory
 * configuration" (none for this backend).  Main thread.
 */
bool snapshot_supported(RAMBlock *rb, GError **errp);

/*
 * snapshot_run: the whole snapshot on @f (the migration thread's
 * stream, to @uri, which it closes): setup, active, completed (or
 * failed, cancelled), the guest running again in every case if it ran
 * before.  Migration thread.
 */
void snapshot_run(MigrationState *s, QEMUFile *f, const char *uri);

#endif
