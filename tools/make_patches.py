"""Write patches/paramiko-X.Y.Z.patch from this package's own source.

Each patch makes a paramiko release carry the ProxyCommand fix itself:

- ``paramiko/_proxyfix/``: the package's core modules (everything but the
  public ``__init__``, the Celery wiring and the ``cli`` tools), copied byte
  for byte after a header line, so the patched paramiko runs the same code as
  the package;
- ``paramiko/proxy.py``: upstream's file, unchanged, plus a tail that
  re-exports the fix's exceptions and installs the fix, which replaces
  ProxyCommand's methods and hooks ``Packetizer._check_keepalive``, exactly
  as ``import paramiko_proxyfix`` does. Where the fix cannot run (not POSIX,
  no fcntl, no select.poll, no subprocess) or with
  ``PARAMIKO_PROXYFIX_DISABLE=1``, upstream's ProxyCommand stays as it is;
- the packaging file: ``paramiko._proxyfix`` listed as a package.

Pristine sources come from the release's sdist on PyPI (``pip download``,
cached). The patches are a function of this package's source and those
sdists only, so ``tests/test_patches.py`` regenerates them and compares.

    python tools/make_patches.py            # rewrite patches/
    python tools/make_patches.py --check    # exit 1 if patches/ is stale
"""

from __future__ import annotations

import argparse
import ast
import difflib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "paramiko_proxyfix"
PATCHES = REPO / "patches"
#: The release lines the patches are made for (the newest of each line).
VERSIONS = ("2.12.0", "3.5.1", "4.0.0", "5.1.0")
#: Where the native code goes inside paramiko.
SUBPACKAGE = "_proxyfix"
#: The modules the fix starts from; what they import comes along.
ROOTS = ("_patch",)
#: The modules that make no sense inside paramiko: the public face of the
#: package (which finds the built-in copy), its Celery wiring and its tools.
EXCLUDED = ("__init__", "__main__", "celery", "cli")
_PACKAGE_LINES = ('packages=["paramiko"]', 'packages = ["paramiko"]')


class PatchError(Exception):
    """The package's source or a sdist is not shaped as this script expects."""


def sdist_cache() -> Path:
    default = Path.home() / ".cache" / "paramiko-proxyfix" / "sdists"
    return Path(os.environ.get("PARAMIKO_PROXYFIX_SDISTS", default))


def fetch_sdist(version: str, cache: Path | None = None) -> Path:
    """The release's sdist, downloaded with pip into the cache once."""
    cache = cache or sdist_cache()
    path = cache / f"paramiko-{version}.tar.gz"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--no-binary", ":all:", "--dest", str(cache), f"paramiko=={version}",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not path.exists():
        raise PatchError(
            f"could not download the sdist of paramiko {version} with pip:\n"
            + (done.stderr.strip() or done.stdout.strip())
        )
    return path


def read_sdist(
    version: str, names: list[str], cache: Path | None = None
) -> dict[str, str]:
    """Files from the sdist by their path in the source tree."""
    out = {}
    with tarfile.open(fetch_sdist(version, cache)) as tar:
        for name in names:
            member = tar.extractfile(f"paramiko-{version}/{name}")
            if member is None:
                raise PatchError(f"paramiko {version}'s sdist has no {name}")
            out[name] = member.read().decode("utf-8")
    return out


# -- the package's side -------------------------------------------------------


