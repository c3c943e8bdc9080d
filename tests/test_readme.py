"""Every command in README.md runs, as written, against real local workers on loopback.

The README's fenced ``sh`` and ``python`` blocks are extracted in order, section by section (``## ``
headings). What a block is, an HTML comment just above it says (invisible on the rendered page):

- no comment: run it. A Python block runs as a script and must exit 0 (its ``assert``s are checks); a
  shell block runs line by line in bash and every line must exit 0, except that a line ending in ``&``
  starts a server in the background and the next line runs once that server logs "listening on ws".
- ``<!-- readme-test: background (why) -->``: a Python block that serves until stopped; it starts like
  a ``&`` line.
- ``<!-- readme-test: skip (why) -->``: illustrative only; the reason is required and the set stays
  small (:data:`MAX_SKIPPED`).

Each section runs in one fresh directory (``examples/`` linked in, as on a fresh clone) with ``fedproto``
and ``python`` from this environment first on PATH. Every port the README names is replaced by a free
one, consistently across the blocks. Background servers are stopped by PID when their section ends,
whether it passed or not.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: The most blocks the README may mark as illustrative only: every other block is run. Today: ``make``
#: (its test target runs this file), the Node worker's setup (npm install) and the TypeScript client.
MAX_SKIPPED = 3
#: Seconds a server may take to say it listens, and a command to finish (the demo trains for a while).
START_TIMEOUT = 60.0
COMMAND_TIMEOUT = 300.0

_FENCE = re.compile(
    r"(?:<!--\s*readme-test:\s*(?P<directive>.*?)-->\s*\n)?```(?P<lang>\w+)\n(?P<code>.*?)```", re.S
)
_PORT = re.compile(r"(?:127\.0\.0\.1:|--port\s+|\"127\.0\.0\.1\",\s*)(\d{4,5})\b")


@dataclass(frozen=True)
class Block:
    section: str
    lang: str
    code: str
    mode: str  # "run", "background" or "skip"
    reason: str


def readme_blocks(text: str) -> list[Block]:
    """The fenced sh/python blocks of the README, with their section and directive."""
    blocks = []
    for section in re.split(r"^(?=## )", text, flags=re.M):
        title = section.splitlines()[0].lstrip("# ") if section.strip() else ""
        for match in _FENCE.finditer(section):
            lang = match["lang"]
            directive = " ".join((match["directive"] or "run").split())
            mode, _, reason = directive.partition(" ")
            if mode not in ("run", "background", "skip"):
                raise AssertionError(f"unknown readme-test directive {directive!r} in {title!r}")
            if lang not in ("sh", "python") and mode != "skip":
                raise AssertionError(f"a {lang!r} block in {title!r} runs: only sh and python can")
            blocks.append(Block(title, lang, match["code"], mode, reason.strip("() ")))
    return blocks


BLOCKS = readme_blocks(README.read_text())
SECTIONS = list(dict.fromkeys(b.section for b in BLOCKS if b.mode != "skip"))


def test_the_readme_marks_few_blocks_illustrative_and_says_why() -> None:
    skipped = [b for b in BLOCKS if b.mode == "skip"]
    assert len(skipped) <= MAX_SKIPPED, [b.code for b in skipped]
    assert all(len(b.reason) > 20 for b in skipped), "a skipped block needs its reason in the comment"
    assert all(b.lang == "python" for b in BLOCKS if b.mode == "background")
    assert len(BLOCKS) - len(skipped) >= 5  # the worker, the client, two of the CLI, conformance


def test_the_extractor_reads_directives() -> None:
    text = (
        "## One\n<!-- readme-test: skip (only an illustration) -->\n```sh\nmake x\n```\n"
        "```python\nprint(1)\n```\n## Two\n<!-- readme-test: background (it serves) -->\n```python\nx\n```\n"
    )
    blocks = readme_blocks(text)
    assert [(b.section, b.mode, b.reason) for b in blocks] == [
        ("One", "skip", "only an illustration"),
        ("One", "run", ""),
        ("Two", "background", "it serves"),
    ]


def _ports(blocks: list[Block]) -> dict[str, str]:
    """Every port the blocks name, mapped to a free one."""
    named = {port for b in blocks for port in _PORT.findall(b.code)}
    return {port: str(free_port()) for port in sorted(named)}


def _substitute(code: str, ports: dict[str, str]) -> str:
    for old, new in ports.items():
        code = re.sub(rf"\b{old}\b", new, code)
    return code


class Section:
    """Runs one README section's blocks in a directory of its own; stops its servers when done."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[tuple[subprocess.Popen[str], list[str]]] = []
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "COLUMNS": "120",
        }
        self.env.pop("PYTHONPATH", None)

    def run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(
            argv,
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, (
            f"{what}\nexit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
            f"stderr:\n{result.stderr[-3000:]}{self.server_logs()}"
        )

    def start(self, argv: list[str], what: str) -> None:
        """Start a server and wait until it logs "listening on ws" (its log is kept for failures)."""
        process = subprocess.Popen(
            argv,
            cwd=self.directory,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: a shell line's children are stopped with it
        )
        log: list[str] = []
        self.servers.append((process, log))
        ready = threading.Event()

        def read() -> None:
            assert process.stderr is not None
            for line in process.stderr:  # ends when the process does
                log.append(line)
                if "listening on ws" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_TIMEOUT):
            raise AssertionError(f"{what}\ndid not log 'listening on ws'\n{''.join(log)[-3000:]}")

    def server_logs(self) -> str:
        return "".join(f"\n--- server {p.args!r}:\n{''.join(log)[-2000:]}" for p, log in self.servers)

    def stop(self) -> None:
        for process, _ in self.servers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # the group is the process's own (start_new_session)
        for process, _ in self.servers:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(15)


def _shell_lines(code: str) -> list[tuple[str, bool]]:
    """(command, runs in the background) for each line of a shell block."""
    lines = []
    for line in code.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        background = re.search(r"\s&\s*(#.*)?$", line)
        lines.append((line[: background.start()] if background else line, background is not None))
    return lines


# A section starts workers and runs several commands, each a fresh Python process importing torch (the
# demo trains, the conformance suite runs its cases): minutes on a busy machine, not the default 120 s.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("section", SECTIONS)
def test_readme_section_runs(section: str, tmp_path: Path) -> None:
    blocks = [b for b in BLOCKS if b.section == section and b.mode != "skip"]
    if any("openssl " in b.code for b in blocks) and shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    ports = _ports(blocks)
    runner = Section(tmp_path)
    try:
        for n, block in enumerate(blocks):
            code = _substitute(block.code, ports)
            if block.lang == "python":
                script = tmp_path / f"block_{n}.py"
                script.write_text(code)
                if block.mode == "background":
                    runner.start([sys.executable, str(script)], code)
                else:
                    runner.run([sys.executable, str(script)], code)
                continue
            for command, background in _shell_lines(code):
                if background:
                    runner.start(["bash", "-c", f"exec {command}"], command)
                else:
                    runner.run(["bash", "-c", command], command)
    finally:
        runner.stop()
