"""Running an exported detector: ONNX Runtime for `.onnx`, TensorRT (through the bench backend) for engines.

`load_exported` returns a `Runner` with the model's metadata and a `run(batch)` that returns the four fixed
outputs as numpy arrays; `exported_predictor` turns it into the evaluator's `Predictor` (uint8 images in,
detections in original-image pixels out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detnas.bench.onnx_metadata import OnnxMetadata
from detnas.detection.deployable import OUTPUT_NAMES
from detnas.errors import DetnasError
from detnas.export.metadata import ModelMeta
from detnas.export.preprocess import letterbox, restore_boxes
from detnas.io import read_json_file

Prediction = dict[str, torch.Tensor]
Predictor = Callable[[list[torch.Tensor]], list[Prediction]]
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass
class Runner:
    """An exported model ready to run: `run(images [B, 3, H, W] float32)` -> (num_dets, boxes, scores, labels)."""

    meta: ModelMeta
    run: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    backend: str


def read_onnx_meta(path: str | Path) -> ModelMeta:
    return ModelMeta.from_metadata(OnnxMetadata.read(path))


def engine_sidecar(engine: str | Path) -> Path:
    return Path(engine).with_suffix(".json")


def read_engine_meta(engine: str | Path) -> ModelMeta:
    sidecar = engine_sidecar(engine)
    data = read_json_file(sidecar, "engine sidecar", "rebuild the engine with `detnas export --format trt`")
    return ModelMeta.from_props(data.get("metadata", {}), str(sidecar))


def onnx_runner(path: str | Path, device: str = "cpu", threads: int | None = None) -> Runner:
    """ONNX Runtime session on `device` (cpu, cuda or cuda:N) with the file's metadata; a GPU session that ORT
    silently moved to the CPU is refused."""
    import onnxruntime as ort

    from detnas.bench.backends.ort_backend import check_providers

    meta = read_onnx_meta(path)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    on_gpu = device.startswith("cuda")
    provider = "CUDAExecutionProvider" if on_gpu else "CPUExecutionProvider"
    provider_options = {"device_id": int(device.partition(":")[2] or 0)} if on_gpu else {}
    session = ort.InferenceSession(str(path), options, providers=[(provider, provider_options)])
    check_providers(provider, session.get_providers())
    name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(session.run(list(OUTPUT_NAMES), {name: np.ascontiguousarray(images, dtype=np.float32)}))

    return Runner(meta, run, "onnxruntime")


def engine_runner(path: str | Path, device: str = "cuda") -> Runner:
    """A TensorRT engine on GPU `device` (cuda or cuda:N) run through the bench backend's loader (the one module
    that imports tensorrt), loaded once: each `run` copies its images into the engine's bound input and reads the
    bound outputs back."""
    from detnas.bench.backends.trt_backend import open_engine

    if not device.startswith("cuda"):
        raise DetnasError(f"{path}: a TensorRT engine runs on a GPU; pass --device cuda or cuda:N, not {device}")
    gpu = torch.device(device)
    meta = read_engine_meta(path)
    with torch.cuda.device(gpu):
        engine = open_engine(path, [torch.zeros(meta.input.shape())])
    (bound_input,) = engine.inputs

    def run(images: np.ndarray) -> tuple[np.ndarray, ...]:
        if tuple(images.shape) != tuple(bound_input.shape):
            raise DetnasError(f"{path}: engine takes input {list(bound_input.shape)}, got {list(images.shape)}")
        with torch.cuda.device(gpu):
            bound_input.copy_(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))
            engine.prepared.call(0)
            engine.prepared.cuda_stream.synchronize()
            return tuple(engine.outputs[n].cpu().numpy() for n in OUTPUT_NAMES)

    return Runner(meta, run, "tensorrt")


def load_exported(path: str | Path, device: str | None = None) -> Runner:
    """`.onnx` -> ONNX Runtime (on the CPU unless `device` says cuda[:N]), `.engine` / `.plan` / `.trt` ->
    TensorRT (on cuda unless `device` says cuda:N)."""
    path = Path(path)
    if not path.is_file():
        raise DetnasError(f"{path}: model file not found; pass an .onnx file or a TensorRT engine from `detnas export`")
    if path.suffix in ENGINE_SUFFIXES:
        return engine_runner(path, device or "cuda")
    if path.suffix != ".onnx":
        raise DetnasError(f"{path}: unknown model type '{path.suffix}'; expected .onnx or {', '.join(ENGINE_SUFFIXES)}")
    return onnx_runner(path, device or "cpu")


def run_images(runner: Runner, inputs: list[torch.Tensor]) -> list[tuple[np.ndarray, ...]]:
    """Model inputs [3, H, W] -> per-image (boxes, scores, labels) in model-input pixels, batched as the model
    requires (a fixed-batch model gets its last batch padded with blank images)."""
    batch = runner.meta.input.batch or len(inputs) or 1
    results = []
    for first in range(0, len(inputs), batch):
        chunk = torch.stack(inputs[first:first + batch]).numpy()
        real = chunk.shape[0]
        if real < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - real, *chunk.shape[1:]), chunk.dtype)])
        num, boxes, scores, labels = runner.run(chunk)
        for i in range(real):
            n = int(num[i])
            results.append((boxes[i, :n], scores[i, :n], labels[i, :n]))
    return results


def exported_predictor(model: str | Path | Runner, score_thresh: float = 0.0) -> Predictor:
    """The evaluator's `Predictor` for an exported file: uint8 CHW RGB images (any size) -> boxes / scores /
    labels in original-image pixels; detections below `score_thresh` are dropped on top of the model's own."""
    runner = model if isinstance(model, Runner) else load_exported(model)
    spec, pixels = runner.meta.input, runner.meta.pixels

    def predict(images: list[torch.Tensor]) -> list[Prediction]:
        prepared = [letterbox(im, spec.height, spec.width, pixels) for im in images]
        raw = run_images(runner, [x for x, _ in prepared])
        outputs = []
        for image, (_, scale), (boxes, scores, labels) in zip(images, prepared, raw):
            keep = scores >= score_thresh
            outputs.append({
                "boxes": restore_boxes(torch.from_numpy(boxes[keep]).float(), scale, *image.shape[-2:]),
                "scores": torch.from_numpy(scores[keep]).float(),
                "labels": torch.from_numpy(labels[keep]).long(),
            })
        return outputs

    return predict


