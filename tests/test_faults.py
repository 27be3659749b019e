"""Fault model arrays: explicit and random failures, outages, jammer tracks."""

from datetime import datetime

import numpy as np
import pytest

import leotwin
from leotwin.faults import (
    Faults,
    GatewayOutage,
    Jammer,
    RandomFailures,
    SatelliteFailure,
    TrackPoint,
    failed_mask,
    gateway_down_mask,
    jammer_state,
)

TIMES = leotwin.time_grid("2022-10-07T00:00Z", "2022-10-08T00:00Z", 60)


def test_explicit_failures_windows_and_permanent():
    sats = np.array([10, 20, 30])
    f = Faults(failures=[SatelliteFailure(sat=20, start=datetime(2022, 10, 7, 6),
                                          end=datetime(2022, 10, 7, 7)),
                         SatelliteFailure(sat=30, start=datetime(2022, 10, 7, 23)),
                         SatelliteFailure(sat=99, start=datetime(2022, 10, 7))])  # not in run
    m = failed_mask(f, sats, TIMES)
    assert not m[:, 0].any()
    assert m[:, 1].sum() == 60 and m[360, 1] and not m[420, 1]  # [06:00, 07:00)
    assert m[-1, 2] and m[:, 2].sum() == 61
    assert not failed_mask(None, sats, TIMES).any()


def test_random_failures_are_repeatable_and_near_the_renewal_fraction():
    sats = np.arange(2000)
    spec = RandomFailures(mtbf_h=100.0, repair_h=10.0, seed=7)
    a = failed_mask(Faults(random=spec), sats, TIMES)
    b = failed_mask(Faults(random=spec), sats, TIMES)
    np.testing.assert_array_equal(a, b)
    # Starting "up", the expected down fraction over one day is a bit below 10/110.
    assert 0.05 < a.mean() < 10 / 110
    c = failed_mask(Faults(random=spec.model_copy(update={"seed": 8})), sats, TIMES)
    assert not np.array_equal(a, c)


def test_gateway_and_pop_outages():
    f = Faults(outages=[GatewayOutage(id="o1", gateway="G2", start=datetime(2022, 10, 7, 1),
                                      end=datetime(2022, 10, 7, 2)),
                        GatewayOutage(id="o2", pop="FRA", start=datetime(2022, 10, 7, 12))])
    m = gateway_down_mask(f, ["G1", "G2", "G3"], ["FRA", "LON", "LON"], TIMES)
    assert m[:, 1].sum() == 60 and m[:, 0].sum() == 12 * 60 + 1 and not m[:, 2].any()
    with pytest.raises(ValueError, match="exactly one"):
        GatewayOutage(id="x", gateway="G1", pop="FRA", start=datetime(2022, 10, 7))


def test_jammer_track_interpolates_and_window():
    j = Jammer(id="j", lat_deg=0, lon_deg=0, eirp_dbw=30, bandwidth_mhz=100, center_ghz=11.7,
               start=datetime(2022, 10, 7, 6), end=datetime(2022, 10, 7, 18),
               track=[TrackPoint(time=datetime(2022, 10, 7, 6), lat_deg=50.0, lon_deg=179.5),
                      TrackPoint(time=datetime(2022, 10, 7, 8), lat_deg=50.0, lon_deg=-179.5)])
    ecef, active, eirp, bw, freq = jammer_state(Faults(jammers=[j]), TIMES)
    lat, lon, _ = leotwin.ecef_to_geodetic(ecef[:, 0])
    k = 7 * 60  # 07:00, halfway along the track: across the antimeridian, not through 0°
    assert abs(abs(lon[k]) - 180.0) < 1e-6 and lat[k] == pytest.approx(50.0)
    assert lon[0] == pytest.approx(179.5) and lon[-1] == pytest.approx(-179.5)  # held
    assert active[6 * 60, 0] and not active[18 * 60, 0] and not active[0, 0]
    assert eirp[0] == 30 and bw[0] == 100 and freq[0] == 11.7
