"""reel: video generation research codebase."""
__version__ = "0.1.0"
