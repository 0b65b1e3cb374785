"""Route templates: Jinja2 in a sandbox, compiled once at start-up and rendered over one alert."""
import logging
from dataclasses import dataclass

from jinja2 import ChainableUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from relay.intake.alert import Alert
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


def alert_context(alert: Alert) -> dict:
    """Name what a template may use: labels, annotations, status, the rest of the alert, and its source's client."""
    values = alert.as_dict()
    return {**values, "alert": values, "client": client_name(alert.source)}


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
