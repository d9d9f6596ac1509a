//! The log writer: each event is formatted on the thread that logs it and appended to a shared
//! buffer under one short lock; a writer thread takes the whole buffer, redacts it and writes it
//! to stderr. A quiet gateway's writer sleeps until a line arrives and writes it at once; a busy
//! one's writes what gathered every 10 ms, woken by its timer rather than by the lines: waking it
//! for each line that found the buffer empty cost a context switch every request or two under
//! load (the writer empties the buffer faster than requests fill it), and waking it every
//! millisecond still cost the busy process about 3% of its CPU in wake-ups and small writes.
//! No request waits on stderr or on redaction, and no line waits much more than 10 ms (past
//! 256 KiB gathered, the writer is woken at once). Nothing is dropped: past 8 MiB unwritten, a
//! logger writes the buffer out itself.
//!
//! Lines formatted by `tracing` are redacted whole on the writer thread. The access line, built
//! by `access` with each request-supplied field redacted on its own, is appended as clean and
//! written as it is: the one line every request writes is not scanned twice.

use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const WAKE_AT: usize = 256 * 1024;
const WRITE_INLINE_AT: usize = 8 * 1024 * 1024;
/// How long an idle writer sleeps between checks (lines wake it sooner).
const INTERVAL: Duration = Duration::from_millis(10);
/// How long a busy writer lets lines gather between writes.
const BUSY_INTERVAL: Duration = Duration::from_millis(10);

/// Lines not yet written, and which ranges of them are already redacted.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    clean: Vec<Range<usize>>,
}

impl Pending {
    /// The bytes to write: raw ranges redacted, clean ones as they are.
    fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 256);
        let mut at = 0;
        let end = self.bytes.len();
        for r in self.clean.iter().chain(std::iter::once(&(end..end))) {
            if at < r.start {
                let raw = String::from_utf8_lossy(&self.bytes[at..r.start]);
                out.extend_from_slice(crate::redact::redact(&raw).as_bytes());
            }
            out.extend_from_slice(&self.bytes[r.clone()]);
            at = r.end;
        }
        out
    }
}

#[derive(Default)]
struct Shared {
    buf: Mutex<Pending>,
    wake: Condvar,
    /// Serializes writers of stderr so batches never interleave.
    out: Mutex<()>,
    /// The writer found nothing to write on its last round: it sleeps until a line wakes it.
    idle: AtomicBool,
}

impl Shared {
    fn write_out(&self, batch: Pending) {
        if batch.bytes.is_empty() {
            return;
        }
        let out = batch.render();
        let _out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&out);
        let _ = err.flush();
    }

    fn take(&self) -> Pending {
        let mut b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *b)
    }
}

/// `MakeWriter` for tracing-subscriber.
#[derive(Clone)]
pub struct BatchWriter(Arc<Shared>);

static INSTANCE: std::sync::OnceLock<BatchWriter> = std::sync::OnceLock::new();

impl BatchWriter {
    /// The process's writer; its thread starts on first use.
    pub fn get() -> BatchWriter {
        INSTANCE
            .get_or_init(|| {
                let shared = Arc::new(Shared::default());
                let s = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("portcullis-log".into())
                    .spawn(move || loop {
                        let batch = {
                            let mut b = s.buf.lock().unwrap_or_else(|p| p.into_inner());
                            if !s.idle.load(Ordering::Relaxed) {
                                // Busy: nothing wakes the writer; lines gather for a while.
                                b = s
                                    .wake
                                    .wait_timeout(b, BUSY_INTERVAL)
                                    .map_or_else(|p| p.into_inner().0, |(b, _)| b);
                            } else if b.bytes.is_empty() {
                                // Idle: the next line wakes it (checked under the lock, so the
                                // wake-up cannot be missed).
                                b = s
                                    .wake
                                    .wait_timeout(b, INTERVAL)
                                    .map_or_else(|p| p.into_inner().0, |(b, _)| b);
                            }
                            std::mem::take(&mut *b)
                        };
                        s.idle.store(batch.bytes.is_empty(), Ordering::Relaxed);
                        s.write_out(batch);
                    });
                BatchWriter(shared)
            })
            .clone()
    }

    /// Appends whole lines formatted elsewhere whose every untrusted part is already redacted
    /// (the access line, `access`): written as they are.
    pub fn append_clean(&self, lines: &[u8]) {
        self.0.append(lines, true);
    }

    /// Writes out everything buffered (before the process exits).
    pub fn flush(&self) {
        let batch = self.0.take();
        self.0.write_out(batch);
    }
}

/// One event's bytes, appended to the shared buffer when the event is done.
pub struct EventWriter {
    shared: Arc<Shared>,
    line: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        self.shared.append(&self.line, false);
    }
}

impl Shared {
    fn append(&self, line: &[u8], clean: bool) {
        if line.is_empty() {
            return;
        }
        let (was_empty, before, len) = {
            let mut b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            let before = b.bytes.len();
            b.bytes.extend_from_slice(line);
            let len = b.bytes.len();
            if clean {
                match b.clean.last_mut() {
                    Some(r) if r.end == before => r.end = len,
                    _ => b.clean.push(before..len),
                }
            }
            (before == 0, before, len)
        };
        if len >= WRITE_INLINE_AT {
            let batch = self.take();
            self.write_out(batch);
        } else if (was_empty && self.idle.swap(false, Ordering::Relaxed))
            || (before < WAKE_AT && len >= WAKE_AT)
        {
            // A quiet gateway's line wakes the writer at once; a busy one's wait for its timer
            // (10 ms) unless they pile up.
            self.wake.notify_one();
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = EventWriter;
    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            shared: self.0.clone(),
            line: Vec::with_capacity(512),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_lines_are_redacted_and_clean_lines_pass_as_they_are() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLWJ5dGVz";
        let s = Shared::default();
        s.append(format!("raw one {jwt}\n").as_bytes(), false);
        s.append(b"clean one\n", true);
        s.append(b"clean two\n", true);
        s.append(format!("raw two Bearer {jwt}\n").as_bytes(), false);
        s.append(b"clean three [kept]\n", true);
        let batch = s.take();
        assert_eq!(batch.clean.len(), 2, "adjacent clean lines make one range");
        let out = batch.render();
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains(jwt), "{out}");
        assert_eq!(
            out,
            "raw one [redacted]\nclean one\nclean two\nraw two Bearer [redacted]\nclean three [kept]\n"
        );
        assert!(s.take().bytes.is_empty());
    }
}
