//! Approved inference, side by side in one run, on the same model (an MLP,
//! FP32 512 → 1024 → 1024 → 256 with ReLUs) and the same session settings
//! (one intra-op thread, sequential execution, all graph optimisations,
//! CPU):
//! - onnxruntime's own Python binding in-process (the baseline):
//!   `session.run` at batch 1 (p50, p99) and batch 64 (samples/s);
//! - the sidecar's in-process path (`ServedModel::infer`: the request
//!   checked, tensors built, the session run, outputs encoded; no gRPC);
//! - `vigil-sidecar` over KServe v2 gRPC on loopback TCP, driven by one
//!   tonic client issuing requests back to back;
//! - `vigil-sidecar` over KServe gRPC on its unix socket with the tensors
//!   in system shared memory (KServe's extension): the client writes each
//!   request's input into its region and reads each output back, so both
//!   copies are counted;
//! - a KServe v2 server in Python (grpcio with Triton's generated service,
//!   onnxruntime behind it: what a team would otherwise write), driven by
//!   the same client.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::transport::Channel;
use vigil_integration::free_port;
use vigil_integration::sidecar::{ort_library, python_path, Sidecar, SidecarListen};
use vigil_proto::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use vigil_proto::kserve::infer_parameter::ParameterChoice;
use vigil_proto::kserve::model_infer_request::InferInputTensor;
use vigil_proto::kserve::model_infer_request::InferRequestedOutputTensor;
use vigil_proto::kserve::{
    InferParameter, ModelInferRequest, ServerReadyRequest, SystemSharedMemoryRegisterRequest,
    SystemSharedMemoryUnregisterRequest,
};
use vigil_sidecar::datatype::Datatype;
use vigil_sidecar::model_identity::{ModelIdentity, Sha256Digest};
use vigil_sidecar::onnx_builder::{Dim, ModelBuilder};
use vigil_sidecar::served_model::ServedModel;
use vigil_sidecar::session_settings::SessionSettings;

use crate::report::{Figure, Report};

const CMD: &str = "VIGIL_BENCH_ONLY=sidecar make bench";
const INPUTS: usize = 512;
const HIDDEN: usize = 1024;
const OUTPUTS: usize = 256;
const BATCH: usize = 64;
/// Timed batch-1 requests per latency figure.
const LATENCY_RUNS: usize = 3000;
/// Seconds of batch-64 requests per throughput figure.
const THROUGHPUT_SECS: f64 = 4.0;
const INTRA_THREADS: usize = 1;
/// Rounds of the interleaved batch-64 comparison (the baseline and the
/// sidecar taking turns, the order reversed every other round), and the
/// seconds each side runs per round.
const ROUNDS: usize = 6;
const ROUND_SECS: f64 = 3.0;

/// What a measurement of a server covers.
#[derive(Debug, Clone, Copy)]
enum Measure {
    /// Batch-1 latency, batch-64 throughput one and two in flight.
    Full,
    /// Only batch-64 throughput two in flight, for this many seconds.
    TwoInFlight(f64),
}

/// Deterministic small weights (a different `seed`, a different layer).
fn weights(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 20;
            (x % 201) as f32 / 2000.0 - 0.05
        })
        .collect()
}

/// The benchmark's model: three dense layers with ReLUs between.
fn mlp() -> Vec<u8> {
    let (k, h, n) = (INPUTS as i64, HIDDEN as i64, OUTPUTS as i64);
    ModelBuilder::new("mlp")
        .input("x", Datatype::Fp32, &[Dim::Dynamic("batch"), Dim::Fixed(k)])
        .output("y", Datatype::Fp32, &[Dim::Dynamic("batch"), Dim::Fixed(n)])
        .constant_f32("w1", &[k, h], &weights(INPUTS * HIDDEN, 1))
        .constant_f32("b1", &[h], &weights(HIDDEN, 2))
        .constant_f32("w2", &[h, h], &weights(HIDDEN * HIDDEN, 3))
        .constant_f32("b2", &[h], &weights(HIDDEN, 4))
        .constant_f32("w3", &[h, n], &weights(HIDDEN * OUTPUTS, 5))
        .constant_f32("b3", &[n], &weights(OUTPUTS, 6))
        .node("MatMul", &["x", "w1"], &["x1"])
        .node("Add", &["x1", "b1"], &["a1"])
        .node("Relu", &["a1"], &["r1"])
        .node("MatMul", &["r1", "w2"], &["x2"])
        .node("Add", &["x2", "b2"], &["a2"])
        .node("Relu", &["a2"], &["r2"])
        .node("MatMul", &["r2", "w3"], &["x3"])
        .node("Add", &["x3", "b3"], &["y"])
        .build()
}

