//! The workloads: syscall storms run as fast as the host goes.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// openat + close of one ordinary file in a loop, on `threads` threads; ops/s.
pub fn open_storm(path: &str, threads: usize, dur: Duration) -> f64 {
    let path = CString::new(path).expect("path");
    run_threads(threads, dur, move |stop, count| {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..64 {
                // SAFETY: a valid NUL-terminated path; the fd is closed at once.
                let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
                if fd >= 0 {
                    unsafe { libc::close(fd) };
                }
            }
            n += 64;
        }
        count.fetch_add(n, Ordering::Relaxed);
    })
}

/// `dd` of `path` in 4 KiB reads (open, read to the end, close, again) on
/// `threads` threads; reads/s. Every open is one the content check
/// watches; its first read at offset 0 is checked, the rest pay the watch
/// lookup.
pub fn read_storm(path: &str, threads: usize, dur: Duration) -> f64 {
    let path = CString::new(path).expect("path");
    run_threads(threads, dur, move |stop, count| {
        let mut buf = vec![0u8; 4096];
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: a valid NUL-terminated path; the fd is closed below.
            let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
            if fd < 0 {
                break;
            }
            loop {
                // SAFETY: buf is valid for its length.
                let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if got <= 0 {
                    break;
                }
                n += 1;
                if n.is_multiple_of(4096) && stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            unsafe { libc::close(fd) };
        }
        count.fetch_add(n, Ordering::Relaxed);
    })
}

/// write() of 64 bytes to /dev/null in a loop, on `threads` threads;
/// writes/s. What every write pays for the stream check's lookup.
pub fn write_storm(threads: usize, dur: Duration) -> f64 {
    run_threads(threads, dur, |stop, count| {
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .expect("/dev/null");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&null);
        let buf = [b'z'; 64];
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..64 {
                // SAFETY: buf is valid for its length; fd is open.
                unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
            }
            n += 64;
        }
        count.fetch_add(n, Ordering::Relaxed);
    })
}

/// fork+exec of /bin/true, waited for, on `threads` threads; execs/s.
pub fn exec_storm(threads: usize, dur: Duration) -> f64 {
    run_threads(threads, dur, |stop, count| {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let ok = std::process::Command::new("/bin/true")
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                n += 1;
            }
        }
        count.fetch_add(n, Ordering::Relaxed);
    })
}

/// UDP datagrams sent (send() on a connected socket, to a port that is
/// not DNS) on `threads` threads; sends/s. The cost every send pays for the
/// DNS sensor's check.
pub fn send_storm(threads: usize, dur: Duration) -> f64 {
    run_threads(threads, dur, |stop, count| {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp sink");
        socket
            .connect(sink.local_addr().expect("sink address"))
            .expect("connect");
        sink.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 64];
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..64 {
                let _ = socket.send(b"not a dns question");
            }
            while sink.recv(&mut buf).is_ok() {}
            n += 64;
        }
        count.fetch_add(n, Ordering::Relaxed);
    })
}

fn run_threads<F>(threads: usize, dur: Duration, work: F) -> f64
where
    F: Fn(&AtomicBool, &AtomicU64) + Send + Sync + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let work = Arc::new(work);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, count, work) = (stop.clone(), count.clone(), work.clone());
            std::thread::spawn(move || work(&stop, &count))
        })
        .collect();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
