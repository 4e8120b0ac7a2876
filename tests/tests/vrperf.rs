//! vrperf end to end: every scenario through the real vrouter daemon (debug build, so
//! the rates mean nothing here; what is checked is that each scenario forwards what it
//! should, that the references run on the same vdevs and that the outputs are written),
//! and a latency run through the ring-backed ports.

use std::path::Path;
use std::process::Command;

use vr_tests::workspace_bin;

fn vrperf(args: &[&str]) -> std::process::Output {
    let out = Command::new(workspace_bin("vrperf"))
        .args(args)
        .output()
        .expect("vrperf runs");
    assert!(
        out.status.success(),
        "vrperf {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("results.json")).expect("results.json"))
        .expect("results.json is JSON")
}

#[test]
fn every_scenario_forwards_through_the_vrouter_without_drops() {
    let dir = tempdir("vrperf-all");
    vrperf(&[
        "run",
        "-s",
        "all",
        "--flows",
        "600",
        "--duration-s",
        "0.5",
        "--warmup-s",
        "0.5",
        "--no-testpmd",
        "--no-ovs",
        "-o",
        dir.to_str().unwrap(),
    ]);
    let r = results(&dir);
    let rows = r["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows
        .iter()
        .map(|x| x["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "l3-local",
            "vxlan-encap",
            "mplsudp-encap",
            "decap",
            "ecmp16",
            "flow-setup",
            "snat"
        ]
    );
    for row in rows {
        let name = row["scenario"].as_str().unwrap();
        let v = &row["vrouter"];
        assert!(
            v["mpps"].as_f64().unwrap_or(0.0) > 0.0,
            "{name}: no rate: {row}"
        );
        assert!(
            v["cycles_per_packet"].as_f64().unwrap_or(0.0) > 0.0,
            "{name}: {row}"
        );
        assert!(
            row["drops"].as_object().unwrap().is_empty(),
            "{name} dropped packets: {}",
            row["drops"]
        );
        assert!(
            row["notes"].as_array().unwrap().is_empty(),
            "{name}: {}",
            row["notes"]
        );
        // 128-byte entries plus a 4-byte signature each.
        assert_eq!(row["flow_bytes_per_entry"].as_f64(), Some(132.0), "{name}");
    }
    let setup = &rows[5];
    assert_eq!(setup["kind"], "Setup");
    assert!(setup["flow_setup_per_s_per_lcore"].as_f64().unwrap() > 0.0);
    // The decap scenario raised 64 bytes to its smallest frame.
    assert_eq!(rows[3]["size"], "82");
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 7, "{csv}");
    assert!(csv.starts_with("scenario,kind,size,"));
    let table = std::fs::read_to_string(dir.join("table.txt")).unwrap();
    assert!(table.contains("flow-setup") && table.contains("Mpps/lc"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn testpmd_runs_on_the_same_vdevs_and_sweeps_are_plotted() {
    let dir = tempdir("vrperf-ref");
    vrperf(&[
        "run",
        "-s",
        "vxlan-encap",
        "--size",
        "64,imix",
        "--flows",
        "256",
        "--duration-s",
        "1",
        "--warmup-s",
        "1",
        "--no-ovs",
        "-o",
        dir.to_str().unwrap(),
    ]);
    let r = results(&dir);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        for k in ["testpmd_io", "testpmd_macswap"] {
            assert!(row[k]["mpps"].as_f64().unwrap_or(0.0) > 0.0, "{k}: {row}");
        }
        assert!(
            row["ratio_testpmd_io"].as_f64().unwrap_or(0.0) > 0.0,
            "{row}"
        );
        assert!(
            row["testpmd_io"]["cycles_per_packet"].as_f64().is_some(),
            "{row}"
        );
    }
    assert_eq!(rows[1]["size"], "imix");
    assert!((rows[1]["frame_bytes"].as_f64().unwrap() - 353.83).abs() < 0.01);
    let png = std::fs::read(dir.join("mpps_vs_size.png")).expect("size plot written");
    assert_eq!(&png[1..4], b"PNG");
    assert!(r["machine"]["cpus"].as_u64().unwrap() >= 1);
    // `report` rewrites the same table and CSV from the JSON.
    let again = dir.join("again");
    vrperf(&[
        "report",
        "--from",
        dir.join("results.json").to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    for f in ["results.csv", "table.txt"] {
        assert_eq!(
            std::fs::read_to_string(dir.join(f)).unwrap(),
            std::fs::read_to_string(again.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(again.join("mpps_vs_size.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn latency_run_gets_every_stamped_packet_back() {
    let out = vrperf(&[
        "latency",
        "--rate-mpps",
        "0.05",
        "--duration-s",
        "0.5",
        "--warmup-s",
        "0.5",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let l: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap()).expect("one JSON line");
    // Everything due at the offered rate was offered: taken by the vrouter's input ring
    // (sent) or refused by it (not offered; a busy machine can starve the lcore).
    let sent = l["sent"].as_u64().unwrap();
    let offered = sent + l["not_offered"].as_u64().unwrap();
    assert!(
        (24_000..=26_000).contains(&offered) && sent > 0,
        "0.05 Mpps for 0.5 s: {l}"
    );
    assert_eq!(
        l["received"].as_u64(),
        Some(sent),
        "every packet came back: {l}"
    );
    let p = |k: &str| l[k].as_f64().unwrap();
    assert!(p("min_us") > 0.0);
    assert!(p("min_us") <= p("p50_us") && p("p50_us") <= p("p99_us"));
    assert!(p("p99_us") <= p("p999_us") && p("p999_us") <= p("max_us"));
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    for (args, says) in [
        (vec!["run", "-s", "nope"], "no scenario \"nope\""),
        (
            vec!["run", "--size", "40"],
            "frame sizes go from 64 to 1518",
        ),
        (vec!["run", "--flows", "0"], "--flows 0"),
        (
            vec!["run", "--burst", "65", "--no-ovs"],
            "bursts go from 1 to 64",
        ),
        (vec!["latency", "-s", "flow-setup"], "forwarding scenarios"),
    ] {
        let out = Command::new(workspace_bin("vrperf"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("{tag}.{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn pods_run_forwards_busy_pods_beside_idle_ones_and_on_the_pmd() {
    let out = vrperf(&[
        "pods",
        "--idle",
        "30",
        "--duration-s",
        "1",
        "--warmup-s",
        "1",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = vr_tests::json_lines(&text);
    let (tcp, rows): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| r.get("gbps").is_some());
    let names: Vec<&str> = rows.iter().filter_map(|r| r["variant"].as_str()).collect();
    assert_eq!(
        names,
        ["packet", "packet + 30 idle", "af_packet PMD"],
        "{text}"
    );
    // Bulk TCP between two pods, on the rings and on the PMD.
    let names: Vec<&str> = tcp.iter().filter_map(|r| r["variant"].as_str()).collect();
    assert_eq!(names, ["packet", "af_packet PMD"], "{text}");
    assert!(
        tcp.iter().all(|r| r["gbps"].as_f64().unwrap() > 0.0),
        "{text}"
    );
    for r in &rows {
        assert!(r["forwarded_mpps"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["cycles_per_packet"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["delivered"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(rows[1]["interfaces"], 32);
    assert_eq!(rows[0]["ratio"], 1.0);
}
