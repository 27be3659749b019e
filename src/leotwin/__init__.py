"""leotwin — a digital twin and control plane for a Starlink-like LEO broadband system.

The curated public API is listed in ``__all__``; everything else is private and may change.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from .analytics.intervals import outage_intervals
from .analytics.simulate import (
    Counterfactual,
    SimulationRun,
    counterfactual,
    outage_table,
    simulate,
    simulate_run,
)
from .analytics.sla import bill, contract_availability, usage_by_account_day
from .capacity import Allocation, allocate, terminal_cells
from .defaults import DEFAULTS, defaults_table
from .faults import Faults, GatewayOutage, Jammer, RandomFailures, SatelliteFailure
from .flagship import run_flagship
from .frames import ecef_to_geodetic, geodetic_to_ecef, look_angles, teme_to_ecef
from .geometry.passes import passes
from .geometry.visibility import Visibility, coverage_summary, visible
from .ground import Ground, GroundError, load_gateways, load_pops, load_terminals, load_tracks
from .links.isl import laser_links
from .orbits.catalog import load_catalog, load_omm, load_tle, starlink_2022
from .orbits.constellation import Constellation
from .orbits.propagate import operational_mask, propagate, propagate_chunks
from .orbits.shells import starlink_gen1, walker_shell
from .orbits.tle import TLEError
from .places import key_cities
from .policy.engine import DECISIONS, PRECEDENCE, check_overlaps, decide, decision_table, explain
from .policy.errors import PolicyError
from .policy.geofence import ZoneIndex, country_polygons, parse_geometry, read_zones
from .policy.models import Policy, PolicyHistory, PolicyVersion, json_schemas, load_policy
from .policy.preview import ChangeRefused, Preview, guard, preview
from .routing.network import NetworkConfig, network_state, rtt_summary, terminal_table
from .runs import Run, run
from .scenario import Scenario, ScenarioError, load_scenario
from .timescale import time_grid

try:
    __version__ = _version("leotwin")
except _PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = [
    "run_flagship",
    "run",
    "load_scenario",
    "ScenarioError",
    "Scenario",
    "Run",
    "usage_by_account_day",
    "contract_availability",
    "bill",
    "outage_intervals",
    "simulate_run",
    "simulate",
    "outage_table",
    "counterfactual",
    "SatelliteFailure",
    "RandomFailures",
    "Jammer",
    "GatewayOutage",
    "Faults",
    "SimulationRun",
    "Counterfactual",
    "DECISIONS",
    "DEFAULTS",
    "PRECEDENCE",
    "Policy",
    "PolicyError",
    "PolicyHistory",
    "PolicyVersion",
    "Preview",
    "ZoneIndex",
    "Allocation",
    "ChangeRefused",
    "Constellation",
    "Ground",
    "GroundError",
    "NetworkConfig",
    "TLEError",
    "Visibility",
    "__version__",
    "allocate",
    "check_overlaps",
    "country_polygons",
    "coverage_summary",
    "decide",
    "decision_table",
    "defaults_table",
    "ecef_to_geodetic",
    "explain",
    "geodetic_to_ecef",
    "guard",
    "json_schemas",
    "key_cities",
    "laser_links",
    "load_catalog",
    "load_gateways",
    "load_omm",
    "load_policy",
    "load_pops",
    "load_terminals",
    "load_tle",
    "load_tracks",
    "look_angles",
    "network_state",
    "operational_mask",
    "parse_geometry",
    "passes",
    "preview",
    "propagate",
    "propagate_chunks",
    "read_zones",
    "rtt_summary",
    "starlink_2022",
    "starlink_gen1",
    "teme_to_ecef",
    "terminal_cells",
    "terminal_table",
    "time_grid",
    "visible",
    "walker_shell",
]
