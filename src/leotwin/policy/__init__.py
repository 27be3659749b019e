"""Control plane: accounts, plans, service areas, geofences, contracts and the decision engine."""
