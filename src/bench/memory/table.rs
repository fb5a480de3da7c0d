//! The table of a `bench memory` run.

use std::fmt::Write;

use super::{Fit, MemoryReport};
use crate::bench::report::{cells, columns, correctness_cells, header, verdict};

/// Every point, every slope against its target, and the verdict.
pub fn memory_table(report: &MemoryReport) -> String {
    let mut out = format!(
        "memory: resident memory of separate processes, read {:.0} ms after each holds its state\n\n",
        report.settle_ms
    );
    let mut rows = vec![cells(&[
        "WHAT",
        "POINTS (size: RSS)",
        "SLOPE",
        "TARGET",
        "",
    ])];
    let slopes = [
        (
            "apiserver per 100k endpoints".to_string(),
            &report.apiserver,
            format!("{:.1} MiB", report.apiserver_mib_per_100k),
            "≤ 40 MiB",
            report.apiserver_target_met,
        ),
        (
            format!(
                "apiserver per idle agent ({} endpoints)",
                report.idle_agents_endpoints
            ),
            &report.idle_agents,
            format!("{:.1} KiB", report.kib_per_idle_agent),
            "≤ 64 KiB",
            report.idle_agent_target_met,
        ),
        (
            format!(
                "agent per 100k merged endpoints ({} clusters)",
                report.agent_clusters
            ),
            &report.agent,
            format!("{:.1} MiB", report.agent_mib_per_100k),
            "≤ 16 MiB",
            report.agent_target_met,
        ),
    ];
    let etcd = report.idle_etcd_watchers.as_ref().map(|w| {
        (
            format!(
                "apiserver per idle etcd client ({} endpoints; {} Cilium watches each: {:.1} KiB a watch)",
                report.idle_agents_endpoints, w.watches_per_client, w.kib_per_watch
            ),
            &w.fit,
            format!("{:.1} KiB", w.kib_per_client),
            "≤ 64 KiB",
            w.target_met,
        )
    });
    for (what, fit, slope, target, met) in slopes.into_iter().chain(etcd) {
        let verdict = if met { "met" } else { "MISSED" };
        rows.push(vec![
            what,
            points(fit),
            slope,
            target.into(),
            verdict.into(),
        ]);
    }
    out.push_str(&columns(&rows));

    let _ = writeln!(out, "\nevery probe's state checked afterwards:");
    out.push_str(&columns(&[
        header(&[]),
        correctness_cells(&report.correctness),
    ]));
    let _ = writeln!(
        out,
        "{}",
        verdict(
            report.is_correct(),
            "every probe held exactly its state; no flaps"
        )
    );
    out
}

/// `25000: 31.2 MiB, 50000: 40.1 MiB` — each point's size and RSS.
fn points(fit: &Fit) -> String {
    fit.points
        .iter()
        .map(|p| format!("{}: {:.1} MiB", p.size, p.rss_kib as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ")
}
