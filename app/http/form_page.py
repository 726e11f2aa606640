"""The HTML page at `GET /models/{name}/form`: one input per feature, no external assets.

Tabular models get a field per feature posting to `/predict/form`; image models get a file
picker posting to `/predict/file`. The page posts with fetch and shows the answer (or the error
envelope's detail) in place; without JavaScript the browser shows the JSON reply. For tabular
models it then asks the version that answered to explain the row, and draws the largest
contributions as a bar chart in inline SVG (built by the page's own script, nothing fetched).
"""

from html import escape
from urllib.parse import quote

from app.http import paths
from app.serving.model import LoadedModel
from schemas.cards import FeatureSpec

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1f2933}
h1{font-size:1.4rem;margin-bottom:.2rem} p.lead{color:#52606d;margin-top:0}
form{display:grid;grid-template-columns:minmax(10rem,max-content) 1fr;gap:.5rem 1rem;align-items:center}
label{font-weight:600} small{display:block;font-weight:400;color:#7b8794}
input,select{font:inherit;padding:.35rem .5rem;border:1px solid #cbd2d9;border-radius:4px}
button{grid-column:1/-1;justify-self:start;font:inherit;padding:.5rem 1.4rem;border:0;border-radius:4px;background:#2563eb;color:#fff;cursor:pointer}
#result{margin-top:1.5rem;padding:1rem;border-radius:6px;background:#f5f7fa;display:none}
#result.error{background:#fdecea} table{border-collapse:collapse} td{padding:.15rem .8rem .15rem 0}
#why p{margin:.8rem 0 .2rem} #why svg text{font:12px system-ui,sans-serif;fill:#1f2933}
"""

_SCRIPT = """
const form = document.getElementById("predict");
const out = document.getElementById("result");
function row(cells){const tr=document.createElement("tr");for(const c of cells){const td=document.createElement("td");td.textContent=c;tr.appendChild(td);}return tr;}
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  out.style.display = "block"; out.className = ""; out.textContent = "Predicting…";
  try {
    const reply = await fetch(form.action, {method: "POST", body: new FormData(form), headers: {Accept: "application/json"}});
    const body = await reply.json();
    out.textContent = "";
    if (!reply.ok) {
      out.className = "error";
      const detail = Array.isArray(body.detail) ? body.detail.map(d => d.loc.join(" › ") + ": " + d.msg).join("\\n") : String(body.detail);
      out.innerText = body.error + "\\n" + detail;
      return;
    }
    const head = document.createElement("p");
    const item = body.predictions[0];
    const answer = item.label !== undefined && item.label !== null ? item.label : item.value;
    head.innerHTML = "<strong>Prediction:</strong> ";
    head.appendChild(document.createTextNode(String(answer) + "  (model version " + body.model_version + ")"));
    out.appendChild(head);
    const ranked = item.top || (item.probabilities ? Object.entries(item.probabilities).sort((a, b) => b[1] - a[1]).map(([label, probability]) => ({label, probability})) : []);
    if (ranked.length) {
      const table = document.createElement("table");
      for (const r of ranked) table.appendChild(row([r.label, (100 * r.probability).toFixed(1) + " %"]));
      out.appendChild(table);
    }
    if (form.dataset.explain) await explain(body.model_version);
  } catch (error) {
    out.className = "error"; out.textContent = "Request failed: " + error;
  }
});
const holder = document.createElement("div"); holder.innerHTML = "<svg></svg>";
const SVG = holder.firstChild.namespaceURI;  // the parser's own SVG namespace
function svg(tag, attrs, text){const e=document.createElementNS(SVG,tag);for(const k in attrs)e.setAttribute(k,attrs[k]);if(text!==undefined)e.textContent=text;return e;}
async function explain(version) {
  const row = {};
  for (const field of form.querySelectorAll("[data-feature]")) row[field.name] = field.type === "number" ? Number(field.value) : field.value;
  const url = form.dataset.explain.replace("{version}", encodeURIComponent(version));
  const reply = await fetch(url, {method: "POST", body: JSON.stringify({instances: [row]}), headers: {"Content-Type": "application/json", Accept: "application/json"}});
  if (!reply.ok) return;
  const body = await reply.json();
  const item = body.explanations[0];
  const top = Object.entries(item.contributions).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])).slice(0, 8);
  const box = document.createElement("div"); box.id = "why";
  const what = body.output === "value" ? "value" : body.output + " of " + item["class"];
  const note = document.createElement("p");
  note.textContent = "Why: contributions to the " + what + " (base " + item.base_value.toPrecision(3) + " → " + item.output_value.toPrecision(3) + ")";
  box.appendChild(note);
  const width = 520, label = 150, bar = 18, mid = label + (width - label - 60) / 2, half = (width - label - 60) / 2;
  const largest = Math.max(...top.map(([, v]) => Math.abs(v)), 1e-12);
  const chart = svg("svg", {width: width, height: top.length * (bar + 6) + 4, role: "img", "aria-label": "Feature contributions"});
  chart.appendChild(svg("line", {x1: mid, x2: mid, y1: 0, y2: top.length * (bar + 6) + 4, stroke: "#9aa5b1"}));
  top.forEach(([name, value], i) => {
    const y = 2 + i * (bar + 6), length = half * Math.abs(value) / largest;
    chart.appendChild(svg("text", {x: 0, y: y + 13}, name));
    chart.appendChild(svg("rect", {class: "bar", x: value < 0 ? mid - length : mid, y: y, width: Math.max(length, 1), height: bar, fill: value < 0 ? "#d64545" : "#2563eb"}));
    chart.appendChild(svg("text", {x: value < 0 ? mid + 4 : mid - 4, y: y + 13, "text-anchor": value < 0 ? "start" : "end"}, (value > 0 ? "+" : "") + value.toPrecision(3)));
  });
  box.appendChild(chart);
  out.appendChild(box);
}
"""


def _field(feature: FeatureSpec, example: object) -> str:
    name = escape(feature.name)
    hint = feature.description
    if feature.observed_min is not None and feature.observed_max is not None:
        hint = f"{hint} (seen {feature.observed_min:g}–{feature.observed_max:g})".strip()
    label = f'<label for="f-{name}">{name}<small>{escape(hint)}</small></label>'
    if feature.categories:
        options = "".join(
            f"<option{' selected' if value == example else ''}>{escape(value)}</option>"
            for value in feature.categories
        )
        return (
            f'{label}<select id="f-{name}" name="{name}" data-feature required>{options}</select>'
        )
    bounds = "".join(
        f' {attr}="{value:g}"'
        for attr, value in (("min", feature.minimum), ("max", feature.maximum))
        if value is not None
    )
    step = "1" if feature.dtype == "int" else "any"
    value = escape(str(example))
    return f'{label}<input id="f-{name}" name="{name}" type="number" step="{step}"{bounds} value="{value}" data-feature required>'


def _option_fields(model: LoadedModel) -> str:
    classes = model.card.target.classes or []
    fields = ""
    if model.card.task == "classification" and len(classes) > 2:
        fields += (
            '<label for="f-top_k">top_k<small>how many likely labels to show</small></label>'
            f'<input id="f-top_k" name="top_k" type="number" min="1" max="{len(classes)}" step="1" value="{len(classes)}">'
        )
    if len(classes) == 2:
        fields += (
            f'<label for="f-threshold">threshold<small>predict {escape(str(classes[1]))} at or above this probability (optional)</small></label>'
            '<input id="f-threshold" name="threshold" type="number" min="0" max="1" step="0.01">'
        )
    return fields


def render_form_page(model: LoadedModel) -> str:
    card = model.card
    title = f"{card.name} v{card.version}"
    explain = ""
    if card.input_kind == "image":
        action = paths.PREDICT_FILE.format(model_name=quote(card.name))
        fields = (
            '<label for="f-file">image<small>a PNG or JPEG of one digit, any size</small></label>'
            '<input id="f-file" name="file" type="file" accept="image/png,image/jpeg" required>'
        )
    else:
        action = paths.PREDICT_FORM.format(model_name=quote(card.name))
        # The version that answers the form explains its answer ("{version}" filled in then).
        explain_url = paths.VERSION_EXPLAIN.replace("{model_name}", quote(card.name))
        explain = f' data-explain="{escape(explain_url)}"'
        example = model.inputs.example["instances"][0]
        fields = "".join(
            _field(feature, example[feature.name]) for feature in card.features
        ) + _option_fields(model)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · modelport</title><style>{_STYLE}</style></head>
<body>
<h1>{escape(title)}</h1><p class="lead">{escape(card.description)}</p>
<form id="predict" method="post" action="{escape(action)}" enctype="multipart/form-data"{explain}>
{fields}
<button type="submit">Predict</button>
</form>
<div id="result" role="status" aria-live="polite"></div>
<script>{_SCRIPT}</script>
</body></html>"""
