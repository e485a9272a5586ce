#!/usr/bin/env python3
"""Follows vigil's SIEM export (`vigil.siem.v1.SiemExport/Subscribe`) over
mutual TLS, writes each event as a line of JSON, and saves the cursor of
the last event written after each one, so that a restart resumes where it
left off.

Stubs are generated from the repository's `proto/` with grpcio-tools when
it starts (into --stubs-dir, else a temporary directory), so the example
always speaks the contract of the tree it sits in.

Exactly once into --out: each event's line is written and flushed, then the
cursor file replaced atomically (temporary file, fsync, rename, fsync of the
directory). A kill between the two leaves the line written and the cursor
behind it; at start the cursor is the later of the cursor file and the last
complete line of --out (a torn last line is cut off), so that event is not
written twice. Without --out (stdout) a restart may print the last event
again: at least once.

Usage (see README.md):
  siem_follow.py --endpoint 127.0.0.1:7700 --ca ca.pem --cert reader.pem --key reader.key \\
      --cursor-file siem.cursor --out events.jsonl
"""

import argparse
import errno
import json
import os
import stat
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTOS = [
    "vigil/types/v1/types.proto",
    "vigil/admin/v1/admin.proto",
    "vigil/siem/v1/siem.proto",
]


def check_own_dir(path, what):
    """path must be a directory of this user's, not a symlink, that no one
    else may write: modules in it are imported (it goes first on
    sys.path), so another user's file there would run as this one."""
    st = os.lstat(path)
    why = None
    if stat.S_ISLNK(st.st_mode):
        why = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        why = "is not a directory"
    elif st.st_uid != os.geteuid():
        why = f"belongs to uid {st.st_uid}, not to this user"
    elif st.st_mode & 0o022:
        why = f"may be written by others (mode {st.st_mode & 0o7777:o})"
    if why:
        raise SystemExit(f"siem_follow: the {what} {path} {why}: refused")


def generate_stubs(proto_dir, out_dir):
    """Python modules for vigil's SIEM contract, from proto_dir into out_dir."""
    from grpc_tools import protoc
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for rel in PROTOS:
        rc = protoc.main([
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.join(proto_dir, rel),
        ])
        if rc != 0:
            raise SystemExit(f"siem_follow: protoc failed on {rel} ({rc})")
    # Packages: vigil/, vigil/siem/, vigil/siem/v1/ ... need no __init__.py
    # in Python 3 (namespace packages).
    sys.path.insert(0, out_dir)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_cursor(path, cursor):
    """Replaces the cursor file whole: a crash leaves the old or the new one.

    The temporary file is made by mkstemp (a new name, O_EXCL, mode 0600):
    in a shared directory another user's symlink is never written through.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{cursor}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def open_own(path, flags, what):
    """An fd on path, which must be this user's own regular file, not a
    symlink, not writable by others: in a shared directory another user
    could otherwise point it at a file this one may read or write, or plant
    one (a cursor that skips events). FileNotFoundError when it does not
    exist (and flags do not create it)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SystemExit(f"siem_follow: the {what} {path} is a symbolic link: refused")
        raise
    st = os.fstat(fd)
    why = None
    if not stat.S_ISREG(st.st_mode):
        why = "is not a regular file"
    elif st.st_uid != os.geteuid():
        why = f"belongs to uid {st.st_uid}, not to this user"
    elif st.st_mode & 0o022:
        why = f"may be written by others (mode {st.st_mode & 0o7777:o})"
    if why:
        os.close(fd)
        raise SystemExit(f"siem_follow: the {what} {path} {why}: refused")
    return fd


def load_cursor(path):
    """The saved cursor (0 when there is none), from a file of our own."""
    try:
        fd = open_own(path, os.O_RDONLY, "cursor file")
    except FileNotFoundError:
        return 0
    with os.fdopen(fd, "rb") as f:
        text = f.read(64).decode("ascii", errors="replace").strip()
    if not (text.isascii() and text.isdigit()):
        raise SystemExit(f"siem_follow: {path} does not hold a cursor: {text[:40]!r}")
    return int(text)


