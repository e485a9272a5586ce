//! MakeCredential checked three ways: opened again in software with the
//! private half of a software EK; laid out as `tpm2_makecredential`
//! writes it; and activated by a real (software) TPM, swtpm, with
//! tpm2-tools: the secret comes back for the AK it was made for, and not
//! for an AK of another TPM.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Mac, SimpleHmac};
use ring::rand::SystemRandom;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;

use super::*;
use crate::fixtures_tests::fixture;
use crate::tpm_public::ObjectAttributes;

fn ek_attributes() -> ObjectAttributes {
    ObjectAttributes(
        ObjectAttributes::FIXED_TPM
            | ObjectAttributes::FIXED_PARENT
            | ObjectAttributes::SENSITIVE_DATA_ORIGIN
            | ObjectAttributes::ADMIN_WITH_POLICY
            | ObjectAttributes::RESTRICTED
            | ObjectAttributes::DECRYPT,
    )
}

/// An EK public area around the fixture's software RSA key, and that key.
fn software_ek() -> (TpmPublic, rsa::RsaPrivateKey) {
    let private = rsa::RsaPrivateKey::from_pkcs1_der(&fixture("test-rsa2048.der")).unwrap();
    let ek = TpmPublic::from_parts(
        HashAlg::Sha256,
        ek_attributes(),
        &[0x83; 32],
        PublicParameters::Rsa {
            symmetric: SymmetricDef::Cipher {
                algorithm: alg::AES,
                key_bits: 128,
                mode: alg::CFB,
            },
            scheme: AsymScheme::Null,
            key_bits: 2048,
            exponent: 0,
        },
        PublicUnique::Rsa {
            modulus: private.n().to_bytes_be(),
        },
    )
    .unwrap();
    (ek, private)
}

/// TPM2_ActivateCredential in software, as the TPM does it.
fn activate(
    private: &rsa::RsaPrivateKey,
    name: &[u8],
    cred: &Credential,
) -> Result<Vec<u8>, String> {
    let enc = &cred.encrypted_secret[2..];
    let seed = private
        .decrypt(Oaep::new_with_label::<sha2::Sha256, _>("IDENTITY\0"), enc)
        .map_err(|e| format!("seed: {e}"))?;
    let inner = &cred.id_object[2..];
    let hmac_len = usize::from(u16::from_be_bytes([inner[0], inner[1]]));
    let (outer_hmac, enc_identity) = inner[2..].split_at(hmac_len);
    let hmac_key = kdfa::<sha2::Sha256>(&seed, "INTEGRITY", &[], &[], 256).unwrap();
    let mut mac = <SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(&hmac_key).unwrap();
    mac.update(enc_identity);
    mac.update(name);
    mac.verify_slice(outer_hmac)
        .map_err(|_| "integrity".to_string())?;
    let sym_key = kdfa::<sha2::Sha256>(&seed, "STORAGE", name, &[], 128).unwrap();
    let mut plain = enc_identity.to_vec();
    cfb_mode::Decryptor::<aes::Aes128>::new_from_slices(&sym_key, &[0; 16])
        .unwrap()
        .decrypt(&mut plain);
    let len = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
    Ok(plain[2..2 + len].to_vec())
}

#[test]
fn a_software_tpm_opens_it_for_the_name_it_was_made_for() {
    let (ek, private) = software_ek();
    let ak = TpmPublic::parse(&fixture("ak.pub")).unwrap();
    let name = ak.name();
    let secret = b"vigil: the AK is in this TPM....";
    let cred = make_credential(&ek, &name, secret, &SystemRandom::new()).unwrap();
    assert_eq!(activate(&private, &name, &cred).unwrap(), secret);
    let other = TpmPublic::parse(&fixture("ak-ecc.pub")).unwrap().name();
    assert_eq!(activate(&private, &other, &cred).unwrap_err(), "integrity");
    // Two credentials for the same inputs differ (fresh seed).
    let again = make_credential(&ek, &name, secret, &SystemRandom::new()).unwrap();
    assert_ne!(again, cred);
}

