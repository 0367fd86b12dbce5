"""``durably site build``: a static browser site of the user's own jobs, from a configuration.

The configuration is the ``[tool.durably.site]`` table of the project's ``pyproject.toml``
(docs/site.md describes every key). :func:`load_config` reads and checks it, with a
:class:`SiteConfigError` naming the key for anything wrong; :func:`build` prepares what the
site is made of (the job modules, packages zipped, the requirements' wheels resolved with pip
for the Pyodide the site ships) and hands it to the site kit's ``scripts/build.mjs`` (Node),
which bundles the JavaScript, vendors Pyodide and sqlite-wasm, writes ``manifest.json``, the
memory snapshot and the service worker.

The site kit is the JavaScript half of the build: ``worker.js``, ``index.html``, ``web/``,
``scripts/*.mjs``, ``package.json`` and its lock. In a checkout of the durably repository (an
editable install) it is the repository itself. Node (>= 20) and npm are the prerequisites of a
site build; nothing here is needed to run jobs on CPython.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ValidationError
from .settings import PAGE_NAMES, Settings

#: The keys of ``[tool.durably.site]``.
KEYS = ("jobs", "requirements", "find_links", "page", "assets", "options", "out")
#: The oldest Node the site build runs on (esbuild, workbox-build, the snapshot's Pyodide).
MIN_NODE = 20
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A zip stores no date before 1980: every file of a zipped job package gets this one, so the
# same sources give the same bytes (and the same snapshot key).
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Files of a job package that are never shipped.
_SKIP_PARTS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache"}
# The site's own files at its root: a user's asset of the same name would replace one.
_RESERVED = {
    "index.html",
    "page.js",
    "client.js",
    "worker.js",
    "sw.js",
    "manifest.json",
    "test.html",
    "test_page.js",
    "vendor",
    "wheels",
    "jobs",
    "snapshots",
    # esbuild's source maps of the site's scripts
    "page.js.map",
    "client.js.map",
    "worker.js.map",
    "test_page.js.map",
}
# Modules the worker imports itself: a job module of the same name would shadow one (or be
# shadowed by it, if already imported), and its jobs would never register.
_WORKER_MODULES = {
    "durably",
    "durably_bridge",
    "js",
    "pyodide",
    "pyodide_js",
    "_pyodide",
    "micropip",
    "cronsim",
    "tzdata",
}


class SiteConfigError(ValidationError):
    """The site configuration (or what it names) is wrong; the message names the key."""


class SiteBuildError(Exception):
    """The site could not be built (a missing prerequisite, a requirement without a wheel)."""


@dataclass
class JobSource:
    """One job module to ship: a ``.py`` file, or a package folder (shipped zipped)."""

    module: str
    path: Path
    package: bool


@dataclass
class SiteConfig:
    """``[tool.durably.site]``, checked, with its paths resolved against the config's folder."""

    config_file: Path
    jobs: list[JobSource]
    requirements: list[str] = field(default_factory=list)
    find_links: list[Path] = field(default_factory=list)
    page: str | Path = "demo"
    assets: list[Path] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    out: Path = Path("site")


def load_config(config_file: str | os.PathLike[str]) -> SiteConfig:
    """Read ``[tool.durably.site]`` from ``config_file`` and check every key."""
    path = Path(config_file).resolve()
    if not path.is_file():
        raise SiteConfigError(f"{config_file}: no such file; run from your project's folder or pass --config FILE")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SiteConfigError(f"{path}: not valid TOML: {exc}") from None
    table: Any = data
    for key in ("tool", "durably", "site"):
        if not isinstance(table, dict):
            raise SiteConfigError(f"{path}: tool.durably.site must be a table, and so must tool and tool.durably")
        table = table.get(key)
        if table is None:
            break
    if table is None:
        raise SiteConfigError(
            f"{path} has no [tool.durably.site] table; add one naming your job modules, e.g.\n"
            '[tool.durably.site]\njobs = ["my_jobs.py"]'
        )
    if not isinstance(table, dict):
        raise SiteConfigError(f"{path}: tool.durably.site must be a table")
    return check_config(table, path)


