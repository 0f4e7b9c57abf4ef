"""Processes that ``streamfs services`` starts: their state file, liveness, and stopping.

A managed process is remembered by a small JSON file in its service directory
(pid, the kernel's start time of that pid, address, log). The start time is what
makes ``down`` safe: a pid that was reused by an unrelated program after a reboot
has another start time, so it is never signalled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from streamfs.errors import ServiceError


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessState:
    """What ``up`` wrote about a process it started."""

    name: str
    pid: int
    start_ticks: int
    address: str
    log_file: str
    data_dir: str

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ProcessState | None:
        try:
            raw = json.loads(path.read_text())
            return cls(**raw)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise ServiceError(f"state file {path} is corrupt ({exc}); delete it") from exc


def process_start_ticks(pid: int) -> int | None:
    """Kernel start time of ``pid`` (ticks since boot); None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_ticks = fields[0], int(fields[19])
    if state in ("Z", "X"):
        return None
    return start_ticks


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is our own child, so it leaves no zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_running(state: ProcessState) -> bool:
    _reap(state.pid)
    return process_start_ticks(state.pid) == state.start_ticks


def stop(state: ProcessState, timeout_s: float = 60.0) -> bool:
    """SIGTERM the process, wait until it is gone, SIGKILL after ``timeout_s``.

    Returns False when it was not running (nothing was signalled).
    """
    if not is_running(state):
        return False
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_running(state):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while is_running(state):
        if time.monotonic() > deadline:
            raise ServiceError(f"{state.name} (pid {state.pid}) did not die even after SIGKILL")
        time.sleep(0.1)
    return True


def spawn(name: str, argv: Sequence[str], log_file: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached from our terminal (own session), output to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,  # Ctrl-C in the caller's shell must not kill it
            )
        except FileNotFoundError as exc:
            raise ServiceError(f"cannot start {name}: {argv[0]} not found") from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def log_tail(log_file: Path, lines: int = 25) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until_ready(
    name: str,
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    log_file: Path,
    timeout_s: float,
) -> None:
    """Poll ``ready`` until it holds; fail early, with the log's tail, if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            tail = log_tail(log_file)
            hint = ""
            if "address already in use" in tail.lower():
                hint = " A port it needs was taken by another program; run `up` again."
            raise ServiceError(
                f"{name} exited with code {code} while starting.{hint}\n"
                f"--- last lines of {log_file} ---\n{tail}"
            )
        if ready():
            return
        time.sleep(0.2)
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    raise ServiceError(
        f"{name} did not become ready within {timeout_s:.0f}s\n"
        f"--- last lines of {log_file} ---\n{log_tail(log_file)}"
    )
