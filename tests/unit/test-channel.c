/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * migration/channel.c's socket tuning for channels that did not come
 * from channel_connect: an accepted TCP connection gets TCP_NODELAY
 * (without it a page request waits for a delayed ACK, up to 40 ms), a
 * unix socket big buffers, a pipe nothing; keep-alive on TCP channels.
 * And util/thread-prio.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <glib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "migration/channel.h"
#include "qemu/thread-prio.h"

static int opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof(v);
    assert_int_equal(getsockopt(fd, level, name, &v, &l), 0);
    return v;
}

static void test_tune_tcp(void **state)
{
    (void)state;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof(a);
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(ls, 1), 0);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &al), 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    int s = accept(ls, NULL, NULL);
    assert_true(s >= 0);
    assert_int_equal(opt(s, IPPROTO_TCP, TCP_NODELAY), 0);
    int before = opt(s, SOL_SOCKET, SO_SNDBUF);
    channel_tune(s);
    assert_int_not_equal(opt(s, IPPROTO_TCP, TCP_NODELAY), 0);
    /* The kernel doubles the value and caps it at wmem_max. */
    assert_true(opt(s, SOL_SOCKET, SO_SNDBUF) >= before);
    close(s);
    close(c);
    close(ls);
}

static void test_tune_other(void **state)
{
    (void)state;
    int sv[2], p[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    channel_tune(sv[0]);            /* no TCP option on a unix socket */
    assert_true(opt(sv[0], SOL_SOCKET, SO_SNDBUF) > 0);
    assert_int_equal(pipe(p), 0);
    channel_tune(p[0]);             /* not a socket: left alone */
    assert_int_equal(write(p[1], "x", 1), 1);
    char c;
    assert_int_equal(read(p[0], &c, 1), 1);
    close(sv[0]);
    close(sv[1]);
    close(p[0]);
    close(p[1]);
}

static void *fifo_thread(void *opaque)
{
    int *res = opaque;
    res[0] = thread_set_fifo(1);
    res[1] = sched_getscheduler(0);
    res[2] = thread_set_normal();
    res[3] = sched_getscheduler(0);
    return NULL;
}

static void test_fifo(void **state)
{
    (void)state;
    int res[4];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fifo_thread, res), 0);
    pthread_join(t, NULL);
    if (res[0] == -EPERM) {
        print_message("# SKIP: no privilege for SCHED_FIFO here\n");
        skip();
    }
    assert_int_equal(res[0], 0);
    assert_int_equal(res[1], SCHED_FIFO);
    assert_int_equal(res[2], 0);
    assert_int_equal(res[3], SCHED_OTHER);
    /* Only the thread that asked changed class. */
    assert_int_equal(sched_getscheduler(0), SCHED_OTHER);
    assert_int_equal(thread_set_fifo(0), -EINVAL);     /* FIFO needs 1-99 */
}

static void *probe_thread(void *opaque)
{
    int *res = opaque;
    res[0] = nice(3) < 0 ? -1 : 0;
    res[1] = thread_probe_fifo(1);
    res[2] = sched_getscheduler(0);
    res[3] = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
    res[4] = thread_probe_fifo(0);
    res[5] = thread_set_fifo(1);
    thread_set_normal();
    return NULL;
}

/* The probe tells what thread_set_fifo would say, and changes nothing. */
static void test_probe_fifo(void **state)
{
    (void)state;
    int res[6];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, probe_thread, res), 0);
    pthread_join(t, NULL);
    assert_int_equal(res[0], 0);
    assert_int_equal(res[1], res[5]);
    assert_int_equal(res[2], SCHED_OTHER);
    assert_int_equal(res[3], getpriority(PRIO_PROCESS, 0) + 3);
    assert_int_equal(res[4], -EINVAL);
}

/*
 * Keep-alive on both ends of a TCP channel: ferry's defaults from
 * channel_connect and on what a listener accepts, a URI's options over
 * them, keep-alive=off leaving the kernel's, QEMU's errors for bad ones.
 */
