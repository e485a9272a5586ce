use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::serve::store_key::KEY_LEN;

fn key(b: u8) -> Arc<StoreKey> {
    Arc::new(StoreKey::from_bytes(&[b; KEY_LEN], "test").unwrap())
}

/// Deterministic bytes that differ from chunk to chunk.
fn model(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[1])
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn store(dir: &Path, k: u8) -> ModelStore {
    ModelStore::open(dir, key(k)).unwrap().0
}

/// A store holding `bytes`: (store, digest).
fn stored(dir: &Path, bytes: &[u8]) -> (ModelStore, String) {
    let s = store(dir, 1);
    let digest = sha(bytes);
    s.put(&digest, bytes.len() as u64, bytes).unwrap();
    (s, digest)
}

fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// Where chunk `i` (ciphertext and tag) starts in the file.
fn chunk_at(i: usize) -> usize {
    HEADER_LEN + i * (CHUNK_LEN + TAG_LEN)
}

#[test]
fn models_round_trip_whatever_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1);
    for len in [0, 1, 4095, CHUNK_LEN, CHUNK_LEN + 1, 2 * CHUNK_LEN + 12_345] {
        let bytes = model(len);
        let digest = sha(&bytes);
        let stamp = s.put(&digest, len as u64, bytes.as_slice()).unwrap();
        let on_disk = std::fs::metadata(s.path(&digest)).unwrap();
        assert_eq!(on_disk.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            on_disk.len(),
            (HEADER_LEN + len + chunk_count(len as u64, CHUNK_LEN as u64) as usize * TAG_LEN)
                as u64
        );
        let read = s.open_verified(&digest, len as u64, "m").unwrap();
        assert_eq!(read.stamp, stamp);
        assert!(read.memfd.is_sealed());
        assert_eq!(read.memfd.size(), len as u64);
        assert_eq!(read.memfd.read_all().unwrap(), bytes, "{len} bytes");
    }
    assert_eq!(
        std::fs::metadata(s.dir()).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn the_plaintext_is_not_in_the_store_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = b"ONNX-PLAINTEXT-MARKER ".repeat(4096);
    let (s, digest) = stored(dir.path(), &bytes);
    let on_disk = std::fs::read(s.path(&digest)).unwrap();
    assert!(!on_disk.windows(22).any(|w| w == b"ONNX-PLAINTEXT-MARKER "));
    // No temporary file is left beside it.
    assert_eq!(std::fs::read_dir(s.dir()).unwrap().count(), 1);
}

#[test]
fn a_flipped_byte_in_any_chunk_or_the_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = model(2 * CHUNK_LEN + 100);
    let (s, digest) = stored(dir.path(), &bytes);
    let path = s.path(&digest);
    let clean = std::fs::read(&path).unwrap();
    let offsets = [
        (chunk_at(0) + 5, "chunk 0 of 3"),
        (chunk_at(1) + CHUNK_LEN / 2, "chunk 1 of 3"),
        (chunk_at(2) + 99, "chunk 2 of 3"),
        // The last tag's last byte.
        (clean.len() - 1, "chunk 2 of 3"),
        // The nonce prefix, in the header (bound into every chunk).
        (26, "chunk 0 of 3"),
    ];
    for (at, says) in offsets {
        rewrite(&path, |b| {
            b.copy_from_slice(&clean);
            b[at] ^= 0x01;
        });
        let e = s
            .open_verified(&digest, bytes.len() as u64, "m")
            .unwrap_err();
        assert!(e.is_tamper(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(says) && text.contains("tampered"),
            "byte {at}: {text}"
        );
    }
    // Header fields read before any chunk name themselves.
    for (at, says) in [
        (0, "bad magic"),
        (8, "store format"),
        (17, "encrypted under key"),
        (50, "holds the model with digest"),
        (35, "cut short or extended"),
    ] {
        rewrite(&path, |b| {
            b.copy_from_slice(&clean);
            b[at] ^= 0x01;
        });
        let e = s
            .open_verified(&digest, bytes.len() as u64, "m")
            .unwrap_err();
        assert!(
            e.is_tamper() && e.to_string().contains(says),
            "byte {at}: {e}"
        );
    }
    rewrite(&path, |b| b.copy_from_slice(&clean));
    s.open_verified(&digest, bytes.len() as u64, "m").unwrap();
}

