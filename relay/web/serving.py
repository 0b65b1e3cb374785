"""gunicorn's web worker for the relay: requests are read whole, without waiting, before any is handled.

gunicorn's sync worker reads a request while the client sends it, so two slow clients stop a two-worker relay;
its threaded worker hands every request between threads, which cost the relay much of its intake
(bench/README.md). This worker keeps gunicorn's sync handling and replaces its accept loop: one selector reads
every connection's bytes as they come, a request is handled (in this, the worker's only thread) once it has
arrived whole, and a connection whose request has not arrived within RELAY_REQUEST_DEADLINE_SECONDS is closed.
The create-incident job's requests wait for PagerDuty's answer, so they are handled by a few threads beside the
loop (RELAY_THREADS), never in it.
gunicorn.conf.py loads this file on its own (it imports nothing from the relay).
"""
import errno
import logging
import os
import re
import selectors
import time
from concurrent.futures import ThreadPoolExecutor

from gunicorn import util
from gunicorn.workers.sync import SyncWorker

log = logging.getLogger("relay.web.serving")  # by name: loaded on its own, its __name__ is not its module's

HEAD_END = b"\r\n\r\n"
CHUNKED_END = b"0\r\n\r\n"
READ_SIZE = 65536
BODY_LIMIT_FALLBACK = 16 * 1024 * 1024  # an app without MAX_CONTENT_LENGTH: buffer no more than this
WAITING_PATHS = (b"POST /api/v1/incidents",)  # the job's endpoints: they wait for PagerDuty's answer
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*(?=\r\n)", re.I)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.I)
_EXPECT_CONTINUE = re.compile(rb"\r\nexpect:[ \t]*100-continue[ \t]*(?=\r\n)", re.I)


