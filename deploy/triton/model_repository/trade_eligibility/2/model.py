"""Triton Python backend for `trade_eligibility`: logistic regression over the 8-feature vector.

Identical in every version directory; what differs is the version's weights.json and reference.json
(written by deploy/triton/train.py). On load it checks that sha256(weights.json) equals the config parameter
`artefact_sha256_v<version>`, and that sha256(reference.json) — the feature reference for drift (PSI) — equals
weights.json's `reference_sha256`, so the one hash that clients read from the model config covers the whole
artefact that actually serves. Calibration (Platt scaling) is folded into coef and intercept by train.py.

Test hook: a request parameter `delay_ms` (int) makes the batch holding that request sleep that long
before answering, so client tests can exercise deadlines against the real server.
"""
import hashlib
import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version = args["model_version"]
        path = os.path.join(args["model_repository"], version, "weights.json")
        with open(path, "rb") as f:
            data = f.read()
        digest = hashlib.sha256(data).hexdigest()
        key = f"artefact_sha256_v{version}"
        expected = config.get("parameters", {}).get(key, {}).get("string_value", "")
        if digest != expected:
            raise pb_utils.TritonModelException(
                f"{path}: sha256 {digest} does not match config parameter {key}={expected!r}")
        w = json.loads(data)
        if w.get("kind", "logistic_regression") != "logistic_regression":
            raise pb_utils.TritonModelException(f"{path}: unsupported kind {w.get('kind')!r}")
        ref_path = os.path.join(args["model_repository"], version, "reference.json")
        with open(ref_path, "rb") as f:
            ref_digest = hashlib.sha256(f.read()).hexdigest()
        if ref_digest != w.get("reference_sha256"):
            raise pb_utils.TritonModelException(
                f"{ref_path}: sha256 {ref_digest} does not match weights.json reference_sha256={w.get('reference_sha256')!r}")
        self.mean = np.asarray(w["mean"], dtype=np.float64)
        self.scale = 1.0 / np.asarray(w["std"], dtype=np.float64)
        self.coef = np.asarray(w["coef"], dtype=np.float64)
        self.intercept = float(w["intercept"])

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, "features").as_numpy() for r in requests]
        delay_ms = 0
        for r in requests:
            try:
                params = json.loads(r.parameters() or "{}")
            except Exception:
                params = {}
            delay_ms = max(delay_ms, int(params.get("delay_ms", 0) or 0))
        if delay_ms > 0:
            time.sleep(delay_ms / 1000.0)
        x = np.concatenate(arrays, axis=0).astype(np.float64, copy=False)
        z = ((x - self.mean) * self.scale) @ self.coef + self.intercept
        scores = (1.0 / (1.0 + np.exp(-z))).astype(np.float32).reshape(-1, 1)
        responses = []
        start = 0
        for a in arrays:
            n = a.shape[0]
            out = pb_utils.Tensor("score", scores[start:start + n])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += n
        return responses
