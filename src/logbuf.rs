//! The log's lines gathered per request worker and written to stderr several at a time.
//!
//! Every request writes one `info` line ([`crate::observe`]). Written one by one, each line is a
//! `write(2)` of its own on the worker that served the request — a system call per request, as
//! much as the formatting of the line. Here a worker thread of the runtime appends its `info`,
//! `debug` and `trace` lines to a buffer of its own, which it writes out itself when:
//!
//! - it holds [`LIMIT`] bytes,
//! - its oldest line has waited [`MAX_AGE`] (checked as the next line comes),
//! - a `warn` or `error` line comes (written right after what was gathered before it),
//! - the thread stops (runtime shutdown).
//!
//! When the worker runs out of work and parks ([`worker_parked`], from tokio's `on_thread_park`)
//! it does not write: it hands its lines to one shared buffer, and the log's own thread writes
//! that out [`HANDOFF_DELAY`] after the first lines reach it, all workers' lines in one `write(2)`.
//! A loaded worker parks between bursts of work, many times a second, and a system call at each
//! park showed in its profile (README, "Benchmarks"). An idle server's lines still go out within
//! [`HANDOFF_DELAY`].
//!
//! Lines stay whole and in order within a thread; across threads they interleave by buffer, and
//! each line carries its own time. Any other thread (the store's writer, the blocking pool) and any
//! line the buffer cannot take writes straight to stderr. What a crash loses is what is gathered,
//! under [`LIMIT`] per worker plus what waits for the log's thread; the activity log, not this
//! log, is the record of downloads.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// A worker's gathered lines are written once they reach this many bytes.
pub const LIMIT: usize = 32 * 1024;
/// ... or once the oldest of them has waited this long.
pub const MAX_AGE: Duration = Duration::from_millis(100);
/// How long lines handed off at a park wait for others before the log's thread writes them.
pub const HANDOFF_DELAY: Duration = Duration::from_millis(5);

/// Lines handed off by parking workers, and the log's thread that writes them.
///
/// Two locks keep a thread's lines in order: `pending` is where workers append (held only for a
/// copy); `writing` is held by whoever writes handed-off lines out, from taking them until the
/// write returns — so a worker's urgent line, or its stop, which first writes out what is pending,
/// cannot overtake lines the log's thread already took.
struct Handoff {
    pending: Mutex<Vec<u8>>,
    ready: Condvar,
    writing: Mutex<Vec<u8>>,
}

impl Handoff {
    /// Appends `bytes`; wakes the log's thread if they are the first to wait.
    fn give(&'static self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let first = pending.is_empty();
        pending.extend_from_slice(bytes);
        drop(pending);
        if first {
            self.ready.notify_one();
        }
    }

    /// Writes out what is pending, in order after anything being written. Returns the `writing`
    /// lock held, so the caller's own lines follow.
    fn drain(&'static self) -> std::sync::MutexGuard<'static, Vec<u8>> {
        let mut out = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *out, &mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if !out.is_empty() {
            let _ = sink(&out);
            out.clear();
        }
        out
    }

    /// The log's thread: waits for lines, lets others join them for [`HANDOFF_DELAY`], writes.
    fn run(&'static self) {
        loop {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let pending = self.ready.wait_while(pending, |p| p.is_empty()).unwrap_or_else(|e| e.into_inner());
            drop(pending);
            std::thread::sleep(HANDOFF_DELAY);
            drop(self.drain());
        }
    }
}

/// The process's handoff, and its thread started on first use (`None` if it could not start:
/// workers then write at each park, as a thread that cannot hand off does).
fn handoff() -> Option<&'static Handoff> {
    static HANDOFF: OnceLock<Option<Handoff>> = OnceLock::new();
    HANDOFF
        .get_or_init(|| {
            let started = std::thread::Builder::new().name("keydrop-log".into()).spawn(|| {
                if let Some(h) = handoff() {
                    h.run();
                }
            });
            started.ok().map(|_| Handoff {
                pending: Mutex::default(),
                ready: Condvar::new(),
                writing: Mutex::default(),
            })
        })
        .as_ref()
}

/// One thread's gathered lines.
struct Gathered {
    bytes: Vec<u8>,
    since: Option<Instant>,
}

