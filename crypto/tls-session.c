/* SPDX-License-Identifier: GPL-2.0-or-later */
/* TLS sessions over migration sockets; the contract is in include/crypto/tls.h. */
#include "crypto/tls.h"
#include "tls-int.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <gnutls/x509.h>

/*
 * After its handshake and its checks of the client, a server sends one
 * byte of application data, TLS_VERDICT_OK.  In TLS 1.3 a client's
 * handshake ends before the server has looked at the client's
 * certificate, so without it a refused source would learn why only from
 * a later read, as some other error.  A refusal is a fatal alert.
 */
#define TLS_VERDICT_OK  0x01

/* What one recv(2) may take into a session's read-ahead (pull below). */
#define TLS_RBUF_SIZE   (256 * 1024)

struct TlsSession {
    gint ref;
    TlsObject *creds;
    TlsEndpoint endpoint;
    int fd;                     /* not owned */
    dev_t dev;                  /* the socket's identity, for lookups */
    ino_t ino;
    char *hostname;             /* a client's certificate check */
    char *authz;                /* a server's identity check */
    gnutls_session_t s;
    /* Every gnutls_* call on s, none of which blocks: see the header. */
    GMutex lock;
    /* Held by a writer for a whole tls_session_write. */
    GMutex wlock;
    /* FERRY_TLS_REKEY_BYTES (tests): a key update after each this many
     * bytes written (since_rekey, under wlock), and after each this many
     * read (since_read, by the one reader) when no writer is busy. */
    uint64_t rekey_bytes, since_rekey, since_read;
    uint8_t *rbuf;              /* read ahead, not yet pulled; under lock */
    size_t rpos, rlen;
    /* Records GnuTLS pushed that the socket did not take yet, in order;
     * under lock.  At most about one record: a writer drains it before
     * it encrypts the next (push below). */
    GByteArray *wq;
    size_t wq_pos;
    int werr;                   /* the socket's first write error */
    bool handshaken;
    bool verdict_sent;          /* server: the handshake's last step */
    bool verdict_read;          /* client */
    bool eof;
};

/*
 * GnuTLS's push never fails for want of room: what the socket does not
 * take now is queued here (wq) and drained by drain_locked.  GnuTLS
 * thus never holds a record half sent, whose resumption is where it
 * goes wrong: a key update that the reader receives in between turns
 * the writer's next gnutls_record_send, the resumption, into "send a
 * KeyUpdate, then this data" and the record goes out twice
 * (tests/unit/test-tls-session.c, both-directions-rekey).
 */
static ssize_t push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
    TlsSession *t = p;
    size_t done = 0;
    if (t->werr) {
        gnutls_transport_set_errno(t->s, t->werr);
        return -1;
    }
    if (t->wq_pos == t->wq->len) {
        ssize_t n = send(t->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            t->werr = errno;
            gnutls_transport_set_errno(t->s, errno);
            return -1;
        }
        done = n > 0 ? n : 0;
    }
    if (done < len) {
        g_byte_array_append(t->wq, (const uint8_t *)buf + done, len - done);
    }
    return len;
}

static bool wait_fd(int fd, short events);

/*
 * Send what wq holds; under lock, which a @block'ing drain drops while
 * it waits for room (a reader may then queue a key update's answer
 * behind, still in order).  0 (all sent, or with !@block what could
 * be), or -errno.
 */
static int drain_locked(TlsSession *t, bool block)
{
    while (t->wq_pos < t->wq->len && !t->werr) {
        ssize_t n = send(t->fd, t->wq->data + t->wq_pos, t->wq->len - t->wq_pos,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            t->wq_pos += n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!block) {
                return 0;
            }
            g_mutex_unlock(&t->lock);
            bool ok = wait_fd(t->fd, POLLOUT);
            int e = errno;
            g_mutex_lock(&t->lock);
            if (!ok && !t->werr) {
                t->werr = e;
            }
        } else {
            t->werr = n < 0 ? errno : EPIPE;
        }
    }
    if (t->werr) {
        return -t->werr;
    }
    if (t->wq_pos == t->wq->len) {
        g_byte_array_set_size(t->wq, 0);
        t->wq_pos = 0;
    }
    return 0;
}