fn request(batch: usize) -> ModelInferRequest {
    let raw: Vec<u8> = weights(batch * INPUTS, 9)
        .iter()
        .flat_map(|v| (v * 20.0).to_le_bytes())
        .collect();
    ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![batch as i64, INPUTS as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    }
}

/// Batch-1 p50 and p99 (µs) and batch-64 samples/s of one way to infer.
#[derive(Debug, Clone, Copy)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    samples_per_s: f64,
    /// Batch-64 samples/s with two requests in flight (as Triton's
    /// perf_analyzer at concurrency 2: one request's tensors travel while
    /// the other runs); in-process, the same as one at a time.
    samples_per_s_2: f64,
}

/// Times `infer` as the Python baseline times `session.run`.
async fn measure<F, Fut>(mut infer: F) -> anyhow::Result<Figures>
where
    F: FnMut(ModelInferRequest) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let one = request(1);
    let batch = request(BATCH);
    for _ in 0..200 {
        infer(one.clone()).await?;
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for _ in 0..LATENCY_RUNS {
        let r = one.clone();
        let t0 = Instant::now();
        infer(r).await?;
        hist.record(t0.elapsed().as_nanos() as u64)?;
    }
    for _ in 0..20 {
        infer(batch.clone()).await?;
    }
    let mut done = 0u64;
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < THROUGHPUT_SECS {
        infer(batch.clone()).await?;
        done += 1;
    }
    let samples_per_s = (done * BATCH as u64) as f64 / t0.elapsed().as_secs_f64();
    Ok(Figures {
        p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
        samples_per_s,
        samples_per_s_2: samples_per_s,
    })
}

/// Batch-64 samples/s with two requests always in flight.
async fn two_in_flight<F, Fut>(infer: F, secs: f64) -> anyhow::Result<f64>
where
    F: Fn(ModelInferRequest) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let batch = request(BATCH);
    let t0 = Instant::now();
    let lane = || async {
        let mut done = 0u64;
        while t0.elapsed().as_secs_f64() < secs {
            infer(batch.clone()).await?;
            done += 1;
        }
        Ok::<u64, anyhow::Error>(done)
    };
    let (a, b) = tokio::join!(lane(), lane());
    Ok(((a? + b?) * BATCH as u64) as f64 / t0.elapsed().as_secs_f64())
}

/// The figures of a KServe server through `channel`.
async fn over_grpc(channel: Channel, how: Measure) -> anyhow::Result<Figures> {
    let client = GrpcInferenceServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let infer = |r| {
        let mut client = client.clone();
        async move {
            let reply = client.model_infer(r).await?.into_inner();
            anyhow::ensure!(reply.raw_output_contents.len() == 1, "one output expected");
            Ok(())
        }
    };
    measured(infer, how).await
}

/// `infer` measured as `how` says; figures not measured are NaN.
async fn measured<F, Fut>(infer: F, how: Measure) -> anyhow::Result<Figures>
where
    F: Fn(ModelInferRequest) -> Fut + Copy,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    match how {
        Measure::Full => {
            let mut figures = measure(infer).await?;
            figures.samples_per_s_2 = two_in_flight(infer, THROUGHPUT_SECS).await?;
            Ok(figures)
        }
        Measure::TwoInFlight(secs) => Ok(Figures {
            p50_us: f64::NAN,
            p99_us: f64::NAN,
            samples_per_s: f64::NAN,
            samples_per_s_2: two_in_flight(infer, secs).await?,
        }),
    }
}

