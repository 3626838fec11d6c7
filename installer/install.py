"""Install this offline bundle (standard library only: it runs before anything is installed).

    python install.py [--venv PATH | --no-venv] [--cache-dir DIR] [--no-prewarm] [--background] [--low-priority]

1. Verifies every file against manifest.json (a damaged bundle is refused, naming the file).
2. Creates the virtual environment (default: ./venv beside this script), or uses this
   interpreter with --no-venv.
3. Installs rtxrt (and the app, if bundled) from wheelhouse/ with pip --no-index: no network.
4. Prewarms: JITs models/*.rtxir into the runtime cache (``rtxrt prewarm``) so the app's first
   launch loads instead of compiling. --background starts it detached and returns at once
   (the log file is printed); --low-priority runs it at the lowest CPU priority. If prewarm
   fails (no GPU, no driver...), the install still succeeds: the app JITs on first use.

Exit codes: 0 installed (whatever prewarm did), 1 bundle damaged, incomplete or for another
Python, 2 bad command line, 3 creating the environment or pip install failed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

BUNDLE = Path(__file__).resolve().parent
EXIT_OK, EXIT_BAD_BUNDLE, EXIT_USAGE, EXIT_INSTALL_FAILED = 0, 1, 2, 3
WINDOWS = sys.platform == "win32"


class InstallError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def load_manifest(bundle: Path) -> dict:
    """The manifest, after checking every file it lists (size, then SHA-256)."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InstallError(f"damaged bundle: manifest.json is missing or unreadable ({exc})", EXIT_BAD_BUNDLE) from exc
    for name, expected in sorted(files.items()):
        path = bundle / name
        if not path.is_file():
            raise InstallError(f"damaged bundle: {name} is missing", EXIT_BAD_BUNDLE)
        if path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
            raise InstallError(f"damaged bundle: {name} does not match its checksum in manifest.json "
                               "(copy the bundle again)", EXIT_BAD_BUNDLE)
    return manifest


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (build_bundle.py writes the manifest with it)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_python(manifest: dict) -> None:
    wanted = manifest["target"]["python_version"]
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if wanted != running:
        raise InstallError(f"this bundle's wheels are for Python {wanted}, but install.py runs on Python {running}: "
                           f"run it with a Python {wanted} interpreter", EXIT_BAD_BUNDLE)


def environment_python(venv_dir: Path | None) -> Path:
    """The interpreter to install into: a (new or existing) virtual environment, or this one."""
    if venv_dir is None:
        return Path(sys.executable)
    python = venv_dir / ("Scripts/python.exe" if WINDOWS else "bin/python")
    if not python.exists():
        print(f"creating the virtual environment {venv_dir}", flush=True)
        try:
            venv.EnvBuilder(with_pip=True).create(venv_dir)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise InstallError(f"could not create the virtual environment {venv_dir}: {exc}", EXIT_INSTALL_FAILED) from exc
    return python


