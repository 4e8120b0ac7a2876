//! Kubernetes Services as native load balancers in `vrlab`, with real connections: a
//! ClusterIP service over three pods, port 80 to targetPort 8080 (TCP) and 53 to 5353
//! (UDP); connections spread over every backend and reach it on the target port; a port
//! the service does not have is blocked; sessionAffinity ClientIP keeps a client on one
//! backend; membership follows the pods' labels and the pods themselves.

use std::collections::BTreeMap;
use std::path::Path;

use vr_tests::VrLab;

fn manifest(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/services")
        .join(name)
        .display()
        .to_string()
}

/// `n` connections from the client to the service: which backend answered, how often.
fn spread(lab: &VrLab, n: usize, port: &str, protocol: &str) -> BTreeMap<String, usize> {
    spread_to(lab, "svc/default/web", n, port, protocol)
}

fn spread_to(
    lab: &VrLab,
    to: &str,
    n: usize,
    port: &str,
    protocol: &str,
) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let out = lab.ok(&[
            "probe",
            "--from",
            "default/client",
            "--to",
            to,
            "--port",
            port,
            "--protocol",
            protocol,
        ]);
        let who = out
            .split('(')
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap_or_default()
            .to_string();
        *seen.entry(who).or_insert(0) += 1;
    }
    seen
}

#[test]
fn a_cluster_ip_service_balances_translates_ports_and_follows_its_pods() {
    let lab = VrLab::new("svc");
    lab.ok(&["up"]);
    lab.ok(&["apply", "-f", &manifest("web.yaml")]);
    let vip = vr_tests::address_of(&lab.state()["services"]["default/web"]);
    assert!(
        vip.starts_with("10.9"),
        "a VIP from the service subnet: {vip}"
    );

    let all = ["default/web-1", "default/web-2", "default/web-3"];
    let tcp = spread(&lab, 24, "80", "TCP");
    assert_eq!(
        tcp.keys().map(String::as_str).collect::<Vec<_>>(),
        all,
        "every backend, only backends: {tcp:?}"
    );
    let udp = spread(&lab, 6, "53", "UDP");
    assert!(udp.keys().all(|k| all.contains(&k.as_str())), "{udp:?}");
    // Not a port of the service.
    let o = lab.vrlab(&[
        "probe",
        "--from",
        "default/client",
        "--to",
        "svc/default/web",
        "--port",
        "81",
    ]);
    assert_eq!(o.status.code(), Some(1));
    // The pods' own port 80 is not served: only 8080 is, through the service.
    let o = lab.vrlab(&[
        "probe",
        "--from",
        "default/client",
        "--to",
        "default/web-1",
        "--port",
        "80",
    ]);
    assert_eq!(o.status.code(), Some(1));

    // sessionAffinity ClientIP: every connection of the client to one backend.
    let sticky = lab.dir.join("sticky.yaml");
    std::fs::write(
        &sticky,
        "apiVersion: v1\nkind: Service\nmetadata: {name: sticky}\nspec:\n  selector: {app: web}\n  \
         sessionAffinity: ClientIP\n  ports: [{port: 80, targetPort: 8080}]\n",
    )
    .unwrap();
    lab.ok(&["apply", "-f", sticky.to_str().unwrap()]);
    let one = spread_to(&lab, "svc/default/sticky", 12, "80", "TCP");
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(
        all.contains(&one.keys().next().unwrap().as_str()),
        "{one:?}"
    );

    // web-3 loses the label: it leaves the service, the others stay.
    let relabel = lab.dir.join("relabel.yaml");
    std::fs::write(
        &relabel,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-3, labels: {app: other}}\n\
         spec: {containers: [{name: c, image: i, ports: [{containerPort: 8080}, {containerPort: 5353, protocol: UDP}]}]}\n",
    )
    .unwrap();
    lab.ok(&["apply", "-f", relabel.to_str().unwrap()]);
    let tcp = spread(&lab, 16, "80", "TCP");
    assert_eq!(
        tcp.keys().map(String::as_str).collect::<Vec<_>>(),
        ["default/web-1", "default/web-2"],
        "{tcp:?}"
    );
    // web-2 goes away.
    let gone = lab.dir.join("gone.yaml");
    std::fs::write(
        &gone,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-2}\n",
    )
    .unwrap();
    lab.ok(&["delete", "-f", gone.to_str().unwrap()]);
    let tcp = spread(&lab, 8, "80", "TCP");
    assert_eq!(
        tcp.keys().map(String::as_str).collect::<Vec<_>>(),
        ["default/web-1"],
        "{tcp:?}"
    );
}
