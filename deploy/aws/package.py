"""Build the Lambda function's zip: cafe-etl and its dependencies for the function's
platform (Linux x86_64, glibc 2.28 or later, CPython 3.12 unless told otherwise), from
binary wheels only.

    python deploy/aws/package.py [--out build/lambda.zip] [--python-version 3.12]

The zip is reproducible: entries in a fixed order with a fixed timestamp, no
bytecode caches. Upload it to the template's CodeBucket/CodeKey.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What Lambda accepts: 250 MB unzipped, code and layers together.
UNZIPPED_LIMIT = 250 * 1024 * 1024
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__"}


def build(out: Path, python_version: str, platforms: list[str]) -> tuple[int, int]:
    """Write the zip; return (zipped, unzipped) sizes in bytes."""
    with tempfile.TemporaryDirectory(prefix="cafe-etl-lambda-") as work:
        wheels, target = Path(work) / "wheels", Path(work) / "python"
        _pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT))
        [wheel] = wheels.glob("cafe_etl-*.whl")
        platform_args = [arg for p in platforms for arg in ("--platform", p)]
        _pip("install", "--target", str(target), *platform_args, "--implementation", "cp",
             "--python-version", python_version, "--only-binary=:all:", "--no-compile", str(wheel))
        return _zip(target, out)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args], check=True)


def _zip(folder: Path, out: Path) -> tuple[int, int]:
    out.parent.mkdir(parents=True, exist_ok=True)
    unzipped = 0
    partial = out.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            for name in sorted(files):
                if name.endswith((".pyc", ".pyo")):
                    continue
                path = Path(root) / name
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), _FIXED_TIME)
                info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                data = path.read_bytes()
                unzipped += len(data)
                archive.writestr(info, data)
    os.replace(partial, out)
    return out.stat().st_size, unzipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "lambda.zip")
    parser.add_argument("--python-version", default="3.12", help="the function's runtime [3.12]")
    # Lambda's Python 3.12 runtime is Amazon Linux 2023 (glibc 2.34): manylinux_2_28 wheels run there.
    parser.add_argument("--platform", action="append", dest="platforms",
                        help="wheel platform tags [manylinux_2_28_x86_64, manylinux2014_x86_64]")
    args = parser.parse_args()
    if shutil.which("pip") is None and subprocess.run([sys.executable, "-m", "pip", "--version"],
                                                       capture_output=True).returncode:
        print("error: pip is needed to build the package", file=sys.stderr)
        return 2
    try:
        platforms = args.platforms or ["manylinux_2_28_x86_64", "manylinux2014_x86_64"]
        zipped, unzipped = build(args.out, args.python_version, platforms)
    except subprocess.CalledProcessError as exc:
        print(f"error: pip failed ({exc.returncode}); is the package registry reachable?", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({zipped / 1e6:.1f} MB, {unzipped / 1e6:.1f} MB unzipped) for CPython "
          f"{args.python_version} on {', '.join(platforms)}")
    if unzipped > UNZIPPED_LIMIT:
        print(f"error: over Lambda's {UNZIPPED_LIMIT / 1e6:.0f} MB unzipped limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
