"""The registry of alert sources: webhook name → module exposing NAME and to_alerts(payload, settings=None)."""
from types import ModuleType

from relay.intake.sources import alertmanager, generic, grafana

SOURCES: dict[str, ModuleType] = {
    "alertmanager": alertmanager,
    "grafana": grafana,
    "generic": generic,
}


def get_source(name: str) -> ModuleType | None:
    """Return the source module registered under name, or None."""
    return SOURCES.get(name)
