"""Samplers: which flat patch numbers an epoch visits, and in what order.

- :mod:`.patch`: :class:`PatchSampler`, seeded, resumable and distributed over
  every patch (or a filter's).
- :mod:`.classes`: :class:`ClassSampler`, patches drawn so that chosen labels
  appear at chosen rates (from :class:`lazypatch.stats.LabelStats`).
"""

from .classes import ClassSampler
from .patch import PatchSampler, distributed_defaults

__all__ = ["ClassSampler", "PatchSampler", "distributed_defaults"]
