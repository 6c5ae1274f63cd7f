"""bench/suite."""
