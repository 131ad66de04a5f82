"""ConsentRegistryV2 through web3: deploy it, commit grants, revoke them, ask its rule.

The service, the tests and the benchmarks send transactions with it; the regulator's tools
read through :class:`ledger.chain.consent.ReaderConsent` instead (no web3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from ledger.chain.artifacts import load_artifact
from ledger.chain.consent import CONTRACT, status_call, status_of
from ledger.chain.model import ChainError, hash32
from ledger.chain.tx import call_or_raise, send
from ledger.consent import SignedGrant, consent_domain_v2
from ledger.eip712 import Domain, recover
from ledger.errors import SignatureError
from ledger.rules import GrantStatus

#: What ERC-1271's ``isValidSignature`` answers for a valid signature.
ERC1271_MAGIC: Final = bytes.fromhex("1626ba7e")

#: ERC-1271's one function (a contract wallet's).
_ERC1271_ABI: Final = [
    {
        "type": "function",
        "name": "isValidSignature",
        "stateMutability": "view",
        "inputs": [{"name": "hash", "type": "bytes32"}, {"name": "signature", "type": "bytes"}],
        "outputs": [{"name": "magicValue", "type": "bytes4"}],
    }
]


def check_signature(w3: Web3, signer: str, grant_digest: bytes, signature: bytes) -> None:
    """:class:`SignatureError` unless ``signature`` over ``grant_digest`` is ``signer``'s, as
    the contract's ``SignatureChecker`` decides: a key's signature recovering to ``signer``,
    else, when ``signer`` is a contract, its ERC-1271 ``isValidSignature`` answering the magic
    value (asked on the latest block)."""
    signer = to_checksum_address(signer)
    try:
        if recover(grant_digest, signature) == signer:
            return
        why = "the signature is not the patient's"
    except SignatureError as exc:
        why = exc.detail
    if w3.eth.get_code(signer):
        wallet = w3.eth.contract(address=signer, abi=_ERC1271_ABI)
        try:
            fn = wallet.functions.isValidSignature(grant_digest, signature)
            answer = bytes(call_or_raise(fn))
        except ChainError:
            raise
        except Exception:  # a revert, or a contract without the function: not a yes
            answer = b""
        if answer == ERC1271_MAGIC:
            return
        why = "the patient's contract wallet does not accept the signature (ERC-1271)"
    raise SignatureError(why)


def deploy_consent_v2(w3: Web3, deployer: LocalAccount) -> str:
    """Deploy a ConsentRegistryV2; its checksummed address."""
    artifact = load_artifact(CONTRACT)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = send(w3, factory.constructor(), deployer)
    address = receipt["contractAddress"]
    if address is None:
        raise ChainError(f"deploying {CONTRACT} produced no contract address")
    return to_checksum_address(address)


class ConsentV2:
    """A deployed ConsentRegistryV2."""

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.contract: Contract = w3.eth.contract(
            address=self.address, abi=load_artifact(CONTRACT).abi
        )
        self.domain: Domain = consent_domain_v2(int(w3.eth.chain_id), self.address)

    # -- transactions ---------------------------------------------------------------------

    def commit_call(self, commitments: Sequence[bytes]) -> ContractFunction:
        """The ``commit`` of ``commitments`` (each 32 bytes, else a :class:`ProofError`), for
        any sender to send: :meth:`commit`, or the service's own transaction path
        (:meth:`ledger.chain.client.Chain.commit_grants`)."""
        return self.contract.functions.commit([hash32(c, "commitment") for c in commitments])

    def revoke_call(self, secret: bytes) -> ContractFunction:
        """The ``revoke`` presenting ``secret`` (32 bytes, else a :class:`ProofError`)."""
        return self.contract.functions.revoke(hash32(secret, "revocation secret"))

    def commit(self, commitments: Sequence[bytes], sender: LocalAccount) -> TxReceipt:
        """Put commitments on chain in one transaction (any sender: the service, a relayer)."""
        return send(self.w3, self.commit_call(commitments), sender)

    def revoke(self, secret: bytes, sender: LocalAccount) -> TxReceipt:
        """Present a revocation secret (any sender: the patient from any address, a relayer)."""
        return send(self.w3, self.revoke_call(secret), sender)

    # -- reads ----------------------------------------------------------------------------

    def committed_at(self, commitment: bytes) -> int:
        """Block time of the commitment; 0 if it is not on chain."""
        return int(call_or_raise(self.contract.functions.committedAt(commitment)))

    def revoked_at(self, revocation_hash: bytes) -> int:
        """Block time of the revocation; 0 if none."""
        return int(call_or_raise(self.contract.functions.revokedAt(revocation_hash)))

    def status_at(
        self,
        grant_id: int,
        grant: SignedGrant,
        *,
        patient: str,
        grantee: str,
        record_ref: bytes,
        purpose: int,
        time: int,
    ) -> GrantStatus:
        """``grantStatusAt``: whether ``grant`` (cited as ``grant_id``) covered the access."""
        call = status_call(
            grant_id,
            grant,
            patient=patient,
            grantee=grantee,
            record_ref=record_ref,
            purpose=purpose,
            time=time,
        )
        if call is None:
            return GrantStatus.NOT_FOUND
        fn = self.contract.functions.grantStatusAt(*call)
        return status_of(call_or_raise(fn))
