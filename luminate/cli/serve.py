"""``luminate serve``: the live toolbox, a local app where a photo or the camera meets a model's units."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Iterator

from luminate.cli.common import add_model_args, load_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="the live toolbox: a local web app over a model (photo or camera in, units live)",
        description="Serve a local web page over MODEL (loaded once): choose a photo or start the camera, pick a\n"
                    "layer, and its units appear as a grid of live activation maps beside the top classes. Click a\n"
                    "unit for its feature visualization (rendered in the background, kept in the render cache),\n"
                    "where it fires in the photo and, with --site, the Microscope's top dataset examples; choose a\n"
                    "class for its attribution map. The API behind the page (/api/...) works without it.\n"
                    "Listens on 127.0.0.1 only unless --host says otherwise. Ctrl-C stops it.",
        epilog="examples: luminate serve efficientnet_lite0\n"
               "          luminate serve efficientnet_lite0 --site microscope --port 8800\n"
               "          luminate serve efficientnet_lite0 --features features-site\n"
               "          luminate serve my_net.py:build",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--port", type=int, default=8765, help="TCP port (0: a free one, printed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but loopback exposes the model to the network (a warning)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another name the page may be reached by (the Host header), beyond loopback, --host and, "
                        "on 0.0.0.0, this machine's own names; repeatable")
    p.add_argument("--site", default=None,
                   help="a Microscope site folder (made by `luminate microscope`): unit panels show its top "
                        "dataset examples and statistics")
    p.add_argument("--features", default=None,
                   help="a feature dictionary (a `luminate features` site, or a folder with dictionary.safetensors): "
                        "the layer picker gains features:LAYER, its features shown and rendered like units")
    p.add_argument("--render-steps", type=int, default=256, help="optimization steps of a unit's visualization")
    p.add_argument("--render-size", type=int, default=96, help="side of a unit's visualization in pixels")
    p.add_argument("--max-images", type=int, default=64,
                   help="uploaded images and camera frames kept (least recently used evicted)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import luminate.serve as serve   # an ImportError here names the extra to install

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: a TCP port is 0..65535 (0 picks a free one)")
    if args.render_steps < 1 or args.render_size < 16 or args.max_images < 1:
        raise ValueError("--render-steps must be at least 1, --render-size at least 16, --max-images at least 1")
    loopback = serve.is_loopback(args.host)
    sock = serve.bind(args.host, args.port)   # a busy port fails now, before the model loads
    try:
        model = load_model(args)
        app = serve.create_app(model, site=args.site, features=args.features, render_size=args.render_size, render_steps=args.render_steps,
                               max_images=args.max_images,
                               allowed_hosts=serve.served_names(args.host, args.allow_host))
        if not loopback:
            where = "every network interface of this machine" if args.host in ("0.0.0.0", "::") else args.host
            print(f"warning: listening on {args.host} ({where}), not loopback: anyone on a network that reaches "
                  f"this machine can use the model, upload images and start renders, with no password. Web pages "
                  f"in a browser cannot (requests from other sites and Host names other than "
                  f"{', '.join(serve.served_names(args.host, args.allow_host))} are refused). Use --host 127.0.0.1 "
                  "to keep it to this machine.", file=sys.stderr, flush=True)
        print(f"Luminate toolbox for {model.name}: {serve.url_for(sock)}  (Ctrl-C stops it)", flush=True)
        with _stop_quietly():
            serve.run(app, sock=sock)
    finally:
        sock.close()
    print("luminate serve: stopped", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _stop_quietly() -> Iterator[None]:
    """Ctrl-C and SIGTERM are how a server ends: uvicorn shuts down gracefully and then raises the signal again for
    the previous handler, which here ignores it, so the command exits 0 instead of dying of the signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
