// microfactory operator UI: log in, shop floor (live tiles), orders, batch record, traceability.
import { api, all, ApiError, followMachines, getSession, login, may, setSession } from "./api.js";
import { barsChart, hbarChart, PALETTE, timeChart } from "./charts.js";

const view = document.getElementById("view");
let leave = () => {}; // clean-up of the current page (timers, live stream)

// ------------------------------------------------------------------ small helpers
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    // through the CSSOM: the Content-Security-Policy refuses style="…" attributes
    else if (k === "style") node.style.cssText = String(v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function say(text, kind = "ok") {
  const box = document.getElementById("messages");
  const m = h("div", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  box.append(m);
  setTimeout(() => m.remove(), kind === "error" ? 12000 : 5000);
}

function sayError(err) {
  say(err instanceof ApiError ? err.message : String(err), "error");
}

const num = (v, d = 0) =>
  v === null || v === undefined ? "—" : Number(v).toLocaleString(undefined, { maximumFractionDigits: d, minimumFractionDigits: d });

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ${m % 60} min`;
  return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
}

function power(w) {
  if (w === null || w === undefined) return "—";
  return w >= 1000 ? `${num(w / 1000, 2)} kW` : `${num(w, 0)} W`;
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const shortTime = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "—");

function progressBar(good, scrap, target) {
  const t = Math.max(target || 0, good + scrap, 1);
  return h(
    "div",
    { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": target, "aria-valuenow": good },
    h("span", { class: "good", style: `width:${(100 * good) / t}%` }),
    h("span", { class: "bad", style: `width:${(100 * scrap) / t}%` }),
  );
}

// ------------------------------------------------------------------ dialog
const dialog = document.getElementById("dialog");
const dialogForm = document.getElementById("dialog-form");
const dialogBody = document.getElementById("dialog-body");
const dialogError = document.getElementById("dialog-error");
let dialogSubmit = null;

/** A form in a modal; onSubmit(form) may throw ApiError: shown in the dialog, which stays. */
function openDialog(title, fields, onSubmit, okText = "Save") {
  document.getElementById("dialog-title").textContent = title;
  dialogBody.replaceChildren(...[fields].flat(Infinity));
  dialogError.hidden = true;
  document.getElementById("dialog-ok").textContent = okText;
  document.getElementById("dialog-ok").disabled = false;
  dialogSubmit = onSubmit;
  dialog.showModal();
  const first = dialogBody.querySelector("[autofocus], input, select");
  if (first) first.focus();
}

function closeDialog() {
  dialogSubmit = null;
  if (dialog.open) dialog.close();
}

dialogForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!dialogSubmit) return closeDialog();
  const ok = document.getElementById("dialog-ok");
  ok.disabled = true;
  dialogError.hidden = true;
  try {
    const message = await dialogSubmit(dialogForm);
    closeDialog();
    if (message) say(message);
  } catch (err) {
    dialogError.textContent = err instanceof ApiError ? err.message : String(err);
    dialogError.hidden = false;
  } finally {
    ok.disabled = false;
  }
});
document.getElementById("dialog-cancel").addEventListener("click", closeDialog);

function field(label, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return [h("label", { for: id }, label), input];
}

function confirmAction(title, text, okText, action) {
  openDialog(title, h("p", {}, text), action, okText);
}

// ------------------------------------------------------------------ routing
const routes = [
  [/^#\/login$/, pageLogin],
  [/^#\/floor$/, pageFloor],
  [/^#\/orders$/, pageOrders],
  [/^#\/batch\/(\d+)$/, pageBatch],
  [/^#\/trace(?:\/(.+))?$/, pageTrace],
];

function route() {
  leave();
  leave = () => {};
  closeDialog();
  const session = getSession();
  let hash = location.hash || "#/floor";
  if (!session && hash !== "#/login") {
    sessionStorage.setItem("microfactory.next", hash);
    hash = "#/login";
    history.replaceState(null, "", hash);
  }
  document.getElementById("topbar").hidden = !session;
  if (session) {
    document.getElementById("who").textContent = `${session.username} · ${session.role}`;
  }
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (hash.startsWith(`#/${a.dataset.nav}`)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [re, page] of routes) {
    const m = hash.match(re);
    if (m) {
      view.replaceChildren();
      Promise.resolve(page(...m.slice(1))).catch(sayError);
      return;
    }
  }
  location.hash = "#/floor";
}

window.addEventListener("hashchange", route);
window.addEventListener("mf:logout", (ev) => {
  say(ev.detail, "error");
  location.hash = "#/login";
  route();
});
document.getElementById("logout").addEventListener("click", () => {
  setSession(null);
  location.hash = "#/login";
});

// ------------------------------------------------------------------ login
async function pageLogin() {
  document.title = "microfactory — log in";
  const info = await fetch("info.json").then((r) => r.json()).catch(() => ({}));
  const user = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const form = h(
    "form",
    { class: "login", id: "login-form" },
    h("h1", {}, "microfactory"),
    h("p", { class: "muted" }, `Site ${info.site || ""} — log in to see the shop floor.`),
    field("User", user),
    field("Password", pass),
    error,
    h("button", { type: "submit" }, "Log in"),
    info.demo
      ? h("p", { class: "muted" }, "Demo users: operator / operator, manager / manager, admin / admin.")
      : null,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    try {
      await login(user.value.trim(), pass.value);
      const next = sessionStorage.getItem("microfactory.next") || "#/floor";
      sessionStorage.removeItem("microfactory.next");
      location.hash = next === "#/login" ? "#/floor" : next;
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });
  view.append(form);
  user.focus();
}

