#!/usr/bin/env bash
# Downloads into .whl/ the wheels benchmarks/gpu_check.py needs on the device machine, whose image has
# Python 3.12 and torch 2.11 but no diffusers or pydantic. Versions are our pins (requirements.txt) and what
# they resolve to here; imageio-ffmpeg is left out (over the carry limit): gpu_check never encodes an MP4.
# Run it from anywhere in the checkout that the device tool sends (about 25 MB of wheels; the limit is 64 MiB).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
git check-ignore -q .whl/ || { echo "device_wheels.sh: .whl/ must be ignored (.gitignore has /.whl/)" >&2; exit 1; }
mkdir -p .whl
WHEELS=(
  diffusers==0.42.1 importlib-metadata==10.2.0
  transformers==5.24.0 regex==2026.5.9  # transformers 5.24 checks regex >= 2025.10.22 at import
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 typing-extensions==4.16.0
)
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${WHEELS[@]}"
ls -l .whl
du -sh .whl
