/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Tests of system/options.c: QEMU's syntax and QEMU-shaped errors. */
#include "system/options.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define MiB (1024ULL * 1024)

static void test_sizes(void **state)
{
    (void)state;
    uint64_t v;
    assert_true(parse_size("512", MiB, &v));
    assert_int_equal(v, 512 * MiB);
    assert_true(parse_size("6G", MiB, &v));
    assert_int_equal(v, 6144 * MiB);
    assert_true(parse_size("1.5G", MiB, &v));
    assert_int_equal(v, 1536 * MiB);
    assert_true(parse_size("64k", MiB, &v));
    assert_int_equal(v, 65536);
    assert_true(parse_size("4096B", MiB, &v));
    assert_int_equal(v, 4096);
    assert_false(parse_size("", MiB, &v));
    assert_false(parse_size("-1", MiB, &v));
    assert_false(parse_size("12Q", MiB, &v));
    assert_false(parse_size("1G2", MiB, &v));
    assert_false(parse_size("99999999T", MiB, &v));
}

/* Parse "ferry" followed by the NULL-terminated arguments in @ap. */
static bool parse_va(MachineOptions *o, GError **err, va_list ap)
{
    char *argv[64] = { "ferry" };
    int argc = 1;
    for (char *a; (a = va_arg(ap, char *)); ) {
        argv[argc++] = a;
    }
    return options_parse(o, argc, argv, err);
}

static bool parse(MachineOptions *o, GError **err, ...)
{
    va_list ap;
    va_start(ap, err);
    bool ok = parse_va(o, err, ap);
    va_end(ap);
    return ok;
}

static void test_full(void **state)
{
    (void)state;
    MachineOptions o;
    g_autoptr(GError) err = NULL;
    assert_true(parse(&o, &err, "-enable-kvm", "-cpu", "host,-arch-capabilities",
                      "-m", "size=2G", "-smp", "cpus=4", "-kernel", "g.elf",
                      "-append", "verify rounds=2", "-display", "none",
                      "-serial", "file:/tmp/x", "-device",
                      "isa-debug-exit,iobase=0xf4,iosize=4", "-no-reboot",
                      "-name", "vm1", "-S", "-accel", "kvm", NULL));
    assert_int_equal(o.ram_size, 2048 * MiB);
    assert_int_equal(o.smp, 4);
    assert_string_equal(o.kernel, "g.elf");
    assert_string_equal(o.append, "verify rounds=2");
    assert_int_equal(o.serial, SERIAL_FILE);
    assert_string_equal(o.serial_path, "/tmp/x");
    assert_true(o.debug_exit);
    assert_int_equal(o.debug_exit_iobase, 0xf4);
    assert_int_equal(o.debug_exit_iosize, 4);
    assert_true(o.no_reboot);
    assert_true(o.start_paused);
    assert_string_equal(o.name, "vm1");
    options_cleanup(&o);
}

static void test_defaults(void **state)
{
    (void)state;
    MachineOptions o;
    g_autoptr(GError) err = NULL;
    assert_true(parse(&o, &err, "-kernel", "k", "-device", "isa-debug-exit",
                      "-smp", "2", NULL));
    assert_int_equal(o.ram_size, 128 * MiB);
    assert_int_equal(o.smp, 2);
    assert_int_equal(o.serial, SERIAL_STDIO);
    assert_int_equal(o.debug_exit_iobase, 0x501);
    assert_int_equal(o.debug_exit_iosize, 2);
    assert_null(o.append);
    options_cleanup(&o);
}

static void test_backends(void **state)
{
    (void)state;
    MachineOptions o;
    g_autoptr(GError) err = NULL;
    assert_true(parse(&o, &err, "-kernel", "k",
                      "-object", "memory-backend-memfd,id=a,size=1G,hugetlb=on,"
                      "hugetlbsize=2M,prealloc=on,host-nodes=0-1,policy=interleave",
                      "-object", "memory-backend-file,id=b,size=512M,mem-path=/hp,"
                      "share=off",
                      "-object", "memory-backend-ram,id=c,size=256M",
                      "-machine", "pc,accel=kvm,memory-backend=b", NULL));
    MemBackendOptions *a = options_find_backend(&o, "a");
    assert_int_equal(a->type, MEM_BACKEND_MEMFD);
    assert_true(a->share);              /* memfd: shared unless told */
    assert_true(a->hugetlb && a->prealloc);
    assert_int_equal(a->hugetlbsize, 2 * MiB);
    assert_string_equal(a->host_nodes, "0-1");
    assert_int_equal(a->policy, MEM_POLICY_INTERLEAVE);
    MemBackendOptions *b = options_find_backend(&o, "b");
    assert_int_equal(b->type, MEM_BACKEND_FILE);
    assert_false(b->share);
    assert_string_equal(b->mem_path, "/hp");
    assert_false(options_find_backend(&o, "c")->share);
    assert_null(options_find_backend(&o, "d"));
    /* The machine's RAM takes the backend's size. */
    assert_string_equal(o.memory_backend, "b");
    assert_int_equal(o.ram_size, 512 * MiB);
    options_cleanup(&o);
}

