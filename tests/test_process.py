"""process: the open-file limit raised at start (a child process, so ours stays as it is),
and the state directory's lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flm_gateway.state.process import StateDirInUse, StateDirLock


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    """A child process with a soft limit of 256 gets its hard limit from raise_fd_limit."""
    import subprocess
    import sys

    code = (
        "import resource; from flm_gateway.state.process import raise_fd_limit;"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1];"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard));"
        "print(*raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after, hard = map(int, out.stdout.split())
    assert before == 256 and after == min(hard, 1 << 20) and after >= 256


def test_a_second_lock_on_a_state_directory_names_the_holder(tmp_path: Path) -> None:
    """flock locks belong to the open file, so two locks in one process conflict too."""
    first, second = StateDirLock(tmp_path / "state"), StateDirLock(tmp_path / "state")
    first.acquire()
    try:
        with pytest.raises(StateDirInUse) as refused:
            second.acquire()
        state = tmp_path / "state"
        expected = f"state directory {state} is in use by flm-gateway pid {os.getpid()}"
        assert expected in str(refused.value)
    finally:
        first.release()
    config = tmp_path / "flm.yaml"
    third = StateDirLock(tmp_path / "state", config)
    third.acquire()  # released: free again
    assert (tmp_path / "state" / "gateway.lock").read_text() == f"{os.getpid()}\n{config}\n"
    third.release()
