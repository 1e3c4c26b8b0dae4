"""Add compiled kernels to a fastnn wheel, so that an install from it compiles nothing.

    python -m build --wheel            # or: pip wheel . --no-deps -w dist
    python tools/prebuild_wheel.py dist/fastnn-0.1.0-py3-none-any.whl

The wheel is unpacked, ``fastnn warmup`` runs from the unpacked copy once per CPU target
(``NUMBA_CPU_NAME=x86-64-v3`` and ``generic``, features left to the target, so the code runs on
any CPU of that level), and the cache files it writes are added under ``fastnn/_prebuilt/``
(kernels/ and steps/), where ``fastnn._shipped_cache`` finds them. The result is written beside
the input (or to ``--out``) with the tag of this interpreter and platform, since the cache files
are for one CPython minor version, one Numba version and one architecture. Other installs still
work: they compile once, as from source. ``--targets host`` compiles for this CPU only (non-x86
platforms). ``--seed FOLDER`` starts from cache files already compiled from the same sources (e.g.
a checkout's ``fastnn/kernels/__pycache__`` after its tests ran, host target): warmup then compiles
only what they lack (files of other sources or another Numba are ignored by their stamp).
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile


def _record_line(root: str, path: str) -> str:
    with open(path, "rb") as handle:
        data = handle.read()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{os.path.relpath(path, root).replace(os.sep, '/')},sha256={digest},{len(data)}"


def _warmup(unpacked: str, steps: str, target: str, args) -> tuple[int, float]:
    """Runs ``fastnn warmup`` for ``target``; returns (functions compiled, seconds), from its last line."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    # FASTNN_FUSE=auto: warmup compiles the fused steps unless the environment says never
    env.update(PYTHONPATH=unpacked, FASTNN_CACHE_DIR=steps, PYTHONDONTWRITEBYTECODE="1", FASTNN_FUSE="auto")
    if target != "host":
        env.update(NUMBA_CPU_NAME=target, NUMBA_CPU_FEATURES="")
    command = [
        sys.executable,
        "-m",
        "fastnn.warmup",
        "--dtype",
        args.dtype,
        "--jobs",
        str(args.jobs),
        "--only",
        args.only,
        *(["--quiet"] if args.quiet else []),
    ]
    print(f"prebuild: {target}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(command, env=env, cwd=steps, check=True, stdout=subprocess.PIPE, text=True)
    print(proc.stdout, end="", file=sys.stderr)
    found = re.search(r"fastnn warmup: (\d+) functions compiled in ([\d.]+) s", proc.stdout)
    return (int(found[1]), float(found[2])) if found else (0, 0.0)


def _move_cache_files(source: str, destination: str) -> int:
    os.makedirs(destination, exist_ok=True)
    files = [p for p in glob.glob(os.path.join(source, "*")) if p.endswith((".nbi", ".nbc"))]
    for path in files:
        shutil.move(path, os.path.join(destination, os.path.basename(path)))
    return len(files)


def _copy_cache_files(source: str, destination: str) -> None:
    os.makedirs(destination, exist_ok=True)
    for path in glob.glob(os.path.join(source, "*")):
        if path.endswith((".nbi", ".nbc")):
            shutil.copyfile(path, os.path.join(destination, os.path.basename(path)))


def _retag(unpacked: str, dist_info: str) -> str:
    """Set the wheel's tag to this interpreter and platform; returns the tag."""
    tag = (
        f"cp{sys.version_info.major}{sys.version_info.minor}-none-"
        f"{sysconfig.get_platform().replace('-', '_').replace('.', '_')}"
    )
    wheel_file = os.path.join(unpacked, dist_info, "WHEEL")
    with open(wheel_file) as handle:
        lines = [line for line in handle.read().splitlines() if not line.startswith("Tag:")]
    lines = [line.replace("Root-Is-Purelib: true", "Root-Is-Purelib: false") for line in lines]
    with open(wheel_file, "w") as handle:
        handle.write("\n".join([*lines, f"Tag: {tag}"]) + "\n")
    return tag


def prebuild(wheel: str, out: str, args) -> str:
    """Path of the new wheel: ``wheel`` plus compiled kernels."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fastnn-prebuild-") as tmp:
        unpacked, steps = os.path.join(tmp, "wheel"), os.path.join(tmp, "steps")
        os.makedirs(steps)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
        if args.seed:
            _copy_cache_files(args.seed, os.path.join(unpacked, "fastnn", "kernels", "__pycache__"))
        measured = [_warmup(unpacked, steps, target.strip(), args) for target in args.targets.split(",")]
        compiled, seconds = sum(m[0] for m in measured), sum(m[1] for m in measured)
        prebuilt = os.path.join(unpacked, "fastnn", "_prebuilt")
        kernels = _move_cache_files(
            os.path.join(unpacked, "fastnn", "kernels", "__pycache__"), os.path.join(prebuilt, "kernels")
        )
        fused = _move_cache_files(os.path.join(steps, "__pycache__"), os.path.join(prebuilt, "steps"))
        import numba

        with open(os.path.join(prebuilt, "build.json"), "w") as handle:  # read by fastnn._shipped_cache.mismatch
            json.dump(
                {
                    "numba": numba.__version__,
                    "python": f"{sys.version_info.major}.{sys.version_info.minor}",
                    "targets": args.targets.split(","),
                    "dtype": args.dtype,
                    "only": args.only,
                    # the first-compile notice's estimate where these files do not serve (fastnn._compiling)
                    "seconds_per_compile": round(seconds / compiled, 3) if compiled else None,
                },
                handle,
            )
        for leftover in glob.glob(os.path.join(unpacked, "**", "__pycache__"), recursive=True):
            shutil.rmtree(leftover)
        dist_info = next(name for name in os.listdir(unpacked) if name.endswith(".dist-info"))
        tag = _retag(unpacked, dist_info)
        record = os.path.join(unpacked, dist_info, "RECORD")
        files = sorted(os.path.join(folder, name) for folder, _, names in os.walk(unpacked) for name in names)
        lines = [_record_line(unpacked, p) for p in files if p != record]
        with open(record, "w") as handle:
            handle.write("\n".join([*lines, f"{dist_info}/RECORD,,"]) + "\n")
        name_version = os.path.basename(wheel).split("-")[:2]
        target_path = os.path.join(out, "-".join([*name_version, tag]) + ".whl")
        os.makedirs(out, exist_ok=True)
        with zipfile.ZipFile(target_path, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:  # the dist-info last, as wheels have it
                if dist_info not in path:
                    archive.write(path, os.path.relpath(path, unpacked))
            for path in files:
                if dist_info in path:
                    archive.write(path, os.path.relpath(path, unpacked))
    print(
        f"prebuild: {kernels} kernel and {fused} fused-step cache files added in {time.perf_counter() - start:.0f} s: "
        f"{target_path}",
        file=sys.stderr,
    )
    return target_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheel", help="the wheel python -m build made")
    parser.add_argument("--out", default=None, help="folder of the new wheel (default: the input's)")
    parser.add_argument(
        "--targets",
        default="x86-64-v3,generic",
        help="comma-separated NUMBA_CPU_NAME values, best first ('host': this CPU only)",
    )
    parser.add_argument("--dtype", default="both", choices=["float32", "float64", "both"])
    parser.add_argument("--only", default="", help="only the warmup recipes whose name contains this")
    parser.add_argument("--jobs", type=int, default=1, help="warmup worker processes")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--seed", default=None, help="folder of kernel cache files compiled from these sources to start from"
    )
    args = parser.parse_args(argv)
    prebuild(args.wheel, args.out or os.path.dirname(os.path.abspath(args.wheel)), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