#[test]
fn a_truncated_or_extended_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = model(CHUNK_LEN + 10);
    let (s, digest) = stored(dir.path(), &bytes);
    let path = s.path(&digest);
    let clean = std::fs::read(&path).unwrap();
    // Cut at a chunk boundary (the last chunk dropped whole), mid-chunk,
    // inside the header, and to nothing.
    for len in [chunk_at(1), chunk_at(1) + 3, 40, 0] {
        std::fs::write(&path, &clean[..len]).unwrap();
        let e = s
            .open_verified(&digest, bytes.len() as u64, "m")
            .unwrap_err();
        assert!(e.is_tamper(), "{e}");
        assert!(
            e.to_string().contains("cut short or extended"),
            "{len}: {e}"
        );
    }
    let mut longer = clean.clone();
    longer.extend_from_slice(&[0; 16]);
    std::fs::write(&path, &longer).unwrap();
    let e = s
        .open_verified(&digest, bytes.len() as u64, "m")
        .unwrap_err();
    assert!(e.to_string().contains("cut short or extended"), "{e}");
}

#[test]
fn a_cut_whose_header_was_rewritten_to_match_still_fails() {
    // The attacker drops the last chunk and rewrites the size in the
    // header so the length adds up: every chunk's additional data binds
    // the header, so chunk 0 no longer authenticates.
    let dir = tempfile::tempdir().unwrap();
    let bytes = model(2 * CHUNK_LEN);
    let (s, digest) = stored(dir.path(), &bytes);
    let path = s.path(&digest);
    rewrite(&path, |b| {
        b.truncate(chunk_at(1));
        b[32..40].copy_from_slice(&(CHUNK_LEN as u64).to_be_bytes());
    });
    let e = s.open_verified(&digest, CHUNK_LEN as u64, "m").unwrap_err();
    assert!(e.to_string().contains("chunk 0 of 1"), "{e}");
}

#[test]
fn swapped_chunks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = model(3 * CHUNK_LEN);
    let (s, digest) = stored(dir.path(), &bytes);
    let path = s.path(&digest);
    rewrite(&path, |b| {
        let first: Vec<u8> = b[chunk_at(0)..chunk_at(1)].to_vec();
        let second: Vec<u8> = b[chunk_at(1)..chunk_at(2)].to_vec();
        b[chunk_at(0)..chunk_at(1)].copy_from_slice(&second);
        b[chunk_at(1)..chunk_at(2)].copy_from_slice(&first);
    });
    let e = s
        .open_verified(&digest, bytes.len() as u64, "m")
        .unwrap_err();
    assert!(e.to_string().contains("chunk 0 of 3"), "{e}");
}

#[test]
fn a_chunk_spliced_from_another_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = model(2 * CHUNK_LEN);
    let mut b = a.clone();
    b[CHUNK_LEN + 7] ^= 0xff;
    let (s, da) = stored(dir.path(), &a);
    let db = sha(&b);
    s.put(&db, b.len() as u64, b.as_slice()).unwrap();
    let from_b = std::fs::read(s.path(&db)).unwrap();
    rewrite(&s.path(&da), |file| {
        file[chunk_at(1)..].copy_from_slice(&from_b[chunk_at(1)..]);
    });
    let e = s.open_verified(&da, a.len() as u64, "m").unwrap_err();
    assert!(e.to_string().contains("chunk 1 of 2"), "{e}");
}

