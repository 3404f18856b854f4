/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Migration transports: parse a URI, connect (source) or listen
 * (destination).  tcp:HOST:PORT (IPv4 or IPv6, [::] form; port 0 picks
 * a free one) and unix:PATH.
 *
 * Error contract: GError **errp last; fds are returned, -1 on failure.
 */
#ifndef MIGRATION_CHANNEL_H
#define MIGRATION_CHANNEL_H

#include <glib.h>
#include <json-glib/json-glib.h>

/* channel_connect: a connected stream socket for @uri. */
int channel_connect(const char *uri, GError **errp);

/*
 * channel_listen: a listening socket for @uri; *@addr gets QEMU's
 * SocketAddress list for query-migrate's socket-address (the real port
 * when 0 was asked for).
 */
int channel_listen(const char *uri, JsonArray **addr, GError **errp);

#endif
