"""Physical and geodetic constants, each defined once with its source.

Units are in the names. Everything else in leotwin imports from here.
"""

from __future__ import annotations

# WGS84 ellipsoid, NIMA TR8350.2 (3rd ed., 2000), Table 3.1.
WGS84_A_KM = 6378.137
WGS84_F = 1.0 / 298.257223563
WGS84_B_KM = WGS84_A_KM * (1.0 - WGS84_F)
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)  # first eccentricity squared

# Mean radius R1 = (2a + b)/3 of the WGS84 ellipsoid (IUGG; Moritz 1980, Geodetic Reference
# System 1980), for great-circle distances where a sphere is the convention (fibre routes).
MEAN_EARTH_RADIUS_KM = 6371.0088

# WGS72 constants used by SGP4 (Vallado et al. 2006, AIAA 2006-6753, "wgs72" in getgravconst).
WGS72_MU_KM3_S2 = 398600.8
WGS72_RADIUS_KM = 6378.135

# Speed of light in vacuum, exact by definition of the metre (SI brochure, 9th ed.).
C_KM_S = 299792.458

# Earth rotation rate used by Vallado's teme2ecef (AIAA 2006-6753, Appendix C), rad/s.
EARTH_ROTATION_RAD_S = 7.29211514670698e-05

# Boltzmann constant, exact since the 2019 SI redefinition, J/K.
BOLTZMANN_J_K = 1.380649e-23

# Time.
SECONDS_PER_DAY = 86400.0
JD_UNIX_EPOCH = 2440587.5  # Julian date of 1970-01-01T00:00:00 UTC
JD_SGP4INIT_EPOCH0 = 2433281.5  # 1949-12-31T00:00 UT, origin of sgp4init's epoch (Vallado 2006)
JD_J2000 = 2451545.0  # Julian date of J2000.0 (2000-01-01T12:00:00 TT; used with UT1 by GMST82)
