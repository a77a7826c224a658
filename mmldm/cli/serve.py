"""``mmldm serve``: the web app (:mod:`mmldm.app`) on one loaded model.

    mmldm serve                                   # the built-in model on http://127.0.0.1:7860
    mmldm serve --model bbb --port 8000           # a shipped model by name
    mmldm serve --model models/shapes --host 0.0.0.0   # a model folder, reachable from other machines

The model loads once, before the server starts; every request uses it, one at a time
(a queue holds the others). Needs Gradio: ``pip install 'mmldm[serve]'``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .commands import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve", help=COMMANDS["serve"],
        description="Serve a web page generating sounding videos with one model: every task, uploads for audio "
                    "and video, seed, steps, guidance and candidates; the result plays in the page and its mp4 "
                    "and wav download. Stop it with Ctrl-C.")
    parser.add_argument("--model", default=None, metavar="NAME_OR_DIR",
                        help="a model folder or the name of a shipped model (shapes, bbb); default: the built-in "
                             "model")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every "
                             "network interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument("--text-encoder", type=Path, default=None, metavar="DIR",
                        help="a text-conditioned model's CLIP text encoder folder, when its model folder does not "
                             "carry one (see mmldm generate --help)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU), cpu or cuda")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto (default): bfloat16 autocast where the device multiplies bf16 natively, else "
                             "float32 (see mmldm generate --help)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the networks with torch.compile: the first request of each new size waits "
                             "for the compilation (tens of seconds on a CPU), later ones run faster (needs a C++ "
                             "compiler on a CPU)")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="the longest output one request may ask for, in seconds (default 60)")
    parser.add_argument("--queue-size", type=int, default=16,
                        help="requests that may wait for their turn; more are turned away (default 16)")
    parser.set_defaults(func=run)


def _check_address(host: str, port: int) -> None:
    """Refuse, before the model loads, a port out of range or an address nothing can listen on."""
    import socket

    from ..errors import ConfigError

    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # as the server will: a port whose last connections are closing (TIME_WAIT) can be taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server may be "
                              "using the port: give another with --port)") from None


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    import signal

    from ..errors import ConfigError, WeightsError

    if args.text_encoder is not None and not args.text_encoder.is_dir():
        raise WeightsError(args.text_encoder, "--text-encoder", "not found: give a local CLIP text model folder")
    if args.queue_size < 1:
        raise ConfigError(f"--queue-size must be >= 1, got {args.queue_size}")
    if not args.max_seconds > 0:
        raise ConfigError(f"--max-seconds must be a positive number of seconds, got {args.max_seconds}")
    _check_address(args.host, args.port)  # before the model loads: a taken port fails at once
    # Gradio would otherwise send usage statistics and look for a newer version of itself online
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError("mmldm serve needs Gradio, which is not installed: pip install 'mmldm[serve]'") from None
    from ..app import build_app
    from ..devices import resolve_device, resolve_precision
    from ..pipeline import SoundingVideoPipeline

    device = resolve_device(args.device)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s mmldm serve: %(levelname)s: %(message)s"))
    server_log = logging.getLogger("mmldm.serve")
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)

    print(f"loading {args.model or 'the built-in model'} ...", flush=True)
    pipe = SoundingVideoPipeline.from_pretrained(args.model, device=device,
                                                 dtype=resolve_precision(args.precision, device),
                                                 text_encoder=args.text_encoder)
    if args.compile:
        pipe.compile()
    demo = build_app(pipe, max_seconds=args.max_seconds)
    # one generation at a time on the one model; the others wait in the queue
    demo.queue(max_size=args.queue_size, default_concurrency_limit=1)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {pipe.model_dir} on http://{host}:{args.port} (Ctrl-C stops)", flush=True)
    signal.signal(signal.SIGTERM, _stop)  # a service manager's stop ends it as Ctrl-C does: files cleaned up
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, quiet=True)
    except OSError as exc:  # the port was taken between the check and the start
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    finally:
        demo.mmldm_app.close()
    return 0
