"""Statistics computed from a store: channels, labels, foreground, a summary. numpy + h5py,
never torch.

Who uses it: the builder (channel and label statistics accumulated while
writing), ``lazypatch.data`` (normalization, class sampling, filtered
datasets) and the ``info``/``index`` commands.

- :mod:`.channels`: :class:`ChannelStats` (mean, std, min, max, percentiles).
- :mod:`.labels`: :class:`LabelStats`, per-block pixel counts of every mask label.
- :mod:`.foreground`: :func:`foreground_filter`, a keep-bitmap of the grid
  patches with enough foreground (from masks or intensity), as a sidecar.
- :mod:`.summary`: :func:`describe`, the facts of ``lazypatch info``.
"""

from .channels import ChannelStats
from .foreground import foreground_filter, load_filter, otsu_threshold
from .labels import LabelStats
from .summary import describe

__all__ = ["ChannelStats", "LabelStats", "describe", "foreground_filter", "load_filter", "otsu_threshold"]
