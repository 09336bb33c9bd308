"""The README's demo command keeps working."""

from __future__ import annotations

import socket
import subprocess
import sys

from .workers import REPO


def test_demo_counts_its_mix_of_tasks() -> None:
    """examples/demo.py --once starts a worker on the filesystem broker and reports exact counts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "examples/demo.py", "--once", "--port", str(port)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ('{"failure": 2, "rejected": 1, "retry": 1, "revoked": 0, "success": 17}'
            in result.stdout), result.stdout
