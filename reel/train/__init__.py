"""Training engine and objectives."""
