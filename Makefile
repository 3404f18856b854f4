# SPDX-License-Identifier: GPL-2.0-or-later
#
# A thin layer over meson, in QEMU's habit:
#   make          install missing packages, configure, build
#   make check    ... and run every test, then the unit tests and some
#                 functional cases again under AddressSanitizer and
#                 UndefinedBehaviorSanitizer, and under ThreadSanitizer
#   make demo     ... and show ferry at work
#   make bench    ... and run the benchmarks, rewriting docs/benchmarks.md
#   make fuzz     libFuzzer on the migration stream loader (clang)
BUILD     ?= build
SAN_BUILD ?= build-san
TSAN_BUILD ?= build-tsan
NINJA     ?= ninja
MESON     ?= meson

.PHONY: all deps build check check-build check-sanitize check-tsan demo bench fuzz clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD)

$(SAN_BUILD)/build.ninja:
	$(MESON) setup $(SAN_BUILD) --native-file meson/sanitize.ini

$(TSAN_BUILD)/build.ninja:
	$(MESON) setup $(TSAN_BUILD) --native-file meson/tsan.ini

build: deps $(BUILD)/build.ninja
	$(NINJA) -C $(BUILD)

# Every suite always runs, so one failure does not hide another; the
# summary line counts every test case, and the exit status is non-zero
# if any failed.  The sanitizer builds compile niced while the first
# suite runs, whose cases leave the CPUs idle much of the time (paced
# guests, waits on peers); a build that fails there fails again, with
# its errors, in check-sanitize or check-tsan.
check: build $(SAN_BUILD)/build.ninja $(TSAN_BUILD)/build.ninja
	@rc=0; \
	( nice -n 19 $(NINJA) -C $(SAN_BUILD) && nice -n 19 $(NINJA) -C $(TSAN_BUILD) ) \
	    >$(BUILD)/meson-logs/sanitizer-builds.txt 2>&1 & builds=$$!; \
	$(MESON) test -C $(BUILD) --print-errorlogs || rc=1; \
	wait $$builds || true; \
	$(MAKE) --no-print-directory check-sanitize || rc=1; \
	$(MAKE) --no-print-directory check-tsan || rc=1; \
	python3 scripts/test-summary.py $(BUILD) $(SAN_BUILD) $(TSAN_BUILD) || rc=1; \
	exit $$rc

# The unit tests and some functional cases (meson option sanitized_cases)
# under AddressSanitizer, LeakSanitizer and UBSan.
check-sanitize: deps $(SAN_BUILD)/build.ninja
	$(NINJA) -C $(SAN_BUILD)
	$(MESON) test -C $(SAN_BUILD) --suite unit --suite functional-sanitized \
	    --print-errorlogs

# The same under ThreadSanitizer, where it can run on this host (its
# runtime refuses some kernels' address-space layouts): if a probe
# fails, the reason is the build's one skipped case.
check-tsan: deps $(TSAN_BUILD)/build.ninja
	$(NINJA) -C $(TSAN_BUILD)
	@rm -f $(TSAN_BUILD)/SKIPPED; \
	if ! out=$$($(TSAN_BUILD)/tests/unit/test-bitmap 2>&1); then \
	    echo "ThreadSanitizer cannot run here: $$(echo "$$out" | grep -m1 -i sanitizer)" \
	        | tee $(TSAN_BUILD)/SKIPPED; \
	else \
	    $(MESON) test -C $(TSAN_BUILD) --suite unit --suite functional-sanitized \
	        --print-errorlogs; \
	fi

demo: build
	@scripts/demo.sh $(BUILD)

bench: build
	@scripts/install-deps.sh --bench
	$(BUILD)/bench/uffd-floor --runs 5 --doc docs/benchmarks.md
	FERRY=$(BUILD)/system/ferry GUEST=$(BUILD)/tests/guest/guest.elf \
	    python3 bench/startup.py --runs 5 --doc docs/benchmarks.md
	FERRY=$(BUILD)/system/ferry GUEST=$(BUILD)/tests/guest/guest.elf \
	    python3 bench/migration.py --runs 5 --doc docs/benchmarks.md
	FERRY=$(BUILD)/system/ferry GUEST=$(BUILD)/tests/guest/guest.elf \
	    python3 bench/postcopy.py --runs 5 --doc docs/benchmarks.md \
	    --plot docs/postcopy-stalls.png
	FERRY=$(BUILD)/system/ferry GUEST=$(BUILD)/tests/guest/guest.elf \
	    python3 bench/snapshot.py --runs 3 --doc docs/benchmarks.md \
	    --plot docs/snapshot-stalls.png
	FERRY=$(BUILD)/system/ferry GUEST=$(BUILD)/tests/guest/guest.elf \
	    python3 bench/autoswitch.py --runs 3 --doc docs/benchmarks.md
	$(BUILD)/bench/uffd-scale --runs 3 --doc docs/benchmarks.md
	FERRY=$(BUILD)/system/ferry GUEST=$(BUILD)/tests/guest/guest.elf \
	    python3 bench/fault-scale.py --runs 3 --doc docs/benchmarks.md
	FERRY=$(BUILD)/system/ferry GUEST=$(BUILD)/tests/guest/guest.elf \
	    python3 bench/working-set.py --runs 3 --doc docs/benchmarks.md

# libFuzzer on the migration stream loader (clang), from the seed corpus.
FUZZ_BUILD ?= build-fuzz
FUZZ_TIME  ?= 60
fuzz:
	@scripts/install-deps.sh --fuzz
	test -f $(FUZZ_BUILD)/build.ninja || CC=clang $(MESON) setup $(FUZZ_BUILD) -Dfuzzing=true -Dtests=disabled
	$(NINJA) -C $(FUZZ_BUILD) tests/fuzz/fuzz-stream
	mkdir -p $(FUZZ_BUILD)/corpus && cp -n tests/fuzz/corpus/* $(FUZZ_BUILD)/corpus/
	ASAN_OPTIONS=detect_leaks=0 $(FUZZ_BUILD)/tests/fuzz/fuzz-stream \
	    -max_total_time=$(FUZZ_TIME) -rss_limit_mb=4096 $(FUZZ_BUILD)/corpus

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
