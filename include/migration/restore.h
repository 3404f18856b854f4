/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Restore on demand (migration/restore.c, docs/snapshot.md): a
 * destination loading a mapped-ram file with postcopy-ram on runs the
 * guest once the device state is in, before its memory is read.  Guest
 * RAM is registered with userfaultfd (MISSING) and every page is
 * missing; a vCPU touching one faults to the fault thread, which reads
 * that page from its slot in the file and places it (UFFDIO_COPY, or
 * UFFDIO_ZEROPAGE for a clear bit), waking the vCPU.  The load thread
 * meanwhile reads the rest in large batches, going first to where the
 * last fault was.  Once every page is in, RAM is ordinary memory again
 * and the migration is completed.
 *
 * Invariants: a page is placed once, by the thread that claimed its
 * host page (one bit, test-and-set); a page reads zero only if its bit
 * in the file is clear.  A read error after the guest ran never places
 * zeros: the guest is stopped and the migration fails with the error.
 *
 * Threads: the load thread ("mig/dst/load") runs restore_run() and the
 * background load; "mig/restore/fault" serves faults.
 */
#ifndef MIGRATION_RESTORE_H
#define MIGRATION_RESTORE_H

#include <stdbool.h>

#include <glib.h>

#include "system/runstate.h"

typedef struct MigrationState MigrationState;
typedef struct MappedRam MappedRam;
typedef struct QEMUFile QEMUFile;

/*
 * restore_run: the device state of the file behind @f is loaded and its
 * pages are in @mapped's slots (taken, freed here): run the guest (if
 * @source_state says it ran) and bring every page in, as above.  True
 * in postcopy-active with every page in and RAM ordinary memory again
 * (the caller completes); false in failed, with error-desc, the guest
 * stopped in io-error if it ran.  Closes @f.  Load thread, in active.
 */
bool restore_run(MigrationState *s, QEMUFile *f, MappedRam *mapped,
                 RunState source_state);

#endif
