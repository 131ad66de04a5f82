"""A faster gas estimate for the embedded chain, in the test process only.

eth-tester asks py-evm for ``eth_estimateGas`` by binary search: about a dozen executions of
the transaction, most of the cost of every transaction the embedded chain runs (deploying,
registering, relaying). :func:`estimate_gas` runs the transaction once at the block's gas
limit, proposes twice the gas it used (room for the 63/64 rule of nested calls), checks that
the transaction succeeds with that limit, and falls back to py-evm's own binary search when
it does not. A transaction that fails at the block's limit raises the same error as py-evm's
estimate. The result is always a limit the transaction succeeds with; only the limit (not
the gas used, not the outcome) may differ from py-evm's smallest one.

:func:`install` makes every py-evm chain of this process use it: the test process
(tests/conftest.py) and the embedded service subprocesses the tests start
(tests/support/service_proc.py). The product itself keeps py-evm's default.
"""

from __future__ import annotations

from typing import Any, cast

import eth.chains.base
from eth.abc import SignedTransactionAPI, StateAPI
from eth.estimators.gas import binary_gas_search_intrinsic_tolerance
from eth.vm.spoof import SpoofTransaction


def _run(state: StateAPI, transaction: SignedTransactionAPI, gas: int) -> Any:
    """The computation of ``transaction`` with gas limit ``gas``, its effects reverted."""
    spoofed = cast(SignedTransactionAPI, SpoofTransaction(transaction, gas=gas, gas_price=0))
    snapshot = state.snapshot()
    try:
        return state.apply_transaction(spoofed)
    finally:
        state.revert(snapshot)


def estimate_gas(state: StateAPI, transaction: SignedTransactionAPI) -> int:
    """A gas limit ``transaction`` succeeds with (see the module's docstring)."""
    at_limit = _run(state, transaction, state.gas_limit)
    if at_limit.is_error:
        raise at_limit.error
    used = int(state.gas_limit - at_limit.get_gas_remaining())
    proposal = int(min(state.gas_limit, 2 * used + 10_000))
    if not _run(state, transaction, proposal).is_error:
        return proposal
    return int(binary_gas_search_intrinsic_tolerance(state, transaction))


def install() -> None:
    """Every py-evm chain created in this process from now on estimates with it."""
    eth.chains.base.Chain.gas_estimator = staticmethod(estimate_gas)  # type: ignore[assignment]
