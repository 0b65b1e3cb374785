"""Tests for Alertmanager matchers, table-driven against its documented semantics."""
import pytest

from relay.intake.matchers import Matcher, MatcherError, matches_all, parse_matcher, parse_matchers

PARSED = [
    # text, name, operator, value
    ('severity="critical"', "severity", "=", "critical"),
    ('env=~"prod|staging"', "env", "=~", "prod|staging"),
    ("team!=ops", "team", "!=", "ops"),
    ('instance!~".*:9100"', "instance", "!~", ".*:9100"),
    ("alertname = Watchdog", "alertname", "=", "Watchdog"),
    ("  _private_1   !~   x  ", "_private_1", "!~", "x"),
    ("alertname=High CPU usage", "alertname", "=", "High CPU usage"),
    ('foo=""', "foo", "=", ""),
    ("foo=", "foo", "=", ""),
    ('quote="She said: \\"Hi\\""', "quote", "=", 'She said: "Hi"'),
    ('path="C:\\\\temp"', "path", "=", "C:\\temp"),
    ('multi="a\\nb"', "multi", "=", "a\nb"),
    ('code=~"5\\d\\d"', "code", "=~", "5\\d\\d"),  # spurious escapes stay literal
    ("tail=abc\\", "tail", "=", "abc\\"),
    ("foo==bar", "foo", "=", "=bar"),  # the operator is "=", the rest is the value (parse.go)
    ("foo=~~x", "foo", "=~", "~x"),
    ('uni="日本語"', "uni", "=", "日本語"),
]


@pytest.mark.parametrize("text, name, op, value", PARSED, ids=[row[0] for row in PARSED])
def test_parse(text, name, op, value):
    matcher = parse_matcher(text)
    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)


MATCHES = [
    # matcher, labels, expected
    ('severity="critical"', {"severity": "critical"}, True),
    ('severity="critical"', {"severity": "Critical"}, False),
    ('severity="critical"', {}, False),
    ("team!=ops", {"team": "db"}, True),
    ("team!=ops", {"team": "ops"}, False),
    ("team!=ops", {}, True),
    ('env=~"prod|staging"', {"env": "prod"}, True),
    ('env=~"prod|staging"', {"env": "staging"}, True),
    ('env=~"prod|staging"', {"env": "dev"}, False),
    ('env=~"prod|staging"', {"env": "production"}, False),  # anchored: the alternation as a whole
    ('foo=~"bar"', {"foo": "foobar"}, False),
    ('foo=~"bar"', {"foo": "barfoo"}, False),
    ('foo=~"bar"', {"foo": "bar"}, True),
    ('foo=~"bar"', {"foo": "bar\n"}, False),  # Go's $ does not match before a final newline
    ('foo=~".*bar.*"', {"foo": "foobarbaz"}, True),
    ('instance!~".*:9100"', {"instance": "db1:9100"}, False),
    ('instance!~".*:9100"', {"instance": "db1:9090"}, True),
    ('instance!~".*:9100"', {}, True),
    ('foo=""', {}, True),  # a missing label equals the empty string
    ('foo=""', {"foo": ""}, True),
    ('foo=""', {"foo": "x"}, False),
    ('foo!=""', {}, False),  # so != "" requires the label
    ('foo!=""', {"foo": "x"}, True),
    ('foo=~".*"', {}, True),
    ('foo=~".+"', {}, False),
    ('foo!~".+"', {}, True),
    ('quote="say \\"hi\\""', {"quote": 'say "hi"'}, True),
    ('code=~"5\\d\\d"', {"code": "503"}, True),
    ('code=~"5\\d\\d"', {"code": "5033"}, False),
    ('env=~"(?i)prod"', {"env": "PROD"}, True),
    ('team="数据库"', {"team": "数据库"}, True),
]


