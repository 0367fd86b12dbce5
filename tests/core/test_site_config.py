"""durably site build's configuration and requirements (py/durably/site.py), on CPython: every
bad configuration fails before anything is built, with a message naming the key; a requirement
without a wheel for the site's Pyodide, or a cached wheel whose bytes changed, fails the build
saying which and what to do. The builds themselves are tested in tests/browser/test_site.py."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from durably import cli, site
from durably.site import Platform, SiteBuildError, SiteConfigError, load_config, resolve_requirements

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = Platform(
    "3.14",
    ("pyemscripten_2026_0_wasm32", "pyodide_2026_0_wasm32"),
    {"numpy": {"file_name": "numpy-2.3.4-cp314-cp314-pyemscripten_2026_0_wasm32.whl"}},
)


def project(tmp_path: Path, table: str, files: dict[str, str] | None = None) -> Path:
    for name, text in {"my_jobs.py": "from durably import job\n", **(files or {})}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    config = tmp_path / "pyproject.toml"
    config.write_text(f"[project]\nname = 'x'\n\n[tool.durably.site]\n{table}\n")
    return config


def refused(tmp_path: Path, table: str, files: dict[str, str] | None = None) -> str:
    with pytest.raises(SiteConfigError) as info:
        load_config(project(tmp_path, table, files))
    return str(info.value)


def test_a_full_configuration_is_read_with_paths_relative_to_the_config_file(tmp_path):
    config = load_config(
        project(
            tmp_path,
            'jobs = ["my_jobs.py", "pkg"]\nrequirements = ["humanize==4.17.0"]\nfind_links = ["wheels"]\n'
            'page = "page/index.html"\nassets = ["page/app.js"]\noptions = { pollingInterval = 0.5 }\nout = "public"',
            {"pkg/__init__.py": "", "page/index.html": "<p>hi</p>", "page/app.js": "", "wheels/.keep": ""},
        )
    )
    assert [(j.module, j.package) for j in config.jobs] == [("my_jobs", False), ("pkg", True)]
    assert config.requirements == ["humanize==4.17.0"]
    assert config.find_links == [tmp_path / "wheels"]
    assert config.page == tmp_path / "page" / "index.html"
    assert config.assets == [tmp_path / "page" / "app.js"]
    assert config.options == {"pollingInterval": 0.5}
    assert config.out == tmp_path / "public"


def test_this_repositorys_configuration_is_the_demo():
    config = load_config(ROOT / "pyproject.toml")
    assert [j.module for j in config.jobs] == ["demo_jobs"]
    assert config.page == "demo" and config.out == ROOT / "site"


def test_an_importable_package_name_is_found_and_shipped_as_a_package(tmp_path):
    config = load_config(project(tmp_path, 'jobs = ["app_jobs"]', {"src/app_jobs/__init__.py": ""}))
    assert config.jobs[0].package and config.jobs[0].path == tmp_path / "src" / "app_jobs"


@pytest.mark.parametrize(
    "table, files, expected",
    [
        ('jobs = ["my_jobs.py"]\ncolour = "blue"', None, "unknown key(s) 'colour'; the keys are: jobs, requirements"),
        ("page = 'demo'", None, "[tool.durably.site] jobs is missing"),
        ("jobs = []", None, "[tool.durably.site] jobs is empty"),
        ('jobs = "my_jobs.py"', None, "[tool.durably.site] jobs must be a list of strings"),
        ('jobs = ["missing.py"]', None, "[tool.durably.site] jobs: 'missing.py': no such file"),
        ('jobs = ["my-jobs.py"]', {"my-jobs.py": ""}, "the file name must be a Python module name"),
        ('jobs = ["folder"]', {"folder/x.py": ""}, "'folder' is a folder without __init__.py, not a package"),
        ('jobs = ["nowhere_at_all"]', None, "'nowhere_at_all' is not a .py file, a package folder or an importable"),
        ('jobs = ["my_jobs.py", "b/my_jobs.py"]', {"b/my_jobs.py": ""}, "two job modules are named 'my_jobs'"),
        ('jobs = ["my_jobs.py"]\nrequirements = ["--index-url=x"]', None, "requirements: '--index-url=x' is not a requirement"),
        ('jobs = ["my_jobs.py"]\nfind_links = ["nope"]', None, "find_links: 'nope' is not a folder"),
        ('jobs = ["my_jobs.py"]\npage = "nope.html"', None, "page: 'nope.html' is not an HTML file"),
        ('jobs = ["my_jobs.py"]\npage = 3', None, 'page must be "demo" or the path of your HTML file'),
        ('jobs = ["my_jobs.py"]\nassets = ["a.js"]', {"a.js": ""}, "assets are for your own page"),
        ('jobs = ["my_jobs.py"]\npage = "p.html"\nassets = ["x"]', {"p.html": ""}, "assets: 'x' does not exist"),
        ('jobs = ["my_jobs.py"]\npage = "p.html"\nassets = ["sw.js"]', {"p.html": "", "sw.js": ""}, "would replace the site's own sw.js"),
        ('jobs = ["my_jobs.py"]\noptions = { polling = 1 }', None, "options: unknown option(s) 'polling'; the options are: pollingInterval"),
        ('jobs = ["my_jobs.py"]\noptions = { pollingInterval = -1 }', None, "[tool.durably.site] options: polling_interval"),
        ('jobs = ["my_jobs.py"]\noptions = { leaseDuration = 5, leaseRenewInterval = 6 }', None, "must be shorter than lease_duration"),
        ('jobs = ["my_jobs.py"]\noptions = 3', None, "options must be a table"),
        ('jobs = ["my_jobs.py"]\nout = ""', None, "out must be a folder name"),
        # Names the worker's Python has already: the job module would never be imported.
        ('jobs = ["json.py"]', {"json.py": ""}, "would be the module 'json', which is a module of the standard library"),
        ('jobs = ["os"]', None, "would be the module 'os', which is a module of the standard library"),
        ('jobs = ["durably"]', {"durably/__init__.py": ""}, "would be the module 'durably', which is a module the worker uses itself"),
        ('jobs = ["cronsim.py"]', {"cronsim.py": ""}, "would be the module 'cronsim', which is a module the worker uses itself"),
        ('jobs = ["my_jobs.py"]\nrequirements = ["humanize --index-url=http://x"]', None, "is not a requirement"),
        ('jobs = ["my_jobs.py"]\nrequirements = ["humanize\\n--index-url=x"]', None, "is not a requirement"),
        ('jobs = ["my_jobs.py"]\nrequirements = ["./vendor/mylib"]', None, "is a path; only wheels go to the browser"),
        ('jobs = ["my_jobs.py"]\nrequirements = ["/home/me/mylib"]', None, "is a path; only wheels go to the browser"),
        # pip evaluates markers for the build machine: this one would be dropped on Linux.
        ('jobs = ["my_jobs.py"]\nrequirements = ["x; sys_platform == \'emscripten\'"]', None,
         "has an environment marker; pip would evaluate it for this machine, not for the browser's Pyodide"),
        ('jobs = ["my_jobs.py"]\npage = "p.html"\nassets = ["Manifest.JSON"]', {"p.html": "", "Manifest.JSON": ""}, "would replace the site's own"),
        ('jobs = ["my_jobs.py"]\npage = "p.html"\nassets = ["worker.js.map"]', {"p.html": "", "worker.js.map": ""}, "would replace the site's own"),
        ('jobs = ["my_jobs.py"]\npage = "p.html"\nassets = ["a/app.js", "b/app.js"]', {"p.html": "", "a/app.js": "", "b/app.js": ""},
         "would both be app.js at the site's root"),
    ],
)
def test_a_bad_configuration_fails_naming_the_key(tmp_path, table, files, expected):
    assert expected in refused(tmp_path, table, files)


def test_a_missing_config_file_or_table_says_what_to_do(tmp_path):
    with pytest.raises(SiteConfigError, match=r"no such file; run from your project's folder or pass --config"):
        load_config(tmp_path / "pyproject.toml")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(SiteConfigError, match=r"has no \[tool.durably.site\] table; add one"):
        load_config(tmp_path / "pyproject.toml")
    for text in ("tool = 3\n", "[tool]\ndurably = 'x'\n", "[tool.durably]\nsite = [1]\n"):
        (tmp_path / "pyproject.toml").write_text(text)
        with pytest.raises(SiteConfigError, match=r"tool.durably.site must be a table"):
            load_config(tmp_path / "pyproject.toml")
    (tmp_path / "pyproject.toml").write_text("[tool.durably.site\n")
    with pytest.raises(SiteConfigError, match="not valid TOML"):
        load_config(tmp_path / "pyproject.toml")


def test_the_command_reports_a_bad_configuration_on_one_line_with_exit_status_2(tmp_path, capsys):
    config = project(tmp_path, 'jobs = ["my_jobs.py"]\nout_dir = "x"')
    assert cli.main(["site", "build", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("durably: [tool.durably.site] has unknown key(s) 'out_dir'") and err.count("\n") == 1


def test_without_node_the_build_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SiteBuildError, match=r"building a site needs Node.js >= 20 and npm on PATH"):
        site.check_node()


def test_job_packages_zip_the_same_way_every_time(tmp_path):
    config = load_config(project(tmp_path, 'jobs = ["pkg"]', {"pkg/__init__.py": "X = 1\n", "pkg/sub/m.py": ""}))
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = site.zip_package(config.jobs[0], tmp_path / "a")
    again = site.zip_package(config.jobs[0], tmp_path / "b")
    assert first.read_bytes() == again.read_bytes()
    assert zipfile.ZipFile(first).namelist() == ["pkg/__init__.py", "pkg/sub/m.py"]


# -- requirements (pip, with local folders only: no network) ---------------------------------------


def make_wheel(folder: Path, name: str, version: str, body: str = "") -> Path:
    """A minimal pure-Python wheel pip accepts."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{name}.py", body or f"VERSION = {version!r}\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def no_index(tmp_path, monkeypatch):
    """pip with an empty index and no configured find-links: only the test's folders count."""
    empty = tmp_path / "empty-index"
    empty.mkdir()
    monkeypatch.setenv("PIP_INDEX_URL", empty.as_uri())
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")


