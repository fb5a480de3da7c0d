//! The table of a `bench merge` run.

use std::fmt::Write;

use super::MergeReport;
use crate::bench::report::{columns, correctness_cells, header, ms, verdict};

/// The run's figures and verdicts.
pub fn merge_table(report: &MergeReport) -> String {
    let s = &report.sizes;
    let mut out = format!(
        "merge: one agent merging {} clusters of {} endpoints (+{} identities, {} nodes, {} services) each, \
         {} endpoints in all (cluster ids {}); apiservers ready in {}\n\n",
        report.clusters,
        s.endpoints,
        s.identities,
        s.nodes,
        s.services,
        report.merged_endpoints,
        report.id_mode,
        ms(report.apiservers_ready_ms),
    );
    let mut row = vec![
        ms(report.synced.p50_ms),
        ms(report.synced.p99_ms),
        ms(report.synced.max_ms),
        ms(report.all_synced_ms),
        format!("{:.0}", report.objects_per_s),
        format!("{:.1} MiB", report.rss_growth_mib),
        format!("{:.1} MiB", report.rss_growth_mib_per_100k),
    ];
    row.extend(correctness_cells(&report.correctness));
    let header = header(&[
        "P50",
        "P99",
        "MAX",
        "ALL SYNCED",
        "OBJECTS/S",
        "RSS GROWTH",
        "PER 100K",
    ]);
    out.push_str(&columns(&[header, row]));
    let judged = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured at this size",
    };
    let _ = writeln!(
        out,
        "\ntarget 255 × 1,000 merged in ≤ 10 s (--clusters 255 --endpoints 1000): {}",
        judged(report.target_met)
    );
    if report.cache_keys.is_some() {
        let _ = writeln!(
            out,
            "target 255 × 10,000 with the cache keys: synced ≤ 20 s, RSS growth ≤ 1 GiB, paged \
             list ≤ 10 s (--clusters 255 --endpoints 10000 --etcd-api): {}",
            judged(report.cache_keys_target_met)
        );
    }
    if let Some(cache) = &report.cache_keys {
        let _ = writeln!(
            out,
            "Cilium cache keys (--etcd-api): {} keys served, all written {} after the merge \
             started, included in ALL SYNCED and RSS; a paged list of cilium/cache/ip/v1/ read \
             {} keys in {} pages in {} (in process, without the gRPC transport)",
            cache.keys,
            ms(cache.written_ms),
            cache.ip_keys,
            cache.pages,
            ms(cache.list_ms)
        );
    }
    let _ = writeln!(
        out,
        "RSS growth is the whole process's (apiservers included): an upper bound of the view; \
         `bench memory` measures an agent process alone"
    );
    let _ = writeln!(
        out,
        "{}",
        verdict(
            report.is_correct(),
            "the view holds exactly every cluster's state; nothing lost or phantom; no flaps"
        )
    );
    out
}
