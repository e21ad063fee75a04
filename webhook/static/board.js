// The live board: polls /status and redraws; relative times tick every second.
// Plain DOM, no framework, no build step. Text from the server only ever goes
// through textContent, never innerHTML.
"use strict";

(function () {
  const POLL_MS = Number(document.body.dataset.pollMs) || 2000;
  const token = new URLSearchParams(window.location.search).get("token");
  const expanded = new Set();     // release ids whose audit trail is open
  const audits = new Map();       // release id -> {seen, entries}
  const loading = new Set();      // release ids whose audit trail is being fetched
  let doc = null;                 // the last /status answer
  let skew = 0;                   // server clock minus ours, in seconds
  let lastOk = null;              // when the last poll succeeded (our clock)
  let lastError = null;

  const RUNNING = new Set(["checking", "deploying", "testing"]);
  const BAD = new Set(["failed", "rejected"]);

  // Bidirectional controls in server text (a tag, a message) would make it read in
  // another order than it is: "v1-\u202enimda" shows as "v1-admin". Shown as marks: the
  // same controls and marks as chat messages get (worker/chatmessages.py, visible_bidi).
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  function shown(text) {
    return text.replace(BIDI, c =>
      "<U+" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0") + ">");
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : shown(String(value)));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(shown(String(child))));
    }
    return node;
  }

  function now() { return Date.now() / 1000 + skew; }

  function span(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h " +
      Math.floor((seconds % 3600) / 60) + " min";
    return Math.floor(seconds / 86400) + " d";
  }

  function ago(ts) {
    if (typeof ts !== "number") return "never";
    const seconds = now() - ts;
    return seconds < 5 ? "just now" : span(seconds) + " ago";
  }

  function stamp(ts) {
    return typeof ts === "number" ? new Date(ts * 1000).toLocaleString() : "";
  }

  function when(ts) {
    return el("time", {datetime: typeof ts === "number" ? new Date(ts * 1000).toISOString() : null,
                       title: stamp(ts)}, ago(ts));
  }

  function stateBadge(state) {
    const kind = BAD.has(state) ? "bad" : RUNNING.has(state) ? "running"
      : state === "awaiting_promotion" ? "awaiting" : state === "live" ? "live" : "other";
    return el("span", {class: "state state-" + kind}, (state || "").replace(/_/g, " "));
  }

  function swatch(color) {
    return el("span", {class: "swatch swatch-" + color, title: color}, color);
  }

  // -- apps ---------------------------------------------------------------------------------

  function colorPanel(name, info) {
    const live = info.live;
    const body = info.exists === false
      ? [el("p", {class: "absent"}, "no Deployment")]
      : info.exists === null || info.exists === undefined
        ? [el("p", {class: "absent"}, "not seen yet")]
        : [
          el("p", {class: "version"}, info.version || "?"),
          el("p", {class: "pods " + (info.is_ready ? "ok" : "warn")},
            `${info.ready}/${info.desired} pods ready`),
          el("p", {class: "meta"}, "release ", el("code", {}, info.release || "none")),
          el("p", {class: "meta"}, "image ", el("code", {}, info.image || "?")),
        ];
    return el("div", {class: `color color-${name} ${live ? "is-live" : "is-idle"}`,
                      "data-color": name, "data-live": live ? "true" : "false"},
      el("div", {class: "color-head"}, el("span", {class: "color-name"}, name.toUpperCase()),
        live ? el("span", {class: "live-badge"}, "LIVE") : el("span", {class: "idle"}, "idle")),
      body);
  }

  function appCard(name, app) {
    const live = app.live || {};
    const snap = app.snapshot;
    const heading = live.color
      ? el("div", {class: `live-line live-${live.color}`},
          el("span", {class: "live-color"}, live.color.toUpperCase() + " is live"),
          live.release ? el("span", {}, " · ", live.release.tag) : null,
          " · since ", when(live.since))
      : el("div", {class: "live-line live-none"}, "nothing is live");
    // The cluster's live colour and the records' live release disagree: say how, plainly.
    const conflict = live.conflict
      ? el("div", {class: "conflict"}, el("strong", {}, "Cluster and records disagree: "),
          live.conflict)
      : null;
    const snapLine = snap
      ? el("span", {class: "snapshot" + (snap.error ? " stale" : "")},
          "cluster seen ", when(snap.taken_at),
          snap.error ? el("span", {class: "error-text"}, " · last look failed: " + snap.error) : null)
      : el("span", {class: "snapshot stale"}, "cluster not seen yet");
    return el("article", {class: "app", "data-app": name},
      el("header", {class: "app-head"}, el("h2", {}, name),
        el("span", {class: "muted"}, "queue ", app.queue, " · "), snapLine),
      heading,
      conflict,
      el("div", {class: "colors"}, ["blue", "green"].map((c) => colorPanel(c, app.colors[c]))),
      (app.awaiting || []).map((r) => el("div", {class: "awaiting"},
        el("strong", {}, r.tag), ` awaits promotion on ${r.color} (ready `, when(r.updated_at),
        ") · ", el("code", {}, r.id))),
      lastFailure(name),
      (app.drift || []).map((d) => el("div", {class: "drift", "data-kind": d.kind},
        el("strong", {}, "Drift: "), d.message)));
  }

  function lastFailure(name) {
    // The app's newest release, when it failed: a person should not have to scroll for it.
    const newest = doc.releases.find((r) => r.app === name);
    if (!newest || !BAD.has(newest.state)) return null;
    return el("div", {class: "failure"}, el("strong", {}, `${newest.tag} ${newest.state}`),
      " ", when(newest.updated_at), ": ", newest.error || "no reason recorded");
  }

  // -- queues -------------------------------------------------------------------------------

  function jobLine(job) {
    return [el("strong", {}, job.action === "release" ? "release" : job.action || "job"), " ",
            el("code", {}, job.release || job.job_id), job.app ? " (" + job.app + ")" : ""];
  }

  function queueCard(q) {
    const worker = q.worker || {};
    const running = q.running;
    return el("div", {class: "queue", "data-queue": q.queue},
      el("h3", {}, q.queue, " ", el("span", {class: "muted"}, (q.apps || []).join(", "))),
      el("p", {class: "worker " + (worker.alive ? "alive" : "dead")},
        el("span", {class: "dot"}), worker.alive
          ? ["worker alive · last beat ", when(worker.at)]
          : "no worker is serving this queue"),
      running
        ? el("p", {class: "running"}, "Running: ", jobLine(running),
            running.step ? [" · step ", el("strong", {}, running.step)] : "",
            " · for ", span(now() - (running.started_at || now())))
        : el("p", {class: "muted"}, "Nothing running."),
      q.waiting && q.waiting.length
        ? el("ol", {class: "waiting"}, q.waiting.map((job) =>
            el("li", {value: job.position}, jobLine(job), " · waiting ", when(job.enqueued_at))))
        : el("p", {class: "muted"}, "No jobs waiting."),
      (q.failed || []).length
        ? el("ul", {class: "failed"}, q.failed.map((job) =>
            el("li", {}, jobLine(job), " failed ", when(job.ended_at), ": ",
              el("span", {class: "error-text"}, job.error || "no reason recorded"))))
        : null);
  }

  // -- releases -----------------------------------------------------------------------------

  // What the open trail was fetched for: a state change moves updated_at, a note (a
  // command requested, say) only adds an entry, so both are compared.
  function auditMark(r) { return r.updated_at + "/" + r.audit_entries; }

  function auditRows(r) {
    const cached = audits.get(r.id);
    if (!cached || cached.seen !== auditMark(r)) {
      loadAudit(r);
      if (!cached) return [el("tr", {class: "audit"}, el("td", {colspan: 7}, "loading…"))];
    }
    return [el("tr", {class: "audit"}, el("td", {colspan: 7}, el("ol", {},
      cached.entries.map((e) => el("li", {},
        el("time", {title: stamp(e.at)}, new Date(e.at * 1000).toLocaleTimeString()), " ",
        el("strong", {}, e.actor), " ", e.step,
        e.state_to ? [" ", stateBadge(e.state_from || ""), " → ", stateBadge(e.state_to)] : "",
        " ", e.message)))))];
  }

  function loadAudit(r) {
    if (loading.has(r.id)) return;
    loading.add(r.id);
    const headers = {Accept: "application/json"};
    if (token) headers.Authorization = "Bearer " + token;  // release reads take the status token
    fetch("api/releases/" + encodeURIComponent(r.id), {headers})
      .then((answer) => answer.json())
      .then((body) => {
        audits.set(r.id, {seen: auditMark(r), entries: body.audit || []});
        render();
      })
      .catch(() => {})
      .finally(() => loading.delete(r.id));
  }

  function releaseRows(r) {
    const open = expanded.has(r.id);
    const toggle = () => { if (open) expanded.delete(r.id); else expanded.add(r.id); render(); };
    const row = el("tr", {class: "release" + (BAD.has(r.state) ? " bad" : ""),
                          "data-release": r.id, "data-state": r.state, onclick: toggle,
                          title: "show the audit trail"},
      el("td", {}, el("strong", {}, r.tag), el("br"), el("code", {class: "small"}, r.id)),
      el("td", {}, r.app), el("td", {}, swatch(r.color)),
      el("td", {}, stateBadge(r.state), r.step ? " " + r.step : "",
        r.error ? el("div", {class: "error-text reason"}, r.error) : null),
      el("td", {}, r.actor), el("td", {}, span(r.duration)), el("td", {}, when(r.updated_at)));
    return open ? [row, ...auditRows(r)] : [row];
  }

  // -- drawing and polling --------------------------------------------------------------------

  function render() {
    const connection = document.getElementById("connection");
    if (lastError) {
      connection.className = "connection down";
      connection.textContent = `cannot reach the server (${lastError}); last update ` +
        (lastOk ? span(Date.now() / 1000 - lastOk) + " ago" : "never");
    } else if (lastOk) {
      connection.className = "connection up";
      connection.textContent = "live · updated " + span(Date.now() / 1000 - lastOk) + " ago";
    }
    if (!doc) return;
    const names = Object.keys(doc.apps).sort();
    document.getElementById("apps").replaceChildren(...names.map((n) => appCard(n, doc.apps[n])));
    document.getElementById("queues").replaceChildren(...doc.queues.map(queueCard));
    document.querySelector("#releases tbody").replaceChildren(
      ...doc.releases.flatMap(releaseRows));
  }

  async function poll() {
    try {
      const headers = {Accept: "application/json"};
      if (token) headers.Authorization = "Bearer " + token;
      const answer = await fetch("status", {headers, cache: "no-store"});
      const body = await answer.json();
      if (!answer.ok) throw new Error(body.message || "HTTP " + answer.status);
      doc = body;
      skew = body.generated_at - Date.now() / 1000;
      lastOk = Date.now() / 1000;
      lastError = null;
    } catch (error) {
      lastError = error.message || String(error);
    }
    render();
    window.setTimeout(poll, POLL_MS);
  }

  window.setInterval(render, 1000);
  poll();
})();
