//! Renderers: a [`Report`] to JSON, CSV (its main table) or HTML. Pure functions of the model.
//!
//! The HTML is one self-contained document (inline CSS and JS, inline SVG charts, no URL to any
//! network resource) or, with [`Chrome::Fragment`], the report's `<article>` alone for a page that
//! supplies [`CSS`] and [`JS`] once. Conventions the browser tests rely on: each figure is in an
//! element with `data-figure="NAME"` whose text is the JSON value as JSON prints it; each chart is an
//! `<svg data-chart="NAME" role="img">` with one `.point` element per point; links to other reports
//! carry `data-link="KIND"`.

use std::fmt::Write as _;

use crate::model::{Cell, ChartKind, Kind, Point, Report, Table};

/// The report as JSON (`schemas/report.v1.json`).
pub fn render_json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default()
}

/// The report's main table (its first) as CSV, RFC 4180. A text cell starting with `=`, `+`, `-`, `@`
/// (a formula to a spreadsheet) gets a leading `'`, so opening the file runs nothing.
pub fn render_csv(r: &Report) -> String {
    let mut out = String::new();
    let Some(t) = r.tables.first() else { return out };
    let line = |cells: &mut dyn Iterator<Item = String>, out: &mut String| {
        let v: Vec<String> = cells.map(|c| csv_field(&c)).collect();
        out.push_str(&v.join(","));
        out.push_str("\r\n");
    };
    line(&mut t.columns.iter().cloned(), &mut out);
    for row in &t.rows {
        line(
            &mut row.iter().map(|c| match c {
                Cell::Text(s) | Cell::Link { text: s, .. } if s.starts_with(['=', '+', '-', '@']) => format!("'{s}"),
                c => c.text(),
            }),
            &mut out,
        );
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// Whether the HTML is a whole document or a fragment for a page that has the chrome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chrome {
    /// `<!doctype html>` … with [`CSS`] and [`JS`] inline.
    Page,
    /// The `<article>` only.
    Fragment,
}

/// How to render HTML.
#[derive(Debug, Clone)]
pub struct HtmlOptions {
    pub chrome: Chrome,
    /// Rows per table page; the pager shows one page at a time (print shows all).
    pub page_size: usize,
    /// Render only this page of each table (a server paging on its side); `None`: every row, paged in
    /// the browser.
    pub page: Option<usize>,
    /// Where links to other reports point: `None` for sibling files (`alert-<uid>.html`, as the CLI
    /// names them), `Some(prefix)` for `{prefix}/{kind}/{id}` (a web view).
    pub link_prefix: Option<String>,
}

impl Default for HtmlOptions {
    fn default() -> Self {
        HtmlOptions { chrome: Chrome::Page, page_size: 100, page: None, link_prefix: None }
    }
}

/// The stylesheet: readable on screen and in print, AA contrast.
pub const CSS: &str = r#"
:root{color-scheme:light}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;background:#fff;margin:0}
main{max-width:1200px;margin:0 auto;padding:1rem 1.5rem}
h1{font-size:1.6rem;margin:.5rem 0}h2{font-size:1.2rem;margin:1.5rem 0 .5rem;border-bottom:1px solid #c8ccd2}
.scope{color:#3d4451}
dl.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:.5rem;margin:0}
dl.figures div{border:1px solid #c8ccd2;border-radius:4px;padding:.4rem .6rem}
dl.figures dt{font-size:.8rem;color:#3d4451}dl.figures dd{margin:0;font-size:1.15rem;font-weight:600;overflow-wrap:anywhere}
figure.chart{margin:1rem 0}figure.chart figcaption{font-weight:600}
svg .axis{stroke:#5c6370;stroke-width:1}svg text{font-size:11px;fill:#1a1a1a}
svg .line{fill:none;stroke:#1f5fa8;stroke-width:2}svg circle.point{fill:#1f5fa8}svg rect.point{fill:#1f5fa8}
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}
caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{border:1px solid #c8ccd2;padding:.25rem .45rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#eef1f5}th button{all:unset;cursor:pointer;font-weight:600}th button:focus{outline:2px solid #1f5fa8}
th[aria-sort=ascending] button::after{content:" ▲"}th[aria-sort=descending] button::after{content:" ▼"}
a{color:#0b4f9c}
.pager{display:flex;gap:.5rem;align-items:center;margin:.3rem 0}
.pager button{border:1px solid #5c6370;background:#fff;color:#1a1a1a;padding:.15rem .6rem;border-radius:3px}
.notes{color:#3d4451;font-size:.9rem}
@media print{.pager,th button::after{display:none}tr[hidden]{display:table-row!important}main{max-width:none}
 a{color:#1a1a1a;text-decoration:none}figure.chart,table{break-inside:avoid-page}}
"#;

/// Sortable, paged tables. No external resources, no `eval`, and nothing runs before the DOM exists.
pub const JS: &str = r#"
(function(){
  function pages(t){var n=parseInt(t.getAttribute('data-page-size')||'0',10);return n>0?n:0;}
  function show(t,p){
    var size=pages(t),rows=t.tBodies[0]?t.tBodies[0].rows:[],total=rows.length;
    if(!size){return;}
    var last=Math.max(0,Math.ceil(total/size)-1);p=Math.max(0,Math.min(p,last));
    for(var i=0;i<total;i++){rows[i].hidden=(Math.floor(i/size)!==p);}
    t.setAttribute('data-page',String(p));
    var nav=document.getElementById(t.id+'-pager');
    if(nav){var s=nav.querySelector('.pageinfo');if(s){s.textContent='Page '+(p+1)+' of '+(last+1)+' ('+total+' rows)';}}
  }
  function key(c){var s=c.textContent.trim(),n=Number(s);return (s!==''&&!isNaN(n))?{n:n}:{s:s.toLowerCase()};}
  function cmp(a,b){if(a.n!==undefined&&b.n!==undefined){return a.n-b.n;}var x=a.s!==undefined?a.s:String(a.n),y=b.s!==undefined?b.s:String(b.n);return x<y?-1:x>y?1:0;}
  function sort(t,col,th){
    var body=t.tBodies[0];if(!body){return;}
    var dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
    var ths=t.tHead.rows[0].cells;for(var i=0;i<ths.length;i++){ths[i].removeAttribute('aria-sort');}
    th.setAttribute('aria-sort',dir===1?'ascending':'descending');
    var rows=Array.prototype.slice.call(body.rows).map(function(r){return {r:r,k:key(r.cells[col]||r.cells[0])};});
    rows.sort(function(a,b){return dir*cmp(a.k,b.k);});
    rows.forEach(function(x){body.appendChild(x.r);});
    show(t,0);
  }
  document.addEventListener('DOMContentLoaded',function(){
    var tables=document.querySelectorAll('table.sortable');
    Array.prototype.forEach.call(tables,function(t){
      var ths=t.tHead?t.tHead.rows[0].cells:[];
      Array.prototype.forEach.call(ths,function(th,i){var b=th.querySelector('button');if(b){b.addEventListener('click',function(){sort(t,i,th);});}});
      var nav=document.getElementById(t.id+'-pager');
      if(nav){
        var prev=nav.querySelector('[data-page-step="-1"]'),next=nav.querySelector('[data-page-step="1"]');
        if(prev){prev.addEventListener('click',function(){show(t,parseInt(t.getAttribute('data-page')||'0',10)-1);});}
        if(next){next.addEventListener('click',function(){show(t,parseInt(t.getAttribute('data-page')||'0',10)+1);});}
      }
      show(t,0);
    });
  });
})();
"#;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A file-name-safe spelling of an id (as [`Report::file_stem`] spells it).
fn safe(s: &str) -> String {
    let safe: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect();
    let n = safe.chars().count();
    safe.chars().skip(n.saturating_sub(80)).collect()
}

fn pct_encode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

fn href(kind: Kind, id: &str, opts: &HtmlOptions) -> String {
    match &opts.link_prefix {
        None => format!("{}-{}.html", kind.as_str(), safe(id)),
        Some(p) => format!("{p}/{}/{}", kind.as_str(), pct_encode(id)),
    }
}

/// The report as HTML.
pub fn render_html(r: &Report, opts: &HtmlOptions) -> String {
    let mut o = String::with_capacity(64 * 1024);
    if opts.chrome == Chrome::Page {
        let _ = write!(
            o,
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{} — grantwatch</title>\n<style>{}</style>\n</head>\n<body>\n<main>\n",
            esc(&r.title),
            CSS
        );
    }
    let _ = write!(o, "<article class=\"gw-report\" data-kind=\"{}\">\n<h1>{}</h1>\n", r.kind.as_str(), esc(&r.title));
    let mut scope = Vec::new();
    if let Some(t) = r.as_of {
        scope.push(format!("as of {t}"));
    }
    if let Some(t) = r.scope.from {
        scope.push(format!("from {t}"));
    }
    if let Some(t) = r.scope.to {
        scope.push(format!("to {t}"));
    }
    if let Some(a) = &r.scope.account {
        scope.push(format!("account {a}"));
    }
    if let Some(i) = &r.scope.identity {
        scope.push(format!("identity {i}"));
    }
    if !scope.is_empty() {
        let _ = writeln!(o, "<p class=\"scope\">{}</p>", esc(&scope.join(" · ")));
    }
    o.push_str(
        "<section aria-labelledby=\"figures-h\">\n<h2 id=\"figures-h\">Key figures</h2>\n<dl class=\"figures\">\n",
    );
    for (name, v) in &r.figures {
        let _ = writeln!(
            o,
            "<div><dt id=\"fig-{n}\">{label}</dt><dd data-figure=\"{n}\" aria-labelledby=\"fig-{n}\">{v}</dd></div>",
            n = esc(name),
            label = esc(&name.replace('_', " ")),
            v = esc(&v.display())
        );
    }
    o.push_str("</dl>\n</section>\n");
    if !r.charts.is_empty() {
        o.push_str("<section aria-labelledby=\"charts-h\">\n<h2 id=\"charts-h\">Charts</h2>\n");
        for (name, points) in &r.charts {
            let meta = r.chart_meta.get(name);
            let title = meta.map_or(name.as_str(), |m| m.title.as_str());
            let kind = meta.map_or(ChartKind::Line, |m| m.kind);
            let y_max = meta.and_then(|m| m.y_max);
            let y_label = meta.map_or("", |m| m.y_label.as_str());
            let _ = writeln!(o, "<figure class=\"chart\">\n<figcaption>{}</figcaption>", esc(title));
            svg(&mut o, name, title, y_label, kind, y_max, points);
            o.push_str("</figure>\n");
        }
        o.push_str("</section>\n");
    }
    for (ti, t) in r.tables.iter().enumerate() {
        table(&mut o, ti, t, opts);
    }
    if !r.notes.is_empty() {
        o.push_str("<section class=\"notes\" aria-labelledby=\"notes-h\">\n<h2 id=\"notes-h\">Notes</h2>\n");
        for n in &r.notes {
            let _ = writeln!(o, "<p>{}</p>", esc(n));
        }
        o.push_str("</section>\n");
    }
    o.push_str("</article>\n");
    if opts.chrome == Chrome::Page {
        let _ = write!(o, "</main>\n<script>{JS}</script>\n</body>\n</html>\n");
    }
    o
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v:.2}") }
}

/// A chart as inline SVG: a line (with a circle per point) or bars, one `.point` per point.
fn svg(o: &mut String, name: &str, title: &str, y_label: &str, kind: ChartKind, y_max: Option<f64>, pts: &[Point]) {
    const W: f64 = 720.0;
    const H: f64 = 240.0;
    const L: f64 = 48.0;
    const R: f64 = 12.0;
    const T: f64 = 12.0;
    const B: f64 = 40.0;
    let label = format!("{title}: {} points", pts.len());
    let _ = writeln!(
        o,
        "<svg data-chart=\"{}\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {W} {H}\" width=\"100%\" \
         preserveAspectRatio=\"xMinYMin meet\">",
        esc(name),
        esc(&label)
    );
    let _ = writeln!(o, "<title>{}</title>", esc(&label));
    let max = y_max.unwrap_or_else(|| pts.iter().map(|p| p.y).fold(0.0, f64::max)).max(1.0);
    let (pw, ph) = (W - L - R, H - T - B);
    let _ = writeln!(
        o,
        "<line class=\"axis\" x1=\"{L}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/><line class=\"axis\" x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{b}\"/>",
        b = T + ph,
        r = L + pw
    );
    let _ = writeln!(
        o,
        "<text x=\"{x}\" y=\"{y}\" text-anchor=\"end\">{m}</text><text x=\"{x}\" y=\"{b}\" text-anchor=\"end\">0</text>\
         <text x=\"4\" y=\"{ly}\" transform=\"rotate(-90 10 {ly})\">{yl}</text>",
        x = L - 4.0,
        y = T + 10.0,
        m = fmt_num(max),
        b = T + ph,
        ly = T + ph / 2.0,
        yl = esc(y_label)
    );
    if pts.is_empty() {
        let _ = writeln!(o, "<text x=\"{}\" y=\"{}\">No data in the window</text>", L + 10.0, T + ph / 2.0);
        o.push_str("</svg>\n");
        return;
    }
    let n = pts.len() as f64;
    let y_of = |v: f64| T + ph - (v.max(0.0) / max).min(1.0) * ph;
    match kind {
        ChartKind::Line => {
            let x_of = |i: usize| if pts.len() == 1 { L + pw / 2.0 } else { L + pw * (i as f64) / (n - 1.0) };
            let path: Vec<String> =
                pts.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", x_of(i), y_of(p.y))).collect();
            let _ = writeln!(o, "<polyline class=\"line\" points=\"{}\"/>", path.join(" "));
            let r = if pts.len() > 120 { 1.5 } else { 3.0 };
            for (i, p) in pts.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\"><title>{}: {}</title></circle>",
                    x_of(i),
                    y_of(p.y),
                    esc(&p.x),
                    fmt_num(p.y)
                );
            }
        }
        ChartKind::Bar => {
            let slot = pw / n;
            let bw = (slot * 0.8).max(0.5);
            for (i, p) in pts.iter().enumerate() {
                let y = y_of(p.y);
                let _ = writeln!(
                    o,
                    "<rect class=\"point\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{:.1}\"><title>{}: {}</title></rect>",
                    L + slot * i as f64 + (slot - bw) / 2.0,
                    T + ph - y,
                    esc(&p.x),
                    fmt_num(p.y)
                );
            }
        }
    }
    // x labels: first and last (and the middle when there is room), so dates never overlap.
    let mut idx = vec![0];
    if pts.len() > 2 {
        idx.push(pts.len() / 2);
    }
    if pts.len() > 1 {
        idx.push(pts.len() - 1);
    }
    if kind == ChartKind::Bar && pts.len() <= 8 {
        idx = (0..pts.len()).collect();
    }
    for i in idx {
        let x = match kind {
            ChartKind::Line if pts.len() > 1 => L + pw * (i as f64) / (n - 1.0),
            ChartKind::Line => L + pw / 2.0,
            ChartKind::Bar => L + pw / n * (i as f64 + 0.5),
        };
        // The last of a long axis ends at its point: centred, it would run past the chart's edge.
        let anchor = if pts.len() > 8 && i + 1 == pts.len() { "end" } else { "middle" };
        let _ =
            writeln!(o, "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>", H - B + 18.0, esc(&pts[i].x));
    }
    o.push_str("</svg>\n");
}

fn table(o: &mut String, ti: usize, t: &Table, opts: &HtmlOptions) {
    let id = format!("t{ti}-{}", safe(&t.name));
    let size = opts.page_size.max(1);
    let (rows, paged_in_browser): (&[Vec<Cell>], bool) = match opts.page {
        Some(p) => {
            let start = (p * size).min(t.rows.len());
            (&t.rows[start..(start + size).min(t.rows.len())], false)
        }
        None => (&t.rows, t.rows.len() > size),
    };
    let _ = writeln!(o, "<section aria-labelledby=\"{id}-h\">\n<h2 id=\"{id}-h\">{}</h2>", esc(&t.caption));
    let _ = write!(
        o,
        "<table id=\"{id}\" class=\"sortable\" data-table=\"{}\" data-rows=\"{}\"",
        esc(&t.name),
        t.rows.len()
    );
    if paged_in_browser {
        let _ = write!(o, " data-page-size=\"{size}\" data-page=\"0\"");
    }
    let _ = writeln!(o, ">\n<caption>{} ({} rows)</caption>\n<thead><tr>", esc(&t.caption), t.rows.len());
    for c in &t.columns {
        let _ = write!(o, "<th scope=\"col\"><button type=\"button\">{}</button></th>", esc(c));
    }
    o.push_str("</tr></thead>\n<tbody>\n");
    for (i, row) in rows.iter().enumerate() {
        o.push_str(if paged_in_browser && i >= size { "<tr hidden>" } else { "<tr>" });
        for c in row {
            match c {
                Cell::Link { text, kind, id } => {
                    let _ = write!(
                        o,
                        "<td><a data-link=\"{}\" href=\"{}\">{}</a></td>",
                        kind.as_str(),
                        esc(&href(*kind, id, opts)),
                        esc(text)
                    );
                }
                c => {
                    let _ = write!(o, "<td>{}</td>", esc(&c.text()));
                }
            }
        }
        o.push_str("</tr>\n");
    }
    if t.rows.is_empty() {
        let _ = writeln!(o, "<tr><td colspan=\"{}\">None</td></tr>", t.columns.len().max(1));
    }
    o.push_str("</tbody>\n</table>\n");
    if paged_in_browser {
        let pages = t.rows.len().div_ceil(size);
        let _ = writeln!(
            o,
            "<nav class=\"pager\" id=\"{id}-pager\" aria-label=\"Pages of {}\"><button type=\"button\" data-page-step=\"-1\">Previous</button>\
             <span class=\"pageinfo\" aria-live=\"polite\">Page 1 of {pages} ({} rows)</span><button type=\"button\" data-page-step=\"1\">Next</button></nav>",
            esc(&t.caption),
            t.rows.len()
        );
    } else if let Some(p) = opts.page {
        let _ = writeln!(
            o,
            "<p class=\"pager\">Page {} of {} ({} rows)</p>",
            p + 1,
            t.rows.len().div_ceil(size).max(1),
            t.rows.len()
        );
    }
    o.push_str("</section>\n");
}