/* Parse the NULL-ended arguments in @ap, which must fail: its message. */
static char *parse_fails(va_list ap)
{
    MachineOptions o;
    g_autoptr(GError) err = NULL;
    bool ok = parse_va(&o, &err, ap);
    options_cleanup(&o);
    if (ok) {
        fail_msg("wanted an error, got success");
    }
    return g_strdup(err->message);
}

/* An error whose message starts with @msg, for the arguments after it. */
static void expect(const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    g_autofree char *got = parse_fails(ap);
    va_end(ap);
    if (!g_str_has_prefix(got, msg)) {
        fail_msg("'%s' does not start with '%s'", got, msg);
    }
}

static void test_errors(void **state)
{
    (void)state;
    expect("-foo: invalid option", "-foo", NULL);
    expect("stray: invalid option", "stray", NULL);
    expect("-m: requires an argument", "-m", NULL);
    expect("-m 1X: invalid RAM size", "-m", "1X", "-kernel", "k", NULL);
    expect("-m 1k: invalid RAM size", "-m", "1k", "-kernel", "k", NULL);
    expect("-smp 17: the number of CPUs must be 1 to 16", "-smp", "17", NULL);
    expect("-smp x: the number", "-smp", "x", NULL);
    expect("-serial pty: ", "-serial", "pty", NULL);
    expect("-display gtk: only 'none'", "-display", "gtk", NULL);
    expect("-accel tcg: only the kvm", "-accel", "tcg", NULL);
    expect("-cpu qemu64: unable to find CPU model", "-cpu", "qemu64", NULL);
    expect("-device virtio-net: 'virtio-net' is not a valid device model name",
           "-device", "virtio-net", NULL);
    expect("-device isa-debug-exit,iobase=0x10000: invalid value",
           "-device", "isa-debug-exit,iobase=0x10000", NULL);
    expect("-device isa-debug-exit,iosize=0: invalid value",
           "-device", "isa-debug-exit,iosize=0", NULL);
    expect("-kernel is required", "-m", "1G", NULL);
    expect("-object memory-backend-ram,size=1G: Parameter 'id' is missing",
           "-object", "memory-backend-ram,size=1G", NULL);
    expect("-object x,id=y: invalid object type: x", "-object", "x,id=y", NULL);
    expect("-object memory-backend-ram,id=m,size=1G,mem-path=/x: Property "
           "'memory-backend-ram.mem-path' not found", "-object",
           "memory-backend-ram,id=m,size=1G,mem-path=/x", NULL);
    expect("-object memory-backend-ram,id=m,size=1G,policy=random: invalid value",
           "-object", "memory-backend-ram,id=m,size=1G,policy=random", NULL);
    expect("Memory backend 'z' not found", "-kernel", "k", "-machine",
           "memory-backend=z", NULL);
    expect("-m 1024M does not match the size of memory-backend 'm' (512M)",
           "-kernel", "k", "-m", "1G", "-object",
           "memory-backend-ram,id=m,size=512M", "-machine", "memory-backend=m",
           NULL);
    expect("-machine virt: unsupported machine property 'virt'", "-machine",
           "virt", NULL);
}

/* An error whose message holds @words, for the arguments after it. */
static void expect_error(const char *words, ...)
{
    va_list ap;
    va_start(ap, words);
    g_autofree char *got = parse_fails(ap);
    va_end(ap);
    if (!strstr(got, words)) {
        fail_msg("wanted an error with \"%s\", got %s", words, got);
    }
}

/*
 * libvirt's command line (libvirt-observed.md 6.2): the monitor on an
 * inherited listening socket, the serial port on an fd set's fd, JSON
 * -object and -device, the master-key secret, and the options whose
 * only values ferry takes.  -mon may name a chardev defined after it.
 */
