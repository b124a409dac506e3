"""KServe's own Python gRPC client, for the enrichment tests (run in the KServe venv).

    python compat/kserve/grpc_client.py HOST:PORT < calls.json > results.json

Each call is an object; the results, one per call, are printed as a JSON list:

    {"call": "infer", "model": M, "id": ID, "raw": BOOL,
     "inputs": [{"name", "shape", "datatype", "data"}]}
        through kserve.InferenceGRPCClient: typed `contents`, or (raw) every tensor as
        `raw_input_contents` (numpy, little-endian) → {"ok": true, "model_name", "id",
        "outputs": {name: [values]}}
    {"call": "live" | "ready" | "server_metadata"}, {"call": "model_ready" | "model_metadata",
     "model": M}
        through the grpcio stub of inference.GRPCInferenceService → {"ok": true, "answer": {...}}

A call that fails is {"ok": false, "code": "INVALID_ARGUMENT", "details": "..."}. Retries are
off, so UNAVAILABLE comes back at once.
"""

import asyncio
import json
import sys

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

NUMPY = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP64": np.float64,
         "BOOL": np.bool_, "BYTES": np.object_}


def failure(e: grpc.RpcError):
    return {"ok": False, "code": e.code().name, "details": e.details()}


async def infer(client, call):
    inputs = []
    for t in call["inputs"]:
        i = InferInput(name=t["name"], shape=t["shape"], datatype=t["datatype"])
        flat = np.array(t["data"], dtype=object).reshape(-1).tolist()
        if call.get("raw") and t["datatype"] == "BYTES":
            flat = [d.encode() for d in flat]
        data = np.array(flat, dtype=NUMPY[t["datatype"]]).reshape(t["shape"])
        i.set_data_from_numpy(data, binary_data=bool(call.get("raw")))
        inputs.append(i)
    request = InferRequest(model_name=call["model"], infer_inputs=inputs, request_id=call.get("id"))
    try:
        answer = await client.infer(request)
    except grpc.RpcError as e:
        return failure(e)
    return {"ok": True, "model_name": answer.model_name, "id": answer.id,
            "outputs": {o.name: o.as_numpy().tolist() for o in answer.outputs}}


def plain(stub, call):
    method, message = {
        "live": (stub.ServerLive, pb.ServerLiveRequest()),
        "ready": (stub.ServerReady, pb.ServerReadyRequest()),
        "server_metadata": (stub.ServerMetadata, pb.ServerMetadataRequest()),
        "model_ready": (stub.ModelReady, pb.ModelReadyRequest(name=call.get("model", ""))),
        "model_metadata": (stub.ModelMetadata, pb.ModelMetadataRequest(name=call.get("model", ""))),
    }[call["call"]]
    try:
        return {"ok": True, "answer": MessageToDict(method(message, timeout=30))}
    except grpc.RpcError as e:
        return failure(e)


async def main():
    target = sys.argv[1]
    calls = json.load(sys.stdin)
    client = InferenceGRPCClient(url=target, channel_args=[("grpc.enable_retries", 0)], timeout=30)
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
    results = []
    for call in calls:
        if call["call"] == "infer":
            results.append(await infer(client, call))
        else:
            results.append(plain(stub, call))
    await client.close()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
