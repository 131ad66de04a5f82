"""``medtrail-monitor``: the supervision office's monitor (docs/regulator.md, "Running a
supervision office")."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

import click

from ledger import gc_tuning
from ledger.chain.reader import ChainReader
from ledger.supervision import (
    DEFAULT_EMERGENCY_THRESHOLD,
    DEFAULT_EMERGENCY_WINDOW,
    SupervisionSettings,
)
from scripts._api import ApiClient
from scripts._common import (
    ChainOptions,
    ToolError,
    chain_options,
    guarded,
    max_backdate_option,
    max_merge_delay_option,
)
from scripts.monitor.alerts import JsonLines, Webhook
from scripts.monitor.console import Console, credentials
from scripts.monitor.core import Monitor, MonitorSettings
from scripts.monitor.receipts import read_receipts
from scripts.monitor.rules import load_rules
from scripts.monitor.store import DEFAULT_CACHE, Store, lock_state

__all__ = ["main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--api",
    "api_url",
    envvar="MEDTRAIL_API_URL",
    metavar="URL",
    required=True,
    help="The ledger API to follow [env MEDTRAIL_API_URL].",
)
@click.option(
    "--api-key",
    envvar="MEDTRAIL_API_KEY",
    metavar="KEY",
    help="Regulator's API key (bearer token) [env MEDTRAIL_API_KEY].",
)
@chain_options
@max_merge_delay_option
@max_backdate_option
@click.option(
    "--state",
    "state_path",
    envvar="MEDTRAIL_MONITOR_STATE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".medtrail/monitor/monitor.db"),
    show_default=True,
    help="The monitor's own state (SQLite): mirror, rules' state, findings, alerts.",
)
@click.option(
    "--alerts",
    "alerts_path",
    envvar="MEDTRAIL_MONITOR_ALERTS",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".medtrail/monitor/alerts.jsonl"),
    show_default=True,
    help="JSON-lines alert stream (each alert once, with its id).",
)
@click.option(
    "--webhook",
    "webhook_url",
    envvar="MEDTRAIL_MONITOR_WEBHOOK",
    metavar="URL",
    help="POST each alert here, signed (X-Medtrail-Signature) [env MEDTRAIL_MONITOR_WEBHOOK].",
)
@click.option(
    "--webhook-secret",
    envvar="MEDTRAIL_MONITOR_WEBHOOK_SECRET",
    metavar="SECRET",
    help="Shared secret of the webhook's HMAC-SHA256 signature [env "
    "MEDTRAIL_MONITOR_WEBHOOK_SECRET].",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between steps.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Do one step and exit: 0 no error found, 1 errors found, 2 a source down.",
)
@click.option(
    "--console",
    "console_at",
    envvar="MEDTRAIL_MONITOR_CONSOLE",
    metavar="HOST:PORT",
    default="127.0.0.1:8787",
    show_default=True,
    help="Where to serve the console and /metrics; 'off': nowhere.",
)
@click.option(
    "--console-token",
    envvar="MEDTRAIL_MONITOR_TOKEN",
    metavar="TOKEN",
    help="The console's credential (at least 16 characters) [env MEDTRAIL_MONITOR_TOKEN].",
)
@click.option(
    "--supervisor",
    envvar="MEDTRAIL_MONITOR_SUPERVISOR",
    default="supervisor",
    show_default=True,
    help="Who signs the decisions recorded in the console.",
)
@click.option(
    "--supervisors",
    "supervisors_path",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="More console credentials: a JSON object of supervisor name to token (each at least "
    "16 characters), each supervisor signing the decisions made with their token.",
)
@click.option(
    "--emergency-threshold",
    type=click.IntRange(min=0),
    default=DEFAULT_EMERGENCY_THRESHOLD,
    show_default=True,
    help="Emergency accesses an institution may make within the window.",
)
@click.option(
    "--emergency-window",
    type=click.IntRange(min=1),
    default=DEFAULT_EMERGENCY_WINDOW,
    show_default=True,
    help="The emergency-access rate's window, in seconds.",
)
@click.option(
    "--rules",
    "plugins",
    multiple=True,
    metavar="MODULE:FUNCTION",
    help="A supervision rule factory of your own (repeatable).",
)
@click.option(
    "--jobs",
    "-j",
    envvar="MEDTRAIL_MONITOR_JOBS",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes recomputing digests and signatures (1: the monitor's own).",
)
@click.option(
    "--recheck",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Mirrored entries fetched again per step and compared with the mirror.",
)
@click.option(
    "--receipts",
    "receipts_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="RECEIPTS",
    help="An institution's receipts to watch with the log, as medtrail-watch-receipts reads "
    "them (repeatable).",
)
@click.option(
    "--cache",
    type=click.IntRange(min=0),
    default=DEFAULT_CACHE,
    show_default=True,
    help="Values of the rules' state kept in memory per key space, between steps.",
)
@guarded
def main(
    api_url: str,
    api_key: str | None,
    chain: ChainOptions,
    max_merge_delay: int,
    max_backdate: int,
    state_path: Path,
    alerts_path: Path,
    webhook_url: str | None,
    webhook_secret: str | None,
    interval: float,
    once: bool,
    console_at: str,
    console_token: str | None,
    supervisor: str,
    supervisors_path: Path | None,
    emergency_threshold: int,
    emergency_window: int,
    plugins: tuple[str, ...],
    jobs: int,
    recheck: int,
    receipts_paths: tuple[Path, ...],
    cache: int,
) -> None:
    """Follow the log and the chain continuously; verify every new entry and checkpoint as
    the audit does; alert (JSON lines, webhook, Prometheus); serve the supervision console.

    Trusts only your chain (--rpc-url, --deployment-file). Stop it with Ctrl-C or SIGTERM;
    it resumes where it stopped (a kill -9 loses nothing and repeats no alert).
    """
    if webhook_url and not webhook_secret:
        raise click.UsageError("--webhook needs --webhook-secret (MEDTRAIL_MONITOR_WEBHOOK_SECRET)")
    rpc_url = chain.endpoint()
    serve = console_at.lower() != "off" and not once
    if serve and (not console_token or len(console_token) < 16):
        raise click.UsageError(
            "the console needs --console-token (MEDTRAIL_MONITOR_TOKEN), at least 16 characters "
            "(or --console off)"
        )
    supervisors = read_supervisors(supervisors_path) if supervisors_path else {}
    if serve:
        try:
            credentials(supervisor, console_token or "", supervisors)
        except ValueError as exc:
            raise click.UsageError(f"--supervisors: {exc}") from exc
    host, _, port = console_at.rpartition(":")
    if serve and not port.isdigit():
        raise click.UsageError(f"--console {console_at!r}: give HOST:PORT, or off")
    receipts = [receipt for path in receipts_paths for receipt in read_receipts(path)]
    spec = chain.spec()
    rules = load_rules(
        SupervisionSettings(
            max_merge_delay=max_merge_delay,
            emergency_window=emergency_window,
            emergency_threshold=emergency_threshold,
        ),
        plugins,
    )
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    with ExitStack() as stack:
        stack.enter_context(lock_state(state_path))  # held until the process ends
        reader = stack.enter_context(ChainReader.connect(rpc_url, spec, timeout=chain.rpc_timeout))
        api = stack.enter_context(ApiClient(api_url, api_key))
        store = Store(state_path, cache=cache)
        stack.callback(store.close)
        monitor = Monitor(
            store,
            api,
            reader,
            rules,
            MonitorSettings(
                max_merge_delay=max_merge_delay,
                max_backdate=max_backdate,
                recheck=recheck,
                jobs=jobs,
            ),
            receipts=receipts,
        )
        stack.callback(monitor.close)
        stream = JsonLines(alerts_path)
        webhook = None
        if webhook_url and webhook_secret:
            webhook = Webhook(webhook_url, webhook_secret.encode())
            stack.callback(webhook.close)
        if serve:
            assert console_token is not None
            console = Console(
                state_path,
                console_token,
                host=host or "127.0.0.1",
                port=int(port),
                lag=monitor.lag,
                supervisor=supervisor,
                supervisors=supervisors,
                # Its own client: the console answers in its own threads.
                api=stack.enter_context(ApiClient(api_url, api_key, timeout=10.0)),
            )
            console.start()
            stack.callback(console.stop)
            click.echo(f"console: {console.url}/ (metrics: {console.url}/metrics)", err=True)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        gc_tuning.tune()  # pages of a thousand events: the collector must not walk them again
        while True:
            report = monitor.step()
            stream.deliver(store)
            if webhook is not None:
                webhook.deliver(store)
            if report.verified or report.checkpoints or report.alerts:
                click.echo(
                    f"verified {report.verified} entries, {report.checkpoints} checkpoints; "
                    f"{report.alerts} new alerts",
                    err=True,
                )
            if once:
                errors = store.db.execute(
                    "SELECT COUNT(*) FROM findings WHERE severity = 'error'"
                ).fetchone()[0]
                sys.exit(2 if report.down else 1 if errors else 0)
            deadline = time.monotonic() + interval
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.05)
            if stopping:
                break
    if os.environ.get("MEDTRAIL_DEBUG"):
        click.echo("monitor stopped", err=True)


def read_supervisors(path: Path) -> dict[str, str]:
    """The supervisors' console tokens in ``path`` (a JSON object: name → token)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ToolError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ToolError(f"{path} is not a JSON object of supervisor name to token")
    return data


if __name__ == "__main__":  # pragma: no cover - the command line
    main()
