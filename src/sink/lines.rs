//! JSON-lines sinks: `stdout` and `file:PATH`.
//!
//! One change per line, in commit order. The file sink appends and fsyncs before it acks, so
//! a checkpoint never names a change that is not on disk. After a crash the file may end with
//! changes that the checkpoint does not cover (written, not yet acked): a restart writes them
//! again, each with the same `seq`, which is how a reader de-duplicates. A torn last line (a
//! crash mid-write) is cut off at start-up, so the file stays valid JSON lines.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::{Ack, SinkError, SinkSpec};
use crate::change::Chunk;

/// Bytes of changes gathered into one write (and one fsync).
const MAX_WRITE_BYTES: usize = 4 << 20;

enum Out {
    Stdout(std::io::Stdout),
    File(File, PathBuf),
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
) -> Result<(), SinkError> {
    let mut out = match &spec {
        SinkSpec::Stdout => Out::Stdout(std::io::stdout()),
        SinkSpec::File(p) => Out::File(open_append(p)?, p.clone()),
        SinkSpec::Http(cfg) => {
            return Err(SinkError::Config(format!(
                "{} is not a lines sink",
                cfg.url
            )))
        }
    };
    let syncer = match &out {
        Out::File(f, path) => {
            let file = f.try_clone().map_err(|e| file_error(path, e))?;
            let (tx, groups) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
            let (path, acks) = (path.clone(), acks.clone());
            let handle = std::thread::Builder::new()
                .name("binsync-fsync".into())
                .spawn(move || sync_loop(&file, &path, groups, acks))
                .map_err(|e| SinkError::Config(format!("cannot start the fsync thread: {e}")))?;
            Some((tx, handle))
        }
        Out::Stdout(_) => None,
    };
    let mut buf = Vec::with_capacity(1 << 20);
    let mut pending = Vec::new();
    let mut result = Ok(());
    while let Some(first) = rx.blocking_recv() {
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
        buf.clear();
        for chunk in &pending {
            for c in &chunk.changes {
                buf.extend_from_slice(chunk.line(c));
                buf.push(b'\n');
            }
        }
        if let Err(e) = out.write(&buf) {
            result = Err(e);
            break;
        }
        let group: Vec<Ack> = pending.drain(..).map(|c| c.ack()).collect();
        match &syncer {
            // A closed syncer has failed: its error is returned below.
            Some((tx, _)) => {
                if tx.send((group, !buf.is_empty())).is_err() {
                    break;
                }
            }
            None => {
                for ack in group {
                    if acks.blocking_send(ack).is_err() {
                        return Ok(()); // the checkpointer is gone: shutting down
                    }
                }
            }
        }
        if buf.capacity() > 2 * MAX_WRITE_BYTES {
            buf = Vec::with_capacity(MAX_WRITE_BYTES);
        }
    }
    if let Some((tx, handle)) = syncer {
        drop(tx);
        let synced = handle
            .join()
            .unwrap_or_else(|_| Err(SinkError::Config("the fsync thread panicked".into())));
        result = result.and(synced);
    }
    result
}

/// Groups written but not yet fsynced, at most (each a few MiB of lines already in the page
/// cache; only their acks are held).
const SYNC_QUEUE: usize = 2;

/// Makes written groups durable and acknowledges them: one `fdatasync` for every group queued
/// meanwhile (each was written before it was queued, so the sync covers it).
fn sync_loop(
    file: &File,
    path: &Path,
    groups: std::sync::mpsc::Receiver<(Vec<Ack>, bool)>,
    acks: mpsc::Sender<Ack>,
) -> Result<(), SinkError> {
    while let Ok(first) = groups.recv() {
        let mut ready = vec![first];
        ready.extend(groups.try_iter());
        if ready.iter().any(|(_, wrote)| *wrote) {
            file.sync_data().map_err(|e| file_error(path, e))?;
        }
        for ack in ready.into_iter().flat_map(|(group, _)| group) {
            if acks.blocking_send(ack).is_err() {
                return Ok(()); // the checkpointer is gone: shutting down
            }
        }
    }
    Ok(())
}

impl Out {
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
                    .map_err(|e| SinkError::Write {
                        target: "stdout".into(),
                        detail: e.to_string(),
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
    SinkError::Write {
        target: path.display().to_string(),
        detail: e.to_string(),
    }
}

fn open_append(path: &Path) -> Result<File, SinkError> {
    let err = |e| file_error(path, e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
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
