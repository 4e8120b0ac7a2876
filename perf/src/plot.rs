//! PNG plots of the results (plotters): Mpps against frame size, flows and lcores, for
//! the vrouter and the references measured at the same points.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::runner::{Measure, Row};
use crate::scenario::Kind;

/// The font the labels are drawn with (Debian's fonts-dejavu-core).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn font() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes =
            std::fs::read(FONT).map_err(|e| format!("{FONT}: {e} (install fonts-dejavu-core)"))?;
        // The font lives as long as the process: plotters keeps a 'static reference.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT}: not a usable font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend.
    pub name: String,
    /// Points, sorted by x.
    pub points: Vec<(f64, f64)>,
}

/// Draws `series` as lines with points.
pub fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    log_x: bool,
    series: &[Series],
) -> Result<()> {
    font()?;
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let y1 = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        * 1.15;
    if series.is_empty() || x0 > x1 {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = if x0 == x1 {
        (x0 * 0.5, x1 * 1.5)
    } else {
        (x0, x1)
    };
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64);
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    macro_rules! draw {
        ($chart:expr) => {{
            let mut c = $chart;
            c.configure_mesh()
                .x_desc(x_label)
                .y_desc("Mpps per lcore")
                .label_style(("sans-serif", 15))
                .draw()?;
            for (i, s) in series.iter().enumerate() {
                let color = palette[i % palette.len()];
                c.draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
                c.draw_series(s.points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
            }
            c.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 15))
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }};
    }
    if log_x {
        draw!(b.build_cartesian_2d((x0..x1 * 1.01).log_scale(), 0.0..y1.max(0.1))?);
    } else {
        draw!(b.build_cartesian_2d(x0..x1, 0.0..y1.max(0.1))?);
    }
    root.present()?;
    Ok(())
}

/// Rows that differ only in the value `key` picks, grouped by everything else.
fn sweeps(
    rows: &[Row],
    key: impl Fn(&Row) -> f64,
    rest: impl Fn(&Row) -> String,
) -> BTreeMap<String, Vec<&Row>> {
    let mut g: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.kind == Kind::Forward) {
        g.entry(rest(r)).or_default().push(r);
    }
    g.retain(|_, v| {
        v.sort_by(|a, b| key(a).total_cmp(&key(b)));
        v.dedup_by(|a, b| key(a) == key(b));
        v.len() >= 2
    });
    g
}

fn series_of(
    name: String,
    rows: &[&Row],
    key: &impl Fn(&Row) -> f64,
    pick: impl Fn(&Row) -> Option<Measure>,
    total: bool,
) -> Option<Series> {
    let points: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| pick(r).map(|m| (key(r), if total { m.mpps } else { m.mpps_per_lcore })))
        .collect();
    (points.len() >= 2).then_some(Series { name, points })
}

fn plot_sweeps(
    path: &Path,
    title: &str,
    x_label: &str,
    log_x: bool,
    total: bool,
    groups: BTreeMap<String, Vec<&Row>>,
    key: impl Fn(&Row) -> f64,
) -> Result<bool> {
    let mut series = Vec::new();
    for (label, rows) in &groups {
        series.extend(series_of(
            format!("vrouter {label}"),
            rows,
            &key,
            |r| r.vrouter,
            total,
        ));
        series.extend(series_of(
            format!("testpmd io ({label})"),
            rows,
            &key,
            |r| r.testpmd_io,
            total,
        ));
        series.extend(series_of(
            format!("OVS-DPDK ({label})"),
            rows,
            &key,
            |r| r.ovs,
            total,
        ));
    }
    if series.is_empty() {
        return Ok(false);
    }
    chart(path, title, x_label, log_x, &series)?;
    Ok(true)
}

/// Writes the plots the rows allow into `dir`; returns the files written.
pub fn write(dir: &Path, rows: &[Row]) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let by_size = sweeps(
        rows,
        |r| r.frame_bytes,
        |r| format!("{} {} flows {} lc", r.scenario, r.flows, r.lcores),
    );
    if plot_sweeps(
        &dir.join("mpps_vs_size.png"),
        "Mpps per lcore vs frame size",
        "frame size (bytes, IMIX at its mean)",
        false,
        false,
        by_size,
        |r| r.frame_bytes,
    )? {
        written.push("mpps_vs_size.png".into());
    }
    let by_flows = sweeps(
        rows,
        |r| f64::from(r.flows),
        |r| format!("{} {}B {} lc", r.scenario, r.size, r.lcores),
    );
    if plot_sweeps(
        &dir.join("mpps_vs_flows.png"),
        "Mpps per lcore vs established flows",
        "flows",
        true,
        false,
        by_flows,
        |r| f64::from(r.flows),
    )? {
        written.push("mpps_vs_flows.png".into());
    }
    let by_lcores = sweeps(
        rows,
        |r| r.lcores as f64,
        |r| format!("{} {}B {} flows", r.scenario, r.size, r.flows),
    );
    if plot_sweeps(
        &dir.join("mpps_vs_lcores.png"),
        "Mpps (all lcores) vs forwarding lcores",
        "forwarding lcores",
        false,
        true,
        by_lcores,
        |r| r.lcores as f64,
    )? {
        written.push("mpps_vs_lcores.png".into());
    }
    Ok(written)
}
