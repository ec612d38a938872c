"""The ``hiveling`` command.

hiveling                              the tray app (with a display), else this help
hiveling --headless --invite TOKEN    join a run without a GUI (--invite-file PATH, --invite -)
hiveling host --recipe NAME           start a run as its organizer and print its invite
hiveling devices [--json]             what this machine can train on
hiveling demo                         a host and two volunteers on this machine
hiveling tray                         the tray app
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hiveling.core.commands.console import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Parser, UsageError
from hiveling.core.logs import configure_logging


def build_parser() -> Parser:
    parser = Parser(prog="hiveling", description="Volunteer your computer to collaborative deep learning.")
    parser.add_argument("--headless", action="store_true", help="join a run without the tray app")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--invite", help="the invite (or hiveling:// link); '-' reads it from stdin")
    source.add_argument(
        "--invite-file", help="a file holding the invite: its text, or an image of its QR code"
    )
    add_worker_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the worker's events as JSON lines")
    parser.add_argument("--verbose", action="store_true", help="also print log messages")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)

    host = sub.add_parser("host", help="start a run as its organizer")
    host.add_argument("--recipe", required=True, help="a recipe name (see `hiveling recipes`)")
    host.add_argument("--name", dest="run_name", help="the run's name, shown to volunteers")
    host.add_argument("--target-batch-size", type=int, help="samples per collaborative step")
    host.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe hyperparameter"
    )
    host.add_argument("--port", type=int, default=None, help="TCP port to listen on (default 31330)")
    host.add_argument("--local", action="store_true", help="listen on 127.0.0.1 only (a run on this machine)")
    host.add_argument(
        "--announce", action="append", default=[], help="multiaddr volunteers reach the host at"
    )
    host.add_argument(
        "--expires-days", type=float, default=30.0, help="days until the invite expires (default 30)"
    )
    host.add_argument(
        "--checkpoint-every",
        type=int,
        default=20,
        help="save the collaboration's state every N collaborative steps (default 20)",
    )
    host.add_argument("--qr-png", help="where to write the invite's QR code (default: the run's folder)")
    host.add_argument(
        "--device", default="cpu", help="what the host trains on: cpu, auto, cuda:N or mps (default cpu)"
    )
    host.add_argument("--batch-size", type=int, help="the host's local batch size (default: fits memory)")
    host.add_argument(
        "--cpu-threads", type=int, help="threads the host trains with on a CPU (default: half the cores)"
    )
    host.add_argument(
        "--last-step",
        type=int,
        help="end the run at this collaborative step (volunteers are told it finished)",
    )
    host.add_argument(
        "--mode",
        choices=("sync", "local"),
        help="how peers train together: sync averages gradients at every step (fast links); local "
        "takes local steps and exchanges parameter changes in the background (home links, larger "
        "models) (default: the recipe's)",
    )
    host.add_argument(
        "--local-steps",
        type=int,
        help="in the local mode, about how many local steps each peer takes between exchanges "
        "(default: the recipe's, else 100)",
    )
    host.add_argument("--progress-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    host.add_argument("--json", action="store_true", help="print events (and the invite) as JSON lines")

    devices = sub.add_parser("devices", help="what this machine can train on")
    devices.add_argument("--json", action="store_true", help="print them as JSON")
    sub.add_parser("recipes", help="the recipes installed here")

    demo = sub.add_parser("demo", help="a host and two volunteers on this machine")
    demo.add_argument(
        "--seconds", type=float, default=120.0, help="how long to train, in seconds (default 120)"
    )
    demo.add_argument(
        "--steps",
        type=int,
        default=None,
        help="stop early once the run reaches this collaborative step (default: no such limit)",
    )
    demo.add_argument("--recipe", default=None, help="default: the built-in glyph classifier")
    demo.add_argument(
        "--mode",
        choices=("sync", "local"),
        help="how the peers train together, as for `hiveling host` (default: the recipe's)",
    )
    demo.add_argument(
        "--local-steps",
        type=int,
        help="local steps between exchanges in the local mode (default: the recipe's)",
    )
    demo.add_argument(
        "--chart",
        default="hiveling-demo.png",
        help="where to write the chart of loss and accuracy (default: hiveling-demo.png here)",
    )
    sub.add_parser("tray", help="the tray app")
    return parser


def add_worker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=None, help="auto, cpu, cuda:N or mps (default: settings, else auto)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="local batch size (default: fits memory)"
    )
    parser.add_argument(
        "--memory-cap-gb", type=float, default=None, help="use at most this much device memory"
    )
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        help="threads to train with on a CPU (default: half the cores)",
    )
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        help="multiaddr to listen on (default: any port, all addresses)",
    )
    parser.add_argument(
        "--announce-addr", action="append", default=[], help="multiaddr peers reach us at (default: detected)"
    )
    parser.add_argument(
        "--temperature-limit",
        type=float,
        default=None,
        metavar="CELSIUS",
        help="slow down, then pause, to keep the GPU and CPU under this temperature "
        "(default: settings, else none)",
    )
    parser.add_argument(
        "--power-limit",
        default=None,
        metavar="LIMIT",
        help="keep the device's power under this: watts (120W) or a share of its rating (60%%) "
        "(default: settings, else none)",
    )
    parser.add_argument(
        "--daily-energy",
        type=float,
        default=None,
        metavar="WH",
        help="energy training may use per day, in Wh; then it pauses until midnight "
        "(default: settings, else none)",
    )
    parser.add_argument(
        "--price-per-kwh",
        type=float,
        default=None,
        metavar="PRICE",
        help="your electricity price, to show what training costs (default: settings, else no cost shown)",
    )
    parser.add_argument(
        "--currency", default=None, help="the price's currency, shown beside costs (default: settings)"
    )
    parser.add_argument("--max-step", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--progress-interval", type=float, default=2.0, help=argparse.SUPPRESS)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:  # frozen builds re-run this executable as the worker
        from hiveling.core.worker.process import main as worker_main

        return worker_main(argv[1:])
    try:
        args = build_parser().parse_args(argv)
        return dispatch(args)
    except UsageError as error:
        print(f"hiveling: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # HIVELING_HOME or the platform folders cannot be written
        where = f" ({error.filename})" if error.filename else ""
        print(f"hiveling: cannot use Hiveling's folders{where}: {error.strerror or error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "devices":
        return run_devices(args.json)
    if args.command == "recipes":
        return run_recipes()
    if args.command == "host":
        configure_logging(args.verbose if hasattr(args, "verbose") else False)
        from hiveling.core.commands.host import run_host

        return run_host(args)
    if args.command == "demo":
        configure_logging(False)
        from hiveling.core.commands.demo import run_demo

        return run_demo(
            seconds=args.seconds,
            recipe=args.recipe,
            chart=Path(args.chart),
            steps=args.steps,
            mode=args.mode,
            local_steps=args.local_steps,
        )
    if args.command == "tray":
        return run_tray()
    if args.headless or args.invite is not None or args.invite_file is not None:
        if args.invite is None and args.invite_file is None:
            raise UsageError("--headless needs --invite TOKEN, --invite-file PATH or --invite -")
        configure_logging(args.verbose)
        from hiveling.core.commands.volunteer import run_volunteer

        return run_volunteer(args)
    if has_display():
        return run_tray()
    print(__doc__.strip().split("\n", 1)[1].rstrip())
    print("\nNo display found: run `hiveling demo` to try it, or join a run with --headless --invite TOKEN.")
    return EXIT_OK


def has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_tray() -> int:
    try:
        from hiveling.app.main import main as app_main
    except ImportError as error:
        print(
            f"hiveling: the tray app is not installed ({error}); "
            "install it with: pip install 'hiveling[gui]'",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return int(app_main(sys.argv[1:]))


def run_devices(as_json: bool) -> int:
    from hiveling.core.energy.sensors import energy_sources
    from hiveling.core.machine.devices import describe, detect_devices, to_json

    devices = detect_devices()
    sources = {device.torch_device: energy_sources(device.kind) for device in devices}
    if as_json:
        print(json.dumps([{**d, **sources[d["torch_device"]]} for d in to_json(devices)], indent=2))
        return EXIT_OK
    print(describe(devices))
    print("\nEnergy and temperature:")
    width = max(len(name) for name in sources)
    for name, source in sources.items():
        print(f"  {name.ljust(width)}  energy: {source['energy']}")
        print(f"  {''.ljust(width)}  temperature: {source['temperature']}")
    return EXIT_OK


def run_recipes() -> int:
    from hiveling.core.recipes import available_recipes

    for recipe in sorted(available_recipes().values(), key=lambda r: r.name):
        print(f"{recipe.name:12} {recipe.version:6} {recipe.title}: {recipe.description}")
    return EXIT_OK


if __name__ == "__main__":
    # Run the importable module, not this __main__ copy, so that there is one UsageError class.
    from hiveling.core.commands.cli import main as cli_main

    sys.exit(cli_main())