def check_config(table: dict[str, Any], config_file: Path) -> SiteConfig:
    """Check a ``[tool.durably.site]`` table; relative paths are relative to ``config_file``'s folder."""
    where = config_file.parent
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise SiteConfigError(
            f"[tool.durably.site] has unknown key(s) {', '.join(map(repr, unknown))}; the keys are: {', '.join(KEYS)}"
        )
    jobs_value = table.get("jobs")
    if jobs_value is None:
        raise SiteConfigError('[tool.durably.site] jobs is missing: list your job modules, e.g. jobs = ["my_jobs.py"]')
    jobs = [_job_source(item, where) for item in _strings(table, "jobs")]
    if not jobs:
        raise SiteConfigError("[tool.durably.site] jobs is empty: list at least one job module or package")
    seen: dict[str, Path] = {}
    for source in jobs:
        if source.module in _WORKER_MODULES or source.module in sys.stdlib_module_names:
            stdlib = source.module in sys.stdlib_module_names
            raise SiteConfigError(
                f"[tool.durably.site] jobs: {source.path} would be the module {source.module!r}, which is "
                f"{'a module of the standard library' if stdlib else 'a module the worker uses itself'}; "
                "Python would import that one instead (or yours instead of it): rename your job module"
            )
        if source.module in seen:
            raise SiteConfigError(
                f"[tool.durably.site] jobs: two job modules are named {source.module!r} "
                f"({seen[source.module]} and {source.path}); Python would import only one"
            )
        seen[source.module] = source.path
    requirements = _strings(table, "requirements")
    for req in requirements:
        # One requirement per string: pip must never read an option out of one.
        if not req.strip() or req.strip().startswith("-") or re.search(r"\s-|[\r\n]", req):
            raise SiteConfigError(
                f"[tool.durably.site] requirements: {req!r} is not a requirement; give PEP 508 strings "
                'such as "humanize==4.17.0" (pip options are not accepted here)'
            )
        if req.strip().startswith((".", "/", "~")) or re.match(r"[A-Za-z]:[\\/]", req.strip()):
            raise SiteConfigError(
                f"[tool.durably.site] requirements: {req!r} is a path; only wheels go to the browser: build one "
                "(pip wheel --no-deps -w wheels PATH) and list that folder in find_links"
            )
        if ";" in req.split("@", 1)[0] or re.search(r";\s*[A-Za-z_]", req):
            raise SiteConfigError(
                f"[tool.durably.site] requirements: {req!r} has an environment marker; pip would evaluate it for "
                "this machine, not for the browser's Pyodide: list the requirement without it"
            )
    find_links = []
    for item in _strings(table, "find_links"):
        folder = (where / item).resolve()
        if not folder.is_dir():
            raise SiteConfigError(f"[tool.durably.site] find_links: {item!r} is not a folder ({folder})")
        find_links.append(folder)
    page_value = table.get("page", "demo")
    if not isinstance(page_value, str) or not page_value:
        raise SiteConfigError(
            f'[tool.durably.site] page must be "demo" or the path of your HTML file, got {page_value!r}'
        )
    page: str | Path = page_value
    if page_value != "demo":
        page = (where / page_value).resolve()
        if not page.is_file() or page.suffix.lower() not in (".html", ".htm"):
            raise SiteConfigError(
                f'[tool.durably.site] page: {page_value!r} is not an HTML file ({page}); give "demo" or your own page'
            )
    assets: list[Path] = []
    for item in _strings(table, "assets"):
        # Not resolved: a symlink keeps its own name in the site (the build copies its target).
        asset = Path(os.path.abspath(where / item))
        if not asset.exists():
            raise SiteConfigError(f"[tool.durably.site] assets: {item!r} does not exist ({asset})")
        if asset.name.lower() in _RESERVED or asset.name in ("", ".", ".."):
            raise SiteConfigError(
                f"[tool.durably.site] assets: {item!r} would replace the site's own {asset.name or asset}; rename it "
                f"(reserved names: {', '.join(sorted(_RESERVED))})"
            )
        same = [a for a in assets if a.name.lower() == asset.name.lower()]
        if same:
            raise SiteConfigError(
                f"[tool.durably.site] assets: {same[0]} and {asset} would both be {asset.name} at the site's root; "
                "rename one, or list the folder that holds them"
            )
        assets.append(asset)
    if assets and page == "demo":
        raise SiteConfigError("[tool.durably.site] assets are for your own page: set page to your HTML file")
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise SiteConfigError(f"[tool.durably.site] options must be a table, got {options!r}")
    check_options(options)
    out_value = table.get("out", "site")
    if not isinstance(out_value, str) or not out_value:
        raise SiteConfigError(f"[tool.durably.site] out must be a folder name, got {out_value!r}")
    return SiteConfig(
        config_file=config_file,
        jobs=jobs,
        requirements=requirements,
        find_links=find_links,
        page=page,
        assets=assets,
        options=dict(options),
        out=(where / out_value).resolve(),
    )