#[test]
fn kdfa_matches_a_known_answer() {
    // KDFa(SHA-256, key 0x00..0x1f, "STORAGE", "name", "", 128), computed
    // by hand from the definition: one HMAC block, truncated.
    let key: Vec<u8> = (0..32).collect();
    let mut mac = <SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(&[0, 0, 0, 1]);
    mac.update(b"STORAGE\0name");
    mac.update(&[0, 0, 0, 128]);
    let expected = mac.finalize().into_bytes()[..16].to_vec();
    assert_eq!(
        kdfa::<sha2::Sha256>(&key, "STORAGE", b"name", &[], 128).unwrap(),
        expected
    );
    assert_eq!(
        kdfa::<sha2::Sha256>(&key, "INTEGRITY", &[], &[], 512)
            .unwrap()
            .len(),
        64
    );
}

#[test]
fn the_file_is_laid_out_as_tpm2_makecredential_writes_it() {
    let ek = TpmPublic::parse(&fixture("ek.pub")).unwrap();
    let name = TpmPublic::parse(&fixture("ak.pub")).unwrap().name();
    let cred = make_credential(&ek, &name, &[7; 32], &SystemRandom::new()).unwrap();
    let file = cred.to_tpm2_tools_file();
    // `tpm2_makecredential --tcti none -e ek.pub -s <32 bytes> -n <name>`
    // writes 336 bytes: header, 0x0044 (2 + 32 HMAC + 2 + 32), 0x0100.
    assert_eq!(file.len(), 336);
    assert_eq!(file[..10], [0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1, 0x00, 0x44]);
    assert_eq!(file[8 + 70..8 + 72], [0x01, 0x00]);
    assert_eq!(Credential::from_tpm2_tools_file(&file).unwrap(), cred);
    let e = Credential::from_tpm2_tools_file(&file[..100]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("tpm2-tools credential file at byte 80: truncated"),
        "{e}"
    );
}

#[test]
fn refusals_say_why() {
    let ek = TpmPublic::parse(&fixture("ek.pub")).unwrap();
    let ak = TpmPublic::parse(&fixture("ak.pub")).unwrap();
    let rng = SystemRandom::new();
    let e = make_credential(&ak, &ak.name(), &[1; 32], &rng).unwrap_err();
    assert_eq!(
        e.to_string(),
        "not an endorsement key: objectAttributes.decrypt is clear"
    );
    let e = make_credential(&ek, &ak.name(), &[1; 33], &rng).unwrap_err();
    assert_eq!(
        e.to_string(),
        "secret of 33 bytes: a credential holds 1 to 32 bytes (the EK nameAlg's digest size)"
    );
    let e = make_credential(&ek, &ak.name()[..20], &[1; 32], &rng).unwrap_err();
    assert!(
        e.to_string()
            .contains("a sha256 Name has 32 digest bytes, this has 18"),
        "{e}"
    );
    let (soft, _) = software_ek();
    let PublicUnique::Rsa { modulus } = soft.unique().clone() else {
        unreachable!()
    };
    let no_aes = TpmPublic::from_parts(
        HashAlg::Sha256,
        ek_attributes(),
        &[],
        PublicParameters::Rsa {
            symmetric: SymmetricDef::Cipher {
                algorithm: alg::AES,
                key_bits: 128,
                mode: alg::CTR,
            },
            scheme: AsymScheme::Null,
            key_bits: 2048,
            exponent: 0,
        },
        PublicUnique::Rsa { modulus },
    )
    .unwrap();
    let e = make_credential(&no_aes, &ak.name(), &[1; 32], &rng).unwrap_err();
    assert_eq!(
        e.to_string(),
        "EK not supported: symmetric 0x0006-128-0x0040 (AES-128-CFB or AES-256-CFB needed)"
    );
}

// ---- Live: swtpm and tpm2-tools. ----

const INSTALL: &str = "run scripts/install-deps.sh (swtpm, swtpm-tools, tpm2-tools)";

fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is not on PATH: {INSTALL}");
}