#[test]
fn a_file_renamed_to_another_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = model(1000);
    let b = model(2000);
    let (s, da) = stored(dir.path(), &a);
    let db = sha(&b);
    std::fs::rename(s.path(&da), s.path(&db)).unwrap();
    let e = s.open_verified(&db, b.len() as u64, "m").unwrap_err();
    assert!(e.is_tamper());
    let text = e.to_string();
    assert!(
        text.contains(&format!("holds the model with digest {da}, not {db}")),
        "{text}"
    );
}

#[test]
fn a_file_under_another_key_is_refused_and_dropped_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = model(5000);
    let (_, digest) = stored(dir.path(), &bytes);
    let (other, dropped) = ModelStore::open(dir.path(), key(2)).unwrap();
    assert_eq!(dropped, vec![digest.clone()]);
    assert!(!other.contains(&digest));

    // Read directly (not through open): the key is named.
    let (s, digest) = stored(dir.path(), &bytes);
    let wrong = ModelStore {
        dir: s.dir().to_path_buf(),
        key: key(3),
    };
    let e = wrong
        .open_verified(&digest, bytes.len() as u64, "m")
        .unwrap_err();
    assert!(e.is_tamper());
    assert!(e.to_string().contains("encrypted under key"), "{e}");
}

#[test]
fn a_record_of_another_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = model(100);
    let (s, digest) = stored(dir.path(), &bytes);
    let e = s.open_verified(&digest, 101, "m").unwrap_err();
    assert!(
        e.to_string()
            .contains("holds 100 bytes; the record says 101"),
        "{e}"
    );
}

#[test]
fn bytes_that_do_not_hash_to_the_record_are_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1);
    let bytes = model(3000);
    let wrong = sha(b"something else");
    let e = s.put(&wrong, 3000, bytes.as_slice()).unwrap_err();
    assert!(e.to_string().contains("not the approved"), "{e}");
    let right = sha(&bytes);
    let e = s.put(&right, 3001, bytes.as_slice()).unwrap_err();
    assert!(e.to_string().contains("gave 3000 bytes"), "{e}");
    let e = s.put(&right, 2999, bytes.as_slice()).unwrap_err();
    assert!(e.to_string().contains("source gave"), "{e}");
    assert_eq!(std::fs::read_dir(s.dir()).unwrap().count(), 0);
    let e = s.put("../../etc/passwd", 1, &b"x"[..]).unwrap_err();
    assert!(matches!(e, StoreError::BadDigest(_)), "{e}");
}

#[test]
fn a_symlink_at_a_store_path_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1);
    let bytes = model(4000);
    let digest = sha(&bytes);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, s.path(&digest)).unwrap();
    // Reading refuses the link.
    let e = s.open_verified(&digest, 4000, "m").unwrap_err();
    assert!(matches!(e, StoreError::NotRegular { .. }), "{e}");
    // Writing replaces the link, never writes through it.
    s.put(&digest, 4000, bytes.as_slice()).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(s.path(&digest))
        .unwrap()
        .is_file());
    s.open_verified(&digest, 4000, "m").unwrap();
}

#[test]
fn leftovers_of_interrupted_writes_go_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1);
    let temp = s.dir().join(format!(".{}.1.000000001.tmp", "a".repeat(64)));
    std::fs::write(&temp, b"partial").unwrap();
    let (s, dropped) = ModelStore::open(dir.path(), key(1)).unwrap();
    assert!(dropped.is_empty());
    assert!(!temp.exists());
    assert!(s.digests().is_empty());
}

#[test]
fn a_stamp_changes_when_the_file_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = model(100);
    let (s, digest) = stored(dir.path(), &bytes);
    let before = s.stamp(&digest).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    rewrite(&s.path(&digest), |b| b[HEADER_LEN] ^= 1);
    assert_ne!(s.stamp(&digest).unwrap(), before);
    s.remove(&digest);
    assert!(matches!(s.stamp(&digest), Err(StoreError::Missing { .. })));
}
