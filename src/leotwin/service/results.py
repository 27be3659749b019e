"""Reading a finished run directory for the API, vectorised and cached per run and account.

Everything comes from the run directory :mod:`leotwin.analytics.runio` writes; a customer's
reads are filtered in the Parquet scan (``filters=[("account", "==", acct)]``; the outage
intervals, which have no account column, by the ids of that account's terminals).

Frame codes (``STATES``): ``served`` — served with no cause; ``degraded`` — served but with a
cause (throttled by policy, congestion, a jamming slowdown); otherwise the primary cause of the
outage (:data:`leotwin.analytics.simulate.PRIMARY_ORDER`). An unserved step without a recorded
cause (no factor present at all) is shown as ``no_coverage``.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..analytics.runio import RUN_FILES, read_manifest, run_step_hours
from ..analytics.simulate import DISH_STATE

log = logging.getLogger(__name__)

STATES = ("served", "degraded", "no_coverage", "policy", "satellite_failure", "no_backhaul",
          "jamming", "congestion")
_STATE_CODE = {s: k for k, s in enumerate(STATES)}
NO_COVERAGE = _STATE_CODE["no_coverage"]


def iso(times: np.ndarray) -> list[str]:
    """UTC ISO-8601 strings ending in ``Z`` (second resolution)."""
    t = np.asarray(times).astype("datetime64[s]")
    return [s + "Z" for s in np.datetime_as_string(t, unit="s").tolist()]


def _account_filter(account: str | None):
    return None if account is None else [("account", "==", account)]


def _dict_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Integer codes and the distinct strings of a string column (dictionary-encoded)."""
    enc = pc.dictionary_encode(column.combine_chunks())
    return (enc.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            [str(x) for x in enc.dictionary.to_pylist()])


