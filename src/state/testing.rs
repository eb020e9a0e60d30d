//! A throwaway `nats-server -js` for the unit tests of this module (the integration tests
//! have the full harness in `tests/common/nats.rs`; unit tests cannot reach it). Own port,
//! own store dir, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nats {
    child: Child,
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Nats {
    pub fn start() -> Nats {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = launch(port, dir.path());
        Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            dir,
        }
    }

    /// Killed (SIGKILL): clients see the connection drop.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Started again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.child = launch(self.port, self.dir.path());
    }
}

/// Runs `nats-server -js` on `port` with its store in `dir`; returns once it accepts connections.
fn launch(port: u16, dir: &std::path::Path) -> Child {
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server");
    let mut cmd = Command::new(bin);
    // Killed with the test process too, if that dies without running the drops.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server (apt-get install nats-server)");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nats-server not up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
