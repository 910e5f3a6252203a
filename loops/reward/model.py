"""`RewardModel`: load a trained checkpoint and score (context, response) pairs in length-sorted batches."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from curation.console import quiet
from curation.errors import InputError
from loops.reward.padding import pad
from loops.reward.render import Renderer


BACKENDS = ("auto", "torch", "onnx", "openvino")


def resolve_backend(backend: str | None, path: str | Path | None = None) -> str:
    """`auto`: torch on a GPU; on a CPU, ONNX Runtime with int8 weights when it is installed (about 1.6x torch's
    throughput at a Spearman correlation of 0.99 with its rewards, docs/performance.md), else torch.

    With `path`, the exported backends are for the BERT-style encoders their recipe was measured on: `auto` picks
    torch for a decoder (Llama, Qwen, Mistral, …) or a kept LoRA adapter, and asking for onnx/openvino is an error."""
    from curation.embed.int8 import installed

    backend = backend or "auto"
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    exportable = path is None or _exportable(Path(path))
    if backend != "auto":
        if backend != "torch" and not exportable:
            raise InputError(f"{path} is a decoder model or a LoRA adapter, which the {backend} export does not "
                             "cover; score it with --backend torch (or auto)")
        return backend
    import torch

    if torch.cuda.is_available() or not exportable:
        return "torch"
    return "onnx" if installed("onnxruntime") and installed("optimum.onnxruntime") else "torch"


def _exportable(path: Path) -> bool:
    """A merged checkpoint of an encoder (a model type with a masked-LM head in transformers: BERT, MiniLM, …)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if (path / ADAPTER_FILE).exists():
        return False
    return AutoConfig.from_pretrained(path).model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


ADAPTER_FILE = "adapter_config.json"


