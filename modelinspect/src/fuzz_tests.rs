//! A mutation fuzzer per parser: valid seed files of each format, mutated
//! (bit flips, boundary values, huge lengths, cuts, repeats, splices) by a
//! seeded generator, each fed to `inspect` under a small budget. Any panic
//! fails with the seed that reproduces it. `make test` runs
//! `VIGIL_FUZZ_ITERS` (default 20,000) inputs per format; `make soak` runs
//! 2,000,000. Not coverage-guided (cargo fuzz needs a nightly toolchain):
//! the mutations aim at the length and count fields every format has.

use std::io::Cursor;
use std::time::Duration;

use crate::{inspect, Budget};

/// xorshift64*: the same inputs for the same seed, on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING_U64: [u64; 8] = [
    0,
    1,
    0x7f,
    0xffff,
    0xffff_ffff,
    1 << 60,
    u64::MAX,
    u64::MAX / 2,
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0, 0xff, 0x7f, 0x80, b'.', b'(', b'\x93'][rng.below(7)];
            }
            2 if len >= 8 => {
                let i = rng.below(len - 7);
                let x = INTERESTING_U64[rng.below(INTERESTING_U64.len())];
                v[i..i + 8].copy_from_slice(&x.to_le_bytes());
            }
            3 if len >= 4 => {
                let i = rng.below(len - 3);
                let x = INTERESTING_U64[rng.below(INTERESTING_U64.len())] as u32;
                v[i..i + 4].copy_from_slice(&x.to_le_bytes());
            }
            4 => v.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                // Repeat a chunk (deep nesting, many opcodes).
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let chunk = v[a..b].to_vec();
                for _ in 0..1 + rng.below(200) {
                    v.splice(a..a, chunk.iter().copied());
                }
            }
            6 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                v.drain(a..b);
            }
            _ if !other.is_empty() => {
                let a = rng.below(other.len());
                let b = (a + rng.below(256)).min(other.len());
                let at = rng.below(len + 1);
                v.splice(at..at, other[a..b].iter().copied());
            }
            _ => {}
        }
    }
    v
}

fn iterations() -> u64 {
    std::env::var("VIGIL_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Fuzzes `inspect` from `seeds` (named for the format sniffing).
pub(crate) fn fuzz(format: &str, name: &str, seeds: &[Vec<u8>]) {
    let budget = Budget {
        max_bytes: 1 << 20,
        max_time: Duration::from_millis(500),
        max_items: 1 << 16,
        max_depth: 128,
    };
    let (mut ok, mut refused) = (0u64, 0u64);
    for i in 0..iterations() {
        let seed = 0x5eed_0000 ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ format.len() as u64;
        let mut rng = Rng(seed | 1);
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, a, b);
        let run = std::panic::catch_unwind(|| {
            inspect(Cursor::new(input.clone()), budget, Some(name)).map(|_| ())
        });
        match run {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
            Err(_) => {
                let path = std::env::temp_dir().join(format!("vigil-fuzz-{format}-{i}.bin"));
                let _ = std::fs::write(&path, &input);
                panic!(
                    "{format}: inspect panicked on input {i} (seed {seed:#x}), saved to {}",
                    path.display()
                );
            }
        }
    }
    eprintln!("fuzz {format}: {ok} accepted, {refused} refused, no panic");
}

#[test]
fn fuzz_gguf() {
    let seeds = vec![
        crate::gguf::tests::llama_file(15, 12),
        crate::gguf::tests::GgufWriter::new(1)
            .str("general.architecture", "gpt2")
            .tensor("wte", &[5, 8], 0)
            .build(),
    ];
    fuzz("gguf", "m.gguf", &seeds);
}

#[test]
fn fuzz_safetensors() {
    let seeds = vec![
        crate::safetensors::tests::safetensors(
            &[("a.weight", "F16", &[4, 4]), ("b", "F32", &[3])],
            &[("format", "pt"), ("model_type", "bert")],
        ),
        crate::safetensors::tests::safetensors(&[("x", "U8", &[1])], &[]),
    ];
    fuzz("safetensors", "m.safetensors", &seeds);
}
