//! Quote verifications per second on one core, for comparison with
//! `openssl speed -seconds 3 rsa2048` (its verify/s column):
//!
//! ```text
//! cargo run --release -p vigil-attestation --example quote_verify_speed
//! openssl speed -seconds 3 rsa2048
//! ```
//!
//! Times 20,000 (or the first argument) checks of the RSA-2048 fixture
//! quote: the signature alone (`verify`: what openssl's figure measures,
//! plus hashing the 145-byte TPMS_ATTEST), then the whole `verify_quote`
//! (parsing, AK checks, nonce, PCR digest).

use std::path::Path;
use std::time::Instant;

use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use vigil_attestation::tpm2_tools_files::parse_pcrs_file;
use vigil_attestation::{
    verify, verify_quote, HashAlg, PcrSelection, PublicKey, TpmPublic, TpmtSignature,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let ak = TpmPublic::parse(&fixture("ak.pub")).expect("ak.pub");
    let msg = fixture("quote.msg");
    let sig_bytes = fixture("quote.sig");
    let sig = TpmtSignature::parse(&sig_bytes).expect("quote.sig");
    let nonce = fixture("nonce.bin");
    let pcrs = parse_pcrs_file(&fixture("quote.pcrs")).expect("quote.pcrs");
    let selection =
        PcrSelection::single(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7]).expect("selection");

    for _ in 0..n / 10 {
        verify(&ak, &msg, &sig).expect("warm-up");
    }
    let start = Instant::now();
    for _ in 0..n {
        verify(&ak, &msg, &sig).expect("signature");
    }
    let sig_rate = f64::from(n) / start.elapsed().as_secs_f64();

    // For comparison: ring's other entry point, a DER RSAPublicKey kept
    // per AK and parsed again on every call.
    let PublicKey::Rsa { modulus, exponent } = ak.public_key() else {
        panic!("ak.pub is not RSA");
    };
    let der = rsa_public_key_der(&modulus, exponent);
    let unparsed = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der);
    let TpmtSignature::RsaSsa { sig: raw_sig, .. } = &sig else {
        panic!("quote.sig is not RSASSA");
    };
    let start = Instant::now();
    for _ in 0..n {
        unparsed.verify(&msg, raw_sig).expect("unparsed");
    }
    let der_rate = f64::from(n) / start.elapsed().as_secs_f64();

    let start = Instant::now();
    for _ in 0..n {
        verify_quote(&ak, &msg, &sig_bytes, &nonce, &pcrs, &selection).expect("quote");
    }
    let quote_rate = f64::from(n) / start.elapsed().as_secs_f64();
    println!("RSA-2048 quote signature verify (ring): {sig_rate:.0}/s");
    println!("RSA-2048 verify_quote, all checks:      {quote_rate:.0}/s");
    println!("ring UnparsedPublicKey (DER) verify:    {der_rate:.0}/s");
}

/// PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
fn rsa_public_key_der(modulus: &[u8], exponent: u32) -> Vec<u8> {
    fn integer(v: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        if v.first().is_some_and(|b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend_from_slice(v);
        let mut out = vec![0x02];
        out.extend(length(body.len()));
        out.extend(body);
        out
    }
    fn length(len: usize) -> Vec<u8> {
        match len {
            0..=0x7f => vec![len as u8],
            0x80..=0xff => vec![0x81, len as u8],
            _ => vec![0x82, (len >> 8) as u8, len as u8],
        }
    }
    let e = exponent.to_be_bytes();
    let skip = e.iter().take_while(|b| **b == 0).count();
    let mut body = integer(modulus);
    body.extend(integer(&e[skip..]));
    let mut out = vec![0x30];
    out.extend(length(body.len()));
    out.extend(body);
    out
}