static bool wq_pending(const TlsSession *t)
{
    return t->wq_pos < t->wq->len;
}

/*
 * GnuTLS pulls a record's header and then its body, each a recv(2) of
 * its own, and each recv sends the sender a window update: two system
 * calls and two ACKs per 16 KiB.  The socket is read instead in large
 * gulps into rbuf, and records are pulled from there.  GnuTLS gets
 * EAGAIN only when rbuf is empty and the socket has nothing, so a
 * reader that then waits in poll(2) never sleeps on buffered bytes.
 */
static ssize_t pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
    TlsSession *t = p;
    if (t->rpos == t->rlen) {
        ssize_t n = recv(t->fd, t->rbuf, TLS_RBUF_SIZE, MSG_DONTWAIT);
        if (n <= 0) {
            if (n < 0) {
                gnutls_transport_set_errno(t->s, errno);
            }
            return n;
        }
        t->rpos = 0;
        t->rlen = n;
    }
    size_t n = MIN(len, t->rlen - t->rpos);
    memcpy(buf, t->rbuf + t->rpos, n);
    t->rpos += n;
    return n;
}

TlsSession *tls_session_new(TlsCreds *creds, TlsEndpoint endpoint, int fd,
                            const char *hostname, const char *authz,
                            GError **errp)
{
    TlsObject *o = (TlsObject *)creds;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno),
                    "TLS: %s", g_strerror(errno));
        return NULL;
    }
    TlsSession *t = g_new0(TlsSession, 1);
    t->ref = 1;
    t->creds = tls_object_ref(o);
    t->endpoint = endpoint;
    t->fd = fd;
    t->dev = st.st_dev;
    t->ino = st.st_ino;
    t->hostname = g_strdup(hostname);
    t->authz = g_strdup(authz && *authz ? authz : NULL);
    g_mutex_init(&t->lock);
    g_mutex_init(&t->wlock);
    t->rbuf = g_malloc(TLS_RBUF_SIZE);
    t->wq = g_byte_array_new();
    const char *rk = g_getenv("FERRY_TLS_REKEY_BYTES");
    t->rekey_bytes = rk ? g_ascii_strtoull(rk, NULL, 0) : 0;
    /*
     * These updates never ask the peer for one (tls_session_key_update):
     * on the preempt channel, which the source only writes, the
     * destination's request stayed unanswered, and the source's next one
     * then failed the session ("illegal parameter"), a page in flight.
     * Each side's writer renews its own keys; the reader's, half a
     * period apart, makes a reader send while its writer writes.
     */
    t->since_read = t->rekey_bytes / 2;
    /* No session tickets: a migration connects once, and a ticket sent
     * on the preempt channel, which the source never reads, would sit
     * there.  The channels are non-blocking underneath (push/pull). */
    unsigned flags = (endpoint == TLS_ENDPOINT_SERVER ? GNUTLS_SERVER : GNUTLS_CLIENT) |
                     GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS;
    int ret = gnutls_init(&t->s, flags);
    if (ret < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "Cannot initialize TLS session: %s", gnutls_strerror(ret));
        tls_session_unref(t);
        return NULL;
    }
    g_autofree char *prio = NULL;
    if (o->kind == TLS_OBJ_PSK) {
        /* A TLS 1.3 external PSK is bound to SHA-256, which rules out
         * AES-256-GCM-SHA384, and NORMAL's next choice is ChaCha20, at
         * a fraction of AES-GCM's rate on a CPU with AES instructions
         * (docs/benchmarks.md): by default AES-128-GCM goes first. */
        prio = g_strdup_printf("%s:+ECDHE-PSK:+DHE-PSK:+PSK",
                               o->priority ? o->priority
                               : "NORMAL:-CHACHA20-POLY1305:+CHACHA20-POLY1305");
        ret = gnutls_credentials_set(t->s, GNUTLS_CRD_PSK,
                                     endpoint == TLS_ENDPOINT_SERVER
                                     ? (void *)o->psk_server : (void *)o->psk_client);
    } else {
        prio = g_strdup(o->priority ? o->priority : "NORMAL");
        ret = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, o->cert);
        if (endpoint == TLS_ENDPOINT_SERVER) {
            /* Asked for, and enforced by the check after the handshake. */
            gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUEST);
        } else if (hostname) {
            gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, hostname, strlen(hostname));
        }
    }
    if (ret < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "Cannot set session credentials: %s", gnutls_strerror(ret));
        tls_session_unref(t);
        return NULL;
    }
    ret = gnutls_priority_set_direct(t->s, prio, NULL);
    if (ret < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "Unable to set TLS session priority %s: %s", prio,
                    gnutls_strerror(ret));
        tls_session_unref(t);
        return NULL;
    }
    gnutls_transport_set_ptr(t->s, t);
    gnutls_transport_set_push_function(t->s, push);
    gnutls_transport_set_pull_function(t->s, pull);
    return t;
}

