// WriteEvalReportHtml: `pixseek eval --report DIR`. One file that opens from
// disk anywhere (sent by mail, attached to an issue): no external reference,
// so CSS, the sorting script and the plot are inline and thumbnails are
// data: URIs.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "pixseek/services.h"

namespace pixseek {
namespace {

constexpr uintmax_t kMaxInlineQueryBytes = 2u << 20;  // a query file shown as it is

std::string Escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string Base64(const std::string& bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = uint8_t(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= uint8_t(bytes[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// A data: URI of an image file, or "" when it is missing, too large or of a
// kind a browser may not show.
std::string DataUri(const std::filesystem::path& file) {
  std::string ext = file.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const char* mime = ext == ".jpg" || ext == ".jpeg" ? "image/jpeg"
                     : ext == ".png"                 ? "image/png"
                     : ext == ".gif"                 ? "image/gif"
                     : ext == ".webp"                ? "image/webp"
                                                     : nullptr;
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(file, ec);
  if (!mime || ec || size > kMaxInlineQueryBytes) return "";
  std::ifstream in(file, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (!in) return "";
  return std::string("data:") + mime + ";base64," + Base64(bytes.str());
}

std::string Figure(double v) {
  char text[16];
  std::snprintf(text, sizeof text, "%.4f", v);
  return text;
}

// Plot coordinates of the 0..1 square inside a 320 x 240 SVG with margins.
struct Plot {
  static constexpr double kLeft = 40, kTop = 10, kWidth = 270, kHeight = 190;
  static double X(double recall) { return kLeft + recall * kWidth; }
  static double Y(double precision) { return kTop + (1 - precision) * kHeight; }
};

std::string Polyline(const std::vector<double>& curve, const char* css_class) {
  std::ostringstream out;
  out << "<polyline class=\"" << css_class << "\" points=\"";
  const double last = static_cast<double>(curve.size() - 1);
  for (size_t i = 0; i < curve.size(); ++i) {
    out << Plot::X(static_cast<double>(i) / last) << ',' << Plot::Y(curve[i]) << ' ';
  }
  out << "\"/>";
  return out.str();
}

std::string PrCurveSvg(const EvalReport& report) {
  std::ostringstream out;
  out << "<svg class=\"pr\" viewBox=\"0 0 320 240\" width=\"480\" height=\"360\" role=\"img\" "
         "aria-label=\"precision-recall curve\">";
  for (int t = 0; t <= 10; t += 5) {  // grid and labels at 0, 0.5, 1
    const double v = t / 10.0;
    out << "<line class=\"grid\" x1=\"" << Plot::X(0) << "\" x2=\"" << Plot::X(1) << "\" y1=\""
        << Plot::Y(v) << "\" y2=\"" << Plot::Y(v) << "\"/>"
        << "<line class=\"grid\" y1=\"" << Plot::Y(0) << "\" y2=\"" << Plot::Y(1) << "\" x1=\""
        << Plot::X(v) << "\" x2=\"" << Plot::X(v) << "\"/>"
        << "<text x=\"" << Plot::X(0) - 6 << "\" y=\"" << Plot::Y(v) + 4
        << "\" text-anchor=\"end\">" << v << "</text>"
        << "<text x=\"" << Plot::X(v) << "\" y=\"" << Plot::Y(0) + 16
        << "\" text-anchor=\"middle\">" << v << "</text>";
  }
  out << "<text x=\"" << Plot::X(0.5) << "\" y=\"238\" text-anchor=\"middle\">recall</text>"
      << "<text x=\"12\" y=\"" << Plot::Y(0.5)
      << "\" text-anchor=\"middle\" transform=\"rotate(-90 12 " << Plot::Y(0.5)
      << ")\">precision</text>";
  out << Polyline(report.macro.pr_curve, "macro") << Polyline(report.overall.pr_curve, "overall");
  for (size_t i = 0; i < report.overall.pr_curve.size(); i += 10) {  // the 11 points
    out << "<circle cx=\"" << Plot::X(static_cast<double>(i) / 100) << "\" cy=\""
        << Plot::Y(report.overall.pr_curve[i]) << "\" r=\"2.5\"/>";
  }
  out << "</svg>";
  return out.str();
}

struct Column {
  const char* name;
  double EvalMetrics::*field;
};
constexpr Column kColumns[] = {
    {"mAP", &EvalMetrics::map},           {"mAP@100", &EvalMetrics::map_at_100},
    {"P@1", &EvalMetrics::p_at_1},        {"P@10", &EvalMetrics::p_at_10},
    {"P@100", &EvalMetrics::p_at_100},    {"R@10", &EvalMetrics::r_at_10},
    {"R@100", &EvalMetrics::r_at_100},    {"NDCG@10", &EvalMetrics::ndcg_at_10},
    {"NDCG@100", &EvalMetrics::ndcg_at_100}};

std::string MetricsRow(const std::string& name, const EvalMetrics& m, const char* css_class) {
  std::ostringstream out;
  out << "<tr class=\"" << css_class << "\"><td>" << Escape(name) << "</td><td data-v=\""
      << m.queries << "\">" << m.queries << "</td>";
  for (const Column& c : kColumns) {
    out << "<td data-v=\"" << m.*c.field << "\">" << Figure(m.*c.field) << "</td>";
  }
  out << "</tr>";
  return out.str();
}

std::string TableHead() {
  std::string out = "<thead><tr><th data-k=\"0\">class</th><th data-k=\"1\">queries</th>";
  int k = 2;
  for (const Column& c : kColumns) {
    out += "<th data-k=\"" + std::to_string(k++) + "\">" + std::string(c.name) + "</th>";
  }
  return out + "</tr></thead>";
}

std::string Thumbnail(const Database& db, int64_t id, const std::string& path, const char* css,
                      const std::string& title) {
  std::string uri = id >= 0 ? DataUri(db.ThumbnailPath(id)) : "";
  if (uri.empty() && id < 0) uri = DataUri(path);
  if (uri.empty()) {
    return "<div class=\"thumb missing " + std::string(css) + "\" title=\"" + Escape(title) +
           "\">?</div>";
  }
  return "<img class=\"thumb " + std::string(css) + "\" src=\"" + uri + "\" alt=\"\" title=\"" +
         Escape(title) + "\">";
}

std::string Strips(const Database& db, const EvalReport& report) {
  std::ostringstream out;
  for (const EvalExample& e : report.examples) {
    out << "<div class=\"strip\"><h3>" << Escape(e.label) << " <small>(a query with AP "
        << Figure(e.average_precision) << ")</small></h3><div class=\"row\">"
        << Thumbnail(db, e.query_id, e.query_path, "query", "query: " + e.query_path);
    for (const EvalExample::Hit& hit : e.top) {
      out << Thumbnail(db, hit.id, hit.path, hit.relevant ? "rel" : "irr",
                       std::string(hit.relevant ? "relevant: " : "not relevant: ") + hit.path);
    }
    out << "</div></div>";
  }
  return out.str();
}

constexpr const char* kStyle = R"(
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{cursor:pointer;background:#eee;user-select:none}
tr:nth-child(even) td{background:#fafafa}.summary td{font-weight:600}
svg.pr text{font-size:10px;fill:#444}svg.pr .grid{stroke:#ddd}
svg.pr polyline{fill:none;stroke-width:2}svg.pr .overall{stroke:#1565c0}
svg.pr .macro{stroke:#ef6c00;stroke-dasharray:4 3}svg.pr circle{fill:#1565c0}
.key span{display:inline-block;width:18px;height:3px;margin:0 4px 3px 12px;vertical-align:middle}
.row{display:flex;gap:6px;flex-wrap:wrap;align-items:center}
.thumb{width:96px;height:96px;object-fit:cover;border:4px solid #bbb;border-radius:4px}
.thumb.query{border-color:#1565c0;margin-right:14px}.thumb.rel{border-color:#2e7d32}
.thumb.irr{border-color:#c62828}div.thumb.missing{display:flex;align-items:center;
justify-content:center;background:#eee}
)";

// Sorts the class table by the clicked column (numbers by data-v), again to
// reverse.
constexpr const char* kScript = R"(
document.querySelectorAll('table.classes th').forEach(function(th){
  th.addEventListener('click',function(){
    var k=+th.dataset.k,body=th.closest('table').tBodies[0];
    var asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[k],y=b.cells[k];
      var r=k===0?x.textContent.localeCompare(y.textContent):(+x.dataset.v)-(+y.dataset.v);
      return asc?r:-r;});
    rows.forEach(function(r){body.appendChild(r);});
  });
});
)";

std::string Html(const Database& db, const EvalReport& report) {
  std::ostringstream out;
  out << "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>pixseek "
         "evaluation: "
      << Escape(report.model) << "</title><style>" << kStyle << "</style></head><body>"
      << "<h1>Retrieval quality</h1><p>Model <b>" << Escape(report.model) << "</b>, "
      << Escape(report.protocol) << ", split " << ToString(report.split) << ": "
      << report.images << " gallery images, " << report.overall.queries << " queries";
  if (report.failed_queries > 0) out << " (" << report.failed_queries << " unreadable)";
  out << ", " << Figure(report.seconds) << " s. Rankings are exact (every gallery image "
         "scored).</p><table class=\"summary-table\">"
      << TableHead() << "<tbody>" << MetricsRow("overall", report.overall, "summary")
      << MetricsRow("macro", report.macro, "summary") << "</tbody></table>";
  out << "<h2>The index</h2><p>On " << report.index_queries << " of the queries: the index's top "
      << report.index_k << " holds " << Figure(report.index_recall_at_k)
      << " of the exact top " << report.index_k << "; mAP@100 through the index "
      << Figure(report.index_map_at_k) << " against " << Figure(report.index_exact_map_at_k)
      << " exact.</p>";
  out << "<h2>Precision-recall</h2>" << PrCurveSvg(report)
      << "<p class=\"key\"><span style=\"background:#1565c0\"></span>over queries (dots: 11-point)"
         "<span style=\"background:#ef6c00\"></span>over classes (macro)</p>";
  out << "<h2>Per class</h2><p>Click a heading to sort.</p><table class=\"classes\">"
      << TableHead() << "<tbody>";
  std::vector<std::pair<double, std::string>> by_map;
  for (const auto& [label, m] : report.per_label) by_map.push_back({m.map, label});
  std::sort(by_map.begin(), by_map.end());
  for (const auto& [map, label] : by_map) out << MetricsRow(label, report.per_label.at(label), "cls");
  out << "</tbody></table><h2>Where search fails</h2><p>The classes with the lowest mAP: a query "
         "(blue) and its best results, relevant in green, others in red.</p>"
      << Strips(db, report) << "<script>" << kScript << "</script></body></html>\n";
  return out.str();
}

}  // namespace

Status WriteEvalReportHtml(const Database& db, const EvalReport& report,
                           const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::Internal("cannot create " + dir.string() + ": " + ec.message());
  const std::filesystem::path file = dir / "report.html";
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << Html(db, report);
  out.close();
  if (!out) return Status::Internal("cannot write " + file.string());
  return Status::Ok();
}

}  // namespace pixseek
