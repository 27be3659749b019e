"""Links: laser inter-satellite links (+Grid) and their feasibility and delay."""