// ------------------------------------------------------------------ shop floor
function pageFloor() {
  document.title = "microfactory — shop floor";
  const grid = h("div", { class: "tiles", id: "tiles" });
  const updated = h("span", { class: "muted", id: "floor-updated" }, "waiting for live data…");
  view.append(
    h("div", { class: "floor-head" }, h("h1", {}, "Shop floor"), updated),
    grid,
    h(
      "p",
      { class: "muted" },
      "Power is the mean of the machine's last part cycle (that part's energy over its cycle time), " +
        "from the gateway's part events; energy per part is the mean of this batch's parts on the machine.",
    ),
  );
  const tiles = new Map();
  let latest = [];
  // machines whose clock runs ahead of this tablet (or a fast simulated workshop) report
  // events "from the future"; time in state is counted on the machines' clock then
  const clock = { skew: 0 };
  const liveBadge = document.getElementById("live");
  const live = followMachines(
    (machines) => {
      latest = machines;
      const newest = Math.max(0, ...machines.flatMap((m) => [m.state_since, m.last_part_at]).filter(Boolean).map(Date.parse));
      clock.skew = Math.max(0, newest - Date.now());
      for (const m of machines) {
        if (!tiles.has(m.id)) {
          const t = makeTile(m.id, () => latest.find((x) => x.id === m.id), clock);
          tiles.set(m.id, t);
          grid.append(t.root);
        }
        tiles.get(m.id).update(m);
      }
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
      grid.dataset.updates = String(Number(grid.dataset.updates || 0) + 1);
    },
    (status) => {
      liveBadge.dataset.live = status;
      liveBadge.hidden = status === "off";
      liveBadge.textContent = status === "on" ? "● live" : status === "off" ? "○ offline" : "◌ reconnecting…";
    },
  );
  const ticker = setInterval(() => {
    for (const t of tiles.values()) t.tick();
  }, 1000);
  leave = () => {
    live.stop();
    clearInterval(ticker);
  };
}

function makeTile(id, current, clock) {
  const q = {};
  const mk = (name, tag = "span", attrs = {}) => (q[name] = h(tag, { ...attrs, "data-field": name }));
  const actions = [];
  const act = (label, action, handler, cls = "") => {
    const b = h("button", { type: "button", class: cls, "data-action": action, onclick: () => handler(current()) }, label);
    actions.push([b, action]);
    return b;
  };
  const root = h(
    "section",
    { class: "tile", "data-machine": id, "aria-label": `machine ${id}` },
    h(
      "div",
      { class: "tile-head" },
      h("div", {}, mk("name", "h2"), mk("sub", "small")),
      h("div", {}, mk("state", "div", { class: "state" }), mk("since", "div", { class: "since" })),
    ),
    mk("job", "div", { class: "job" }),
    h("div", {}, mk("bar", "div"), h("div", { class: "counts" }, mk("counts"), mk("target"))),
    h(
      "div",
      { class: "metrics" },
      h("div", { class: "metric" }, mk("power", "div", { class: "v num" }), h("div", { class: "k" }, "power (Ø last cycle)")),
      h("div", { class: "metric" }, mk("wh", "div", { class: "v num" }), h("div", { class: "k" }, "energy per part, this batch")),
    ),
    mk("alert", "div", { class: "alert", hidden: true }),
    h(
      "div",
      { class: "actions" },
      act("Start batch", "run.start", startDialog, "ok"),
      act("Pause", "run.pause", (m) => runAction(m, "pause"), "warn"),
      act("Resume", "run.resume", (m) => runAction(m, "resume"), "ok"),
      act("Complete", "run.complete", completeDialog, "ghost"),
      act("Scrap", "scrap.record", scrapDialog, "danger"),
      act("Downtime", "downtime.record", downtimeDialog, "ghost"),
      act("Material", "material.consume", materialDialog, "ghost"),
    ),
  );
  let since = null;

  function tick() {
    q.since.textContent = since ? `for ${duration(Date.now() + clock.skew - since)}` : "";
  }

  function update(m) {
    const state = m.state || "unknown";
    root.dataset.state = state;
    q.name.textContent = m.name || m.id;
    q.sub.textContent = `${m.id} · ${m.kind.replace(/_/g, " ")}`;
    q.state.textContent = state;
    q.state.dataset.state = state;
    since = m.state_since ? Date.parse(m.state_since) : null;
    tick();
    const r = m.run;
    root.dataset.run = r ? String(r.run_id) : "";
    root.dataset.runStatus = r ? r.status : "";
    if (r) {
      q.job.replaceChildren(
        h("div", {}, h("a", { class: "lot", href: `#/batch/${r.batch_id}`, "data-field": "lot" }, r.lot_number), " ", r.status === "paused" ? h("span", { class: "chip paused" }, "paused") : null),
        h("div", {}, `Order ${r.order} · ${r.product}`),
        h("div", { "data-field": "operation" }, `Op ${r.operation_seq} · ${r.operation}`),
        h("div", { class: "muted" }, `operator ${r.operator || "—"} · since ${shortTime(r.started_at)}`),
      );
      q.bar.replaceChildren(progressBar(r.good, r.scrap, r.batch_quantity));
      q.counts.replaceChildren(
        h("span", {}, "good ", h("b", { class: "num", "data-field": "good" }, String(r.good))),
        " · scrap ",
        h("b", { class: "num", "data-field": "scrap" }, String(r.scrap)),
      );
      q.target.textContent = `target ${r.batch_quantity}`;
      q.wh.textContent = r.wh_per_part === null ? "—" : `${num(r.wh_per_part, 1)} Wh`;
    } else {
      const producing = m.ideal_cycle_time_s !== null;
      q.job.replaceChildren(h("div", { class: "muted" }, producing ? "No batch on this machine." : "Not a production machine: no batches run here."));
      q.bar.replaceChildren(progressBar(0, 0, 1));
      q.counts.textContent = "";
      q.target.textContent = "";
      q.wh.textContent = "—";
    }
    q.power.textContent = power(m.last_cycle_power_w);
    q.power.title = m.last_part_at ? `last part at ${when(m.last_part_at)}` : "no part yet";
    if (m.unassigned_downtime > 0) {
      q.alert.hidden = false;
      q.alert.replaceChildren(
        `${m.unassigned_downtime} stop${m.unassigned_downtime > 1 ? "s" : ""} without a reason`,
        may("downtime.reason") ? h("button", { type: "button", onclick: () => downtimeDialog(current()) }, "Give reason") : null,
      );
    } else {
      q.alert.hidden = true;
    }
    const status = r ? r.status : null;
    const producing = !!r || m.ideal_cycle_time_s !== null;
    const visible = {
      "run.start": !r && producing,
      "run.pause": status === "running",
      "run.resume": status === "paused",
      "run.complete": !!r,
      "scrap.record": !!r,
      "downtime.record": producing,
      "material.consume": !!r,
    };
    for (const [b, action] of actions) b.hidden = !(visible[action] && may(action));
  }

  return { root, update, tick };
}

