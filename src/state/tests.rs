//! The mirror, the bucket and the lease against a real nats-server (`testing::Nats`).

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::bucket::{Bucket, Head};
use super::image::{self, Image};
use super::lease::{self, Fence};
use super::{ha, mirror, testing::Nats};
use crate::checkpoint::{set_mirror, Store};
use crate::shutdown::Shutdown;

async fn bucket(nats: &Nats) -> Bucket {
    let client = ha::connect(&nats.url).await.unwrap();
    Bucket::open(&client, "binsync_state_test", 1)
        .await
        .unwrap()
        // Small parts: every blob of a few KiB is split.
        .with_part_max(2048)
}

fn long_fence() -> Fence {
    Fence::new(Instant::now() + Duration::from_secs(3600))
}

/// A store in `dir` mirrored by holder `who`, as `ha::run` sets it up (restore, then the
/// first write commits a new generation).
async fn mirrored(bucket: &Bucket, dir: &Path, who: &str, fence: Fence) -> Store {
    let at = ha::restore(bucket, dir).await.unwrap();
    let (m, uploader) = mirror::new(bucket.clone(), at, who, fence);
    set_mirror(dir, Some(m));
    tokio::spawn(uploader.run());
    let store = Store::open(dir).unwrap();
    store.probe().await.unwrap();
    store
}

async fn put(store: &Store, tree: &'static str, key: &[u8], value: Vec<u8>) -> sled::Result<()> {
    let key = key.to_vec();
    store
        .write(
            move |db| {
                let t = db.open_tree(tree)?;
                t.insert(key, value).map(|_| ())
            },
            |_| {},
        )
        .await
}

async fn remove(store: &Store, tree: &'static str, key: &[u8]) {
    let key = key.to_vec();
    store
        .write(
            move |db| db.open_tree(tree)?.remove(key).map(|_| ()),
            |_| {},
        )
        .await
        .unwrap();
}

fn contents(store: &Store) -> Image {
    image::read_db(store.db()).unwrap()
}

