"""``Client`` (sync) and ``AsyncClient``: the same calls, built once by :class:`_Calls`.

Each call is a :class:`Call` (method, path, body, response model); the two clients only
differ in how they send it. Retries: a 429 or 503 answer (over capacity, still starting)
waits ``Retry-After`` seconds when the server says (capped at ``max_backoff_s``), else an
exponential back-off with jitter; a connection that could not be opened is retried the
same way (nothing reached the server). Other errors raise :class:`TaskswapHTTPError`
at once with the server's message. ``timeout_s`` bounds the whole call, body included
(:class:`TaskswapTimeout`); a body over ``max_response_bytes`` or a 2xx answer that is not
the call's model raises :class:`TaskswapResponseError` (:mod:`taskswap_client.transport`).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import os
import random
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

import httpx
from pydantic import BaseModel, ValidationError

from taskswap_client.dense import DenseAnswer, dense_answer
from taskswap_client.errors import TaskswapHTTPError
from taskswap_client.generation import (GenerationResult, StreamEvent, StreamReader, generation_body,
                                        parse_result)
from taskswap_client.transport import TaskswapResponseError, TaskswapTimeout, send_async, send_sync  # noqa: F401  (TaskswapTimeout: documented above)
from taskswap_client.models import (AdapterInfo, AdapterList, BackboneList, DeleteResponse,
                                    EmbedResponse, PredictResponse, RegisterResponse, SharedSetInfo,
                                    SharedSetList)

RETRY_STATUSES = (429, 503)
ImageLike = bytes | str | os.PathLike  # encoded image bytes, or a path to an image file


@dataclass
class Call:
    """One HTTP call and the model its answer parses into (None: no body expected)."""

    method: str
    path: str
    model: type[BaseModel] | None
    json: Any = None
    files: dict | list | None = None  # a list of (field, file) pairs repeats a field
    data: dict | None = None
    params: dict | None = None
    ok: tuple[int, ...] = (200, 201)
    kwargs: dict = field(default_factory=dict)
    reader: Callable[[httpx.Response], Any] | None = None  # parses the answer instead of ``model``
    headers: dict[str, str] = field(default_factory=dict)

    def request_kwargs(self) -> dict:
        kw: dict = {}
        if self.json is not None:
            kw["json"] = self.json
        if self.files is not None:
            kw["files"] = self.files
        if self.data is not None:
            kw["data"] = self.data
        if self.params is not None:
            kw["params"] = self.params
        return kw

    def parse(self, r: httpx.Response):
        if r.status_code not in self.ok:
            raise TaskswapHTTPError.from_response(r)
        if self.reader is not None:
            return self.reader(r)
        if self.model is None:
            return None
        try:
            return self.model.model_validate_json(r.content)
        except ValidationError as exc:  # a 2xx that is not this call's answer (a proxy page...)
            raise TaskswapResponseError(r.status_code, (
                f"the answer to {self.method} {self.path} is not a valid {self.model.__name__}: "
                f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}")) from None


TASK_HEADER = "X-Taskswap-Task"


def task_header(tasks: str | Sequence[str]) -> dict[str, str]:
    """The routing header of an inference call: its task, or the first of several (a proxy
    hashes it to pick a replica; the body stays the truth). See docs/deployment.md.

    >>> task_header(["sentiment", "topic"])
    {'X-Taskswap-Task': 'sentiment'}
    """
    first = tasks if isinstance(tasks, str) else next(iter(tasks), "")
    return {TASK_HEADER: first} if first else {}


class _Calls:
    """Builds every call; shared by the sync and the async client."""

    @staticmethod
    def predict(tasks: str | Sequence[str], texts: Sequence[str] | None, images: Sequence[ImageLike] | None,
                embed: bool, threshold: float | None = None, max_detections: int | None = None) -> Call:
        body: dict[str, Any] = {"task": tasks} if isinstance(tasks, str) else {"tasks": list(tasks)}
        body.update(_inputs(texts, images))
        if embed:
            body["embed"] = True
        for key, value in (("threshold", threshold), ("max_detections", max_detections)):
            if value is not None:
                body[key] = value
        return Call("POST", "/predict", PredictResponse, json=body, headers=task_header(tasks))

    @staticmethod
    def embed(texts, images, backbone: str | None, pooling: str | None, normalize: bool) -> Call:
        body: dict[str, Any] = {**_inputs(texts, images), "normalize": normalize}
        if backbone is not None:
            body["backbone"] = backbone
        if pooling is not None:
            body["pooling"] = pooling
        return Call("POST", "/embed", EmbedResponse, json=body)

    @staticmethod
    def register(path: str | os.PathLike, name: str | None, labels: Sequence[str] | None,
                 backbone: str | None, expected_version: str | None = None) -> Call:
        filename, archive = _archive(path)
        fields = {k: v for k, v in (("name", name), ("backbone", backbone),
                                    ("labels", json.dumps(list(labels)) if labels else None),
                                    ("expected_version", expected_version)) if v}
        return Call("POST", "/adapters", RegisterResponse, files={"file": (filename, archive)}, data=fields)

    @staticmethod
    def generate(task: str, prompt: str | None, messages: Sequence[dict] | None, sampling: dict,
                 logprobs: bool) -> Call:
        path, body = generation_body(task, prompt, messages, logprobs=logprobs, stream=False, **sampling)
        return Call("POST", path, None, json=body, reader=lambda r: parse_result(r.json(), logprobs))

    @staticmethod
    def activate(name: str, version: str, expected_version: str | None = None) -> Call:
        body = {"version": version, **({"expected_version": expected_version} if expected_version else {})}
        return Call("POST", f"/adapters/{name}/activate", AdapterInfo, json=body)

    @staticmethod
    def delete(name: str, expected_version: str | None = None) -> Call:
        params = {"expected_version": expected_version} if expected_version else None
        return Call("DELETE", f"/adapters/{name}", DeleteResponse, params=params)

    @staticmethod
    def register_shared_set(path: str | os.PathLike, heads: Sequence[str | os.PathLike] = ()) -> Call:
        files = [("file", _archive(path)), *(("heads", _archive(h)) for h in heads)]
        return Call("POST", "/shared-sets", SharedSetInfo, files=files)

    @staticmethod
    def activate_shared_set(name: str, version: str | None) -> Call:
        return Call("POST", f"/shared-sets/{name}/activate", SharedSetInfo,
                    json={"version": version} if version is not None else {})


class _Base:
    max_response_bytes = 256 << 20  # an answer's body, at most (TaskswapResponseError beyond)

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60.0, retries: int = 3,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("TASKSWAP_TOKEN")
        self.timeout_s, self.retries = timeout_s, retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _delay(self, attempt: int, r: httpx.Response | None) -> float:
        """Seconds before retry ``attempt`` (0-based): Retry-After if given, else back-off."""
        after = retry_after_s(r.headers.get("retry-after")) if r is not None else None
        if after is None:
            after = self.backoff_s * (2 ** attempt) * (0.5 + random.random() / 2)
        return min(after, self.max_backoff_s)


class Client(_Base):
    """Synchronous client. ``token`` defaults to ``$TASKSWAP_TOKEN``.

    >>> Client("http://127.0.0.1:1", retries=0).url
    'http://127.0.0.1:1'
    """

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60.0, retries: int = 3,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0):
        super().__init__(url, token, timeout_s, retries, backoff_s, max_backoff_s)
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call):
        for attempt in range(self.retries + 1):
            try:
                r = send_sync(self._http, call.method, call.path, self.timeout_s, self.max_response_bytes,
                              headers={**self._headers(), **call.headers}, **call.request_kwargs())
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt == self.retries:
                    raise
                time.sleep(self._delay(attempt, None))
                continue
            if r.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(self._delay(attempt, r))
                continue
            return call.parse(r)

    # ---- inference -----------------------------------------------------------------------
    def predict(self, tasks: str | Sequence[str], texts: Sequence[str] | None = None,
                images: Sequence[ImageLike] | None = None, embed: bool = False,
                threshold: float | None = None, max_detections: int | None = None) -> PredictResponse:
        """One task (a name) or several (a list) on texts, or on images (bytes or file paths);
        ``threshold`` / ``max_detections``: detection tasks' limits for this request (within
        the task's manifest: a 400 otherwise)."""
        return self._send(_Calls.predict(tasks, texts, images, embed, threshold, max_detections))

    def detect(self, task: str, images: Sequence[ImageLike], threshold: float | None = None,
               max_detections: int | None = None) -> DenseAnswer:
        """A detection task's boxes per image, as :class:`Detection` dataclasses."""
        return dense_answer(self.predict(task, images=images, threshold=threshold,
                                         max_detections=max_detections))

    def segment(self, task: str, images: Sequence[ImageLike]) -> DenseAnswer:
        """A segmentation task's masks per image, as :class:`Mask` dataclasses (a class
        index per pixel, named by the task's labels)."""
        return dense_answer(self.predict(task, images=images), self.show(task).labels)

    def embed(self, texts: Sequence[str] | None = None, images: Sequence[ImageLike] | None = None,
              backbone: str | None = None, pooling: str | None = None, normalize: bool = True) -> EmbedResponse:
        """Pooled backbone features (``.embeddings``: one list of floats per input)."""
        return self._send(_Calls.embed(texts, images, backbone, pooling, normalize))

    # ---- generation ------------------------------------------------------------------------
    def generate(self, task: str, prompt: str | None = None, messages: Sequence[dict] | None = None, *,
                 max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                 top_k: int | None = None, seed: int | None = None, stop: Sequence[str] | None = None,
                 logprobs: bool = False) -> GenerationResult:
        """Generate with a generation task (``task`` or ``task@version``) from a ``prompt``
        (completion) or chat ``messages`` (``[{"role": "user", "content": ...}]``); unset
        sampling parameters take the task's defaults. ``logprobs``: each token with its
        log-probability in ``.tokens``."""
        sampling = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        seed=seed, stop=stop)
        return self._send(_Calls.generate(task, prompt, messages, sampling, logprobs))

    def stream(self, task: str, prompt: str | None = None, messages: Sequence[dict] | None = None, *,
               max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
               top_k: int | None = None, seed: int | None = None, stop: Sequence[str] | None = None,
               logprobs: bool = False) -> Iterator[StreamEvent]:
        """The same generation as :meth:`generate`, as it is decoded: :class:`TokenDelta`
        events, then one :class:`StreamEnd`. Leaving the loop early (``break``, then the
        iterator's ``close()`` or its collection) closes the connection, and the server stops
        decoding it. A refusal (400, 404, a 429 after the retries) raises on the first event."""
        path, body = generation_body(task, prompt, messages, max_tokens, temperature, top_p, top_k, seed,
                                     stop, logprobs, stream=True)
        r = self._open_stream(path, body)
        try:
            reader = StreamReader()
            for line in r.iter_lines():
                yield from reader.feed(line)
            reader.check_done()
        finally:
            r.close()

    def _open_stream(self, path: str, body: dict) -> httpx.Response:
        """POST a streamed generation; its response once the server admitted it (status 200)."""
        for attempt in range(self.retries + 1):
            try:
                r = self._http.send(self._http.build_request("POST", path, json=body, headers=self._headers()),
                                    stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt == self.retries:
                    raise
                time.sleep(self._delay(attempt, None))
                continue
            if r.status_code == 200:
                return r
            r.read()
            r.close()
            if r.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(self._delay(attempt, r))
                continue
            raise TaskswapHTTPError.from_response(r)
        raise RuntimeError("unreachable")

    # ---- adapters ------------------------------------------------------------------------
    def register(self, path: str | os.PathLike, name: str | None = None, labels: Sequence[str] | None = None,
                 backbone: str | None = None, expected_version: str | None = None) -> RegisterResponse:
        """(admin) Upload an adapter folder (zipped here) or a zip/tar.gz archive.
        ``expected_version``: refused (409) unless that version is the active one."""
        return self._send(_Calls.register(path, name, labels, backbone, expected_version))

    def activate(self, name: str, version: str, expected_version: str | None = None) -> AdapterInfo:
        """(admin) Make a stored version active (rollback / roll forward)."""
        return self._send(_Calls.activate(name, version, expected_version))

    def delete(self, name: str, expected_version: str | None = None) -> DeleteResponse:
        """(admin) Remove a task and all its versions."""
        return self._send(_Calls.delete(name, expected_version))

    def list(self) -> AdapterList:
        return self._send(Call("GET", "/adapters", AdapterList))

    def show(self, name: str) -> AdapterInfo:
        return self._send(Call("GET", f"/adapters/{name}", AdapterInfo))

    # ---- shared adaptation sets (docs/multitask.md) ---------------------------------------
    def shared_sets(self) -> SharedSetList:
        """Every shared adaptation this token can read, with its active set."""
        return self._send(Call("GET", "/shared-sets", SharedSetList))

    def shared_set(self, name: str) -> SharedSetInfo:
        """One shared adaptation: its active, previous and pending sets and every version."""
        return self._send(Call("GET", f"/shared-sets/{name}", SharedSetInfo))

    def register_shared_set(self, path: str | os.PathLike,
                            heads: Sequence[str | os.PathLike] = ()) -> SharedSetInfo:
        """(register) A new version of a shared adaptation (folder or archive) and of every
        task riding on it (``heads``: folders or archives of tasks with new heads; the others
        carry theirs over), switched as one set."""
        return self._send(_Calls.register_shared_set(path, heads))

    def activate_shared_set(self, name: str, version: str | None = None) -> SharedSetInfo:
        """(register) Switch to the set of adaptation ``version``; None: back to the previous set."""
        return self._send(_Calls.activate_shared_set(name, version))

    def backbones(self) -> BackboneList:
        return self._send(Call("GET", "/backbones", BackboneList))

    def wait_ready(self, timeout_s: float = 300.0, poll_s: float = 0.5) -> None:
        """Return once ``/readyz`` answers 200; ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self._http.get("/readyz", timeout=min(5.0, self.timeout_s)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url} not ready after {timeout_s}s")
            time.sleep(poll_s)


class AsyncClient(_Base):
    """The same calls as :class:`Client`, awaitable (``async with AsyncClient(url) as ts``)."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60.0, retries: int = 3,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0):
        super().__init__(url, token, timeout_s, retries, backoff_s, max_backoff_s)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout_s)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call):
        for attempt in range(self.retries + 1):
            try:
                r = await send_async(self._http, call.method, call.path, self.timeout_s,
                                     self.max_response_bytes, headers={**self._headers(), **call.headers},
                                     **call.request_kwargs())
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt == self.retries:
                    raise
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if r.status_code in RETRY_STATUSES and attempt < self.retries:
                await asyncio.sleep(self._delay(attempt, r))
                continue
            return call.parse(r)

    async def predict(self, tasks, texts=None, images=None, embed: bool = False, threshold=None,
                      max_detections=None) -> PredictResponse:
        return await self._send(_Calls.predict(tasks, texts, images, embed, threshold, max_detections))

    async def detect(self, task: str, images, threshold=None, max_detections=None) -> DenseAnswer:
        return dense_answer(await self.predict(task, images=images, threshold=threshold,
                                               max_detections=max_detections))

    async def segment(self, task: str, images) -> DenseAnswer:
        return dense_answer(await self.predict(task, images=images), (await self.show(task)).labels)

    async def embed(self, texts=None, images=None, backbone=None, pooling=None,
                    normalize: bool = True) -> EmbedResponse:
        return await self._send(_Calls.embed(texts, images, backbone, pooling, normalize))

    async def generate(self, task: str, prompt: str | None = None, messages: Sequence[dict] | None = None, *,
                       max_tokens: int | None = None, temperature: float | None = None,
                       top_p: float | None = None, top_k: int | None = None, seed: int | None = None,
                       stop: Sequence[str] | None = None, logprobs: bool = False) -> GenerationResult:
        """See :meth:`Client.generate`."""
        sampling = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        seed=seed, stop=stop)
        return await self._send(_Calls.generate(task, prompt, messages, sampling, logprobs))

    async def stream(self, task: str, prompt: str | None = None, messages: Sequence[dict] | None = None, *,
                     max_tokens: int | None = None, temperature: float | None = None,
                     top_p: float | None = None, top_k: int | None = None, seed: int | None = None,
                     stop: Sequence[str] | None = None, logprobs: bool = False) -> AsyncIterator[StreamEvent]:
        """See :meth:`Client.stream` (``async for event in ts.stream(...)``; ``aclose()`` ends it early)."""
        path, body = generation_body(task, prompt, messages, max_tokens, temperature, top_p, top_k, seed,
                                     stop, logprobs, stream=True)
        r = await self._open_stream(path, body)
        try:
            reader = StreamReader()
            async for line in r.aiter_lines():
                for event in reader.feed(line):
                    yield event
            reader.check_done()
        finally:
            await r.aclose()

    async def _open_stream(self, path: str, body: dict) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                r = await self._http.send(self._http.build_request("POST", path, json=body,
                                                                   headers=self._headers()), stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt == self.retries:
                    raise
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if r.status_code == 200:
                return r
            await r.aread()
            await r.aclose()
            if r.status_code in RETRY_STATUSES and attempt < self.retries:
                await asyncio.sleep(self._delay(attempt, r))
                continue
            raise TaskswapHTTPError.from_response(r)
        raise RuntimeError("unreachable")

    async def register(self, path, name=None, labels=None, backbone=None,
                       expected_version=None) -> RegisterResponse:
        return await self._send(_Calls.register(path, name, labels, backbone, expected_version))

    async def activate(self, name: str, version: str, expected_version: str | None = None) -> AdapterInfo:
        return await self._send(_Calls.activate(name, version, expected_version))

    async def delete(self, name: str, expected_version: str | None = None) -> DeleteResponse:
        return await self._send(_Calls.delete(name, expected_version))

    async def list(self) -> AdapterList:
        return await self._send(Call("GET", "/adapters", AdapterList))

    async def show(self, name: str) -> AdapterInfo:
        return await self._send(Call("GET", f"/adapters/{name}", AdapterInfo))

    async def shared_sets(self) -> SharedSetList:
        return await self._send(Call("GET", "/shared-sets", SharedSetList))

    async def shared_set(self, name: str) -> SharedSetInfo:
        return await self._send(Call("GET", f"/shared-sets/{name}", SharedSetInfo))

    async def register_shared_set(self, path, heads=()) -> SharedSetInfo:
        return await self._send(_Calls.register_shared_set(path, heads))

    async def activate_shared_set(self, name: str, version: str | None = None) -> SharedSetInfo:
        return await self._send(_Calls.activate_shared_set(name, version))

    async def backbones(self) -> BackboneList:
        return await self._send(Call("GET", "/backbones", BackboneList))

    async def wait_ready(self, timeout_s: float = 300.0, poll_s: float = 0.5) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if (await self._http.get("/readyz", timeout=min(5.0, self.timeout_s))).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url} not ready after {timeout_s}s")
            await asyncio.sleep(poll_s)


