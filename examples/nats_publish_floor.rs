//! The benchmark's reference publisher (`scripts/bench.sh`): publishes the lines of a file (the
//! file sink's output: the very payloads binsync publishes) into a new JetStream stream, one
//! message per line with binsync's five headers, as fast as the server acknowledges them.
//! Nothing is decoded or checkpointed: its time is what nats-server itself needs for these
//! messages on this machine, the floor binsync's JetStream figure is read against.
//!
//! The pattern is the usual async publish (as the Go client's): a window of 512 outstanding
//! publishes, refilled in halves, every PubAck on one wildcard reply subscription.
//!
//!   nats_publish_floor SERVER STREAM FILE
//!
//! Prints `published N messages in S s`; exits 1 on any error answer.

use std::time::{Duration, Instant};

use async_nats::header::{HeaderMap, HeaderName, HeaderValue, NATS_MESSAGE_ID};
use async_nats::jetstream::stream::{Config, StorageType};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};

const WINDOW: usize = 512;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, server, stream, file] = &args[..] else {
        return Err("usage: nats_publish_floor SERVER STREAM FILE".into());
    };
    let data = Bytes::from(std::fs::read(file)?);
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            lines.push(data.slice(start..i + 1));
            start = i + 1;
        }
    }
    let client = async_nats::connect(server.as_str()).await?;
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(Config {
        name: stream.clone(),
        subjects: vec!["floor.>".into()],
        storage: StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await?;
    let subjects: Vec<async_nats::Subject> = (0..8)
        .map(|p| format!("floor.bench~2Eproducts.{p}").into())
        .collect();
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(format!("{inbox}.*")).await?;
    let t0 = Instant::now();
    let (mut sent, mut live) = (0usize, 0usize);
    let check = |m: async_nats::Message| -> Result<(), String> {
        if m.payload.starts_with(b"{\"error\"") || m.status.is_some() {
            return Err(format!("publish refused: {:?}", m.payload));
        }
        Ok(())
    };
    while sent < lines.len() || live > 0 {
        if live <= WINDOW / 2 {
            while live < WINDOW && sent < lines.len() {
                let mut h = HeaderMap::new();
                h.insert(NATS_MESSAGE_ID, HeaderValue::from(format!("floor:{sent}")));
                h.insert(HeaderName::from_static("Binsync-Source"), "floor");
                h.insert(
                    HeaderName::from_static("Binsync-Seq"),
                    HeaderValue::from(sent.to_string()),
                );
                h.insert(
                    HeaderName::from_static("Binsync-Position"),
                    "mariadb-bin.000001:108140183 gtid=0-1-402 seq=400001",
                );
                h.insert(HeaderName::from_static("Binsync-Contract"), "3");
                let subject = subjects[sent % subjects.len()].clone();
                let reply = format!("{inbox}.{sent}");
                client
                    .publish_with_reply_and_headers(subject, reply, h, lines[sent].clone())
                    .await?;
                sent += 1;
                live += 1;
            }
        }
        let m = tokio::time::timeout(Duration::from_secs(10), answers.next())
            .await?
            .ok_or("the subscription ended")?;
        check(m)?;
        live -= 1;
        while let Some(Some(m)) = answers.next().now_or_never() {
            check(m)?;
            live -= 1;
        }
    }
    println!(
        "published {} messages in {:.3} s",
        lines.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