TlsSession *tls_session_ref(TlsSession *t)
{
    g_atomic_int_inc(&t->ref);
    return t;
}

void tls_session_unref(TlsSession *t)
{
    if (!t || !g_atomic_int_dec_and_test(&t->ref)) {
        return;
    }
    if (t->s) {
        gnutls_deinit(t->s);
    }
    tls_object_unref(t->creds);
    g_mutex_clear(&t->lock);
    g_mutex_clear(&t->wlock);
    g_free(t->rbuf);
    g_byte_array_unref(t->wq);
    g_free(t->hostname);
    g_free(t->authz);
    g_free(t);
}

/* ---- The handshake --------------------------------------------------------------- */

/* QEMU's checks of a peer's certificate chain (verify-peer=on). */
static bool check_certificate(TlsSession *t, char **peername, GError **errp)
{
    unsigned status = 0;
    int ret = gnutls_certificate_verify_peers2(t->s, &status);
    if (ret == GNUTLS_E_NO_CERTIFICATE_FOUND) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "The peer sent no certificate (verify-peer is on: it needs "
                    "one signed by a CA in this side's ca-cert.pem)");
        return false;
    }
    if (ret < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Verify failed: %s",
                    gnutls_strerror(ret));
        return false;
    }
    if (status) {
        const char *reason = "Invalid certificate";
        if (status & GNUTLS_CERT_INVALID) {
            reason = "The certificate is not trusted";
        }
        if (status & GNUTLS_CERT_SIGNER_NOT_FOUND) {
            reason = "The certificate hasn't got a known issuer";
        }
        if (status & GNUTLS_CERT_REVOKED) {
            reason = "The certificate has been revoked";
        }
        if (status & GNUTLS_CERT_EXPIRED) {
            reason = "The certificate has expired";
        }
        if (status & GNUTLS_CERT_INSECURE_ALGORITHM) {
            reason = "The certificate uses an insecure algorithm";
        }
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s", reason);
        return false;
    }
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->s, &n);
    if (!certs || !n) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "No certificate peers");
        return false;
    }
    gnutls_x509_crt_t cert;
    if ((ret = gnutls_x509_crt_init(&cert)) < 0 ||
        (ret = gnutls_x509_crt_import(cert, &certs[0], GNUTLS_X509_FMT_DER)) < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "Cannot import certificate: %s", gnutls_strerror(ret));
        return false;
    }
    bool ok = true;
    gnutls_datum_t dn = { 0 };
    /* QEMU's order (the certificate's, "CN=...,O=..."), which tls-authz
     * rules are written against, not RFC 4514's reversed one. */
    if (gnutls_x509_crt_get_dn3(cert, &dn, GNUTLS_X509_DN_FLAG_COMPAT) < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "Cannot get client distinguished name");
        ok = false;
    } else {
        *peername = g_strndup((const char *)dn.data, dn.size);
        gnutls_free(dn.data);
    }
    if (ok && t->endpoint == TLS_ENDPOINT_CLIENT &&
        !gnutls_x509_crt_check_hostname(cert, t->hostname)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "Certificate does not match the hostname %s", t->hostname);
        ok = false;
    }
    gnutls_x509_crt_deinit(cert);
    return ok;
}

