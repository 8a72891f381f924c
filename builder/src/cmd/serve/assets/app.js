// build-image serve: the page over the JSON API. No framework; the DOM is
// built with createElement and textContent only (nothing is parsed as HTML).
// Values are shown only in the reveal dialog, removed from the page when it
// closes (and after 30 seconds), and never kept anywhere else.
"use strict";

const state = { csrf: null, canChange: false, recipes: [], poll: null, revealTimer: null };

// The session's CSRF token goes with every request (reads too: the cookie
// alone opens nothing, as browsers send it to every port of the host). It
// is kept in this tab's sessionStorage, bound to this origin (port
// included), so a reload keeps the session; another tab logs in again.
const CSRF_KEY = "sealed-csrf";
function setCsrf(v) {
  state.csrf = v;
  try {
    if (v) sessionStorage.setItem(CSRF_KEY, v); else sessionStorage.removeItem(CSRF_KEY);
  } catch (_) { /* storage off: this page load only */ }
}
try { state.csrf = sessionStorage.getItem(CSRF_KEY); } catch (_) { state.csrf = null; }

function $(id) { return document.getElementById(id); }

// A form's control by name (form.name, form.length are the form's own).
function field(form, name) { return form.elements.namedItem(name); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = {};
  if (state.csrf && path !== "/api/login") headers["X-CSRF-Token"] = state.csrf;
  if (method !== "GET") headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? (method === "GET" ? undefined : "{}") : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
    redirect: "error",
  });
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (!resp.ok) {
    const msg = (data && data.error) || ("HTTP " + resp.status);
    // Not logged in, or this tab's CSRF token is not the session's.
    if ((resp.status === 401 || (resp.status === 403 && /CSRF/.test(msg))) && path !== "/api/login") showLogin();
    throw new ApiError(resp.status, msg);
  }
  return data;
}

function say(text, isError) {
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "message error" : "message";
  m.hidden = !text;
}

function short(at) { return at ? at.replace("T", " ").replace("Z", " UTC") : ""; }

// ---- login ----

function showLogin() {
  setCsrf(null);
  stopPolling();
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("view-login").hidden = false;
  $("login-token").focus();
}

async function start() {
  try {
    const s = await api("GET", "/api/session");
    afterLogin(s);
  } catch (e) {
    if (e.status === 403) showLogin();
    else if (e.status !== 401) say(e.message, true);
  }
}

function afterLogin(s) {
  if (s.csrf) setCsrf(s.csrf);
  state.canChange = s.can_change;
  state.recipes = s.recipes || [];
  $("store-path").textContent = "store " + s.store;
  $("login-form").reset();
  $("view-login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = s.authenticated_by !== "session";
  $("new-secret").hidden = !state.canChange;
  const nr = $("nav-recipes");
  clear(nr);
  for (const r of state.recipes) {
    nr.append(el("a", { href: "#/recipes/" + encodeURIComponent(r.id), id: "nav-recipe-" + r.id, text: "Setup: " + r.name }));
  }
  if (!state.canChange) {
    banner("Read-only: the server holds no identity, so nothing was verified and values can neither be changed nor revealed.");
  }
  route();
}

function banner(text) {
  const b = $("banner");
  b.textContent = text;
  b.hidden = !text;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = $("login-error");
  err.hidden = true;
  const token = $("login-token").value;
  try {
    const r = await api("POST", "/api/login", { token });
    setCsrf(r.csrf);
    $("login-token").value = "";
    afterLogin(await api("GET", "/api/session"));
  } catch (e) {
    err.textContent = e.message;
    err.hidden = false;
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("POST", "/api/logout"); } catch (_) { /* logged out anyway */ }
  showLogin();
});

// ---- routing ----

function stopPolling() {
  if (state.poll) { clearInterval(state.poll); state.poll = null; }
}

function show(id) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== id;
  for (const a of document.querySelectorAll("#nav a")) {
    a.removeAttribute("aria-current");
    if (a.getAttribute("href") === location.hash) a.setAttribute("aria-current", "page");
  }
}

async function route() {
  if (!$("view-login").hidden) return;
  stopPolling();
  say("");
  const hash = location.hash || "#/secrets";
  const parts = hash.slice(2).split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "audit") { show("view-audit"); await loadAudit(); }
    else if (parts[0] === "history" && parts[1]) { show("view-history"); await loadHistory(parts[1]); }
    else if (parts[0] === "recipes" && parts[1]) {
      show("view-recipe");
      await loadRecipe(parts[1]);
      // Refreshed while it is open and visible: a value added by the CLI
      // turns its ✗ green too.
      state.poll = setInterval(() => {
        if (document.visibilityState === "visible") loadRecipe(parts[1]).catch(() => {});
      }, 5000);
    } else { show("view-secrets"); await loadSecrets(); }
  } catch (e) {
    say(e.message, true);
  }
}

