/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Thin wrappers around the kernel's userfaultfd interface.
 *
 * Error contract (the whole file): every function returns 0 or a
 * non-negative count on success and -errno on failure.  Nothing here
 * prints, allocates, retries or keeps state: policy (what to register,
 * when to retry, how to batch) belongs to the callers.  Functions that
 * take a "mode" pass the kernel's mode bits through unchanged.
 *
 * Addresses and lengths must be aligned to the page size of the memory
 * they name (4 KiB, or the huge page size for hugetlb); the kernel
 * answers -EINVAL otherwise.
 */
#ifndef QEMU_USERFAULTFD_H
#define QEMU_USERFAULTFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/userfaultfd.h>

/*
 * Definitions that Debian 12's linux/userfaultfd.h (Linux 6.1) lacks.
 * Values from the upstream UAPI header; used only where the system
 * header does not define them.
 */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED     (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON             (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC           (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE               (1 << 16)
#endif
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP         ((__u64)1 << 1)
#endif

#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE                    (0x05)
struct uffdio_move {
    __u64 dst;
    __u64 src;
    __u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE           ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES    ((__u64)1 << 1)
    __u64 mode;
    __s64 move;     /* written by the kernel: bytes moved or -errno */
};
#define UFFDIO_MOVE     _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON                  (0x08)
struct uffdio_poison {
    struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE     ((__u64)1 << 0)
    __u64 mode;
    __s64 updated;  /* written by the kernel: bytes poisoned or -errno */
};
#define UFFDIO_POISON   _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC         0xAA
#define USERFAULTFD_IOC_NEW     _IO(USERFAULTFD_IOC, 0x00)
#endif

/* Bit for ioctl number @nr in the ioctl masks the kernel reports. */
#define UFFD_IOCTL_BIT(nr)      ((uint64_t)1 << (nr))

/* ---- File descriptor -------------------------------------------------- */

/*
 * uffd_open: create a userfaultfd.
 * @flags: O_CLOEXEC, O_NONBLOCK (and UFFD_USER_MODE_ONLY, which a VMM
 *         must not pass: KVM touches guest memory from kernel mode).
 * Tries the userfaultfd(2) syscall first and falls back to
 * /dev/userfaultfd when the syscall is refused (EPERM: unprivileged use
 * disabled; ENOSYS: seccomp or an old libc).  Returns the fd or -errno
 * from the last attempt.
 */
int uffd_open(int flags);

/* uffd_open_syscall / uffd_open_dev: one way each, same contract. */
int uffd_open_syscall(int flags);
int uffd_open_dev(int flags);

/* uffd_close: close(2); returns 0 or -errno. */
int uffd_close(int fd);

/* ---- API handshake and queries ----------------------------------------- */

/*
 * uffd_api: the UFFDIO_API handshake, exactly once per fd and before
 * any other operation.
 * @features: the features to enable; every one must be available.
 * @available: if non-NULL, set to every feature the kernel offers
 *             (on failure, to what the kernel wrote back: 0 on recent
 *             kernels; ask uffd_query() to learn the offer).
 * @ioctls: if non-NULL, set to the fd-level ioctls (UFFD_IOCTL_BIT()).
 * On success exactly @features are enabled.  -EINVAL: a requested
 * feature is unavailable or the handshake was already done; -EPERM:
 * UFFD_FEATURE_EVENT_FORK without CAP_SYS_PTRACE.
 */
int uffd_api(int fd, uint64_t features, uint64_t *available,
             uint64_t *ioctls);

/*
 * uffd_query: what this kernel supports, without keeping an fd.
 * Opens a userfaultfd, does the handshake asking for nothing, and
 * reports the available features and fd-level ioctls.  Range ioctls
 * depend on the memory type and are reported by uffd_register().
 */
int uffd_query(uint64_t *features, uint64_t *ioctls);

/* uffd_feature_name: the kernel's name for one UFFD_FEATURE_* bit, or NULL. */
const char *uffd_feature_name(uint64_t feature);

/* ---- Ranges ------------------------------------------------------------ */

/*
 * uffd_register: UFFDIO_REGISTER [@start, @start + @len) with @mode, a
 * mask of UFFDIO_REGISTER_MODE_{MISSING,WP,MINOR}.
 * @ioctls: if non-NULL, set to the range ioctls allowed on the range
 *          (test with UFFD_IOCTL_BIT(_UFFDIO_COPY) and so on).
 * Registering again with the same fd updates the mode.  -EBUSY: part of
 * the range is registered with another userfaultfd; -EINVAL: unaligned,
 * mode empty or not supported for this memory (MINOR on private
 * anonymous memory, WP without the feature); -ENOMEM: not mapped.
 */
int uffd_register(int fd, void *start, uint64_t len, uint64_t mode,
                  uint64_t *ioctls);

/*
 * uffd_unregister: UFFDIO_UNREGISTER.  Threads blocked on faults in the
 * range are woken and retry the access as an ordinary fault.
 */
int uffd_unregister(int fd, void *start, uint64_t len);

/* ---- Resolving faults -------------------------------------------------- */

/*
 * uffd_copy: UFFDIO_COPY @len bytes from @src into the registered @dst.
 * @mode: UFFDIO_COPY_MODE_DONTWAKE (leave faulting threads asleep; wake
 *        them later with uffd_wake()), UFFDIO_COPY_MODE_WP (map the
 *        pages write-protected).
 * Returns @len when everything was copied.  When the kernel stops part
 * way it returns the bytes done (0 < n < @len): the caller decides
 * whether to go on with the rest.  Nothing copied: -EEXIST (the first
 * page is already present), -EAGAIN (the address space is changing,
 * retry), -ENOENT (not registered with this fd), -ESRCH (the address
 * space's owner is exiting), -EINVAL, -ENOMEM, -EFAULT.
 */
ssize_t uffd_copy(int fd, void *dst, const void *src, uint64_t len,
                  uint64_t mode);

/* uffd_zeropage: UFFDIO_ZEROPAGE; mode DONTWAKE; contract as uffd_copy. */
ssize_t uffd_zeropage(int fd, void *start, uint64_t len, uint64_t mode);

/*
 * uffd_continue: UFFDIO_CONTINUE, resolving minor faults by mapping the
 * page-cache pages already present.  Modes DONTWAKE, WP; contract as
 * uffd_copy (-EFAULT: a page is not in the page cache).
 */
ssize_t uffd_continue(int fd, void *start, uint64_t len, uint64_t mode);

/*
 * uffd_move: UFFDIO_MOVE @len bytes of private anonymous pages from
 * @src to the registered @dst by moving page-table entries (no copy;
 * @src is left unmapped).  Modes DONTWAKE, ALLOW_SRC_HOLES; contract as
 * uffd_copy (-ENOENT: a hole in @src without ALLOW_SRC_HOLES, -EBUSY: a
 * source page is shared, e.g. after fork).
 */
ssize_t uffd_move(int fd, void *dst, void *src, uint64_t len, uint64_t mode);

/*
 * uffd_poison: UFFDIO_POISON, marking missing pages so that an access
 * raises SIGBUS (a page that could not be migrated).  Mode DONTWAKE;
 * contract as uffd_copy.
 */
ssize_t uffd_poison(int fd, void *start, uint64_t len, uint64_t mode);

/* uffd_wake: UFFDIO_WAKE the threads faulting in the range. */
int uffd_wake(int fd, void *start, uint64_t len);

/*
 * uffd_writeprotect: UFFDIO_WRITEPROTECT.  @mode with
 * UFFDIO_WRITEPROTECT_MODE_WP protects the range; without it, removes
 * protection and wakes the threads waiting on it unless
 * UFFDIO_WRITEPROTECT_MODE_DONTWAKE is given.  The range must be
 * registered with UFFDIO_REGISTER_MODE_WP.
 */
int uffd_writeprotect(int fd, void *start, uint64_t len, uint64_t mode);

/* ---- Events ------------------------------------------------------------ */

/* A decoded userfaultfd message. */
typedef struct UffdEvent {
    uint8_t event;                  /* UFFD_EVENT_* as sent by the kernel */
    union {
        struct {
            uint64_t address;       /* faulting address (page-aligned unless
                                       UFFD_FEATURE_EXACT_ADDRESS) */
            uint64_t flags;         /* UFFD_PAGEFAULT_FLAG_{WRITE,WP,MINOR} */
            uint32_t tid;           /* with UFFD_FEATURE_THREAD_ID, else 0 */
        } pagefault;
        struct {
            int ufd;                /* the child's new userfaultfd */
        } fork;
        struct {
            uint64_t from, to, len; /* mremap() of a registered range */
        } remap;
        struct {
            uint64_t start, end;    /* UFFD_EVENT_REMOVE (MADV_DONTNEED,
                                       MADV_REMOVE) and UFFD_EVENT_UNMAP */
        } range;
    };
} UffdEvent;

/*
 * uffd_read_events: read up to @max pending messages in one read(2) and
 * decode them into @ev.  The fd should be O_NONBLOCK.  Returns the
 * number of events (>= 1), 0 when none is pending, or -errno.  Unknown
 * event types are passed through with only @event set.
 */
int uffd_read_events(int fd, UffdEvent *ev, int max);

/* uffd_decode: decode one kernel message; exposed for tests. */
void uffd_decode(const struct uffd_msg *msg, UffdEvent *ev);

#endif /* QEMU_USERFAULTFD_H */
