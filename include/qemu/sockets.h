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

/*
 * inet_split: "HOST:PORT" or "[V6]:PORT" into @host (without brackets,
 * possibly "") and @port; false if there is no port.
 */
bool inet_split(const char *hp, char **host, char **port);

/* inet_listen: bound to @host ("" for any) and @port, listening. */
int inet_listen(const char *host, const char *port, GError **errp);

/* inet_connect: connected to @host:@port, trying each address. */
int inet_connect(const char *host, const char *port, GError **errp);

/*
 * unix_listen: at @path, replacing a stale socket there, created with
 * mode @mode (0 to leave the umask's).
 */
int unix_listen(const char *path, mode_t mode, GError **errp);

int unix_connect(const char *path, GError **errp);

#endif
