//! Scenario: binsync asks a real MariaDB's information_schema what the binlog does not say
//! (column names, primary key, JSON columns). When the server kills the lookup's connection,
//! the next lookup fails as transient (the pipeline reconnects and asks again) and the one
//! after reconnects and answers. A table the server does not show (dropped, or hidden from a
//! user without privileges on it) is no error but no answer.

mod common;

use std::time::Duration;

use binsync::decode::{LookupError, SchemaLookup};
use binsync::{InfoSchemaLookup, SourceConfig};
use common::{MariaDb, ServerOpts};

fn lookup_at(url: &str) -> InfoSchemaLookup {
    InfoSchemaLookup::new(
        SourceConfig::new(
            url,
            None,
            "BINSYNC_SOURCE_PASSWORD",
            Duration::from_secs(10),
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn a_killed_lookup_connection_fails_as_transient_and_the_next_lookup_reconnects() {
    let db = MariaDb::start(ServerOpts {
        binlog: false,
        ..Default::default()
    });
    db.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.orders (id INT PRIMARY KEY, note JSON, state ENUM('new','paid'),
           qty INT UNSIGNED);",
    );
    let mut lookup = lookup_at(&db.url());
    let extra = lookup.lookup("shop", "orders").await.unwrap().unwrap();
    assert_eq!(extra.columns, ["id", "note", "state", "qty"]);
    assert_eq!(extra.pk, [0]);
    assert_eq!(
        extra.json_columns,
        [1],
        "MariaDB's JSON is LONGTEXT with a CHECK"
    );
    assert_eq!(extra.unsigned, [3]);
    assert_eq!(extra.enum_labels, [(2, vec!["new".into(), "paid".into()])]);

    // Every other client connection is the lookup's.
    for id in db.rows(
        "SELECT ID FROM information_schema.PROCESSLIST \
         WHERE USER = 'root' AND ID <> CONNECTION_ID()",
    ) {
        db.sql(&format!("KILL {}", id[0]));
    }
    let e = lookup.lookup("shop", "orders").await.unwrap_err();
    assert!(matches!(e, LookupError::Transient { .. }), "{e}");
    assert!(e.to_string().contains("shop.orders"), "{e}");
    let again = lookup.lookup("shop", "orders").await.unwrap().unwrap();
    assert_eq!(again.columns, extra.columns);

    assert!(lookup.lookup("shop", "gone").await.unwrap().is_none());
}

#[tokio::test]
async fn a_user_without_privileges_on_the_table_gets_no_answer_not_an_error() {
    let db = MariaDb::start(ServerOpts {
        binlog: false,
        ..Default::default()
    });
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY);");
    // What binsync's replication needs, but no SELECT: information_schema hides the table.
    db.create_user("repl", "pw", "REPLICATION SLAVE, REPLICATION CLIENT");
    let mut lookup = lookup_at(&db.url_as("repl", "pw"));
    assert!(lookup.lookup("shop", "orders").await.unwrap().is_none());
}
