"""The contracts a wallet trusts, pinned as the regulator pins them.

What a patient signs (consent grants, revocations, sign-in messages) names the chain and the
ConsentRegistry; what the wallet verifies (who saw my records) is proved against the AuditLog.
A service could name other contracts than the ones it really uses, so the wallet does not take
them on its word:

* the patient may configure them — a deployment file (``--deployment-file``, as
  ``medtrail deploy`` writes it or as ``GET /v1/deployment`` serves it) or the addresses;
* otherwise the first deployment a service names is saved in the wallet directory
  (:data:`PIN_FILE`) once a command with it succeeded, and trusted from then on (trust on
  first use, as SSH does).

Either way, a service that later names other contracts is refused
(:class:`~ledger.chain.model.DeploymentMismatch`) before anything is signed or verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ledger.chain.model import Deployment, DeploymentMismatch, DeploymentSpec, TrustedDeployment

__all__ = ["PIN_FILE", "DeploymentPin", "read_deployment"]

#: The deployment a wallet pinned on first use, in its directory.
PIN_FILE: Final = "deployment.json"


def read_deployment(path: Path) -> Deployment:
    """The deployment file at ``path``; else a :class:`DeploymentMismatch` saying in one line
    what is wrong with it (missing, not JSON, or its first wrong field: ``Deployment.read``)."""
    return Deployment.read(path)


@dataclass(frozen=True)
class DeploymentPin:
    """Where a wallet's trusted deployment comes from.

    :param directory: the wallet directory, where the first deployment seen is pinned (None:
        nothing is saved; each session trusts the first one it sees).
    :param configured: the contracts the patient named (a deployment file's, or addresses).
    """

    directory: Path | None = None
    configured: DeploymentSpec | None = None
    #: The ConsentRegistryV2 the patient named with ``configured`` (None: none).
    configured_v2: str | None = None

    @property
    def path(self) -> Path | None:
        """The pin file (None without a wallet directory)."""
        return None if self.directory is None else self.directory / PIN_FILE

    def save(self, served: Deployment) -> None:
        """Pin ``served`` in the wallet directory, unless the patient configured the contracts
        or one is pinned already (call once a command with it succeeded)."""
        path = self.path
        if self.configured is None and path is not None and not path.exists():
            served.write(path)

    def trusted(self, served: Deployment, service: str) -> TrustedDeployment:
        """The deployment to use with a service (at ``service``) that names ``served``:
        the configured one, else the pinned one (``served`` itself when none is pinned yet:
        :meth:`save` pins it); a :class:`DeploymentMismatch` when the service names another."""
        if self.configured is not None:
            mine = self.configured.resolve(self.configured.chain_id or served.chain_id)
            origin = "the contracts you configured"
        else:
            path = self.path
            if path is None or not path.exists():
                return served.trusted()
            mine = read_deployment(path).trusted()
            origin = f"the contracts this wallet pinned on first use ({path})"
        theirs = served.trusted()
        differences = [
            name
            for name, a, b in (
                ("chain id", mine.chain_id, theirs.chain_id),
                ("InstitutionRegistry", mine.institution_registry, theirs.institution_registry),
                ("AuditLog", mine.audit_log, theirs.audit_log),
                ("ConsentRegistry", mine.consent_registry, theirs.consent_registry),
            )
            if a != b
        ]
        if differences:
            raise DeploymentMismatch(
                f"the service at {service} names other contracts than {origin} (it differs in "
                f"{', '.join(differences)}): refusing to sign or verify anything with it. If "
                "the deployment really moved, check the new one with its operator and configure "
                "it (--deployment-file)",
                service=service,
            )
        return mine

    def registry_v2(self, served: Deployment, service: str) -> str | None:
        """The ConsentRegistryV2 to sign version-2 grants for with a service that names
        ``served`` (None: the deployment has no version 2): the configured one, else the pinned
        one (``served``'s when none is pinned yet); a :class:`DeploymentMismatch` when the
        service names another, or one where the trusted deployment has none."""
        theirs = served.consent_registry_v2
        if self.configured is not None:
            mine, origin = self.configured_v2, "the contracts you configured"
        else:
            path = self.path
            if path is None or not path.exists():
                return theirs
            mine = read_deployment(path).consent_registry_v2
            origin = f"the contracts this wallet pinned on first use ({path})"
        if mine != theirs:
            raise DeploymentMismatch(
                f"the service at {service} names ConsentRegistryV2 {theirs or '(none)'}, "
                f"{origin} {mine or 'none'}: refusing to sign consent with it. If the "
                "deployment really changed, check the new one with its operator and configure "
                "it (--deployment-file)",
                service=service,
            )
        return mine
