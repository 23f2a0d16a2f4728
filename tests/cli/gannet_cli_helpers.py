"""Helpers shared by the CLI tests (not a test module)."""

import subprocess


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server started by a test, killing it if it does not go."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
