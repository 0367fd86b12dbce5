"""The site kit goes into the wheel: ``durably site build`` (py/durably/site.py) needs the
JavaScript half of the site build, which lives at the top of this repository (worker.js,
index.html, web/, scripts/*.mjs, package.json and its lock). setuptools only packs files that
sit inside the package, so this build_py step copies them into durably/site_kit/ of the built
package; the repository keeps its layout. Everything else about the package is in
pyproject.toml.

The browser's own durably wheel (scripts/build.mjs builds it from py/ and pyproject.toml,
without this file) never carries the kit: it is ~200 kB the worker has no use for.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: What the kit is made of, relative to the repository's root.
KIT = [
    "worker.js",
    "index.html",
    "web",
    "scripts/build.mjs",
    "scripts/snapshot.mjs",
    "package.json",
    "package-lock.json",
]


class BuildPyWithSiteKit(build_py):
    def run(self) -> None:
        super().run()
        if not (ROOT / "scripts" / "build.mjs").is_file():
            return  # a source tree without the kit (the browser's wheel): nothing to add
        dest = Path(self.build_lib) / "durably" / "site_kit"
        if dest.exists():
            shutil.rmtree(dest)
        for rel in KIT:
            src = ROOT / rel
            if src.is_dir():
                shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)


setup(cmdclass={"build_py": BuildPyWithSiteKit})
