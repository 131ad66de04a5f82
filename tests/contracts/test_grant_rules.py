"""ledger.events.grant_refusal against the ConsentRegistry itself, at the boundaries.

For each case a correctly signed grant is relayed (``grantBySig``) in a block at a known time
``when``: the contract must revert with exactly the error (and arguments) the pure function
predicts for ``now = when``, or accept the grant when it predicts nothing. The wallet refuses
before signing and the API before relaying with that function, so they cannot disagree with
the chain on these rules.
"""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from ledger.chain.tx import ContractReverted
from ledger.events import GrantRefusal, grant_refusal
from tests.conftest import EmbeddedChain
from tests.contracts.conftest import Request, Signer, block_time, tx

UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1
#: The block time every case is relayed at (offset from the chain's clock at the start).
AHEAD = 1000

#: (purposes, notBefore, expiresAt, deadline), each time as an offset from ``when`` (None: an
#: absolute extreme), and the expected refusal (None: accepted).
CASES: dict[str, tuple[int, int | None, int | None, int | None, str | None]] = {
    "shortest-valid": (1, 0, 1, 0, None),  # a one-second window, expiring next second,
    # relayed at its deadline's own second
    "deadline-passed": (1, -10, 100, -1, "SignatureExpired"),
    "no-purpose": (0, -10, 100, 10, "EmptyPurposes"),
    "empty-window": (1, 50, 50, 10, "InvalidValidityWindow"),
    "reversed-window": (1, 51, 50, 10, "InvalidValidityWindow"),
    "one-second-window": (1, 49, 50, 10, None),
    "expires-in-the-block": (1, -10, 0, 10, "GrantAlreadyExpired"),
    "expired-before-the-block": (1, -10, -1, 10, "GrantAlreadyExpired"),
    "not-yet-valid-is-fine": (1, 500, 600, 10, None),
    "window-before-expiry": (1, 0, 0, 10, "InvalidValidityWindow"),
    "deadline-first": (0, 0, 0, -1, "SignatureExpired"),
    "purposes-before-window": (0, 5, 1, 10, "EmptyPurposes"),
    "extremes": (UINT256_MAX, None, None, None, None),
}


def _at(when: int, offset: int | None, extreme: int) -> int:
    return extreme if offset is None else when + offset


@pytest.mark.parametrize("case", list(CASES))
def test_grant_refusal_is_what_the_contract_does(
    case: str,
    chain: EmbeddedChain,
    consent: Contract,
    hospital: LocalAccount,
    signer: Signer,
) -> None:
    purposes, not_before, expires_at, deadline, expected = CASES[case]
    when = chain.now() + AHEAD
    request = Request(
        grantee=hospital.address,
        recordRef=bytes(32),
        purposes=purposes,
        notBefore=_at(when, not_before, 0),
        expiresAt=_at(when, expires_at, UINT64_MAX),
    )
    until = _at(when, deadline, UINT256_MAX)
    predicted = grant_refusal(
        purposes=request.purposes,
        not_before=request.notBefore,
        expires_at=request.expiresAt,
        deadline=until,
        now=when,
    )
    assert (predicted.error if predicted else None) == expected

    patient, relayer = Account.create(), chain.fresh_account()
    signature = signer.grant(patient.key, patient.address, request, nonce=0, deadline=until)
    call = consent.functions.grantBySig(patient.address, request.abi(), until, signature)
    chain.travel(when)
    if predicted is None:
        receipt = tx(chain, call, relayer)
        assert block_time(chain, receipt) == when
        assert consent.functions.grantCount().call() == 1
    else:
        with pytest.raises(ContractReverted) as info:
            tx(chain, call, relayer)
        assert GrantRefusal(info.value.error, info.value.args_) == predicted
        assert consent.functions.grantCount().call() == 0


def test_an_earlier_clock_never_refuses_what_the_chain_accepts() -> None:
    """The API judges with the latest block's time, earlier than the next block's: each check
    only refuses more as time passes, so it may let through (the chain then refuses), never
    refuse what the chain would accept."""
    for purposes, not_before, expires_at, deadline, _expected in CASES.values():
        when = 10_000
        values = {
            "purposes": purposes,
            "not_before": _at(when, not_before, 0),
            "expires_at": _at(when, expires_at, UINT64_MAX),
            "deadline": _at(when, deadline, UINT256_MAX),
        }
        if grant_refusal(**values, now=when) is None:
            assert all(grant_refusal(**values, now=when - d) is None for d in (1, 60, when))
