"""The offline bundle: built from this repo, installed into a fresh venv with no network,
prewarm reports why it could not run on a machine without a GPU, and a damaged bundle is refused.

Slow-ish (about 15 s: one wheel build, one venv, one offline pip install) but part of the default
run: it is the only test that installs rtxrt the way an end user gets it."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.parse
from pathlib import Path

import numpy as np
import onnx
import pytest

import rtxrt
from rtxrt.aot import build_rtxir
from rtxrt.samples import default_model

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "installer" / "build_bundle.py"
APP = {
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
                      '[project]\nname = "tinyapp"\nversion = "1.0"\ndependencies = ["rtxrt"]\n',
    "tinyapp/__init__.py": "import rtxrt\n\n\ndef classify(model, image):\n"
                           "    return rtxrt.Session(model, fallback='cpu', progress=False).run(None, {'image': image})[0]\n",
}
# Runs inside the installed venv: both packages must come from it, not from this checkout.
CHECK = """
import sys, warnings, numpy as np, rtxrt, tinyapp
assert rtxrt.__file__.startswith(sys.prefix) and tinyapp.__file__.startswith(sys.prefix), (rtxrt.__file__, sys.prefix)
image = np.load(sys.argv[2])
warnings.simplefilter("ignore")
session = rtxrt.Session(sys.argv[1], fallback="cpu", progress=False)
np.savez(sys.argv[3], session=session.run(None, {"image": image})[0], app=tinyapp.classify(sys.argv[1], image))
"""
# Runs inside the installed venv on a GPU machine: where the model ran and what loading it cost.
GPU_CHECK = """
import json, sys, numpy as np, rtxrt
session = rtxrt.Session(sys.argv[1], progress=False)
session.run(None, {"image": np.load(sys.argv[2])})
print(json.dumps({"rtxrt": rtxrt.__file__, "on_gpu": session.on_gpu, "from_cache": session.stats["from_cache"],
                  "kernels_compiled": session.stats["kernels_compiled"]}))
