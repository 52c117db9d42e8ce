"""Exceptions that carry a user-facing, one-line message (the CLI prints them without a traceback)."""

from __future__ import annotations


class MaskwatchError(Exception):
    """A user error or an environment problem: bad input, a dead camera, an unreachable broker, a wrong model.

    The message names the thing, the expected and the actual value; the CLI prints it on one line.
    """


class ConfigError(MaskwatchError):
    """The configuration file or a command-line option is invalid."""


class SourceError(MaskwatchError):
    """A camera source cannot be opened or read."""


class ModelError(MaskwatchError):
    """A model file is missing or does not match the expected inputs/outputs."""


class SinkError(MaskwatchError):
    """Results cannot be delivered (Kafka broker unreachable, output file not writable)."""
