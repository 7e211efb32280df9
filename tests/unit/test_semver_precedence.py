"""SemVer 2.0 precedence and validity (semver.org section 11) as table tests."""

import pytest

from fleetstate.domain.semver import is_valid, key
from fleetstate.errors import Invalid

# (lower, higher): each row must order strictly.
ORDER_ROWS = [
    ("1.9.2", "1.10.0"),  # numbers compare as numbers, not text
    ("1.0.0", "2.0.0"),
    ("2.0.0", "2.1.0"),
    ("2.1.0", "2.1.1"),
    ("0.9.99", "1.0.0"),
    ("1.0.0-alpha", "1.0.0"),  # a release outranks its pre-releases
    ("1.0.0-rc.1", "1.0.0"),
    # semver.org's own chain:
    ("1.0.0-alpha", "1.0.0-alpha.1"),  # more fields win a tie
    ("1.0.0-alpha.1", "1.0.0-alpha.beta"),  # numeric before alphanumeric
    ("1.0.0-alpha.beta", "1.0.0-beta"),
    ("1.0.0-beta", "1.0.0-beta.2"),
    ("1.0.0-beta.2", "1.0.0-beta.11"),  # numeric fields compare as numbers
    ("1.0.0-beta.11", "1.0.0-rc.1"),
    ("1.0.0-Z", "1.0.0-a"),  # alphanumeric fields compare in ASCII order
    ("1.0.0-0", "1.0.0-0a"),
    ("1.0.0-9", "1.0.0-10"),
]


@pytest.mark.parametrize(("lower", "higher"), ORDER_ROWS, ids=[f"{a}<{b}" for a, b in ORDER_ROWS])
def test_semver_precedence(lower: str, higher: str) -> None:
    assert key(lower) < key(higher)
    assert not key(higher) < key(lower)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        pytest.param("1.0.0+build.1", "1.0.0+build.2", id="build-metadata-ignored"),
        pytest.param("1.0.0+x", "1.0.0", id="build-vs-none"),
        pytest.param("1.0.0-rc.1+a", "1.0.0-rc.1", id="pre-with-build"),
    ],
)
def test_semver_equal_precedence(one: str, other: str) -> None:
    assert key(one) == key(other)


VALID = [
    "0.0.0",
    "1.2.3",
    "10.20.30",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-0.3.7",
    "1.0.0-x.7.z.92",
    "1.0.0-x-y-z.--",
    "1.0.0-0a",
    "1.0.0+20130313144700",
    "1.0.0-beta+exp.sha.5114f85",
    "99999999999999999999.0.0",
]
INVALID = [
    "",
    "1.2.3\n",  # `$` would match before a final newline
    "1\u0661.0.0",  # an Arabic-Indic digit: `\\d` is any Unicode digit
    "1",
    "1.2",
    "1.2.3.4",
    "v1.2.3",
    "01.2.3",
    "1.02.3",
    "1.2.03",
    "1.2.3-",
    "1.2.3-01",  # numeric pre-release fields have no leading zeros
    "1.2.3-alpha..1",
    "1.2.3+",
    "1.2.3+a..b",
    "1.2.3-al_pha",
    " 1.2.3",
    "1.2.3 ",
    "-1.2.3",
]


@pytest.mark.parametrize("version", VALID)
def test_semver_valid(version: str) -> None:
    assert is_valid(version)
    key(version)


@pytest.mark.parametrize("version", INVALID)
def test_semver_invalid_refused(version: str) -> None:
    assert not is_valid(version)
    with pytest.raises(Invalid, match="is not a semantic version"):
        key(version)
