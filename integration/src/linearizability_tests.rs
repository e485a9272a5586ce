use super::*;
use crate::seeded_random::Xorshift;

/// A register holding one integer, 0 at first.
struct Register;

#[derive(Debug, Clone, Copy)]
enum RegIn {
    Write(u32),
    Read,
}

/// `None`: the answer never came.
#[derive(Debug, Clone, Copy)]
enum RegOut {
    Done,
    Value(u32),
    Unknown,
}

impl Model for Register {
    type State = u32;
    type Input = RegIn;
    type Output = RegOut;
    fn init(&self) -> u32 {
        0
    }
    fn step(&self, s: &u32, input: &RegIn, output: &RegOut) -> Option<u32> {
        match (input, output) {
            (RegIn::Write(v), RegOut::Done | RegOut::Unknown) => Some(*v),
            (RegIn::Read, RegOut::Value(v)) => (v == s).then_some(*s),
            (RegIn::Read, RegOut::Unknown) => Some(*s),
            _ => None,
        }
    }
}

fn op(
    client: usize,
    input: RegIn,
    output: RegOut,
    call: u64,
    ret: u64,
) -> Operation<RegIn, RegOut> {
    Operation {
        client,
        input,
        output,
        call,
        ret: Some(ret),
    }
}

const BUDGET: u64 = 10_000_000;

#[test]
fn concurrent_write_and_reads_either_side_are_linearizable() {
    // Porcupine's first example: a write of 100 overlapping a read of 100
    // and a read of 0; both orders of the reads around the write work.
    let h = vec![
        op(0, RegIn::Write(100), RegOut::Done, 0, 100),
        op(1, RegIn::Read, RegOut::Value(100), 25, 75),
        op(2, RegIn::Read, RegOut::Value(0), 30, 60),
    ];
    assert!(check(&Register, &h, BUDGET).is_linearizable());
}