impl Gathered {
    /// Writes out what is handed off (this thread's earlier lines may be among it), then these.
    fn write_out(&mut self) {
        let order = handoff().map(Handoff::drain);
        if !self.bytes.is_empty() {
            let _ = sink(&self.bytes);
            self.bytes.clear();
        }
        drop(order);
        self.since = None;
    }

    /// Hands these lines to the log's thread (or, without one, writes them).
    fn hand_off(&mut self) {
        if !self.bytes.is_empty() {
            match handoff() {
                Some(h) => h.give(&self.bytes),
                None => drop(sink(&self.bytes)),
            }
            self.bytes.clear();
        }
        self.since = None;
    }
}

impl Drop for Gathered {
    fn drop(&mut self) {
        self.write_out();
    }
}

/// Where lines go: stderr (in unit tests, a buffer per thread that the tests read).
#[cfg(not(test))]
fn sink(bytes: &[u8]) -> std::io::Result<()> {
    let written = std::io::stderr().lock().write_all(bytes);
    crate::logfile::stderr_wrote(bytes.len());
    written
}

#[cfg(test)]
fn sink(bytes: &[u8]) -> std::io::Result<()> {
    if std::thread::current().name() == Some("keydrop-log") {
        tests::HANDED.lock().unwrap().extend_from_slice(bytes);
    } else {
        tests::SUNK.with(|s| s.borrow_mut().extend_from_slice(bytes));
    }
    Ok(())
}

thread_local! {
    /// `Some` on a thread whose lines are gathered.
    static GATHERED: RefCell<Option<Gathered>> = const { RefCell::new(None) };
}

/// A request worker has run out of work (tokio's `on_thread_park`): hands what it gathered to
/// the log's thread, and from now on gathers its lines. Only the runtime's workers park, so only
/// their lines are gathered; the blocking pool's threads, which may sit idle for seconds, write
/// straight through.
pub fn worker_parked() {
    gather_on_this_thread();
    let _ = GATHERED.try_with(|g| {
        if let Ok(mut g) = g.try_borrow_mut() {
            if let Some(g) = g.as_mut() {
                g.hand_off();
            }
        }
    });
}

/// From now on, this thread's lines below `warn` are gathered.
fn gather_on_this_thread() {
    GATHERED.with(|g| {
        if let Ok(mut g) = g.try_borrow_mut() {
            g.get_or_insert_with(|| Gathered { bytes: Vec::with_capacity(LIMIT + 1024), since: None });
        }
    });
}

/// Writes out what this thread has gathered, after every line handed off so far (tokio's
/// `on_thread_stop`: the last worker to stop leaves nothing behind).
pub fn flush_this_thread() {
    let _ = GATHERED.try_with(|g| {
        if let Ok(mut g) = g.try_borrow_mut() {
            if let Some(g) = g.as_mut() {
                g.write_out();
            }
        }
    });
}

/// The log's writer ([`MakeWriter`] for `tracing-subscriber`): see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

