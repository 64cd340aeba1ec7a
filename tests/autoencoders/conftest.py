import pytest

from ae_helpers import build, preset


@pytest.fixture(scope="module")
def tiny_cfg():
    return preset("dc-ae-v-tiny")


@pytest.fixture(scope="module")
def tiny(tiny_cfg):
    return build(tiny_cfg)
