//! Helpers for tests that run the project's binaries as real processes.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// Path of a binary built in this workspace's target directory (next to the test binary's
/// `deps/` folder). `make test` builds them (`cargo build --workspace --bins`) before
/// running the tests, since nextest builds only the binaries of the package under test.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `make test`, or `cargo build --workspace --bins` before nextest",
        path.display()
    );
    path
}

/// A name unique to this process and call site, for DPDK `--file-prefix` and vdev names.
pub fn unique_prefix(tag: &str) -> String {
    format!("{tag}{}", std::process::id())
}

/// Prints the counters of the vrouters behind these control sockets if the test thread is
/// panicking when it is dropped: which vif saw what, and drops by reason, so a failed
/// end-to-end scenario says which hop lost the packet.
#[derive(Debug)]
pub struct DumpOnFailure(pub Vec<PathBuf>);

impl Drop for DumpOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for s in &self.0 {
            let stats = vrouter::control::Client::connect(s)
                .and_then(|mut c| c.call(vrouter::control::Op::Stats))
                .map(|r| r.data.unwrap_or_default());
            match stats {
                Ok(v) => eprintln!(
                    "vrouter at {}: vifs {} drops {} flows {}",
                    s.display(),
                    v["vifs"],
                    v["drops"],
                    v["flow_table"]
                ),
                Err(e) => eprintln!("vrouter at {}: unreachable ({e})", s.display()),
            }
        }
    }
}

/// Prints the files `names` of `dir` (process logs) to stderr when the test thread is
/// panicking; for the `Drop` of a test's scratch directory.
pub fn print_logs_on_failure(dir: &std::path::Path, names: &[&str]) {
    if !std::thread::panicking() {
        return;
    }
    for f in names {
        eprintln!(
            "--- {f}:\n{}",
            std::fs::read_to_string(dir.join(f)).unwrap_or_default()
        );
    }
}

