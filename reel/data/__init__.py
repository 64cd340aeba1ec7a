"""Datasets: the shapes world, video folders (decord), bucketing, caches."""
