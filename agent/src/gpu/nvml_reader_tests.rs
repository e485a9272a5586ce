//! NvmlReader against the fake libnvidia-ml (agent/fake-nvml), loaded by
//! nvml-wrapper like the real one. The fake's state is per process, so the
//! scenarios run in order inside one test.

use super::*;

const FAKE: &str = env!("VIGIL_FAKE_NVML_LIBRARY");

const TWO_GPUS: &str = "driver 550.54.15
cuda 12040
gpu GPU-aaaa-0001 1320000000001 00000000:01:00.0 85899345920 1073741824 0 NVIDIA H100 80GB HBM3
gpu GPU-bbbb-0002 1320000000002 00000000:02:00.0 85899345920 0 1 NVIDIA H100 80GB HBM3
mig 1 MIG-cccc-0001 10737418240
proc 0 compute 101 536870912
proc 1 graphics 102 1048576
util 0 101 42 10
";

/// Writes the fake's answers (a new file each time, so the fake reloads).
fn answers(dir: &Path, n: usize, text: &str) {
    let path = dir.join(format!("nvml-{n}.conf"));
    std::fs::write(&path, text).unwrap();
    std::env::set_var("VIGIL_FAKE_NVML_CONFIG", &path);
}

fn open() -> Result<NvmlReader, String> {
    NvmlReader::open(Path::new(FAKE))
}

#[test]
fn fake_nvml_scenarios() {
    let dir = tempfile::tempdir().unwrap();

    // Two GPUs (one with MIG), a compute and a graphics process.
    answers(dir.path(), 0, TWO_GPUS);
    let mut reader = open().unwrap();
    let r = reader.read();
    assert_eq!(r.status, Vec::<String>::new());
    assert_eq!(
        (r.driver_version.as_str(), r.cuda_driver_version.as_str()),
        ("550.54.15", "12.4")
    );
    assert_eq!(r.gpus.len(), 2);
    let g0 = &r.gpus[0];
    assert_eq!(
        (
            g0.name.as_str(),
            g0.uuid.as_str(),
            g0.serial.as_str(),
            g0.pci_bus_id.as_str()
        ),
        (
            "NVIDIA H100 80GB HBM3",
            "GPU-aaaa-0001",
            "1320000000001",
            "00000000:01:00.0"
        )
    );
    assert_eq!(
        (g0.memory_total_bytes, g0.memory_used_bytes),
        (85899345920, 1 << 30)
    );
    assert!(!g0.mig_enabled);
    let g1 = &r.gpus[1];
    assert!(g1.mig_enabled);
    assert_eq!(g1.mig_devices.len(), 1);
    assert_eq!(g1.mig_devices[0].uuid, "MIG-cccc-0001");
    assert_eq!(g1.mig_devices[0].memory_total_bytes, 10 << 30);
    assert_eq!(
        r.uses,
        vec![
            GpuUse {
                pid: 101,
                gpu: GpuObject {
                    uuid: "GPU-aaaa-0001".into(),
                    name: "NVIDIA H100 80GB HBM3".into(),
                    index: 0,
                    used_memory_bytes: Some(512 << 20),
                    sm_util_percent: Some(42),
                    context: GpuContext::Compute,
                },
            },
            GpuUse {
                pid: 102,
                gpu: GpuObject {
                    uuid: "GPU-bbbb-0002".into(),
                    name: "NVIDIA H100 80GB HBM3".into(),
                    index: 1,
                    used_memory_bytes: Some(1 << 20),
                    sm_util_percent: None,
                    context: GpuContext::Graphics,
                },
            },
        ]
    );

    // NVML errors become status lines; the other GPU is still read.
    answers(
        dir.path(),
        1,
        &format!(
            "{TWO_GPUS}fail nvmlDeviceGetProcessUtilization 1 3\nfail nvmlDeviceGetGraphicsRunningProcesses_v3 1 15\ngrow 0 10 99\n"
        ),
    );
    let r = reader.read();
    assert_eq!(
        r.status,
        vec![
            "GPU 0 (GPU-aaaa-0001): compute processes: the list kept growing while NVML copied it (insufficient size after 3 attempts)",
            "GPU 1 (GPU-bbbb-0002): per-process utilisation not supported by this GPU or driver",
            "GPU 1 (GPU-bbbb-0002): lost (fell off the bus or stopped answering); graphics processes unknown",
        ]
    );
    assert_eq!(r.gpus.len(), 2);
    assert!(r.uses.is_empty(), "{:?}", r.uses);

    // A list that grew once between NVML's count and its copy is asked again.
    answers(dir.path(), 5, &format!("{TWO_GPUS}grow 0 10 1\n"));
    let r = reader.read();
    assert_eq!(r.status, Vec::<String>::new());
    assert_eq!(r.uses.len(), 2);

    // A GPU whose identity cannot be read is skipped, not fatal.
    answers(
        dir.path(),
        2,
        &format!("{TWO_GPUS}fail nvmlDeviceGetUUID 0 15\n"),
    );
    let r = reader.read();
    assert_eq!(
        r.status,
        vec!["GPU 0: lost (fell off the bus or stopped answering); identity unknown"]
    );
    assert_eq!(r.gpus.len(), 1);
    assert_eq!(r.uses.len(), 1);
    drop(reader);

    // No usable GPU: each reason is a status line, never a panic.
    answers(dir.path(), 3, "driver 550.54.15\n");
    assert_eq!(open().err().unwrap(), "no NVIDIA GPU: NVML sees 0 devices");
    answers(dir.path(), 4, "init 9\n");
    assert_eq!(
        open().err().unwrap(),
        "no NVIDIA GPU: NVML says the NVIDIA driver is not loaded"
    );
    let missing = NvmlReader::open(&dir.path().join("libnvidia-ml.so.1"))
        .err()
        .unwrap();
    assert!(
        missing.starts_with("no NVIDIA GPU: NVML library")
            && missing.contains("could not be loaded"),
        "{missing}"
    );
}
