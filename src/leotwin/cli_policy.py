"""``leotwin policy …``, ``leotwin explain`` and ``leotwin audit verify``: thin shells over the
control-plane API (:mod:`leotwin.policy`, :mod:`leotwin.store`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from .policy.engine import check_overlaps, decide, explain
from .policy.errors import PolicyError
from .policy.models import (
    Account,
    Contract,
    Geofence,
    Policy,
    ServicePlan,
    Terminal,
    load_policy,
)
from .policy.preview import guard, guarded_preview, preview_change
from .timescale import to_utc_datetime64


def _store(args):
    from .store.repository import Store

    return Store.open(args.db)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(str(np.datetime64(to_utc_datetime64(text), "us"))).replace(
        tzinfo=UTC)


def demo_history_policies() -> list[tuple[datetime, str, str, Policy, str | None, str | None]]:
    """An illustrative store (assumption: not real customers or rules): an army account with
    terminals near Kharkiv, Izium, Kherson and Kyiv under contract, and a geofence over the
    Kherson front recorded on 2022-10-02, later narrowed."""
    def box(lat, lon, half):
        ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
                [lon - half, lat + half], [lon - half, lat - half]]
        return {"type": "Polygon", "coordinates": [ring]}

    base = dict(
        accounts=[Account(id="army", name="Armed forces (illustrative)", country="UKR"),
                  Account(id="ngo", name="Relief NGO (illustrative)", country="UKR")],
        plans=[ServicePlan(name="field", priority_quota_gb_month=1000, min_mbps=5,
                           max_mbps=200, mobility_allowed=True, price_per_month=500)],
        terminals=[Terminal(id="T-KHARKIV", account="army", plan="field", lat_deg=49.98,
                            lon_deg=36.25),
                   Terminal(id="T-IZIUM", account="army", plan="field", lat_deg=49.21,
                            lon_deg=37.28),
                   Terminal(id="T-KHERSON", account="army", plan="field", lat_deg=46.95,
                            lon_deg=33.40),
                   Terminal(id="T-KYIV", account="ngo", plan="field", lat_deg=50.45,
                            lon_deg=30.52)],
        contracts=[Contract(id="C-ARMY", account="army", committed_availability_pct=99.0,
                            covered_area=box(48.5, 34.0, 4.0), term_start=datetime(2022, 3, 1),
                            term_end=datetime(2023, 3, 1), credit_per_breach_hour=50.0)],
    )
    fence = Geofence(id="G-SOUTH", geometry=box(47.0, 33.5, 0.6), action="deny",
                     valid_from=datetime(2022, 10, 2), reason="illustrative restriction near the "
                     "Kherson front line", author="policy-team", override_contracts=True)
    narrow = fence.model_copy(update={"geometry": box(46.7, 33.0, 0.3),
                                      "reason": "restriction narrowed to the contact line"})
    return [
        (datetime(2022, 9, 1, tzinfo=UTC), "admin", "initial customers and contract",
         Policy(**base), None, None),
        (datetime(2022, 10, 2, tzinfo=UTC), "policy-team", "restrict service near the front",
         Policy(**base, geofences=[fence]), "approver-1", "operational security"),
        (datetime(2022, 10, 9, tzinfo=UTC), "policy-team", "correction after reports of "
         "outages", Policy(**base, geofences=[narrow]), "approver-1", "reduce impact"),
    ]


def cmd_policy_init(args, out: Console, err: Console) -> int:
    with _store(args) as store:
        if args.admin and store.user(args.admin) is None:
            store.add_user(args.admin, "admin", actor=args.admin)
        if args.demo:
            for name, role in (("policy-team", "policy_editor"), ("approver-1", "approver"),
                               ("auditor-1", "auditor")):
                if store.user(name) is None:
                    store.add_user(name, role, actor=args.admin or "admin")
            if store.current() is None:
                for at, author, reason, pol, approver, why in demo_history_policies():
                    store.record_policy(pol, author=author, reason=reason, recorded_at=at,
                                        approver=approver, approval_reason=why)
        out.print(f"store ready ({store.dialect}); "
                  f"{len(store.history().versions) if store.current() else 0} policy versions")
    return 0


def _window(args, policy: Policy) -> tuple[str, str]:
    if args.window:
        return args.window[0], args.window[1]
    starts = [g.valid_from for g in policy.geofences if g.valid_from]
    start = min(starts) if starts else datetime.now(UTC)
    return start.isoformat(), (start + (datetime(2000, 1, 8) - datetime(2000, 1, 1))).isoformat()


def cmd_policy_preview(args, out: Console, err: Console) -> int:
    change = load_policy(Path(args.file))
    check_overlaps(change)
    with _store(args) as store:
        p = preview_change(store.current(), change, _window(args, change), step_s=args.step)
    out.print(p.summary(), markup=False, highlight=False)
    if not p.contracts.empty:
        out.print(p.contracts.to_string(index=False), markup=False, highlight=False)
    return 0


def cmd_policy_apply(args, out: Console, err: Console) -> int:
    change = load_policy(Path(args.file))
    check_overlaps(change)
    with _store(args) as store:
        store.require_role(args.as_user, "policy_editor", "admin")
        p = guarded_preview(store.current(), change, _window(args, change), step_s=args.step)
        approver = store.user(args.approve_as) if args.approve_as else None
        guard(p, author=args.as_user, approver=args.approve_as,
              approver_role=approver.role if approver else None,
              approval_reason=args.approval_reason)
        approved = p.needs_approval
        v = store.record_policy(change, author=args.as_user, reason=args.reason,
                                recorded_at=_utc(args.at) if args.at else None,
                                approver=args.approve_as if approved else None,
                                approval_reason=args.approval_reason if approved else None)
    out.print(f"recorded policy version {v.version} at {v.recorded_at.isoformat()}")
    out.print(p.summary(), markup=False, highlight=False)
    return 0


def cmd_policy_history(args, out: Console, err: Console) -> int:
    with _store(args) as store:
        history = store.history()
    t = Table(title="Policy versions")
    for col in ("version", "recorded at (UTC)", "author", "reason", "geofences"):
        t.add_column(col)
    for v in history.versions:
        t.add_row(str(v.version), v.recorded_at.strftime("%Y-%m-%d %H:%M"), v.author, v.reason,
                  ", ".join(g.id for g in v.policy.geofences) or "—")
    out.print(t)
    return 0


def cmd_explain(args, out: Console, err: Console) -> int:
    with _store(args) as store:
        history = store.history()
    as_of = _utc(args.as_of) if args.as_of else None
    version = history.at(as_of)
    term = next((t for t in version.policy.terminals if t.id == args.terminal), None)
    if term is None:
        raise PolicyError(f"unknown terminal {args.terminal!r} in policy v{version.version}",
                          source="explain", field="terminal")
    if term.lat_deg is None or term.lon_deg is None:
        raise PolicyError(f"terminal {args.terminal!r} has no service address",
                          source="explain", field="terminal")
    at = np.array([to_utc_datetime64(args.at)], dtype="datetime64[ns]")
    ds = decide(history, [term.id], at, ([term.lat_deg], [term.lon_deg]), as_of=as_of)
    info = explain(ds, term.id, at[0])
    out.print(f"terminal {info['terminal']} at {args.at}"
              + (f" as known at {args.as_of}" if args.as_of else "") + ":")
    out.print(f"  decision  {info['decision'].upper()}"
              + (f" (max {info['max_mbps']:g} Mbit/s)" if info["decision"] == "throttle" else ""))
    out.print(f"  rule      {info['rule']} ({info['kind']})", markup=False)
    out.print(f"  reason    {info['reason']}", markup=False, highlight=False)
    out.print(f"  author    {info['author'] or '—'}", markup=False)
    out.print(f"  policy    v{version.version} recorded {version.recorded_at.isoformat()} by "
              f"{version.author}: {version.reason}", markup=False, highlight=False)
    return 0


def cmd_audit_verify(args, out: Console, err: Console) -> int:
    with _store(args) as store:
        report = store.verify_audit()
    if report.ok:
        out.print(f"audit log intact: {report.rows} rows, hash chain verified")
        return 0
    err.print(f"AUDIT LOG BROKEN at row {report.bad_row}: {report.message}", markup=False)
    return 1


def add_commands(sub) -> None:
    """Register the control-plane commands on the main parser's subparsers."""
    def db(p):
        p.add_argument("--db", help="store URL (default: LEOTWIN_DATABASE_URL or the data dir)")

    pol = sub.add_parser("policy", help="control-plane policy: init, apply, preview, history")
    psub = pol.add_subparsers(dest="policy_command", required=True)
    p = psub.add_parser("init", help="create or migrate the store")
    db(p)
    p.add_argument("--admin", default="admin", help="first admin user")
    p.add_argument("--demo", action="store_true", help="record an illustrative demo history")
    p.set_defaults(func=cmd_policy_init)
    for name, func, helptext in (("apply", cmd_policy_apply, "record a new policy version"),
                                 ("preview", cmd_policy_preview, "impact of a policy file")):
        p = psub.add_parser(name, help=helptext)
        db(p)
        p.add_argument("file", help="policy JSON (the whole proposed policy)")
        p.add_argument("--window", nargs=2, metavar=("START", "STOP"),
                       help="preview window (default: a week from the first geofence start)")
        p.add_argument("--step", type=float, default=900.0, help="preview step, seconds")
        if name == "apply":
            p.add_argument("--as", dest="as_user", required=True, help="author (a user)")
            p.add_argument("--reason", required=True)
            p.add_argument("--approve-as", help="second user with role approver")
            p.add_argument("--approval-reason")
            p.add_argument("--at", help="record time (default now)")
        p.set_defaults(func=func)
    p = psub.add_parser("history", help="list policy versions")
    db(p)
    p.set_defaults(func=cmd_policy_history)
    p = sub.add_parser("explain", help="why a terminal was allowed or cut at a time")
    db(p)
    p.add_argument("terminal")
    p.add_argument("--at", required=True, help="time of the decision (UTC)")
    p.add_argument("--as-of", help="record time: the policy as known then (default latest)")
    p.set_defaults(func=cmd_explain)
    au = sub.add_parser("audit", help="audit log")
    asub = au.add_subparsers(dest="audit_command", required=True)
    p = asub.add_parser("verify", help="verify the audit hash chain")
    db(p)
    p.set_defaults(func=cmd_audit_verify)


__all__ = ["add_commands", "demo_history_policies"]
