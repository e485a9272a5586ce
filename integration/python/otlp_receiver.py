#!/usr/bin/env python3
"""A real OTLP/gRPC logs receiver, built on OpenTelemetry's own generated
stubs (the PyPI `opentelemetry-proto` package's `logs_service_pb2_grpc`)
and grpcio: what `vigilctl siem otlp` is tested and benchmarked against.

Every log record it receives is appended to a JSON-lines file (one object a
record: its `vigil.cursor`, `vigil.kind`, `ocsf.class_uid`, severity, times,
event name and body) and flushed before the Export call is answered, so a
record is in the file whenever the exporter holds it acknowledged.

Usage:
  otlp_receiver.py --port PORT --out FILE [--host 127.0.0.1] [--count-only]

Prints `otlp_receiver listening on HOST:PORT` once it serves (`--port 0`
picks a free port); SIGTERM or SIGINT stop it. With `--count-only` it
writes one line per request, `{"records": N, "first": C1, "last": C2}`,
instead of one per record (the benchmark's receiver: less Python per
record). Dependencies: `make deps` installs them into .vigil/deps/siem
(scripts/install-deps.sh); put that directory on PYTHONPATH.
"""

import argparse
import json
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc


def any_value(v):
    """An OTLP AnyValue as a plain Python value."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


class Receiver(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, out, count_only):
        self.out = out
        self.count_only = count_only
        self.lock = threading.Lock()

    def Export(self, request, context):
        lines = []
        for rl in request.resource_logs:
            resource = {kv.key: any_value(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                if self.count_only:
                    cursors = [
                        kv.value.int_value
                        for r in sl.log_records
                        for kv in r.attributes
                        if kv.key == "vigil.cursor"
                    ]
                    lines.append(json.dumps({
                        "records": len(sl.log_records),
                        "first": cursors[0] if cursors else None,
                        "last": cursors[-1] if cursors else None,
                    }))
                    continue
                for r in sl.log_records:
                    attributes = {kv.key: any_value(kv.value) for kv in r.attributes}
                    lines.append(json.dumps({
                        "cursor": attributes.get("vigil.cursor"),
                        "kind": attributes.get("vigil.kind"),
                        "class_uid": attributes.get("ocsf.class_uid"),
                        "severity_number": r.severity_number,
                        "severity_text": r.severity_text,
                        "time_unix_nano": r.time_unix_nano,
                        "observed_time_unix_nano": r.observed_time_unix_nano,
                        "event_name": r.event_name,
                        "attributes": attributes,
                        "resource": resource,
                        "scope": sl.scope.name,
                        "body": any_value(r.body),
                    }, separators=(",", ":")))
        with self.lock:
            if lines:
                self.out.write("\n".join(lines) + "\n")
            self.out.flush()
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, required=True, help="port to listen on (0: any free one)")
    p.add_argument("--out", required=True, help="JSON-lines file records are appended to")
    p.add_argument("--count-only", action="store_true",
                   help="one line per request (count, first and last cursor) instead of one per record")
    args = p.parse_args()

    out = open(args.out, "a", encoding="utf-8")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
    )
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Receiver(out, args.count_only), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        print(f"otlp_receiver: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 5
    server.start()
    print(f"otlp_receiver listening on {args.host}:{port}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
