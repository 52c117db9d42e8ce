"""The click group class of the maskwatch command lines: a user error is one line on stderr and exit status 2."""

from __future__ import annotations

import sys
from typing import Any

import click

from schemas.errors import MaskwatchError


class ErrorLineGroup(click.Group):
    """Prints ``maskwatch: error: <message>`` for a :class:`MaskwatchError` and exits 2, with no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MaskwatchError as exc:
            click.echo(f"maskwatch: error: {exc}", err=True)
            sys.exit(2)
