//! `gistfans bench --html FILE`: the report as one self-contained HTML file,
//! to attach to an issue or open offline: the table and the ratios the text
//! report prints (`report::cells`, `report::ratios`, so both say the same),
//! the results as JSON, and, with several concurrencies, page loads/s and
//! p99 by concurrency drawn by the vendored uPlot, inlined with its licence
//! banner. Nothing is fetched from anywhere.

use super::report::{self, ModeReport, COLUMNS};
use crate::dashboard::assets::{UPLOT_CSS, UPLOT_JS};

/// The page's own style.
const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:1rem auto;max-width:72rem;padding:0 1rem;color:#111827}\
table{border-collapse:collapse;font-variant-numeric:tabular-nums;display:block;overflow-x:auto}\
th,td{padding:.25rem .6rem;border-bottom:1px solid #e5e7eb;text-align:right;white-space:nowrap}\
th:first-child,td:first-child{text-align:left}.charts{display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(20rem,1fr))}\
figure{margin:0}figcaption{font-weight:600}";

/// Draws the two charts from the JSON in `#results` (only with several
/// concurrencies; one point per mode is not a line).
const CHARTS: &str = r##"(() => {
  const reports = JSON.parse(document.getElementById("results").textContent);
  const xs = [...new Set(reports.map((r) => r.concurrency))].sort((a, b) => a - b);
  if (xs.length < 2 || typeof uPlot !== "function") return;
  document.getElementById("charts").hidden = false;
  const modes = [["baseline", "#dc2626"], ["optimized", "#2563eb"], ["trivial", "#6b7280"]]
    .filter(([m]) => reports.some((r) => r.mode === m));
  const draw = (id, value) => {
    const el = document.getElementById(id);
    const data = [xs].concat(modes.map(([m]) => xs.map((x) => {
      const r = reports.find((r) => r.mode === m && r.concurrency === x && r.pageLoads > 0);
      return r ? value(r) : null;
    })));
    new uPlot({
      width: Math.max(300, el.clientWidth), height: 300,
      scales: { x: { time: false, distr: 3 }, y: { distr: 3 } },
      axes: [{ label: "virtual users" }, { size: 60 }],
      series: [{ label: "users" }].concat(modes.map(([label, stroke]) => ({ label, stroke, width: 2, points: { show: true } }))),
    }, data, el);
  };
  draw("chart-throughput", (r) => r.pageLoadsPerSec);
  draw("chart-p99", (r) => r.latencyMs.p99);
})();"##;

/// The whole page for `reports`.
pub fn render(reports: &[ModeReport]) -> String {
    let mut page = String::with_capacity(UPLOT_JS.len() + 16 * 1024);
    page.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    page.push_str("<title>gistfans bench report</title>\n");
    page.push_str(&format!(
        "<style>{UPLOT_CSS}</style>\n<style>{STYLE}</style>\n"
    ));
    page.push_str("</head>\n<body>\n<main>\n<h1>gistfans bench report</h1>\n");
    page.push_str(&table(reports));
    page.push_str(&ratios(reports));
    page.push_str(
        "<section id=\"charts\" hidden aria-labelledby=\"h-charts\">\n<h2 id=\"h-charts\">By concurrency</h2>\n<div class=\"charts\">\n\
         <figure><figcaption>Page loads/s</figcaption><div id=\"chart-throughput\" role=\"img\" aria-label=\"Page loads per second by virtual users, per mode\"></div></figure>\n\
         <figure><figcaption>p99 latency (ms)</figcaption><div id=\"chart-p99\" role=\"img\" aria-label=\"p99 latency by virtual users, per mode\"></div></figure>\n\
         </div>\n</section>\n",
    );
    page.push_str("</main>\n<script type=\"application/json\" id=\"results\">");
    page.push_str(&script_safe(
        &serde_json::to_string(reports).expect("reports serialise"),
    ));
    page.push_str("</script>\n<script>");
    page.push_str(UPLOT_JS);
    page.push_str("</script>\n<script>");
    page.push_str(CHARTS);
    page.push_str("</script>\n</body>\n</html>\n");
    page
}

