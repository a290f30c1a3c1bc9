/* Orchestra report: the executions table (sort, filter, paginate) and plot tooltips.
 *
 * Vanilla JavaScript, no framework, no network. Data comes from data.js (window.ORCHESTRA_REPORT).
 * Campaign data only ever reaches the page through textContent and attribute setters, never innerHTML,
 * so a parameter named "<script>" is shown as text. */
(function () {
  "use strict";

  var DATA = window.ORCHESTRA_REPORT || null;
  var ROOT = document.body.getAttribute("data-root") || "";
  var STATES = ["created", "running", "finished", "failed", "cancelled", "pruned"];
  var GOAL_MAX = !!(DATA && DATA.objective && DATA.objective.goal === "maximize");

  function stateClass(state) {
    return STATES.indexOf(state) >= 0 ? state : "unknown";
  }

  function fmtNum(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "boolean") return v ? "true" : "false";
    if (typeof v !== "number") return String(v);
    if (isNaN(v)) return "NaN";
    if (!isFinite(v)) return v > 0 ? "\u221e" : "-\u221e";
    if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
    var a = Math.abs(v);
    var s = (a !== 0 && (a < 1e-4 || a >= 1e6)) ? v.toExponential(5) : v.toPrecision(6);
    if (s.indexOf("e") >= 0) {
      var parts = s.split("e");
      return parts[0].replace(/\.?0+$/, "") + "e" + parts[1];
    }
    return s.indexOf(".") >= 0 ? s.replace(/\.?0+$/, "") : s;
  }

  function fmtDuration(s) {
    if (typeof s !== "number" || !isFinite(s)) return "";
    if (s < 60) return s.toFixed(1) + " s";
    var total = Math.round(s), m = Math.floor(total / 60), sec = total % 60;
    if (m < 60) return m + " m " + String(sec).padStart(2, "0") + " s";
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 48) return h + " h " + String(m).padStart(2, "0") + " m";
    return Math.floor(h / 24) + " d " + String(h % 24).padStart(2, "0") + " h";
  }

  function fmtTime(text) {
    if (!text) return "";
    var t = Date.parse(text);
    if (isNaN(t)) return String(text);
    return new Date(t).toISOString().slice(0, 16).replace("T", " ");
  }

  /* Where an execution ran: its node where it has one (on Slurm the host is the login node), else its host. */
  function whereText(r) {
    var place = r.node ? String(r.node) : (r.host ? String(r.host) : "");
    var slot = (r.slot !== null && r.slot !== undefined && place) ? " \u00b7 " + r.slot : "";
    return place + slot;
  }

  function whereTitle(r) {
    var parts = [];
    if (r.node) parts.push("node " + r.node);
    if (r.host) parts.push((r.node ? "reached through host " : "host ") + r.host);
    if (r.slot !== null && r.slot !== undefined) parts.push("slot " + r.slot);
    return parts.join(", ");
  }

  /* The manifest's declared kinds (data.js has them; an execution page gets its own in the shard). */
  var DECLARED = (DATA && DATA.parameter_types) || {};

  /* A parameter's value as the record has it: a whole float keeps its point (1.0, not 1). */
  function fmtParam(v, kind) {
    return (kind === "float" && typeof v === "number" && Number.isInteger(v)) ? v.toFixed(1) : fmtNum(v);
  }

  function declaredKind(k) {
    return Object.prototype.hasOwnProperty.call(DECLARED, k) ? DECLARED[k] : null;
  }

  function paramsText(params, kinds) {
    if (!params || typeof params !== "object") return "";
    return Object.keys(params).map(function (k) {
      var kind = (kinds && Object.prototype.hasOwnProperty.call(kinds, k)) ? kinds[k] : declaredKind(k);
      return k + "=" + fmtParam(params[k], kind);
    }).join(" ");
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  /* ---------------------------------------------------------------- plot tooltips and click-through */
  /* Pages that need the data only on a hover or a click (the overview: layout.page(lazy_data=True)) name
   * data.js in a <meta> and load it on first use: at 100,000 executions it is tens of megabytes, and the
   * overview must open in well under 2 s. <script src> because fetch() of file:// is blocked. */
  var waiting = null;
  function lazyData() {
    var meta = document.querySelector('meta[name="orchestra-data"]');
    return meta ? meta.getAttribute("content") : null;
  }
  function withData(then) {
    if (DATA) { then(); return; }
    var src = lazyData();
    if (!src) return;
    if (!waiting) {
      waiting = [];
      var script = document.createElement("script");
      script.src = src;
      script.onload = function () {
        DATA = window.ORCHESTRA_REPORT || null;
        DECLARED = (DATA && DATA.parameter_types) || {};
        GOAL_MAX = !!(DATA && DATA.objective && DATA.objective.goal === "maximize");
        var queued = waiting;
        waiting = [];
        if (DATA) queued.forEach(function (f) { f(); });
      };
      document.body.appendChild(script);
    }
    waiting.push(then);
  }

  function setupPlots() {
    var tip = document.getElementById("tooltip");
    if ((!DATA && !lazyData()) || !tip || !document.querySelector("svg.plot")) return;
    var hovered = null;
    function target(ev) {
      var t = ev.target;
      return (t && t.getAttribute && t.closest && t.closest("svg.plot") && t.getAttribute("data-i") !== null) ? t : null;
    }
    document.addEventListener("mouseover", function (ev) {
      var t = target(ev);
      if (!t) return;
      hovered = t;
      withData(function () { if (hovered === t) showTip(t); });
    });
    function showTip(t) {
      var item = DATA.executions[Number(t.getAttribute("data-i"))];
      if (!item) return;
      var r = item.record;
      tip.textContent = "";
      var head = el("div");
      head.appendChild(el("span", "t-id", String(r.id) + " "));
      head.appendChild(el("span", "badge s-" + stateClass(r.state), String(r.state)));
      tip.appendChild(head);
      var bundled = Number(t.getAttribute("data-n") || 1);
      if (bundled > 1) {  /* a bundle of identical lines (plots.parallel_coordinates): say how many */
        var ids = (t.getAttribute("data-is") || "").split(" ").filter(Boolean).map(function (k) {
          var other = DATA.executions[Number(k)];
          return other ? String(other.record.id) : "";
        }).filter(Boolean);
        tip.appendChild(el("div", "t-line t-bundle", bundled + " identical executions: " + ids.slice(0, 8).join(", ")
          + (bundled > 8 ? ", \u2026" : "")));
      }
      var merged = Number(t.getAttribute("data-merged") || 1);
      if (merged > 1) {  /* touching timeline bars drawn as one (plots.timeline_plot): the first is shown */
        tip.appendChild(el("div", "t-line t-bundle", merged + " executions in this stretch of the lane; the first:"));
      }
      var metric = (DATA.objective && DATA.objective.metric) || "objective";
      if (r.objective !== null && r.objective !== undefined) {
        tip.appendChild(el("div", "t-line", metric + " = " + fmtNum(r.objective)));
      }
      Object.keys(item.metrics || {}).forEach(function (k) {
        if (k !== metric) tip.appendChild(el("div", "t-line", k + " = " + fmtNum(item.metrics[k])));
      });
      Object.keys(r.parameters || {}).slice(0, 12).forEach(function (k) {
        tip.appendChild(el("div", "t-line", k + " = " + fmtParam(r.parameters[k], declaredKind(k))));
      });
      if (r.node || r.host) tip.appendChild(el("div", "t-line", whereTitle(r)));
      if (typeof r.duration === "number") tip.appendChild(el("div", "t-line", "duration " + fmtDuration(r.duration)));
      tip.hidden = false;
    }
    document.addEventListener("mousemove", function (ev) {
      if (tip.hidden) return;
      var x = ev.clientX + 14, y = ev.clientY + 14;
      var w = tip.offsetWidth, h = tip.offsetHeight;
      if (x + w > window.innerWidth - 8) x = ev.clientX - w - 14;
      if (y + h > window.innerHeight - 8) y = ev.clientY - h - 14;
      tip.style.left = x + "px";
      tip.style.top = y + "px";
    });
    document.addEventListener("mouseout", function (ev) {
      if (target(ev)) { tip.hidden = true; hovered = null; }
    });
    document.addEventListener("click", function (ev) {
      var t = target(ev);
      if (!t) return;
      withData(function () {
        var item = DATA.executions[Number(t.getAttribute("data-i"))];
        if (item) window.location.href = ROOT + item.page;
      });
    });
  }

  /* ---------------------------------------------------------------- executions table */
  /* Columns come from the table's header (pages.executions_page): one per metric of the metrics files. */
  function columnKey(th) {
    var key = th.getAttribute("data-key");
    return key === "metric" ? "m:" + th.getAttribute("data-metric") : key;
  }

  function numberOrNull(v) {
    return (typeof v === "number" && !isNaN(v)) ? v : null;
  }

  function buildRows() {
    return DATA.executions.map(function (item, i) {
      var r = item.record;
      var ptext = paramsText(r.parameters);
      var commit = DATA.commits[r.commit];
      var place = r.node ? String(r.node) : (r.host ? String(r.host) : "");
      var started = Date.parse(r.started || r.created || "");
      var metrics = item.metrics || {};
      var keys = {
        id: String(r.id), state: STATES.indexOf(r.state) >= 0 ? STATES.indexOf(r.state) : 99,
        parameters: ptext.toLowerCase(), objective: numberOrNull(r.objective),
        duration: numberOrNull(r.duration),
        node: place ? (place + "\u0000" + String(r.slot === null || r.slot === undefined ? "" : r.slot).padStart(6, "0")).toLowerCase() : null,
        profile: r.profile ? String(r.profile) : null,
        commit: String(r.commit), started: isNaN(started) ? null : started
      };
      Object.keys(metrics).forEach(function (k) { keys["m:" + k] = numberOrNull(metrics[k]); });
      return {
        i: i, r: r, sc: stateClass(r.state), page: item.page, params: ptext, metrics: metrics, subject: commit ? String(commit.subject) : "",
        keys: keys,
        haystack: [r.id, r.state, ptext, r.node || "", r.host || "", r.commit, commit ? commit.subject : "", r.author || "",
                   r.profile || "", r.search || "", r.error || ""].join("\n").toLowerCase()
      };
    });
  }

  function readHash() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      if (!part) return;
      var eq = part.indexOf("=");
      try {
        out[decodeURIComponent(eq < 0 ? part : part.slice(0, eq))] = eq < 0 ? "" : decodeURIComponent(part.slice(eq + 1));
      } catch (e) { /* a mangled hash only loses the view state */ }
    });
    return out;
  }

  function setupTable() {
    var table = document.getElementById("executions");
    if (!table || !DATA) return;
    var tbody = table.tBodies[0];
    var input = document.getElementById("filter");
    var stateSel = document.getElementById("state-filter");
    var sizeSel = document.getElementById("page-size");
    var count = document.getElementById("count");
    var info = document.getElementById("page-info");
    var prev = document.getElementById("prev");
    var next = document.getElementById("next");
    var none = document.getElementById("no-rows");
    var buildStart = window.performance ? performance.now() : Date.now();
    var rows = buildRows();
    var hash = readHash();
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var columns = heads.map(columnKey);
    var view = {
      q: hash.q || "", state: hash.state || "", sort: columns.indexOf(hash.sort) >= 0 ? hash.sort : "",
      dir: hash.dir === "desc" ? -1 : 1, page: Math.max(0, (parseInt(hash.page, 10) || 1) - 1),
      size: [25, 50, 100, 250].indexOf(parseInt(hash.size, 10)) >= 0 ? parseInt(hash.size, 10) : 50
    };
    input.value = view.q;
    if (view.state && !stateSel.querySelector("option[value='" + stateClass(view.state) + "']")) view.state = "";
    stateSel.value = view.state;
    sizeSel.value = String(view.size);
    var shown = rows;

    function saveHash() {
      var parts = [];
      if (view.q) parts.push("q=" + encodeURIComponent(view.q));
      if (view.state) parts.push("state=" + encodeURIComponent(view.state));
      if (view.sort) parts.push("sort=" + encodeURIComponent(view.sort), "dir=" + (view.dir < 0 ? "desc" : "asc"));
      if (view.page) parts.push("page=" + (view.page + 1));
      if (view.size !== 50) parts.push("size=" + view.size);
      var h = parts.length ? "#" + parts.join("&") : location.pathname + location.search;
      try { history.replaceState(null, "", parts.length ? h : location.href.split("#")[0]); } catch (e) { /* file:// quirks */ }
    }

    /* Sorting 100,000 rows with a comparator costs most of a second (417 ms over typed arrays): each
     * column's order is instead built without a comparator. The distinct keys are sorted natively
     * (Float64Array.prototype.sort for numbers, Array.prototype.sort's default for strings: both compare
     * exactly as < does), every row gets its key's rank, and a counting sort over the ranks lays the rows
     * out, which keeps ties in the campaign's order in either direction. Missing values rank after every
     * key in both directions. Each order is cached; a filtered, sorted view is one pass over it. A column
     * that mixes numbers and strings keeps the comparator. */
    var orders = {}, ranks = {};
    function sortedOrder(key, dir) {
      var cacheKey = (dir < 0 ? "-" : "+") + key;
      if (orders[cacheKey]) return orders[cacheKey];
      var ranked = columnRanks(key);
      var idx = ranked.rank ? countingOrder(ranked.rank, ranked.distinct, dir) : comparatorOrder(ranked.vals, dir);
      orders[cacheKey] = idx;
      return idx;
    }

    /* A column's keys as ranks among its distinct values (missing: after all of them), computed once per
     * column for both directions; null rank where numbers and strings mix. */
    function columnRanks(key) {
      if (ranks[key]) return ranks[key];
      var n = rows.length, own = Object.prototype.hasOwnProperty, nums = 0, strs = 0;
      var vals = new Array(n);
      for (var i = 0; i < n; i++) {
        var v = own.call(rows[i].keys, key) ? rows[i].keys[key] : null;
        if (v === undefined) v = null;
        if (typeof v === "number") nums++; else if (v !== null) strs++;
        vals[i] = v;
      }
      ranks[key] = (nums && strs) ? {rank: null, vals: vals} : rankKeys(vals, nums > 0);
      return ranks[key];
    }

    function rankKeys(vals, numeric) {
      var n = vals.length, rank = new Int32Array(n), distinct, k, i, m = 0, u = 0;
      if (numeric) {
        var f = new Float64Array(n);
        for (i = 0; i < n; i++) if (vals[i] !== null) f[m++] = vals[i];
        distinct = f.subarray(0, m).sort();
        for (k = 0; k < m; k++) if (k === 0 || distinct[k] !== distinct[u - 1]) distinct[u++] = distinct[k];
        for (i = 0; i < n; i++) {
          var v = vals[i];
          if (v === null) { rank[i] = u; continue; }
          var lo = 0, hi = u - 1;  /* binary search over the distinct numbers */
          while (lo < hi) { var mid = (lo + hi) >> 1; if (distinct[mid] < v) lo = mid + 1; else hi = mid; }
          rank[i] = lo;
        }
      } else {
        var strs = [];
        for (i = 0; i < n; i++) if (vals[i] !== null) strs.push(vals[i]);
        strs.sort();
        var byValue = new Map();
        for (k = 0; k < strs.length; k++) if (k === 0 || strs[k] !== strs[k - 1]) byValue.set(strs[k], u++);
        for (i = 0; i < n; i++) rank[i] = vals[i] === null ? u : byValue.get(vals[i]);
      }
      return {rank: rank, distinct: u};
    }

    /* Rows laid out by rank (descending: ranks reversed, missing still last); stable, so ties keep the
     * campaign's order. */
    function countingOrder(rank, u, dir) {
      var n = rank.length, start = new Int32Array(u + 2), i, k;
      for (i = 0; i < n; i++) start[(dir < 0 && rank[i] < u ? u - 1 - rank[i] : rank[i]) + 1]++;
      for (k = 1; k <= u + 1; k++) start[k] += start[k - 1];
      var idx = new Int32Array(n);
      for (i = 0; i < n; i++) idx[start[dir < 0 && rank[i] < u ? u - 1 - rank[i] : rank[i]]++] = i;
      return idx;
    }

    function comparatorOrder(vals, dir) {
      var n = vals.length, idx = new Int32Array(n);
      for (var i = 0; i < n; i++) idx[i] = i;
      idx.sort(function (a, b) {
        var x = vals[a], y = vals[b];
        if ((x === null) !== (y === null)) return x === null ? 1 : -1;
        if (x === y) return a - b;
        var c = (typeof x === "number" && typeof y === "number") ? x - y : (x < y ? -1 : x > y ? 1 : 0);
        return c === 0 ? a - b : c * dir;
      });
      return idx;
    }

    function recompute() {
      var tokens = view.q.toLowerCase().split(/\s+/).filter(Boolean);
      var n = rows.length, keep = new Uint8Array(n), kept = 0;
      for (var i = 0; i < n; i++) {
        var row = rows[i], ok = !view.state || row.sc === view.state;
        for (var k = 0; ok && k < tokens.length; k++) if (row.haystack.indexOf(tokens[k]) < 0) ok = false;
        if (ok) { keep[i] = 1; kept++; }
      }
      shown = new Array(kept);
      var order = view.sort ? sortedOrder(view.sort, view.dir) : null, m = 0;
      for (var p = 0; p < n; p++) {
        var at = order ? order[p] : p;
        if (keep[at]) shown[m++] = rows[at];
      }
      heads.forEach(function (th) {
        var key = columnKey(th);
        th.setAttribute("aria-sort", key === view.sort ? (view.dir > 0 ? "ascending" : "descending") : "none");
      });
    }

    /* Recompute and redraw, recording how long it took (data-ms on the table): bench/report_browser.py and
     * the browser test read it, so the figure is the page's own work, not the driver's round trips. */
    function refresh() {
      var t0 = window.performance ? performance.now() : Date.now();
      recompute();
      render();
      var t1 = window.performance ? performance.now() : Date.now();
      table.setAttribute("data-ms", (t1 - t0).toFixed(1));
    }

    function cell(tr, key, content, title) {
      var td = el("td", "c-" + key);
      if (typeof content === "string") td.textContent = content; else if (content) td.appendChild(content);
      if (title) td.title = title;
      tr.appendChild(td);
    }

    function paramsNode(params) {
      var wrap = el("span", "params");
      Object.keys(params || {}).forEach(function (k) {
        var p = el("span", "param");
        p.appendChild(el("b", null, k));
        var shown = fmtParam(params[k], declaredKind(k));
        p.appendChild(document.createTextNode("=" + shown));
        p.title = k + "=" + shown;
        wrap.appendChild(p);
      });
      return wrap;
    }

    function render() {
      var pages = Math.max(1, Math.ceil(shown.length / view.size));
      if (view.page >= pages) view.page = pages - 1;
      var start = view.page * view.size, end = Math.min(shown.length, start + view.size);
      var frag = document.createDocumentFragment();
      for (var k = start; k < end; k++) {
        var row = shown[k], r = row.r;
        var tr = el("tr");
        tr.setAttribute("data-href", ROOT + row.page);
        var a = el("a", "mono", String(r.id));
        a.setAttribute("href", ROOT + row.page);
        for (var c = 0; c < heads.length; c++) {
          var key = heads[c].getAttribute("data-key");
          if (key === "select") {
            var box = el("input", "pick");
            box.type = "checkbox";
            box.setAttribute("data-id", String(r.id));
            box.setAttribute("aria-label", "compare " + String(r.id));
            box.checked = picked.indexOf(String(r.id)) >= 0;
            cell(tr, "select", box);
          }
          else if (key === "id") cell(tr, "id", a);
          else if (key === "state") cell(tr, "state", el("span", "badge s-" + stateClass(r.state), String(r.state)));
          else if (key === "parameters") cell(tr, "parameters", paramsNode(r.parameters));
          else if (key === "objective") cell(tr, "objective", fmtNum(r.objective));
          else if (key === "metric") {
            var name = heads[c].getAttribute("data-metric");
            cell(tr, "metric", Object.prototype.hasOwnProperty.call(row.metrics, name) ? fmtNum(row.metrics[name]) : "");
          }
          else if (key === "duration") cell(tr, "duration", fmtDuration(r.duration));
          else if (key === "node") cell(tr, "node", whereText(r), whereTitle(r));
          else if (key === "profile") cell(tr, "profile", r.profile ? String(r.profile) : "");
          else if (key === "commit") cell(tr, "commit", el("span", "mono", String(r.commit).slice(0, 10)), row.subject);
          else if (key === "started") cell(tr, "started", fmtTime(r.started));
          else cell(tr, key, "");
        }
        frag.appendChild(tr);
      }
      tbody.textContent = "";
      tbody.appendChild(frag);
      none.hidden = shown.length > 0;
      count.textContent = shown.length === rows.length ? rows.length + " executions"
        : shown.length + " of " + rows.length + " executions";
      info.textContent = shown.length ? (start + 1) + "\u2013" + end + " · page " + (view.page + 1) + " of " + pages : "";
      prev.disabled = view.page <= 0;
      next.disabled = view.page >= pages - 1;
      saveHash();
    }

    var timer = null;
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { view.q = input.value.trim(); view.page = 0; refresh(); }, 120);
    });
    stateSel.addEventListener("change", function () { view.state = stateSel.value; view.page = 0; refresh(); });
    sizeSel.addEventListener("change", function () { view.size = parseInt(sizeSel.value, 10); view.page = 0; render(); });
    prev.addEventListener("click", function () { view.page -= 1; render(); });
    next.addEventListener("click", function () { view.page += 1; render(); });
    table.tHead.addEventListener("click", function (ev) {
      var th = ev.target.closest("th");
      if (!th || th.getAttribute("data-key") === "select") return;
      var key = columnKey(th);
      if (view.sort === key) view.dir = -view.dir;
      else { view.sort = key; view.dir = (key === "objective" && GOAL_MAX) ? -1 : 1; }
      view.page = 0;
      refresh();
    });
    /* Ticked executions for the compare view: the two most recently ticked stay ticked. */
    var picked = [];
    var compareBtn = document.getElementById("compare");
    function showPicked() {
      if (!compareBtn) return;
      compareBtn.disabled = picked.length !== 2;
      compareBtn.textContent = "Compare (" + picked.length + "/2)";
    }
    if (compareBtn) compareBtn.addEventListener("click", function () {
      if (picked.length === 2) window.location.href = ROOT + "compare.html#a=" + encodeURIComponent(picked[0])
        + "&b=" + encodeURIComponent(picked[1]);
    });
    tbody.addEventListener("change", function (ev) {
      var box = ev.target;
      if (!box.classList || !box.classList.contains("pick")) return;
      var id = box.getAttribute("data-id");
      picked = picked.filter(function (x) { return x !== id; });
      if (box.checked) picked.push(id);
      while (picked.length > 2) picked.shift();
      render();
      showPicked();
    });
    tbody.addEventListener("click", function (ev) {
      if (ev.target.closest("a") || ev.target.closest("td.c-select")) return;
      var tr = ev.target.closest("tr");
      if (tr && tr.getAttribute("data-href")) window.location.href = tr.getAttribute("data-href");
    });
    var built = window.performance ? performance.now() : Date.now();
    refresh();
    table.setAttribute("data-rows-ms", (built - buildStart).toFixed(1));
    /* Rank the sortable columns while the reader looks at the first page, one column per task so a click
     * waits at most for one column: the first sort of a column is then a counting sort (O(n)) instead of
     * a sort of 100,000 keys. Large tables only: below that a first sort is quick anyway. */
    if (rows.length >= 5000) {
      var pending = columns.filter(function (key) { return key && key !== "select"; });
      var rankNext = function () {
        while (pending.length && ranks[pending[0]]) pending.shift();
        if (!pending.length) return;
        columnRanks(pending.shift());
        table.setAttribute("data-ranked", String(Object.keys(ranks).length));
        setTimeout(rankNext, 20);
      };
      setTimeout(rankNext, 50);
    }
  }

  /* ---------------------------------------------------------------- execution page (execution.html?id=) */
  var SAFE_NAME = /^[0-9A-Za-z][0-9A-Za-z_-]{0,63}$/;

  function fmtSize(n) {
    if (n < 1024) return n + " B";
    var units = ["KB", "MB", "GB"], v = n, u = -1;
    do { v /= 1024; u += 1; } while (v >= 1024 && u < units.length - 1);
    return v.toFixed(1) + " " + units[u];
  }

  function kvRow(dl, label, node) {
    if (node === null || node === undefined || node === "") return;
    dl.appendChild(el("dt", null, label));
    var dd = el("dd");
    if (typeof node === "string") dd.textContent = node; else dd.appendChild(node);
    dl.appendChild(dd);
  }

  /* A fallback only: report.py sends each parameter's kind (JSON turns 1.0 into 1, so the value cannot tell). */
  function typeName(v) {
    if (v === null) return "null";
    if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
    if (typeof v === "boolean") return "bool";
    return typeof v === "string" ? "str" : typeof v;
  }

  function fillPre(id, infoId, text) {
    var pre = document.getElementById(id);
    var info = document.getElementById(infoId);
    if (!text || !String(text).trim()) {
      pre.hidden = true;
      info.textContent = "empty";
      return;
    }
    pre.textContent = text;
    var lines = text.split("\n").length - (text.charAt(text.length - 1) === "\n" ? 1 : 0);
    info.textContent = "last " + lines + " line" + (lines === 1 ? "" : "s");
  }

  function renderExecution(name, d) {
    var r = d.record;
    var id = String(r.id);
    document.title = "Execution " + id + " · " + document.title.split(" · ").slice(1).join(" · ");
    document.getElementById("ex-crumb").textContent = id;
    document.getElementById("ex-id").textContent = id;
    var st = document.getElementById("ex-state");
    st.appendChild(el("span", "badge s-" + stateClass(r.state), String(r.state)));
    document.getElementById("ex-params").textContent = paramsText(r.parameters, d.types || {});
    [["ex-prev", d.prev], ["ex-next", d.next]].forEach(function (pair) {
      var a = document.getElementById(pair[0]);
      if (pair[1]) a.setAttribute("href", pair[1]); else a.className = "muted";
    });
    if (r.error) {
      document.getElementById("ex-error-card").hidden = false;
      document.getElementById("ex-error").textContent = String(r.error);
    }
    var dl = document.getElementById("ex-summary");
    var metric = document.getElementById("ex-body").getAttribute("data-metric") || "objective";
    kvRow(dl, "state", el("span", "badge s-" + stateClass(r.state), String(r.state)));
    if (r.objective !== null && r.objective !== undefined) kvRow(dl, metric, el("b", "num", fmtNum(r.objective)));
    Object.keys(d.metrics || {}).forEach(function (k) {
      if (k !== metric) kvRow(dl, k, el("span", "num", fmtNum(d.metrics[k])));
    });
    kvRow(dl, "exit code", fmtNum(r.exit_code));
    kvRow(dl, "duration", fmtDuration(r.duration));
    if (r.node) kvRow(dl, "node", el("span", "mono", String(r.node)));
    if (r.host) kvRow(dl, "host", el("span", "mono", String(r.host)));
    kvRow(dl, "slot", fmtNum(r.slot));
    /* What it was given when placed by resources (README: Resources); absent for the others. */
    if (r.cores) kvRow(dl, "cores", el("span", "mono", String(r.cores)));
    if (r.gpus) kvRow(dl, "GPUs", el("span", "mono", String(r.gpus)
      + (r.gpu_share ? " (" + fmtNum(r.gpu_share) + " of " + (String(r.gpus).indexOf(",") < 0 ? "it" : "each") + ")" : "")));
    if (r.memory_limit) kvRow(dl, "memory limit", fmtSize(r.memory_limit));
    kvRow(dl, "profile", r.profile ? String(r.profile) : "");
    kvRow(dl, "author", r.author ? String(r.author) : "");
    kvRow(dl, "repeat", fmtNum(r.repeat));
    kvRow(dl, "attempt", fmtNum(r.attempt));
    kvRow(dl, "search", r.search ? String(r.search) : "");
    kvRow(dl, "created", fmtTime(r.created));
    kvRow(dl, "started", fmtTime(r.started));
    kvRow(dl, "ended", fmtTime(r.ended));
    if (r.remote_dir) kvRow(dl, "remote dir", el("span", "mono", String(r.remote_dir)));

    var params = document.getElementById("ex-parameters");
    var keys = Object.keys(r.parameters || {});
    if (!keys.length) params.appendChild(el("p", "muted", "No parameters."));
    else {
      var table = el("table", "params-table"), tb = el("tbody");
      keys.forEach(function (k) {
        var tr = el("tr"), th = el("th", null, k);
        th.setAttribute("scope", "row");
        tr.appendChild(th);
        var kind = (d.types && Object.prototype.hasOwnProperty.call(d.types, k)) ? String(d.types[k]) : typeName(r.parameters[k]);
        tr.appendChild(el("td", "mono", fmtParam(r.parameters[k], kind)));
        tr.appendChild(el("td", "muted", kind));
        tb.appendChild(tr);
      });
      table.appendChild(tb);
      params.appendChild(table);
    }

    var commit = document.getElementById("ex-commit");
    if (d.commit) {
      commit.appendChild(el("p", "commit-subject", String(d.commit.subject)));
      var cdl = el("dl", "kv");
      kvRow(cdl, "commit", el("span", "mono", String(r.commit)));
      kvRow(cdl, "author", String(d.commit.author));
      kvRow(cdl, "time", fmtTime(d.commit.time));
      commit.appendChild(cdl);
    } else {
      var p = el("p");
      p.appendChild(el("span", "mono", String(r.commit) + " "));
      p.appendChild(el("span", "muted", "(commit not in this report)"));
      commit.appendChild(p);
    }
    document.getElementById("ex-command").textContent = String(r.command);

    var outs = document.getElementById("ex-outputs");
    if (r.outputs && r.outputs.length) {
      var decl = el("p", "muted small", "declared: ");
      r.outputs.forEach(function (pat, n) {
        if (n) decl.appendChild(document.createTextNode(", "));
        decl.appendChild(el("code", null, String(pat)));
      });
      outs.appendChild(decl);
    }
    if (!d.outputs.length) outs.appendChild(el("p", "muted", "No output files in this report."));
    else {
      var ft = el("table", "files"), fh = el("thead"), fhr = el("tr"), fb = el("tbody");
      ["file", "size", "kind"].forEach(function (h) { fhr.appendChild(el("th", null, h)); });
      fh.appendChild(fhr); ft.appendChild(fh); ft.appendChild(fb);
      var images = el("div", "images");
      d.outputs.forEach(function (o) {
        var tr = el("tr"), td = el("td");
        if (o.href) {
          var a = el("a", "mono", String(o.path));
          a.setAttribute("href", o.href);
          if (o.active) a.setAttribute("download", "");
          td.appendChild(a);
        } else if (o.inline && o.preview !== null && o.preview !== undefined) {
          /* A small text output lives in the shard only (files.inline_text): download it from memory. */
          var il = el("a", "mono", String(o.path));
          il.setAttribute("href", URL.createObjectURL(new Blob([String(o.preview)], {type: "text/plain"})));
          il.setAttribute("download", String(o.path).split("/").pop());
          td.appendChild(il);
        } else {
          td.appendChild(el("span", "mono", String(o.path) + " "));
          td.appendChild(el("span", "warn", String(o.problem || "")));
        }
        tr.appendChild(td);
        tr.appendChild(el("td", "num", fmtSize(o.size)));
        tr.appendChild(el("td", "muted", String(o.kind)));
        fb.appendChild(tr);
        if (o.kind === "image" && o.href) {
          var fig = el("figure", "output-image"), link = el("a"), img = el("img");
          link.setAttribute("href", o.href);
          img.setAttribute("src", o.href);
          img.setAttribute("alt", String(o.path));
          img.setAttribute("loading", "lazy");
          link.appendChild(img);
          fig.appendChild(link);
          fig.appendChild(el("figcaption", "mono", String(o.path)));
          images.appendChild(fig);
        }
      });
      outs.appendChild(ft);
      if (images.childNodes.length) outs.appendChild(images);
      d.outputs.forEach(function (o) {
        if (o.preview === null || o.preview === undefined) return;
        var det = el("details");
        det.open = true;
        det.appendChild(el("summary", "mono", String(o.path)));
        det.appendChild(el("pre", "output", String(o.preview)));
        outs.appendChild(det);
      });
    }
    var curveCard = document.getElementById("ex-curve-card");
    if (d.curve && curveCard) {
      var img = el("img", "curve");
      img.setAttribute("src", String(d.curve));
      img.setAttribute("alt", "learning curve of this execution");
      document.getElementById("ex-curve").appendChild(img);
      curveCard.hidden = false;
    }
    fillPre("ex-stdout", "ex-stdout-info", d.stdout);
    fillPre("ex-stderr", "ex-stderr-info", d.stderr);

    var ds = document.getElementById("ex-diffstat");
    if (!d.diffstat.length) ds.appendChild(el("p", "muted", "No files added by this execution."));
    else {
      var top = 1;
      d.diffstat.forEach(function (row) { if (typeof row[1] === "number") top = Math.max(top, Math.abs(row[1])); });
      var dt = el("table", "files"), db = el("tbody"), dh = el("thead"), dhr = el("tr");
      ["path", "added", ""].forEach(function (h) { dhr.appendChild(el("th", null, h)); });
      dh.appendChild(dhr); dt.appendChild(dh); dt.appendChild(db);
      d.diffstat.forEach(function (row) {
        var tr = el("tr");
        tr.appendChild(el("td", "mono", String(row[0])));
        tr.appendChild(el("td", "num", String(row[1])));
        var barCell = el("td"), bar = el("span", "dbar"), fill = el("span");
        fill.style.width = Math.max(1, 100 * Math.abs(Number(row[1]) || 0) / top) + "%";
        bar.appendChild(fill);
        barCell.appendChild(bar);
        tr.appendChild(barCell);
        db.appendChild(tr);
      });
      ds.appendChild(dt);
    }
    document.getElementById("ex-body").hidden = false;
  }

  function setupExecution() {
    var body = document.getElementById("ex-body");
    if (!body) return;
    var name = new URLSearchParams(location.search).get("id") || location.hash.replace(/^#/, "");
    function missing() {
      document.getElementById("ex-missing").hidden = false;
      document.getElementById("ex-id").textContent = name ? String(name) : "?";
    }
    if (!name || !SAFE_NAME.test(name)) { missing(); return; }
    var script = document.createElement("script");
    script.src = "details/" + name.slice(0, 2).toLowerCase() + ".js";
    script.onload = function () {
      var shard = window.ORCHESTRA_DETAILS || {};
      if (Object.prototype.hasOwnProperty.call(shard, name)) renderExecution(name, shard[name]); else missing();
    };
    script.onerror = missing;
    document.body.appendChild(script);
  }

  /* ---------------------------------------------------------------- metric picker on the plots page */
  function setupMetricPicker() {
    var pick = document.getElementById("metric-pick");
    var select = document.getElementById("metric-picker");
    if (!pick || !select) return;
    var groups = Array.prototype.slice.call(document.querySelectorAll(".metric-group"));
    function show(name) {
      groups.forEach(function (g) { g.hidden = g.getAttribute("data-metric") !== name; });
    }
    var wanted = readHash().metric;
    if (wanted && groups.some(function (g) { return g.getAttribute("data-metric") === wanted; })) select.value = wanted;
    show(select.value);
    pick.hidden = false;
    select.addEventListener("change", function () {
      show(select.value);
      try { history.replaceState(null, "", "#metric=" + encodeURIComponent(select.value)); } catch (e) { /* file:// quirks */ }
    });
  }

  /* ---------------------------------------------------------------- compare view (compare.html#a=ID&b=ID) */
  function setupCompare() {
    var table = document.getElementById("compare-table");
    if (!table || !DATA) return;
    var hash = readHash();
    var byId = {};
    DATA.executions.forEach(function (item) { byId[String(item.record.id)] = item; });
    var A = byId[hash.a], B = byId[hash.b];
    if (!A || !B) { document.getElementById("compare-missing").hidden = false; return; }
    var ra = A.record, rb = B.record;
    var metric = (DATA.objective && DATA.objective.metric) || "objective";
    [["compare-a", A], ["compare-b", B]].forEach(function (pair) {
      var th = document.getElementById(pair[0]);
      var link = el("a", "mono", String(pair[1].record.id));
      link.setAttribute("href", ROOT + pair[1].page);
      th.textContent = "";
      th.appendChild(link);
    });
    var tbody = table.tBodies[0];
    function row(label, x, y, numeric, section) {
      var tr = el("tr", section ? "c-section" : null);
      tr.appendChild(el("th", null, label));
      var differ = JSON.stringify(x === undefined ? null : x) !== JSON.stringify(y === undefined ? null : y);
      [x, y].forEach(function (v) {
        var td = el("td", (numeric ? "num" : "") + (differ ? " diff" : ""),
          (v === undefined || v === null) ? "—" : (typeof v === "object" ? JSON.stringify(v) : fmtNum(v)));
        tr.appendChild(td);
      });
      var delta = (numeric && typeof x === "number" && typeof y === "number") ? y - x : null;
      tr.appendChild(el("td", "num", delta === null ? "" : (delta > 0 ? "+" : "") + fmtNum(delta)));
      tr.setAttribute("data-differs", differ ? "1" : "0");
      tbody.appendChild(tr);
    }
    function commitText(r) {
      var c = DATA.commits[r.commit];
      return String(r.commit).slice(0, 12) + (c ? " " + c.subject : "");
    }
    row("state", ra.state, rb.state);
    row("commit", commitText(ra), commitText(rb));
    row("profile", ra.profile, rb.profile);
    row("where", whereText(ra), whereText(rb));
    row("started", fmtTime(ra.started), fmtTime(rb.started));
    row("duration", ra.duration, rb.duration, true);
    row(metric + " (objective)", ra.objective, rb.objective, true);
    var ma = A.metrics || {}, mb = B.metrics || {};
    Object.keys(Object.assign({}, ma, mb)).forEach(function (k) {
      if (k !== metric) row(k, ma[k], mb[k], true);
    });
    var pa = ra.parameters || {}, pb = rb.parameters || {};
    Object.keys(Object.assign({}, pa, pb)).forEach(function (k) { row("param " + k, pa[k], pb[k], false); });
    var ea = ra.environment || {}, eb = rb.environment || {};
    Object.keys(Object.assign({}, ea, eb)).forEach(function (k) { row("env " + k, ea[k], eb[k], false); });
    if (ra.rerun_of || rb.rerun_of) row("rerun of", ra.rerun_of, rb.rerun_of);
    document.getElementById("compare-what").textContent = tbody.querySelectorAll('tr[data-differs="1"]').length
      + " of " + tbody.rows.length + " facts differ (highlighted). `expegit compare " + String(ra.id) + " "
      + String(rb.id) + "` adds the code's diffstat and the output files that differ.";
    comparePackages(ea, eb);
  }

  /* Package differences, as `expegit compare` names them: packages.js maps each distinct list's blob id to
   * {name: version}; the two executions' environments name theirs by packages_blob / conda_blob. */
  function packageDiff(pa, pb) {
    var out = {added: [], removed: [], changed: []};
    Object.keys(Object.assign({}, pa, pb)).sort().forEach(function (name) {
      var inA = Object.prototype.hasOwnProperty.call(pa, name), inB = Object.prototype.hasOwnProperty.call(pb, name);
      if (inA && !inB) out.removed.push([name, pa[name]]);
      else if (inB && !inA) out.added.push([name, pb[name]]);
      else if (pa[name] !== pb[name]) out.changed.push([name, pa[name], pb[name]]);
    });
    return out;
  }

  function comparePackages(ea, eb) {
    var section = document.getElementById("compare-packages");
    var PKG = window.ORCHESTRA_PACKAGES || null;
    if (!section || !PKG || !PKG.lists) return;
    var groups = document.getElementById("compare-packages-groups");
    var notes = [];
    var shown = 0;
    [["packages_blob", "pip"], ["conda_blob", "conda"]].forEach(function (pair) {
      var ba = ea[pair[0]], bb = eb[pair[0]];
      if (!ba && !bb) return;
      shown += 1;
      if (ba === bb) { notes.push(pair[1] + ": the same packages (one list)"); return; }
      var la = ba ? PKG.lists[ba] : {}, lb = bb ? PKG.lists[bb] : {};
      if (!la || !lb) { notes.push(pair[1] + ": a list is not in this report; `expegit compare` reads it"); return; }
      var d = packageDiff(la, lb);
      notes.push(pair[1] + ": " + d.added.length + " added, " + d.removed.length + " removed, "
        + d.changed.length + " changed");
      [["added", d.added], ["removed", d.removed], ["changed", d.changed]].forEach(function (g) {
        if (!g[1].length) return;
        var box = el("div", "pkg-group");
        box.setAttribute("data-group", g[0]);
        box.setAttribute("data-kind", pair[1]);
        box.appendChild(el("h3", null, pair[1] + " packages " + g[0] + " (" + g[1].length + ")"));
        var ul = el("ul", "pkg-list mono");
        g[1].forEach(function (item) {
          var li = el("li", null, item.length === 3 ? item[0] + " " + item[1] + " \u2192 " + item[2]
            : item[0] + " " + item[1]);
          li.setAttribute("data-package", item[0]);
          ul.appendChild(li);
        });
        box.appendChild(ul);
        groups.appendChild(box);
      });
    });
    if (!shown) return;
    document.getElementById("compare-packages-what").textContent = notes.join("; ") + ".";
    section.hidden = false;
  }

  setupPlots();
  setupMetricPicker();
  setupCompare();
  setupTable();
  setupExecution();
})();