/// Two regions per request in flight: input and output of a batch.
const SHM_LANES: usize = 2;
const SHM_IN_BYTES: usize = BATCH * INPUTS * 4;
const SHM_OUT_BYTES: usize = BATCH * OUTPUTS * 4;

fn shm_params(region: &str, size: usize) -> std::collections::HashMap<String, InferParameter> {
    let p = |c| InferParameter {
        parameter_choice: Some(c),
    };
    std::collections::HashMap::from([
        (
            "shared_memory_region".to_string(),
            p(ParameterChoice::StringParam(region.into())),
        ),
        (
            "shared_memory_byte_size".to_string(),
            p(ParameterChoice::Int64Param(size as i64)),
        ),
    ])
}

/// The figures of the sidecar with tensors in system shared memory, as a
/// Triton client with `tritonclient.utils.shared_memory` does it: one
/// `/dev/shm` file per lane (input then output), registered once; each
/// request writes its input there (`pwrite`) and reads its output back
/// (`pread`).
async fn over_grpc_shm(channel: Channel, how: Measure) -> anyhow::Result<Figures> {
    use std::os::unix::fs::FileExt;
    let client = GrpcInferenceServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let mut files = Vec::new();
    for lane in 0..SHM_LANES {
        let key = format!("/vigil-bench-{}-{lane}", std::process::id());
        let path = format!("/dev/shm{key}");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.set_len((SHM_IN_BYTES + SHM_OUT_BYTES) as u64)?;
        for (name, offset, size) in [
            (format!("in{lane}"), 0, SHM_IN_BYTES),
            (format!("out{lane}"), SHM_IN_BYTES, SHM_OUT_BYTES),
        ] {
            client
                .clone()
                .system_shared_memory_register(SystemSharedMemoryRegisterRequest {
                    name,
                    key: key.clone(),
                    offset: offset as u64,
                    byte_size: size as u64,
                })
                .await?;
        }
        files.push((path, file));
    }
    let free = std::sync::Mutex::new((0..SHM_LANES).collect::<Vec<_>>());
    let infer = |mut r: ModelInferRequest| {
        let mut client = client.clone();
        let files = &files;
        let free = &free;
        async move {
            let lane = free
                .lock()
                .unwrap()
                .pop()
                .ok_or_else(|| anyhow::anyhow!("no free lane"))?;
            let file = &files[lane].1;
            let input = r.raw_input_contents.remove(0);
            file.write_all_at(&input, 0)?;
            r.inputs[0].parameters = shm_params(&format!("in{lane}"), input.len());
            let rows = input.len() / (INPUTS * 4);
            let out_bytes = rows * OUTPUTS * 4;
            r.outputs = vec![InferRequestedOutputTensor {
                name: "y".into(),
                parameters: shm_params(&format!("out{lane}"), out_bytes),
            }];
            let reply = client.model_infer(r).await;
            let mut output = vec![0u8; out_bytes];
            let read = file.read_exact_at(&mut output, SHM_IN_BYTES as u64);
            free.lock().unwrap().push(lane);
            let reply = reply?.into_inner();
            read?;
            anyhow::ensure!(
                reply.outputs.len() == 1 && reply.outputs[0].shape == [rows as i64, OUTPUTS as i64],
                "one output of [{rows}, {OUTPUTS}] expected"
            );
            std::hint::black_box(&output);
            Ok(())
        }
    };
    let figures = measured(infer, how).await?;
    client
        .clone()
        .system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest {
            name: String::new(),
        })
        .await?;
    for (path, _) in &files {
        let _ = std::fs::remove_file(path);
    }
    Ok(figures)
}

/// As a client tuned for tensors would connect (the Python KServe
/// server's grpcio windows grow on their own): windows that hold a batch.
fn endpoint(uri: String) -> anyhow::Result<tonic::transport::Endpoint> {
    Ok(Channel::from_shared(uri)?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20)))
}

