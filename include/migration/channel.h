/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Migration transports: parse a URI, connect (source) or listen
 * (destination).  tcp:HOST:PORT (IPv4 or IPv6, [::] form; port 0 picks
 * a free one), unix:PATH, exec:COMMAND and file:PATH[,offset=N]; fd:NAME
 * is migration.c's (getfd).
 *
 * Error contract: GError **errp last; fds are returned, -1 on failure.
 */
#ifndef MIGRATION_CHANNEL_H
#define MIGRATION_CHANNEL_H

#include <stdbool.h>

#include <glib.h>
#include <json-glib/json-glib.h>

/*
 * channel_connect: where the source writes @uri's stream: a connected
 * socket (tcp:, unix:), a command's stdin (exec:CMD), or a file
 * (file:PATH[,offset=N], created or truncated; with an offset, written
 * from there).  A TCP peer that does not answer (a host down, a
 * partition) fails after CHANNEL_CONNECT_TIMEOUT_S, not the kernel's two
 * minutes of SYN retries: the caller may be a thread that a quit waits
 * for.
 */
#define CHANNEL_CONNECT_TIMEOUT_S   10
int channel_connect(const char *uri, GError **errp);

/*
 * channel_tune: what channel_connect does to its sockets, for one that
 * came another way (accepted, or passed with fd:): big buffers, and
 * TCP_NODELAY on TCP.  Anything that is not a socket is left alone.
 */
void channel_tune(int fd);

/*
 * Noticing a dead peer (docs/postcopy.md): every TCP migration channel
 * has keep-alive and a TCP_USER_TIMEOUT as long as the probes take, so
 * that a peer gone silent (no RST: a partition, a host down) ends the
 * connection in seconds whether it is idle or has data unacknowledged.
 * The URI's keep-alive options override these; keep-alive=off leaves
 * the kernel's behaviour (QEMU's default).  A listener's options go to
 * the connections it accepts.
 */
#define CHANNEL_KEEPALIVE_IDLE_S        1
#define CHANNEL_KEEPALIVE_INTERVAL_S    1
#define CHANNEL_KEEPALIVE_COUNT         3

/* channel_keepalive_default: ferry's keep-alive on a TCP socket passed
 * with fd: (anything else is left alone). */
void channel_keepalive_default(int fd);

/*
 * channel_close: close a migration socket, and drop its TLS session
 * (crypto/tls.h) first; every stream fd is closed through here.
 */
void channel_close(int fd);

/*
 * channel_peer_sent_tls: what @fd has to read begins as a TLS record (an
 * alert or a handshake): for a source without tls-creds that failed, to
 * say that its destination expects TLS.
 */
bool channel_peer_sent_tls(int fd);

/* channel_open_file / channel_exec: file: and exec: for either side. */
int channel_open_file(const char *uri, bool writing, GError **errp);
int channel_exec(const char *uri, bool writing, GError **errp);

/*
 * channel_listen: a listening socket for @uri; *@addr gets QEMU's
 * SocketAddress list for query-migrate's socket-address (the real port
 * when 0 was asked for).
 */
int channel_listen(const char *uri, JsonArray **addr, GError **errp);

#endif
