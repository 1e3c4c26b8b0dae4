"""Where a cold start's compile time goes: run a ``fastnn`` command in this process and time
every Numba compile (CPU seconds, per function, its callees' compiles subtracted).

    NUMBA_CACHE_DIR=$(mktemp -d) FASTNN_CACHE_DIR=$(mktemp -d) python benchmarks/compile_profile.py demo --verbose 0

Run it with empty caches (as above), else nothing compiles. Prints the process's CPU time, the
number of compiles and, per function, its exclusive compile CPU seconds and how many times it
compiled (literal and dtype specialisations count once each); ``--json FILE`` keeps every event.
"""

import json
import sys
import time
from collections import defaultdict

from numba.core import event

_stack: list = []  # [name, start cpu, callees' cpu, signature] of the compiles in progress
_events: list = []  # (name, inclusive s, exclusive s, signature)


class _Timer(event.Listener):
    def on_start(self, ev):
        py_func = ev.data["dispatcher"].py_func
        name = f"{py_func.__module__}.{py_func.__qualname__}"
        _stack.append([name, time.process_time(), 0.0, str(ev.data.get("args"))])

    def on_end(self, ev):
        name, start, callees, signature = _stack.pop()
        inclusive = time.process_time() - start
        if _stack:
            _stack[-1][2] += inclusive
        _events.append((name, inclusive, inclusive - callees, signature))


def main(argv: list[str]) -> int:
    out = None
    if "--json" in argv:
        i = argv.index("--json")
        out, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    event.register("numba:compile", _Timer())
    start = time.process_time()
    from fastnn.cli import main as fastnn_main

    rc = fastnn_main(argv or ["demo", "--verbose", "0"])
    total = time.process_time() - start
    per_function: dict = defaultdict(lambda: [0, 0.0])
    for name, _, exclusive, _ in _events:
        per_function[name][0] += 1
        per_function[name][1] += exclusive
    compile_s = sum(exclusive for _, _, exclusive, _ in _events)
    print(
        f"process CPU {total:.1f} s (after interpreter start); {len(_events)} compiles of "
        f"{len(per_function)} functions, {compile_s:.1f} s CPU",
        file=sys.stderr,
    )
    for name, (count, seconds) in sorted(per_function.items(), key=lambda item: -item[1][1]):
        print(f"{seconds:7.2f} s {count:3d}x {name}", file=sys.stderr)
    if out:
        with open(out, "w") as handle:
            json.dump(_events, handle)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
