"""Build an offline install bundle: a wheelhouse of rtxrt and its runtime dependencies for a
target platform, the app's .rtxir models, the app itself (optional), install.py and a manifest.

    python installer/build_bundle.py --models a.rtxir b.rtxir --out bundle [--project APP]
        [--archive [tar.gz|zip]] [--platform manylinux2014_x86_64 --python-version 3.11] [--extras cuda12]

Wheels come from the package index pip is configured with here (pip config, PIP_* variables);
the bundle itself installs with no network (see install.py). Exit codes: 0 built, 1 bad input
or a pip failure (the message names the model, path or package), 2 bad command line.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

# install.py is standard-library only and sits beside this script (its folder is on sys.path):
# the manifest uses the very checksum the installer verifies.
from install import file_sha256

REPO = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = Path(__file__).resolve().parent / "install.py"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
# Build outputs, caches and VCS data never belong in a wheel built from a source tree.
SOURCE_IGNORE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                       ".ruff_cache", ".venv", "venv")
# Fixed archive/wheel timestamps (1980-01-01, the earliest a zip can hold): same inputs, same bytes.
EPOCH = 315532800


class BundleError(Exception):
    """A problem with the inputs or a failed pip step; the message says which file or package."""


@dataclass
class Target:
    """The end user's interpreter: None means this machine's (the one running the build)."""

    platform: str | None = None
    python_version: str | None = None
    extras: list[str] = field(default_factory=list)

    def pip_args(self) -> list[str]:
        args = ["--only-binary=:all:"]
        if self.platform:
            args += ["--platform", self.platform, "--implementation", "cp"]
        if self.python_version:
            args += ["--python-version", self.python_version]
        return args

    def describe(self) -> dict:
        return {
            "platform": self.platform or sysconfig.get_platform(),
            "python_version": self.python_version or f"{sys.version_info[0]}.{sys.version_info[1]}",
            "extras": self.extras,
        }


def build_bundle(models: list[Path], out: Path, *, project: Path | None = None, target: Target | None = None,
                 archive: str | None = None) -> Path:
    """Write the bundle folder ``out`` (and ``out.tar.gz``/``out.zip`` if ``archive``); returns its path."""
    target = target or Target()
    models = _check_models(models)
    if project is not None and not project.is_dir():
        raise BundleError(f"project folder not found: {project}")
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} already exists and is not empty: remove it or choose another --out")
    try:
        return _build(models, out, project, target, archive)
    except BaseException:  # no half-written bundle that looks usable
        shutil.rmtree(out, ignore_errors=True)
        raise


def _build(models: list[Path], out: Path, project: Path | None, target: Target, archive: str | None) -> Path:
    wheelhouse = out / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)

    rtxrt_wheel = _build_wheel(REPO, wheelhouse, "rtxrt")
    extras = f"[{','.join(target.extras)}]" if target.extras else ""
    requirements = [f"rtxrt{extras} @ {rtxrt_wheel.resolve().as_uri()}"]
    app: dict | None = None
    if project is not None:
        if (project / "pyproject.toml").exists() or (project / "setup.py").exists():
            app_wheel = _build_wheel(project, wheelhouse, project.name)
            requirements.append(f"{_wheel_name(app_wheel)} @ {app_wheel.resolve().as_uri()}")
            app = {"wheel": f"wheelhouse/{app_wheel.name}", "name": _wheel_name(app_wheel),
                   "version": _wheel_version(app_wheel)}
        else:  # a plain folder of scripts: ship it as it is
            shutil.copytree(project, out / "app", ignore=SOURCE_IGNORE)
            app = {"folder": "app"}
    _download(requirements, wheelhouse, target)

    (out / "models").mkdir()
    for model in models:
        shutil.copyfile(model, out / "models" / model.name)
    shutil.copyfile(INSTALL_SCRIPT, out / "install.py")
    _write_manifest(out, rtxrt_wheel, extras, app, target)
    if archive:
        return _archive(out, archive)
    return out


def _check_models(models: list[Path]) -> list[Path]:
    seen: dict[str, Path] = {}
    for model in models:
        if not model.is_file():
            raise BundleError(f"model not found: {model}")
        if model.suffix != ".rtxir":
            raise BundleError(f"{model} is not an .rtxir file (compile it first: rtxrt aot {model} -o MODEL.rtxir)")
        if model.name in seen:
            raise BundleError(f"two models named {model.name}: {seen[model.name]} and {model} (rename one)")
        seen[model.name] = model
    return list(models)


def _build_wheel(source: Path, wheelhouse: Path, what: str) -> Path:
    """``pip wheel --no-deps`` from a clean copy, so stale build/ folders never leak into the
    wheel. rtxrt's is pure Python (RTXRT_PURE_WHEEL, setup.py): this machine's compiled plugin
    library would not load on another platform; rtxrt_ep compiles it at first use there."""
    with tempfile.TemporaryDirectory(prefix="rtxrt-bundle-") as tmp:
        copy = Path(tmp) / source.name
        shutil.copytree(source, copy, ignore=SOURCE_IGNORE)
        built = Path(tmp) / "wheel"
        _pip(["wheel", "--no-deps", "--wheel-dir", str(built), str(copy)], f"building the {what} wheel")
        wheels = list(built.glob("*.whl"))
        if len(wheels) != 1:
            raise BundleError(f"building the {what} wheel from {source} gave {len(wheels)} wheels, expected one")
        return Path(shutil.copy2(wheels[0], wheelhouse / wheels[0].name))


def _download(requirements: list[str], wheelhouse: Path, target: Target) -> None:
    """Every runtime dependency as a wheel for the target, resolved together with the local wheels."""
    _pip(["download", "--dest", str(wheelhouse), "--find-links", str(wheelhouse), *target.pip_args(), *requirements],
         f"downloading dependencies for {target.describe()['platform']}, Python {target.describe()['python_version']}")


_PIP_MISSING = re.compile(r"(?:No matching distribution found for|satisfies the requirement) ([^\s;(]+)")


def _pip(args: list[str], doing: str) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "RTXRT_PURE_WHEEL": "1"}
    done = subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"],
                          check=False, capture_output=True, text=True, env=env)
    if done.returncode == 0:
        return
    output = (done.stdout + done.stderr).strip()
    missing = _PIP_MISSING.search(output)
    what = f": no wheel of {missing.group(1)} for this target" if missing else ""
    tail = "\n".join(output.splitlines()[-15:])
    raise BundleError(f"pip failed {doing}{what}\n  pip {' '.join(args[:1])} said:\n{tail}")


def _wheel_name(wheel: Path) -> str:
    return wheel.name.split("-")[0]


def _wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def _write_manifest(out: Path, rtxrt_wheel: Path, extras: str, app: dict | None, target: Target) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    install = [f"rtxrt{extras}=={_wheel_version(rtxrt_wheel)}"]
    if app and "name" in app:
        install.append(f"{app['name']}=={app['version']}")
    manifest = {
        "format": MANIFEST_FORMAT,
        "rtxrt": _wheel_version(rtxrt_wheel),
        "target": target.describe(),
        "install": install,
        "app": app,
        "wheels": {_wheel_name(w): _wheel_version(w) for w in sorted((out / "wheelhouse").glob("*.whl"))},
        "models": sorted(p.name for p in (out / "models").glob("*.rtxir")),
        "files": {p.relative_to(out).as_posix(): {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in files},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _archive(out: Path, kind: str) -> Path:
    """A tar.gz or zip with the bundle folder at its top; sorted members and fixed times."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    if kind == "zip":
        path = out.with_name(out.name + ".zip")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for p in files:
                info = zipfile.ZipInfo(f"{out.name}/{p.relative_to(out).as_posix()}", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, p.read_bytes())
        return path
    path = out.with_name(out.name + ".tar.gz")
    with (path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=EPOCH) as gz,
          tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar):
        for p in files:
            info = tarfile.TarInfo(f"{out.name}/{p.relative_to(out).as_posix()}")
            info.size, info.mtime, info.mode = p.stat().st_size, EPOCH, 0o644
            with p.open("rb") as f:
                tar.addfile(info, f)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build_bundle.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, nargs="+", required=True, help="the app's .rtxir files")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to create (must not exist or be empty)")
    p.add_argument("--project", type=Path, help="the app: a folder with pyproject.toml/setup.py (built as a wheel) "
                                                "or a plain folder (copied as app/)")
    p.add_argument("--archive", nargs="?", const="tar.gz", choices=["tar.gz", "zip"],
                   help="also write OUT.tar.gz (default) or OUT.zip")
    p.add_argument("--platform", help="target wheel platform tag, e.g. manylinux2014_x86_64 or win_amd64 "
                                      "(default: this machine's)")
    p.add_argument("--python-version", help="target Python, e.g. 3.11 (default: this interpreter's)")
    p.add_argument("--extras", nargs="*", default=[], help="rtxrt extras to bundle, e.g. cuda12 for GPU machines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = Target(args.platform, args.python_version, sorted(args.extras))
    try:
        path = build_bundle(args.models, args.out, project=args.project, target=target, archive=args.archive)
    except BundleError as exc:
        print(f"build_bundle: error: {exc}", file=sys.stderr)
        return 1
    manifest = json.loads((args.out / MANIFEST).read_text())
    archived = f" and {path}" if path != args.out else ""
    print(f"bundle: {args.out}{archived} ({len(manifest['wheels'])} wheels, {len(manifest['models'])} model(s), "
          f"for {manifest['target']['platform']}, Python {manifest['target']['python_version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
