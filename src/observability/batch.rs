//! The log writer: each event is formatted on the thread that logs it and appended to a shared
//! buffer under one short lock; a writer thread takes the whole buffer, redacts it and writes it
//! to stderr. The first line into an empty buffer wakes the writer, so a quiet gateway's lines
//! appear at once while a busy one's accumulate behind the batch being written: one wake-up per
//! batch, not per line, and no request waits on stderr or on redaction. Nothing is dropped: past
//! 8 MiB unwritten, a logger writes the buffer out itself.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const WAKE_AT: usize = 256 * 1024;
const WRITE_INLINE_AT: usize = 8 * 1024 * 1024;
const INTERVAL: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Shared {
    buf: Mutex<Vec<u8>>,
    wake: Condvar,
    /// Serializes writers of stderr so batches never interleave.
    out: Mutex<()>,
}

impl Shared {
    fn write_out(&self, batch: Vec<u8>) {
        if batch.is_empty() {
            return;
        }
        let _out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let mut w = super::redact::RedactingWriter::new(std::io::stderr());
        let _ = w.write_all(&batch);
        let _ = w.flush();
    }

    fn take(&self) -> Vec<u8> {
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
                        {
                            let b = s.buf.lock().unwrap_or_else(|p| p.into_inner());
                            let _ = s.wake.wait_timeout(b, INTERVAL);
                        }
                        let batch = s.take();
                        s.write_out(batch);
                    });
                BatchWriter(shared)
            })
            .clone()
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
        if self.line.is_empty() {
            return;
        }
        let (was_empty, len) = {
            let mut b = self.shared.buf.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = b.is_empty();
            b.extend_from_slice(&self.line);
            (was_empty, b.len())
        };
        if len >= WRITE_INLINE_AT {
            let batch = self.shared.take();
            self.shared.write_out(batch);
        } else if was_empty || len >= WAKE_AT {
            // The first line of a batch wakes the writer: a quiet gateway's lines appear at
            // once, a busy one's ride along with the batch being written.
            self.shared.wake.notify_one();
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
