"""Build a wheel of a paramiko release with its patch from patches/ applied.

    python tools/build_patched_wheel.py 5.1.0 [--out dist/] [--patch FILE]
    python tools/build_patched_wheel.py 5.1.0 --tree DIR   # patch DIR, no wheel

Downloads the release's sdist with pip (cached, see make_patches.py), checks
that the patch applies cleanly (``patch --dry-run``) before touching
anything, applies it, checks that the tree now carries the fix (paramiko's
own ``ProxyCommandExited``), and builds the wheel with ``pip wheel``. The
patch edits paramiko's own files only (``proxy.py``, ``ssh_exception.py``,
``__init__.py``, ``tests/test_proxy.py``), so the wheel holds exactly the
files of the release's own wheel. A patch that does not apply is reported
with patch's own words and exit status 1.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from make_patches import PATCHES, PatchError, fetch_sdist


class BuildError(Exception):
    pass


def apply_patch(tree: Path, patch: Path) -> None:
    """Apply ``patch`` at the root of ``tree``, or change nothing and raise."""
    if not patch.is_file():
        raise BuildError(f"no such patch: {patch}")
    patch = patch.resolve()  # patch -d reads -i relative to the tree
    if shutil.which("patch") is None:
        raise BuildError("the `patch` program is not installed (apt-get install patch)")
    base = ["patch", "-p1", "--batch", "--forward", "-d", str(tree), "-i", str(patch)]
    dry = subprocess.run([*base, "--dry-run"], capture_output=True, text=True)
    if dry.returncode != 0:
        words = (dry.stdout + dry.stderr).strip()
        raise BuildError(f"{patch.name} does not apply to {tree}:\n{words}")
    subprocess.run([*base, "--quiet"], check=True)


def check_fixed(tree: Path) -> None:
    """Whether ``tree`` is a paramiko that carries the fix in its own files."""
    wanted = {
        "paramiko/ssh_exception.py": "class ProxyCommandExited(",
        "paramiko/proxy.py": "ProxyCommandExited",
        "paramiko/__init__.py": "ProxyCommandExited",
    }
    for name, text in wanted.items():
        path = tree / name
        if not path.is_file() or text not in path.read_text():
            raise BuildError(f"{tree} does not carry the fix: {name} lacks {text}")


def unpack(version: str, into: Path) -> Path:
    with tarfile.open(fetch_sdist(version)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # before 3.9.17: no filters
            tar.extractall(into)
    return into / f"paramiko-{version}"


def build(version: str, out: Path, patch: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        tree = unpack(version, Path(tmp))
        apply_patch(tree, patch)
        check_fixed(tree)
        out.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--wheel-dir", str(out), str(tree)],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise BuildError(f"pip wheel failed:\n{done.stderr.strip()}")
    wheels = sorted(out.glob(f"paramiko-{version}-*.whl"))
    if not wheels:
        raise BuildError(f"pip wheel wrote no paramiko-{version} wheel into {out}")
    return wheels[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", help="a paramiko release, e.g. 5.1.0")
    parser.add_argument("--out", type=Path, default=Path("dist"))
    parser.add_argument(
        "--patch", type=Path, help="default: patches/paramiko-VERSION.patch"
    )
    parser.add_argument(
        "--tree", type=Path, help="patch this source tree, build nothing"
    )
    args = parser.parse_args(argv)
    patch = args.patch or PATCHES / f"paramiko-{args.version}.patch"
    try:
        if args.tree is not None:
            apply_patch(args.tree, patch)
            check_fixed(args.tree)
            print(f"patched {args.tree}")
            return 0
        wheel = build(args.version, args.out, patch)
    except (BuildError, PatchError) as exc:
        print(f"build_patched_wheel: {exc}", file=sys.stderr)
        return 1
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    print(f"built {wheel}")
    print("pin it in requirements.txt with:")
    print(f"  paramiko @ {wheel.resolve().as_uri()} --hash=sha256:{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