def test_a_requirement_resolves_from_find_links_into_the_cache_and_then_offline(tmp_path, no_index):
    links = tmp_path / "links"
    make_wheel(links, "tinydep", "1.0")
    cache = tmp_path / "cache"
    wheels = resolve_requirements(["tinydep==1.0"], [links], PLATFORM, cache, log=lambda *_: None)
    assert wheels == [cache / "tinydep-1.0-py3-none-any.whl"]
    recorded = json.loads((cache / "sha256.json").read_text())
    assert recorded == {"tinydep-1.0-py3-none-any.whl": site.sha256_file(wheels[0])}
    # Again without the folder: the cache alone resolves it.
    assert resolve_requirements(["tinydep==1.0"], [], PLATFORM, cache, log=lambda *_: None) == wheels


def test_a_requirement_with_no_wheel_fails_naming_it_and_the_platform(tmp_path, no_index):
    with pytest.raises(SiteBuildError) as info:
        resolve_requirements(["nosuchthing==1.0"], [], PLATFORM, tmp_path / "cache", log=lambda *_: None)
    assert str(info.value) == (
        "nosuchthing==1.0: no wheel for pyemscripten_2026_0_wasm32 (Python 3.14) on the index; "
        "provide one with --find-links (or find_links in [tool.durably.site])"
    )


