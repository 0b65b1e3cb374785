"""Helpers for tests that run the relay as separate processes: free ports, the process tree, gunicorn."""
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url, proc, timeout=20):
    """Poll url until it answers 200, failing early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            if requests.get(url, timeout=0.5).status_code == 200:
                return
        except requests.RequestException:  # not bound yet, or bound while workers still boot
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not up after {timeout}s")


@contextmanager
def gunicorn(env, app="wsgi:app", *options):
    """Serve app with gunicorn.conf.py on a free port (a -b address that overrides RELAY_BIND); yield its base
    URL and process, and stop it afterwards."""
    port = free_port()
    proc = subprocess.Popen([BIN / "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", *options, app],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """The process ids whose parent is pid."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat_fields(int(stat.parent.name))[1])
        except (OSError, IndexError):  # the process ended while we looked
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> bytes:
    """The process's NUL-separated command line; empty once it has ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def is_delivery_process(pid: int) -> bool:
    """Tell whether pid is a running `flask relay worker` (gunicorn's delivery process)."""
    try:
        return b"relay\x00worker" in cmdline(pid) and stat_fields(pid)[0] != "Z"
    except OSError:  # it ended between the two reads
        return False


def delivery_processes(master: int) -> list[int]:
    """The running delivery processes gunicorn's master started."""
    return [pid for pid in children(master) if is_delivery_process(pid)]


def delivery_process(master: int, timeout: float = 20) -> int:
    """The delivery process gunicorn's master started, once it runs."""
    return wait_until(lambda: delivery_processes(master), timeout=timeout, message="gunicorn's delivery process")[0]


def gunicorn_master(proc, timeout: float = 60) -> int:
    """The gunicorn master at or under process proc (a shell or make may start it)."""
    def find():
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}")
        queue = [proc.pid]
        while queue:
            pid = queue.pop(0)
            if b"gunicorn" in cmdline(pid) and b"-c\x00gunicorn.conf.py" in cmdline(pid):
                return pid
            queue.extend(children(pid))
        return None

    return wait_until(find, timeout=timeout, message="a gunicorn master")
