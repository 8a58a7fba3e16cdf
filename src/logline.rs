//! The plain-text log line, formatted without the general-purpose machinery.
//!
//! Every request writes one line ([`crate::observe`]) inside a span that carries its route, peer
//! and link, so at the request rates keydrop serves, formatting those lines is a measurable share
//! of a worker's time. `tracing-subscriber`'s default formatter writes every field name and value
//! through `core::fmt` (field names through a style wrapper even with colours off) and formats
//! the timestamp from scratch each time. This module writes the same text — byte for byte the
//! default `Full` format without colours: `<time> <LEVEL> <span>{<fields>}:… <target>: <fields>`
//! (the tests below hold the two side by side) — with the common cases done directly: plain
//! ASCII strings, integers and booleans are appended as they are, and the date and time of the
//! current second are formatted once per thread. Anything else (text with characters that need
//! escaping, `Debug` and `Display` values, records that came through the `log` crate) takes the
//! default path, so its text is unchanged.
//!
//! Used for the text format when stderr is not a terminal (the coloured form for a terminal and
//! `[log] format = "json"` stay with `tracing-subscriber`).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Field formatting for spans and events: `name=value` pairs separated by one space, the message
/// first and bare, as `tracing-subscriber`'s `DefaultFields` writes them without colours.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    /// Formats into this thread's scratch buffer and writes the text in one piece: a span's
    /// fields go into a new, empty `String`, which would otherwise grow — and reallocate — a few
    /// bytes at a time, once per request.
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        with_scratch(|buf| {
            pairs(Writer::new(buf), fields)?;
            writer.write_str(buf)
        })
    }

    /// Fields recorded after the span was created (`Span::record`): `tracing-subscriber`'s
    /// default — a space, then the fields. The joined text goes into a new string of its final
    /// size rather than growing the old one: `realloc` takes glibc's arena lock, which the other
    /// threads' frees contend for, where a small `malloc` and `free` use this thread's cache.
    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &tracing::span::Record<'_>) -> fmt::Result {
        with_scratch(|buf| {
            pairs(Writer::new(buf), fields)?;
            let old = &current.fields;
            let mut joined = String::with_capacity(old.len() + 1 + buf.len());
            joined.push_str(old);
            if !old.is_empty() {
                joined.push(' ');
            }
            joined.push_str(buf);
            current.fields = joined;
            Ok(())
        })
    }
}

thread_local! {
    /// Where [`PlainFields`] formats before writing.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `f` with this thread's scratch buffer, emptied — or with a new one if it is in use (not
/// expected: tracing does not dispatch an event logged from inside a subscriber; but a formatter
/// must not panic).
fn with_scratch<T>(f: impl FnOnce(&mut String) -> T) -> T {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            f(&mut buf)
        }
        Err(_) => f(&mut String::new()),
    })
}

fn pairs<R: RecordFields>(writer: Writer<'_>, fields: R) -> fmt::Result {
    let mut v = Pairs { writer, empty: true, result: Ok(()) };
    fields.record(&mut v);
    v.result
}

struct Pairs<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

impl Pairs<'_> {
    /// Writes `name=` (after a space if something came before); `false` for a field not shown.
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let sep = if std::mem::take(&mut self.empty) { "" } else { " " };
        self.result = self.writer.write_str(sep).and_then(|_| {
            if name == "message" {
                Ok(())
            } else {
                self.writer.write_str(name).and_then(|_| self.writer.write_char('='))
            }
        });
        self.result.is_ok()
    }

    fn push(&mut self, s: &str) {
        if self.result.is_ok() {
            self.result = self.writer.write_str(s);
        }
    }
}

/// Printable ASCII: the same under `Debug` (but for quotes and backslashes) and under the
/// message's escaping of control characters.
fn plain(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl Visit for Pairs<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        if !self.start(field) {
            return;
        }
        if message {
            self.result = Escaping(&mut self.writer).write_str(value);
        } else if plain(value) && !value.contains(['"', '\\']) {
            self.push("\"");
            self.push(value);
            self.push("\"");
        } else {
            self.result = write!(self.writer, "{value:?}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.push(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.push(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.push(if value { "true" } else { "false" });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let message = field.name() == "message";
        if !self.start(field) {
            return;
        }
        self.result = if message {
            // A formatted message (`info!("…")` comes as `fmt::Arguments`): its text, with
            // control characters escaped as it is written.
            write!(Escaping(&mut self.writer), "{value:?}")
        } else {
            write!(self.writer, "{value:?}")
        };
    }
}

/// Writes text with terminal control characters as escapes (ESC, BEL, BS, FF, DEL and the C1
/// range), as `tracing-subscriber` writes messages.
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if plain(s) {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                c if (0x80..=0x9f).contains(&(c as u32)) => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The event line: time, level, the spans from the root with their fields, target, fields.
#[derive(Debug, Default)]
pub struct PlainLine {
    /// For records that came through the `log` crate: the default formatter, which knows their
    /// metadata.
    fallback: Format<Full>,
}

impl<S, N> FormatEvent<S, N> for PlainLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if event.is_log() {
            return self.fallback.format_event(ctx, w, event);
        }
        let meta = event.metadata();
        NOW.with(|n| n.borrow_mut().write(&mut w, std::time::SystemTime::now()))?;
        w.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                w.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        w.write_char('{')?;
                        w.write_str(fields)?;
                        w.write_char('}')?;
                    }
                }
                w.write_char(':')?;
            }
            if seen {
                w.write_char(' ')?;
            }
        }
        w.write_str(meta.target())?;
        w.write_str(": ")?;
        ctx.format_fields(w.by_ref(), event)?;
        w.write_char('\n')
    }
}

