//! JSON-lines sinks: `stdout` and `file:PATH`.
//!
//! One change per line, in commit order. The file sink appends and fsyncs before it acks, so
//! a checkpoint never names a change that is not on disk. After a crash the file may end with
//! changes that the checkpoint does not cover (written, not yet acked): a restart writes them
//! again, each with the same `seq`, which is how a reader de-duplicates. A torn last line (a
//! crash mid-write) is cut off at start-up, so the file stays valid JSON lines.
//!
//! A full disk (ENOSPC, EDQUOT) on a write cuts the file back to its length before the group
//! (no partial line), logs once, waits with backoff (a stop ends the wait) and writes the same
//! lines again; nothing is acked meanwhile. A full disk on `fdatasync` (the written pages'
//! fate unknown) ends the sink with [`SinkError::DiskFull`] after cutting the file back to the
//! end of its last successful fsync; `pipeline::run` waits and resumes from the checkpoint.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};

use super::ledger::{Ack, Ledger, Mark, Ticket};
use super::{SinkError, SinkSpec};
use crate::backoff::{sleep_blocking_unless_stopped, Backoff};
use crate::change::Chunk;
use crate::checkpoint::{is_disk_full, DiskFull};
use crate::shutdown::Shutdown;

/// Bytes of changes gathered into one write (and one fsync).
const MAX_WRITE_BYTES: usize = 4 << 20;

enum Out {
    Stdout(std::io::Stdout),
    File(File, PathBuf),
}

/// Where written lines become durable, and their acks leave from.
enum Durable {
    /// stdout: lines are delivered once written and flushed.
    Flushed(Taken),
    /// A file: lines are delivered once the fsync thread's `fdatasync` covers them.
    Synced {
        groups: std::sync::mpsc::SyncSender<Group>,
        /// Returns with the file's length at its last successful fsync.
        thread: std::thread::JoinHandle<(Result<(), SinkError>, u64)>,
        /// Resolves when the thread ends: before the writer is done only after a failed
        /// fsync, which must end the sink at once, not at the next chunk (a caught-up binsync
        /// may wait long for one, its checkpoint frozen and the failure unsaid).
        ended: oneshot::Receiver<()>,
    },
}

/// Chunks written in one go, on their way to the fsync thread.
struct Group {
    marks: Vec<Mark>,
    /// Any bytes written (a group of position-only chunks needs no fsync).
    wrote: bool,
    /// The file's length once the group was written.
    end: u64,
}

/// Chunks taken but not yet durable: one piece each in the ledger, done once their lines are.
#[derive(Default)]
struct Taken {
    ledger: Ledger,
    tickets: Vec<Ticket>,
}

impl Taken {
    fn take(&mut self, marks: impl IntoIterator<Item = Mark>) {
        for mark in marks {
            self.tickets.push(self.ledger.register(mark, 1));
        }
    }

    /// Everything taken is durable: sends the acks. False when the checkpointer is gone.
    fn durable(&mut self, acks: &mpsc::Sender<Ack>) -> bool {
        for t in self.tickets.drain(..) {
            self.ledger.done(t, 1);
        }
        while let Some(ack) = self.ledger.pop_ready() {
            if acks.blocking_send(ack).is_err() {
                return false;
            }
        }
        true
    }
}

