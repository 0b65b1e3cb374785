"""Health endpoints for load balancers and orchestrators."""
from flask import Blueprint

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Answer 200 while the process serves requests."""
    return {"status": "ok"}