/* The peer's checks once the handshake is done; false with @errp. */
static bool check_peer(TlsSession *t, GError **errp)
{
    g_autofree char *peer = NULL;
    const char *what = "x509";
    if (t->creds->kind == TLS_OBJ_X509) {
        if (t->creds->verify_peer && !check_certificate(t, &peer, errp)) {
            return false;
        }
    } else if (t->endpoint == TLS_ENDPOINT_SERVER) {
        const char *user = gnutls_psk_server_get_username(t->s);
        peer = g_strdup(user ? user : "");
        what = "PSK";
    }
    if (t->endpoint == TLS_ENDPOINT_SERVER && t->authz) {
        if (!peer) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                        "TLS authz %s needs the client's identity, and "
                        "verify-peer is off", t->authz);
            return false;
        }
        g_autoptr(GError) err = NULL;
        if (!tls_authz_allows(t->authz, peer, &err)) {
            if (err) {
                g_propagate_error(errp, g_steal_pointer(&err));
            } else {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                            "TLS %s authz check for %s is denied", what, peer);
            }
            return false;
        }
    }
    return true;
}

/* Why a handshake failed, in words that point at the cause. */
static void handshake_error(TlsSession *t, int ret, GError **errp)
{
    const char *side = t->endpoint == TLS_ENDPOINT_CLIENT ? "destination" : "source";
    if (ret == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        gnutls_alert_description_t a = gnutls_alert_get(t->s);
        const char *hint = "";
        if (a == GNUTLS_A_DECRYPT_ERROR || a == GNUTLS_A_UNKNOWN_PSK_IDENTITY ||
            a == GNUTLS_A_ILLEGAL_PARAMETER) {
            hint = " (a wrong PSK key or username?)";
        } else if (a == GNUTLS_A_BAD_CERTIFICATE || a == GNUTLS_A_UNKNOWN_CA ||
                   a == GNUTLS_A_ACCESS_DENIED || a == GNUTLS_A_CERTIFICATE_UNKNOWN) {
            hint = " (it did not accept this side's certificate or identity)";
        } else if (a == GNUTLS_A_HANDSHAKE_FAILURE) {
            hint = " (do both sides use the same kind of credentials?)";
        }
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "TLS handshake failed: the %s refused it: %s%s", side,
                    gnutls_alert_get_name(a), hint);
    } else if (ret == GNUTLS_E_PREMATURE_TERMINATION || ret == GNUTLS_E_PULL_ERROR ||
               ret == GNUTLS_E_PUSH_ERROR) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                    "TLS handshake failed: the %s closed the connection "
                    "(does it use TLS? its tls-creds must be set)", side);
    } else if (ret == GNUTLS_E_UNEXPECTED_PACKET_LENGTH ||
               ret == GNUTLS_E_UNSUPPORTED_VERSION_PACKET ||
               ret == GNUTLS_E_UNEXPECTED_PACKET) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "TLS handshake failed: %s (the %s speaks plaintext: is its "
                    "tls-creds set?)", gnutls_strerror(ret), side);
    } else {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "TLS handshake failed: %s", gnutls_strerror(ret));
    }
}

/* A handshake that failed: say why, and tell the peer with an alert. */
static int handshake_fail(TlsSession *t, int ret, GError **errp)
{
    handshake_error(t, ret, errp);
    if (ret != GNUTLS_E_FATAL_ALERT_RECEIVED && ret != GNUTLS_E_PUSH_ERROR &&
        ret != GNUTLS_E_PULL_ERROR && ret != GNUTLS_E_PREMATURE_TERMINATION) {
        /* The peer learns why (a bad binder: decrypt_error). */
        gnutls_alert_send_appropriate(t->s, ret);
        drain_locked(t, false);
    }
    g_mutex_unlock(&t->lock);
    return -1;
}

