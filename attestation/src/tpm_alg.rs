//! TPM_ALG_ID values (TPM 2.0 Part 2, table 9) and the few other TPM
//! constants this crate reads.

pub const RSA: u16 = 0x0001;
pub const SHA1: u16 = 0x0004;
pub const HMAC: u16 = 0x0005;
pub const AES: u16 = 0x0006;
pub const MGF1: u16 = 0x0007;
pub const KEYEDHASH: u16 = 0x0008;
pub const XOR: u16 = 0x000a;
pub const SHA256: u16 = 0x000b;
pub const SHA384: u16 = 0x000c;
pub const SHA512: u16 = 0x000d;
pub const NULL: u16 = 0x0010;
pub const SM3_256: u16 = 0x0012;
pub const SM4: u16 = 0x0013;
pub const RSASSA: u16 = 0x0014;
pub const RSAES: u16 = 0x0015;
pub const RSAPSS: u16 = 0x0016;
pub const OAEP: u16 = 0x0017;
pub const ECDSA: u16 = 0x0018;
pub const ECDH: u16 = 0x0019;
pub const ECDAA: u16 = 0x001a;
pub const SM2: u16 = 0x001b;
pub const ECSCHNORR: u16 = 0x001c;
pub const ECMQV: u16 = 0x001d;
pub const KDF1_SP800_56A: u16 = 0x0020;
pub const KDF2: u16 = 0x0021;
pub const KDF1_SP800_108: u16 = 0x0022;
pub const ECC: u16 = 0x0023;
pub const SYMCIPHER: u16 = 0x0025;
pub const CAMELLIA: u16 = 0x0026;
pub const CTR: u16 = 0x0040;
pub const OFB: u16 = 0x0041;
pub const CBC: u16 = 0x0042;
pub const CFB: u16 = 0x0043;
pub const ECB: u16 = 0x0044;

/// TPM_ECC_CURVE values (Part 2, table 10).
pub const ECC_NIST_P256: u16 = 0x0003;
pub const ECC_NIST_P384: u16 = 0x0004;
pub const ECC_NIST_P521: u16 = 0x0005;

/// TPM_GENERATED_VALUE: the magic of every TPMS_ATTEST the TPM signs.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE: a TPMS_ATTEST from TPM2_Quote.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

/// sizeof(TPMU_HA) with SHA-512: the buffer of TPM2B_DIGEST.
pub const MAX_DIGEST: usize = 64;
/// sizeof(TPMT_HA): the buffer of TPM2B_DATA (extraData).
pub const MAX_DATA: usize = 66;
/// sizeof(TPMU_NAME): the buffer of TPM2B_NAME.
pub const MAX_NAME: usize = 66;
/// MAX_RSA_KEY_BYTES for RSA-4096.
pub const MAX_RSA_KEY_BYTES: usize = 512;
/// MAX_ECC_KEY_BYTES for P-521 (and the BN and SM2 curves below it).
pub const MAX_ECC_KEY_BYTES: usize = 66;
