"""Config schemas, Hydra composition and validation."""
from reel.config.compose import load_config
from reel.config.schema import ReelConfig

__all__ = ["load_config", "ReelConfig"]
