//! `binsync check`: every setting and privilege binsync depends on, each with what we expect,
//! what the source has, and the line that fixes it.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::{binary_logs, history, Failure, Result, ServerInfo, SourceConfig};
use crate::checkpoint::Checkpoint;
use crate::gtid::Flavor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but with a caveat.
    Warn,
    /// binsync cannot run correctly.
    Fail,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub name: String,
    pub expected: String,
    pub actual: String,
    pub verdict: Verdict,
    pub fix: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        write!(
            f,
            "{tag} {:<22} expected {:<28} actual {}",
            self.name, self.expected, self.actual
        )?;
        if self.verdict != Verdict::Ok {
            write!(f, "\n     fix: {}", self.fix)?;
        }
        Ok(())
    }
}

fn finding(name: &str, expected: &str, actual: &str, verdict: Verdict, fix: &str) -> Finding {
    Finding {
        name: name.into(),
        expected: expected.into(),
        actual: actual.into(),
        verdict,
        fix: fix.into(),
    }
}

fn ok_if(cond: bool, otherwise: Verdict) -> Verdict {
    if cond {
        Verdict::Ok
    } else {
        otherwise
    }
}

pub async fn run_checks(
    conn: &mut Conn,
    src: &SourceConfig,
    info: &ServerInfo,
    checkpoint: Option<&Checkpoint>,
) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let cnf = "in the source's [mysqld] config, then restart it";
    out.push(finding(
        "log_bin",
        "ON",
        if info.log_bin { "ON" } else { "OFF" },
        ok_if(info.log_bin, Verdict::Fail),
        &format!("add log_bin=mysql-bin {cnf}"),
    ));
    out.push(finding(
        "binlog_format",
        "ROW",
        &info.binlog_format,
        ok_if(info.binlog_format == "ROW", Verdict::Fail),
        &format!("SET GLOBAL binlog_format=ROW; and binlog_format=ROW {cnf}"),
    ));
    out.push(finding(
        "binlog_row_image",
        "FULL",
        &info.row_image,
        ok_if(info.row_image == "FULL", Verdict::Fail),
        &format!("SET GLOBAL binlog_row_image=FULL; and binlog_row_image=FULL {cnf}"),
    ));
    match &info.row_metadata {
        Some(m) => out.push(finding(
            "binlog_row_metadata",
            "FULL",
            m,
            ok_if(m == "FULL", Verdict::Warn),
            &format!("SET GLOBAL binlog_row_metadata=FULL; and binlog_row_metadata=FULL {cnf} (without it, column names come from information_schema and a DDL can race)"),
        )),
        None => out.push(finding(
            "binlog_row_metadata",
            "FULL",
            "not supported by this version",
            Verdict::Warn,
            "upgrade to MySQL 8.0.1+ or MariaDB 10.5+; until then column names come from information_schema",
        )),
    }
    match info.flavor() {
        Flavor::Mysql => {
            let mode = info.gtid_mode.clone().unwrap_or_else(|| "OFF".into());
            out.push(finding(
                "gtid_mode",
                "ON",
                &mode,
                ok_if(mode == "ON", Verdict::Warn),
                "enable gtid_mode=ON and enforce_gtid_consistency=ON (binsync falls back to file positions, which do not survive a failover)",
            ));
        }
        Flavor::Mariadb => {
            let strict = info.gtid_strict_mode.unwrap_or(false);
            out.push(finding(
                "gtid_strict_mode",
                "ON",
                if strict { "ON" } else { "OFF" },
                ok_if(strict, Verdict::Warn),
                &format!("SET GLOBAL gtid_strict_mode=ON; and gtid_strict_mode=ON {cnf}"),
            ));
        }
    }
    out.extend(privileges(conn, src, info).await?);
    if let Some(cp) = checkpoint {
        let logs = binary_logs(conn, src).await.unwrap_or_default();
        let have = logs.iter().any(|(n, _)| *n == cp.position.file);
        let oldest = logs
            .first()
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| "none".into());
        let same = cp.server.same_server(&info.identity);
        out.push(finding(
            "binlog retention",
            &format!("has {}", cp.position.file),
            &format!("oldest binlog {oldest}"),
            ok_if(have || !same, Verdict::Fail),
            "the checkpoint's binlog was purged: restart with --reset --start earliest (changes in between are lost), and keep binlogs longer (binlog_expire_logs_seconds)",
        ));
        out.push(history_finding(conn, src, info, cp).await?);
    }
    Ok(out)
}

/// Whether the source still holds the history the checkpoint was read from (the check a run
/// makes before it resumes, [`history::verify`]).
async fn history_finding(
    conn: &mut Conn,
    src: &SourceConfig,
    info: &ServerInfo,
    cp: &Checkpoint,
) -> Result<Finding> {
    let name = "binlog history";
    let expected = "holds the checkpoint's";
    match history::verify(conn, src, info, &cp.position, Some(&cp.server)).await {
        Ok(()) => Ok(finding(name, expected, "holds it", Verdict::Ok, "")),
        Err(Failure::Definite(e)) => {
            let fix = e.to_string();
            let actual = match &e {
                super::SourceError::HistoryLost { found, .. } => found.clone(),
                _ => "cannot resume here".to_string(),
            };
            Ok(finding(name, expected, &actual, Verdict::Fail, &fix))
        }
        Err(transient) => Err(transient),
    }
}

async fn privileges(
    conn: &mut Conn,
    src: &SourceConfig,
    info: &ServerInfo,
) -> Result<Vec<Finding>> {
    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(|e| super::classify(e, src))?;
    let all = grants.join("\n").to_ascii_uppercase();
    let global: Vec<&str> = all.lines().filter(|l| l.contains(" ON *.* ")).collect();
    let has = |p: &str| {
        global
            .iter()
            .any(|l| l.contains("ALL PRIVILEGES") || l.contains(p))
    };
    let user = &src.user;
    let mut out = Vec::new();
    out.push(finding(
        "REPLICATION SLAVE",
        "granted",
        if has("REPLICATION SLAVE") {
            "granted"
        } else {
            "missing"
        },
        ok_if(has("REPLICATION SLAVE"), Verdict::Fail),
        &format!("GRANT REPLICATION SLAVE ON *.* TO '{user}'@'%';"),
    ));
    // MariaDB 10.5 renamed REPLICATION CLIENT to BINLOG MONITOR.
    let client = has("REPLICATION CLIENT") || has("BINLOG MONITOR");
    let client_name = match info.flavor() {
        Flavor::Mariadb => "BINLOG MONITOR",
        Flavor::Mysql => "REPLICATION CLIENT",
    };
    out.push(finding(
        client_name,
        "granted",
        if client { "granted" } else { "missing" },
        ok_if(client, Verdict::Fail),
        &format!("GRANT {client_name} ON *.* TO '{user}'@'%';"),
    ));
    let select = has("SELECT") || all.contains("GRANT SELECT");
    out.push(finding(
        "SELECT",
        "granted",
        if select { "granted" } else { "missing" },
        ok_if(select, Verdict::Warn),
        &format!("GRANT SELECT ON *.* TO '{user}'@'%'; (needed for information_schema lookups)"),
    ));
    Ok(out)
}