static void keepalive_pair(const char *opts, int *c, int *s)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonArray) addr = NULL;
    g_autofree char *luri = g_strdup_printf("tcp:127.0.0.1:0%s", opts);
    int ls = channel_listen(luri, &addr, &err);
    assert_true(ls >= 0);
    JsonObject *a = json_array_get_object_element(addr, 0);
    g_autofree char *curi = g_strdup_printf(
        "tcp:127.0.0.1:%s%s", json_object_get_string_member(a, "port"), opts);
    *c = channel_connect(curi, &err);
    assert_true(*c >= 0);
    *s = accept(ls, NULL, NULL);
    assert_true(*s >= 0);
    close(ls);
}

static void test_keepalive(void **state)
{
    (void)state;
    int c, s;
    keepalive_pair("", &c, &s);
    for (int fd = c; fd >= 0; fd = fd == c ? s : -1) {
        assert_int_equal(opt(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
        assert_int_equal(opt(fd, IPPROTO_TCP, TCP_KEEPIDLE),
                         CHANNEL_KEEPALIVE_IDLE_S);
        assert_int_equal(opt(fd, IPPROTO_TCP, TCP_KEEPINTVL),
                         CHANNEL_KEEPALIVE_INTERVAL_S);
        assert_int_equal(opt(fd, IPPROTO_TCP, TCP_KEEPCNT),
                         CHANNEL_KEEPALIVE_COUNT);
        assert_int_equal(opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT),
                         (CHANNEL_KEEPALIVE_IDLE_S + CHANNEL_KEEPALIVE_INTERVAL_S *
                          CHANNEL_KEEPALIVE_COUNT) * 1000);
    }
    close(c), close(s);

    keepalive_pair(",keep-alive=on,keep-alive-count=5,keep-alive-idle=7,"
                   "keep-alive-interval=2", &c, &s);
    for (int fd = c; fd >= 0; fd = fd == c ? s : -1) {
        assert_int_equal(opt(fd, IPPROTO_TCP, TCP_KEEPCNT), 5);
        assert_int_equal(opt(fd, IPPROTO_TCP, TCP_KEEPIDLE), 7);
        assert_int_equal(opt(fd, IPPROTO_TCP, TCP_KEEPINTVL), 2);
        assert_int_equal(opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 17000);
    }
    close(c), close(s);

    keepalive_pair(",keep-alive=off", &c, &s);
    assert_int_equal(opt(c, SOL_SOCKET, SO_KEEPALIVE), 0);
    assert_int_equal(opt(s, SOL_SOCKET, SO_KEEPALIVE), 0);
    assert_int_equal(opt(c, IPPROTO_TCP, TCP_USER_TIMEOUT), 0);
    close(c), close(s);

    static const struct { const char *uri, *msg; } bad[] = {
        { "tcp:127.0.0.1:1,keep-alive-count=x",
          "error parsing keep-alive-count argument" },
        { "tcp:127.0.0.1:1,keep-alive-idle=4294967296",
          "keep-alive-idle is too large" },
        { "tcp:127.0.0.1:1,keep-alive=maybe", "error parsing keep-alive argument" },
        { "tcp:127.0.0.1:1,nodelay=on", "Invalid parameter 'nodelay'" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) err = NULL;
        assert_int_equal(channel_connect(bad[i].uri, &err), -1);
        assert_string_equal(err->message, bad[i].msg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/migration/channel/tune-tcp", test_tune_tcp, NULL, NULL, NULL },
        { "/migration/channel/tune-other", test_tune_other, NULL, NULL, NULL },
        { "/migration/channel/keepalive", test_keepalive, NULL, NULL, NULL },
        { "/util/thread-prio/fifo", test_fifo, NULL, NULL, NULL },
        { "/util/thread-prio/probe-fifo", test_probe_fifo, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("channel", tests, NULL, NULL);
}
