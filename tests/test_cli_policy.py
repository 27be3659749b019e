"""Control-plane CLI on a SQLite store in a temporary data directory."""

import json

import pytest

from leotwin.cli import main
from leotwin.cli_policy import demo_history_policies


@pytest.fixture()
def store_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LEOTWIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LEOTWIN_DATABASE_URL", raising=False)
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err


def test_demo_store_explain_as_of_and_audit(store_env, capsys):
    assert run(capsys, "policy", "init", "--demo")[0] == 0
    code, out, _ = run(capsys, "policy", "history")
    assert code == 0 and "G-SOUTH" in out and "correction" in out
    code, out, _ = run(capsys, "explain", "T-KHERSON", "--at", "2022-10-05T12:00Z",
                       "--as-of", "2022-10-05T12:00Z")
    assert code == 0 and "DENY" in out and "geofence:G-SOUTH" in out and "policy-team" in out
    code, out, _ = run(capsys, "explain", "T-KHERSON", "--at", "2022-10-05T12:00Z")
    assert code == 0 and "ALLOW" in out and "v3" in out
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "intact" in out
    code, _, err = run(capsys, "explain", "NOPE", "--at", "2022-10-05T12:00Z")
    assert code == 2 and "unknown terminal 'NOPE'" in err


def test_apply_is_guarded_by_a_second_approver(store_env, capsys):
    assert run(capsys, "policy", "init", "--demo")[0] == 0
    latest = demo_history_policies()[-1][3]  # (time, author, reason, policy, …)
    fence = latest.geofences[0].model_copy(update={
        "geometry": {"type": "Polygon", "coordinates": [[[35.8, 49.6], [36.8, 49.6],
                                                         [36.8, 50.3], [35.8, 50.3],
                                                         [35.8, 49.6]]]},
        "id": "G-KHARKIV", "reason": "cut Kharkiv"})
    change = latest.model_copy(update={"geofences": [*latest.geofences, fence]})
    path = store_env / "change.json"
    path.write_text(change.model_dump_json())
    window = ["--window", "2022-10-02T00:00Z", "2022-10-09T00:00Z"]
    code, out, _ = run(capsys, "policy", "preview", str(path), *window)
    assert code == 0 and "BREACH contract C-ARMY" in out
    code, _, err = run(capsys, "policy", "apply", str(path), "--as", "policy-team", "--reason",
                       "cut", *window)
    assert code == 2 and "change refused" in err and "BREACH" in err
    code, _, err = run(capsys, "policy", "apply", str(path), "--as", "auditor-1", "--reason",
                       "cut", *window)
    assert code == 2 and "auditor" in err
    code, out, _ = run(capsys, "policy", "apply", str(path), "--as", "policy-team", "--reason",
                       "cut", "--approve-as", "approver-1", "--approval-reason", "ordered",
                       *window)
    assert code == 0 and "recorded policy version 4" in out
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0
    from leotwin.store.repository import Store

    with Store.open() as store:
        rows = store.audit_rows()
    assert [(r.actor, r.action) for r in rows[-2:]] == [("policy-team", "policy.record"),
                                                        ("approver-1", "policy.approve")]
    assert rows[-1].reason == "ordered"
    bad = store_env / "bad.json"
    bad.write_text(json.dumps({"accounts": [{"id": "a", "country": "UKR"}],
                               "terminals": [{"id": "t", "account": "zzz"}]}))
    code, _, err = run(capsys, "policy", "apply", str(bad), "--as", "policy-team", "--reason",
                       "x")
    assert code == 2 and "feature 0" in err and "unknown account 'zzz'" in err
    code, out, _ = run(capsys, "policy", "history")
    assert "4" in out