def package_version() -> str:
    tree = ast.parse((PACKAGE / "_version.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise PatchError("paramiko_proxyfix/_version.py has no __version__")


def _relative_imports(source: str, name: str) -> set[str]:
    """Sibling modules ``name`` imports (``from . import x``, ``from .x import``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bad = [a.name for a in node.names if a.name.startswith("paramiko_proxyfix")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            bad = [module] if module.startswith("paramiko_proxyfix") else []
            if node.level > 1:
                bad.append("." * node.level + module)
            elif node.level == 1:
                found.update([module] if module else [a.name for a in node.names])
        else:
            continue
        if bad:
            raise PatchError(
                f"{name}.py imports {bad[0]}: inside paramiko the package must be "
                "reached through relative imports of its own modules"
            )
    return found


def native_modules() -> dict[str, str]:
    """Module name -> source, for ROOTS and every module they import."""
    sources: dict[str, str] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in sources:
            continue
        if name in EXCLUDED:
            raise PatchError(f"the fix imports {name}, which stays outside paramiko")
        path = PACKAGE / f"{name}.py"
        if not path.exists():
            raise PatchError(f"paramiko_proxyfix/{name}.py does not exist")
        sources[name] = path.read_text()
        todo.extend(_relative_imports(sources[name], name))
    return dict(sorted(sources.items()))


def _exported_exceptions(errors_source: str) -> list[str]:
    tree = ast.parse(errors_source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return sorted(ast.literal_eval(node.value))
    raise PatchError("errors.py has no __all__")


# -- the generated files --------------------------------------------------------


def _header(name: str) -> str:
    return (
        f"# Generated from paramiko_proxyfix/{name}.py (paramiko-proxyfix "
        f"{package_version()}) by tools/make_patches.py: edit that, not this.\n"
    )


def proxy_module(upstream: str, modules: dict[str, str]) -> str:
    """paramiko/proxy.py: upstream's file, and a tail that installs the fix."""
    if "class ProxyCommand(" not in upstream:
        raise PatchError("proxy.py has no class ProxyCommand")
    exceptions = _exported_exceptions(modules["errors"])
    names = [e for e in exceptions if e.startswith("ProxyCommand")]
    tail = [
        "\n",
        "\n",
        f"# paramiko-proxyfix {package_version()}: ProxyCommand reads its proxy "
        "with poll(), ends the\n",
        "# connection with the proxy's exit status and stderr when the proxy "
        "dies, and\n",
        "# terminates and reaps it on close(). The fix is in "
        f"paramiko/{SUBPACKAGE}/, generated by\n",
        "# paramiko-proxyfix's tools/make_patches.py. Where it cannot run, "
        "upstream's\n",
        "# ProxyCommand above stays as it is.\n",
        "try:\n",
        f"    from paramiko.{SUBPACKAGE}.errors import (  # noqa: F401\n",
        *(f"        {name},\n" for name in names),
        "    )\n",
        f"    from paramiko.{SUBPACKAGE}._patch import install as _install_fix\n",
        "except ImportError:  # a platform the fix was not written for\n",
        "    pass\n",
        "else:\n",
        "    _install_fix(warn=False)\n",
    ]
    return upstream + "".join(tail)


def packaging_file(upstream: str, name: str) -> str:
    hits = [p for p in _PACKAGE_LINES if p in upstream]
    if len(hits) != 1 or upstream.count(hits[0]) != 1:
        raise PatchError(f"{name}: cannot find the one `packages` list to extend")
    old = hits[0]
    new = old.replace('["paramiko"]', f'["paramiko", "paramiko.{SUBPACKAGE}"]')
    return upstream.replace(old, new)


def _diff(name: str, old: str | None, new: str) -> str:
    for text in (old, new):
        if text is not None and text and not text.endswith("\n"):
            raise PatchError(f"{name} does not end with a newline")
    a = old.splitlines(keepends=True) if old is not None else []
    return "".join(
        difflib.unified_diff(
            a,
            new.splitlines(keepends=True),
            fromfile="/dev/null" if old is None else f"a/{name}",
            tofile=f"b/{name}",
            n=3,
        )
    )


def make_patch(version: str, cache: Path | None = None) -> str:
    """The whole patch for one paramiko release, as text."""
    packaging = "setup.py" if version.split(".")[0] in ("2", "3") else "pyproject.toml"
    upstream = read_sdist(version, ["paramiko/proxy.py", packaging], cache)
    modules = native_modules()
    if "install" not in modules["_patch"]:
        raise PatchError("_patch.py no longer defines install")
    parts = [
        f"paramiko-proxyfix {package_version()} for paramiko {version}: the "
        "ProxyCommand fix, built into paramiko.\n",
        "Generated by tools/make_patches.py from the package's source; do not "
        "edit. Apply with\n",
        "`patch -p1` at the root of the release's source distribution.\n",
        "\n",
        _diff(
            packaging,
            upstream[packaging],
            packaging_file(upstream[packaging], packaging),
        ),
        _diff(f"paramiko/{SUBPACKAGE}/__init__.py", None, _init_module()),
    ]
    for name, source in modules.items():
        parts.append(
            _diff(f"paramiko/{SUBPACKAGE}/{name}.py", None, _header(name) + source)
        )
    parts.append(
        _diff("paramiko/proxy.py", upstream["paramiko/proxy.py"],
              proxy_module(upstream["paramiko/proxy.py"], modules))
    )  # fmt: skip
    return "".join(parts)


def _init_module() -> str:
    return (
        f'"""The ProxyCommand fix of paramiko-proxyfix {package_version()}.\n'
        "\n"
        "Generated by tools/make_patches.py from that package's modules, kept\n"
        'byte for byte below a header line so the two cannot drift apart.\n"""\n'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("versions", nargs="*", default=list(VERSIONS))
    args = parser.parse_args(argv)
    stale = []
    try:
        for version in args.versions:
            text = make_patch(version)
            path = PATCHES / f"paramiko-{version}.patch"
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(path.name)
                continue
            PATCHES.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    except PatchError as exc:
        print(f"make_patches: {exc}", file=sys.stderr)
        return 2
    if stale:
        print(
            "stale: " + ", ".join(stale) + "; run python tools/make_patches.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
