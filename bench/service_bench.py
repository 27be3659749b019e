"""REST service latency under load on loopback: ``GET /api/explain/{terminal}`` and a
customer's terminal list, with 10,000 terminals in the store (``tiny``: 50).

``bench_service(tiny)`` seeds a SQLite store in a temporary data directory (accounts of 100
terminals each, a plan, a deny geofence and a contract), starts the real server —
``leotwin serve`` (uvicorn on ``create_app``) — in a subprocess on a free loopback port, and
drives it with an asyncio client over 4 kept-alive connections at a fixed arrival rate (200
requests/s, open loop: each request is due at its scheduled time whether or not earlier ones
have returned, and its latency is measured from that time, so queueing is counted). Explain
requests pick a random terminal and one of 24 hourly times of a day (the dashboard's clicks at
slider times); nothing is warmed at those times: the first request for a (terminal, time) pair
is decided then, repeats come from the service's explain cache — the share of repeats is
reported. Authentication uses API tokens.

Run alone: ``python bench/service_bench.py [--tiny]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

RATE_PER_S = 200.0
TARGET_P99_S = 0.050
TERMINALS_PER_ACCOUNT = 100
MAX_CONNECTIONS = int(os.environ.get("LEOTWIN_BENCH_CONNECTIONS", "4"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(url: str, n_terminals: int, seed_: int = 0) -> tuple[str, str, list[str], str]:
    """A store with ``n_terminals`` over accounts of 100; ``(admin token, customer token,
    terminal ids, customer account)``."""
    from leotwin.policy.models import (
        Account,
        Contract,
        Geofence,
        Policy,
        ServicePlan,
        Terminal,
    )
    from leotwin.store import Store

    rng = np.random.default_rng(seed_)
    n_acc = max(1, -(-n_terminals // TERMINALS_PER_ACCOUNT))
    accounts = [Account(id=f"acct-{k:03d}", country="UKR") for k in range(n_acc)]
    lat = rng.uniform(46.0, 51.5, n_terminals)
    lon = rng.uniform(23.0, 39.5, n_terminals)
    terminals = [Terminal(id=f"T-{k:05d}", account=f"acct-{k % n_acc:03d}", plan="std",
                          lat_deg=float(lat[k]), lon_deg=float(lon[k]))
                 for k in range(n_terminals)]
    box = {"type": "Polygon", "coordinates": [[[35.0, 47.0], [38.0, 47.0], [38.0, 50.0],
                                               [35.0, 50.0], [35.0, 47.0]]]}
    policy = Policy(
        accounts=accounts,
        plans=[ServicePlan(name="std", priority_quota_gb_month=100, min_mbps=1, max_mbps=100)],
        terminals=terminals,
        geofences=[Geofence(id="G-EAST", geometry=box, action="deny", reason="benchmark",
                            author="bench", valid_from=datetime(2022, 10, 1, tzinfo=UTC))],
        contracts=[Contract(id="C-0", account="acct-000", committed_availability_pct=99,
                            covered_area=box, term_start=datetime(2022, 1, 1, tzinfo=UTC),
                            term_end=datetime(2023, 1, 1, tzinfo=UTC))])
    with Store.open(url) as store:
        store.add_user("admin", "admin", actor="admin")
        store.add_user("cust", "customer", account="acct-000", actor="admin")
        store.record_policy(policy, author="admin", reason="benchmark customers",
                            recorded_at=datetime(2022, 9, 1, tzinfo=UTC))
        _, admin = store.create_api_token("admin", "bench")
        _, cust = store.create_api_token("cust", "bench")
    return admin, cust, [t.id for t in terminals], "acct-000"


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   head: bytes) -> int:
    """Send one HTTP/1.1 GET (``head``: request line and headers) on a kept-alive connection
    and read the whole response; its status code."""
    writer.write(head)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        await reader.readexactly(length)
        return status
    while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
        await reader.readexactly(size + 2)
    await reader.readline()  # the empty trailer
    return status


async def _load(base: str, headers: dict, paths: list[str], rate: float
                ) -> tuple[np.ndarray, int]:
    """Send ``paths`` at ``rate`` per second (open loop); latencies (s) from schedule, and the
    number of responses that were not 200.

    Open loop over ``MAX_CONNECTIONS`` kept-alive HTTP/1.1 connections: every request is due
    at its scheduled time and waits for a free connection if all are busy, and its latency
    counts from that time, so queueing (here or in the server) is counted. The client is
    plain asyncio streams rather than httpx: on this 2-core machine the client shares the
    CPU with the server it measures, and httpx spent ~1.5 ms of CPU per request (its pool's
    queue handling grows with the queue, so a slow moment made the client slower still)."""
    url = httpx.URL(base)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    heads = [f"GET {p} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n{extra}\r\n".encode()
             for p in paths]
    conns = [await asyncio.open_connection(url.host, url.port)
             for _ in range(min(MAX_CONNECTIONS, len(paths)))]
    loop = asyncio.get_running_loop()
    due: asyncio.Queue[int | None] = asyncio.Queue()
    lat = np.empty(len(paths))
    bad = 0
    t0 = loop.time() + 0.05

    async def schedule() -> None:
        for k in range(len(paths)):
            delay = t0 + k / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due.put_nowait(k)
        for _ in conns:
            due.put_nowait(None)

    async def connection(reader, writer) -> None:
        nonlocal bad
        while (k := await due.get()) is not None:
            status = await asyncio.wait_for(_request(reader, writer, heads[k]), timeout=30.0)
            lat[k] = loop.time() - (t0 + k / rate)
            bad += status != 200

    try:
        await asyncio.gather(schedule(), *(connection(r, w) for r, w in conns))
    finally:
        for _, writer in conns:
            writer.close()
    return lat, bad


def _wait_ready(base: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"leotwin serve exited with {proc.returncode}; see its log "
                               "(serve.log in the benchmark's directory)")
        try:
            if httpx.get(base + "/api/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("leotwin serve did not become ready")


TARGET_GUARD_S = 5.0


def bench_guard(url: str, n_terminals: int) -> dict:
    """The server-side breach guard of one policy change (a 1°×1° deny fence that overrides
    contracts): previewed from now over the guard horizon (90 days at 3600 s, contract
    availability per 30-day period), as ``POST /api/policy/apply`` does before recording."""
    from leotwin.policy.models import Geofence
    from leotwin.policy.preview import GUARD_HORIZON, GUARD_STEP_S
    from leotwin.service.changes import build_policy, guarded_preview
    from leotwin.store import Store

    with Store.open(url) as store:
        current = store.current()
    # the seeded contracts ended in 2023: in term for years, so the whole horizon is checked
    current = build_policy(current, contracts=[
        c.model_copy(update={"term_end": datetime(2100, 1, 1, tzinfo=UTC)})
        for c in current.contracts])
    fence = Geofence(id="bench-cut", action="deny", reason="bench", author="bench",
                     override_contracts=True,
                     geometry={"type": "Polygon", "coordinates": [[
                         [30, 50], [31, 50], [31, 51], [30, 51], [30, 50]]]})
    proposed = build_policy(current, geofences=[*current.geofences, fence])
    guarded_preview(current, proposed, None, GUARD_STEP_S)  # warm-up (imports, caches)
    t0 = time.perf_counter()
    guarded_preview(current, proposed, None, GUARD_STEP_S)
    dt = time.perf_counter() - t0
    return {"benchmark": "service", "case": f"breach guard of one policy change, "
            f"{n_terminals:,} terminals, {GUARD_HORIZON.days} days at {GUARD_STEP_S:g} s",
            "seconds": dt, "target": f"≤ {TARGET_GUARD_S:g} s (assumption: an apply waits "
            "for it)", "check": ("seconds", "<=", TARGET_GUARD_S)}


def bench_service(tiny: bool) -> list[dict]:
    n_terminals = 50 if tiny else 10_000
    duration_s = 1.0 if tiny else 5.0
    n_req = int(RATE_PER_S * duration_s)
    rng = np.random.default_rng(1)
    root = Path(tempfile.mkdtemp(prefix="leotwin-bench-service-"))
    url = f"sqlite:///{root / 'leotwin.db'}"
    proc = None
    try:
        admin, cust, ids, account = seed(url, n_terminals)
        guard_row = bench_guard(url, n_terminals)
        port = _free_port()
        env = {**os.environ, "LEOTWIN_DATA_DIR": str(root), "LEOTWIN_DATABASE_URL": url}
        # The server's log goes to a file: an unread pipe would fill and stall the server.
        with open(root / "serve.log", "wb") as server_log:
            proc = subprocess.Popen([sys.executable, "-m", "leotwin.cli", "serve", "--host",
                                     "127.0.0.1", "--port", str(port)], env=env,
                                    stdout=server_log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, proc)
        hours = [f"2022-10-05T{h:02d}:00:00Z" for h in range(24)]
        explain = [f"/api/explain/{ids[rng.integers(len(ids))]}?at={hours[rng.integers(24)]}"
                   for _ in range(n_req)]
        listing = ["/api/terminals"] * n_req
        warm = [explain[0], f"/api/explain/{ids[-1]}?at={hours[0]}"]
        asyncio.run(_load(base, {"Authorization": f"Bearer {admin}"}, warm, 20.0))
        asyncio.run(_load(base, {"Authorization": f"Bearer {cust}"}, listing[:5], 20.0))
        rows = [guard_row]
        # The client measures: its own garbage collector must not pause it. Seeding and the
        # guard benchmark left hundreds of thousands of objects in this process, and a full
        # collection over them stalled the client (not the server) for ~100 ms mid-run,
        # counted as server latency. Collected once, then frozen until the runs end.
        gc.collect()
        gc.freeze()
        cases = (("explain", admin, explain,
                  f"GET /api/explain/{{terminal}}, {n_terminals:,} terminals in the store"),
                 ("terminals", cust, listing,
                  f"GET /api/terminals as a customer ({TERMINALS_PER_ACCOUNT if not tiny else 1}"
                  f" of {n_terminals:,} terminals are its own)"))
        for name, token, paths, label in cases:
            lat, bad = asyncio.run(_load(base, {"Authorization": f"Bearer {token}"}, paths,
                                         RATE_PER_S))
            p50, p99 = (float(np.percentile(lat, q)) for q in (50, 99))
            row = {"benchmark": "service", "case": f"{label} at {RATE_PER_S:.0f} req/s for "
                   f"{duration_s:g} s", "seconds": p99, "p50_ms": 1e3 * p50, "p99_ms": 1e3 * p99,
                   "requests": len(paths), "errors": bad,
                   "target": "p99 ≤ 50 ms at 200 req/s",
                   "check": ("seconds", "<=", TARGET_P99_S)}
            if name == "explain":
                seen = set()
                repeats = 0
                for p in paths:
                    repeats += p in seen
                    seen.add(p)
                row["cache_repeats"] = repeats / len(paths)
            rows.append(row)
        return rows
    finally:
        gc.unfreeze()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args()
    for row in bench_service(args.tiny):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
