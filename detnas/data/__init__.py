"""detnas/data."""