async function runAction(m, action) {
  const r = m.run;
  try {
    await api("POST", `/runs/${r.run_id}/${action}`, {});
    say(`${r.lot_number} on ${m.id}: ${action === "pause" ? "paused" : "resumed"}.`);
  } catch (err) {
    sayError(err);
  }
}

function completeDialog(m) {
  const r = m.run;
  confirmAction(
    `Complete ${r.lot_number} on ${m.id}?`,
    `Operation ${r.operation_seq} · ${r.operation}: ${r.good} good, ${r.scrap} scrap of ${r.batch_quantity}. ` +
      "The machine is freed; the batch is done once its last operation is complete.",
    "Complete",
    async () => {
      const run = await api("POST", `/runs/${r.run_id}/complete`, {});
      return `${r.lot_number} on ${m.id}: run ${run.id} complete.`;
    },
  );
}

async function startDialog(m) {
  let choices = [];
  try {
    const [orders, products, planned, running] = await Promise.all([
      all("/orders"),
      all("/products"),
      all("/batches", { status: "planned" }),
      all("/batches", { status: "in_progress" }),
    ]);
    const orderById = new Map(orders.map((o) => [o.id, o]));
    const productById = new Map(products.map((p) => [p.id, p]));
    for (const b of [...running, ...planned]) {
      const o = orderById.get(b.order_id);
      if (!o || !["released", "in_progress"].includes(o.status)) continue;
      const p = productById.get(o.product_id);
      for (const op of (p ? p.operations : []).filter((x) => x.machine_kind === m.kind)) {
        choices.push({ b, o, p, op, priority: o.priority });
      }
    }
    choices.sort((a, b) => b.priority - a.priority || a.b.id - b.b.id || a.op.seq - b.op.seq);
  } catch (err) {
    return sayError(err);
  }
  if (!choices.length) {
    openDialog(
      `Start a batch on ${m.id}`,
      h("p", { class: "notice" }, `No released batch needs a ${m.kind.replace(/_/g, " ")}. A manager releases orders on the order board.`),
      async () => null,
      "Close",
    );
    return;
  }
  const select = h(
    "select",
    { name: "choice", id: "start-choice" },
    choices.map((c, i) =>
      h("option", { value: String(i) }, `${c.b.lot_number} — ${c.o.code} ${c.p.code} · op ${c.op.seq} ${c.op.name} (${c.b.quantity} pcs${c.o.customer ? ", " + c.o.customer : ""})`),
    ),
  );
  openDialog(
    `Start a batch on ${m.name || m.id}`,
    field("Batch and operation", select),
    async () => {
      const c = choices[Number(select.value)];
      await api("POST", `/batches/${c.b.id}/start`, { operation_id: c.op.id, machine_id: m.id });
      return `${c.b.lot_number} started on ${m.id} (op ${c.op.seq} ${c.op.name}).`;
    },
    "Start",
  );
}

async function reasonOptions(kind) {
  const reasons = await all("/reason-codes", { kind });
  return reasons
    .filter((r) => !["machine_reported", "unassigned"].includes(r.code))
    .map((r) => h("option", { value: r.code }, `${r.description} (${r.code})`));
}

async function scrapDialog(m) {
  const r = m.run;
  let options;
  try {
    options = await reasonOptions("scrap");
  } catch (err) {
    return sayError(err);
  }
  const qty = h("input", { type: "number", name: "quantity", min: 1, step: 1, value: 1, inputmode: "numeric", id: "scrap-quantity" });
  const reason = h("select", { name: "reason_code", id: "scrap-reason" }, options);
  const note = h("input", { name: "note", maxlength: 2000, id: "scrap-note" });
  openDialog(
    `Scrap on ${m.id} — ${r.lot_number}`,
    [field("Quantity", qty), field("Reason", reason), field("Note (optional)", note)],
    async () => {
      const body = { quantity: Number(qty.value), reason_code: reason.value };
      if (note.value.trim()) body.note = note.value.trim();
      await api("POST", `/runs/${r.run_id}/scrap`, body);
      return `${body.quantity} scrap recorded on ${r.lot_number} (${body.reason_code}).`;
    },
    "Record scrap",
  );
}

