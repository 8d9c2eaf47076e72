"""Build the pinned llama-cpp-python wheel from its PyPI sdist, with one fix to its vendored llama.cpp.

llama.cpp (as vendored by 0.3.16) reuses the previous decode's compute graph for a batch of the same shape
without looking at which LoRA adapters are set, so after a switch a decode runs the old adapter's weights
(or a freed one's). The fix drops the previous graph whenever the adapter set changes, as later llama.cpp
releases do; the backend then keeps graph reuse on, worth about 10 % of one user's decoding speed. The
wheel's version carries a local label (`+tuneloop1`) so the backend can tell this build from another one.

Run by `make setup`: `python scripts/build_llama_cpp.py WHEEL_DIR` (CMAKE_ARGS from the environment).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABEL = "tuneloop1"  # serve/backends/llamacpp.py looks for it
RESET = "\n    gf_res_prev->reset();  // tuneloop: a graph built for other adapters must not be reused\n"
# (file under the sdist, text that must occur exactly once, what follows it)
FIXES = [
    ("vendor/llama.cpp/src/llama-context.cpp", "    loras[adapter] = scale;\n", RESET),
    ("vendor/llama.cpp/src/llama-context.cpp", "        loras.erase(pos);\n", RESET),
    ("vendor/llama.cpp/src/llama-context.cpp", "    loras.clear();\n", RESET),
]


def pinned_version() -> str:
    """The llama-cpp-python version constraints.txt pins."""
    text = (ROOT / "constraints.txt").read_text()
    match = re.search(r"^llama[-_.]cpp[-_.]python==(\S+)$", text, re.MULTILINE | re.IGNORECASE)
    if match is None:
        sys.exit("constraints.txt pins no llama-cpp-python version")
    return match.group(1)


def apply_fixes(source: Path, version: str) -> None:
    """Insert the graph reset after each adapter-set change and label the version; fail on any drift."""
    for name, anchor, addition in FIXES:
        path = source / name
        text = path.read_text()
        if text.count(anchor) != 1:
            sys.exit(f"{name}: expected {anchor.strip()!r} once; is the pin still {version}?")
        path.write_text(text.replace(anchor, anchor + addition))
    init = source / "llama_cpp" / "__init__.py"
    line = f'__version__ = "{version}"'
    if line not in init.read_text():
        sys.exit(f"llama_cpp/__init__.py does not say {line}")
    init.write_text(init.read_text().replace(line, f'__version__ = "{version}+{LABEL}"'))


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: build_llama_cpp.py WHEEL_DIR")
    wheels, version = Path(sys.argv[1]), pinned_version()
    pip = [sys.executable, "-m", "pip", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [*pip, "download", "--no-deps", "--no-binary", ":all:", "-d", str(work),
             f"llama-cpp-python=={version}"],
            check=True,
        )  # fmt: skip
        (archive,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(archive) as tar:
            # The "data" filter refuses links and paths out of `work`; Pythons before 3.11.4 lack it.
            tar.extractall(work, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        source = work / f"llama_cpp_python-{version}"
        apply_fixes(source, version)
        subprocess.run(
            [*pip, "wheel", "--no-cache-dir", "--no-deps", "-w", str(wheels), str(source)], check=True
        )


if __name__ == "__main__":
    main()
