"""``medtrail wallet …``: a patient's keys and consent, from the command line.

Secrets never come from the command line: the passphrase comes from
``MEDTRAIL_WALLET_PASSPHRASE`` or a hidden prompt, a mnemonic from
``MEDTRAIL_WALLET_MNEMONIC`` or a hidden prompt, a private key from
``MEDTRAIL_WALLET_PRIVATE_KEY`` or a hidden prompt. Every error is one clear message on
stderr and exit status 1 (with ``--json`` also ``{"error": {...}}`` on stdout).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import click

from ledger.errors import LedgerError
from ledger.recursion import cap_recursion_limit
from ledger.trail_options import max_backdate_option, max_merge_delay_option
from wallets.errors import InvalidConsentRequest, PassphraseRequired, WalletError, WalletExists
from wallets.text import when as _when

__all__ = ["SCRYPT_N_ENV", "wallet_group"]

# The wallet's modules (eth-account, cryptography, the chain reader) are imported by the
# commands that use them, not here: `medtrail wallet --help` needs none of them.
if TYPE_CHECKING:
    from ledger.chain.model import DeploymentSpec
    from wallets.service import AccessReport, PatientSession
    from wallets.wallet import Wallet

F = TypeVar("F", bound=Callable[..., Any])

#: For tests only: a lower scrypt work factor for the keystores the CLI writes.
SCRYPT_N_ENV: Final = "MEDTRAIL_WALLET_SCRYPT_N"
MNEMONIC_ENV: Final = "MEDTRAIL_WALLET_MNEMONIC"
PRIVATE_KEY_ENV: Final = "MEDTRAIL_WALLET_PRIVATE_KEY"
API_URL_ENV: Final = "MEDTRAIL_API_URL"
FALLBACK_API_URL_ENV: Final = "MEDTRAIL_URL"
EXIT_ERROR: Final = 1


def _scrypt_n() -> int:
    from wallets.keystore import DEFAULT_SCRYPT_N

    raw = os.environ.get(SCRYPT_N_ENV)
    if not raw:
        return DEFAULT_SCRYPT_N
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 2 or value & (value - 1):
        raise WalletError(f"{SCRYPT_N_ENV} must be a power of two, got {raw!r}")
    return value


def _fail(error: WalletError | LedgerError, as_json: bool) -> NoReturn:
    detail = error.detail
    code = error.code
    if as_json:
        click.echo(json.dumps({"error": error.diagnostics()}, default=str))
    click.secho(f"error: {detail} [{code}]", fg="red", err=True)
    sys.exit(EXIT_ERROR)


@contextmanager
def _errors(as_json: bool) -> Iterator[None]:
    """Any wallet or ledger error as one message and exit status 1. Entered first by every
    command: eth-account, imported by them, raises the recursion limit (its py_ecc); it is
    lowered back here."""
    cap_recursion_limit(preload=("py_ecc",))
    try:
        yield
    except (WalletError, LedgerError) as exc:
        _fail(exc, as_json)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _parse_time(value: str, what: str) -> int:
    text = value.strip()
    try:
        if text.isdigit():
            return int(text)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidConsentRequest(
            f"{what} must be a date (2027-01-01), a date and time (2027-01-01T12:00:00Z) or"
            f" unix seconds, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- options


def _wallet_dir_option(fn: F) -> F:
    return click.option(
        "--wallet-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The wallet directory (default: $MEDTRAIL_WALLET_DIR or ~/.medtrail/wallet).",
    )(fn)


def _json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None:
            ctx.meta[f"medtrail.{key}"] = value
        return value

    return callback


def _deployment_options(fn: F) -> F:
    """The contracts the patient trusts (else the first a service names, pinned in the
    wallet directory): kept in the click context for :func:`_connect`."""
    options = [
        click.option(
            "--deployment-file",
            envvar="MEDTRAIL_WALLET_DEPLOYMENT_FILE",
            type=click.Path(dir_okay=False, path_type=Path),
            expose_value=False,
            callback=_remember("deployment_file"),
            help="Trust the contracts of this deployment file (as `medtrail deploy` writes it, "
            "or as GET /v1/deployment serves it) [env MEDTRAIL_WALLET_DEPLOYMENT_FILE]; "
            "default: the first a service names, pinned in the wallet directory.",
        ),
        *(
            click.option(
                f"--{name}",
                metavar="ADDRESS",
                expose_value=False,
                callback=_remember(name),
                help=f"Trust this {label} (give all three), instead of a deployment file.",
            )
            for name, label in (
                ("institution-registry", "InstitutionRegistry"),
                ("audit-log", "AuditLog"),
                ("consent-registry", "ConsentRegistry"),
            )
        ),
        click.option(
            "--consent-registry-v2",
            metavar="ADDRESS",
            expose_value=False,
            callback=_remember("consent-registry-v2"),
            help="With the three addresses: the deployment's ConsentRegistryV2 (consent "
            "version 2), if it has one.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _configured_deployment() -> tuple[DeploymentSpec | None, str | None]:
    """The contracts given by :func:`_deployment_options`, if any, and the
    ConsentRegistryV2 among them (None: none)."""
    from ledger.chain.model import DeploymentSpec
    from wallets.pin import read_deployment

    meta = click.get_current_context().meta
    path = meta.get("medtrail.deployment_file")
    addresses = [meta.get(f"medtrail.{n}") for n in _ADDRESS_OPTIONS]
    v2 = meta.get("medtrail.consent-registry-v2")
    if path is not None:
        if any(addresses) or v2:
            raise WalletError("give --deployment-file or the contract addresses, not both")
        deployment = read_deployment(path)
        return DeploymentSpec.from_deployment(deployment), deployment.consent_registry_v2
    if any(addresses):
        if not all(addresses):
            raise WalletError(
                "give all three of --institution-registry, --audit-log and --consent-registry"
            )
        institutions, audit_log, consent = (str(a) for a in addresses)
        return DeploymentSpec(institutions, audit_log, consent), None if v2 is None else str(v2)
    if v2:
        raise WalletError("--consent-registry-v2 goes with the three other addresses")
    return None, None


_ADDRESS_OPTIONS: Final = ("institution-registry", "audit-log", "consent-registry")


def _service_options(fn: F) -> F:
    fn = _deployment_options(fn)
    fn = click.option(
        "--account",
        "address",
        default=None,
        help="The account to use (default: the wallet's first).",
    )(fn)
    fn = click.option(
        "--siwe-domain",
        envvar="MEDTRAIL_SIWE_DOMAIN",
        default=None,
        help="The sign-in domain, when the service is reached under another name (proxy).",
    )(fn)
    fn = click.option(
        "--api",
        "api_url",
        default=None,
        help=f"The medtrail API URL (default: ${API_URL_ENV}, else ${FALLBACK_API_URL_ENV}).",
    )(fn)
    return _wallet_dir_option(_json_option(fn))


def _directory(wallet_dir: Path | None) -> Path:
    from wallets.wallet import default_wallet_dir

    return wallet_dir if wallet_dir is not None else default_wallet_dir()


def _open(wallet_dir: Path | None) -> Wallet:
    from wallets.wallet import Wallet

    return Wallet.open(_directory(wallet_dir), scrypt_n=_scrypt_n())


def _connect(
    wallet_dir: Path | None, api_url: str | None, address: str | None, siwe_domain: str | None
) -> PatientSession:
    url = api_url or os.environ.get(API_URL_ENV) or os.environ.get(FALLBACK_API_URL_ENV)
    if not url:
        raise WalletError(
            f"no API URL: pass --api or set {API_URL_ENV} (e.g. http://127.0.0.1:8000)"
        )
    from wallets.keystore import read_passphrase

    deployment, registry_v2 = _configured_deployment()
    wallet = _open(wallet_dir)
    passphrase = read_passphrase()
    return wallet.connect(
        url,
        passphrase,
        address=address,
        siwe_domain=siwe_domain,
        deployment=deployment,
        consent_registry_v2=registry_v2,
    )


def _grant_line(grant: Mapping[str, Any]) -> str:
    from wallets.service import grant_ref, purpose_names

    scope = "all records" if grant.get("allRecords") else f"record {grant['recordRef']}"
    purposes = ", ".join(grant.get("purposeNames") or purpose_names(int(grant["purposes"])))
    name = grant.get("granteeName")
    who = f"{name} ({grant['grantee']})" if name else grant["grantee"]
    return (
        f"grant {grant_ref(grant)}: {grant['status']} — {who} may access {scope}"
        f" for {purposes}, from {_when(int(grant['notBefore']))}"
        f" until {_when(int(grant['expiresAt']))}"
    )


# --------------------------------------------------------------------------- commands


@click.group("wallet")
def wallet_group() -> None:
    """A patient's wallet: keys, consent grants and revocations, who saw my records."""


