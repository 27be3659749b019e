"""Service analytics over simulated (time, terminal) arrays: outage intervals
(:mod:`leotwin.analytics.intervals`), usage, bills and contract availability
(:mod:`leotwin.analytics.sla`)."""
