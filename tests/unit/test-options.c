/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Tests of system/options.c: QEMU's syntax and QEMU-shaped errors. */
#include "system/options.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

static bool parse(MachineOptions *o, GError **err, ...)
{
    char *argv[32] = { "ferry" };
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)); ) {
        argv[argc++] = a;
    }
    va_end(ap);
    return options_parse(o, argc, argv, err);
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

static void expect(const char *msg, ...)
{
    char *argv[32] = { "ferry" };
    int argc = 1;
    va_list ap;
    va_start(ap, msg);
    for (char *a; (a = va_arg(ap, char *)); ) {
        argv[argc++] = a;
    }
    va_end(ap);
    MachineOptions o;
    g_autoptr(GError) err = NULL;
    assert_false(options_parse(&o, argc, argv, &err));
    assert_non_null(err);
    if (!g_str_has_prefix(err->message, msg)) {
        fail_msg("'%s' does not start with '%s'", err->message, msg);
    }
    options_cleanup(&o);
}

static void test_errors(void **state)
{
    (void)state;
    expect("-foo: invalid option", "-foo", NULL);
    expect("stray: invalid option", "stray", NULL);
    expect("-m: requires an argument", "-m", NULL);
    expect("-m 1X: invalid RAM size", "-m", "1X", "-kernel", "k", NULL);
    expect("-m 1k: invalid RAM size", "-m", "1k", "-kernel", "k", NULL);
    expect("-smp 9: the number of CPUs must be 1 to 8", "-smp", "9", NULL);
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
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/system/options/sizes", test_sizes, NULL, NULL, NULL },
        { "/system/options/full", test_full, NULL, NULL, NULL },
        { "/system/options/defaults", test_defaults, NULL, NULL, NULL },
        { "/system/options/errors", test_errors, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("options", tests, NULL, NULL);
}
