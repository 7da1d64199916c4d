"""Identifiers and names podnet makes up."""

from __future__ import annotations

import secrets

_ADJECTIVES = (
    "brave calm eager fast gentle happy jolly keen lucid merry nimble proud quiet rapid sharp "
    "steady swift tidy vivid witty bold bright clever cosmic daring fancy frosty golden humble"
).split()
_NOUNS = (
    "otter falcon badger heron lynx marten osprey panda quokka raven salmon tapir walrus yak "
    "zebra beaver condor dingo egret ferret gecko ibis jackal koala lemur moose newt puffin"
).split()


def new_id() -> str:
    """64 hex characters, like Docker's ids; the first 12 are shown and accepted as a prefix."""
    return secrets.token_hex(32)


def random_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.token_hex(2)}"


def random_mac() -> str:
    """A locally administered unicast MAC, so it never collides with a vendor's."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in octets)
