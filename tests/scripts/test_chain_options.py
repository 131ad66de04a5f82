"""``ChainOptions``: what the regulator's commands read of the chain they trust, each refusal
with its own message (no chain is contacted here)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from ledger.chain.model import Deployment
from scripts._common import ChainOptions, ToolError, chain_options

INSTITUTIONS, AUDIT_LOG, CONSENT, CONSENT_V2 = ("0x" + c * 20 for c in ("11", "12", "13", "14"))
NOTHING = ChainOptions(None, None, None, None, None, None, None, None, 10.0)


def deployment_file(tmp_path: Path, *, consent_v2: str | None = None) -> Path:
    path = tmp_path / "deployment.json"
    Deployment(
        chain_id=31337,
        institution_registry=INSTITUTIONS,
        audit_log=AUDIT_LOG,
        consent_registry=CONSENT,
        block_number=7,
        sources_hash="0x" + "00" * 32,
        consent_registry_v2=consent_v2,
    ).write(path)
    return path


def test_the_deployment_file_names_the_contracts_and_the_first_block(tmp_path: Path) -> None:
    spec = replace(NOTHING, deployment_file=deployment_file(tmp_path)).spec()
    assert (spec.chain_id, spec.from_block, spec.consent_registry_v2) == (31337, 7, None)
    assert spec.audit_log.lower() == AUDIT_LOG
    later = replace(NOTHING, deployment_file=deployment_file(tmp_path), from_block=99).spec()
    assert later.from_block == 99


def test_consent_v2_comes_from_the_flag_when_the_file_names_none(tmp_path: Path) -> None:
    options = replace(NOTHING, deployment_file=deployment_file(tmp_path))
    spec = replace(options, consent_registry_v2=CONSENT_V2).spec()
    assert spec.consent_registry_v2 is not None
    assert spec.consent_registry_v2.lower() == CONSENT_V2


def test_three_addresses_stand_for_a_deployment_file() -> None:
    options = replace(
        NOTHING,
        institution_registry=INSTITUTIONS,
        audit_log=AUDIT_LOG,
        consent_registry=CONSENT,
        chain_id=5,
    )
    spec = options.spec()
    assert (spec.institution_registry, spec.audit_log, spec.consent_registry) == (
        INSTITUTIONS,
        AUDIT_LOG,
        CONSENT,
    )
    assert (spec.chain_id, spec.from_block) == (5, 0)


@pytest.mark.parametrize(
    "given",
    [{}, {"audit_log": AUDIT_LOG}, {"institution_registry": INSTITUTIONS, "audit_log": AUDIT_LOG}],
)
def test_contracts_not_named_are_refused_never_guessed(given: dict[str, Any]) -> None:
    with pytest.raises(ToolError, match="say where the contracts are"):
        replace(NOTHING, **given).spec()


def test_a_chain_id_the_deployment_file_contradicts_is_refused(tmp_path: Path) -> None:
    options = replace(NOTHING, deployment_file=deployment_file(tmp_path), chain_id=1)
    with pytest.raises(ToolError, match="--chain-id 1 but the deployment file is for chain 31337"):
        options.spec()


def test_a_consent_v2_the_deployment_file_contradicts_is_refused(tmp_path: Path) -> None:
    options = replace(
        NOTHING,
        deployment_file=deployment_file(tmp_path, consent_v2=CONSENT_V2),
        consent_registry_v2="0x" + "22" * 20,
    )
    with pytest.raises(ToolError, match="names the ConsentRegistryV2"):
        options.spec()


def test_no_endpoint_is_refused_before_any_connection() -> None:
    with pytest.raises(ToolError, match="give your own chain endpoint: --rpc-url"):
        NOTHING.endpoint()
    assert replace(NOTHING, rpc_url="http://127.0.0.1:8545").endpoint() == "http://127.0.0.1:8545"


def test_the_decorator_hands_the_command_one_chain_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The options (and their environment variables) arrive as one ``ChainOptions``; the
    command's other options are left as they were."""
    seen: list[tuple[ChainOptions, str]] = []

    @click.command()
    @click.option("--name", default="x")
    @chain_options
    def command(name: str, chain: ChainOptions) -> None:
        seen.append((chain, name))

    monkeypatch.setenv("MEDTRAIL_RPC_URL", "http://127.0.0.1:8545")
    path = deployment_file(tmp_path)
    result = CliRunner().invoke(
        command, ["--deployment-file", str(path), "--chain-id", "31337", "--name", "y"]
    )
    assert result.exit_code == 0, result.output
    ((chain, name),) = seen
    assert name == "y"
    assert chain == replace(
        NOTHING, rpc_url="http://127.0.0.1:8545", deployment_file=path, chain_id=31337
    )
