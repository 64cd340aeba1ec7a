"""Sampling flow-matching models: timestep schedules, solvers, guidance, pipelines."""
