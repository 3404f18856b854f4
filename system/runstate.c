/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "system/runstate.h"

const char *runstate_name(RunState s)
{
    static const char *const names[RUN_STATE__MAX] = {
        "debug", "inmigrate", "internal-error", "io-error", "paused",
        "postmigrate", "prelaunch", "finish-migrate", "restore-vm", "running",
        "save-vm", "shutdown", "suspended", "watchdog", "guest-panicked",
        "colo",
    };
    return s < RUN_STATE__MAX ? names[s] : "unknown";
}
