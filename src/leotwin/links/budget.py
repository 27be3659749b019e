"""Ku-band user downlink budget: path loss, terminal antenna pattern, SINR, MODCOD, capacity.

Everything works on whole arrays; every assumed number is read from :mod:`leotwin.defaults`.

Signal, noise, interference (all in the user channel of bandwidth ``B``)
------------------------------------------------------------------------
* Signal: satellite EIRP density (dBW/MHz) + 10 log10(B) − FSPL(satellite range) + terminal
  gain toward the satellite. The terminal steers its beam at the serving satellite, so the gain
  is the broadside peak minus the scan loss at the satellite's zenith angle.
* Noise: k T B with the terminal system noise temperature T.
* Interference: for every jammer active at that time, its EIRP spread evenly over its own
  bandwidth and counted only in the overlap with the user channel, minus FSPL over the
  geometric (straight-line) jammer→terminal distance, plus the terminal gain toward the jammer
  (off-boresight angle = angle between the directions to the serving satellite and to the
  jammer). Free-space loss is evaluated at the user-channel centre frequency for both paths.
  No terrain, clutter, diffraction or Earth-blockage loss is added: a jammer beyond the radio
  horizon is attenuated only by its (long) free-space path, which overestimates its effect
  (conservative for the victim). A jammer at or below the terminal's horizontal plane gets the
  side-lobe floor, because the element factor of a flat array vanishes at 90° from its normal.
  A jammer with a NaN position is ignored at that time.

SINR = S / (N + ΣI), in dB; NaN where the terminal is unserved (serving satellite NaN).

Terminal antenna (:func:`phased_array_gain_db`)
-----------------------------------------------
A flat phased array with its normal at the local (geodetic) zenith, by pattern multiplication
of an element factor and an array-factor envelope, floored::

    G(θ) = max( E(z) + max( Gm − 12 (θ/θ3s)²,  min(Gm + L_N, 32 − 25 log10 θ) ),  G_floor )

* ``E(z) = 10 n log10(cos z)`` is the element pattern at the angle ``z`` of the direction of
  interest from the array normal (−∞ for z ≥ 90°); at the beam peak ``z`` is the scan angle and
  ``E`` is the familiar cosⁿ scan loss (n = 1.2).
* ``Gm − 12 (θ/θ3s)²`` is the parabolic (Gaussian in dB) main lobe of ITU-R S.1528 §1.2
  (``Gm − 3 (ψ/ψb)²`` with ψb = θ3/2); the 3 dB beamwidth widens with scan as
  ``θ3s = θ3 / cos(scan)`` (the projected aperture shrinks by cos(scan)).
* ``min(Gm + L_N, 32 − 25 log10 θ)`` is the side-lobe envelope: the ITU-R S.465-6 earth-station
  reference pattern (32 − 25 log10 θ dBi, also 47 CFR 25.209(a)), capped at a near-in level L_N
  below the peak (ITU-R S.1528's L_N) so that it never exceeds the main lobe near the axis.
* ``G_floor`` = −10 dBi, the S.465-6 level from 48° to 180°.

The pattern is non-increasing in θ, never above ``Gm``, and never below the floor.

MODCOD table
------------
Ideal AWGN Es/N0 for quasi-error-free operation, normal FECFRAME (64,800 bits), and spectral
efficiency (information bits per transmitted symbol) from ETSI EN 302 307-1 V1.4.1 Table 13
(the DVB-S2 MODCODs, which DVB-S2X keeps) and ETSI EN 302 307-2 V1.1.1 Table 20a (DVB-S2X
additions), a subset from QPSK 1/4 to 256APSK 3/4 with thresholds and efficiencies both strictly
increasing. SINR is compared with Es/N0 directly (interference treated as Gaussian noise) and
capacity is efficiency × channel bandwidth (symbol rate taken equal to the bandwidth, i.e.
roll-off, pilots and implementation margin ignored: an upper bound by ~5-15 %).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..constants import BOLTZMANN_J_K, C_KM_S
from ..defaults import default
from ..frames import ecef_to_geodetic, enu_basis

# S.465-6 side-lobe envelope 32 − 25 log10 θ (dBi, θ in degrees).
_S465_A_DBI = 32.0
_S465_B_DB = 25.0


class ModCod(NamedTuple):
    name: str
    threshold_db: float  # required Es/N0 (ideal AWGN, QEF, normal FECFRAME)
    efficiency_bps_hz: float  # information bits per symbol
    source: str  # "S2" = EN 302 307-1 Table 13, "S2X" = EN 302 307-2 Table 20a


#: DVB-S2/S2X MODCODs (subset), thresholds and efficiencies strictly increasing.
MODCOD: tuple[ModCod, ...] = (
    ModCod("QPSK 1/4", -2.35, 0.490243, "S2"),
    ModCod("QPSK 1/3", -1.24, 0.656448, "S2"),
    ModCod("QPSK 2/5", -0.30, 0.789412, "S2"),
    ModCod("QPSK 9/20", 0.22, 0.889135, "S2X"),
    ModCod("QPSK 1/2", 1.00, 0.988858, "S2"),
    ModCod("QPSK 3/5", 2.23, 1.188304, "S2"),
    ModCod("QPSK 2/3", 3.10, 1.322253, "S2"),
    ModCod("QPSK 3/4", 4.03, 1.487473, "S2"),
    ModCod("QPSK 5/6", 5.18, 1.654663, "S2"),
    ModCod("8PSK 3/5", 5.50, 1.779991, "S2"),
    ModCod("8PSK 2/3", 6.62, 1.980636, "S2"),
    ModCod("8PSK 3/4", 7.91, 2.228124, "S2"),
    ModCod("16APSK 2/3-L", 8.43, 2.635236, "S2X"),
    ModCod("16APSK 3/4", 10.21, 2.966728, "S2"),
    ModCod("16APSK 7/9", 10.65, 3.077225, "S2X"),
    ModCod("32APSK 2/3-L", 11.10, 3.289502, "S2X"),
    ModCod("32APSK 32/45", 11.75, 3.510192, "S2X"),
    ModCod("32APSK 3/4", 12.73, 3.703295, "S2"),
    ModCod("32APSK 7/9", 13.05, 3.841226, "S2X"),
    ModCod("64APSK 32/45-L", 13.98, 4.206428, "S2X"),
    ModCod("64APSK 7/9", 15.47, 4.603122, "S2X"),
    ModCod("64APSK 5/6", 16.55, 4.933701, "S2X"),
    ModCod("128APSK 3/4", 17.73, 5.163248, "S2X"),
    ModCod("256APSK 32/45", 18.59, 5.593162, "S2X"),
    ModCod("256APSK 3/4", 19.57, 5.900855, "S2X"),
)
MODCOD_THRESHOLD_DB = np.array([m.threshold_db for m in MODCOD])
MODCOD_EFFICIENCY_BPS_HZ = np.array([m.efficiency_bps_hz for m in MODCOD])
MODCOD_THRESHOLD_DB.flags.writeable = False
MODCOD_EFFICIENCY_BPS_HZ.flags.writeable = False


# --- helpers -------------------------------------------------------------------------------


def _broadcast(**arrays) -> tuple[np.ndarray, ...]:
    """Broadcast named float arrays, raising ValueError that names them when they do not."""
    values = [np.asarray(a, dtype=np.float64) for a in arrays.values()]
    try:
        return tuple(np.broadcast_arrays(*values))
    except ValueError:
        shapes = ", ".join(f"{k} {v.shape}" for k, v in zip(arrays, values, strict=True))
        raise ValueError(f"shapes do not broadcast: {shapes}") from None


def _check_nonnegative(name: str, a: np.ndarray) -> None:
    if np.any(a < 0):  # NaN compares False: NaN stays data
        raise ValueError(f"{name} must be non-negative (got min {np.nanmin(a)!r})")


def _check_positive(name: str, a: np.ndarray) -> None:
    if np.any(a <= 0):
        raise ValueError(f"{name} must be positive (got min {np.nanmin(a)!r})")


def _xyz(name: str, a, ndims: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim not in ndims or arr.shape[-1] != 3:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be a {want} array of ECEF km with last axis 3 "
                         f"(got shape {arr.shape})")
    return arr


def _angle_deg(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle between unit vectors (last axis), degrees; robust near 0 and 180°."""
    cross = np.linalg.norm(np.cross(u, v), axis=-1)
    dot = np.sum(u * v, axis=-1)
    return np.degrees(np.arctan2(cross, dot))


