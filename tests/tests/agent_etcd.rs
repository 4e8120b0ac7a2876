//! Two nodes exchange routes through a real etcd: each agent publishes its pod's address,
//! the other programs a route to it over a tunnel nexthop with the publisher's label, and a
//! service VIP backed by a pod on each node becomes an ECMP composite of a local and a
//! remote member on both. Unplugging a pod withdraws its route from the other node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vr_tests::{Agent, Daemon, Etcd, EtcdTls, LogDir, python};

const LOGS: &[&str] = &["a.log", "b.log", "agent-a.log", "agent-b.log", "etcd.log"];

/// The agent VRF's routes as prefix -> (nexthop, label).
fn routes(socket: &Path) -> Vec<(String, u64, u64)> {
    let vrf = vr_tests::vrctl_json(socket, &["vrf"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .find(|id| *id >= 1)
        .expect("the agent made a VRF");
    vr_tests::vrctl_json(socket, &["rt", "--dump", &vrf.to_string()])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["prefix"].as_str().unwrap().to_string(),
                r["nh"].as_u64().unwrap(),
                r["label"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn nh(socket: &Path, id: u64) -> Value {
    vr_tests::vrctl_json(socket, &["nh"])
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"].as_u64() == Some(id))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The label a node's vrouter maps to its local vif `name`.
fn label_of(socket: &Path, name: &str) -> u64 {
    let vif = vr_tests::vrctl_json(socket, &["vif"])
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap()["id"]
        .clone();
    let nhs = vr_tests::vrctl_json(socket, &["nh"]);
    let nh = nhs
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "encap" && n["vif"] == vif)
        .unwrap()["id"]
        .clone();
    vr_tests::vrctl_json(socket, &["mpls"])
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["nh"] == nh)
        .unwrap()["label"]
        .as_u64()
        .unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two vrouters and their agents for nodes a (192.0.2.1) and b (192.0.2.2), each agent
/// with `extra(node)` flags.
fn two_nodes(dir: &Path, extra: impl Fn(&str, &str) -> Vec<String>) -> (Vec<Daemon>, Vec<Agent>) {
    let mut vr = Vec::new();
    let mut agents = Vec::new();
    for (n, ip) in [("a", "192.0.2.1"), ("b", "192.0.2.2")] {
        std::fs::write(
            dir.join(format!("{n}.toml")),
            vr_tests::agent_node_config(ip),
        )
        .unwrap();
        let v = Daemon::start(dir, n, &dir.join(format!("{n}.toml")), 2047, 256);
        let flags = extra(n, ip);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        agents.push(Agent::start_with(
            dir,
            &format!("agent-{n}"),
            &v.socket,
            &dir.join(format!("data-{n}")),
            &flags,
        ));
        vr.push(v);
    }
    (vr, agents)
}

/// Waits until each node has the other's pod.
fn learn_each_other(sa: &Path, sb: &Path) {
    wait_for("node a learns pod b", || {
        routes(sa).iter().any(|r| r.0 == "10.60.0.11/32")
    });
    wait_for("node b learns pod a", || {
        routes(sb).iter().any(|r| r.0 == "10.60.0.10/32")
    });
}

#[test]
fn two_nodes_learn_each_others_routes_through_etcd() {
    let d = LogDir::new("agetcd", LOGS);
    let dir = d.path.clone();
    let etcd = Etcd::start(&dir, None);
    let url = etcd.url.clone();
    let (vr, agents) = two_nodes(&dir, |_, _| {
        vec![
            "--etcd".into(),
            url.clone(),
            "--route-ttl".into(),
            "5".into(),
        ]
    });
    let (sa, sb) = build_and_learn(&vr, &agents);

    // Node a: pod b over a tunnel to 192.0.2.2 with node b's label for pod b.
    let label_b = label_of(&sb, "pod-b");
    let r = routes(&sa);
    let to_b = r.iter().find(|r| r.0 == "10.60.0.11/32").unwrap();
    let t = nh(&sa, to_b.1);
    assert_eq!(t["type"], "tunnel", "{t}");
    assert_eq!(t["dst"], "192.0.2.2");
    assert_eq!(t["src"], "192.0.2.1");
    assert_eq!(
        t["dmac"], "02:fa:00:00:00:02",
        "the remote node's fabric MAC"
    );
    assert_eq!(to_b.2, label_b, "node b's label");

    // The VIP: a composite of the local pod and the tunnel to the other node, on both.
    for (s, other_ip) in [(&sa, "192.0.2.2"), (&sb, "192.0.2.1")] {
        wait_for("the VIP has two paths", || {
            let r = routes(s);
            r.iter()
                .find(|r| r.0 == "10.60.0.100/32")
                .is_some_and(|v| nh(s, v.1)["type"] == "composite")
        });
        let r = routes(s);
        let vip = r.iter().find(|r| r.0 == "10.60.0.100/32").unwrap();
        let members = nh(s, vip.1)["members"].as_array().unwrap().clone();
        let mut kinds: Vec<String> = members
            .iter()
            .map(|m| {
                let n = nh(s, m["nh"].as_u64().unwrap());
                match n["type"].as_str().unwrap() {
                    "tunnel" => format!("tunnel:{}", n["dst"].as_str().unwrap()),
                    k => k.to_string(),
                }
            })
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            vec!["encap".to_string(), format!("tunnel:{other_ip}")]
        );
    }

    // Values anyone with etcd access can write: each refused and counted, and nothing
    // else stops (both nodes keep their routes).
    let written = python("etcd_inject.py", &[&url, "192.0.2.2"]);
    assert_eq!(written.trim(), "6", "{written}");
    let refused = |a: &Agent| a.metric("agent_refused_routes_total");
    wait_for("both agents refuse the five bad values", || {
        agents.iter().all(|a| refused(a) >= 5)
    });
    for s in [&sa, &sb] {
        let r = routes(s);
        for p in [
            "0.0.0.0/0",
            "10.60.0.77/32",
            "10.60.0.78/32",
            "10.60.0.79/32",
            "10.60.0.80/32",
            "10.99.0.1/32",
        ] {
            assert!(!r.iter().any(|x| x.0 == p), "{p} was programmed: {r:?}");
        }
    }
    let r = routes(&sa);
    let to_b = r.iter().find(|r| r.0 == "10.60.0.11/32").unwrap();
    assert_eq!(
        nh(&sa, to_b.1)["dst"],
        "192.0.2.2",
        "pod b still through node b"
    );

    // Pod b unplugged: node a withdraws its route, and the VIP is local only.
    python(
        "agent_multi.py",
        &[&agents[0].target, &agents[1].target, "unplug-b"],
    );
    wait_for("node a withdraws pod b", || {
        !routes(&sa).iter().any(|r| r.0 == "10.60.0.11/32")
    });
    let r = routes(&sa);
    let vip = r.iter().find(|r| r.0 == "10.60.0.100/32").unwrap();
    assert_eq!(nh(&sa, vip.1)["type"], "encap");
    drop(d);
}

/// Node b's keys in etcd.
fn node_keys(url: &str, node: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([url], None).await.unwrap();
        c.get(
            format!("{}{node}/", agent::routes::KEY_PREFIX),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect()
    })
}

fn stale(a: &Agent) -> u64 {
    a.metric("agent_stale_routes")
}

#[test]
fn a_dead_agents_routes_stay_for_the_graceful_period() {
    let d = LogDir::new("aggrace", LOGS);
    let dir = d.path.clone();
    let etcd = Etcd::start(&dir, None);
    let url = etcd.url.clone();
    let flags = |grace: &str| -> Vec<String> {
        ["--etcd", &url, "--route-ttl", "2", "--route-grace", grace]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let (vr, mut agents) = two_nodes(&dir, |_, _| flags("600"));
    let (sa, sb) = build_and_learn(&vr, &agents);
    let label_b = label_of(&sb, "pod-b");

    // Agent b killed: its lease expires and etcd drops its keys; node a keeps pod b's
    // route, stale, through node b (whose vrouter still forwards).
    let b = agents.pop().unwrap();
    drop(b);
    wait_for("etcd drops node b's keys at its lease's end", || {
        node_keys(&url, "192.0.2.2").is_empty()
    });
    wait_for("node a holds pod b's route stale", || {
        stale(&agents[0]) >= 1
    });
    let r = routes(&sa);
    let to_b = r
        .iter()
        .find(|r| r.0 == "10.60.0.11/32")
        .expect("pod b's route kept");
    assert_eq!(nh(&sa, to_b.1)["dst"], "192.0.2.2");
    assert_eq!(to_b.2, label_b);

    // Agent b back: it publishes the same route (same label), and nothing is stale.
    let flags_b = flags("600");
    let flags_b: Vec<&str> = flags_b.iter().map(String::as_str).collect();
    agents.push(Agent::start_with(
        &dir,
        "agent-b",
        &vr[1].socket,
        &dir.join("data-b"),
        &flags_b,
    ));
    wait_for("node b says it published again", || {
        node_keys(&url, "192.0.2.2")
            .iter()
            .any(|k| k.ends_with("/_node"))
    });
    wait_for("nothing stale on node a", || stale(&agents[0]) == 0);
    let r = routes(&sa);
    let to_b = r.iter().find(|r| r.0 == "10.60.0.11/32").unwrap();
    assert_eq!(to_b.2, label_b, "the same label after the restart");
    assert_eq!(label_of(&sb, "pod-b"), label_b);

    // With a short period (agent a started again with 3 s), a dead agent's routes go at
    // its end.
    let a = agents.remove(0);
    drop(a);
    let flags_a = flags("3");
    let flags_a: Vec<&str> = flags_a.iter().map(String::as_str).collect();
    agents.insert(
        0,
        Agent::start_with(
            &dir,
            "agent-a",
            &vr[0].socket,
            &dir.join("data-a"),
            &flags_a,
        ),
    );
    wait_for("node a learns pod b again", || {
        routes(&sa).iter().any(|r| r.0 == "10.60.0.11/32")
    });
    let b = agents.pop().unwrap();
    drop(b);
    wait_for("node a holds it stale", || stale(&agents[0]) >= 1);
    wait_for("and withdraws it when the period ends", || {
        !routes(&sa).iter().any(|r| r.0 == "10.60.0.11/32")
    });
    assert_eq!(stale(&agents[0]), 0);
    drop(d);
}

/// Builds the two nodes' pods and waits until each node has the other's; their sockets.
fn build_and_learn(vr: &[Daemon], agents: &[Agent]) -> (PathBuf, PathBuf) {
    python(
        "agent_multi.py",
        &[&agents[0].target, &agents[1].target, "build"],
    );
    let (sa, sb) = (vr[0].socket.clone(), vr[1].socket.clone());
    learn_each_other(&sa, &sb);
    (sa, sb)
}

/// No key with "forged" in it under `prefix`.
async fn nothing_forged(c: &mut etcd_client::Client, prefix: &str) {
    let left = c
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(
        left.kvs()
            .iter()
            .all(|kv| !kv.key_str().unwrap().contains("forged")),
        "a forged key landed"
    );
}

/// Node b still reaches pod a through node a.
fn reaches_a_through_node_a(sb: &Path) {
    let r = routes(sb);
    let to_a = r.iter().find(|r| r.0 == "10.60.0.10/32").expect("pod a");
    assert_eq!(nh(sb, to_a.1)["dst"], "192.0.2.1");
}

/// An etcd client for the attacks, with the certificate `name` from `pki` (or none).
fn etcd_as(url: &str, pki: &Path, name: Option<&str>, ca: &str) -> agent::etcd::EtcdArgs {
    agent::etcd::EtcdArgs {
        endpoints: vec![url.to_string()],
        etcd_ca: Some(pki.join(ca)),
        etcd_cert: name.map(|n| pki.join(format!("{n}.pem"))),
        etcd_key: name.map(|n| pki.join(format!("{n}.key"))),
        ..Default::default()
    }
}

#[test]
fn with_tls_and_roles_each_node_writes_only_its_own_routes() {
    let d = LogDir::new("agetcs", LOGS);
    let dir = d.path.clone();
    let (a_ip, b_ip): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    let ca = agent::pki::Ca::new("test CA").unwrap();
    ca.write_ca(&dir.join("ca.pem")).unwrap();
    let (cert, key) = ca.write(&dir, "etcd", "etcd", &["127.0.0.1"]).unwrap();
    ca.write(&dir, "root", "root", &[]).unwrap();
    for n in [a_ip, b_ip] {
        ca.write(&dir, &n.to_string(), &agent::etcd::node_role(n), &[])
            .unwrap();
    }
    // Node a's name, signed by someone else.
    let rogue = agent::pki::Ca::new("someone else's CA").unwrap();
    rogue
        .write(&dir, "rogue", &agent::etcd::node_role(a_ip), &[])
        .unwrap();
    let tls = EtcdTls {
        ca: dir.join("ca.pem"),
        cert,
        key,
    };
    let etcd = Etcd::start(&dir, Some(&tls));
    let url = etcd.url.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut root = etcd_as(&url, &dir, Some("root"), "ca.pem")
            .connect()
            .await
            .unwrap();
        agent::etcd::provision(&mut root, &[a_ip, b_ip], &[], None)
            .await
            .unwrap();
    });

    // TLS files with an http:// endpoint: refused before anything starts.
    let out = Command::new(vr_tests::workspace_bin("agent"))
        .args([
            "--listen",
            &format!("unix:{}", dir.join("x.sock").display()),
        ])
        .args([
            "--vrouter-socket",
            "/nonexistent",
            "--etcd",
            "http://127.0.0.1:1",
        ])
        .arg("--etcd-ca")
        .arg(dir.join("ca.pem"))
        .arg("--data-dir")
        .arg(dir.join("refused-data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("every endpoint is https://"), "{err}");

    let (vr, agents) = two_nodes(&dir, |_, ip| {
        let f = |n: &str| dir.join(n).display().to_string();
        vec![
            format!("--etcd={url}"),
            format!("--etcd-ca={}", f("ca.pem")),
            format!("--etcd-cert={}", f(&format!("{ip}.pem"))),
            format!("--etcd-key={}", f(&format!("{ip}.key"))),
            "--route-ttl=5".into(),
        ]
    });
    let (_, sb) = build_and_learn(&vr, &agents);

    // Node b's credentials against node a's routes: etcd refuses every write.
    let a_prefix = agent::etcd::node_prefix(a_ip);
    let b_prefix = agent::etcd::node_prefix(b_ip);
    rt.block_on(async {
        let mut b = etcd_as(&url, &dir, Some("192.0.2.2"), "ca.pem")
            .connect()
            .await
            .unwrap();
        let got = b
            .get(
                a_prefix.as_str(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("a node reads the other nodes' routes");
        let a_key = got
            .kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap().to_string())
            .find(|k| k.ends_with("/10.60.0.10/32"))
            .expect("node a published pod a");
        let forged = format!("{a_prefix}forged/10.60.0.99/32");
        for (what, r) in [
            (
                "put under node a",
                b.put(forged.as_str(), "{}", None).await.map(|_| ()),
            ),
            (
                "overwrite node a's route",
                b.put(a_key.as_str(), "{}", None).await.map(|_| ()),
            ),
            (
                "delete node a's route",
                b.delete(a_key.as_str(), None).await.map(|_| ()),
            ),
            (
                "delete node a's prefix",
                b.delete(
                    a_prefix.as_str(),
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                )
                .await
                .map(|_| ()),
            ),
        ] {
            let e = r.expect_err(what).to_string();
            assert!(e.contains("permission denied"), "{what}: {e}");
        }
        // Its own prefix it may write (and the write is its own business).
        b.put(format!("{b_prefix}probe"), "x", None)
            .await
            .expect("node b writes under its own prefix");
        b.delete(format!("{b_prefix}probe"), None).await.unwrap();
        // No client certificate, or node a's name from another CA: no session at all.
        for (who, args) in [
            ("no certificate", etcd_as(&url, &dir, None, "ca.pem")),
            (
                "a rogue certificate",
                etcd_as(&url, &dir, Some("rogue"), "ca.pem"),
            ),
        ] {
            let r = match args.connect().await {
                Ok(mut c) => c
                    .put(forged.as_str(), "{}", None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.into()),
                Err(e) => Err(e),
            };
            assert!(r.is_err(), "{who} wrote to etcd");
        }
        nothing_forged(&mut b, &a_prefix).await;
    });
    // Nothing moved: node b still reaches pod a through node a.
    reaches_a_through_node_a(&sb);
    drop(d);
}

#[test]
fn with_passwords_each_node_writes_only_its_own_routes() {
    let d = LogDir::new("agetcp", LOGS);
    let dir = d.path.clone();
    let (a_ip, b_ip): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    let password = |user: &str| format!("secret of {user}");
    let etcd = Etcd::start(&dir, None);
    let url = etcd.url.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let as_user = |user: &str, pw: &str| {
        let f = dir.join(format!("{user}.password"));
        std::fs::write(&f, format!("{pw}\n")).unwrap();
        agent::etcd::EtcdArgs {
            endpoints: vec![url.clone()],
            etcd_user: Some(user.to_string()),
            etcd_password_file: Some(f),
            ..Default::default()
        }
    };
    rt.block_on(async {
        let mut c = agent::etcd::EtcdArgs {
            endpoints: vec![url.clone()],
            ..Default::default()
        }
        .connect()
        .await
        .unwrap();
        agent::etcd::provision(&mut c, &[a_ip, b_ip], &[a_ip], Some(&password))
            .await
            .unwrap();
    });
    let (vr, agents) = two_nodes(&dir, |_, ip| {
        let user = agent::etcd::node_role(ip.parse().unwrap());
        let args = as_user(&user, &password(&user));
        vec![
            format!("--etcd={url}"),
            format!("--etcd-user={user}"),
            format!(
                "--etcd-password-file={}",
                args.etcd_password_file.unwrap().display()
            ),
            "--route-ttl=5".into(),
        ]
    });
    let (_, sb) = build_and_learn(&vr, &agents);
    let a_prefix = agent::etcd::node_prefix(a_ip);
    rt.block_on(async {
        let b_user = agent::etcd::node_role(b_ip);
        let mut b = as_user(&b_user, &password(&b_user))
            .connect()
            .await
            .unwrap();
        let e = b
            .put(format!("{a_prefix}forged/10.60.0.99/32"), "{}", None)
            .await
            .expect_err("node b writes under node a")
            .to_string();
        assert!(e.contains("permission denied"), "{e}");
        // The cluster's configuration: every node reads it, only a writer writes it.
        let key = format!(
            "{}00000000-0000-4000-8000-00000000abcd",
            agent::cluster::OBJECTS
        );
        b.get(agent::cluster::CONFIG_PREFIX, None)
            .await
            .expect("node b reads the configuration");
        let e = b
            .put(key.as_str(), "forged", None)
            .await
            .expect_err("node b is no configuration writer")
            .to_string();
        assert!(e.contains("permission denied"), "{e}");
        let a_user = agent::etcd::node_role(a_ip);
        let mut a = as_user(&a_user, &password(&a_user))
            .connect()
            .await
            .unwrap();
        a.put(key.as_str(), "probe", None)
            .await
            .expect("node a writes the configuration");
        a.delete(key.as_str(), None).await.unwrap();
        // Node a's user with a wrong password, and no user at all: nothing written.
        let a_user = agent::etcd::node_role(a_ip);
        let wrong = match as_user(&a_user, "guess").connect().await {
            Ok(mut c) => c
                .put(format!("{a_prefix}forged/10.60.0.98/32"), "{}", None)
                .await
                .map(|_| ())
                .map_err(|e| e.into()),
            Err(e) => Err(e),
        };
        assert!(wrong.is_err(), "a wrong password wrote to etcd");
        let mut anon = agent::etcd::EtcdArgs {
            endpoints: vec![url.clone()],
            ..Default::default()
        }
        .connect()
        .await
        .unwrap();
        assert!(
            anon.put(format!("{a_prefix}forged/10.60.0.97/32"), "{}", None)
                .await
                .is_err(),
            "an anonymous client wrote to etcd"
        );
        nothing_forged(&mut b, &a_prefix).await;
    });
    // An empty password file is refused at start, before anything runs.
    std::fs::write(dir.join("empty.password"), "\n").unwrap();
    let out = Command::new(vr_tests::workspace_bin("agent"))
        .args([
            "--listen",
            &format!("unix:{}", dir.join("x.sock").display()),
        ])
        .args(["--vrouter-socket", "/nonexistent", "--etcd", &url])
        .args([
            "--etcd-user",
            "vrouter-node-192.0.2.1",
            "--etcd-password-file",
        ])
        .arg(dir.join("empty.password"))
        .arg("--data-dir")
        .arg(dir.join("refused-data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no password on its first line"), "{err}");
    reaches_a_through_node_a(&sb);
    drop(d);
}
