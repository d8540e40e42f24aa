"""Every shell command and Python snippet of README.md, executed at tiny sizes (conventions:
docs/dev/readme-tests.md). Section tests are slow; the fast tests check the README's shape.

Tiny sizes come from here, not from the library (which has no test switch): a ``luminate`` command gets every
step-count flag its subcommand has set to 2 (``steps_flags`` in conftest.py), and every call of a Luminate function in
a Python block gets its step-count arguments (:data:`STEP_ARGUMENTS`, default or given) capped at 2."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SHELL = {"", "bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!--\s*readme-test:\s*([\w-]+)\s*(.*?)\s*-->")
FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
SETUP = re.compile(r"^(\S*python3?\s+-m\s+venv\b|\S*pip3?\s+install\b)")
COMMAND_TIMEOUT = 600


@dataclass
class Block:
    """One fenced code block: its section (the ``##`` heading above it), first code line (1-based), language,
    code, and the reason given by a ``<!-- readme-test: skip REASON -->`` marker above it (None: it runs)."""

    section: str
    line: int
    lang: str
    code: str
    skip: str | None = None

    @property
    def runnable(self) -> bool:
        return self.lang in SHELL or self.lang == "python"


def parse_readme(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    section, skip, i = "top", None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section, skip = line[3:].strip(), None
        marker = MARKER.search(line)
        if marker and marker.group(1) == "skip":
            skip = marker.group(2) or "marked skip without a reason"
        fence = FENCE.match(line)
        if fence:
            close, body, j = fence.group(1), [], i + 1
            while j < len(lines) and not lines[j].startswith(close):
                body.append(lines[j])
                j += 1
            blocks.append(Block(section, i + 2, fence.group(2).lower(), "\n".join(body), skip))
            skip, i = None, j + 1
            continue
        if line.strip() and not marker:
            skip = None  # a marker applies only to the block right below it
        i += 1
    return blocks


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comment-only and blank lines dropped, and
    venv-creation / ``pip install`` segments of an ``&&`` chain removed (the test environment is the set-up)."""
    commands, pending = [], ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        kept = [seg.strip() for seg in line.split("&&") if not SETUP.match(seg.strip())]
        if kept:
            commands.append(" && ".join(kept))
    return commands


def command_words(command: str) -> list[list[str]]:
    """The words of each simple command in ``command`` (split on ``&&``, ``;`` and pipes), comments removed."""
    out = []
    for part in re.split(r"&&|\|\||;|\|", command):
        try:
            words = shlex.split(part, comments=True)
        except ValueError:
            continue
        if words:
            out.append(words)
    return out


#: the step-count arguments of Luminate functions that a README Python block's calls get capped
STEP_ARGUMENTS = {"steps", "icon_steps", "class_steps", "refine_steps", "train_steps", "group_steps"}


def tiny_call(function, steps: int = 2):
    """``function`` if it is not Luminate's or takes no step count, else a wrapper that calls it with every
    argument of :data:`STEP_ARGUMENTS` (given or default) at most ``steps``, and ``thresholds`` kept within them."""
    if not (getattr(function, "__module__", None) or "").startswith("luminate"):
        return function
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return function
    names = [name for name in signature.parameters if name in STEP_ARGUMENTS]
    options = _settings_steps(function, signature)
    if not names and not options:
        return function

    @functools.wraps(function)
    def capped(*args, **kwargs):
        for name in options:   # a settings value's step fields, given as keywords
            if not (isinstance(kwargs.get(name), int) and kwargs[name] <= steps):
                kwargs[name] = steps
        bound = signature.bind_partial(*args, **kwargs)
        for name in names:
            value = bound.arguments.get(name, signature.parameters[name].default)
            if value is None or (isinstance(value, int) and value > steps):
                bound.arguments[name] = steps
        if bound.arguments.get("thresholds"):
            last = bound.arguments.get("steps") or steps
            bound.arguments["thresholds"] = sorted({min(int(t), last) for t in bound.arguments["thresholds"]})
        return function(*bound.args, **bound.kwargs)

    return capped


def _settings_steps(function, signature: inspect.Signature) -> list[str]:
    """The step fields of a function's ``settings`` dataclass when it takes them as keywords too (``**options``)."""
    if "settings" not in signature.parameters or not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return []
    try:
        hint = typing.get_type_hints(function).get("settings")
    except Exception:   # an annotation that does not resolve: no settings to read
        return []
    for kind in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(kind):
            return [f.name for f in dataclasses.fields(kind) if f.name in STEP_ARGUMENTS]
    return []


class _TinyCalls(ast.NodeTransformer):
    """Every call ``f(...)`` becomes ``__tiny__(f)(...)``."""

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        wrapped = ast.Call(func=ast.Name("__tiny__", ast.Load()), args=[node.func], keywords=[])
        return ast.copy_location(ast.Call(func=wrapped, args=node.args, keywords=node.keywords), node)


def tiny_code(code: str, filename: str):
    """``code`` compiled with every call going through :func:`tiny_call`."""
    tree = ast.fix_missing_locations(_TinyCalls().visit(ast.parse(code, filename)))
    return compile(tree, filename, "exec")


def tiny_command(command: str, steps_flags) -> str:
    """A shell command with every plain ``luminate ...`` part of an ``&&`` chain given its subcommand's step flags."""
    parts = []
    for part in command.split("&&"):
        words = shlex.split(part, comments=True) if not re.search(r"[|;<>$`]", part) else []
        if words and Path(words[0]).name == "luminate":
            part = f" {shlex.join(words[:1] + steps_flags(words[1:]))} "
        parts.append(part)
    return "&&".join(parts).strip()


BLOCKS = parse_readme(README.read_text(encoding="utf-8"))
SECTIONS = list(dict.fromkeys(b.section for b in BLOCKS if b.runnable))


def _slug(section: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", section.lower()).strip("-")


# --- fast checks of the README's shape -------------------------------------------------------------------


def test_parser_reads_markers_chains_and_continuations():
    text = ("## One\n<!-- readme-test: skip too long -->\n```bash\nrun me\n```\n```bash\n# a comment\n"
            "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/luminate layers m  # tail\n"
            "luminate render m \\\n  blocks.9:7\n```\n## Two\n```python\nx = 1\n```\n```text\nout\n```\n")
    blocks = parse_readme(text)
    assert [(b.section, b.lang, b.skip) for b in blocks] == [
        ("One", "bash", "too long"), ("One", "bash", None), ("Two", "python", None), ("Two", "text", None)]
    assert blocks[1].line == 7 and not blocks[3].runnable
    assert luminate_argv('.venv/bin/luminate render m "-blocks.9:7"  # x') == ["render", "m", "-blocks.9:7"]
    assert luminate_argv("luminate layers m | head") is None and luminate_argv("python -c 1") is None
    assert shell_commands(blocks[1].code) == [".venv/bin/luminate layers m  # tail", "luminate render m    blocks.9:7"]


def test_tiny_sizes_come_from_the_harness(tiny_steps):
    def optimize(x, steps=512, thresholds=None, icon_steps=None, n_steps=50):
        return steps, thresholds, icon_steps, n_steps

    optimize.__module__ = "luminate.example"
    assert tiny_call(optimize)(1) == (2, None, 2, 50)
    assert tiny_call(optimize)(1, steps=1, thresholds=[0, 100]) == (1, [0, 1], 2, 50)
    assert tiny_call(print) is print and tiny_call(len) is len
    command = tiny_command("mkdir -p m && luminate sanity efficientnet_lite0 m --units 0:4  # a note", tiny_steps)
    assert command == "mkdir -p m && luminate sanity efficientnet_lite0 m --units 0:4 --steps 2"
    assert tiny_command("luminate layers m | head", tiny_steps) == "luminate layers m | head"


def test_readme_says_how_to_run_luminate_after_setup():
    text = README.read_text(encoding="utf-8")
    setup = text.index("python3 -m venv .venv")
    activation = re.search(r"source \.venv/bin/activate", text)
    assert activation and activation.start() > setup, "the README must say how to run luminate after its set-up"
    assert "bash scripts/test.sh" in text
    setup = next(b for b in BLOCKS if "python3 -m venv" in b.code)
    assert shell_commands(setup.code) == [".venv/bin/luminate gallery efficientnet_lite0 -o gallery"]


def test_every_block_is_runnable_or_tagged_and_python_compiles():
    problems = []
    for block in BLOCKS:
        if block.lang == "python":
            try:
                compile(block.code, f"README.md:{block.line}", "exec")
            except SyntaxError as exc:
                problems.append(f"README.md:{block.line}: Python block does not compile: {exc}")
        elif block.lang not in SHELL and block.lang not in {"text", "json", "html", "toml", "yaml", "diff"}:
            problems.append(f"README.md:{block.line}: unknown block language {block.lang!r} (tag output as text)")
    assert not problems, "\n".join(problems)


def test_every_luminate_command_in_the_readme_exists():
    from luminate.cli import build_parser

    parser = build_parser()
    known = set(next(a for a in parser._actions if a.dest == "command").choices)
    missing = []
    for block in BLOCKS:
        if block.lang not in SHELL:
            continue
        for command in shell_commands(block.code):
            for words in command_words(command):
                if Path(words[0]).name == "luminate" and len(words) > 1 and not words[1].startswith("-") \
                        and words[1] not in known:
                    missing.append(f"README.md:{block.line}: luminate {words[1]}")
    assert not missing, "commands the CLI does not have:\n" + "\n".join(missing)


# --- the README, run ---------------------------------------------------------------------------------------


@dataclass
class Workspace:
    """The folder and Python namespace one README run shares, and which sections have run."""

    folder: Path
    env: dict
    steps_flags: Callable[[list[str]], list[str]]
    namespace: dict = field(default_factory=lambda: {"__name__": "__readme__", "__tiny__": tiny_call})
    done: set = field(default_factory=set)
    ran: set = field(default_factory=set)  # luminate commands already run (a repeat would redo the same work)

    def run_section(self, section: str, monkeypatch) -> None:
        monkeypatch.chdir(self.folder)
        monkeypatch.setenv("LUMINATE_CACHE", self.env["LUMINATE_CACHE"])
        for block in BLOCKS:
            if block.section != section or not block.runnable:
                continue
            if block.skip:
                continue
            if block.lang == "python":
                self._python(block)
            else:
                for command in shell_commands(block.code):
                    self._shell(block, command)

    def _python(self, block: Block) -> None:
        code = tiny_code(block.code, f"README.md:{block.line}")
        start = time.perf_counter()
        try:
            exec(code, self.namespace)
        except Exception as exc:
            raise AssertionError(f"the Python block at README.md:{block.line} ({block.section}) failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
        print(f"README.md:{block.line}: {time.perf_counter() - start:5.1f}s  Python block")

    def _shell(self, block: Block, command: str) -> None:
        start = time.perf_counter()
        argv = luminate_argv(command)
        if argv is not None and tuple(argv) in self.ran:
            print(f"README.md:{block.line}: same as a command above, not run again: {command}")
            return
        if argv is not None:  # a plain `luminate ...`: in this process, without paying torch's import again
            self.ran.add(tuple(argv))
            from luminate.cli import main

            try:
                code = main(self.steps_flags(argv))
            except SystemExit as exc:  # argparse errors
                code = exc.code
            assert code == 0, f"README.md:{block.line} ({block.section}): `{command}` exited {code} (output above)"
        else:
            proc = subprocess.run(["bash", "-c", tiny_command(command, self.steps_flags)], cwd=self.folder,
                                  env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
            assert proc.returncode == 0, (f"README.md:{block.line} ({block.section}): `{command}` exited "
                                          f"{proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
                                          f"{proc.stderr[-3000:]}")
        print(f"README.md:{block.line}: {time.perf_counter() - start:5.1f}s  {command}")


def luminate_argv(command: str) -> list[str] | None:
    """The arguments of a plain ``luminate ...`` / ``.venv/bin/luminate ...`` command (no pipes, redirections,
    chains or variables), which the harness runs in-process through :func:`luminate.cli.main`; else None."""
    words = shlex.split(command, comments=True)
    if not words or Path(words[0]).name != "luminate" or re.search(r"[|;&<>$`]", command.split(" #")[0]):
        return None
    return words[1:]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_steps) -> Workspace:
    from luminate.images import sample_image_paths

    folder = tmp_path_factory.mktemp("readme")
    for photo in sample_image_paths():
        shutil.copy(photo, folder / photo.name)
    (folder / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
               LUMINATE_CACHE=str(folder / ".cache"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg")
    env.pop("VIRTUAL_ENV", None)
    return Workspace(folder, env, tiny_steps)


@pytest.mark.slow
@pytest.mark.parametrize("section", SECTIONS, ids=[_slug(s) for s in SECTIONS])
def test_readme_section_runs(section, workspace, monkeypatch):
    skipped = [b for b in BLOCKS if b.section == section and b.runnable and b.skip]
    for earlier in SECTIONS[:SECTIONS.index(section)]:  # run alone (-k): build the state it relies on
        if earlier not in workspace.done:
            workspace.done.add(earlier)
            workspace.run_section(earlier, monkeypatch)
    workspace.done.add(section)
    workspace.run_section(section, monkeypatch)
    if skipped and all(b.skip for b in BLOCKS if b.section == section and b.runnable):
        pytest.skip("; ".join(f"README.md:{b.line}: {b.skip}" for b in skipped))
