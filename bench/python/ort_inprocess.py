"""onnxruntime in-process, the baseline of the sidecar benchmark.

usage: ort_inprocess.py MODEL INTRA_THREADS LATENCY_RUNS SECONDS

Loads MODEL with the same session settings as the sidecar (intra-op
threads, sequential execution, all graph optimisations, CPU), then:
- batch 1: LATENCY_RUNS timed runs of session.run -> p50 and p99 in us;
- batch 64: as many runs as fit in SECONDS -> samples per second.
The input is x FP32 [batch, K], K from the model's metadata. Prints one
JSON object.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    path, intra, runs, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    k = session.get_inputs()[0].shape[1]
    rng = np.random.default_rng(7)
    one = rng.standard_normal((1, k), dtype=np.float32)
    batch = rng.standard_normal((64, k), dtype=np.float32)

    for _ in range(200):
        session.run(None, {"x": one})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        session.run(None, {"x": one})
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    p50 = times[len(times) // 2] / 1000.0
    p99 = times[min(len(times) - 1, (len(times) * 99) // 100)] / 1000.0

    for _ in range(20):
        session.run(None, {"x": batch})
    done = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, {"x": batch})
        done += 1
    elapsed = time.perf_counter() - t0
    print(json.dumps({"p50_us": p50, "p99_us": p99, "samples_per_s": done * 64 / elapsed}))


if __name__ == "__main__":
    main()
