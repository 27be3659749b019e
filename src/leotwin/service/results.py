"""Reading a finished run directory for the API, vectorised and cached per run and account.

Everything comes from the run directory :mod:`leotwin.analytics.runio` writes; a customer's
reads are filtered in the Parquet scan (``filters=[("account", "==", acct)]``; the outage
intervals, which have no account column, by the ids of that account's terminals).

Frame codes and states are :func:`leotwin.analytics.states.timeline_states` (the report's
too): ``served``, ``degraded``, the primary cause of an outage, or ``unattributed`` (unserved
without a recorded cause).
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
from ..analytics.states import (
    STATES,
    UNATTRIBUTED,
    availability_by_state,
    cause_labels,
    timeline_states,
)

log = logging.getLogger(__name__)

_MISSING = STATES.index(UNATTRIBUTED)  # a (time, terminal) cell the timeline lacks


#: ``/frames`` answers at most this many (time, terminal) cells; ``every`` thins the times.
MAX_FRAME_CELLS = 5_000_000
#: The bytes of frames and frame answers one run keeps in memory (least recent dropped).
CACHE_BYTES = 128 * 1024 * 1024


class FramesTooLarge(ValueError):
    """A ``/frames`` request over :data:`MAX_FRAME_CELLS`; ``min_every`` would fit."""

    def __init__(self, cells: int, min_every: int) -> None:
        super().__init__(f"the frames hold {cells} cells; at most {MAX_FRAME_CELLS}: use "
                         f"every >= {min_every} (or a shorter start/stop window)")
        self.cells, self.min_every = cells, min_every


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
        self._frames: OrderedDict = OrderedDict()
        self._json: OrderedDict = OrderedDict()
        self._bytes = 0
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
        hit = self._cached(self._frames, account)
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
        names = np.array(cause_names or [""], dtype=object)  # the states of each distinct cause
        if_served = timeline_states(np.ones(names.size, bool), names)
        if_not = timeline_states(np.zeros(names.size, bool), names)
        served = tbl.column("served").to_numpy(zero_copy_only=False).astype(bool)
        code = np.where(served, if_served[cause_codes], if_not[cause_codes]).astype(np.int8)
        codes = np.full((times.size, len(ids)), _MISSING, dtype=np.int8)
        ok = tj >= 0
        codes[ti[ok], tj[ok]] = code[ok]
        if ok.sum() != times.size * len(ids):
            log.warning("run %s: timeline has %d cells for %d steps × %d terminals", self.root,
                        int(ok.sum()), times.size, len(ids))
        hit = (times, ids, codes)
        self._keep(self._frames, account, hit, codes.nbytes + times.nbytes)
        return hit

    def _keep(self, cache: OrderedDict, key, value, size: int) -> None:
        """Cache ``value`` within :data:`CACHE_BYTES` for this run (oldest dropped first)."""
        if size > CACHE_BYTES:
            return
        with self._lock:
            if key in cache:
                return
            cache[key] = (size, value)
            self._bytes += size
            while self._bytes > CACHE_BYTES:
                victim = self._frames if self._frames and (
                    not self._json or len(self._frames) > 1) else self._json
                _, (n, _) = victim.popitem(last=False)
                self._bytes -= n

    def _cached(self, cache: OrderedDict, key):
        with self._lock:
            hit = cache.get(key)
            if hit is not None:
                cache.move_to_end(key)
        return None if hit is None else hit[1]

    def n_steps(self, start=None, stop=None) -> int:
        """The run's steps between ``start`` and ``stop`` (from the manifest, no read)."""
        t0 = np.datetime64(self.manifest["time_start"].replace("Z", ""), "ns")
        t1 = np.datetime64(self.manifest["time_end"].replace("Z", ""), "ns")
        step = np.timedelta64(int(self.step_s * 1e9), "ns")
        lo = t0 if start is None else max(t0, start)
        hi = t1 - step if stop is None else min(t1 - step, stop)
        return 0 if hi < lo else int((hi - lo) // step) + 1

    def check_frame_size(self, account: str | None, *, every: int, start=None,
                         stop=None) -> None:
        """:class:`FramesTooLarge` when the answer would exceed :data:`MAX_FRAME_CELLS`."""
        n_terms = int(self.manifest.get("counts", {}).get("terminals", 0))
        if account is not None:
            n_terms = len(self.terminals(account))
        n_steps = self.n_steps(start, stop)
        cells = -(-n_steps // every) * n_terms
        if cells > MAX_FRAME_CELLS:
            min_every = max(every + 1, -(-n_steps * n_terms // MAX_FRAME_CELLS))
            while -(-n_steps // min_every) * n_terms > MAX_FRAME_CELLS:
                min_every += 1
            raise FramesTooLarge(cells, min_every)

    def frames_json(self, account: str | None, *, every: int = 1, start=None,
                    stop=None) -> bytes:
        key = (account, every, start, stop)
        hit = self._cached(self._json, key)
        if hit is not None:
            return hit
        self.check_frame_size(account, every=every, start=start, stop=stop)
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
        self._keep(self._json, key, data, len(data))
        return data

    def availability(self, account: str | None) -> dict:
        times, ids, codes = self.frames(account)
        share = availability_by_state(codes).round(6)
        fractions = {s: share[:, k].tolist() for k, s in enumerate(STATES)}
        return {"times": iso(times), "states": list(STATES), "fractions": fractions}

    # -- one terminal -------------------------------------------------------------------
    def terminal_timeline(self, terminal: str, account: str) -> dict:
        cols = ["time", "served", "cause", "rule", "dish_state", "throughput_mbps", "rtt_ms"]
        tbl = pq.read_table(self.path("timeline"), columns=cols,
                            filters=[("terminal", "==", terminal), ("account", "==", account)])
        df = tbl.to_pandas().sort_values("time")
        served = df["served"].to_numpy(bool)
        cause = df["cause"].fillna("").astype(str).to_numpy()
        state = np.array(STATES)[timeline_states(served, cause)]

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
        has_cause = df["cause"].to_numpy() != ""
        frame = df.assign(hours=hours, cause=cause_labels(df["cause"].to_numpy()))
        lost = frame[~served]
        degraded = frame[served & has_cause]

        def by_cause(part: pd.DataFrame) -> list[dict]:
            g = part.groupby("cause", observed=True)["hours"].sum().sort_values(ascending=False)
            return [{"cause": c, "terminal_hours": float(h),
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
               "by_account": [{"account": str(r.account), "cause": str(r.cause),
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