async function downtimeDialog(m) {
  let open;
  let options;
  try {
    [open, options] = await Promise.all([
      all("/downtime", { machine_id: m.id, reason_code: "unassigned" }, 200),
      reasonOptions("downtime"),
    ]);
  } catch (err) {
    return sayError(err);
  }
  const period = h(
    "select",
    { name: "period", id: "downtime-period" },
    open.map((d) =>
      h("option", { value: String(d.id) }, `${d.state || "stop"} from ${when(d.started_at)} ${d.ended_at ? "to " + shortTime(d.ended_at) : "(still down)"}`),
    ),
    h("option", { value: "new" }, "a stop the machine did not report…"),
  );
  const minutes = h("input", { type: "number", min: 1, max: 1440, value: 10, name: "minutes", id: "downtime-minutes" });
  const ongoing = h("input", { type: "checkbox", name: "ongoing", id: "downtime-ongoing" });
  const extra = h("div", { hidden: open.length > 0 }, field("Started how many minutes ago", minutes), h("label", { class: "inline" }, ongoing, "still down"));
  period.addEventListener("change", () => (extra.hidden = period.value !== "new"));
  const reason = h("select", { name: "reason_code", id: "downtime-reason" }, options);
  const note = h("input", { name: "note", maxlength: 2000, id: "downtime-note" });
  openDialog(
    `Downtime on ${m.name || m.id}`,
    [field("Which stop", period), extra, field("Reason", reason), field("Note (optional)", note)],
    async () => {
      const text = note.value.trim() || undefined;
      if (period.value === "new") {
        const now = Date.now();
        const body = {
          machine_id: m.id,
          started_at: new Date(now - Number(minutes.value) * 60000).toISOString(),
          ended_at: ongoing.checked ? null : new Date(now).toISOString(),
          reason_code: reason.value,
          note: text,
        };
        await api("POST", "/downtime", body);
        return `Downtime on ${m.id} recorded: ${reason.value}.`;
      }
      await api("POST", `/downtime/${period.value}/reason`, { reason_code: reason.value, note: text });
      return `Reason ${reason.value} given for the stop of ${m.id}.`;
    },
    "Save",
  );
}

function materialDialog(m) {
  const r = m.run;
  const lot = h("input", { name: "material_lot", id: "material-lot", autocomplete: "off", autofocus: true, placeholder: "scan or type the lot number", maxlength: 64 });
  const qty = h("input", { type: "number", name: "quantity", min: 0, step: "any", id: "material-quantity", required: true });
  const about = h("p", { class: "muted", id: "material-about" }, "");
  let unit = "";
  async function look() {
    const n = lot.value.trim();
    if (!n) return;
    try {
      const l = await api("GET", `/material-lots/${encodeURIComponent(n)}`);
      unit = l.unit;
      about.textContent = `${l.material}${l.supplier ? ", " + l.supplier : ""}: ${num(l.remaining_quantity, 2)} ${l.unit} left`;
    } catch (err) {
      about.textContent = err.message;
    }
  }
  lot.addEventListener("change", look);
  // a scanner types the code and presses Enter: go on to the quantity instead of submitting
  lot.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      look();
      qty.focus();
    }
  });
  openDialog(
    `Material into ${r.lot_number} on ${m.id}`,
    [field("Material lot", lot), about, field("Quantity", qty)],
    async () => {
      const n = lot.value.trim();
      const q = Number(qty.value);
      await api("POST", `/batches/${r.batch_id}/consume`, { material_lot: n, quantity: q, run_id: r.run_id });
      return `${num(q, 2)} ${unit} of ${n} booked into ${r.lot_number}.`;
    },
    "Book material",
  );
}