def _db_to_w(x_db: np.ndarray) -> np.ndarray:
    return np.power(10.0, np.asarray(x_db) / 10.0)


# --- propagation and antenna ---------------------------------------------------------------


def fspl_db(range_km, freq_ghz) -> np.ndarray:
    """Free-space path loss 20 log10(4π d f / c), dB (≈ 92.45 + 20 log10 d_km + 20 log10 f_GHz).

    Broadcasts; NaN range gives NaN; zero range gives −inf. Raises ``ValueError`` for a negative
    ``range_km``, a non-positive ``freq_ghz`` or shapes that do not broadcast.
    """
    d, f = _broadcast(range_km=range_km, freq_ghz=freq_ghz)
    _check_nonnegative("range_km", d)
    _check_positive("freq_ghz", f)
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(4.0 * np.pi * d * f * 1e9 / C_KM_S)


def phased_array_gain_db(off_boresight_deg, peak_gain_dbi, scan_deg=0.0, *,
                         direction_zenith_deg=None, beamwidth_3db_deg=None,
                         near_sidelobe_db=None, sidelobe_floor_dbi=None,
                         scan_loss_exponent=None) -> np.ndarray:
    """Gain (dBi) of a flat phased array toward a direction (see the module notes for the model).

    ``off_boresight_deg``: angle between the steered beam and the direction of interest.
    ``scan_deg``: angle of the steered beam from the array normal (zenith), which sets the
    beam broadening and, unless ``direction_zenith_deg`` is given, the element factor.
    ``direction_zenith_deg``: angle of the direction of interest from the array normal, for the
    element factor (default: ``scan_deg``, i.e. the direction is taken to lie near the beam);
    90° or more (at or below the horizon) gives the side-lobe floor. The remaining keywords
    default to the ``terminal_*`` entries of :data:`leotwin.defaults.DEFAULTS`. Broadcasts.
    """
    theta3 = default("terminal_beamwidth_3db_deg") if beamwidth_3db_deg is None \
        else beamwidth_3db_deg
    l_n = default("terminal_near_sidelobe_db") if near_sidelobe_db is None else near_sidelobe_db
    floor = default("terminal_sidelobe_floor_dbi") if sidelobe_floor_dbi is None \
        else sidelobe_floor_dbi
    n = default("terminal_scan_loss_exponent") if scan_loss_exponent is None \
        else scan_loss_exponent
    zen = scan_deg if direction_zenith_deg is None else direction_zenith_deg
    theta, gm, scan, zen = _broadcast(off_boresight_deg=off_boresight_deg,
                                      peak_gain_dbi=peak_gain_dbi, scan_deg=scan_deg,
                                      direction_zenith_deg=zen)
    _check_nonnegative("off_boresight_deg", theta)
    _check_nonnegative("scan_deg", scan)
    _check_positive("beamwidth_3db_deg", np.asarray(theta3, dtype=np.float64))
    cos_scan = np.cos(np.radians(np.minimum(scan, 90.0)))
    cos_zen = np.cos(np.radians(zen))
    with np.errstate(divide="ignore", invalid="ignore"):
        element_db = np.where(cos_zen > 0.0, 10.0 * n * np.log10(np.maximum(cos_zen, 1e-300)),
                              -np.inf)
        theta3_scanned = theta3 / cos_scan  # inf at 90° scan: no main lobe left (floor wins)
        main = gm - 12.0 * (theta / theta3_scanned) ** 2
        side = np.minimum(gm + l_n, _S465_A_DBI - _S465_B_DB * np.log10(theta))
    gain = np.maximum(element_db + np.maximum(main, side), floor)
    return np.where(np.isnan(theta + gm + scan + zen), np.nan, gain)


