//! A small seeded random sequence (xorshift64) for fault and history
//! tests: a failing run prints its seed, and the seed replays it.

#[derive(Clone, Debug)]
pub struct Xorshift(u64);

impl Xorshift {
    /// A sequence from `seed` (0 is made 1: xorshift never leaves 0).
    pub fn new(seed: u64) -> Xorshift {
        Xorshift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