#[test]
fn a_read_that_goes_back_in_time_is_a_violation() {
    // The read of 0 starts after a read of 100 ended: the write took
    // effect before, so 0 can no longer be seen.
    let h = vec![
        op(0, RegIn::Write(100), RegOut::Done, 0, 100),
        op(1, RegIn::Read, RegOut::Value(100), 5, 25),
        op(2, RegIn::Read, RegOut::Value(0), 30, 60),
    ];
    let verdict = check(&Register, &h, BUDGET);
    let Verdict::Violation {
        placed, blocking, ..
    } = &verdict
    else {
        panic!("{verdict:?}")
    };
    assert_eq!(*blocking, 2, "{placed:?}");
    assert!(describe_violation(&h, &verdict).contains("Value(0)"));
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_a_violation() {
    let h = vec![
        op(0, RegIn::Write(1), RegOut::Done, 0, 10),
        op(1, RegIn::Read, RegOut::Value(0), 20, 30),
    ];
    assert!(!check(&Register, &h, BUDGET).is_linearizable());
}

#[test]
fn a_write_with_no_answer_may_land_late_or_never() {
    let lost = Operation {
        client: 0,
        input: RegIn::Write(7),
        output: RegOut::Unknown,
        call: 0,
        ret: None,
    };
    // Seen long after the client gave up: it landed late.
    let late = vec![
        lost.clone(),
        op(1, RegIn::Read, RegOut::Value(0), 10, 20),
        op(1, RegIn::Read, RegOut::Value(7), 100, 110),
    ];
    assert!(check(&Register, &late, BUDGET).is_linearizable());
    // Never seen: it never landed.
    let never = vec![lost.clone(), op(1, RegIn::Read, RegOut::Value(0), 100, 110)];
    assert!(check(&Register, &never, BUDGET).is_linearizable());
    // But once seen, it cannot be unseen.
    let flicker = vec![
        lost,
        op(1, RegIn::Read, RegOut::Value(7), 10, 20),
        op(1, RegIn::Read, RegOut::Value(0), 30, 40),
    ];
    assert!(!check(&Register, &flicker, BUDGET).is_linearizable());
}

#[test]
fn a_value_nobody_wrote_is_a_violation() {
    let h = vec![
        op(0, RegIn::Write(1), RegOut::Done, 0, 10),
        op(1, RegIn::Read, RegOut::Value(2), 0, 10),
    ];
    assert!(!check(&Register, &h, BUDGET).is_linearizable());
}

#[test]
fn two_readers_may_not_see_two_concurrent_writes_in_opposite_orders() {
    // Writes of 1 and 2 overlap; reader A sees 1 then 2, reader B sees 2
    // then 1, with B's reads both inside A's gap: no single order of the
    // writes explains both.
    let h = vec![
        op(0, RegIn::Write(1), RegOut::Done, 0, 100),
        op(1, RegIn::Write(2), RegOut::Done, 0, 100),
        op(2, RegIn::Read, RegOut::Value(1), 10, 20),
        op(2, RegIn::Read, RegOut::Value(2), 80, 90),
        op(3, RegIn::Read, RegOut::Value(2), 30, 40),
        op(3, RegIn::Read, RegOut::Value(1), 50, 60),
    ];
    assert!(!check(&Register, &h, BUDGET).is_linearizable());
    // One reader alone flipping 1, 2 is fine.
    assert!(check(&Register, &h[..4], BUDGET).is_linearizable());
}

#[test]
fn a_tiny_budget_gives_no_answer_rather_than_a_wrong_one() {
    let h: Vec<_> = (0..50)
        .map(|i| op(i, RegIn::Write(i as u32), RegOut::Done, 0, 1000))
        .chain([op(99, RegIn::Read, RegOut::Value(1000), 2000, 2001)])
        .collect();
    assert!(matches!(
        check(&Register, &h, 100),
        Verdict::Undecided { .. }
    ));
}

/// A history of `clients` clients against a real (atomic) register: each
/// operation takes effect at a random instant inside its interval, so the
/// history is linearizable by construction; some writes lose their answer.
fn random_linearizable_history(
    seed: u64,
    clients: usize,
    ops: usize,
) -> Vec<Operation<RegIn, RegOut>> {
    let mut rng = Xorshift::new(seed);
    // Plan each operation's interval and effect instant first.
    let mut planned = Vec::new();
    let mut clock = vec![0u64; clients];
    for k in 0..ops {
        let c = k % clients;
        let call = clock[c] + rng.below(5);
        let effect = call + 1 + rng.below(20);
        let ret = effect + 1 + rng.below(20);
        clock[c] = ret + 1;
        let input = if rng.below(2) == 0 {
            RegIn::Write(1 + rng.below(5) as u32)
        } else {
            RegIn::Read
        };
        planned.push((effect, c, input, call, ret));
    }
    planned.sort_by_key(|p| p.0);
    let mut value = 0;
    planned
        .into_iter()
        .map(|(_, c, input, call, ret)| {
            let output = match input {
                RegIn::Write(v) => {
                    value = v;
                    RegOut::Done
                }
                RegIn::Read => RegOut::Value(value),
            };
            let lost = matches!(input, RegIn::Write(_)) && rng.below(40) == 0;
            Operation {
                client: c,
                input,
                output: if lost { RegOut::Unknown } else { output },
                call,
                ret: (!lost).then_some(ret),
            }
        })
        .collect()
}

#[test]
fn random_histories_of_an_atomic_register_pass_and_tampered_ones_fail() {
    for seed in 1..=200u64 {
        let mut h = random_linearizable_history(seed * 7919, 4, 120);
        let verdict = check(&Register, &h, BUDGET);
        assert!(
            verdict.is_linearizable(),
            "seed {seed}: {}",
            describe_violation(&h, &verdict)
        );
        // A read answering a value nobody wrote cannot be explained.
        let read = h
            .iter()
            .position(|o| matches!(o.output, RegOut::Value(_)))
            .unwrap();
        h[read].output = RegOut::Value(99);
        assert!(
            !check(&Register, &h, BUDGET).is_linearizable(),
            "seed {seed}: tampered read {read} passed"
        );
    }
}