/// A swtpm with an RSA EK at 0x81010001, killed when dropped.
struct Swtpm {
    dir: tempfile::TempDir,
    child: Child,
    tcti: String,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two free ports, the second right after the first (the swtpm TCTI
/// finds the control channel at port + 1).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two adjacent free ports on 127.0.0.1");
}

impl Swtpm {
    fn start() -> Swtpm {
        for tool in [
            "swtpm",
            "swtpm_setup",
            "swtpm_localca",
            "tpm2_createak",
            "tpm2_activatecredential",
        ] {
            require(tool);
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("state")).unwrap();
        std::fs::create_dir_all(d.join("ca")).unwrap();
        let ca = d.join("ca");
        std::fs::write(
            d.join("localca.conf"),
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("setup.conf"),
            format!(
                "create_certs_tool= /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n",
                d.join("localca.conf").display()
            ),
        )
        .unwrap();
        run(Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--overwrite", "--tpmstate"])
            .arg(d.join("state"))
            .arg("--config")
            .arg(d.join("setup.conf")));
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", d.join("state").display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("swtpm: {e}: {INSTALL}"));
        let tpm = Swtpm {
            dir,
            child,
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "swtpm did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        tpm
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tool(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(args[0])
            .args(&args[1..])
            .current_dir(self.dir.path())
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}: {INSTALL}", args[0]));
        // swtpm has no resource manager: leave no transient objects or
        // sessions behind.
        for flag in ["-t", "-s"] {
            let _ = Command::new("tpm2_flushcontext")
                .arg(flag)
                .env("TPM2TOOLS_TCTI", &self.tcti)
                .output();
        }
        out
    }

    fn ok(&self, args: &[&str]) {
        let out = self.tool(args);
        assert!(
            out.status.success(),
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes an AK under the EK; returns its public area.
    fn create_ak(&self) -> TpmPublic {
        self.ok(&[
            "tpm2_createak",
            "-C",
            "0x81010001",
            "-c",
            "ak.ctx",
            "-G",
            "rsa",
            "-g",
            "sha256",
            "-s",
            "rsassa",
            "-u",
            "ak.pub",
            "-n",
            "ak.name",
            "-r",
            "ak.priv",
        ]);
        let ak = TpmPublic::parse(&std::fs::read(self.path("ak.pub")).unwrap()).unwrap();
        assert_eq!(ak.name(), std::fs::read(self.path("ak.name")).unwrap());
        ak
    }

    fn ek(&self) -> TpmPublic {
        self.ok(&["tpm2_readpublic", "-c", "0x81010001", "-o", "ek.pub"]);
        TpmPublic::parse(&std::fs::read(self.path("ek.pub")).unwrap()).unwrap()
    }

    /// tpm2_activatecredential of `cred` with this TPM's EK and AK.
    fn activate(&self, cred: &Credential) -> Result<Vec<u8>, String> {
        std::fs::write(self.path("cred.out"), cred.to_tpm2_tools_file()).unwrap();
        let _ = std::fs::remove_file(self.path("actcred.out"));
        let script = "tpm2_startauthsession --policy-session -S session.ctx && \
             tpm2_policysecret -S session.ctx -c e && \
             tpm2_activatecredential -c ak.ctx -C 0x81010001 -i cred.out -o actcred.out -P session:session.ctx; \
             rc=$?; tpm2_flushcontext session.ctx >/dev/null 2>&1; exit $rc";
        let out = self.tool(&["sh", "-c", script]);
        if out.status.success() {
            Ok(std::fs::read(self.path("actcred.out")).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{:?}: {e}: {INSTALL}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn swtpm_activates_the_credential_for_its_own_ak_only() {
    let tpm = Swtpm::start();
    let ek = tpm.ek();
    let ak = tpm.create_ak();
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut secret).unwrap();
    let cred = make_credential(&ek, &ak.name(), &secret, &SystemRandom::new()).unwrap();
    assert_eq!(tpm.activate(&cred).unwrap(), secret);

    // An AK of another TPM: sealed to this EK for that AK's name, this
    // TPM cannot open it with its own AK (wrong name), and the other TPM
    // cannot open it at all (wrong EK).
    let other = Swtpm::start();
    let other_ak = other.create_ak();
    let for_other = make_credential(&ek, &other_ak.name(), &secret, &SystemRandom::new()).unwrap();
    let e = tpm.activate(&for_other).unwrap_err();
    assert!(e.contains("integrity"), "{e}");
    let e = other.activate(&for_other).unwrap_err();
    assert!(!e.is_empty());
    // And a credential made with the other TPM's EK works there.
    let theirs =
        make_credential(&other.ek(), &other_ak.name(), &secret, &SystemRandom::new()).unwrap();
    assert_eq!(other.activate(&theirs).unwrap(), secret);
}
