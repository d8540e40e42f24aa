"""The live toolbox: a local web app where a photo or the camera meets a model's units (``luminate serve``).

>>> app = luminate.serve.create_app("efficientnet_lite0")          # a FastAPI app; one model, loaded once
>>> luminate.serve.run(app, port=8765)                             # http://127.0.0.1:8765/
>>> with luminate.serve.running(model) as url:                     # in a thread, on a free loopback port
...     urllib.request.urlopen(url + "healthz")

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart). See :mod:`luminate.serve.app` for the API.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import threading
import time
from typing import Iterator, Sequence

from luminate.serve.app import LOOPBACK, Toolbox, create_app
from luminate.serve.uploads import ImageStore, UploadError, decode_upload
from luminate.serve.worker import RenderJob, RenderWorker

__all__ = ["create_app", "Toolbox", "ImageStore", "UploadError", "decode_upload", "RenderJob", "RenderWorker",
           "bind", "run", "running", "is_loopback", "served_names", "url_for"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only accepts connections from this machine."""
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def served_names(host: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The ``Host`` header names a server listening on ``host`` answers (DNS rebinding: a page of another name that
    resolves to this machine is refused): the loopback names, ``host`` itself and, on a wildcard address
    (``0.0.0.0``, ``::``), this machine's own names and addresses; plus ``extra`` (``--allow-host``)."""
    names = [*LOOPBACK, host.strip("[]"), *extra]
    if host in ("0.0.0.0", "::", ""):
        for name in {socket.gethostname(), socket.getfqdn()}:
            names.append(name)
            try:
                names += [info[4][0] for info in socket.getaddrinfo(name, None)]
            except OSError:
                pass
    return tuple(dict.fromkeys(n.lower() for n in names if n))


def bind(host: str = "127.0.0.1", port: int = 8765) -> socket.socket:
    """A listening socket on ``host:port`` (``port=0``: a free port), or an OSError that names the fix."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            fix = "choose another port with --port (0 picks a free one)"
        else:   # an address this machine does not have, or a name that does not resolve
            fix = ("--host must be an address of this machine: 127.0.0.1 (this machine only), 0.0.0.0 (every "
                   "network interface) or one of its own IP addresses")
        raise OSError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); {fix}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_for(sock: socket.socket) -> str:
    """The page's address for a socket made by :func:`bind`."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _server(app):
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    return uvicorn.Server(config)


def run(app, host: str = "127.0.0.1", port: int = 8765, sock: socket.socket | None = None) -> None:
    """Serve ``app`` until interrupted (Ctrl-C, SIGTERM) on ``sock`` or a new socket on ``host:port``."""
    sock = sock or bind(host, port)
    _server(app).run(sockets=[sock])


@contextlib.contextmanager
def running(model_or_app, host: str = "127.0.0.1", port: int = 0, **options) -> Iterator[str]:
    """Serve a model (or an app from :func:`create_app`; ``options`` go to it) in a background thread while the
    block runs; yields the base URL (``http://127.0.0.1:PORT/``). The server stops when the block ends."""
    app = model_or_app if hasattr(model_or_app, "router") else create_app(model_or_app, **options)
    sock = bind(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="luminate-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the toolbox server did not start (see its log above)")
            time.sleep(0.02)
        yield url_for(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
