//! Scenario: an operator starts binsync from `docker/` (issue 13, containers). No machine here
//! has a Docker engine, so the files are checked as files:
//! - every binsync command line in `docker/compose.yml` parses with binsync's own CLI parser
//!   and resolves to settings, as the image's entrypoint (`binsync`) would take it;
//! - the MySQL service has the settings of README's "What the source needs", and binsync
//!   connects as the account its init file grants the privileges listed there; binsync's sink
//!   is the receiver service, on the port it listens on;
//! - `docker/Dockerfile` copies every crate the build needs, its runtime stage is not the
//!   builder and runs as a non-root user, and `.dockerignore` keeps `target/` out of the
//!   build context.

use std::path::{Path, PathBuf};

use binsync::config::{Cli, Command, FileConfig, ReceiveSettings, RunSettings};
use clap::Parser;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Yaml {
    let text = std::fs::read_to_string(repo().join("docker/compose.yml")).unwrap();
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("compose.yml: {e}"));
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

fn strings(y: &Yaml, what: &str) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what}: write it as a list of strings, not {y:?}"))
        .iter()
        .map(|v| match v {
            Yaml::String(s) => s.clone(),
            other => panic!("{what}: {other:?} is not a string"),
        })
        .collect()
}

/// The services that run the binsync image, with their command lines (the entrypoint is
/// `binsync`, so `command:` holds its arguments).
fn binsync_services(doc: &Yaml) -> Vec<(String, Vec<String>)> {
    let services = doc["services"].as_hash().expect("a services map");
    services
        .iter()
        .filter(|(_, s)| {
            s["build"]["dockerfile"]
                .as_str()
                .is_some_and(|d| d.ends_with("docker/Dockerfile"))
                || s["image"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("binsync"))
        })
        .map(|(name, s)| {
            let name = name.as_str().unwrap().to_string();
            let command = strings(&s["command"], &format!("services.{name}.command"));
            (name, command)
        })
        .collect()
}

fn parse(name: &str, command: &[String]) -> Cli {
    let argv = std::iter::once("binsync".to_string()).chain(command.iter().cloned());
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("services.{name}.command {command:?}:\n{}", e.render()))
}

/// `--flag=value` or `--flag value` in a command line.
fn flag<'a>(command: &'a [String], name: &str) -> Option<&'a str> {
    command.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(name).and_then(|rest| match rest {
            "" => command.get(i + 1).map(String::as_str),
            r => r.strip_prefix('='),
        })
    })
}

