"""The annotator web page: plain HTML and JavaScript on top of the task API."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Oracle annotation</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: sans-serif; max-width: 60rem; margin: 1rem auto; padding: 0 1rem; }
pre { white-space: pre-wrap; background: #f4f4f4; padding: .5rem; }
.cand { border: 1px solid #ccc; margin: .5rem 0; padding: .5rem; }
#status { font-weight: bold; min-height: 1.5rem; }
</style></head>
<body>
<h1>Oracle annotation</h1>
<p><label>Annotator token <input id="token" type="password" size="40" autocomplete="off"></label>
<button id="save">Save token</button> <button id="next">Next task</button></p>
<div id="status"></div>
<section id="task" hidden>
  <h2>Question</h2><pre id="prompt"></pre>
  <h2>Candidate answers (tick every correct one)</h2><div id="candidates"></div>
  <p><label>Or type the correct answer <input id="typed" size="40"></label></p>
  <p><button id="submit">Submit</button> <button id="none">None is correct</button></p>
</section>
<script src="/annotate.js"></script>
</body></html>
"""

SCRIPT = """'use strict';
const $ = (id) => document.getElementById(id);
let current = null;
$('token').value = localStorage.getItem('oracleToken') || '';
function say(text) { $('status').textContent = text; }
async function api(method, path, body) {
  const headers = {'Authorization': 'Bearer ' + $('token').value.trim()};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(r.status + ' ' + (typeof data.detail === 'string' ? data.detail : JSON.stringify(data)));
  return data;
}
function show(task) {
  current = task;
  $('task').hidden = !task;
  if (!task) { say('No task is waiting.'); return; }
  $('prompt').textContent = task.prompt;
  $('typed').value = '';
  const box = $('candidates');
  box.replaceChildren();
  for (const c of task.candidates) {
    const div = document.createElement('div'); div.className = 'cand';
    const label = document.createElement('label');
    const check = document.createElement('input'); check.type = 'checkbox'; check.className = 'cand-check';
    check.dataset.index = String(c.index);
    label.append(check, ' #' + (c.index + 1) + ' answer: ' + (c.answer === null ? '(none extracted)' : c.answer));
    const pre = document.createElement('pre'); pre.textContent = c.response;
    div.append(label, pre); box.append(div);
  }
  say('Task ' + task.query_id + ': tick the correct answers or type one.');
}
async function next() {
  try { show((await api('GET', '/v1/tasks/next')).task); } catch (e) { show(null); say('Error: ' + e.message); }
}
async function submit(noneCorrect) {
  if (!current) return;
  const ticked = [...document.querySelectorAll('.cand-check')].filter((c) => c.checked).map((c) => +c.dataset.index);
  const typed = $('typed').value.trim();
  const body = {};
  if (noneCorrect) body.correct = [];
  else if (ticked.length) body.correct = ticked;
  if (typed && !noneCorrect) body.answer = typed;
  if (!('correct' in body) && !('answer' in body)) {
    say('Tick an answer, type one, or press "None is correct".');
    return;
  }
  try {
    const out = await api('POST', '/v1/tasks/' + current.query_id + '/answer', body);
    say('Saved task ' + out.query_id + '.'); current = null; $('task').hidden = true;
  } catch (e) { say('Error: ' + e.message); }
}
$('save').addEventListener('click', () => {
  localStorage.setItem('oracleToken', $('token').value.trim());
  say('Saved.');
});
$('next').addEventListener('click', next);
$('submit').addEventListener('click', () => submit(false));
$('none').addEventListener('click', () => submit(true));
"""


@router.get("/annotate", response_class=HTMLResponse)
async def annotate_page() -> HTMLResponse:
    """The annotation page (the token is kept in the browser's local storage)."""
    return HTMLResponse(PAGE, headers=_HEADERS)


@router.get("/annotate.js")
async def annotate_script() -> Response:
    """The page's script."""
    return Response(SCRIPT, media_type="text/javascript", headers=_HEADERS)