def offline_pip_env() -> dict[str, str]:
    """pip may not see any index: no config files (they may name one), no PIP_* settings from outside."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_INDEX_URL="", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1")
    return env


def pip_install(python: Path, bundle: Path, requirements: list[str]) -> None:
    command = [str(python), "-m", "pip", "install", "--no-index", "--find-links", str(bundle / "wheelhouse"),
               *requirements]
    print(f"installing {' '.join(requirements)} from {bundle / 'wheelhouse'} (no network)", flush=True)
    if subprocess.run(command, check=False, env=offline_pip_env()).returncode != 0:
        raise InstallError(f"pip install failed (see pip's message above); the bundle may not match this platform "
                           f"({sys.platform}, Python {sys.version_info[0]}.{sys.version_info[1]})", EXIT_INSTALL_FAILED)


def prewarm_command(python: Path, models: list[Path], args: argparse.Namespace) -> list[str]:
    command = [str(python), "-m", "rtxrt.cli", "prewarm", *map(str, models)]
    if args.cache_dir:
        command += ["--cache-dir", str(args.cache_dir)]
    if args.low_priority:
        command.append("--low-priority")
    return command


def prewarm_background(command: list[str], log: Path, low_priority: bool) -> None:
    """Detached: survives this script, its terminal and (on POSIX) its session."""
    log.parent.mkdir(parents=True, exist_ok=True)
    options: dict = {"start_new_session": True}
    if WINDOWS:
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
        options = {"creationflags": flags | (subprocess.IDLE_PRIORITY_CLASS if low_priority else 0)}
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   cwd=BUNDLE, **options)
    print(f"prewarm running in the background (pid {process.pid}{', low priority' if low_priority else ''}); "
          f"log: {log}")


def prewarm_foreground(command: list[str]) -> None:
    """Passes rtxrt prewarm's output through. Its progress bars need our terminal as their stderr,
    so the output is only read (to repeat the reasons at the end) when it is not a terminal."""
    started = time.perf_counter()
    print("prewarming the models (JIT into the runtime cache)...")
    lines: list[str] = []
    if sys.stderr.isatty():
        code = subprocess.run(command, check=False, cwd=BUNDLE).returncode
    else:  # one stream, so rtxrt's lines keep their order in a log
        process = subprocess.Popen(command, cwd=BUNDLE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace")
        for line in process.stdout:
            sys.stdout.write(line)
            lines.append(line.strip())
        code = process.wait()
    seconds = time.perf_counter() - started
    if code == 0:
        print(f"prewarm done in {seconds:.1f} s: the app's first launch will not compile anything")
        return
    why = [line for line in lines if "not prewarmed" in line] or [line for line in lines if line][-1:]
    print(f"prewarm failed (rtxrt prewarm exited {code} after {seconds:.1f} s): "
          + ("; ".join(why) or "see its messages above"))
    print("the install succeeded and the app works: each model is JIT-compiled on first use instead")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="install.py", description=__doc__.split("\n\n")[0],
                                epilog="exit codes: 0 installed, 1 bad bundle, 2 bad command line, 3 install failed")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--venv", type=Path, default=BUNDLE / "venv", help="virtual environment to create or reuse "
                                                                         "(default: venv/ beside install.py)")
    where.add_argument("--no-venv", action="store_true", help="install into the interpreter running install.py")
    p.add_argument("--cache-dir", type=Path, help="runtime cache to prewarm (default: RTXRT_CACHE_DIR, else the "
                                                  "user cache directory)")
    p.add_argument("--no-prewarm", action="store_true", help="skip prewarm: models are JIT-compiled on first use")
    p.add_argument("--background", action="store_true", help="prewarm detached and return at once")
    p.add_argument("--low-priority", action="store_true", help="prewarm at the lowest CPU priority (nice 19)")
    p.add_argument("--log", type=Path, help="log of a --background prewarm (default: prewarm.log in the venv, "
                                            "or beside install.py with --no-venv)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # keep our lines in order with pip's and rtxrt's
    venv_dir = None if args.no_venv else args.venv.resolve()
    try:
        manifest = load_manifest(BUNDLE)
        check_python(manifest)
        python = environment_python(venv_dir)
        pip_install(python, BUNDLE, manifest["install"])
    except InstallError as exc:
        print(f"install.py: error: {exc}", file=sys.stderr)
        return exc.code
    print(f"installed into {venv_dir or sys.prefix}")
    models = [BUNDLE / "models" / name for name in manifest["models"]]
    if args.no_prewarm or not models:
        print("prewarm skipped: models are JIT-compiled on first use")
        return EXIT_OK
    command = prewarm_command(python, models, args)
    if args.background:
        prewarm_background(command, args.log or (venv_dir or BUNDLE) / "prewarm.log", args.low_priority)
    else:
        prewarm_foreground(command)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
