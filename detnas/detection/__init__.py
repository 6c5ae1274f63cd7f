"""detnas/detection."""
