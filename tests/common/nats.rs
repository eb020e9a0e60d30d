//! Throwaway `nats-server` processes with JetStream on, for the JetStream sink's tests.
//!
//! * [`NatsServer::start`] gives a private server on a free 127.0.0.1 port with its JetStream
//!   store in a temp dir (`-js -sd DIR`), a monitoring port of its own (`/healthz`), and waits
//!   until it answers there. The system server on 4222 is never touched.
//! * [`NatsCluster::start`] gives `n` such servers clustered by routes on 127.0.0.1 (cluster
//!   name `binsync-test`, server names `n0`..), ready once every node reports JetStream healthy
//!   (a meta leader elected); a stream created there with `num_replicas = 3` is RAFT-replicated.
//! * Every server is killed by pid when its guard drops, also when the test panics, and through
//!   `PR_SET_PDEATHSIG` when the test process dies outright; [`NatsServer::kill9`],
//!   [`NatsServer::stop`] and [`NatsServer::restart`] (same port, same store) are for the
//!   fault scenarios.
//!
//! Environment: `BINSYNC_NATS_SERVER` chooses another binary (default: PATH, then /usr/sbin).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, HashMap, HashSet};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde_json::Value;

use super::workload::{canonical_id, State};
use super::{free_port, harness_tempdir, kill_and_reap, read_lossy, signal, tail, wait_child};

/// How long a server may take to answer `/healthz` after its process starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BINSYNC_NATS_SERVER").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("nats-server not found in PATH or /usr/sbin: install it (apt-get install -y nats-server) or set BINSYNC_NATS_SERVER")
        })
}

/// One `nats-server` with JetStream, killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    pid: u32,
    port: u16,
    monitor_port: u16,
    /// Cluster routes port, when clustered.
    cluster_port: Option<u16>,
    name: String,
    /// Everything but the ports.
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// A single server with JetStream on a free port, ready.
    #[track_caller]
    pub fn start() -> NatsServer {
        let mut s = NatsServer::new("n0", None, Vec::new());
        s.launch_ready();
        s
    }

    /// A single server that also reads `config` (nats-server's config syntax, e.g.
    /// `max_payload: 65536`: some settings have no flag), ready.
    #[track_caller]
    pub fn start_with_config(config: &str) -> NatsServer {
        let mut s = NatsServer::new("n0", None, Vec::new());
        let path = s.dir.path().join("extra.conf");
        fs::write(&path, config).expect("write the nats-server config");
        s.args
            .extend(["-c".to_string(), path.display().to_string()]);
        s.launch_ready();
        s
    }

    fn new(name: &str, cluster_port: Option<u16>, extra: Vec<String>) -> NatsServer {
        let dir = harness_tempdir("binsync-proc-nats-");
        let mut args = vec![
            "-a".to_string(),
            "127.0.0.1".into(),
            "-js".into(),
            "-sd".into(),
            dir.path().join("js").display().to_string(),
            "--server_name".into(),
            name.to_string(),
            "-l".into(),
            dir.path().join("server.log").display().to_string(),
        ];
        args.extend(extra);
        NatsServer {
            child: None,
            pid: 0,
            port: free_port(),
            monitor_port: free_port(),
            cluster_port,
            name: name.to_string(),
            args,
            dir,
        }
    }

    fn launch(&mut self) {
        let console = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("console.log"))
            .expect("open console.log");
        let mut cmd = Command::new(nats_server_bin());
        cmd.arg("-p")
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor_port.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("dup console.log"))
            .stderr(console);
        let child = super::spawn_guarded(cmd)
            .unwrap_or_else(|e| panic!("spawn {}: {e}", nats_server_bin().display()));
        self.pid = child.id();
        self.child = Some(child);
    }

    #[track_caller]
    fn launch_ready(&mut self) {
        self.launch();
        self.wait_ready(false);
    }

    /// Waits until `/healthz` answers 200 (with `js`: `/healthz?js-enabled-only=true` is not in
    /// 2.9, so a clustered node is waited for through `/jsz` reporting a meta leader).
    #[track_caller]
    fn wait_ready(&mut self, clustered: bool) {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "nats-server {} (port {}) exited with {status} while starting:\n{}",
                        self.name,
                        self.port,
                        self.log_tail(30)
                    );
                }
            }
            let ok = if clustered {
                self.monitor("/jsz")
                    .is_some_and(|b| b.contains("\"leader\"") && b.contains("\"meta_cluster\""))
            } else {
                self.monitor("/healthz").is_some_and(|b| b.contains("ok"))
            };
            if ok {
                return;
            }
            if started.elapsed() > READY_TIMEOUT {
                panic!(
                    "nats-server {} (port {}) not ready after {READY_TIMEOUT:?}:\n{}",
                    self.name,
                    self.port,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The body of a GET on the monitoring port, or None if it does not answer 200.
    pub fn monitor(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.monitor_port).into(),
            Duration::from_secs(1),
        )
        .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        // nats-server answers in the request's version (HTTP/1.0 here).
        let status = head.lines().next()?;
        (status.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn store_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The end of the server's log, for a failing test's message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = read_lossy(&self.dir.path().join("server.log"));
        let console = read_lossy(&self.dir.path().join("console.log"));
        format!("{}{}", tail(&console, 5), tail(&log, lines))
    }

    /// SIGKILL (a crash) and reap. No-op if it is not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// SIGSTOP / SIGCONT: a server that hangs without closing its connections.
    pub fn pause(&self) {
        signal(self.pid, libc::SIGSTOP);
    }

    pub fn resume(&self) {
        signal(self.pid, libc::SIGCONT);
    }

    /// SIGTERM (lame-duck free clean shutdown); SIGKILL after 20 s. No-op if not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                signal(child.id(), libc::SIGTERM);
                if wait_child(&mut child, Duration::from_secs(20)).is_none() {
                    kill_and_reap(&mut child);
                }
            }
        }
    }

    /// Starts it again on the same ports and store (stopping it first if it runs), ready.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
        self.wait_ready(self.cluster_port.is_some());
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server ignores SIGKILL only until it is continued; SIGKILL works on a
            // stopped process, but reaping it needs it gone: continue it first to be sure.
            signal(child.id(), libc::SIGCONT);
            kill_and_reap(&mut child);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- nats-server {} port {} pid {}: end of log ---\n{}",
                self.name,
                self.port,
                self.pid,
                self.log_tail(20)
            );
        }
    }
}

