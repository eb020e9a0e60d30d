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

use std::sync::mpsc;

/// Runs on the writer thread: applies its writes and returns what to do after the flush.
type Job = Box<dyn FnOnce(&sled::Db) -> Done + Send>;
/// Runs on the writer thread once the flush covering the job returned, with its result.
type Done = Box<dyn FnOnce(&sled::Result<()>) + Send>;

/// How many queued jobs one flush covers at most (a bound on how long a reply waits).
const GROUP: usize = 256;

pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(db: sled::Db) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("binsync-store".into())
            .spawn(move || run(db, rx))?;
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

fn run(db: sled::Db, jobs: mpsc::Receiver<Job>) {
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
        for d in done {
            d(&flushed);
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
        let writer = std::sync::Arc::new(Writer::start(db.clone()).unwrap());
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