@wallet_group.command()
@_wallet_dir_option
@click.option("--words", type=click.Choice(["12", "15", "18", "21", "24"]), default="12")
@click.option("--accounts", type=click.IntRange(1, 100), default=1, help="Accounts to derive.")
@_json_option
def create(wallet_dir: Path | None, words: str, accounts: int, as_json: bool) -> None:
    """Create a wallet with a new recovery phrase (shown once)."""
    from wallets.keystore import read_passphrase
    from wallets.mnemonic import MNEMONIC_WARNING
    from wallets.wallet import Wallet

    with _errors(as_json):
        directory = _directory(wallet_dir)
        if Wallet.exists(directory):
            raise WalletExists(f"a wallet exists already in {directory}", directory=str(directory))
        passphrase = read_passphrase(new=True, prompt="New wallet passphrase")
        wallet, mnemonic = Wallet.create(
            directory, passphrase, words=int(words), accounts=accounts, scrypt_n=_scrypt_n()
        )
    if as_json:
        _echo_json(
            {
                "directory": str(wallet.directory),
                "addresses": list(wallet.addresses()),
                "mnemonic": mnemonic,
                "warning": MNEMONIC_WARNING,
            }
        )
        return
    click.echo(f"Created a wallet in {wallet.directory}")
    click.echo("")
    click.secho(MNEMONIC_WARNING, fg="yellow", err=True)
    click.echo("")
    click.echo(f"    {mnemonic}")
    click.echo("")
    click.echo("These words will not be shown again.")
    for address in wallet.addresses():
        click.echo(f"account {address}")


