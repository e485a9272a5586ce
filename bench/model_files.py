"""Model files shaped like real ones, for the model-inspection benchmark:
a LLaMA-7B-shaped GGUF (32,000-token vocabulary, 291 tensors), the same
checkpoint as safetensors and as a torch.save zip, a MobileNet-shaped
TFLite model (150 tensors, 100 of them constant), a legacy torch.save
pickle with 2,000 tensors, and the pickle corpus the tests use. Weights
are sparse (the files are extended, not written), except TFLite's, which
sit inside the flatbuffer: only headers matter.

    python3 model_files.py DIR

Prints one line per file: "FORMAT NAME".
"""

import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration", "fixtures"))
import pickle_corpus as pc  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def llama_tensors(layers=32, dim=4096, ff=11008, vocab=32000):
    t = [("token_embd.weight", [vocab, dim]), ("output_norm.weight", [dim]), ("output.weight", [vocab, dim])]
    for i in range(layers):
        for name, shape in [
            ("attn_q.weight", [dim, dim]),
            ("attn_k.weight", [dim, dim]),
            ("attn_v.weight", [dim, dim]),
            ("attn_output.weight", [dim, dim]),
            ("ffn_gate.weight", [ff, dim]),
            ("ffn_down.weight", [dim, ff]),
            ("ffn_up.weight", [ff, dim]),
            ("attn_norm.weight", [dim]),
            ("ffn_norm.weight", [dim]),
        ]:
            t.append((f"blk.{i}.{name}", shape))
    return t


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(path, tensors, vocab=32000):
    kv = []

    def key(k, ty, payload):
        kv.append(gguf_string(k) + struct.pack("<I", ty) + payload)

    key("general.architecture", 8, gguf_string("llama"))
    key("general.name", 8, gguf_string("LLaMA v2 7B"))
    key("general.size_label", 8, gguf_string("7B"))
    key("general.file_type", 4, struct.pack("<I", 15))
    key("general.quantization_version", 4, struct.pack("<I", 2))
    for k, v in [("context_length", 4096), ("embedding_length", 4096), ("block_count", 32),
                 ("feed_forward_length", 11008), ("attention.head_count", 32),
                 ("attention.head_count_kv", 32), ("rope.dimension_count", 128)]:
        key(f"llama.{k}", 4, struct.pack("<I", v))
    key("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5))
    key("tokenizer.ggml.model", 8, gguf_string("llama"))
    tokens = b"".join(gguf_string(f"tok{i}") for i in range(vocab))
    key("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, vocab) + tokens)
    key("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, vocab) + struct.pack(f"<{vocab}f", *([0.0] * vocab)))
    key("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, vocab) + struct.pack(f"<{vocab}i", *([1] * vocab)))
    for k in ("bos_token_id", "eos_token_id", "unknown_token_id"):
        key(f"tokenizer.ggml.{k}", 4, struct.pack("<I", 1))
    key("tokenizer.chat_template", 8, gguf_string("{% for m in messages %}{{ m.content }}{% endfor %}"))
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv)
    offset = 0
    for name, shape in tensors:
        head += gguf_string(name) + struct.pack("<I", len(shape))
        head += b"".join(struct.pack("<Q", d) for d in reversed(shape))
        head += struct.pack("<IQ", 12, offset)
        n = 1
        for d in shape:
            n *= d
        offset += (n * 144 // 256 + 31) // 32 * 32  # Q4_K: 144 bytes per 256
    head += bytes(-len(head) % 32)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + offset)


def safetensors(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        f.truncate(8 + len(h) + offset)


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, payload):
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def vfield(number, n):
    return varint(number << 3) + varint(n)


def onnx_model(initializers, nodes):
    """An ONNX ModelProto encoded by hand (no onnx package needed)."""
    def value_info(name, dims):
        shape = b"".join(field(1, vfield(1, d)) for d in dims)
        tensor_type = vfield(1, 1) + field(2, shape)
        return field(1, name.encode()) + field(2, field(1, tensor_type))

    graph = b""
    for i in range(nodes):
        node = field(1, f"t{i}".encode()) + field(2, f"t{i + 1}".encode()) + field(4, b"Conv")
        graph += field(1, node)
    graph += field(2, b"main_graph")
    for name, dims in initializers:
        n = 4
        for d in dims:
            n *= d
        tensor = b"".join(vfield(1, d) for d in dims) + vfield(2, 1) + field(8, name.encode()) + field(9, bytes(n))
        graph += field(5, tensor)
    graph += field(11, value_info("input", [1, 3, 224, 224]))
    graph += field(12, value_info("output", [1, 1000]))
    return (vfield(1, 8) + field(2, b"pytorch") + field(3, b"2.4.0") + field(7, graph)
            + field(8, field(1, b"") + vfield(2, 17)))


def write(fmt, name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    print(fmt, name)


tensors = llama_tensors()
gguf(os.path.join(out, "llama-7b.Q4_K_M.gguf"), tensors)
print("gguf llama-7b.Q4_K_M.gguf")
safetensors(os.path.join(out, "llama-7b.safetensors"), tensors)
print("safetensors llama-7b.safetensors")
shapes = dict(tensors)
write("pytorch-zip", "llama-7b.pt", pc.torch_zip(pc.torch_pickle(pc.state_dict(shapes=shapes))))
conv = [(f"layer{i // 4}.{i % 4}.conv.weight", [64, 64, 3, 3]) for i in range(160)]
write("onnx", "resnet-like.onnx", onnx_model(conv, 160))


def tflite_model(layers=50, channels=64):
    """A MobileNet-shaped TFLite flatbuffer (a weight, a bias and an
    activation tensor per conv layer, weights inline, as TFLite keeps them),
    written with the flatbuffers and tflite packages install-deps puts in
    .vigil/deps/scanners (the benchmark sets PYTHONPATH)."""
    import tflite
    from tflite_builder import ModelBuilder

    m = ModelBuilder(1 << 20)
    buffers, tensors = [m.buffer(None)], []
    for i in range(layers):
        weight = [channels, 3, 3, channels]
        buffers.append(m.buffer(bytes(4 * channels * 9 * channels)))
        tensors.append(m.tensor(f"model/conv{i}/Conv2D", weight, 0, len(buffers) - 1))
        buffers.append(m.buffer(bytes(4 * channels)))
        tensors.append(m.tensor(f"model/conv{i}/BiasAdd", [channels], 0, len(buffers) - 1))
        tensors.append(m.tensor(f"model/conv{i}/Relu6", [1, 56, 56, channels], 0, 0))
    buffers = m.offsets(tflite.ModelStartBuffersVector, buffers)
    subgraphs = m.offsets(tflite.ModelStartSubgraphsVector, [m.subgraph(tensors)])
    b = m.b
    desc = b.CreateString("MLIR Converted.")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddSubgraphs(b, subgraphs)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, buffers)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


write("tflite", "mobilenet-like.tflite", tflite_model())
big = {f"encoder.layer.{i // 8}.w{i % 8}.weight": [64, 64] for i in range(2000)}
write("pickle", "legacy-2000.pth", pc.legacy_torch_save(pc.state_dict(shapes=big)))
for kind, name in pc.write_corpus(os.path.join(out, "corpus")):
    print("corpus", os.path.join("corpus", name))
