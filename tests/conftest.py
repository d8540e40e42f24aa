import os

# OpenMP threads that spin while waiting make torch up to 40x slower when the machine is oversubscribed
# (parallel test workers, other jobs); passive waiting costs nothing measurable on a quiet machine.
# luminate.runtime sets it when luminate is imported before torch; set here too for tests that import torch first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from luminate import runtime  # noqa: E402

# workers x threads <= cores: each pytest-xdist worker takes its share; an explicit OMP_NUM_THREADS wins.
if not os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(runtime.worker_threads(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture(scope="session", autouse=True)
def _luminate_cache(tmp_path_factory):
    """What tests render and cache by default goes to a temporary folder, never the user's ~/.cache/luminate."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LUMINATE_CACHE", str(tmp_path_factory.mktemp("luminate-cache")))
        yield


#: Steps every optimization of a smoke test takes: README, notebook and command-line tests pass them explicitly
#: (there is no test switch in the library; cache keys record the steps that ran).
TINY_STEPS = 2


def steps_flags(argv: list[str], steps: int = TINY_STEPS) -> list[str]:
    """``argv`` of a ``luminate`` command with every step-count option its subcommand has (``--steps``,
    ``--icon-steps``, ...; read from the argparse subparser) set to ``steps``, appended so that they win."""
    from luminate.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    words = [w for w in argv if not w.startswith("-")]
    sub = commands.get(words[0]) if words else None
    if sub is None:
        return list(argv)
    extra = []
    for action in sub._actions:
        if action.dest.endswith("steps") and action.option_strings and action.type is int:
            extra += [action.option_strings[-1], str(steps)]
    return list(argv) + extra


@pytest.fixture(scope="session")
def tiny_steps():
    """``tiny_steps(argv)``: the command's arguments with every step-count flag at :data:`TINY_STEPS`."""
    return steps_flags


def _sample(name: str) -> str:
    import sklearn.datasets

    return os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", name)


@pytest.fixture(scope="session")
def flower_path() -> str:
    return _sample("flower.jpg")


@pytest.fixture(scope="session")
def china_path() -> str:
    return _sample("china.jpg")


@pytest.fixture(scope="session")
def lite0():
    from luminate import models

    return models.load("efficientnet_lite0")


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright; skipped with the reason when either is missing."""
    import shutil

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; scripts/test.sh does it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    """A fresh page that refuses every network request except file:// and data: URLs (pages must be self-contained)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    requests = []

    def guard(route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            requests.append(url)
            route.abort()

    context.route("**/*", guard)
    pg = context.new_page()
    pg.remote_requests = requests
    yield pg
    context.close()
