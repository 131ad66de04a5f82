"""A small JSON-RPC 2.0 client over HTTP, for the regulator's reads of its own node.

The tools need a handful of read-only methods (``eth_chainId``, ``eth_getCode``, ``eth_call``,
``eth_getLogs``, ``eth_blockNumber``, ``eth_getBlockByNumber``), single or in batches; web3
would cost a second of imports for them. Every failure is a :class:`ChainError` (the tools
then exit with "could not verify") with one clear message: the node unreachable or too slow,
an HTTP error, an answer that is not JSON-RPC, an error object (:class:`RpcError`, which keeps
the node's ``code``, ``message`` and ``data``, e.g. a contract's revert data), or a batch whose
answers do not match its requests one for one.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

import httpx

from ledger import jsonsafe
from ledger.chain.model import ChainError

__all__ = ["ChainError", "JsonRpc", "RpcError", "hex_data", "quantity"]

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


class JsonRpc:
    """JSON-RPC 2.0 over HTTP POST to one endpoint, with keep-alive.

    :param client: an ``httpx.Client`` to use (tests pass one with their own transport); by
        default one is made with ``timeout`` seconds per request.
    """

    def __init__(
        self, url: str, *, timeout: float = 10.0, client: httpx.Client | None = None
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._owned = client is None
        self._client = client or httpx.Client(timeout=timeout)
        self._ids = itertools.count(1)
        #: HTTP requests made (JSON-RPC round trips; a batch is one).
        self.requests = 0

    def close(self) -> None:
        if self._owned:
            self._client.close()

    def __enter__(self) -> JsonRpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ----------------------------------------------------------------------------

    def call(self, method: str, params: list[Any]) -> Any:
        """One request; its ``result``."""
        request_id = next(self._ids)
        answer = self._post(
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
        answers = self._post(payload, what)
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

    # -- transport ------------------------------------------------------------------------

    def _post(self, payload: Any, what: str) -> Any:
        self.requests += 1
        try:
            response = self._client.post(
                self.url,
                content=json.dumps(payload, separators=(",", ":")).encode(),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
        except httpx.TimeoutException as exc:
            raise ChainError(
                f"the chain at {self.url} did not answer {what} in time: {exc}", url=self.url
            ) from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise ChainError(
                f"the chain endpoint {self.url!r} is not an http(s) URL: {exc}", url=self.url
            ) from exc
        except (httpx.HTTPError, OSError) as exc:
            raise ChainError(
                f"the chain at {self.url} is unreachable: {exc}", url=self.url
            ) from exc
        try:
            answer = jsonsafe.loads(response.content)
        except ValueError:
            answer = None
        if response.status_code >= 400 and not (
            isinstance(answer, dict) and isinstance(answer.get("error"), dict)
        ):
            raise ChainError(
                f"the chain at {self.url} answered {what} with HTTP {response.status_code}",
                url=self.url,
            )
        if answer is None:
            raise ChainError(
                f"the chain at {self.url} answered {what} with something that is not JSON",
                url=self.url,
            )
        return answer


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
