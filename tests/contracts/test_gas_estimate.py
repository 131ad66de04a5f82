"""The test process's gas estimate (tests/support/gas.py) gives limits transactions succeed
with, and refuses what py-evm's own estimate refuses."""

from __future__ import annotations

import eth.chains.base
import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from ledger.chain.tx import ContractReverted
from tests.conftest import EmbeddedChain
from tests.contracts.conftest import Kind, tx
from tests.support.gas import estimate_gas


def test_installed_for_every_chain_of_the_test_process() -> None:
    assert eth.chains.base.Chain.gas_estimator is estimate_gas


def test_estimates_at_least_the_gas_used_and_the_transaction_succeeds(
    chain: EmbeddedChain, institutions: Contract
) -> None:
    institution = chain.fresh_account()
    call = institutions.functions.register(institution.address, Kind.HOSPITAL, "A")
    estimate = call.estimate_gas({"from": chain.registrar.address})
    receipt = tx(chain, call, chain.registrar)
    assert receipt["status"] == 1
    assert receipt["gasUsed"] <= estimate <= 2 * receipt["gasUsed"] + 10_000


def test_a_reverting_transaction_is_refused_as_before(
    chain: EmbeddedChain, institutions: Contract, hospital: LocalAccount
) -> None:
    with pytest.raises(ContractReverted) as info:
        tx(
            chain,
            institutions.functions.register(hospital.address, Kind.HOSPITAL, "B"),
            chain.registrar,
        )
    assert info.value.error == "InstitutionAlreadyRegistered"