/// Runs on a blocking thread: writes are synchronous and fsync blocks.
///
/// The file sink makes its writes durable on a second thread ([`sync_loop`]): while one group
/// of chunks is fsynced, the next is written, so the decoder is not held up by the disk's
/// flush latency. Acks still leave only after the fsync that covers their lines, in order.
pub fn run_blocking(
    spec: SinkSpec,
    mut rx: mpsc::Receiver<Chunk>,
    acks: mpsc::Sender<Ack>,
    shutdown: Shutdown,
) -> Result<(), SinkError> {
    let mut out = match &spec {
        SinkSpec::Stdout => Out::Stdout(std::io::stdout()),
        SinkSpec::File(p) => Out::File(open_append(p)?, p.clone()),
        SinkSpec::Http(cfg) => return Err(SinkError::NotLines(cfg.url.clone())),
        SinkSpec::Nats(cfg) => return Err(SinkError::NotLines(cfg.url.clone())),
    };
    let mut durable = match &out {
        Out::File(f, path) => {
            let file = f.try_clone().map_err(|e| file_error(path, e))?;
            let synced = out.len()?;
            let (groups, rx) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
            let (sync_path, sync_acks) = (path.clone(), acks.clone());
            let (alive, ended) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name("binsync-fsync".into())
                .spawn(move || {
                    let _alive = alive;
                    sync_loop(&file, &sync_path, rx, sync_acks, synced)
                })
                .map_err(|e| SinkError::Thread {
                    target: path.display().to_string(),
                    detail: e.to_string(),
                })?;
            Durable::Synced {
                groups,
                thread,
                ended,
            }
        }
        Out::Stdout(_) => Durable::Flushed(Taken::default()),
    };
    let mut buf = Vec::with_capacity(1 << 20);
    let mut pending = Vec::new();
    let mut result = Ok(());
    loop {
        let ended = match &mut durable {
            Durable::Synced { ended, .. } => Some(ended),
            Durable::Flushed(_) => None,
        };
        // No more input, or the fsync thread failed: its error is returned below.
        let Some(first) = next_chunk(&mut rx, ended) else {
            break;
        };
        let mut bytes = first.buf.len();
        pending.push(first);
        // Take what else is already queued (one write and one fsync for all of it), up to a
        // bound: the writer must not hold more than a few chunks, however slow fsync is.
        while bytes < MAX_WRITE_BYTES {
            match rx.try_recv() {
                Ok(c) => {
                    bytes += c.buf.len();
                    pending.push(c);
                }
                Err(_) => break,
            }
        }
        let wrote = match write_group_waiting(&mut out, &pending, &mut buf, &shutdown) {
            Ok(Some(wrote)) => wrote,
            // Stopped while the disk was full: these chunks stay unacked.
            Ok(None) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        tracing::debug!(chunks = pending.len(), bytes, "lines written");
        let marks = pending.drain(..).map(|c| Mark::of(&c));
        match &mut durable {
            Durable::Synced { groups, .. } => {
                let group = Group {
                    marks: marks.collect(),
                    wrote,
                    end: out.len()?,
                };
                // A closed syncer has failed: its error is returned below.
                if groups.send(group).is_err() {
                    break;
                }
            }
            Durable::Flushed(taken) => {
                taken.take(marks);
                if !taken.durable(&acks) {
                    return Ok(()); // the checkpointer is gone: shutting down
                }
            }
        }
        if buf.capacity() > 2 * MAX_WRITE_BYTES {
            buf = Vec::with_capacity(MAX_WRITE_BYTES);
        }
    }
    if let Durable::Synced { groups, thread, .. } = durable {
        drop(groups);
        // A panic is a bug: it goes on as one (the pipeline reports the sink task's panic).
        let (synced, synced_len) = thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if let (Err(SinkError::DiskFull(_)), Out::File(f, path)) = (&synced, &out) {
            // The failed fsync leaves the pages after the last good one in doubt: cut them
            // (unacked, so sent again after the restart) rather than keep lines that may read
            // back as zeros once evicted. The writer has stopped, so nothing races this.
            f.set_len(synced_len)
                .and_then(|_| f.sync_data())
                .map_err(|e| file_error(path, e))?;
        }
        result = result.and(synced);
    }
    result
}

/// The next chunk; None when the input is closed or, first, when `sync_ended` resolves.
fn next_chunk(
    rx: &mut mpsc::Receiver<Chunk>,
    mut sync_ended: Option<&mut oneshot::Receiver<()>>,
) -> Option<Chunk> {
    block_on(std::future::poll_fn(|cx| {
        if let Some(ended) = sync_ended.as_deref_mut() {
            if std::future::Future::poll(std::pin::Pin::new(ended), cx).is_ready() {
                return std::task::Poll::Ready(None);
            }
        }
        rx.poll_recv(cx)
    }))
}

/// Runs `f` to completion on this (blocking) thread, parked while it is pending: what
/// `Receiver::blocking_recv` does, for a wait on two things at once.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// [`write_group`], waiting out a full disk: the file is cut back to its length before the
/// group (no partial line), the situation logged once, and the same lines written again after
/// a backoff. None when binsync is stopped while waiting.
fn write_group_waiting(
    out: &mut Out,
    chunks: &[Chunk],
    buf: &mut Vec<u8>,
    shutdown: &Shutdown,
) -> Result<Option<bool>, SinkError> {
    let start = out.len()?;
    let mut backoff = Backoff::new();
    loop {
        match write_group(out, chunks, buf) {
            Err(SinkError::DiskFull(full)) => {
                out.truncate(start)?;
                if backoff.attempts() == 0 {
                    tracing::error!(error = %full, "waiting for disk space; the same lines are written again then, and nothing is acknowledged meanwhile");
                }
                if !sleep_blocking_unless_stopped(backoff.next_delay(), shutdown) {
                    return Ok(None);
                }
            }
            Ok(wrote) if backoff.attempts() > 0 => {
                tracing::info!("disk has space again: the sink file is written");
                return Ok(Some(wrote));
            }
            other => return other.map(Some),
        }
    }
}

/// Lines at least this long are written from their chunk rather than copied into the group's
/// buffer first (a 50 MB BLOB would otherwise be held twice).
const DIRECT_LINE_BYTES: usize = 1 << 20;

/// Writes the lines of `chunks`, gathered into `buf` (one write for many small lines); returns
/// whether anything was written.
fn write_group(out: &mut Out, chunks: &[Chunk], buf: &mut Vec<u8>) -> Result<bool, SinkError> {
    buf.clear();
    let mut wrote = false;
    for chunk in chunks {
        for c in &chunk.changes {
            let line = chunk.line(c);
            if line.len() >= DIRECT_LINE_BYTES {
                out.write(buf)?;
                out.write(line)?;
                out.write(b"\n")?;
                wrote = true;
                buf.clear();
            } else {
                buf.extend_from_slice(line);
                buf.push(b'\n');
            }
        }
    }
    out.write(buf)?;
    Ok(wrote || !buf.is_empty())
}

/// Groups written but not yet fsynced, at most (each a few MiB of lines already in the page
/// cache; only their marks are held).
const SYNC_QUEUE: usize = 2;

/// Makes written groups durable and acknowledges them: one `fdatasync` for every group queued
/// meanwhile (each was written before it was queued, so the sync covers it).
/// Returns with the file's length as of its last successful fsync (`synced` at the start).
fn sync_loop(
    file: &File,
    path: &Path,
    groups: std::sync::mpsc::Receiver<Group>,
    acks: mpsc::Sender<Ack>,
    mut synced: u64,
) -> (Result<(), SinkError>, u64) {
    let mut taken = Taken::default();
    while let Ok(first) = groups.recv() {
        let mut wrote = false;
        let mut end = synced;
        for group in std::iter::once(first).chain(groups.try_iter()) {
            wrote |= group.wrote;
            end = end.max(group.end);
            taken.take(group.marks);
        }
        if wrote {
            if let Err(e) = file.sync_data() {
                return (Err(file_error(path, e)), synced);
            }
        }
        synced = end;
        if !taken.durable(&acks) {
            return (Ok(()), synced); // the checkpointer is gone: shutting down
        }
    }
    (Ok(()), synced)
}

impl Out {
    /// The file's length (0 for stdout).
    fn len(&self) -> Result<u64, SinkError> {
        match self {
            Out::Stdout(_) => Ok(0),
            Out::File(f, path) => f
                .metadata()
                .map(|m| m.len())
                .map_err(|e| file_error(path, e)),
        }
    }

    /// Cuts the file back to `len` (nothing for stdout).
    fn truncate(&self, len: u64) -> Result<(), SinkError> {
        match self {
            Out::Stdout(_) => Ok(()),
            Out::File(f, path) => f.set_len(len).map_err(|e| file_error(path, e)),
        }
    }

    /// Writes `bytes`: flushed for stdout; for a file, durable only after the syncer's fsync.
    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        match self {
            Out::Stdout(s) => {
                if bytes.is_empty() {
                    return Ok(());
                }
                let mut lock = s.lock();
                lock.write_all(bytes)
                    .and_then(|_| lock.flush())
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::BrokenPipe => SinkError::StdoutClosed,
                        _ => SinkError::Write {
                            target: "stdout".into(),
                            detail: e.to_string(),
                        },
                    })
            }
            Out::File(f, path) => {
                if bytes.is_empty() {
                    return Ok(());
                }
                f.write_all(bytes).map_err(|e| file_error(path, e))
            }
        }
    }
}

