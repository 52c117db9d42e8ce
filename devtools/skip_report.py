"""The tests skipped for want of Debian packages, and the one command that installs them: printed at the end of a
pytest run by tests/conftest.py, and at the end of `make test` (two pytest runs) by ``python -m devtools.skip_report``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

SYSTEM_DEPS_SCRIPT = "scripts/install-system-deps.sh"  # a skip reason that names it: a Debian package is missing
SYSTEM_DEPS_COMMAND = f"sudo bash {SYSTEM_DEPS_SCRIPT}"
HEADER = "skipped: Debian packages missing"


def needs_system_deps(reason: str) -> bool:
    return SYSTEM_DEPS_SCRIPT in reason


def report_lines(skipped: Iterable[tuple[str, str]]) -> list[str]:
    """``(test id, skip reason)`` pairs -> the lines to print: the tests by reason, then the command (none if the
    list is empty)."""
    by_reason: dict[str, list[str]] = {}
    for nodeid, reason in skipped:
        by_reason.setdefault(reason, []).append(nodeid)
    if not by_reason:
        return []
    lines = []
    for reason, nodeids in by_reason.items():
        lines.append(f"{reason}:")
        lines += [f"  {n}" for n in nodeids]
    n = sum(map(len, by_reason.values()))
    lines.append(f"{n} test(s) skipped because Debian packages are missing; enable them with: {SYSTEM_DEPS_COMMAND}")
    return lines


def read_log(path: Path) -> list[tuple[str, str]]:
    """The ``test id<TAB>reason`` lines that tests/conftest.py appends to ``$MASKWATCH_SKIP_LOG``."""
    if not path.is_file():
        return []
    return [tuple(line.split("\t", 1)) for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line]  # type: ignore[misc]


def main(argv: list[str]) -> int:
    lines = report_lines(read_log(Path(argv[1])))
    if lines:
        print(f"{'=' * 20} {HEADER} {'=' * 20}")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
