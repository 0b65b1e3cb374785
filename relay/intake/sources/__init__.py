"""The registry of alert sources: the one list of them, which the webhook route, auth, config, OpenAPI and
start-up checks all read.

Each source is a module exposing NAME (its webhook name), CLIENT (the sender's name: the event's default client),
BODY_SCHEMA (what /openapi.json shows of its body: a marshmallow schema class or an OpenAPI schema),
SETTINGS_SCHEMA (a marshmallow schema for config's <NAME>_WEBHOOK setting, loaded once at start-up; None when it
takes none) and to_alerts(payload, settings=None); optionally alert_count(payload), the number of alerts in a payload
not yet loaded, so that one over RELAY_MAX_ALERTS_PER_REQUEST is refused before it is read;
looks_like(payload, settings=None), a cheap guess whether a payload another source refused was meant for this one;
METHODS, the HTTP methods its senders use (POST when it has none); and is_test(alert), whether an alert is the
sender's test notification (a contact point's "Test" button).
A new source is one module and one line below.
"""
from types import ModuleType

from relay.intake.sources import alertmanager, generic, grafana, pagerduty

SOURCES: dict[str, ModuleType] = {source.NAME: source for source in (
    alertmanager,
    grafana,
    pagerduty,
    generic,  # last: it takes almost any object, so the others' guesses (meant_for) are tried first
)}


def get_source(name: str) -> ModuleType | None:
    """Return the source module registered under name, or None."""
    return SOURCES.get(name)


def client_name(name: str) -> str:
    """Return the client name the source registered under name declares ("relay" for an unknown one)."""
    source = SOURCES.get(name)
    return source.CLIENT if source is not None else "relay"


def webhook_methods(source: ModuleType) -> tuple[str, ...]:
    """Return the HTTP methods a source's webhook takes."""
    return getattr(source, "METHODS", ("POST",))


def is_test_notification(alert) -> bool:
    """Tell whether an alert is its sender's test notification, by its source's is_test()."""
    is_test = getattr(SOURCES.get(alert.source), "is_test", None)
    return is_test is not None and is_test(alert)


def settings_key(source: ModuleType) -> str:
    """Name the config setting that holds a source's settings."""
    return f"{source.NAME.upper()}_WEBHOOK"


def meant_for(payload, refused_by: ModuleType, settings: dict) -> ModuleType | None:
    """Name the source a payload that refused_by could not read looks meant for, or None (also when it looks meant
    for refused_by itself); settings holds each source's, by name. For the error path only."""
    if _looks_like(refused_by, payload, settings):
        return None
    return next((source for source in SOURCES.values()
                 if source is not refused_by and _looks_like(source, payload, settings)), None)


def _looks_like(source: ModuleType, payload, settings: dict) -> bool:
    guess = getattr(source, "looks_like", None)
    return guess is not None and guess(payload, settings.get(source.NAME))
