"""``talksplat serve RUN_OR_SUBJECT...``: live avatars in the browser (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path

from talksplat import errors
from talksplat.core.constants import DEFAULT_DEVICE, DEVICE_CHOICES
from talksplat.errors import TalksplatError

# Exit code 2 for a bad command line (errors.UsageError; plain TalksplatError where it does not exist yet).
UsageError = getattr(errors, "UsageError", TalksplatError)


def register(subparsers) -> None:
    from talksplat.serve.limits import DEFAULT_HOST, DEFAULT_PORT, MAX_SESSIONS

    p = subparsers.add_parser("serve", help="serve trained avatars live in a web page (WebRTC)",
                              description="Serve trained avatars in a web page and an HTTP API: speak through "
                                          "the microphone, upload audio or type text, and the avatar answers "
                                          "over WebRTC (docs/serve.md).")
    p.add_argument("avatars", type=Path, nargs="+", metavar="RUN_OR_SUBJECT",
                   help="trained subjects or run folders; each is loaded once and shared by all sessions")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--max-sessions", type=int, default=MAX_SESSIONS,
                   help=f"concurrent sessions (default {MAX_SESSIONS})")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=DEFAULT_DEVICE,
                   help=f"where the avatars render (default {DEFAULT_DEVICE}; auto: cuda when PyTorch sees a GPU, "
                        "gsplat is installed and the recipe supports it)")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging

    from aiohttp import web

    from talksplat.render.renderer import open_avatar
    from talksplat.serve.app import avatar_names, make_app
    from talksplat.serve.limits import ServeLimits
    from talksplat.serve.media import is_loopback

    if args.max_sessions < 1:
        raise UsageError(f"--max-sessions must be at least 1 (got {args.max_sessions})")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1..65535 (got {args.port})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("aiortc", "aioice", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    avatars = []
    for path in args.avatars:
        print(f"loading {path} ...", flush=True)
        avatars.append(open_avatar(path, device=args.device))
    named = avatar_names(avatars)
    app = make_app(named, ServeLimits(max_sessions=args.max_sessions), loopback=is_loopback(args.host))
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {', '.join(named)} at http://{shown}:{args.port}/ (Ctrl-C stops)", flush=True)
    try:
        web.run_app(app, host=args.host, port=args.port, print=None, handle_signals=True)
    except OSError as exc:
        raise TalksplatError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
                             "choose another --port") from exc
    return 0
