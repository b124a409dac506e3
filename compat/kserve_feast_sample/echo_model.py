"""A KServe predictor that answers each V1 instance with itself (quiver's, for the Feast sample
test and the KServe benchmark): `{"instances": X}` → `{"predictions": X}`.

    python echo_model.py --model_name NAME --http_port P [--grpc_port G] [--enable_grpc false]
"""

import kserve


class Echo(kserve.Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        return {"predictions": payload["instances"]}


if __name__ == "__main__":
    # kserve.model_server.parser reads --model_name, --http_port, --grpc_port, --enable_grpc.
    args, _ = kserve.model_server.parser.parse_known_args()
    kserve.ModelServer().start([Echo(args.model_name)])
