"""Video autoencoders: the chunk-causal deep-compression AE (DC-AE-V), streaming, tiling, checkpoints, and
diffusers autoencoder folders behind the same interface (diffusers_backend)."""
from reel.autoencoders.arch import DcAeVArch, resolve_arch
from reel.autoencoders.checkpoint import (autoencoder_from_config, load_autoencoder, read_autoencoder_config,
                                          read_extra_info, save_autoencoder)
from reel.autoencoders.model import (AutoencoderBase, VideoAutoencoder, autoencoder_summary, build_autoencoder,
                                     count_parameters)
from reel.autoencoders.streaming import StreamingDecoder, StreamingEncoder

__all__ = [
    "AutoencoderBase", "DcAeVArch", "StreamingDecoder", "StreamingEncoder", "VideoAutoencoder",
    "autoencoder_from_config", "autoencoder_summary", "build_autoencoder", "count_parameters", "load_autoencoder",
    "read_autoencoder_config", "read_extra_info", "resolve_arch", "save_autoencoder",
]
