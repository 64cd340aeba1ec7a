"""Solvers, guidance and text-to-video sampling."""
