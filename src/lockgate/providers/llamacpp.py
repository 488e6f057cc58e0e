"""In-process llama.cpp provider: the embedded default model (``provider: llamacpp``).

:class:`LlamaCppProvider` serves OpenAI chat requests from a GGUF file with
llama-cpp-python, in this process, without blocking the event loop:

* **Model file.** ``path: bundled:gemma-3-270m`` (the default ``local`` model)
  or a ``.gguf`` path; see :mod:`lockgate.providers.llamacpp_files` for how the
  bundled model is found and assembled once under ``<home>/models/``. A
  missing file is a one-line :class:`~lockgate.errors.ConfigError` at
  construction.
* **Loading** happens on first use or in :meth:`LlamaCppProvider.warmup`, in
  the provider's worker thread (load ~0.5 s once the file exists; the first
  assembly of the bundled file adds ~1 s).
* **One worker thread per deployment.** A llama.cpp context is not
  thread-safe, so every load, tokenisation and generation runs on one
  dedicated thread (a single-worker executor): access is serialised, and
  waiting requests run in arrival order (FIFO). ``max_concurrency`` caps the
  requests admitted (running + waiting); beyond it a request fails at once
  with ``ProviderError('rate_limited')``. llama.cpp releases the GIL while it
  computes, so the event loop keeps serving other requests meanwhile.
* **Streaming.** The worker hands each token's text to the event loop through
  an ``asyncio.Queue`` (``loop.call_soon_threadsafe``). The provider yields
  OpenAI ``chat.completion.chunk`` dicts: a first chunk with
  ``role: assistant``, content deltas, a chunk with ``finish_reason``
  (``stop`` or ``length``), then a usage chunk with ``choices: []`` (always
  sent; the HTTP adapter drops it if the client did not ask for usage).
  Non-stream :meth:`LlamaCppProvider.chat` runs the same generation and
  returns a ``chat.completion`` body.
* **Cancellation.** When the consumer stops (client disconnect, task
  cancelled, ``aclose()`` on the stream) a flag tells the worker to stop at
  the next token; a request still waiting in the queue is dropped. Prompt
  evaluation itself (before the first token) cannot be interrupted.
* **Timeouts.** ``timeouts.first_token`` bounds the time from the call to the
  first generated token (queue wait and model load included),
  ``timeouts.idle`` the gap between tokens, ``timeouts.total`` the whole
  call; they raise ``ProviderError`` kinds ``timeout_first_token``,
  ``timeout_idle``, ``timeout_total`` and stop the generation.
* **Usage** is counted, not estimated: ``prompt_tokens`` is the tokenised
  prompt the model actually read (including the transcript header and the
  example exchange of :mod:`lockgate.providers.llamacpp_prompt`, ~45 tokens),
  ``completion_tokens`` every token sampled (including the end-of-turn token
  or the tokens of a stop sequence, which are not shown).
* **Empty answers.** The base model sometimes ends its turn at once. Rather
  than return an empty string, the provider raises
  ``ProviderError('bad_response', ...)`` before any chunk is yielded, so the
  pipeline retries (a new random seed when none was given) or falls back to
  another deployment.
* **Counting for budgets.** :meth:`LlamaCppProvider.count_prompt_tokens`
  tokenises the rendered prompt with a vocabulary-only copy of the model (its
  own lock, not the worker thread), so a budget reservation holds the exact
  ``prompt_tokens`` the call will report.
* **Embeddings are not served.** llama.cpp would need a second context in
  embedding mode, and mean-pooled hidden states of a 270M causal base model
  are poor sentence vectors; :meth:`LlamaCppProvider.embeddings` raises
  ``ProviderError('bad_request')`` pointing at an embeddings deployment
  (``provider: embedded``).

Measured on the shared 2-core build machine (other jobs running): loading the
bundled model takes 0.4-0.6 s; generation runs at ~40-50 completion tokens/s
with llama.cpp's default thread count (half the cores, here 1) and ~20 tokens/s
with ``n_threads: 2`` while other processes compete for the cores, so leave
``n_threads`` unset on small shared machines.

What the bundled model can and cannot do is written in
:mod:`lockgate.providers.llamacpp_prompt`.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import random
import threading
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp

from lockgate.errors import ConfigError
from lockgate.providers.base import Completion, ProviderError, StreamChunk, Usage
from lockgate.providers.llamacpp_files import check_model_path, ensure_model_file
from lockgate.providers.llamacpp_prompt import (
    OptionsError,
    OutputFilter,
    SamplingOptions,
    build_prompt,
    parse_options,
)
from lockgate.settings import ModelDeployment

__all__ = ["LlamaCppProvider", "LlamaCppStats"]

_TOP_K = 40
_MIN_P = 0.05


@dataclass(slots=True)
class LlamaCppStats:
    """Counters kept by the worker thread (read them from anywhere; ints only grow)."""

    generations: int = 0
    cancelled: int = 0
    """Generations stopped because their consumer went away or timed out."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    """Worker time spent in prompt evaluation and sampling."""

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens per second of worker time (prompt evaluation included)."""
        if not self.generation_seconds:
            return 0.0
        return self.completion_tokens / self.generation_seconds


