//! `vrctl`: reads and changes a running vrouter's tables over its control socket, in the
//! spirit of TF's `vif`, `nh`, `rt`, `flow` and `dropstats` utilities. Tables for people,
//! `--json` for scripts. Exit status: 0 on success, 1 when the vrouter refused the request,
//! 2 when it could not be reached.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;
use vrouter::config::{Config, LabelCfg, RouteCfg, VniCfg};
use vrouter::control::{Client, DEFAULT_SOCKET, Op};

#[derive(Parser, Debug)]
#[command(
    name = "vrctl",
    version,
    about = "Inspect and program a running vrouter"
)]
struct Cli {
    /// The vrouter's control socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Protocol version and table version.
    Hello,
    /// Interfaces (add them with `vrctl apply`).
    Vif {
        /// List them (the default).
        #[arg(long, short)]
        list: bool,
        /// Delete vif ID (its port is closed and its device unplugged).
        #[arg(long, value_name = "ID")]
        delete: Option<u32>,
        /// Capture frames received and sent on vif ID into --file (pcap).
        #[arg(long, value_name = "ID")]
        capture: Option<u32>,
        /// Output file of --capture (written by the vrouter).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Frames to capture.
        #[arg(long, default_value_t = 100)]
        count: u32,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout_s: u64,
    },
    /// Nexthops.
    Nh {
        /// List them (the default).
        #[arg(long, short)]
        list: bool,
        /// Delete nexthop ID.
        #[arg(long, value_name = "ID")]
        delete: Option<u32>,
    },
    /// Routes.
    Rt {
        /// Dump the routes of VRF.
        #[arg(long, value_name = "VRF")]
        dump: Option<u32>,
        /// Add or replace: VRF PREFIX (with --nh, --label).
        #[arg(long, num_args = 2, value_names = ["VRF", "PREFIX"])]
        add: Option<Vec<String>>,
        /// Delete: VRF PREFIX.
        #[arg(long, num_args = 2, value_names = ["VRF", "PREFIX"])]
        delete: Option<Vec<String>>,
        /// Nexthop for --add.
        #[arg(long)]
        nh: Option<u32>,
        /// Label or VNI for --add.
        #[arg(long, default_value_t = 0)]
        label: u32,
    },
    /// MPLS labels.
    Mpls {
        /// List them (the default).
        #[arg(long, short)]
        list: bool,
        /// Map LABEL to --nh.
        #[arg(long, value_name = "LABEL")]
        add: Option<u32>,
        /// Nexthop for --add.
        #[arg(long)]
        nh: Option<u32>,
        /// Unmap LABEL.
        #[arg(long, value_name = "LABEL")]
        delete: Option<u32>,
    },
    /// VXLAN VNIs.
    Vxlan {
        /// List them (the default).
        #[arg(long, short)]
        list: bool,
        /// Map VNI to --vrf.
        #[arg(long, value_name = "VNI")]
        add: Option<u32>,
        /// VRF for --add.
        #[arg(long)]
        vrf: Option<u32>,
        /// Unmap VNI.
        #[arg(long, value_name = "VNI")]
        delete: Option<u32>,
    },
    /// The node's SNAT port ranges (the agent sets them from the global vrouter
    /// configuration).
    Snat {
        /// Set the TCP range, `FIRST-LAST` (with --udp).
        #[arg(long, value_name = "FIRST-LAST", requires = "udp", value_parser = port_range)]
        tcp: Option<[u16; 2]>,
        /// Set the UDP (and ICMP echo) range, `FIRST-LAST` (with --tcp).
        #[arg(long, value_name = "FIRST-LAST", requires = "tcp", value_parser = port_range)]
        udp: Option<[u16; 2]>,
    },
    /// VRFs.
    Vrf {
        /// List them (the default).
        #[arg(long, short)]
        list: bool,
        /// Create VRF ID.
        #[arg(long, value_name = "ID")]
        add: Option<u32>,
        /// Delete VRF ID.
        #[arg(long, value_name = "ID")]
        delete: Option<u32>,
    },
    /// Named rule sets (security groups, network and firewall policies as compiled).
    Policy,
    /// Endpoint attribute records (VN, tags) that rules match on.
    Attr,
    /// Live flows with their counters.
    Flow {
        /// List them (the default).
        #[arg(short = 'l', long)]
        list: bool,
    },
    /// Drops by reason.
    Dropstats,
    /// All counters: per vif, drops, flows.
    Stats,
    /// Apply a TOML fragment: interfaces with a device first, one at a time (each gets
    /// its port), then everything else in one all-or-nothing batch.
    Apply {
        /// The file.
        file: PathBuf,
    },
}

