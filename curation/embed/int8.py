"""int8 exports of a sentence-transformers model, and the CPU facts that decide them.

- `cpu_class()`: which int8 instruction set this CPU has (`amx`, `avx512_vnni`, `avx512`, `avx2`, `arm64`); the
  flags can be passed in, so that choices made from them are testable on any machine.
- `quantise_onnx(folder, preset)`: ONNX Runtime's fused graph with int8 weights; its activations are quantised at run
  time, over the whole input of each run, which is why the embedder runs it one text at a time (see embedder.py).
- `export_openvino(model, out, texts)`: OpenVINO's static int8, calibrated on the caller's own texts.
- `machine_key(backend)`: what an export depends on besides the model, part of its cache folder.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import platform
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from curation.errors import CurateError

CALIBRATION_SAMPLES = 300
OPENVINO_FILE = "openvino_model_qint8_quantized.xml"
CPU_CLASSES = ("amx", "avx512_vnni", "avx512", "avx2", "arm64")


class EmbedError(CurateError):
    """The embedding model cannot be loaded or exported."""


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def cpu_flags() -> set[str]:
    """The flags of /proc/cpuinfo (empty where there is none)."""
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


def cpu_class(flags: Iterable[str] | None = None, machine: str | None = None) -> str:
    """The CPU's int8 class: `amx` (AMX tiles), `avx512_vnni` (int8 dot products), `avx512`, `avx2` or `arm64`."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags() if flags is None else set(flags)
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def onnx_quantization_config() -> str:
    """The ONNX Runtime int8 preset that matches this CPU's instruction set (AMX CPUs use the VNNI one)."""
    found = cpu_class()
    return "avx512_vnni" if found == "amx" else found


def machine_key(backend: str) -> str:
    """What an int8 export depends on besides the model: the CPU's int8 preset and the runtime's version."""
    from importlib.metadata import PackageNotFoundError, version

    runtime = {"onnx": "onnxruntime", "openvino": "openvino"}.get(backend, backend)
    try:
        runtime_version = version(runtime)
    except PackageNotFoundError:
        runtime_version = "none"
    return f"{onnx_quantization_config()}-{runtime}-{runtime_version}"


def quantise_onnx(folder: Path, preset: str) -> None:
    """Fuse the transformer's ops, then quantise the weights of its matrix products to int8.

    ONNX Runtime's transformer optimizer fuses each layer's attention, LayerNorm and GELU into single kernels; only
    MatMul and the fused Attention are quantised (the embedding lookup and LayerNorms stay fp32, which keeps cosine
    to fp32 ≥ 0.99), per output channel, signed. Without VNNI (AVX2), int8 products of uint8 activations saturate
    16-bit sums, so weights use 7 bits there (`reduce_range`). Models the optimizer does not know are quantised
    unfused. The quantiser's shape inference fails on the fused ops, so tensors of unknown type are taken as fp32.
    Activations are quantised when the graph runs (`DynamicQuantizeLinear`: one scale per input tensor).
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


def onnx_file(folder: Path) -> str:
    """The quantised graph of an ONNX export folder, relative to it."""
    found = sorted((folder / "onnx").glob("model_*int8_*.onnx"))  # qint8, or quint8 for avx2
    if not found:
        raise EmbedError(f"no quantised ONNX model in {folder}; delete that folder and run again to re-export it")
    return f"onnx/{found[0].name}"


def export_openvino(model: Any, out: Path, calibration: Sequence[str]) -> None:
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


def sentence_transformer(source: str, backend: str = "torch", model_kwargs: dict | None = None) -> Any:
    """`SentenceTransformer(source, backend=…)` on the CPU, without the warnings it logs for what Curate does on purpose."""
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
