//! `binsync run --state nats`: one of several processes streams, the others wait.
//!
//! ```text
//! standby (lease::acquire) ─► restore the state dir from the bucket ─► commit a new generation
//!   ─► the pipeline, as a restart would run it ─► lease lost: stop at once, exit non-zero
//!                                              └► stopped or ended: release the lease, return
//! ```
//! Invariants:
//! - Nothing is read from the source or published before the lease is held, the state dir
//!   restored from the bucket, and a new generation committed by this holder (so the previous
//!   holder can no longer commit state).
//! - A lost lease ends the process at once with an error (exit 1; the binary exits without
//!   waiting for the run to drain: what it still holds is the next holder's to send). It does
//!   not return to standby: the sink already refuses to publish through the fence, some parts
//!   of a run are process-wide (the metrics recorder, its listener, tasks a dropped run leaves
//!   behind), and a clean process is what a supervisor restarting binsync gives; restarted,
//!   it waits as a standby.
//! - The state dir is a cache of the bucket: its contents are deleted at each takeover.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::bucket::{Bucket, HeadAt};
use super::image;
use super::lease;
use super::mirror;
use super::StateError;
use crate::checkpoint::Store;
use crate::shutdown::{self, Shutdown};

/// Connects to the NATS servers as the sink does (its TLS and credential settings).
pub type Connector = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<async_nats::Client, String>> + Send>>
        + Send
        + Sync,
>;

/// What `--state nats` needs.
#[derive(Clone)]
pub struct HaSettings {
    /// `nats://HOST:PORT[,HOST:PORT...]`.
    pub url: String,
    /// How to connect (the sink's way, set where the sink's settings are known); None: to
    /// `url` with [`connect`]'s defaults.
    pub connector: Option<Connector>,
    /// The JetStream stream binsync publishes to: the buckets are named after it.
    pub stream: String,
    /// Replicas of the buckets.
    pub replicas: usize,
    /// `--lease`.
    pub lease: Duration,
    pub state_dir: PathBuf,
}

impl std::fmt::Debug for HaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaSettings")
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("replicas", &self.replicas)
            .field("lease", &self.lease)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl HaSettings {
    pub fn state_bucket(&self) -> String {
        format!("binsync_state_{}", self.stream)
    }

    pub fn lease_bucket(&self) -> String {
        format!("binsync_lease_{}", self.stream)
    }
}

/// Connects to NATS (credentials from the environment, as the sink: `BINSYNC_NATS_TOKEN`, or
/// `BINSYNC_NATS_USER` + `BINSYNC_NATS_PASSWORD`, or `BINSYNC_NATS_CREDS`).
pub async fn connect(url: &str) -> Result<async_nats::Client, StateError> {
    let fail = |detail: String| StateError::Connect {
        url: url.to_string(),
        detail,
    };
    let scheme = url.split_once("://").map_or("nats", |(s, _)| s);
    let addrs: Vec<String> = url
        .split(',')
        .map(|a| match a.contains("://") {
            true => a.to_string(),
            false => format!("{scheme}://{a}"),
        })
        .collect();
    let mut opts = async_nats::ConnectOptions::new().name("binsync-state");
    if let Ok(token) = std::env::var("BINSYNC_NATS_TOKEN") {
        opts = opts.token(token);
    } else if let Ok(user) = std::env::var("BINSYNC_NATS_USER") {
        opts = opts.user_and_password(
            user,
            std::env::var("BINSYNC_NATS_PASSWORD").unwrap_or_default(),
        );
    } else if let Ok(creds) = std::env::var("BINSYNC_NATS_CREDS") {
        opts = opts
            .credentials_file(&creds)
            .await
            .map_err(|e| fail(format!("BINSYNC_NATS_CREDS {creds}: {e}")))?;
    }
    opts.connect(addrs.as_slice())
        .await
        .map_err(|e| fail(e.to_string()))
}

/// This process as a lease holder: host, pid and a random part (two processes never share it).
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}-{}-{}", std::process::id(), mirror::token())
}

