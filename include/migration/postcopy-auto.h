/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * x-postcopy-auto: the source decides, after each precopy pass, whether
 * precopy goes on, ends (it converged), or hands over to postcopy
 * (docs/postcopy-auto.md).
 *
 * Pure functions of what the migration thread measured: no state, no
 * locks, any thread.  Strings come back g_malloc'd.
 */
#ifndef MIGRATION_POSTCOPY_AUTO_H
#define MIGRATION_POSTCOPY_AUTO_H

#include <stdbool.h>
#include <stdint.h>

/* What one pass measured, and the limits it is judged against. */
typedef struct PostcopyAutoPass {
    uint64_t pass;              /* the pass that just ended, from 1 */
    uint64_t sent_bytes;        /* sent during it */
    int64_t pass_ms;            /* how long it took */
    uint64_t dirty_bytes;       /* dirtied meanwhile: the next pass's work */
    int64_t elapsed_ms;         /* since the migration began */
    int64_t budget_ms;          /* precopy's budget (postcopy_auto_budget_ms) */
    uint64_t downtime_limit_ms;
} PostcopyAutoPass;

typedef enum PostcopyAutoVerdict {
    POSTCOPY_AUTO_CONVERGED,    /* the rest fits in downtime-limit: stop and copy */
    POSTCOPY_AUTO_STAY,         /* another precopy pass */
    POSTCOPY_AUTO_SWITCH,       /* postcopy from here */
} PostcopyAutoVerdict;

/*
 * A pass that leaves this fraction of what it sent dirty, or more, is
 * not converging: at 0.9 it would take some 30 passes to go from 1 GiB
 * to a 300 ms downtime's worth at 128 MiB/s.
 */
#define POSTCOPY_AUTO_MAX_RATIO     0.9

/* The default budget (x-postcopy-auto-budget 0): precopy may take this
 * many times its first pass, in all. */
#define POSTCOPY_AUTO_BUDGET_PASSES 4

/*
 * postcopy_auto_decide: the verdict on pass @p, and in *@why (may be
 * NULL) the reason in words, with the figures it rests on.
 *
 * Converged when the dirty rest goes within downtime-limit at this
 * pass's bandwidth (the test plain precopy makes).  Otherwise, with q
 * the fraction of what was sent that the guest dirtied again, precopy
 * is modelled as geometric: each pass sends what the one before left,
 * q times less each time.  It switches when q >= POSTCOPY_AUTO_MAX_RATIO
 * (never converging), when the passes the model still needs would end
 * past the budget, or when the budget is spent.
 */
PostcopyAutoVerdict postcopy_auto_decide(const PostcopyAutoPass *p, char **why);

/* postcopy_auto_budget_ms: the budget in force: x-postcopy-auto-budget
 * @param_ms, or with 0, POSTCOPY_AUTO_BUDGET_PASSES times @first_pass_ms
 * (0 while the first pass runs: no budget yet). */
int64_t postcopy_auto_budget_ms(int64_t param_ms, int64_t first_pass_ms);

/* postcopy_auto_verdict_name: "converged", "stay", "switch". */
const char *postcopy_auto_verdict_name(PostcopyAutoVerdict v);

#endif
