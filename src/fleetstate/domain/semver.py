"""Semantic versions (MAJOR.MINOR.PATCH[-pre][+build]) and their precedence, per semver.org 2.0.

Only precedence is needed (which firmware is newest), so a version becomes a sort key: numbers
compare as numbers (1.10.0 > 1.9.2), a release outranks its pre-releases, pre-release fields
compare numerically when numeric, numeric before alphanumeric, and more fields win a tie. Build
metadata is accepted and ignored, as the standard says.
"""

import re

from fleetstate.errors import Invalid

_NUMBER = r"(0|[1-9][0-9]*)"
_PRE_FIELD = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
PATTERN = re.compile(
    rf"^{_NUMBER}\.{_NUMBER}\.{_NUMBER}"
    rf"(?:-({_PRE_FIELD}(?:\.{_PRE_FIELD})*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?\Z"
)

SCHEMA_PATTERN = PATTERN.pattern.removesuffix(r"\Z") + "$"
r"""The same rule for JSON Schema, whose ECMA-262 regexes have no `\Z` (there `$` ends the text)."""

PreField = tuple[int, int, str]
Key = tuple[int, int, int, int, tuple[PreField, ...]]


def key(version: str) -> Key:
    """The precedence key of `version`; raises Invalid when it is not a semantic version."""
    match = PATTERN.match(version)
    if match is None:
        raise Invalid(f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre])")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    return (int(major), int(minor), int(patch), 0, tuple(_pre_field(f) for f in pre.split(".")))


def _pre_field(text: str) -> PreField:
    return (0, int(text), "") if text.isascii() and text.isdigit() else (1, 0, text)


def is_valid(version: str) -> bool:
    return PATTERN.match(version) is not None
