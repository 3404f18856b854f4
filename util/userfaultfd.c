/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Thin wrappers around the kernel's userfaultfd interface.  No policy:
 * one function per kernel operation; the contract is in the header.
 */
#include "qemu/userfaultfd.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int uffd_open_syscall(int flags)
{
#ifdef __NR_userfaultfd
    int fd = syscall(__NR_userfaultfd, flags);
    return fd < 0 ? -errno : fd;
#else
    (void)flags;
    return -ENOSYS;
#endif
}

int uffd_open_dev(int flags)
{
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0) {
        return -errno;
    }
    int fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
    int err = fd < 0 ? -errno : 0;
    close(dev);
    return fd < 0 ? err : fd;
}

int uffd_open(int flags)
{
    int fd = uffd_open_syscall(flags);
    if (fd == -EPERM || fd == -ENOSYS) {
        fd = uffd_open_dev(flags);
    }
    return fd;
}

int uffd_close(int fd)
{
    return close(fd) < 0 ? -errno : 0;
}

int uffd_api(int fd, uint64_t features, uint64_t *available,
             uint64_t *ioctls)
{
    struct uffdio_api api = { .api = UFFD_API, .features = features };
    int ret = ioctl(fd, UFFDIO_API, &api) < 0 ? -errno : 0;

    /* Pass through what the kernel wrote back, success or not. */
    if (available) {
        *available = api.features;
    }
    if (ioctls) {
        *ioctls = api.ioctls;
    }
    return ret;
}

int uffd_query(uint64_t *features, uint64_t *ioctls)
{
    int fd = uffd_open(O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return fd;
    }
    int ret = uffd_api(fd, 0, features, ioctls);
    close(fd);
    return ret;
}

const char *uffd_feature_name(uint64_t feature)
{
    static const struct {
        uint64_t bit;
        const char *name;
    } names[] = {
        { UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP" },
        { UFFD_FEATURE_EVENT_FORK, "EVENT_FORK" },
        { UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP" },
        { UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE" },
        { UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS" },
        { UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM" },
        { UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP" },
        { UFFD_FEATURE_SIGBUS, "SIGBUS" },
        { UFFD_FEATURE_THREAD_ID, "THREAD_ID" },
        { UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS" },
        { UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM" },
        { UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS" },
        { UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM" },
        { UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED" },
        { UFFD_FEATURE_POISON, "POISON" },
        { UFFD_FEATURE_WP_ASYNC, "WP_ASYNC" },
        { UFFD_FEATURE_MOVE, "MOVE" },
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (names[i].bit == feature) {
            return names[i].name;
        }
    }
    return NULL;
}

int uffd_register(int fd, void *start, uint64_t len, uint64_t mode,
                  uint64_t *ioctls)
{
    struct uffdio_register reg = {
        .range = { .start = (uintptr_t)start, .len = len },
        .mode = mode,
    };
    if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0) {
        return -errno;
    }
    if (ioctls) {
        *ioctls = reg.ioctls;
    }
    return 0;
}

int uffd_unregister(int fd, void *start, uint64_t len)
{
    struct uffdio_range range = { .start = (uintptr_t)start, .len = len };
    return ioctl(fd, UFFDIO_UNREGISTER, &range) < 0 ? -errno : 0;
}

/*
 * The filling ioctls report progress in a field of their argument: the
 * bytes done, or -errno when nothing was done.  A partial result is a
 * success for the bytes done, whatever errno says about the rest.
 */
static ssize_t fill_result(int ret, int64_t done)
{
    if (ret == 0) {
        return done;
    }
    return done > 0 ? done : -errno;
}

ssize_t uffd_copy(int fd, void *dst, const void *src, uint64_t len,
                  uint64_t mode)
{
    struct uffdio_copy c = {
        .dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len, .mode = mode,
    };
    int ret = ioctl(fd, UFFDIO_COPY, &c);
    return fill_result(ret, c.copy);
}

ssize_t uffd_zeropage(int fd, void *start, uint64_t len, uint64_t mode)
{
    struct uffdio_zeropage z = {
        .range = { .start = (uintptr_t)start, .len = len }, .mode = mode,
    };
    int ret = ioctl(fd, UFFDIO_ZEROPAGE, &z);
    return fill_result(ret, z.zeropage);
}

ssize_t uffd_continue(int fd, void *start, uint64_t len, uint64_t mode)
{
    struct uffdio_continue c = {
        .range = { .start = (uintptr_t)start, .len = len }, .mode = mode,
    };
    int ret = ioctl(fd, UFFDIO_CONTINUE, &c);
    return fill_result(ret, c.mapped);
}

ssize_t uffd_move(int fd, void *dst, void *src, uint64_t len, uint64_t mode)
{
    struct uffdio_move m = {
        .dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len, .mode = mode,
    };
    int ret = ioctl(fd, UFFDIO_MOVE, &m);
    return fill_result(ret, m.move);
}

ssize_t uffd_poison(int fd, void *start, uint64_t len, uint64_t mode)
{
    struct uffdio_poison p = {
        .range = { .start = (uintptr_t)start, .len = len }, .mode = mode,
    };
    int ret = ioctl(fd, UFFDIO_POISON, &p);
    return fill_result(ret, p.updated);
}

int uffd_wake(int fd, void *start, uint64_t len)
{
    struct uffdio_range range = { .start = (uintptr_t)start, .len = len };
    return ioctl(fd, UFFDIO_WAKE, &range) < 0 ? -errno : 0;
}

int uffd_writeprotect(int fd, void *start, uint64_t len, uint64_t mode)
{
    struct uffdio_writeprotect wp = {
        .range = { .start = (uintptr_t)start, .len = len }, .mode = mode,
    };
    return ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

void uffd_decode(const struct uffd_msg *msg, UffdEvent *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->event = msg->event;
    switch (msg->event) {
    case UFFD_EVENT_PAGEFAULT:
        ev->pagefault.address = msg->arg.pagefault.address;
        ev->pagefault.flags = msg->arg.pagefault.flags;
        ev->pagefault.tid = msg->arg.pagefault.feat.ptid;
        break;
    case UFFD_EVENT_FORK:
        ev->fork.ufd = (int)msg->arg.fork.ufd;
        break;
    case UFFD_EVENT_REMAP:
        ev->remap.from = msg->arg.remap.from;
        ev->remap.to = msg->arg.remap.to;
        ev->remap.len = msg->arg.remap.len;
        break;
    case UFFD_EVENT_REMOVE:
    case UFFD_EVENT_UNMAP:
        ev->range.start = msg->arg.remove.start;
        ev->range.end = msg->arg.remove.end;
        break;
    default:
        break;
    }
}

int uffd_read_events(int fd, UffdEvent *ev, int max)
{
    struct uffd_msg msgs[64];

    if (max <= 0) {
        return -EINVAL;
    }
    if (max > (int)(sizeof(msgs) / sizeof(msgs[0]))) {
        max = sizeof(msgs) / sizeof(msgs[0]);
    }
    ssize_t n = read(fd, msgs, max * sizeof(msgs[0]));
    if (n < 0) {
        return errno == EAGAIN ? 0 : -errno;
    }
    /* The kernel only ever returns whole messages. */
    int count = n / (ssize_t)sizeof(msgs[0]);
    for (int i = 0; i < count; i++) {
        uffd_decode(&msgs[i], &ev[i]);
    }
    return count;
}