async fn tcp_channel(port: u16) -> anyhow::Result<Channel> {
    Ok(endpoint(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?)
}

async fn unix_channel(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_path_buf();
    Ok(endpoint("http://sidecar.invalid".into())?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?)
}

/// Waits until a KServe server on `port` says it is ready.
async fn wait_ready(port: u16, server: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.try_wait()? {
            anyhow::bail!("{what} exited ({status}) before it was ready");
        }
        if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await
        {
            let mut client = GrpcInferenceServiceClient::new(channel);
            if client
                .server_ready(ServerReadyRequest {})
                .await
                .is_ok_and(|r| r.into_inner().ready)
            {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{what} not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn python_in_process(model: &Path, latency_runs: usize, secs: f64) -> anyhow::Result<Figures> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/ort_inprocess.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(model)
        .arg(INTRA_THREADS.to_string())
        .arg(latency_runs.to_string())
        .arg(secs.to_string())
        .env("PYTHONPATH", python_path())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ort_inprocess.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let num = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| anyhow::anyhow!("ort_inprocess.py printed no {k}: {v}"))
    };
    Ok(Figures {
        p50_us: num("p50_us")?,
        p99_us: num("p99_us")?,
        samples_per_s: num("samples_per_s")?,
        samples_per_s_2: num("samples_per_s")?,
    })
}

/// The sidecar's own path without gRPC: the same `ServedModel` the
/// server runs requests on.
fn sidecar_in_process(rt: &tokio::runtime::Runtime, model_bytes: &[u8]) -> anyhow::Result<Figures> {
    let runtime = vigil_sidecar::ort_runtime::load_runtime(&ort_library())?;
    let settings = SessionSettings {
        intra_threads: INTRA_THREADS,
        ..SessionSettings::default()
    };
    let identity = ModelIdentity::new("mlp", 1, Sha256Digest::of(model_bytes))?;
    let served = ServedModel::load(&runtime, &settings, identity, model_bytes)?;
    rt.block_on(measure(|r| {
        let result = served.infer(&r).map(|_| ()).map_err(anyhow::Error::from);
        async move { result }
    }))
}

/// Batch-64 samples/s of each side over the interleaved rounds.
struct Turns {
    python: f64,
    plain: f64,
    shm: f64,
}

/// ROUNDS rounds of: onnxruntime in Python in-process, the sidecar over
/// `channel` two in flight, the same with tensors in shared memory (the
/// order reversed every other round), ROUND_SECS each; the mean of each.
async fn interleaved(model: &Path, channel: Channel) -> anyhow::Result<Turns> {
    let (mut python, mut plain, mut shm) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for side in order {
            match side {
                // The client's runtime runs nothing else meanwhile.
                0 => python.push(python_in_process(model, 10, ROUND_SECS)?.samples_per_s),
                1 => plain.push(
                    over_grpc(channel.clone(), Measure::TwoInFlight(ROUND_SECS))
                        .await?
                        .samples_per_s_2,
                ),
                _ => shm.push(
                    over_grpc_shm(channel.clone(), Measure::TwoInFlight(ROUND_SECS))
                        .await?
                        .samples_per_s_2,
                ),
            }
        }
        eprintln!(
            "sidecar bench: round {round}: batch 64, Python in-process {:.0}, sidecar 2 in flight {:.0}, with shared memory {:.0} samples/s",
            python[round], plain[round], shm[round]
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(Turns {
        python: mean(&python),
        plain: mean(&plain),
        shm: mean(&shm),
    })
}

fn print(what: &str, f: &Figures) {
    eprintln!(
        "sidecar bench: {what:<40} batch 1 p50 {:>8.1} us p99 {:>8.1} us; batch {BATCH} {:>9.0} samples/s, 2 in flight {:>9.0}",
        f.p50_us, f.p99_us, f.samples_per_s, f.samples_per_s_2
    );
}

pub fn sidecar(
    rt: &tokio::runtime::Runtime,
    work: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let bytes = mlp();
    let model = work.join("mlp.onnx");
    std::fs::write(&model, &bytes)?;
    let sha = Sha256Digest::of(&bytes).to_hex();
    let threads = [
        "--intra-threads".to_string(),
        INTRA_THREADS.to_string(),
        "--opt-level".into(),
        "all".into(),
    ];

    let python = python_in_process(&model, LATENCY_RUNS, THROUGHPUT_SECS)?;
    print("onnxruntime in Python, in-process", &python);
    let own = sidecar_in_process(rt, &bytes)?;
    print("sidecar's path, in-process", &own);

    let mut args = vec![
        "--model".to_string(),
        format!("mlp:1:{sha}:{}", model.display()),
    ];
    args.extend(threads.iter().cloned());
    // The client on a runtime of its own thread: no hop between threads
    // on the client's side of each request, whichever server it measures.
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let port = free_port();
    let mut sidecar = Sidecar::start(work, SidecarListen::Tcp(port), &args, false);
    let grpc = client_rt.block_on(async {
        sidecar.wait_ready().await;
        over_grpc(tcp_channel(port).await?, Measure::Full).await
    });
    let _ = sidecar.child.kill();
    let _ = sidecar.child.wait();
    let grpc = grpc?;
    print("vigil-sidecar over gRPC, TCP", &grpc);

    let socket = work.join("mlp.sock");
    let mut sidecar = Sidecar::start(work, SidecarListen::Unix(socket.clone()), &args, false);
    let grpc_unix = client_rt.block_on(async {
        sidecar.wait_ready().await;
        over_grpc(unix_channel(&socket).await?, Measure::Full).await
    });
    let _ = sidecar.child.kill();
    let _ = sidecar.child.wait();
    let grpc_unix = grpc_unix?;
    print("vigil-sidecar over gRPC, unix socket", &grpc_unix);

    let mut sidecar = Sidecar::start(work, SidecarListen::Unix(socket.clone()), &args, false);
    let grpc_shm = client_rt.block_on(async {
        sidecar.wait_ready().await;
        over_grpc_shm(unix_channel(&socket).await?, Measure::Full).await
    });
    let _ = sidecar.child.kill();
    let _ = sidecar.child.wait();
    let grpc_shm = grpc_shm?;
    print("vigil-sidecar, unix socket, shared memory", &grpc_shm);

    let py_port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kserve_python_server.py");
    let mut py_server = Command::new("python3")
        .arg(script)
        .arg(&model)
        .arg("mlp")
        .arg(py_port.to_string())
        .arg(INTRA_THREADS.to_string())
        .env("PYTHONPATH", python_path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let py_grpc = client_rt.block_on(async {
        wait_ready(py_port, &mut py_server, "the Python KServe server").await?;
        over_grpc(tcp_channel(py_port).await?, Measure::Full).await
    });
    let _ = py_server.kill();
    let _ = py_server.wait();
    let py_grpc = py_grpc?;
    print("KServe server in Python over gRPC", &py_grpc);

    // The goal's comparison: this VM's speed drifts by ±15 % within
    // minutes, so the baseline and the sidecar take turns for ROUNDS
    // rounds (the order reversed every other round) rather than one
    // measured before the other.
    let mut sidecar = Sidecar::start(work, SidecarListen::Unix(socket.clone()), &args, false);
    let turns = client_rt.block_on(async {
        sidecar.wait_ready().await;
        let channel = unix_channel(&socket).await?;
        interleaved(&model, channel).await
    });
    let _ = sidecar.child.kill();
    let _ = sidecar.child.wait();
    let turns = turns?;

    let unix = "over KServe gRPC on the sidecar's unix socket (the agent's default)";
    let tcp = "over KServe gRPC on loopback TCP";
    let shm = "over KServe gRPC on the unix socket, tensors in system shared memory (client writes and reads them each request)";
    let rounds = format!("{ROUNDS} rounds taking turns with the baseline");
    report.push(
        Figure::ratio(
            &format!("sidecar: batch-64 samples/s, 2 in flight, {shm}, {rounds} vs onnxruntime in Python in-process"),
            turns.shm,
            turns.python,
            "samples/s",
            CMD,
        )
        .goal(0.95),
    );
    report.push(
        Figure::ratio(
            &format!("sidecar: batch-64 samples/s, 2 in flight, {unix}, {rounds} vs onnxruntime in Python in-process"),
            turns.plain,
            turns.python,
            "samples/s",
            CMD,
        )
        .goal(0.95),
    );
    report.push(Figure::ratio(
        &format!(
            "sidecar: batch-64 samples/s, 2 in flight, {unix} vs onnxruntime in Python in-process"
        ),
        grpc_unix.samples_per_s_2,
        python.samples_per_s,
        "samples/s",
        CMD,
    ));
    report.push(Figure::ratio(
        &format!(
            "sidecar: batch-64 samples/s, 1 in flight, {shm} vs onnxruntime in Python in-process"
        ),
        grpc_shm.samples_per_s,
        python.samples_per_s,
        "samples/s",
        CMD,
    ));
    report.push(Figure::ratio(
        &format!(
            "sidecar: batch-64 samples/s, 2 in flight, {shm} vs onnxruntime in Python in-process"
        ),
        grpc_shm.samples_per_s_2,
        python.samples_per_s,
        "samples/s",
        CMD,
    ));
    report.push(Figure::ratio(
        &format!(
            "sidecar: batch-64 samples/s, 1 in flight, {shm} vs the same without shared memory"
        ),
        grpc_shm.samples_per_s,
        grpc_unix.samples_per_s,
        "samples/s",
        CMD,
    ));
    report.push(Figure::ratio(
        &format!("sidecar: latency added at batch 1, p50, {shm} (minus Python in-process) vs the 150 us allowance"),
        grpc_shm.p50_us - python.p50_us,
        150.0,
        "us",
        CMD,
    ));
    report.push(Figure::ratio(
        &format!(
            "sidecar: batch-64 samples/s, 1 in flight, {tcp} vs onnxruntime in Python in-process"
        ),
        grpc.samples_per_s,
        python.samples_per_s,
        "samples/s",
        CMD,
    ));
    report.push(
        Figure::ratio(
            &format!("sidecar: latency added at batch 1, p50, {unix} (minus Python in-process) vs the 150 us allowance"),
            grpc_unix.p50_us - python.p50_us,
            150.0,
            "us",
            CMD,
        )
        .goal_max(1.0),
    );
    report.push(Figure::ratio(
        &format!("sidecar: latency added at batch 1, p50, {tcp} (minus Python in-process) vs the 150 us allowance"),
        grpc.p50_us - python.p50_us,
        150.0,
        "us",
        CMD,
    ));
    report.push(Figure::ratio(
        &format!("sidecar: batch-1 p99 {unix} vs onnxruntime in Python in-process"),
        grpc_unix.p99_us,
        python.p99_us,
        "us",
        CMD,
    ));
    report.push(
        Figure::ratio(
            "sidecar: in-process path batch-64 samples/s vs onnxruntime's Python binding",
            own.samples_per_s,
            python.samples_per_s,
            "samples/s",
            CMD,
        )
        .goal(1.0),
    );
    report.push(
        Figure::ratio(
            "sidecar: in-process path batch-1 p50 vs onnxruntime's Python binding",
            own.p50_us,
            python.p50_us,
            "us",
            CMD,
        )
        .goal_max(1.0),
    );
    report.push(Figure::ratio(
        &format!("sidecar: batch-64 samples/s, 1 in flight, {tcp} vs a KServe server in Python (grpcio + onnxruntime)"),
        grpc.samples_per_s,
        py_grpc.samples_per_s,
        "samples/s",
        CMD,
    ));
    report.push(Figure::ratio(
        &format!("sidecar: batch-64 samples/s, 2 in flight, {tcp} vs a KServe server in Python (grpcio + onnxruntime)"),
        grpc.samples_per_s_2,
        py_grpc.samples_per_s_2,
        "samples/s",
        CMD,
    ));
    report.push(Figure::ratio(
        &format!("sidecar: batch-1 p50 {tcp} vs a KServe server in Python (grpcio + onnxruntime)"),
        grpc.p50_us,
        py_grpc.p50_us,
        "us",
        CMD,
    ));
    Ok(())
}