/// One line's writer: gathers or writes straight through.
pub struct Line {
    gather: bool,
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { gather: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        // `Level` orders by verbosity: WARN and ERROR are the levels at or above WARN.
        Line { gather: *meta.level() > Level::WARN }
    }
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let gather = self.gather;
        let gathered = GATHERED
            .try_with(|g| {
                let Ok(mut g) = g.try_borrow_mut() else { return false };
                let Some(g) = g.as_mut() else { return false };
                if !gather {
                    // An urgent line: what came before it goes first.
                    g.write_out();
                    return false;
                }
                let now = Instant::now();
                g.bytes.extend_from_slice(buf);
                let since = *g.since.get_or_insert(now);
                if g.bytes.len() >= LIMIT || now.duration_since(since) >= MAX_AGE {
                    g.write_out();
                }
                true
            })
            .unwrap_or(false);
        if !gathered {
            sink(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// What this thread's lines wrote out, in order.
        pub(super) static SUNK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// What the log's thread wrote out, in order.
    pub(super) static HANDED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    fn written() -> String {
        SUNK.with(|s| String::from_utf8(s.borrow().clone()).unwrap())
    }

    fn handed() -> String {
        String::from_utf8(HANDED.lock().unwrap().clone()).unwrap()
    }

    /// Waits (up to 5 s) until the log's thread has written `text`.
    fn handed_eventually(text: &str) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if handed().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Runs `f` on a thread of its own (each test starts with that thread's buffers empty), one
    /// test at a time: the handoff is shared by the process.
    fn on_a_new_thread(f: impl FnOnce() + Send + 'static) {
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(f).join().unwrap();
    }

    fn line(gather: bool, text: &str) {
        Line { gather }.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_thread_that_never_parked_writes_through_and_a_worker_hands_its_lines_off_when_it_parks() {
        on_a_new_thread(|| {
            line(true, "through\n");
            assert_eq!(written(), "through\n", "never parked: written at once");
            worker_parked();
            line(true, "held 1 (park test)\n");
            line(true, "held 2 (park test)\n");
            assert_eq!(written(), "through\n", "marked: held");
            worker_parked();
            assert_eq!(written(), "through\n", "a park writes nothing itself");
            assert!(
                handed_eventually("held 1 (park test)\nheld 2 (park test)\n"),
                "the log's thread writes them, in order: {:?}",
                handed()
            );
        });
    }

    #[test]
    fn a_warning_comes_after_the_lines_its_thread_handed_off_before_it() {
        on_a_new_thread(|| {
            worker_parked();
            line(true, "handed (warn test)\n");
            worker_parked();
            line(true, "gathered (warn test)\n");
            line(false, "warn (warn test)\n");
            let mine = written();
            if handed().contains("handed (warn test)") {
                // The log's thread took it first: already written, before the warning.
                assert_eq!(mine, "gathered (warn test)\nwarn (warn test)\n");
            } else {
                assert_eq!(mine, "handed (warn test)\ngathered (warn test)\nwarn (warn test)\n");
            }
        });
    }

    #[test]
    fn a_stopping_worker_leaves_nothing_handed_off_behind() {
        on_a_new_thread(|| {
            worker_parked();
            line(true, "handed (stop test)\n");
            worker_parked();
            line(true, "last (stop test)\n");
            flush_this_thread();
            let mine = written();
            assert!(mine.ends_with("last (stop test)\n"), "{mine:?}");
            assert!(
                mine.contains("handed (stop test)") || handed().contains("handed (stop test)"),
                "written by the stop or by the log's thread before it"
            );
        });
    }

    #[test]
    fn a_warning_comes_after_what_was_gathered_before_it() {
        on_a_new_thread(|| {
            gather_on_this_thread();
            line(true, "info\n");
            line(false, "warn\n");
            assert_eq!(written(), "info\nwarn\n");
        });
    }

    #[test]
    fn the_limit_and_the_age_bound_what_is_held() {
        on_a_new_thread(|| {
            gather_on_this_thread();
            let row = format!("{}\n", "x".repeat(999));
            for _ in 0..LIMIT / 1000 - 1 {
                line(true, &row);
            }
            assert_eq!(written(), "", "below the limit: held");
            line(true, &row);
            line(true, &row);
            assert_eq!(written().len(), LIMIT / 1000 * 1000 + 1000, "at the limit: all written out");
            SUNK.with(|s| s.borrow_mut().clear());
            line(true, "old\n");
            std::thread::sleep(MAX_AGE + Duration::from_millis(10));
            assert_eq!(written(), "");
            line(true, "new\n");
            assert_eq!(written(), "old\nnew\n", "a line that finds an old one waiting writes both");
        });
    }

    /// Through `tracing-subscriber` as the server uses it: `info` lines wait, a `warn` line
    /// writes them out and itself.
    #[test]
    fn through_the_subscriber_info_waits_and_warn_goes_out_at_once() {
        on_a_new_thread(|| {
            gather_on_this_thread();
            let subscriber = tracing_subscriber::fmt().with_ansi(false).without_time().with_writer(Stderr).finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!("one request");
                tracing::debug!("not shown at the default filter");
                assert_eq!(written(), "", "an info line waits");
                tracing::warn!("something to see now");
            });
            let out = written();
            let (info, warn) = (out.find("one request").unwrap(), out.find("something to see now").unwrap());
            assert!(info < warn, "{out}");
        });
    }
}