fn need<T>(v: Option<T>, what: &str) -> Result<T> {
    v.with_context(|| format!("{what} is required here"))
}

fn op_of(cmd: &Cmd) -> Result<Op> {
    Ok(match cmd {
        Cmd::Hello => Op::Hello,
        Cmd::Vif {
            delete: Some(id), ..
        } => Op::DelVif { id: *id },
        Cmd::Vif {
            capture: Some(vif),
            file,
            count,
            timeout_s,
            ..
        } => {
            let file = need(file.clone(), "--file")?;
            // The vrouter writes the file: give it an absolute path.
            let file = std::path::absolute(&file).unwrap_or(file);
            Op::Capture {
                vif: *vif,
                count: *count,
                file: file.display().to_string(),
                timeout_ms: timeout_s * 1000,
            }
        }
        Cmd::Vif { .. } => Op::DumpVifs { cursor: 0 },
        Cmd::Nh {
            delete: Some(id), ..
        } => Op::DelNexthop { id: *id },
        Cmd::Nh { .. } => Op::DumpNexthops { cursor: 0 },
        Cmd::Rt {
            add: Some(a),
            nh,
            label,
            ..
        } => Op::AddRoute(RouteCfg {
            vrf: a[0].parse().context("VRF")?,
            prefix: a[1].clone(),
            nh: need(*nh, "--nh")?,
            label: *label,
            attr: 0,
        }),
        Cmd::Rt {
            delete: Some(d), ..
        } => Op::DelRoute {
            vrf: d[0].parse().context("VRF")?,
            prefix: d[1].clone(),
        },
        Cmd::Rt { dump, .. } => Op::DumpRoutes {
            vrf: need(*dump, "--dump VRF (or --add / --delete)")?,
            cursor: 0,
        },
        Cmd::Mpls {
            add: Some(label),
            nh,
            ..
        } => Op::SetLabel(LabelCfg {
            label: *label,
            nh: need(*nh, "--nh")?,
        }),
        Cmd::Mpls {
            delete: Some(label),
            ..
        } => Op::DelLabel { label: *label },
        Cmd::Mpls { .. } => Op::DumpLabels { cursor: 0 },
        Cmd::Vxlan {
            add: Some(vni),
            vrf,
            ..
        } => Op::SetVni(VniCfg {
            vni: *vni,
            vrf: need(*vrf, "--vrf")?,
        }),
        Cmd::Vxlan {
            delete: Some(vni), ..
        } => Op::DelVni { vni: *vni },
        Cmd::Vxlan { .. } => Op::DumpVnis,
        Cmd::Snat {
            tcp: Some(tcp),
            udp: Some(udp),
        } => Op::SetSnatPorts(vrouter::config::SnatPortsCfg {
            tcp: *tcp,
            udp: *udp,
        }),
        Cmd::Snat { .. } => Op::DumpSnatPorts,
        Cmd::Vrf { add: Some(id), .. } => Op::AddVrf { id: *id },
        Cmd::Vrf {
            delete: Some(id), ..
        } => Op::DelVrf { id: *id },
        Cmd::Vrf { .. } => Op::DumpVrfs,
        Cmd::Flow { .. } => Op::DumpFlows { cursor: 0 },
        Cmd::Policy => Op::DumpPolicies,
        Cmd::Attr => Op::DumpAttrs,
        Cmd::Dropstats | Cmd::Stats => Op::Stats,
        Cmd::Apply { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let c =
                Config::from_toml(&text).with_context(|| format!("parsing {}", file.display()))?;
            let mut ops: Vec<Op> = c.vrfs.iter().map(|v| Op::AddVrf { id: v.id }).collect();
            ops.extend(
                c.vifs
                    .into_iter()
                    .filter(|v| v.device.is_none())
                    .map(Op::AddVif),
            );
            ops.extend(c.nexthops.into_iter().map(Op::SetNexthop));
            ops.extend(c.routes.into_iter().map(Op::AddRoute));
            ops.extend(c.labels.into_iter().map(Op::SetLabel));
            ops.extend(c.vnis.into_iter().map(Op::SetVni));
            Op::Batch { ops }
        }
    })
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

fn table(rows: &[Value], cols: &[(&str, &str)]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|(_, k)| s(&r[*k])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|c| c[i].len())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |c: Vec<String>| {
        c.iter()
            .zip(&widths)
            .map(|(x, w)| format!("{x:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!(
        "{}",
        line(cols.iter().map(|(h, _)| h.to_string()).collect())
    );
    for c in cells {
        println!("{}", line(c));
    }
}

fn print(cmd: &Cmd, data: &Value) {
    let items = |d: &Value| {
        d["items"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| d.as_array().cloned().unwrap_or_default())
    };
    match cmd {
        Cmd::Vif {
            delete: None,
            capture: None,
            ..
        } => table(
            &items(data),
            &[
                ("vif", "id"),
                ("name", "name"),
                ("kind", "kind"),
                ("vrf", "vrf"),
                ("mac", "mac"),
                ("ip4", "ip4"),
                ("mtu", "mtu"),
                ("device", "device"),
            ],
        ),
        Cmd::Nh { delete: None, .. } => {
            for n in items(data) {
                let mut rest = n.clone();
                if let Some(o) = rest.as_object_mut() {
                    o.remove("id");
                    o.remove("type");
                }
                println!("nh {:<6} {:<10} {}", s(&n["id"]), s(&n["type"]), rest);
            }
        }
        Cmd::Rt {
            dump: Some(_),
            add: None,
            delete: None,
            ..
        } => table(
            &items(data),
            &[("prefix", "prefix"), ("nh", "nh"), ("label", "label")],
        ),
        Cmd::Mpls {
            add: None,
            delete: None,
            ..
        } => table(&items(data), &[("label", "label"), ("nh", "nh")]),
        Cmd::Vxlan {
            add: None,
            delete: None,
            ..
        } => table(&items(data), &[("vni", "vni"), ("vrf", "vrf")]),
        Cmd::Snat {
            tcp: None,
            udp: None,
        } => {
            for proto in ["tcp", "udp"] {
                println!("{proto} {}-{}", s(&data[proto][0]), s(&data[proto][1]));
            }
        }
        Cmd::Vrf {
            add: None,
            delete: None,
            ..
        } => table(
            &items(data),
            &[("vrf", "id"), ("route generation", "generation")],
        ),
        Cmd::Policy => {
            for p in items(data) {
                println!("{} (default {})", s(&p["name"]), s(&p["default"]));
                for (i, r) in p["rules"].as_array().into_iter().flatten().enumerate() {
                    println!("  {i:>3}  {r}");
                }
            }
        }
        Cmd::Attr => table(
            &items(data),
            &[("id", "id"), ("vn", "vn"), ("tags", "tags")],
        ),
        Cmd::Flow { .. } => table(
            &items(data),
            &[
                ("index", "index"),
                ("rflow", "rflow"),
                ("vrf", "vrf"),
                ("proto", "proto"),
                ("src", "src"),
                ("sport", "sport"),
                ("dst", "dst"),
                ("dport", "dport"),
                ("action", "action"),
                ("nh", "nh"),
                ("tcp", "tcp"),
                ("packets", "packets"),
                ("bytes", "bytes"),
            ],
        ),
        Cmd::Dropstats => {
            let mut d: Vec<_> = data["drops"]
                .as_object()
                .map(|o| o.iter().collect())
                .unwrap_or_default();
            d.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in d {
                println!("{k:<22} {v}");
            }
        }
        Cmd::Stats => {
            println!(
                "rx {} tx {} flows created {} hits {} decap {} encap {} ({} lcores, {:.1}s)",
                s(&data["rx"]),
                s(&data["tx"]),
                s(&data["flows_created"]),
                s(&data["flow_hits"]),
                s(&data["decap"]),
                s(&data["encap"]),
                s(&data["lcores"]),
                data["seconds"].as_f64().unwrap_or(0.0)
            );
            let mut v: Vec<_> = data["vifs"]
                .as_object()
                .map(|o| o.iter().collect())
                .unwrap_or_default();
            v.sort_by(|a, b| a.0.cmp(b.0));
            let rows: Vec<Value> =
                v.iter().map(|(n, c)| serde_json::json!({"vif": n, "rx": c["rx"], "tx": c["tx"], "tx_dropped": c["tx_dropped"]})).collect();
            table(
                &rows,
                &[
                    ("vif", "vif"),
                    ("rx", "rx"),
                    ("tx", "tx"),
                    ("tx_drop", "tx_dropped"),
                ],
            );
            println!("flow table: {}", data["flow_table"]);
        }
        _ => println!("ok ({})", data),
    }
}

fn main() -> ExitCode {
    vrouter::cli::quiet_broken_pipe();
    let cli = Cli::parse();
    let op = match op_of(&cli.cmd) {
        Ok(op) => op,
        Err(e) => {
            eprintln!("vrctl: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut client = match Client::connect(&cli.socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "vrctl: cannot reach the vrouter at {}: {e}",
                cli.socket.display()
            );
            return ExitCode::from(2);
        }
    };
    // `apply`: interfaces with a device go first, each on its own.
    if let Cmd::Apply { file } = &cli.cmd {
        let vifs = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| Config::from_toml(&t).ok())
            .map(|c| {
                c.vifs
                    .into_iter()
                    .filter(|v| v.device.is_some())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for v in vifs {
            let name = format!("vif {} ({})", v.id, v.name);
            match client.call(Op::AddVif(v)) {
                Ok(r) if r.ok => println!("{name}: attached"),
                Ok(r) => {
                    let e = r
                        .error
                        .map(|e| format!("({}): {}", e.code, e.message))
                        .unwrap_or_default();
                    eprintln!("vrctl: refused {e}");
                    return ExitCode::from(1);
                }
                Err(e) => {
                    eprintln!("vrctl: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    // Listings follow the cursor to the end.
    let paged = matches!(
        op,
        Op::DumpVifs { .. }
            | Op::DumpNexthops { .. }
            | Op::DumpRoutes { .. }
            | Op::DumpLabels { .. }
            | Op::DumpFlows { .. }
    );
    let data = if paged {
        let op2 = op.clone();
        let with_cursor = move |c: u32| match &op2 {
            Op::DumpVifs { .. } => Op::DumpVifs { cursor: c },
            Op::DumpNexthops { .. } => Op::DumpNexthops { cursor: c },
            Op::DumpRoutes { vrf, .. } => Op::DumpRoutes {
                vrf: *vrf,
                cursor: c,
            },
            Op::DumpLabels { .. } => Op::DumpLabels { cursor: c },
            _ => Op::DumpFlows { cursor: c },
        };
        match client.dump_all(with_cursor) {
            Ok(items) => serde_json::json!({ "items": items }),
            Err(e) => {
                eprintln!("vrctl: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        match client.call(op) {
            Ok(r) if r.ok => r.data.unwrap_or(Value::Null),
            Ok(r) => {
                let e = r.error.unwrap_or_else(|| vrouter::control::ErrorBody {
                    code: "unknown".into(),
                    message: String::new(),
                });
                eprintln!("vrctl: refused ({}): {}", e.code, e.message);
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("vrctl: {e}");
                return ExitCode::from(2);
            }
        }
    };
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&data).unwrap_or_default()
        );
    } else {
        print(&cli.cmd, &data);
    }
    ExitCode::SUCCESS
}

/// A `FIRST-LAST` port range.
fn port_range(s: &str) -> Result<[u16; 2], String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not FIRST-LAST"))?;
    let port = |x: &str| x.parse::<u16>().map_err(|_| format!("{x:?} is not a port"));
    Ok([port(a)?, port(b)?])
}
