"""Ku-band downlink budget: hand values, monotonicity properties, jamming geometry, MODCODs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leotwin.defaults import DEFAULTS, default
from leotwin.frames import enu_basis, geodetic_to_ecef
from leotwin.links.budget import (
    BOLTZMANN_J_K,
    MODCOD,
    MODCOD_EFFICIENCY_BPS_HZ,
    MODCOD_THRESHOLD_DB,
    capacity_mbps,
    fspl_db,
    jammed,
    modcod_index,
    phased_array_gain_db,
    sinr_db,
    spectral_efficiency,
)

LAT, LON = 40.0, -100.0
TERM = geodetic_to_ecef(LAT, LON, 0.0)[None]  # (1 terminal, 3)
SAT_OVERHEAD = geodetic_to_ecef(LAT, LON, 550e3)[None, None]  # (1 time, 1 terminal, 3)
EAST, NORTH, UP = enu_basis(LAT, LON)
F = default("downlink_freq_ghz")
LOWEST = MODCOD_THRESHOLD_DB[0]


def ground_jammer(north_km: float) -> np.ndarray:
    """A jammer on the ellipsoid ``north_km`` (approximately) north of the terminal, (1, 1, 3)."""
    return geodetic_to_ecef(LAT + north_km / 111.0, LON, 0.0)[None, None]


def one_jammer(jam, eirp_dbw, bw_mhz=250.0, freq_ghz=F, active=True, sat=SAT_OVERHEAD):
    return sinr_db(TERM, sat, jam, [eirp_dbw], [bw_mhz], [freq_ghz], [[active]])[0, 0]


CLEAR = sinr_db(TERM, SAT_OVERHEAD)[0, 0]


# --- free-space path loss --------------------------------------------------------------------

def test_fspl_hand_values():
    # 20 log10(4π · 550e3 m · 12e9 Hz / c) = 92.45 + 20 log10(550) + 20 log10(12) = 168.84 dB;
    # the "≈ 168.9 dB" is this value rounded.
    assert fspl_db(550.0, 12.0) == pytest.approx(168.8387, abs=1e-3)
    assert abs(fspl_db(550.0, 12.0) - 168.9) < 0.1
    doubling = 20.0 * np.log10(2.0)  # 6.0206 dB
    assert fspl_db(1100.0, 12.0) - fspl_db(550.0, 12.0) == pytest.approx(doubling, abs=1e-9)
    assert fspl_db(550.0, 24.0) - fspl_db(550.0, 12.0) == pytest.approx(doubling, abs=1e-9)
    assert doubling == pytest.approx(6.02, abs=0.005)


def test_fspl_broadcasts_and_keeps_nan():
    out = fspl_db(np.array([[550.0], [np.nan]]), np.array([10.7, 12.7]))
    assert out.shape == (2, 2)
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()


def test_fspl_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="range_km"):
        fspl_db(-1.0, 12.0)
    with pytest.raises(ValueError, match="freq_ghz"):
        fspl_db(550.0, 0.0)
    with pytest.raises(ValueError, match=r"range_km \(3,\).*freq_ghz \(2,\)"):
        fspl_db(np.ones(3), np.ones(2))


# --- antenna pattern -------------------------------------------------------------------------

def test_pattern_peak_scan_loss_and_floor():
    gm = default("terminal_peak_gain_dbi")
    assert phased_array_gain_db(0.0, gm) == pytest.approx(gm)
    # cos^1.2 scan loss at the 25 deg elevation mask (65 deg from the normal): 4.49 dB.
    assert gm - phased_array_gain_db(0.0, gm, 65.0) == pytest.approx(
        -12.0 * np.log10(np.cos(np.radians(65.0))), abs=1e-9)
    # 3 dB down at half the beamwidth (broadside).
    half = default("terminal_beamwidth_3db_deg") / 2.0
    assert gm - phased_array_gain_db(half, gm) == pytest.approx(3.0, abs=1e-9)
    floor = default("terminal_sidelobe_floor_dbi")
    assert phased_array_gain_db(90.0, gm) == floor
    # At or below the horizon the element factor vanishes: floor even right next to the beam.
    assert phased_array_gain_db(0.5, gm, 80.0, direction_zenith_deg=90.0) == floor
    assert phased_array_gain_db(0.5, gm, 80.0, direction_zenith_deg=120.0) == floor


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 180.0), st.floats(0.0, 180.0), st.floats(0.0, 89.0))
def test_pattern_non_increasing_off_axis_and_bounded(a, b, scan):
    gm = 33.0
    lo, hi = sorted((a, b))
    g_lo, g_hi = phased_array_gain_db([lo, hi], gm, scan)
    assert g_hi <= g_lo + 1e-12
    assert default("terminal_sidelobe_floor_dbi") <= g_hi <= g_lo <= gm


# --- clear sky -------------------------------------------------------------------------------

def test_clear_sky_overhead_supports_a_high_modcod():
    # S = 9.8 dBW/MHz + 24.0 dB(MHz) - 168.62 dB + 33 dBi = -101.8 dBW;
    # N = k · 200 K · 250 MHz = -121.6 dBW; SINR = 19.77 dB -> 256APSK 3/4 (19.57 dB).
    k_t_b = 10 * np.log10(BOLTZMANN_J_K * 200.0 * 250e6)
    hand = 9.8 + 10 * np.log10(250.0) - fspl_db(550.0, 11.7) + 33.0 - k_t_b
    assert CLEAR == pytest.approx(hand, abs=1e-6)
    assert CLEAR == pytest.approx(19.77, abs=0.01)
    assert MODCOD[int(modcod_index(CLEAR))].name == "256APSK 3/4"
    assert spectral_efficiency(CLEAR) > 5.5
    assert capacity_mbps(CLEAR) == pytest.approx(5.900855 * 250.0)
    assert not jammed(CLEAR)


def test_low_elevation_still_closes():
    # Satellite 550 km up at about 27 deg elevation (8 deg of latitude north): longer path and
    # 4 dB scan loss, still ~9.8 dB (8PSK 3/4).
    sat = geodetic_to_ecef(LAT + 8.0, LON, 550e3)[None, None]
    s = sinr_db(TERM, sat)[0, 0]
    assert 8.0 < s < CLEAR - 8.0
    assert not jammed(s)


def test_unserved_is_nan_and_not_jammed():
    sat = np.concatenate([SAT_OVERHEAD, np.full((1, 1, 3), np.nan)], axis=0)  # 2 times
    out = sinr_db(TERM, sat, ground_jammer(0.1), [30.0])
    assert out.shape == (2, 1)
    assert np.isfinite(out[0, 0]) and np.isnan(out[1, 0])
    assert jammed(out).tolist() == [[True], [False]]
    assert np.isnan(capacity_mbps(out[1, 0]))


# --- jammers ---------------------------------------------------------------------------------

# Why "next to" means a few hundred metres for a 100 W jammer: a ground jammer sits at the
# terminal's horizon, 90 deg from the normal of the flat array, where the array only has its
# -10 dBi side-lobe floor (ITU-R S.465) -- 43 dB below the 33 dBi it points at the satellite.
# The satellite signal arrives at the PFD limit (-116 dB(W/m^2)/MHz), so SINR drops below
# QPSK 1/4 (-2.35 dB) only while jammer EIRP - FSPL(d) - 10 dBi > S + 2.35 dB, i.e. out to
# 0.19 km for 10 dBW, 0.61 km for 20 dBW, 1.93 km for 30 dBW and 6.1 km for 40 dBW (all in-band,
# terminal served from overhead). At 500 km the jammer is 54 dB further attenuated and has
# no measurable effect.
@pytest.mark.parametrize(("eirp_dbw", "near_km"), [(10.0, 0.1), (20.0, 0.3), (30.0, 1.0)])
def test_jammer_next_to_terminal_jams_far_away_does_not(eirp_dbw, near_km):
    near = one_jammer(ground_jammer(near_km), eirp_dbw)
    far = one_jammer(ground_jammer(500.0), eirp_dbw)
    assert jammed(near)
    assert not jammed(far)
    assert far == pytest.approx(CLEAR, abs=0.05)  # 0.01 dB less at 30 dBW


def test_jamming_range_of_a_100_w_jammer():
    # 20 dBW in-band: jammed at 0.55 km, served (degraded, QPSK 1/2) at 1 km.
    assert jammed(one_jammer(ground_jammer(0.55), 20.0))
    at_1km = one_jammer(ground_jammer(1.0), 20.0)
    assert not jammed(at_1km)
    assert 1.0 < at_1km < 3.0


def test_jammer_bandwidth_overlap():
    jam = ground_jammer(0.3)
    b = default("downlink_bandwidth_mhz")
    full = one_jammer(jam, 20.0, bw_mhz=b)
    # Half the jammer's band outside the channel: 3 dB less interference power.
    half = one_jammer(jam, 20.0, bw_mhz=b, freq_ghz=F + b / 2e3)
    narrow = one_jammer(jam, 20.0, bw_mhz=10.0)  # all its power in the channel
    assert half > full
    assert narrow == pytest.approx(full, abs=1e-9)
    # Just outside the band: no effect at all.
    assert one_jammer(jam, 40.0, bw_mhz=10.0, freq_ghz=F + (b / 2 + 5.0) / 1e3) == CLEAR


def test_several_jammers_add_and_inactive_ones_do_not():
    n_time = 3
    sat = np.repeat(SAT_OVERHEAD, n_time, axis=0)
    jams = np.concatenate([ground_jammer(0.5), ground_jammer(-0.5)], axis=1)  # (1, 2, 3)
    active = np.array([[False, False], [True, False], [True, True]])
    out = sinr_db(TERM, sat, np.repeat(jams, n_time, axis=0), [20.0, 20.0], None, None, active)
    assert out[0, 0] == CLEAR
    assert out[2, 0] < out[1, 0] < CLEAR
    # Static jammer positions (n_jam, 3) give the same result.
    static = sinr_db(TERM, sat, jams[0], [20.0, 20.0], jammer_active=active)
    np.testing.assert_array_equal(static, out)


def test_whole_arrays_many_times_and_terminals():
    rng = np.random.default_rng(1)
    n_time, n_term = 4, 50
    lat = LAT + rng.uniform(-1, 1, n_term)
    lon = LON + rng.uniform(-1, 1, n_term)
    term = geodetic_to_ecef(lat, lon, 0.0)
    sat = geodetic_to_ecef(lat + rng.uniform(-3, 3, (n_time, n_term)), lon, 550e3)
    sat[1, :10] = np.nan
    jam = geodetic_to_ecef([LAT, LAT + 0.5], [LON, LON + 0.5], 0.0)
    active = rng.random((n_time, 2)) < 0.7
    out = sinr_db(term, sat, jam, [30.0, 25.0], [250.0, 50.0], [F, F + 0.05], active)
    assert out.shape == (n_time, n_term)
    assert np.isnan(out[1, :10]).all() and np.isfinite(out[~np.isnan(sat[..., 0])]).all()
    # Same as terminal positions given per time step.
    out3 = sinr_db(np.broadcast_to(term, sat.shape), sat, jam, [30.0, 25.0], [250.0, 50.0],
                   [F, F + 0.05], active)
    np.testing.assert_allclose(out3, out, rtol=0, atol=1e-12)
    # Each (time, terminal) equals the same link computed alone.
    t, k = 2, 17
    alone = sinr_db(term[k:k + 1], sat[t:t + 1, k:k + 1], jam, [30.0, 25.0], [250.0, 50.0],
                    [F, F + 0.05], active[t:t + 1])
    assert alone[0, 0] == pytest.approx(out[t, k], abs=1e-12)


def test_colocated_jammer_jams():
    assert one_jammer(TERM[None], 0.0) == -np.inf
    assert jammed(one_jammer(TERM[None], 0.0))


# --- monotonicity (Hypothesis) ---------------------------------------------------------------

directions = st.tuples(st.floats(0.0, 360.0), st.floats(-30.0, 89.0))  # azimuth, elevation


def jammer_along(az_deg, el_deg, dist_km):
    az, el = np.radians(az_deg), np.radians(el_deg)
    u = np.cos(el) * (np.sin(az) * EAST + np.cos(az) * NORTH) + np.sin(el) * UP
    return (TERM[0] + dist_km * u)[None, None]


sat_offsets = st.floats(-8.0, 8.0)  # serving satellite latitude offset (elevation >= ~27 deg)


def serving(offset_deg):
    return geodetic_to_ecef(LAT + offset_deg, LON, 550e3)[None, None]


@settings(max_examples=150, deadline=None)
@given(directions, st.floats(0.01, 3000.0), st.floats(-20.0, 60.0), st.floats(0.0, 30.0),
       sat_offsets)
def test_more_jammer_eirp_never_raises_sinr(direction, dist_km, eirp, extra_db, offset):
    jam = jammer_along(*direction, dist_km)
    sat = serving(offset)
    assert one_jammer(jam, eirp + extra_db, sat=sat) <= one_jammer(jam, eirp, sat=sat)


# Rays at or above the horizontal: there a point farther along the ray is also higher, so it
# stays within the radio horizon. Below the horizontal the property does not hold physically:
# a near jammer on the ground can be hidden by the Earth while a far one high up is seen.
directions_up = st.tuples(st.floats(0.0, 360.0), st.floats(0.0, 89.0))


@settings(max_examples=150, deadline=None)
@given(directions_up, st.floats(0.01, 3000.0), st.floats(1.0, 100.0), st.floats(-20.0, 60.0),
       sat_offsets)
def test_farther_jammer_never_lowers_sinr(direction, dist_km, factor, eirp, offset):
    # Farther along the same ray from the terminal (same direction, so same antenna gain).
    sat = serving(offset)
    near = one_jammer(jammer_along(*direction, dist_km), eirp, sat=sat)
    far = one_jammer(jammer_along(*direction, dist_km * factor), eirp, sat=sat)
    assert far >= near - 1e-9


@settings(max_examples=100, deadline=None)
@given(st.floats(0.05, 2000.0), st.floats(0.0, 1500.0))
def test_farther_ground_jammer_never_lowers_sinr(d1, extra):
    assert one_jammer(ground_jammer(d1 + extra), 30.0) >= one_jammer(ground_jammer(d1), 30.0)


@settings(max_examples=100, deadline=None)
@given(directions, st.floats(0.01, 3000.0), st.floats(-20.0, 80.0), st.floats(0.1, 2000.0),
       st.floats(0.0, 1000.0), st.booleans(), sat_offsets)
def test_jammer_outside_the_band_has_no_effect(direction, dist_km, eirp, bw, gap_mhz, above,
                                               offset):
    b = default("downlink_bandwidth_mhz")
    shift_mhz = (b / 2 + bw / 2 + gap_mhz) * (1 if above else -1)
    sat = serving(offset)
    out = one_jammer(jammer_along(*direction, dist_km), eirp, bw_mhz=bw,
                     freq_ghz=F + shift_mhz / 1e3, sat=sat)
    assert out == sinr_db(TERM, sat)[0, 0]


@settings(max_examples=100, deadline=None)
@given(directions, st.floats(0.01, 3000.0), st.floats(-20.0, 80.0), sat_offsets)
def test_inactive_jammer_has_no_effect(direction, dist_km, eirp, offset):
    sat = serving(offset)
    out = one_jammer(jammer_along(*direction, dist_km), eirp, active=False, sat=sat)
    assert out == sinr_db(TERM, sat)[0, 0]


# --- MODCOD ----------------------------------------------------------------------------------

def test_modcod_table_is_increasing_and_spans_the_subset():
    assert np.all(np.diff(MODCOD_THRESHOLD_DB) > 0)
    assert np.all(np.diff(MODCOD_EFFICIENCY_BPS_HZ) > 0)
    assert MODCOD[0].name == "QPSK 1/4" and MODCOD[-1].name == "256APSK 3/4"
    assert (MODCOD[0].threshold_db, MODCOD[-1].threshold_db) == (-2.35, 19.57)


@settings(max_examples=300, deadline=None)
@given(st.floats(-50.0, 50.0), st.floats(-50.0, 50.0))
def test_spectral_efficiency_is_a_non_decreasing_step(a, b):
    lo, hi = sorted((a, b))
    e_lo, e_hi = spectral_efficiency([lo, hi])
    assert e_lo <= e_hi
    assert e_hi in set(MODCOD_EFFICIENCY_BPS_HZ) | {0.0}


def test_spectral_efficiency_steps_at_thresholds():
    thr, eff = MODCOD_THRESHOLD_DB, MODCOD_EFFICIENCY_BPS_HZ
    np.testing.assert_array_equal(spectral_efficiency(thr), eff)
    np.testing.assert_array_equal(spectral_efficiency(np.nextafter(thr, -np.inf)),
                                  np.r_[0.0, eff[:-1]])
    assert spectral_efficiency(-np.inf) == 0.0 and spectral_efficiency(99.0) == eff[-1]
    assert np.isnan(spectral_efficiency(np.nan))
    assert jammed([-np.inf, thr[0] - 1e-9, thr[0], np.nan]).tolist() == [True, True, False,
                                                                           False]
    assert capacity_mbps([thr[0], -10.0], 100.0).tolist() == [eff[0] * 100.0, 0.0]


# --- bad inputs ------------------------------------------------------------------------------

def test_sinr_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="sat_ecef_km"):
        sinr_db(TERM, SAT_OVERHEAD[0])
    with pytest.raises(ValueError, match="terminal_ecef_km"):
        sinr_db(np.zeros((2, 3)), SAT_OVERHEAD)
    with pytest.raises(ValueError, match="jammer_ecef_km"):
        sinr_db(TERM, SAT_OVERHEAD, np.zeros((2, 1, 3)), [10.0])
    with pytest.raises(ValueError, match="jammer_eirp_dbw"):
        sinr_db(TERM, SAT_OVERHEAD, ground_jammer(1.0), [10.0, 20.0])
    with pytest.raises(ValueError, match="jammer_active"):
        sinr_db(TERM, SAT_OVERHEAD, ground_jammer(1.0), [10.0], jammer_active=np.ones((2, 2)))
    with pytest.raises(ValueError, match="jammer_bandwidth_mhz"):
        sinr_db(TERM, SAT_OVERHEAD, ground_jammer(1.0), [10.0], [-5.0])
    with pytest.raises(ValueError, match="bandwidth_mhz"):
        capacity_mbps(np.zeros(3), np.ones(2))


def test_defaults_present_with_sources():
    for name in ("downlink_freq_ghz", "downlink_bandwidth_mhz", "sat_eirp_density_dbw_mhz",
                 "terminal_peak_gain_dbi", "terminal_noise_temp_k", "terminal_beamwidth_3db_deg",
                 "terminal_near_sidelobe_db", "terminal_sidelobe_floor_dbi",
                 "terminal_scan_loss_exponent", "jammer_bandwidth_mhz"):
        d = DEFAULTS[name]
        assert d.unit and len(d.source) > 10
    # The EIRP density is the PFD limit reached at nadir from 550 km.
    pfd = -116.0 + 10 * np.log10(4 * np.pi * (550e3) ** 2)
    assert default("sat_eirp_density_dbw_mhz") == pytest.approx(pfd, abs=0.05)


def test_a_ground_jammer_beyond_the_radio_horizon_is_blocked():
    sat = serving(0.0)
    clear = one_jammer(jammer_along(0.0, 0.0, 1.0), -300.0, sat=sat)
    # Same 40 dBW jammer on the ground (mast height from the defaults): jams at 5 km, is
    # hidden by the Earth at 25 km (4/3-Earth horizon ≈ 4.12 (√2 + √10) ≈ 19 km).
    near = geodetic_to_ecef(LAT + 5.0 / 111.2, LON, 10.0)[None, None]
    far = geodetic_to_ecef(LAT + 25.0 / 111.2, LON, 10.0)[None, None]
    assert one_jammer(near, 40.0, sat=sat) < clear - 10.0
    assert one_jammer(far, 40.0, sat=sat) == pytest.approx(clear, abs=1e-9)


def test_jammed_links_equals_the_direct_link_budget():
    """jammed_links (jammer pruning by radio horizon, clear-sky bound) gives exactly
    jammed(sinr_db(...)) for links near and far from the jammers, above and below the
    horizon."""
    from leotwin.frames import geodetic_to_ecef
    from leotwin.links.budget import jammed_links, terminal_up_vectors

    rng = np.random.default_rng(3)
    n = 400
    lat, lon = rng.uniform(47.0, 49.0, n), rng.uniform(35.0, 38.0, n)
    term = geodetic_to_ecef(lat, lon, 0.0)
    up = terminal_up_vectors(term)
    # Satellites 550 km up, 0-60 deg off the zenith in a random direction; a few far off.
    off = rng.uniform(0.0, 60.0, n)
    sat = term + 550.0 * (up + np.tan(np.radians(off))[:, None]
                          * np.cross(up, rng.normal(size=(n, 3))))
    sat[:5] = term[:5] + np.array([20000.0, 0.0, 0.0])
    jam = geodetic_to_ecef(np.array([48.0, 47.5]), np.array([36.5, 35.2]), 0.0)
    eirp, bw, f = np.array([40.0, 25.0]), np.array([250.0, 100.0]), np.array([11.7, 11.7])
    for active in (np.array([True, True]), np.array([False, True])):
        ref = jammed(sinr_db(term[None], sat[None], jam[None], eirp, bw, f, active[None]))[0]
        got = jammed_links(term, sat, jam, eirp, bw, f, active, terminal_up=up)
        np.testing.assert_array_equal(got, ref)
        assert ref.any() and not ref.all()