"""


def clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH (the venv must not see this checkout) and any HTTP attempt fails at once."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", no_proxy="", **extra)
    return env


def run(args: list, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=False, cwd=cwd, env=clean_env(**extra),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("installer")


@pytest.fixture(scope="module")
def model(work) -> Path:
    onnx.save(default_model(image_size=32, width=8), str(work / "x.onnx"))
    build_rtxir(work / "x.onnx", work / "x.rtxir")
    return work / "x.rtxir"


def index_reachable() -> bool:
    """Whether pip's package index answers (a machine without a network cannot build a bundle)."""
    index = urllib.parse.urlsplit(os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple")
    try:
        socket.create_connection((index.hostname, index.port or 443), timeout=5).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def bundle(work, model, request) -> Path:
    project = work / "tinyapp"
    for name, text in APP.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    # pip's download cache outlives the test run (CI: restore .pytest_cache), so re-runs don't re-fetch wheels.
    pytest_cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    cache = pytest_cache.mkdir("rtxrt-installer-pip") if pytest_cache else work / "pip-cache"
    out = work / "bundle"
    if not index_reachable():
        pytest.skip("no package index reachable: the bundle builder downloads the wheels it packs")
    done = subprocess.run([sys.executable, BUILD, "--models", model, "--project", project, "--out", out, "--archive"],
                          check=False, cwd=work, env={**os.environ, "PIP_CACHE_DIR": str(cache)},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def installed(work, bundle) -> tuple[Path, subprocess.CompletedProcess]:
    venv = work / "venv"
    done = run([sys.executable, bundle / "install.py", "--venv", venv, "--cache-dir", work / "cache"], cwd=work,
               PIP_NO_INDEX="1")
    return venv, done


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def test_bundle_layout_and_manifest(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    wheels = sorted(p.name for p in (bundle / "wheelhouse").iterdir())
    assert "rtxrt-0.1.0-py3-none-any.whl" in wheels and "tinyapp-1.0-py3-none-any.whl" in wheels
    assert {"numpy", "onnx", "ml_dtypes", "platformdirs", "filelock", "tqdm"} <= set(manifest["wheels"])
    assert manifest["rtxrt"] == rtxrt.__version__ and manifest["models"] == ["x.rtxir"]
    assert manifest["install"] == ["rtxrt==0.1.0", "tinyapp==1.0"]
    on_disk = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [name for name in on_disk if name != "manifest.json"]
    with tarfile.open(bundle.with_name("bundle.tar.gz")) as tar:
        assert sorted(tar.getnames()) == [f"bundle/{name}" for name in on_disk]


def test_installs_offline_and_the_installed_runtime_matches_this_one(installed, bundle, model, work):
    venv, done = installed
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    # No index was consulted: only the bundle's wheelhouse, and not one URL in pip's log.
    assert "http" not in log.lower() and "Looking in indexes" not in log
    assert f"Looking in links: {bundle / 'wheelhouse'}" in log
    assert "Successfully installed" in log and "rtxrt-0.1.0" in log and "tinyapp-1.0" in log

    image = np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.save(work / "image.npy", image)
    check = run([venv_python(venv), "-c", CHECK, bundle / "models" / "x.rtxir", work / "image.npy", work / "out.npz"],
                cwd=work)
    assert check.returncode == 0, check.stderr
    with pytest.warns(RuntimeWarning):
        expected = rtxrt.Session(model, fallback="cpu", progress=False).run(None, {"image": image})[0]
    got = np.load(work / "out.npz")
    # Same reference backend; the venv's numpy may be another build, so allow float32 rounding.
    np.testing.assert_allclose(got["session"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["app"], expected, rtol=1e-5, atol=1e-6)


def test_prewarm_without_a_gpu_says_why_and_the_install_still_succeeds(installed):
    _, done = installed
    assert done.returncode == 0
    # The bundle has no cuda12 extra, so even on a GPU machine the venv has no CuPy to JIT with.
    assert "x.rtxir: not prewarmed (CuPy is not installed" in done.stdout
    assert "prewarm failed (rtxrt prewarm exited 1 after" in done.stdout
    assert "the install succeeded and the app works: each model is JIT-compiled on first use" in done.stdout


def test_background_low_priority_prewarm_returns_at_once_and_logs(installed, bundle, work):
    venv, _ = installed
    log = work / "bg" / "prewarm.log"
    done = run([sys.executable, bundle / "install.py", "--venv", venv, "--cache-dir", work / "cache",
                "--background", "--low-priority", "--log", log], cwd=work)
    assert done.returncode == 0, done.stderr
    assert f"low priority); log: {log}" in done.stdout
    deadline = time.monotonic() + 60
    while "prewarmed 0 of 1 model(s)" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "background prewarm never finished"
        time.sleep(0.2)
    assert "not prewarmed (CuPy is not installed" in log.read_text()


def test_a_damaged_bundle_is_refused_naming_the_file(bundle, work):
    damaged = work / "damaged"
    shutil.copytree(bundle, damaged)
    wheel = damaged / "wheelhouse" / "rtxrt-0.1.0-py3-none-any.whl"
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    done = run([sys.executable, damaged / "install.py", "--venv", work / "never"], cwd=work)
    assert done.returncode == 1
    assert "damaged bundle: wheelhouse/rtxrt-0.1.0-py3-none-any.whl does not match its checksum" in done.stderr
    assert not (work / "never").exists()


def test_build_refuses_a_missing_model_naming_it(work):
    done = run([sys.executable, BUILD, "--models", work / "missing.rtxir", "--out", work / "nothing"], cwd=work)
    assert done.returncode == 1
    assert f"model not found: {work / 'missing.rtxir'}" in done.stderr
    assert not (work / "nothing").exists()


@pytest.mark.gpu
def test_on_a_gpu_prewarm_fills_the_cache_and_the_app_then_compiles_nothing(bundle, work):
    # CuPy and CUDA's libraries come from this machine's environment (a .pth file): a bundle for
    # GPU users carries them (--extras cuda12), but their wheels cannot be fetched where this runs.
    venv = work / "gpu-venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, env=clean_env())
    purelib = subprocess.run([venv_python(venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, env=clean_env()).stdout.strip()
    here = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    Path(purelib, "gpu-machine.pth").write_text("\n".join(here) + "\n")

    cache = work / "gpu-cache"
    done = run([sys.executable, bundle / "install.py", "--venv", venv, "--cache-dir", cache], cwd=work,
               PIP_NO_INDEX="1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "x.rtxir: cuda (" in done.stdout and " kernels in " in done.stdout, done.stdout
    assert "prewarm done in " in done.stdout and "the app's first launch will not compile anything" in done.stdout
    assert [p for p in cache.rglob("*") if p.is_file()], "prewarm left the runtime cache empty"
    print("\n".join(line for line in done.stdout.splitlines() if "prewarm" in line or "x.rtxir" in line))

    np.save(work / "gpu-image.npy", np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32))
    app = run([venv_python(venv), "-c", GPU_CHECK, bundle / "models" / "x.rtxir", work / "gpu-image.npy"], cwd=work,
              RTXRT_CACHE_DIR=str(cache))
    assert app.returncode == 0, app.stderr
    report = json.loads(app.stdout.splitlines()[-1])
    assert report["rtxrt"].startswith(str(venv))  # the bundle's rtxrt, not this checkout
    assert report["on_gpu"] and report["from_cache"] and report["kernels_compiled"] == 0, report