def _secret_from(env: str, prompt: str) -> str:
    value = os.environ.get(env, "")
    if value:
        return value
    try:
        text: str = click.prompt(prompt, hide_input=True, show_default=False, type=str)
    except click.Abort:
        raise PassphraseRequired(
            f"nothing to import: set {env} or run in a terminal to be prompted"
        ) from None
    return text


@wallet_group.command("import-mnemonic")
@_wallet_dir_option
@click.option("--accounts", type=click.IntRange(1, 100), default=1, help="Accounts to derive.")
@_json_option
def import_mnemonic(wallet_dir: Path | None, accounts: int, as_json: bool) -> None:
    """Restore a wallet from its recovery phrase (prompted, or $MEDTRAIL_WALLET_MNEMONIC)."""
    from wallets.keystore import read_passphrase
    from wallets.wallet import Wallet

    with _errors(as_json):
        directory = _directory(wallet_dir)
        if Wallet.exists(directory):
            raise WalletExists(f"a wallet exists already in {directory}", directory=str(directory))
        mnemonic = _secret_from(MNEMONIC_ENV, "Recovery phrase")
        passphrase = read_passphrase(new=True, prompt="New wallet passphrase")
        wallet = Wallet.import_mnemonic(
            directory, mnemonic, passphrase, accounts=accounts, scrypt_n=_scrypt_n()
        )
    _print_accounts(wallet, as_json)


@wallet_group.command("import-key")
@_wallet_dir_option
@_json_option
def import_key(wallet_dir: Path | None, as_json: bool) -> None:
    """Import a private key (prompted, or $MEDTRAIL_WALLET_PRIVATE_KEY) into the wallet,
    creating the wallet if there is none."""
    from wallets.keystore import read_passphrase
    from wallets.wallet import Wallet

    with _errors(as_json):
        directory = _directory(wallet_dir)
        key = _secret_from(PRIVATE_KEY_ENV, "Private key (hex)")
        new = not Wallet.exists(directory)
        passphrase = read_passphrase(
            new=new, prompt="New wallet passphrase" if new else "Wallet passphrase"
        )
        wallet = Wallet.import_key(directory, key, passphrase, scrypt_n=_scrypt_n())
    _print_accounts(wallet, as_json)


