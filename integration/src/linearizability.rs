//! A linearizability checker for histories recorded against a replicated
//! object: the Wing & Gong search with Lowe's memoisation, as Porcupine
//! and Knossos do it.
//!
//! A history is the operations clients ran, each with the moment it was
//! called, the moment its answer came back (none: it never came, the
//! client gave up or the node died) and the answer. It is linearizable if
//! every operation can be given one instant between its call and its
//! return, such that running them one at a time in that order, against the
//! sequential [`Model`], gives every answer that was seen. An operation
//! that never returned may take effect at any instant after its call, or
//! not at all (it is placed after everything else). The model decides
//! what an unknown answer allows.
//!
//! The search walks the calls and returns in time order. At a call it
//! tries to linearize that operation now (the model accepts its answer);
//! at a return whose operation is not yet placed it backtracks. The set of
//! placed operations and the model state reached are remembered, so the
//! same configuration is never explored twice.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

/// The sequential specification of the object.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    type Output: Debug;

    fn init(&self) -> Self::State;

    /// The state after running `input` in `state` and answering `output`,
    /// or `None` if the object could not have answered that.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Operation<I, O> {
    /// Who ran it (for the report only).
    pub client: usize,
    pub input: I,
    pub output: O,
    /// When it was called (any monotonic clock, the same for all).
    pub call: u64,
    /// When its answer came back; `None`: never.
    pub ret: Option<u64>,
}

/// What the check found.
#[derive(Debug)]
pub enum Verdict<S> {
    Linearizable,
    /// No order explains the answers. `placed` is the longest prefix of a
    /// linearization the search found (operation indices, in order), and
    /// `state` the model state after it; `blocking` is the operation whose
    /// return came before it could be placed after that prefix.
    Violation {
        placed: Vec<usize>,
        state: S,
        blocking: usize,
    },
    /// The search took more than its budget of steps: no answer either way.
    Undecided {
        steps: u64,
    },
}

impl<S> Verdict<S> {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Call,
    Return,
}

/// A doubly linked list of calls and returns in time order, whose
/// operations are taken out when placed and put back when the search
/// backtracks (in reverse order, so the links come back as they were).
struct Events {
    kind: Vec<Kind>,
    op: Vec<usize>,
    /// For a call, the index of its return event.
    matching: Vec<usize>,
    prev: Vec<usize>,
    next: Vec<usize>,
}

/// Index of the list's head sentinel; `NONE` ends it.
const HEAD: usize = 0;
const NONE: usize = usize::MAX;

impl Events {
    fn new<I, O>(history: &[Operation<I, O>]) -> Events {
        // (time, calls before returns at the same instant: touching
        // operations count as concurrent, the lenient reading), op.
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(history.len() * 2);
        for (i, op) in history.iter().enumerate() {
            order.push((op.call, 0, i));
            order.push((op.ret.unwrap_or(u64::MAX), 1, i));
        }
        order.sort();
        let n = order.len() + 1;
        let mut ev = Events {
            kind: vec![Kind::Call; n],
            op: vec![0; n],
            matching: vec![NONE; n],
            prev: vec![NONE; n],
            next: vec![NONE; n],
        };
        let mut call_at = vec![NONE; history.len()];
        for (k, &(_, is_return, op)) in order.iter().enumerate() {
            let at = k + 1;
            ev.op[at] = op;
            ev.prev[at] = at - 1;
            ev.next[at - 1] = at;
            if is_return == 1 {
                ev.kind[at] = Kind::Return;
                ev.matching[call_at[op]] = at;
            } else {
                call_at[op] = at;
            }
        }
        ev
    }

    fn lift(&mut self, call: usize) {
        for at in [call, self.matching[call]] {
            let (p, n) = (self.prev[at], self.next[at]);
            self.next[p] = n;
            if n != NONE {
                self.prev[n] = p;
            }
        }
    }

    fn unlift(&mut self, call: usize) {
        for at in [self.matching[call], call] {
            let (p, n) = (self.prev[at], self.next[at]);
            self.next[p] = at;
            if n != NONE {
                self.prev[n] = at;
            }
        }
    }
}

/// Checks `history` against `model`, exploring at most `budget` steps.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> Verdict<M::State> {
    let mut events = Events::new(history);
    let words = history.len().div_ceil(64);
    let mut placed = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut longest: (Vec<usize>, M::State) = (Vec::new(), state.clone());
    let mut blocking = 0;
    let mut at = events.next[HEAD];
    let mut steps = 0u64;
    while events.next[HEAD] != NONE {
        steps += 1;
        if steps > budget {
            return Verdict::Undecided { steps };
        }
        match events.kind[at] {
            Kind::Call => {
                let op = &history[events.op[at]];
                let next_state = model.step(&state, &op.input, &op.output);
                let fresh = next_state.and_then(|s| {
                    let mut p = placed.clone();
                    p[events.op[at] / 64] |= 1 << (events.op[at] % 64);
                    seen.insert((p, s.clone())).then_some(s)
                });
                match fresh {
                    Some(s) => {
                        placed[events.op[at] / 64] |= 1 << (events.op[at] % 64);
                        stack.push((at, std::mem::replace(&mut state, s)));
                        events.lift(at);
                        if stack.len() > longest.0.len() {
                            longest = (
                                stack.iter().map(|(c, _)| events.op[*c]).collect(),
                                state.clone(),
                            );
                        }
                        at = events.next[HEAD];
                    }
                    None => at = events.next[at],
                }
            }
            Kind::Return => {
                if stack.len() == longest.0.len() {
                    blocking = events.op[at];
                }
                let Some((call, before)) = stack.pop() else {
                    return Verdict::Violation {
                        placed: longest.0,
                        state: longest.1,
                        blocking,
                    };
                };
                placed[events.op[call] / 64] &= !(1 << (events.op[call] % 64));
                state = before;
                events.unlift(call);
                at = events.next[call];
            }
        }
    }
    Verdict::Linearizable
}

/// A readable account of a violation: the operations around the point
/// where the search got stuck, in call order.
pub fn describe_violation<I: Debug, O: Debug, S: Debug>(
    history: &[Operation<I, O>],
    verdict: &Verdict<S>,
) -> String {
    let Verdict::Violation {
        placed,
        state,
        blocking,
    } = verdict
    else {
        return format!("{verdict:?}");
    };
    let mut out = format!(
        "not linearizable: {} of {} operations placed; then the state was {state:?}\n\
         and this operation could not be placed before it returned:\n  {:?}\n\
         operations not placed that overlap it:\n",
        placed.len(),
        history.len(),
        history[*blocking],
    );
    let b = &history[*blocking];
    let placed: HashSet<usize> = placed.iter().copied().collect();
    for (i, op) in history.iter().enumerate() {
        let overlaps = op.call <= b.ret.unwrap_or(u64::MAX) && b.call <= op.ret.unwrap_or(u64::MAX);
        if overlaps && !placed.contains(&i) && i != *blocking {
            out.push_str(&format!("  {op:?}\n"));
        }
    }
    out
}

#[cfg(test)]
#[path = "linearizability_tests.rs"]
mod tests;
