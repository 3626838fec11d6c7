"""`rtxrt doctor`: every problem comes with its fix; one cause is one problem (what needs it is
skipped); without a GPU it says so and what still works."""
from __future__ import annotations

import json
import re
import stat
import sys
from types import SimpleNamespace

import pytest

from rtxrt import doctor
from rtxrt.cli import main
from rtxrt.doctor import Check, diagnose
from rtxrt.backends.cuda.cache.runtime_cache import RuntimeCache
from rtxrt.backends.cuda.cache.key import CacheKey
from rtxrt.backends.cuda.device import find_gpu

no_gpu_here = pytest.mark.skipif(find_gpu() is not None, reason="this machine has a GPU")
TOP_KEYS = {"schema", "ok", "gpu_available", "checks", "python", "rtxrt", "platform", "cupy", "driver", "nvrtc",
            "gpus", "cublas", "cache", "without_gpu"}


def _check(report: doctor.Report, name: str) -> Check:
    return next(c for c in report.checks if c.name == name)


def _key(ir_hash: str, gpu: str) -> CacheKey:
    return CacheKey(ir_hash, gpu, (8, 9), "12.8", "12.9", {"precision": "fp16"}, {})


# --- on this machine ---------------------------------------------------------------------------

@no_gpu_here
def test_without_a_gpu_it_says_so_and_what_still_works(tmp_path, capsys):
    assert main(["doctor", "--cache-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "No usable NVIDIA GPU on this machine" in out
    for works in ("rtxrt aot", "rtxrt inspect", "fallback='cpu'", "CPUExecutionProvider"):
        assert works in out
    # the GPU check fails, or is skipped because what it needs (CuPy, the driver) failed above
    assert re.search(r"^  (FAIL  gpu|--    gpu +skipped: needs )", out, re.MULTILINE) and "fix: " in out
    assert out.rstrip().endswith("(exit code 1)")


def test_json_is_one_object_with_stable_keys(tmp_path, capsys):
    code = main(["doctor", "--json", "--cache-dir", str(tmp_path)])
    report = json.loads(capsys.readouterr().out)
    assert set(report) == TOP_KEYS and report["schema"] == 1
    assert code == (0 if report["ok"] else 1)
    assert report["ok"] == all(c["ok"] is not False for c in report["checks"])
    names = [c["name"] for c in report["checks"]]
    for check in report["checks"]:
        assert set(check) == {"name", "ok", "detail", "fix", "needs"}
        assert check["ok"] is not False or check["fix"], f"problem without a fix: {check}"
        for need in check["needs"]:  # a skipped check names failed checks listed before it
            assert check["ok"] is None and names.index(need) < names.index(check["name"])
    assert set(report["cupy"]) == {"installed", "package", "version", "cuda_runtime"}
    assert set(report["driver"]) == {"present", "cuda_version"}
    assert set(report["nvrtc"]) == {"loadable", "version", "archs"}
    assert set(report["cublas"]) == {"loadable", "path"}
    assert set(report["cache"]) == {"dir", "source", "exists", "writable", "free_bytes", "size_bytes", "entries"}
    assert report["cache"]["dir"] == str(tmp_path) and report["cache"]["source"] == "argument"
    assert report["cache"]["writable"] and report["cache"]["free_bytes"] > 0
    assert [c["name"] for c in report["checks"]][:3] == ["python", "rtxrt", "cupy"]


@no_gpu_here
def test_json_without_a_gpu(tmp_path, capsys):
    assert main(["doctor", "--json", "--cache-dir", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and not report["gpu_available"] and report["gpus"] == []
    assert any("fallback='cpu'" in line for line in report["without_gpu"])


def test_nvrtc_reports_its_version_and_targets(tmp_path):
    pytest.importorskip("cupy")
    report = diagnose(tmp_path)
    nvrtc = report.facts["nvrtc"]
    assert _check(report, "nvrtc").ok and nvrtc["loadable"]
    assert nvrtc["version"].count(".") == 1 and "sm_75" in nvrtc["archs"] and "sm_86" in nvrtc["archs"]


# --- one cause, one problem --------------------------------------------------------------------

@pytest.fixture
def working_driver(monkeypatch):
    """The driver check passes whatever this machine has, so CuPy is the only thing missing."""
    def driver(report):
        report.facts["driver"].update(present=True, cuda_version="12.8")
        return [Check("driver", True, "supports CUDA 12.8")]

    monkeypatch.setattr(doctor, "_driver", driver)


def test_without_cupy_it_is_one_problem_and_what_needs_cupy_is_skipped(monkeypatch, working_driver, tmp_path):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` fails as when it is not installed
    report = diagnose(tmp_path)
    assert [(c.name, c.detail) for c in report.problems] == [
        ("cupy", "CuPy is not installed, so rtxrt cannot use a GPU")]
    assert "rtxrt[cuda12]" in _check(report, "cupy").fix
    for name in ("nvrtc", "gpu", "cublas"):
        check = _check(report, name)
        assert (check.ok, check.detail, check.needs) == (None, "skipped: needs CuPy (see 'cupy')", ("cupy",))
        assert not check.fix  # the fix is the one 'cupy' gives
    assert not report.ok and not report.gpu_available


def test_without_cupy_the_text_report_shows_one_fail_line(monkeypatch, working_driver, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert main(["doctor", "--cache-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("  FAIL")] == ["cupy"]
    for name in ("nvrtc", "gpu", "cublas"):
        assert re.search(rf"^  --    {name} +skipped: needs CuPy \(see 'cupy'\)$", out, re.MULTILINE), out
    assert out.rstrip().endswith("1 problem found, 3 checks skipped until they are fixed: apply the fixes above "
                                 "(exit code 1)")


def test_without_cupy_the_json_says_what_each_skipped_check_needs(monkeypatch, working_driver, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert main(["doctor", "--json", "--cache-dir", str(tmp_path)]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["cupy"]["ok"] is False and checks["cupy"]["needs"] == []
    assert checks["driver"]["ok"] is True
    for name in ("nvrtc", "gpu", "cublas"):
        assert checks[name]["ok"] is None and checks[name]["needs"] == ["cupy"]


def test_without_a_driver_the_gpu_check_is_skipped_and_the_driver_is_the_problem(monkeypatch, tmp_path):
    pytest.importorskip("cupy")

    def no_driver(report):
        return [Check("driver", False, "no NVIDIA driver found (libcuda.so.1: cannot open)", doctor.DRIVER_FIX)]

    monkeypatch.setattr(doctor, "_driver", no_driver)
    report = diagnose(tmp_path)
    gpu = _check(report, "gpu")
    assert (gpu.ok, gpu.needs) == (None, ("driver",)) and "needs a working NVIDIA driver (see 'driver')" in gpu.detail
    assert "driver" in [c.name for c in report.problems] and "gpu" not in [c.name for c in report.problems]


# --- the cache directory -----------------------------------------------------------------------

def test_the_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RTXRT_CACHE_DIR", str(tmp_path / "env"))
    report = diagnose()
    cache = report.facts["cache"]
    assert cache["dir"] == str(tmp_path / "env") and cache["source"] == "environment" and not cache["exists"]
    assert _check(report, "cache dir").ok and "created on first use" in _check(report, "cache dir").detail
    assert not (tmp_path / "env").exists()  # the doctor creates nothing


def test_a_cache_dir_under_a_file_is_reported_with_the_fix(tmp_path):
    (tmp_path / "file").write_text("x")
    report = diagnose(tmp_path / "file" / "cache")
    check = _check(report, "cache dir")
    assert check.ok is False and "is a file, not a folder" in check.detail
    assert "RTXRT_CACHE_DIR" in check.fix and not report.ok and not report.facts["cache"]["writable"]


def test_a_read_only_cache_dir_is_reported_with_the_fix(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    cache_dir.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        try:  # root (and some file systems) ignore the permission bits: nothing to test then
            (cache_dir / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("permission bits do not stop writes here (running as root?)")
        report = diagnose(cache_dir)
        check = _check(report, "cache dir")
        assert check.ok is False and "not writable" in check.detail and "RTXRT_CACHE_DIR" in check.fix
        assert not report.ok
    finally:
        cache_dir.chmod(stat.S_IRWXU)


def test_low_disk_space_is_reported_with_the_fix(tmp_path, monkeypatch):
    free = 10 * 1024**2
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: SimpleNamespace(total=2**40, used=2**40 - free, free=free))
    check = _check(diagnose(tmp_path), "disk")
    assert check.ok is False and "10.0 MiB free" in check.detail and "free disk space" in check.fix


def test_cache_entries_are_listed_with_model_gpu_size_and_last_used(tmp_path, capsys):
    cache = RuntimeCache(tmp_path)
    for key in (_key("ab" * 32, "NVIDIA GeForce RTX 4090"), _key("cd" * 32, "NVIDIA RTX A2000")):
        cache.get_or_build(key, lambda entry: entry.put("kernels/k.cubin", b"\x7fELF" * 1000))
    report = diagnose(tmp_path)
    entries = report.facts["cache"]["entries"]
    assert {(e["model"], e["gpu"], e["arch"]) for e in entries} == {
        ("ab" * 32, "NVIDIA GeForce RTX 4090", "sm_89"), ("cd" * 32, "NVIDIA RTX A2000", "sm_89")}
    assert all(e["size_bytes"] > 4000 and e["complete"] and e["last_used"].endswith("+00:00") for e in entries)
    assert report.facts["cache"]["size_bytes"] == cache.size()
    assert _check(report, "cache").detail.startswith("2 entries")

    main(["doctor", "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "abababababab  NVIDIA GeForce RTX 4090  sm_89" in out and "cdcdcdcdcdcd  NVIDIA RTX A2000" in out


# --- GPUs, simulated (the branches a machine without a GPU cannot reach) --------------------------

class FakeRuntime:
    def __init__(self, *gpus: tuple[str, tuple[int, int]]):
        self.gpus = gpus

    def getDeviceCount(self) -> int:
        return len(self.gpus)

    def getDeviceProperties(self, index: int) -> dict:
        name, (major, minor) = self.gpus[index]
        return {"name": name.encode(), "major": major, "minor": minor, "totalGlobalMem": 24 * 1024**3}


@pytest.fixture
def fake_gpus(monkeypatch):
    """Pretend the driver and cuBLAS are fine and these GPUs are present."""
    pytest.importorskip("cupy")
    from cupy.cuda import runtime

    def driver(report):
        report.facts["driver"].update(present=True, cuda_version="12.8")
        return [Check("driver", True, "supports CUDA 12.8")]

    def cublas(report):
        report.facts["cublas"].update(loadable=True, path="libcublas.so.12")
        return [Check("cublas", True, "libcublas.so.12")]

    monkeypatch.setattr(doctor, "_driver", driver)
    monkeypatch.setattr(doctor, "_cublas", cublas)

    def install(*gpus):
        fake = FakeRuntime(*gpus)
        monkeypatch.setattr(runtime, "getDeviceCount", fake.getDeviceCount)
        monkeypatch.setattr(runtime, "getDeviceProperties", fake.getDeviceProperties)
    return install


def test_a_supported_gpu_makes_the_report_ok(fake_gpus, tmp_path, capsys):
    fake_gpus(("NVIDIA GeForce RTX 4090", (8, 9)))
    report = diagnose(tmp_path)
    gpu = _check(report, "gpu 0")
    assert gpu.ok is True and "NVIDIA GeForce RTX 4090, compute capability 8.9, 24.0 GiB" in gpu.detail
    assert report.facts["gpus"] == [{"index": 0, "name": "NVIDIA GeForce RTX 4090", "compute_capability": [8, 9],
                                     "memory_bytes": 24 * 1024**3, "arch": "sm_89", "supported": True, "reason": None}]
    assert report.ok and report.gpu_available and report.to_json()["without_gpu"] == []
    assert main(["doctor", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "No usable NVIDIA GPU" not in out and out.rstrip().endswith("everything the GPU path needs is in place")


def test_a_gpu_below_compute_capability_7_5_is_a_problem_with_the_reason(fake_gpus, tmp_path):
    fake_gpus(("NVIDIA GeForce GTX 1080", (6, 1)))
    report = diagnose(tmp_path)
    gpu = _check(report, "gpu 0")
    assert gpu.ok is False and "compute capability 7.5" in gpu.detail and "Turing" in gpu.fix
    assert not report.ok and not report.gpu_available and report.to_json()["without_gpu"]


def test_an_old_gpu_beside_a_supported_one_is_information_not_a_problem(fake_gpus, tmp_path):
    fake_gpus(("NVIDIA GeForce GTX 1080", (6, 1)), ("NVIDIA RTX A4000", (8, 6)))
    report = diagnose(tmp_path)
    old, new = _check(report, "gpu 0"), _check(report, "gpu 1")
    assert old.ok is None and "device=1" in old.fix and new.ok is True
    assert report.ok


def test_a_gpu_newer_than_nvrtc_asks_for_a_newer_nvrtc(fake_gpus, tmp_path):
    fake_gpus(("NVIDIA Future GPU", (15, 0)))
    gpu = _check(diagnose(tmp_path), "gpu 0")
    assert gpu.ok is False and "NVRTC" in gpu.detail and "nvidia-cuda-nvrtc" in gpu.fix


def test_a_check_that_crashes_becomes_a_problem_not_a_traceback(monkeypatch, tmp_path):
    def broken(report):
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "_cublas", broken)
    check = _check(diagnose(tmp_path), "cublas")
    assert check.ok is False and "RuntimeError: boom" in check.detail and "--json" in check.fix


# --- on a GPU machine --------------------------------------------------------------------------

@pytest.mark.gpu
def test_on_a_gpu_machine_everything_is_in_place(tmp_path, capsys):
    from rtxrt.backends.cuda.device import probe

    info = probe(0)
    assert main(["doctor", "--json", "--cache-dir", str(tmp_path)]) == 0, capsys.readouterr()
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["gpu_available"] and report["without_gpu"] == []
    gpu = report["gpus"][0]
    assert gpu["name"] == info.name and tuple(gpu["compute_capability"]) == info.compute_capability
    assert gpu["arch"] == info.arch and gpu["supported"] and gpu["memory_bytes"] == info.total_memory
    assert report["driver"]["present"] and report["driver"]["cuda_version"] == info.driver_version
    assert report["nvrtc"]["version"] == info.nvrtc_version and report["cublas"]["loadable"]
    assert report["cupy"]["cuda_runtime"] == info.runtime_version
