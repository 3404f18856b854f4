/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Stream sockets for the monitors and the migration transports: split
 * QEMU's HOST:PORT syntax, listen and connect over TCP (IPv4/IPv6) and
 * unix sockets.  Error contract: GError **errp last; fds are returned,
 * -1 on failure, with QEMU's messages ("Failed to bind socket to ...").
 */
#ifndef QEMU_SOCKETS_H
#define QEMU_SOCKETS_H

#include <stdbool.h>
#include <sys/types.h>

#include <glib.h>
#include <glib-unix.h>

/*
 * inet_split: "HOST:PORT" or "[V6]:PORT" into @host (without brackets,
 * possibly "") and @port; false if there is no port.
 */
bool inet_split(const char *hp, char **host, char **port);

/* inet_listen: bound to @host ("" for any) and @port, listening. */
int inet_listen(const char *host, const char *port, GError **errp);

/* inet_connect: connected to @host:@port, trying each address. */
int inet_connect(const char *host, const char *port, GError **errp);

/* inet_connect_timeout: the same, each address given up after
 * @timeout_ms (a peer that answers nothing fails ETIMEDOUT then). */
int inet_connect_timeout(const char *host, const char *port, int timeout_ms,
                         GError **errp);

/*
 * unix_listen: at @path, replacing a stale socket there, created with
 * mode @mode (0 to leave the umask's).
 */
int unix_listen(const char *path, mode_t mode, GError **errp);

int unix_connect(const char *path, GError **errp);

/*
 * accept_backoff: accept() on @listen_fd, watched by *@src calling @fn,
 * failed with @err.  For want of a resource (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM) the connection stays in the backlog and the fd readable, so
 * the watch would spin at 100 % of a CPU: the watch is then replaced,
 * in *@src, by a timer that brings it back after ACCEPT_BACKOFF_MS
 * (g_source_remove(*@src) still removes whichever is there), and the
 * caller returns G_SOURCE_REMOVE.  False for other errors (a
 * connection that went away): keep watching.  Main loop.
 */
#define ACCEPT_BACKOFF_MS 100
bool accept_backoff(int err, int listen_fd, guint *src, GUnixFDSourceFunc fn,
                    gpointer data);

#endif
