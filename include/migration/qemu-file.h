/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The migration stream's I/O: buffered reads and writes over one file
 * descriptor, with a sticky error state.  Every transport (tcp, unix,
 * fd, exec, file) ends in a QEMUFile; the return path is the same
 * connection read in the other direction, through a second QEMUFile on
 * the same fd.  A socket with a TLS session (crypto/tls.h) is read and
 * written through it by every QEMUFile over it.
 *
 * A QEMUFile is used by one thread at a time.  After the first error
 * every call does nothing and reads give zeros; callers check
 * qemu_file_error() at the points where they decide something.  All
 * integers are little-endian on the wire.
 */
#ifndef MIGRATION_QEMU_FILE_H
#define MIGRATION_QEMU_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

typedef struct QEMUFile QEMUFile;

/* qemu_file_new: over @fd, which it closes at qemu_file_close if @own. */
QEMUFile *qemu_file_new(int fd, bool writable, bool own);

/*
 * qemu_file_new_prefixed: a reader over @fd (closed at qemu_file_close)
 * that gives the @len bytes at @prefix first: what was read from the
 * connection before it was known to be the stream (its channel header).
 * @len is at most 4 KiB.
 */
QEMUFile *qemu_file_new_prefixed(int fd, const void *prefix, size_t len);

/*
 * qemu_file_new_mem: a reader over a copy of @data (a packaged part of
 * a stream); reading past its end is an error (-EIO), as at a stream's.
 */
QEMUFile *qemu_file_new_mem(const void *data, size_t len);

/*
 * qemu_file_new_mem_writer: a writer into memory (the postcopy device
 * package); qemu_file_mem_finish() closes it and returns what it holds.
 */
QEMUFile *qemu_file_new_mem_writer(void);
GBytes *qemu_file_mem_finish(QEMUFile *f);

/*
 * qemu_file_offset: where the next byte read or written lies in the
 * file under @f (a regular file: mapped-ram); -errno if it cannot seek.
 * qemu_file_seek: go on at byte @off of that file (a writer flushes
 * first, a reader drops what it read ahead); 0 or -errno, which is also
 * @f's error.
 */
int64_t qemu_file_offset(QEMUFile *f);
int qemu_file_seek(QEMUFile *f, int64_t off);

/* qemu_file_close: flush (writers), free; the first error, or 0. */
int qemu_file_close(QEMUFile *f);

void qemu_put_buffer(QEMUFile *f, const void *buf, size_t len);
void qemu_put_byte(QEMUFile *f, uint8_t v);
void qemu_put_u16(QEMUFile *f, uint16_t v);
void qemu_put_u32(QEMUFile *f, uint32_t v);
void qemu_put_u64(QEMUFile *f, uint64_t v);
/* qemu_fflush: write what is buffered. */
void qemu_fflush(QEMUFile *f);

/* Reads: exactly @len bytes, or an error (-EIO at end of stream). */
void qemu_get_buffer(QEMUFile *f, void *buf, size_t len);
uint8_t qemu_get_byte(QEMUFile *f);
uint16_t qemu_get_u16(QEMUFile *f);
uint32_t qemu_get_u32(QEMUFile *f);
uint64_t qemu_get_u64(QEMUFile *f);

/*
 * qemu_file_pending: bytes read from the fd and not consumed yet; a
 * reader polling the fd looks here first.
 */
size_t qemu_file_pending(const QEMUFile *f);

/*
 * qemu_file_ready: a read would find data now (or @f's error) without
 * waiting: what is pending, or the fd readable; over TLS, readable
 * counts only once a whole record of data has come (a key update alone
 * is not data).  For a thread that polls and must not block.
 */
bool qemu_file_ready(QEMUFile *f);

/* qemu_file_error: 0 or -errno of the first failure. */
int qemu_file_error(const QEMUFile *f);

/* qemu_file_set_error: record @err (-errno) unless one is recorded. */
void qemu_file_set_error(QEMUFile *f, int err);

/* Bytes written (including buffered) or read so far. */
uint64_t qemu_file_transferred(const QEMUFile *f);

int qemu_file_fd(const QEMUFile *f);

/*
 * qemu_file_shutdown: make the fd's pending and future I/O fail at once
 * (shutdown(2) for sockets), from any thread: how cancel breaks a
 * blocked transfer.
 */
void qemu_file_shutdown(QEMUFile *f);

#endif
