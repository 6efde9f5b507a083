"""process: the open-file limit raised at start (a child process, so ours stays as it is)."""

from __future__ import annotations


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    """A child process with a soft limit of 256 gets its hard limit from raise_fd_limit."""
    import subprocess
    import sys

    code = (
        "import resource; from flm_gateway.process import raise_fd_limit;"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1];"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard));"
        "print(*raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after, hard = map(int, out.stdout.split())
    assert before == 256 and after == min(hard, 1 << 20) and after >= 256
