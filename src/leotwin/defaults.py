"""Every assumed number in leotwin, with its unit and a source or the word "assumption".

Code reads values from :data:`DEFAULTS` by name so that a number lives in exactly one place and
its provenance travels with it (``leotwin defaults`` would print this table).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Default:
    name: str
    value: float
    unit: str
    source: str


_FCC_21_48 = (
    "FCC 21-48, Order and Authorization, IBFS SAT-MOD-20200417-00037 (2021-04-27): "
)

DEFAULTS: dict[str, Default] = {
    d.name: d
    for d in [
        Default("terminal_min_elevation_deg", 25.0, "deg",
                _FCC_21_48 + "25 deg minimum elevation for user terminals"),
        Default("gateway_min_elevation_deg", 25.0, "deg",
                _FCC_21_48 + "25 deg for gateways (5 deg for polar gateways)"),
        Default("operational_band_km", 30.0, "km",
                _FCC_21_48 + "'operations occurring with a range of 30 km around that [centre] "
                "altitude'; applied to the element set's mean altitude (semi-major axis minus "
                "the WGS72 equatorial radius)"),
        Default("osculating_altitude_margin_km", 30.0, "km",
                "assumption: the propagated (osculating) geocentric radius of a satellite on "
                "station swings about its mean by up to ~7 km (eccentricity 0.001) plus J2's "
                "short-period terms (~10 km); 30 km on top of the operational band keeps every "
                "such satellite and drops states far off the shell"),
        Default("shell_inclination_tolerance_deg", 0.12, "deg",
                "assumption: half the 53.0/53.2 deg separation of Gen1 shells 1 and 2, so real "
                "TLE inclinations (53.05, 53.22) fall in the right shell"),
        Default("unknown_shell_inclination_bin_deg", 0.5, "deg",
                "assumption: satellites outside the filed shells are grouped by inclination in "
                "bins of this width; the group's median mean altitude is its shell centre"),
        Default("propagation_chunk_steps", 240.0, "steps",
                "assumption: 240 steps x 4,408 satellites keeps a chunk near 50 MB"),
        Default("propagation_node_step_s", 60.0, "s",
                "numerical method, not a fact: scenario runs with finer steps run SGP4 every "
                "60 s and interpolate (cubic Hermite), within 1.3 m of SGP4 at every step "
                "(tests/test_propagate_hermite.py)"),
        # --- network (links, routing, scheduling)
        Default("isl_atmosphere_margin_km", 80.0, "km",
                "assumption used by Hypatia (Kassing et al., IMC 2020): a laser line of sight "
                "must clear the Earth plus 80 km of atmosphere"),
        Default("isl_max_range_km", 5016.0, "km",
                "assumption: Hypatia's Starlink maximum ISL length (Kassing et al., IMC 2020)"),
        Default("slot_s", 15.0, "s",
                "measured: a global controller reallocates satellites to terminals every 15 s "
                "(Tanveer et al., 'Making Sense of Constellations', CoNEXT Companion 2023, "
                "doi:10.1145/3624354.3630586)"),
        Default("processing_delay_ms", 0.1, "ms",
                "assumption: per-hop processing/switching delay in each satellite and gateway"),
        Default("fibre_refractive_index", 1.47, "1",
                "group index of standard single-mode fibre (ITU-T G.652, ≈ 1.47 at 1550 nm)"),
        Default("fibre_route_factor", 1.5, "1",
                "assumption: terrestrial fibre routes are ~1.5x the great-circle distance"),
        Default("gateway_antennas", 8.0, "antennas",
                "bundled gateway list (StarPerf, about late 2023) where given; 8 is its mode, "
                "used as an assumption where a gateway has no count"),
        Default("gateway_backhaul_gbps", 100.0, "Gbps",
                "assumption: fibre backhaul per gateway site; not public"),
        # --- capacity
        Default("h3_resolution", 5.0, "level",
                "assumption: H3 resolution 5 (≈ 252 km² per cell) approximates a Starlink user "
                "cell of roughly 15-20 km across"),
        Default("beams_per_satellite", 8.0, "beams",
                "assumption: user beams per Gen1 satellite; not public"),
        Default("beam_capacity_mbps", 2500.0, "Mbit/s",
                "assumption: 8 beams x 2.5 Gbit/s ≈ 20 Gbit/s per satellite, the order of "
                "magnitude SpaceX has stated for a v1.x satellite"),
        Default("terminal_demand_mbps", 100.0, "Mbit/s",
                "assumption: busy-hour demand of an active terminal when no plan says otherwise"),
        Default("terminal_min_mbps", 25.0, "Mbit/s",
                "assumption: below this a terminal counts as congested when no plan says "
                "otherwise"),
        # --- link budget (Ku-band user downlink; leotwin.links.budget)
        Default("downlink_freq_ghz", 11.7, "GHz",
                "band per SpaceX FCC filings (Ku user downlink 10.7-12.7 GHz); centre an "
                "assumption"),
        Default("downlink_bandwidth_mhz", 250.0, "MHz",
                "assumption: one user channel; SpaceX filings divide 10.7-12.7 GHz into 250 MHz "
                "channels (about 240 MHz occupied, Humphreys et al., IEEE TAES 2023)"),
        Default("sat_eirp_density_dbw_mhz", 9.8, "dBW/MHz",
                "assumption: the PFD limit -116 dB(W/m^2) in 1 MHz (47 CFR 25.208(b), ITU RR "
                "Art. 21; NGSO FSS 10.7-11.7 GHz, arrival 25-90 deg) reached at nadir from "
                "550 km: -116 + 10 log10(4 pi (550 km)^2) = 9.8; held constant over elevation"),
        Default("terminal_peak_gain_dbi", 33.0, "dBi",
                "assumption: broadside gain of a ~0.5 m Ku phased array (Gen1 dish class)"),
        Default("terminal_noise_temp_k", 200.0, "K",
                "assumption: system noise temperature (LNA ~1.5 dB noise figure plus sky and "
                "array losses); with 33 dBi this is G/T = 10 dB/K"),
        Default("terminal_beamwidth_3db_deg", 3.0, "deg",
                "assumption: 70 lambda/D for a ~0.58 m aperture at 11.7 GHz (3.1 deg), at "
                "broadside; widened by 1/cos(scan) when steered"),
        Default("terminal_near_sidelobe_db", -20.0, "dB",
                "assumption: near-in side-lobe cap relative to peak (the -20 dB L_N option of "
                "ITU-R S.1528; tapered arrays reach -20 to -30 dB)"),
        Default("terminal_sidelobe_floor_dbi", -10.0, "dBi",
                "ITU-R S.465-6 and 47 CFR 25.209(a) earth-station reference pattern: -10 dBi "
                "from 48 to 180 deg off axis"),
        Default("terminal_scan_loss_exponent", 1.2, "1",
                "assumption: element pattern cos^1.2 of the angle from the array normal, a "
                "common phased-array approximation (4.5 dB scan loss at 25 deg elevation)"),
        Default("jammer_mast_m", 10.0, "m",
                "assumption: height of a ground jammer's antenna above the terrain"),
        Default("terminal_mount_m", 2.0, "m",
                "assumption: height of a user terminal above the terrain"),
        Default("jammer_bandwidth_mhz", 250.0, "MHz",
                "assumption: a barrage jammer covering one user channel"),
    ]
}


def default(name: str) -> float:
    """Value of the named default (raises ``KeyError`` naming the known defaults)."""
    try:
        return DEFAULTS[name].value
    except KeyError:
        raise KeyError(f"unknown default {name!r}; known: {sorted(DEFAULTS)}") from None


def defaults_table() -> pd.DataFrame:
    """All defaults as a table (name, value, unit, source)."""
    return pd.DataFrame([vars(d) for d in DEFAULTS.values()])
