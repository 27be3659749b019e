"""Geometry over whole arrays: visibility of satellites from ground sites, passes."""
