//! The one writer of the state dir's sled store: a thread of its own that applies every write
//! (checkpoint saves, resets, dead letters) and is the only caller of sled's flush.
//!
//! Why: sled 0.34 deadlocks when `flush_async` runs from several tasks at once (every
//! `sled-io` thread ends up waiting in `make_stable_inner`, spacejam/sled#1308). Here there is
//! exactly one flusher by construction: the thread below, calling the blocking `Db::flush`
//! between batches of writes. Callers wait for their reply, which is sent only once the flush
//! that covers their write returned, so "written" always means "on disk".
//!
//! Writes queued while a flush runs are applied together and share the next flush (group
//! commit). A job must not hold a `Store`: the thread ends when the last `Store` is dropped.
//!
//! After one failed write or flush (a full disk) sled 0.34 fails every later operation on the
//! same `Db`, so the thread does not retry: callers get the error, and `binsync run` reopens
//! the store once there is space (see `pipeline`).
//!
//! A store may have a [`Mirror`] (`--state nats`: a copy of the store in the cluster,
//! `state::mirror`): then, after each flushed group, the thread hands the mirror the store as
//! that group left it together with the group's replies, and the mirror runs them once its copy
//! holds the group too ("written" then also means "in the copy"). Only this thread writes, so
//! what the mirror reads between two groups is a consistent image.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

/// Runs on the writer thread: applies its writes and returns what to do after the flush.
type Job = Box<dyn FnOnce(&sled::Db) -> Done + Send>;
/// Runs once the flush covering the job returned (and, with a [`Mirror`], once the mirror's
/// copy holds it), with the result.
pub type Done = Box<dyn FnOnce(&sled::Result<()>) + Send>;

/// A copy of the store kept elsewhere, fed by the writer thread.
pub trait Mirror: Send + Sync {
    /// On the writer thread after every flushed group: `db` as the group left it (nothing else
    /// writes it meanwhile), and the group's replies, to run (each exactly once) when the copy
    /// holds the group, or with the error that keeps it from doing so. May block: the writer
    /// then waits (backpressure from a slow copy).
    fn after_flush(&self, db: &sled::Db, replies: Vec<Done>);
}

/// The mirrors of the stores to open, by state dir (as the path is given: `--state nats` sets
/// one for `--state-dir` before the pipeline opens its store there).
static MIRRORS: Mutex<Vec<(PathBuf, Arc<dyn Mirror>)>> = Mutex::new(Vec::new());

/// Every store opened in `dir` from now on is mirrored to `mirror` (None: no longer mirrored).
/// Stores already open keep what they had.
pub fn set_mirror(dir: &Path, mirror: Option<Arc<dyn Mirror>>) {
    let mut all = MIRRORS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|(d, _)| d != dir);
    if let Some(m) = mirror {
        all.push((dir.to_path_buf(), m));
    }
}

pub(super) fn mirror_for(dir: &Path) -> Option<Arc<dyn Mirror>> {
    let all = MIRRORS.lock().unwrap_or_else(|p| p.into_inner());
    all.iter().find(|(d, _)| d == dir).map(|(_, m)| m.clone())
}

/// How many queued jobs one flush covers at most (a bound on how long a reply waits).
const GROUP: usize = 256;

pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(db: sled::Db, mirror: Option<Arc<dyn Mirror>>) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("binsync-store".into())
            .spawn(move || run(db, rx, mirror))?;
        Ok(Writer {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Applies `apply` on the writer thread, flushes, then (only if both worked) runs
    /// `published` there with the result (for the read-only copies of the store) and returns
    /// the result.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        apply: impl FnOnce(&sled::Db) -> sled::Result<T> + Send + 'static,
        published: impl FnOnce(&T) + Send + 'static,
    ) -> sled::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |db| {
            let applied = apply(db);
            Box::new(move |flushed: &sled::Result<()>| {
                let result = match (applied, flushed) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(e.clone()),
                    (Ok(v), Ok(())) => {
                        published(&v);
                        Ok(v)
                    }
                };
                let _ = tx.send(result);
            })
        });
        let gone = || {
            sled::Error::Io(std::io::Error::other(
                "the state dir's writer thread has stopped",
            ))
        };
        let jobs = self.jobs.as_ref().ok_or_else(gone)?;
        jobs.send(job).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

impl Drop for Writer {
    /// Lets the thread finish what is queued, and waits for it: sled's lock on the directory
    /// is released only once its last handle (the thread's included) is gone.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: sled::Db, jobs: mpsc::Receiver<Job>, mirror: Option<Arc<dyn Mirror>>) {
    while let Ok(first) = jobs.recv() {
        let mut done = vec![first(&db)];
        while done.len() < GROUP {
            match jobs.try_recv() {
                Ok(job) => done.push(job(&db)),
                Err(_) => break,
            }
        }
        // The only flush of this store (sled's own periodic flusher aside).
        let flushed = db.flush().map(|_| ());
        match (&mirror, &flushed) {
            (Some(m), Ok(())) => m.after_flush(&db, done),
            _ => {
                for d in done {
                    d(&flushed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_writers_all_finish() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::checkpoint::sled_config(dir.path()).open().unwrap();
        let writer = std::sync::Arc::new(Writer::start(db.clone(), None).unwrap());
        let mut tasks = Vec::new();
        for t in 0..32u64 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50u64 {
                    let key = (t * 1000 + i).to_be_bytes();
                    writer
                        .write(move |db| db.insert(key, &b"v"[..]).map(|_| ()), |_| {})
                        .await
                        .unwrap();
                }
            }));
        }
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), all)
            .await
            .expect("no deadlock");
        assert_eq!(db.len(), 32 * 50);
    }
}