fn file_error(path: &Path, e: std::io::Error) -> SinkError {
    if is_disk_full(&e) {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        return DiskFull {
            dir: dir.unwrap_or(Path::new(".")).to_path_buf(),
            detail: e.to_string(),
        }
        .into();
    }
    SinkError::Write {
        target: path.display().to_string(),
        detail: e.to_string(),
    }
}

fn open_append(path: &Path) -> Result<File, SinkError> {
    let err = |e| file_error(path, e);
    // No create_dir_all: a missing directory is the operator's to make (`config` checks it
    // first; this is for one removed since).
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        return Err(SinkError::Write {
            target: path.display().to_string(),
            detail: format!(
                "the directory {} does not exist (binsync creates no directories)",
                dir.display()
            ),
        });
    }
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    truncate_torn_tail(&mut f).map_err(err)?;
    Ok(f)
}

/// Cuts a partial last line left by a crash mid-write.
fn truncate_torn_tail(f: &mut File) -> std::io::Result<()> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // Scan backwards in blocks for the last newline.
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block[..n])?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep != len {
                tracing::warn!(
                    bytes = len - keep,
                    "cutting a torn last line from the sink file (a crash mid-write)"
                );
                f.set_len(keep)?;
                f.sync_data()?;
            }
            return Ok(());
        }
        if start == 0 {
            tracing::warn!(
                bytes = len,
                "the sink file has no complete line; truncating it"
            );
            f.set_len(0)?;
            return f.sync_data();
        }
        end = start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        drop(open_append(&p).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
    }

    fn chunk(lines: &[&str], offset: u64) -> Chunk {
        let mut chunk = Chunk {
            position: Some(crate::checkpoint::Position {
                offset,
                ..Default::default()
            }),
            ..Chunk::default()
        };
        for (i, line) in lines.iter().enumerate() {
            let start = chunk.buf.len();
            chunk.buf.extend_from_slice(line.as_bytes());
            chunk.changes.push(crate::change::Change {
                seq: offset * 10 + i as u64,
                op: crate::change::Op::Insert,
                entity: "t".into(),
                keyless: false,
                line: start..chunk.buf.len(),
                key: start..start,
            });
        }
        chunk
    }

    #[test]
    fn file_sink_acks_every_chunk_in_order_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        let (tx, rx) = mpsc::channel(8);
        let (ack_tx, mut ack_rx) = mpsc::channel(8);
        let spec = SinkSpec::File(p.clone());
        let sink = std::thread::spawn(move || run_blocking(spec, rx, ack_tx, Shutdown::never()));
        for c in [
            chunk(&["{\"a\":1}", "{\"a\":2}"], 1),
            chunk(&[], 2), // position only
            chunk(&["{\"a\":3}"], 3),
        ] {
            tx.blocking_send(c).unwrap();
        }
        drop(tx);
        sink.join().unwrap().unwrap();
        let acks: Vec<(u64, usize)> = std::iter::from_fn(|| ack_rx.try_recv().ok())
            .map(|a| (a.position.unwrap().offset, a.changes))
            .collect();
        assert_eq!(acks, vec![(1, 2), (2, 0), (3, 1)]);
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
        );
    }

    #[test]
    fn the_writer_stops_waiting_for_chunks_when_the_fsync_thread_ends() {
        let (tx, mut rx) = mpsc::channel(1);
        let (alive, mut ended) = oneshot::channel::<()>();
        let waiting = std::thread::spawn(move || {
            let first = next_chunk(&mut rx, Some(&mut ended)).is_some();
            // Ended first: the waiting writer returns with no chunk, though its input is open.
            let second = next_chunk(&mut rx, Some(&mut ended));
            (first, second.is_none(), rx)
        });
        tx.blocking_send(chunk(&["{\"a\":1}"], 1)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(alive); // the fsync thread returned (an fsync failed)
        let (first, stopped, _rx) = waiting.join().unwrap();
        assert!(first && stopped);
        drop(tx);
    }

    #[test]
    fn sink_specs() {
        assert!(matches!("stdout".parse::<SinkSpec>(), Ok(SinkSpec::Stdout)));
        assert!(
            matches!("file:/tmp/x".parse::<SinkSpec>(), Ok(SinkSpec::File(p)) if p == Path::new("/tmp/x"))
        );
        assert!("kafka://x".parse::<SinkSpec>().is_err());
        assert!("file:".parse::<SinkSpec>().is_err());
    }
}
