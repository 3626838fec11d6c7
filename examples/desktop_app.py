"""A desktop app (Tk) that loads a model at startup, shows the JIT's progress and classifies
an image without freezing its window.

    python examples/desktop_app.py [IMAGE]              # the window (needs a display)
    python examples/desktop_app.py --self-test          # the same flow headless; exit 0 = it works

The app's logic is the Controller: it loads the model in a worker thread (on the first run:
export, `rtxrt aot`, then the JIT inside rtxrt.Session, whose progress callback it forwards),
runs inference in another worker thread, and reports everything as events on a queue. The UI
thread drains that queue on a timer (Tk's ``after``), so Tk is only ever touched from its own
thread and the window keeps responding while the workers run. The model is classify_image.py's
ResNet-18 (random weights), sharing its work dir.
"""
from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import classify_image
import numpy as np

POLL_MS = 30  # how often the UI thread drains the controller's events


@dataclass(frozen=True)
class Event:
    """kind: "status" (text), "progress" (JIT stage, done, total), "ready" (text: the
    backend), "result" (value: top-5 list, seconds: inference time) or "error" (text)."""

    kind: str
    text: str = ""
    done: int = 0
    total: int = 0
    value: Any = None
    seconds: float = 0.0


class Controller:
    """Model loading and inference in worker threads; events for the UI on a queue."""

    def __init__(self, work_dir: Path | None = None, size: int = classify_image.IMAGE_SIZE):
        self.work_dir = work_dir
        self.size = size
        self.events: queue.Queue[Event] = queue.Queue()
        self.session = None
        self._busy = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.session is not None

    def start(self) -> None:
        """Load the model in the background; "ready" or "error" follows on the queue."""
        threading.Thread(target=self._load, name="model-loader", daemon=True).start()

    def classify(self, image: np.ndarray) -> bool:
        """Classify ``image`` (height x width x 3 in [0, 1]) in the background; False (and
        nothing started) while the model is still loading or another inference runs."""
        if not self.ready or not self._busy.acquire(blocking=False):
            return False
        threading.Thread(target=self._infer, args=(image,), name="inference", daemon=True).start()
        return True

    def poll(self) -> list[Event]:
        """The events so far, oldest first; never blocks (called by the UI thread)."""
        events = []
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                return events

    def _load(self) -> None:
        try:
            self.events.put(Event("status", "preparing the model (first run: export and rtxrt aot)..."))
            path = classify_image.prepare(self.work_dir, self.size)
            self.events.put(Event("status", "loading the model (the JIT, on the first run on this GPU)..."))
            session = classify_image.open_session(path, progress=self._progress)
        except Exception as exc:  # noqa: BLE001 -- shown in the window, not lost with a dying thread
            self.events.put(Event("error", f"{type(exc).__name__}: {exc}"))
            return
        self.session = session
        self.events.put(Event("ready", session.backend))

    def _progress(self, stage: str, done: int, total: int) -> None:  # runs in the loader thread
        self.events.put(Event("progress", stage, done, total))

    def _infer(self, image: np.ndarray) -> None:
        try:
            start = time.perf_counter()
            (logits,) = self.session.run(["output"], {"image": classify_image.to_input(image)})
            self.events.put(Event("result", value=classify_image.top5(logits[0]), seconds=time.perf_counter() - start))
        except Exception as exc:  # noqa: BLE001 -- as in _load
            self.events.put(Event("error", f"{type(exc).__name__}: {exc}"))
        finally:
            self._busy.release()


def describe(event: Event) -> str:
    """One line of text for the status bar or the log."""
    if event.kind == "progress":
        return f"JIT {event.text}: {event.done}/{event.total}"
    if event.kind == "ready":
        return f"ready on {event.text}"
    if event.kind == "result":
        best = ", ".join(f"{label} ({p:.2f})" for label, p in event.value)
        return f"top-5: {best}  [{event.seconds * 1000:.0f} ms]"
    return event.text


class TkApp:
    """The window: a status line, a progress bar, a Classify button and the result."""

    def __init__(self, root: Any, controller: Controller, image: np.ndarray):
        from tkinter import ttk

        self.root, self.controller, self.image = root, controller, image
        root.title("rtxrt desktop example")
        self.status = ttk.Label(root, text="starting...", width=70)
        self.bar = ttk.Progressbar(root, length=420, mode="indeterminate")
        self.button = ttk.Button(root, text="Classify", command=self.on_classify, state="disabled")
        self.result = ttk.Label(root, text="")
        for widget in (self.status, self.bar, self.button, self.result):
            widget.pack(padx=12, pady=6)
        self.bar.start(20)  # indeterminate until the JIT reports counts
        self.last_event: Event | None = None
        root.after(POLL_MS, self.poll)

    def on_classify(self) -> None:
        if self.controller.classify(self.image):
            self.button.configure(state="disabled")
            self.result.configure(text="running...")

    def poll(self) -> None:
        """Runs on the UI thread every POLL_MS: applies the workers' events to the widgets."""
        for event in self.controller.poll():
            self.apply(event)
        self.root.after(POLL_MS, self.poll)

    def apply(self, event: Event) -> None:
        self.last_event = event
        if event.kind == "progress":
            self.bar.stop()
            self.bar.configure(mode="determinate", maximum=max(event.total, 1), value=event.done)
        elif event.kind == "ready":
            self.bar.stop()
            self.bar.configure(mode="determinate", maximum=1, value=1)
            self.button.configure(state="normal")
        elif event.kind in ("result", "error"):
            self.button.configure(state="normal" if self.controller.ready else "disabled")
            if event.kind == "error":
                self.bar.stop()
            self.result.configure(text=describe(event))
            return
        self.status.configure(text=describe(event))


def self_test(controller: Controller, image: np.ndarray, timeout: float = 600.0) -> int:
    """The app's flow without a window: a loop standing in for the UI thread polls the events,
    presses "Classify" once the model is ready, and stops at the result. Exit status 0 when a
    result came, with the longest pause of the loop (it must stay responsive throughout)."""
    controller.start()
    deadline = time.monotonic() + timeout
    last_tick, longest_pause, pressed = time.monotonic(), 0.0, False
    while time.monotonic() < deadline:
        for event in controller.poll():
            print(describe(event), flush=True)
            if event.kind == "error":
                return 1
            if event.kind == "result":
                print(f"self-test passed: the UI loop never paused longer than {longest_pause * 1000:.0f} ms")
                return 0
        if controller.ready and not pressed:
            pressed = controller.classify(image)
            print("Classify pressed" if pressed else "Classify refused", flush=True)
        time.sleep(POLL_MS / 1000)
        now = time.monotonic()
        longest_pause, last_tick = max(longest_pause, now - last_tick), now
    print(f"self-test failed: no result within {timeout:.0f} s")
    return 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", type=Path, help="a picture file or a .npy array (default: drawn)")
    parser.add_argument("--self-test", action="store_true", help="run the whole flow headless and exit")
    parser.add_argument("--size", type=int, default=classify_image.IMAGE_SIZE, help="the model's input size")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the exported models are kept")
    args = parser.parse_args(argv)

    controller = Controller(args.work_dir, args.size)
    image = classify_image.load_image(args.image, args.size)
    if args.self_test:
        return self_test(controller, image)
    import tkinter

    try:
        root = tkinter.Tk()
    except tkinter.TclError as exc:
        sys.exit(f"no display for the window ({exc}); try --self-test")
    TkApp(root, controller, image)
    controller.start()
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
