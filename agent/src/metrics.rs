//! The Prometheus text endpoint (`GET /metrics`): the agent's counters, object counts by
//! type, and the vrouter's counters read over its control socket at each scrape (per vif,
//! drops by reason, flows).

use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::kinds::{Kind, kind_of};
use crate::program::Shared;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric_name(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Renders every metric.
pub fn render(shared: &Shared, socket: &std::path::Path) -> String {
    let mut out = String::new();
    let s = &shared.stats;
    let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        &mut out,
        "agent_vrouter_connected",
        "1 when the agent is connected to the vrouter",
        u64::from(s.connected.load(Ordering::Acquire)),
    );
    gauge(
        &mut out,
        "agent_stale_routes",
        "Routes of nodes whose agent went away, kept for the graceful period",
        s.stale_routes.load(Ordering::Relaxed),
    );
    let (revision, counts) = {
        let db = shared.db.read().unwrap_or_else(|e| e.into_inner());
        let mut counts = std::collections::BTreeMap::new();
        for o in db.all() {
            if let Some(k) = kind_of(o) {
                *counts.entry(k).or_insert(0u64) += 1;
            }
        }
        (db.revision(), counts)
    };
    gauge(
        &mut out,
        "agent_config_revision",
        "Configuration revision",
        revision,
    );
    gauge(
        &mut out,
        "agent_programmed_revision",
        "Configuration revision the vrouter reflects",
        s.programmed_revision.load(Ordering::Acquire),
    );
    for (name, help, v) in [
        ("agent_reconciles_total", "Reconciles done", &s.reconciles),
        (
            "agent_vrouter_ops_total",
            "Operations sent to the vrouter",
            &s.ops,
        ),
        (
            "agent_reconcile_failures_total",
            "Reconciles that failed",
            &s.failures,
        ),
        (
            "agent_refused_devices_total",
            "AddPort requests refused for a device off the allow-list",
            &s.refused_devices,
        ),
        (
            "agent_refused_routes_total",
            "Route values from other nodes refused",
            &s.refused_routes,
        ),
        (
            "agent_refused_config_total",
            "Configuration values from etcd refused",
            &s.refused_config,
        ),
        (
            "agent_config_retries_total",
            "Commits to the cluster's configuration checked again after losing a race",
            &s.config_retries,
        ),
        (
            "agent_api_refused_total",
            "API calls refused for the caller's roles",
            &shared.auth.refused,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP agent_objects Configuration objects by type\n# TYPE agent_objects gauge"
    );
    for k in Kind::ALL {
        let _ = writeln!(
            out,
            "agent_objects{{type=\"{}\"}} {}",
            k.name(),
            counts.get(k).copied().unwrap_or(0)
        );
    }
    let ports = shared.ports.lock().unwrap_or_else(|e| e.into_inner()).len();
    gauge(
        &mut out,
        "agent_ports",
        "Ports plugged on this node",
        ports as u64,
    );

    match vrouter_api::control::Client::connect(socket)
        .and_then(|mut c| c.call(vrouter_api::control::Op::Stats))
    {
        Ok(r) if r.ok => vrouter_metrics(&mut out, r.data.as_ref().unwrap_or(&Value::Null)),
        _ => gauge(&mut out, "vrouter_up", "1 when the vrouter answered", 0),
    }
    out
}

fn vrouter_metrics(out: &mut String, v: &Value) {
    let _ = writeln!(
        out,
        "# HELP vrouter_up 1 when the vrouter answered\n# TYPE vrouter_up gauge\nvrouter_up 1"
    );
    let Some(m) = v.as_object() else { return };
    // The packet counters, each declared once in vrouter-api with its meaning: every one
    // a Prometheus counter, zeros included, so that rates work from the first scrape.
    let declared = vrouter_api::counters::Counters::ALL;
    for (name, _) in declared {
        let help = vrouter_api::counters::Counters::help(name).unwrap_or_default();
        let n = m.get(*name).and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP vrouter_{name}_total {help}\n# TYPE vrouter_{name}_total counter\nvrouter_{name}_total {n}"
        );
    }
    for (k, x) in m {
        if declared.iter().any(|(name, _)| name == k) {
            continue;
        }
        match (k.as_str(), x) {
            ("drops", Value::Object(d)) => {
                let _ = writeln!(
                    out,
                    "# HELP vrouter_drops_total Packets dropped, by reason\n# TYPE vrouter_drops_total counter"
                );
                // Every reason, zeros included, so that rates work from the first scrape.
                for r in vrouter_api::drops::DropReason::ALL {
                    let n = d.get(r.name()).and_then(Value::as_u64).unwrap_or(0);
                    let _ = writeln!(
                        out,
                        "vrouter_drops_total{{reason=\"{}\"}} {n}",
                        label(r.name())
                    );
                }
                for (reason, n) in d {
                    if !vrouter_api::drops::DropReason::ALL
                        .iter()
                        .any(|r| r.name() == reason)
                    {
                        let _ = writeln!(
                            out,
                            "vrouter_drops_total{{reason=\"{}\"}} {}",
                            label(reason),
                            n.as_u64().unwrap_or(0)
                        );
                    }
                }
            }
            ("vifs", Value::Object(vifs)) => {
                let mut fields = std::collections::BTreeMap::<String, Vec<(String, u64)>>::new();
                for (name, c) in vifs {
                    for (f, n) in c.as_object().into_iter().flatten() {
                        if let Some(n) = n.as_u64() {
                            fields
                                .entry(metric_name(f))
                                .or_default()
                                .push((name.clone(), n));
                        }
                    }
                }
                for (f, rows) in fields {
                    let name = format!("vrouter_vif_{f}_total");
                    let _ = writeln!(
                        out,
                        "# HELP {name} Per-interface {f}\n# TYPE {name} counter"
                    );
                    for (vif, n) in rows {
                        let _ = writeln!(out, "{name}{{vif=\"{}\"}} {n}", label(&vif));
                    }
                }
            }
            (k, Value::Object(o)) => {
                for (f, n) in o {
                    if let Some(n) = n.as_u64() {
                        let name = format!("vrouter_{}_{}", metric_name(k), metric_name(f));
                        let _ = writeln!(out, "# TYPE {name} gauge\n{name} {n}");
                    }
                }
            }
            (k, n) => {
                if let Some(n) = n.as_f64() {
                    let name = format!("vrouter_{}", metric_name(k));
                    let _ = writeln!(out, "# TYPE {name} gauge\n{name} {n}");
                }
            }
        }
    }
}

/// Serves `/metrics` on `addr` until the runtime ends.
pub async fn serve(
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    socket: PathBuf,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let shared = Arc::clone(&shared);
            let socket = socket.clone();
            async move {
                tokio::task::spawn_blocking(move || render(&shared, &socket))
                    .await
                    .unwrap_or_default()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(l, app).await?;
    Ok(())
}
