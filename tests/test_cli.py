"""The relay CLI: trigger, run-job, acknowledge, resolve against the simulator."""
import json

import pytest

from relay.store.models import IncidentLog, db
from tests.helpers import wait_until


def run(runner, *args):
    result = runner.invoke(args=["relay", *args])
    return result, (json.loads(result.stdout) if result.stdout.strip().startswith("{") else None)


def test_trigger_prints_job_output_and_logs(app, runner, pd, routing_key):
    result, body = run(runner, "trigger", "--title", "Queue stuck", "--service-key", routing_key,
                       "--urgency", "low", "--body", "depth 10k")
    assert result.exit_code == 0, result.output
    assert body["success"] is True and body["status"] == "success"
    assert pd.accepted()[0]["payload"]["severity"] == "warning"
    with app.app_context():
        row = db.session.get(IncidentLog, body["log_id"])
        assert (row.source, row.status) == ("cli", "delivered")


def test_run_job_reads_input_block(tmp_path, runner, pd, routing_key):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"title": "From a file", "service_key": routing_key, "urgency": "high", "body": "b"}))
    result, body = run(runner, "run-job", str(job))
    assert result.exit_code == 0 and body["success"] is True
    assert pd.accepted()[0]["payload"]["summary"] == "From a file"


def test_run_job_accepts_whole_job_document(tmp_path, runner, pd, routing_key):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"input": {"title": "Wrapped", "service_key": routing_key}}))
    result, body = run(runner, "run-job", str(job))
    assert result.exit_code == 0 and pd.accepted()[0]["payload"]["summary"] == "Wrapped"


def test_run_job_failure_exits_1_with_pagerduty_error(tmp_path, runner, pd, routing_key):
    pd.set_routing_keys(["e" * 32])
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"title": "x", "service_key": routing_key}))
    result, body = run(runner, "run-job", str(job))
    assert result.exit_code == 1
    assert body["name"] == "PagerDutyError" and "Invalid routing key" in body["value"] and body["dedup_key"]
    assert routing_key not in result.output


@pytest.mark.parametrize("fault, exit_code, answer", [
    (None, 0, {"success": True, "status": "success"}),
    ("refusal", 1, {"name": "PagerDutyError"}),
    (410, 1, {"name": "PagerDutyError"}),
    (503, 3, {"success": False, "status": "queued"}),
])
def test_each_outcome_prints_the_apis_answer_and_exits_with_its_code(app, runner, pd, routing_key, fault, exit_code,
                                                                     answer):
    """Issue 13, item 8: the CLI's exit code and JSON per outcome, as docs/api.md tabulates them."""
    app.config["RELAY_SYNC_WAIT_SECONDS"] = 0.5
    if fault == "refusal":
        pd.set_routing_keys(["e" * 32])
    elif fault:
        pd.inject(fault, count=100)
    result, body = run(runner, "trigger", "--title", "t", "--service-key", routing_key)
    assert result.exit_code == exit_code, result.output
    assert body.items() >= answer.items() and len(body["dedup_key"]) == 32
    with app.app_context():
        assert db.session.get(IncidentLog, body["log_id"]).dedup_key == body["dedup_key"]


def test_run_job_invalid_input_exits_2_naming_fields(tmp_path, runner, pd):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"urgency": "medium"}))
    result, body = run(runner, "run-job", str(job))
    assert result.exit_code == 2
    assert set(body["error"]["fields"]) == {"title", "service_key", "urgency"}
    assert pd.received() == []


def test_run_job_names_unknown_fields_as_the_api_does(tmp_path, app, runner, pd, routing_key):
    """Issue 13, item 10: a misspelt or unsupported field is refused, not silently sent as something else."""
    job = {"title": "t", "service_key": routing_key, "severity": "low"}
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"input": job}))
    result, body = run(runner, "run-job", str(path))
    api = app.test_client().post("/api/v1/incidents", json=job)
    assert result.exit_code == 2 and api.status_code == 400
    assert body == api.get_json() and body["error"]["fields"] == {"severity": ["Unknown field."]}
    assert pd.received() == []


def test_run_job_rejects_non_json_file(tmp_path, runner):
    job = tmp_path / "job.json"
    job.write_text("title: yaml?")
    result, _ = run(runner, "run-job", str(job))
    assert result.exit_code == 2 and "not JSON" in result.output


def test_acknowledge_and_resolve(runner, pd, routing_key):
    _, body = run(runner, "trigger", "--title", "t", "--service-key", routing_key, "--dedup-key", "cli-1")
    assert body["dedup_key"] == "cli-1"
    ack, _ = run(runner, "acknowledge", "cli-1", "--service-key", routing_key)
    res, _ = run(runner, "resolve", "cli-1", "--service-key", routing_key)
    assert ack.exit_code == 0 and res.exit_code == 0
    assert [e["event_action"] for e in pd.accepted()] == ["trigger", "acknowledge", "resolve"]


