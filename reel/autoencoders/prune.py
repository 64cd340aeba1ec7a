"""A lighter decoder for the same latent space: drop residual blocks from a trained decoder.

Every decoder block is a residual (x + f(x)), so removing some of a stage's blocks leaves a network
close to the original, which a decoder-only fine-tune (`reel train ae ... train.ae.freeze_encoder=true`)
brings back. The encoder, the latent statistics and so every DiT trained on the latents stay valid: a
DiT can decode with either (`sample.autoencoder=`). Each stage keeps its first blocks; the up blocks,
the stem and the head are kept as they are.
"""
from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple

from reel.autoencoders.arch import autoencoder_config_dict
from reel.autoencoders.model import VideoAutoencoder
from reel.errors import ReelError

LAYERS = "decoder.layers."


def decoder_layer_keys(depths: Sequence[int]) -> List[Tuple]:
    """What each entry of Decoder.layers is, in order: ("block", stage, k) or ("up", stage)."""
    keys: List[Tuple] = []
    for stage in reversed(range(len(depths))):
        keys += [("block", stage, k) for k in range(depths[stage])]
        if stage > 0:
            keys.append(("up", stage))
    return keys


def drop_decoder_blocks(model: VideoAutoencoder, depths: Sequence[int], name: str) -> Tuple[VideoAutoencoder, dict]:
    """A copy of `model` whose decoder keeps the first depths[i] blocks of stage i (at most the original
    count), with its config node (named `name`); every kept tensor is the original's."""
    arch = model.arch
    old = list(arch.decoder_depth_list)
    depths = list(depths)
    if len(depths) != len(old) or not all(isinstance(d, int) and 0 <= d <= o for d, o in zip(depths, old)):
        raise ReelError(f"decoder_depth_list={depths}: one count per stage, each between 0 and the decoder's own "
                        f"{old}")
    new_arch = dataclasses.replace(arch, decoder_depth_list=depths)
    pruned = VideoAutoencoder(new_arch)
    source_index = {key: i for i, key in enumerate(decoder_layer_keys(old))}
    where = [source_index[key] for key in decoder_layer_keys(depths)]
    source = model.state_dict()
    state = {}
    for key in pruned.state_dict():
        if key.startswith(LAYERS):
            index, rest = key[len(LAYERS):].split(".", 1)
            state[key] = source[f"{LAYERS}{where[int(index)]}.{rest}"]
        else:
            state[key] = source[key]
    pruned.load_state_dict(state)
    cfg = autoencoder_config_dict({"name": name}, new_arch)
    return pruned.to(next(model.parameters()).dtype).eval(), cfg