window.addEventListener("hashchange", route);

// ---- secrets ----

function actionButton(label, action, name, scope, handler) {
  return el("button", {
    type: "button",
    "data-action": action,
    "data-secret": name,
    "data-scope": scope,
    "aria-label": label + " " + name + " (" + scope + ")",
    onclick: handler,
    text: label,
  });
}

async function loadSecrets() {
  const data = await api("GET", "/api/secrets");
  if (!data.verified) banner("Unverified: the server holds no identity, so what is shown was not checked against the store key.");
  const body = $("secrets-body");
  clear(body);
  $("secrets-empty").hidden = data.secrets.length > 0;
  for (const s of data.secrets) {
    for (const sc of s.scopes) {
      const actions = el("td", { class: "actions" });
      if (state.canChange) {
        actions.append(
          actionButton("Reveal", "reveal", s.name, sc.scope, () => reveal(s.name, sc.scope)),
          actionButton("Edit", "edit", s.name, sc.scope, () => openEdit(s, sc.scope)),
          actionButton("Rotate", "rotate", s.name, sc.scope, () => openRotate(s.name, sc.scope)),
          actionButton("Delete", "delete", s.name, sc.scope, () => openDelete(s.name, sc.scope, s.scopes.length)),
        );
      }
      actions.append(el("a", { href: "#/history/" + encodeURIComponent(s.name), "data-action": "history", text: "History" }));
      body.append(el("tr", { "data-secret": s.name, "data-scope": sc.scope },
        el("th", { scope: "row" }, el("code", { text: s.name })),
        el("td", { text: s.description }),
        el("td", { text: sc.scope }),
        el("td", { "data-field": "version", text: "v" + sc.current + " (" + sc.versions + (sc.versions === 1 ? " version)" : " versions)") }),
        el("td", { text: short(sc.created_at) + " by " + sc.created_by }),
        el("td", { text: short(sc.updated_at) + " by " + sc.updated_by }),
        actions,
      ));
    }
  }
}

function dialogError(dlg, text) {
  const p = dlg.querySelector(".error");
  if (!p) return;
  p.textContent = text || "";
  p.hidden = !text;
}

function closeDialog(dlg) {
  const f = dlg.querySelector("form");
  if (f) f.reset();
  dialogError(dlg, "");
  if (dlg.open) dlg.close();
}

for (const dlg of document.querySelectorAll("dialog")) {
  for (const b of dlg.querySelectorAll("[data-close]")) b.addEventListener("click", () => closeDialog(dlg));
  // Escape closes: forget what was typed.
  dlg.addEventListener("close", () => { const f = dlg.querySelector("form"); if (f) f.reset(); });
}

function valueHow() {
  const f = $("create-form");
  return f.querySelector("input[name=how]:checked").value;
}

for (const r of document.querySelectorAll("#create-form input[name=how]")) {
  r.addEventListener("change", () => {
    for (const d of document.querySelectorAll("#create-form [data-how]")) d.hidden = d.dataset.how !== valueHow();
  });
}

function openCreate(name, description) {
  const dlg = $("dlg-create");
  closeDialog(dlg);
  for (const d of document.querySelectorAll("#create-form [data-how]")) d.hidden = d.dataset.how !== "type";
  $("create-name").value = name || "";
  $("create-description").value = description || "";
  dlg.showModal();
  (name ? $("create-value") : $("create-name")).focus();
}

$("new-secret").addEventListener("click", () => openCreate());

function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => { const s = String(r.result); resolve(s.slice(s.indexOf(",") + 1)); };
    r.onerror = () => reject(new Error("could not read the file"));
    r.readAsDataURL(file);
  });
}

$("create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const dlg = $("dlg-create");
  const f = ev.target;
  const body = {
    name: field(f, "name").value.trim(),
    description: field(f, "description").value,
    scope: field(f, "scope").value.trim() || "global",
  };
  const how = valueHow();
  try {
    if (how === "type") body.value = field(f, "value").value;
    else if (how === "generate") body.generate = { length: Number(field(f, "length").value), charset: field(f, "charset").value };
    else {
      const file = field(f, "file").files[0];
      if (!file) throw new Error("choose a file");
      body.value_base64 = await fileBase64(file);
    }
    const w = await api("POST", "/api/secrets", body);
    closeDialog(dlg);
    say("Created " + w.name + " (" + w.scope + ") v" + w.version + ".");
    await route();
  } catch (e) {
    dialogError(dlg, e.message);
  }
});

let editing = null;

function openEdit(secret, scope) {
  const dlg = $("dlg-edit");
  closeDialog(dlg);
  editing = { name: secret.name, scope };
  $("dlg-edit-title").textContent = "Edit " + secret.name + " (" + scope + ")";
  $("edit-description").value = secret.description;
  dlg.showModal();
  $("edit-description").focus();
}

