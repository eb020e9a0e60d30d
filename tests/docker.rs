//! Scenario (opt-in, needs a Docker engine): the core round trip against MySQL 8.4 and
//! MariaDB 11 containers. binsync streams inserts, an update and a delete from each and
//! `--exit-at-end` returns with every change in the file sink, values exact; then `check` and
//! `status --source` pass (on 8.4 through its new statements: SHOW BINARY LOG STATUS, SHOW
//! REPLICAS). scripts/test.sh compiles it; the MySQL test double (tests/mysql_double) plays
//! the same statements where no Docker engine is.
//!
//! `cargo test --features docker-tests --test docker`. Without the feature this file is empty;
//! the default suite uses local `mariadbd` processes (tests/common) instead.
#![cfg(feature = "docker-tests")]

use std::time::Duration;

use mysql_async::prelude::Queryable;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

async fn round_trip(url: &str) {
    let mut conn = {
        let mut tries = 0;
        loop {
            match mysql_async::Conn::from_url(url).await {
                Ok(c) => break c,
                Err(e) if tries < 60 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => panic!("cannot connect to {url}: {e}"),
            }
        }
    };
    conn.query_drop(
        "CREATE DATABASE shop;
         CREATE TABLE shop.products (id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(20), price DECIMAL(10,2), tags JSON);
         INSERT INTO shop.products VALUES (18446744073709551615, 'max', 1.50, '{\"a\": [1, \"ü\"]}');
         UPDATE shop.products SET price = 2.25;
         DELETE FROM shop.products;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_binsync"))
        .args([
            "run",
            "--source",
            url,
            "--server-id",
            "4242",
            "--state-dir",
            dir.path().join("state").to_str().unwrap(),
            "--sink",
            &format!("file:{}", out.display()),
            "--exit-at-end",
        ])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&str> = lines.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["insert", "update", "delete"]);
    assert_eq!(lines[0]["id"]["id"], u64::MAX);
    assert_eq!(
        lines[0]["after"]["tags"],
        serde_json::json!({"a": [1, "ü"]})
    );
    assert_eq!(lines[1]["after"]["price"], "2.25");

    // The statements an operator's checks send (on MySQL 8.4: SHOW BINARY LOG STATUS, SHOW
    // REPLICAS, no SHOW MASTER STATUS), against the state the run left.
    for args in [
        vec!["check", "--source", url],
        vec![
            "status",
            "--state-dir",
            dir.path().join("state").to_str().unwrap(),
            "--source",
            url,
        ],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_binsync"))
            .args(&args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn mysql_8_4_round_trip() {
    let mysql = GenericImage::new("mysql", "8.4")
        .with_wait_for(WaitFor::message_on_stderr(
            "port: 3306  MySQL Community Server",
        ))
        .with_exposed_port(3306.tcp())
        .with_env_var("MYSQL_ROOT_PASSWORD", "root")
        .with_cmd([
            "--server-id=1",
            "--log-bin=mysql-bin",
            "--binlog-format=ROW",
            "--binlog-row-metadata=FULL",
            "--gtid-mode=ON",
            "--enforce-gtid-consistency=ON",
        ])
        .start()
        .await
        .expect("start MySQL 8.4 (is Docker running?)");
    let port = mysql.get_host_port_ipv4(3306.tcp()).await.unwrap();
    round_trip(&format!("mysql://root:root@127.0.0.1:{port}")).await;
}

#[tokio::test]
async fn mariadb_11_round_trip() {
    let maria = GenericImage::new("mariadb", "11")
        .with_wait_for(WaitFor::message_on_stderr("ready for connections"))
        .with_exposed_port(3306.tcp())
        .with_env_var("MARIADB_ROOT_PASSWORD", "root")
        .with_cmd([
            "--server-id=1",
            "--log-bin=mariadb-bin",
            "--binlog-format=ROW",
            "--binlog-row-metadata=FULL",
        ])
        .start()
        .await
        .expect("start MariaDB 11 (is Docker running?)");
    let port = maria.get_host_port_ipv4(3306.tcp()).await.unwrap();
    round_trip(&format!("mysql://root:root@127.0.0.1:{port}")).await;
}
