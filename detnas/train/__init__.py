"""detnas/train."""
