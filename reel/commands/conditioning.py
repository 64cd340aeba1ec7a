"""The frozen parts a DiT works with: the autoencoder of its latent space and the text encoder."""
from __future__ import annotations

from reel.errors import ReelError


def frozen_autoencoder(cfg, device="cpu"):
    """(autoencoder in eval mode without gradients, its identity); autoencoder.checkpoint must be set."""
    from reel.autoencoders import autoencoder_from_config
    from reel.autoencoders.checkpoint import autoencoder_identity

    if not cfg.autoencoder.checkpoint:
        raise ReelError("autoencoder.checkpoint=None: the DiT works in a trained autoencoder's latent space; "
                        "set it (the bundled one: autoencoder=dc-ae-v-demo-f8t4c16 "
                        "autoencoder.checkpoint=bundled:demo_ae)")
    model = autoencoder_from_config(cfg.autoencoder, device).eval().requires_grad_(False)
    return model, autoencoder_identity(cfg.autoencoder.checkpoint)


def text_encoder_of(cfg, device="cpu"):
    from reel.models.text_encoder import build_text_encoder

    return build_text_encoder(cfg.text_encoder, device)
