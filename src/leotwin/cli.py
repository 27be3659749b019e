"""The ``leotwin`` command line: a thin shell over the public API.

Bad input (files, times, numbers) ends with a one-line error naming the file, line and field,
and exit code 2. Anything that takes more than a second shows a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .about import api_version_info
from .cli_policy import add_commands as add_policy_commands
from .geometry.passes import passes as compute_passes
from .geometry.visibility import coverage_summary, visible
from .ground import Ground, GroundError
from .orbits.catalog import load_catalog, starlink_2022
from .orbits.propagate import positions_table, propagate_chunks
from .orbits.tle import TLEError
from .places import key_cities
from .routing.network import NetworkConfig, network_state, rtt_summary, terminal_table
from .runs import run as run_scenario
from .scenario import load_scenario
from .timescale import time_grid

log = logging.getLogger("leotwin.cli")
EXIT_USAGE = 2
DEMO_CITIES = ["Kyiv", "Kharkiv", "Kherson", "Lviv", "Bakhmut"]
DEMO_RTT_CITIES = ["Kyiv", "Kharkiv"]


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


def _progress(console: Console, unit: str = "steps") -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total} " + unit), TimeRemainingColumn(),
                    console=console, transient=True)


def _propagate_with_progress(con, times, console: Console, chunk_steps: int = 60):
    """Propagate in chunks with a progress bar; returns the concatenated Dataset."""
    import xarray as xr

    parts = []
    with _progress(console) as bar:
        task = bar.add_task("propagating", total=int(times.size))
        for ds in propagate_chunks(con, times, chunk_steps=chunk_steps):
            parts.append(ds)
            bar.advance(task, ds.sizes["time"])
    return xr.concat(parts, dim="time") if len(parts) > 1 else parts[0]


# --------------------------------------------------------------------------- commands
def cmd_demo(args, out: Console, err: Console) -> int:
    con = starlink_2022()
    times = time_grid(args.start, args.stop, args.step)
    out.print(f"[bold]leotwin demo[/bold] — real Starlink element sets of autumn 2022 "
              f"({len(con)} satellites, {con.n_elsets} element sets from the 2022-08-31 and "
              f"2022-10-24 snapshots; {sum(con.filtered.values())} non-Starlink objects "
              f"filtered)")
    out.print(f"Window {np.datetime_as_string(times[0], 's')}Z … "
              f"{np.datetime_as_string(times[-1], 's')}Z every {args.step:g} s "
              f"({times.size} steps); elevation mask {args.min_elevation:g}°")
    positions = _propagate_with_progress(con, times, err)
    n_op = int(positions["operational"].any("time").sum())
    out.print(f"{n_op} satellites operational (in their shell's altitude band) in this window")
    sites = key_cities(DEMO_CITIES)
    vis = visible(positions, sites, min_elevation_deg=args.min_elevation)
    summary = coverage_summary(vis)
    table = Table(title=f"Satellites visible above {args.min_elevation:g}°")
    for col in ("city", "min", "mean", "max", "seconds with none"):
        table.add_column(col, justify="left" if col == "city" else "right")
    for row in summary.itertuples():
        none = f"{row.seconds_with_none:.0f}"
        if row.min_visible > 0:
            none = "0 (always covered)"
        table.add_row(str(row.site), str(row.min_visible), f"{row.mean_visible:.1f}",
                      str(row.max_visible), none)
    out.print(table)
    _demo_rtt(positions, out)
    if not args.no_flagship:
        _demo_flagship(args, out, err)
    return 0


def _demo_flagship(args, out: Console, err: Console) -> None:
    """The flagship replay on a short window: the answer, computed, and the report's path."""
    from .config import get_settings
    from .flagship import DEMO_WINDOW, run_flagship

    target = Path(args.out) if args.out else get_settings().data_dir / "runs" / "flagship-demo"
    out.print(f"\n[bold]Ukraine, October 2022[/bold] — flagship scenario on "
              f"{DEMO_WINDOW[0]} … {DEMO_WINDOW[1]} (terminals, jammers, failures and the "
              "contract are labelled assumptions in the scenario file)")
    with _progress(err) as bar:
        bar.add_task("simulating the flagship scenario", total=None)
        result = run_flagship(target)
    out.print(result.text(), markup=False, highlight=False)
    out.print(f"report: {result.report_path}")
    _demo_dashboard(target.resolve(), out, err)