#[test]
fn every_binsync_command_in_compose_parses_and_resolves() {
    let doc = compose();
    let services = binsync_services(&doc);
    let mut seen = Vec::new();
    for (name, command) in &services {
        match parse(name, command).command {
            Command::Run(args) => {
                RunSettings::resolve(&args, &FileConfig::default())
                    .unwrap_or_else(|e| panic!("services.{name}: {e}"));
                seen.push("run");
            }
            Command::Receive(args) => {
                ReceiveSettings::resolve(args).unwrap_or_else(|e| panic!("services.{name}: {e}"));
                seen.push("receive");
            }
            other => panic!("services.{name}: unexpected {other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, ["receive", "run"], "binsync services: {services:?}");
}

#[test]
fn the_compose_source_is_set_up_as_binsync_needs() {
    let doc = compose();
    let services = binsync_services(&doc);
    let command = |sub: &str| {
        services
            .iter()
            .find(|(_, c)| c.first().map(String::as_str) == Some(sub))
            .unwrap_or_else(|| panic!("no `{sub}` service"))
    };
    let (run_name, run) = command("run");
    let (receiver_name, receive) = command("receive");

    // The source: MySQL 8.4 with the settings binsync checks (`binsync check`).
    let mysql = &doc["services"]["mysql"];
    assert!(
        mysql["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("mysql:8.4")),
        "{mysql:?}"
    );
    let server = strings(&mysql["command"], "services.mysql.command");
    let server: Vec<String> = server.iter().map(|a| a.replace('_', "-")).collect();
    for needed in [
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
        "--gtid-mode=ON",
        "--enforce-gtid-consistency=ON",
    ] {
        assert!(server.iter().any(|a| a == needed), "mysql lacks {needed}");
    }

    // binsync logs in as the account the init file grants what it needs, with its password.
    let source = flag(run, "--source").expect("run --source");
    let user = source
        .strip_prefix("mysql://")
        .and_then(|r| r.split('@').next())
        .expect("mysql://USER@HOST:PORT");
    assert!(!user.contains(':'), "the password stays out of the URL");
    let env = &mysql["environment"];
    assert_eq!(env["MYSQL_USER"].as_str(), Some(user));
    assert_eq!(
        doc["services"][run_name.as_str()]["environment"]["BINSYNC_SOURCE_PASSWORD"].as_str(),
        env["MYSQL_PASSWORD"].as_str(),
        "binsync's password is the account's"
    );
    assert!(source.contains("@mysql:3306"), "{source}");
    let volumes = strings(&mysql["volumes"], "services.mysql.volumes");
    let init = volumes
        .iter()
        .find_map(|v| v.strip_suffix(":/docker-entrypoint-initdb.d:ro"))
        .expect("an init directory mounted at /docker-entrypoint-initdb.d");
    let init_dir = repo().join("docker").join(init);
    let sql: String = std::fs::read_dir(&init_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", init_dir.display()))
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    let grant =
        format!("GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '{user}'@'%';");
    assert!(
        sql.contains(&grant),
        "no `{grant}` in {}",
        init_dir.display()
    );

    // The sink is the receiver service, on the port it listens on.
    let sink = flag(run, "--sink").expect("run --sink");
    let listen = flag(receive, "--listen").expect("receive --listen");
    let port = listen.rsplit(':').next().unwrap();
    assert!(
        sink.starts_with(&format!("http://{receiver_name}:{port}/")),
        "{sink} is not the receiver at :{port}"
    );

    // Metrics on every interface of the container, on the port compose publishes.
    let metrics = flag(run, "--metrics-listen").expect("run --metrics-listen");
    let (host, port) = metrics
        .rsplit_once(':')
        .expect("--metrics-listen HOST:PORT");
    assert_eq!(host, "0.0.0.0", "reachable from outside the container");
    let ports = strings(
        &doc["services"][run_name.as_str()]["ports"],
        "services.binsync.ports",
    );
    assert!(
        ports.iter().any(|p| p.ends_with(&format!(":{port}"))),
        "the metrics port {port} is not published: {ports:?}"
    );
}

#[test]
fn the_dockerfile_builds_every_crate_and_runs_unprivileged() {
    let dockerfile = std::fs::read_to_string(repo().join("docker/Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    assert!(stages.len() >= 2, "a multi-stage build");
    let (build, runtime) = (stages[0], stages[stages.len() - 1]);
    assert!(
        !runtime.starts_with("rust"),
        "the runtime is not the builder"
    );
    let user = runtime
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    assert!(!matches!(user.trim(), "root" | "0" | "0:0"), "USER {user}");

    // Every directory the build reads is copied into the build stage: the workspace members
    // and the path dependencies.
    let copied: Vec<&str> = build
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1].to_vec()
        })
        .collect();
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap()).unwrap();
    let mut needed: Vec<String> = vec!["Cargo.toml".into(), "Cargo.lock".into(), "src".into()];
    for m in manifest["workspace"]["members"].as_array().unwrap() {
        needed.push(m.as_str().unwrap().to_string());
    }
    for (_, dep) in manifest["dependencies"].as_table().unwrap() {
        if let Some(path) = dep.get("path").and_then(|p| p.as_str()) {
            needed.push(path.to_string());
        }
    }
    for n in needed.iter().filter(|n| *n != ".") {
        assert!(
            copied.iter().any(|c| Path::new(n).starts_with(c)),
            "the build stage does not copy {n} (copies {copied:?})"
        );
    }

    // The context is the repository root: target/ (gigabytes) must stay out of it, and what
    // the build copies must stay in.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let excluded = |path: &str| {
        let mut out = false;
        for r in &rules {
            let (negated, pattern) = match r.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, *r),
            };
            let first = path.split('/').next().unwrap();
            if pattern == "*" || pattern == path || pattern == first {
                out = !negated;
            }
        }
        out
    };
    assert!(excluded("target"), ".dockerignore lets target/ in");
    for c in &copied {
        assert!(
            !excluded(c),
            ".dockerignore leaves out {c}, which the build copies"
        );
    }
}