def test_a_package_pyodide_ships_says_where_its_wheel_is(tmp_path, no_index):
    with pytest.raises(SiteBuildError, match=r"numpy: no wheel for pyemscripten_2026_0_wasm32 .*Pyodide ships it as "
                       r"numpy-2.3.4-cp314-cp314-pyemscripten_2026_0_wasm32.whl: put that file"):
        resolve_requirements(["numpy"], [], PLATFORM, tmp_path / "cache", log=lambda *_: None)


def test_a_native_wheel_for_another_platform_is_not_taken(tmp_path, no_index):
    links = tmp_path / "links"
    make_wheel(links, "nativething", "1.0").rename(links / "nativething-1.0-cp314-cp314-manylinux_2_17_x86_64.whl")
    with pytest.raises(SiteBuildError, match=r"^nativething: no wheel for pyemscripten_2026_0_wasm32"):
        resolve_requirements(["nativething"], [links], PLATFORM, tmp_path / "cache", log=lambda *_: None)


def test_a_wheel_whose_name_lies_about_its_version_is_named_with_pips_reason(tmp_path, no_index):
    links = tmp_path / "links"
    make_wheel(tmp_path / "made", "liar", "2.0").rename(links.mkdir() or links / "liar-1.0-py3-none-any.whl")
    with pytest.raises(SiteBuildError, match=r"^liar-1.0-py3-none-any.whl: pip refused it: .*inconsistent version: "
                       r"expected '1.0', but metadata has '2.0'; rebuild the wheel"):
        resolve_requirements(["liar==1.0"], [links], PLATFORM, tmp_path / "cache", log=lambda *_: None)