int tls_session_handshake_step(TlsSession *t, short *events, GError **errp)
{
    g_mutex_lock(&t->lock);
    int ret = 0;
    if (drain_locked(t, false) < 0) {
        return handshake_fail(t, GNUTLS_E_PUSH_ERROR, errp);
    }
    if (wq_pending(t)) {
        *events = POLLOUT;
        g_mutex_unlock(&t->lock);
        return 0;
    }
    if (!t->handshaken) {
        ret = gnutls_handshake(t->s);
        if (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_INTERRUPTED) {
            ret = 0;            /* a read: push never waits */
        } else if (ret < 0) {
            return handshake_fail(t, ret, errp);
        } else {
            t->handshaken = true;
            g_autoptr(GError) err = NULL;
            if (!check_peer(t, &err)) {
                /* Tell the peer why, as far as an alert can. */
                gnutls_alert_send(t->s, GNUTLS_AL_FATAL,
                                  g_error_matches(err, G_IO_ERROR,
                                                  G_IO_ERROR_PERMISSION_DENIED)
                                  ? GNUTLS_A_ACCESS_DENIED
                                  : GNUTLS_A_BAD_CERTIFICATE);
                drain_locked(t, false);
                g_mutex_unlock(&t->lock);
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                            "TLS: %s", err->message);
                return -1;
            }
        }
    }
    if (t->handshaken && t->endpoint == TLS_ENDPOINT_SERVER && !t->verdict_sent) {
        static const uint8_t ok = TLS_VERDICT_OK;
        ret = gnutls_record_send(t->s, &ok, 1);
        if (ret != 1) {
            return handshake_fail(t, ret < 0 ? ret : GNUTLS_E_PUSH_ERROR, errp);
        }
        t->verdict_sent = true;
    }
    if (t->handshaken && t->endpoint == TLS_ENDPOINT_CLIENT && !t->verdict_read) {
        uint8_t v = 0;
        ret = gnutls_record_recv(t->s, &v, 1);
        if (ret == 1 && v == TLS_VERDICT_OK) {
            t->verdict_read = true;
        } else if (ret >= 0) {
            g_mutex_unlock(&t->lock);
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "TLS handshake failed: the destination %s",
                        ret == 0 ? "closed the connection after the handshake"
                                 : "is not ferry");
            return -1;
        } else if (ret != GNUTLS_E_AGAIN && ret != GNUTLS_E_INTERRUPTED) {
            return handshake_fail(t, ret, errp);
        }
    }
    if (drain_locked(t, false) < 0) {
        return handshake_fail(t, GNUTLS_E_PUSH_ERROR, errp);
    }
    bool done = t->handshaken && (t->verdict_sent || t->verdict_read);
    *events = wq_pending(t) ? POLLOUT : POLLIN;
    g_mutex_unlock(&t->lock);
    /* Done only once all of it went out: the client waits for the
     * verdict, which waits for its Finished. */
    return done && *events == POLLIN ? 1 : 0;
}

static int64_t now_ms(void)
{
    return g_get_monotonic_time() / 1000;
}

bool tls_session_handshake(TlsSession *t, int timeout_ms, GError **errp)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        short events = 0;
        int r = tls_session_handshake_step(t, &events, errp);
        if (r != 0) {
            return r > 0;
        }
        int64_t left = deadline - now_ms();
        struct pollfd p = { .fd = t->fd, .events = events };
        int n = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (n == 0) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                        "TLS handshake failed: no answer from the peer within "
                        "%d s", timeout_ms / 1000);
            return false;
        }
        if (n < 0 && errno != EINTR) {
            g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno),
                        "TLS handshake failed: %s", g_strerror(errno));
            return false;
        }
    }
}

