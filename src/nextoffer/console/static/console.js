// nextoffer console: small progressive enhancements. Every page works without this file.
"use strict";

(function () {
  const main = document.getElementById("main");
  const csrf = main ? main.dataset.csrf || "" : "";

  // -- sign-in link: credentials in the fragment (never sent to the server) fill the form.
  const login = document.getElementById("login-form");
  function fillFromLink() {
    if (!login || location.hash.length <= 1) return;
    const values = new URLSearchParams(location.hash.slice(1));
    for (const name of ["org", "sandbox", "apiKey", "accessToken"]) {
      const input = login.elements.namedItem(name);
      if (input && values.get(name)) input.value = values.get(name);
    }
    history.replaceState(null, "", location.pathname + location.search);
  }
  fillFromLink();
  window.addEventListener("hashchange", fillFromLink);

  // -- a form brought back by signing in (its session had ended) is answered at the
  // sign-in's address: the address bar shows the form's own, which a reload then opens.
  const editor = document.getElementById("editor");
  if (editor && location.pathname === "/console/login") {
    history.replaceState(null, "", new URL(editor.action).pathname);
  }

  // -- confirmations before destructive buttons.
  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
  });

  // -- a form is sent once: a second click (or Enter) while the answer is on its way
  // would send it again, and the server would create the object twice. The page that
  // answers replaces this one; back to it from the history, the form is sendable again.
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (event.defaultPrevented || form.method.toLowerCase() !== "post") return;
    if (form.dataset.sending === "1") {
      event.preventDefault();
      return;
    }
    form.dataset.sending = "1";
    form.setAttribute("aria-busy", "true");
  });
  window.addEventListener("pageshow", function () {
    for (const form of document.querySelectorAll("form[data-sending]")) {
      delete form.dataset.sending;
      form.removeAttribute("aria-busy");
    }
  });

  // -- a new-object form's "once" value: the server creates one object per value. Back
  // to a form already sent, the browser refills what was typed but the page brings a new
  // value; the one it was sent with is put back, so Create opens the object it made.
  const arrival = performance.getEntriesByType("navigation")[0];
  const back = arrival !== undefined && arrival.type === "back_forward";
  for (const once of document.querySelectorAll("input[name=once]")) {
    const key = "nextoffer-once:" + location.pathname + location.search;
    const sent = sessionStorage.getItem(key);
    if (back && sent) once.value = sent;
    once.form.addEventListener("submit", function () {
      sessionStorage.setItem(key, once.value);
    });
  }

  // -- repeated rows (an offer's representations, a decision's criteria): the page has
  // one blank row; "Add another" adds more before saving (without this script, a save
  // brings a new blank row). The blank row as the page came is the pattern: its field
  // names (representations-2-placement) take the next index.
  for (const group of document.querySelectorAll("#editor fieldset.group")) {
    const rows = group.querySelectorAll("fieldset.row");
    const blank = rows[rows.length - 1];
    const first = blank && blank.querySelector("[name]");
    const found = first && /^([A-Za-z]+)-(\d+)-/.exec(first.name);
    if (!found) continue;
    const pattern = blank.cloneNode(true);
    for (const mark of pattern.querySelectorAll(".errors")) mark.remove();
    for (const mark of pattern.querySelectorAll(".invalid")) mark.classList.remove("invalid");
    const legend = pattern.querySelector("legend");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = legend ? legend.textContent.replace(/^Add an? /, "Add another ") : "Add";
    let next = Number(found[2]) + 1;
    button.addEventListener("click", function () {
      const row = pattern.cloneNode(true);
      const from = found[1] + "-" + found[2] + "-";
      const to = found[1] + "-" + next + "-";
      next += 1;
      for (const element of row.querySelectorAll("[name], [id], [for], [aria-describedby]")) {
        for (const attribute of ["name", "id", "for", "aria-describedby"]) {
          const value = element.getAttribute(attribute);
          if (value) element.setAttribute(attribute, value.split(from).join(to));
        }
        element.removeAttribute("aria-invalid");
      }
      group.insertBefore(row, button);
      const focus = row.querySelector("select, input, textarea");
      if (focus) focus.focus();
    });
    group.appendChild(button);
  }

  // -- an offer's audience: the segment rows show when it is segments, the rule when it
  // is not (without this script both always show, and count only then). Choosing a
  // rule for "all visitors" makes the audience the rule, as the server reads it.
  const audience = document.getElementById("audience");
  const segments = document.getElementById("segments-group");
  const match = document.getElementById("segmentsMatch");
  const rule = document.getElementById("rule");
  if (audience && segments && match) {
    const showSegments = function () {
      const shown = audience.value === "segments";
      segments.hidden = !shown;
      match.closest(".field").hidden = !shown;
      if (rule) rule.closest(".field").hidden = shown;
    };
    audience.addEventListener("change", showSegments);
    if (rule) {
      rule.addEventListener("change", function () {
        if (rule.value && audience.value === "none") {
          audience.value = "eligibilityRule";
          showSegments();
        }
      });
    }
    showSegments();
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    return response.json();
  }

  // -- PQL: live checking and highlighting as you type, inside the editor itself.
  // The overlay technique: the coloured copy is a <pre> behind the textarea, with the same
  // box and font metrics (console.css, .pql-editor); the textarea's own text is
  // transparent, so only its caret and selection show over the colours. The <pre> follows
  // the textarea's scrolling. Without this script the textarea is an ordinary one.
  function render(pre, source, tokens, error) {
    pre.textContent = "";
    let at = 0;
    const units = unitsAt(source);
    const errorAt = error ? offsetOf(source, units, error.line, error.column) : -1;
    const pieces = [];
    for (const [from, to, kind] of tokens) {
      if (to >= units.length) continue; // tokens of an older text
      const start = units[from];
      const end = units[to];
      if (start < at) continue;
      if (start > at) pieces.push([at, start, null]);
      pieces.push([start, end, kind]);
      at = end;
    }
    if (at < source.length) pieces.push([at, source.length, null]);
    for (const [start, end, kind] of pieces) {
      const span = document.createElement("span");
      if (kind) span.className = "tok-" + kind;
      span.textContent = source.slice(start, end);
      if (errorAt >= start && errorAt < end) span.classList.add("tok-error");
      pre.appendChild(span);
    }
    if (errorAt >= source.length) {
      const mark = document.createElement("span");
      mark.className = "tok-error";
      mark.textContent = " ";
      pre.appendChild(mark);
    }
    // A last empty line still takes its height (as it does in the textarea).
    pre.appendChild(document.createTextNode("\n"));
  }

  // The server counts characters (code points, as Python's strings do), JavaScript's
  // strings UTF-16 units: units[n] is where the n-th character starts (an emoji is two).
  function unitsAt(source) {
    const units = [0];
    let n = 0;
    for (const char of source) {
      n += char.length;
      units.push(n);
    }
    return units;
  }

  // The UTF-16 offset of a line and column (a textarea's value ends its lines with "\n").
  function offsetOf(source, units, line, column) {
    const lines = source.split("\n");
    let characters = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) {
      characters += Array.from(lines[i]).length + 1;
    }
    const index = characters + column - 1;
    return index < units.length ? units[index] : source.length;
  }

  for (const box of document.querySelectorAll(".pql")) {
    const area = box.querySelector("textarea");
    const pre = box.querySelector(".pql-highlight");
    const status = box.querySelector(".pql-status");
    const kind = box.dataset.pqlKind;
    // The editor: the <pre> and the textarea in one box, the <pre> underneath.
    const editor = document.createElement("div");
    editor.className = "pql-editor";
    area.parentNode.insertBefore(editor, area);
    editor.appendChild(pre);
    editor.appendChild(area);
    function follow() {
      pre.scrollTop = area.scrollTop;
      pre.scrollLeft = area.scrollLeft;
    }
    area.addEventListener("scroll", follow);
    let timer = null;
    let asked = 0;
    let tokens = [];
    let checked = ""; // the text ``tokens`` are of
    async function check() {
      const source = area.value;
      const ticket = ++asked;
      let answer;
      try {
        answer = await post("/console/pql/check", { source: source, kind: kind });
      } catch (failure) {
        status.textContent = "Could not check the rule just now.";
        return;
      }
      if (ticket !== asked) return; // a newer check is on its way
      tokens = answer.tokens || [];
      checked = source;
      render(pre, source, tokens, answer.error);
      follow();
      if (answer.ok) {
        status.textContent = "✓ Valid " + (kind === "formula" ? "formula" : "rule");
        status.className = "pql-status ok";
        area.setAttribute("aria-invalid", "false");
      } else {
        const e = answer.error || { message: "invalid" };
        status.textContent = "Line " + e.line + ", column " + e.column + ": " + e.message;
        status.className = "pql-status bad";
        area.setAttribute("aria-invalid", "true");
      }
    }
    area.addEventListener("input", function () {
      // The text shows at once: coloured up to the first change since the last check,
      // plain after it until the check answers.
      const source = area.value;
      let same = 0;
      while (same < source.length && same < checked.length && source[same] === checked[same]) {
        same++;
      }
      render(pre, source, tokens.filter(function (t) { return t[1] <= same; }), null);
      follow();
      clearTimeout(timer);
      timer = setTimeout(check, 150);
    });
    render(pre, area.value, [], null);
    box.classList.add("pql-overlay");
    check();
  }

  // -- PQL: test against a profile.
  const run = document.getElementById("pql-test-run");
  if (run) {
    const out = document.getElementById("pql-test-result");
    const section = run.closest(".pql-test");
    out.textContent = "";
    run.addEventListener("click", async function () {
      const area = document.querySelector(".pql textarea");
      const profile = document.getElementById("pql-profile").value;
      const answer = await post("/console/pql/test", {
        source: area.value,
        profile: profile,
        kind: section.dataset.pqlKind,
      });
      if (answer.ok) {
        out.textContent = "Result: " + JSON.stringify(answer.result);
        out.className = answer.result === true ? "ok" : "bad";
      } else {
        const e = answer.error || {};
        out.textContent = (e.line ? "Line " + e.line + ", column " + e.column + ": " : "") +
          (e.message || "could not evaluate");
        out.className = "bad";
      }
    });
  }
})();
