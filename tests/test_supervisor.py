"""The supervisor of gunicorn's delivery process, on its own: it sees every exit, whatever the master forks."""
import logging
import os
import signal
import sys
import threading
import time

from relay.delivery.supervisor import Supervisor
from tests.helpers import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


class ForkingMaster:
    """What gunicorn's master does beside the supervisor's thread: fork workers, reap every child (waitpid(-1))."""

    def __init__(self):
        self.workers = set()
        self.forks = 0

    def run(self, seconds: float):
        """Fork workers for a while, reaping whatever child ended."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pid = os.fork()
            if pid == 0:  # a "worker": it lives on, holding whatever it inherited, until stop()
                time.sleep(60)
                os._exit(0)
            self.forks += 1
            self.workers.add(pid)
            self.reap()
            time.sleep(0.002)

    def stop(self):
        """End the workers and wait for them."""
        for pid in self.workers:
            os.kill(pid, signal.SIGKILL)
        while self.workers:
            self.reap()
            time.sleep(0.01)

    def reap(self):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            self.workers.discard(pid)


def test_every_exit_is_seen_while_the_master_forks_and_reaps(caplog):
    supervisor = Supervisor(SLEEPER, "sleeper", logging.getLogger("test.supervisor"), restart_delay=0.01)
    master = ForkingMaster()
    killer_done = []

    def kill_repeatedly():
        for _ in range(15):
            current = wait_until(lambda: supervisor.pid, timeout=5, message="a child")
            time.sleep(0.05)
            os.kill(current, signal.SIGKILL)
            wait_until(lambda: supervisor.pid != current, timeout=5, message=f"a child in place of {current}")
        killer_done.append(True)

    with caplog.at_level(logging.ERROR, logger="test.supervisor"):
        supervisor.start()
        killer = threading.Thread(target=kill_repeatedly, daemon=True)
        killer.start()
        try:
            while killer.is_alive():
                master.run(seconds=0.5)
        finally:
            master.stop()
        supervisor.stop(timeout=5)
    assert killer_done, "a killed child was not replaced"
    assert master.forks > 30  # the master forked all along, not once or twice
    restarts = [r.getMessage() for r in caplog.records if "starting a new one" in r.getMessage()]
    assert len(restarts) == 15, restarts


def test_stop_ends_the_child_with_sigterm_then_sigkill():
    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(600)"]
    supervisor = Supervisor(stubborn, "stubborn", logging.getLogger("test.supervisor")).start()
    pid = wait_until(lambda: supervisor.pid, timeout=5, message="a child")
    time.sleep(0.5)  # it has set SIGTERM aside
    started = time.monotonic()
    supervisor.stop(timeout=1.0)
    assert 1.0 <= time.monotonic() - started < 4.0
    assert not supervisor.thread.is_alive()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z"


def test_a_child_that_keeps_failing_is_restarted_ever_more_slowly(caplog):
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    supervisor = Supervisor(failing, "failing", logging.getLogger("test.supervisor"), restart_delay=0.05)
    with caplog.at_level(logging.ERROR, logger="test.supervisor"):
        supervisor.start()
        wait_until(lambda: len(caplog.records) >= 3, timeout=10, message="three restarts")
        supervisor.stop(timeout=1)
    messages = [r.getMessage() for r in caplog.records]
    assert "exited with 3; starting a new one in 0.1 s" in messages[0], messages
    assert "exited with 3; starting a new one in 0.2 s" in messages[1], messages
    assert "exited with 3; starting a new one in 0.4 s" in messages[2], messages
