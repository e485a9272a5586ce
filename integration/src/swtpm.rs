//! Software TPMs for the attestation tests: swtpm in socket mode, each
//! manufactured like a real TPM (an RSA EK persisted at 0x81010001 and its
//! certificate in NV index 0x01c00002, signed by a local CA made by
//! `swtpm_localca`), started and stopped by the test itself.
//!
//! swtpm has no resource manager: whoever talks to it flushes the transient
//! objects and sessions it made (vigil's agent does; the tpm2-tools helper
//! here flushes after each command).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The persistent handle of the RSA EK swtpm_setup creates.
pub const EK_HANDLE: &str = "0x81010001";
/// The NV index of the RSA EK certificate (TCG EK Credential Profile).
pub const EK_CERT_NV_INDEX: &str = "0x1c00002";

/// Fails the calling test, with what to run, when swtpm or tpm2-tools are
/// not installed (`scripts/install-deps.sh` installs them; no root needed
/// to run them).
pub fn require_swtpm(test: &str) {
    for tool in ["swtpm", "swtpm_setup", "swtpm_localca", "tpm2_quote"] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "{test}: {tool} is not installed; run scripts/install-deps.sh (it adds swtpm, swtpm-tools and tpm2-tools)"
        );
    }
}

/// A local certificate authority for EK certificates (what a TPM vendor's
/// CA is to a hardware TPM): a root and an intermediate that signs the EK
/// certificates of the TPMs manufactured with it.
pub struct SwtpmCa {
    dir: tempfile::TempDir,
}

impl SwtpmCa {
    pub fn new() -> SwtpmCa {
        let dir = tempfile::Builder::new()
            .prefix("vigil-swtpm-ca-")
            .tempdir()
            .expect("a temporary directory for the swtpm CA");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("localca.conf"),
            format!(
                "statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/issuercert.pem\ncertserial = {d}/certserial\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("setup.conf"),
            format!(
                "create_certs_tool= /usr/bin/swtpm_localca\ncreate_certs_tool_config = {d}/localca.conf\ncreate_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n"
            ),
        )
        .unwrap();
        SwtpmCa { dir }
    }

    /// The root certificate (PEM); exists once a TPM was manufactured.
    pub fn root_pem_path(&self) -> PathBuf {
        self.dir.path().join("swtpm-localca-rootca-cert.pem")
    }

    /// The intermediate that signs EK certificates (PEM).
    pub fn intermediate_pem_path(&self) -> PathBuf {
        self.dir.path().join("issuercert.pem")
    }

    /// Root then intermediate, in one PEM file (what the control plane's
    /// `--tpm-ca` takes).
    pub fn write_bundle(&self, path: &Path) {
        let mut pem = std::fs::read(self.root_pem_path()).expect("the swtpm root CA");
        pem.extend(std::fs::read(self.intermediate_pem_path()).expect("the swtpm issuer"));
        std::fs::write(path, pem).unwrap();
    }
}

impl Default for SwtpmCa {
    fn default() -> Self {
        Self::new()
    }
}

/// One running software TPM, killed when dropped.
pub struct Swtpm {
    dir: tempfile::TempDir,
    port: u16,
    ctrl_port: u16,
    child: Option<Child>,
}

impl Swtpm {
    /// Manufactures a TPM (EK and EK certificate from `ca`) and starts it.
    pub fn manufacture(ca: &SwtpmCa) -> Swtpm {
        let dir = tempfile::Builder::new()
            .prefix("vigil-swtpm-")
            .tempdir()
            .expect("a temporary directory for swtpm");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--overwrite", "--tpmstate"])
            .arg(&state)
            .arg("--config")
            .arg(ca.dir.path().join("setup.conf"))
            .output()
            .expect("running swtpm_setup (scripts/install-deps.sh installs swtpm-tools)");
        assert!(
            out.status.success(),
            "swtpm_setup failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut tpm = Swtpm {
            dir,
            port: 0,
            ctrl_port: 0,
            child: None,
        };
        tpm.start();
        tpm
    }

    fn start(&mut self) {
        let (port, ctrl_port) = two_free_ports();
        self.port = port;
        self.ctrl_port = ctrl_port;
        let log = self.dir.path().join("swtpm.log");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", self.dir.path().join("state").display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl_port},bindaddr=127.0.0.1"))
            .args(["--flags", "not-need-init,startup-clear", "--log"])
            .arg(format!("file={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting swtpm");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "swtpm did not listen on 127.0.0.1:{port} within 10 s; its log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops swtpm (state kept) and starts it again, as a host reboot
    /// does: TPM2_Startup(CLEAR) resets the PCRs and increments resetCount.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The TCTI configuration string (`swtpm:host=127.0.0.1,port=N`), as
    /// tpm2-tools' `TPM2TOOLS_TCTI` and the agent's `--tpm` take it.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A working directory for files of this TPM's tests.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a tpm2-tools command against this TPM (in its directory), then
    /// flushes transient objects and sessions; panics with its output when
    /// it fails.
    pub fn tpm2(&self, tool: &str, args: &[&str]) -> Output {
        let out = self.try_tpm2(tool, args);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// As [`Swtpm::tpm2`], returning the output whatever the exit status.
    pub fn try_tpm2(&self, tool: &str, args: &[&str]) -> Output {
        let out = Command::new(tool)
            .args(args)
            .current_dir(self.dir.path())
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        for flush in ["-t", "-s"] {
            let _ = Command::new("tpm2_flushcontext")
                .arg(flush)
                .env("TPM2TOOLS_TCTI", self.tcti())
                .output();
        }
        out
    }

    /// Extends sha256 PCR `index` with `digest_hex` (64 hex digits).
    pub fn extend_pcr(&self, index: u8, digest_hex: &str) {
        self.tpm2("tpm2_pcrextend", &[&format!("{index}:sha256={digest_hex}")]);
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port whose successor is free too: the swtpm TCTI
/// reaches the control channel at the server port + 1.
fn two_free_ports() -> (u16, u16) {
    for _ in 0..100 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return (port, port + 1);
        }
    }
    panic!("no two consecutive free loopback ports for swtpm in 100 tries");
}
