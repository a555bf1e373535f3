#!/usr/bin/env python3
"""Makes the brainml plugin's test models, offline, and their reference outputs.

Under plugins/brainml/testdata/:

  - iris_forest.onnx: a scikit-learn RandomForestClassifier (5 trees, depth 3) fitted on the
    iris data set that ships inside scikit-learn, converted with skl2onnx (zipmap=False, so
    both outputs are tensors: `label` int64 [N] and `probabilities` float32 [N, 3]); input
    `X` float32 [N, 4].
  - tiny_cnn.onnx: a small PyTorch CNN (conv 3x3 -> ReLU -> max-pool -> linear) with random
    weights, exported with torch.onnx.export; input `image` float32 [batch, 1, 8, 8], output
    `logits` float32 [batch, 3].
  - <model>.reference.json: inputs (seeded random) and what PyPI `onnxruntime` computes on
    them: {"inputs": {name: {shape, data}}, "outputs": {name: {dtype, shape, data}}}.

    python3 -m venv /tmp/venv-brainml
    /tmp/venv-brainml/bin/pip install scikit-learn skl2onnx onnx onnxruntime torch
    /tmp/venv-brainml/bin/python scripts/brainml/make_models.py

Needs no network: the iris data ships with scikit-learn, the CNN's weights are random.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import torch
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugins", "brainml", "testdata"
)


def tensor(a: np.ndarray) -> dict:
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.reshape(-1).tolist()}


def reference(name: str, inputs: dict) -> None:
    """Runs the committed file with onnxruntime and writes inputs and outputs beside it."""
    path = os.path.join(OUT, f"{name}.onnx")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, inputs)
    doc = {
        "model": f"{name}.onnx",
        "onnxruntime": ort.__version__,
        "inputs": {k: tensor(v) for k, v in inputs.items()},
        "outputs": {k: tensor(v) for k, v in zip(names, outputs)},
    }
    with open(os.path.join(OUT, f"{name}.reference.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"{path}: {os.path.getsize(path)} bytes, outputs {names}")


def iris_forest() -> None:
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    clf = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x, y)
    onx = to_onnx(
        clf,
        x[:1],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    with open(os.path.join(OUT, "iris_forest.onnx"), "wb") as f:
        f.write(onx.SerializeToString())
    rng = np.random.default_rng(7)
    # Rows of the data set and jittered ones, so the trees' thresholds are crossed both ways.
    rows = np.concatenate([x[::15], x[5::30] + rng.normal(0, 0.3, (5, 4)).astype(np.float32)])
    reference("iris_forest", {"X": rows.astype(np.float32)})


class TinyCnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(4 * 4 * 4, 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.conv(image)))
        return self.fc(torch.flatten(h, 1))


def tiny_cnn() -> None:
    torch.manual_seed(0)
    model = TinyCnn().eval()
    example = torch.zeros(1, 1, 8, 8)
    torch.onnx.export(
        model,
        (example,),
        os.path.join(OUT, "tiny_cnn.onnx"),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    rng = np.random.default_rng(11)
    reference("tiny_cnn", {"image": rng.normal(0, 1, (3, 1, 8, 8)).astype(np.float32)})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    iris_forest()
    tiny_cnn()
