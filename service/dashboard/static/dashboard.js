// regtune dashboard: every request goes through api(), which adds the bearer token kept in
// localStorage and asks for one when the server answers 401. Pages render from the JSON API,
// so the first render and the live refresh are the same code.
"use strict";

(function () {
  const TOKEN_KEY = "regtune.token";
  const POLL_MS = 3000;
  const ACTIVE = ["queued", "running"];
  const PAGE_SIZE = 25;

  // ---- the one fetch function ---------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail.map((d) => d.msg).join("; ") || `HTTP ${status}`);
      this.status = status;
      this.detail = detail;
    }
  }

  function storedToken() {
    try {
      return window.localStorage.getItem(TOKEN_KEY);
    } catch (_e) {
      return null;
    }
  }

  function setToken(value) {
    try {
      if (value) window.localStorage.setItem(TOKEN_KEY, value);
      else window.localStorage.removeItem(TOKEN_KEY);
    } catch (_e) {
      /* storage disabled: the token lives for this page only */
    }
    showTokenButton();
  }

  let pendingToken = null;

  function askToken(message) {
    // several requests may hit 401 at once: they all wait for the same prompt
    if (pendingToken) return pendingToken;
    const dialog = document.getElementById("token-dialog");
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    const error = document.getElementById("token-error");
    error.hidden = !message;
    error.textContent = message || "";
    input.value = "";
    pendingToken = new Promise((resolve, reject) => {
      const done = (ok) => {
        form.removeEventListener("submit", onSubmit);
        cancel.removeEventListener("click", onCancel);
        dialog.close();
        pendingToken = null;
        if (ok) resolve();
        else reject(new ApiError(401, [{ loc: [], msg: "an API token is required" }]));
      };
      const onSubmit = (event) => {
        event.preventDefault();
        setToken(input.value.trim());
        done(true);
      };
      const onCancel = () => done(false);
      const cancel = document.getElementById("token-cancel");
      form.addEventListener("submit", onSubmit);
      cancel.addEventListener("click", onCancel);
      dialog.showModal();
    });
    return pendingToken;
  }

  async function api(path, options = {}) {
    const { method = "GET", body, contentType } = options;
    for (let attempt = 0; ; attempt++) {
      const headers = { Accept: "application/json" };
      const token = storedToken();
      if (token) headers.Authorization = `Bearer ${token}`;
      let payload = body;
      if (body !== undefined && typeof body !== "string") {
        payload = JSON.stringify(body);
        headers["Content-Type"] = "application/json";
      } else if (body !== undefined) {
        headers["Content-Type"] = contentType || "text/plain";
      }
      const response = await fetch(path, { method, headers, body: payload });
      if (response.status === 401 && attempt < 3) {
        if (token) setToken(null);
        await askToken(token ? "That token was refused; enter another one." : "");
        continue;
      }
      const isJson = (response.headers.get("content-type") || "").includes("json");
      const data = isJson ? await response.json() : await response.text();
      if (!response.ok) {
        const detail =
          data && Array.isArray(data.detail)
            ? data.detail
            : [{ loc: [], msg: `HTTP ${response.status}`, type: "http" }];
        throw new ApiError(response.status, detail);
      }
      return data;
    }
  }

  function showTokenButton() {
    const button = document.getElementById("token-button");
    if (button) button.hidden = !storedToken();
  }

  // ---- small helpers ------------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-") || key === "href" || key === "title" || key === "style")
        node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      const abs = Math.abs(value);
      return abs !== 0 && (abs < 1e-3 || abs >= 1e5) ? value.toExponential(2) : value.toPrecision(4);
    }
    return String(value);
  }

  function when(iso) {
    if (!iso) return "–";
    // the API sends naive UTC timestamps (like Optuna's)
    const date = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
    if (Number.isNaN(date.getTime())) return iso;
    const pad = (n) => String(n).padStart(2, "0");
    return (
      `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}`
    );
  }

  function showError(id, error) {
    const node = document.getElementById(id);
    if (!node) return;
    node.hidden = !error;
    node.textContent = error ? `${error.message}` : "";
  }

  function progressBar(p) {
    const total = Math.max(p.n_trials, p.finished + p.failed + p.running, 1);
    const pct = (n) => `${((100 * n) / total).toFixed(1)}%`;
    const bar = el(
      "div",
      {
        class: "progress",
        title: `${p.complete} complete, ${p.pruned} pruned, ${p.failed} failed, ${p.running} running`,
        role: "img",
      },
      el("span", { class: "seg complete", style: `width:${pct(p.complete)}` }),
      el("span", { class: "seg pruned", style: `width:${pct(p.pruned)}` }),
      el("span", { class: "seg failed", style: `width:${pct(p.failed)}` }),
      el("span", { class: "seg running", style: `width:${pct(p.running)}` }),
    );
    const extra = [];
    if (p.pruned) extra.push(`${p.pruned} pruned`);
    if (p.failed) extra.push(`${p.failed} failed`);
    if (p.running) extra.push(`${p.running} running`);
    const label = el(
      "div",
      { class: "progress-label" },
      `${p.finished}/${p.n_trials} finished`,
      extra.length ? ` · ${extra.join(" · ")}` : "",
    );
    return el("div", { class: "progress-cell" }, bar, label);
  }

  function badge(status) {
    return el("span", { class: `badge ${status}`, text: status });
  }

  function pager(container, total, offset, limit, go) {
    container.replaceChildren();
    if (total <= limit) return;
    const page = Math.floor(offset / limit) + 1;
    const pages = Math.ceil(total / limit);
    const prev = el("button", { type: "button", class: "secondary", text: "← Previous" });
    prev.disabled = page <= 1;
    prev.addEventListener("click", () => go(Math.max(0, offset - limit)));
    const next = el("button", { type: "button", class: "secondary", text: "Next →" });
    next.disabled = page >= pages;
    next.addEventListener("click", () => go(offset + limit));
    container.append(prev, el("span", { text: `page ${page} of ${pages} (${total})` }), next);
  }

  // ---- study list -----------------------------------------------------------------------------

  function initList() {
    const params = new URLSearchParams(window.location.search);
    const status = params.get("status") || "";
    const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
    const select = document.getElementById("status-filter");
    select.value = status;
    select.addEventListener("change", () => select.form.submit());
    let timer = null;

    const go = (newOffset) => {
      const next = new URLSearchParams();
      if (status) next.set("status", status);
      if (newOffset) next.set("offset", String(newOffset));
      window.location.search = next.toString();
    };

    async function load() {
      const query = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(offset) });
      if (status) query.set("status", status);
      try {
        const page = await api(`/api/v1/studies?${query}`);
        showError("list-error", null);
        renderStudies(page);
        pager(document.getElementById("pager"), page.total, offset, PAGE_SIZE, go);
        // keep refreshing while anything on this page may still change
        const active = page.items.some((s) => ACTIVE.includes(s.status));
        clearTimeout(timer);
        if (active) timer = setTimeout(load, POLL_MS * 2);
      } catch (error) {
        showError("list-error", error);
      }
    }
    load();
  }

  function renderStudies(page) {
    const body = document.querySelector("#studies tbody");
    if (!page.items.length) {
      body.replaceChildren(el("tr", { class: "placeholder" }, el("td", { colSpan: 7 }, "No studies yet. ", el("a", { href: "/new", text: "Submit one" }), ".")));
      return;
    }
    body.replaceChildren(
      ...page.items.map((s) =>
        el(
          "tr",
          { "data-study-id": String(s.id) },
          el("td", { class: "name" }, el("a", { href: `/studies/${s.id}`, text: s.name })),
          el("td", { class: "opt", text: s.trainer }),
          el("td", {}, badge(s.status)),
          el("td", { class: "progress-col" }, progressBar(s.progress)),
          el("td", { class: "num", title: `${s.direction} ${s.metric}` }, fmt(s.best_value)),
          el("td", { class: "time opt", text: when(s.created_at) }),
          el("td", { class: "time opt", text: when(s.finished_at || s.started_at || s.created_at) }),
        ),
      ),
    );
  }

  // ---- study page -----------------------------------------------------------------------------

  const PARAMS = ["weight_decay", "l1", "dropout", "label_smoothing", "batch_size", "patience"];
  const PLOT_CONFIG = { responsive: true, displaylogo: false, displayModeBar: false };

  function drawFigure(container, figure) {
    let area = container.querySelector(".plot-area");
    let note = container.querySelector(".plot-note");
    if (!area) {
      area = el("div", { class: "plot-area" });
      note = el("figcaption", { class: "plot-note" });
      container.append(area, note);
    }
    note.textContent = figure.note || "";
    note.hidden = !figure.note;
    // nothing to draw: a short panel whose caption says why (and how to get it)
    const layout = Object.assign({ autosize: true, height: figure.data.length ? 340 : 110 }, figure.layout);
    container.classList.toggle("empty", !figure.data.length);
    window.Plotly.react(area, figure.data, layout, PLOT_CONFIG);
  }

  const PLOT_NAMES = ["history", "importance", "learning_curves", "gap", "calibration", "sparsity", "parallel"];
  const OPTIONAL_PLOTS = ["pareto", "confirmation"];

  // the learning curves' selector: every metric the plotted trials logged, the drawn one chosen
  function fillCurveMetrics(figure) {
    const select = document.getElementById("curve-metric");
    const names = [...(figure.metrics || [])];
    if (figure.metric && !names.includes(figure.metric)) names.unshift(figure.metric);
    const current = [...select.options].map((o) => o.value);
    if (current.join("\n") !== names.join("\n")) {
      select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
    }
    select.value = figure.metric || "";
    select.closest("label").hidden = names.length < 2;
  }

  function initStudy() {
    const ref = document.body.dataset.study;
    const base = `/api/v1/studies/${encodeURIComponent(ref)}`;
    const toggle = document.getElementById("show-pruned");
    const state = { sort: "number", offset: 0, trialState: "", status: null, timer: null };

    async function loadDetail() {
      const study = await api(base);
      state.status = study.status;
      state.id = study.id;
      renderDetail(study);
      return study;
    }

    // /best answers 409 until a trial completed: asked only once the detail has a best trial,
    // and again only when a trial finished since (its Pareto set may list up to 1,000 trials)
    async function loadBest(study) {
      if (!study.best_trial) return;
      const p = study.progress;
      const key = [study.status, p.finished, p.failed, p.extra_finished, study.best_trial.number].join(":");
      if (key === state.bestKey && state.best) {
        renderBestExtras(study, state.best); // the detail re-rendered the best card
        return;
      }
      state.best = await api(`${base}/best`);
      state.bestKey = key;
      renderBestExtras(study, state.best);
    }

    async function loadPlots() {
      const query = new URLSearchParams({ include_pruned: String(toggle.checked) });
      if (state.curveMetric) query.set("curve_metric", state.curveMetric);
      const result = await api(`${base}/plots?${query}`);
      const plots = result.plots;
      for (const name of PLOT_NAMES) {
        if (plots[name]) drawFigure(document.getElementById(`plot-${name}`), plots[name]);
      }
      // panels only some studies have (several objectives, confirmation runs)
      for (const name of OPTIONAL_PLOTS) {
        const box = document.getElementById(`plot-${name}`);
        box.hidden = !plots[name];
        if (plots[name]) drawFigure(box, plots[name]);
      }
      fillCurveMetrics(plots.learning_curves);
      // which metric the curves on screen show (for scripts and tests)
      document.getElementById("plot-learning_curves").dataset.metric = plots.learning_curves.metric || "";
      const slices = document.getElementById("slices");
      const wanted = plots.slices.map((f) => `plot-slice-${f.param}`);
      for (const child of [...slices.children]) if (!wanted.includes(child.id)) child.remove();
      for (const figure of plots.slices) {
        const id = `plot-slice-${figure.param}`;
        let box = document.getElementById(id);
        if (!box) {
          box = el("figure", { class: "plot", id });
          slices.append(box);
        }
        drawFigure(box, figure);
      }
      const note = document.getElementById("plots-note");
      note.textContent = result.truncated
        ? `Plots show the newest ${result.n_trials_plotted} trials.`
        : `${result.n_trials_plotted} trials plotted.`;
      const link = document.getElementById("optuna-link");
      const dashboard = document.body.dataset.optunaDashboard;
      if (dashboard && result.optuna_study_id !== null) {
        link.href = `${dashboard}/studies/${result.optuna_study_id}`;
        link.hidden = false;
      }
    }

    async function loadTrials() {
      const query = new URLSearchParams({
        sort: state.sort,
        limit: String(PAGE_SIZE),
        offset: String(state.offset),
      });
      if (state.trialState) query.set("state", state.trialState);
      const page = await api(`${base}/trials?${query}`);
      renderTrials(page);
      // tells scripts (and tests) which order the rows on screen are in
      document.querySelector("#trials tbody").dataset.sort = state.sort;
      pager(document.getElementById("trials-pager"), page.total, state.offset, PAGE_SIZE, (o) => {
        state.offset = o;
        loadTrials().catch((e) => showError("study-error", e));
      });
    }

    async function refresh() {
      clearTimeout(state.timer);
      try {
        const study = await loadDetail();
        // the marker follows the status as soon as it is known, not after plots and trials
        const live = ACTIVE.includes(study.status);
        document.getElementById("live").hidden = !live;
        await Promise.all([loadPlots(), loadTrials(), loadBest(study)]);
        showError("study-error", null);
        document.body.dataset.polling = live ? "on" : "off";
        // poll while the study may still change; one last render happened above when it ended
        if (live) state.timer = setTimeout(refresh, POLL_MS);
      } catch (error) {
        showError("study-error", error);
        document.body.dataset.polling = "off";
        if (error.status !== 404 && ACTIVE.includes(state.status)) {
          state.timer = setTimeout(refresh, POLL_MS * 2);
        }
      }
    }

    toggle.addEventListener("change", () => loadPlots().catch((e) => showError("study-error", e)));
    document.getElementById("curve-metric").addEventListener("change", (event) => {
      state.curveMetric = event.target.value;
      loadPlots().catch((e) => showError("study-error", e));
    });
    document.getElementById("trial-state").addEventListener("change", (event) => {
      state.trialState = event.target.value;
      state.offset = 0;
      loadTrials().catch((e) => showError("study-error", e));
    });
    for (const th of document.querySelectorAll("#trials th[data-sort]")) {
      th.tabIndex = 0;
      const sortBy = () => {
        const key = th.dataset.sort;
        state.sort = state.sort === key ? `-${key}` : key;
        state.offset = 0;
        for (const other of document.querySelectorAll("#trials th[data-sort]")) other.removeAttribute("aria-sort");
        th.setAttribute("aria-sort", state.sort.startsWith("-") ? "descending" : "ascending");
        loadTrials().catch((e) => showError("study-error", e));
      };
      th.addEventListener("click", sortBy);
      th.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") sortBy();
      });
    }
    document.getElementById("cancel-button").addEventListener("click", async () => {
      if (!window.confirm("Cancel this study? Running trials stop at their next epoch.")) return;
      try {
        await api(`${base}/cancel`, { method: "POST" });
        await refresh();
      } catch (error) {
        showError("study-error", error);
      }
    });
    refresh();
  }

  // every objective of the spec (one, or a multi-objective study's list) and its constraints
  function objectivesText(spec) {
    const objectives = Array.isArray(spec.objective) ? spec.objective : [spec.objective];
    const text = objectives.map((o) => `${o.direction || "minimize"} ${o.metric}`).join(", ");
    const constraints = (spec.constraints || []).map((c) => `${c.metric} ${c.op} ${fmt(c.value)}`);
    return constraints.length ? `${text}; subject to ${constraints.join(", ")}` : text;
  }

  function renderDetail(study) {
    document.title = `${study.name} · regtune`;
    document.getElementById("study-name").textContent = study.name;
    const status = document.getElementById("study-status");
    status.className = `badge ${study.status}`;
    status.textContent = study.status;
    document.getElementById("cancel-button").hidden = !ACTIVE.includes(study.status);
    document.getElementById("study-progress").replaceChildren(progressBar(study.progress));
    const rows = [
      ["trainer", study.trainer],
      ["objective", objectivesText(study.spec)],
      ["precision", (study.spec.execution || {}).precision || "32-true"],
      ["created", when(study.created_at)],
      ["started", when(study.started_at)],
      ["finished", when(study.finished_at)],
    ];
    if (study.error) rows.push(["note", study.error]);
    document
      .getElementById("study-times")
      .replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    document.getElementById("study-spec").textContent = JSON.stringify(study.spec, null, 2);
    const best = study.best_trial;
    const box = document.getElementById("best-trial");
    if (!best) {
      box.replaceChildren(el("p", { class: "muted", text: "no completed trial yet" }));
      return;
    }
    const params = PARAMS.filter((p) => best.params[p] !== null && best.params[p] !== undefined);
    const metrics = Object.entries(best.metrics || {});
    box.replaceChildren(
      el(
        "p",
        { class: "best-value" },
        `${study.metric} = `,
        el("strong", { text: fmt(best.value) }),
        // best_epoch counts from 0: its epoch is the (best_epoch + 1)th of epochs_run
        ` (trial ${best.number}, epoch ${best.best_epoch === null ? "?" : best.best_epoch + 1} of ${best.epochs_run})`,
        best.feasible === false ? el("span", { class: "tag infeasible", text: "infeasible: no trial meets the constraints" }) : null,
      ),
      el("dl", { class: "kv", id: "best-params" }, params.flatMap((p) => [el("dt", { text: p }), el("dd", { text: fmt(best.params[p]) })])),
      el("details", {}, el("summary", { text: "metrics at the best epoch" }), el("dl", { class: "kv" }, metrics.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: fmt(v) })]))),
    );
  }

  // confirmation (mean ± spread of the ranked best) in the best-trial card, and the reference run
  // (regularization off) beside the tuned best; both only when /best carries them
  function renderBestExtras(study, best) {
    const box = document.getElementById("best-trial");
    box.querySelector("#best-confirmation")?.remove();
    const c = best.confirmation;
    if (c) {
      const single = best.single_run;
      box.append(
        el(
          "div",
          { id: "best-confirmation", class: "confirmation" },
          el("p", {}, "confirmed: mean ", el("strong", { text: fmt(c.mean) }), c.std === null ? "" : ` ± ${fmt(c.std)} (std)`, ` over n = ${c.n} runs`),
          el("p", { class: "muted", text: (c.ci95_low === null ? "" : `95 % interval of the mean [${fmt(c.ci95_low)}, ${fmt(c.ci95_high)}]; `) + `runs ${c.values.map(fmt).join(", ")} (trials ${c.trial_numbers.join(", ")})` }),
          single ? el("p", { class: "muted", text: `single-run best: trial ${single.trial_number}, ${study.metric} = ${fmt(single.value)}` }) : null,
        ),
      );
    }
    const card = document.getElementById("reference-card");
    const ref = best.reference;
    card.hidden = !ref;
    if (!ref) return;
    const tuned = best.metrics || {};
    // with confirmation only the validation value is a mean; the other rows are the search run's
    const first = `validation ${best.metric}`;
    const rows = [[first, best.value, ref.value]];
    const testKeys = [...new Set([...Object.keys(best.test_metrics || {}), ...Object.keys(ref.test_metrics || {})])];
    for (const key of testKeys.sort()) rows.push([key, (best.test_metrics || {})[key], (ref.test_metrics || {})[key]]);
    for (const key of ["gap", "val_ece", "near_zero_frac", "weight_l2"]) rows.push([key, tuned[key], ref[key]]);
    const shown = rows.filter(([, a, b]) => (a !== null && a !== undefined) || (b !== null && b !== undefined));
    document.getElementById("reference").replaceChildren(
      el(
        "table",
        { class: "data compare", id: "reference-table" },
        el("thead", {}, el("tr", {}, el("th", { text: "" }), el("th", { class: "num", text: `tuned (trial ${best.trial_number})` }), el("th", { class: "num", text: `regularization off (trial ${fmt(ref.trial_number)})` }))),
        el("tbody", {}, shown.map(([label, a, b]) => el("tr", { "data-metric": label }, el("th", { text: label === first && c ? `${label} (mean of ${c.n} runs)` : label }), el("td", { class: "num", text: fmt(a) }), el("td", { class: "num", text: fmt(b) })))),
      ),
      el("p", { class: "muted", text: ref.state === "complete" ? "reference: weight decay, L1, dropout and label smoothing 0, same trainer config and seed" : `reference run: ${ref.state}` }),
    );
  }

  function renderTrials(page) {
    const body = document.querySelector("#trials tbody");
    if (!page.items.length) {
      body.replaceChildren(el("tr", { class: "placeholder" }, el("td", { colSpan: 14, text: "no trials" })));
      return;
    }
    body.replaceChildren(
      ...page.items.map((t) =>
        el(
          "tr",
          { class: `state-${t.state}`, title: t.error || "", "data-role": t.role || "search" },
          el("td", { text: t.number }),
          el(
            "td",
            {},
            el("span", { class: `badge ${t.state}`, text: t.state }),
            // extra runs beside the search, and trials breaking a constraint, are tagged
            t.role && t.role !== "search" ? el("span", { class: "tag", text: t.role }) : null,
            t.feasible === false ? el("span", { class: "tag infeasible", text: "infeasible" }) : null,
          ),
          el("td", { class: "num", text: fmt(t.value) }),
          PARAMS.map((p) => el("td", { class: "num", text: fmt(t.params[p]) })),
          el("td", { class: "num", text: fmt(t.val_acc) }),
          el("td", { class: "num", text: fmt(t.val_ece) }),
          el("td", { class: "num", text: fmt(t.gap) }),
          el("td", { class: "num", text: t.epochs_run }),
          el("td", { class: "num", text: fmt(t.duration_s) }),
        ),
      ),
    );
  }

  // ---- new study (spec editor) ----------------------------------------------------------------

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  // The line (0-based) where the field at `path` is written in YAML or JSON text: each segment is
  // searched inside the block of the previous one; flow mappings ({low: 1, high: 2}) stay on their
  // line. Falls back to the deepest segment found.
  function lineOf(text, path) {
    const lines = text.split("\n");
    const indentOf = (line) => line.length - line.trimStart().length;
    let line = -1;
    let indent = -1;
    for (const segment of path) {
      if (typeof segment === "number") continue;
      const key = new RegExp(`(^|[\\s{,])["']?${escapeRegExp(String(segment))}["']?\\s*:`);
      if (line >= 0) {
        const rest = lines[line].slice(lines[line].indexOf(":") + 1);
        if (key.test(rest)) continue; // written inline on the parent's line
      }
      let found = -1;
      for (let i = line + 1; i < lines.length; i++) {
        const current = lines[i];
        if (!current.trim() || current.trim().startsWith("#")) continue;
        if (line >= 0 && indentOf(current) <= indent && !/^\s*[}\]]/.test(current)) break;
        if (key.test(current)) {
          found = i;
          break;
        }
      }
      if (found < 0) break;
      line = found;
      indent = indentOf(lines[found]);
    }
    return line;
  }

  function initNew() {
    const form = document.getElementById("spec-form");
    const textarea = document.getElementById("spec");
    const gutter = document.getElementById("gutter");
    const list = document.getElementById("spec-errors");
    const status = document.getElementById("submit-status");
    const button = document.getElementById("submit-button");
    const example = document.getElementById("example");
    // the page's Content-Security-Policy allows no inline handlers
    example.addEventListener("change", () => example.form.submit());
    let marks = new Map();

    function drawGutter() {
      const count = textarea.value.split("\n").length;
      const rows = [];
      for (let i = 0; i < count; i++) {
        const mark = marks.get(i);
        if (i > 0) rows.push("\n");
        // the server's message as a title attribute, never parsed as markup
        rows.push(mark ? el("span", { class: "bad", title: mark }, `⚠${i + 1}`) : String(i + 1));
      }
      gutter.replaceChildren(...rows);
      gutter.scrollTop = textarea.scrollTop;
    }

    function goToLine(line) {
      const lines = textarea.value.split("\n");
      const start = lines.slice(0, line).reduce((n, l) => n + l.length + 1, 0);
      textarea.focus();
      textarea.setSelectionRange(start, start + (lines[line] || "").length);
    }

    function showErrors(details) {
      const text = textarea.value;
      marks = new Map();
      list.replaceChildren(
        ...details.map((d) => {
          const path = (d.loc || []).filter((p) => !["body", "query", "path"].includes(p));
          const field = path.join(".");
          const line = lineOf(text, path);
          if (line >= 0) marks.set(line, [marks.get(line), d.msg].filter(Boolean).join("; "));
          const item = el(
            "li",
            { "data-field": field, "data-line": line >= 0 ? String(line + 1) : "" },
            line >= 0 ? el("button", { type: "button", class: "linklike", text: `line ${line + 1}` }) : null,
            field ? el("code", { text: field }) : null,
            el("span", { class: "msg", text: d.msg }),
          );
          const jump = item.querySelector("button");
          if (jump) jump.addEventListener("click", () => goToLine(line));
          return item;
        }),
      );
      list.hidden = details.length === 0;
      drawGutter();
    }

    async function parse(text) {
      const trimmed = text.trim();
      if (trimmed.startsWith("{")) {
        try {
          return JSON.parse(trimmed);
        } catch (_e) {
          /* not strict JSON: YAML accepts JSON-like text with comments, let the server parse */
        }
      }
      // a JSON string: writes must be JSON (a cross-site form cannot send that)
      return api("/dashboard-api/parse-spec", {
        method: "POST",
        body: JSON.stringify(text),
        contentType: "application/json",
      });
    }

    textarea.addEventListener("input", () => {
      if (marks.size) {
        marks = new Map();
      }
      drawGutter();
    });
    textarea.addEventListener("scroll", () => {
      gutter.scrollTop = textarea.scrollTop;
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      status.textContent = "submitting…";
      try {
        const spec = await parse(textarea.value);
        const study = await api("/api/v1/studies", { method: "POST", body: spec });
        status.textContent = `created study ${study.id}`;
        window.location.assign(`/studies/${study.id}`);
      } catch (error) {
        status.textContent = error.status === 422 || error.status === 409 ? "the spec was refused:" : "";
        showErrors(error.detail || [{ loc: [], msg: String(error) }]);
      } finally {
        button.disabled = false;
      }
    });
    drawGutter();
  }

  // ---- start ----------------------------------------------------------------------------------

  window.regtune = { api, lineOf };
  document.addEventListener("DOMContentLoaded", () => {
    showTokenButton();
    const signOut = document.getElementById("token-button");
    if (signOut) {
      signOut.addEventListener("click", () => {
        setToken(null);
        window.location.reload();
      });
    }
    const page = document.body.dataset.page;
    if (page === "list") initList();
    else if (page === "study") initStudy();
    else if (page === "new") initNew();
  });
})();
