"""LlamaCppRunner: GGUF models on llama.cpp, through llama-cpp-python's low-level bindings, under our engine.

llama.cpp computes on the GGUF's quantized weights as they are (the PyTorch runner dequantizes them to
float32 or bfloat16), which is what makes it the fastest way to serve such a model on a CPU. The engine's
scheduler, sampling, stop handling and detokenization stay the same; this runner only turns "these tokens for
these rows" into logits with ``llama_decode`` and keeps each row's KV cache as a llama.cpp sequence.

The KV cache is llama.cpp's per-sequence one (``kv_unified = false``): each sequence id has a stream of
cells of its own, so a sequence's keys always sit in position order. (In the unified cache a sequence's new
token may land in a hole another sequence left, and the CPU flash-attention kernel, which sums in cell order
at half precision, then gives the same request other logprobs in a batch than alone: up to 0.2 here.) The
engine's rows x capacity maps onto it directly: row r is sequence id r (llama.cpp runs a batch in one pass
only when its sequence ids are consecutive; a relabelling permutation halved the throughput every other
batch), moving a row copies its cache into the other stream (``llama_state_seq_get_data``/``set_data``,
~2 ms per 100 positions, once per finished request), and capacity is each stream's length (llama.cpp rounds
it up to 256). A row's cells are freed with ``llama_memory_seq_rm`` the moment its sequence leaves.

All streams are as long as the longest sequence needs, and the context holds as many streams as the KV cache
budget allows at that length (at most ``max_active``): 16 x 256 positions when requests are short. When the
engine asks for longer rows and the streams fit, a context with longer streams is made and each running
sequence's cache is carried over the same way. A saved sequence only loads into a context with the same
number of streams, so when a long request needs fewer, longer streams (or short ones more streams again),
the new context starts empty and the running sequences recompute their tokens (the engine's preemption path;
the engine's budget has already preempted what no longer fits). Once the engine is idle, a grown context is
replaced by the short one, so memory follows the load.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import llama_cpp as lc
import numpy as np
import torch

from infergate.engines.sources import gguf_path
from infergate.engines.textgen.rows import RowInput

__all__ = ["LlamaCppRunner", "load_llamacpp_runner"]

log = logging.getLogger(__name__)

_STREAM_STEP = 256  # llama.cpp's granularity of a sequence's stream, and the idle length
_BATCH = 512  # tokens per llama_decode call (llama.cpp's default); longer forwards run in pieces
# A row's tokens go to llama_decode in blocks that start at multiples of this position. llama.cpp computes a token
# slightly differently depending on which of its sequence's tokens share its llama_decode call (logits moved by
# up to 0.7 when a prompt was split elsewhere); with fixed blocks, a row that continues a prefix cut at a block
# boundary gets the very logits of a row that computed it all, so the prefix cache is invisible in the output.
# 64 costs no measurable prompt speed against 128-token calls (32: 11-13%), measured in bench/RESULTS.md.
_BLOCK = 64
_MAX_SEQS = 256  # llama.cpp's LLAMA_MAX_SEQ
_BYTES_F16 = 2  # the KV cache's element size (llama.cpp's default, f16)
_FLASH_ATTN_ENABLED = 1  # llama_flash_attn_type
_GGML_LOG_LEVEL_ERROR = 4  # ggml_log_level (not exported by llama-cpp-python)
# Some of what the protocols send: chat markers, accents, CJK, digits, spaces. The transformers tokenizer the
# protocols use and llama.cpp's own must split it the same way, or token counts and stop handling drift.
_PROBE = "<|im_start|>user\nHello, World!  Ünïcödé 日本語 12345 \t code() {}<|im_end|>\n"


def load_llamacpp_runner(
    source: str, threads: int | None, dtype: str, max_rows: int, kv_cache_bytes: int
) -> LlamaCppRunner:
    """The catalog ``source`` (a GGUF) on llama.cpp, with the transformers tokenizer read from the same file."""
    path = gguf_path(source)
    runner = LlamaCppRunner(path, threads, max_rows, kv_cache_bytes)
    try:
        runner.tokenizer = gguf_tokenizer(path)
        runner.check_tokenizer()
    except BaseException:
        runner.close()
        raise
    return runner


def gguf_tokenizer(path: str) -> Any:
    """The transformers tokenizer of a GGUF (vocabulary, merges, special tokens, chat template).

    transformers builds it from the GGUF's metadata in 5 s and leaves ~90 MB of Python objects behind; so it is
    built once per file in a child process and kept as a ``tokenizer.json`` under the user's cache directory
    (keyed by the file's path, size and time), which loads in 0.3 s.
    """
    from transformers import AutoTokenizer

    stat = os.stat(path)
    key = hashlib.sha256(f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infergate" / "tokenizers" / key
    if not (cache / "tokenizer.json").exists():
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            scratch = tempfile.mkdtemp(dir=cache.parent)
            try:
                _convert_in_child(path, scratch)
                os.replace(scratch, cache)  # whole or not at all: another process may be reading it
            except OSError:
                if not (cache / "tokenizer.json").exists():  # not a twin process that got there first
                    raise
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        except OSError as exc:  # no writable cache directory: build it here, every time
            log.info("tokenizer cache unavailable (%s); converting %s in process", exc, path)
            return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    return AutoTokenizer.from_pretrained(cache)


_CONVERT = """
import os, sys
from transformers import AutoTokenizer
path, out = sys.argv[1], sys.argv[2]
AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path)).save_pretrained(out)
"""


def _convert_in_child(path: str, out: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CONVERT, path, out], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"transformers could not read the tokenizer of {path}: {last}")


class _Logs:
    """llama.cpp's log lines go to Python logging (debug), and its latest errors are kept for our messages."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._callback = lc.llama_log_callback(self._log)  # kept alive: llama.cpp holds the pointer
        lc.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _log(self, level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", errors="replace").rstrip()
        if level == _GGML_LOG_LEVEL_ERROR and line:
            self.errors = [*self.errors[-4:], line]
        log.debug("llama.cpp: %s", line)

    def take(self) -> str:
        found, self.errors = "; ".join(self.errors), []
        return found


_logs: _Logs | None = None
_init_lock = threading.Lock()


def _backend() -> _Logs:
    global _logs
    with _init_lock:
        if _logs is None:
            lc.llama_backend_init()
            _logs = _Logs()
        return _logs


class _Cache:
    """The engine's view (rows x capacity) of llama.cpp's cell pool; see the module's docstring."""

    def __init__(self, runner: LlamaCppRunner, bytes_per_token: int) -> None:
        self._runner = runner
        self._bytes_per_token = bytes_per_token
        self.rows = 0
        self.capacity = 0

    @property
    def bytes_per_token(self) -> int:
        return self._bytes_per_token

    def resize(self, rows: int, capacity: int, keep: int, keep_len: int) -> bool:
        self.rows, self.capacity = rows, capacity
        if rows == 0:
            self._runner.idle()
            return False
        return self._runner.reserve(rows, capacity)

    def move_row(self, src: int, dst: int, length: int) -> None:
        self._runner.move(src, dst)

    def copy_row(self, src: int, dst: int, length: int) -> None:
        self._runner.copy(src, dst, length)

    def release(self, row: int) -> None:
        self._runner.forget(row)

    def save(self, row: int, length: int) -> tuple[Any, int]:
        return self._runner.save_prefix(row, length)

    def load(self, row: int, saved: Any, length: int) -> bool:
        return self._runner.load_prefix(row, saved, length)


def _pieces(wave: list[tuple[int, int, int, bool]]) -> list[tuple[int, int]]:
    """Split a wave into llama_decode calls of at most ``_BATCH`` tokens, never inside a row's block."""
    pieces: list[tuple[int, int]] = []
    start = 0
    for k in range(1, len(wave) + 1):
        if k == len(wave) or (k - start >= _BATCH - _BLOCK and wave[k][0] != wave[k - 1][0]):
            pieces.append((start, k))
            start = k
    return pieces


class LlamaCppRunner:
    name = "llama.cpp"
    device = "cpu"
    min_rows = 1  # llama.cpp computes each row the same way in any batch size: no padding needed
    mixed_batches = True  # ... and beside other sequences' prompt chunks (tested: identical logits)
    length_step = _STREAM_STEP  # the engine's rows grow as llama.cpp's streams do
    exact_step = _BLOCK

    def __init__(self, path: str, threads: int | None, max_rows: int, kv_cache_bytes: int) -> None:
        logs = _backend()
        params = lc.llama_model_default_params()
        params.n_gpu_layers = 0
        model = lc.llama_model_load_from_file(path.encode(), params)
        if not model:
            why = logs.take() or "see the server log"
            raise ValueError(
                f"llama.cpp could not load {path} ({why}); check that the file is a whole, valid GGUF "
                '(download it again), or serve it with runner = "torch"'
            )
        self._model = model
        self._ctx: Any = None
        self._batch: Any = None
        self.tokenizer: Any = None
        vocab = lc.llama_model_get_vocab(model)
        self._vocab = vocab
        self.vocab_size = int(lc.llama_vocab_n_tokens(vocab))
        # llama.cpp's end-of-generation set: EOS, EOT and template ends such as <|im_end|>.
        self.eos_ids = frozenset(i for i in range(self.vocab_size) if lc.llama_vocab_is_eog(vocab, i))
        self.context_length: int | None = int(lc.llama_model_n_ctx_train(model)) or None
        self._threads = threads or len(os.sched_getaffinity(0))
        layers = int(lc.llama_model_n_layer(model))
        heads = int(lc.llama_model_n_head(model))
        kv_heads = int(lc.llama_model_n_head_kv(model)) or heads
        head_k = self._meta_int("attention.key_length") or int(lc.llama_model_n_embd(model)) // heads
        head_v = self._meta_int("attention.value_length") or head_k
        self.cache = _Cache(self, layers * kv_heads * (head_k + head_v) * _BYTES_F16)
        if not 1 <= max_rows <= _MAX_SEQS:
            raise ValueError(f"llama.cpp runs at most {_MAX_SEQS} sequences together; set engine.max_active lower")
        self._max_rows = max_rows
        self._max_cells = kv_cache_bytes // self.cache.bytes_per_token
        self._seqs = 0  # sequence ids (streams) in the context
        self._stream = 0  # positions per sequence
        self._held: dict[int, int] = {}  # sequence id -> positions it holds
        self._copied: tuple[Any, Any] | None = None  # the last row copied: (context, row, length), its state
        self._new_context(self._streams_for(_STREAM_STEP), _STREAM_STEP, [])

    def _streams_for(self, length: int) -> int:
        """As many streams of ``length`` as the budget holds, at most the engine's rows (at least one)."""
        return max(1, min(self._max_rows, self._max_cells // length))

    def _meta_int(self, key: str) -> int:
        arch = self._meta_str("general.architecture")
        value = self._meta_str(f"{arch}.{key}")
        return int(value) if value.isdigit() else 0

    def _meta_str(self, key: str) -> str:
        buf = ctypes.create_string_buffer(256)
        n = lc.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else ""

    def check_tokenizer(self) -> None:
        """Refuse a transformers tokenizer that splits text differently from llama.cpp's own."""
        for special in (False, True):
            ours = list(self.tokenizer(_PROBE, add_special_tokens=special).input_ids)
            theirs = self.tokenize(_PROBE, special)
            if ours != theirs:
                raise ValueError(
                    f"the tokenizer transformers reads from this GGUF splits text differently from llama.cpp's "
                    f'({ours[:12]}... vs {theirs[:12]}...); serve the model with runner = "torch"'
                )

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        data = text.encode()
        room = len(data) + 8
        buf = (lc.llama_token * room)()
        n = lc.llama_tokenize(self._vocab, data, len(data), buf, room, add_special, True)
        return list(buf[:n])

    # -- the context and its cell pool --------------------------------------------------------------------
    def _new_context(self, seqs: int, stream: int, carried: list[tuple[int, Any]]) -> None:
        params = lc.llama_context_default_params()
        params.n_ctx = seqs * stream
        params.n_batch = params.n_ubatch = _BATCH
        params.n_seq_max = seqs
        params.n_threads = params.n_threads_batch = self._threads
        params.kv_unified = False  # a stream per sequence: see the module's docstring
        # llama.cpp's own default on a CPU ("auto" picks it), set so that it never changes under us: without it,
        # a row's logits change with the number of cells in the batch's view (up to 0.9 here).
        params.flash_attn_type = _FLASH_ATTN_ENABLED
        # Sliding-window layers keep every position, as the budget counts them: a sequence loaded from the prefix
        # cache and cut short still has the window its next tokens look back on.
        params.swa_full = True
        params.no_perf = True
        ctx = lc.llama_init_from_model(self._model, params)
        if not ctx:
            raise MemoryError(
                f"llama.cpp could not make a context of {seqs} x {stream} positions "
                f"({_logs.take() if _logs else ''}); lower engine.kv_cache_mb or engine.max_active"
            )
        if self._ctx is not None:
            lc.llama_free(self._ctx)
        self._ctx, self._seqs, self._stream = ctx, seqs, int(lc.llama_n_ctx_seq(ctx))
        for seq, state in carried:
            self._load(seq, state)
        if self._batch is None:
            self._batch = lc.llama_batch_init(_BATCH, 0, 1)

    def reserve(self, rows: int, length: int) -> bool:
        """Room for ``rows`` sequences of ``length`` positions each; True if the held caches had to go."""
        if rows <= self._seqs and length <= self._stream:
            return False
        stream = max(self._stream, -(-length // _STREAM_STEP) * _STREAM_STEP)
        seqs = self._streams_for(stream)
        if rows > seqs:  # the engine keeps rows x length within the budget: fewer, shorter streams will do
            stream = -(-length // _STREAM_STEP) * _STREAM_STEP
            seqs = self._streams_for(stream)
        if rows > seqs:
            raise RuntimeError(f"{rows} rows of {length} positions do not fit the KV cache budget")
        log.debug("llama.cpp context: %d x %d -> %d x %d positions", self._seqs, self._stream, seqs, stream)
        if seqs == self._seqs:
            carried = [(seq, self._save(seq)) for seq, held in self._held.items() if held]
            self._new_context(seqs, stream, carried)
            return False
        dropped = any(self._held.values())
        self._held.clear()
        self._new_context(seqs, stream, [])
        return dropped

    def idle(self) -> None:
        """No sequence runs: give a grown pool's memory back."""
        self._held.clear()
        if self._stream > _STREAM_STEP or self._seqs != self._streams_for(_STREAM_STEP):
            self._new_context(self._streams_for(_STREAM_STEP), _STREAM_STEP, [])
        else:
            lc.llama_memory_clear(lc.llama_get_memory(self._ctx), True)

    def _save(self, seq: int) -> Any:
        size = lc.llama_state_seq_get_size(self._ctx, seq)
        state = (ctypes.c_uint8 * size)()
        lc.llama_state_seq_get_data(self._ctx, state, size, seq)
        return state

    def _load(self, seq: int, state: Any) -> None:
        if lc.llama_state_seq_set_data(self._ctx, state, len(state), seq) == 0:
            why = _logs.take() if _logs else ""
            raise RuntimeError(f"llama.cpp could not load the cache of sequence {seq}: {why}")

    def move(self, src: int, dst: int) -> None:
        """Row ``src``'s cache becomes row ``dst``'s, copied at once (``llama_memory_seq_cp`` between streams
        would copy at the next decode, after a context rebuild might already have saved ``dst`` empty)."""
        memory = lc.llama_get_memory(self._ctx)
        self._copied = None
        if self._held.get(src):
            lc.llama_memory_seq_rm(memory, dst, -1, -1)
            self._load(dst, self._save(src))
            self._held[dst] = self._held.pop(src)
        lc.llama_memory_seq_rm(memory, src, -1, -1)
        self._held.pop(src, None)

    def copy(self, src: int, dst: int, length: int) -> None:
        """Row ``dst`` starts as row ``src``'s first ``length`` positions (a save and load: 1 ms + 10 ms per 1,000
        positions here, against llama_memory_seq_cp's whole-stream copy at the next decode, 15-90 ms). Several rows
        copying one (requests sharing a system prompt) load one save."""
        key = (self._ctx, src, self._held.get(src))
        if self._copied is None or self._copied[0] != key:
            self._copied = (key, self._save(src))
        self._load(dst, self._copied[1])
        self._cut(dst, length)

    def save_prefix(self, seq: int, length: int) -> tuple[Any, int]:
        self._cut(seq, length)
        state = self._save(seq)
        return (self._seqs, state), len(state)

    def load_prefix(self, seq: int, saved: Any, length: int) -> bool:
        streams, state = saved
        if streams != self._seqs:  # llama.cpp loads a sequence only into a context with as many streams
            return False
        self._load(seq, state)
        self._cut(seq, length)
        return True

    def _cut(self, seq: int, length: int) -> None:
        lc.llama_memory_seq_rm(lc.llama_get_memory(self._ctx), seq, length, -1)
        self._held[seq] = length
        if self._copied is not None and self._copied[0][1] == seq:
            self._copied = None

    def forget(self, row: int) -> None:
        self._copied = None
        lc.llama_memory_seq_rm(lc.llama_get_memory(self._ctx), row, -1, -1)
        self._held.pop(row, None)

    def held_tokens(self) -> int:
        """Positions llama.cpp holds for all sequences (its own count, not ours: it shows what was freed)."""
        memory = lc.llama_get_memory(self._ctx)
        total = 0
        for seq in range(self._seqs):
            last = lc.llama_memory_seq_pos_max(memory, seq)
            if last >= 0:
                total += last - lc.llama_memory_seq_pos_min(memory, seq) + 1
        return total

    # -- the forward ----------------------------------------------------------------------------------------
    def forward(self, first: int, rows: list[RowInput | None]) -> list[torch.Tensor | None]:
        """Same contract as :meth:`BatchRunner.forward`; padding rows (None) are simply left out.

        The rows' tokens go in waves: wave w holds each row's w-th block (see ``_BLOCK``), so one llama_decode call
        serves every row's block, and a decode step (one token per row) is a single call."""
        self._copied = None
        after = dict(self._held)
        for i, row in enumerate(rows):
            if row is not None:
                after[first + i] = row.start + len(row.tokens)
        if self.reserve(first + len(rows), max(after.values())):
            raise RuntimeError("the KV cache was reshaped inside a forward; the engine reserves room before")
        memory = lc.llama_get_memory(self._ctx)
        waves: list[list[tuple[int, int, int, bool]]] = []  # (seq, token, position, wants logits)
        owners: list[list[int]] = []  # per wave, the row index of each token that wants logits
        for i, row in enumerate(rows):
            if row is None:
                continue
            seq = first + i
            if row.start == 0:
                lc.llama_memory_seq_rm(memory, seq, -1, -1)  # a fresh sequence: nothing may linger in its id
            end = row.start + len(row.tokens)
            for w, at in enumerate(range(row.start, end, _BLOCK)):
                stop = min(end, (at // _BLOCK + 1) * _BLOCK)
                if w == len(waves):
                    waves.append([])
                    owners.append([])
                for pos in range(at, stop):
                    want = row.all_logits or pos == end - 1
                    waves[w].append((seq, row.tokens[pos - row.start], pos, want))
                    if want:
                        owners[w].append(i)
        per_row: list[list[Any]] = [[] for _ in rows]
        calls = [(w, part) for w, wave in enumerate(waves) for part in _pieces(wave)]
        for w, (start, stop) in calls:
            logits = self._decode(waves[w][start:stop])
            # The logits stay in llama.cpp's buffer, read in place when one call did it all: the engine uses them
            # before the next forward (a copy was 0.1-0.5 ms a step, mostly page faults of a fresh array).
            table = torch.from_numpy(logits if len(calls) == 1 else logits.copy())
            wanted = sum(want for _, _, _, want in waves[w][:start])
            for k, owner in enumerate(owners[w][wanted : wanted + len(table)]):
                per_row[owner].append(table[k])
        self._held = after
        result: list[torch.Tensor | None] = []
        for row, found in zip(rows, per_row, strict=True):
            if row is None:
                result.append(None)
            else:
                result.append(torch.stack(found) if row.all_logits else found[-1])
        return result

    def _decode(self, work: list[tuple[int, int, int, bool]]) -> np.ndarray[Any, Any]:
        """One ``llama_decode``; the logits of the tokens that asked for them, as a view of llama.cpp's buffer."""
        batch = self._batch
        wanted = 0
        for k, (seq, token, pos, want) in enumerate(work):
            batch.token[k] = token
            batch.pos[k] = pos
            batch.n_seq_id[k] = 1
            batch.seq_id[k][0] = seq
            batch.logits[k] = want
            wanted += want
        batch.n_tokens = len(work)
        status = lc.llama_decode(self._ctx, batch)
        if status != 0:
            why = {1: "no room left in the KV cache", 2: "aborted"}.get(status, f"error {status}")
            raise RuntimeError(f"llama_decode failed: {why} {_logs.take() if _logs else ''}".strip())
        if not wanted:
            return np.empty((0, self.vocab_size), dtype=np.float32)
        return np.ctypeslib.as_array(lc.llama_get_logits(self._ctx), shape=(wanted, self.vocab_size))

    # -- the rest of the protocol -------------------------------------------------------------------------
    def weight_bytes(self) -> int:
        return int(lc.llama_model_size(self._model)) if self._model else 0

    def close(self) -> None:
        if self._batch is not None:
            lc.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            lc.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            lc.llama_model_free(self._model)
            self._model = None
