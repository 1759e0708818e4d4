"""CPU accounting off /proc: a process tree's members and their CPU seconds."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

from services.bench.measure import cpu_seconds, descendants, open_files, tree_cpu_seconds


def test_a_tree_holds_the_children_and_their_children() -> None:
    code = "import subprocess; subprocess.run(['sleep', '30'])"
    with subprocess.Popen([sys.executable, "-c", code], start_new_session=True) as child:
        try:
            deadline = time.monotonic() + 10
            while not descendants(child.pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # until the grandchild has been started
            assert child.pid in descendants(os.getpid())
            assert len(descendants(child.pid)) == 1
            assert tree_cpu_seconds(os.getpid()) >= cpu_seconds(os.getpid())
        finally:
            os.killpg(child.pid, signal.SIGKILL)  # the grandchild too


def test_a_gone_process_has_no_tree() -> None:
    assert descendants(2**22 + 1) == []
    assert tree_cpu_seconds(2**22 + 1) == 0.0


def test_open_files_are_those_of_the_launched_process_with_its_limit() -> None:
    """A launcher script's child holds the files (Kafka's JVM): that one is counted."""
    code = "import time; files = [open('/dev/null') for _ in range(50)]; time.sleep(30)"
    launcher = f'exec 3</dev/null; {sys.executable} -c "{code}"; exit 0'
    with subprocess.Popen(["bash", "-c", launcher], start_new_session=True) as shell:
        try:
            deadline = time.monotonic() + 10
            while open_files(shell.pid)[0] < 50 and time.monotonic() < deadline:
                time.sleep(0.05)
            count, limit = open_files(shell.pid)
            assert count >= 53  # its 50, stdin/out/err
            assert limit == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        finally:
            os.killpg(shell.pid, signal.SIGKILL)
    assert open_files(2**22 + 1) == (0, None)
