"""Fixtures for dictionary tests."""

from __future__ import annotations

import pytest
from feature_helpers import random_dictionary


@pytest.fixture
def tiny_transcoder(tiny_llama):
    from interp.features.formats import model_fingerprint

    return random_dictionary(model=model_fingerprint(tiny_llama))
