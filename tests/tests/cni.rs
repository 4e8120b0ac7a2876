//! `vrouter-cni` called exactly as a container runtime calls a CNI plugin: `CNI_*`
//! variables, the network configuration on standard input, the result or error JSON on
//! standard output. Pods are network namespaces made the way runtimes make them
//! (`/var/run/netns/...`), kube-manager has created their interfaces in a `vrlab` node,
//! and the plugin plugs them into that node's vrouter. Also chained with `tuning` from
//! Debian's containernetworking-plugins, which takes our result as its prevResult.

use std::process::Command;

use serde_json::{Value, json};
use vr_tests::{Netns, VrLab, as_refs, cni_call as call, in_ns, unique_prefix, workspace_bin};

fn cni(command: &str, env: &[(&str, &str)], conf: &Value) -> (bool, Value) {
    call(
        workspace_bin("vrouter-cni").to_str().unwrap(),
        command,
        env,
        conf,
    )
}

/// Makes pod `pod`'s interface dual-stack through the agent's configuration API (as an
/// operator would): the pod ipam gets `v6` as a second subnet, the interface a v6
/// instance IP the agent allocates from it.
fn add_v6(agent: &str, pod: &str, v6: &str) {
    use agent::proto::{self, config_api_client::ConfigApiClient, object::Kind as K};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = agent::client::connect(agent, None).await.unwrap();
        let mut c = ConfigApiClient::new(ch);
        let list = |t: &str| proto::ListRequest {
            r#type: t.into(),
            parent_fq_name: vec![],
        };
        let vmi = c
            .list(list("virtual-machine-interface"))
            .await
            .unwrap()
            .into_inner()
            .objects
            .into_iter()
            .find_map(|o| match o.kind {
                Some(K::VirtualMachineInterface(v))
                    if v.fq_name
                        .last()
                        .unwrap()
                        .ends_with(&format!("__default__{pod}")) =>
                {
                    Some(v)
                }
                _ => None,
            })
            .expect("the pod's interface");
        let vn_ref = vmi.virtual_network_ref.clone().unwrap();
        let vn = match c.get(vn_ref.clone()).await.unwrap().into_inner().kind {
            Some(K::VirtualNetwork(v)) => v,
            k => panic!("{k:?}"),
        };
        let ipam_ref = vn.network_ipam_refs[0].ipam.clone().unwrap();
        let mut ipam = match c.get(ipam_ref).await.unwrap().into_inner().kind {
            Some(K::NetworkIpam(i)) => i,
            k => panic!("{k:?}"),
        };
        ipam.ipam_subnets.push(proto::Subnet {
            prefix: v6.into(),
            ..Default::default()
        });
        c.update(proto::Object {
            kind: Some(K::NetworkIpam(ipam)),
        })
        .await
        .unwrap();
        c.create(proto::Object {
            kind: Some(K::InstanceIp(proto::InstanceIp {
                fq_name: vec![format!("{pod}-v6")],
                instance_ip_family: "v6".into(),
                virtual_network_ref: Some(vn_ref),
                virtual_machine_interface_refs: vec![proto::Ref {
                    r#type: "virtual-machine-interface".into(),
                    uuid: vmi.uuid.clone(),
                    fq_name: vec![],
                }],
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    });
}

#[test]
fn the_plugin_adds_checks_and_deletes_pods_and_chains_with_tuning() {
    let lab = VrLab::new("cni");
    lab.ok(&["up"]);
    let agent = lab.target();
    let manifest = lab.dir.join("pods.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {containers: [{name: c, image: i}]}\n",
    )
    .unwrap();
    let o = Command::new(workspace_bin("kube-manager"))
        .args(["--agent", &agent, "-f", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let p = unique_prefix("cni");
    let names = Netns(vec![format!("{p}-a"), format!("{p}-b")]);
    for n in &names.0 {
        assert!(
            Command::new("ip")
                .args(["netns", "add", n])
                .status()
                .unwrap()
                .success()
        );
    }
    let path = |n: &str| format!("/var/run/netns/{n}");
    let conf =
        json!({"cniVersion": "1.0.0", "name": "vrouter", "type": "vrouter-cni", "agent": agent});
    let env = |pod: &'static str, ns: &str| -> Vec<(String, String)> {
        vec![
            ("CNI_CONTAINERID".into(), format!("{p}-{pod}-container")),
            ("CNI_NETNS".into(), path(ns)),
            ("CNI_IFNAME".into(), "eth0".into()),
            (
                "CNI_ARGS".into(),
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
            ),
        ]
    };
    let env_a = env("a", &names.0[0]);
    let env_b = env("b", &names.0[1]);
    // Pod a is dual-stack.
    add_v6(&agent, "a", "fd00:32::/64");

    // ADD: the result as the spec lays it out, and the namespace as the result says.
    let (ok, ra) = cni("ADD", &as_refs(&env_a), &conf);
    assert!(ok, "{ra}");
    assert_eq!(ra["cniVersion"], "1.0.0");
    let iface = &ra["interfaces"][0];
    assert_eq!(iface["name"], "eth0");
    assert_eq!(iface["sandbox"], path(&names.0[0]));
    let mac = iface["mac"].as_str().unwrap().to_string();
    let ip_a = ra["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(ip_a.starts_with("10.3") && ip_a.ends_with("/12"), "{ra}");
    assert_eq!(ra["ips"][0]["interface"], 0);
    let gw = ra["ips"][0]["gateway"].as_str().unwrap().to_string();
    assert_eq!(ra["routes"][0], json!({"dst": "0.0.0.0/0", "gw": gw}));
    // Its IPv6 address and default route, in the result and in the namespace.
    let ip6 = ra["ips"][1]["address"].as_str().unwrap().to_string();
    assert!(ip6.starts_with("fd00:32::") && ip6.ends_with("/64"), "{ra}");
    let gw6 = ra["ips"][1]["gateway"].as_str().unwrap().to_string();
    assert_eq!(ra["routes"][1], json!({"dst": "::/0", "gw": gw6}));
    let r6 = in_ns(&names.0[0], &["ip", "-6", "route", "show", "default"]);
    let r6 = String::from_utf8_lossy(&r6.stdout).to_string();
    assert!(r6.contains(&format!("via {gw6} dev eth0")), "{r6}");
    let link = in_ns(&names.0[0], &["ip", "-o", "addr", "show", "dev", "eth0"]);
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    assert!(link.contains(&format!(" {ip_a} ")), "{link}");
    let l2 = String::from_utf8_lossy(&in_ns(&names.0[0], &["ip", "link", "show", "eth0"]).stdout)
        .to_string();
    assert!(l2.contains(&mac), "{l2}");
    // The MTU a 1500-byte fabric leaves after the largest encapsulation (VXLAN).
    assert!(l2.contains("mtu 1450"), "{l2}");
    // And the vrouter serves the pod's link with that MTU (its ring, its size checks).
    let vifs = vr_tests::vrctl_json(&lab.dir.join("node1").join("vrouter.sock"), &["vif"]);
    let pod_vifs: Vec<&Value> = vifs
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            v["device"]
                .as_str()
                .is_some_and(|d| d.starts_with("packet:vr"))
        })
        .collect();
    assert!(
        !pod_vifs.is_empty() && pod_vifs.iter().all(|v| v["mtu"] == 1450),
        "{vifs}"
    );
    let (ok, rb) = cni("ADD", &as_refs(&env_b), &conf);
    assert!(ok, "{rb}");
    let ip_b = vr_tests::address_of(&rb["ips"][0]["address"]);

    // Traffic between the two pods goes through the vrouter.
    assert!(vr_tests::pings_within(&names.0[0], &ip_b), "a -> b");

    // CHECK with the previous result passes.
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = ra.clone();
    let (ok, out) = cni("CHECK", &as_refs(&env_a), &with_prev);
    assert!(ok, "{out}");

    // Chained: tuning takes our result, changes the MTU in the pod and passes it on.
    let tuning = json!({"cniVersion": "1.0.0", "name": "vrouter", "type": "tuning", "mtu": 1400, "prevResult": ra});
    let (ok, chained) = call("/usr/lib/cni/tuning", "ADD", &as_refs(&env_a), &tuning);
    assert!(ok, "{chained}");
    assert_eq!(chained["ips"], ra["ips"]);
    assert_eq!(chained["interfaces"][0]["name"], "eth0");
    let l2 = String::from_utf8_lossy(&in_ns(&names.0[0], &["ip", "link", "show", "eth0"]).stdout)
        .to_string();
    assert!(l2.contains("mtu 1400"), "{l2}");
    assert!(
        vr_tests::pings_within(&names.0[0], &ip_b),
        "a -> b after tuning"
    );

    // Drift, one kind at a time, each put back after CHECK names it: the IPv6 default
    // route, the MAC, the host end of the link; then the address, taken away for good.
    let check_fails = |what: &str, says: &str| {
        let (ok, e) = cni("CHECK", &as_refs(&env_a), &with_prev);
        assert!(!ok, "CHECK passed with {what}");
        assert_eq!(e["code"], 100, "{what}: {e}");
        assert!(e["msg"].as_str().unwrap().contains(says), "{what}: {e}");
    };
    let ns_a = names.0[0].clone();
    let sh = |args: &[&str]| assert!(in_ns(&ns_a, args).status.success(), "{args:?}");
    sh(&["ip", "-6", "route", "del", "default"]);
    check_fails("no IPv6 default route", "::/0");
    sh(&[
        "ip", "-6", "route", "add", "default", "via", &gw6, "dev", "eth0",
    ]);
    sh(&["ip", "link", "set", "eth0", "address", "02:00:00:00:00:99"]);
    check_fails("another MAC", &mac);
    sh(&["ip", "link", "set", "eth0", "address", &mac]);
    assert!(cni("CHECK", &as_refs(&env_a), &with_prev).0, "put back");
    in_ns(&names.0[0], &["ip", "addr", "del", &ip_a, "dev", "eth0"]);
    check_fails("the address gone", &ip_a);

    // A pod kube-manager does not know: try again later (code 11), nothing plugged.
    let mut env_c = env_a.clone();
    env_c[0].1 = format!("{p}-c-container");
    env_c[3].1 = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=c".into();
    let (ok, e) = cni("ADD", &as_refs(&env_c), &conf);
    assert!(!ok);
    assert_eq!(
        (e["code"].as_u64(), e["cniVersion"].as_str()),
        (Some(11), Some("1.0.0")),
        "{e}"
    );
    // Bad calls: no pod name (code 4), an unsupported version (code 1), bad JSON (code 6).
    let mut no_args = env_a.clone();
    no_args[3].1 = "IgnoreUnknown=1".into();
    assert_eq!(cni("ADD", &as_refs(&no_args), &conf).1["code"], 4);
    let old = json!({"cniVersion": "0.2.0", "name": "vrouter", "type": "vrouter-cni"});
    assert_eq!(cni("ADD", &as_refs(&env_a), &old).1["code"], 1);
    assert_eq!(
        cni("ADD", &as_refs(&env_a), &json!("not a config")).1["code"],
        6
    );

    // VERSION and STATUS.
    let (ok, v) = cni("VERSION", &[], &conf);
    assert!(
        ok && v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.0.0")),
        "{v}"
    );
    let mut status_conf = conf.clone();
    status_conf["cniVersion"] = json!("1.1.0");
    assert!(cni("STATUS", &[], &status_conf).0);
    status_conf["agent"] = json!("unix:/nonexistent/agent.sock");
    let (ok, e) = cni("STATUS", &[], &status_conf);
    assert!(!ok && e["code"] == 50, "{e}");
    // The agent serves no plain TCP: such an address is refused before anything is tried.
    status_conf["agent"] = json!("http://127.0.0.1:1");
    let (ok, e) = cni("STATUS", &[], &status_conf);
    assert!(!ok && e["msg"] == "agent is not an address", "{e}");

    // DEL: the pod's interface and its port go; a second DEL has nothing to do and succeeds.
    let (ok, out) = cni("DEL", &as_refs(&env_a), &conf);
    assert!(ok, "{out}");
    assert!(
        !in_ns(&names.0[0], &["ip", "link", "show", "eth0"])
            .status
            .success()
    );
    let (ok, e) = cni("CHECK", &as_refs(&env_a), &with_prev);
    assert!(!ok && e["code"] == 100, "{e}");
    assert!(cni("DEL", &as_refs(&env_a), &conf).0);
    assert!(cni("DEL", &as_refs(&env_b), &conf).0);
}

/// DEL as kubelet sends it in the bad cases: a late DEL for a pod's old sandbox after the
/// new sandbox was plugged leaves the new one alone; DEL with the agent away still removes
/// the pod's link and succeeds, and a repeated DEL has nothing left to do.
#[test]
fn a_late_del_for_an_old_sandbox_leaves_the_new_one_and_del_works_with_the_agent_away() {
    let lab = VrLab::new("cni-del");
    lab.ok(&["up"]);
    let agent = lab.target();
    let manifest = lab.dir.join("pods.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {containers: [{name: c, image: i}]}\n",
    )
    .unwrap();
    let o = Command::new(workspace_bin("kube-manager"))
        .args(["--agent", &agent, "-f", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = unique_prefix("cnidel");
    // a's first and second sandboxes, and b.
    let names = Netns(vec![format!("{p}-a1"), format!("{p}-a2"), format!("{p}-b")]);
    for n in &names.0 {
        assert!(
            Command::new("ip")
                .args(["netns", "add", n])
                .status()
                .unwrap()
                .success()
        );
    }
    let conf =
        json!({"cniVersion": "1.0.0", "name": "vrouter", "type": "vrouter-cni", "agent": agent});
    let env = |pod: &str, container: &str, ns: &str| -> Vec<(String, String)> {
        vec![
            ("CNI_CONTAINERID".into(), format!("{p}-{container}")),
            ("CNI_NETNS".into(), format!("/var/run/netns/{ns}")),
            ("CNI_IFNAME".into(), "eth0".into()),
            (
                "CNI_ARGS".into(),
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
            ),
        ]
    };
    let old = env("a", "old", &names.0[0]);
    let new = env("a", "new", &names.0[1]);
    let env_b = env("b", "b", &names.0[2]);
    let (ok, r) = cni("ADD", &as_refs(&old), &conf);
    assert!(ok, "{r}");
    let (ok, rb) = cni("ADD", &as_refs(&env_b), &conf);
    assert!(ok, "{rb}");
    let ip_b = vr_tests::address_of(&rb["ips"][0]["address"]);
    // The runtime makes a new sandbox for a before the old one's DEL comes.
    let (ok, r) = cni("ADD", &as_refs(&new), &conf);
    assert!(ok, "{r}");
    assert!(
        vr_tests::pings_within(&names.0[1], &ip_b),
        "new sandbox -> b"
    );
    let (ok, out) = cni("DEL", &as_refs(&old), &conf);
    assert!(ok, "{out}");
    assert!(
        vr_tests::pings_within(&names.0[1], &ip_b),
        "the new sandbox still reaches b after the old one's DEL"
    );

    // The agent away: DEL of the new sandbox removes its link and succeeds.
    let mut away = conf.clone();
    away["agent"] = json!("unix:/nonexistent/agent.sock");
    let (ok, out) = cni("DEL", &as_refs(&new), &away);
    assert!(ok, "{out}");
    assert!(
        !in_ns(&names.0[1], &["ip", "link", "show", "eth0"])
            .status
            .success(),
        "the pod's link is gone"
    );
    let (ok, out) = cni("DEL", &as_refs(&new), &away);
    assert!(ok, "a repeated DEL: {out}");
    assert!(cni("DEL", &as_refs(&env_b), &conf).0);
}