class ArrivedRequest:
    """A client socket whose request has arrived whole: reads come from what arrived, and then end."""

    def __init__(self, sock, data: bytes):
        self._sock, self._data = sock, data

    def recv(self, size, *flags):
        """Return the next bytes of the request; b"" once it is all read (as after the client's FIN)."""
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk

    def recv_into(self, buffer, size=0, *flags):
        """Read the next bytes of the request into buffer."""
        chunk = self.recv(size or len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class Arriving:
    """A connection whose request is still arriving."""

    def __init__(self, sock, addr, listener, deadline: float):
        self.sock, self.addr, self.listener, self.deadline = sock, addr, listener, deadline
        self.data = bytearray()
        self.continued = False

    def complete(self, body_limit: int) -> bool:
        """Tell whether the request has arrived whole (or is too large to wait for: the app refuses it)."""
        head = self.head()
        if not head:
            return False
        body = len(self.data) - len(head) - 2  # the head keeps its last line's CRLF, not the blank line's
        length = _CONTENT_LENGTH.search(head)
        if _CHUNKED.search(head):
            return self.data.endswith(b"\r\n" + CHUNKED_END) or self.data.endswith(HEAD_END + CHUNKED_END) \
                or body > body_limit
        return length is None or body >= int(length[1]) or int(length[1]) > body_limit

    def head(self) -> bytes:
        """The request's head, once it has arrived (empty before)."""
        end = self.data.find(HEAD_END)
        return bytes(self.data[:end + 2]) if end >= 0 else b""


class ArrivedRequestWorker(SyncWorker):
    """gunicorn's sync worker, fed only requests that have arrived whole."""

    request_deadline = 10.0  # set by gunicorn.conf.py
    threads = 4  # for the requests that wait (WAITING_PATHS); set by gunicorn.conf.py

    def run(self):
        """Read every connection as its bytes come; handle each request once it is whole. Served over TLS
        (gunicorn's --certfile), gunicorn's own sync loop runs instead: the selector reads raw bytes, which a TLS
        handshake needs answered first (a TLS proxy in front keeps this worker's protection from slow clients)."""
        if self.cfg.is_ssl:
            return super().run()
        self.selector = selectors.DefaultSelector()
        for listener in self.sockets:
            listener.setblocking(False)
            self.selector.register(listener, selectors.EVENT_READ, listener)
        self.selector.register(self.PIPE[0], selectors.EVENT_READ, None)
        self.arriving: dict[int, Arriving] = {}
        self.waiting = ThreadPoolExecutor(self.threads, thread_name_prefix="relay-waiting")
        config = getattr(self.wsgi, "config", {})
        self.body_limit = config.get("MAX_CONTENT_LENGTH") or BODY_LIMIT_FALLBACK
        try:
            while self.alive and self.is_parent_alive():
                self._turn()
            self._finish_accepted()
        finally:
            self.waiting.shutdown(wait=True)  # the waiting requests finish, as a sync worker's request would
            for arriving in list(self.arriving.values()):
                self._forget(arriving)
                arriving.sock.close()

    def _turn(self):
        """Read what has come, handle each request now whole, take new connections while alive, close late ones."""
        self.notify()
        for key, _ in self.selector.select(self._next_timeout()):
            if key.data is None:
                self._drain_wakeups()
            elif isinstance(key.data, Arriving):
                self._read(key.data)
            elif self.alive:
                self._accept(key.data)
        self._close_late()

    def _finish_accepted(self):
        """Before leaving (max_requests, a graceful stop), answer the connections already taken: their clients sent
        to this worker, and would see their connection closed unanswered; new ones go to the other workers."""
        for listener in self.sockets:
            self.selector.unregister(listener)
        give_up = time.monotonic() + self.cfg.graceful_timeout
        while self.arriving and time.monotonic() < give_up and self.is_parent_alive():
            self._turn()

    def _next_timeout(self) -> float:
        soonest = min((a.deadline for a in self.arriving.values()), default=None)
        wait = self.timeout / 2 if self.timeout else 0.5
        return max(0.0, min(wait, soonest - time.monotonic())) if soonest is not None else wait

    def _accept(self, listener):
        while len(self.arriving) < self.cfg.worker_connections:
            try:
                sock, addr = listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    return
                raise
            util.close_on_exec(sock)
            sock.setblocking(False)
            arriving = Arriving(sock, addr, listener, time.monotonic() + self.request_deadline)
            self.arriving[sock.fileno()] = arriving
            self.selector.register(sock, selectors.EVENT_READ, arriving)

    def _read(self, arriving: Arriving):
        try:
            chunk = arriving.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client left before its request was whole
            self._forget(arriving)
            arriving.sock.close()
            return
        arriving.data += chunk
        if not arriving.continued and _EXPECT_CONTINUE.search(arriving.head()):
            arriving.continued = True  # the client waits for this before it sends the body
            self._send_quietly(arriving.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        if arriving.complete(self.body_limit):
            self._forget(arriving)
            self._handle(arriving)

    def _handle(self, arriving: Arriving):
        data = bytes(arriving.data)
        if arriving.continued:  # already answered: gunicorn must not send a second 100 Continue
            data = _EXPECT_CONTINUE.sub(b"", data, count=1)
        arriving.sock.setblocking(True)
        arriving.sock.settimeout(self.request_deadline)  # writing the answer to a client that never reads
        client = ArrivedRequest(arriving.sock, data)
        if data.startswith(WAITING_PATHS):
            self.waiting.submit(self.handle, arriving.listener, client, arriving.addr)
        else:
            self.handle(arriving.listener, client, arriving.addr)

    def _close_late(self):
        now = time.monotonic()
        for arriving in [a for a in self.arriving.values() if a.deadline <= now]:
            self._forget(arriving)
            log.warning("closed a connection from %s: its request had not arrived after %g s",
                        arriving.addr[0] if isinstance(arriving.addr, tuple) else arriving.addr,
                        self.request_deadline)
            arriving.sock.close()

    def _forget(self, arriving: Arriving):
        self.selector.unregister(arriving.sock)
        del self.arriving[arriving.sock.fileno()]

    def _drain_wakeups(self):
        """Empty the pipe a signal writes to (gunicorn's wake-up fd), so the loop sees alive turn false."""
        try:
            os.read(self.PIPE[0], 512)
        except BlockingIOError:
            pass

    @staticmethod
    def _send_quietly(sock, data: bytes):
        try:
            sock.send(data)
        except OSError:
            pass
