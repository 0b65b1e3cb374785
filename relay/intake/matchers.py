"""Alertmanager label matchers (`name op value`): parsing them and matching label sets; `route_labels.name op value`
matches Alertmanager's routeLabels instead of the alert's labels."""
import re
from dataclasses import dataclass, field

EQUAL, NOT_EQUAL, REGEX, NOT_REGEX = "=", "!=", "=~", "!~"
# "=~" before "=": otherwise "=" would be taken and "~" become part of the value (alertmanager pkg/labels/parse.go).
OPERATORS = (REGEX, NOT_REGEX, NOT_EQUAL, EQUAL)
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
NAME_TOKEN = re.compile(r"\s*([^\s=!~<>]*)\s*")
# Go's RE2 takes flags such as (?i) anywhere; Python 3.11 only at the very start, so they are lifted out.
LEADING_FLAGS = re.compile(r"\(\?([a-zA-Z]+)\)")
ROUTE_LABELS_PREFIX = "route_labels."  # as templates name them: route_labels.team
NO_LABELS: dict = {}


class MatcherError(ValueError):
    """A matcher that does not parse or whose regex does not compile; the message names the bad part."""


def compile_regex(value: str) -> re.Pattern:
    """Compile a matcher regex; matching uses fullmatch, the anchoring of Go's ^(?:re)$."""
    re.compile(value)  # alone first, so an error's position points into the value as written
    flags = ""
    leading = LEADING_FLAGS.match(value)
    if leading:
        flags, value = f"(?{leading.group(1)})", value[leading.end():]
    # fullmatch rather than "^(?:re)$": Python's $ also matches before a final newline, Go's does not.
    return re.compile(f"{flags}(?:{value})")


@dataclass(frozen=True)
class Matcher:
    """One label matcher; a label the alert lacks counts as the empty string."""

    name: str
    op: str
    value: str
    regex: re.Pattern | None = field(default=None, init=False, repr=False, compare=False)
    route_label: bool = False  # matches the notification's route labels rather than the alert's labels

    def __post_init__(self):
        """Check the name and operator, and compile the regex (alertmanager pkg/labels/matcher.go NewMatcher)."""
        if not isinstance(self.name, str) or not LABEL_NAME.fullmatch(self.name):
            raise MatcherError(f"bad label name {self.name!r}: must match [a-zA-Z_][a-zA-Z0-9_]*")
        if self.op not in OPERATORS:
            raise MatcherError(f"bad operator {self.op!r}: expected one of =, !=, =~, !~")
        if self.op in (REGEX, NOT_REGEX):
            try:
                object.__setattr__(self, "regex", compile_regex(self.value))
            except re.error as err:
                raise MatcherError(f"bad regex {self.value!r} for label {self.name!r}: {err}") from None

    def matches(self, labels: dict) -> bool:
        """Tell whether the label set satisfies this matcher."""
        actual = labels.get(self.name) or ""  # missing equals empty: foo="" matches without foo
        if self.op == EQUAL:
            return actual == self.value
        if self.op == NOT_EQUAL:
            return actual != self.value
        found = self.regex.fullmatch(actual) is not None
        return found if self.op == REGEX else not found

    def __str__(self) -> str:
        """Render the matcher as Alertmanager does: name, operator, quoted value."""
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        prefix = ROUTE_LABELS_PREFIX if self.route_label else ""
        return f'{prefix}{self.name}{self.op}"{escaped}"'


def unescape(raw: str, text: str) -> str:
    """Strip the optional quotes of a matcher value and resolve \\", \\\\ and \\n (OpenMetrics escaping)."""
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    out, index, closed = [], 0, False
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            nxt = body[index + 1]
            # A spurious escape such as \d stays literal, so regexes need no double escaping (parse.go).
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            index += 2
            continue
        if char == '"':
            if not quoted or index != len(body) - 1:
                raise MatcherError(f"unescaped double quote in value {raw!r} of matcher {text!r}")
            closed = True
        else:
            out.append(char)
        index += 1
    if quoted and not closed:
        raise MatcherError(f"unterminated quoted value {raw!r} in matcher {text!r}")
    return "".join(out)


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher such as `severity="critical"`, `env=~prod|staging` or `team != ops`."""
    if not isinstance(text, str):
        raise MatcherError(f"a matcher must be a string, not {type(text).__name__}: {text!r}")
    head = NAME_TOKEN.match(text)
    name, rest = head.group(1), text[head.end():]
    route_label = name.startswith(ROUTE_LABELS_PREFIX)
    name = name.removeprefix(ROUTE_LABELS_PREFIX)
    if not name:
        raise MatcherError(f"missing label name in matcher {text!r}")
    if not LABEL_NAME.fullmatch(name):
        hint = f"; a route label is written {ROUTE_LABELS_PREFIX}<name>" if "." in name and not route_label else ""
        raise MatcherError(f"bad label name {name!r} in matcher {text!r}: must match [a-zA-Z_][a-zA-Z0-9_]*{hint}")
    op = next((candidate for candidate in OPERATORS if rest.startswith(candidate)), None)
    if op is None:
        found = re.match(r"[=!~<>]*", rest).group()
        if not found:
            raise MatcherError(f"missing operator after {name!r} in matcher {text!r}")
        raise MatcherError(f"bad operator {found!r} in matcher {text!r}: expected one of =, !=, =~, !~")
    value = unescape(rest[len(op):].strip(), text)
    try:
        return Matcher(name, op, value, route_label)
    except MatcherError as err:
        raise MatcherError(f"{err} in matcher {text!r}") from None


def split_matchers(text: str) -> list[str]:
    """Split `{a="b", c=~"d,e"}` on commas outside quotes (alertmanager pkg/labels/parse.go ParseMatchers)."""
    text = text.strip()
    text = text[1:] if text.startswith("{") else text
    text = text[:-1] if text.endswith("}") else text
    tokens, token, quoted, escaped = [], [], False, False
    for char in text:
        if char == "," and not quoted:
            tokens.append("".join(token))
            token = []
            continue
        if char == '"':
            quoted = quoted if escaped else not quoted
            escaped = False
        elif char == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(char)
    last = "".join(token).strip()
    return tokens + [last] if last else tokens


def parse_matchers(items) -> list[Matcher]:
    """Parse a route's matchers: a list of strings, each one matcher or a comma-separated `{…}` list."""
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise MatcherError(f"matchers must be a list of strings, not {type(items).__name__}")
    matchers = []
    for item in items:
        if not isinstance(item, str):
            raise MatcherError(f"a matcher must be a string, not {type(item).__name__}: {item!r}")
        matchers.extend(parse_matcher(token) for token in split_matchers(item))
    return matchers


def matches_all(matchers, labels: dict, route_labels: dict = NO_LABELS) -> bool:
    """Tell whether the label sets satisfy every matcher (an empty list matches everything)."""
    return all(matcher.matches(route_labels if matcher.route_label else labels) for matcher in matchers)
