"""Model servers for the KServe enrichment tests, run on the real KServe Python model server
(`kserve.ModelServer`) in the KServe venv (compat/setup-kserve-venv.sh).

    python compat/kserve/models.py weighted --model_name NAME --weights 1,2,3 --http_port P
        [--enable_grpc true --grpc_port G]   (KServe's gRPC server too; off by default)
    python compat/kserve/models.py sklearn  --model_name NAME --model_dir DIR --http_port P
    python compat/kserve/models.py train    --model_dir DIR   (a tiny LinearRegression, joblib)

`weighted` returns, per row, the weighted sum of its numeric inputs (bools count 0/1, strings
are skipped): V1 rows are the instances' lists; V2 rows take one element of every input tensor
in the request's order (a tensor of shape [n, k] gives k columns). `explain` answers the
per-column products. `sklearn` loads `model.joblib` from --model_dir and predicts, V1 from the
instances and V2 from the first input tensor ([n, k]), as KServe's sklearn server does.
"""

import argparse
import sys
from pathlib import Path

import numpy as np


def numeric(v):
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None


def v2_rows(payload):
    """The rows of a V2 request as lists of values, tensors in request order."""
    columns = []
    for t in payload.inputs:
        data = t.as_numpy()
        if data.ndim == 1:
            data = data.reshape(-1, 1)
        for k in range(data.shape[1]):
            col = data[:, k].tolist()
            columns.append([c.decode() if isinstance(c, bytes) else c for c in col])
    n = len(columns[0]) if columns else 0
    return [[c[r] for c in columns] for r in range(n)]


def main():
    import kserve
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

    kind = sys.argv[1]
    argv = sys.argv[2:]
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], add_help=False)
    if not any(a.option_strings == ["--model_dir"] for a in parser._actions):
        parser.add_argument("--model_dir", default=".")
    parser.add_argument("--weights", default="")
    args, _ = parser.parse_known_args(argv)

    if kind == "train":
        import joblib
        from sklearn.linear_model import LinearRegression

        rng = np.random.default_rng(7)
        x = rng.uniform(0, 1, size=(64, 3))
        y = x @ np.array([3.0, -2.0, 0.5]) + 1.25
        model = LinearRegression().fit(x, y)
        Path(args.model_dir).mkdir(parents=True, exist_ok=True)
        joblib.dump(model, Path(args.model_dir) / "model.joblib")
        print(",".join(str(c) for c in model.coef_.tolist() + [float(model.intercept_)]))
        return

    def answer(payload, predictions, name):
        if isinstance(payload, InferRequest):
            out = InferOutput(name="predictions", shape=[len(predictions)], datatype="FP64",
                              data=[float(p) for p in predictions])
            return InferResponse(response_id=payload.id or "r", model_name=name, infer_outputs=[out])
        return {"predictions": [float(p) for p in predictions]}

    class Weighted(Model):
        def __init__(self, name, weights):
            super().__init__(name)
            self.weights = weights
            self.ready = True

        def rows(self, payload):
            if isinstance(payload, InferRequest):
                return v2_rows(payload)
            return payload["instances"]

        def products(self, row):
            values = [numeric(v) for v in row]
            values = [v for v in values if v is not None]
            if len(values) != len(self.weights):
                raise kserve.errors.InvalidInput(
                    f"expected {len(self.weights)} numeric inputs, got {len(values)}: {row}")
            return [w * v for w, v in zip(self.weights, values)]

        async def predict(self, payload, headers=None, response_headers=None):
            return answer(payload, [sum(self.products(r)) for r in self.rows(payload)], self.name)

        async def explain(self, payload, headers=None):
            return {"explanations": [self.products(r) for r in self.rows(payload)]}

    class Sklearn(Model):
        def __init__(self, name, model_dir):
            super().__init__(name)
            self.model_dir = model_dir
            self.model = None

        def load(self):
            import joblib

            self.model = joblib.load(Path(self.model_dir) / "model.joblib")
            self.ready = True
            return True

        async def predict(self, payload, headers=None, response_headers=None):
            if isinstance(payload, InferRequest):
                x = payload.inputs[0].as_numpy()
            else:
                x = np.array(payload["instances"], dtype=np.float64)
            return answer(payload, self.model.predict(x).tolist(), self.name)

    if kind == "weighted":
        model = Weighted(args.model_name, [float(w) for w in args.weights.split(",") if w])
    elif kind == "sklearn":
        model = Sklearn(args.model_name, args.model_dir)
        model.load()
    else:
        raise SystemExit(f"unknown kind {kind!r}: weighted, sklearn or train")
    # gRPC only when asked for (--enable_grpc true): the REST tests leave it off.
    grpc = args.enable_grpc if "--enable_grpc" in argv else False
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=grpc,
                workers=1).start([model])


if __name__ == "__main__":
    main()