@dataclass(frozen=True, slots=True)
class _Token:
    """One sampled token; ``text`` is what became visible (often ``""``)."""

    text: str


@dataclass(frozen=True, slots=True)
class _Done:
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class _Failed:
    error: ProviderError


_Event = _Token | _Done | _Failed


@dataclass(slots=True, eq=False)
class _Job:
    """One generation, shared between the event loop and the worker thread."""

    prompt: str
    options: SamplingOptions
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Event] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: _Event) -> None:
        """Called from the worker thread: hand ``event`` to the event loop."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()


class LlamaCppProvider:
    """One llama.cpp deployment, run in process on a dedicated worker thread.

    ``home`` is the lockgate home directory where the bundled model is
    assembled (default ``$LOCKGATE_HOME`` or ``.lockgate``).
    """

    def __init__(self, deployment: ModelDeployment, *, home: str | Path | None = None) -> None:
        if not deployment.path:
            raise ConfigError(f"models[{deployment.name}].path: provider 'llamacpp' needs 'path'")
        self.deployment = deployment
        self._where = f"models[{deployment.name}].path"
        check_model_path(deployment.path, self._where)
        self._home = home
        path = deployment.path
        self.model_name: str = deployment.model or (
            path.removeprefix("bundled:") if path.startswith("bundled:") else Path(path).stem
        )
        self.model_path: Path | None = None
        """The GGUF file, known once loaded."""
        self.load_seconds: float | None = None
        """How long loading the model took (file assembly excluded)."""
        self._llm: Any = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"llamacpp-{deployment.name}"
        )
        self._jobs: set[_Job] = set()
        self._closed = False
        self.stats = LlamaCppStats()
        self._vocab: Any = None
        """A vocabulary-only copy of the model for :meth:`count_prompt_tokens`."""
        self._vocab_lock = threading.Lock()

    # ------------------------------------------------------------ public API

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def pending(self) -> int:
        """Requests admitted and not finished (running + waiting)."""
        return len(self._jobs)

    async def warmup(self) -> None:
        """Load the model now (in the worker thread) instead of at first use.

        Raises ConfigError when the model file cannot be found or assembled,
        ProviderError('server_error') when llama.cpp cannot load it.
        """
        self._check_open()
        await asyncio.wrap_future(self._executor.submit(self._load))

    async def chat(self, body: dict[str, Any]) -> Completion:
        pieces: list[str] = []
        done: _Done | None = None
        async with aclosing(self._events(body)) as events:
            async for event in events:
                if isinstance(event, _Token):
                    pieces.append(event.text)
                elif isinstance(event, _Done):
                    done = event
        assert done is not None
        text = "".join(pieces)
        if not text:
            raise self._empty_answer()
        usage = Usage(done.prompt_tokens, done.completion_tokens)
        return Completion(
            body={
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": done.finish_reason,
                    }
                ],
                "usage": _usage_dict(usage),
                "system_fingerprint": None,
            },
            usage=usage,
        )

    async def chat_stream(self, body: dict[str, Any]) -> AsyncGenerator[StreamChunk, None]:
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> StreamChunk:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model_name,
                "system_fingerprint": None,
                "choices": choices,
                **extra,
            }

        def delta(d: dict[str, Any], finish_reason: str | None = None) -> StreamChunk:
            return chunk(
                [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish_reason}]
            )

        started = False
        async with aclosing(self._events(body)) as events:
            async for event in events:
                if isinstance(event, _Token):
                    if not event.text:
                        continue
                    if not started:
                        started = True
                        yield delta({"role": "assistant", "content": "", "refusal": None})
                    yield delta({"content": event.text})
                elif isinstance(event, _Done):
                    if not started:
                        raise self._empty_answer()
                    yield delta({}, event.finish_reason)
                    usage = Usage(event.prompt_tokens, event.completion_tokens)
                    yield chunk([], usage=_usage_dict(usage))

    async def count_prompt_tokens(self, body: dict[str, Any]) -> int | None:
        """The exact ``prompt_tokens`` a chat call with ``body`` will report (for budgets).

        Uses a vocabulary-only copy of the model on its own lock, so counting never waits
        behind a generation on the worker thread. None when the body is not one this
        model can answer (the call fails later with the precise error).
        """
        try:
            prompt = build_prompt(body.get("messages") or [])
        except OptionsError:
            return None
        self._check_open()
        return await asyncio.to_thread(self._count, prompt)

    async def embeddings(self, body: dict[str, Any]) -> Completion:
        raise ProviderError(
            "bad_request",
            f"model '{self.deployment.name}' (llama.cpp, {self.model_name}) does not serve "
            "embeddings; configure an embeddings deployment (provider: embedded, mode: embeddings)",
        )

    async def aclose(self) -> None:
        """Stop running generations, free the model and the worker thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for job in list(self._jobs):
            job.cancelled.set()
        try:
            await asyncio.wrap_future(self._executor.submit(self._free))
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ event loop side

    def _check_open(self) -> None:
        if self._closed:
            raise ProviderError("server_error", f"local model '{self.deployment.name}' is closed")

    def _empty_answer(self) -> ProviderError:
        return ProviderError(
            "bad_response", f"the local model {self.model_name} produced no text for this prompt"
        )

    async def _events(self, body: dict[str, Any]) -> AsyncGenerator[_Token | _Done, None]:
        """Run one generation; yield its tokens then one _Done. Errors as ProviderError."""
        try:
            options = parse_options(body)
            prompt = build_prompt(body.get("messages") or [])
        except OptionsError as exc:
            raise ProviderError("bad_request", str(exc)) from None
        self._check_open()
        limit = self.deployment.max_concurrency
        if len(self._jobs) >= limit:
            raise ProviderError(
                "rate_limited",
                f"local model '{self.deployment.name}' is busy ({limit} requests in progress)",
                retry_after=1.0,
            )
        loop = asyncio.get_running_loop()
        job = _Job(prompt, options, loop)
        timeouts = self.deployment.timeouts
        start = loop.time()
        total_at = start + timeouts.total
        first_at = min(start + timeouts.first_token, total_at)
        self._jobs.add(job)
        future = self._executor.submit(self._generate, job)
        seen_token = False
        try:
            while True:
                if seen_token:
                    idle_at = loop.time() + timeouts.idle
                    deadline, kind = (
                        (idle_at, "timeout_idle") if idle_at < total_at else
                        (total_at, "timeout_total")
                    )
                else:
                    deadline = first_at
                    kind = "timeout_first_token" if first_at < total_at else "timeout_total"
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await job.queue.get()
                except TimeoutError:
                    raise ProviderError(
                        kind,  # type: ignore[arg-type]
                        f"local model '{self.deployment.name}' exceeded its {kind[8:]} timeout",
                    ) from None
                if isinstance(event, _Failed):
                    raise event.error
                if isinstance(event, _Done) and event.finish_reason == "cancelled":
                    raise ProviderError(
                        "stream_cut" if seen_token else "server_error",
                        f"local model '{self.deployment.name}' was shut down during the request",
                    )
                if isinstance(event, _Token):
                    seen_token = True
                yield event
                if isinstance(event, _Done):
                    return
        finally:
            job.cancelled.set()
            future.cancel()
            self._jobs.discard(job)

    # ------------------------------------------------------------ worker thread side

    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        assert self.deployment.path is not None
        path = ensure_model_file(self.deployment.path, home=self._home, where=self._where)
        t0 = time.perf_counter()
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=self.deployment.n_ctx,
                n_threads=self.deployment.n_threads,
                n_threads_batch=self.deployment.n_threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ProviderError("server_error", f"llama.cpp cannot load {path}: {exc}") from None
        self.load_seconds = time.perf_counter() - t0
        self.model_path = path
        self._llm = llm
        return llm

    def _free(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()
        with self._vocab_lock:
            vocab, self._vocab = self._vocab, None
        if vocab is not None:
            vocab.close()

    def _count(self, prompt: str) -> int:
        """Tokens of ``prompt`` exactly as :meth:`_run` tokenises it (any thread)."""
        with self._vocab_lock:
            if self._vocab is None:
                assert self.deployment.path is not None
                path = ensure_model_file(self.deployment.path, home=self._home,
                                         where=self._where)
                try:
                    self._vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True,
                                                  verbose=False)
                except (ValueError, RuntimeError, OSError) as exc:
                    raise ProviderError(
                        "server_error", f"llama.cpp cannot load the vocabulary of {path}: {exc}"
                    ) from None
            return len(_tokenize(self._vocab, prompt))

    def _generate(self, job: _Job) -> None:
        if job.cancelled.is_set():
            return
        try:
            job.emit(self._run(job))
        except ProviderError as exc:
            job.emit(_Failed(exc))
        except ConfigError as exc:
            job.emit(_Failed(ProviderError("server_error", str(exc))))
        except Exception as exc:
            job.emit(_Failed(ProviderError("server_error", f"llama.cpp failed: {exc!r}")))

    def _run(self, job: _Job) -> _Done:
        llm = self._load()
        opts = job.options
        prompt = _tokenize(llm, job.prompt)
        n_ctx = int(llm.n_ctx())
        room = n_ctx - len(prompt)
        if room < 1:
            raise ProviderError(
                "bad_request",
                f"the prompt is {len(prompt)} tokens; model '{self.deployment.name}' has a "
                f"context window of {n_ctx} tokens",
            )
        limit = min(opts.max_tokens, room)
        t0 = time.perf_counter()
        seed = opts.seed if opts.seed is not None else random.randrange(0xFFFFFFFF)
        llm.set_seed(seed)
        out = OutputFilter(opts.stop)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = getattr(getattr(llm, "_model", None), "vocab", None)
        eos = int(llm.token_eos())
        sampled = 0
        finish = "length"
        tokens = llm.generate(
            prompt,
            top_k=_TOP_K,
            top_p=opts.top_p,
            min_p=_MIN_P,
            temp=opts.temperature,
            repeat_penalty=opts.repeat_penalty,
            frequency_penalty=opts.frequency_penalty,
            presence_penalty=opts.presence_penalty,
        )
        try:
            for token in tokens:
                if job.cancelled.is_set():
                    finish = "cancelled"
                    break
                sampled += 1
                if token == eos or (
                    vocab is not None and llama_cpp.llama_vocab_is_eog(vocab, token)
                ):
                    finish = "stop"
                    break
                job.emit(_Token(out.feed(utf8.decode(llm.detokenize([token])))))
                if out.stopped:
                    finish = "stop"
                    break
                if sampled >= limit:
                    break
        finally:
            tokens.close()
            stats = self.stats
            stats.generations += 1
            stats.cancelled += finish == "cancelled"
            stats.prompt_tokens += len(prompt)
            stats.completion_tokens += sampled
            stats.generation_seconds += time.perf_counter() - t0
        if finish != "cancelled":
            tail = out.feed(utf8.decode(b"", final=True)) + out.finish()
            if tail:
                job.emit(_Token(tail))
        return _Done(finish, len(prompt), sampled)


def _tokenize(llm: Any, prompt: str) -> list[int]:
    """The one tokenisation of a prompt: generation and budget counting share it."""
    tokens: list[int] = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
    return tokens


def _usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