/// `n` nats-servers clustered by routes on 127.0.0.1, JetStream on each.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` (≥ 3 for an R3 stream) nodes and waits until JetStream has a meta leader.
    #[track_caller]
    pub fn start(n: usize) -> NatsCluster {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<NatsServer> = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, &cp)| {
                NatsServer::new(
                    &format!("n{i}"),
                    Some(cp),
                    vec![
                        "--cluster_name".into(),
                        "binsync-test".into(),
                        "--cluster".into(),
                        format!("nats://127.0.0.1:{cp}"),
                        "--routes".into(),
                        routes.clone(),
                    ],
                )
            })
            .collect();
        for node in &mut nodes {
            node.launch();
        }
        for node in &mut nodes {
            node.wait_ready(true);
        }
        NatsCluster { nodes }
    }

    /// Every node's client URL (`nats://127.0.0.1:PORT`), for a client's server list.
    pub fn server_urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Every node, comma-separated after one scheme (what `--sink nats://` takes).
    pub fn urls(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("nats://{}", hosts.join(","))
    }
}

// --- reading a stream back, as the tests check it --------------------------------------------

/// One message of the stream as a consumer sees it.
#[derive(Debug, Clone)]
pub struct StreamMsg {
    pub subject: String,
    pub stream_seq: u64,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

impl StreamMsg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("the payload is one JSON object")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or_else(|| panic!("no {name} header in {self:?}"), String::as_str)
    }
    pub fn seq(&self) -> u64 {
        self.header("Binsync-Seq").parse().unwrap()
    }
}

pub async fn connect(urls: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(
            urls.trim_start_matches("nats://")
                .split(',')
                .map(|h| {
                    h.parse::<async_nats::ServerAddr>()
                        .expect("a server address")
                })
                .collect::<Vec<_>>(),
        )
        .await
        .expect("connect to nats")
}