$("edit-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const dlg = $("dlg-edit");
  const f = ev.target;
  const body = { description: field(f, "description").value, scope: editing.scope };
  if (field(f, "value").value) body.value = field(f, "value").value;
  try {
    const r = await api("PUT", "/api/secrets/" + encodeURIComponent(editing.name), body);
    closeDialog(dlg);
    say(r.version ? "Saved " + r.name + " v" + r.version + "." : "Saved the description of " + r.name + ".");
    await route();
  } catch (e) {
    dialogError(dlg, e.message);
  }
});

let rotating = null;

async function openRotate(name, scope) {
  const dlg = $("dlg-rotate");
  closeDialog(dlg);
  rotating = { name, scope };
  $("dlg-rotate-title").textContent = "Rotate " + name + " (" + scope + ")";
  let generated = false;
  try {
    const s = await api("GET", "/api/secrets/" + encodeURIComponent(name));
    generated = s.scopes.some((x) => x.scope === scope && x.generated);
  } catch (_) { /* the rotate call says what is wrong */ }
  rotating.generated = generated;
  $("rotate-explain").textContent = generated
    ? "It was generated: a new random value of the same length and characters becomes the next version. Or type one."
    : "Give the new value: it becomes the next version (the old ones stay in the history).";
  dlg.showModal();
  $("rotate-value").focus();
}

$("rotate-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const dlg = $("dlg-rotate");
  const v = field(ev.target, "value").value;
  const body = { scope: rotating.scope };
  if (v) body.value = v;
  try {
    const w = await api("POST", "/api/secrets/" + encodeURIComponent(rotating.name) + "/rotate", body);
    closeDialog(dlg);
    say("Rotated " + w.name + " (" + w.scope + "): now v" + w.version + ".");
    await route();
  } catch (e) {
    dialogError(dlg, e.message);
  }
});

let deleting = null;

function openDelete(name, scope, scopes) {
  const dlg = $("dlg-delete");
  closeDialog(dlg);
  deleting = { name, scope, whole: scopes <= 1 };
  $("dlg-delete-title").textContent = "Delete " + name;
  $("delete-explain").textContent = deleting.whole
    ? "Delete " + name + " with every version? Builds that read it will miss it. (Its files stay in git history.)"
    : "Delete the " + scope + " scope of " + name + " with its versions? The other scopes stay.";
  dlg.showModal();
  $("delete-submit").focus();
}

$("delete-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const dlg = $("dlg-delete");
  const q = deleting.whole ? "" : "?scope=" + encodeURIComponent(deleting.scope);
  try {
    const r = await api("DELETE", "/api/secrets/" + encodeURIComponent(deleting.name) + q);
    closeDialog(dlg);
    say("Deleted " + r.name + " (" + r.removed.join(", ") + ").");
    await route();
  } catch (e) {
    dialogError(dlg, e.message);
  }
});

// ---- reveal ----

function hideValue() {
  if (state.revealTimer) { clearTimeout(state.revealTimer); state.revealTimer = null; }
  $("reveal-value").textContent = "";
}

async function reveal(name, scope) {
  try {
    const r = await api("POST", "/api/secrets/" + encodeURIComponent(name) + "/value", { scope });
    const dlg = $("dlg-reveal");
    $("dlg-reveal-title").textContent = r.name + " (" + r.scope + ") v" + r.version;
    $("reveal-value").textContent = r.encoding === "utf-8" ? r.value : "(binary, base64) " + r.value_base64;
    dlg.showModal();
    $("reveal-hide").focus();
    state.revealTimer = setTimeout(() => closeDialog(dlg), 30000);
  } catch (e) {
    say(e.message, true);
  }
}

$("dlg-reveal").addEventListener("close", hideValue);
$("reveal-form").addEventListener("submit", (ev) => { ev.preventDefault(); closeDialog($("dlg-reveal")); });
$("reveal-copy").addEventListener("click", async () => {
  try { await navigator.clipboard.writeText($("reveal-value").textContent); say("Copied."); }
  catch (_) { say("The browser does not allow copying here.", true); }
});

// ---- history and audit ----

function logRow(e, withName) {
  return el("tr", {},
    el("td", { text: short(e.at) }),
    el("td", { text: e.by }),
    el("td", { text: e.op }),
    withName ? el("td", { text: e.name || "" }) : null,
    el("td", { text: e.scope || "" }),
    el("td", { text: e.version ? "v" + e.version : "" }),
    el("td", { text: e.detail || "" }),
  );
}

