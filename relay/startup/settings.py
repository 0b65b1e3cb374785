"""Reading settings as people write them, from the environment and the RELAY_CONFIG file; each bad one is noted
with its name and what was expected, so that start-up can refuse them all in one line.

Only the standard library and relay.timeutil are imported: config.py reads the environment through this module
while the relay package is still being imported.
"""
import difflib
import os
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

from relay.timeutil import parse_seconds

# The database URLs the relay has drivers for; plain postgres ones are steered to psycopg 3.
POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")
SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")
DATABASE_URL_FORMS = "postgresql://USER:PASSWORD@HOST:5432/DATABASE or sqlite:////path/to/relay.sqlite3"
# Flask-SQLAlchemy's settings that config.py leaves at their defaults: a RELAY_CONFIG file may still set them.
LIBRARY_SETTINGS = {"SQLALCHEMY_BINDS", "SQLALCHEMY_ECHO", "SQLALCHEMY_RECORD_QUERIES",
                    "SQLALCHEMY_TRACK_MODIFICATIONS"}
EVENTS_URL_FORM = "https://events.pagerduty.com/v2/enqueue"
CHANGE_EVENTS_PATH = "/v2/change/enqueue"  # PagerDuty developer-docs events-API-v2/03-Change-Events.md


class Environment:
    """Settings read from environment variables; a bad value is noted in problems and its default used."""

    def __init__(self, environ=os.environ):
        self.environ = environ
        self.problems: list[str] = []

    def text(self, name: str, default: str = "") -> str:
        """Read a string."""
        return self.environ.get(name, default)

    def words(self, name: str) -> list[str]:
        """Read a list of words separated by commas or white space (unset or empty: none)."""
        return self.environ.get(name, "").replace(",", " ").split()

    def flag(self, name: str, default: bool = False) -> bool:
        """Read an on/off switch: 1 or 0 (empty: the default)."""
        return self._read(name, default, lambda text: default if text == "" else _SWITCH[text], "1 (on) or 0 (off)")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """Read one of a few words, in any case; returned in uppercase."""
        def parse(text):
            if text.upper() not in choices:
                raise ValueError(text)
            return text.upper()
        return self._read(name, default, parse, f"one of {', '.join(choices)}")

    def _read(self, name, default, parse, expected):
        text = self.environ.get(name)
        if text is None:
            return default
        try:
            return parse(text.strip())
        except (ValueError, KeyError):
            self.problems.append(f"{name} must be {expected}, not {text!r}")
            return default

    def number(self, name: str, default: float) -> float:
        """Read a number."""
        return self._read(name, default, float, "a number")

    def whole(self, name: str, default: int) -> int:
        """Read a whole number."""
        return self._read(name, default, int, "a whole number")

    def seconds(self, name: str, default: float) -> float:
        """Read a time in seconds: a plain number, or a duration with its unit (90s, 5m, 2h, 1d)."""
        return self._read(name, default, parse_seconds, "a number of seconds or a duration such as 90s, 5m or 1d")

    def duration(self, name: str, default: timedelta | None) -> timedelta | None:
        """Read a duration such as 12h or 30d (a plain number is seconds); empty or 0 means none."""
        return self._read(name, default, _optional_duration, "a duration such as 12h, 30d or 2w, or 0 for none")

    def url(self, name: str) -> str:
        """Read an optional http(s) URL with a host (empty: none); the URL itself is never quoted, it may hold a
        password."""
        url = self.environ.get(name, "").strip()
        parts = urlsplit(url)
        if url and not (parts.scheme in ("http", "https") and parts.hostname):
            self.problems.append(f"{name} must be an http(s) URL such as http://alertmanager:9093")
            return ""
        return url

    def database_url(self, name: str = "DATABASE_URL") -> str | None:
        """Read a database URL the relay has a driver for; plain postgres URLs get the psycopg 3 driver we ship."""
        url = self.environ.get(name, "").strip()
        if not url:
            return None
        scheme, separator, rest = url.partition("://")
        if not separator or scheme.lower() not in POSTGRES_SCHEMES + SQLITE_SCHEMES:
            what = f"a {scheme!r} URL" if separator else "a URL with no scheme"  # never the URL: it holds a password
            self.problems.append(f"{name} must be {DATABASE_URL_FORMS}, not {what}")
            return None
        if scheme.lower() in POSTGRES_SCHEMES:
            return "postgresql+psycopg://" + rest
        return url


_SWITCH = {"1": True, "0": False}


def _optional_duration(text: str) -> timedelta | None:
    return None if text in ("", "0") else timedelta(seconds=parse_seconds(text))


def events_url_problem(name: str, url) -> str | None:
    """Say what is wrong with a PagerDuty Events API URL (it needs http(s), a host and a path), or None."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts and parts.scheme in ("http", "https") and parts.hostname and parts.path not in ("", "/"):
        return None
    return f"{name} must be a full URL such as {EVENTS_URL_FORM}, not {url!r}"


def change_events_url(events_url: str) -> str:
    """PagerDuty's change events URL on the host of an Events API URL: /v2/change/enqueue."""
    parts = urlsplit(events_url)
    return urlunsplit((parts.scheme, parts.netloc, CHANGE_EVENTS_PATH, "", ""))


def read_config_file(path: str, known: set[str]) -> tuple[dict, list[str]]:
    """Run the Python file RELAY_CONFIG names and return its UPPERCASE settings, with a problem for each name that
    is no setting (the closest known one suggested) and for each lowercase spelling of one."""
    namespace = {"__file__": path, "__name__": "relay_config"}
    try:
        with open(path, "rb") as handle:
            code = compile(handle.read(), path, "exec")
        exec(code, namespace)  # noqa: S102 - the operator's own configuration, as Flask's from_pyfile runs it
    except OSError as exc:
        return {}, [f"RELAY_CONFIG: cannot read {path}: {exc.strerror}"]
    except SyntaxError as exc:
        return {}, [f"RELAY_CONFIG: {path}, line {exc.lineno}: {exc.msg}"]
    except Exception as exc:  # whatever the file raised: say where, once, without a traceback
        return {}, [f"RELAY_CONFIG: {path}{_line_of(exc, path)} raised {type(exc).__name__}: {exc}"]
    settings, problems = {}, []
    by_upper = {name.upper(): name for name in known}
    for name, value in namespace.items():
        if name.isupper():
            if name in known:
                settings[name] = value
            else:
                problems.append(f"RELAY_CONFIG: {name} is not a setting{_suggestion(name, known)}")
        elif not name.startswith("_") and name.upper() in by_upper:
            problems.append(f"RELAY_CONFIG: {name} is not read: settings are uppercase; did you mean "
                            f"{by_upper[name.upper()]}?")
    return settings, problems


def _suggestion(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _line_of(exc: BaseException, path: str) -> str:
    """', line N' for the deepest frame of the traceback that is in the file, or nothing."""
    line = None
    trace = exc.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == path:
            line = trace.tb_lineno
        trace = trace.tb_next
    return f", line {line}" if line else ""
