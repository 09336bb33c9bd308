// One task at a time: history search, the task's detail, and revoke with a confirmation.
// The API token is asked for when first needed and kept in this tab's sessionStorage only.

import { byId, setText } from "./view.js";

const TOKEN_KEY = "celery-observe-token";
const heldToken = () => sessionStorage.getItem(TOKEN_KEY);

// A request to a path relative to the page, with the token when the tab holds one.
export async function request(path, { method = "GET", signal } = {}) {
  const headers = { Accept: "application/json" };
  const token = heldToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method, headers, signal, cache: "no-store" });
  const body = await response.json().catch(() => null);
  return { status: response.status, body };
}

const problem = (status, body) => `The API answered ${status}${body && body.detail ? `: ${body.detail}` : ""}.`;

// The history search the form asks for, or null when it asks for nothing (live history).
// A name without a glob character matches anywhere in the task name.
export function searchPath(form) {
  const data = new FormData(form);
  const params = new URLSearchParams({ limit: "50" });
  const task = String(data.get("task") || "").trim();
  if (task) params.set("task", /[*?[]/.test(task) ? task : `*${task}*`);
  const stateName = String(data.get("state") || "");
  if (stateName) params.set("state", stateName);
  const prefix = String(data.get("id_prefix") || "").trim();
  if (prefix) params.set("id_prefix", prefix);
  return [...params.keys()].length > 1 ? `tasks?${params}` : null;
}

export function notify(text) {
  const notice = byId("notice");
  setText(notice, text);
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => setText(notice, ""), 6000);
}

// The confirmation before a revoke (or terminate), asking for the token if the tab has none.
export class Revoker {
  constructor() {
    this.dialog = byId("confirm");
    this.field = byId("token-field");
    this.input = byId("token-input");
    this.error = byId("confirm-error");
    this.pending = null;
    byId("confirm-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.confirm();
    });
    byId("confirm-cancel").addEventListener("click", () => this.dialog.close());
  }

  ask(id, terminate) {
    this.pending = { id, terminate };
    setText(byId("confirm-title"), terminate ? "Terminate task?" : "Revoke task?");
    setText(byId("confirm-text"), terminate
      ? `Task ${id} is revoked, and stopped if it is running: its pool process gets SIGTERM (prefork; a threads or solo pool cannot stop a running task).`
      : `Task ${id} is revoked: workers discard it instead of starting it (a threads pool that already holds it may still run it).`);
    setText(byId("confirm-ok"), terminate ? "Terminate" : "Revoke");
    setText(this.error, "");
    this.field.hidden = Boolean(heldToken());
    this.dialog.showModal();
    (this.field.hidden ? byId("confirm-ok") : this.input).focus();
  }

  async confirm() {
    const { id, terminate } = this.pending;
    if (!heldToken()) {
      const given = this.input.value.trim();
      if (!given) {
        setText(this.error, "Enter the API token (the one given to observe serve --token-file).");
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, given);
      this.input.value = "";
    }
    const path = `tasks/${encodeURIComponent(id)}/revoke?terminate=${terminate}`;
    let answer;
    try {
      answer = await request(path, { method: "POST" });
    } catch {
      setText(this.error, "The API cannot be reached; try again when the page is live.");
      return;
    }
    if (answer.status === 202) {
      this.dialog.close();
      notify(`${terminate ? "Terminated" : "Revoked"} task ${id}.`);
      return;
    }
    if (answer.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      this.field.hidden = false;
      this.input.focus();
    }
    setText(this.error, problem(answer.status, answer.body));
  }
}

// The task's detail: the result backend's state and, while a worker holds the task, its
// arguments as the worker shows them (redacted unless it opts in).
export class TaskDetail {
  constructor(revoker, heldTask, revokeEnabled) {
    this.dialog = byId("detail");
    this.revoker = revoker;
    this.heldTask = heldTask;
    this.revokeEnabled = revokeEnabled;
    this.id = null;
    byId("detail-close").addEventListener("click", () => this.dialog.close());
    for (const name of ["revoke", "terminate"]) {
      byId(`detail-${name}`).addEventListener("click", () => {
        this.dialog.close();
        this.revoker.ask(this.id, name === "terminate");
      });
    }
  }

  async show(id) {
    this.id = id;
    setText(byId("detail-title"), "Task");
    setText(byId("detail-id"), id);
    for (const name of ["state", "worker", "result", "args"]) setText(byId(`detail-${name}`), "…");
    const traceback = byId("detail-traceback");
    traceback.hidden = true;
    setText(byId("detail-message"), "");
    byId("detail-revoke").hidden = byId("detail-terminate").hidden = true;
    if (!this.dialog.open) this.dialog.showModal();
    let answer;
    try {
      answer = await request(`tasks/${encodeURIComponent(id)}/status`);
    } catch {
      answer = { status: 0, body: { detail: "the API cannot be reached" } };
    }
    if (this.id !== id) return;
    const held = this.heldTask(id);
    setText(byId("detail-args"), held ? `args ${held.args}, kwargs ${held.kwargs}` : "shown only while a worker holds the task");
    if (answer.status !== 200) {
      for (const name of ["state", "worker", "result"]) setText(byId(`detail-${name}`), "–");
      setText(byId("detail-message"), problem(answer.status, answer.body));
      return;
    }
    const task = answer.body;
    setText(byId("detail-title"), held ? held.name : "Task");
    setText(byId("detail-state"), task.state);
    setText(byId("detail-worker"), task.worker || "–");
    setText(byId("detail-result"), task.ready ? JSON.stringify(task.result) : "not ready");
    if (task.traceback) {
      setText(traceback, task.traceback);
      traceback.hidden = false;
    }
    const canRevoke = this.revokeEnabled() && !task.ready;
    byId("detail-revoke").hidden = byId("detail-terminate").hidden = !canRevoke;
  }
}
