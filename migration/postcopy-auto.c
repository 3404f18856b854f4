/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * x-postcopy-auto's model (include/migration/postcopy-auto.h).
 */
#include <math.h>

#include <glib.h>

#include "migration/postcopy-auto.h"

#define MIB     (1024.0 * 1024.0)

const char *postcopy_auto_verdict_name(PostcopyAutoVerdict v)
{
    static const char *const names[] = { "converged", "stay", "switch" };
    return names[v];
}

int64_t postcopy_auto_budget_ms(int64_t param_ms, int64_t first_pass_ms)
{
    return param_ms ? param_ms : POSTCOPY_AUTO_BUDGET_PASSES * first_pass_ms;
}

static PostcopyAutoVerdict verdict(PostcopyAutoVerdict v, char **why,
                                   char *reason)
{
    if (why) {
        *why = reason;
    } else {
        g_free(reason);
    }
    return v;
}

PostcopyAutoVerdict postcopy_auto_decide(const PostcopyAutoPass *p, char **why)
{
    /* Bytes per ms; a pass too short to time counts as 1 ms. */
    double bw = MAX(1.0, (double)p->sent_bytes / MAX(1, p->pass_ms));
    double rest = p->dirty_bytes;
    double target = bw * p->downtime_limit_ms;

    if (rest <= target) {
        return verdict(POSTCOPY_AUTO_CONVERGED, why, g_strdup_printf(
            "pass %" G_GUINT64_FORMAT " left %.1f MiB, within downtime-limit "
            "(%" G_GUINT64_FORMAT " ms) at %.0f MiB/s", p->pass, rest / MIB,
            p->downtime_limit_ms, bw * 1000 / MIB));
    }
    int64_t left_ms = p->budget_ms - p->elapsed_ms;
    if (p->budget_ms && left_ms <= 0) {
        return verdict(POSTCOPY_AUTO_SWITCH, why, g_strdup_printf(
            "the precopy budget of %" G_GINT64_FORMAT " ms is spent "
            "(pass %" G_GUINT64_FORMAT ")", p->budget_ms, p->pass));
    }
    double q = p->sent_bytes ? rest / p->sent_bytes : 1.0;
    if (q >= POSTCOPY_AUTO_MAX_RATIO) {
        return verdict(POSTCOPY_AUTO_SWITCH, why, g_strdup_printf(
            "precopy does not converge: pass %" G_GUINT64_FORMAT " sent "
            "%.1f MiB in %" G_GINT64_FORMAT " ms, and the guest dirtied "
            "%.1f MiB meanwhile", p->pass, p->sent_bytes / MIB, p->pass_ms,
            rest / MIB));
    }
    /* The passes k with rest * q^k <= target, and the time they take:
     * (rest / bw) * (1 + q + ... + q^(k-1)). */
    double passes = target > 0 ? ceil(log(target / rest) / log(q)) : INFINITY;
    double need_ms = isfinite(passes) ? rest / bw * (1 - pow(q, passes)) / (1 - q)
                                      : INFINITY;
    if (p->budget_ms && need_ms > left_ms) {
        return verdict(POSTCOPY_AUTO_SWITCH, why, g_strdup_printf(
            "precopy would need %.0f more pass%s, about %.0f ms, and %"
            G_GINT64_FORMAT " ms of its budget of %" G_GINT64_FORMAT
            " ms are left (the guest dirties %.0f %% of what a pass sends)",
            passes, passes == 1 ? "" : "es", need_ms, left_ms, p->budget_ms,
            q * 100));
    }
    if (!isfinite(passes)) {
        return verdict(POSTCOPY_AUTO_STAY, why, g_strdup_printf(
            "downtime-limit 0 cannot be met; no budget yet (pass %"
            G_GUINT64_FORMAT ")", p->pass));
    }
    return verdict(POSTCOPY_AUTO_STAY, why, g_strdup_printf(
        "precopy converges in about %.0f more pass%s, %.0f ms (the guest "
        "dirties %.0f %% of what a pass sends)", passes,
        passes == 1 ? "" : "es", need_ms, q * 100));
}