// ------------------------------------------------------------------ order board
async function pageOrders() {
  document.title = "microfactory — orders";
  const filter = h(
    "select",
    { id: "order-filter", "aria-label": "which orders" },
    h("option", { value: "open" }, "open orders"),
    h("option", { value: "all" }, "all orders"),
  );
  const body = h("tbody", { id: "orders" });
  const toolbar = h(
    "div",
    { class: "toolbar" },
    h("h1", {}, "Orders"),
    h("span", { class: "spacer" }),
    filter,
    h("button", { type: "button", class: "ghost", onclick: () => load() }, "Refresh"),
    may("order.create") ? h("button", { type: "button", id: "new-order", onclick: () => orderDialog(null, load) }, "New order") : null,
  );
  view.append(
    toolbar,
    h(
      "table",
      { class: "orders" },
      h("thead", {}, h("tr", {}, ["Order", "Customer", "Product", "Due", "Priority", "Status", "Progress", "Batches", ""].map((t) => h("th", {}, t)))),
      body,
    ),
  );
  filter.addEventListener("change", () => load());
  let products = new Map();

  async function load() {
    try {
      const [orders, prods] = await Promise.all([all("/orders"), all("/products")]);
      products = new Map(prods.map((p) => [p.id, p]));
      const shown = orders.filter((o) => filter.value === "all" || !["done", "cancelled"].includes(o.status));
      const progress = await Promise.all(shown.map((o) => api("GET", `/orders/${o.id}/progress`)));
      body.replaceChildren(...shown.map((o, i) => orderRow(o, progress[i], products.get(o.product_id), load)));
      if (!shown.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No orders.")));
    } catch (err) {
      sayError(err);
    }
  }
  await load();
  const timer = setInterval(() => {
    if (!dialog.open) load();
  }, 10000);
  leave = () => clearInterval(timer);
}

function dueCell(o) {
  if (!o.due_date) return h("td", { class: "muted" }, "—");
  const due = new Date(o.due_date);
  const late = due < new Date() && !["done", "cancelled"].includes(o.status);
  const days = Math.round((due - new Date()) / 86400000);
  return h(
    "td",
    { class: late ? "overdue" : "" },
    due.toLocaleDateString(),
    h("div", { class: "muted" }, late ? "overdue" : days === 0 ? "today" : days > 0 ? `in ${days} d` : `${-days} d ago`),
  );
}

function orderRow(o, p, product, reload) {
  const actions = h("div", { class: "actions" });
  const post = (path, message) => async () => {
    try {
      await api("POST", path);
      say(message);
      reload();
    } catch (err) {
      sayError(err);
    }
  };
  if (o.status === "planned" && may("order.release")) {
    actions.append(h("button", { type: "button", "data-action": "order.release", onclick: post(`/orders/${o.id}/release`, `${o.code} released to the shop floor.`) }, "Release"));
  }
  if (o.status === "planned" && may("order.edit")) {
    actions.append(h("button", { type: "button", class: "ghost", "data-action": "order.edit", onclick: () => orderDialog(o, reload) }, "Edit"));
  }
  if (["planned", "released"].includes(o.status) && may("order.cancel")) {
    actions.append(
      h(
        "button",
        {
          type: "button",
          class: "ghost",
          "data-action": "order.cancel",
          onclick: () => confirmAction(`Cancel ${o.code}?`, "The order and its planned batches are cancelled.", "Cancel order", async () => {
            await api("POST", `/orders/${o.id}/cancel`);
            reload();
            return `${o.code} cancelled.`;
          }),
        },
        "Cancel",
      ),
    );
  }
  return h(
    "tr",
    { "data-order": o.code, "data-status": o.status },
    h("td", {}, h("b", {}, o.code)),
    h("td", {}, o.customer || "—"),
    h("td", {}, product ? `${product.code}` : o.product_id, product ? h("div", { class: "muted" }, product.name) : null),
    dueCell(o),
    h("td", { class: "num" }, String(o.priority)),
    h("td", {}, h("span", { class: `chip ${o.status}`, "data-field": "status" }, o.status.replace("_", " "))),
    h(
      "td",
      {},
      progressBar(p.good, p.scrap, o.quantity),
      h("div", { class: "num" }, `${p.good} / ${o.quantity} good · ${p.scrap} scrap · ${num(p.percent, 0)} %`),
    ),
    h(
      "td",
      {},
      o.batches.map((b) => h("div", {}, h("a", { href: `#/batch/${b.id}` }, b.lot_number), " ", h("span", { class: `chip ${b.status}` }, b.status.replace("_", " ")))),
    ),
    h("td", {}, actions),
  );
}

async function orderDialog(o, reload) {
  let products = [];
  try {
    products = await all("/products");
  } catch (err) {
    return sayError(err);
  }
  const code = h("input", { name: "code", id: "order-code", value: o ? o.code : "", disabled: !!o, maxlength: 64 });
  const product = h(
    "select",
    { name: "product_id", id: "order-product", disabled: !!o },
    products.map((p) => h("option", { value: String(p.id), selected: o && o.product_id === p.id }, `${p.code} — ${p.name}`)),
  );
  const qty = h("input", { type: "number", min: 1, name: "quantity", id: "order-quantity", value: o ? o.quantity : 100 });
  const due = h("input", { type: "date", name: "due_date", id: "order-due", value: o && o.due_date ? o.due_date.slice(0, 10) : "" });
  const prio = h("input", { type: "number", min: 0, max: 1000, name: "priority", id: "order-priority", value: o ? o.priority : 0 });
  const customer = h("input", { name: "customer", id: "order-customer", value: o && o.customer ? o.customer : "", maxlength: 200 });
  openDialog(
    o ? `Edit order ${o.code}` : "New order",
    [field("Order code", code), field("Product", product), h("div", { class: "row" }, h("div", {}, field("Quantity", qty)), h("div", {}, field("Priority", prio))), field("Due date", due), field("Customer", customer)],
    async () => {
      const body = {
        quantity: Number(qty.value),
        priority: Number(prio.value),
        due_date: due.value ? new Date(`${due.value}T16:00:00`).toISOString() : null,
        customer: customer.value.trim() || null,
      };
      if (o) {
        await api("PATCH", `/orders/${o.id}`, body);
      } else {
        await api("POST", "/orders", { ...body, code: code.value.trim(), product_id: Number(product.value) });
      }
      reload();
      return o ? `${o.code} saved.` : `Order ${code.value.trim()} created (planned).`;
    },
  );
}

// ------------------------------------------------------------------ batch record
async function pageBatch(id) {
  document.title = `microfactory — batch ${id}`;
  const root = h("div", { id: "batch" });
  view.append(root);
  async function load() {
    const [record, parts, batch] = await Promise.all([
      api("GET", `/batches/${id}/record`),
      all("/parts", { batch_id: id }, 20000),
      api("GET", `/batches/${id}`),
    ]);
    const order = await api("GET", `/orders/${batch.order_id}`);
    const product = await api("GET", `/products/${order.product_id}`);
    renderBatch(root, record, parts.reverse(), product, load);
    return record;
  }
  const record = await load();
  let timer = null;
  if (record.batch.status === "in_progress") {
    timer = setInterval(() => {
      if (!dialog.open) load().catch(sayError);
    }, 5000);
  }
  leave = () => clearInterval(timer);
}

function card(k, v, id) {
  return h("div", { class: "card", "data-card": id }, h("div", { class: "v num" }, v), h("div", { class: "k" }, k));
}

function renderBatch(root, rec, parts, product, reload) {
  const b = rec.batch;
  const e = rec.energy;
  const runsById = new Map(rec.runs.map((r) => [r.run_id, r]));
  const groupOf = (p) => {
    const r = runsById.get(p.run_id);
    return r ? `${r.operation.seq} ${r.operation.name} · ${r.machine_id}` : `${p.machine_id}`;
  };
  const groups = [...new Set(parts.map(groupOf))];
  const ideal = [];
  for (const r of rec.runs) {
    const op = product.operations.find((o) => o.seq === r.operation.seq);
    if (op) ideal.push({ group: `${r.operation.seq} ${r.operation.name} · ${r.machine_id}`, value: op.ideal_cycle_time_s });
  }
  const legend = h("div", { class: "legend" }, groups.map((g, i) => h("span", {}, h("i", { style: `background:${PALETTE[i % PALETTE.length]}` }), g)));
  const energyItems = parts.map((p, i) => ({
    value: p.energy_wh,
    group: groupOf(p),
    bad: !p.good,
    title: `part ${i + 1} (#${p.id}${p.serial ? ", " + p.serial : ""}) on ${p.machine_id}: ${num(p.energy_wh, 2)} Wh${p.good ? "" : ", scrap"}`,
  }));
  const cycleItems = parts.map((p, i) => ({ value: p.cycle_time_s, group: groupOf(p), bad: !p.good, title: `part ${i + 1} on ${p.machine_id}: ${num(p.cycle_time_s, 1)} s` }));
  const byMachine = new Map();
  for (const p of parts) {
    const w = p.energy_wh !== null && p.cycle_time_s ? (p.energy_wh * 3600) / p.cycle_time_s : null;
    if (w === null) continue;
    if (!byMachine.has(p.machine_id)) byMachine.set(p.machine_id, []);
    byMachine.get(p.machine_id).push({ t: Date.parse(p.completed_at), value: w });
  }
  const scrapByReason = new Map();
  for (const s of rec.scrap) scrapByReason.set(s.reason_code, (scrapByReason.get(s.reason_code) || 0) + s.quantity);

  const head = h(
    "div",
    { class: "toolbar" },
    h("h1", {}, `Batch ${b.lot_number} `, h("span", { class: `chip ${b.status}`, "data-field": "batch-status" }, b.status.replace("_", " "))),
    h("span", { class: "spacer" }),
    h("button", { type: "button", class: "ghost", onclick: () => printable(b.id) }, "Printable record"),
    b.status === "in_progress" && may("batch.complete")
      ? h("button", { type: "button", "data-action": "batch.complete", onclick: () => confirmAction(`Complete batch ${b.lot_number}?`, "Every operation run of it must be complete.", "Complete batch", async () => {
          await api("POST", `/batches/${b.id}/complete`);
          reload().catch(sayError);
          return `Batch ${b.lot_number} complete.`;
        }) }, "Complete batch")
      : null,
    ["planned", "in_progress"].includes(b.status) && may("batch.cancel")
      ? h("button", { type: "button", class: "danger", "data-action": "batch.cancel", onclick: () => confirmAction(`Cancel batch ${b.lot_number}?`, "Paused runs are closed; a running batch cannot be cancelled.", "Cancel batch", async () => {
          await api("POST", `/batches/${b.id}/cancel`);
          reload().catch(sayError);
          return `Batch ${b.lot_number} cancelled.`;
        }) }, "Cancel batch")
      : null,
  );
  const progress = rec.progress;
  root.replaceChildren(
    head,
    h("p", { class: "muted" }, `Order ${rec.order.code}${rec.order.customer ? " for " + rec.order.customer : ""} · ${rec.product.code} ${rec.product.name} · ${b.quantity} pcs · created ${when(b.created_at)}${b.completed_at ? " · completed " + when(b.completed_at) : ""}`),
    h(
      "div",
      { class: "cards" },
      card("good (last operation)", `${progress.good} / ${b.quantity}`, "good"),
      card("scrap", String(progress.scrap), "scrap"),
      card("energy of part cycles", `${num(e.energy_kwh, 3)} kWh`, "energy"),
      card("energy per finished part", e.wh_per_finished_part === null ? "—" : `${num(e.wh_per_finished_part, 1)} Wh`, "wh-per-part"),
      card("CO2e", `${num(e.co2e_kg, 3)} kg`, "co2e"),
      // the machines' counter energy over the runs, with idle/setup/fault shown on its own
      ...(e.machine_energy && e.machine_energy.known
        ? [
            card("machine energy, all states", `${num(e.machine_energy.energy_kwh, 3)} kWh`, "machine-energy"),
            card("of which idle, setup, fault", `${num(e.machine_energy.idle_setup_kwh, 3)} kWh`, "idle-setup-energy"),
          ]
        : []),
    ),
    h("p", { class: "muted" }, e.note || ""),
    h("h3", {}, "Charts"),
    h(
      "div",
      { class: "charts" },
      h("figure", { class: "chart" }, h("figcaption", {}, "Energy per part", h("small", {}, "each part's own energy (Wh) from the machine's energy counter; scrap in red")), barsChart("chart-energy-per-part", "energy per part", "Wh", energyItems, { groups }), legend),
      h("figure", { class: "chart" }, h("figcaption", {}, "Power over time", h("small", {}, "mean power of each part cycle (W); full-resolution power: InfluxDB, tag batch=" + b.lot_number)), timeChart("chart-power", "power over time", "W", [...byMachine.entries()].map(([name, points]) => ({ name, points })))),
      h("figure", { class: "chart" }, h("figcaption", {}, "Cycle times", h("small", {}, "seconds per part; dashed: ideal cycle time of the operation")), barsChart("chart-cycle-times", "cycle times", "s", cycleItems, { groups, ideal })),
      h("figure", { class: "chart" }, h("figcaption", {}, "Scrap by reason", h("small", {}, `${progress.scrap} scrapped`)), hbarChart("chart-scrap", "scrap by reason", "pcs", [...scrapByReason.entries()].map(([label, value]) => ({ label, value })))),
    ),
    h("h3", {}, "Operations"),
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ["Op", "Machine", "Status", "Operators", "Start", "End", "Good / scrap"].map((t) => h("th", {}, t)))),
      h(
        "tbody",
        {},
        rec.runs.map((r) => {
          const c = progress.operations.find((o) => o.seq === r.operation.seq) || { total: 0, scrap: 0 };
          return h("tr", {}, h("td", {}, `${r.operation.seq} ${r.operation.name}`), h("td", {}, r.machine_id), h("td", {}, h("span", { class: `chip ${r.status}` }, r.status)), h("td", {}, r.operators.join(", ") || "—"), h("td", {}, when(r.started_at)), h("td", {}, when(r.ended_at)), h("td", { class: "num" }, `${c.total - c.scrap} / ${c.scrap}`));
        }),
      ),
    ),
    h("h3", {}, "Materials"),
    rec.materials.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Material lot", "Material", "Supplier", "Quantity", "Booked by"].map((t) => h("th", {}, t)))),
          h("tbody", {}, rec.materials.map((c) => h("tr", {}, h("td", {}, h("a", { href: `#/trace/${encodeURIComponent(c.material_lot)}` }, c.material_lot)), h("td", {}, c.material), h("td", {}, c.supplier || "—"), h("td", { class: "num" }, `${num(c.quantity, 2)} ${c.unit}`), h("td", {}, `${c.recorded_by}, ${when(c.recorded_at)}`)))),
        )
      : h("p", { class: "muted" }, "No material booked yet."),
    h("h3", {}, "Downtime"),
    rec.downtime.length
      ? h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Machine", "From", "To", "Reason", "Note"].map((t) => h("th", {}, t)))),
          h("tbody", {}, rec.downtime.map((d) => h("tr", {}, h("td", {}, d.machine_id), h("td", {}, when(d.start)), h("td", {}, when(d.end)), h("td", {}, d.reason_code), h("td", {}, d.note || "")))),
        )
      : h("p", { class: "muted" }, "No downtime during this batch."),
    rec.telemetry && rec.telemetry.available
      ? h("p", { class: "muted" }, `Telemetry: InfluxDB measurement ${rec.telemetry.measurement}, tag batch=${b.lot_number}, ${when(rec.telemetry.start)} – ${when(rec.telemetry.end)}.`)
      : null,
  );
}

