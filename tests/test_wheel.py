"""The wheel carries everything: built from this tree, `pip install`ed into a new venv and used from another folder,
it opens and migrates a store, loads the rating template, the shipped loop file and every other file of the packages."""
from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("curation", "annotations", "loops")

# Runs in the new venv, in a folder with no checkout: every import must come from the installed wheel.
CHECK = """
import sys
from pathlib import Path

import sqlalchemy as sa

import annotations, curation, loops
from annotations.template import template
from curation.store import Store
from loops.loop.config import load

site_dir = Path(sys.argv[1])
for module in (annotations, curation, loops):
    assert Path(module.__file__).is_relative_to(site_dir), module.__file__
store = Store.open(Path.cwd() / "home")  # runs every migration shipped in the wheel
tables = set(sa.inspect(store.engine).get_table_names())
store.dispose()
assert {"conversations", "embeddings", "judgements", "collect_tokens"} <= tables, sorted(tables)
task = template()
assert task["guidelines"].strip() and task["questions"], "the rating template did not load"
assert load("loops/nightly.toml").name == "nightly"  # the README's `--config loops/nightly.toml`, outside a checkout
print("ok")
"""


def package_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for package in PACKAGES for p in (root / package).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.mark.slow
def test_installed_wheel_has_every_package_file_and_loads_its_data(tmp_path):
    # nothing from the checkout on the path: pip would take its metadata for an installed curate
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CURATE_HOME", "CURATE_DATABASE_URL")}
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)], env=env,
                   check=True)
    wheel = next(dist.glob("curate-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], env=env, check=True)
    target = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 env=env, capture_output=True, text=True, check=True).stdout.strip())
    # The dependencies come from this interpreter's site-packages, listed after the venv's own: the wheel's copy of
    # curate comes first, and this checkout's editable install (a finder that only a site dir's .pth runs) stays off.
    (target / "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    missing = package_files(REPO) - package_files(target)
    assert not missing, f"files the wheel leaves out (add their suffix to package-data in pyproject.toml): {sorted(missing)}"
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run([str(python), "-c", CHECK, str(target)], cwd=work, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
    cli = subprocess.run([str(env_dir / "bin" / "curate"), "--help"], cwd=work, env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and "ingest" in cli.stdout, cli.stderr[-3000:]


def test_the_all_extra_is_every_other_extra():
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    others = {req for name, reqs in extras.items() if name not in ("all", "dev") for req in reqs}
    assert set(extras["all"]) == others
