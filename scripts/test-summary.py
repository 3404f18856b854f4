#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Count test cases across meson builds and print one closing line.

Reads BUILD/meson-logs/testlog.json for each build given, or its
BUILD/SKIPPED, a reason the whole build could not run here.  A TAP test
counts each of its cases (cmocka prints TAP); any other test counts as
one.  Prints the skipped cases with their reasons, each failed case with
the last lines of its diagnostics (CI often shows only the tail of the
log), then 'N passed, N failed, N skipped'.  Exits 1 if anything failed or if no
test ran at all.
"""
import json
import re
import sys

TAP = re.compile(r'^(not ok|ok)\b\s*\d*\s*-?\s*(.*?)(?:\s+#\s*(SKIP|TODO)\b\s*(.*))?$',
                 re.IGNORECASE)


todos = []
failures = []   # (build: name, [last diagnostic lines])
DIAG_LINES = 6


def count(build):
    passed = failed = skipped = 0
    skips = []
    global todos, failures
    try:
        # A build that cannot run here (make check-tsan's probe) says why.
        with open(f'{build}/SKIPPED') as f:
            return 0, 0, 1, [f'{build}: {f.read().strip()}']
    except OSError:
        pass
    try:
        f = open(f'{build}/meson-logs/testlog.json')
    except OSError:
        print(f'test-summary: no test log in {build}', file=sys.stderr)
        return 0, 1, 0, []
    with f:
        for line in f:
            t = json.loads(line)
            cases = 0
            cases_failed = 0
            reason = ''
            lines = (t.get('stdout') or '').splitlines()
            for k, out in enumerate(lines):
                if out.startswith('# SKIP:'):
                    reason = out[len('# SKIP:'):].strip()
                m = TAP.match(out)
                if not m:
                    continue
                cases += 1
                verdict, name, directive = m.group(1).lower(), m.group(2), m.group(3)
                if directive and directive.upper() == 'SKIP':
                    skipped += 1
                    skips.append(f'{build}: {name}: {m.group(4) or reason}')
                elif directive and directive.upper() == 'TODO' and verdict != 'ok':
                    # A known bug, reported by its case: listed, not failed.
                    todos.append(f'{build}: {name}: {m.group(4)}')
                elif verdict == 'ok':
                    passed += 1
                else:
                    failed += 1
                    cases_failed += 1
                    diag = []
                    for d in lines[k + 1:]:
                        if not d.startswith('#'):
                            break
                        diag.append(d)
                    failures.append((f'{build}: {t.get("name")}: {name}',
                                     diag[-DIAG_LINES:]))
                reason = ''
            if cases == 0:
                result = t.get('result')
                if result == 'OK':
                    passed += 1
                elif result == 'SKIP':
                    skipped += 1
                    skips.append(f"{build}: {t.get('name')}")
                else:
                    failed += 1
                    tail = [x for x in lines if x.strip()][-DIAG_LINES:]
                    failures.append((f'{build}: {t.get("name")}: '
                                     f'{result}', tail))
            elif t.get('result') not in ('OK', 'SKIP') and not cases_failed:
                # A crash or timeout after some cases printed still
                # fails; a failed case has already been counted.
                # The cause is then on stderr, or in the exit status.
                failed += 1
                tail = [x for x in lines if x.strip()][-DIAG_LINES:]
                err = [x for x in (t.get('stderr') or '').splitlines()
                       if x.strip()][-DIAG_LINES:]
                failures.append((f'{build}: {t.get("name")}: '
                                 f'{t.get("result")} after {cases} cases, '
                                 f'exit status {t.get("returncode")}',
                                 tail + [f'stderr: {x}' for x in err]))
    return passed, failed, skipped, skips


def main():
    total = [0, 0, 0]
    for build in sys.argv[1:]:
        p, f, s, skips = count(build)
        total[0] += p
        total[1] += f
        total[2] += s
        for line in skips:
            print(f'skipped: {line}')
    for line in todos:
        print(f'known bug (TODO): {line}')
    for name, diag in failures:
        print(f'FAILED: {name}')
        for d in diag:
            print(f'    {d}')
    print(f'{total[0]} passed, {total[1]} failed, {total[2]} skipped, '
          f'{len(todos)} known bugs (TODO)')
    return 1 if total[1] or total[0] == 0 else 0


if __name__ == '__main__':
    sys.exit(main())
