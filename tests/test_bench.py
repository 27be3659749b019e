"""Every benchmark runs once at a tiny size so none rots (timings are not asserted here)."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"


def test_benchmarks_run_at_tiny_size(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("leotwin_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["leotwin_bench"] = bench  # dataclasses look their module up here
    try:
        spec.loader.exec_module(bench)
    finally:
        sys.modules.pop("leotwin_bench", None)
    out = tmp_path / "results.md"
    assert bench.main(["--tiny", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    for needle in ("raw SatrecArray", "leotwin.propagate", "Skyfield", "leotwin.visible",
                   "dense numpy", "peak RSS", "leotwin.network_state", "networkx",
                   "GET /api/explain",
                   "redraw on a slider move"):
        assert needle in text
    capsys.readouterr()
