//! Who may call the agent, tried as an attacker would: Python grpcio clients run as other
//! local users (setpriv) against the agent's Unix socket, and TLS clients with and
//! without the right certificates against its TCP listener. Each refusal is checked to
//! have written nothing, to have been counted, and to have stopped nobody else.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vr_tests::{Agent, free_port, http_get, unique_prefix, workspace_bin};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(unique_prefix(tag));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        // Other users must reach the socket inside.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        vr_tests::print_logs_on_failure(&self.0, &["agent.log"]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// A copy of the `auth-probe` binary that any user can run.
fn probe_bin(dir: &Path) -> PathBuf {
    let p = dir.join("auth-probe");
    std::fs::copy(workspace_bin("auth-probe"), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Runs the probe binary as `uid`/`gid` with supplementary `groups`.
fn probe_as(bin: &Path, (uid, gid, groups): (u32, u32, &[u32]), target: &str, name: &str) -> Value {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        let g: Vec<String> = groups.iter().map(u32::to_string).collect();
        c.arg(format!("--groups={}", g.join(",")));
    }
    let out = c
        .arg(bin)
        .args([target, name])
        .current_dir("/")
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "probe failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the probe prints JSON")
}

/// Runs the Python grpcio probe (as root: over TLS the certificate is the identity).
fn probe_py(script: &Path, args: &[&str], name: &str) -> Value {
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .env("PROBE_NAME", name)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "probe failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the probe prints JSON")
}

fn refused_total(metrics: &str) -> u64 {
    http_get(metrics, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("agent_api_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("agent_api_refused_total")
}

/// The projects that exist, read as root (admin) with Python's grpcio.
fn projects(target: &str) -> Vec<String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "from vnc import Agent; \
             print('\\n'.join(':'.join(o.project.fq_name) for o in Agent({target:?}).list('project')))"
        ))
        .current_dir(python_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

const NOBODY: u32 = 65534;
const PORTS_GROUP: u32 = 4242;
const CONFIG_GROUP: u32 = 4343;
const STRANGER: u32 = 65533;

#[test]
fn local_callers_get_the_roles_their_credentials_are_granted() {
    let dir = Dir::new("auth-unix");
    let bin = probe_bin(&dir.0);
    let agent = Agent::start_with(
        &dir.0,
        "agent",
        &dir.0.join("no-vrouter.sock"),
        &dir.0.join("data"),
        &[
            "--socket-group",
            &NOBODY.to_string(),
            "--grant",
            &format!("read=uid:{NOBODY}"),
            "--grant",
            &format!("ports=gid:{PORTS_GROUP}"),
            "--grant",
            &format!("config=gid:{CONFIG_GROUP}"),
        ],
    );
    let sock = agent.target.trim_start_matches("unix:").to_string();
    let m = std::fs::metadata(&sock).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o660, "socket mode");
    assert_eq!(m.gid(), NOBODY, "socket group");

    let t = agent.target.as_str();
    let before = refused_total(&agent.metrics);
    // Read only: reads pass, writes and ports are refused.
    let r = probe_as(&bin, (NOBODY, NOBODY, &[]), t, "by-reader");
    assert_eq!(r["read"], "OK", "{r}");
    assert_eq!(r["status"], "OK", "{r}");
    assert_eq!(r["config"], "PERMISSION_DENIED", "{r}");
    assert_eq!(r["ports"], "PERMISSION_DENIED", "{r}");
    // A supplementary group that may plug ports: AddPort reaches the handler (which finds
    // no such interface), configuration is still refused.
    let r = probe_as(&bin, (NOBODY, NOBODY, &[PORTS_GROUP]), t, "by-plugger");
    assert_eq!(r["read"], "OK", "{r}");
    assert_eq!(r["config"], "PERMISSION_DENIED", "{r}");
    assert_ne!(r["ports"], "PERMISSION_DENIED", "{r}");
    assert_ne!(r["ports"], "UNAVAILABLE", "{r}");
    // The configuration group writes, and still may not plug ports.
    let r = probe_as(&bin, (NOBODY, NOBODY, &[CONFIG_GROUP]), t, "by-writer");
    assert_eq!(r["config"], "OK", "{r}");
    assert_eq!(r["ports"], "PERMISSION_DENIED", "{r}");
    // A user with no grant who is in the socket's group connects and may do nothing.
    let r = probe_as(&bin, (STRANGER, NOBODY, &[]), t, "by-stranger");
    for k in ["read", "status", "config", "ports"] {
        assert_eq!(r[k], "PERMISSION_DENIED", "{k}: {r}");
    }
    // Outside the socket's group: the kernel does not let it connect at all.
    let r = probe_as(&bin, (STRANGER, STRANGER, &[]), t, "by-outsider");
    for k in ["read", "status", "config", "ports"] {
        assert_eq!(r[k], "UNAVAILABLE", "{k}: {r}");
    }
    // Root (here through Python's grpcio) may do everything.
    let r = probe_py(&python_dir().join("auth_probe.py"), &[t], "by-root");
    assert_eq!(r["config"], "OK", "{r}");
    assert_ne!(r["ports"], "PERMISSION_DENIED", "{r}");

    // Only the allowed writes happened; every refusal was counted and logged, and the
    // agent still serves.
    let mut p = projects(t);
    p.sort();
    assert_eq!(
        p,
        vec!["default-domain:by-root", "default-domain:by-writer"],
        "projects"
    );
    let refused = refused_total(&agent.metrics) - before;
    assert_eq!(refused, 2 + 1 + 1 + 4, "refusals counted");
    assert!(
        agent.log().contains("call refused"),
        "refusals logged:\n{}",
        agent.log()
    );
}

struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    clients: Vec<(String, PathBuf, PathBuf)>,
}

/// A CA, the agent's certificate (localhost, 127.0.0.1) and client certificates with
/// the given common names; `rogue` ones are signed by another CA.
fn pki(dir: &Path, names: &[(&str, bool)]) -> Pki {
    let issuer = agent::pki::Ca::new("vrouter test CA").unwrap();
    let rogue = agent::pki::Ca::new("someone else's CA").unwrap();
    let ca = dir.join("ca.pem");
    issuer.write_ca(&ca).unwrap();
    let server = issuer
        .write(dir, "agent", "agent", &["localhost", "127.0.0.1"])
        .unwrap();
    let clients = names
        .iter()
        .enumerate()
        .map(|(i, (cn, is_rogue))| {
            let by = if *is_rogue { &rogue } else { &issuer };
            let (c, k) = by.write(dir, &format!("client{i}"), cn, &[]).unwrap();
            (cn.to_string(), c, k)
        })
        .collect();
    Pki {
        ca,
        server,
        clients,
    }
}

#[test]
fn tcp_is_served_with_mutual_tls_only_and_certificates_carry_their_roles() {
    let dir = Dir::new("auth-tls");
    let script = python_dir().join("auth_probe.py");
    let pki = pki(
        &dir.0,
        &[
            ("kube-manager", false),
            ("watcher", false),
            ("kube-manager", true),
        ],
    );
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();

    // Without TLS files a TCP listener is refused before anything starts.
    let out = Command::new(workspace_bin("agent"))
        .args([
            "--listen",
            "127.0.0.1:1",
            "--vrouter-socket",
            "/nonexistent",
        ])
        .arg("--data-dir")
        .arg(dir.0.join("refused-data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("mutual TLS only"), "{err}");
    assert!(!dir.0.join("refused-data").exists(), "nothing created");

    let tcp = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start_with(
        &dir.0,
        "agent",
        &dir.0.join("no-vrouter.sock"),
        &dir.0.join("data"),
        &[
            "--listen",
            &tcp,
            "--tls-cert",
            &s(&pki.server.0),
            "--tls-key",
            &s(&pki.server.1),
            "--tls-client-ca",
            &s(&pki.ca),
            "--grant",
            "config=cn:kube-manager",
            "--grant",
            "read=cn:watcher",
        ],
    );
    vr_tests::wait_until(
        "the TLS listener",
        std::time::Duration::from_secs(20),
        || std::net::TcpStream::connect(&tcp).is_ok(),
    );
    let before = refused_total(&agent.metrics);
    let tls = |i: usize| {
        let (_, c, k) = &pki.clients[i];
        vec![tcp.clone(), "--tls".into(), s(&pki.ca), s(c), s(k)]
    };

    let km = tls(0);
    let r = probe_py(&script, &refs(&km), "by-kube-manager");
    assert_eq!(r["config"], "OK", "{r}");
    assert_eq!(r["ports"], "PERMISSION_DENIED", "{r}");
    let w = tls(1);
    let r = probe_py(&script, &refs(&w), "by-watcher");
    assert_eq!(r["read"], "OK", "{r}");
    assert_eq!(r["config"], "PERMISSION_DENIED", "{r}");
    // The right name from the wrong CA, and no certificate at all: no TLS session.
    for args in [
        tls(2),
        vec![
            tcp.clone(),
            "--tls".into(),
            s(&pki.ca),
            "-".into(),
            "-".into(),
        ],
    ] {
        let r = probe_py(&script, &refs(&args), "by-impostor");
        for k in ["read", "status", "config", "ports"] {
            assert_eq!(r[k], "UNAVAILABLE", "{k}: {r}");
        }
    }
    // Plain gRPC to the TLS port gets nowhere either.
    let r = probe_py(&script, &[tcp.as_str()], "by-plaintext");
    assert_eq!(r["config"], "UNAVAILABLE", "{r}");

    // kube-manager itself over mutual TLS: its namespace becomes a project.
    let manifest = dir.0.join("ns.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tls-team\n",
    )
    .unwrap();
    let (_, c, k) = &pki.clients[0];
    let out = Command::new(workspace_bin("kube-manager"))
        .args(["--agent", &format!("https://{tcp}")])
        .args([
            "--agent-ca",
            &s(&pki.ca),
            "--agent-cert",
            &s(c),
            "--agent-key",
            &s(k),
        ])
        .args(["-f", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kube-manager over TLS:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = projects(&agent.target);
    assert!(
        p.contains(&"default-domain:by-kube-manager".to_string()),
        "{p:?}"
    );
    assert!(
        !p.contains(&"default-domain:by-watcher".to_string()),
        "{p:?}"
    );
    assert!(p.iter().any(|n| n.ends_with("tls-team")), "{p:?}");
    // kube-manager with the watcher's certificate is refused a change, and says so.
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tls-team\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tls-intruders\n",
    )
    .unwrap();
    let (_, c, k) = &pki.clients[1];
    let out = Command::new(workspace_bin("kube-manager"))
        .args(["--agent", &format!("https://{tcp}")])
        .args([
            "--agent-ca",
            &s(&pki.ca),
            "--agent-cert",
            &s(c),
            "--agent-key",
            &s(k),
        ])
        .args(["-f", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("config role"), "{err}");
    assert!(
        !projects(&agent.target)
            .iter()
            .any(|n| n.ends_with("tls-intruders"))
    );
    assert!(refused_total(&agent.metrics) > before + 3);
}
