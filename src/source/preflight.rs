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
            &format!("SET GLOBAL binlog_row_metadata=FULL; and binlog_row_metadata=FULL {cnf} (without it, column names come from binsync's schema history, and a DDL it cannot follow stops it until `binsync schema refresh`)"),
        )),
        None => out.push(finding(
            "binlog_row_metadata",
            "FULL",
            "not supported by this version",
            Verdict::Warn,
            "upgrade to MySQL 8.0.1+ or MariaDB 10.5+; until then column names come from binsync's schema history",
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
    let (grants, active) = effective_grants(conn, src, info).await?;
    let all = grants.join("\n").to_ascii_uppercase();
    let global: Vec<&str> = all.lines().filter(|l| l.contains(" ON *.* ")).collect();
    let has = |p: &str| {
        global
            .iter()
            .any(|l| l.contains("ALL PRIVILEGES") || l.contains(p))
    };
    let user = &src.user;
    // Roles granted to the user but not active in its sessions give it nothing.
    let idle_roles = idle_roles(&grants, &active);
    let roles_hint = if idle_roles.is_empty() {
        String::new()
    } else {
        let set_default = match info.flavor() {
            Flavor::Mysql => {
                format!("SET DEFAULT ROLE ALL TO '{user}'@'%' (or activate_all_roles_on_login=ON)")
            }
            Flavor::Mariadb => format!("SET DEFAULT ROLE {} FOR '{user}'@'%'", idle_roles[0]),
        };
        format!(
            " (or, since the role {} is granted but not active at login: {set_default})",
            idle_roles.join(", ")
        )
    };
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
        &format!("GRANT REPLICATION SLAVE ON *.* TO '{user}'@'%';{roles_hint}"),
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
        &format!("GRANT {client_name} ON *.* TO '{user}'@'%';{roles_hint}"),
    ));
    let select = has("SELECT") || all.contains("GRANT SELECT");
    out.push(finding(
        "SELECT",
        "granted",
        if select { "granted" } else { "missing" },
        ok_if(select, Verdict::Warn),
        &format!("GRANT SELECT ON *.* TO '{user}'@'%'; (needed to seed the schema history with SHOW CREATE TABLE: without it, tables are unknown to binsync){roles_hint}"),
    ));
    Ok(out)
}

/// The grants that hold in binsync's sessions, and the roles active at login (default roles,
/// or all with MySQL's activate_all_roles_on_login), by name. MariaDB's SHOW GRANTS lists the
/// active role's privileges itself; MySQL's lists only the role's name unless asked `USING`
/// the roles, which `CURRENT_ROLE()` names in the form it takes.
async fn effective_grants(
    conn: &mut Conn,
    src: &SourceConfig,
    info: &ServerInfo,
) -> Result<(Vec<String>, Vec<String>)> {
    // MySQL: NONE without an active role; MariaDB: NULL. An error where there are no roles.
    let current: Option<Option<String>> = conn
        .query_first("SELECT CURRENT_ROLE()")
        .await
        .unwrap_or(None);
    let current = current.flatten().filter(|r| !r.is_empty() && r != "NONE");
    let sql = match (&current, info.flavor()) {
        (Some(roles), Flavor::Mysql) => format!("SHOW GRANTS FOR CURRENT_USER() USING {roles}"),
        _ => "SHOW GRANTS".to_string(),
    };
    let grants = conn.query(sql).await.map_err(|e| super::classify(e, src))?;
    let active = current
        .map(|r| r.split(',').map(role_name).collect())
        .unwrap_or_default();
    Ok((grants, active))
}

/// `` `r`@`%` `` or `r` -> `r`.
fn role_name(role: &str) -> String {
    let role = role.trim();
    let name = role.split('@').next().unwrap_or(role);
    name.trim_matches(|c| c == '`' || c == '\'' || c == '"')
        .to_string()
}

/// Roles granted to the user (a grant line without ON: `` GRANT `r`@`%` TO ... ``) that are
/// not among the `active` ones: granted, but giving the user nothing.
fn idle_roles(grants: &[String], active: &[String]) -> Vec<String> {
    let mut idle = Vec::new();
    for line in grants {
        if !line.starts_with("GRANT ") || line.contains(" ON ") {
            continue;
        }
        let Some(to) = line.find(" TO ") else {
            continue;
        };
        for role in line["GRANT ".len()..to].split(',') {
            if !active.contains(&role_name(role)) {
                idle.push(role.trim().to_string());
            }
        }
    }
    idle
}
