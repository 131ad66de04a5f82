"""The embedded chain is shared by the API's worker threads and the anchor worker's thread;
py-evm is not thread-safe, so the provider lets one request in at a time."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from web3.providers.eth_tester import EthereumTesterProvider

from ledger.chain.embedded import embedded_web3


def test_the_embedded_provider_serialises_requests_from_many_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w3, _tester = embedded_web3()
    inside = 0
    most = 0
    guard = threading.Lock()
    original = EthereumTesterProvider.make_request

    def slow_request(self: EthereumTesterProvider, method: Any, params: Any) -> Any:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.002)  # widen the window in which two requests could overlap
        try:
            return original(self, method, params)
        finally:
            with guard:
                inside -= 1

    monkeypatch.setattr(EthereumTesterProvider, "make_request", slow_request)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(20):
                assert w3.eth.block_number >= 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert most == 1