/// Every message of stream `name`, in stream order (empty if the stream does not exist).
/// Retried for a while: in a cluster that just lost a node the stream's leader may be
/// elected meanwhile.
pub async fn read_stream(urls: &str, name: &str) -> Vec<StreamMsg> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match try_read_stream(urls, name).await {
            Ok(msgs) => return msgs,
            Err(e) if Instant::now() < deadline => {
                eprintln!("reading the stream again: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("cannot read stream {name}: {e}"),
        }
    }
}

pub async fn try_read_stream(urls: &str, name: &str) -> Result<Vec<StreamMsg>, String> {
    let js = jetstream::new(connect(urls).await);
    let mut s = match js.get_stream(name).await {
        Ok(s) => s,
        Err(e) => {
            return match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(Vec::new())
                }
                _ => Err(e.to_string()),
            }
        }
    };
    let info = s.info().await.map_err(|e| e.to_string())?.clone();
    if info.state.messages == 0 {
        return Ok(Vec::new());
    }
    let c = s
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("ordered consumer: {e}"))?;
    let mut messages = c.messages().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .map_err(|_| "no next message for 20 s".to_string())?
            .ok_or("the consumer ended")?
            .map_err(|e| e.to_string())?;
        let (stream_seq, pending) = {
            let i = m.info().map_err(|e| e.to_string())?;
            (i.stream_sequence, i.pending)
        };
        let mut headers = HashMap::new();
        if let Some(h) = &m.headers {
            for (k, vs) in h.iter() {
                let k: &str = k.as_ref();
                headers.insert(k.to_string(), vs[0].as_str().to_string());
            }
        }
        out.push(StreamMsg {
            subject: m.subject.to_string(),
            stream_seq,
            headers,
            payload: m.payload.to_vec(),
        });
        if pending == 0 {
            return Ok(out);
        }
    }
}

pub fn read_stream_blocking(urls: &str, name: &str) -> Vec<StreamMsg> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(read_stream(urls, name))
}

/// The consumer's state: per (table, id) the highest seq wins, a delete removes the row.
pub fn apply(msgs: &[StreamMsg]) -> State {
    let mut latest: BTreeMap<(String, String), (u64, Option<Value>)> = BTreeMap::new();
    for m in msgs {
        let v = m.json();
        if !matches!(
            v["op"].as_str(),
            Some("insert" | "update" | "delete" | "read")
        ) {
            continue;
        }
        let key = (
            v["table"].as_str().unwrap().to_string(),
            canonical_id(&v["id"]),
        );
        let seq = v["seq"].as_u64().unwrap();
        let row = (v["op"] != "delete").then(|| v["after"].clone());
        match latest.get(&key) {
            Some((s, _)) if *s >= seq => {}
            _ => {
                latest.insert(key, (seq, row));
            }
        }
    }
    latest
        .into_iter()
        .filter_map(|(k, (_, row))| row.map(|r| (k, r)))
        .collect()
}

/// Panics if two messages carry the same (source, seq); returns how many messages there are.
pub fn assert_no_duplicates(msgs: &[StreamMsg]) -> usize {
    let mut seen = HashSet::new();
    let mut dups = Vec::new();
    for m in msgs {
        let id = (m.header("Binsync-Source").to_string(), m.seq());
        if !seen.insert(id.clone()) {
            dups.push((id, m.stream_seq));
        }
    }
    assert!(
        dups.is_empty(),
        "{} duplicate (source, seq) in the stream, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(5)]
    );
    msgs.len()
}

pub fn gapless(msgs: &[StreamMsg]) -> bool {
    let mut seqs: Vec<u64> = msgs.iter().map(StreamMsg::seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    seqs.first()
        .zip(seqs.last())
        .is_none_or(|(f, l)| (l - f + 1) as usize == seqs.len())
}

/// Every seq from the first one to the last is in the stream (nothing lost in between).
pub fn assert_no_gaps(msgs: &[StreamMsg]) {
    let mut seqs: Vec<u64> = msgs.iter().map(StreamMsg::seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
        assert_eq!(
            (last - first + 1) as usize,
            seqs.len(),
            "gaps between seq {first} and {last}"
        );
    }
}
