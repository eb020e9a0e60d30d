//! Scenario: the operator grants binsync's privileges to a role, as their security policy
//! wants, and runs `binsync check` before the first run (real MariaDB). Privileges of a role
//! active at login count; a role granted but not active gives nothing, and check says how to
//! activate it.

mod common;

use std::time::Duration;

use common::{MariaDb, Proc, ServerOpts};

fn check(db: &MariaDb) -> (bool, String) {
    let mut p = Proc::spawn(&["check", "--source", &db.url_as("cdc", "cdc-pw")], &[]);
    let st = p.wait_timeout(Duration::from_secs(30)).expect("check hung");
    (st.success(), p.stdout())
}

fn line(out: &str, name: &str) -> String {
    out.lines()
        .find(|l| l.contains(name))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn privileges_through_a_role_count_once_it_is_active_at_login() {
    let db = MariaDb::start(ServerOpts::default());
    db.sql(
        "CREATE ROLE binsync_role;\n\
         GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO binsync_role;\n\
         CREATE USER cdc@'%' IDENTIFIED BY 'cdc-pw';\n\
         GRANT binsync_role TO cdc@'%';",
    );
    let (ok, out) = check(&db);
    assert!(!ok, "{out}");
    assert!(!line(&out, "REPLICATION SLAVE").starts_with("ok"), "{out}");
    assert!(
        out.contains("is granted but not active at login")
            && out.contains("SET DEFAULT ROLE `binsync_role` FOR 'cdc'@'%'"),
        "{out}"
    );

    db.sql("SET DEFAULT ROLE binsync_role FOR cdc@'%';");
    let (ok, out) = check(&db);
    for name in ["REPLICATION SLAVE", "BINLOG MONITOR", "SELECT"] {
        assert!(line(&out, name).starts_with("ok"), "{name}:\n{out}");
    }
    assert!(ok, "{out}");
}
