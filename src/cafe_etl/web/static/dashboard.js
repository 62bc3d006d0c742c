// cafe-etl dashboard: every element with data-api is filled from the JSON API.
// Charts are drawn with the bundled Apache ECharts; tables and figures with plain DOM
// (text only, never HTML from data). Each element ends with data-state ready, empty or
// error, so a reader (or a test) knows when the page is complete.
"use strict";

(function () {
  const money = new Intl.NumberFormat("en-GB", { style: "currency", currency: "GBP" });
  const whole = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 2 });
  const palette = ["#8c5a3c", "#d08c60", "#c9a66b", "#5b8e7d", "#3f6c8c", "#a7506b", "#7b6fa6", "#6f9b4f",
                   "#b86b3e", "#4f7f9b", "#999999"];
  const statusColours = { loaded: "#5b8e7d", failed: "#c0392b", skipped: "#c9a66b", replaced: "#7b6fa6",
                          loading: "#3f6c8c" };

  const state = { charts: {}, data: {} };
  window.cafeEtl = state;

  const filters = new URLSearchParams(window.location.search);
  filters.delete("token");
  const fetched = new Map();

  function apiUrl(el, extra) {
    const params = el.dataset.scope === "none" ? new URLSearchParams() : new URLSearchParams(filters);
    for (const [key, value] of Object.entries(extra || {})) {
      if (value === null || value === undefined || value === "") params.delete(key);
      else params.set(key, value);
    }
    const query = params.toString();
    return el.dataset.api + (query ? "?" + query : "");
  }

  function getJson(url) {
    if (!fetched.has(url)) {
      fetched.set(url, fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(async (response) => {
          const body = await response.json().catch(() => ({}));
          if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
          return body;
        }));
    }
    return fetched.get(url);
  }

  function say(el, message, kind) {
    el.dataset.state = kind;
    const note = document.createElement("p");
    note.className = kind === "error" ? "problem" : "empty";
    note.textContent = message;
    if (el.tagName === "TABLE") {
      el.querySelector("tbody").replaceChildren(row([note.textContent], el.querySelectorAll("th").length));
    } else {
      el.replaceChildren(note);
    }
  }

  function row(cells, span, numeric) {
    const tr = document.createElement("tr");
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      if (span) td.colSpan = span;
      td.textContent = value === null || value === undefined ? "–" : String(value);
      if (numeric && numeric[i]) td.className = "num";
      tr.append(td);
    });
    return tr;
  }

  function chart(el, option) {
    const instance = echarts.init(el, null, { renderer: "canvas" });
    instance.setOption(Object.assign({ color: palette, animation: false, textStyle: { fontFamily: "inherit" } },
                                     option));
    state.charts[el.dataset.chart] = instance;
    window.addEventListener("resize", () => instance.resize());
    return instance;
  }

  const tooltipAxis = { trigger: "axis", axisPointer: { type: "shadow" } };
  // A legend that wraps onto more lines rather than hiding names behind scroll arrows;
  // the plot starts below it (an estimate of its lines from the names' length).
  const wrappingLegend = { top: 0, type: "plain", itemGap: 12 };
  function legendRoom(names, el) {
    const width = Math.max(200, el.clientWidth - 40);
    const used = names.reduce((sum, name) => sum + 40 + 7 * String(name).length, 0);
    return 16 + 22 * Math.ceil(used / width) + 20;
  }
  const grid = { left: 8, right: 24, top: 36, bottom: 8, containLabel: true };

  // The value axis is titled with the series' name (its unit): "Items sold", "Revenue (£)".
  function horizontalBars(el, labels, values, name, format) {
    return chart(el, {
      tooltip: tooltipAxis, grid: Object.assign({}, grid, { bottom: 28 }),
      xAxis: { type: "value", name, nameLocation: "middle", nameGap: 26, axisLabel: { formatter: format } },
      yAxis: { type: "category", data: labels, inverse: true, axisLabel: { width: 220, overflow: "truncate" } },
      series: [{ type: "bar", name, data: values }],
    });
  }

  // Axis labels: short enough that neighbours never run into each other (£12K, not £12,000.00).
  const moneyCompact = new Intl.NumberFormat("en-GB", { style: "currency", currency: "GBP", notation: "compact",
                                                        maximumFractionDigits: 1 });
  const moneyAxis = (v) => moneyCompact.format(v);
  const productLabel = (p) => [p.size, p.name, p.flavour].filter((part) => part).join(" ");
  const pairLabel = (p) => `${productLabel(p.a)} + ${productLabel(p.b)}`;
  // A q-value below what a double holds is 0 in the API: say so rather than print 0.
  const qText = (q) => (q === 0 ? "< 1e-300" : q.toPrecision(2));
  const pct = (v) => `${v > 0 ? "+" : v < 0 ? "−" : "±"}${Math.abs(v).toFixed(1)}%`;

  const SVG = "http://www.w3.org/2000/svg";

  // A small line of a mover's daily counts, the judged week shaded (text-free: no data as markup).
  function sparkline(values, judged) {
    const width = 160, height = 32, pad = 2;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("class", "sparkline");
    svg.setAttribute("role", "img");
    const max = Math.max(1, ...values);
    const x = (i) => pad + (i * (width - 2 * pad)) / Math.max(1, values.length - 1);
    const y = (v) => height - pad - (v * (height - 2 * pad)) / max;
    const band = document.createElementNS(SVG, "rect");
    band.setAttribute("x", x(values.length - judged));
    band.setAttribute("y", 0);
    band.setAttribute("width", width - pad - x(values.length - judged));
    band.setAttribute("height", height);
    band.setAttribute("class", "judged");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
    const title = document.createElementNS(SVG, "title");
    title.textContent = `per day: ${values.join(", ")}`;
    svg.append(band, line, title);
    return svg;
  }

  // Renderers: one per data-chart, data-table or data-render name --------------------------

  const charts = {
    "daily-revenue": (el, body) => {
      const daily = body.data.length && "average_7d" in body.data[0];
      const series = [{ type: "bar", name: "Revenue", data: body.data.map((d) => d.revenue) }];
      if (daily) {
        series.push({ type: "line", name: "7-day average", data: body.data.map((d) => d.average_7d), smooth: true,
                      symbol: "none", lineStyle: { width: 3 } });
      }
      return chart(el, {
        tooltip: { trigger: "axis" }, legend: { top: 0 }, grid,
        xAxis: { type: "category", data: body.data.map((d) => d.date) },
        yAxis: { type: "value", name: "Revenue (£)", axisLabel: { formatter: moneyAxis } },
        series,
      });
    },
    "top-quantity": (el, body) => horizontalBars(el, body.data.top_by_quantity.map((p) => p.product),
      body.data.top_by_quantity.map((p) => p.quantity), "Items sold"),
    "top-revenue": (el, body) => horizontalBars(el, body.data.top_by_revenue.map((p) => p.product),
      body.data.top_by_revenue.map((p) => p.revenue), "Revenue (£)", moneyAxis),
    "bottom-quantity": (el, body) => horizontalBars(el, body.data.bottom_by_quantity.map((p) => p.product),
      body.data.bottom_by_quantity.map((p) => p.quantity), "Items sold"),
    sizes: (el, body) => chart(el, {
      tooltip: { trigger: "item", formatter: (p) => `${p.name}: ${whole.format(p.value)} items (${p.percent}%)` },
      legend: { bottom: 0, type: "plain" },
      series: [{ type: "pie", radius: ["32%", "58%"], center: ["50%", "46%"], name: "Items sold",
                 label: { formatter: "{b} {d}%", overflow: "none" }, labelLine: { length: 8, length2: 8 },
                 data: body.data.map((s) => ({ name: s.size || "(no size)", value: s.quantity })) }],
    }),
    categories: (el, body) => chart(el, {
      tooltip: Object.assign({}, tooltipAxis, { formatter: (items) => {
        const c = body.data[items[0].dataIndex];
        return `${c.category}: ${money.format(c.revenue)} (${c.revenue_share_pct}% of revenue), ` +
               `${whole.format(c.quantity)} items`;
      } }),
      grid: Object.assign({}, grid, { bottom: 28 }),
      xAxis: { type: "value", name: "Revenue (£)", nameLocation: "middle", nameGap: 26,
               axisLabel: { formatter: moneyAxis } },
      yAxis: { type: "category", inverse: true, data: body.data.map((c) => c.category),
               axisLabel: { width: 160, overflow: "truncate" } },
      series: [{ type: "bar", name: "Revenue", data: body.data.map((c) => c.revenue),
                 label: { show: true, position: "right", formatter: (p) => `${body.data[p.dataIndex].revenue_share_pct}%` } }],
    }),
    flavours: (el, body) => horizontalBars(el, body.data.map((f) => f.flavour), body.data.map((f) => f.quantity),
      "Items sold"),
    mix: (el, body) => chart(el, {
      tooltip: tooltipAxis, legend: wrappingLegend,
      grid: Object.assign({}, grid, { top: legendRoom(body.data.categories, el), bottom: 28 }),
      xAxis: { type: "value", name: "Items sold", nameLocation: "middle", nameGap: 26 },
      yAxis: { type: "category", inverse: true, data: body.data.branches.map((b) => b.branch),
               axisLabel: { width: 200, overflow: "truncate" } },
      series: body.data.categories.map((category, i) => ({
        type: "bar", stack: "mix", name: category, data: body.data.branches.map((b) => b.quantities[i]),
      })),
    }),
    ranking: (el, body) => horizontalBars(el, body.data.slice(0, 25).map((b) => b.branch),
      body.data.slice(0, 25).map((b) => b.revenue), "Revenue (£)", moneyAxis),
    "branch-trend": (el, body) => chart(el, {
      tooltip: { trigger: "axis" }, legend: wrappingLegend,
      grid: Object.assign({}, grid, { top: legendRoom(body.data.series.map((s) => s.branch), el) }),
      xAxis: { type: "category", data: body.data.dates },
      yAxis: { type: "value", name: "Revenue (£)", axisLabel: { formatter: moneyAxis } },
      series: body.data.series.map((s) => ({ type: "line", name: s.branch, data: s.revenue, symbol: "none" })),
    }),
    heatmap: (el, body) => {
      const cells = body.data.cells;
      const hours = [...new Set(cells.map((c) => c.hour))].sort((a, b) => a - b);
      const max = Math.max(1, ...cells.map((c) => c.transactions));
      return chart(el, {
        tooltip: { position: "top" }, grid: Object.assign({}, grid, { bottom: 56 }),
        xAxis: { type: "category", data: hours.map((h) => `${String(h).padStart(2, "0")}:00`), splitArea: { show: true } },
        yAxis: { type: "category", data: body.data.weekdays, inverse: true, splitArea: { show: true } },
        visualMap: { min: 0, max, calculable: true, orient: "horizontal", left: "center", bottom: 0,
                     inRange: { color: ["#fbf3ea", "#d08c60", "#6b3a1e"] } },
        series: [{ type: "heatmap", name: "Transactions",
                   data: cells.map((c) => [hours.indexOf(c.hour), c.weekday - 1, c.transactions]) }],
      });
    },
    hours: (el, body) => chart(el, {
      tooltip: tooltipAxis, legend: { top: 0 }, grid,
      xAxis: { type: "category", data: body.data.map((h) => `${String(h.hour).padStart(2, "0")}:00`) },
      yAxis: [{ type: "value", name: "Revenue (£)", axisLabel: { formatter: moneyAxis } },
              { type: "value", name: "Transactions", splitLine: { show: false } }],
      series: [
        { type: "bar", name: "Revenue", data: body.data.map((h) => h.revenue) },
        { type: "line", name: "Transactions", yAxisIndex: 1, data: body.data.map((h) => h.transactions) },
      ],
    }),
    weekly: (el, body) => chart(el, {
      tooltip: tooltipAxis, legend: { top: 0 }, grid,
      xAxis: { type: "category", name: "Week from", nameLocation: "middle", nameGap: 28,
               data: body.data.map((w) => w.week) },
      yAxis: { type: "value", name: "Customers" },
      series: [
        { type: "bar", stack: "c", name: "Returning", data: body.data.map((w) => w.returning) },
        { type: "bar", stack: "c", name: "New", data: body.data.map((w) => w.new) },
      ],
    }),
    repeat: (el, body) => chart(el, {
      tooltip: Object.assign({}, tooltipAxis, { formatter: (items) => {
        const b = body.data[items[0].dataIndex];
        return `${b.branch}<br>${b.repeat_rate_pct}%: ${whole.format(b.repeat_customers)} of ` +
               `${whole.format(b.customers)} customers bought here on 2+ days`;
      } }),
      grid,
      xAxis: { type: "value", name: "Repeat rate %", nameLocation: "middle", nameGap: 24, max: 100,
               axisLabel: { formatter: (v) => `${v}%` } },
      yAxis: { type: "category", data: body.data.slice(0, 25).map((b) => b.branch), inverse: true,
               axisLabel: { width: 220, overflow: "truncate" } },
      series: [{ type: "bar", name: "Repeat rate %", data: body.data.slice(0, 25).map((b) => b.repeat_rate_pct) }],
    }),
    segments: (el, body) => chart(el, {
      tooltip: Object.assign({}, tooltipAxis, { formatter: (items) => {
        const s = body.data.segments[items[0].dataIndex];
        return `${s.segment}: ${whole.format(s.customers)} customers, ${whole.format(s.sales)} sales, ` +
               `${money.format(s.revenue)}<br>${s.meaning}`;
      } }),
      legend: { top: 0 }, grid: Object.assign({}, grid, { top: 72, bottom: 32 }),
      xAxis: [{ type: "value", name: "Customers", position: "top", nameLocation: "middle", nameGap: 24 },
              { type: "value", name: "Revenue", position: "bottom", nameLocation: "middle", nameGap: 28,
                axisLabel: { formatter: moneyAxis } }],
      yAxis: { type: "category", inverse: true, data: body.data.segments.map((s) => s.segment),
               axisLabel: { width: 160, overflow: "truncate" } },
      series: [
        { type: "bar", name: "Customers", data: body.data.segments.map((s) => s.customers) },
        { type: "bar", name: "Revenue", xAxisIndex: 1, data: body.data.segments.map((s) => s.revenue) },
      ],
    }),
    frequency: (el, body) => chart(el, {
      tooltip: tooltipAxis, grid,
      xAxis: { type: "category", name: "Sales in the period", nameLocation: "middle", nameGap: 28,
               data: body.data.frequency.map((f) => f.sales) },
      yAxis: { type: "value", name: "Customers" },
      series: [{ type: "bar", name: "Customers", data: body.data.frequency.map((f) => f.customers) }],
    }),
    cohorts: (el, body) => {
      const weeks = Math.max(1, ...body.data.map((c) => c.retention.length));
      const cells = [];
      body.data.forEach((c, y) => c.retention.forEach((share, x) => cells.push([x, y, Math.round(share * 1000) / 10])));
      return chart(el, {
        tooltip: { position: "top", formatter: (p) => {
          const c = body.data[p.value[1]];
          return `Customers first seen the week of ${c.week} (${whole.format(c.customers)}):<br>` +
                 `${p.value[2]}% bought again in week +${p.value[0]}`;
        } },
        grid: Object.assign({}, grid, { right: 96, bottom: 32 }),
        xAxis: { type: "category", name: "Weeks after the first", nameLocation: "middle", nameGap: 24,
                 data: [...Array(weeks).keys()].map((k) => `+${k}`), splitArea: { show: true } },
        yAxis: { type: "category", name: "First week", inverse: true, splitArea: { show: true },
                 data: body.data.map((c) => `${c.week} (${whole.format(c.customers)})`) },
        visualMap: { min: 0, max: 100, calculable: true, orient: "vertical", right: 0, top: "middle",
                     formatter: (v) => `${Math.round(v)}%`, inRange: { color: ["#fbf3ea", "#d08c60", "#6b3a1e"] } },
        series: [{ type: "heatmap", name: "Retention %", data: cells, label: { show: weeks <= 8,
                   formatter: (p) => `${p.value[2]}%` } }],
      });
    },
    "payment-split": (el, body) => chart(el, {
      tooltip: { trigger: "item", formatter: (p) => {
        const m = body.data[p.dataIndex];
        return `${m.method}: ${whole.format(m.transactions)} transactions (${m.transactions_share_pct}%), ` +
               `${money.format(m.revenue)} (${m.revenue_share_pct}%)`;
      } },
      legend: { bottom: 0 },
      series: [{ type: "pie", radius: ["32%", "58%"], center: ["50%", "46%"], name: "Transactions",
                 label: { formatter: "{b} {d}%", overflow: "none" },
                 data: body.data.map((m) => ({ name: m.method, value: m.transactions })) }],
    }),
    "payments-over-time": (el, body) => chart(el, {
      tooltip: tooltipAxis, legend: { top: 0 }, grid,
      xAxis: { type: "category", data: body.data.dates },
      yAxis: { type: "value", name: "Transactions" },
      series: body.data.methods.map((m) => ({ type: "bar", stack: "methods", name: m.method, data: m.transactions })),
    }),
    "card-share": (el, body) => {
      const rows = body.data.slice(0, 25);
      return chart(el, {
        tooltip: Object.assign({}, tooltipAxis, { formatter: (items) => {
          const b = rows[items[0].dataIndex];
          return `${b.branch}: ${b.card_share_pct}% of ${whole.format(b.transactions)} transactions by card`;
        } }),
        grid: Object.assign({}, grid, { bottom: 28 }),
        xAxis: { type: "value", name: "Card share of transactions (%)", nameLocation: "middle", nameGap: 26, max: 100 },
        yAxis: { type: "category", inverse: true, data: rows.map((b) => b.branch),
                 axisLabel: { width: 200, overflow: "truncate" } },
        series: [{ type: "bar", name: "Card share %", data: rows.map((b) => b.card_share_pct) }],
      });
    },
    anomalies: (el, body) => {
      const days = body.data;
      const label = (a) => `${a.date.slice(5)} ${a.branch}`;
      return chart(el, {
        tooltip: Object.assign({}, tooltipAxis, { formatter: (items) => {
          const a = days[items[0].dataIndex];
          return `${a.branch}, ${a.date} (${a.kind})<br>revenue ${money.format(a.revenue)}<br>` +
                 `expected ${money.format(a.expected)} (${money.format(a.expected_low)} – ` +
                 `${money.format(a.expected_high)})`;
        } }),
        legend: { top: 0 }, grid: Object.assign({}, grid, { top: 40, bottom: 32 }),
        xAxis: { type: "value", name: "Revenue (£)", nameLocation: "middle", nameGap: 26,
                 axisLabel: { formatter: moneyAxis } },
        yAxis: { type: "category", inverse: true, data: days.map(label), axisLabel: { width: 200, overflow: "truncate" } },
        series: [
          { type: "bar", stack: "range", silent: true, itemStyle: { color: "transparent" },
            data: days.map((a) => a.expected_low) },
          { type: "bar", stack: "range", name: "Expected range", itemStyle: { color: "#e8d5c0" }, barWidth: "50%",
            data: days.map((a) => Math.round((a.expected_high - a.expected_low) * 100) / 100) },
          { type: "scatter", name: "Expected", symbol: "diamond", symbolSize: 10, color: "#8c5a3c",
            data: days.map((a) => a.expected) },
          { type: "scatter", name: "Revenue", symbolSize: 12, color: "#c0392b", data: days.map((a) => a.revenue) },
        ],
      });
    },
    pairs: (el, body) => {
      const pairs = body.data.pairs.slice(0, 15);
      return chart(el, {
        tooltip: Object.assign({}, tooltipAxis, { formatter: (items) => {
          const p = pairs[items[0].dataIndex];
          return `${pairLabel(p)}<br>lift ${decimal.format(p.lift)}, ${whole.format(p.baskets)} sales with both<br>` +
                 `${(100 * p.confidence_ab).toFixed(1)}% of ${productLabel(p.a)} sales hold ${productLabel(p.b)}`;
        } }),
        grid: Object.assign({}, grid, { bottom: 32 }),
        xAxis: { type: "value", name: "Lift (1 = unrelated)", nameLocation: "middle", nameGap: 26 },
        yAxis: { type: "category", inverse: true, data: pairs.map(pairLabel),
                 axisLabel: { width: 360, overflow: "truncate" } },
        series: [{ type: "bar", name: "Lift", data: pairs.map((p) => p.lift),
                   markLine: { silent: true, symbol: "none", data: [{ xAxis: 1 }], lineStyle: { color: "#999" } } }],
      });
    },
    files: (el, body) => {
      const statuses = ["loaded", "failed", "skipped", "replaced", "loading"]
        .filter((s) => body.data.some((d) => d[s]));
      return chart(el, {
        tooltip: tooltipAxis, legend: { top: 0 }, grid,
        xAxis: { type: "category", data: body.data.map((d) => d.date) },
        yAxis: { type: "value", name: "Files", minInterval: 1 },
        series: statuses.map((s) => ({ type: "bar", stack: "files", name: s, color: statusColours[s],
                                       data: body.data.map((d) => d[s] || 0) })),
      });
    },
    runs: (el, body) => chart(el, {
      tooltip: tooltipAxis, grid,
      xAxis: { type: "category", name: "Run", nameLocation: "middle", nameGap: 26,
               data: body.data.map((r) => `#${r.run_id}`) },
      yAxis: { type: "value", name: "Rows per second" },
      series: [{ type: "bar", name: "Rows per second", data: body.data.map((r) => r.rows_per_second || 0) }],
    }),
    rejects: (el, body) => {
      const reasons = Object.keys(body.data.by_reason).sort();
      const instance = chart(el, {
        tooltip: tooltipAxis, legend: wrappingLegend, grid: Object.assign({}, grid, { top: legendRoom(reasons, el) }),
        xAxis: { type: "category", data: body.data.days.map((d) => d.date) },
        yAxis: { type: "value", name: "Rows rejected", minInterval: 1 },
        series: reasons.map((r) => ({ type: "bar", stack: "rejects", name: r,
                                      data: body.data.days.map((d) => d.reasons[r] || 0) })),
      });
      instance.on("click", (event) => showRejectRows(event.seriesName));
      return instance;
    },
  };

  const tables = {
    ranking: (body) => body.data.map((b) => [b.rank, b.branch, money.format(b.revenue),
                                             whole.format(b.transactions), money.format(b.average_basket)]),
    "best-sellers": (body) => body.data.map((b) => [b.branch, b.product, whole.format(b.quantity),
                                                    money.format(b.revenue)]),
    "peak-hours": (body) => body.data.map((b) => [b.branch, `${String(b.peak_hour).padStart(2, "0")}:00`,
                                                  whole.format(b.transactions), `${b.share_pct}%`]),
    "reject-rows": (body) => body.data.map((r) => [r.file_id, r.location, r.row, r.reason, r.detail, r.row_data]),
    failed: (body) => body.data.map((f) => [f.file_id, f.location, f.business_date, f.processed_at, f.error]),
    "payment-split": (body) => body.data.map((m) => [m.method, whole.format(m.transactions),
                                                     `${m.transactions_share_pct}%`, money.format(m.revenue),
                                                     `${m.revenue_share_pct}%`]),
    anomalies: (body) => body.data.map((a) => [a.date, a.branch, a.kind, money.format(a.revenue),
                                               money.format(a.expected),
                                               `${money.format(a.expected_low)} – ${money.format(a.expected_high)}`]),
    "suspect-days": (body) => body.data.map((a) => [a.date, a.branch, a.kind, money.format(a.revenue),
                                                    money.format(a.expected)]),
    pairs: (body) => body.data.pairs.map((p) => [productLabel(p.a), productLabel(p.b), whole.format(p.baskets),
                                                 `${(100 * p.support).toFixed(2)}%`,
                                                 `${(100 * p.confidence_ab).toFixed(1)}%`,
                                                 `${(100 * p.confidence_ba).toFixed(1)}%`, decimal.format(p.lift),
                                                 qText(p.q_value)]),
  };

  function changeText(change) {
    if (change === null || change === undefined) return ["no earlier period", "flat"];
    const sign = change > 0 ? "+" : change < 0 ? "−" : "±";
    return [`${sign}${Math.abs(change).toFixed(1)}% vs previous`, change > 0 ? "up" : change < 0 ? "down" : "flat"];
  }

  function duration(seconds) {
    const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min ${Math.floor(seconds % 60)} s`;
  }

  function setFigure(el, key, text, change) {
    const tile = el.querySelector(`[data-figure="${key}"]`);
    tile.querySelector(".value").textContent = text;
    const changeEl = tile.querySelector(".change");
    if (changeEl && change !== undefined) {
      const [label, direction] = changeText(change);
      changeEl.textContent = label;
      changeEl.dataset.direction = direction;
    }
  }

  const renders = {
    "case-variants": (el, body) => {
      const groups = body.data || [];
      const describe = (n) => `“${n.name}” (${Object.entries(n.prices).map(([size, price]) =>
        `${size ? size + " " : ""}${money.format(price)}`).join(", ")})`;
      el.textContent = groups.length
        ? "Names that differ only by case are kept as different products, as the tills price them differently: " +
          groups.map((g) => g.names.map(describe).join(" and ")).join("; ") + "."
        : "";
      el.hidden = !groups.length;
    },
    "goes-with-picker": async (el, body) => {
      const select = el.querySelector("select");
      const seen = new Map();
      for (const p of [...body.data.top_by_revenue, ...body.data.top_by_quantity]) seen.set(p.product, p);
      select.replaceChildren(...[...seen.values()].map((p) => {
        const option = document.createElement("option");
        option.value = p.product;
        option.textContent = p.product;
        return option;
      }));
      const table = document.querySelector('[data-role="goes-with"]');
      const show = async () => {
        const p = seen.get(select.value);
        if (!p) return;
        const params = new URLSearchParams(filters);
        params.set("name", p.name);
        params.set("size", p.size || "");
        params.set("flavour", p.flavour || "");
        table.dataset.state = "loading";
        try {
          const answer = await getJson(`/api/together/with?${params}`);
          const rows = answer.data.map((g) => row([productLabel(g.product), whole.format(g.baskets),
            `${(100 * g.confidence).toFixed(1)}%`, decimal.format(g.lift), qText(g.q_value)], 0,
            [false, true, true, true, true]));
          if (!rows.length) rows.push(row([`Nothing bought with ${p.product} 30 times or more in this period.`], 5));
          table.querySelector("tbody").replaceChildren(...rows);
          table.dataset.state = "ready";
        } catch (error) {
          say(table, `Could not load: ${error.message}`, "error");
        }
      };
      select.addEventListener("change", show);
      await show();
    },
    movers: (el, body) => {
      const found = body.data ? body.data.movers : [];
      const rows = found.map((m) => {
        const tr = row([m.kind, m.kind === "branch" ? m.branch : productLabel(m), "", whole.format(m.current),
                        decimal.format(m.baseline), pct(m.change_pct), qText(m.q_value)], 0,
                       [false, false, false, true, true, true, true]);
        tr.children[2].append(sparkline(m.daily, 7));
        tr.children[5].dataset.direction = m.change_pct > 0 ? "up" : "down";
        return tr;
      });
      if (!rows.length) {
        const week = body.week || {};
        rows.push(row([week.baseline_weeks === 0 ? "No weeks before this one to compare with."
          : "No branch or product changed beyond the threshold this week."], 7));
      }
      el.querySelector("tbody").replaceChildren(...rows);
    },
    "customer-counts": (el, body) => {
      const c = body.data || { distinct: 0, new: 0, returning: 0, repeat: 0 };
      for (const key of ["distinct", "new", "returning", "repeat"]) setFigure(el, key, whole.format(c[key]));
      setFigure(el, "repeat_share", c.distinct ? `${(100 * c.repeat / c.distinct).toFixed(1)}%` : "–");
    },
    "segment-lists": (el, body) => {
      const rows = (body.data ? body.data.segments : []).map((s) => {
        const tr = row([s.segment, whole.format(s.customers), whole.format(s.sales), money.format(s.revenue),
                        s.meaning, ""], 0, [false, true, true, true, false, false]);
        const link = document.createElement("a");
        const params = new URLSearchParams(filters);
        params.set("segment", s.segment);
        link.href = `/api/customers/list?${params}`;
        link.textContent = "CSV";
        link.setAttribute("download", "");
        link.dataset.segment = s.segment;
        tr.lastChild.append(link);
        return tr;
      });
      el.querySelector("tbody").replaceChildren(...rows);
    },
    figures: (el, body) => {
      const f = body.data.figures;
      setFigure(el, "revenue", money.format(f.revenue.value), f.revenue.change_pct);
      setFigure(el, "transactions", whole.format(f.transactions.value), f.transactions.change_pct);
      setFigure(el, "items", whole.format(f.items.value), f.items.change_pct);
      setFigure(el, "average_basket_value", f.average_basket_value.value === null ? "–"
        : money.format(f.average_basket_value.value), f.average_basket_value.change_pct);
      setFigure(el, "average_basket_size", f.average_basket_size.value === null ? "–"
        : decimal.format(f.average_basket_size.value), f.average_basket_size.change_pct);
    },
    service: (el, body) => {
      const s = body.data;
      setFigure(el, "last_success", s.last_success ? s.last_success.replace("T", " ") : "never");
      setFigure(el, "loaded", whole.format(s.files.loaded || 0));
      setFigure(el, "failed", whole.format(s.files.failed || 0));
      setFigure(el, "uptime", duration(s.uptime_seconds));
      setFigure(el, "version", s.version);
    },
    arrivals: (el, body) => {
      const a = body.data;
      const parts = [];
      const head = document.createElement("p");
      head.className = "arrivals-summary";
      head.textContent = a.latest_business_day
        ? `${a.latest_business_day}: ${a.delivered} of ${a.branches} branches delivered`
        : "No file loaded yet";
      parts.push(head);
      const list = (title, items) => {
        const h = document.createElement("h3");
        h.textContent = `${title} (${items.length})`;
        const ul = document.createElement("ul");
        ul.dataset.list = title.toLowerCase();
        items.slice(0, 50).forEach((text) => {
          const li = document.createElement("li");
          li.textContent = text;
          ul.append(li);
        });
        if (items.length > 50) {
          const li = document.createElement("li");
          li.textContent = `… and ${items.length - 50} more`;
          ul.append(li);
        }
        parts.push(h, ul);
      };
      list("Late", a.late);
      list("Missing", a.missing.map((m) => `${m.date} · ${m.branch}`));
      el.replaceChildren(...parts);
    },
  };

  function isEmpty(body) {
    const data = body.data;
    if (data === null || data === undefined) return true;
    if (Array.isArray(data)) return data.length === 0 || data.every((row) => row.retention && !row.retention.length);
    if (data.cells) return data.cells.length === 0;
    if (data.series) return data.series.length === 0;
    if (data.branches && Array.isArray(data.branches)) return data.branches.length === 0;
    if (data.pairs) return data.pairs.length === 0;
    if (data.methods) return data.methods.length === 0;
    if (data.days) return data.days.length === 0 && Object.keys(data.by_reason).length === 0;
    return false;
  }

  async function fill(el, extra) {
    el.dataset.state = "loading";
    try {
      const body = await getJson(apiUrl(el, extra));
      const name = el.dataset.chart || el.dataset.table || el.dataset.render;
      state.data[name] = body;
      if (el.dataset.render) {
        await renders[el.dataset.render](el, body);
      } else if (isEmpty(body)) {
        say(el, el.dataset.empty || "Nothing in this period.", "empty");
        return;
      } else if (el.dataset.chart) {
        charts[el.dataset.chart](el, body);
      } else {
        const numeric = [...el.querySelectorAll("thead th")].map((th) => th.classList.contains("num"));
        el.querySelector("tbody").replaceChildren(...tables[el.dataset.table](body)
          .map((cells) => row(cells, 0, numeric)));
      }
      el.dataset.state = "ready";
      offerCsv(el, extra);
    } catch (error) {
      say(el, `Could not load: ${error.message}`, "error");
    }
  }

  // Every chart's and table's figures as CSV: the same endpoint, the same filters.
  function offerCsv(el, extra) {
    if (!el.dataset.chart && !el.dataset.table && el.tagName !== "TABLE") return;
    const heading = el.closest("section") && el.closest("section").querySelector("h2");
    if (!heading || heading.querySelector("a.csv")) return;
    const link = document.createElement("a");
    link.className = "csv";
    link.href = apiUrl(el, Object.assign({}, extra, { format: "csv" }));
    link.textContent = "CSV";
    link.title = "Download this chart's figures";
    link.setAttribute("download", "");
    heading.append(link);
  }

  function showRejectRows(reason) {
    const table = document.querySelector('[data-table="reject-rows"]');
    if (!table) return;
    document.querySelector('[data-role="reject-filter"]').textContent = reason || "all reasons";
    fill(table, { reason });
    table.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }
  state.showRejectRows = showRejectRows;

  // Branch select applies at once; dates wait for the Apply button.
  const form = document.getElementById("filters");
  if (form) {
    for (const select of form.querySelectorAll("select[name=branch], select[name=grain]")) {
      select.addEventListener("change", () => form.requestSubmit());
    }
    form.addEventListener("submit", () => {
      for (const input of form.querySelectorAll("input, select")) if (!input.value) input.disabled = true;
    });
  }

  document.querySelectorAll("[data-api]").forEach((el) => fill(el));
})();