@pytest.mark.parametrize("text, labels, expected", MATCHES, ids=[f"{m[0]} {m[1]}" for m in MATCHES])
def test_matches(text, labels, expected):
    assert parse_matcher(text).matches(labels) is expected


ERRORS = [
    # text, words the message must contain
    ("severity", ["missing operator", "'severity'"]),
    ("severity critical", ["missing operator"]),
    ('severity~="critical"', ["bad operator '~='"]),
    ("severity>=3", ["bad operator '>='"]),
    ("severity!critical", ["bad operator '!'"]),
    ('="critical"', ["missing label name"]),
    ('sev-erity="critical"', ["bad label name 'sev-erity'"]),
    ('1severity="critical"', ["bad label name '1severity'"]),
    ('"severity"="critical"', ["bad label name"]),
    ('severity="critical', ["unterminated", "'\"critical'"]),
    ('severity="', ["unterminated"]),
    ('severity="crit\\"', ["unterminated"]),
    ('severity="cri"tical"', ["unescaped double quote"]),
    ('severity=critical"', ["unescaped double quote"]),
    ('env=~"(prod"', ["bad regex '(prod'", "missing ), unterminated subpattern"]),
    ('env=~"prod)|(dev"', ["bad regex", "unbalanced parenthesis"]),
    ("", ["missing label name"]),
]


@pytest.mark.parametrize("text, words", ERRORS, ids=[row[0] or "empty" for row in ERRORS])
def test_parse_errors_name_the_bad_part(text, words):
    with pytest.raises(MatcherError) as err:
        parse_matcher(text)
    assert isinstance(err.value, ValueError)
    for word in words:
        assert word in str(err.value)


def test_parse_refuses_a_non_string():
    with pytest.raises(MatcherError, match="must be a string"):
        parse_matcher({"severity": "critical"})


def test_matcher_built_directly_is_checked():
    assert Matcher("env", "=~", "prod|dev").matches({"env": "dev"})
    with pytest.raises(MatcherError, match="bad operator"):
        Matcher("env", "==", "prod")
    with pytest.raises(MatcherError, match="bad regex"):
        Matcher("env", "!~", "[")


@pytest.mark.parametrize(
    "text, rendered",
    [("team!=ops", 'team!="ops"'), ('q="a\\"b\\\\c"', 'q="a\\"b\\\\c"'), ("m=a\\nb", 'm="a\\nb"')],
)
def test_str_renders_a_parsable_matcher(text, rendered):
    matcher = parse_matcher(text)
    assert str(matcher) == rendered
    assert parse_matcher(str(matcher)) == matcher


def test_parse_matchers_list_of_a_route():
    matchers = parse_matchers(['severity="critical"', 'team=~"db.*"'])
    assert [(m.name, m.op, m.value) for m in matchers] == [("severity", "=", "critical"), ("team", "=~", "db.*")]
    assert matches_all(matchers, {"severity": "critical", "team": "dba"})
    assert not matches_all(matchers, {"severity": "critical", "team": "ops"})
    assert not matches_all(matchers, {"team": "db"})


def test_parse_matchers_splits_braced_lists_outside_quotes():
    matchers = parse_matchers(['{ env = "a,b", team!=ops, }', 'quote="x\\",y"'])
    assert [(m.name, m.op, m.value) for m in matchers] == [
        ("env", "=", "a,b"),
        ("team", "!=", "ops"),
        ("quote", "=", 'x",y'),
    ]


def test_parse_matchers_reports_the_bad_item():
    with pytest.raises(MatcherError, match="bad operator '~=' in matcher 'team~=ops'"):
        parse_matchers(['severity="critical"', "team~=ops"])
    with pytest.raises(MatcherError, match="must be a string"):
        parse_matchers(['severity="critical"', 5])
    with pytest.raises(MatcherError, match="must be a list"):
        parse_matchers({"severity": "critical"})


def test_no_matchers_match_everything():
    assert matches_all([], {"anything": "x"})
    assert parse_matchers([]) == []
