"""Route templates: Jinja2 in a sandbox, compiled once at start-up and rendered over one alert."""
import logging
from dataclasses import asdict

from jinja2 import ChainableUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from relay.alerts import Alert

log = logging.getLogger(__name__)

# ChainableUndefined: a missing label renders as "" (labels.team.name too) instead of failing the page.
environment = SandboxedEnvironment(undefined=ChainableUndefined, autoescape=False, trim_blocks=True)


class TemplateConfigError(ValueError):
    """A template that does not compile; the message carries Jinja's reason."""


def compile_template(text: str):
    """Compile a template string, raising TemplateConfigError when it is not valid Jinja."""
    if not isinstance(text, str):
        raise TemplateConfigError(f"must be a template string, not {type(text).__name__}")
    try:
        return environment.from_string(text)
    except TemplateError as exc:
        raise TemplateConfigError(f"invalid template: {exc}") from None


def alert_context(alert: Alert) -> dict:
    """Name what a template may use: labels, annotations, status, and the rest of the alert."""
    return {**asdict(alert), "alert": asdict(alert)}


def render(template, context: dict) -> str | None:
    """Render a compiled template, stripped; None when it fails at run time or the sandbox refuses."""
    try:
        return template.render(context).strip()
    except Exception as exc:  # noqa: BLE001 - any template failure must not lose the page
        log.warning("template failed, the default is used instead: %s", type(exc).__name__)
        return None
