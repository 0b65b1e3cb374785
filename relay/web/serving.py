"""gunicorn's threaded worker, with a deadline on receiving each request.

A slow or silent client holds one thread of a worker, never the worker: idle connections wait in the worker's
poller, and a request that is not fully received within its deadline is closed. gunicorn.conf.py loads this file
on its own (it imports nothing from the relay), as the class of every web worker.
"""
import logging
import select
import time

from gunicorn.http.errors import NoMoreData
from gunicorn.workers import gthread

log = logging.getLogger("relay.web.serving")  # by name: loaded on its own, its __name__ is not its module's
FIRST_BYTES_WAIT_SECONDS = 0.05  # a client sends its request right after connecting, or waits in the poller


class DeadlinePassed(NoMoreData):
    """The request was not received in time; gunicorn closes the connection as after a client's hang-up, and an
    app reading the body sees a disconnected client (a 400)."""


class DeadlineSocket:
    """A client socket whose reads fail once the request being received is past its deadline."""

    def __init__(self, sock, seconds: float, client):
        self._sock, self.seconds, self.client = sock, seconds, client
        self.deadline = None

    def start_request(self):
        """Give the request now arriving its own deadline."""
        self.deadline = time.monotonic() + self.seconds

    def recv(self, size, *flags):
        """Read as a socket does, failing once the deadline has passed."""
        self._wait()
        return self._sock.recv(size, *flags)

    def recv_into(self, buffer, *args):
        """Read into buffer as a socket does, failing once the deadline has passed."""
        self._wait()
        return self._sock.recv_into(buffer, *args)

    def _wait(self):
        remaining = self.deadline - time.monotonic() if self.deadline is not None else None
        if remaining is not None and (remaining <= 0 or not select.select([self._sock], [], [], remaining)[0]):
            self.deadline = None
            log.warning("closed a connection from %s: its request was not received within %g s",
                        self.client[0] if isinstance(self.client, tuple) else self.client, self.seconds)
            raise DeadlinePassed(b"")

    def __getattr__(self, name):
        return getattr(self._sock, name)


class DeadlineThreadWorker(gthread.ThreadWorker):
    """gunicorn's gthread worker; each request must be received within RELAY_REQUEST_DEADLINE_SECONDS."""

    request_deadline = 10.0  # set by gunicorn.conf.py

    def handle(self, conn):
        """Handle one request on conn, its reads bounded by the request deadline."""
        if not (conn.initialized or conn.data_ready):
            # A new connection with nothing to read yet goes back to the poller at once: gthread would hold a
            # thread for seconds waiting, and a hundred idle connections would hold every thread.
            if not select.select([conn.sock], [], [], FIRST_BYTES_WAIT_SECONDS)[0]:
                return gthread._DEFER
            conn.data_ready = True
        if not isinstance(conn.sock, DeadlineSocket) and not self.cfg.is_ssl:
            conn.sock = DeadlineSocket(conn.sock, self.request_deadline, conn.client)  # before its parser exists
        if isinstance(conn.sock, DeadlineSocket):
            conn.sock.start_request()
        try:
            return super().handle(conn)
        finally:
            if isinstance(conn.sock, DeadlineSocket):
                conn.sock.deadline = None  # a kept-alive connection waits in the poller, without a deadline

    def finish_request(self, conn, fs):
        """Close a connection that is done from a thread, not here: gunicorn lingers up to 2 s reading what the
        client still sends, and in this, the worker's main loop, that would stop it accepting anyone else."""
        if not fs.cancelled() and fs.exception() is None and fs.result() is False:
            self.nr_conns -= 1
            self.tpool.submit(conn.close, True)
            return
        super().finish_request(conn, fs)