char *tls_session_describe(TlsSession *t)
{
    g_mutex_lock(&t->lock);
    char *d = g_strdup_printf("%s, %s, %s",
        gnutls_protocol_get_name(gnutls_protocol_get_version(t->s)),
        gnutls_cipher_get_name(gnutls_cipher_get(t->s)),
        t->creds->kind == TLS_OBJ_PSK ? "PSK" : "x509");
    g_mutex_unlock(&t->lock);
    return d;
}

/* ---- Records ---------------------------------------------------------------------- */

/* Wait for @fd to be ready for @events; false on a poll error. */
static bool wait_fd(int fd, short events)
{
    struct pollfd p = { .fd = fd, .events = events };
    while (poll(&p, 1, -1) < 0) {
        if (errno != EINTR) {
            return false;
        }
    }
    return true;
}

/* -errno for a GnuTLS error, said on stderr in GnuTLS's words once. */
static ssize_t record_error(TlsSession *t, ssize_t ret, const char *op)
{
    if (ret == GNUTLS_E_PUSH_ERROR && t->werr) {
        return -t->werr;
    }
    if (ret == GNUTLS_E_PUSH_ERROR || ret == GNUTLS_E_PULL_ERROR) {
        int e = errno;
        return e ? -e : -EIO;
    }
    if (ret == GNUTLS_E_PREMATURE_TERMINATION) {
        return 0;               /* the peer's close: the stream's end */
    }
    const char *what = gnutls_strerror(ret);
    if (ret == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        what = gnutls_alert_get_name(gnutls_alert_get(t->s));
    }
    fprintf(stderr, "ferry: TLS: %s: %s\n", op, what);
    return -EPROTO;
}

/* A key update, asking the peer for one too if @ask_peer; the caller
 * holds wlock. */
static int key_update_locked(TlsSession *t, bool ask_peer)
{
    g_mutex_lock(&t->lock);
    int ret = drain_locked(t, true);
    if (ret == 0) {
        int g = gnutls_session_key_update(t->s, ask_peer ? GNUTLS_KU_PEER : 0);
        ret = g < 0 ? (int)record_error(t, g, "key update") : drain_locked(t, true);
        if (g < 0 && ret == 0) {
            ret = -EPROTO;
        }
    }
    g_mutex_unlock(&t->lock);
    if (ret == 0 && t->rekey_bytes) {
        fprintf(stderr, "ferry: tls: key update on fd %d\n", t->fd);
    }
    return ret;
}

ssize_t tls_session_read(TlsSession *t, void *buf, size_t len, bool nonblock)
{
    for (;;) {
        g_mutex_lock(&t->lock);
        if (t->eof) {
            g_mutex_unlock(&t->lock);
            return 0;
        }
        errno = 0;
        ssize_t n = gnutls_record_recv(t->s, buf, len);
        if (n == GNUTLS_E_REHANDSHAKE) {
            /* TLS 1.2 renegotiation: refused, the session goes on. */
            gnutls_alert_send(t->s, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION);
            n = GNUTLS_E_AGAIN;
        }
        /* What the receive queued (an alert, a key update's answer
         * when GnuTLS sends it from here) goes now if it can; else the
         * next writer sends it first. */
        drain_locked(t, false);
        bool again = n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED;
        /* After a record that is not data (a key update) GnuTLS says
         * "again" with more records read ahead: read them, the socket
         * may stay silent. */
        bool buffered = again &&
                        (t->rpos < t->rlen || gnutls_record_check_pending(t->s));
        if (n < 0 && !again) {
            n = record_error(t, n, "reading");
        }
        if (n == 0) {
            t->eof = true;
        }
        g_mutex_unlock(&t->lock);
        if (n > 0 && t->rekey_bytes && (t->since_read += n) >= t->rekey_bytes &&
            g_mutex_trylock(&t->wlock)) {
            /* The reader starts one: the peer's reader answers it while
             * the peer's writer writes.  A writer busy now (wlock), maybe
             * waiting on this side's reader, is not waited for. */
            t->since_read = 0;
            key_update_locked(t, false);
            g_mutex_unlock(&t->wlock);
        }
        if (!again) {
            return n;
        }
        if (buffered) {
            continue;
        }
        if (nonblock) {
            return -EAGAIN;
        }
        if (!wait_fd(t->fd, POLLIN)) {
            return -errno;
        }
    }
}

