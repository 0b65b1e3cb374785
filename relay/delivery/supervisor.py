"""Keeps one child process running beside gunicorn's master: started again after it ends, stopped on request.

gunicorn.conf.py loads this file on its own (it imports nothing from the relay) to run the host's delivery process.
The child is started with posix_spawn and watched through a pidfd. subprocess.Popen waits on a pipe for the
child's exec, and a web worker the master forks meanwhile inherits that pipe and holds it open for its whole life:
Popen then never returns, and the child is never watched nor restarted. A pidfd also tells the child has ended
when the master's own reaping (waitpid(-1)) took its exit status first.
"""
import os
import select
import signal
import threading
import time

QUICK_EXIT_SECONDS = 10.0  # a child that exits by itself sooner than this is restarted after a longer pause
MAX_RESTART_DELAY = 30.0


class Supervisor:
    """Runs argv as a child process, again after each exit, until stop()."""

    def __init__(self, argv: list[str], name: str, log, restart_delay: float = 1.0):
        self.argv, self.name, self.log = argv, name, log
        self.restart_delay = restart_delay
        self.stopping = threading.Event()
        self.stop_timeout = 0.0
        self.pid = None
        self.thread = threading.Thread(target=self._run, name=f"relay-supervisor-{name}", daemon=True)

    def start(self) -> "Supervisor":
        """Start the child, and watch it from a thread of this process."""
        self.thread.start()
        return self

    def stop(self, timeout: float):
        """Stop restarting; end the child with SIGTERM, or SIGKILL once timeout seconds have passed."""
        self.stop_timeout = timeout
        self.stopping.set()
        self.thread.join(timeout + 5.0)

    def _run(self):
        delay = self.restart_delay
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                pid = os.posix_spawn(self.argv[0], self.argv, dict(os.environ))
            except OSError as exc:
                self.log.error("cannot start the %s (%s); trying again in %.0f s", self.name, exc.strerror,
                               MAX_RESTART_DELAY)
                self.stopping.wait(MAX_RESTART_DELAY)
                continue
            self.pid = pid
            ended, killed = self._watch(pid)
            if self.stopping.is_set():
                return
            quick = not killed and time.monotonic() - started < QUICK_EXIT_SECONDS  # a crash loop, not a kill
            delay = min(delay * 2, MAX_RESTART_DELAY) if quick else self.restart_delay
            self.log.error("%s %d %s; starting a new one in %g s", self.name, pid, ended, delay)
            self.stopping.wait(delay)

    def _watch(self, pid: int) -> tuple[str, bool]:
        """Wait for the child to end, ending it once stop() is called; say how it ended and if by a signal."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # it ended, and the master reaped it, before it could be watched
            return "exited", False
        kill_at = None
        try:
            while not select.select([pidfd], [], [], 0.2)[0]:
                if self.stopping.is_set() and kill_at is None:
                    signal.pidfd_send_signal(pidfd, signal.SIGTERM)  # it finishes its in-flight work
                    kill_at = time.monotonic() + self.stop_timeout
                elif kill_at is not None and time.monotonic() >= kill_at:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    kill_at = float("inf")
        finally:
            os.close(pidfd)
        return _reap(pid)


def _reap(pid: int) -> tuple[str, bool]:
    """Collect the ended child's exit status, unless the master already did; say how it ended and if by a signal."""
    try:
        found, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        found = 0
    if not found:
        return "ended (the master collected its status)", True  # assume the kinder case: no crash loop slowed
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}", True
    return f"exited with {os.waitstatus_to_exitcode(status)}", False
