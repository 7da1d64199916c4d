"""The agent's client: a request the agent would refuse for its size is never sent; the caller
does it in-process (apply -f of a large file), as when no agent runs."""

from __future__ import annotations

import socket

import pytest

from podnet.agent import client


def test_a_request_over_the_agents_limit_is_not_sent(tmp_path) -> None:
    body = {"sources": [{"name": "big.yaml", "text": "x" * (client.MAX_AGENT_BODY + 1)}]}
    with pytest.raises(client.TooLarge):  # raised before connecting: the socket here does not exist
        client.call("POST", "/v1/apply", body, sock=tmp_path / "agent.sock")


def test_forward_leaves_a_too_large_request_to_the_caller(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PODNET_RUN", str(tmp_path))
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(tmp_path / "agent.sock"))
    listening.listen(1)
    listening.setblocking(False)
    try:
        body = {"sources": [{"name": "big.yaml", "text": "x" * (client.MAX_AGENT_BODY + 1)}]}
        assert client.forward("POST", "/v1/apply", body) is None
        with pytest.raises(BlockingIOError):  # nobody connected: the request was never sent
            listening.accept()
    finally:
        listening.close()
