"""JSON-RPC 2.0, single calls and batches, over a small transport: HTTP, or in process.

Every read medtrail makes of the chain (the service, the wallet, the regulator's tools) is a
handful of read-only methods (``eth_chainId``, ``eth_blockNumber``, ``eth_getBlockByNumber``,
``eth_getCode``, ``eth_call``, ``eth_getLogs``), single or in batches. :class:`JsonRpc` sends
them over a :class:`Transport`:

* :class:`HttpTransport` — HTTP POST to a node (anvil, geth, Besu, a provider), with httpx and
  keep-alive;
* :class:`InProcessTransport` — a function answering JSON-RPC payloads in this process (the
  embedded chain's :class:`ledger.chain.embedded.EmbeddedNode`, a test's fake node).

Every failure is a :class:`~ledger.chain.model.ChainError` with one clear message: the node
unreachable or too slow, an HTTP error, an answer that is not JSON-RPC, an error object
(:class:`RpcError`, which keeps the node's ``code``, ``message`` and ``data``, e.g. a
contract's revert data), or a batch whose answers do not match its requests one for one. A
message names an HTTP endpoint by its origin only (:func:`ledger.redact.url_origin`): hosted
nodes put their key in the URL's path or user-info. web3 is not imported.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import httpx

from ledger import jsonsafe
from ledger.chain.model import ChainError
from ledger.redact import Redactor, url_origin

__all__ = [
    "ChainError",
    "HttpTransport",
    "InProcessTransport",
    "JsonRpc",
    "Request",
    "RpcError",
    "Transport",
    "hex_data",
    "quantity",
]

#: A JSON-RPC request: method and positional parameters.
Request = tuple[str, list[Any]]


class RpcError(ChainError):
    """The node answered a request with a JSON-RPC error object."""

    def __init__(
        self, detail: str, *, code: Any = None, message: str = "", data: Any = None
    ) -> None:
        super().__init__(detail, rpc_code=code)
        self.rpc_code = code
        self.rpc_message = message
        self.data = data

    def revert_data(self) -> bytes | None:
        """The revert data an ``eth_call`` error carries (``data`` as 0x-hex, or nested in
        ``data.data`` as some nodes put it); None when there is none."""
        data = self.data.get("data") if isinstance(self.data, dict) else self.data
        if not isinstance(data, str):
            return None
        try:
            return hex_data(data, "revert data")
        except ChainError:
            return None


def quantity(value: Any, what: str) -> int:
    """A JSON-RPC quantity (``0x`` + hex digits) as an int; :class:`ChainError` otherwise."""
    if isinstance(value, str) and value[:2] == "0x" and 2 < len(value) <= 66:
        digits = value[2:]
        if digits.isascii() and digits.isalnum():
            try:
                return int(digits, 16)
            except ValueError:
                pass
    raise ChainError(f"the node answered {what} with {value!r:.80}, not a hex quantity")


def hex_data(value: Any, what: str) -> bytes:
    """JSON-RPC data (``0x`` + an even number of hex digits) as bytes."""
    if isinstance(value, str) and value[:2] == "0x" and len(value) % 2 == 0:
        digits = value[2:]
        # fromhex alone would skip whitespace
        if not digits or (digits.isascii() and digits.isalnum()):
            try:
                return bytes.fromhex(digits)
            except ValueError:
                pass
    raise ChainError(f"the node answered {what} with {value!r:.80}, not 0x-hex data")


# --------------------------------------------------------------------------- transports


class Transport(Protocol):
    """Carries one JSON-RPC payload (a request or a batch) to a node and back."""

    #: How messages name the node (an HTTP endpoint by its origin: no credentials).
    @property
    def name(self) -> str: ...

    def send(self, payload: Any, what: str) -> Any:
        """The node's decoded answer to ``payload``; :class:`ChainError` when there is none
        (``what`` describes the request, for messages)."""
        ...

    def close(self) -> None: ...


class HttpTransport:
    """JSON-RPC over HTTP POST to one endpoint, with keep-alive.

    :param client: an ``httpx.Client`` to use (tests pass one with their own transport); by
        default one is made with ``timeout`` seconds per request.
    """

    def __init__(
        self, url: str, *, timeout: float = 10.0, client: httpx.Client | None = None
    ) -> None:
        self.url = url
        self.name = url_origin(url)
        self._redactor = Redactor.of(urls=[url])
        self._owned = client is None
        self._client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        if self._owned:
            self._client.close()

    def _failure(self, text: str) -> ChainError:
        return ChainError(self._redactor.text(text), url=self.name)

    def send(self, payload: Any, what: str) -> Any:
        try:
            response = self._client.post(
                self.url,
                content=json.dumps(payload, separators=(",", ":")).encode(),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
        except httpx.TimeoutException as exc:
            raise self._failure(
                f"the chain at {self.name} did not answer {what} in time: {exc}"
            ) from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise self._failure(
                f"the chain endpoint {self.name} is not an http(s) URL: {exc}"
            ) from exc
        except (httpx.HTTPError, OSError) as exc:
            raise self._failure(f"the chain at {self.name} is unreachable: {exc}") from exc
        try:
            answer = jsonsafe.loads(response.content)
        except ValueError:
            answer = None
        if response.status_code >= 400 and not (
            isinstance(answer, dict) and isinstance(answer.get("error"), dict)
        ):
            raise self._failure(
                f"the chain at {self.name} answered {what} with HTTP {response.status_code}"
            )
        if answer is None:
            raise self._failure(
                f"the chain at {self.name} answered {what} with something that is not JSON"
            )
        return answer


class InProcessTransport:
    """JSON-RPC answered by a function in this process (``handler(payload) -> answer``), e.g.
    the embedded chain's :class:`ledger.chain.embedded.EmbeddedNode`. Requests are sent one at
    a time (``lock``): an in-process chain is rarely thread-safe."""

    def __init__(
        self,
        handler: Callable[[Any], Any],
        *,
        name: str = "the in-process chain",
        lock: threading.RLock | None = None,
    ) -> None:
        self.name = name
        self._handler = handler
        self._lock = lock or threading.RLock()

    def close(self) -> None:
        return None

    def send(self, payload: Any, what: str) -> Any:
        with self._lock:
            answer = self._handler(payload)
        if answer is None:
            raise ChainError(f"{self.name} answered {what} with nothing")
        return answer


# --------------------------------------------------------------------------- the client


class JsonRpc:
    """JSON-RPC 2.0 over a :class:`Transport` (an HTTP URL: :class:`HttpTransport`).

    Thread-safe as its transport is: request ids come from one counter.
    """

    def __init__(
        self,
        transport: Transport | str,
        *,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        if isinstance(transport, str):
            transport = HttpTransport(transport, timeout=timeout, client=client)
        self.transport = transport
        self._ids = itertools.count(1)
        #: Round trips made (a batch is one).
        self.requests = 0

    @property
    def name(self) -> str:
        """The node, as messages name it (an HTTP endpoint by its origin)."""
        return self.transport.name

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> JsonRpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, params: list[Any]) -> Any:
        """One request; its ``result``."""
        request_id = next(self._ids)
        self.requests += 1
        answer = self.transport.send(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, method
        )
        return _result(answer, request_id, method)

    def batch(self, requests: Sequence[Request]) -> list[Any]:
        """Several requests in one round trip; their results, in the order asked. Nodes may
        answer in any order: answers are matched to requests by id, and a batch whose answers
        are not exactly one per request is refused."""
        if not requests:
            return []
        ids = [next(self._ids) for _ in requests]
        methods = sorted({method for method, _ in requests})
        what = f"a batch of {len(requests)} {'/'.join(methods)} requests"
        payload = [
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            for request_id, (method, params) in zip(ids, requests, strict=True)
        ]
        self.requests += 1
        answers = self.transport.send(payload, what)
        if not isinstance(answers, list):
            if isinstance(answers, dict) and isinstance(answers.get("error"), dict):
                _result(answers, None, what)  # a node refusing the whole batch: raises
            raise ChainError(f"the node answered {what} with {answers!r:.200}, not a list")
        by_id: dict[int, Any] = {}
        for answer in answers:
            request_id = answer.get("id") if isinstance(answer, dict) else None
            if type(request_id) is not int or request_id in by_id:
                raise ChainError(
                    f"the node answered {what} with an answer of no or a repeated id: "
                    f"{answer!r:.200}"
                )
            by_id[request_id] = answer
        if sorted(by_id) != ids:
            raise ChainError(
                f"the node answered {what} with {len(answers)} answers that do not match the "
                f"requests one for one (ids {sorted(by_id)[:5]}…, asked {ids[:5]}…)"
            )
        return [
            _result(by_id[request_id], request_id, method)
            for request_id, (method, _params) in zip(ids, requests, strict=True)
        ]


def _result(answer: Any, request_id: int | None, what: str) -> Any:
    """The ``result`` of one JSON-RPC answer; :class:`RpcError` for an error object."""
    if not isinstance(answer, dict):
        raise ChainError(f"the node answered {what} with {answer!r:.200}, not a JSON-RPC answer")
    error = answer.get("error")
    if error is not None:
        if isinstance(error, dict):
            message = str(error.get("message", ""))
            code = error.get("code")
            raise RpcError(
                f"the node refused {what}: {message or 'no message'} (code {code})",
                code=code,
                message=message,
                data=error.get("data"),
            )
        raise RpcError(f"the node refused {what}: {error!r:.200}")
    if request_id is not None and answer.get("id") != request_id:
        raise ChainError(
            f"the node answered {what} with id {answer.get('id')!r:.40}, asked {request_id}"
        )
    if "result" not in answer:
        raise ChainError(f"the node answered {what} with {answer!r:.200}, which has no result")
    return answer["result"]
