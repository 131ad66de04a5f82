"""The patient's own copies of the version-2 grants they signed, in the wallet directory.

Consent version 2 puts only a salted commitment on chain; the signed grant itself — and with it
the salt the revocation secret is derived from — lives off chain. The wallet keeps a copy of
every grant it signs (:data:`GRANTS_FILE`), *before* sending it to the service, so that the
patient can always revoke it, or cancel a signature the service never committed, without the
operator (``medtrail wallet revoke --direct``, ``cancel-signatures --direct``).

Nothing secret is kept: a grant and its signature are what the grantee and the service hold
too; the revocation secret is derived again from the key each time it is needed. The file is
the patient's personal data all the same: written atomically, mode 0600.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ledger.consent import SignedGrant, consent_domain_v2
from ledger.eip712 import Domain
from ledger.errors import LedgerError
from wallets.errors import CorruptWallet
from wallets.files import read_section, write_section

__all__ = ["GRANTS_FILE", "KeptGrant", "LocalGrants"]

#: The version-2 grants a wallet signed, in its directory.
GRANTS_FILE: Final = "grants-v2.json"


@dataclass(frozen=True)
class KeptGrant:
    """A signed grant and the ConsentRegistryV2 (domain) it was signed for."""

    domain: Domain
    grant: SignedGrant

    @property
    def grant_id(self) -> int:
        return self.grant.grant_id(self.domain)

    @property
    def commitment(self) -> bytes:
        return self.grant.commitment(self.domain)


def _key(domain: Domain, grant_id: int) -> str:
    return f"{domain.chain_id}:{domain.verifying_contract}:{grant_id:#066x}"


@dataclass(frozen=True)
class LocalGrants:
    """The grants kept in ``directory`` (None: nothing is kept)."""

    directory: Path | None = None

    @property
    def path(self) -> Path | None:
        return None if self.directory is None else self.directory / GRANTS_FILE

    def _read(self) -> dict[str, Any]:
        remedy = "restore it from a backup (the grants you signed are also at the service)"
        return read_section(self.path, "grants", remedy)

    def all(self) -> list[KeptGrant]:
        """Every grant kept, in the order they were signed."""
        kept = []
        for name, entry in self._read().items():
            try:
                domain = consent_domain_v2(int(entry["chainId"]), str(entry["registry"]))
                grant = SignedGrant.from_json(entry["grant"])
            except (LedgerError, KeyError, TypeError, ValueError) as exc:
                raise CorruptWallet(
                    f"{self.path} holds a malformed grant {name} ({exc})", path=str(self.path)
                ) from None
            kept.append(KeptGrant(domain, grant))
        return kept

    def of(self, domain: Domain, patient: str) -> list[KeptGrant]:
        """The grants ``patient`` signed for the registry of ``domain``."""
        return [k for k in self.all() if k.domain == domain and k.grant.patient == patient]

    def find(self, grant_id: int) -> KeptGrant | None:
        """The grant kept with id ``grant_id`` (on any registry), if any."""
        return next((k for k in self.all() if k.grant_id == grant_id), None)

    def keep(self, domain: Domain, grant: SignedGrant) -> None:
        """Add ``grant`` (signed for ``domain``'s registry); keeping it twice is harmless."""
        path = self.path
        if path is None:
            return
        grants = self._read()
        grants[_key(domain, grant.grant_id(domain))] = {
            "chainId": domain.chain_id,
            "registry": domain.verifying_contract,
            "grant": grant.as_json(),
        }
        write_section(path, "grants", grants, sort_keys=False)  # in the order signed
