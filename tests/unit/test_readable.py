"""wait_readable works where select() cannot: the agent holds more than 1,024 descriptors with
1,000 sandboxes, and the supervisor's report pipe or nft's trace may be numbered above 1023."""

from __future__ import annotations

import os
import select

import pytest

from podnet.util.readable import wait_readable


def test_a_descriptor_above_1023_is_waited_on() -> None:
    r, w = os.pipe()
    high = os.dup2(r, 1500)
    try:
        with pytest.raises(ValueError):
            select.select([high], [], [], 0)  # what the run path used
        assert not wait_readable(high, 0.01), "nothing written yet"
        os.write(w, b"{}\n")
        assert wait_readable(high, 1.0)
        os.close(w)
        os.read(high, 10)
        assert wait_readable(high, 1.0), "end of file counts as readable: the supervisor died"
    finally:
        for fd in (r, high):
            os.close(fd)