thread_local! {
    static NOW: RefCell<Second> = RefCell::new(Second::default());
}

/// `YYYY-MM-DDTHH:MM:SS` of the last second this thread formatted.
#[derive(Default)]
struct Second {
    unix: Option<u64>,
    text: String,
}

impl Second {
    /// Writes `t` as `2026-12-05T02:37:33.452508Z` (UTC, microseconds).
    fn write(&mut self, w: &mut Writer<'_>, t: std::time::SystemTime) -> fmt::Result {
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        if self.unix != Some(secs) {
            let dt = chrono::DateTime::from_timestamp(secs as i64, 0).unwrap_or_default();
            self.text.clear();
            write!(self.text, "{}", dt.format("%Y-%m-%dT%H:%M:%S"))?;
            self.unix = Some(secs);
        }
        w.write_str(&self.text)?;
        // Six digits: the leading 1 of 1_000_000 + micros is dropped.
        let mut buf = itoa::Buffer::new();
        let digits = buf.format(1_000_000 + since.subsec_micros());
        w.write_char('.')?;
        w.write_str(&digits[1..])?;
        w.write_char('Z')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    impl Capture {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap().lines().map(str::to_owned).collect()
        }
    }

    /// Spans and events of every shape the server writes, and some it does not.
    fn emit() {
        // As the server writes it: the peer's text formatted once per connection.
        let peer = "127.0.0.1:50416".parse::<std::net::SocketAddr>().unwrap().to_string();
        let span = tracing::info_span!(
            "request",
            method = %http::Method::GET,
            route = "download",
            peer = %peer,
            link_id = tracing::field::Empty,
            principal = tracing::field::Empty,
        );
        span.record("link_id", "f1d814d98043aa23d503a2a9ed37716e");
        span.in_scope(|| {
            tracing::info!(status = 200u16, bytes = 4096u64, micros = 52u64, complete = true, "request");
            let inner = tracing::warn_span!("inner");
            inner.in_scope(|| tracing::warn!(r#type = "t", n = -7i64, min = i64::MIN, max = u64::MAX, "nested"));
        });
        span.record("principal", "bench");
        span.in_scope(|| tracing::info!("after a second record"));
        let err = std::io::Error::other("disk \"full\"");
        tracing::error!(
            error = %err,
            quoted = "a \"b\" \\ c",
            wide = "中文 한국어",
            ctl = "x\x1by\ttab",
            list = ?vec![1, 2],
            ratio = 0.5f64,
            "odd: {}, {}",
            "bell\x07",
            "中文"
        );
        tracing::info!(message = "esc \x1b[31m and \u{85} C1");
        tracing::debug!(flag = false, "no spans");
        tracing::info!(empty = "", "");
        // A value whose `Debug` logs while a span's fields are being formatted (into this
        // thread's scratch buffer), and fields recorded later.
        let noisy = tracing::info_span!("noisy", v = ?Loud, w = 3u64);
        noisy.record("w", 4u64);
        noisy.in_scope(|| tracing::info!("inside"));
    }

    struct Loud;

    impl std::fmt::Debug for Loud {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            tracing::info!(inner = "x", n = 1u64, "from a Debug impl");
            f.write_str("loud")
        }
    }

    fn run(plain: bool) -> Vec<String> {
        let out = Capture::default();
        let builder = tracing_subscriber::fmt().with_ansi(false).with_max_level(Level::TRACE).with_writer(out.clone());
        if plain {
            tracing::subscriber::with_default(
                builder.fmt_fields(PlainFields).event_format(PlainLine::default()).finish(),
                emit,
            );
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        out.lines()
    }

    #[test]
    fn lines_match_the_default_plain_format_after_the_timestamp() {
        let (ours, theirs) = (run(true), run(false));
        assert_eq!(ours.len(), 8, "{ours:#?}");
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a[27..], b[27..], "\nours:    {a}\ndefault: {b}");
        }
        assert!(ours[0].ends_with(
            "  INFO request{method=GET route=\"download\" peer=127.0.0.1:50416 link_id=\"f1d814d98043aa23d503a2a9ed37716e\"}: keydrop::logline::tests: request status=200 bytes=4096 micros=52 complete=true"
        ), "{}", ours[0]);
        // (The line the `Debug` impl logs is dropped: tracing does not dispatch from inside a
        // subscriber.)
        assert!(ours[7].ends_with("  INFO noisy{v=loud w=3 w=4}: keydrop::logline::tests: inside"), "{}", ours[7]);
    }

    #[test]
    fn the_timestamp_is_rfc3339_utc_with_microseconds_and_current() {
        let line = &run(true)[0];
        let stamp = &line[..27];
        let t = chrono::DateTime::parse_from_rfc3339(stamp).unwrap();
        assert!(stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.', "{stamp}");
        assert!((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds().abs() < 10, "{stamp}");
    }

    #[test]
    fn seconds_are_cached_but_each_line_gets_its_own_time() {
        let mut s = Second::default();
        let mut text = String::new();
        let base = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_900_000);
        for micros in [123u64, 999_999, 1_000_000, 2_000_007] {
            let t = base + std::time::Duration::from_micros(micros);
            text.clear();
            s.write(&mut Writer::new(&mut text), t).unwrap();
            let want = chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
            assert_eq!(text, want);
        }
    }
}
