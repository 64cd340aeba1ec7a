"""DiT, its layers, and text encoders."""