/// Restores the bucket into a new dir and reads it back.
async fn restored(bucket: &Bucket) -> Image {
    let dir = tempfile::tempdir().unwrap();
    ha::restore(bucket, dir.path()).await.unwrap();
    let store = Store::open(dir.path()).unwrap();
    contents(&store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_gives_back_every_tree_as_the_mirrored_store_held_it() {
    let nats = Nats::start();
    let bucket = bucket(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let store = mirrored(&bucket, dir.path(), "a", long_fence()).await;
    put(&store, "history", b"\x00\x00\x01", vec![1; 10_000])
        .await
        .unwrap();
    for i in 0..20u32 {
        put(
            &store,
            "dlq",
            &i.to_be_bytes(),
            format!("batch {i}").into_bytes(),
        )
        .await
        .unwrap();
    }
    remove(&store, "dlq", &3u32.to_be_bytes()).await;
    store
        .write(
            |db| db.insert(b"checkpoint", &b"{\"seq\":7}"[..]).map(|_| ()),
            |_| {},
        )
        .await
        .unwrap();
    let want = contents(&store);
    assert!(want.len() > 20, "{}", want.len());
    assert_eq!(restored(&bucket).await, want);
    let head = bucket.head().await.unwrap().head.unwrap();
    assert_eq!(head.holder, "a");
    assert!(head.upto_round >= 20, "{head:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_written_but_not_committed_is_not_state() {
    let nats = Nats::start();
    let bucket = bucket(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let store = mirrored(&bucket, dir.path(), "a", long_fence()).await;
    put(&store, "t", b"k", b"committed".to_vec()).await.unwrap();
    let want = contents(&store);
    // A crash between the wal write and the head CAS: the next round's keys are there.
    let head = bucket.head().await.unwrap().head.unwrap();
    let ops = vec![image::Op::Put {
        tree: b"t".to_vec(),
        key: b"k".to_vec(),
        value: b"never committed".to_vec(),
    }];
    bucket
        .put_round(&head.gen, head.upto_round + 1, &image::encode(&ops))
        .await
        .unwrap();
    assert_eq!(restored(&bucket).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_wal_becomes_a_new_generation_and_the_old_one_is_purged() {
    let nats = Nats::start();
    let bucket = bucket(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let store = mirrored(&bucket, dir.path(), "a", long_fence()).await;
    let first = bucket.head().await.unwrap().head.unwrap();
    // One write at a time: one round each, past the compaction threshold.
    for i in 0..520u32 {
        put(
            &store,
            "t",
            &(i % 50).to_be_bytes(),
            i.to_be_bytes().to_vec(),
        )
        .await
        .unwrap();
    }
    let head: Head = bucket.head().await.unwrap().head.unwrap();
    assert_eq!(head.counter(), first.counter() + 1, "{first:?} -> {head:?}");
    assert!(head.upto_round < 100, "{head:?}");
    let keys: Vec<String> = {
        use futures_util::TryStreamExt;
        bucket
            .kv()
            .keys()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    assert!(
        !keys.iter().any(|k| k.contains(&first.gen)),
        "old generation purged: {keys:?}"
    );
    assert_eq!(restored(&bucket).await, contents(&store));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_was_taken_over_cannot_commit_state() {
    let nats = Nats::start();
    let bucket = bucket(&nats).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fence_a = long_fence();
    let a = mirrored(&bucket, dir_a.path(), "a", fence_a.clone()).await;
    put(&a, "t", b"k", b"from a".to_vec()).await.unwrap();
    // b takes over (as after a lease expiry): restore, new generation.
    let b = mirrored(&bucket, dir_b.path(), "b", long_fence()).await;
    // (but the probe key its own first write set)
    let without_probe = |s: &Store| {
        let mut i = contents(s);
        i.retain(|(_, k), _| k.as_slice() != b"probe");
        i
    };
    assert_eq!(
        without_probe(&b),
        without_probe(&a),
        "b starts from a's state"
    );
    put(&b, "t", b"k", b"from b".to_vec()).await.unwrap();
    let want = contents(&b);
    // a, unaware, writes on: its round's head CAS fails, and so does every later write.
    let err = put(&a, "t", b"k", b"stale a".to_vec()).await.unwrap_err();
    assert!(err.to_string().contains("another binsync"), "{err}");
    assert!(!fence_a.valid(), "a conflict loses the fence");
    assert!(put(&a, "t", b"x", b"later".to_vec()).await.is_err());
    assert_eq!(restored(&bucket).await, want);
    assert_eq!(bucket.head().await.unwrap().head.unwrap().holder, "b");
}

async fn lease_kv(nats: &Nats) -> async_nats::jetstream::kv::Store {
    let client = ha::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    super::bucket::open_kv(&js, "binsync_lease_test", 1)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_only_once_the_holder_stalls_past_its_lease() {
    let nats = Nats::start();
    let kv = lease_kv(&nats).await;
    let period = Duration::from_millis(800);
    let a = lease::acquire(&kv, "a", period, &mut Shutdown::never())
        .await
        .unwrap()
        .unwrap();
    let fence_a = a.fence();
    let keeper = tokio::spawn(a.keep(Shutdown::never()));
    let kv_b = kv.clone();
    let standby = tokio::spawn(async move {
        let b = lease::acquire(&kv_b, "b", period, &mut Shutdown::never()).await;
        (Instant::now(), b)
    });
    // Renewed every period/3: the standby waits however long it lasts.
    tokio::time::sleep(period * 4).await;
    assert!(
        !standby.is_finished(),
        "b took a lease that was being renewed"
    );
    assert!(fence_a.valid());
    // a stalls (no more renewals, as under SIGSTOP).
    keeper.abort();
    let stalled = Instant::now();
    let (taken_at, b) = standby.await.unwrap();
    let b = b.unwrap().expect("b holds the lease");
    let took = taken_at - stalled;
    assert!(took >= period * 2 / 3 && took < period * 3, "took {took:?}");
    assert!(!fence_a.valid(), "a's fence was invalid before b took over");
    assert!(fence_a.deadline() <= taken_at);
    assert!(b.fence().valid());
    let fence_b = b.fence();
    tokio::spawn(b.keep(Shutdown::never()));
    // b renews on its own (a late renewal by a is `a_stale_holder_renewing_late_loses_the_lease`).
    tokio::time::sleep(period * 2).await;
    assert!(fence_b.valid(), "b keeps its lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_holder_renewing_late_loses_the_lease() {
    let nats = Nats::start();
    let kv = lease_kv(&nats).await;
    let period = Duration::from_millis(600);
    let mut a = lease::acquire(&kv, "a", period, &mut Shutdown::never())
        .await
        .unwrap()
        .unwrap();
    let b = lease::acquire(&kv, "b", period, &mut Shutdown::never())
        .await
        .unwrap()
        .unwrap();
    assert!(b.fence().valid());
    assert!(a.renew().await.is_err(), "a's renewal after b's takeover");
    assert!(!a.fence().valid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_at_once() {
    let nats = Nats::start();
    let kv = lease_kv(&nats).await;
    let period = Duration::from_secs(5);
    let a = lease::acquire(&kv, "a", period, &mut Shutdown::never())
        .await
        .unwrap()
        .unwrap();
    let (release, released) = crate::shutdown::channel();
    let keeper = tokio::spawn(a.keep(released));
    let kv_b = kv.clone();
    let standby =
        tokio::spawn(
            async move { lease::acquire(&kv_b, "b", period, &mut Shutdown::never()).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    release.fire();
    keeper.await.unwrap().unwrap();
    let b = standby.await.unwrap().unwrap().unwrap();
    assert!(t.elapsed() < period / 2, "{:?}", t.elapsed());
    assert!(b.fence().valid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_nats_outage_returns_once_the_bucket_holds_it() {
    let mut nats = Nats::start();
    let bucket = bucket(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let store = mirrored(&bucket, dir.path(), "a", long_fence()).await;
    put(&store, "t", b"k", b"before".to_vec()).await.unwrap();
    nats.kill();
    let write = {
        let store = store.clone();
        tokio::spawn(async move { put(&store, "t", b"k", b"during".to_vec()).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!write.is_finished(), "answered before the bucket held it");
    nats.restart();
    tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .expect("the write completes once NATS is back")
        .unwrap()
        .unwrap();
    assert_eq!(restored(&bucket).await, contents(&store));
}
