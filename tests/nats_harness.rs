//! The NATS test harness itself (tests/common/nats.rs), against real nats-server processes:
//! a single server with JetStream, restarted on its own store; a cluster of three holding an
//! R3 stream through the loss of a node. The JetStream tests build on both.

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::nats::{NatsCluster, NatsServer};

async fn publish(js: &jetstream::Context, subject: &str, body: &str) -> u64 {
    let ack = js
        .publish(subject.to_string(), body.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("publish ack");
    ack.sequence
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_server_keeps_its_stream_across_a_kill_and_restart() {
    let mut server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "t".into(),
        subjects: vec!["t.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream");
    assert_eq!(publish(&js, "t.a", "1").await, 1);
    assert_eq!(publish(&js, "t.a", "2").await, 2);

    server.kill9();
    assert!(!server.is_running());
    server.restart();
    let client = async_nats::connect(server.url()).await.expect("reconnect");
    let js = jetstream::new(client);
    let mut s = js.get_stream("t").await.expect("the stream survived");
    assert_eq!(s.info().await.expect("info").state.messages, 2);
    assert_eq!(publish(&js, "t.a", "3").await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_of_three_keeps_an_r3_stream_writable_without_one_node() {
    let mut cluster = NatsCluster::start(3);
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(
            cluster
                .server_urls()
                .iter()
                .map(|u| u.parse::<async_nats::ServerAddr>().expect("server address"))
                .collect::<Vec<_>>(),
        )
        .await
        .expect("connect to the cluster");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "r3".into(),
        subjects: vec!["r3.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .expect("create an R3 stream");
    for i in 1..=10u64 {
        assert_eq!(publish(&js, "r3.x", &i.to_string()).await, i);
    }
    // Whichever node leads the stream: losing one of three keeps a quorum.
    cluster.nodes[0].kill9();
    let mut last = 10;
    for i in 11..=20u64 {
        // A publish racing the stream's leader election may time out; JetStream then
        // elects a new leader within seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match js.publish("r3.x", i.to_string().into()).await {
                Ok(ack) => match ack.await {
                    Ok(a) => {
                        assert!(a.sequence > last, "sequence {} after {last}", a.sequence);
                        last = a.sequence;
                        break;
                    }
                    Err(e) if std::time::Instant::now() < deadline => {
                        eprintln!("retrying publish {i}: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("publish {i} never acked: {e}"),
                },
                Err(e) => panic!("publish {i}: {e}"),
            }
        }
    }
    let mut s = js.get_stream("r3").await.expect("stream");
    let messages = s.info().await.expect("info").state.messages;
    assert!(messages >= 20, "{messages} messages after the node loss");
}
