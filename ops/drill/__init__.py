"""Fault drills: kill or restart a service under load and count what was lost or duplicated."""