/// Waits until `f` holds, checking every 50 ms, for at most `limit`; panics naming `what`.
/// For state that another process changes on its own time (a file read again, counters
/// published, routes programmed): a slow machine gives a slow pass, not a false fail.
pub fn wait_until(what: &str, limit: std::time::Duration, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs a command, returning its output (panics only if it cannot be started).
pub fn sh(args: &[&str]) -> std::process::Output {
    std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command that must succeed.
pub fn ok(args: &[&str]) {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs a command inside network namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> std::process::Output {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    sh(&full)
}

/// A `vrouter run` started for a test, with its control socket and log in `dir`; killed
/// when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The process.
    pub child: std::process::Child,
    /// Its control socket.
    pub socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `vrouter run --config CONFIG` without hugepages on lcore 0 and waits (15 s at
    /// most) until its control socket answers; on failure the panic shows its log.
    pub fn start(
        dir: &std::path::Path,
        name: &str,
        config: &std::path::Path,
        mbufs: u32,
        mem_mb: u32,
    ) -> Daemon {
        Self::start_lcores(dir, name, config, (mbufs, mem_mb), 1)
    }

    /// [`Daemon::start`] with `lcores` forwarding lcores (EAL workers spread over the
    /// machine's CPUs, sleeping when idle so that tests on two CPUs share them).
    pub fn start_lcores(
        dir: &std::path::Path,
        name: &str,
        config: &std::path::Path,
        (mbufs, mem_mb): (u32, u32),
        lcores: usize,
    ) -> Daemon {
        let socket = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("daemon log");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let lcore_args: Vec<String> = match lcores {
            0 | 1 => vec!["-l".into(), "0".into()],
            n => vec![
                "--lcores".into(),
                (0..=n)
                    .map(|i| format!("{i}@{}", i % cpus))
                    .collect::<Vec<_>>()
                    .join(","),
            ],
        };
        let child = std::process::Command::new(workspace_bin("vrouter"))
            .args(["run", "--config"])
            .arg(config)
            .arg("--socket")
            .arg(&socket)
            .args(["--mbufs", &mbufs.to_string()])
            .args(if lcores > 1 {
                &["--idle-sleep-us", "200"][..]
            } else {
                &[][..]
            })
            .args(["--", "--no-huge", "-m", &mem_mb.to_string()])
            .args(&lcore_args)
            .args(["--file-prefix", &unique_prefix(&format!("vr{name}"))])
            .stdout(out.try_clone().expect("daemon log"))
            .stderr(out)
            .spawn()
            .expect("start vrouter");
        let d = Daemon { child, socket, log };
        let t = std::time::Instant::now();
        while vrouter::control::Client::connect(&d.socket)
            .and_then(|mut c| c.call(vrouter::control::Op::Hello))
            .is_err()
        {
            if t.elapsed() > std::time::Duration::from_secs(15) {
                panic!("vrouter {name} did not start:\n{}", d.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        d
    }

    /// What the daemon printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A helper process (a server in a pod) killed when dropped, also when a test fails.
#[derive(Debug)]
pub struct Reap(pub std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether two pings from namespace `ns` to `ip` are answered.
pub fn pings(ns: &str, ip: &str) -> bool {
    in_ns(ns, &["ping", "-c", "2", "-i", "0.2", "-W", "1", ip])
        .status
        .success()
}

/// Whether `ns` reaches `ip` by ping within 20 s (one ping at a time until one is
/// answered): for what must work, so that a slow machine gives a slow pass. What must not
/// work is checked with [`pings`], which waits no longer than its pings.
pub fn pings_within(ns: &str, ip: &str) -> bool {
    let t = std::time::Instant::now();
    loop {
        if in_ns(ns, &["ping", "-c", "1", "-W", "2", ip])
            .status
            .success()
        {
            return true;
        }
        if t.elapsed() > std::time::Duration::from_secs(20) {
            return false;
        }
    }
}

/// Whether a TCP connection from `ns` to `ip`:`port` is accepted within 20 s (tried again
/// until one is): for what must work, like [`pings_within`].
pub fn tcp_connects_within(ns: &str, ip: &str, port: u16) -> bool {
    let t = std::time::Instant::now();
    loop {
        if tcp_connects(ns, ip, port) {
            return true;
        }
        if t.elapsed() > std::time::Duration::from_secs(20) {
            return false;
        }
    }
}

/// Whether a TCP connection from namespace `ns` to `ip`:`port` is accepted (2 s timeout).
pub fn tcp_connects(ns: &str, ip: &str, port: u16) -> bool {
    let code = format!(
        "import socket\ntry:\n    socket.create_connection(('{ip}', {port}), timeout=2).close(); print('ok')\n\
         except OSError as e:\n    print('blocked', e)"
    );
    let o = in_ns(ns, &["python3", "-c", &code]);
    String::from_utf8_lossy(&o.stdout).starts_with("ok")
}

/// A TCP server in namespace `ns` on `ip`:`port` that accepts and closes every
/// connection; returned once it listens, stopped when dropped.
pub fn tcp_acceptor(ns: &str, ip: &str, port: u16) -> Reap {
    let server = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{ip}', {port})); s.listen(16)\nprint('ready', flush=True)\n\
         while True:\n    c,_=s.accept(); c.close()"
    );
    serve(ns, &server, &[]).reap()
}

/// The line a server started by [`serve`] prints once it is bound and listening.
pub const READY: &str = "ready";

/// A process in a pod that said it was ready: the lines it prints after that, and the
/// process, killed when dropped.
#[derive(Debug)]
pub struct Served {
    /// The process.
    pub proc: Reap,
    /// Lines of its stdout, read by a helper thread (a pipe read has no time-out).
    lines: std::sync::mpsc::Receiver<String>,
}

impl Served {
    /// Keeps only the process (its later output is not read).
    pub fn reap(self) -> Reap {
        self.proc
    }

    /// The next line it prints (30 s at most), trimmed; `None` at its end or on time-out.
    pub fn line(&mut self) -> Option<String> {
        self.lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .ok()
    }

    /// The next line it prints within `limit`, trimmed; `None` at its end or on time-out.
    pub fn line_within(&mut self, limit: std::time::Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    /// The last line it has printed by now, or the next one if none is waiting.
    pub fn latest_line(&mut self) -> Option<String> {
        let mut last = self.line()?;
        while let Ok(l) = self.lines.try_recv() {
            last = l;
        }
        Some(last)
    }

    /// Waits for the process to end and returns its status and the rest of its output.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.proc.0.wait().expect("wait for a server");
        let rest: Vec<String> = self.lines.iter().collect();
        (status, rest.join("\n"))
    }
}

/// Starts `python3 -u -c CODE ARGS..` in namespace `ns` and waits (30 s at most) until it
/// prints [`READY`]: the code prints it once its sockets are bound, so a test talks to a
/// server that listens, however slow the machine. Its stderr goes to the test's.
pub fn serve(ns: &str, code: &str, args: &[&str]) -> Served {
    use std::io::BufRead;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-u", "-c", code])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start a server in a pod");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l.trim().to_string()).is_err() {
                break;
            }
        }
    });
    let mut s = Served {
        proc: Reap(child),
        lines,
    };
    match s.line() {
        Some(l) if l == READY => s,
        other => {
            panic!("a server in {ns} did not get ready (it said {other:?}; its stderr is above)")
        }
    }
}

/// `GET path` from an HTTP/1.1 server at `addr` (a metrics endpoint); the whole response,
/// which must be a 200.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP server");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read the HTTP response");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// A free TCP port on loopback (bound and released; good enough for a test's listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The TLS files of a secured etcd: its CA, server certificate and key.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA clients must be signed by (and that signed the server's certificate).
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// A one-member etcd of a test on two free ports, its data under `dir/etcd` (served over
/// TLS, client certificates required, when `tls` is given); killed when dropped.
#[derive(Debug)]
pub struct Etcd {
    /// The client URL.
    pub url: String,
    args: Vec<std::ffi::OsString>,
    dir: PathBuf,
    child: Option<Reap>,
}

impl Etcd {
    /// Starts it; tried again with new ports when another process takes one between
    /// the look-up and etcd's bind.
    pub fn start(dir: &std::path::Path, tls: Option<&EtcdTls>) -> Etcd {
        for _ in 0..5 {
            let (client, peer) = (free_port(), free_port());
            let scheme = if tls.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let _ = std::fs::remove_dir_all(dir.join("etcd"));
            let mut args: Vec<std::ffi::OsString> = vec!["--name".into(), "test".into()];
            args.push("--data-dir".into());
            args.push(dir.join("etcd").into());
            for a in [
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("test={peer_url}"),
            ] {
                args.push(a.into());
            }
            if let Some(t) = tls {
                for (f, p) in [
                    ("--cert-file", &t.cert),
                    ("--key-file", &t.key),
                    ("--trusted-ca-file", &t.ca),
                ] {
                    args.push(f.into());
                    args.push(p.into());
                }
                args.push("--client-cert-auth".into());
            }
            let mut e = Etcd {
                url,
                args,
                dir: dir.to_path_buf(),
                child: None,
            };
            if e.run() {
                return e;
            }
            let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
            assert!(
                log.contains("address already in use"),
                "etcd failed:\n{log}"
            );
        }
        panic!("etcd's ports were taken five times");
    }

    /// Runs the process and waits until it serves; false if it exited first.
    fn run(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log");
        let mut child = std::process::Command::new("etcd")
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server) runs");
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        let mut exited = false;
        wait_until("etcd serves", std::time::Duration::from_secs(30), || {
            exited = child.try_wait().ok().flatten().is_some();
            exited || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if !exited {
            self.child = Some(Reap(child));
        }
        !exited
    }

    /// Stops it (SIGKILL), keeping its data.
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&mut self) {
        assert!(self.run(), "etcd did not start again");
    }
}

/// An `agent` started for a test against a vrouter's control socket, with its store in
/// `data`; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Agent {
    /// The process.
    pub child: std::process::Child,
    /// The agent's gRPC target (`unix:PATH`, as Python's grpcio and `agent::client` take it).
    pub target: String,
    /// Metrics address.
    pub metrics: String,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent and waits (20 s at most) until its gRPC socket accepts connections.
    pub fn start(
        dir: &std::path::Path,
        name: &str,
        socket: &std::path::Path,
        data: &std::path::Path,
    ) -> Agent {
        Agent::start_with(dir, name, socket, data, &[])
    }

    /// [`Agent::start`] with more arguments.
    pub fn start_with(
        dir: &std::path::Path,
        name: &str,
        socket: &std::path::Path,
        data: &std::path::Path,
        extra: &[&str],
    ) -> Agent {
        let sock = dir.join(format!("{name}.agent.sock"));
        let target = format!("unix:{}", sock.display());
        let metrics = format!("127.0.0.1:{}", free_port());
        let log = dir.join(format!("{name}.log"));
        // The host's reserved-ports list, as a file of the test's own (the agent runs
        // in the machine's namespace, not a node's).
        let reserved = dir.join(format!("{name}.reserved_ports"));
        std::fs::write(&reserved, "").expect("reserved ports list");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("agent log");
        let child = std::process::Command::new(workspace_bin("agent"))
            .args([
                "--listen",
                &target,
                "--metrics",
                &metrics,
                "--resync-ms",
                "500",
            ])
            .arg("--vrouter-socket")
            .arg(socket)
            .arg("--data-dir")
            .arg(data)
            .arg("--reserved-ports")
            .arg(&reserved)
            .args(extra)
            .stdout(out.try_clone().expect("agent log"))
            .stderr(out)
            .spawn()
            .expect("start agent");
        let a = Agent {
            child,
            target,
            metrics,
            log,
        };
        let t = std::time::Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if t.elapsed() > std::time::Duration::from_secs(20) {
                panic!("agent {name} did not start:\n{}", a.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        a
    }

    /// What the agent printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of an unlabelled metric on the agent's `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> u64 {
        http_get(&self.metrics, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// A test's directory: the named logs in it are printed when the test fails, and it is
/// removed when dropped.
#[derive(Debug)]
pub struct LogDir {
    /// The directory.
    pub path: PathBuf,
    logs: &'static [&'static str],
}

impl LogDir {
    /// A fresh directory for `tag` under the temporary directory.
    pub fn new(tag: &str, logs: &'static [&'static str]) -> LogDir {
        let path = std::env::temp_dir().join(unique_prefix(tag));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("test directory");
        LogDir { path, logs }
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        print_logs_on_failure(&self.path, self.logs);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a script of `tests/python` with arguments; panics with its output on failure.
pub fn python(script: &str, args: &[&str]) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python");
    let out = std::process::Command::new("python3")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} {args:?} failed:\n{text}");
    text
}

/// The start-up configuration of a vrouter run by an agent: VRF 0 and a fabric vif on
/// `net_null` with the node's address `ip` and MAC `02:fa:00:00:00:0<n>` (n: the last
/// digit of `ip`); the agent adds everything else.
pub fn agent_node_config(ip: &str) -> String {
    format!(
        r#"[global]
fabric_vif = 0
max_vifs = 16384

[[vrf]]
id = 0

[[vif]]
id = 0
name = "fabric"
kind = "physical"
device = "net_null0,no-rx=1"
mac = "02:fa:00:00:00:0{}"
vrf = 0
ip4 = "{ip}"
"#,
        &ip[ip.len() - 1..]
    )
}

/// `vrctl --json ARGS` against `socket`: the items of a dump, or the reply's data.
pub fn vrctl_json(socket: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(workspace_bin("vrctl"))
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .args(args)
        .output()
        .expect("vrctl");
    assert!(
        out.status.success(),
        "vrctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("vrctl --json");
    match v.get("items") {
        Some(items) => items.clone(),
        None => v,
    }
}

/// Pods as network namespaces, each behind a veth whose host end a vrouter port takes,
/// with the vrouter and agent that serve them. Dropping it stops both and removes every
/// namespace and link; when a test fails it prints their logs and the drop counters first.
#[derive(Debug)]
pub struct PodLab {
    /// Namespaces, one per pod.
    pub ns: Vec<String>,
    /// Host ends of the pods' veths.
    pub host_if: Vec<String>,
    /// Scratch directory (configuration, logs, agent data).
    pub dir: PathBuf,
    /// The agent.
    pub agent: Option<Agent>,
    /// The vrouter.
    pub vrouter: Option<Daemon>,
    /// The host's namespace, whose `vhost0` is the peer of the vrouter's host vif
    /// ([`PodLab::start_with_host`]).
    pub host_ns: Option<String>,
}

/// The node address of a [`PodLab`] (the fabric vif's, and vhost0's in the host).
pub const LAB_NODE_IP: &str = "192.0.2.1";
/// The fabric MAC of a [`PodLab`], which vhost0 shares.
pub const LAB_NODE_MAC: &str = "02:fa:00:00:00:01";

impl PodLab {
    /// Creates `pods` namespaces with an `eth0` each (names from `tag` and the process
    /// id) and starts a vrouter with the agent node configuration and an agent.
    pub fn start(tag: &str, pods: usize) -> PodLab {
        Self::start_inner(tag, pods, false, 1)
    }

    /// [`PodLab::start`] with a vrouter of `lcores` forwarding lcores.
    pub fn start_lcores(tag: &str, pods: usize, lcores: usize) -> PodLab {
        Self::start_inner(tag, pods, false, lcores)
    }

    /// [`PodLab::start`] with the host as a namespace too: its `vhost0` (the node address
    /// /24, the fabric MAC) is a veth whose other end is the vrouter's host vif.
    pub fn start_with_host(tag: &str, pods: usize) -> PodLab {
        Self::start_inner(tag, pods, true, 1)
    }

    fn start_inner(tag: &str, pods: usize, host: bool, lcores: usize) -> PodLab {
        let id = std::process::id() % 100_000;
        let dir = std::env::temp_dir().join(unique_prefix(tag));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let mut lab = PodLab {
            ns: (0..pods).map(|i| format!("{tag}{i}n{id}")).collect(),
            host_if: (0..pods).map(|i| format!("{tag}{i}h{id}")).collect(),
            dir,
            agent: None,
            vrouter: None,
            host_ns: None,
        };
        for (ns, h) in lab.ns.iter().zip(&lab.host_if) {
            ok(&["ip", "netns", "add", ns]);
            ok(&[
                "ip", "link", "add", h, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            ok(&["ip", "link", "set", h, "up"]);
        }
        let mut config = agent_node_config(LAB_NODE_IP);
        if host {
            let ns = format!("{tag}Hn{id}");
            let end = format!("{tag}vh{id}");
            ok(&["ip", "netns", "add", &ns]);
            ok(&[
                "ip", "link", "add", &end, "type", "veth", "peer", "name", "vhost0", "netns", &ns,
            ]);
            ok(&["ip", "link", "set", &end, "up"]);
            let addr = format!("{LAB_NODE_IP}/24");
            for cmd in [
                vec!["ip", "link", "set", "lo", "up"],
                vec!["ip", "link", "set", "vhost0", "address", LAB_NODE_MAC],
                vec!["ip", "addr", "add", &addr, "dev", "vhost0"],
                vec!["ip", "link", "set", "vhost0", "up"],
                vec!["ethtool", "-K", "vhost0", "tx", "off"],
            ] {
                let mut full = vec!["ip", "netns", "exec", ns.as_str()];
                full.extend(cmd);
                ok(&full);
            }
            config = config.replace("[global]\n", "[global]\nhost_vif = 1\n");
            config.push_str(&format!(
                r#"
[[vif]]
id = 1
name = "vhost0"
kind = "host"
device = "packet:{end}"
mac = "{LAB_NODE_MAC}"
vrf = 0
ip4 = "{LAB_NODE_IP}"
"#
            ));
            // The veth goes with the namespace.
            lab.host_ns = Some(ns);
        }
        std::fs::write(lab.dir.join("vr.toml"), config).expect("vrouter configuration");
        let vr = Daemon::start_lcores(
            &lab.dir,
            "vr",
            &lab.dir.join("vr.toml"),
            (8191, 512),
            lcores,
        );
        let socket = vr.socket.clone();
        lab.vrouter = Some(vr);
        lab.agent = Some(Agent::start(&lab.dir, "agent", &socket, &lab.data()));
        lab
    }

    /// The vrouter's control socket.
    pub fn socket(&self) -> PathBuf {
        self.vrouter.as_ref().expect("vrouter").socket.clone()
    }

    /// The agent's data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The agent's gRPC address.
    pub fn target(&self) -> String {
        self.agent.as_ref().expect("agent").target.clone()
    }

    /// Gives pod `i`'s eth0 the MAC and address of its port (a JSON line of the test
    /// scripts: mac, ip, gateway), with a default route through the gateway.
    pub fn plug(&self, i: usize, port: &serde_json::Value) {
        let s = |k: &str| port[k].as_str().unwrap_or_default().to_string();
        let (mac, ip, gw) = (s("mac"), s("ip"), s("gateway"));
        let mut cmds = vec![
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "link", "set", "eth0", "address", &mac],
            vec!["ip", "addr", "add", &ip, "dev", "eth0"],
            vec!["ip", "link", "set", "eth0", "up"],
            vec!["ethtool", "-K", "eth0", "tx", "off"],
        ];
        if !gw.is_empty() {
            cmds.push(vec![
                "ip", "route", "add", "default", "via", &gw, "dev", "eth0",
            ]);
        }
        for cmd in cmds {
            let mut full = vec!["ip", "netns", "exec", self.ns[i].as_str()];
            full.extend(cmd);
            ok(&full);
        }
    }
}

impl Drop for PodLab {
    fn drop(&mut self) {
        print_logs_on_failure(&self.dir, &["vr.log", "agent.log"]);
        if std::thread::panicking() {
            if let Some(v) = &self.vrouter {
                let out = std::process::Command::new(workspace_bin("vrctl"))
                    .arg("--socket")
                    .arg(&v.socket)
                    .arg("dropstats")
                    .output();
                if let Ok(o) = out {
                    eprintln!("--- dropstats:\n{}", String::from_utf8_lossy(&o.stdout));
                }
            }
        }
        drop(self.agent.take());
        drop(self.vrouter.take());
        for ns in self.ns.iter().chain(&self.host_ns) {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        for h in &self.host_if {
            let _ = sh(&["ip", "link", "del", h]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The JSON objects a test script printed, one per line (other lines are skipped).
pub fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// A lab in a scratch directory, brought down when dropped (also when the test fails).
#[derive(Debug)]
pub struct VrLab {
    /// Its directory (`vrlab --dir`).
    pub dir: PathBuf,
}

impl VrLab {
    /// A lab in a fresh scratch directory (not up yet).
    pub fn new(tag: &str) -> VrLab {
        let dir = std::env::temp_dir().join(unique_prefix(tag));
        let _ = std::fs::remove_dir_all(&dir);
        VrLab { dir }
    }

    /// Runs `vrlab --dir DIR ARGS`.
    pub fn vrlab(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(workspace_bin("vrlab"))
            .arg("--dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("vrlab")
    }

    /// Runs vrlab, asserting success; stdout and stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.vrlab(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "vrlab {args:?}:\n{text}");
        text
    }

    /// The matrix for a port: (from, to) -> connects.
    pub fn matrix(
        &self,
        port: &str,
        protocol: &str,
    ) -> std::collections::BTreeMap<(String, String), bool> {
        self.matrix_of(&["--port", port, "--protocol", protocol])
    }

    /// [`Self::matrix`] from every pod to every service (`svc/namespace/name`).
    pub fn service_matrix(
        &self,
        port: &str,
        protocol: &str,
    ) -> std::collections::BTreeMap<(String, String), bool> {
        self.matrix_of(&["--services", "--port", port, "--protocol", protocol])
    }

    fn matrix_of(&self, args: &[&str]) -> std::collections::BTreeMap<(String, String), bool> {
        let mut all = vec!["probe", "--matrix"];
        all.extend_from_slice(args);
        matrix_cells(&self.ok(&all))
    }

    /// The lab's state file (nodes, pods and their addresses).
    pub fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("state.json")).expect("state.json"))
            .expect("state.json is JSON")
    }

    /// The first node's agent target (`unix:PATH`).
    pub fn target(&self) -> String {
        self.state()["nodes"][0]["grpc"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for VrLab {
    fn drop(&mut self) {
        print_logs_on_failure(&self.dir, &["node1/vrouter.log", "node1/agent.log"]);
        let _ = self.vrlab(&["down"]);
    }
}

/// The cells of a `vrlab probe --matrix` output: (from, to) -> connects.
pub fn matrix_cells(out: &str) -> std::collections::BTreeMap<(String, String), bool> {
    let columns: Vec<String> = out
        .lines()
        .find_map(|l| l.strip_prefix("columns:"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut m = std::collections::BTreeMap::new();
    for l in out.lines().skip(2).filter(|l| !l.starts_with("columns:")) {
        let mut w = l.split_whitespace();
        let Some(from) = w.next() else { continue };
        let cells: Vec<&str> = w.collect();
        // Rows only (the output may carry the lab's log lines).
        if cells.is_empty() || !cells.iter().all(|c| *c == "." || *c == "X") {
            continue;
        }
        let cells: Vec<bool> = cells.iter().map(|c| *c == ".").collect();
        assert_eq!(cells.len(), columns.len(), "matrix:\n{out}");
        for (to, c) in columns.iter().zip(cells) {
            m.insert((from.to_string(), to.clone()), c);
        }
    }
    m
}

/// An address without its prefix length, from a JSON string such as `"10.32.0.3/12"`.
pub fn address_of(v: &serde_json::Value) -> String {
    let s = v.as_str().unwrap_or_else(|| panic!("not an address: {v}"));
    s.split('/').next().unwrap_or(s).to_string()
}

/// Network namespaces removed when dropped.
#[derive(Debug)]
pub struct Netns(pub Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .status();
        }
    }
}

/// Calls a CNI plugin as a container runtime does; (exit success, stdout as JSON or null).
pub fn cni_call(
    plugin: &str,
    command: &str,
    env: &[(&str, &str)],
    conf: &serde_json::Value,
) -> (bool, serde_json::Value) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut c = Command::new(plugin);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/usr/lib/cni");
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{plugin}: {e}"));
    // A plugin may answer without reading all of its input (an error it saw first).
    if let Err(e) = child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
    {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{plugin}: {e}");
    }
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let v = if out.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{plugin} {command}: {e}: {out}"))
    };
    (o.status.success(), v)
}

/// The pairs as the plugin call takes them.
pub fn as_refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, x)| (k.as_str(), x.as_str())).collect()
}

/// Packet conservation in a vrouter's `stats` (see `vrouter_api::counters`): every packet
/// it received, and every fragment it cut, was sent or dropped under exactly one reason.
/// For a vrouter that holds no fragment waiting for its first one.
pub fn assert_each_packet_counted_once(stats: &serde_json::Value) {
    let n = |k: &str| {
        stats[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {stats}"))
    };
    let drops: u64 = stats["drops"]
        .as_object()
        .expect("drops")
        .values()
        .map(|v| v.as_u64().expect("a drop count"))
        .sum();
    assert!(n("rx") > 0, "traffic went through: {stats}");
    assert_eq!(
        n("rx") + n("fragments_made") - n("fragmented"),
        n("tx") + drops,
        "rx (+ fragments made) = tx + drops: {stats}"
    );
}