/// Runs `pipeline` as the lease holder (see the module doc). Returns None if `shutdown` fired
/// while standby, else the pipeline's own result. Lease lost: [`StateError::LeaseLost`] (or
/// [`StateError::Conflict`]).
pub async fn run<O, E, Fut>(
    settings: HaSettings,
    mut shutdown: Shutdown,
    pipeline: impl FnOnce(Shutdown) -> Fut,
) -> Result<Option<Result<O, E>>, StateError>
where
    Fut: Future<Output = Result<O, E>>,
{
    let client = match &settings.connector {
        Some(c) => c().await.map_err(|detail| StateError::Connect {
            url: settings.url.clone(),
            detail,
        })?,
        None => connect(&settings.url).await?,
    };
    let js = async_nats::jetstream::new(client.clone());
    let lease_kv = super::bucket::open_kv(&js, &settings.lease_bucket(), settings.replicas).await?;
    let bucket = Bucket::open(&client, &settings.state_bucket(), settings.replicas).await?;
    let id = holder_id();
    tracing::info!(holder = %id, lease = %humantime::format_duration(settings.lease), bucket = %settings.state_bucket(), "--state nats: waiting for the lease");
    let Some(lease) = lease::acquire(&lease_kv, &id, settings.lease, &mut shutdown).await? else {
        return Ok(None);
    };
    let fence = lease.fence();
    let (release, released) = shutdown::channel();
    let keeper = tokio::spawn(lease.keep(released));

    let dir = settings.state_dir.clone();
    let prepared = async {
        let at = restore(&bucket, &dir).await?;
        let (m, uploader) = mirror::new(bucket.clone(), at, &id, fence.clone());
        crate::checkpoint::set_mirror(&dir, Some(m));
        let uploads = tokio::spawn(uploader.run());
        // The first write of a mirrored store commits a new generation (the whole store).
        let store = Store::open(&dir).map_err(|e| cache(&dir, e))?;
        store.probe().await.map_err(|e| cache(&dir, e))?;
        Ok::<_, StateError>(uploads)
    }
    .await;
    let uploads = match prepared {
        Ok(u) => u,
        Err(e) => {
            crate::checkpoint::set_mirror(&dir, None);
            release.fire();
            let _ = keeper.await;
            return Err(if fence.valid() {
                e
            } else {
                StateError::LeaseLost
            });
        }
    };
    mark_cache(&dir, &settings, &id);
    tracing::info!(state_dir = %dir.display(), "--state nats: state restored from the bucket; starting as a restart would");
    super::install_fence(Some(fence.clone()));

    let (stop, stopped) = shutdown::channel();
    let run = pipeline(stopped);
    tokio::pin!(run);
    let mut outer = shutdown.clone();
    let mut asked = false;
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = outer.requested(), if !asked => {
                asked = true;
                stop.fire();
            }
            _ = fence.lost() => {
                // Not waiting for the run to drain: whatever it still holds is the next
                // holder's to send. The caller ends the process at once (see the module doc).
                stop.fire();
                tracing::error!(holder = %id, "lease lost: publishing stopped at once; this process exits (restarted, it waits as a standby)");
                crate::checkpoint::set_mirror(&dir, None);
                return Err(StateError::LeaseLost);
            }
        }
    };
    super::install_fence(None);
    crate::checkpoint::set_mirror(&dir, None);
    uploads.abort();
    release.fire();
    let _ = keeper.await;
    Ok(Some(result))
}

/// The file in a `--state nats` cache dir that says so (for `binsync status`).
const CACHE_MARKER: &str = "state-nats.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheMarker {
    bucket: String,
    url: String,
    holder: String,
    restored_at_unix_ms: u64,
}

fn mark_cache(dir: &Path, settings: &HaSettings, holder: &str) {
    let marker = CacheMarker {
        bucket: settings.state_bucket(),
        url: settings.url.clone(),
        holder: holder.to_string(),
        restored_at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    if let Ok(text) = serde_json::to_vec(&marker) {
        // Only informs `status`: a failure to write it changes nothing else.
        let _ = std::fs::write(dir.join(CACHE_MARKER), text);
    }
}

/// For `binsync status`: a line saying that `dir` is the local cache of `--state nats`, if it is.
pub fn describe_cache(dir: &Path) -> Option<String> {
    let raw = std::fs::read(dir.join(CACHE_MARKER)).ok()?;
    let m: CacheMarker = serde_json::from_slice(&raw).ok()?;
    Some(format!(
        "state:      --state nats: this dir is the local cache of bucket {} on {}, restored when {} took the lease; the state of record is the bucket's (the active binsync's cache follows it, a standby's does not)",
        m.bucket, m.url, m.holder
    ))
}

fn cache(dir: &Path, e: impl std::fmt::Display) -> StateError {
    StateError::Cache {
        dir: dir.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Empties `dir` and writes the state the bucket's head names into a new store there; returns
/// the head read (what the next commit CASes against).
pub async fn restore(bucket: &Bucket, dir: &Path) -> Result<HeadAt, StateError> {
    let at = bucket.head().await?;
    let state = match &at.head {
        Some(h) => bucket.read(h).await?,
        None => image::Image::new(),
    };
    wipe(dir).map_err(|e| cache(dir, format!("emptying it: {e}")))?;
    crate::checkpoint::set_mirror(dir, None);
    let store = Store::open(dir).map_err(|e| cache(dir, e))?;
    let keys = state.len();
    let ops = image::puts(&state);
    store
        .write(move |db| image::apply_to_db(db, &ops), |_| {})
        .await
        .map_err(|e| cache(dir, e))?;
    drop(store);
    tracing::info!(
        keys,
        generation = at.head.as_ref().map_or("none", |h| h.gen.as_str()),
        rounds = at.head.as_ref().map_or(0, |h| h.upto_round),
        "--state nats: state read from the bucket"
    );
    Ok(at)
}

/// Deletes everything inside `dir` (creating it if missing).
fn wipe(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
