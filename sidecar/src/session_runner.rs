//! Who runs a model's session, and on which thread.
//!
//! ort's `Session::run` takes `&mut self`, so one model's requests run one
//! after another. A request that finds the session idle, with nobody
//! waiting, runs it on the thread it already holds (a tokio worker: no hop
//! to another thread and back, whose two wake-ups cost this VM tens of
//! microseconds). Requests that would wait behind another are queued to
//! the model's own runner thread and awaited without holding a thread;
//! while the queue is not empty that thread takes them one after another,
//! so under load the session keeps running on one thread whose caches
//! hold the model's weights, and the workers are left the transport.
//! Once a request had to wait, those that follow go to the runner thread
//! too for [`STAY_QUEUED`], idle session or not: with two requests in
//! flight the queue empties now and then for a moment, and running the
//! next on a worker then moved the session between threads again (on
//! this VM the run fell into alternating for seconds at a time, ~10 %
//! of batch-64 throughput).
//!
//! Architecture Invariant: a queued job holds what its caller handed it
//! (the inputs and their input-budget permit) until its turn comes or the
//! model is unloaded, so a caller that gives up (a cancelled request)
//! does not release budget that queued memory still takes; at its turn a
//! job whose caller is gone is dropped unrun.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ort::session::Session;

/// A queued run, and whether its caller stopped waiting for it.
struct Job {
    run: Box<dyn FnOnce(&mut Session) + Send>,
    abandoned: Arc<AtomicBool>,
}

/// Runs one model may have waiting at once; past it a request is refused
/// (RESOURCE_EXHAUSTED) rather than queued, after the queue was rid of
/// runs nobody waits for any more. The input budget bounds the bytes
/// queued inputs hold; this bounds their number (inputs of no bytes, a
/// flood of requests cancelled while queued).
pub const MAX_QUEUED: usize = 1024;

/// Marks its run abandoned when the caller's future is dropped before the
/// answer came.
struct WaitGuard(Arc<AtomicBool>);

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// How long after a request last had to wait the next ones are queued to
/// the runner thread even when the session is idle.
pub const STAY_QUEUED: Duration = Duration::from_millis(10);

/// Why a queued run gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("the model was unloaded before the request ran")]
    Unloaded,
    #[error("ONNX Runtime panicked while running the request")]
    Panicked,
    #[error("the model has {0} requests waiting already; try again later")]
    QueueFull(usize),
}

struct Queue {
    /// A run is on the session now (inline or on the runner thread).
    running: bool,
    jobs: VecDeque<Job>,
    /// When a request last found the session taken or others waiting.
    last_wait: Option<Instant>,
    /// The model is gone: the runner thread ends, queued jobs are dropped.
    closed: bool,
}

struct Shared {
    session: Mutex<Session>,
    queue: Mutex<Queue>,
    /// The runner thread waits here for a job it may start.
    ready: Condvar,
    /// How long after a wait runs stay queued ([`STAY_QUEUED`]).
    stay_queued: Duration,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the session free, waking the runner thread when jobs wait.
    fn release(&self) {
        let mut queue = self.queue();
        queue.running = false;
        if !queue.jobs.is_empty() {
            self.ready.notify_one();
        }
    }
}

/// Ends an inline run: the session is free again even when the run
/// panicked.
struct InlineRun<'a>(&'a Shared);

impl Drop for InlineRun<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A model's session and the thread that runs its queued requests.
pub struct SessionRunner {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.shared.queue();
        f.debug_struct("SessionRunner")
            .field("running", &queue.running)
            .field("queued", &queue.jobs.len())
            .finish()
    }
}

impl SessionRunner {
    /// Takes `session` and starts its runner thread.
    pub fn start(session: Session) -> std::io::Result<SessionRunner> {
        Self::start_with(session, STAY_QUEUED)
    }

    /// As [`SessionRunner::start`], runs staying queued for `stay_queued`
    /// after a wait.
    pub fn start_with(session: Session, stay_queued: Duration) -> std::io::Result<SessionRunner> {
        let shared = Arc::new(Shared {
            session: Mutex::new(session),
            queue: Mutex::new(Queue {
                running: false,
                jobs: VecDeque::new(),
                last_wait: None,
                closed: false,
            }),
            ready: Condvar::new(),
            stay_queued,
        });
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("model-runner".into())
            .spawn(move || run_queued(&theirs))?;
        Ok(SessionRunner { shared })
    }

