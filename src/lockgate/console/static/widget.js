/* lockgate assistant panel: <lockgate-assistant gateway="https://GATEWAY" token="lgw_...">
 *
 * A web component with its own shadow DOM (no CSS leaks in or out). It streams answers from
 * POST {gateway}/v1/widget/chat with a short-lived widget token that the host page's backend
 * minted (never a long-lived key), shows citations as links, and sends thumbs up/down and a
 * comment to {gateway}/v1/widget/feedback. Text from the model and from documents is only
 * ever set with textContent, never parsed as HTML. Keyboard: every control is a native
 * button/textarea; Enter sends, Shift+Enter adds a line.
 *
 * Attributes: gateway (required), token (required), title (header text),
 * doc-base (prefix for citation links: doc-base + encodeURIComponent(doc_id); a doc id that
 * is itself an http(s) URL links to that URL).
 * Events: "lockgate-answer" {request_id, text, citations}, "lockgate-feedback" {request_id, thumbs}.
 */
(function () {
  "use strict";
  if (window.customElements && window.customElements.get("lockgate-assistant")) { return; }

  var CSS = [
    ":host{display:block;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1f24;",
    "max-width:34em;border:1px solid #c4ccd4;border-radius:8px;background:#fff;}",
    ".head{padding:.5em .8em;font-weight:600;border-bottom:1px solid #d0d7de;background:#f4f6f8;border-radius:8px 8px 0 0;margin:0;font-size:1em}",
    ".log{padding:.5em .8em;max-height:26em;overflow:auto}",
    ".msg{margin:.4em 0;white-space:pre-wrap;word-break:break-word}",
    ".user{color:#0b3d6e;font-weight:600}",
    ".bot{color:#1b1f24}",
    ".err{color:#a4161a;font-weight:600}",
    ".cites{margin:.2em 0 .4em 1.2em;padding:0;font-size:.92em}",
    ".cites a{color:#0b5cad}",
    ".fb{display:flex;gap:.4em;align-items:center;margin:.2em 0 .6em}",
    ".fb button{font:inherit;border:1px solid #8c959f;background:#fff;color:#1b1f24;border-radius:4px;padding:.1em .6em;cursor:pointer}",
    ".fb button[aria-pressed=true]{background:#0b5cad;color:#fff;border-color:#0b5cad}",
    ".fb .thanks{color:#2b6a30;font-size:.9em}",
    "form{display:flex;gap:.4em;padding:.5em .8em;border-top:1px solid #d0d7de}",
    "textarea{flex:1;font:inherit;padding:.3em;border:1px solid #8c959f;border-radius:4px;resize:vertical;min-height:2.4em}",
    "button.send{font:inherit;background:#0b5cad;color:#fff;border:1px solid #0b5cad;border-radius:4px;padding:.3em .9em;cursor:pointer}",
    "button:focus-visible,textarea:focus-visible,a:focus-visible{outline:3px solid #f5a623;outline-offset:1px}",
    "button[disabled]{opacity:.6;cursor:default}"
  ].join("");

  var FALLBACK = "The assistant is unavailable right now. Please try again in a few minutes.";

  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) { n.className = cls; }
    if (text !== undefined && text !== null) { n.textContent = String(text); }
    return n;
  }

  function safeHref(base, docId) {
    var id = String(docId || "");
    if (/^https?:\/\//i.test(id)) { return id; }
    if (!base) { return null; }
    var href = base + encodeURIComponent(id);
    return /^(https?:\/\/|\/)/i.test(href) ? href : null;
  }

  class LockgateAssistant extends HTMLElement {
    constructor() {
      super();
      this._history = [];
      this._busy = false;
      var root = this.attachShadow({ mode: "open" });
      var style = el("style");
      style.textContent = CSS;
      root.appendChild(style);
      var head = el("h2", "head", this.getAttribute("title") || "Assistant");
      head.id = "lg-head";
      this._log = el("div", "log");
      this._log.setAttribute("role", "log");
      this._log.setAttribute("aria-live", "polite");
      this._log.setAttribute("aria-labelledby", "lg-head");
      var form = el("form");
      form.setAttribute("aria-label", "Ask the assistant");
      this._input = el("textarea");
      this._input.rows = 2;
      this._input.setAttribute("aria-label", "Your question");
      this._input.placeholder = "Ask a question";
      this._send = el("button", "send", "Send");
      this._send.type = "submit";
      form.appendChild(this._input);
      form.appendChild(this._send);
      var self = this;
      form.addEventListener("submit", function (ev) { ev.preventDefault(); self.ask(); });
      this._input.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); self.ask(); }
      });
      root.appendChild(head);
      root.appendChild(this._log);
      root.appendChild(form);
    }

    get gateway() { return (this.getAttribute("gateway") || "").replace(/\/+$/, ""); }
    get token() { return this.getAttribute("token") || ""; }

    _headers() {
      return { "Authorization": "Bearer " + this.token, "Content-Type": "application/json" };
    }

    _fail(node, message) {
      node.className = "msg err";
      node.setAttribute("role", "alert");
      node.textContent = message || FALLBACK;
    }

    async ask() {
      var question = this._input.value.trim();
      if (!question || this._busy) { return; }
      this._busy = true;
      this._send.disabled = true;
      this._input.value = "";
      this._log.appendChild(el("p", "msg user", question));
      var answer = el("p", "msg bot", "");
      answer.setAttribute("aria-busy", "true");
      this._log.appendChild(answer);
      this._history.push({ role: "user", content: question });
      var text = "";
      var done = null;
      try {
        var resp = await fetch(this.gateway + "/v1/widget/chat", {
          method: "POST", mode: "cors", credentials: "omit", headers: this._headers(),
          body: JSON.stringify({ messages: this._history.slice(-20) })
        });
        if (!resp.ok || !resp.body) {
          var msg = FALLBACK;
          try {
            var err = await resp.json();
            if (err && err.error && err.error.message && resp.status < 500) { msg = err.error.message; }
          } catch (e) { /* not JSON */ }
          this._fail(answer, msg);
          this._history.pop();
          return;
        }
        var reader = resp.body.getReader();
        var decoder = new TextDecoder();
        var buf = "";
        for (;;) {
          var part = await reader.read();
          if (part.done) { break; }
          buf += decoder.decode(part.value, { stream: true });
          var cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            var line = buf.slice(0, cut).trim();
            buf = buf.slice(cut + 2);
            if (line.indexOf("data: ") !== 0) { continue; }
            var ev = JSON.parse(line.slice(6));
            if (ev.type === "delta") { text += ev.text; answer.textContent = text; }
            else if (ev.type === "done") { done = ev; }
            else if (ev.type === "error") { this._fail(answer, FALLBACK); this._history.pop(); return; }
          }
        }
        if (!done) { this._fail(answer, FALLBACK); this._history.pop(); return; }
        answer.textContent = text;
        this._history.push({ role: "assistant", content: text });
        this._citations(done.citations || []);
        this._feedback(done.request_id);
        this.dispatchEvent(new CustomEvent("lockgate-answer", {
          bubbles: true, composed: true,
          detail: { request_id: done.request_id, text: text, citations: done.citations || [] }
        }));
      } catch (e) {
        this._fail(answer, FALLBACK);
        this._history.pop();
      } finally {
        answer.removeAttribute("aria-busy");
        this._busy = false;
        this._send.disabled = false;
        this._log.scrollTop = this._log.scrollHeight;
      }
    }

    _citations(cites) {
      if (!cites.length) { return; }
      var list = el("ol", "cites");
      list.setAttribute("aria-label", "Sources");
      var base = this.getAttribute("doc-base") || "";
      cites.forEach(function (c) {
        var item = el("li");
        if (c.n) { item.value = c.n; }
        var label = (c.title || c.doc_id || "source");
        var href = safeHref(base, c.doc_id);
        if (href) {
          var a = el("a", null, label);
          a.href = href;
          a.target = "_blank";
          a.rel = "noopener noreferrer";
          item.appendChild(a);
        } else {
          item.appendChild(el("span", null, label));
        }
        list.appendChild(item);
      });
      this._log.appendChild(list);
    }

    _feedback(requestId) {
      var self = this;
      var row = el("div", "fb");
      row.setAttribute("role", "group");
      row.setAttribute("aria-label", "Was this answer helpful?");
      var up = el("button", null, "Helpful");
      up.type = "button";
      up.setAttribute("aria-label", "Helpful");
      up.setAttribute("aria-pressed", "false");
      var down = el("button", null, "Not helpful");
      down.type = "button";
      down.setAttribute("aria-label", "Not helpful");
      down.setAttribute("aria-pressed", "false");
      var note = el("span", "thanks", "");
      row.appendChild(up);
      row.appendChild(down);
      row.appendChild(note);
      function send(thumbs, button) {
        up.disabled = true; down.disabled = true;
        button.setAttribute("aria-pressed", "true");
        var body = { request_id: requestId, thumbs: thumbs };
        fetch(self.gateway + "/v1/widget/feedback", {
          method: "POST", mode: "cors", credentials: "omit", headers: self._headers(),
          body: JSON.stringify(body)
        }).then(function (r) {
          note.textContent = r.ok ? "Thanks for the feedback." : "Feedback could not be sent.";
          if (r.ok) {
            self.dispatchEvent(new CustomEvent("lockgate-feedback", {
              bubbles: true, composed: true, detail: { request_id: requestId, thumbs: thumbs }
            }));
            if (thumbs === "down") { self._commentBox(requestId, row); }
          }
        }).catch(function () { note.textContent = "Feedback could not be sent."; });
      }
      up.addEventListener("click", function () { send("up", up); });
      down.addEventListener("click", function () { send("down", down); });
      this._log.appendChild(row);
    }

    _commentBox(requestId, row) {
      var self = this;
      var form = el("form");
      form.setAttribute("aria-label", "Tell us what was wrong");
      var box = el("textarea", "comment");
      box.rows = 2;
      box.setAttribute("aria-label", "What was wrong with this answer?");
      var btn = el("button", "send", "Send comment");
      btn.type = "submit";
      form.appendChild(box);
      form.appendChild(btn);
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var comment = box.value.trim();
        if (!comment) { return; }
        btn.disabled = true;
        fetch(self.gateway + "/v1/widget/feedback", {
          method: "POST", mode: "cors", credentials: "omit", headers: self._headers(),
          body: JSON.stringify({ request_id: requestId, comment: comment })
        }).then(function (r) {
          form.replaceWith(el("p", "msg thanks", r.ok ? "Comment sent." : "Comment could not be sent."));
        }).catch(function () {
          form.replaceWith(el("p", "msg err", "Comment could not be sent."));
        });
      });
      row.after(form);
      box.focus();
    }
  }

  window.customElements.define("lockgate-assistant", LockgateAssistant);
})();
