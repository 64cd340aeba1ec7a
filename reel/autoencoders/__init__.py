"""Video autoencoders (the chunk-causal deep-compression AE lands with its own issue)."""
