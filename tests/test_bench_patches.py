"""The benchmarks that measure patched copies of this commit still find their lines.

`bench/bounds.py` (its variants) and `bench/timeline.py` (its time stamps) copy the
tree and replace exact lines of it; a line that moved or changed stops the benchmark
only when someone runs it. This checks each patch against the tree as it is: the text
it replaces occurs exactly once in its file, and each copy's patched files compile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The bench scripts import bench/stack.py, which tests/e2e/stack.py would shadow here:
# their patch lists are read in a process of their own, with bench/ on the path.
_LIST = """
import json, bounds, timeline
patches = [("bounds " + name, p) for name, ps in bounds.VARIANTS.items() for p in ps]
patches += [("timeline", p) for p in timeline.STAMPS]
print(json.dumps([[who, *p] for who, p in patches]))
"""


def bench_patches() -> list[tuple[str, str, str, str]]:
    """(copy, file, the text replaced, its replacement) of every benchmark's patches."""
    path = ":".join(str(ROOT / d) for d in ("bench", "scripts"))
    out = subprocess.run([sys.executable, "-c", _LIST], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
    return [(who, file, old, new) for who, file, old, new in json.loads(out.stdout)]


PATCHES = bench_patches()


@pytest.mark.parametrize(("who", "file", "old", "new"), PATCHES,
                         ids=[f"{who}-{n}" for n, (who, *_) in enumerate(PATCHES)])
def test_patched_lines_are_in_the_tree(who: str, file: str, old: str, new: str) -> None:
    assert (ROOT / file).read_text().count(old) == 1, f"{who}: {file} lacks\n{old}"


@pytest.mark.parametrize("who", sorted({who for who, *_ in PATCHES}))
def test_patched_copies_compile(who: str) -> None:
    files: dict[str, str] = defaultdict(str)
    for name, file, old, new in PATCHES:
        if name == who:
            text = files[file] or (ROOT / file).read_text()
            files[file] = text.replace(old, new)
    for file, text in files.items():
        compile(text, file, "exec")
