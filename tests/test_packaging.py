"""What installing puts on the import path: one package, `iiae` (engine/ as `iiae`, kernels/ as `iiae.kernels`,
recipes/ as `iiae.shipped_recipes`), and nothing named `engine` or `kernels`, which are other PyPI projects'
names (Hugging Face's `kernels` is installed beside transformers). Checked for the built wheel and for this
environment's editable install, each beside a stand-in of the other `kernels` distribution."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
import pytest

pytestmark = pytest.mark.integration  # trains or starts processes: not in `make test-unit`

ROOT = Path(__file__).resolve().parents[1]

# imports both `kernels` packages in one process and uses each
PROBE = """
import importlib.metadata, sys
import kernels
from iiae import IIAE, kernels as ours
from iiae.config import load_recipe
from iiae.recipes import recipes_dir
import torch
assert importlib.metadata.version("kernels") == "0.9.0" and kernels.get_kernel("org/op") == "hub kernel org/op"
assert ours.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).tolist() == [0.0, 0.0]
assert ours.reference.__name__ == "iiae.kernels.reference"
recipe = load_recipe("debug")
assert sum(p.numel() for p in IIAE(recipe.model, recipe.objective).parameters()) > 0
for name in ("engine", "shipped_recipes"):
    try:
        __import__(name)
        sys.exit(f"`import {name}` should fail")
    except ImportError:
        pass
print(kernels.__file__, ours.__file__, recipes_dir(), sep="\\n")
"""


def other_kernels_distribution(site: Path) -> Path:
    """A stand-in for Hugging Face's `kernels` 0.9.0, installed into `site` as pip would (package + dist-info)."""
    (site / "kernels").mkdir(parents=True)
    (site / "kernels" / "__init__.py").write_text('def get_kernel(repo_id):\n    return f"hub kernel {repo_id}"\n')
    info = site / "kernels-0.9.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kernels\nVersion: 0.9.0\n")
    (info / "RECORD").write_text("")
    return site / "kernels" / "__init__.py"


def probe(site: Path, cwd: Path) -> list[Path]:
    """Run PROBE with `site` first on the path, from `cwd` (away from the checkout); the three paths it prints."""
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, timeout=180,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    return [Path(line) for line in out.stdout.split()]


def test_editable_install_beside_the_other_kernels(tmp_path):
    theirs = other_kernels_distribution(tmp_path / "site")
    assert probe(tmp_path / "site", tmp_path) == [theirs, ROOT / "kernels" / "__init__.py", ROOT / "recipes"]


def test_the_wheel_holds_one_package_with_the_recipes_and_every_module(tmp_path):
    tree = tmp_path / "tree"
    # what a source checkout holds, without the local venv, data and runs
    top = {".venv", ".git", "data", "runs", "build", "example_paired", ".whl"}
    shutil.copytree(ROOT, tree, ignore=lambda folder, found: [n for n in found if n == "__pycache__" or n.endswith(
        ".egg-info") or (Path(folder) == ROOT and n in top)])
    subprocess.run([sys.executable, "-c", "from setuptools import build_meta; build_meta.build_wheel('dist')"],
                   cwd=tree, check=True, capture_output=True, timeout=300)
    (wheel,) = (tree / "dist").glob("iiae-*.whl")
    with zipfile.ZipFile(wheel) as z:
        files = set(z.namelist())
        z.extractall(tmp_path / "site")
    assert {f.split("/")[0] for f in files} == {"iiae", "iiae-0.1.0.dist-info"}
    inside = {"engine": "iiae", "kernels": "iiae/kernels", "recipes": "iiae/shipped_recipes"}
    wanted = {f"{inside[d]}/{p.relative_to(ROOT / d).as_posix()}" for d in inside for p in (ROOT / d).rglob("*")
              if p.suffix in (".py", ".yaml", ".json") and "__pycache__" not in p.parts}
    assert wanted <= files, sorted(wanted - files)
    # installed, away from any clone and beside the other `kernels`: the recipes come from the package
    theirs = other_kernels_distribution(tmp_path / "site")
    site = tmp_path / "site" / "iiae"
    assert probe(tmp_path / "site", tmp_path) == [theirs, site / "kernels" / "__init__.py", site / "shipped_recipes"]
