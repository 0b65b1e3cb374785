"""Route templates: Jinja2 in a sandbox, compiled once at start-up and rendered over one alert; and the default
templates, what a route renders when it sets nothing itself."""
import functools
import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from jinja2 import ChainableUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from relay.intake.alert import SOURCE_LINK, Alert, datasource_state
from relay.intake.sources import client_name

log = logging.getLogger(__name__)
_DICT_ATTRIBUTES = frozenset(dir(dict))  # names a dict answers as attributes (methods), before its keys


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, failing on unsafe attributes instead of rendering them as an empty string.

    Immutable: templates share the alert's own dicts and lists (no copies), so none may change them.
    """

    def getattr(self, obj, attribute):
        """labels.team: the dict's item, or undefined, straight away. Jinja's sandbox would come to the same answer
        through a failed attribute lookup and its exception, for every label a template names."""
        if type(obj) is dict and type(attribute) is str and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj, attribute):
        """Refuse the access, so the render fails and the field's default is used."""
        # Jinja returns an undefined here, which ChainableUndefined renders as "" and lets chain on:
        # {{ ''.__class__ }} would then quietly replace a summary with nothing.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


# ChainableUndefined: a missing label renders as "" (labels.team.name too) instead of failing the page.
environment = Sandbox(undefined=ChainableUndefined, autoescape=False, trim_blocks=True)
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d+)?")


@functools.lru_cache(maxsize=256)  # senders are few, and every alert of a notification has the same URLs
def url_host(url: str | None) -> str | None:
    """The host name of a URL (no port, path or query); a bare host name as it is; None for anything else."""
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        if parts.scheme and parts.netloc:
            return parts.hostname or None
    except ValueError:
        return None
    if _HOST_NAME.fullmatch(url):  # "am.example.com" or "ops1:9093": some senders leave out the scheme
        return url.rsplit(":", 1)[0] if ":" in url else url
    return None


def sender_host(alert: Alert) -> str | None:
    """The host name of the sender: from its external URL, else from the alert's link to its rule."""
    host = url_host(alert.external_url)
    if host:
        return host
    source_link = next((link.href for link in alert.links if link.text == SOURCE_LINK), None)
    return url_host(source_link)


environment.filters["host"] = url_host


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


_MACRO_PREFIX = "field_"  # keeps a macro's name off the context's names: a macro "source" would hide the alert's


@dataclass(frozen=True)
class Macros:
    """Named templates compiled as the macros of one template: one module per context renders them all."""

    template: Template
    names: tuple[str, ...]


def compile_macros(texts: dict[str, str]) -> Macros:
    """Compile named template strings as the macros of one template, for render_macros."""
    source = "".join(f"{{% macro {_MACRO_PREFIX}{name}() %}}{text}{{% endmacro %}}" for name, text in texts.items())
    return Macros(compile_template(source), tuple(texts))


# Labels that say where an alert fires, most specific first.
_WHERE = "labels.instance or labels.host or labels.hostname or labels.node or labels.pod or labels.service"
# What a route renders when it sets nothing itself: which rule, what it says and where, for a person on call at 3 a.m.
DEFAULT_TEMPLATES = {
    "summary": (
        "{% set text = annotations.summary or annotations.title or annotations.description or annotations.message %}"
        "{% set where = " + _WHERE + " %}"
        # Grafana renames a rule whose query failed or returned nothing, keeping the rule's name in `rulename`.
        "{% set failure = datasource_state %}"
        "{% if failure and labels.rulename %}"
        "{{ labels.rulename }}: {{ failure }}"
        "{% if labels.datasource_uid %} (datasource {{ labels.datasource_uid }}){% endif %}"
        "{% else %}"
        '{{ [labels.alertname, text] | select | join(": ") or "Alert" }}'  # generic alerts have no alertname
        "{% endif %}"
        "{% if where %}{% if where not in text %} ({{ where }}){% endif %}"
        "{% else %}"
        # Without a place, the labels that tell it apart; with neither a name nor a text, the first few labels.
        "{% set named = distinguishing.items() if distinguishing"
        " else (labels | dictsort)[:3] if not (labels.alertname or text) else () %}"
        "{% set shown %}{% for name, value in named if value not in text %}{{ name }}={{ value }}"
        "{{ ', ' if not loop.last }}{% endfor %}{% endset %}"
        "{% if shown %} ({{ shown }}){% endif %}"
        "{% endif %}"
        # The rule's own text describes what it would have found, not what happened: said as such.
        "{% if failure and labels.rulename and text %} — rule checks: {{ text }}{% endif %}"
    ),
    "source": "{{ " + _WHERE + " or sender_host or source }}",
    "component": "{{ labels.component or labels.service or labels.job or labels.container or labels.app }}",
    "group": "{{ labels.group or labels.grafana_folder or labels.namespace or labels.cluster or labels.env }}",
    "class": "{{ labels.alertname }}",
    "client": "{{ client }}",
    "client_url": "{{ external_url }}",
}
# The default templates as the macros of one template: one module per alert renders them all.
DEFAULTS = compile_macros(DEFAULT_TEMPLATES)


def alert_context(alert: Alert, distinguishing: dict | None = None) -> dict:
    """Name what a template may use: labels, annotations, status, the rest of the alert, its source's client, the
    sender's host name, and the labels that tell it apart from the other alerts of its notification."""
    values = alert.as_dict()
    return {**values, "alert": values, "client": client_name(alert.source), "sender_host": sender_host(alert),
            "distinguishing": distinguishing or {}, "datasource_state": datasource_state(alert.labels)}


def render(template, context: dict) -> str | None:
    """Render a compiled template over a context from alert_context, stripped; None when it fails at run time
    or the sandbox refuses."""
    try:
        return template.render(context).strip()
    except Exception as exc:  # noqa: BLE001 - any template failure must not lose the page
        log.warning("template failed, the default is used instead: %s", type(exc).__name__)
        return None


def render_macros(macros: Macros, context: dict, names: tuple[str, ...] | None = None) -> dict[str, str | None]:
    """Render every macro of compile_macros (or only those named) over one context, stripped; None for each that
    fails."""
    names = macros.names if names is None else names
    try:
        module = macros.template.make_module(context)
        functions = [getattr(module, _MACRO_PREFIX + name) for name in names]
    except Exception as exc:  # noqa: BLE001 - as in render
        log.warning("template failed, the default is used instead: %s", type(exc).__name__)
        return dict.fromkeys(names)
    texts = {}
    for name, function in zip(names, functions):
        try:
            texts[name] = str(function()).strip()
        except Exception as exc:  # noqa: BLE001 - as in render
            log.warning("template failed, the default is used instead: %s", type(exc).__name__)
            texts[name] = None
    return texts
