"""Shared fixtures: hypothesis profiles, a seeded rng, a store factory."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=120, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=2000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def make_store(tmp_path):
    """make_store(images, **write_store_options) -> ImageStore in a fresh file."""
    from lazypatch import write_store

    counter = iter(range(10**6))

    def make(images, **options):
        options.setdefault("progress", False)
        path = tmp_path / f"store{next(counter)}.h5"
        return write_store(path, images, **options)

    return make
