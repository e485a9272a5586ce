"""A KServe v2 gRPC server in Python, the kind a team would otherwise
write or pick (grpcio with Triton's own generated service, onnxruntime
behind it): the second baseline of the sidecar benchmark.

usage: kserve_python_server.py MODEL NAME PORT INTRA_THREADS

Serves MODEL as NAME on 127.0.0.1:PORT: ServerLive, ServerReady,
ModelReady and ModelInfer with raw_input_contents (FP32), outputs as
raw_output_contents. Same session settings as the sidecar.
"""

import sys
from concurrent import futures

import grpc
import numpy as np
import onnxruntime as ort
from tritonclient.grpc import service_pb2, service_pb2_grpc


class Inference(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, path, name, intra):
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.name = name
        self.inputs = self.session.get_inputs()
        self.outputs = [o.name for o in self.session.get_outputs()]

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        return service_pb2.ModelReadyResponse(ready=request.name == self.name)

    def ModelInfer(self, request, context):
        if request.model_name != self.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.model_name} is not served")
        feeds = {}
        for i, tensor in enumerate(request.inputs):
            array = np.frombuffer(request.raw_input_contents[i], dtype=np.float32)
            feeds[tensor.name] = array.reshape(tuple(tensor.shape))
        results = self.session.run(self.outputs, feeds)
        response = service_pb2.ModelInferResponse(model_name=self.name, id=request.id)
        for name, value in zip(self.outputs, results):
            out = response.outputs.add()
            out.name = name
            out.datatype = "FP32"
            out.shape.extend(value.shape)
            response.raw_output_contents.append(value.tobytes())
        return response


def main():
    path, name, port, intra = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Inference(path, name, intra), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
