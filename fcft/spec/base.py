"""What every schema module of the spec shares: the error a bad value raises, and enumerated config values."""

from __future__ import annotations

from enum import Enum


class SpecError(ValueError):
    """A config or spec value that can't run; the message names the key and what would be valid."""


def fail(key: str, message: str) -> None:
    raise SpecError(f"{key}: {message}")


class Choice(str, Enum):
    """A config value from a fixed set; prints and compares as its plain string."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__