@wallet_group.command("new-account")
@_wallet_dir_option
@_json_option
def new_account(wallet_dir: Path | None, as_json: bool) -> None:
    """Derive the next account from the wallet's recovery phrase."""
    from wallets.keystore import read_passphrase

    with _errors(as_json):
        wallet = _open(wallet_dir)
        entry = wallet.add_account(read_passphrase())
    if as_json:
        _echo_json(entry.as_json())
    else:
        click.echo(f"account {entry.address} ({entry.path})")


def _print_accounts(wallet: Wallet, as_json: bool) -> None:
    if as_json:
        _echo_json(
            {
                "directory": str(wallet.directory),
                "accounts": [a.as_json() for a in wallet.accounts()],
            }
        )
        return
    rows = [
        [a.address, str(a.source), a.path or "-", a.created_at.strftime("%Y-%m-%d")]
        for a in wallet.accounts()
    ]
    click.echo(f"wallet {wallet.directory}")
    click.echo(_table(["ADDRESS", "SOURCE", "PATH", "ADDED"], rows))


@wallet_group.command("list")
@_wallet_dir_option
@_json_option
def list_accounts(wallet_dir: Path | None, as_json: bool) -> None:
    """The wallet's accounts (no passphrase needed)."""
    with _errors(as_json):
        wallet = _open(wallet_dir)
    _print_accounts(wallet, as_json)


@wallet_group.command("sign-in")
@_service_options
@click.option("--print-token", is_flag=True, help="Print the session token (for scripts).")
def sign_in(
    wallet_dir: Path | None,
    api_url: str | None,
    address: str | None,
    siwe_domain: str | None,
    as_json: bool,
    print_token: bool,
) -> None:
    """Sign in (EIP-4361) and show the session; other commands sign in by themselves."""
    with _errors(as_json), _connect(wallet_dir, api_url, address, siwe_domain) as patient:
        session = patient.sign_in()
    if as_json:
        body: dict[str, Any] = {"address": session.address, "expiresAt": session.expires_at}
        if print_token:
            body["token"] = session.token
        _echo_json(body)
        return
    click.echo(f"signed in as {session.address} until {_when(session.expires_at)}")
    if print_token:
        click.echo(session.token)


#: The longest grant, in days (ledger.consent.MAX_GRANT_SECONDS; not imported at start-up).
_MAX_GRANT_DAYS: Final = 36_525


def _check_grantee(grantee: str) -> None:
    """``--to`` is an address (checked here, before the service is asked anything)."""
    from ledger.eip712 import parse_address

    try:
        parse_address(grantee, "--to")
    except LedgerError:
        raise InvalidConsentRequest(
            f"--to: {grantee!r} is not an address (0x and 40 hex digits)"
        ) from None


@wallet_group.command()
@_service_options
@click.option("--to", "grantee", required=True, help="The institution's address.")
@click.option("--record", "record_ref", default=None, help="The record reference (0x…32 bytes).")
@click.option("--all-records", is_flag=True, help="Every record of mine.")
@click.option(
    "--purpose",
    "purposes",
    multiple=True,
    required=True,
    help="treatment, payment, operations, research, public-health, legal (repeatable).",
)
@click.option("--expires", default=None, help="Expiry: 2027-01-01 or an ISO time (UTC).")
@click.option("--days", type=click.IntRange(min=1), default=None, help="Expire in N days.")
@click.option("--not-before", default=None, help="Start: 2026-12-01 or an ISO time (UTC).")
@click.option("--skip-institution-check", is_flag=True, hidden=True)
def grant(
    wallet_dir: Path | None,
    api_url: str | None,
    address: str | None,
    siwe_domain: str | None,
    as_json: bool,
    grantee: str,
    record_ref: str | None,
    all_records: bool,
    purposes: tuple[str, ...],
    expires: str | None,
    days: int | None,
    not_before: str | None,
    skip_institution_check: bool,
) -> None:
    """Let an institution access one record (--record) or all (--all-records)."""
    with _errors(as_json):
        if (record_ref is None) == (not all_records):
            raise InvalidConsentRequest("pass exactly one of --record REF and --all-records")
        if (expires is None) == (days is None):
            raise InvalidConsentRequest("pass exactly one of --expires DATE and --days N")
        _check_grantee(grantee)
        if days is not None and days > _MAX_GRANT_DAYS:
            raise InvalidConsentRequest(
                f"--days: a grant lasts at most {_MAX_GRANT_DAYS} days (asked for {days})"
            )
        expires_at = (
            _parse_time(expires, "--expires")
            if expires is not None
            else int(time.time()) + int(timedelta(days=days or 0).total_seconds())
        )
        start = None if not_before is None else _parse_time(not_before, "--not-before")
        with _connect(wallet_dir, api_url, address, siwe_domain) as patient:
            result = patient.grant(
                grantee,
                purposes=list(purposes),
                expires_at=expires_at,
                record_ref=record_ref,
                not_before=start,
                check_grantee=not skip_institution_check,
            )
    if as_json:
        _echo_json(result)
        return
    if result.get("version") == 2:
        click.echo(
            f"Grant {result['commitment']} signed, kept in the wallet and sent: the service"
            " commits it on chain" + (" (pending)." if result["status"] == "pending" else ".")
        )
    else:
        click.echo(f"Grant {result['grantId']} relayed and recorded on chain.")
    click.echo(_grant_line(result))
    if result.get("warning"):
        click.secho(f"warning: {result['warning']}", fg="yellow", err=True)