class RunData:
    """One run directory; per-account results computed once and kept."""

    def __init__(self, out_dir: str | Path) -> None:
        self.root = Path(out_dir)
        self.manifest = read_manifest(self.root)
        self.step_s = float(self.manifest["step_s"])
        self._lock = threading.Lock()
        self._frames: dict = {}
        self._json: dict = {}
        self._summary: dict = {}
        self._counterfactual: OrderedDict = OrderedDict()

    def path(self, table: str) -> Path:
        return self.root / RUN_FILES[table]

    # -- terminals ----------------------------------------------------------------------
    def terminals(self, account: str | None) -> pd.DataFrame:
        """``terminal, account, lat_deg, lon_deg`` in run order (the frames' column order)."""
        table = pq.read_table(self.path("terminals"), filters=_account_filter(account))
        return table.to_pandas()

    def has_terminal(self, terminal: str, account: str | None) -> str | None:
        """The terminal's account if it is in the run (and of ``account``), else None."""
        flt = [("terminal", "==", terminal)] + (_account_filter(account) or [])
        table = pq.read_table(self.path("terminals"), columns=["account"], filters=flt)
        return None if table.num_rows == 0 else str(table.column("account")[0])

    # -- frames -------------------------------------------------------------------------
    def frames(self, account: str | None) -> tuple[np.ndarray, list[str], np.ndarray]:
        """``(times, terminal ids, codes[time, terminal] int8)`` for ``account`` (None: all)."""
        with self._lock:
            hit = self._frames.get(account)
        if hit is not None:
            return hit
        ids = self.terminals(account)["terminal"].astype(str).tolist()
        tbl = pq.read_table(self.path("timeline"), columns=["time", "terminal", "served",
                                                            "cause"],
                            filters=_account_filter(account))
        t = tbl.column("time").to_numpy().astype("datetime64[ns]")
        times, ti = np.unique(t, return_inverse=True)
        term_codes, term_names = _dict_codes(tbl.column("terminal"))
        pos = pd.Index(ids).get_indexer(term_names)
        tj = pos[term_codes]
        cause_codes, cause_names = _dict_codes(tbl.column("cause"))
        cause_state = np.array([_STATE_CODE.get(c, NO_COVERAGE) if c else NO_COVERAGE
                                for c in cause_names] or [NO_COVERAGE], dtype=np.int8)
        has_cause = np.array([bool(c) for c in cause_names] or [False])
        served = tbl.column("served").to_numpy(zero_copy_only=False).astype(bool)
        code = np.where(served, np.where(has_cause[cause_codes], 1, 0),
                        cause_state[cause_codes]).astype(np.int8)
        codes = np.full((times.size, len(ids)), NO_COVERAGE, dtype=np.int8)
        ok = tj >= 0
        codes[ti[ok], tj[ok]] = code[ok]
        if ok.sum() != times.size * len(ids):
            log.warning("run %s: timeline has %d cells for %d steps × %d terminals", self.root,
                        int(ok.sum()), times.size, len(ids))
        hit = (times, ids, codes)
        with self._lock:
            self._frames[account] = hit
        return hit

    def frames_json(self, account: str | None, *, every: int = 1, start=None,
                    stop=None) -> bytes:
        key = (account, every, start, stop)
        with self._lock:
            hit = self._json.get(key)
        if hit is not None:
            return hit
        times, ids, codes = self.frames(account)
        sel = np.ones(times.size, bool)
        if start is not None:
            sel &= times >= start
        if stop is not None:
            sel &= times <= stop
        idx = np.flatnonzero(sel)[::every]
        body = {"times": iso(times[idx]), "terminals": ids, "states": list(STATES),
                "codes": codes[idx].tolist()}
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        with self._lock:
            if len(self._json) > 16:
                self._json.pop(next(iter(self._json)))
            self._json[key] = data
        return data

    def availability(self, account: str | None) -> dict:
        times, ids, codes = self.frames(account)
        n = max(len(ids), 1)
        fractions = {s: ((codes == k).sum(axis=1) / n).round(6).tolist()
                     for k, s in enumerate(STATES)}  # over 8 states, each vectorised
        return {"times": iso(times), "states": list(STATES), "fractions": fractions}

    # -- one terminal -------------------------------------------------------------------
    def terminal_timeline(self, terminal: str, account: str) -> dict:
        cols = ["time", "served", "cause", "rule", "dish_state", "throughput_mbps", "rtt_ms"]
        tbl = pq.read_table(self.path("timeline"), columns=cols,
                            filters=[("terminal", "==", terminal), ("account", "==", account)])
        df = tbl.to_pandas().sort_values("time")
        served = df["served"].to_numpy(bool)
        cause = df["cause"].fillna("").astype(str).to_numpy()
        state = np.where(served, np.where(cause != "", "degraded", "served"),
                         np.where(np.isin(cause, STATES), cause, "no_coverage"))

        def num(a) -> list:
            a = np.asarray(a, dtype=float)
            return [None if not np.isfinite(x) else float(x) for x in a]

        steps = [{"time": t, "served": bool(s), "state": str(st), "cause": str(c),
                  "rule": str(r), "dish_state": str(d), "throughput_mbps": th, "rtt_ms": rt}
                 for t, s, st, c, r, d, th, rt in zip(
                     iso(df["time"].to_numpy()), served, state, cause,
                     df["rule"].fillna("").astype(str), df["dish_state"].fillna("").astype(str),
                     num(df["throughput_mbps"]), num(df["rtt_ms"]), strict=True)]
        return {"terminal": terminal, "account": account, "steps": steps,
                "intervals": self.outages([terminal], None, {terminal: account})}

    # -- outages ------------------------------------------------------------------------
    def outage_table(self, terminals: list[str] | None, cause: str | None) -> pa.Table:
        flt = []
        if terminals is not None:
            flt.append(("terminal", "in", terminals or ["\x00"]))
        if cause is not None:
            flt.append(("cause", "==", cause))
        return pq.read_table(self.path("intervals"), filters=flt or None)

    def outages(self, terminals: list[str] | None, cause: str | None,
                accounts: dict[str, str]) -> list[dict]:
        df = self.outage_table(terminals, cause).to_pandas()
        if df.empty:
            return []
        return [{"terminal": str(r.terminal), "account": accounts.get(str(r.terminal), ""),
                 "start": s, "end": e, "duration_s": float(r.duration_s),
                 "cause": str(r.cause or ""), "rule": str(r.rule or "")}
                for r, s, e in zip(df.itertuples(), iso(df["start"].to_numpy()),
                                   iso(df["end"].to_numpy()), strict=True)]

    # -- summary ------------------------------------------------------------------------
    def summary(self, account: str | None) -> dict:
        with self._lock:
            hit = self._summary.get(account)
        if hit is not None:
            return hit
        tbl = pq.read_table(self.path("timeline"),
                            columns=["time", "terminal", "account", "served", "cause"],
                            filters=_account_filter(account))
        df = tbl.to_pandas()
        df["cause"] = df["cause"].fillna("").astype(str)
        hours = run_step_hours(df, self.step_s)
        served = df["served"].to_numpy(bool)
        frame = df.assign(hours=hours)
        lost = frame[~served]
        degraded = frame[served & (df["cause"].to_numpy() != "")]

        def by_cause(part: pd.DataFrame) -> list[dict]:
            g = part.groupby("cause", observed=True)["hours"].sum().sort_values(ascending=False)
            return [{"cause": c or "unknown", "terminal_hours": float(h),
                     "dish_state": DISH_STATE.get(c, "")} for c, h in g.items()]

        acc = lost.groupby(["account", "cause"], observed=True)["hours"].sum().reset_index()
        total = float(hours.sum())
        hit = {"terminals": int(df["terminal"].nunique()),
               "steps": int(df["time"].nunique()), "terminal_hours": total,
               "served_hours": float(hours[served].sum()),
               "lost_hours": float(hours[~served].sum()),
               "availability_pct": None if total == 0 else
               float(100.0 * hours[served].sum() / total),
               "lost_by_cause": by_cause(lost), "degraded_by_cause": by_cause(degraded),
               "by_account": [{"account": str(r.account), "cause": str(r.cause) or "unknown",
                               "terminal_hours": float(r.hours)} for r in acc.itertuples()]}
        with self._lock:
            self._summary[account] = hit
        return hit

    # -- timeline download ----------------------------------------------------------------
    def timeline_batches(self, account: str | None) -> Iterator[pa.RecordBatch]:
        ds = pads.dataset(self.path("timeline"), format="parquet")
        flt = None if account is None else pc.field("account") == account
        yield from ds.to_batches(filter=flt, batch_size=65_536)

    def timeline_parquet(self, account: str | None) -> Iterator[bytes]:
        """The (filtered) timeline as a Parquet file, written and sent batch by batch."""
        sink = _Sink()
        schema = pq.read_schema(self.path("timeline")).remove_metadata()
        with pq.ParquetWriter(sink, schema) as writer:
            for batch in self.timeline_batches(account):
                writer.write_batch(batch)
                chunk = sink.take()
                if chunk:
                    yield chunk
        yield sink.take()

    def timeline_json(self, account: str | None) -> Iterator[bytes]:
        """The (filtered) timeline as a JSON array of row objects, one chunk per batch."""
        yield b"["
        first = True
        for batch in self.timeline_batches(account):
            df = batch.to_pandas()
            df["time"] = iso(df["time"].to_numpy())
            text = df.to_json(orient="records")
            inner = text[1:-1]
            if not inner:
                continue
            yield (("" if first else ",") + inner).encode("utf-8")
            first = False
        yield b"]"

    # -- counterfactual cache -------------------------------------------------------------
    def cached_counterfactual(self, key):
        with self._lock:
            return self._counterfactual.get(key)

    def store_counterfactual(self, key, value) -> None:
        with self._lock:
            self._counterfactual[key] = value
            while len(self._counterfactual) > 8:
                self._counterfactual.popitem(last=False)


class _Sink(io.RawIOBase):
    """A write-only file that hands over what was written since the last ``take``."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._buf += bytes(b)
        self._pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


class ResultCache:
    """Open run directories by run id (a few kept; reopened when the manifest changes)."""

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._runs: OrderedDict = OrderedDict()

    def get(self, run_id: int, out_dir: str) -> RunData:
        manifest = Path(out_dir) / "manifest.json"
        try:
            stamp = manifest.stat().st_mtime_ns
        except OSError:
            stamp = None
        key = (run_id, str(out_dir))
        with self._lock:
            hit = self._runs.get(key)
            if hit is not None and hit[0] == stamp:
                self._runs.move_to_end(key)
                return hit[1]
        data = RunData(out_dir)
        with self._lock:
            self._runs[key] = (stamp, data)
            while len(self._runs) > self._size:
                self._runs.popitem(last=False)
        return data
