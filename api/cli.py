"""The ``medtrail`` command: run the service, deploy the contracts, tell the demo story.

Every command reads its configuration from ``MEDTRAIL_*`` environment variables (see
:class:`ledger.settings.Settings`); errors are printed as one clear message with a non-zero
exit status, never as a traceback.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from pydantic import SecretStr, ValidationError

from api.logs import redact_logs, setup_logging
from ledger.chain.model import DeploymentMismatch
from ledger.eip712 import to_checksum_address
from ledger.errors import LedgerError
from ledger.recursion import cap_recursion_limit
from ledger.redact import Redactor, redact_error, url_origin
from ledger.settings import ConfigurationError, Settings, parse_key
from wallets.cli import wallet_group

F = TypeVar("F", bound=Callable[..., Any])

#: Exit statuses.
EXIT_ERROR = 1
EXIT_USAGE = 2


def _fail(message: str, status: int = EXIT_ERROR) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(status)


class AddressType(click.ParamType[str]):
    """An Ethereum address (``0x`` and 40 hex digits), given back EIP-55 checksummed."""

    name = "address"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return to_checksum_address(str(value))
        except LedgerError:
            self.fail(
                f"{value!r} is not an Ethereum address (0x followed by 40 hex digits)", param, ctx
            )


ADDRESS = AddressType()


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        _fail(f"invalid configuration: {problems}", EXIT_USAGE)
        raise AssertionError from exc  # unreachable


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the service does.")
@click.version_option(package_name="medtrail")
def cli(verbose: bool) -> None:
    """medtrail: a tamper-evident, chain-anchored audit trail for health data."""
    # Nothing heavy is imported here (`--help` answers at once): the commands that import
    # eth-account, whose py_ecc raises the recursion limit past what the stack holds, lower it
    # again after those imports (`Ledger.open`, `deploy`, the wallet's commands).
    cap_recursion_limit(preload=())
    setup_logging(verbose)


# --------------------------------------------------------------------------- serve


def _archive_embedded_database(settings: Settings) -> None:
    """``--reset``: move an embedded-mode SQLite file aside (never delete data)."""
    url = settings.database_url
    if not url.startswith("sqlite:///"):
        _fail("--reset only applies to an embedded SQLite database", EXIT_USAGE)
    path = Path(url.removeprefix("sqlite:///"))
    if path.exists():
        archived = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(path) + suffix)
            if part.exists():
                shutil.move(part, Path(str(archived) + suffix))
        click.echo(f"moved the previous embedded database to {archived}")


@cli.command()
@click.option("--host", envvar="MEDTRAIL_HOST", default=None, help="Address to listen on.")
@click.option("--port", envvar="MEDTRAIL_PORT", type=int, default=None, help="Port.")
@click.option(
    "--reset",
    is_flag=True,
    help="Embedded mode: move the previous database aside and start a new log.",
)
@click.option(
    "--workers",
    envvar="MEDTRAIL_WORKERS",
    type=int,
    default=None,
    help="API processes sharing the port (rpc mode only; default 1).",
)
@click.option(
    "--log-format",
    envvar="MEDTRAIL_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines for people (text, the default) or one JSON object a line.",
)
def serve(
    host: str | None,
    port: int | None,
    reset: bool,
    workers: int | None,
    log_format: str | None,
) -> None:
    """Run the HTTP API and the anchor worker.

    In the default embedded mode this starts an in-process chain with the contracts deployed,
    a SQLite log in .medtrail/, prints a regulator credential, and serves the chain read-only
    over JSON-RPC on 127.0.0.1:8546 for trying the regulator's tools (MEDTRAIL_TRIAL_RPC_PORT;
    -1: off). In rpc mode, --workers N runs N API processes (one of them runs the anchor worker
    at a time). Every request gets an id (X-Request-ID) and an access-log line. Connections
    must send a request head within MEDTRAIL_HEADER_TIMEOUT seconds, idle ones close after
    MEDTRAIL_KEEP_ALIVE_TIMEOUT, and each process holds at most MEDTRAIL_MAX_CONNECTIONS.
    """
    from api.app import bootstrap_admin_key, create_app
    from api.server import listen, run_single, run_workers, tune_gc
    from ledger.service import Ledger

    settings = _settings(host=host, port=port, workers=workers, log_format=log_format)
    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    redact_logs(settings)
    if reset and settings.mode == "embedded":
        _archive_embedded_database(settings)
    # The port first: a busy one is one clear message, before anything starts or is printed.
    sock = listen(settings)
    try:
        ledger = Ledger.open(settings)
    except BaseException:
        sock.close()
        raise
    admin_key = None
    if settings.mode == "embedded":
        admin_key = bootstrap_admin_key(ledger)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    base = f"http://{shown_host}:{bound_port}"
    processes = f", {settings.workers} processes" if settings.workers > 1 else ""
    click.echo(f"medtrail {settings.mode} mode: serving on {base}{processes}")
    click.echo(f"  start here: {base}/   API docs: {base}/docs")
    where = f"at {url_origin(settings.rpc_url or '')}" if settings.mode == "rpc" else "in process"
    click.echo(
        f"  chain {ledger.deployment.chain_id} {where}, AuditLog {ledger.deployment.audit_log}"
    )
    trial = _start_trial_rpc(ledger, settings, base)
    if admin_key is not None:
        click.echo("  regulator credential (shown once; embedded mode only):")
        click.echo(f"    export MEDTRAIL_API_KEY={admin_key}")
        click.echo(f'    curl -H "Authorization: Bearer $MEDTRAIL_API_KEY" {base}/v1/checkpoints')
    try:
        if settings.workers > 1:
            ledger.close()  # each worker process opens its own (checked again, cheaply)
            run_workers(settings, verbose=verbose, sock=sock)
            return
        app = create_app(ledger, admin_key=admin_key, trial_rpc_url=trial.url if trial else None)
        ledger.start_worker()
        tune_gc()
        try:
            run_single(app, settings, verbose=verbose, sock=sock)
        finally:
            ledger.close()
    finally:
        if trial is not None:
            trial.close()
        sock.close()


def _start_trial_rpc(ledger: Any, settings: Settings, base: str) -> Any:
    """Embedded mode: the in-process chain, read-only over JSON-RPC on 127.0.0.1 for trying
    the regulator's tools (:mod:`api.trial_rpc`), unless ``MEDTRAIL_TRIAL_RPC_PORT`` is -1;
    a busy port is a warning, not a failure."""
    from api.trial_rpc import LABEL, TrialRpcServer
    from ledger.chain.embedded import LockedEthereumTesterProvider

    if settings.mode != "embedded" or settings.trial_rpc_port < 0:
        return None
    provider = ledger.chain.w3.provider
    if not isinstance(provider, LockedEthereumTesterProvider):  # pragma: no cover
        return None
    try:
        trial = TrialRpcServer(provider, settings.trial_rpc_port).start()
    except OSError as exc:
        click.echo(
            f"  the chain's JSON-RPC for trying is not served: 127.0.0.1:"
            f"{settings.trial_rpc_port} is unavailable ({exc.strerror or exc}); set "
            "MEDTRAIL_TRIAL_RPC_PORT to another port (0: any free one)"
        )
        return None
    click.echo(f"  chain JSON-RPC at {trial.url} ({LABEL})")
    click.echo(
        f"    for the regulator's tools: curl -s {base}/v1/deployment > deployment.json; "
        f"export MEDTRAIL_RPC_URL={trial.url} MEDTRAIL_DEPLOYMENT_FILE=deployment.json"
    )
    return trial


# --------------------------------------------------------------------------- deploy


@cli.command()
@click.option("--rpc-url", envvar="MEDTRAIL_RPC_URL", required=True, help="JSON-RPC endpoint.")
@click.option(
    "--out",
    envvar="MEDTRAIL_DEPLOYMENT_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".medtrail/deployment.json"),
    show_default=True,
    help="Where to write the deployment file the service reads.",
)
@click.option(
    "--admin", required=True, type=ADDRESS, help="Address that will administer the roles."
)
@click.option(
    "--log-operator", required=True, type=ADDRESS, help="Address of the log operator's key."
)
@click.option(
    "--registrar",
    "registrars",
    multiple=True,
    type=ADDRESS,
    help="Regulator address (repeatable).",
)
def deploy(
    rpc_url: str, out: Path, admin: str, log_operator: str, registrars: tuple[str, ...]
) -> None:
    """Deploy the contracts to a JSON-RPC chain and write the deployment file.

    The contracts: InstitutionRegistry, AuditLog, ConsentRegistry (version 1, whose grants
    stay readable) and ConsentRegistryV2, which takes every new grant (docs/upgrading.md).
    The deployer's key is read from MEDTRAIL_DEPLOYER_KEY (or prompted for at a terminal); it
    hands the admin role to --admin and keeps nothing.
    """
    from ledger.chain.client import deploy_to_rpc

    if not rpc_url.lower().startswith(("http://", "https://")):
        _fail(f"--rpc-url must be an http:// or https:// URL, not {rpc_url[:60]!r}", EXIT_USAGE)
    raw = os.environ.get("MEDTRAIL_DEPLOYER_KEY")
    if not raw:
        if not sys.stdin.isatty():
            _fail(
                "MEDTRAIL_DEPLOYER_KEY is not set: export the private key (0x-hex) of an account "
                "with ether on that chain, which pays for the deployment",
                EXIT_USAGE,
            )
        raw = click.prompt("deployer private key", hide_input=True)
    from eth_account import Account

    cap_recursion_limit(preload=("py_ecc",))
    deployer = Account.from_key(parse_key(SecretStr(raw), "MEDTRAIL_DEPLOYER_KEY"))
    if out.exists():
        _fail(f"{out} exists; move it away first (it describes a live deployment)", EXIT_USAGE)
    try:
        deployment = deploy_to_rpc(
            rpc_url, deployer, admin=admin, log_operator=log_operator, registrars=list(registrars)
        )
    except LedgerError as exc:  # the node's errors repeat the URL, and its key
        redact_error(exc, Redactor.of(urls=[rpc_url], keys=[raw]))
        raise
    out.parent.mkdir(parents=True, exist_ok=True)
    deployment.write(out)
    click.echo(f"deployed on chain {deployment.chain_id}; wrote {out}")
    click.echo(f"  InstitutionRegistry {deployment.institution_registry}")
    click.echo(f"  AuditLog            {deployment.audit_log}")
    click.echo(f"  ConsentRegistry     {deployment.consent_registry}")
    click.echo(f"  ConsentRegistryV2   {deployment.consent_registry_v2}")


# --------------------------------------------------------------------------- api keys


@cli.group("api-key")
def api_key() -> None:
    """Issue the first credentials of a deployment (later ones: POST /v1/api-keys)."""


@api_key.command("create")
@click.option("--role", type=click.Choice(["regulator", "institution"]), default="regulator")
@click.option(
    "--institution",
    type=ADDRESS,
    default=None,
    help="The institution's address (role institution).",
)
@click.option("--label", required=True, help="Who or what the key is for.")
def api_key_create(role: str, institution: str | None, label: str) -> None:
    """Create an API key directly in the store named by MEDTRAIL_DATABASE_URL.

    For the operator, at the database: how a deployment's first regulator gets a key (in
    embedded mode `medtrail serve` prints one). The key is shown once and stored hashed.
    """
    from api.auth import Credentials
    from ledger.store import Store

    if (role == "institution") != (institution is not None):
        _fail("--institution is required for (and only for) an institution key", EXIT_USAGE)
    settings = _settings()
    store = Store(settings.database_url)
    try:
        store.migrate()
        info, token = Credentials(store).issue_key(role, institution, label)  # type: ignore[arg-type]
    finally:
        store.dispose()
    click.echo(f"key {info.key_id} ({role}, {label!r}); shown once:")
    click.echo(token)


# --------------------------------------------------------------------------- demo


@cli.command()
@click.option(
    "--database-url",
    default=None,
    help="Store for the demo (default: a new SQLite file in a temporary directory).",
)
def demo(database_url: str | None) -> None:
    """Tell medtrail's story on the embedded chain, step by step."""
    from api.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="medtrail-demo-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'demo.db'}"
        settings = _settings(mode="embedded", database_url=url, confirmations=1)
        run_demo(settings, click.echo)


cli.add_command(wallet_group, name="wallet")


def main() -> None:
    """Console entry point: run the CLI, turning medtrail's errors into one-line messages."""
    try:
        cli(standalone_mode=True)
    except (ConfigurationError, DeploymentMismatch) as exc:
        _fail(f"{exc.detail} [{exc.code}]", EXIT_USAGE)
    except LedgerError as exc:
        _fail(f"{exc.detail} [{exc.code}]")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except ModuleNotFoundError as exc:
        # The light install (the regulator's tools and the wallet) has no service.
        if (exc.name or "").split(".")[0] not in SERVICE_MODULES:
            raise
        _fail(
            f"this command runs the service, whose dependencies are not installed ({exc.name} "
            "is missing): pip install 'medtrail[service]'",
            EXIT_USAGE,
        )


#: What the `service` extra installs (``pip install 'medtrail[service]'``), by import name.
SERVICE_MODULES: Final = frozenset(
    {"web3", "eth_utils", "eth_tester", "eth", "sqlmodel", "sqlalchemy", "alembic", "psycopg",
     "fastapi", "starlette", "uvicorn", "prometheus_client"}
)  # fmt: skip


if __name__ == "__main__":
    main()
