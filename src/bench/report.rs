//! Reports as tables for people (JSON is the reports' `Serialize`).

use std::fmt::Write;

use super::correctness::Correctness;
use super::sync::{SyncReport, SyncResult};

/// The table of a `bench sync` run.
pub fn sync_table(report: &SyncReport) -> String {
    let s = &report.sizes;
    let mut out = format!(
        "sync: {} endpoints (+{} identities, {} nodes, {} services) to {} agents at once, store {}\n\n",
        s.endpoints, s.identities, s.nodes, s.services, report.agents, report.store
    );
    let mut rows = vec![header(&[
        "SYSTEM",
        "P50",
        "P99",
        "MAX",
        "ALL SYNCED",
        "OBJECTS/S",
    ])];
    rows.push(sync_row(&report.fleetmesh));
    if let Some(baseline) = &report.baseline {
        rows.push(sync_row(baseline));
    }
    if let Some(etcd_api) = &report.etcd_api {
        rows.push(sync_row(etcd_api));
    }
    out.push_str(&columns(&rows));
    if let Some(ratio) = &report.ratio {
        let _ = writeln!(
            out,
            "\netcd-direct / fleetmesh: p99 {:.1}×, all synced {:.1}×",
            ratio.p99, ratio.all_synced
        );
    }
    if let Some(ratio) = &report.etcd_api_ratio {
        let _ = writeln!(
            out,
            "etcd-direct / etcd-api: p99 {:.1}×, all synced {:.1}×",
            ratio.p99, ratio.all_synced
        );
    }
    let _ = writeln!(
        out,
        "{}",
        verdict(
            report.is_correct(),
            "nothing lost, phantom, duplicate or out of order; no flaps"
        )
    );
    out
}

fn sync_row(r: &SyncResult) -> Vec<String> {
    let mut row = vec![
        r.system.to_string(),
        ms(r.synced.p50_ms),
        ms(r.synced.p99_ms),
        ms(r.synced.max_ms),
        ms(r.all_synced_ms),
        format!("{:.0}", r.objects_per_s),
    ];
    row.extend(correctness_cells(&r.correctness));
    row
}

/// The correctness counters' columns, in the order of [`correctness_cells`].
const CORRECTNESS_HEADER: [&str; 5] = ["LOST", "PHANTOM", "DUPLICATE", "OUT-OF-ORDER", "FLAPS"];

/// Cells of `texts`, as a row of [`columns`].
pub(super) fn cells(texts: &[&str]) -> Vec<String> {
    texts.iter().map(ToString::to_string).collect()
}

/// A header row: `names`, then the correctness counters' columns.
pub(super) fn header(names: &[&str]) -> Vec<String> {
    let mut row = cells(names);
    row.extend(cells(&CORRECTNESS_HEADER));
    row
}

/// A table's last line: `correct: ` and what that means for the scenario, or that the
/// counters show it is not.
pub(super) fn verdict(correct: bool, meaning: &str) -> String {
    if correct {
        format!("correct: {meaning}")
    } else {
        "INCORRECT: see the counters above".to_string()
    }
}

/// The cells under [`header`]'s correctness columns.
pub(super) fn correctness_cells(c: &Correctness) -> Vec<String> {
    // A counter a system cannot observe shows as `-`, never as a zero it did not check.
    let maybe = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    vec![
        c.lost.to_string(),
        c.phantom.to_string(),
        maybe(c.duplicate),
        maybe(c.out_of_order),
        c.flaps.to_string(),
    ]
}

pub(super) fn ms(value: f64) -> String {
    if value >= 1000.0 {
        format!("{:.2} s", value / 1000.0)
    } else {
        format!("{value:.1} ms")
    }
}

/// Left-aligned columns two spaces apart.
pub(super) fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_durations_switch_units() {
        let rows = vec![
            vec!["A".to_string(), "BB".to_string()],
            vec!["ccc".to_string(), "d".to_string()],
        ];
        assert_eq!(columns(&rows), "A    BB\nccc  d\n");
        assert_eq!(ms(12.34), "12.3 ms");
        assert_eq!(ms(1500.0), "1.50 s");
    }

    #[test]
    fn unobserved_counters_are_dashes() {
        let cells = correctness_cells(&Correctness::default());
        assert_eq!(cells, ["0", "0", "-", "-", "0"]);
    }

    #[test]
    fn headers_end_with_the_counters_and_verdicts_say_why() {
        assert_eq!(
            header(&["SYSTEM"]),
            [
                "SYSTEM",
                "LOST",
                "PHANTOM",
                "DUPLICATE",
                "OUT-OF-ORDER",
                "FLAPS"
            ]
        );
        assert_eq!(verdict(true, "all there"), "correct: all there");
        assert_eq!(
            verdict(false, "all there"),
            "INCORRECT: see the counters above"
        );
    }
}
