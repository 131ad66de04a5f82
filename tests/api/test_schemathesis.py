"""Property-based run over the OpenAPI schema (schemathesis, in process over ASGI).

For every operation, positive and negative examples, authenticated as a regulator and as an
institution: no 5xx, every status documented, every answer of a documented content type and
matching its schema, schema-invalid input refused with a 4xx, authentication enforced where
the schema declares it. Bounded (a few examples per operation, derandomized) to stay fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.world import World, open_world

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
]
EXAMPLES = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def st_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with open_world(tmp_path_factory.mktemp("schemathesis")) as built:
        yield built


def run_operation(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @EXAMPLES
    def check(case: Case[Any]) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()


# schemathesis' lazy pytest loader (``schemathesis.pytest.from_fixture``) does not run under
# pytest 9 (it reads ``Function._nodeid``), and the schema needs a running ledger: the
# operations are run from the test, each its own Hypothesis test, failures collected.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("role", ["regulator", "institution_a"])
def test_the_api_keeps_to_its_schema(st_world: World, role: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", st_world.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema raises here
        operations += 1
        try:
            run_operation(operation, mode, st_world.headers(role))
        except Unsatisfiable:
            # No parameter or body: nothing can be made invalid (negative mode).
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as exc:  # one report for every failing operation
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 30
    assert not failures, "\n\n".join(failures)