DEMO_USER = "demo"
DEMO_ROLE = "policy_editor"
DEMO_ADMIN = "admin"
DEMO_PASSWORD_FILE = "demo-password"


def _demo_password(data_dir: Path) -> str:
    """The demo user's password: random, generated once, kept in a 0600 file of the data
    directory (demo only: never used for a store other than the default local one)."""
    import secrets

    from .service.security import private_dir

    path = data_dir / DEMO_PASSWORD_FILE
    private_dir(data_dir)
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = "demo-" + secrets.token_urlsafe(9)
    tmp = path.with_name(f".{DEMO_PASSWORD_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password + "\n")
        try:
            os.link(tmp, path)  # written whole, then linked: never read half-written
        except FileExistsError:
            return path.read_text(encoding="utf-8").strip()
    finally:
        tmp.unlink(missing_ok=True)
    return password


def _demo_dashboard(run_dir: Path, out: Console, err: Console) -> None:
    """Register the demo run in the store (with the flagship's policy history when the store
    has none, so ``explain`` works for its terminals) and, in the default local SQLite store
    only, a demo user; print the dashboard URL."""
    from .analytics.runio import read_manifest
    from .config import get_settings
    from .flagship import DEMO_WINDOW, FLAGSHIP, flagship_path
    from .scenario import load_scenario
    from .service.runs import window_of_manifest
    from .store import Store

    settings = get_settings()
    local = settings.database_url == f"sqlite:///{settings.data_dir / 'leotwin.db'}"
    start, stop, step, n_terms = window_of_manifest(read_manifest(run_dir))
    with Store.open(settings.database_url) as store:
        admin = next((u.name for u in store.users() if u.role == "admin"), None)
        if local and store.user(DEMO_USER) is None:
            if admin is None:  # the first user must be an admin: one without a password
                admin = DEMO_ADMIN  # (it cannot log in until `leotwin user passwd` sets one)
                store.add_user(admin, "admin", actor=admin)
            # the demo edits geofences and reads runs: policy_editor, never admin
            store.add_user(DEMO_USER, DEMO_ROLE, actor=admin,
                           password=_demo_password(settings.data_dir))
        if store.current() is None:
            sc = load_scenario(flagship_path(), overrides={"time": {"start": DEMO_WINDOW[0],
                                                                    "stop": DEMO_WINDOW[1]}})
            for v in sc.policy().versions:
                store.record_policy(v.policy, author=v.author, reason=v.reason,
                                    recorded_at=v.recorded_at)
        existing = next((r for r in store.runs() if r.out_dir == str(run_dir)), None)
        if existing is None:
            existing = store.create_run(
                name="Ukraine, October 2022 (demo)", out_dir=str(run_dir),
                created_by=admin or "leotwin-demo", scenario=FLAGSHIP, status="done",
                time_start=start, time_stop=stop, step_s=step, n_terminals=n_terms,
                chunks_done=1, chunks_total=1)
    out.print(f"dashboard: http://127.0.0.1:8000/#run={existing.id}  (start it with: make serve)",
              markup=False, highlight=False, soft_wrap=True)
    if local:
        out.print(f"demo login (demo only, local store): user {DEMO_USER!r}, password "
                  f"{_demo_password(settings.data_dir)!r}", markup=False, highlight=False,
                  soft_wrap=True)
    else:
        out.print("log in with a user of your store (LEOTWIN_DATABASE_URL is set, so no demo "
                  "user was created)", markup=False, highlight=False)


def _demo_rtt(positions, out: Console) -> None:
    """Median and 95th-percentile RTT from Kyiv and Kharkiv to their PoP, both routing modes."""
    cities = key_cities(DEMO_RTT_CITIES)
    terminals = cities.rename(columns={"site": "terminal"}).assign(account="demo")
    ground = Ground.load(terminals[["terminal", "account", "lat_deg", "lon_deg", "alt_m"]])
    table = Table(title="Round-trip time terminal → PoP (gateways and PoPs: public list of about "
                        "late 2023, used for 2022 as an assumption)")
    for col in ("city", "routing", "served", "PoP", "median RTT ms", "p95 RTT ms", "handovers"):
        table.add_column(col, justify="left" if col in ("city", "routing", "PoP") else "right")
    for mode in ("isl", "bent_pipe"):
        state = network_state(positions, ground, config=NetworkConfig(mode=mode, capacity=False))
        for row in rtt_summary(state).itertuples():
            table.add_row(str(row.terminal), mode.replace("_", " "),
                          f"{100 * row.served_fraction:.0f}%", str(row.pop) or "—",
                          f"{row.rtt_median_ms:.1f}", f"{row.rtt_p95_ms:.1f}",
                          str(row.handovers))
    out.print(table)


def cmd_network(args, out: Console, err: Console) -> int:
    path = Path(args.out)
    if path.suffix.lower() not in (".parquet", ".csv"):
        raise UserError(f"--out {args.out}: the file must end in .parquet or .csv")
    con = load_catalog(Path(args.catalog), strict=not args.lenient)
    ground = Ground.load(Path(args.terminals),
                         gateways=Path(args.gateways) if args.gateways else None,
                         pops=Path(args.pops) if args.pops else None,
                         tracks=Path(args.tracks) if args.tracks else None)
    times = time_grid(args.start, args.stop, args.step)
    positions = _propagate_with_progress(con, times, err)
    config = NetworkConfig(mode=args.mode, policy=args.policy,
                           terminal_min_elevation_deg=args.min_elevation)
    with _progress(err) as bar:
        task = bar.add_task("routing", total=int(times.size))
        state = network_state(positions, ground, config=config,
                              progress=lambda done, total: bar.update(task, completed=done))
    frame = terminal_table(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    served = state["served"].to_numpy()
    rtt = state["rtt_ms"].to_numpy()[served]
    median = f"{float(np.median(rtt)):.1f} ms" if rtt.size else "n/a (nothing served)"
    out.print(f"wrote {path} ({len(ground.terminals)} terminals × {times.size} steps); "
              f"served {100 * float(served.mean()):.1f}% of terminal-steps, "
              f"median RTT {median}")
    return 0


def _scenario_path(name: str) -> Path:
    """A scenario file, or the name of a bundled scenario (``ukraine-2022-10``) when no such
    file exists."""
    from .scenarios import bundled_scenario, bundled_scenarios

    path = Path(name)
    if not path.exists() and name in bundled_scenarios():
        return bundled_scenario(name)
    return path


def cmd_run(args, out: Console, err: Console) -> int:
    time_overrides = {k: v for k, v in (("start", args.start), ("stop", args.stop),
                                        ("step_s", args.step)) if v is not None}
    scenario = load_scenario(_scenario_path(args.scenario),
                             overrides={"time": time_overrides} if time_overrides else None)
    with _progress(err, unit="chunks") as bar:
        task = bar.add_task(f"running {scenario.name}", total=None)
        result = run_scenario(scenario, Path(args.out), resume=not args.fresh, dask=args.dask,
                              report=False if args.no_report else None,
                              partition_terminals=args.partition_terminals,
                              progress=lambda done, total: bar.update(task, completed=done,
                                                                      total=total))
    out.print(f"run {'complete' if result.complete else 'incomplete'}: "
              f"{result.chunks_done}/{result.chunks_total} chunks in {result.out_dir}")
    if result.report_path:
        out.print(f"report: {result.report_path}")
    return 0


def cmd_propagate(args, out: Console, err: Console) -> int:
    path = Path(args.out)
    if path.suffix.lower() not in (".parquet", ".nc"):
        raise UserError(f"--out {args.out}: the file must end in .parquet or .nc")
    con = load_catalog(Path(args.catalog), strict=not args.lenient)
    times = time_grid(args.start, args.stop, args.step)
    ds = _propagate_with_progress(con, times, err)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".nc":
        ds.to_netcdf(path, engine="h5netcdf")
    else:
        positions_table(ds).to_parquet(path, index=False)
    out.print(f"wrote {path} ({len(con)} satellites × {times.size} steps)")
    return 0


def cmd_passes(args, out: Console, err: Console) -> int:
    con = load_catalog(Path(args.catalog), strict=not args.lenient)
    with _progress(err) as bar:
        task = bar.add_task("finding passes", total=None)
        table = compute_passes(con, (args.lat, args.lon, args.alt), args.start, args.stop,
                               min_elevation_deg=args.min_elevation,
                               progress=lambda done, total: bar.update(task, completed=done,
                                                                       total=total))
    if args.out:
        table.to_csv(args.out, index=False)
        out.print(f"wrote {args.out} ({len(table)} passes)")
        return 0
    t = Table(title=f"Passes over {args.lat:.4f}°, {args.lon:.4f}° above "
                    f"{args.min_elevation:g}° (UTC; — = outside the window)")
    for col in ("satellite", "rise", "culmination", "max el", "set", "dur s"):
        t.add_column(col, no_wrap=True)

    def hms(x) -> str:
        return "—" if pd.isna(x) else pd.Timestamp(x).strftime("%m-%d %H:%M:%S")

    for row in table.head(args.limit).itertuples():
        t.add_row(str(row.name), hms(row.rise_time), hms(row.culmination_time),
                  f"{row.max_elevation_deg:.1f}", hms(row.set_time),
                  "—" if np.isnan(row.duration_s) else f"{row.duration_s:.0f}")
    out.print(t)
    if len(table) > args.limit:
        out.print(f"… {len(table) - args.limit} more (use --out FILE for all)")
    return 0


def cmd_schema(args, out: Console, err: Console) -> int:
    import json

    if args.what == "scenario":
        from .scenario import scenario_json_schema

        schema = scenario_json_schema()
    else:
        from .policy.models import Policy

        schema = Policy.model_json_schema()
    print(json.dumps(schema, indent=2))  # plain stdout: machine-readable, never wrapped
    return 0


def cmd_serve(args, out: Console, err: Console) -> int:
    import uvicorn

    from .config import get_settings
    from .service import create_app

    app = create_app(get_settings(), freeze_heap=True)
    app.state.leotwin.runs.interrupted()  # runs a previous server left unfinished: failed
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose
                else "warning")
    return 0


def _read_password(args, err: Console) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise UserError("--password-stdin: no password on standard input")
        return line
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("password (empty: none, the user cannot log in): ")
        if first and getpass.getpass("again: ") != first:
            raise UserError("the passwords differ")
        return first or None
    return None


def cmd_user_add(args, out: Console, err: Console) -> int:
    from .store import Store

    password = _read_password(args, err)
    with Store.open(args.db) as store:
        actor = args.as_user
        if actor is None:
            actor = next((u.name for u in store.users() if u.role == "admin"), args.name)
        user = store.add_user(args.name, args.role, account=args.account, actor=actor,
                              password=password)
    out.print(f"user {user.name} ({user.role}"
              + (f", account {user.account}" if user.account else "") + ") added"
              + ("" if password else "; no password: it cannot log in until one is set"),
              markup=False, highlight=False)
    return 0


def cmd_user_passwd(args, out: Console, err: Console) -> int:
    from .store import Store

    password = _read_password(args, err)
    if not password:
        raise UserError("no password given")
    with Store.open(args.db) as store:
        actor = args.as_user
        if actor is None:  # the admin running it (the store's first admin), never the target
            actor = next((u.name for u in store.users() if u.role == "admin"), args.name)
        store.set_password(args.name, password, actor=actor)
    out.print(f"password of {args.name} set", markup=False, highlight=False)
    return 0


def cmd_user_list(args, out: Console, err: Console) -> int:
    from .store import Store

    with Store.open(args.db) as store:
        users = store.users()
    t = Table(title="Users")
    for col in ("name", "role", "account"):
        t.add_column(col)
    for u in users:
        t.add_row(u.name, u.role, u.account or "—")
    out.print(t)
    return 0


def cmd_report(args, out: Console, err: Console) -> int:
    from .analytics.report import write_report

    path = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    out.print(str(path), soft_wrap=True, markup=False, highlight=False)
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leotwin", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=api_version_info())
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="visibility over Ukrainian cities on 7 October 2022")
    d.add_argument("--start", default="2022-10-07T12:00:00Z")
    d.add_argument("--stop", default="2022-10-07T13:00:00Z")
    d.add_argument("--step", type=float, default=15.0, help="step in seconds")
    d.add_argument("--min-elevation", type=float, default=25.0, help="mask in degrees")
    d.add_argument("--no-flagship", action="store_true", help="skip the flagship replay")
    d.add_argument("--out", help="run directory of the flagship replay (default: data dir)")
    d.set_defaults(func=cmd_demo)

    pr = sub.add_parser("propagate", help="propagate a TLE/OMM catalog to ECEF")
    pr.add_argument("catalog", help="TLE file, or OMM .json/.csv")
    pr.add_argument("--start", required=True)
    pr.add_argument("--stop", required=True)
    pr.add_argument("--step", type=float, default=60.0, help="step in seconds")
    pr.add_argument("--out", required=True, help="output .parquet or .nc")
    pr.add_argument("--lenient", action="store_true", help="skip bad records instead of failing")
    pr.set_defaults(func=cmd_propagate)

    pa = sub.add_parser("passes", help="rise/culmination/set table for one site")
    pa.add_argument("catalog", help="TLE file, or OMM .json/.csv")
    pa.add_argument("--lat", type=float, required=True, help="geodetic latitude, degrees")
    pa.add_argument("--lon", type=float, required=True, help="longitude, degrees east")
    pa.add_argument("--alt", type=float, default=0.0, help="height above WGS84, metres")
    pa.add_argument("--start", required=True)
    pa.add_argument("--stop", required=True)
    pa.add_argument("--min-elevation", type=float, default=25.0)
    pa.add_argument("--limit", type=int, default=20, help="rows to print")
    pa.add_argument("--out", help="write all passes to this CSV")
    pa.add_argument("--lenient", action="store_true")
    pa.set_defaults(func=cmd_passes)

    ne = sub.add_parser("network", help="serving satellite, gateway, PoP and RTT per terminal")
    ne.add_argument("catalog", help="TLE file, or OMM .json/.csv")
    ne.add_argument("--terminals", required=True, help="terminals .csv/.geojson/.parquet")
    ne.add_argument("--gateways", help="gateways file (default: the bundled public list)")
    ne.add_argument("--pops", help="PoPs file (default: the bundled public list)")
    ne.add_argument("--tracks", help="tracks of in-motion terminals")
    ne.add_argument("--start", required=True)
    ne.add_argument("--stop", required=True)
    ne.add_argument("--step", type=float, default=15.0, help="step in seconds")
    ne.add_argument("--mode", choices=("isl", "bent_pipe"), default="isl")
    ne.add_argument("--policy", choices=("max_elevation", "least_loaded"),
                    default="max_elevation")
    ne.add_argument("--min-elevation", type=float, default=None, help="terminal mask, degrees")
    ne.add_argument("--out", required=True, help="per-terminal table, .parquet or .csv")
    ne.add_argument("--lenient", action="store_true")
    ne.set_defaults(func=cmd_network)

    re_ = sub.add_parser("report", help="self-contained HTML report of a run directory")
    re_.add_argument("run_dir", help="run directory (written by leotwin.analytics.runio)")
    re_.add_argument("--out", help="report file (default: RUN_DIR/report.html)")
    re_.set_defaults(func=cmd_report)
    sc = sub.add_parser("schema", help="print the JSON Schema of a scenario or policy file")
    sc.add_argument("what", choices=("scenario", "policy"))
    sc.set_defaults(func=cmd_schema)
    ru = sub.add_parser("run", help="run a scenario file (chunked, resumable, optionally on Dask)")
    ru.add_argument("scenario", help="scenario YAML, or a bundled scenario's name "
                                     "(ukraine-2022-10)")
    ru.add_argument("--out", required=True, help="run directory (resumed if it exists)")
    ru.add_argument("--start", help="override time.start")
    ru.add_argument("--stop", help="override time.stop")
    ru.add_argument("--step", type=float, help="override time.step_s (seconds)")
    ru.add_argument("--partition-terminals", type=int, metavar="N",
                    help="compute each chunk in partitions of at most N terminals (the same "
                         "result; default: LEOTWIN_PARTITION_TERMINALS, else the scenario's "
                         "outputs.partition_terminals)")
    ru.add_argument("--dask", default=os.environ.get("LEOTWIN_DASK_SCHEDULER"),
                    help="Dask scheduler address, or 'local' for a LocalCluster "
                         "(default: LEOTWIN_DASK_SCHEDULER)")
    ru.add_argument("--no-report", action="store_true", help="skip the HTML report")
    ru.add_argument("--fresh", action="store_true", help="ignore finished chunks in --out")
    ru.set_defaults(func=cmd_run)
    add_policy_commands(sub)

    se = sub.add_parser("serve", help="run the REST service and dashboard (uvicorn)")
    se.add_argument("--host", default="127.0.0.1")
    se.add_argument("--port", type=int, default=8000)
    se.set_defaults(func=cmd_serve)
    us = sub.add_parser("user", help="users of the store: add, passwd, list")
    usub = us.add_subparsers(dest="user_command", required=True)
    from .store.models import ROLES

    for name, func, helptext in (("add", cmd_user_add, "add a user"),
                                 ("passwd", cmd_user_passwd, "set a user's password"),
                                 ("list", cmd_user_list, "list users")):
        u = usub.add_parser(name, help=helptext)
        u.add_argument("--db", help="store URL (default: LEOTWIN_DATABASE_URL or the data dir)")
        if name != "list":
            u.add_argument("name")
            u.add_argument("--password-stdin", action="store_true",
                           help="read the password from the first line of standard input")
            u.add_argument("--as", dest="as_user",
                           help="acting admin (default: the store's first admin)")
        if name == "add":
            u.add_argument("--role", required=True, choices=ROLES)
            u.add_argument("--account", help="the account of a customer")
        u.set_defaults(func=func)
    return p


def about_main() -> int:
    """``python -m leotwin``: versions and the bundled data with its dates."""
    from .about import bundled_data_info, dependency_versions

    for name, ver in dependency_versions().items():
        print(f"{name:<10} {ver}")
    print("\nbundled data:")
    for row in bundled_data_info():
        print(f"  {row}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    out, err = Console(), Console(stderr=True)
    try:
        return args.func(args, out, err)
    except (TLEError, GroundError, UserError, ValueError, KeyError, OSError,
            PermissionError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        if isinstance(exc, OSError) and exc.filename:
            msg = f"{exc.filename}: {exc.strerror}"
        print(f"leotwin {args.command}: error: {msg}", file=sys.stderr)  # one line, unwrapped
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