static void test_libvirt(void **state)
{
    (void)state;
    MachineOptions o;
    g_autoptr(GError) err = NULL;
    int p[2];
    assert_int_equal(pipe(p), 0);
    char key[] = "/tmp/ferry-test-key-XXXXXX";
    int kfd = mkstemp(key);
    assert_true(kfd >= 0);
    assert_int_equal(write(kfd, "k3y", 3), 3);
    close(kfd);
    g_autofree char *addfd = g_strdup_printf("set=3,fd=%d,opaque=serial0-source", p[1]);
    g_autofree char *secret = g_strdup_printf(
        "{\"qom-type\":\"secret\",\"id\":\"masterKey0\",\"format\":\"raw\","
        "\"file\":\"%s\"}", key);
    assert_true(parse(&o, &err, "-name", "guest=vm1,debug-threads=on", "-S",
                      "-object", secret,
                      "-machine", "pc-i440fx-7.2,usb=off,dump-guest-core=off,"
                      "memory-backend=pc.ram",
                      "-object", "{\"qom-type\":\"memory-backend-ram\","
                      "\"id\":\"pc.ram\",\"size\":268435456}",
                      "-overcommit", "mem-lock=off", "-smp", "1",
                      "-uuid", "6C0A3B7E-2F41-4D7A-9B35-0D1E2F3A4B5C",
                      "-mon", "chardev=charmonitor,id=monitor,mode=control",
                      "-chardev", "socket,id=charmonitor,fd=28,server=on,wait=off",
                      "-rtc", "base=utc", "-no-shutdown", "-no-acpi",
                      "-boot", "strict=on", "-kernel", "k.elf",
                      "-add-fd", addfd,
                      "-chardev", "file,id=charserial0,path=/dev/fdset/3,append=on",
                      "-device", "{\"driver\":\"isa-serial\","
                      "\"chardev\":\"charserial0\",\"id\":\"serial0\",\"index\":0}",
                      "-audiodev", "{\"id\":\"audio1\",\"driver\":\"none\"}",
                      "-msg", "timestamp=on", "-nodefaults", NULL));
    unlink(key);
    assert_string_equal(o.name, "vm1");
    assert_string_equal(o.uuid, "6c0a3b7e-2f41-4d7a-9b35-0d1e2f3a4b5c");
    assert_false(o.dump_guest_core);
    assert_true(o.no_shutdown && o.msg_timestamp && o.start_paused);
    assert_int_equal(o.ram_size, 256 * MiB);
    assert_string_equal(o.qmp[0], "fd:28,server=on,wait=off");
    assert_null(o.qmp[1]);
    assert_int_equal(o.serial, SERIAL_CHARDEV);
    assert_string_equal(o.serial_dev_id, "serial0");
    assert_int_equal(o.secrets->len, 1);
    SecretOptions *x = o.secrets->pdata[0];
    gsize n;
    assert_string_equal(x->id, "masterKey0");
    assert_memory_equal(g_bytes_get_data(x->data, &n), "k3y", 3);
    assert_int_equal(n, 3);
    /* The serial port writes to a duplicate of the set's fd. */
    int fd;
    ChardevOptions *c = chardev_find(&o.chardevs, o.serial_chardev);
    assert_true(chardev_open_output(&o.chardevs, c, &fd, &err));
    assert_int_not_equal(fd, p[1]);
    assert_int_equal(write(fd, "x", 1), 1);
    char got;
    assert_int_equal(read(p[0], &got, 1), 1);
    assert_int_equal(got, 'x');
    close(fd);
    options_cleanup(&o);        /* closes the set's fd */
    assert_int_equal(fcntl(p[1], F_GETFD), -1);
    close(p[0]);

    expect_error("chardev \"nope\" not found", "-kernel", "k",
                 "-mon", "chardev=nope,mode=control", NULL);
    expect_error("duplicate chardev: c0", "-kernel", "k",
                 "-chardev", "null,id=c0", "-chardev", "null,id=c0", NULL);
    expect_error("is in use already", "-kernel", "k",
                 "-chardev", "socket,id=c0,path=/tmp/x,server=on,wait=off",
                 "-mon", "chardev=c0,mode=control",
                 "-mon", "chardev=c0,mode=readline", NULL);
    expect_error("with server=on,wait=off", "-kernel", "k",
                 "-chardev", "socket,id=c0,path=/tmp/x", NULL);
    expect_error("fd is not valid", "-kernel", "k", "-add-fd", "set=0,fd=999", NULL);
    expect_error("ferry has one serial port", "-kernel", "k",
                 "-chardev", "null,id=a", "-chardev", "null,id=b",
                 "-device", "isa-serial,chardev=a",
                 "-device", "isa-serial,chardev=b", NULL);
    expect_error("'cpu-pm=on' is not supported", "-kernel", "k",
                 "-overcommit", "cpu-pm=on", NULL);
    expect_error("'driver=alsa' is not supported", "-kernel", "k",
                 "-audiodev", "id=a,driver=alsa", NULL);
    expect_error("not a JSON object", "-kernel", "k", "-device", "{nope", NULL);
    expect_error("'virtio-net-pci' is not a valid device model name", "-kernel", "k",
                 "-device", "{\"driver\":\"virtio-net-pci\"}", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/system/options/sizes", test_sizes, NULL, NULL, NULL },
        { "/system/options/full", test_full, NULL, NULL, NULL },
        { "/system/options/defaults", test_defaults, NULL, NULL, NULL },
        { "/system/options/backends", test_backends, NULL, NULL, NULL },
        { "/system/options/errors", test_errors, NULL, NULL, NULL },
        { "/system/options/libvirt", test_libvirt, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("options", tests, NULL, NULL);
}
