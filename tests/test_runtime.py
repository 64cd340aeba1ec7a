"""reel/runtime.py: the allocator settings every command starts with."""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, resource, torch
from reel.runtime import tune_allocator
tuned = tune_allocator()
torch.set_num_threads(1)
from reel.autoencoders.checkpoint import load_autoencoder
ae = load_autoencoder("bundled:demo_ae")
z = torch.randn(1, ae.latent_channels, 5, 8, 8)
def decode():
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ae.decode(z)
decode(); decode()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
decode(); decode(); decode()
print(json.dumps({"tuned": tuned, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3}))
"""


def _decode_faults(**env) -> dict:
    env = {**os.environ, **env}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_decoding_again_reuses_the_heap_instead_of_fresh_pages():
    tuned = _decode_faults()
    assert tuned["tuned"] is True
    # a 17-frame 64x64 decode allocates tens of MB in blocks of 1-13 MB; tuned, the second and later decodes
    # take them from the heap the first one left (untuned, 6,000-10,000 page faults a decode here; tuned 0 alone
    # and ~200 once beside the rest of the suite: the bound is an eighth of the untuned count)
    assert tuned["faults"] < 1000, tuned
    assert _decode_faults(REEL_MALLOC_TUNING="0")["tuned"] is False
