"""Classify images sent by concurrent requests: lanes or dynamic batches, bounded.

How the cores are used is the runner's answer, as in ``predict``: a runner that
opens cheap single-threaded copies (``Runner.lanes``, LiteRT today) gets one lane
per worker, each decoding and classifying one image at a time; any other runner
gets decoding threads feeding one inference thread, which gathers images of
concurrent requests into batches of up to ``max_batch``, waiting at most
``batch_wait_ms`` after the first.

Admission is bounded: at most ``max_queue`` images wait or run; a request that
would go over is refused at once (:class:`Overloaded`), so memory never grows
with the load. Images whose request gave up (timeout, client gone) are skipped
when their turn comes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ImageError
from ..images import decode_image
from ..parallel import default_workers
from ..predict import Prediction, predictions
from ..runtime.base import Runner


class Overloaded(Exception):
    """The queue is full: the request is refused at once."""


@dataclass
class _Job:
    name: str
    data: bytes
    future: concurrent.futures.Future


class Scheduler:
    def __init__(
        self,
        runner: Runner,
        *,
        workers: int | None = None,
        max_batch: int = 16,
        batch_wait_ms: float = 5.0,
        max_queue: int = 64,
        max_pixels: int = 64_000_000,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.runner = runner
        self.workers = workers or default_workers()
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_ms / 1000
        self.max_queue, self.max_pixels = max_queue, max_pixels
        self.on_batch = on_batch or (lambda size: None)
        self.runner_lock = threading.Lock()
        """Held while the main runner classifies (batches, videos)."""
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._decoded: queue.SimpleQueue[tuple[_Job, object] | None] = queue.SimpleQueue()
        self._count_lock = threading.Lock()
        self._pending = 0
        self._threads: list[threading.Thread] = []
        self._lanes: list[Runner] | None = None
        self.started = False

    @property
    def mode(self) -> str:
        return "lanes" if self._lanes else "batches"

    @property
    def depth(self) -> int:
        """Images waiting or under way."""
        return self._pending

    def start(self) -> None:
        if self.started:
            return
        self._lanes = self.runner.lanes(self.workers)
        if self._lanes:
            targets = [(self._lane, (lane,)) for lane in self._lanes]
        else:
            targets = [(self._decoder, ())] * self.workers + [(self._batcher, ())]
        for index, (target, args) in enumerate(targets):
            thread = threading.Thread(
                target=target, args=args, name=f"nsfw-serve-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self.started = True

    def stop(self) -> None:
        """Finish what is queued, then end the threads and close the lanes."""
        if not self.started:
            return
        for _ in range(len(self._lanes) if self._lanes else self.workers):
            self._jobs.put(None)
        if not self._lanes:
            for thread in self._threads[:-1]:
                thread.join()
            self._decoded.put(None)
        for thread in self._threads:
            thread.join()
        for lane in self._lanes or ():
            lane.close()
        self._threads.clear()
        self.started = False

    def submit(self, items: list[tuple[str, bytes]]) -> list[concurrent.futures.Future]:
        """Queue ``(name, encoded image)`` items; Overloaded when they do not fit."""
        with self._count_lock:
            if self._pending + len(items) > self.max_queue:
                raise Overloaded(f"{self._pending} images queued, {self.max_queue} at most")
            self._pending += len(items)
        futures = []
        for name, data in items:
            future: concurrent.futures.Future = concurrent.futures.Future()
            futures.append(future)
            self._jobs.put(_Job(name, data, future))
        return futures

    async def classify(self, items: list[tuple[str, bytes]], timeout: float) -> list[Prediction]:
        """Predictions in item order; raises Overloaded, or TimeoutError after ``timeout`` s
        (the images not started yet are then skipped)."""
        futures = self.submit(items)
        try:
            return list(
                await asyncio.wait_for(
                    asyncio.gather(*(asyncio.wrap_future(f) for f in futures)), timeout
                )
            )
        finally:
            for future in futures:
                future.cancel()

    # ------------------------------------------------------------------ threads

    def _done(self, count: int = 1) -> None:
        with self._count_lock:
            self._pending -= count

    def _decode(self, job: _Job, size) -> object:
        try:
            return decode_image(job.data, size, max_pixels=self.max_pixels)
        except ImageError as exc:
            return Prediction(path=job.name, error=exc.reason, kind=exc.kind)

    def _lane(self, lane: Runner) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                if not job.future.set_running_or_notify_cancel():
                    continue
                try:
                    result = self._decode(job, lane.input_size)
                    if not isinstance(result, Prediction):
                        result = predictions(lane, [job.name], [result])[0]
                        self.on_batch(1)
                    job.future.set_result(result)
                except Exception as exc:  # an engine failure: the request answers 500
                    job.future.set_exception(exc)
            finally:
                self._done()

    def _decoder(self) -> None:
        while (job := self._jobs.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                self._done()
                continue
            result = self._decode(job, self.runner.input_size)
            if isinstance(result, Prediction):
                job.future.set_result(result)
                self._done()
            else:
                self._decoded.put((job, result))

    def _batcher(self) -> None:
        while (first := self._decoded.get()) is not None:
            batch = [first]
            deadline = time.monotonic() + self.batch_wait_s
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._decoded.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                with self.runner_lock:
                    results = predictions(
                        self.runner, [job.name for job, _ in batch], [p for _, p in batch]
                    )
                self.on_batch(len(batch))
                for (job, _), result in zip(batch, results):
                    job.future.set_result(result)
            except Exception as exc:
                for job, _ in batch:
                    job.future.set_exception(exc)
            finally:
                self._done(len(batch))
            if stop:
                return
