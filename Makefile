# SPDX-License-Identifier: GPL-2.0-or-later
#
# A thin layer over meson, in QEMU's habit:
#   make          install missing packages, configure, build
#   make check    ... and run every test, then the unit tests again
#                 under AddressSanitizer and UndefinedBehaviorSanitizer
#   make demo     ... and show ferry at work
#   make bench    ... and run the benchmarks, rewriting docs/benchmarks.md
BUILD     ?= build
SAN_BUILD ?= build-san
NINJA     ?= ninja
MESON     ?= meson

.PHONY: all deps build check check-build check-sanitize demo bench clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD)

$(SAN_BUILD)/build.ninja:
	$(MESON) setup $(SAN_BUILD) --native-file meson/sanitize.ini

build: deps $(BUILD)/build.ninja
	$(NINJA) -C $(BUILD)

# Both suites always run, so one failure does not hide another; the
# summary line counts every test case, and the exit status is non-zero
# if any failed.
check: build
	@rc=0; \
	$(MESON) test -C $(BUILD) --print-errorlogs || rc=1; \
	$(MAKE) --no-print-directory check-sanitize || rc=1; \
	python3 scripts/test-summary.py $(BUILD) $(SAN_BUILD) || rc=1; \
	exit $$rc

check-sanitize: deps $(SAN_BUILD)/build.ninja
	$(NINJA) -C $(SAN_BUILD)
	$(MESON) test -C $(SAN_BUILD) --suite unit --print-errorlogs

demo: build
	@scripts/demo.sh $(BUILD)

bench: build
	@scripts/install-deps.sh --bench
	$(BUILD)/bench/uffd-floor --runs 5 --doc docs/benchmarks.md
	FERRY=$(BUILD)/system/ferry GUEST=$(BUILD)/tests/guest/guest.elf \
	    python3 bench/startup.py --runs 5 --doc docs/benchmarks.md

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
