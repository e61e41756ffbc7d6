"""Write patches/paramiko-X.Y.Z.patch from this package's own source.

Each patch makes a paramiko release fix its ProxyCommand natively:

- ``paramiko/_proxyfix/``: the package's modules that the fix needs (proxy.py
  and readloop.py, and what they import), copied byte for byte after a
  header line, so the patched paramiko runs the same code as the package;
- ``paramiko/proxy.py``: ``ProxyCommand`` with the methods of
  ``FixedProxyCommand`` (fixed.py) as its own, and the new exceptions
  re-exported;
- ``paramiko/packet.py``: the read-loop hook on ``Packetizer._check_keepalive``;
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
ROOTS = ("proxy", "readloop")
#: The modules that make no sense inside paramiko: patching it from outside,
#: and the methods that become ProxyCommand's own.
EXCLUDED = ("__init__", "_patch", "fixed")
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
            raise PatchError(f"the fix imports {name}.py, which patches from outside")
        path = PACKAGE / f"{name}.py"
        if not path.exists():
            raise PatchError(f"paramiko_proxyfix/{name}.py does not exist")
        sources[name] = path.read_text()
        todo.extend(_relative_imports(sources[name], name))
    return dict(sorted(sources.items()))


def _module_bindings(tree: ast.Module, module: str) -> dict[str, str]:
    """Top-level name -> the import line that brings it into another module."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname is None and "." not in a.name:
                    out[a.name] = f"import {a.name}"
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            source = node.module or ""
            if node.level:
                source = f"paramiko.{SUBPACKAGE}" + (f".{source}" if source else "")
            for a in node.names:
                out[a.asname or a.name] = f"from {source} import {a.name}"
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = f"from paramiko.{SUBPACKAGE}.{module} import {node.name}"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    out[t.id] = f"from paramiko.{SUBPACKAGE}.{module} import {t.id}"
    return out


def _import_block(lines: set[str]) -> list[str]:
    """Import lines grouped as isort would: stdlib first, then paramiko."""
    plain = sorted(line for line in lines if line.startswith("import "))
    froms: dict[str, list[str]] = {}
    for line in lines - set(plain):
        source, name = line[len("from ") :].split(" import ")
        froms.setdefault(source, []).append(name)
    stdlib = plain + [
        f"from {s} import {', '.join(sorted(n))}"
        for s, n in sorted(froms.items())
        if not s.startswith("paramiko")
    ]
    ours = [
        f"from {s} import {', '.join(sorted(n, key=lambda x: (not x.isupper(), x)))}"
        for s, n in sorted(froms.items())
        if s.startswith("paramiko")
    ]
    return [*stdlib, *([""] if stdlib and ours else []), *ours]


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise PatchError(f"no class {name}")


def _docstring_end(cls: ast.ClassDef) -> int:
    first = cls.body[0]
    is_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    return first.end_lineno or first.lineno if is_doc else cls.lineno


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


def _license_header(source: str) -> list[str]:
    lines = source.splitlines(keepends=True)
    n = 0
    while n < len(lines) and (lines[n].startswith("#") or not lines[n].strip()):
        n += 1
    return lines[:n]


def proxy_module(upstream: str, modules: dict[str, str]) -> str:
    """paramiko/proxy.py: upstream's header and docstring, our methods."""
    ours = (PACKAGE / "fixed.py").read_text()
    tree = ast.parse(ours)
    methods = _class(tree, "FixedProxyCommand")
    our_lines = ours.splitlines(keepends=True)
    body = our_lines[_docstring_end(methods) : methods.end_lineno]
    bindings = _module_bindings(tree, "fixed")
    used = {
        n.id
        for stmt in methods.body
        for n in ast.walk(stmt)
        if isinstance(n, ast.Name) and n.id in bindings
    }
    exceptions = _exported_exceptions(modules["errors"])
    imports = {bindings[n] for n in used}
    imports.add("from paramiko.util import ClosingContextManager")
    theirs = ast.parse(upstream)
    cls = _class(theirs, "ProxyCommand")
    up_lines = upstream.splitlines(keepends=True)
    docstring = up_lines[cls.lineno : _docstring_end(cls)]
    reexport = [f"    {e},\n" for e in exceptions]
    text = [
        *_license_header(upstream),
        f"# paramiko-proxyfix {package_version()}: ProxyCommand reads its proxy "
        "with poll(), ends the\n",
        "# connection with the proxy's exit status and stderr when the proxy "
        "dies, and\n",
        "# terminates and reaps it on close(). The machinery is in "
        f"paramiko/{SUBPACKAGE}/,\n",
        "# generated by paramiko-proxyfix's tools/make_patches.py.\n",
        "\n",
        "from __future__ import annotations\n",
        "\n",
        *(line + "\n" for line in _import_block(imports)),
        "\n",
        "# The exceptions this ProxyCommand raises, importable from here.\n",
        f"from paramiko.{SUBPACKAGE}.errors import (  # noqa: F401\n",
        *reexport,
        ")\n",
        "\n",
        "\n",
        f"class {cls.name}(ClosingContextManager):\n",
        *docstring,
        *body,
    ]
    return "".join(text)


def packet_module(upstream: str) -> str:
    """paramiko/packet.py: the read-loop hook, applied where Packetizer is."""
    tree = ast.parse(upstream)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    if not imports or "_check_keepalive" not in {
        f.name
        for f in _class(tree, "Packetizer").body
        if isinstance(f, ast.FunctionDef)
    }:
        raise PatchError("packet.py has no imports or no Packetizer._check_keepalive")
    lines = upstream.splitlines(keepends=True)
    cut = imports[-1].end_lineno or imports[-1].lineno
    hook = (
        "\n\n"
        "# paramiko-proxyfix: end the read loop once a ProxyCommand's process has\n"
        "# exited with nothing left to read, even while a process it started keeps\n"
        "# the pipe open.\n"
        "Packetizer._check_keepalive = make_check_keepalive(\n"
        "    Packetizer._check_keepalive\n"
        ")\n"
    )
    new_import = f"from paramiko.{SUBPACKAGE}.readloop import make_check_keepalive\n"
    return "".join([*lines[:cut], new_import, *lines[cut:]]) + hook


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
    upstream = read_sdist(
        version, ["paramiko/proxy.py", "paramiko/packet.py", packaging], cache
    )
    modules = native_modules()
    if "readloop" not in modules or "make_check_keepalive" not in modules["readloop"]:
        raise PatchError("readloop.py no longer defines make_check_keepalive")
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
        _diff("paramiko/packet.py", upstream["paramiko/packet.py"],
              packet_module(upstream["paramiko/packet.py"]))
    )  # fmt: skip
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