def _direct_options(fn: F) -> F:
    """``--direct``, ``--rpc-url``, ``--sender``: consent version 2 straight to the chain."""
    fn = click.option(
        "--sender",
        default=None,
        metavar="ADDRESS",
        help="With --direct: the account of this wallet that sends (and pays for) the "
        "transaction (default: the grant's own account; any funded account will do — import "
        "one with `wallet import-key`).",
    )(fn)
    fn = click.option(
        "--rpc-url",
        envvar="MEDTRAIL_WALLET_RPC_URL",
        default=None,
        help="With --direct: an Ethereum JSON-RPC node of the deployment's chain.",
    )(fn)
    return click.option(
        "--direct",
        is_flag=True,
        help="Consent version 2: send the revocation to the ConsentRegistryV2 yourself, "
        "through --rpc-url, without the service (from the grants this wallet keeps).",
    )(fn)


def _direct_accounts(
    wallet_dir: Path | None, address: str | None, sender: str | None, rpc_url: str | None
) -> tuple[Any, Any, str]:
    """The grant's account, the sending account (None: the same) and the node, for --direct."""
    from wallets.keystore import read_passphrase

    if not rpc_url:
        raise WalletError("--direct needs --rpc-url URL (or $MEDTRAIL_WALLET_RPC_URL)")
    wallet = _open(wallet_dir)
    passphrase = read_passphrase()
    account = wallet.account(address, passphrase)
    paying = None if sender is None else wallet.account(sender, passphrase)
    return account, paying, rpc_url


