//! One configuration for the cluster: two nodes' agents with `--config-store etcd` over a
//! real etcd. Objects are written once, through either agent, and both follow them: pods
//! created through node a's API are programmed on node b; writers racing through both
//! APIs never get one address twice or one name twice; a batch larger than one etcd
//! transaction lands whole, a failing one not at all; a value nobody's agent wrote is
//! refused and stops nothing; an agent killed and started again resumes from its copy;
//! with etcd away both nodes keep what they have and writes are refused as unavailable,
//! and what is written after it returns is programmed everywhere.

use std::path::Path;

use vr_tests::{Agent, Daemon, Etcd, LogDir, python, wait_until};

/// The agent VRF's route prefixes on a node.
fn prefixes(socket: &Path) -> Vec<String> {
    let Some(vrf) = vr_tests::vrctl_json(socket, &["vrf"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .find(|id| *id >= 1)
    else {
        return Vec::new();
    };
    vr_tests::vrctl_json(socket, &["rt", "--dump", &vrf.to_string()])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix"].as_str().unwrap().to_string())
        .collect()
}

const NODES: [(&str, &str); 2] = [("a", "192.0.2.1"), ("b", "192.0.2.2")];

fn agent(dir: &Path, vr: &Daemon, n: &str, etcd: &str) -> Agent {
    Agent::start_with(
        dir,
        &format!("agent-{n}"),
        &vr.socket,
        &dir.join(format!("data-{n}")),
        &["--etcd", etcd, "--config-store", "etcd", "--route-ttl", "5"],
    )
}

#[test]
fn one_configuration_written_through_any_agent_is_followed_by_every_node() {
    let d = LogDir::new(
        "agclu",
        &["a.log", "b.log", "agent-a.log", "agent-b.log", "etcd.log"],
    );
    let dir = d.path.clone();
    let mut etcd = Etcd::start(&dir, None);
    let url = etcd.url.clone();
    let mut vr = Vec::new();
    let mut agents = Vec::new();
    for (n, ip) in NODES {
        std::fs::write(
            dir.join(format!("{n}.toml")),
            vr_tests::agent_node_config(ip),
        )
        .unwrap();
        let v = Daemon::start(&dir, n, &dir.join(format!("{n}.toml")), 2047, 256);
        agents.push(agent(&dir, &v, n, &url));
        vr.push(v);
    }
    let run = |agents: &[Agent], args: &[&str]| {
        let mut a = vec![agents[0].target.as_str(), agents[1].target.as_str()];
        a.extend_from_slice(args);
        python("cluster_config.py", &a)
    };

    // Written once through a; each node programs its pod and learns the other's route.
    let pods = run(&agents, &["build"]);
    let pods: Vec<String> = pods.split_whitespace().map(|p| format!("{p}/32")).collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    for v in &vr {
        wait_until(
            "each node has both pods' routes",
            std::time::Duration::from_secs(30),
            || {
                let r = prefixes(&v.socket);
                pods.iter().all(|p| r.contains(p))
            },
        );
    }

    // Racing writers, one name claimed through both.
    assert_eq!(run(&agents, &["race", "40"]).trim(), "80");

    // Over one etcd transaction (128 operations): 2 x 150 changes at once.
    let total: usize = run(&agents, &["batch", "150"]).trim().parse().unwrap();
    assert!(total >= 2 + 80 + 1 + 150, "{total}");
    assert!(
        agents[1]
            .log()
            .contains("committed a batch larger than one etcd transaction"),
        "the batch took the two-phase path:\n{}",
        agents[1].log()
    );

    // kube-manager writes the cluster once: the first agent given is away, the next
    // one takes it, and both nodes hold the pods' interfaces.
    let manifest = dir.join("pods.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: k1}\nspec: {containers: [{name: c, image: i}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: k2}\nspec: {containers: [{name: c, image: i}]}\n",
    )
    .unwrap();
    let gone = format!("unix:{}", dir.join("nobody.sock").display());
    let o = std::process::Command::new(vr_tests::workspace_bin("kube-manager"))
        .args(["--shared-config", "--agent", &gone, "--agent"])
        .arg(&agents[1].target)
        .arg("--agent")
        .arg(&agents[0].target)
        .args(["-f", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        said.lines().filter(|l| l.contains("pods,")).count(),
        1,
        "written once: {said}"
    );
    assert!(said.contains(&agents[1].target), "through b: {said}");
    let vmis = run(&agents, &["interfaces"]);
    let vmis: Vec<&str> = vmis.split_whitespace().collect();
    assert_eq!(vmis[0], vmis[1], "both nodes hold the same interfaces");
    assert!(vmis[0].parse::<usize>().unwrap() >= 2 + 2 + 150, "{vmis:?}");

    // Values nobody's agent wrote: refused, counted, and nothing else stops.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([url.as_str()], None)
            .await
            .unwrap();
        for (k, v) in [
            (
                format!(
                    "{}0badc0de-0000-4000-8000-000000000001",
                    agent::cluster::OBJECTS
                ),
                b"\xff\xfe not protobuf".to_vec(),
            ),
            (
                format!("{}../../routes/x", agent::cluster::OBJECTS),
                Vec::new(),
            ),
        ] {
            c.put(k, v, None).await.unwrap();
        }
    });
    wait_until(
        "both agents refuse the two values",
        std::time::Duration::from_secs(20),
        || {
            agents
                .iter()
                .all(|a| a.metric("agent_refused_config_total") >= 2)
        },
    );
    run(&agents, &["after", "garbage"]);

    // Agent b killed; a change made meanwhile; b started again resumes from its copy.
    let b = agents.pop().unwrap();
    drop(b);
    run_one(&agents[0], "after", "b-away");
    agents.push(agent(&dir, &vr[1], "b", &url));
    let counts = run(&agents, &["after", "b-back"]);
    assert!(!counts.is_empty());
    assert!(
        agents[1].log().contains("resuming"),
        "b resumed from its copy:\n{}",
        agents[1].log()
    );

    // etcd away: writes are refused as unavailable, both nodes keep their routes.
    etcd.stop();
    let held = run(&agents, &["unavailable"]);
    let held: Vec<&str> = held.split_whitespace().collect();
    assert_eq!(held[0], held[1], "both keep the same copy");
    for v in &vr {
        let r = prefixes(&v.socket);
        assert!(pods.iter().all(|p| r.contains(p)), "routes kept: {r:?}");
    }
    etcd.restart();
    // Back: a write through a reaches b.
    run(&agents, &["after", "etcd-back"]);
    drop(agents);
    drop(vr);
    drop(d);
}

/// One phase against a single agent (b away): the script's A and B are both a.
fn run_one(a: &Agent, phase: &str, arg: &str) -> String {
    python(
        "cluster_config.py",
        &[a.target.as_str(), a.target.as_str(), phase, arg],
    )
}
