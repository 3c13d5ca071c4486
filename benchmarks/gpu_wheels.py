"""Fill a folder with the wheels a bare CUDA machine needs to run benchmarks/gpu_check.sh offline
(what `make gpu-wheels` runs, on a machine with network access and the project's venv).

The CUDA machine is assumed to have Python 3.12, PyTorch and transformers with their
dependencies, and nothing else. The packages it lacks are found from this venv's installed
metadata (so the versions are the ones the tests ran with), without resolving torch again:
  needed  = requirements.txt without PREINSTALLED and NOT_NEEDED, with every dependency
            (environment markers evaluated for the target Python on Linux);
  present = PREINSTALLED with every dependency;
then each package in `needed` but not in `present` is downloaded as a binary wheel for the
target Python (--no-deps, same version) into the folder, with a requirements.txt listing
them, which gpu_check.sh installs with `pip install --no-index --find-links FOLDER -r ...`.

    python benchmarks/gpu_wheels.py [--dest gpu-wheels] [--python-version 3.12]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PREINSTALLED = ("torch", "transformers", "tokenizers", "safetensors", "numpy")
NOT_NEEDED = {"kaleido", "playwright"}  # figure export through chromium; browser tests
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def target_options(python_version: str) -> list[str]:
    options = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for platform in PLATFORMS:
        options += ["--platform", platform]
    return options


def closure(names: list[str], python_version: str) -> dict[str, str]:
    """{canonical name: installed version} of `names` and all their dependencies as installed in
    this environment; markers evaluated for the target Python (extras not followed)."""
    environment = {"python_version": python_version, "python_full_version": f"{python_version}.0",
                   "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython",
                   "os_name": "posix", "extra": ""}
    found: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = canonical(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            print(f"note: {name} is not installed here; it is left out", file=sys.stderr)
            continue
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(environment):
                todo.append(req.name)
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dest", default=str(ROOT / "gpu-wheels"))
    p.add_argument("--python-version", default="3.12")
    args = p.parse_args()
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    tops = [re.split(r"[=<>!~ \[]", pin)[0] for pin in pins if pin]
    tops = [t for t in tops if canonical(t) not in set(PREINSTALLED) | NOT_NEEDED]
    needed = closure(tops, args.python_version)
    present = closure(list(PREINSTALLED), args.python_version)
    missing = {name: version for name, version in sorted(needed.items()) if name not in present}
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}=={version}" for name, version in missing.items()]
    print(f"downloading {len(specs)} wheels for Python {args.python_version} into {dest}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest),
                    *target_options(args.python_version), *specs], check=True)
    (dest / "requirements.txt").write_text(
        "# written by benchmarks/gpu_wheels.py: what a CUDA machine with torch + transformers lacks\n"
        + "\n".join(specs) + "\n")
    print(f"done: {' '.join(specs)}")
    print(f"expected on the CUDA machine already: {', '.join(sorted(set(needed) & set(present)))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