# ---- helpers ---------------------------------------------------------------------------
def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (seconds from now).

    >>> retry_after_s("2"), retry_after_s(None), retry_after_s("soon")
    (2.0, None, None)
    """
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _inputs(texts: Sequence[str] | None, images: Sequence[ImageLike] | None) -> dict:
    if (texts is None) == (images is None):
        raise ValueError("give exactly one of texts or images")
    if texts is not None:
        if isinstance(texts, str):
            raise TypeError("texts is a list of strings, not one string: texts=[text]")
        return {"texts": list(texts)}
    return {"images": [base64.b64encode(_image_bytes(x)).decode() for x in images]}


def _image_bytes(x: ImageLike) -> bytes:
    return x if isinstance(x, bytes) else Path(x).read_bytes()


def _archive(path: str | os.PathLike) -> tuple[str, bytes]:
    """``(filename, bytes)`` of an adapter folder (zipped here) or an archive file."""
    p = Path(path)
    if p.is_dir():
        return f"{p.name}.zip", zip_folder(p)
    if p.is_file():
        return p.name, p.read_bytes()
    raise FileNotFoundError(f"{p} is neither an adapter folder nor an archive")


def zip_folder(folder: Path) -> bytes:
    """The files of an adapter folder as a zip (paths relative to it)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_symlink():  # the server refuses links: say so before uploading
                raise ValueError(f"{f} is a symbolic link; an adapter folder holds regular files only")
            if f.is_file():
                z.write(f, f.relative_to(folder).as_posix())
    return buf.getvalue()