def _grant_id(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    from wallets.service import parse_grant_id

    try:
        return parse_grant_id(value)
    except InvalidConsentRequest as exc:
        raise click.BadParameter(exc.detail) from None


@wallet_group.command()
@_service_options
@_direct_options
@click.argument("grant_id", callback=_grant_id, metavar="GRANT_ID")
def revoke(
    wallet_dir: Path | None,
    api_url: str | None,
    address: str | None,
    siwe_domain: str | None,
    as_json: bool,
    direct: bool,
    rpc_url: str | None,
    sender: str | None,
    grant_id: int,
) -> None:
    """Revoke one of my grants (GRANT_ID: a version-1 id, or a version-2 grant's commitment
    as `wallet grants` shows it)."""
    with _errors(as_json):
        if direct:
            from wallets.grants import LocalGrants
            from wallets.service import revoke_directly

            account, paying, url = _direct_accounts(wallet_dir, address, sender, rpc_url)
            kept = LocalGrants(_directory(wallet_dir))
            result = revoke_directly(account, kept, grant_id, url, sender=paying)
        else:
            if sender is not None or rpc_url is not None:
                raise WalletError("--sender and --rpc-url go with --direct")
            with _connect(wallet_dir, api_url, address, siwe_domain) as patient:
                result = patient.revoke(grant_id)
    if as_json:
        _echo_json(result)
        return
    name = result.get("commitment") or grant_id
    if direct:
        click.echo(
            f"Grant {name} revoked on chain at {_when(int(result['revokedAt']))}"
            f" (transaction {result['transactionHash']}, sent by {result['sender']})."
        )
        return
    click.echo(f"Grant {name} revoked on chain at {_when(int(result['revokedAt']))}.")


@wallet_group.command("revocation-secret")
@_wallet_dir_option
@click.option("--address", default=None, help="The account that signed the grant.")
@click.option(
    "--grant",
    "grant_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The signed version-2 grant (its JSON).",
)
@click.option("--registry", required=True, help="The ConsentRegistryV2's address.")
@click.option("--chain-id", type=click.IntRange(min=1), required=True, help="Its chain id.")
@_json_option
def revocation_secret(
    wallet_dir: Path | None,
    address: str | None,
    grant_file: Path,
    registry: str,
    chain_id: int,
    as_json: bool,
) -> None:
    """Consent version 2: the transaction that revokes one of my grants, to send to the
    ConsentRegistryV2 from any wallet or relayer — the service is not needed.

    The secret is derived again from my key and the grant's salt; it revokes that grant only.
    Sending it from this account's own address tells the chain that it revoked some grant (not
    which): send it from another address, or through any relayer."""
    with _errors(as_json):
        from ledger.consent import SignedGrant, consent_domain_v2
        from ledger.eip712 import keccak
        from wallets.consent import grant_secret
        from wallets.keystore import read_passphrase

        try:
            document = json.loads(grant_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidConsentRequest(f"cannot read the grant {grant_file}: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidConsentRequest(f"{grant_file} does not hold one grant (a JSON object)")
        grant = SignedGrant.from_json(document)
        domain = consent_domain_v2(chain_id, registry)
        account = _open(wallet_dir).account(address, read_passphrase())
        secret = grant_secret(
            account,
            domain,
            grant,
            account_option="--address",
            registry_hint="(check --registry and --chain-id)",
        )
        data = keccak(b"revoke(bytes32)")[:4] + secret
    answer = {
        "to": domain.verifying_contract,
        "chainId": chain_id,
        "data": "0x" + data.hex(),
        "secret": "0x" + secret.hex(),
        "revocationHash": "0x" + grant.revocation_hash.hex(),
    }
    if as_json:
        _echo_json(answer)
        return
    click.echo(f"Send to {answer['to']} (chain {chain_id}) with data {answer['data']}")
    click.echo("from any address: the grant is revoked from that transaction's block on.")


@wallet_group.command()
@_service_options
def grants(
    wallet_dir: Path | None,
    api_url: str | None,
    address: str | None,
    siwe_domain: str | None,
    as_json: bool,
) -> None:
    """My grants: active, expired, revoked."""
    with _errors(as_json), _connect(wallet_dir, api_url, address, siwe_domain) as patient:
        found = patient.grants()
        who = patient.address
    if as_json:
        _echo_json({"patient": who, "grants": found})
        return
    if not found:
        click.echo(f"{who} has made no grants.")
        return
    from wallets.service import grant_ref

    rows = [
        [
            grant_ref(g),
            g["status"],
            f"{g.get('granteeName') or '?'} ({g['grantee'][:10]}…)",
            "all" if g.get("allRecords") else g["recordRef"][:18] + "…",
            ",".join(g.get("purposeNames") or []),
            _when(int(g["expiresAt"])),
        ]
        for g in found
    ]
    click.echo(_table(["ID", "STATUS", "INSTITUTION", "RECORDS", "PURPOSES", "EXPIRES"], rows))


def _short_ref(ref: str | None) -> str:
    """A record reference as a table shows it: ``0x5f1c…e2a9``."""
    return "-" if not ref else f"{ref[:6]}…{ref[-4:]}"


_LIST_CODES: Final = frozenset(
    {"trail-incomplete", "trail-outdated", "index-proof-missing", "history-shrunk"}
)


def _completeness_line(report: AccessReport) -> str:
    """What the accesses table says of its history's completeness: from the findings first,
    and from what vouched for the index root (the chain, or only the service)."""
    wrong = sorted({str(f["code"]) for f in report.findings} & _LIST_CODES)
    if wrong:
        return f"NOT proven complete ({', '.join(wrong)}: see below)."
    completeness = report.completeness
    if not completeness.get("proven"):
        return "Completeness not proven: no index proof could be checked."
    listed = (
        f"lists {completeness['listed']} event(s) about you at checkpoint "
        f"{completeness['treeSize']}; {completeness['served']} served."
    )
    if report.trust == "chain":  # wallets.service.TRUST_CHAIN (imported lazily)
        return f"Complete: the index committed on the chain {listed}"
    return (
        f"Complete by the service's own index root (not read from the chain; pass --rpc-url "
        f"to check it): it {listed}"
    )


@wallet_group.command("cancel-signatures")
@_service_options
@_direct_options
def cancel_signatures(
    wallet_dir: Path | None,
    api_url: str | None,
    address: str | None,
    siwe_domain: str | None,
    as_json: bool,
    direct: bool,
    rpc_url: str | None,
    sender: str | None,
) -> None:
    """Make every consent signature not yet used unusable: on consent version 2, revoke every
    grant I signed that is not committed on chain yet; on version 1, move the consent nonce
    (IncreaseNonce)."""
    with _errors(as_json):
        if direct:
            from wallets.grants import LocalGrants
            from wallets.service import cancel_directly

            account, paying, url = _direct_accounts(wallet_dir, address, sender, rpc_url)
            kept = LocalGrants(_directory(wallet_dir))
            result = cancel_directly(account, kept, url, sender=paying)
        else:
            if sender is not None or rpc_url is not None:
                raise WalletError("--sender and --rpc-url go with --direct")
            with _connect(wallet_dir, api_url, address, siwe_domain) as patient:
                result = patient.cancel_signatures()
    if as_json:
        _echo_json(result)
        return
    if result.get("version") == 2:
        for row in result["cancelled"]:
            click.echo(f"Grant {row['commitment']} cancelled: revoked before it was committed.")
        if not result["cancelled"]:
            click.echo("No signed grant was waiting to be committed: nothing to cancel.")
        for commitment in result["notAtService"]:
            click.echo(
                f"Grant {commitment} (kept in this wallet) is unknown to the service: it cannot"
                " commit it. To revoke it on chain anyway: cancel-signatures --direct --rpc-url"
                " URL."
            )
        return
    click.echo(
        f"Outstanding signatures cancelled: consent nonce {result['previousNonce']}"
        f" → {result['nonce']} (transaction {result['transactionHash']})."
    )


@wallet_group.command()
@_service_options
@click.option(
    "--rpc-url",
    envvar="MEDTRAIL_WALLET_RPC_URL",
    default=None,
    help="An Ethereum JSON-RPC node: check proofs, signers and grants against the chain.",
)
@max_merge_delay_option
@max_backdate_option
def accesses(
    wallet_dir: Path | None,
    api_url: str | None,
    address: str | None,
    siwe_domain: str | None,
    as_json: bool,
    rpc_url: str | None,
    max_merge_delay: int,
    max_backdate: int,
) -> None:
    """Who saw my records, and the rest of my history: every access, prescription, dispense,
    claim and payment about me, with its record, consent status and proof, verified as the
    regulator's verify_trail verifies a trail (and checked complete against the chain's
    index)."""
    with _errors(as_json), _connect(wallet_dir, api_url, address, siwe_domain) as patient:
        report = patient.accesses(
            rpc_url=rpc_url, max_merge_delay=max_merge_delay, max_backdate=max_backdate
        )
    if as_json:
        _echo_json(report.as_json())
    else:
        rows = []
        for e in report.entries:
            data = e.as_json()
            name = e.institution_name or "?"
            rows.append(
                [
                    _when(e.occurred_at),
                    e.kind,
                    f"{name} ({e.institution[:10]}…)",
                    _short_ref(e.record_ref),
                    e.action,
                    e.purpose or "-",
                    str(data["consentText"]),
                    "yes" if e.anchored else "not yet",
                    e.proof,
                ]
            )
        if rows:
            header = ["TIME", "EVENT", "INSTITUTION", "RECORD", "ACTION", "PURPOSE", "CONSENT"]
            click.echo(_table([*header, "ANCHORED", "PROOF"], rows))
        else:
            click.echo(f"Nothing about {report.patient} is recorded.")
        click.echo(report.note)
        click.echo(_completeness_line(report))
        for finding in report.findings:
            colour = "red" if finding["severity"] == "error" else None
            click.secho(f"{finding['code']}: {finding['detail']}", fg=colour, err=True)
        for e in report.entries:
            for f in e.findings:
                if f.get("severity") == "error":
                    click.secho(f"{e.event_id}: {f['code']}: {f['detail']}", fg="red", err=True)
    if not report.ok:
        sys.exit(EXIT_ERROR)
