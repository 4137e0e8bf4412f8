"""Shared fixtures: hypothesis profiles, a seeded rng, a store factory.

Profiles (``HYPOTHESIS_PROFILE``): ``default`` (60 examples), ``ci``
(120, derandomized), ``thorough`` (2000). Markers, registered in setup.cfg:
``slow`` and ``system`` (the default run runs both); ``requires_torchvision``
and ``requires_notebook``, registered below, which CI turns from skips into
failures with ``LAZYPATCH_REQUIRE``.
"""

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


# Optional-dependency tests. Locally they skip when torchvision or the notebook
# runner is missing; CI sets LAZYPATCH_REQUIRE=torchvision,notebook so that a
# skip (or no such test at all) fails the run instead of passing quietly.
OPTIONAL = {"torchvision": "requires_torchvision", "notebook": "requires_notebook"}


def pytest_configure(config):
    for marker in OPTIONAL.values():
        config.addinivalue_line("markers", f"{marker}: skipped locally without the dependency; "
                                "required in CI via LAZYPATCH_REQUIRE")


def _required_markers():
    wanted = [word.strip() for word in os.environ.get("LAZYPATCH_REQUIRE", "").split(",") if word.strip()]
    unknown = sorted(set(wanted) - set(OPTIONAL))
    if unknown:
        raise pytest.UsageError(f"LAZYPATCH_REQUIRE names unknown groups {unknown}; known: {sorted(OPTIONAL)}")
    return {OPTIONAL[word] for word in wanted}


_ran = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marked = _required_markers() & {mark.name for mark in item.iter_markers()}
    if not marked:
        return
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"skipped, but LAZYPATCH_REQUIRE asks for {sorted(marked)} tests to run. "
                           f"The skip: {reason}")
    elif call.when == "call":
        for marker in marked:
            _ran[marker] = _ran.get(marker, 0) + 1


def pytest_sessionfinish(session, exitstatus):
    missing = sorted(_required_markers() - set(_ran))
    if missing and not session.config.option.collectonly and session.testscollected:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"LAZYPATCH_REQUIRE: no {missing} test ran", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
