/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Constants shared by the guest's assembly and C. */
#ifndef GUEST_LAYOUT_H
#define GUEST_LAYOUT_H

#define MAX_CPUS        16
#define KSTACK_SHIFT    14              /* 16 KiB kernel stack per CPU */
#define AP_TRAMPOLINE   0x8000          /* SIPI vector 0x08 */
#define TSS_SEL(cpu)    (0x30 + 16 * (cpu))
#define USER_CS         (0x18 | 3)
#define USER_DS         (0x20 | 3)
#define DEBUG_EXIT_PORT 0xf4
#define SERIAL_PORT     0x3f8

#endif