async function printable(id) {
  try {
    const res = await api("GET", `/batches/${id}/record.html`, undefined, { raw: true });
    const url = URL.createObjectURL(await res.blob());
    window.open(url, "_blank");
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    sayError(err);
  }
}

// ------------------------------------------------------------------ traceability
async function pageTrace(preset) {
  document.title = "microfactory — traceability";
  const input = h("input", { id: "trace-query", name: "q", placeholder: "part serial, batch lot number or material lot", autofocus: true, value: preset ? decodeURIComponent(preset) : "" });
  const kind = h(
    "select",
    { id: "trace-kind", "aria-label": "what it is" },
    h("option", { value: "auto" }, "find out"),
    h("option", { value: "material" }, "material lot (forward)"),
    h("option", { value: "batch" }, "batch lot number (backward)"),
    h("option", { value: "part" }, "part serial or id (backward)"),
  );
  const out = h("div", { id: "trace-result" });
  const form = h("form", { class: "row", id: "trace-form" }, h("div", {}, field("Search", input)), h("div", { style: "flex:0 0 16rem" }, field("Kind", kind)), h("div", { style: "flex:0 0 auto" }, h("button", { type: "submit" }, "Trace")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    search(input.value.trim(), kind.value, out);
  });
  view.append(h("h1", {}, "Traceability"), h("p", { class: "muted" }, "Backward: what went into a part or batch. Forward: where a material lot went (the recall question)."), form, out);
  if (preset) search(input.value.trim(), "auto", out);
}

