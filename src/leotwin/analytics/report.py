"""A self-contained HTML report of a run directory (see :mod:`leotwin.analytics.runio`).

:func:`report_tables` computes the report's tables from a run's tables (pure, no I/O);
:func:`write_report` draws the figures with matplotlib's Agg renderer (no pyplot, no global
backend switch), embeds them as base64 PNG in one HTML file with inline CSS (no external CSS,
JavaScript or fonts), and writes the tables next to it as ``report_*.parquet``.

Sections (each an ``<h2>`` with a stable ``id``):

``availability``
    share of terminals per step that were served, served but degraded (policy throttle or
    congestion), or unserved by each primary cause — a stacked area chart, drawn as steps
    (each value holds for its whole step).
``map``
    the terminals over the bundled Natural Earth 1:50m country borders of Europe (plain
    longitude/latitude plot, aspect 1/cos(mean latitude)), coloured by their dominant outage
    cause (the cause of most of their outage time) and sized by their outage hours.
``rules``
    the policy rules by terminal-hours denied (unserved steps whose primary cause is
    ``policy``), bar chart and table.
``sla``
    per-contract availability against the commitment (breach hours, credits owed) and usage
    per account and UTC day (decimal GB).
``causes``
    terminal-hours per primary cause (unserved and degraded), next to what the dish showed, and
    the dish states over all terminal-steps.

Terminal-hours weight every (step, terminal) by the step's duration (the spacing to the next
step; the manifest's ``step_s`` for the last), as everywhere in :mod:`leotwin.analytics`.

Memory: :func:`write_report` never loads the whole timeline. It reads the ``time`` column one
row group at a time to get the step durations, then the columns it needs one row group at a
time and folds each into small aggregates (counts per step and state, hours and steps per
rule, cause and dish state, the distinct (rule, terminal), (cause, dish state) pairs) —
:class:`_TimelineAggregates`, which :func:`report_tables` also uses over an in-memory timeline
(the same numbers up to floating-point summation order).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import logging
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .intervals import _step_durations_s
from .runio import (
    AGGREGATE_FILES,
    iter_timeline,
    read_manifest,
    read_run,
    run_step_hours,
    timeline_rows,
)
from .simulate import PRIMARY_ORDER
from .states import STATES, cause_labels, timeline_states

__all__ = ["REPORT_SECTIONS", "report_tables", "report_tables_streamed", "write_report"]

log = logging.getLogger(__name__)

#: Section ids of the report, in order.
REPORT_SECTIONS = ("availability", "map", "rules", "sla", "causes", "assumptions")
REPORT_NAME = "report.html"
#: Colour of every state in every figure.
COLORS = {"served": "#1a9850", "degraded": "#a6d96a", "no_coverage": "#8c564b",
          "policy": "#d62728", "satellite_failure": "#ff7f0e", "no_backhaul": "#9467bd",
          "jamming": "#1f77b4", "congestion": "#e6c229", "unattributed": "#404040",
          "no outage": "#c8c8c8"}
LABELS = {"served": "served", "degraded": "served, degraded (throttle or congestion)",
          "no_coverage": "no coverage", "policy": "policy (denied)",
          "satellite_failure": "satellite failure", "no_backhaul": "no backhaul",
          "jamming": "jamming", "congestion": "congestion", "unattributed": "unattributed",
          "no outage": "no outage"}
#: Bars shown in the rules chart.
TOP_RULES = 10
_DPI = 110
_BORDERS = "ne_50m_admin0_europe.geojson"


# ----------------------------------------------------------------------------- tables


#: Written into a run directory by scenario runs: the scenario's labelled assumptions.
ASSUMPTIONS_FILE = "assumptions.json"


def _cause_label(cause: pd.Series) -> pd.Series:
    return pd.Series(cause_labels(cause.fillna("").astype(str).to_numpy()), index=cause.index)


def _joined(pairs: pd.DataFrame, key: str, value: str) -> pd.Series:
    """Per ``key``: its distinct ``value``s, sorted and joined with ", " (object Series)."""
    distinct = pairs.drop_duplicates().astype({key: object, value: object})
    if not len(distinct):
        return pd.Series(dtype=object)
    return distinct.groupby(key)[value].agg(lambda s: ", ".join(sorted(s)))


_AGG_COLUMNS = ("time", "terminal", "served", "cause", "rule", "dish_state")


def _factorized(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, names)`` with ``names[codes]`` the values as str, missing ones as "" (names
    may repeat: group by name, not code, when it matters)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    names = np.array([str(u) for u in uniques] + [""], dtype=object)
    return np.where(codes < 0, len(uniques), codes), names


def _distinct_pairs(a: str, a_code: np.ndarray, a_name: np.ndarray, b: str,
                    b_code: np.ndarray, b_name: np.ndarray) -> pd.DataFrame:
    """The distinct ``(a, b)`` name pairs of rows given as codes (object columns)."""
    key = a_code.astype(np.int64) * b_name.size + b_code
    n_keys = a_name.size * b_name.size
    key = (np.flatnonzero(np.bincount(key, minlength=n_keys)) if n_keys <= 1 << 24
           else np.unique(key))
    return pd.DataFrame({a: a_name[key // b_name.size], b: b_name[key % b_name.size]},
                        dtype=object)


class _TimelineAggregates:
    """The timeline-dependent report tables, folded over pieces of the timeline."""

    def __init__(self, order: list[str]):
        self.order = order
        self.cats = ["served", "degraded", *order, "unattributed"]
        self._counts: list[pd.DataFrame] = []       # per piece: steps × category counts
        self._rules: list[pd.DataFrame] = []
        self._rule_terms = pd.DataFrame({"rule": [], "terminal": []}, dtype=object)
        self._causes: list[pd.DataFrame] = []
        self._cause_dish = pd.DataFrame({"cause": [], "dish_state": []}, dtype=object)
        self._dish: list[pd.DataFrame] = []

    def add(self, tl: pd.DataFrame, hours: np.ndarray) -> None:
        """Fold one piece of the timeline (``time, terminal, served, cause, rule,
        dish_state``; ``hours``: each row's step in hours) into the aggregates. Strings are
        factorized once per piece and everything is counted on their codes (a 10-day run's
        timeline holds 138 M rows)."""
        served = tl["served"].to_numpy(bool)
        c_code, c_name = _factorized(tl["cause"])
        r_code, r_name = _factorized(tl["rule"])
        d_code, d_name = _factorized(tl["dish_state"])
        t_idx, times = pd.factorize(tl["time"].to_numpy(dtype="datetime64[ns]"), sort=True)
        hours = np.asarray(hours, dtype=np.float64)
        step_h = np.zeros(times.size)
        step_h[t_idx] = hours
        if not np.array_equal(step_h[t_idx], hours):
            raise ValueError("hours must be the same for every row of a step")

        def per_code(code: np.ndarray, n: int, rows: np.ndarray) -> tuple[np.ndarray, ...]:
            """Rows and hours per code over ``rows``: rows counted per (code, step), then
            weighted by the step's hours — exact sums of few terms, not of millions."""
            by_step = np.bincount(code[rows] * times.size + t_idx[rows],
                                  minlength=n * times.size).reshape(n, times.size)
            return by_step.sum(axis=1), by_step @ step_h

        # availability: one state per (time, terminal) row (the API's states), per step
        pair = c_code.astype(np.int64) * 2 + served
        pairs = np.flatnonzero(np.bincount(pair, minlength=2 * c_name.size))
        lut = np.zeros(2 * c_name.size, np.int8)
        lut[pairs] = timeline_states(pairs % 2 == 1, c_name[pairs // 2])
        n_states = len(STATES)
        counts = np.bincount(t_idx * n_states + lut[pair], minlength=times.size * n_states)
        self._counts.append(pd.DataFrame(counts.reshape(times.size, n_states), index=times,
                                         columns=list(STATES)))
        # rules: terminal-hours denied
        has_rule = (r_name != "")[r_code]
        denied = np.flatnonzero(~served & (c_name == "policy")[c_code] & has_rule)
        steps, rule_h = per_code(r_code, r_name.size, denied)
        used = np.flatnonzero(steps)
        self._rules.append(pd.DataFrame({"rule": r_name[used], "hours": rule_h[used],
                                         "steps": steps[used]}))
        term_code, term_name = _factorized(tl["terminal"].iloc[denied])
        self._rule_terms = pd.concat([self._rule_terms, _distinct_pairs(
            "rule", r_code[denied], r_name, "terminal", term_code, term_name)]
                                     ).drop_duplicates()
        # causes and dish states
        has = (c_name != "")[c_code]
        n_c = c_name.size
        # one count per (cause, served, step); unserved, degraded and both weighted apart
        rows = np.flatnonzero(has)
        by_step = np.bincount((c_code[rows] * 2 + served[rows]) * times.size + t_idx[rows],
                              minlength=n_c * 2 * times.size).reshape(n_c, 2, times.size)
        both = by_step.sum(axis=1)
        steps, cause_h = both.sum(axis=1), both @ step_h
        unserved_h = np.ascontiguousarray(by_step[:, 0]) @ step_h
        degraded_h = np.ascontiguousarray(by_step[:, 1]) @ step_h
        used = np.flatnonzero(steps)
        self._causes.append(pd.DataFrame({
            "cause": c_name[used], "steps": steps[used], "unserved": unserved_h[used],
            "degraded": degraded_h[used], "hours": cause_h[used]}))
        self._cause_dish = pd.concat([self._cause_dish, _distinct_pairs(
            "cause", c_code[has], c_name, "dish_state", d_code[has], d_name)]
                                     ).drop_duplicates()
        steps, dish_h = per_code(d_code, d_name.size, np.arange(d_code.size))
        used = np.flatnonzero(steps)
        self._dish.append(pd.DataFrame({"dish_state": d_name[used], "steps": steps[used],
                                        "hours": dish_h[used]}))

    def tables(self) -> dict[str, pd.DataFrame]:
        counts = pd.concat(self._counts).groupby(level=0).sum() if self._counts else \
            pd.DataFrame()
        share = counts.div(counts.sum(axis=1), axis=0) * 100.0
        share = share.reindex(columns=self.cats, fill_value=0.0)
        availability = pd.DataFrame({"time": share.index.to_numpy(dtype="datetime64[ns]")})
        for c in self.cats:
            availability[f"{c}_pct"] = share[c].to_numpy(np.float64)

        per_rule = pd.concat(self._rules).groupby("rule", as_index=False)[["hours", "steps"]
                                                                          ].sum()
        n_terms = self._rule_terms.groupby("rule")["terminal"].nunique()
        rules = pd.DataFrame({
            "rule": per_rule["rule"].to_numpy(object),
            "terminal_hours_denied": per_rule["hours"].to_numpy(np.float64),
            "terminals": n_terms.reindex(per_rule["rule"].to_numpy(object)).to_numpy(np.int64),
            "steps": per_rule["steps"].to_numpy(np.int64)})
        rules = rules.sort_values(["terminal_hours_denied", "rule"], ascending=[False, True],
                                  ignore_index=True)
        rules = rules.astype({"rule": object, "terminal_hours_denied": np.float64,
                              "terminals": np.int64, "steps": np.int64})

        by_cause = pd.concat(self._causes).groupby("cause", as_index=False)[
            ["steps", "unserved", "degraded", "hours"]].sum()
        causes = pd.DataFrame({"cause": by_cause["cause"].to_numpy(object),
                               "steps": by_cause["steps"].to_numpy(np.int64),
                               "unserved_terminal_hours": by_cause["unserved"].to_numpy(float),
                               "degraded_terminal_hours": by_cause["degraded"].to_numpy(float),
                               "terminal_hours": by_cause["hours"].to_numpy(float)})
        shown = _joined(self._cause_dish, "cause", "dish_state")
        causes.insert(1, "dish_state", shown.reindex(causes["cause"].to_numpy(object),
                                                     fill_value="").to_numpy(object))
        rank = {name: k for k, name in enumerate(self.order)}
        causes = (causes.assign(_r=causes["cause"].map(rank).fillna(len(rank)))
                  .sort_values(["_r", "cause"]).drop(columns="_r").reset_index(drop=True))
        causes = causes.astype({"cause": object, "dish_state": object, "steps": np.int64})

        by_dish = pd.concat(self._dish).groupby("dish_state", as_index=False)[
            ["steps", "hours"]].sum()
        dish = pd.DataFrame({"dish_state": by_dish["dish_state"].to_numpy(object),
                             "steps": by_dish["steps"].to_numpy(np.int64),
                             "terminal_hours": by_dish["hours"].to_numpy(np.float64)})
        stood_for = _joined(self._cause_dish[["dish_state", "cause"]], "dish_state", "cause")
        dish["causes"] = stood_for.reindex(dish["dish_state"].to_numpy(object),
                                           fill_value="none").to_numpy(object)
        total_h = float(dish["terminal_hours"].sum())
        dish["share_pct"] = 100.0 * dish["terminal_hours"] / total_h if total_h > 0 else np.nan
        dish = (dish[["dish_state", "steps", "terminal_hours", "share_pct", "causes"]]
                .sort_values(["terminal_hours", "dish_state"], ascending=[False, True],
                             ignore_index=True)
                .astype({"dish_state": object, "causes": object, "steps": np.int64}))
        return {"availability": availability, "rules": rules, "causes": causes,
                "dish_states": dish}


def _terminal_table(tables: dict[str, pd.DataFrame], order: list[str]) -> pd.DataFrame:
    """Terminals with outage hours and dominant cause from the intervals."""
    iv = tables["intervals"]
    terms = tables["terminals"].copy()
    if len(iv):
        iv = iv.assign(cause=_cause_label(iv["cause"]), hours=iv["duration_s"] / 3600.0)
        by = iv.groupby(["terminal", "cause"], as_index=False)["hours"].sum()
        # dominant: most hours; ties broken by the primary order
        rank = {c: k for k, c in enumerate([*order, "unattributed"])}
        by = by.assign(rank=by["cause"].map(rank).fillna(len(rank)))
        by = by.sort_values(["terminal", "hours", "rank"], ascending=[True, False, True])
        dominant = by.drop_duplicates("terminal").set_index("terminal")["cause"]
        total = iv.groupby("terminal")["hours"].sum()
        count = iv.groupby("terminal").size()
    else:
        dominant = pd.Series(dtype=object)
        total = count = pd.Series(dtype=np.float64)
    key = terms["terminal"].astype(str).to_numpy(object)
    terms["outage_hours"] = total.reindex(key, fill_value=0.0).to_numpy(np.float64)
    terms["intervals"] = count.reindex(key, fill_value=0).to_numpy(np.int64)
    terms["dominant_cause"] = dominant.astype(object).reindex(key, fill_value="").to_numpy(
        object)
    return terms


def _assemble(tables: dict[str, pd.DataFrame], agg: _TimelineAggregates
              ) -> dict[str, pd.DataFrame]:
    t = agg.tables()
    return {"availability": t["availability"], "terminals": _terminal_table(tables, agg.order),
            "rules": t["rules"], "contracts": tables["contracts"], "usage": tables["usage"],
            "causes": t["causes"], "dish_states": t["dish_states"]}


def report_tables(tables: dict[str, pd.DataFrame], manifest: dict[str, Any]
                  ) -> dict[str, pd.DataFrame]:
    """The report's tables from a run's tables (as from :func:`~leotwin.analytics.runio.
    read_run`) and its manifest:

    * ``availability`` — per step ``time``, ``served_pct``, ``degraded_pct`` and
      ``<cause>_pct`` for every primary cause plus ``unattributed_pct``: shares of the terminals
      (they sum to 100);
    * ``terminals`` — ``terminal, account, lat_deg, lon_deg, outage_hours, intervals,
      dominant_cause`` ("" without outage);
    * ``rules`` — ``rule, terminal_hours_denied, terminals, steps``, most hours first;
    * ``contracts`` — the run's contract availability table;
    * ``usage`` — ``account, day, gb``;
    * ``causes`` — ``cause, dish_state, steps, unserved_terminal_hours,
      degraded_terminal_hours, terminal_hours``, in the primary order;
    * ``dish_states`` — ``dish_state, steps, terminal_hours, share_pct, causes``.

    :func:`report_tables_streamed` computes the same from a run directory without loading its
    timeline.
    """
    tl = tables["timeline"]
    agg = _TimelineAggregates(list(manifest.get("primary_order") or PRIMARY_ORDER))
    agg.add(tl, run_step_hours(tl, float(manifest["step_s"])))
    return _assemble(tables, agg)


def report_tables_streamed(run_dir: str | Path, manifest: dict[str, Any] | None = None
                           ) -> dict[str, pd.DataFrame]:
    """:func:`report_tables` of the run directory ``run_dir``, reading its timeline one row
    group at a time (memory: one row group plus per-step counts, not the timeline)."""
    root = Path(run_dir)
    manifest = read_manifest(root) if manifest is None else manifest
    tables = read_run(root, timeline=False)
    if not timeline_rows(root):
        raise ValueError(f"{root}: the run's timeline is empty; nothing to report")
    order = list(manifest.get("primary_order") or PRIMARY_ORDER)
    folded = manifest.get("aggregates") or {}
    if set(folded) >= set(AGGREGATE_FILES) and all(
            (root / f).is_file() for f in folded.values()):
        # folded while the run was written (RunWriter): no second pass over the timeline
        agg = _Folded(order, {name: pd.read_parquet(root / f) for name, f in folded.items()})
        return _assemble(tables, agg)
    # step durations: the distinct step times, read one row group at a time
    times = np.unique(np.concatenate(
        [np.unique(p["time"].to_numpy(dtype="datetime64[ns]"))
         for p in iter_timeline(root, ["time"])] or [np.zeros(0, "datetime64[ns]")]))
    dur_h = _step_durations_s(times, float(manifest["step_s"])) / 3600.0
    agg = _TimelineAggregates(order)
    for piece in iter_timeline(root, _AGG_COLUMNS, dictionary=True):  # row groups
        t = piece["time"].to_numpy(dtype="datetime64[ns]")
        agg.add(piece, dur_h[np.searchsorted(times, t)])
    return _assemble(tables, agg)


class _Folded:
    """The timeline tables a run directory already holds, in :func:`_assemble`'s terms."""

    def __init__(self, order: list[str], tables: dict[str, pd.DataFrame]):
        self.order, self._tables = order, tables

    def tables(self) -> dict[str, pd.DataFrame]:
        t = dict(self._tables)
        t["availability"] = t["availability"].astype({"time": "datetime64[ns]"})
        for name, cols in (("rules", ["rule"]), ("causes", ["cause", "dish_state"]),
                           ("dish_states", ["dish_state", "causes"])):
            t[name] = t[name].astype(dict.fromkeys(cols, object))
        return t


# ----------------------------------------------------------------------------- figures


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_base64(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _availability_figure(av: pd.DataFrame, step_s: float) -> Figure:
    fig = _new_figure(9.0, 4.2)
    ax = fig.add_subplot()
    times = av["time"].to_numpy(dtype="datetime64[ns]")
    end = times[-1] + np.timedelta64(int(round(step_s * 1e9)), "ns")
    edges = np.concatenate([times, [end]])
    x = np.repeat(edges, 2)[1:-1]        # each value holds over its whole step
    cats = [c[:-4] for c in av.columns if c.endswith("_pct")]
    shown = [c for c in cats if c in ("served",) or av[f"{c}_pct"].to_numpy().any()]
    ys = [np.repeat(av[f"{c}_pct"].to_numpy(np.float64), 2) for c in shown]
    ax.stackplot(x, *ys, labels=[LABELS.get(c, c) for c in shown],
                 colors=[COLORS.get(c, "#777777") for c in shown], linewidth=0)
    ax.set_ylim(0, 100)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylabel("share of terminals (%)")
    ax.set_xlabel("time (UTC)")
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_title("Terminal availability over time, unserved share by primary outage cause")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="state", fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


@functools.cache
def _border_rings() -> tuple[np.ndarray, ...]:
    """Exterior and interior rings (lon, lat) of the bundled 1:50m Europe borders."""
    path = resources.files("leotwin.data").joinpath("borders", _BORDERS)
    data = json.loads(path.read_text(encoding="utf-8"))
    rings = []
    for feature in data.get("features", []):
        geom = feature.get("geometry") or {}
        polys = ([geom["coordinates"]] if geom.get("type") == "Polygon"
                 else geom.get("coordinates", []) if geom.get("type") == "MultiPolygon" else [])
        for poly in polys:
            rings.extend(np.asarray(r, dtype=np.float64)[:, :2] for r in poly)
    return tuple(rings)


def _map_extent(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float, float, float]:
    ok = np.isfinite(lat) & np.isfinite(lon)
    if not ok.any():
        return -12.0, 45.0, 34.0, 72.0       # Europe
    pad = 3.0
    lon0, lon1 = float(lon[ok].min()) - pad, float(lon[ok].max()) + pad
    lat0, lat1 = float(lat[ok].min()) - pad, float(lat[ok].max()) + pad
    min_span = 10.0
    if lon1 - lon0 < min_span:
        mid = (lon0 + lon1) / 2
        lon0, lon1 = mid - min_span / 2, mid + min_span / 2
    if lat1 - lat0 < min_span / 2:
        mid = (lat0 + lat1) / 2
        lat0, lat1 = mid - min_span / 4, mid + min_span / 4
    return max(lon0, -180.0), min(lon1, 180.0), max(lat0, -89.0), min(lat1, 89.0)


def _map_figure(terms: pd.DataFrame) -> Figure:
    lat = terms["lat_deg"].to_numpy(np.float64)
    lon = terms["lon_deg"].to_numpy(np.float64)
    lon0, lon1, lat0, lat1 = _map_extent(lat, lon)
    aspect = 1.0 / math.cos(math.radians((lat0 + lat1) / 2))
    ratio = (lat1 - lat0) * aspect / (lon1 - lon0)       # axes height / width
    fig = _new_figure(9.5, min(max(6.5 * ratio + 1.3, 3.5), 9.0))
    ax = fig.add_subplot()
    rings = [r for r in _border_rings() if r[:, 0].max() >= lon0 and r[:, 0].min() <= lon1
             and r[:, 1].max() >= lat0 and r[:, 1].min() <= lat1]
    ax.add_collection(LineCollection(rings, colors="#707070", linewidths=0.6,
                                     label="country borders\n(Natural Earth 1:50m)"))
    hours = terms["outage_hours"].to_numpy(np.float64)
    max_h = float(hours.max()) if hours.size and hours.max() > 0 else 1.0

    def size(h):
        return 25.0 + 375.0 * np.asarray(h, dtype=float) / max_h

    dom = terms["dominant_cause"].astype(str).to_numpy()
    dom = np.where(hours > 0, dom, "no outage")
    for cause in [*PRIMARY_ORDER, "unattributed", "no outage"]:
        sel = dom == cause
        if sel.any():
            ax.scatter(lon[sel], lat[sel], s=size(hours[sel]), c=COLORS.get(cause, "#777777"),
                       edgecolors="black", linewidths=0.6, zorder=3, label=LABELS[cause])
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize="small",
               title="dominant outage cause")
    if (hours > 0).any():
        ref = sorted({max_h, max_h / 2, max_h / 8})
        handles = [Line2D([], [], linestyle="none", marker="o", markersize=math.sqrt(size(h)),
                          markerfacecolor="white", markeredgecolor="black") for h in ref]
        fig.legend(handles, [f"{h:.2g} h" for h in ref], loc="outside right lower",
                   fontsize="small", title="outage hours", labelspacing=1.2, borderpad=0.9)
    ax.set_xlim(lon0, lon1)
    ax.set_ylim(lat0, lat1)
    ax.set_aspect(aspect)
    ax.set_xlabel("longitude (deg E)")
    ax.set_ylabel("latitude (deg N)")
    ax.set_title("Outages by terminal: colour = dominant cause, marker area = outage hours")
    ax.grid(True, alpha=0.25)
    return fig


def _no_bars(ax, color: str, label: str, message: str) -> None:
    """An empty horizontal bar chart that says why it is empty (a figure readable alone)."""
    ax.barh([0], [0.0], color=color, label=label)
    ax.set_yticks([0], labels=["(none)"])
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center")
    ax.set_xlim(0, 1)


def _rules_figure(rules: pd.DataFrame) -> Figure:
    top = rules.head(TOP_RULES)
    fig = _new_figure(8.0, 1.6 + 0.4 * max(len(top), 2))
    ax = fig.add_subplot()
    if len(top):
        y = np.arange(len(top))
        ax.barh(y, top["terminal_hours_denied"].to_numpy(np.float64), height=0.6,
                color=COLORS["policy"], label="terminal-hours denied")
        ax.set_yticks(y, labels=top["rule"].astype(str).tolist())
        ax.invert_yaxis()
    else:
        _no_bars(ax, COLORS["policy"], "terminal-hours denied",
                 "no step was denied by a policy rule")
    ax.set_xlabel("terminal-hours denied (h)")
    ax.set_ylabel("policy rule")
    ax.set_title(f"Policy rules by terminal-hours denied (top {TOP_RULES})")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def _causes_figure(causes: pd.DataFrame) -> Figure:
    fig = _new_figure(8.0, 1.6 + 0.45 * max(len(causes), 2))
    ax = fig.add_subplot()
    if len(causes):
        y = np.arange(len(causes))
        unserved = causes["unserved_terminal_hours"].to_numpy(np.float64)
        degraded = causes["degraded_terminal_hours"].to_numpy(np.float64)
        colors = [COLORS.get(c, "#777777") for c in causes["cause"]]
        ax.barh(y, unserved, color=colors, edgecolor="black", linewidth=0.5,
                label="unserved")
        ax.barh(y, degraded, left=unserved, color=colors, hatch="//", alpha=0.6,
                edgecolor="black", linewidth=0.5, label="served, degraded")
        ax.set_yticks(y, labels=[f"{LABELS.get(c, c)}\n(dish: {d})" for c, d in
                                 zip(causes["cause"], causes["dish_state"], strict=True)])
        ax.invert_yaxis()
    else:
        _no_bars(ax, COLORS["served"], "unserved", "no outage or degradation in this run")
    ax.set_xlabel("terminal-hours (h)")
    ax.set_ylabel("primary cause (what the dish showed)")
    ax.set_title("Terminal-hours by primary cause")
    ax.legend(handles=[Patch(facecolor="#bbbbbb", edgecolor="black", label="unserved"),
                       Patch(facecolor="#bbbbbb", edgecolor="black", hatch="//",
                             label="served, degraded")], loc="lower right", fontsize="small")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{font-size:.9em;color:#555}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:bold}
.note{color:#555;font-size:.9em}
"""


def _table_html(df: pd.DataFrame, empty: str) -> str:
    if not len(df):
        return f'<p class="note">{html.escape(empty)}</p>'
    return df.to_html(index=False, escape=True, border=0, na_rep="—",
                      float_format=lambda v: f"{v:.3f}")


def _figure_html(fig: Figure, alt: str) -> str:
    return (f'<figure><img src="data:image/png;base64,{_png_base64(fig)}" '
            f'alt="{html.escape(alt, quote=True)}"><figcaption>{html.escape(alt)}</figcaption>'
            "</figure>")


def _usage_wide(usage: pd.DataFrame) -> pd.DataFrame:
    if not len(usage):
        return usage
    u = usage.assign(day=pd.to_datetime(usage["day"]).dt.strftime("%Y-%m-%d"))
    wide = u.pivot_table(index="account", columns="day", values="gb", aggfunc="sum")
    wide.columns = [f"{c} (GB)" for c in wide.columns]
    wide["total (GB)"] = wide.sum(axis=1)
    return wide.reset_index()


def _render(manifest: dict[str, Any], rt: dict[str, pd.DataFrame], figures: dict[str, str],
            run_dir: Path) -> str:
    counts = manifest.get("counts", {})
    esc = html.escape
    facts = {"run directory": str(run_dir),
             "window (UTC)": f"{manifest['time_start']} to {manifest['time_end']}",
             "step": f"{float(manifest['step_s']):g} s",
             "terminals / accounts": f"{counts.get('terminals', '?')} / "
                                     f"{counts.get('accounts', '?')}",
             "outage intervals": str(counts.get("intervals", "?")),
             "primary cause order": " > ".join(manifest["primary_order"]),
             "run written": f"{manifest.get('created_at', '?')} by leotwin "
                            f"{manifest.get('leotwin_version', '?')}"}
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts.items())
    toc = "".join(f'<li><a href="#{s}">{s}</a></li>' for s in REPORT_SECTIONS)
    contracts = rt["contracts"]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>leotwin run report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>leotwin run report</h1>", f"<dl>{dl}</dl>", f"<ol>{toc}</ol>",

        '<h2 id="availability">Availability over time by cause</h2>',
        '<p class="note">Share of terminals in each state at every step; unserved terminals '
        "are split by the primary cause of their outage (counterfactual attribution).</p>",
        figures["availability"],

        '<h2 id="map">Outages on the map</h2>',
        figures["map"],
        _table_html(rt["terminals"], "no terminals"),

        '<h2 id="rules">Top rules by terminal-hours denied</h2>',
        figures["rules"],
        _table_html(rt["rules"], "No step was denied by a policy rule."),

        '<h2 id="sla">SLA and usage per account</h2>',
        "<h3>Contracts</h3>",
        '<p class="note">Availability of each contract over its covered area and term versus its '
        "commitment; breach hours = shortfall × terminal-hours in scope; credit owed = breach "
        "hours × the contract's credit per breach hour.</p>",
        _table_html(contracts, "The run's policy has no contracts."),
        "<h3>Usage (decimal GB per account and UTC day)</h3>",
        _table_html(_usage_wide(rt["usage"]), "No usage."),

        '<h2 id="causes">Causes and what the dish showed</h2>',
        figures["causes"],
        "<h3>Terminal-hours per primary cause</h3>",
        _table_html(rt["causes"], "No outage or degradation in this run."),
        "<h3>Dish states over all terminal-steps</h3>",
        '<p class="note">The dish has no state for "denied by policy": a policy cut shows as '
        "SEARCHING, like a satellite failure.</p>",
        _table_html(rt["dish_states"], "No terminal-steps."),

        '<h2 id="assumptions">Assumptions</h2>',
        '<p class="note">Every input of this run that is not a public fact, as labelled in the '
        "scenario files (file, line, text).</p>",
        _table_html(_assumptions(run_dir), "The run directory lists no scenario assumptions."),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _assumptions(run_dir: Path) -> pd.DataFrame:
    path = run_dir / ASSUMPTIONS_FILE
    if not path.exists():
        return pd.DataFrame(columns=["file", "line", "assumption"])
    return pd.DataFrame(json.loads(path.read_text(encoding="utf-8")),
                        columns=["file", "line", "assumption"])


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of the run directory ``run_dir`` to ``out`` (default
    ``run_dir/report.html``; an existing directory gets ``report.html`` inside) and its tables
    as ``report_<name>.parquet`` next to it; return the report's path.

    Raises FileNotFoundError / ValueError (naming the file) for a missing or invalid run
    directory (see :func:`~leotwin.analytics.runio.read_run`).
    """
    root = Path(run_dir)
    manifest = read_manifest(root)
    rt = report_tables_streamed(root, manifest)      # validates the directory first
    path = root / REPORT_NAME if out is None else Path(out)
    if path.is_dir():
        path = path / REPORT_NAME
    step_s = float(manifest["step_s"])
    figs = {
        "availability": (_availability_figure(rt["availability"], step_s),
                         "Stacked share of terminals served, degraded and unserved by cause "
                         "at every step."),
        "map": (_map_figure(rt["terminals"]),
                "Terminals over country borders, coloured by dominant outage cause and sized "
                "by outage hours."),
        "rules": (_rules_figure(rt["rules"]),
                  "Policy rules ranked by the terminal-hours they denied."),
        "causes": (_causes_figure(rt["causes"]),
                   "Terminal-hours unserved and degraded per primary cause, with the dish "
                   "state shown."),
    }
    figures = {k: _figure_html(fig, alt) for k, (fig, alt) in figs.items()}
    text = _render(manifest, rt, figures, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    for name, frame in rt.items():
        frame.to_parquet(path.parent / f"report_{name}.parquet", index=False)
    log.info("wrote report %s", path)
    return path
