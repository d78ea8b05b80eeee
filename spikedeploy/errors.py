"""One exception hierarchy. The CLI prints the message of any SpikeDeployError and exits 1.

Messages say what went wrong, where (file, node, layer, core), the limit, the value, and what to do.
"""

from __future__ import annotations


class SpikeDeployError(Exception):
    """Base class of every error spikedeploy reports to a user."""


class FileFormatError(SpikeDeployError):
    """A file is missing, unreadable, corrupt, or in a format spikedeploy does not know."""


class GraphError(SpikeDeployError):
    """The graph is malformed: unknown node type, bad edges, unreachable nodes, illegal cycles."""


class ParameterError(GraphError):
    """A node parameter is invalid (NaN, tau <= 0, wrong shape)."""


class ShapeError(GraphError):
    """Shapes of connected nodes disagree."""


class UnsupportedError(SpikeDeployError):
    """Something valid in the source cannot be represented faithfully by the destination."""


class TargetLimitError(SpikeDeployError):
    """A hardware limit of the target is exceeded (bit width, core capacity, axons)."""


class OutputPathError(SpikeDeployError):
    """An output cannot be written there: it is an input of the same command, a directory or a special file,
    its directory is missing or read-only, or the disk is full."""


class BackendError(SpikeDeployError):
    """A simulation backend (Lava, emulator) failed or is not installed."""


class InputError(BackendError):
    """The data given to a simulation does not fit the graph's inputs (names, shapes, batch, values)."""


class RepairWarning(UserWarning):
    """A reader repaired a known quirk of a file written by another tool (also listed in graph.meta["repairs"])."""


class DynamicsWarning(UserWarning):
    """A neuron layer's parameters make it behave implausibly (e.g. it cannot reach its threshold at this dt)."""
