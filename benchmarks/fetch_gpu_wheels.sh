#!/usr/bin/env bash
# Download, on a machine with network access, everything the lent GPU image lacks into .whl/ (git-ignored), for
# Python 3.12 on manylinux x86_64; benchmarks/gpu_check.sh installs it there with --no-index --no-deps.
#
#   bash benchmarks/fetch_gpu_wheels.sh              # the pinned set below
#   bash benchmarks/fetch_gpu_wheels.sh NAME==VER    # plus whatever gpu_check.sh listed as MISSING
#
# The image (Python 3.12, torch, triton, accelerate, numpy, pyyaml, pillow, ... : /work/.library/device/KINDS.md)
# lacks pydantic and its four companions, webdataset + braceexpand, DeepSpeed and hjson. Pins: the versions this
# project's .venv resolves — read from .venv when it holds the package, else the fallback below — because
# pydantic X needs exactly one pydantic-core and a second version of anything stops the install there.
# --no-deps on purpose: the other dependencies (numpy, pyyaml, psutil, py-cpuinfo, msgpack, ninja, einops, ...)
# are on the image, and a second numpy on PYTHONPATH would shadow the one torch was built against. After the
# download every carried wheel's requirements are checked against the carried versions.
#
# DeepSpeed is published as an sdist only: carried as deepspeed-X.tar.gz, built and installed on the GPU machine
# with `pip install --no-index --no-deps --no-build-isolation` (DS_BUILD_OPS=0: no ops compiled at install; ZeRO-2
# with torch's Adam needs none).
#
# Environment: PYTHON (default .venv/bin/python if present, else python3; only runs pip), WHEEL_DIR (default .whl).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
PY=${PYTHON:-python3}
DEST=${WHEEL_DIR:-.whl}
mkdir -p "$DEST"

# name==version as resolved by .venv on 2026-12-01 (Python 3.11 there; the same versions exist for 3.12)
FALLBACK=(
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
    webdataset==1.0.2 braceexpand==0.1.7 hjson==3.1.0
)
DEEPSPEED_FALLBACK=deepspeed==0.19.8

venv_version() {  # the version .venv holds of a distribution, or nothing
    [ -x .venv/bin/python ] || return 0
    .venv/bin/python -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1"
}

pin() {  # name==fallback → name==(the venv's version, else the fallback)
    local name=${1%%==*} fallback=${1#*==} got
    got=$(venv_version "$name")
    if [ -n "$got" ] && [ "$got" != "$fallback" ]; then
        echo "note: .venv has $name $got (fallback pin $fallback): using $got" >&2
    fi
    echo "$name==${got:-$fallback}"
}

WHEELS=()
for spec in "${FALLBACK[@]}"; do WHEELS+=("$(pin "$spec")"); done
WHEELS+=("$@")
SDIST=$(pin "$DEEPSPEED_FALLBACK")
echo "wheels: ${WHEELS[*]}"
echo "sdist:  $SDIST"

# one version per project in $DEST: drop files of these projects at other versions (left by an earlier pin)
"$PY" - "$DEST" "${WHEELS[@]}" "$SDIST" <<'EOF'
import re
import sys
from pathlib import Path


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


wanted = {norm(spec.split("==")[0]): spec.split("==")[1] for spec in sys.argv[2:]}
for f in sorted(Path(sys.argv[1]).iterdir()):
    m = re.match(r"(.+?)-(\d[^-]*?)(?:-.*\.whl|\.tar\.gz)$", f.name)
    if m and norm(m.group(1)) in wanted and m.group(2) != wanted[norm(m.group(1))]:
        print(f"removing {f.name} (pinned: {wanted[norm(m.group(1))]})")
        f.unlink()
EOF

PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
# pip's find-links warnings about absent local indexes are noise here
"$PY" -m pip download --disable-pip-version-check -q --dest "$DEST" --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none "${PLATFORMS[@]}" \
    "${WHEELS[@]}" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
"$PY" -m pip download --disable-pip-version-check -q --dest "$DEST" --no-deps --no-binary=:all: "$SDIST" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true

# every wanted file present, and each carried wheel's requirements met by what is carried (or left to the image)
"$PY" - "$DEST" "$SDIST" "${WHEELS[@]}" <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

dest, wanted = Path(sys.argv[1]), sys.argv[2:]
carried = {}
for f in sorted(dest.iterdir()):
    m = re.match(r"(.+?)-(\d[^-]*?)(?:-.*\.whl|\.tar\.gz)$", f.name)
    if m:
        carried[canonicalize_name(m.group(1))] = (m.group(2), f)
bad = []
for spec in wanted:
    name, version = spec.split("==")
    got = carried.get(canonicalize_name(name))
    if got is None or got[0] != version:
        bad.append(f"{spec}: not downloaded" + (f" (found {got[0]})" if got else ""))
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
left_to_image = set()
for name, (version, f) in carried.items():
    if f.suffix != ".whl":
        continue
    meta = next(n for n in zipfile.ZipFile(f).namelist() if n.endswith(".dist-info/METADATA"))
    for line in zipfile.ZipFile(f).read(meta).decode().splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        dep = canonicalize_name(req.name)
        if dep in carried:
            if not req.specifier.contains(carried[dep][0], prereleases=True):
                bad.append(f"{name} {version} needs {req}, carried {dep} {carried[dep][0]}")
        else:
            left_to_image.add(dep)
print(f"{len(carried)} files in {dest}: " + ", ".join(f"{n} {v}" for n, (v, _) in sorted(carried.items())))
print("requirements left to the image:", ", ".join(sorted(left_to_image)) or "none")
if bad:
    print("PROBLEMS:\n  " + "\n  ".join(bad))
    sys.exit(1)
print("ok: every carried wheel's requirements are met by the carried versions")
EOF
du -sh "$DEST"
if [ "$DEST" = .whl ]; then
    echo "carry it to the GPU machine: carry=[\".whl\"], then bash benchmarks/gpu_check.sh \"\$OUT\" (benchmarks/README.md)"
else
    echo "gpu_check.sh installs from .whl/ (or GPU_CHECK_WHEELS=DIR): copy or point it there"
fi