def last_written_cursor(out_path):
    """The cursor of the last complete line of out_path (0 when none); a
    torn last line (no newline: killed while writing) is cut off."""
    try:
        fd = open_own(out_path, os.O_RDWR, "--out file")
    except FileNotFoundError:
        return 0
    with os.fdopen(fd, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            data = data[:keep]
        lines = data.splitlines()
        if not lines:
            return 0
        return int(json.loads(lines[-1])["cursor"])


def kind_name(siem_pb2, kind):
    try:
        return siem_pb2.EventKind.Name(kind).removeprefix("EVENT_KIND_").lower()
    except ValueError:
        return f"kind_{kind}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True,
                   help="control plane HOST:PORT; several comma-separated (a cluster's nodes, tried in turn)")
    p.add_argument("--ca", help="the fleet CA certificate (PEM)")
    p.add_argument("--cert", help="this reader's certificate (PEM; role siem-reader)")
    p.add_argument("--key", help="this reader's private key (PEM)")
    p.add_argument("--server-name", help="the name the control plane's certificate must carry (default: the endpoint's host)")
    p.add_argument("--plaintext", action="store_true", help="no TLS (a lab control plane started with VIGIL_PLAINTEXT=1)")
    p.add_argument("--cursor-file", required=True, help="where the last cursor written is kept")
    p.add_argument("--out", help="JSON-lines file events are appended to (default: stdout)")
    p.add_argument("--kind", action="append", default=[],
                   help="only this kind: finding, enforcement, policy_change, approval_change, attestation, audit (repeatable)")
    p.add_argument("--proto-dir", default=DEFAULT_PROTO_DIR, help="vigil's proto/ directory")
    p.add_argument("--stubs-dir", help="where to generate the Python stubs (default: a temporary directory)")
    args = p.parse_args()

    # A temporary directory lives as long as this process (removed on a
    # clean exit).
    scratch = None if args.stubs_dir else tempfile.TemporaryDirectory(prefix="vigil-siem-stubs-")
    stubs = args.stubs_dir or scratch.name
    os.makedirs(stubs, mode=0o700, exist_ok=True)
    check_own_dir(stubs, "--stubs-dir")
    generate_stubs(args.proto_dir, stubs)
    import grpc
    from vigil.siem.v1 import siem_pb2, siem_pb2_grpc

    if args.plaintext:
        credentials = None
    else:
        if not (args.ca and args.cert and args.key):
            raise SystemExit("siem_follow: mutual TLS needs --ca, --cert and --key (or --plaintext)")
        with open(args.ca, "rb") as f:
            ca = f.read()
        with open(args.cert, "rb") as f:
            cert = f.read()
        with open(args.key, "rb") as f:
            key = f.read()
        credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    cursor = load_cursor(args.cursor_file)
    out = sys.stdout
    if args.out:
        cursor = max(cursor, last_written_cursor(args.out))
        out = os.fdopen(open_own(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "--out file"),
                        "a", encoding="utf-8")
    kinds = [siem_pb2.EventKind.Value("EVENT_KIND_" + k.upper()) for k in args.kind]

    endpoints = [e.strip() for e in args.endpoint.split(",") if e.strip()]
    attempt, backoff = 0, 0.1
    fatal = {
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
    while True:
        target = endpoints[attempt % len(endpoints)]
        options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
        if args.server_name:
            options.append(("grpc.ssl_target_name_override", args.server_name))
        if credentials is None:
            channel = grpc.insecure_channel(target, options=options)
        else:
            channel = grpc.secure_channel(target, credentials, options=options)
        stub = siem_pb2_grpc.SiemExportStub(channel)
        print(f"siem_follow: following {target} after cursor {cursor}", file=sys.stderr, flush=True)
        try:
            for ev in stub.Subscribe(siem_pb2.SubscribeRequest(cursor=cursor, kinds=kinds)):
                if ev.cursor <= cursor:
                    continue  # sent again: already written
                line = json.dumps({
                    "cursor": ev.cursor,
                    "kind": kind_name(siem_pb2, ev.kind),
                    "time_unix_nanos": ev.time_unix_nanos,
                    "ocsf": json.loads(ev.ocsf_json),
                }, separators=(",", ":"))
                out.write(line + "\n")
                out.flush()
                if args.out:
                    os.fsync(out.fileno())
                save_cursor(args.cursor_file, ev.cursor)
                cursor = ev.cursor
                backoff = 0.1
            why = "the stream ended"
        except grpc.RpcError as e:
            if e.code() in fatal:
                print(f"siem_follow: {target} refused: {e.code().name}: {e.details()}", file=sys.stderr)
                return 2
            why = f"{e.code().name}: {e.details()}"
        finally:
            channel.close()
        attempt += 1
        print(f"siem_follow: {target}: {why}; following again in {backoff:.1f} s", file=sys.stderr, flush=True)
        time.sleep(backoff)
        backoff = min(backoff * 2, 10.0)


if __name__ == "__main__":
    sys.exit(main())