def check_options(options: dict[str, Any]) -> None:
    """The page's default options (camelCase), checked by the same table as Python's."""
    unknown = sorted(set(options) - set(PAGE_NAMES))
    if unknown:
        raise SiteConfigError(
            f"[tool.durably.site] options: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"the options are: {', '.join(PAGE_NAMES)}"
        )
    try:
        Settings.check(**{PAGE_NAMES[name]: value for name, value in options.items()})
    except ValidationError as exc:
        raise SiteConfigError(f"[tool.durably.site] options: {exc}") from None


def _strings(table: dict[str, Any], key: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SiteConfigError(f"[tool.durably.site] {key} must be a list of strings, got {value!r}")
    return list(value)


def _job_source(item: str, where: Path) -> JobSource:
    """A ``jobs`` entry: a .py file, a package folder, or an importable top-level package."""
    # Not resolved: a symlink is the module its own name says (the build copies its target).
    candidate = Path(os.path.abspath(where / item))
    if item.endswith(".py"):
        if not candidate.is_file():
            raise SiteConfigError(f"[tool.durably.site] jobs: {item!r}: no such file ({candidate})")
        if not _IDENTIFIER.fullmatch(candidate.stem):
            raise SiteConfigError(
                f"[tool.durably.site] jobs: {item!r}: the file name must be a Python module name (letters, digits, _)"
            )
        return JobSource(candidate.stem, candidate, package=False)
    if candidate.is_dir():
        if not (candidate / "__init__.py").is_file():
            raise SiteConfigError(f"[tool.durably.site] jobs: {item!r} is a folder without __init__.py, not a package")
        if not _IDENTIFIER.fullmatch(candidate.name):
            raise SiteConfigError(f"[tool.durably.site] jobs: {item!r}: the folder name must be a Python package name")
        return JobSource(candidate.name, candidate, package=True)
    if _IDENTIFIER.fullmatch(item):
        found = _find_importable(item, where)
        if found is not None:
            return found
    raise SiteConfigError(
        f"[tool.durably.site] jobs: {item!r} is not a .py file, a package folder or an importable top-level "
        f"module (looked in {where} and on sys.path)"
    )


def _find_importable(name: str, where: Path) -> JobSource | None:
    for folder in [where, where / "src", *map(Path, sys.path)]:
        package = folder / name / "__init__.py"
        if package.is_file():
            return JobSource(name, package.parent.resolve(), package=True)
        module = folder / f"{name}.py"
        if module.is_file():
            return JobSource(name, module.resolve(), package=False)
    return None


def zip_package(source: JobSource, dest: Path) -> Path:
    """A job package as a zip of its Python files (fixed dates: the same sources, the same bytes)."""
    out = dest / f"{source.module}.zip"
    files = sorted(
        p
        for p in source.path.rglob("*")
        if p.is_file() and not (_SKIP_PARTS & set(p.relative_to(source.path).parts)) and p.suffix != ".pyc"
    )
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            info = zipfile.ZipInfo(f"{source.module}/{file.relative_to(source.path).as_posix()}", _ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, file.read_bytes())
    return out


# -- the site kit ------------------------------------------------------------------------------


def find_kit() -> Path:
    """The site kit's folder: this repository in a checkout, else the copy inside the package
    (made ready in the cache folder by :func:`ready_kit`)."""
    package = Path(__file__).resolve().parent
    checkout = package.parents[1]
    if (checkout / "scripts" / "build.mjs").is_file() and (checkout / "web" / "client.js").is_file():
        return checkout
    bundled = package / "site_kit"
    if (bundled / "scripts" / "build.mjs").is_file():
        return bundled
    raise SiteBuildError(
        "this durably has no site kit (the JavaScript half of the site build): install durably from a wheel "
        "built with it (pip install durably) or work in a checkout of the repository"
    )


def kit_cache_dir() -> Path:
    """Where an installed durably's site kit gets its node_modules: $DURABLY_SITE_KIT_CACHE,
    else ~/.cache/durably/site-kit."""
    base = os.environ.get("DURABLY_SITE_KIT_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "durably" / "site-kit"


def check_node() -> str:
    """The node executable, once it is new enough; a SiteBuildError saying what to install otherwise."""
    node = shutil.which("node")
    if node is None:
        raise SiteBuildError(
            f"building a site needs Node.js >= {MIN_NODE} and npm on PATH (node was not found); "
            "install them (e.g. apt-get install nodejs npm, or from nodejs.org) and run the build again"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    match = re.match(r"v(\d+)", version)
    if not match or int(match.group(1)) < MIN_NODE:
        raise SiteBuildError(f"building a site needs Node.js >= {MIN_NODE}; {node} is {version or 'unknown'}")
    return node


def ready_kit(kit: Path, log: Any = print) -> Path:
    """The kit's folder with its node_modules installed. A checkout uses its own (run ``npm ci``
    there); a packaged kit is copied once into the cache folder and ``npm ci`` runs there."""
    from . import __version__

    if not kit.name == "site_kit":
        if not (kit / "node_modules" / "esbuild").exists():
            _npm_ci(kit, log)
        return kit
    digest = hashlib.sha256((kit / "package-lock.json").read_bytes()).hexdigest()[:12]
    target = kit_cache_dir() / f"{__version__}-{digest}"
    stamp = target / ".ready"
    if not stamp.exists() or stamp.read_text() != _kit_fingerprint(kit):
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(kit, target, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
        _npm_ci(target, log)
        stamp.write_text(_kit_fingerprint(kit))
    return target


def _kit_fingerprint(kit: Path) -> str:
    h = hashlib.sha256()
    for file in sorted(p for p in kit.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(file.relative_to(kit).as_posix().encode() + b"\0" + file.read_bytes())
    return h.hexdigest()


def _npm_ci(folder: Path, log: Any) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SiteBuildError(f"building a site needs npm (with Node.js >= {MIN_NODE}); npm was not found on PATH")
    log(f"installing the site kit's packages in {folder} (npm ci, once)")
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True)
    if result.returncode != 0:
        raise SiteBuildError(f"npm ci in {folder} failed:\n{result.stdout}\n{result.stderr}")


# -- requirements ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """The Pyodide a site ships, as pip sees it: its Python version and platform tag."""

    python: str  # "3.14"
    tags: tuple[str, ...]  # ("pyemscripten_2026_0_wasm32", ...)
    lock_packages: dict[str, Any]

    @property
    def tag(self) -> str:
        return self.tags[0]


def pyodide_platform(kit: Path) -> Platform:
    """Read the Python version and platform tag of the kit's Pyodide from pyodide-lock.json's ``info``."""
    lock_file = kit / "node_modules" / "pyodide" / "pyodide-lock.json"
    try:
        lock = json.loads(lock_file.read_text(encoding="utf-8"))
        info = lock["info"]
        python = ".".join(str(info["python"]).split(".")[:2])
        abi, arch = info["abi_version"], info["arch"]
    except (OSError, ValueError, KeyError) as exc:
        raise SiteBuildError(f"cannot read Pyodide's platform from {lock_file} ({exc}): run npm ci in {kit}") from None
    return Platform(python, (f"pyemscripten_{abi}_{arch}", f"pyodide_{abi}_{arch}"), lock.get("packages", {}))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_requirements(
    requirements: list[str],
    find_links: list[Path],
    platform: Platform,
    cache: Path,
    log: Any = print,
) -> list[Path]:
    """The wheels of ``requirements`` (and their dependencies) for the site's Pyodide, from pip.

    Resolved offline first (the cache and the find-links folders only), so a rebuild needs no
    network; then with the index. Every wheel is kept in ``cache`` and its SHA-256 recorded
    there when it is first downloaded: a cached wheel whose bytes changed since fails the build.
    """
    if not requirements:
        return []
    cache.mkdir(parents=True, exist_ok=True)
    record_file = cache / "sha256.json"
    record: dict[str, str] = json.loads(record_file.read_text()) if record_file.exists() else {}
    with tempfile.TemporaryDirectory(prefix="durably-requirements-") as tmp:
        dest = Path(tmp)
        base = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--python-version",
            platform.python,
            "--implementation",
            "cp",
            "--abi",
            f"cp{platform.python.replace('.', '')}",
            "--abi",
            "abi3",
            "--abi",
            "none",
            "-d",
            str(dest),
        ]
        for tag in platform.tags:
            base += ["--platform", tag]
        links = ["--find-links", str(cache)]
        for folder in find_links:
            links += ["--find-links", str(folder)]
        offline = subprocess.run(
            [*base, "--no-index", *links, *requirements], capture_output=True, text=True, env=_pip_env()
        )
        if offline.returncode != 0:
            for leftover in dest.iterdir():
                leftover.unlink()
            log(f"resolving {', '.join(requirements)} for {platform.tag} with pip (wheels are kept in {cache})")
            online = subprocess.run([*base, *links, *requirements], capture_output=True, text=True, env=_pip_env())
            if online.returncode != 0:
                raise SiteBuildError(_pip_failure(online.stderr + online.stdout, platform))
        wheels = []
        for file in sorted(dest.iterdir()):
            if file.suffix != ".whl":
                raise SiteBuildError(f"pip gave {file.name}, which is not a wheel; only wheels can go to the browser")
            digest = sha256_file(file)
            cached = cache / file.name
            recorded = record.get(file.name)
            if recorded is not None and recorded != digest:
                raise SiteBuildError(
                    f"{file.name}: the cached wheel changed since it was downloaded (SHA-256 {digest[:12]}..., "
                    f"recorded {recorded[:12]}...); delete {cached} to download it again"
                )
            if recorded is None and cached.exists() and sha256_file(cached) != digest:
                cached.unlink()
            if not cached.exists():
                shutil.copyfile(file, cached)
            record[file.name] = digest
            wheels.append(cached)
    record_file.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return wheels


def _pip_env() -> dict[str, str]:
    # pip's own config may add a find-links folder; keep it, but never let it ask questions.
    return {**os.environ, "PIP_NO_INPUT": "1"}


def _pip_failure(text: str, platform: Platform) -> str:
    # A wheel pip found and discarded (its metadata names another version or package than its
    # file name): say so, rather than that there is no wheel.
    discarded = re.findall(r"^Discarding \S+?([^/\s]+\.whl): (.*)$", text, re.MULTILINE)
    if discarded:
        return "; ".join(f"{name}: pip refused it: {why}" for name, why in discarded[:3]) + (
            "; rebuild the wheel or take the one from its project's release"
        )
    match = re.search(r"No matching distribution found for (\S+)", text)
    if match:
        req = match.group(1)
        name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
        needed = re.search(rf"requirement {re.escape(req)} \(from ([^)]+)\) \(from versions", text)
        message = (
            f"{req}{f' (required by {needed.group(1)})' if needed else ''}: no wheel for {platform.tag} "
            f"(Python {platform.python}) on the index; "
            "provide one with --find-links (or find_links in [tool.durably.site])"
        )
        shipped = platform.lock_packages.get(name.lower().replace("_", "-")) or platform.lock_packages.get(name.lower())
        if shipped:
            message += (
                f"; Pyodide ships it as {shipped.get('file_name')}: put that file from Pyodide's distribution "
                "in a --find-links folder"
            )
        return message
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "pip could not resolve the requirements:\n  " + "\n  ".join(lines[-8:])


def browser_wheel(work: Path) -> Path:
    """The worker's durably wheel, built from this installed package (an installed kit has no
    sources of its own): the package's files without the site kit, fixed file dates."""
    from . import __version__

    package = Path(__file__).resolve().parent
    src = work / "durably-src"
    shutil.copytree(package, src / "py" / "durably", ignore=shutil.ignore_patterns("site_kit", "__pycache__", "*.pyc"))
    (src / "README.md").write_text("durably\n")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68", "wheel"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "durably"\nversion = "{__version__}"\nreadme = "README.md"\n'
        'requires-python = ">=3.11"\ndependencies = ["cronsim>=2.6", "tzdata; sys_platform == \'win32\'"]\n\n'
        '[tool.setuptools]\npackage-dir = { "" = "py" }\n\n'
        '[tool.setuptools.packages.find]\nwhere = ["py"]\ninclude = ["durably*"]\n\n'
        '[tool.setuptools.package-data]\ndurably = ["py.typed"]\n'
    )
    out = work / "durably-wheel"
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "315532800")}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        env=env,
    )
    wheels = list(out.glob("durably-*.whl")) if out.exists() else []
    if result.returncode != 0 or len(wheels) != 1:
        raise SiteBuildError(f"cannot build the worker's durably wheel:\n{result.stdout}\n{result.stderr}")
    return wheels[0]


