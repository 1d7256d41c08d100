"""The ``kiam`` command: flags (Kiam's names and defaults) -> settings -> the daemons.

The flags are declared once, on the settings fields they fill (:mod:`kiam.common.flags`);
this module only puts each command's settings class behind a subcommand. Every flag is
parsed and validated before anything starts, so a bad flag fails with the reason. The
daemons are imported only when chosen.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kiam.agent.settings import AgentSettings
from kiam.common.flags import SettingsError, add_flags, from_flags, ignored_given
from kiam.common.settings import CertsSettings, HealthSettings, LogSettings
from kiam.server.settings import ExplainSettings, ServerSettings
from kiam.webhook.settings import WebhookSettings


class UsageError(Exception):
    """A flag combination that cannot work; printed as ``kiam <cmd>: error: ...``."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    settings: type[Any]
    entry: tuple[str, str]
    """Module and function called with the settings; returns the exit code."""


COMMANDS = (
    Command(
        "agent",
        "per-node metadata proxy (DaemonSet, hostNetwork)",
        AgentSettings,
        ("kiam.agent.main", "run_agent"),
    ),
    Command(
        "server",
        "gRPC server: caches, policy, STS (Deployment)",
        ServerSettings,
        ("kiam.server.main", "run_server"),
    ),
    Command(
        "explain",
        "why a pod would or would not get credentials, step by step (read-only)",
        ExplainSettings,
        ("kiam.server.explain", "run_explain"),
    ),
    Command(
        "health",
        "probe a kiam server over mTLS (exit 0 healthy)",
        HealthSettings,
        ("kiam.health", "run_health"),
    ),
    Command(
        "webhook",
        "admission webhook: token credentials for hostNetwork and opted-in pods",
        WebhookSettings,
        ("kiam.webhook.server", "run_webhook"),
    ),
    Command(
        "certs",
        "generate a CA and server/agent key pairs for mTLS",
        CertsSettings,
        ("kiam.certs", "run_certs"),
    ),
)


def _run(command: Command, ns: argparse.Namespace) -> int:
    try:
        settings = from_flags(command.settings, ns)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    for ignored in ignored_given(command.settings, ns):
        print(
            f"kiam: --{ignored.name} is accepted for Kiam compatibility and ignored: "
            f"{ignored.reason}",
            file=sys.stderr,
        )
    module, function = command.entry
    entry: Callable[[Any], int] = getattr(importlib.import_module(module), function)
    return entry(settings)


def _demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="the whole system locally, on the test bed's stand-ins")
    p.add_argument(
        "--netns",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run the pods as network namespaces behind iptables (root)",
    )
    p.add_argument(
        "--hold",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="after the tour, keep everything running to try your own pods (Ctrl-C ends)",
    )
    add_flags(p, LogSettings)
    p.set_defaults(run=_run_demo)


DEMO_MISSING = (
    "kiam demo: the demo is part of kiam's test bed, which is not installed here;"
    " run `make demo` in a clone of the kiam repository"
)


def _run_demo(ns: argparse.Namespace) -> int:
    # The test bed is its own distribution (testbed/), absent from the wheel and the image.
    try:
        demo = importlib.import_module("kiam_testbed.demo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("kiam_testbed", "kiam_testbed.demo"):
            raise
        print(DEMO_MISSING, file=sys.stderr)
        return 2
    run_demo: Callable[..., int] = demo.run_demo
    return run_demo(netns=ns.netns, log=from_flags(LogSettings, ns), hold=ns.hold)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiam", description="IAM roles for Kubernetes pods through the EC2 metadata API"
    )
    parser.add_argument("--version", action="version", version=f"kiam {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        add_flags(p, command.settings)
        p.set_defaults(run=lambda ns, command=command: _run(command, ns))
    _demo_parser(sub)
    return parser


def _version() -> str:
    from kiam import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        result: int = ns.run(ns)
    except UsageError as exc:
        parser.exit(2, f"kiam {ns.command}: error: {exc}\n")
    except KeyboardInterrupt:
        return 130
    return result