def test_log_lists_rows_masked_and_shows_one_with_attempts(runner, pd, routing_key):
    _, body = run(runner, "trigger", "--title", "Shown in the log", "--service-key", routing_key)
    listed = runner.invoke(args=["relay", "log", "--limit", "5"])
    entry = json.loads(listed.output.splitlines()[0])
    assert entry["id"] == body["log_id"] and entry["summary"] == "Shown in the log"
    assert entry["routing_key"] == "…" + routing_key[-4:] and entry["status"] == "delivered"
    one = runner.invoke(args=["relay", "log", "--id", str(body["log_id"])])
    detail = json.loads(one.output)
    assert detail["event"]["payload"]["summary"] == "Shown in the log"
    assert [a["http_status"] for a in detail["attempt_log"]] == [202]
    assert routing_key not in listed.output + one.output


def test_log_filters_through_the_apis_filter(app, runner, pd, routing_key):
    pd.set_routing_keys(["e" * 32])
    _, refused = run(runner, "trigger", "--title", "refused", "--service-key", routing_key, "--dedup-key", "k-1")
    pd.set_routing_keys([])
    _, sent = run(runner, "trigger", "--title", "sent", "--service-key", routing_key, "--dedup-key", "k-2")

    def ids(*args):
        result = runner.invoke(args=["relay", "log", *args])
        assert result.exit_code == 0, result.output
        return [json.loads(line)["id"] for line in result.output.splitlines()]

    assert ids() == [sent["log_id"], refused["log_id"]]
    assert ids("--status", "failed") == [refused["log_id"]]
    assert ids("--dedup-key", "k-2", "--json") == [sent["log_id"]]
    assert ids("--source", "cli", "--since", "10m", "--limit", "1") == [sent["log_id"]]
    assert ids("--source", "api") == [] and ids("--route", "default") == []
    assert ids("--since", "2999-01-01T00:00:00Z") == []


@pytest.mark.parametrize("args, named", [
    (["--status", "lost"], "--status: Must be one of: pending"),
    (["--since", "yesterday"], "--since: 'yesterday' is neither a duration"),
    (["--limit", "0"], "--limit: Must be greater than or equal to 1"),
    (["--dedup-key", ""], "--dedup-key: Length must be between 1 and 255."),
])
def test_log_refuses_a_bad_filter_naming_its_option(runner, args, named):
    result = runner.invoke(args=["relay", "log", *args])
    assert result.exit_code == 2 and named in result.output, result.output


def test_log_unknown_id_fails(runner):
    result = runner.invoke(args=["relay", "log", "--id", "999999"])
    assert result.exit_code == 1 and "no incident_log row" in result.output


def test_replay_requeues_failed_rows_by_status_and_since(app, runner, pd, routing_key):
    pd.set_routing_keys(["e" * 32])
    _, refused = run(runner, "trigger", "--title", "refused first", "--service-key", routing_key)
    pd.set_routing_keys([routing_key])
    bad_since = runner.invoke(args=["relay", "replay", "--since", "yesterday-ish"])
    assert bad_since.exit_code == 2 and "neither a duration" in bad_since.output
    result, body = run(runner, "replay", "--status", "failed", "--since", "10m")
    assert result.exit_code == 0 and body == {"requeued": 1, "log_ids": [refused["log_id"]], "skipped": []}
    wait_until(pd.accepted, 5, "the replayed event at PagerDuty")
    assert [e["payload"]["summary"] for e in pd.accepted()] == ["refused first"]
    _, again = run(runner, "replay")
    assert again == {"requeued": 0, "log_ids": [], "skipped": []}


def test_trigger_exits_3_when_pagerduty_is_unreachable_within_the_wait(app, runner, pd, routing_key):
    app.config["RELAY_SYNC_WAIT_SECONDS"] = 0.3
    pd.set_outage("503")
    result, body = run(runner, "trigger", "--title", "t", "--service-key", routing_key)
    assert result.exit_code == 3 and body["status"] == "queued"


def test_replay_after_an_outage_skips_triggers_their_resolves_supersede(app, runner, pd, routing_key):
    """Issue 18, item 7: a trigger that failed during an outage, then resolved, must not be replayed open."""
    pd.set_routing_keys(["e" * 32])
    _, closed = run(runner, "trigger", "--title", "over already", "--service-key", routing_key, "--dedup-key", "a")
    _, still = run(runner, "trigger", "--title", "still firing", "--service-key", routing_key, "--dedup-key", "b")
    pd.set_routing_keys([routing_key])
    _, resolved = run(runner, "resolve", "a", "--service-key", routing_key)
    result, body = run(runner, "replay")
    assert result.exit_code == 0 and body == {"requeued": 1, "log_ids": [still["log_id"]], "skipped": [{
        "log_id": closed["log_id"], "superseded_by": resolved["log_id"],
        "reason": f"row {closed['log_id']} (trigger) was not sent again: row {resolved['log_id']} (resolve, "
                  "delivered) is newer for the same alert, and sending the older event would undo it"}]}
    wait_until(pd.accepted, 5, "the replayed event at PagerDuty")
    assert [(a["dedup_key"], a["status"]) for a in pd.alerts()] == [("b", "triggered")]