async function loadHistory(name) {
  const data = await api("GET", "/api/secrets/" + encodeURIComponent(name) + "/history");
  const s = data.secret;
  $("history-title").textContent = "History of " + s.name;
  $("history-description").textContent = s.description;
  const box = $("history-scopes");
  clear(box);
  for (const sc of s.scopes) {
    const rows = sc.versions.slice().reverse().map((v) => el("tr", { "data-version": v.version },
      el("td", { text: "v" + v.version + (v.version === sc.current ? " (current)" : "") }),
      el("td", { text: v.operation }),
      el("td", { text: short(v.created_at) }),
      el("td", { text: v.created_by }),
    ));
    box.append(
      el("h3", { text: sc.scope + (sc.generated ? " (generated)" : "") }),
      el("table", {},
        el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Version" }), el("th", { scope: "col", text: "How" }), el("th", { scope: "col", text: "When" }), el("th", { scope: "col", text: "Who" }))),
        el("tbody", {}, ...rows)),
    );
  }
  const log = $("history-log");
  clear(log);
  for (const e of data.log) log.append(logRow(e, false));
}

async function loadAudit() {
  const f = $("audit-filter");
  const q = new URLSearchParams();
  for (const k of ["name", "op", "by", "since"]) {
    const v = field(f, k).value.trim();
    if (v) q.set(k, v);
  }
  const data = await api("GET", "/api/audit" + (q.toString() ? "?" + q : ""));
  $("audit-count").textContent = data.matching + " matching line(s), newest first" + (data.verified ? "; the log's chain and MACs are verified." : "; UNVERIFIED (no identity).");
  const body = $("audit-body");
  clear(body);
  for (const e of data.entries) body.append(logRow(e, true));
}

$("audit-filter").addEventListener("submit", (ev) => { ev.preventDefault(); loadAudit().catch((e) => say(e.message, true)); });

// ---- setup view ----

async function loadRecipe(id) {
  const st = await api("GET", "/api/recipes/" + encodeURIComponent(id) + "/status");
  $("recipe-title").textContent = "Setup: " + st.recipe.name;
  $("recipe-path").textContent = st.recipe.path + (st.recipe.devices ? " with the devices of " + st.recipe.devices : " (a plain build: global scope)");
  const ready = $("recipe-ready");
  const notRun = st.unchecked_required ? st.unchecked_required + " required secret(s) from commands not checked (serve --deep runs them)" : "";
  if (st.ready) { ready.textContent = "✓ ready to build"; ready.className = "pill ok"; }
  else if (st.missing_required) { ready.textContent = "✗ " + st.missing_required + " required secret(s) missing" + (notRun ? "; " + notRun : ""); ready.className = "pill missing"; }
  else { ready.textContent = "? " + notRun; ready.className = "pill unchecked"; }
  const head = $("recipe-head");
  clear(head);
  const cols = st.plain_build ? ["every device"] : st.devices.map((d) => d.name + (d.tags.length ? " (" + d.tags.join(", ") + ")" : ""));
  head.append(el("tr", {},
    el("th", { scope: "col", text: "Secret" }),
    el("th", { scope: "col", text: "Purpose" }),
    el("th", { scope: "col", text: "Required" }),
    el("th", { scope: "col", text: "Source" }),
    ...cols.map((c) => el("th", { scope: "col", text: c })),
    el("th", { scope: "col", text: "To add it" })));
  const body = $("recipe-body");
  clear(body);
  for (const s of st.secrets) {
    const cells = s.devices.map((c) => el("td", {
      class: c.present ? "ok" : (c.unchecked ? "unchecked" : "missing"),
      "data-cell": s.secret + "|" + c.device,
      title: c.present ? c.from : (c.how || c.from),
    }, el("span", { "aria-hidden": "true", text: c.present ? "✓" : (c.unchecked ? "?" : "✗") }),
    el("span", { class: "sr", text: c.present ? " present: " + c.from : (c.unchecked ? " not checked: " + c.from : " missing") })));
    const todo = el("td", { class: "todo" });
    if (!s.complete) {
      if (s.command) todo.append(el("code", { class: "command", text: s.command }));
      else {
        const how = s.devices.find((c) => !c.present);
        if (how && how.how) todo.append(el("span", { text: how.how }));
      }
      if (s.store_name && state.canChange) {
        todo.append(el("button", {
          type: "button", "data-action": "add", "data-secret": s.store_name,
          onclick: () => openCreate(s.store_name, s.description || ""), text: "Add " + s.store_name,
        }));
      }
    }
    body.append(el("tr", { "data-secret": s.secret, class: s.complete ? "complete" : "incomplete" },
      el("th", { scope: "row" }, el("code", { text: s.secret })),
      el("td", { text: s.description || "" }),
      el("td", { text: s.required ? "required" : "optional" }),
      el("td", { text: s.source }),
      ...cells,
      todo));
  }
}

start();
