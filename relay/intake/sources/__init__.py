"""The registry of alert sources: the one list of them, which the webhook route, auth, config, OpenAPI and
start-up checks all read.

Each source is a module exposing NAME (its webhook name), CLIENT (the sender's name: the event's default client),
BODY_SCHEMA (what /openapi.json shows of its body: a marshmallow schema class or an OpenAPI schema),
SETTINGS_SCHEMA (a marshmallow schema for config's <NAME>_WEBHOOK setting, loaded once at start-up; None when it
takes none) and to_alerts(payload, settings=None); optionally alert_count(payload), the number of alerts in a payload
not yet loaded, so that one over RELAY_MAX_ALERTS_PER_REQUEST is refused before it is read.
A new source is one module and one line below.
"""
from types import ModuleType

from relay.intake.sources import alertmanager, generic, grafana

SOURCES: dict[str, ModuleType] = {source.NAME: source for source in (
    alertmanager,
    grafana,
    generic,
)}


def get_source(name: str) -> ModuleType | None:
    """Return the source module registered under name, or None."""
    return SOURCES.get(name)


def client_name(name: str) -> str:
    """Return the client name the source registered under name declares ("relay" for an unknown one)."""
    source = SOURCES.get(name)
    return source.CLIENT if source is not None else "relay"


def settings_key(source: ModuleType) -> str:
    """Name the config setting that holds a source's settings."""
    return f"{source.NAME.upper()}_WEBHOOK"
