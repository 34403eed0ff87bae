//! Standard output, written by a thread of its own.
//!
//! The session renders lines into buffers and hands them over through a
//! small bounded channel; the thread writes each buffer (and whatever else
//! is waiting) with as few `write`s as it can and flushes when nothing is
//! waiting, so a terminal sees each line at once and a pipe gets large
//! writes. A reader that stops reading fills the channel and the session
//! waits: nodes then hold lines back instead of tailll buffering them
//! without bound. A reader that goes away (`tailll … | head`) is reported
//! as [`End::PipeClosed`]: the end of a normal run, exit status 0.

use std::io::Write;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

/// Buffers waiting for the writer.
const QUEUE: usize = 8;

/// How the output thread stands: still fine, or why it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// No write has failed (the writer is running, or finished cleanly).
    Open,
    /// The reader went away.
    PipeClosed,
    /// A write failed other than by a closed pipe; the message is for the user.
    Failed(String),
}

/// Standard output (or another writer), written by a thread of its own;
/// see the module docs.
pub struct Output {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    end: watch::Receiver<End>,
    done: Option<oneshot::Receiver<()>>,
}

impl Output {
    /// An output to the process's standard output.
    pub fn stdout() -> Output {
        Output::new(std::io::stdout())
    }

    /// Starts the thread `tailll-stdout`, which writes to `writer`.
    pub fn new<W: Write + Send + 'static>(writer: W) -> Output {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        let (end_tx, end) = watch::channel(End::Open);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("tailll-stdout".into())
            .spawn(move || {
                let mut writer = writer;
                let result = (|| {
                    while let Some(buffer) = rx.blocking_recv() {
                        writer.write_all(&buffer)?;
                        while let Ok(more) = rx.try_recv() {
                            writer.write_all(&more)?;
                        }
                        writer.flush()?;
                    }
                    writer.flush()
                })();
                if let Err(e) = result {
                    let _ = end_tx.send(match e.kind() {
                        std::io::ErrorKind::BrokenPipe => End::PipeClosed,
                        _ => End::Failed(format!("failed to write to standard output: {e}")),
                    });
                }
                let _ = done_tx.send(());
            })
            .expect("start the output thread");
        Output {
            tx: Some(tx),
            end,
            done: Some(done),
        }
    }

    /// Queues `buffer`; waits while the writer is behind. After the writer
    /// stopped, buffers are dropped ([`Output::ended`] says why).
    pub async fn write(&mut self, buffer: Vec<u8>) {
        if buffer.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(buffer).await;
        }
    }

    /// Resolves when the writer stopped on an error.
    pub async fn ended(&mut self) -> End {
        // The guard is let go before any other await (the future stays Send).
        let end = self
            .end
            .wait_for(|e| *e != End::Open)
            .await
            .map(|e| e.clone());
        match end {
            Ok(end) => end,
            // The writer is gone without an error: it finished.
            Err(_) => std::future::pending().await,
        }
    }

    /// Writes what is queued and stops the writer, waiting at most
    /// `patience` (a reader that stopped reading is not waited for).
    pub async fn finish(mut self, patience: Duration) -> End {
        drop(self.tx.take());
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(patience, done).await;
        }
        self.end.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn buffers_are_written_in_order() {
        let sink = Shared::default();
        let mut out = Output::new(sink.clone());
        for i in 0..100 {
            out.write(format!("{i}\n").into_bytes()).await;
        }
        assert_eq!(out.finish(Duration::from_secs(5)).await, End::Open);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("{i}\n")).collect();
        assert_eq!(text, expected);
    }

    #[tokio::test]
    async fn a_closed_pipe_ends_the_output_quietly() {
        let mut out = Output::new(Closed);
        out.write(b"x\n".to_vec()).await;
        let end = tokio::time::timeout(Duration::from_secs(5), out.ended())
            .await
            .unwrap();
        assert_eq!(end, End::PipeClosed);
        // Later writes do not block or fail.
        out.write(b"y\n".to_vec()).await;
        assert_eq!(out.finish(Duration::from_secs(5)).await, End::PipeClosed);
    }
}
