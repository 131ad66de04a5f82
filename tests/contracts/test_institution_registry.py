"""InstitutionRegistry: registration, suspension, reinstatement, roles and the history views."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from ledger.chain.artifacts import load_artifact
from ledger.chain.deploy import DEFAULT_ADMIN_ROLE, REGISTRAR_ROLE
from ledger.chain.tx import call_or_raise
from ledger.logstate import status_at
from tests.conftest import EmbeddedChain
from tests.contracts.conftest import (
    ZERO_ADDRESS,
    Kind,
    block_time,
    events,
    reverts,
    tx,
    unauthorized,
)

# --------------------------------------------------------------------------- register


def test_register_stores_institution_history_and_emits_event(
    chain: EmbeddedChain, institutions: Contract
) -> None:
    pharmacy = chain.fresh_account()
    when = chain.now() + 100
    chain.travel(when)
    receipt = tx(
        chain,
        institutions.functions.register(pharmacy.address, Kind.PHARMACY, "Corner Pharmacy"),
        chain.registrar,
    )
    assert block_time(chain, receipt) == when
    assert events(institutions, "InstitutionRegistered", receipt) == [
        {"institution": pharmacy.address, "kind": Kind.PHARMACY, "name": "Corner Pharmacy"}
    ]
    assert institutions.functions.institutionOf(pharmacy.address).call() == (
        Kind.PHARMACY,
        True,
        when,
        "Corner Pharmacy",
    )
    assert institutions.functions.isActive(pharmacy.address).call() is True
    assert institutions.functions.historyOf(pharmacy.address).call() == [(when, True)]


def test_unregistered_address_reads_as_kind_none(
    chain: EmbeddedChain, institutions: Contract
) -> None:
    stranger = chain.fresh_account().address
    assert institutions.functions.institutionOf(stranger).call() == (Kind.NONE, False, 0, "")
    assert institutions.functions.isActive(stranger).call() is False
    assert institutions.functions.historyOf(stranger).call() == []
    for kind in Kind:
        assert institutions.functions.wasActiveAt(stranger, kind, chain.now()).call() is False


@pytest.mark.parametrize("kind", [Kind.HOSPITAL, Kind.PHARMACY, Kind.INSURER])
def test_register_accepts_every_kind(
    chain: EmbeddedChain, institutions: Contract, kind: Kind
) -> None:
    account = chain.fresh_account()
    tx(chain, institutions.functions.register(account.address, kind, "X"), chain.registrar)
    assert institutions.functions.institutionOf(account.address).call()[0] == kind


def test_register_zero_address_reverts(chain: EmbeddedChain, institutions: Contract) -> None:
    with reverts("ZeroAddress"):
        tx(
            chain,
            institutions.functions.register(ZERO_ADDRESS, Kind.HOSPITAL, "H"),
            chain.registrar,
        )


def test_register_kind_none_reverts(chain: EmbeddedChain, institutions: Contract) -> None:
    account = chain.fresh_account()
    with reverts("InvalidKind"):
        tx(chain, institutions.functions.register(account.address, Kind.NONE, "H"), chain.registrar)
    assert institutions.functions.isActive(account.address).call() is False


@pytest.mark.parametrize(
    ("name", "length"),
    [("", 0), ("x" * 65, 65), ("é" * 33, 66)],  # lengths in bytes: "é" is 2 bytes in UTF-8
)
def test_register_invalid_name_reverts(
    chain: EmbeddedChain, institutions: Contract, name: str, length: int
) -> None:
    account = chain.fresh_account()
    with reverts("InvalidName", length):
        tx(
            chain,
            institutions.functions.register(account.address, Kind.HOSPITAL, name),
            chain.registrar,
        )


def test_register_name_of_64_bytes_is_accepted(
    chain: EmbeddedChain, institutions: Contract
) -> None:
    account = chain.fresh_account()
    name = "é" * 32  # 64 bytes
    tx(chain, institutions.functions.register(account.address, Kind.INSURER, name), chain.registrar)
    assert institutions.functions.institutionOf(account.address).call()[3] == name


def test_register_twice_reverts_even_with_another_kind(
    chain: EmbeddedChain, institutions: Contract, hospital: LocalAccount
) -> None:
    with reverts("InstitutionAlreadyRegistered", hospital.address):
        tx(
            chain,
            institutions.functions.register(hospital.address, Kind.PHARMACY, "Other"),
            chain.registrar,
        )
    assert institutions.functions.institutionOf(hospital.address).call()[0] == Kind.HOSPITAL


def test_register_twice_reverts_while_suspended(
    chain: EmbeddedChain, institutions: Contract, hospital: LocalAccount
) -> None:
    tx(chain, institutions.functions.suspend(hospital.address), chain.registrar)
    with reverts("InstitutionAlreadyRegistered", hospital.address):
        tx(
            chain,
            institutions.functions.register(hospital.address, Kind.HOSPITAL, "Again"),
            chain.registrar,
        )


def test_constructor_refuses_zero_admin(chain: EmbeddedChain) -> None:
    artifact = load_artifact("InstitutionRegistry")
    factory = chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    with reverts("ZeroAddress"):
        tx(chain, factory.constructor(ZERO_ADDRESS), chain.admin)


# --------------------------------------------------------------------------- suspend / reinstate


def test_suspend_and_reinstate_emit_events_and_flip_is_active(
    chain: EmbeddedChain, institutions: Contract, hospital: LocalAccount
) -> None:
    receipt = tx(chain, institutions.functions.suspend(hospital.address), chain.registrar)
    assert events(institutions, "InstitutionSuspended", receipt) == [
        {"institution": hospital.address}
    ]
    assert institutions.functions.isActive(hospital.address).call() is False
    assert institutions.functions.institutionOf(hospital.address).call()[1] is False

    receipt = tx(chain, institutions.functions.reinstate(hospital.address), chain.registrar)
    assert events(institutions, "InstitutionReinstated", receipt) == [
        {"institution": hospital.address}
    ]
    assert institutions.functions.isActive(hospital.address).call() is True
    assert institutions.functions.institutionOf(hospital.address).call()[1] is True


def test_suspend_unregistered_reverts(chain: EmbeddedChain, institutions: Contract) -> None:
    stranger = chain.fresh_account().address
    with reverts("InstitutionNotRegistered", stranger):
        tx(chain, institutions.functions.suspend(stranger), chain.registrar)


def test_reinstate_unregistered_reverts(chain: EmbeddedChain, institutions: Contract) -> None:
    stranger = chain.fresh_account().address
    with reverts("InstitutionNotRegistered", stranger):
        tx(chain, institutions.functions.reinstate(stranger), chain.registrar)


def test_suspend_twice_reverts(
    chain: EmbeddedChain, institutions: Contract, hospital: LocalAccount
) -> None:
    tx(chain, institutions.functions.suspend(hospital.address), chain.registrar)
    with reverts("InstitutionAlreadySuspended", hospital.address):
        tx(chain, institutions.functions.suspend(hospital.address), chain.registrar)
    assert len(institutions.functions.historyOf(hospital.address).call()) == 2


def test_reinstate_active_reverts(
    chain: EmbeddedChain, institutions: Contract, hospital: LocalAccount
) -> None:
    with reverts("InstitutionNotSuspended", hospital.address):
        tx(chain, institutions.functions.reinstate(hospital.address), chain.registrar)
    assert len(institutions.functions.historyOf(hospital.address).call()) == 1


# --------------------------------------------------------------------------- history views


def test_was_active_at_across_register_suspend_reinstate(
    chain: EmbeddedChain, institutions: Contract
) -> None:
    pharmacy = chain.fresh_account().address
    start = chain.now()
    t_register, t_suspend, t_reinstate = start + 1000, start + 2000, start + 3000

    chain.travel(t_register)
    r = tx(chain, institutions.functions.register(pharmacy, Kind.PHARMACY, "P"), chain.registrar)
    assert block_time(chain, r) == t_register
    chain.travel(t_suspend)
    r = tx(chain, institutions.functions.suspend(pharmacy), chain.registrar)
    assert block_time(chain, r) == t_suspend
    chain.travel(t_reinstate)
    r = tx(chain, institutions.functions.reinstate(pharmacy), chain.registrar)
    assert block_time(chain, r) == t_reinstate

    assert institutions.functions.historyOf(pharmacy).call() == [
        (t_register, True),
        (t_suspend, False),
        (t_reinstate, True),
    ]
    assert institutions.functions.institutionOf(pharmacy).call() == (
        Kind.PHARMACY,
        True,
        t_register,
        "P",
    )

    def was(kind: Kind, time: int) -> bool:
        result: bool = institutions.functions.wasActiveAt(pharmacy, kind, time).call()
        return result

    expected = {
        0: False,
        t_register - 1: False,  # before registration
        t_register: True,  # a change applies from its own second on
        t_register + 1: True,
        t_suspend - 1: True,
        t_suspend: False,  # suspended
        t_suspend + 500: False,
        t_reinstate - 1: False,
        t_reinstate: True,  # reinstated
        t_reinstate + 10**6: True,
        2**64 - 1: True,
    }
    assert {t: was(Kind.PHARMACY, t) for t in expected} == expected
    # The wrong kind, or kind None, is never active, even while the institution is.
    for kind in (Kind.NONE, Kind.HOSPITAL, Kind.INSURER):
        assert not any(was(kind, t) for t in (t_register, t_reinstate + 1))


def test_was_active_at_with_many_changes(chain: EmbeddedChain, institutions: Contract) -> None:
    """The binary search over a longer history: alternate states every 10 seconds."""
    insurer = chain.fresh_account().address
    t0 = chain.now() + 100
    chain.travel(t0)
    tx(chain, institutions.functions.register(insurer, Kind.INSURER, "I"), chain.registrar)
    changes = [(t0, True)]
    for i in range(1, 8):
        when = t0 + 10 * i
        chain.travel(when)
        fn = institutions.functions.suspend if i % 2 else institutions.functions.reinstate
        tx(chain, fn(insurer), chain.registrar)
        changes.append((when, i % 2 == 0))
    assert institutions.functions.historyOf(insurer).call() == changes
    for time in [t0 - 1] + [t for since, _ in changes for t in (since, since + 9)]:
        expected = False
        for since, active in changes:
            if since <= time:
                expected = active
        assert institutions.functions.wasActiveAt(insurer, Kind.INSURER, time).call() is expected


# --------------------------------------------------------------------------- roles


@pytest.mark.parametrize("function", ["register", "suspend", "reinstate"])
def test_registrar_functions_refuse_non_registrar(
    chain: EmbeddedChain, institutions: Contract, hospital: LocalAccount, function: str
) -> None:
    stranger = chain.fresh_account()
    target = chain.fresh_account().address if function == "register" else hospital.address
    args: tuple[Any, ...] = (target, Kind.HOSPITAL, "H") if function == "register" else (target,)
    for caller in (stranger, chain.admin, chain.operator):  # the admin holds no REGISTRAR role
        with reverts(*unauthorized(caller.address, REGISTRAR_ROLE)):
            tx(chain, institutions.functions[function](*args), caller)


def test_admin_grants_and_revokes_registrar(chain: EmbeddedChain, institutions: Contract) -> None:
    regulator = chain.fresh_account()
    first, second = chain.fresh_account().address, chain.fresh_account().address
    assert institutions.functions.hasRole(REGISTRAR_ROLE, regulator.address).call() is False

    tx(chain, institutions.functions.grantRole(REGISTRAR_ROLE, regulator.address), chain.admin)
    assert institutions.functions.hasRole(REGISTRAR_ROLE, regulator.address).call() is True
    tx(chain, institutions.functions.register(first, Kind.HOSPITAL, "H"), regulator)
    assert institutions.functions.isActive(first).call() is True

    tx(chain, institutions.functions.revokeRole(REGISTRAR_ROLE, regulator.address), chain.admin)
    assert institutions.functions.hasRole(REGISTRAR_ROLE, regulator.address).call() is False
    with reverts(*unauthorized(regulator.address, REGISTRAR_ROLE)):
        tx(chain, institutions.functions.register(second, Kind.HOSPITAL, "H"), regulator)


def test_only_admin_grants_roles(chain: EmbeddedChain, institutions: Contract) -> None:
    for caller in (chain.registrar, chain.fresh_account()):
        with reverts(*unauthorized(caller.address, DEFAULT_ADMIN_ROLE)):
            tx(chain, institutions.functions.grantRole(REGISTRAR_ROLE, caller.address), caller)
    assert institutions.functions.getRoleAdmin(REGISTRAR_ROLE).call() == DEFAULT_ADMIN_ROLE
    assert call_or_raise(institutions.functions.REGISTRAR_ROLE()) == REGISTRAR_ROLE


def test_changes_within_one_second_resolve_to_the_last(
    chain: EmbeddedChain, institutions: Contract, hospital: LocalAccount
) -> None:
    """Suspend and reinstate in the same block: both kept, the later one wins at that time."""
    w3 = chain.w3
    second = chain.fresh_account()  # eth-tester queues one transaction per sender per block
    tx(chain, institutions.functions.grantRole(REGISTRAR_ROLE, second.address), chain.admin)
    hashes = []
    chain.tester.disable_auto_mine_transactions()
    try:
        for registrar, fn in (
            (chain.registrar, institutions.functions.suspend),
            (second, institutions.functions.reinstate),
        ):
            built = fn(hospital.address).build_transaction(
                {
                    "from": registrar.address,
                    "nonce": w3.eth.get_transaction_count(registrar.address),
                    "gas": 200_000,
                }
            )
            signed = registrar.sign_transaction(dict(built))  # type: ignore[arg-type]
            hashes.append(w3.eth.send_raw_transaction(signed.raw_transaction))
        chain.tester.mine_blocks(1)
    finally:
        chain.tester.enable_auto_mine_transactions()
    receipts = [w3.eth.get_transaction_receipt(h) for h in hashes]
    assert [r["status"] for r in receipts] == [1, 1]
    assert receipts[0]["blockNumber"] == receipts[1]["blockNumber"]
    when = block_time(chain, receipts[0])
    history = institutions.functions.historyOf(hospital.address).call()
    assert history[1:] == [(when, False), (when, True)]
    assert institutions.functions.wasActiveAt(hospital.address, Kind.HOSPITAL, when).call()
    assert institutions.functions.wasActiveAt(hospital.address, Kind.HOSPITAL, when - 1).call()
    # What ingest and the regulator's tools compute from the history: the contract's answer.
    registered_at = history[0][0]
    for at in (registered_at - 1, registered_at, when - 1, when, when + 1):
        expected = institutions.functions.wasActiveAt(hospital.address, Kind.HOSPITAL, at).call()
        assert status_at(Kind.HOSPITAL, registered_at, history, at).active is expected, at
