"""Orbits: element-set parsing (TLE/OMM), constellations, shells and SGP4 propagation."""