fn table(reports: &[ModeReport]) -> String {
    let mut out = String::from("<table>\n<caption>Per mode and concurrency</caption>\n<thead><tr>");
    for (name, _) in COLUMNS {
        out.push_str(&format!("<th scope=\"col\">{}</th>", escape(name)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for r in reports {
        out.push_str("<tr>");
        for (i, cell) in report::cells(r).iter().enumerate() {
            let tag = if i == 0 { "th scope=\"row\"" } else { "td" };
            let close = if i == 0 { "th" } else { "td" };
            out.push_str(&format!("<{tag}>{}</{close}>", escape(cell)));
        }
        out.push_str("</tr>\n");
        if !r.errors.is_empty() {
            out.push_str(&format!(
                "<tr><td colspan=\"{}\">errors by kind: {}</td></tr>\n",
                COLUMNS.len(),
                escape(&format!("{:?}", r.errors))
            ));
        }
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

fn ratios(reports: &[ModeReport]) -> String {
    let groups = report::ratios(reports);
    if groups.is_empty() {
        return String::new();
    }
    let mut out = String::from("<h2>Ratios</h2>\n<ul id=\"ratios\">\n");
    for line in groups.iter().flatten() {
        out.push_str(&format!("<li>{}</li>\n", escape(line)));
    }
    out.push_str("</ul>\n");
    out
}

/// Text as HTML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JSON that cannot end the `<script>` element it sits in.
fn script_safe(json: &str) -> String {
    json.replace("</", "<\\/").replace("<!--", "<\\!--")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bench::{
        measures::Mode,
        report::{Latency, ModeReport},
    };

    fn row(mode: Mode, concurrency: usize, per_sec: f64, p99: f64) -> ModeReport {
        ModeReport {
            mode,
            concurrency,
            seconds: 5.0,
            page_loads: (per_sec * 5.0) as u64,
            page_loads_per_sec: per_sec,
            latency_ms: Latency {
                p50: p99 / 4.0,
                p95: p99 / 2.0,
                p99,
                max: p99 * 2.0,
            },
            http_requests: 100,
            writes: 2,
            write_conflicts: 0,
            stale_reads: 0,
            errors: BTreeMap::from([("</script><b>".to_string(), 1)]),
            db_statements: None,
            db_statements_per_page_load: None,
            manager_queries: Some(7),
            peak_db_connections: None,
            cache_hit_rate: Some(93.5),
            cpu_seconds_per_10k: None,
            rss_mib: None,
            instances: 1,
            delivery_ms: None,
            bus_lag_p99_ms: None,
            combined_hit_rate: None,
            shared_hit_rate: None,
            write_latency_ms: None,
            redis_commands_per_page_load: None,
            circuit_opens: Vec::new(),
            redis_budget_misses: Vec::new(),
            redis_slow_calls: Vec::new(),
            consistency: Vec::new(),
            replicas: None,
        }
    }

    #[test]
    fn the_page_holds_the_data_and_no_external_url() {
        let reports = [
            row(Mode::Baseline, 16, 1234.0, 41.25),
            row(Mode::Optimized, 16, 9876.0, 3.5),
            row(Mode::Baseline, 64, 1500.0, 90.0),
            row(Mode::Optimized, 64, 12000.0, 4.75),
        ];
        let page = render(&reports);
        for figure in [
            "9876",
            "41.25",
            "4.75",
            "93.5",
            "optimized vs baseline: 8.0x",
        ] {
            assert!(page.contains(figure), "{figure} is missing");
        }
        assert!(
            page.contains("\"pageLoadsPerSec\":12000.0"),
            "the JSON is inlined"
        );
        assert!(page.contains("id=\"chart-p99\""));
        assert!(
            !page.contains("</script><b>"),
            "data cannot close the script element"
        );
        // The only URL allowed is uPlot's licence banner, a comment.
        let banner = UPLOT_JS.lines().next().unwrap();
        assert!(banner.starts_with("/*!") && banner.ends_with("*/"));
        let without_banner = page.replace(banner, "");
        for scheme in ["http://", "https://", "src=", "href="] {
            assert!(!without_banner.contains(scheme), "{scheme} found");
        }
    }

    #[test]
    fn the_vendored_script_cannot_end_its_element() {
        assert!(!UPLOT_JS.to_ascii_lowercase().contains("</script"));
        assert!(!UPLOT_CSS.to_ascii_lowercase().contains("</style"));
    }
}
