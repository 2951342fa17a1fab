"""Triton Python backend for `trade_eligibility`: the 8-feature vector in, a calibrated probability out.

Identical in every version directory; what a version serves is its manifest `weights.json` (written by
deploy/triton/train.py), which names its `kind` and the sha256 of every other file the version loads:

* `logistic_regression`: σ(intercept + Σ coef·(x − mean)/std) from the manifest itself (Platt scaling folded in);
* `lightgbm`: a LightGBM booster (`model.txt`, text format of `Booster.save_model`) whose probability goes
  through the calibration map in `calibration.json` (isotonic: piecewise-linear breakpoints, numpy.interp).

On load it checks that sha256(weights.json) equals the config parameter `artefact_sha256_v<version>` and that
each file in the manifest's `files` (always `reference.json`, the PSI reference) has the sha256 recorded there, so
the one hash clients read from the model config covers the whole artefact. Each file is parsed from the bytes it
hashed (no second read that could see another file). A mismatch fails the load: the version never becomes READY.

Test hook: a request parameter `delay_ms` (int) makes the batch holding that request sleep that long
before answering, so client tests can exercise deadlines against the real server.
"""
import hashlib
import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _read(path):
    with open(path, "rb") as f:
        data = f.read()
    return data, hashlib.sha256(data).hexdigest()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version = args["model_version"]
        vdir = os.path.join(args["model_repository"], version)
        data, digest = _read(os.path.join(vdir, "weights.json"))
        key = f"artefact_sha256_v{version}"
        expected = config.get("parameters", {}).get(key, {}).get("string_value", "")
        if digest != expected:
            raise pb_utils.TritonModelException(
                f"{vdir}/weights.json: sha256 {digest} does not match config parameter {key}={expected!r}")
        w = json.loads(data)
        files = w.get("files", {})
        if "reference.json" not in files:
            raise pb_utils.TritonModelException(f"{vdir}/weights.json: no sha256 for reference.json in files")
        blobs = {}
        for name, want in files.items():
            blob, got = _read(os.path.join(vdir, name))
            if got != want:
                raise pb_utils.TritonModelException(
                    f"{vdir}/{name}: sha256 {got} does not match weights.json files[{name!r}]={want!r}")
            blobs[name] = blob
        kind = w.get("kind")
        if kind == "logistic_regression":
            self.mean = np.asarray(w["mean"], dtype=np.float64)
            self.scale = 1.0 / np.asarray(w["std"], dtype=np.float64)
            self.coef = np.asarray(w["coef"], dtype=np.float64)
            self.intercept = float(w["intercept"])
            self.score = self._logistic
        elif kind == "lightgbm":
            import lightgbm  # only versions that serve a booster need it (scripts/dev-triton.sh installs it)
            self.booster = lightgbm.Booster(model_str=blobs[w["booster"]].decode())
            if self.booster.num_feature() != len(w["features"]):
                raise pb_utils.TritonModelException(
                    f"{vdir}/{w['booster']}: {self.booster.num_feature()} features, manifest names {len(w['features'])}")
            cal = json.loads(blobs[w["calibration"]])
            if cal.get("kind") != "isotonic":
                raise pb_utils.TritonModelException(f"{vdir}/{w['calibration']}: unsupported kind {cal.get('kind')!r}")
            self.cal_x = np.asarray(cal["x"], dtype=np.float64)
            self.cal_y = np.asarray(cal["y"], dtype=np.float64)
            self.score = self._lightgbm
        else:
            raise pb_utils.TritonModelException(f"{vdir}/weights.json: unsupported kind {kind!r}")

    def _logistic(self, x):
        z = ((x - self.mean) * self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def _lightgbm(self, x):
        # One thread per instance: config.pbtxt runs 2 instances on a 2-core box; batches are small.
        raw = self.booster.predict(x, num_threads=1)
        return np.interp(raw, self.cal_x, self.cal_y)

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
        scores = self.score(x).astype(np.float32).reshape(-1, 1)
        responses = []
        start = 0
        for a in arrays:
            n = a.shape[0]
            out = pb_utils.Tensor("score", scores[start:start + n])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += n
        return responses
