"""``qbo-sandbox serve``: run the local QuickBooks Online server."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from qbo_sandbox.seed import DEMO_REALM_ID
from qbo_sandbox.server import SandboxConfig, SandboxServer
from qbo_sandbox.webhooks import FORMATS


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="qbo-sandbox", description="A local QuickBooks Online API server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the data API, OAuth and the admin API")
    defaults = SandboxConfig()
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--time-scale", type=float, default=1.0, help="shrink every window and lifetime by F")
    serve.add_argument("--latency-ms", type=float, default=0.0, help="added response time (scaled)")
    serve.add_argument("--no-throttle", action="store_true", help="disable the per-realm limits")
    serve.add_argument(
        "--seed-demo", action="store_true", help=f"create the demo company (realm {DEMO_REALM_ID})"
    )
    serve.add_argument("--state", help="JSON file to load the state from and save it to")
    serve.add_argument("--client-id", default=defaults.client_id)
    serve.add_argument("--client-secret", default=defaults.client_secret)
    serve.add_argument("--refresh-grace-seconds", type=float, default=0.0)
    serve.add_argument("--webhook-url")
    serve.add_argument("--webhook-verifier", default="")
    serve.add_argument("--webhook-format", choices=FORMATS, default="legacy")
    serve.add_argument(
        "--webhook-aggregation-seconds",
        type=float,
        default=defaults.webhook_aggregation_seconds,
        help="gather events this long (scaled) into one notification (Intuit: 60, 180 or 300)",
    )
    serve.add_argument(
        "--read-quota",
        type=int,
        help="metered reads per app and month; past it reads answer 429 (Intuit: 500000)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qbo-sandbox`` console script."""
    args = build_parser().parse_args(argv)
    config = SandboxConfig(
        host=args.host,
        port=args.port,
        time_scale=args.time_scale,
        latency_ms=args.latency_ms,
        throttle=not args.no_throttle,
        client_id=args.client_id,
        client_secret=args.client_secret,
        state_file=args.state,
        seed_demo=args.seed_demo,
        refresh_grace_seconds=args.refresh_grace_seconds,
        webhook_url=args.webhook_url,
        webhook_verifier=args.webhook_verifier,
        webhook_format=args.webhook_format,
        webhook_aggregation_seconds=args.webhook_aggregation_seconds,
        read_quota=args.read_quota,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with SandboxServer(config) as sandbox:
        print(f"qbo-sandbox listening on {sandbox.base_url}", flush=True)
        print(f"  data API:  {sandbox.base_url}/v3/company/<realmId>/...", flush=True)
        print(f"  admin API: {sandbox.base_url}/__sandbox__/", flush=True)
        if sandbox.state.default_realm_id:
            print(f"  default realm: {sandbox.state.default_realm_id}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
