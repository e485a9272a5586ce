//! A fleet CA and certificates made with `vigil-pki` in a test's
//! directory, and mutual-TLS channels that present them.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};
use vigil_pki::{CertificateAuthority, Identity, IssuedCertificate, LeafRequest};

use crate::ControlPlane;

/// A CA in `dir`, and certificates issued by it on demand.
pub struct TlsFleet {
    /// The CA certificate file.
    pub ca_file: PathBuf,
    ca: CertificateAuthority,
}

impl TlsFleet {
    /// A new CA named `name`; its certificate is `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TlsFleet {
        let ca =
            CertificateAuthority::init(name, time::OffsetDateTime::now_utc(), 30).expect("a CA");
        std::fs::write(dir.join(format!("{name}-ca.pem")), ca.cert_pem()).expect("write CA");
        TlsFleet {
            ca_file: dir.join(format!("{name}-ca.pem")),
            ca,
        }
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// A certificate and key for `identity`, valid for a day.
    pub fn issue(&self, identity: Identity) -> IssuedCertificate {
        self.ca
            .issue(&LeafRequest::new(
                identity,
                time::OffsetDateTime::now_utc(),
                1,
            ))
            .expect("issue")
    }

    /// Writes `who` beside the CA as `<name>.pem` and `<name>.key`; the
    /// vigilctl flags that present it to `https://127.0.0.1:port`.
    pub fn vigilctl_flags(&self, port: u16, name: &str, who: &IssuedCertificate) -> Vec<String> {
        let mut flags = vec![
            "--endpoint".to_string(),
            format!("https://127.0.0.1:{port}"),
        ];
        flags.extend(self.tls_flags(name, who));
        flags
    }

    /// Writes `who` beside the CA as `<name>.pem` and `<name>.key`; the
    /// `--tls-ca`, `--tls-cert` and `--tls-key` flags (agent and vigilctl)
    /// that present it.
    pub fn tls_flags(&self, name: &str, who: &IssuedCertificate) -> Vec<String> {
        let dir = self.ca_file.parent().expect("the CA's directory");
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, &who.cert_pem).expect("write");
        std::fs::write(&key, &who.key_pem).expect("write");
        vec![
            "--tls-ca".into(),
            self.ca_file.display().to_string(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ]
    }

    /// `--tls-ca-key` and the CA's key written beside the CA: the control
    /// plane then enrolls agents.
    pub fn ca_key_flags(&self) -> Vec<String> {
        let key = self.ca_file.with_extension("key");
        std::fs::write(&key, self.ca.key_pem()).expect("write");
        vec!["--tls-ca-key".into(), key.display().to_string()]
    }

    /// The control plane's flags for node `id` serving on 127.0.0.1: the
    /// files are written beside the CA.
    pub fn node_flags(&self, id: &str) -> Vec<String> {
        self.node_flags_at(id, "127.0.0.1".parse().unwrap())
    }

    /// As [`TlsFleet::node_flags`], for a node serving on `ip`.
    pub fn node_flags_at(&self, id: &str, ip: std::net::IpAddr) -> Vec<String> {
        let mut req = LeafRequest::new(
            Identity::node(id).expect("node id"),
            time::OffsetDateTime::now_utc(),
            1,
        );
        req.ip_addresses.push(ip);
        let issued = self.ca.issue(&req).expect("issue node");
        let dir = self.ca_file.parent().expect("the CA's directory");
        let (cert, key) = (
            dir.join(format!("node-{id}.pem")),
            dir.join(format!("node-{id}.key")),
        );
        std::fs::write(&cert, &issued.cert_pem).expect("write");
        std::fs::write(&key, &issued.key_pem).expect("write");
        vec![
            "--tls-ca".into(),
            self.ca_file.display().to_string(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ]
    }

    /// Starts a control plane serving mutual TLS on 127.0.0.1:`port` as
    /// node `cp1` of this fleet, with its data in `data_dir` and `extra`
    /// flags (say [`TlsFleet::ca_key_flags`]); panics with its log when it
    /// does not come up.
    pub fn start_control_plane(
        &self,
        data_dir: &Path,
        port: u16,
        extra: &[String],
    ) -> ControlPlane {
        let mut flags = self.node_flags("cp1");
        flags.extend(extra.iter().cloned());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        ControlPlane::start_with(data_dir, port, &flags)
    }

    /// A channel to `https://127.0.0.1:port` that trusts this CA and
    /// presents `who`.
    pub async fn channel(
        &self,
        port: u16,
        who: &IssuedCertificate,
    ) -> Result<Channel, tonic::transport::Error> {
        channel_with(port, self.ca_pem(), who).await
    }
}

/// A mutual-TLS channel trusting `ca_pem` and presenting `who`.
pub async fn channel_with(
    port: u16,
    ca_pem: &str,
    who: &IssuedCertificate,
) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(TlsIdentity::from_pem(&who.cert_pem, &who.key_pem))
        .domain_name("127.0.0.1");
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .connect()
        .await
}
