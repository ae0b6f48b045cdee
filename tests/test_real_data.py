"""The converters on the real paper data in ../shared/data (slow; skipped where it is absent, as on a user's
machine; they read every file, so they check the whole release), and the demos' message where it is absent."""
import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from PIL import Image
from scipy.io import loadmat

from datagen import prepare, samples
from iiae.data import load_dataset_info

pytestmark = pytest.mark.integration  # trains or starts processes: not in `make test-unit`

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]


def need(folder: str) -> Path:
    path = SHARED / folder
    if not path.is_dir():
        pytest.skip(f"{path} is absent (real paper data; see the README's Maps and Cars sections)")
    return path


def manifest_digest(listing: Path, keep) -> str:
    """One sha256 over the lines of a `sha256sum` manifest, as `source_checksums` writes it."""
    rows = (line.split(maxsplit=1) for line in listing.read_text().splitlines())
    lines = sorted(f"{h}  {name.removeprefix('./')}\n" for h, name in rows if keep(name))
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@pytest.mark.parametrize("experiment, variable", [("maps", "MAPS"), ("cars", "CARS")])
def test_demo_without_the_data_says_what_to_download(experiment, variable):
    env = {**os.environ, "SHARED": "/nonexistent", "EXPERIMENT": experiment}
    env.pop(variable, None)
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert f"make demo-{experiment} {variable}=DIR" in proc.stderr and "http" in proc.stderr


@pytest.mark.slow
def test_maps_real_files(tmp_path):
    src = need("maps256")
    out = tmp_path / "maps"
    assert prepare("pix2pix", "--name", "maps", "--src", src, "--size", 32, "--out", out) == 0
    info = load_dataset_info(out)
    assert {k: v.count for k, v in info.splits.items()} == {"train": 1096, "valid": 800, "test": 1098}
    assert info.provenance["sources"]["files"] == 1096 + 1098
    # test pair k is val/k.jpg: satellite left, map right, each half area-downscaled 256 -> 32
    _, row = samples(info, "test")[0]
    pair = np.asarray(Image.open(src / "val" / "1.jpg").convert("RGB"), dtype=float)
    np.testing.assert_allclose(row["x"], pair[:, :256].reshape(32, 8, 32, 8, 3).mean((1, 3)), atol=1.0)
    np.testing.assert_allclose(row["y"], pair[:, 256:].reshape(32, 8, 32, 8, 3).mean((1, 3)), atol=1.0)


@pytest.mark.slow
def test_cars_real_files(tmp_path):
    src = need("cars3d")
    out = tmp_path / "cars"
    assert prepare("cars", "--src", src, "--size", 32, "--out", out) == 0
    info = load_dataset_info(out)
    # 183 cars released: ids <= 191 are 176 cars, 192-199 the 7 test cars (197 is missing)
    assert {k: v.count for k, v in info.splits.items()} == {"train": 176 * 92, "test": 7 * 92}
    assert info.provenance["cars"]["test"] == [192, 193, 194, 195, 196, 198, 199]
    _, row = samples(info, "test")[0]  # car 192, elevation 0: x = azimuth 0, y = azimuth 1
    im = loadmat(src / "car_192_mesh.mat", variable_names=["im"])["im"].astype(float)
    np.testing.assert_allclose(row["x"], im[:, :, :, 0, 0].reshape(32, 4, 32, 4, 3).mean((1, 3)), atol=1.0)
    np.testing.assert_allclose(row["y"], im[:, :, :, 1, 0].reshape(32, 4, 32, 4, 3).mean((1, 3)), atol=1.0)
    sources = info.provenance["sources"]
    assert sources == {"files": 183, "manifest_sha256": manifest_digest(src / "MANIFEST.sha256",
                                                                         lambda n: n.endswith(".mat"))}
