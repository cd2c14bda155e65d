// shopgate catalog UI.
//
// Reads the Consul HTTP API on this origin and stays current through blocking
// queries (?index=N&wait=...), so instances appear and vanish as they register
// and deregister. Catalog data only ever reaches the page through textContent
// and attributes (the el() builder below), never through innerHTML.
"use strict";

(() => {
  const WAIT = "30s";                  // how long the server may hold one blocking query
  const REQUEST_TIMEOUT_MS = 45000;    // WAIT + Consul's wait/16 jitter + slack
  const RETRY_MS = [250, 500, 1000];   // retry quickly, then once a second
  const TOKEN_KEY = "shopgate.catalog.token";
  const LIVE_KEY = "shopgate.catalog.live";
  const HEALTH_ORDER = ["critical", "warning", "maintenance", "passing"];

  const $ = (id) => document.getElementById(id);

  // ---- DOM building: text is text --------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // ---- talking to the catalog ------------------------------------------------------

  class HttpError extends Error {
    constructor(status, text) {
      super(text ? `HTTP ${status}: ${text}` : `HTTP ${status}`);
      this.status = status;
    }
  }

  const token = {
    get: () => localStorage.getItem(TOKEN_KEY) || "",
    set(value) {
      if (value) localStorage.setItem(TOKEN_KEY, value);
      else localStorage.removeItem(TOKEN_KEY);
    },
  };

  // Live updates (blocking queries) can be switched off, as in Consul's UI settings;
  // `?live=0` starts with them off, for a one-shot snapshot (e.g. a headless screenshot).
  const liveParam = new URLSearchParams(location.search).get("live");
  const live = {
    on: liveParam !== null ? !["0", "off", "false", "no"].includes(liveParam) : localStorage.getItem(LIVE_KEY) !== "off",
    set(on) {
      this.on = on;
      localStorage.setItem(LIVE_KEY, on ? "on" : "off");
    },
  };

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }

  /** GET a Consul API path; a 404 is "no data" (KV), everything else non-2xx throws. */
  async function consulGet(path, signal, index = 0) {
    const url = new URL(path, location.origin);
    if (index > 0) {
      url.searchParams.set("index", String(index));
      url.searchParams.set("wait", WAIT);
    }
    const headers = {};
    if (token.get()) headers["X-Consul-Token"] = token.get();
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), REQUEST_TIMEOUT_MS);
    const forward = () => deadline.abort();
    signal.addEventListener("abort", forward, { once: true });
    try {
      const response = await fetch(url, { headers, signal: deadline.signal, cache: "no-store" });
      const newIndex = Number(response.headers.get("X-Consul-Index")) || 0;
      if (response.status === 404) return { index: newIndex, body: null };
      if (!response.ok) throw new HttpError(response.status, (await response.text()).trim().slice(0, 200));
      return { index: newIndex, body: await response.json() };
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", forward);
    }
  }

  // ---- connection state: one entry per running loop, the worst one is shown ----------

  const connection = {
    problems: new Map(),
    updated: null,

    ok(key) {
      this.problems.delete(key);
      this.render();
    },
    changed() {
      this.updated = new Date();
      this.render();
    },
    failed(key, error) {
      this.problems.set(key, error);
      this.render();
    },
    reset() {
      this.problems.clear();
      this.render();
    },

    render() {
      const errors = [...this.problems.values()];
      const denied = errors.find((e) => e instanceof HttpError && e.status === 403);
      const banner = $("banner");
      let state = "live";
      if (denied) {
        state = "denied";
        banner.replaceChildren(
          el("strong", {}, "Permission denied. "),
          token.get() ? "The saved ACL token was refused; paste another one." : "This catalog needs an ACL token; paste one below.",
        );
        $("token-form").hidden = false;
      } else if (errors.length) {
        state = "down";
        banner.replaceChildren(
          el("strong", {}, "catalog unreachable, retrying…"),
          el("span", { class: "banner-detail" }, describe(errors[0])),
        );
      }
      banner.hidden = state === "live";
      banner.dataset.state = state;
      $("connection").dataset.state = state;
      $("connection").dataset.live = live.on ? "on" : "off";
      document.body.dataset.connection = state;
      const since = this.updated ? ` · updated ${this.updated.toLocaleTimeString("en-GB")}` : "";
      $("connection-text").textContent = { live: `${live.on ? "live" : "paused"}${since}`, down: "reconnecting…", denied: "token needed" }[state];
    },
  };

  function describe(error) {
    if (error instanceof HttpError) return error.message;
    if (error && error.name === "AbortError") return "request timed out";
    return "no answer from the server";
  }

  /** Follow one API path with blocking queries; call onData whenever its index moves (once, when not live). */
  async function watch(path, onData, signal) {
    let index = 0;
    let failures = 0;
    while (!signal.aborted) {
      try {
        const started = Date.now();
        const result = await consulGet(path, signal, index);
        failures = 0;
        connection.ok(path);
        if (result.index > 0 && result.index < index) {
          index = 0; // the index went backwards (a new server): read everything anew
          continue;
        }
        if (result.index !== index || index === 0) onData(result.body);
        if (!live.on) return;
        if (result.index === index && Date.now() - started < 50) await sleep(1000, signal); // server did not block
        index = result.index;
      } catch (error) {
        if (signal.aborted) return;
        connection.failed(path, error);
        index = 0;
        await sleep(RETRY_MS[Math.min(failures++, RETRY_MS.length - 1)], signal);
      }
    }
  }

  /** Run `task` whenever poke() is called, at most one at a time, retrying until it succeeds. */
  function refresher(key, task, signal) {
    let dirty = false;
    let wake = null;
    const poke = () => {
      dirty = true;
      if (wake) wake();
    };
    signal.addEventListener("abort", poke, { once: true });
    (async () => {
      let failures = 0;
      while (!signal.aborted) {
        if (!dirty) await new Promise((resolve) => { wake = resolve; });
        wake = null;
        if (signal.aborted) return;
        dirty = false;
        try {
          await task();
          failures = 0;
          connection.ok(key);
        } catch (error) {
          if (signal.aborted) return;
          dirty = true;
          connection.failed(key, error);
          await sleep(RETRY_MS[Math.min(failures++, RETRY_MS.length - 1)], signal);
        }
      }
    })();
    return poke;
  }

  // ---- services ---------------------------------------------------------------------

  const catalog = { loaded: false, services: {}, health: new Map(), seen: null };

  function startServices(signal) {
    const refreshHealth = refresher("health", async () => {
      const names = Object.keys(catalog.services);
      const pairs = await Promise.all(names.map(async (name) => {
        const { body } = await consulGet(`/v1/health/service/${encodeURIComponent(name)}`, signal);
        return [name, body || []];
      }));
      if (signal.aborted) return;
      catalog.health = new Map(pairs);
      catalog.loaded = true;
      connection.changed();
      renderServices();
    }, signal);
    // The service list moves on (de)registration; health/state/any on every check change.
    watch("/v1/catalog/services", (body) => { catalog.services = body || {}; refreshHealth(); }, signal);
    watch("/v1/health/state/any", () => refreshHealth(), signal);
  }

  const isMaintenance = (check) => check.CheckID === "_node_maintenance" || check.CheckID.startsWith("_service_maintenance:");

  function instanceHealth(checks) {
    if (checks.some(isMaintenance)) return "maintenance";
    if (checks.some((c) => c.Status === "critical")) return "critical";
    if (checks.some((c) => c.Status === "warning")) return "warning";
    return "passing";
  }

  function instanceKey(name, entry) {
    return `${name}\u0000${entry.Node.Node}\u0000${entry.Service.ID}`;
  }

  function renderServices() {
    const list = $("services-list");
    const names = Object.keys(catalog.services).sort();
    $("services-count").textContent = catalog.loaded ? String(names.length) : "";
    if (!catalog.loaded) {
      list.replaceChildren(el("p", { class: "empty" }, "Loading services…"));
      return;
    }
    const filter = $("services-filter").value.trim().toLowerCase();
    const shown = names.filter((name) => !filter || name.toLowerCase().includes(filter)
      || (catalog.services[name] || []).some((tag) => tag.toLowerCase().includes(filter)));
    const previous = catalog.seen;
    catalog.seen = new Set();
    for (const [name, entries] of catalog.health) for (const entry of entries) catalog.seen.add(instanceKey(name, entry));
    list.replaceChildren(...(shown.length
      ? shown.map((name) => serviceCard(name, catalog.services[name] || [], catalog.health.get(name) || [], previous))
      : [el("p", { class: "empty" }, names.length ? "No service matches the filter." : "No services registered.")]));
  }

  function serviceCard(name, tags, entries, previous) {
    const counts = {};
    for (const entry of entries) {
      const health = instanceHealth(entry.Checks);
      counts[health] = (counts[health] || 0) + 1;
    }
    const worst = HEALTH_ORDER.find((h) => counts[h]) || "empty";
    const summary = HEALTH_ORDER.filter((h) => counts[h]).map((h) => el("span", { class: `pill health-${h}` }, `${counts[h]} ${h}`));
    return el("article", { class: `service health-border-${worst}`, "data-service": name },
      el("header", { class: "service-header" },
        el("h2", {}, name),
        el("span", { class: "service-count" }, `${entries.length} instance${entries.length === 1 ? "" : "s"}`),
        el("span", { class: "summary" }, summary),
        el("span", { class: "tags" }, tags.map(tagChip))),
      entries.length
        ? el("table", { class: "instances" },
          el("thead", {}, el("tr", {}, ["Health", "Instance", "Address", "Checks"].map((h) => el("th", {}, h)))),
          el("tbody", {}, entries.map((entry) => instanceRow(name, entry, previous))))
        : el("p", { class: "empty" }, "No instances."));
  }

  function instanceRow(name, entry, previous) {
    const service = entry.Service;
    const health = instanceHealth(entry.Checks);
    const host = service.Address || entry.Node.Address;
    const address = service.Port ? `${host}:${service.Port}` : host;
    const fresh = previous && !previous.has(instanceKey(name, entry));
    const checks = [...entry.Checks].sort((a, b) => Number(!a.ServiceID) - Number(!b.ServiceID));
    return el("tr", { class: fresh ? "instance fresh" : "instance", "data-instance": service.ID, "data-health": health },
      el("td", {}, el("span", { class: `badge health-${health}` }, health)),
      el("td", {},
        el("div", { class: "mono strong" }, service.ID),
        el("div", { class: "muted small" }, `node ${entry.Node.Node}`),
        (service.Tags || []).length ? el("div", { class: "instance-tags" }, service.Tags.map(tagChip)) : null),
      el("td", { class: "mono" }, address),
      el("td", { class: "checks" }, checks.length ? checks.map(checkLine) : el("span", { class: "muted" }, "no checks")));
  }

  function checkLine(check) {
    const scope = check.ServiceID ? "" : "node · ";
    const status = isMaintenance(check) ? "maintenance" : check.Status;
    return el("div", { class: `check${check.ServiceID ? "" : " node-check"}`, "data-status": check.Status },
      el("div", { class: "check-title" },
        el("span", { class: `dot health-${status}`, title: check.Status }),
        el("span", { class: "check-name" }, `${scope}${check.Name}`),
        el("span", { class: `check-status text-${status}` }, status)),
      check.Notes ? el("div", { class: "check-notes" }, check.Notes) : null,
      check.Output ? el("pre", { class: "check-output" }, check.Output.trim()) : null);
  }

  const tagChip = (tag) => el("span", { class: "tag" }, tag);

  // ---- key/value --------------------------------------------------------------------

  const kv = { loaded: false, entries: [], collapsed: new Set() };

  function startKv(signal) {
    watch("/v1/kv/?recurse", (body) => {
      kv.entries = body || [];
      kv.loaded = true;
      connection.changed();
      renderKv();
    }, signal);
  }

  function decodeValue(base64) {
    if (base64 === null || base64 === undefined) return { text: null };
    const bytes = Uint8Array.from(atob(base64), (ch) => ch.charCodeAt(0));
    try {
      return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes) };
    } catch {
      return { text: null, binary: bytes.length };
    }
  }

  function renderKv() {
    const list = $("kv-list");
    $("kv-count").textContent = kv.loaded ? String(kv.entries.length) : "";
    if (!kv.loaded) {
      list.replaceChildren(el("p", { class: "empty" }, "Loading keys…"));
      return;
    }
    const filter = $("kv-filter").value.trim().toLowerCase();
    const entries = kv.entries.filter((e) => !filter || e.Key.toLowerCase().includes(filter))
      .sort((a, b) => (a.Key < b.Key ? -1 : a.Key > b.Key ? 1 : 0));
    if (!entries.length) {
      list.replaceChildren(el("p", { class: "empty" }, kv.entries.length ? "No key matches the filter." : "The key/value store is empty."));
      return;
    }
    const rows = [];
    let openFolders = [];
    for (const entry of entries) {
      const parts = entry.Key.split("/");
      const leaf = parts.pop();
      let common = 0;
      while (common < parts.length && common < openFolders.length && parts[common] === openFolders[common]) common++;
      openFolders = parts;
      let hidden = parts.slice(0, common).some((_, depth) => kv.collapsed.has(folderPath(parts, depth)));
      for (let depth = common; depth < parts.length && !hidden; depth++) {
        rows.push(folderRow(parts, depth));
        hidden = kv.collapsed.has(folderPath(parts, depth));
      }
      if (hidden || (leaf === "" && !entry.Value)) continue; // inside a collapsed folder, or a bare folder marker key
      rows.push(kvRow(entry, leaf, parts.length));
    }
    list.replaceChildren(el("table", { class: "kv" },
      el("thead", {}, el("tr", {}, el("th", {}, "Key"), el("th", {}, "Value"), el("th", { class: "num" }, "Index"))),
      el("tbody", {}, rows)));
  }

  const folderPath = (parts, depth) => `${parts.slice(0, depth + 1).join("/")}/`;

  function folderRow(parts, depth) {
    const path = folderPath(parts, depth);
    const collapsed = kv.collapsed.has(path);
    const row = el("tr", { class: "kv-folder", "data-folder": path, title: collapsed ? "expand" : "collapse" },
      el("td", { colspan: 3, style: `padding-left: ${12 + depth * 20}px` },
        el("span", { class: "folder-icon" }, collapsed ? "▸ " : "▾ "), `${parts[depth]}/`));
    row.addEventListener("click", () => {
      if (collapsed) kv.collapsed.delete(path);
      else kv.collapsed.add(path);
      renderKv();
    });
    return row;
  }

  function kvRow(entry, leaf, depth) {
    const value = decodeValue(entry.Value);
    let shown;
    if (value.text !== null) shown = el("pre", { class: "kv-value" }, value.text);
    else if (value.binary !== undefined) shown = el("span", { class: "muted" }, `binary, ${value.binary} bytes`);
    else shown = el("span", { class: "muted" }, "no value");
    return el("tr", { class: "kv-key", "data-key": entry.Key },
      el("td", { class: "mono", style: `padding-left: ${12 + depth * 20}px`, title: entry.Key },
        leaf || "(folder value)",
        entry.Flags ? el("span", { class: "tag" }, `flags ${entry.Flags}`) : null),
      el("td", {}, shown),
      el("td", { class: "num muted" }, String(entry.ModifyIndex)));
  }

  // ---- views and token --------------------------------------------------------------

  const views = {
    services: { start: startServices, render: renderServices },
    kv: { start: startKv, render: renderKv },
  };
  let running = null;

  function currentView() {
    return location.hash.replace(/^#\/?/, "").split("/")[0] === "kv" ? "kv" : "services";
  }

  /** Show the view in the address bar and follow only its data (few held connections). */
  function show() {
    if (running) running.abort();
    running = new AbortController();
    connection.reset();
    const name = currentView();
    for (const [other] of Object.entries(views)) $(`view-${other}`).hidden = other !== name;
    for (const link of document.querySelectorAll(".nav-link[data-view]")) link.classList.toggle("active", link.dataset.view === name);
    views[name].render();
    views[name].start(running.signal);
  }

  function renderTokenButton() {
    $("token-toggle").textContent = token.get() ? "ACL token ✓" : "ACL token";
  }

  $("token-toggle").addEventListener("click", () => {
    const form = $("token-form");
    form.hidden = !form.hidden;
    if (!form.hidden) $("token-input").focus();
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token.set($("token-input").value.trim());
    $("token-input").value = "";
    $("token-form").hidden = true;
    renderTokenButton();
    show();
  });
  $("token-clear").addEventListener("click", () => {
    token.set("");
    $("token-input").value = "";
    renderTokenButton();
    show();
  });
  $("live-toggle").checked = live.on;
  $("live-toggle").addEventListener("change", () => {
    live.set($("live-toggle").checked);
    show();
  });
  $("services-filter").addEventListener("input", renderServices);
  $("kv-filter").addEventListener("input", renderKv);
  window.addEventListener("hashchange", show);

  renderTokenButton();
  show();
})();