# -- the build ---------------------------------------------------------------------------------


def check_out(
    site: Path, project: Path, inputs: list[Path] | tuple[Path, ...] = (), copied: list[Path] | tuple[Path, ...] = ()
) -> None:
    """Each build deletes the output folder and writes it anew: refuse one that holds the
    project or one of the build's ``inputs`` (job modules, page, assets, find-links folders),
    one inside a folder the build ships whole (``copied``: a job package would ship the site
    in itself), a file, or an existing folder with files that is not a site this command built."""
    if site == project or site in project.parents:
        raise SiteBuildError(
            f'the output folder {site} holds the project itself; name a folder of its own (out = "site")'
        )
    for item in [*inputs, *copied]:
        if site == item or site in item.parents or (item in copied and item.is_dir() and item in site.parents):
            raise SiteBuildError(
                f"the output folder {site} {'is inside' if item in site.parents else 'holds'} {item}, which the "
                'site is built from, and each build replaces the whole folder: name a folder of its own (out = "site")'
            )
    if site.exists() and not site.is_dir():
        raise SiteBuildError(f'the output folder {site} is a file; name a folder (out = "site")')
    if site.is_dir() and any(site.iterdir()) and not _built_here(site):
        raise SiteBuildError(
            f"the output folder {site} has files but no durably manifest.json, so it is not a site this command "
            "built, and each build replaces the whole folder: empty it or name another one"
        )