async function tryGet(path) {
  try {
    return await api("GET", path);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

async function search(q, kind, out) {
  if (!q) return;
  out.replaceChildren(h("p", { class: "muted" }, "searching…"));
  try {
    if (kind === "auto" || kind === "material") {
      const lot = await tryGet(`/material-lots/${encodeURIComponent(q)}`);
      if (lot) return out.replaceChildren(forwardTree(await api("GET", `/material-lots/${encodeURIComponent(q)}/trace`)));
    }
    if (kind === "auto" || kind === "batch") {
      const page = await api("GET", `/batches?${new URLSearchParams({ lot_number: q })}`);
      if (page.items.length) {
        const rec = await api("GET", `/batches/${page.items[0].id}/record`);
        return out.replaceChildren(h("ul", { class: "tree" }, batchNode(rec, true)));
      }
    }
    if (kind === "auto" || kind === "part") {
      const page = await api("GET", `/parts?${new URLSearchParams({ serial: q })}`);
      let partId = page.items.length ? page.items[0].id : null;
      if (partId === null && /^\d+$/.test(q) && (kind === "part" || kind === "auto")) partId = Number(q);
      if (partId !== null) {
        const t = await tryGet(`/parts/${partId}/trace`);
        if (t) return out.replaceChildren(partTree(t));
      }
    }
    out.replaceChildren(h("p", { class: "notice" }, `Nothing found for “${q}”: no ${kind === "auto" ? "material lot, batch lot number or part serial" : kind} with that name.`));
  } catch (err) {
    out.replaceChildren(h("p", { class: "error" }, err.message));
  }
}

function node(kind, label, extra, children = [], open = true) {
  const kids = children.filter(Boolean);
  const summary = [h("span", { class: "kind" }, kind), h("span", { class: "node" }, label), extra ? h("span", { class: "muted" }, ` — ${extra}`) : null];
  if (!kids.length) return h("li", { "data-kind": kind }, ...summary);
  return h("li", { "data-kind": kind }, h("details", { open }, h("summary", {}, ...summary), h("ul", {}, kids)));
}

function batchNode(rec, open) {
  const b = rec.batch;
  return node(
    "batch",
    h("a", { href: `#/batch/${b.id}` }, b.lot_number),
    `${rec.product.code} ${rec.product.name}, ${b.quantity} pcs, ${b.status}; ${rec.progress.good} good, ${rec.progress.scrap} scrap`,
    [
      node("order", rec.order.code, `${rec.order.customer || "no customer"}, ${rec.order.quantity} pcs, ${rec.order.status}`),
      node(
        "materials",
        `${rec.materials.length} booking${rec.materials.length === 1 ? "" : "s"}`,
        null,
        rec.materials.map((c) => node("material lot", h("a", { href: `#/trace/${encodeURIComponent(c.material_lot)}` }, c.material_lot), `${c.material}, ${c.supplier || "?"}: ${num(c.quantity, 2)} ${c.unit} (${c.recorded_by})`)),
      ),
      node(
        "operations",
        `${rec.runs.length} run${rec.runs.length === 1 ? "" : "s"}`,
        null,
        rec.runs.map((r) => node("machine", r.machine_id, `op ${r.operation.seq} ${r.operation.name}; ${r.operators.join(", ") || "no operator"}; ${when(r.started_at)} – ${r.ended_at ? when(r.ended_at) : "running"}`)),
      ),
      node("energy", `${num(rec.energy.energy_kwh, 3)} kWh`, `${rec.energy.wh_per_finished_part === null ? "—" : num(rec.energy.wh_per_finished_part, 1) + " Wh per finished part"}, ${num(rec.energy.co2e_kg, 3)} kg CO2e`),
      rec.scrap.length ? node("scrap", `${rec.scrap.reduce((a, s) => a + s.quantity, 0)} pcs`, [...new Set(rec.scrap.map((s) => s.reason_code))].join(", ")) : null,
      rec.telemetry && rec.telemetry.available ? node("telemetry", `batch=${b.lot_number}`, `${when(rec.telemetry.start)} – ${when(rec.telemetry.end)} on ${rec.telemetry.machines.join(", ")}`) : null,
    ],
    open,
  );
}

function partTree(t) {
  const p = t.part;
  const run = p.run;
  return h(
    "ul",
    { class: "tree" },
    node(
      "part",
      p.serial || `#${p.id}`,
      `${p.good ? "good" : "scrap"}, made on ${p.machine_id} at ${when(p.completed_at)}, ${num(p.energy_wh, 2)} Wh, ${num(p.cycle_time_s, 1)} s`,
      [
        run ? node("run", `op ${run.operation.seq} ${run.operation.name}`, `${run.machine_id}, ${run.operators.join(", ") || "no operator"}`) : node("run", "none", "made outside any run"),
        ...p.materials.map((c) => node("material lot", c.material_lot, `${num(c.quantity, 2)} ${c.unit} into this part`)),
        t.batch ? batchNode(t.batch, true) : null,
      ],
    ),
  );
}

function forwardTree(f) {
  return h(
    "ul",
    { class: "tree" },
    node(
      "material lot",
      f.material_lot,
      `${f.material}, ${f.supplier || "?"}; received ${num(f.received_quantity, 2)} ${f.unit}, ${num(f.remaining_quantity, 2)} left; reached orders ${f.orders.join(", ") || "none"}`,
      f.batches.map((b) => {
        const good = b.parts.filter((p) => p.good).reduce((a, p) => a + p.quantity, 0);
        const scrap = b.parts.filter((p) => !p.good).reduce((a, p) => a + p.quantity, 0);
        const serials = b.parts.filter((p) => p.serial).slice(0, 50);
        return node(
          "batch",
          h("a", { href: `#/batch/${b.batch_id}` }, b.lot_number),
          `order ${b.order} (${b.customer || "no customer"}), ${b.product}; ${num(b.quantity_consumed, 2)} ${f.unit} used`,
          [
            node("order", b.order, b.customer || ""),
            node("parts", `${good} good, ${scrap} scrap`, b.specific_parts.length ? `booked onto parts ${b.specific_parts.join(", ")}` : null, serials.map((p) => node("part", p.serial, p.good ? "good" : "scrap"))),
          ],
        );
      }),
    ),
  );
}

route();
