/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target for the migration stream loader:
 *   meson setup build-fuzz -Dfuzzing=true (CC=clang), then
 *   build-fuzz/tests/fuzz/fuzz-stream tests/fuzz/corpus
 */
#include "stream-harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    harness_load(data, size, NULL);
    return 0;
}
