"""The timing cache (tune/timing_cache.py): tactic choices by problem, kept in the runtime cache
per GPU, read by the next process, merged with what another process kept, and ignored (tuning
then times everything) where what is kept cannot be read."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from rtxrt.backends.cuda.cache.runtime_cache import RuntimeCache
from rtxrt.backends.cuda.device import DeviceInfo
from rtxrt.backends.cuda.tune.timing_cache import TimingCache, problem_digest

GPU = DeviceInfo(0, "NVIDIA GeForce RTX 3080", (8, 6), "sm_86", 68, 10 << 30, "12.8", "12.8", "12.9")


def test_choices_kept_by_one_process_are_read_by_the_next(tmp_path):
    TimingCache(RuntimeCache(tmp_path), GPU).add({"a" * 32: "mma 64x64x32_w2x2_s2"})
    assert TimingCache(RuntimeCache(tmp_path), GPU).read() == {"a" * 32: "mma 64x64x32_w2x2_s2"}


def test_choices_are_merged_with_those_kept_meanwhile(tmp_path):
    first, second = TimingCache(RuntimeCache(tmp_path), GPU), TimingCache(RuntimeCache(tmp_path), GPU)
    first.add({"a" * 32: "cublas"})
    second.add({"b" * 32: "mma 128x64x32_w2x2_s2"})
    assert first.read() == {"a" * 32: "cublas", "b" * 32: "mma 128x64x32_w2x2_s2"}


def test_another_gpu_or_driver_keeps_choices_of_its_own(tmp_path):
    TimingCache(RuntimeCache(tmp_path), GPU).add({"a" * 32: "cublas"})
    for other in (replace(GPU, name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9)),
                  replace(GPU, driver_version="13.0")):
        assert TimingCache(RuntimeCache(tmp_path), other).read() == {}


def test_a_damaged_timing_cache_reads_as_empty(tmp_path):
    cache = RuntimeCache(tmp_path)
    timings = TimingCache(cache, GPU)
    timings.add({"a" * 32: "cublas"})
    for blob in (cache.entry(timings.key).path / "blobs").iterdir():
        blob.write_bytes(b"{not json")
    assert TimingCache(RuntimeCache(tmp_path), GPU).read() == {}
    timings.add({"b" * 32: "cublas"})  # and it is written afresh
    assert TimingCache(RuntimeCache(tmp_path), GPU).read() == {"b" * 32: "cublas"}


def test_a_problem_digest_names_the_problem():
    key = (("float16", (8, 32)), (("mma", 8, 32),))
    assert problem_digest(key) == problem_digest(tuple(key)) != problem_digest((("float16", (8, 33)), key[1]))
    assert len(problem_digest(key)) == 32


def test_a_timing_cache_locked_elsewhere_is_left_alone(tmp_path):
    cache = RuntimeCache(tmp_path, lock_timeout=0.1)
    timings = TimingCache(cache, GPU)
    with cache.lock(timings.key):  # (another process, holding it past the timeout)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(timings.add, {"a" * 32: "cublas"}).result()
    assert timings.read() == {}