def test_a_corrupted_wheel_in_find_links_fails_naming_it(tmp_path, no_index):
    links = tmp_path / "links"
    links.mkdir()
    (links / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(SiteBuildError, match=r"Wheel 'broken' located at .*broken-1.0-py3-none-any.whl is invalid"):
        resolve_requirements(["broken==1.0"], [links], PLATFORM, tmp_path / "cache", log=lambda *_: None)


def test_a_dependency_without_a_wheel_names_what_requires_it(tmp_path, no_index):
    links = tmp_path / "links"
    links.mkdir()
    wheel = links / "needsnative-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("needsnative.py", "")
        info = "needsnative-1.0.dist-info"
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: needsnative\nVersion: 1.0\nRequires-Dist: nativething\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    make_wheel(tmp_path / "m", "nativething", "1.0").rename(links / "nativething-1.0-cp314-cp314-manylinux_2_17_x86_64.whl")
    with pytest.raises(SiteBuildError, match=r"^nativething \(required by needsnative\): no wheel for pyemscripten_2026_0_wasm32"):
        resolve_requirements(["needsnative"], [links], PLATFORM, tmp_path / "cache", log=lambda *_: None)


def test_a_cached_wheel_whose_bytes_changed_fails_the_build(tmp_path, no_index):
    links = tmp_path / "links"
    make_wheel(links, "tinydep", "1.0")
    cache = tmp_path / "cache"
    (wheel,) = resolve_requirements(["tinydep==1.0"], [links], PLATFORM, cache, log=lambda *_: None)
    make_wheel(tmp_path / "other", "tinydep", "1.0", body="EVIL = True\n").replace(wheel)
    with pytest.raises(SiteBuildError, match=r"tinydep-1.0-py3-none-any.whl: the cached wheel changed since it was "
                       r"downloaded \(SHA-256 [0-9a-f]{12}\.\.\., recorded [0-9a-f]{12}\.\.\.\); delete .* to download it again"):
        resolve_requirements(["tinydep==1.0"], [], PLATFORM, cache, log=lambda *_: None)


def test_the_platform_is_read_from_the_kits_pyodide_lock_file():
    if not (ROOT / "node_modules" / "pyodide" / "pyodide-lock.json").exists():
        pytest.skip("node_modules is missing (npm ci)")
    platform = site.pyodide_platform(ROOT)
    assert platform.python == "3.14" and platform.tag == "pyemscripten_2026_0_wasm32"
    assert "numpy" in platform.lock_packages


@pytest.mark.slow
def test_the_package_wheel_carries_the_site_kit(tmp_path):
    """pip install durably gets the site kit (setup.py's build_py step), as package data."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("durably-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in ("worker.js", "index.html", "web/client.js", "web/boot.js", "scripts/build.mjs",
                "scripts/snapshot.mjs", "package.json", "package-lock.json"):
        assert f"durably/site_kit/{rel}" in names, rel
    assert (ROOT / "web" / "client.js").read_bytes() == zipfile.ZipFile(wheel).read("durably/site_kit/web/client.js")


def test_the_output_folder_is_never_the_project_or_a_folder_of_other_files(tmp_path):
    config = load_config(project(tmp_path, 'jobs = ["my_jobs.py"]\nout = "."'))
    with pytest.raises(SiteBuildError, match=r"holds the project itself"):
        site.build(config)
    other = tmp_path / "docs"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(SiteBuildError, match=r"has files but no durably manifest.json, so it is not a site this command built"):
        site.build(config, out=other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_a_symlinked_asset_keeps_its_own_name_and_cannot_sneak_in_a_reserved_one(tmp_path):
    files = {"p.html": "", "lib/app-v2.js": "", "lib/data.json": ""}
    config = project(tmp_path, 'jobs = ["my_jobs.py"]\npage = "p.html"\nassets = ["app.js"]', files)
    (tmp_path / "app.js").symlink_to(tmp_path / "lib" / "app-v2.js")
    assert [a.name for a in load_config(config).assets] == ["app.js"]  # the page loads ./app.js
    (tmp_path / "manifest.json").symlink_to(tmp_path / "lib" / "data.json")
    config.write_text(config.read_text().replace('["app.js"]', '["manifest.json"]'))
    with pytest.raises(SiteConfigError, match="would replace the site's own manifest.json"):
        load_config(config)


@pytest.mark.parametrize(
    "table, files, out, expected",
    [
        # A web app's folder with its own manifest.json (a PWA manifest): not a site we built.
        ('jobs = ["my_jobs.py"]', {"public/manifest.json": '{"name": "my app"}', "public/logo.png": "keep"}, "public",
         "has files but no durably manifest.json"),
        ('jobs = ["my_jobs.py"]', {"notes.txt": "keep"}, "notes.txt", "is a file"),
        ('jobs = ["pkg"]', {"pkg/__init__.py": "keep"}, "pkg/site", "is inside"),
        ('jobs = ["my_jobs.py"]\npage = "web/p.html"\nassets = ["web"]', {"web/p.html": "keep"}, "web/site", "is inside"),
        ('jobs = ["my_jobs.py"]\npage = "web/p.html"\nassets = ["web"]', {"web/p.html": "keep"}, "web", "holds"),
        ('jobs = ["my_jobs.py"]\nfind_links = ["w"]', {"w/manifest.json": '{"jobModules": [], "protocol": 1}'}, "w", "holds"),
    ],
)
def test_the_output_folder_never_holds_or_sits_in_what_the_site_is_built_from(tmp_path, table, files, out, expected):
    config = load_config(project(tmp_path, table, files))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(SiteBuildError, match=expected):
        site.build(config, out=tmp_path / out, log=lambda *_: None)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_wheels_kept_in_the_project_folder_do_not_stop_a_site_inside_it(tmp_path):
    config = load_config(project(tmp_path, 'jobs = ["my_jobs.py"]\nfind_links = ["."]'))
    site.check_out(tmp_path / "site", tmp_path, config.find_links)  # pip reads only the folder's own files


def test_a_folder_with_the_manifest_of_an_earlier_build_is_replaced(tmp_path):
    built = tmp_path / "site"
    built.mkdir()
    (built / "manifest.json").write_text('{"format": 1, "protocol": 3, "jobModules": []}')
    site.check_out(built, tmp_path)  # no error: it is a site this command built


@pytest.mark.slow
def test_a_job_module_that_is_not_valid_python_fails_the_build(tmp_path, capfd):
    """It used to give a warning ("no Python snapshot") and a site whose jobs could never load.
    (A file that is not UTF-8 is a SyntaxError too, and fails the same way.)"""
    source = b"from durably import job\ndef (:\n"
    if not (ROOT / "node_modules" / "esbuild").exists():
        pytest.skip("node_modules is missing (npm ci)")
    (tmp_path / "bad_jobs.py").write_bytes(source)
    config = load_config(project(tmp_path, 'jobs = ["bad_jobs.py"]'))
    with pytest.raises(SiteBuildError, match="the site build .* failed; its output is above"):
        site.build(config, log=lambda *_: None)
    err = capfd.readouterr().err
    assert "build failed: a job module is not valid Python, so the site could not import it" in err
    assert "SyntaxError" in err


def test_a_symlinked_job_module_or_package_is_the_module_its_own_name_says(tmp_path):
    """connect({jobs: ["my_jobs"]}) names the module as the configuration does; a symlink used
    to ship it under its target's name."""
    files = {"lib/impl_v2.py": "X = 1\n", "lib/pkg_v2/__init__.py": "X = 1\n"}
    config = project(tmp_path, 'jobs = ["linked_jobs.py", "linked_pkg"]', files)
    (tmp_path / "linked_jobs.py").symlink_to(tmp_path / "lib" / "impl_v2.py")
    (tmp_path / "linked_pkg").symlink_to(tmp_path / "lib" / "pkg_v2")
    jobs = load_config(config).jobs
    assert [(j.module, j.path.name) for j in jobs] == [("linked_jobs", "linked_jobs.py"), ("linked_pkg", "linked_pkg")]
    (tmp_path / "zips").mkdir()
    assert zipfile.ZipFile(site.zip_package(jobs[1], tmp_path / "zips")).namelist() == ["linked_pkg/__init__.py"]