def _built_here(site: Path) -> bool:
    """Whether ``site`` has the manifest.json of a site build (not, say, a web app manifest)."""
    try:
        manifest = json.loads((site / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "jobModules" in manifest and "protocol" in manifest


def build(
    config: SiteConfig,
    *,
    out: Path | None = None,
    find_links: list[Path] | None = None,
    test_page: bool = False,
    log: Any = print,
) -> Path:
    """Build the site of ``config`` into ``out`` (default: the config's ``out``); returns it."""
    site = (out or config.out).resolve()
    inputs = [
        *config.find_links,
        *(p.resolve() for p in find_links or []),
        *([config.page] if isinstance(config.page, Path) else []),
    ]
    copied = [*(j.path for j in config.jobs), *config.assets]
    check_out(site, config.config_file.parent, [p.resolve() for p in inputs], [p.resolve() for p in copied])
    node = check_node()
    kit = ready_kit(find_kit(), log)
    links = [*config.find_links, *(p.resolve() for p in find_links or [])]
    for folder in links:
        if not folder.is_dir():
            raise SiteBuildError(f"--find-links {folder}: not a folder")
    platform = pyodide_platform(kit)
    wheels = resolve_requirements(
        config.requirements, links, platform, kit / ".cache" / "requirements" / platform.tag, log
    )
    with tempfile.TemporaryDirectory(prefix="durably-site-") as tmp:
        work = Path(tmp)
        jobs = []
        for source in config.jobs:
            file = zip_package(source, work) if source.package else source.path
            jobs.append({"module": source.module, "file": str(file), "package": source.package})
        plan: dict[str, Any] = {
            "jobs": jobs,
            "wheels": [{"file": str(w)} for w in wheels],
            "requirements": config.requirements,
            "page": config.page if config.page == "demo" else str(config.page),
            "assets": [str(a) for a in config.assets],
            "options": config.options,
        }
        if not (kit / "py" / "durably").is_dir():
            plan["durablyWheel"] = str(browser_wheel(work))
        plan_file = work / "plan.json"
        plan_file.write_text(json.dumps(plan, indent=1))
        command = [node, str(kit / "scripts" / "build.mjs"), "--plan", str(plan_file), "--out", str(site)]
        if test_page:
            command.append("--test-page")
        env = {**os.environ, "PYTHON": sys.executable}
        result = subprocess.run(command, cwd=config.config_file.parent, env=env)
        if result.returncode != 0:
            raise SiteBuildError(f"the site build (node {kit / 'scripts' / 'build.mjs'}) failed; its output is above")
    return site
