"""Policy state carried from chunk to chunk in scenario runs: quota, roaming, Dask modes."""

import json

import numpy as np
import pandas as pd

import leotwin
from leotwin.policy.engine import PolicyState
from test_run import chunk_bytes, make, tables_equal


def test_quota_spent_in_chunk_1_throttles_chunk_2(tmp_path):
    # 5 steps of 60 s per chunk; t1 (Kyiv) is served at ~100 Mbit/s, i.e. ~0.75 GB a step, so
    # a 2 GB quota is spent during chunk 1 — and throttles from chunk 2 on (per-chunk quota).
    sc = make(tmp_path / "s", quota_gb=2)
    leotwin.run(sc, tmp_path / "out")
    tl = pd.read_parquet(tmp_path / "out" / "timeline.parquet")
    t1 = tl[tl["terminal"] == "t1"].reset_index(drop=True)
    first, rest = t1.iloc[:5], t1.iloc[5:]
    assert first["served"].all() and (first["rule"] == "").all()
    assert (first["throughput_mbps"] > 2).all()
    used_gb = float((first["throughput_mbps"] * 60 * 1e6 / 8e9).sum())
    assert used_gb >= 2
    assert (rest["rule"] == "quota:p").all() and (rest["cause"] == "policy").all()
    assert (rest["throughput_mbps"] <= 2).all() and rest["served"].all()
    # the state written with chunk 0 carries exactly that usage into chunk 1
    state = PolicyState.from_dict(json.loads(
        (tmp_path / "out" / "chunks" / "state-00000.json").read_text()))
    assert np.isclose(state.used_gb[1], used_gb, rtol=1e-12)
    assert state.used_gb[0] == 0            # t0 is denied by the geofence: nothing used
    assert str(state.last_step) == "2022-10-05T12:04:00.000000000"

    # a quota of one chunk's usage and a half runs out one chunk later
    later = make(tmp_path / "s2", quota_gb=used_gb * 1.5)
    leotwin.run(later, tmp_path / "out2")
    tl2 = pd.read_parquet(tmp_path / "out2" / "timeline.parquet")
    rules = tl2.loc[tl2["terminal"] == "t1", "rule"].to_numpy()
    assert (rules[:10] == "").all() and (rules[10:] == "quota:p").all()


def test_state_pass_on_dask_equals_the_chained_single_process_run(tmp_path):
    # no quota (no plan): the state depends on time and positions only, the driver computes
    # every chunk's start state first and the chunks run in parallel on the cluster
    sc = make(tmp_path / "s", roaming=True, n_terms=3)
    leotwin.run(sc, tmp_path / "single")
    part = leotwin.run(sc, tmp_path / "dask", max_chunks=1)           # resume from chunk 1
    assert part.chunks_done == 1
    leotwin.run(sc, tmp_path / "dask", dask="local")
    assert chunk_bytes(tmp_path / "dask") == chunk_bytes(tmp_path / "single")
    tables_equal(tmp_path / "dask", tmp_path / "single")
    last = json.loads((tmp_path / "single" / "chunks" / "state-00003.json").read_text())
    assert last["roaming_days"] == [0, 0, 1] and last["outside_today"] == [False, False, True]
    tl = pd.read_parquet(tmp_path / "single" / "timeline.parquet")
    assert (tl.loc[tl["terminal"] == "t2", "rule"] == "roaming:r").all()


def test_a_chunk_without_its_state_file_is_recomputed(tmp_path):
    sc = make(tmp_path / "s", quota_gb=2)
    clean = tmp_path / "clean"
    leotwin.run(sc, clean)
    out = tmp_path / "out"
    leotwin.run(sc, out, max_chunks=3)
    (out / "chunks" / "state-00001.json").unlink()     # chunk 1 is no longer complete
    done = leotwin.run(sc, out, max_chunks=0)
    assert done.chunks_done == 2
    leotwin.run(sc, out)
    assert chunk_bytes(out) == chunk_bytes(clean)
