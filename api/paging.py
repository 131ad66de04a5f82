"""Paged lists: one contract for every list the API serves (docs/wire.md, "Paging").

* ``limit`` (1..:data:`MAX_LIMIT`, default :data:`DEFAULT_LIMIT`): the most items a page
  holds; above the maximum, 422 ``validation-error``.
* ``after``: the key of the last item already received — each list names its key (a leaf
  index, a grant id, a tree size, an API key id). The page holds the items that follow it, in
  the list's order; without ``after``, the first page.
* The answer's ``next`` is the ``after`` of the following page (the key of this page's last
  item), or null on the last page; the ``Link: <…>; rel="next"`` header carries the following
  page's URL (the same query, ``after`` set), and is absent on the last page.

Keyset paging: a page is one bounded SQL query (``key > after ORDER BY key LIMIT limit + 1``)
whatever the list's length, so the server's memory does not grow with the list, and items
appended meanwhile are neither skipped nor served twice. The one extra row fetched tells
whether another page follows, so that the last page says so itself (no empty page to ask for).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final, TypeVar

from fastapi import Query, Request
from fastapi.responses import JSONResponse

from api.problems import openapi_responses

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_INDEX",
    "MAX_LIMIT",
    "AfterLeaf",
    "IndexWanted",
    "Limit",
    "paged_json",
    "paged_responses",
    "sends_index",
    "split_page",
]

#: The most items a page may hold, and how many it holds unless asked.
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100

Limit = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_LIMIT,
        description=f"The most items of this page (1..{MAX_LIMIT}, default {DEFAULT_LIMIT}).",
    ),
]

#: The largest leaf index or tree size accepted (the store keeps them as signed 64-bit ints).
MAX_INDEX: Final = 2**63 - 1

AfterLeaf = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_INDEX,
        description="The leaf index of the last event received (the previous page's `next`).",
    ),
]

IndexWanted = Annotated[
    bool | None,
    Query(
        alias="index",
        description="Whether the page carries `index`, the index proof of the whole list "
        "(default: on the first page only, the one without `after`; `true` on any page, e.g. "
        "the last one again when a checkpoint landed while paging; `false`: never).",
    ),
]


def sends_index(wanted: bool | None, after: int | None) -> bool:
    """Whether a page carries the list's index proof: asked (:data:`IndexWanted`), else on the
    first page only — the list and its proof are the same on every page of one checkpoint, and
    re-sending them made reading a long trail quadratic in its length."""
    return wanted if wanted is not None else after is None


_T = TypeVar("_T")
_K = TypeVar("_K")

#: The ``Link`` header as OpenAPI documents it on a paged answer.
LINK_HEADER: Final = {
    "Link": {
        "description": 'The following page: `<URL>; rel="next"` (RFC 8288); absent on the '
        "last page.",
        "schema": {"type": "string"},
    }
}


def split_page(
    items: Sequence[_T], limit: int, key: Callable[[_T], _K]
) -> tuple[Sequence[_T], _K | None]:
    """``items`` read with ``limit + 1``: the page (at most ``limit`` items) and its ``next``
    (the key of its last item when more follow, else None)."""
    if len(items) <= limit:
        return items, None
    page = items[:limit]
    return page, key(page[-1])


def paged_json(
    request: Request, body: dict[str, Any], next_key: int | str | None, *, param: str = "after"
) -> JSONResponse:
    """``body`` (which holds ``next``) with a ``Link: rel="next"`` header when another page
    follows: this request's path and query with ``param`` set to ``next_key``."""
    headers: dict[str, str] = {}
    if next_key is not None:
        url = request.url.include_query_params(**{param: next_key})
        headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return JSONResponse(body, headers=headers)


def paged_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """:func:`api.problems.openapi_responses`, and the ``Link`` header of the 200 answer."""
    return {200: {"description": "One page of the list.", "headers": LINK_HEADER}} | (
        openapi_responses(*statuses)
    )
