"""devtools.waiting (the tests wait for conditions, not on fixed timers) and devtools.skip_report (what `make test`
prints about tests skipped for want of Debian packages)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from devtools.skip_report import SYSTEM_DEPS_COMMAND, main, read_log, report_lines
from devtools.waiting import WaitTimeout, wait_until, wait_until_async
from pipeline.sinks import any_listening
from services.broker import free_port


def test_wait_until_returns_the_first_truthy_value_of_the_condition():
    calls = []

    def cond():
        calls.append(1)
        return len(calls) >= 3 and ["ready"]

    assert wait_until(cond, 5, "three calls", poll_s=0.01) == ["ready"]
    assert len(calls) == 3


def test_wait_until_fails_naming_what_it_waited_for():
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 0.2 s waiting for the answer \(last error: OSError: no"):
        wait_until(lambda: (_ for _ in ()).throw(OSError("no")), 0.2, "the answer", poll_s=0.05, ignore=(OSError,))
    assert time.monotonic() - t0 < 2
    with pytest.raises(WaitTimeout, match="waiting for state 7"):
        wait_until(lambda: False, 0.05, lambda: "state 7", poll_s=0.01)
    with pytest.raises(ValueError, match="boom"):  # an exception not ignored ends the wait at once
        wait_until(lambda: (_ for _ in ()).throw(ValueError("boom")), 5, "never")


def test_wait_until_async_lets_the_loop_run():
    async def main():
        box = []
        asyncio.get_running_loop().call_later(0.05, box.append, 1)
        await wait_until_async(lambda: box, 5, "the callback", poll_s=0.01)
        with pytest.raises(WaitTimeout, match="waiting for nothing"):
            await wait_until_async(lambda: False, 0.05, "nothing", poll_s=0.01)
        return box

    assert asyncio.run(main()) == [1]


def test_a_port_is_open_once_a_server_listens():  # what the multi-node scenario waits for
    import socket

    port = free_port()
    assert not any_listening(f"127.0.0.1:{port}")
    with socket.create_server(("127.0.0.1", port)):
        assert any_listening(f"127.0.0.1:{port}")


def test_skip_report_names_the_tests_and_the_one_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert report_lines([]) == []
    log = tmp_path / "skips"
    log.write_text("tests/a.py::t1\tneeds chromium (scripts/install-system-deps.sh)\n"
                   "tests/b.py::t2\tneeds chromium (scripts/install-system-deps.sh)\n"
                   "tests/c.py::t3\tneeds gi: run `sudo bash scripts/install-system-deps.sh`\n")
    assert len(read_log(log)) == 3
    main(["skip_report", str(log)])
    out = capsys.readouterr().out.splitlines()
    assert "  tests/a.py::t1" in out
    assert "  tests/c.py::t3" in out
    assert out[-1].endswith(f"enable them with: {SYSTEM_DEPS_COMMAND}")
    assert out[-1].startswith("3 test(s) skipped")
    main(["skip_report", str(tmp_path / "absent")])
    assert capsys.readouterr().out == ""