class RewardModel:
    """A reward-model checkpoint ready to score. Reads `curate_reward.json` when present (our models); any other
    single-logit sequence-classification checkpoint is scored with its chat template or the plain rendering.

    `batch_size` None picks 16 for ONNX Runtime (its best on a CPU, measured) and 64 for torch."""

    def __init__(self, path: str | Path, batch_size: int | None = None, max_length: int | None = None,
                 threads: int | None = None, backend: str = "torch"):
        import torch
        import transformers
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path = Path(path)
        if not (self.path / "config.json").exists():
            raise InputError(f"{self.path} is not a model folder (no config.json); pass the --out of `curate reward train`")
        meta_file = self.path / "curate_reward.json"
        self.meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        if threads:
            torch.set_num_threads(threads)
        transformers.logging.set_verbosity_error()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.backend = backend = resolve_backend(backend, self.path)
        if backend == "openvino":
            self.model, self.device = _openvino(self.path), "cpu"
        elif backend == "onnx":
            self.model, self.device = _OnnxInt8(self.path, threads), "cpu"
        elif backend == "torch":
            if (self.path / ADAPTER_FILE).exists():
                self.model = _with_adapter(self.path, self.meta).eval()
            else:
                self.model = AutoModelForSequenceClassification.from_pretrained(self.path).eval()
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
            self.model.to(self.device)
        self.renderer = Renderer(self.tokenizer, max_length or self.meta.get("max_length", 256), self.meta.get("rendering"))
        self.head = self.meta.get("reward_head", 0)
        self.attributes = self.meta.get("attributes")
        self.batch_size = batch_size or (16 if backend == "onnx" else 64)

    def score(self, prompts: list[list[dict]], responses: list[dict], progress: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Rewards (n,) and, for multi-attribute models, attribute predictions (n, 5). Inputs that render to the same
        tokens (a canned reply to the same question) are scored once."""
        import torch
        from tqdm.auto import tqdm

        distinct: dict[tuple, int] = {}
        encoded, index = [], np.empty(len(responses), dtype=np.int64)
        for i, e in enumerate(self.renderer.encode_many(prompts, responses)):
            key = (tuple(e["input_ids"]), tuple(e.get("token_type_ids", ())))
            if key not in distinct:
                distinct[key] = len(encoded)
                encoded.append(e)
            index[i] = distinct[key]
        order = np.argsort([len(e["input_ids"]) for e in encoded], kind="stable")  # little padding per batch
        logits = np.zeros((len(encoded), self.model.config.num_labels), dtype=np.float32)
        show = progress if progress is not None else (sys.stderr.isatty() and len(encoded) > self.batch_size)
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), self.batch_size), disable=not show, desc="scoring", unit="batch"):
                idx = order[start : start + self.batch_size]
                batch = pad([encoded[i] for i in idx], self.tokenizer.pad_token_id)
                out = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits
                logits[idx] = out.float().cpu().numpy()
        logits = logits[index]
        return logits[:, self.head], (logits if self.attributes else None)


def _with_adapter(path: Path, meta: dict) -> Any:
    """A kept LoRA adapter (`curate reward train --lora --lora-keep`) on its base, merged for scoring. The base is the
    one curate_reward.json records (else the adapter's own `base_model_name_or_path`); the folder's config.json
    gives the head's size and the pad token."""
    try:
        from peft import PeftModel
    except ImportError:
        raise InputError(f"{path} holds a LoRA adapter, which needs peft: pip install 'curate[train]'") from None
    from transformers import AutoConfig, AutoModelForSequenceClassification

    base = meta.get("base") or json.loads((path / ADAPTER_FILE).read_text()).get("base_model_name_or_path")
    if not base:
        raise InputError(f"{path} holds a LoRA adapter but names no base model; add \"base\" to its curate_reward.json")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base, config=AutoConfig.from_pretrained(path))
    except OSError as exc:
        raise InputError(f"the base {base} of the LoRA adapter in {path} cannot be loaded ({exc}); make it "
                         "reachable, or retrain without --lora-keep to save a merged model") from None
    return PeftModel.from_pretrained(model, path).merge_and_unload()


def _export_once(path: Path, name: str, export: Callable[[Path], None]) -> Path:
    """`path/name`, exported by `export(folder)` the first time. Written to a temporary folder and renamed, so two
    scorers starting at once never read a half-written export."""
    target = path / name
    if not target.exists():
        tmp = Path(tempfile.mkdtemp(dir=path, prefix=f".{name}-"))
        try:
            with quiet():  # exporters print advice and progress on stdout
                export(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class _OnnxInt8:
    """The checkpoint as an ONNX Runtime model with int8 weights, exported once into `path/onnx-int8-fused`: the
    embedder's recipe (`curation.embed.int8.quantise_onnx`): attention, LayerNorm and GELU fused, then the
    matrix products' weights quantised per channel for this CPU's instruction set. Against sentence-transformers'
    unfused preset it scores about 1.2x faster and closer to fp32 (Spearman 0.993 instead of 0.975 with torch's
    rewards on oasst1, docs/performance.md). Called like the torch model: `model(**batch).logits`."""

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnxruntime
            from optimum.onnxruntime import ORTModelForSequenceClassification
        except ImportError:
            raise InputError("the onnx backend needs optimum's ONNX Runtime support: pip install 'curate[fast]'") from None
        from transformers import AutoConfig

        from curation.embed.int8 import onnx_quantization_config, quantise_onnx

        def export(tmp: Path) -> None:
            ORTModelForSequenceClassification.from_pretrained(path, export=True).save_pretrained(tmp)
            quantise_onnx(tmp, onnx_quantization_config())
            (tmp / "model.onnx").unlink()  # the float32 graph: only its int8 copy is used

        folder = _export_once(path, "onnx-int8-fused", export)
        found = sorted(folder.glob("model_*qint8_*.onnx"))
        if not found:
            raise InputError(f"no int8 model in {folder}; delete that folder and score again to re-export it")
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared machines: see curation.embed
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(found[0]), options,
                                                    providers=["CPUExecutionProvider"])
        self.names = {i.name for i in self.session.get_inputs()}
        self.config = AutoConfig.from_pretrained(path)

    def __call__(self, **batch: Any) -> Any:
        import torch
        from transformers.modeling_outputs import SequenceClassifierOutput

        feed = {k: v.numpy() for k, v in batch.items() if k in self.names}
        return SequenceClassifierOutput(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))


def _openvino(path: Path):
    """The checkpoint as an OpenVINO model, exported once into `path/openvino` (faster on CPUs: 1.3x measured on AVX2)."""
    try:
        from optimum.intel import OVModelForSequenceClassification
    except ImportError:
        raise InputError("the openvino backend needs optimum-intel: pip install 'curate[fast]'") from None
    target = _export_once(path, "openvino", lambda tmp: OVModelForSequenceClassification.from_pretrained(
        path, export=True, compile=False).save_pretrained(tmp))
    return OVModelForSequenceClassification.from_pretrained(target)