ssize_t tls_session_write(TlsSession *t, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    size_t done = 0;
    ssize_t ret = 0;
    g_mutex_lock(&t->wlock);
    while (done < len) {
        /* A record at a time, the lock dropped between: a reader (page
         * requests on the return path) waits at most for one. */
        g_mutex_lock(&t->lock);
        /* The queue first (the last record's rest, a key update's
         * answer): it stays at about one record. */
        ret = drain_locked(t, true);
        if (ret == 0) {
            errno = 0;
            ssize_t n = gnutls_record_send(t->s, p + done, len - done);
            if (n > 0) {
                done += n;
            } else if (n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED) {
                /* (Again: push never says so; should GnuTLS, the same
                 * call is made again.) */
                ret = record_error(t, n ? n : GNUTLS_E_PUSH_ERROR, "writing");
                ret = ret ? ret : -EPIPE;
            }
        }
        g_mutex_unlock(&t->lock);
        if (ret < 0) {
            break;
        }
    }
    if (ret == 0) {
        g_mutex_lock(&t->lock);
        ret = drain_locked(t, true);
        g_mutex_unlock(&t->lock);
    }
    if (ret == 0) {
        t->since_rekey += len;
        if (t->rekey_bytes && t->since_rekey >= t->rekey_bytes) {
            t->since_rekey = 0;
            ret = key_update_locked(t, false);
        }
    }
    g_mutex_unlock(&t->wlock);
    return ret < 0 ? ret : (ssize_t)len;
}

size_t tls_session_pending(TlsSession *t)
{
    g_mutex_lock(&t->lock);
    /* Read ahead counts: poll(2) no longer sees those bytes. */
    size_t n = gnutls_record_check_pending(t->s) + (t->rlen - t->rpos);
    g_mutex_unlock(&t->lock);
    return n;
}

int tls_session_key_update(TlsSession *t, bool ask_peer)
{
    g_mutex_lock(&t->wlock);
    int ret = key_update_locked(t, ask_peer);
    g_mutex_unlock(&t->wlock);
    return ret;
}

/* ---- Sessions by socket -------------------------------------------------------------- */

static GMutex registry_lock;
static GHashTable *registry;        /* fd -> TlsSession (a reference) */

void tls_session_attach(TlsSession *t)
{
    g_mutex_lock(&registry_lock);
    if (!registry) {
        registry = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
                                         (GDestroyNotify)tls_session_unref);
    }
    g_hash_table_replace(registry, GINT_TO_POINTER(t->fd), tls_session_ref(t));
    g_mutex_unlock(&registry_lock);
}

void tls_session_detach(int fd)
{
    g_mutex_lock(&registry_lock);
    if (registry) {
        g_hash_table_remove(registry, GINT_TO_POINTER(fd));
        if (!g_hash_table_size(registry)) {
            g_clear_pointer(&registry, g_hash_table_unref);
        }
    }
    g_mutex_unlock(&registry_lock);
}

TlsSession *tls_session_lookup(int fd)
{
    if (fd < 0) {
        return NULL;
    }
    g_mutex_lock(&registry_lock);
    TlsSession *t = registry ? g_hash_table_lookup(registry, GINT_TO_POINTER(fd))
                             : NULL;
    struct stat st;
    if (t && (fstat(fd, &st) < 0 || st.st_dev != t->dev || st.st_ino != t->ino)) {
        /* Closed without channel_close, and the number reused. */
        g_hash_table_remove(registry, GINT_TO_POINTER(fd));
        t = NULL;
    }
    if (t) {
        tls_session_ref(t);
    }
    g_mutex_unlock(&registry_lock);
    return t;
}