    /// Runs `f` on the session on this thread, waiting for the session if
    /// another run has it (for callers that are not async).
    pub fn run_here<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        f(&mut self.shared.session())
    }

    /// Runs `f` on the session: here when the session is idle, nobody
    /// waits and nobody had to in the last [`STAY_QUEUED`], else on the
    /// runner thread after those queued before it
    /// (awaited without holding a thread). `f` and what it holds are
    /// dropped once it ran, or unrun when the model is unloaded first or
    /// the caller stopped waiting before its turn.
    pub async fn run<R, F>(&self, f: F) -> Result<R, RunError>
    where
        F: FnOnce(&mut Session) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let abandoned = {
            let mut queue = self.shared.queue();
            if queue.closed {
                return Err(RunError::Unloaded);
            }
            let now = Instant::now();
            let idle = !queue.running && queue.jobs.is_empty();
            if !idle {
                queue.last_wait = Some(now);
            }
            let under_load = queue
                .last_wait
                .is_some_and(|at| now.saturating_duration_since(at) < self.shared.stay_queued);
            if idle && !under_load {
                queue.running = true;
                drop(queue);
                let _run = InlineRun(&self.shared);
                let mut session = self.shared.session();
                return catch_unwind(AssertUnwindSafe(|| f(&mut session)))
                    .map_err(|_| RunError::Panicked);
            }
            if queue.jobs.len() >= MAX_QUEUED {
                queue
                    .jobs
                    .retain(|job| !job.abandoned.load(Ordering::Acquire));
                if queue.jobs.len() >= MAX_QUEUED {
                    return Err(RunError::QueueFull(queue.jobs.len()));
                }
            }
            let abandoned = Arc::new(AtomicBool::new(false));
            let gone = Arc::clone(&abandoned);
            queue.jobs.push_back(Job {
                run: Box::new(move |session: &mut Session| {
                    // A caller that gave up (a cancelled request) is not run
                    // for: what it held goes now, and a flood of requests
                    // cancelled while queued costs no inference.
                    if !gone.load(Ordering::Acquire) && !answer.is_closed() {
                        let _ = answer.send(f(session));
                    }
                }),
                abandoned: Arc::clone(&abandoned),
            });
            if !queue.running {
                self.shared.ready.notify_one();
            }
            abandoned
        };
        let _waiting = WaitGuard(abandoned);
        // A job that panicked drops its sender unanswered, as does an
        // unloaded model's queue.
        answered.await.map_err(|_| {
            if self.shared.queue().closed {
                RunError::Unloaded
            } else {
                RunError::Panicked
            }
        })
    }

    /// How many runs wait for the session.
    pub fn queued(&self) -> usize {
        self.shared.queue().jobs.len()
    }

    /// Whether a run is on the session now or waiting for it.
    pub fn is_busy(&self) -> bool {
        let queue = self.shared.queue();
        queue.running || !queue.jobs.is_empty()
    }
}

impl Drop for SessionRunner {
    fn drop(&mut self) {
        let mut queue = self.shared.queue();
        queue.closed = true;
        queue.jobs.clear();
        self.shared.ready.notify_all();
    }
}

/// The runner thread: takes the next job whenever the session is free,
/// until the model is closed.
fn run_queued(shared: &Shared) {
    let mut queue = shared.queue();
    loop {
        if queue.closed {
            return;
        }
        if !queue.running {
            if let Some(job) = queue.jobs.pop_front() {
                queue.running = true;
                drop(queue);
                {
                    let mut session = shared.session();
                    // A panic drops the job's sender: its caller gets
                    // Panicked, the thread goes on with the next.
                    let _ = catch_unwind(AssertUnwindSafe(|| (job.run)(&mut session)));
                }
                queue = shared.queue();
                queue.running = false;
                continue;
            }
        }
        queue = shared
            .ready
            .wait(queue)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(test)]
#[path = "session_runner_tests.rs"]
mod tests;
