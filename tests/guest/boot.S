/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Entry of the test guest: Multiboot v1, 32-bit protected mode, to
 * 64-bit long mode, then to C (kernel.c), which drops to user mode.
 *
 * Everything here runs in guest kernel mode, which kvm_pvm emulates at
 * about 1.3 us an instruction: keep it short.  This file maps only the
 * first GiB (512 entries); kernel.c maps the rest of RAM.
 *
 * Application processors enter at ap_trampoline (copied below 1 MiB),
 * in real mode, and join the same path with their own stack.
 */
#define MB_MAGIC        0x1BADB002
#define MB_FLAGS        0x00000003      /* page-aligned modules, memory info */

#define CR0_PE          (1 << 0)
#define CR0_PG          (1 << 31)
#define CR4_PAE         (1 << 5)
#define CR4_OSFXSR      (1 << 9)
#define CR4_OSXMMEXCPT  (1 << 10)
#define MSR_EFER        0xC0000080
#define EFER_LME        (1 << 8)

#define PTE_P           0x001
#define PTE_W           0x002
#define PTE_U           0x004
#define PTE_PS          0x080
#define PTE_FLAGS       (PTE_P | PTE_W | PTE_U)

#define KERNEL_CS       0x08
#define KERNEL_DS       0x10
#define KERNEL_CS32     0x28

#include "layout.h"

        .section .multiboot, "a"
        .balign 4
        .long   MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .section .boot, "ax"
        .code32
        .globl  _start
_start:
        cli
        movl    %eax, boot_magic
        movl    %ebx, boot_mbi
        movl    $(kstacks + (1 << KSTACK_SHIFT)), %esp

        /* PML4[0] -> PDPT, PDPT[0] -> PD0, PD0 = first GiB in 2 MiB pages. */
        movl    $pdpt, %eax
        orl     $PTE_FLAGS, %eax
        movl    %eax, pml4
        movl    $pd0, %eax
        orl     $PTE_FLAGS, %eax
        movl    %eax, pdpt
        movl    $pd0, %edi
        movl    $(PTE_FLAGS | PTE_PS), %eax
        movl    $512, %ecx
1:      movl    %eax, (%edi)
        addl    $0x200000, %eax
        addl    $8, %edi
        loop    1b

        xorl    %esi, %esi              /* CPU index 0: the BSP */
        /* fall through */

/* Enter long mode: %esp is this CPU's stack, %esi its index. */
enter_long_mode:
        movl    %cr4, %eax
        orl     $(CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
        movl    %eax, %cr4
        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    $MSR_EFER, %ecx
        rdmsr
        orl     $EFER_LME, %eax
        wrmsr
        movl    %cr0, %eax
        orl     $(CR0_PG | CR0_PE), %eax
        movl    %eax, %cr0
        lgdt    gdt_desc
        ljmp    $KERNEL_CS, $long_entry

        .code64
long_entry:
        movw    $KERNEL_DS, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        xorw    %ax, %ax
        movw    %ax, %fs
        movw    %ax, %gs
        movl    %esp, %esp              /* zero-extend the 32-bit stack */
        movl    %esi, %edi              /* kernel_main(cpu) */
        call    kernel_main
2:      hlt
        jmp     2b

/*
 * Application processor trampoline, copied to 0x8000 by the BSP, which
 * then broadcasts INIT-SIPI-SIPI with vector 0x08.  Real mode, CS =
 * 0x0800, IP = 0.  Each AP takes the next CPU index with lock xadd, so
 * that APs may start in any order, and its stack from that index.
 */
        .code16
        .globl  ap_trampoline, ap_trampoline_end
ap_trampoline:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        lgdtl   (ap_gdt_desc - ap_trampoline + 0x8000)
        movl    %cr0, %eax
        orl     $CR0_PE, %eax
        movl    %eax, %cr0
        ljmpl   $KERNEL_CS32, $ap_protected
ap_gdt_desc:
        .word   gdt_end - gdt - 1
        .long   gdt
ap_trampoline_end:

        .code32
ap_protected:
        movw    $KERNEL_DS, %ax
        movw    %ax, %ds
        movw    %ax, %ss
        movl    $1, %esi
        lock xaddl %esi, ap_next_cpu
        cmpl    $MAX_CPUS, %esi
        jae     3f
        movl    %esi, %esp
        incl    %esp
        shll    $KSTACK_SHIFT, %esp
        addl    $kstacks, %esp          /* top of kstacks[index] */
        jmp     enter_long_mode
3:      hlt                             /* more CPUs than we support */
        jmp     3b

        .section .data
        .balign 16
        .globl  gdt
gdt:
        .quad   0                       /* 0x00 */
        .quad   0x00af9a000000ffff      /* 0x08 kernel code, 64-bit */
        .quad   0x00cf92000000ffff      /* 0x10 kernel data */
        .quad   0x00affa000000ffff      /* 0x18 user code, 64-bit, DPL 3 */
        .quad   0x00cff2000000ffff      /* 0x20 user data, DPL 3 */
        .quad   0x00cf9a000000ffff      /* 0x28 kernel code, 32-bit (APs) */
        .fill   MAX_CPUS * 2, 8, 0      /* 0x30 + 16 * cpu: each CPU's TSS */
gdt_end:
gdt_desc:
        .word   gdt_end - gdt - 1
        .quad   gdt

        .globl  boot_magic, boot_mbi, ap_next_cpu
boot_magic:     .long 0
boot_mbi:       .long 0
ap_next_cpu:    .long 1                 /* index the next AP takes */

        .section .bss
        .balign 4096
        .globl  pml4, pdpt, pd0, kstacks
pml4:   .skip   4096
pdpt:   .skip   4096
pd0:    .skip   4096
        .balign 16
kstacks:                                /* kernel stacks, BSP's first */
        .skip   MAX_CPUS << KSTACK_SHIFT

/*
 * Exception stubs: put the vector in %rdi and go to exc_handler(vector,
 * frame), which reports and exits.
 */
        .text
        .code64
.macro stub vec
stub_\vec:
        movq    $\vec, %rdi
        jmp     exc_common
.endm
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        stub    \v
        .endr

/*
 * #GP: the hypervisor may run user mode with IOPL 0 whatever the guest
 * asked (kvm_pvm does), so user-mode port I/O faults here.  gp_emulate()
 * performs byte IN/OUT for it and steps over the instruction; anything
 * else is a real #GP.  Frame: saved registers, error code, iret frame.
 */
stub_13:
        pushq   %rax
        pushq   %rcx
        pushq   %rdx
        pushq   %rsi
        pushq   %rdi
        pushq   %r8
        pushq   %r9
        pushq   %r10
        pushq   %r11
        movq    %rsp, %rdi
        call    gp_emulate
        testl   %eax, %eax
        jz      5f
        popq    %r11
        popq    %r10
        popq    %r9
        popq    %r8
        popq    %rdi
        popq    %rsi
        popq    %rdx
        popq    %rcx
        popq    %rax
        addq    $8, %rsp                /* error code */
        iretq
5:      addq    $72, %rsp
        movq    $13, %rdi
        jmp     exc_common

exc_common:
        movq    %rsp, %rsi
        andq    $-16, %rsp
        call    exc_handler

        .section .rodata
        .balign 8
        .globl  exc_stubs
exc_stubs:
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad   stub_\v
        .endr