# --- SINR ----------------------------------------------------------------------------------


#: Spectral overlaps below this (1 Hz) are rounding at touching band edges and count as none.
_MIN_OVERLAP_MHZ = 1e-6


def _overlap_mhz(f1_ghz, b1_mhz, f2_ghz, b2_mhz):
    """Width (MHz) of the overlap of band 1 with band 2 (centres GHz, widths MHz)."""
    offset = (np.asarray(f1_ghz) - f2_ghz) * 1e3  # band 1 centre relative to band 2's, MHz
    lo = np.maximum(offset - b1_mhz / 2.0, -b2_mhz / 2.0)
    hi = np.minimum(offset + b1_mhz / 2.0, b2_mhz / 2.0)
    width = hi - lo
    return np.where(width > _MIN_OVERLAP_MHZ, width, 0.0)


def sinr_db(terminal_ecef_km, sat_ecef_km, jammer_ecef_km=None, jammer_eirp_dbw=None,
            jammer_bandwidth_mhz=None, jammer_freq_ghz=None, jammer_active=None, *,
            freq_ghz=None, bandwidth_mhz=None, eirp_density_dbw_mhz=None, peak_gain_dbi=None,
            noise_temp_k=None, terminal_up=None) -> np.ndarray:
    """Downlink SINR (dB) per (time, terminal); NaN where unserved.

    Shapes: ``terminal_ecef_km`` ``(n_term, 3)`` or ``(n_time, n_term, 3)``; ``sat_ecef_km``
    (the serving satellite, NaN where unserved) ``(n_time, n_term, 3)``; ``jammer_ecef_km``
    ``(n_time, n_jam, 3)`` or ``(n_jam, 3)`` for fixed jammers; ``jammer_eirp_dbw``,
    ``jammer_bandwidth_mhz`` (default ``jammer_bandwidth_mhz``), ``jammer_freq_ghz`` (default the
    downlink centre) ``(n_jam,)``; ``jammer_active`` ``(n_time, n_jam)`` bool (default all
    active). No jammers: leave ``jammer_ecef_km`` as None. Keywords default to the link-budget
    entries of :data:`leotwin.defaults.DEFAULTS`. Returns ``(n_time, n_term)``.

    ``terminal_up`` (optional, the shape of ``terminal_ecef_km``): the terminals' geodetic
    zenith unit vectors, :func:`terminal_up` of the same positions, when the caller already
    has them (repeated calls over the same terminals).

    Only (time, terminal, jammer) triples inside the jammer's radio horizon are evaluated
    further: the others contribute exactly zero interference.
    """
    f = default("downlink_freq_ghz") if freq_ghz is None else float(freq_ghz)
    b = default("downlink_bandwidth_mhz") if bandwidth_mhz is None else float(bandwidth_mhz)
    eirp_d = default("sat_eirp_density_dbw_mhz") if eirp_density_dbw_mhz is None \
        else float(eirp_density_dbw_mhz)
    gm = default("terminal_peak_gain_dbi") if peak_gain_dbi is None else float(peak_gain_dbi)
    t_k = default("terminal_noise_temp_k") if noise_temp_k is None else float(noise_temp_k)
    for name, v in (("freq_ghz", f), ("bandwidth_mhz", b), ("noise_temp_k", t_k)):
        _check_positive(name, np.asarray(v))

    sat = _xyz("sat_ecef_km", sat_ecef_km, (3,))
    term = _xyz("terminal_ecef_km", terminal_ecef_km, (2, 3))
    n_time, n_term = sat.shape[:2]
    if term.ndim == 2:
        term = term[None]
    if term.shape[1] != n_term or term.shape[0] not in (1, n_time):
        raise ValueError(f"terminal_ecef_km shape {np.shape(terminal_ecef_km)} does not match "
                         f"sat_ecef_km {sat.shape} (want (n_term, 3) or (n_time, n_term, 3))")

    if terminal_up is None:
        up = terminal_up_vectors(term)  # geodetic zenith = array normal, (1|n_time, n_term, 3)
    else:
        up = np.asarray(terminal_up, dtype=np.float64).reshape(term.shape)

    d_sat = sat - term
    range_sat = np.linalg.norm(d_sat, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u_sat = d_sat / range_sat[..., None]
    scan = _angle_deg(up, u_sat)
    b_dbmhz = 10.0 * np.log10(b)
    signal_dbw = (eirp_d + b_dbmhz - fspl_db(range_sat, f)
                  + phased_array_gain_db(0.0, gm, scan))
    noise_w = BOLTZMANN_J_K * t_k * b * 1e6
    interference_w = np.zeros((n_time, n_term))

    if jammer_ecef_km is not None:
        jam = _xyz("jammer_ecef_km", jammer_ecef_km, (2, 3))
        if jam.ndim == 2:
            jam = jam[None]
        n_jam = jam.shape[1]
        if jam.shape[0] not in (1, n_time):
            raise ValueError(f"jammer_ecef_km has {jam.shape[0]} time steps, sat_ecef_km "
                             f"{n_time}")
        if jammer_eirp_dbw is None:
            raise ValueError("jammer_eirp_dbw is required with jammer_ecef_km")
        bw_default = default("jammer_bandwidth_mhz")
        eirp_j, bw_j, f_j = _jammer_vectors(n_jam, jammer_eirp_dbw, jammer_bandwidth_mhz,
                                            jammer_freq_ghz, bw_default, f)
        if jammer_active is None:
            active = np.ones((n_time, n_jam), dtype=bool)
        else:
            active = np.asarray(jammer_active, dtype=bool)
            if active.ndim == 1:
                active = active[None]
            if active.shape not in ((n_time, n_jam), (1, n_jam)):
                raise ValueError(f"jammer_active must have shape (n_time, n_jam) = "
                                 f"{(n_time, n_jam)} (got {active.shape})")
            active = np.broadcast_to(active, (n_time, n_jam))
        in_band = _overlap_mhz(f_j, bw_j, f, b) / bw_j  # fraction of jammer power in channel
        mount_m, mast_m = default("terminal_mount_m"), default("jammer_mast_m")
        # An airborne jammer (height above the ellipsoid beyond the mast) sees farther.
        jam_alt_m = np.maximum(ecef_to_geodetic(jam)[2], mast_m)  # (n_time|1, n_jam)
        horizon_km = radio_horizon_km(mount_m, jam_alt_m)
        full = (n_time, n_term)
        for j in range(n_jam):  # few jammers; everything inside is over (time, terminal)
            if in_band[j] <= 0.0 or not active[:, j].any():
                continue
            d_jam = jam[:, j, None, :] - term  # (n_time|1, n_term, 3)
            range_jam = np.linalg.norm(d_jam, axis=-1)
            # A ground jammer beyond the radio horizon (4/3-Earth) is blocked by the Earth:
            # only the pairs within it (and active) are evaluated.
            ti, ni = np.nonzero(np.broadcast_to(
                active[:, j, None] & np.isfinite(range_jam)
                & (range_jam <= horizon_km[:, j, None]), full))
            if ti.size == 0:
                continue
            r_j = np.broadcast_to(range_jam, full)[ti, ni]
            with np.errstate(invalid="ignore", divide="ignore"):
                u_jam = np.broadcast_to(d_jam, full + (3,))[ti, ni] / r_j[..., None]
                g = phased_array_gain_db(
                    _angle_deg(u_sat[ti, ni], u_jam), gm, scan[ti, ni],
                    direction_zenith_deg=_angle_deg(np.broadcast_to(up, full + (3,))[ti, ni],
                                                    u_jam))
                p_dbw = eirp_j[j] + 10.0 * np.log10(in_band[j]) - fspl_db(r_j, f) + g
                p_w = np.where(r_j == 0.0, np.inf, _db_to_w(p_dbw))  # co-located
            interference_w[ti, ni] = interference_w[ti, ni] + np.where(np.isnan(p_w), 0.0, p_w)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = signal_dbw - 10.0 * np.log10(noise_w + interference_w)
    served = np.all(np.isfinite(sat), axis=-1) & np.all(np.isfinite(term), axis=-1)
    return np.where(served, out, np.nan)


def terminal_up_vectors(terminal_ecef_km) -> np.ndarray:
    """Geodetic zenith unit vectors (the terminal array normal) of ECEF positions, the
    ``terminal_up`` argument of :func:`sinr_db`. Shape ``(..., 3)`` → ``(..., 3)``."""
    lat, lon, _ = ecef_to_geodetic(np.asarray(terminal_ecef_km, dtype=np.float64))
    return enu_basis(lat, lon)[..., 2, :]


def jammer_reach(terminal_ecef_km, jammer_ecef_km, jammer_active) -> np.ndarray:
    """``(n_time, n_term)`` bool: some active jammer is within its radio horizon of the
    terminal (NaN distances count as within). Where False, every jammer's interference in
    :func:`sinr_db` is exactly zero, so the SINR equals the jammer-free one.

    ``terminal_ecef_km`` ``(n_time, n_term, 3)``, ``jammer_ecef_km`` ``(n_time, n_jam, 3)``,
    ``jammer_active`` ``(n_time, n_jam)``.
    """
    term = np.asarray(terminal_ecef_km, dtype=np.float64)
    jam = np.asarray(jammer_ecef_km, dtype=np.float64)
    active = np.asarray(jammer_active, dtype=bool)
    mount_m, mast_m = default("terminal_mount_m"), default("jammer_mast_m")
    horizon_km = radio_horizon_km(mount_m, np.maximum(ecef_to_geodetic(jam)[2], mast_m))
    reach = np.zeros(np.broadcast_shapes(term.shape[:-1], jam.shape[:-2] + (1,)), bool)
    for j in range(jam.shape[-2]):  # few jammers
        if not active[:, j].any():
            continue
        range_jam = np.linalg.norm(jam[:, j, None, :] - term, axis=-1)
        reach |= active[:, j, None] & ~(range_jam > horizon_km[:, j, None])
    return reach


#: Safety margin (dB) of the clear-sky bound in :func:`jammed_links`; far above rounding.
_BOUND_MARGIN_DB = 0.5


def jammed_links(terminal_ecef_km, sat_ecef_km, jammer_ecef_km, jammer_eirp_dbw,
                 jammer_bandwidth_mhz, jammer_freq_ghz, jammer_active, *, terminal_up,
                 in_reach=None, step=None) -> np.ndarray:
    """``jammed(sinr_db(...))`` for ``n`` links of one time step, evaluated cheaply.

    ``terminal_ecef_km``, ``sat_ecef_km`` and ``terminal_up`` ``(n, 3)``; the jammers of that
    step ``(n_jam, 3)``, ``(n_jam,)``… as in :func:`sinr_db` — or, for links of different
    steps, ``step`` ``(n,)``: each link's row of ``jammer_ecef_km`` ``(n_time, n_jam, 3)``
    and ``jammer_active`` ``(n_time, n_jam)``; ``in_reach`` ``(n,)`` bool (as
    :func:`jammer_reach`; computed when None). Links in some jammer's reach get the full SINR.
    The others see no interference, so their SINR is the clear-sky SNR, which falls with the
    range and the scan angle: one evaluation at the largest range and scan among them bounds it
    from below, and only when that bound is within :data:`_BOUND_MARGIN_DB` of the lowest
    MODCOD are they evaluated one by one. Same result as the direct formula, always.
    """
    term = np.asarray(terminal_ecef_km, dtype=np.float64)
    sat = np.asarray(sat_ecef_km, dtype=np.float64)
    up = np.asarray(terminal_up, dtype=np.float64)
    jam = np.asarray(jammer_ecef_km, dtype=np.float64)
    active = np.asarray(jammer_active, dtype=bool)
    per_link = step is not None  # every link with its own step's jammers
    if per_link:
        step = np.asarray(step, np.int64)
    if in_reach is None:
        in_reach = (jammer_reach(term[:, None], jam[step], active[step])[:, 0] if per_link
                    else jammer_reach(term[None], jam[None], active[None])[0])
    out = np.zeros(term.shape[0], bool)
    near = np.flatnonzero(in_reach)
    if near.size and per_link:  # one "time" per link: the same formula element by element
        out[near] = jammed(sinr_db(term[near][:, None], sat[near][:, None], jam[step[near]],
                                   jammer_eirp_dbw, jammer_bandwidth_mhz, jammer_freq_ghz,
                                   active[step[near]], terminal_up=up[near][:, None]))[:, 0]
    elif near.size:
        out[near] = jammed(sinr_db(term[near][None], sat[near][None], jam[None],
                                   jammer_eirp_dbw, jammer_bandwidth_mhz, jammer_freq_ghz,
                                   active[None], terminal_up=up[near][None]))[0]
    far = np.flatnonzero(~np.asarray(in_reach, bool))
    if far.size == 0:
        return out
    d = sat[far] - term[far]
    range_km = np.linalg.norm(d, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_scan = (d * up[far]).sum(-1) / range_km
    if np.all(np.isfinite(range_km) & np.isfinite(cos_scan)):
        worst_scan_deg = np.degrees(np.arccos(np.clip(cos_scan.min(), -1.0, 1.0)))
        if _clear_snr_db(range_km.max(), worst_scan_deg) >= MODCOD_THRESHOLD_DB[0] \
                + _BOUND_MARGIN_DB:
            return out
    out[far] = jammed(sinr_db(term[far][None], sat[far][None], terminal_up=up[far][None]))[0]
    return out


def _clear_snr_db(range_km: float, scan_deg: float) -> float:
    """Clear-sky downlink SNR (dB) at a range and scan angle, the default link budget (the
    signal and noise terms of :func:`sinr_db`)."""
    f, b = default("downlink_freq_ghz"), default("downlink_bandwidth_mhz")
    gm = default("terminal_peak_gain_dbi")
    signal_dbw = (default("sat_eirp_density_dbw_mhz") + 10.0 * np.log10(b)
                  - fspl_db(range_km, f) + phased_array_gain_db(0.0, gm, scan_deg))
    noise_w = BOLTZMANN_J_K * default("terminal_noise_temp_k") * b * 1e6
    return float(signal_dbw - 10.0 * np.log10(noise_w))


def radio_horizon_km(height_a_m, height_b_m) -> np.ndarray:
    """Line-of-sight range between two antennas over a smooth 4/3-radius Earth (standard
    refraction, ITU-R P.453/P.526): d ≈ 4.12 (√h₁ + √h₂) km with heights in metres."""
    return 4.12 * (np.sqrt(np.maximum(height_a_m, 0.0)) + np.sqrt(np.maximum(height_b_m, 0.0)))


def _jammer_vectors(n_jam, eirp_dbw, bandwidth_mhz, freq_ghz, bw_default, f_default):
    def vec(name, value, fill):
        v = np.full(n_jam, fill, dtype=np.float64) if value is None \
            else np.asarray(value, dtype=np.float64)
        if v.ndim == 0:
            v = np.full(n_jam, float(v))
        if v.shape != (n_jam,):
            raise ValueError(f"{name} must have shape (n_jam,) = ({n_jam},) (got {v.shape})")
        return v

    eirp = vec("jammer_eirp_dbw", eirp_dbw, np.nan)
    bw = vec("jammer_bandwidth_mhz", bandwidth_mhz, bw_default)
    fj = vec("jammer_freq_ghz", freq_ghz, f_default)
    if not np.all(np.isfinite(eirp)):
        raise ValueError("jammer_eirp_dbw must be finite")
    _check_positive("jammer_bandwidth_mhz", bw)
    _check_positive("jammer_freq_ghz", fj)
    return eirp, bw, fj


# --- MODCOD, capacity, jamming -------------------------------------------------------------


def modcod_index(sinr_db) -> np.ndarray:
    """Index into :data:`MODCOD` of the most efficient MODCOD whose threshold the SINR meets;
    −1 below the lowest threshold or for NaN."""
    s = np.asarray(sinr_db, dtype=np.float64)
    idx = np.searchsorted(MODCOD_THRESHOLD_DB, s, side="right") - 1
    return np.where(np.isnan(s), -1, idx)


def spectral_efficiency(sinr_db) -> np.ndarray:
    """Spectral efficiency (bit/s/Hz) of the best supported MODCOD; 0 below the lowest
    threshold, NaN for NaN (unserved)."""
    s = np.asarray(sinr_db, dtype=np.float64)
    idx = modcod_index(s)
    eff = np.where(idx >= 0, MODCOD_EFFICIENCY_BPS_HZ[np.maximum(idx, 0)], 0.0)
    return np.where(np.isnan(s), np.nan, eff)


def capacity_mbps(sinr_db, bandwidth_mhz=None) -> np.ndarray:
    """Link capacity (Mbit/s) = spectral efficiency × bandwidth (default: the downlink channel
    bandwidth). NaN where the SINR is NaN."""
    b = default("downlink_bandwidth_mhz") if bandwidth_mhz is None else bandwidth_mhz
    eff, bw = _broadcast(sinr_db=spectral_efficiency(sinr_db), bandwidth_mhz=b)
    _check_nonnegative("bandwidth_mhz", bw)
    return eff * bw


def jammed(sinr_db) -> np.ndarray:
    """True where a served terminal's SINR is below the lowest MODCOD threshold (no MODCOD
    closes); False where unserved (NaN)."""
    s = np.asarray(sinr_db, dtype=np.float64)
    return s < MODCOD_THRESHOLD_DB[0]
