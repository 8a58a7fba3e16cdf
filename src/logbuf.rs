//! The log's lines gathered per request worker and written to stderr several at a time.
//!
//! Every request writes one `info` line ([`crate::observe`]). Written one by one, each line is a
//! `write(2)` of its own on the worker that served the request — a system call per request, as
//! much as the formatting of the line. Here a worker thread of the runtime appends its `info`,
//! `debug` and `trace` lines to a buffer of its own, which goes out in one write when:
//!
//! - it holds [`LIMIT`] bytes,
//! - its oldest line has waited [`MAX_AGE`] (checked as the next line comes),
//! - the worker runs out of work and parks ([`worker_parked`], from tokio's `on_thread_park`),
//!   so an idle server's lines are never held back,
//! - a `warn` or `error` line comes (written right after what was gathered before it),
//! - the thread stops (runtime shutdown).
//!
//! Lines stay whole and in order within a thread; across threads they interleave by buffer, and
//! each line carries its own time. Any other thread (the store's writer, the blocking pool) and any
//! line the buffer cannot take writes straight to stderr. What a crash loses is what is gathered,
//! under [`LIMIT`] per worker; the activity log, not this log, is the record of downloads.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, Instant};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// A worker's gathered lines are written once they reach this many bytes.
pub const LIMIT: usize = 32 * 1024;
/// ... or once the oldest of them has waited this long.
pub const MAX_AGE: Duration = Duration::from_millis(100);

/// One thread's gathered lines.
struct Gathered {
    bytes: Vec<u8>,
    since: Option<Instant>,
}

impl Gathered {
    fn write_out(&mut self) {
        if !self.bytes.is_empty() {
            let _ = sink(&self.bytes);
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
    tests::SUNK.with(|s| s.borrow_mut().extend_from_slice(bytes));
    Ok(())
}

thread_local! {
    /// `Some` on a thread whose lines are gathered.
    static GATHERED: RefCell<Option<Gathered>> = const { RefCell::new(None) };
}

/// A request worker has run out of work (tokio's `on_thread_park`): writes out what it gathered,
/// and from now on gathers its lines. Only the runtime's workers park, so only their lines are
/// gathered; the blocking pool's threads, which may sit idle for seconds, write straight through.
pub fn worker_parked() {
    gather_on_this_thread();
    flush_this_thread();
}

/// From now on, this thread's lines below `warn` are gathered.
fn gather_on_this_thread() {
    GATHERED.with(|g| {
        if let Ok(mut g) = g.try_borrow_mut() {
            g.get_or_insert_with(|| Gathered { bytes: Vec::with_capacity(LIMIT + 1024), since: None });
        }
    });
}

/// Writes out what this thread has gathered (also from tokio's `on_thread_stop`).
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

    fn written() -> String {
        SUNK.with(|s| String::from_utf8(s.borrow().clone()).unwrap())
    }

    /// Runs `f` on a thread of its own (each test starts with that thread's buffers empty).
    fn on_a_new_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    fn line(gather: bool, text: &str) {
        Line { gather }.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_thread_that_never_parked_writes_through_and_a_worker_holds_its_lines_until_it_parks_again() {
        on_a_new_thread(|| {
            line(true, "through\n");
            assert_eq!(written(), "through\n", "never parked: written at once");
            worker_parked();
            line(true, "held 1\n");
            line(true, "held 2\n");
            assert_eq!(written(), "through\n", "marked: held");
            worker_parked();
            assert_eq!(written(), "through\nheld 1\nheld 2\n", "written out, in order, at the park");
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
