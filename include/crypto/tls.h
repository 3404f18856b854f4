/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * TLS for the migration channels, over GnuTLS, with QEMU's objects:
 *
 *   tls-creds-psk   dir= (keys.psk: "username:hexkey" lines), endpoint=,
 *                   username= (a client's; "qemu" by default), priority=
 *   tls-creds-x509  dir= (ca-cert.pem, ca-crl.pem, server-cert.pem,
 *                   server-key.pem, client-cert.pem, client-key.pem),
 *                   endpoint=, verify-peer= (on by default), priority=
 *   authz-simple    identity=
 *   authz-list      policy=allow|deny (deny by default),
 *                   rules=[{match=, policy=, format=exact|glob}]
 *
 * Objects are made by -object and object-add and removed by object-del
 * on the main thread; a migration thread takes a reference to the
 * credentials it uses (tls_creds_get), so object-del during a handshake
 * is safe.  The registry is under its own lock.
 *
 * A TlsSession is one TLS connection over one connected socket.  The
 * socket stays blocking for everyone else: the session reads and writes
 * it with MSG_DONTWAIT and waits in poll(2) itself.
 *
 * Threads: the two directions of one connection are used by different
 * threads (the source writes the stream while its return-path thread
 * reads; the destination's load thread reads while its fault thread
 * writes page requests).  GnuTLS is not safe for a send and a receive
 * running at once on one session when a TLS 1.3 key update comes
 * (the receiver answers it by sending).  So every GnuTLS call on a
 * session runs under the session's lock, and none of them blocks while
 * holding it: each call is non-blocking, and the waiting for the socket
 * is done with the lock dropped.  Writers are further serialized among
 * themselves (a record half sent must be finished by the same writer).
 *
 * Sessions are found by their socket (tls_session_lookup): every
 * QEMUFile made over a socket with a session reads and writes through
 * it, which is how the return path and the channel header reader share
 * the stream's session.  A lookup checks the socket's inode too, so a
 * number reused by another socket never finds a stale session.
 *
 * Error contract: functions whose failure reaches a user take GError
 * **errp last and return bool (or NULL); the I/O functions return a
 * count or -errno.
 */
#ifndef CRYPTO_TLS_H
#define CRYPTO_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <glib.h>
#include <json-glib/json-glib.h>

typedef enum {
    TLS_ENDPOINT_CLIENT,
    TLS_ENDPOINT_SERVER,
} TlsEndpoint;

typedef struct TlsCreds TlsCreds;
typedef struct TlsSession TlsSession;

/* ---- Objects (main thread) ---------------------------------------------------- */

/* tls_object_type_known: one of the four types above. */
bool tls_object_type_known(const char *qom_type);

/*
 * tls_object_add: make object @id of @qom_type from @props (QMP
 * object-add's members: strings, booleans, and for authz-list a rules
 * array; -object's key=value pairs come as strings, rules.N.KEY as
 * well).  The credentials' files are read here, as QEMU does, so a bad
 * directory fails now and not at the migration.
 */
bool tls_object_add(const char *qom_type, const char *id, JsonObject *props,
                    GError **errp);

/* tls_object_del: remove @id; false (QEMU's words) when there is none. */
bool tls_object_del(const char *id, GError **errp);

/* tls_object_exists: @id names one of these objects. */
bool tls_object_exists(const char *id);

/* tls_objects_cleanup: drop every object (the process's end). */
void tls_objects_cleanup(void);

/*
 * tls_creds_get: a reference to the credentials @id for @endpoint, or
 * NULL with QEMU's error ("No TLS credentials with id ...", "Expected
 * TLS credentials for a server endpoint").  Any thread.
 */
TlsCreds *tls_creds_get(const char *id, TlsEndpoint endpoint, GError **errp);
void tls_creds_unref(TlsCreds *c);
/* tls_creds_is_x509: certificates (which need a hostname), not a PSK. */
bool tls_creds_is_x509(const TlsCreds *c);

/* ---- Sessions (any thread) ---------------------------------------------------- */

/*
 * tls_session_new: a session over connected socket @fd (not owned),
 * with @creds (a reference is taken); @hostname is what a client's
 * certificate check expects (x509 needs one), @authz the id of an
 * authz object a server checks the peer's identity against (the
 * certificate's distinguished name, or the PSK username), or NULL.
 */
TlsSession *tls_session_new(TlsCreds *creds, TlsEndpoint endpoint, int fd,
                            const char *hostname, const char *authz,
                            GError **errp);

/*
 * tls_session_handshake_step: advance the handshake without blocking.
 * 1: done and the peer checked; 0: call again when @fd is ready for
 * *@events (POLLIN or POLLOUT); -1: failed, with an error that says why
 * (a wrong key, an unknown CA, a hostname mismatch, a peer speaking
 * plaintext).
 */
int tls_session_handshake_step(TlsSession *t, short *events, GError **errp);

/*
 * tls_session_handshake: the whole handshake, waiting at most
 * @timeout_ms; a shutdown(2) of the socket ends the wait at once.
 */
bool tls_session_handshake(TlsSession *t, int timeout_ms, GError **errp);

/* tls_session_describe: "TLS1.3, AES-256-GCM, PSK" for traces and logs. */
char *tls_session_describe(TlsSession *t);

/*
 * tls_session_read: up to @len bytes of plaintext, waiting for them;
 * 0 at the end of the stream (the peer's close_notify or its close);
 * -errno on failure (-EPROTO for a TLS error, logged with GnuTLS's
 * words).  @nonblock: -EAGAIN instead of waiting.
 */
ssize_t tls_session_read(TlsSession *t, void *buf, size_t len, bool nonblock);

/* tls_session_write: all of @len bytes, or -errno. */
ssize_t tls_session_write(TlsSession *t, const void *buf, size_t len);

/*
 * tls_session_pending: bytes taken from the socket and not read yet:
 * plaintext decrypted, and records read ahead, not yet decrypted (which
 * may hold no data: a key update).  Zero means a poll(2) of the socket
 * tells whether more can come.
 */
size_t tls_session_pending(TlsSession *t);

/*
 * tls_session_key_update: start a TLS 1.3 key update of this side's
 * sending keys; with @ask_peer, ask the peer for one too (its reader
 * answers by sending, concurrently with its writer: the hazard the lock
 * above exists for).  Ask only where the peer reads this side and does
 * not ask at the same moment: GnuTLS 3.7 fails a session that gets a
 * request while its own is unanswered ("illegal parameter").  0 or
 * -errno.
 */
int tls_session_key_update(TlsSession *t, bool ask_peer);

TlsSession *tls_session_ref(TlsSession *t);
void tls_session_unref(TlsSession *t);

/*
 * tls_session_attach: make @t the session of its socket for
 * tls_session_lookup; the registry holds a reference until
 * tls_session_detach(fd) (channel_close does it before close(2)).
 */
void tls_session_attach(TlsSession *t);
void tls_session_detach(int fd);
/* tls_session_lookup: a reference to @fd's session, or NULL. */
TlsSession *tls_session_lookup(int fd);

#endif