def onnx_predictor(model_path: str | Path, score_thresh: float = 0.0) -> Predictor:
    """`exported_predictor` for an ONNX file (ONNX Runtime, CPU)."""
    if Path(model_path).suffix != ".onnx":
        raise DetnasError(f"{model_path}: onnx_predictor takes an .onnx file")
    return exported_predictor(model_path, score_thresh)



def evaluate_exported(model: str | Path, data: str | Path, images: str | Path, max_images: int | None = None,
                      batch_size: int = 4, out_json: str | Path | None = None,
                      runner: Runner | None = None, device: str | None = None) -> tuple[dict[str, float], Runner]:
    """COCO metrics of the exported file itself (and the runner that produced them, on `device`, see
    `load_exported`), on data with the model's class list; `runner` runs the same graph another way instead (e.g.
    its PyTorch twin)."""
    from detnas.data.coco import CocoDetection
    from detnas.evaluation import evaluate

    runner = runner or load_exported(model, device)
    dataset = CocoDetection(data, images)
    if [c.name for c in runner.meta.classes] != dataset.classes:
        raise DetnasError(f"{data}: its classes differ from the model's ({len(runner.meta.classes)} classes in the "
                          f"metadata of {model}); evaluate on data with the same category list")
    metrics = evaluate(exported_predictor(runner), dataset, out_json=out_json, batch_size=batch_size,
                       max_images=max_images)
    return metrics, runner
