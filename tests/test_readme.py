"""Every shell command and Python snippet of README.md, executed at tiny sizes (conventions:
docs/dev/readme-tests.md). Section tests are slow; the fast tests check the README's shape."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    namespace: dict = field(default_factory=lambda: {"__name__": "__readme__"})
    done: set = field(default_factory=set)
    ran: set = field(default_factory=set)  # luminate commands already run (a repeat would redo the same work)

    def run_section(self, section: str, monkeypatch) -> None:
        monkeypatch.chdir(self.folder)
        for key in ("LUMINATE_TINY", "LUMINATE_CACHE"):
            monkeypatch.setenv(key, self.env[key])
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
        code = compile(block.code, f"README.md:{block.line}", "exec")
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
                code = main(argv)
            except SystemExit as exc:  # argparse errors
                code = exc.code
            assert code == 0, f"README.md:{block.line} ({block.section}): `{command}` exited {code} (output above)"
        else:
            proc = subprocess.run(["bash", "-c", command], cwd=self.folder, env=self.env, capture_output=True,
                                  text=True, timeout=COMMAND_TIMEOUT)
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
def workspace(tmp_path_factory) -> Workspace:
    from luminate.images import sample_image_paths

    folder = tmp_path_factory.mktemp("readme")
    for photo in sample_image_paths():
        shutil.copy(photo, folder / photo.name)
    (folder / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), LUMINATE_TINY="1",
               LUMINATE_CACHE=str(folder / ".cache"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg")
    env.pop("VIRTUAL_ENV", None)
    return Workspace(folder, env)


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
