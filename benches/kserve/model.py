"""The benchmark's model: a KServe Python model server (`kserve.Model`) answering each V1
instance (a list of numbers) with a weighted sum of it. Tiny on purpose: what is measured is the
path to it.

    python model.py --model_name driver-ranker --http_port P --enable_grpc false
"""

import kserve


class WeightedSum(kserve.Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        weights = (0.5, 0.01, 0.25, 0.0)
        return {
            "predictions": [
                sum(w * float(x) for w, x in zip(weights, row)) for row in payload["instances"]
            ]
        }


if __name__ == "__main__":
    # kserve.model_server.parser reads --model_name, --http_port, --grpc_port, --enable_grpc.
    args, _ = kserve.model_server.parser.parse_known_args()
    kserve.ModelServer().start([WeightedSum(args.model_name)])
