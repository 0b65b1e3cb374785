"""gunicorn settings; anything given on the command line (e.g. -b HOST:PORT) wins over these."""
import os

bind = os.environ.get("RELAY_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("RELAY_WORKERS", "2"))
worker_class = "sync"
timeout = int(os.environ.get("RELAY_WORKER_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
accesslog = "-" if os.environ.get("RELAY_ACCESS_LOG", "0") == "1" else None
errorlog = "-"
loglevel = os.environ.get("RELAY_LOG_LEVEL", "info").lower()


def post_worker_init(worker):
    """Start delivery in each worker process: claims are atomic, so several workers share the outbox safely."""
    app = worker.wsgi
    if app.config["RELAY_DELIVERY"]:
        from relay import delivery

        delivery.start(app)


def worker_exit(server, worker):
    """Let in-flight deliveries finish and be recorded before the worker goes."""
    from relay import delivery

    delivery.stop()
