// vigil dashboard. Every value from the API is untrusted (agents set most
// of them): it reaches the page only as text (createTextNode/textContent),
// never as HTML; links are built from fixed paths and encodeURIComponent.
'use strict';

let SESSION = null;

function el(tag, cls, ...children) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function link(path, params, text) {
  const a = el('a', null, text);
  const q = new URLSearchParams(params).toString();
  a.href = path + (q ? '?' + q : '');
  return a;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function when(nanos) {
  if (!nanos) return '';
  return new Date(Number(nanos) / 1e6).toLocaleString();
}

async function api(path, method, body) {
  const opts = { method: method || 'GET', credentials: 'same-origin', headers: {} };
  if (opts.method !== 'GET') {
    opts.headers['Content-Type'] = 'application/json';
    if (SESSION) opts.headers['X-CSRF-Token'] = SESSION.csrf;
    opts.body = JSON.stringify(body || {});
  }
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.status === 401 && document.body.dataset.page !== 'login') {
    window.location.assign('/login');
    throw new Error('not logged in');
  }
  if (!resp.ok) throw new Error((data && data.error) || ('HTTP ' + resp.status));
  return data;
}

function canTriage() {
  return SESSION && (SESSION.role === 'analyst' || SESSION.role === 'admin');
}

function showError(e) {
  const main = document.getElementById('main');
  if (main) main.insertBefore(el('p', 'error', String(e.message || e)), main.firstChild);
}

async function startSession() {
  SESSION = await api('/api/session');
  const who = clear(document.getElementById('who'));
  who.appendChild(el('span', 'user', SESSION.name + ' (' + SESSION.role + ')'));
  const out = el('button', 'logout', 'Log out');
  out.type = 'button';
  out.id = 'logout';
  out.addEventListener('click', async () => {
    try { await api('/api/logout', 'POST'); } finally { window.location.assign('/login'); }
  });
  who.appendChild(out);
}

// ---- login
function loginPage() {
  const form = document.getElementById('login-form');
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = document.getElementById('login-error');
    err.textContent = '';
    try {
      await api('/api/login', 'POST', { name: form.elements.name.value, password: form.elements.password.value });
      window.location.assign('/');
    } catch (e) {
      err.textContent = e.message;
    }
  });
}

// ---- overview
function barChart(values) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  const w = 24 * 20, h = 120;
  svg.setAttribute('viewBox', '0 0 ' + w + ' ' + (h + 16));
  svg.setAttribute('class', 'chart');
  const max = Math.max(1, ...values);
  values.forEach((v, i) => {
    const bh = Math.round((v / max) * h);
    const r = document.createElementNS(ns, 'rect');
    r.setAttribute('x', String(i * 20 + 2));
    r.setAttribute('y', String(h - bh));
    r.setAttribute('width', '16');
    r.setAttribute('height', String(bh));
    const t = document.createElementNS(ns, 'title');
    t.textContent = (23 - i) + ' h ago: ' + v;
    r.appendChild(t);
    svg.appendChild(r);
  });
  const label = document.createElementNS(ns, 'text');
  label.setAttribute('x', '0');
  label.setAttribute('y', String(h + 14));
  label.textContent = '24 h ago';
  svg.appendChild(label);
  const now = document.createElementNS(ns, 'text');
  now.setAttribute('x', String(w - 30));
  now.setAttribute('y', String(h + 14));
  now.textContent = 'now';
  svg.appendChild(now);
  return svg;
}

function topList(id, items, path, param) {
  const ol = clear(document.getElementById(id));
  if (!items.length) ol.appendChild(el('li', 'empty', 'none'));
  for (const it of items) {
    const name = path ? link(path, { [param]: it.id || it.name }, it.name) : el('span', 'mono', it.name);
    ol.appendChild(el('li', null, name, el('span', 'count', ' ' + it.count)));
  }
}

async function overviewPage() {
  const o = await api('/api/overview');
  const cards = clear(document.getElementById('host-cards'));
  const h = o.hosts;
  for (const [k, label] of [['total', 'hosts'], ['trusted', 'trusted'], ['untrusted', 'untrusted'],
    ['unattested', 'unattested'], ['sensors_degraded', 'sensors degraded'],
    ['dropping_events', 'dropping events'], ['offline', 'offline']]) {
    const bad = (k === 'untrusted' || k === 'sensors_degraded' || k === 'dropping_events' || k === 'offline') && h[k] > 0;
    cards.appendChild(el('div', 'card' + (bad ? ' bad' : ''), el('div', 'num', h[k]), el('div', 'label', label)));
  }
  const sev = clear(document.getElementById('open-severity'));
  for (const s of o.open_by_severity) {
    sev.appendChild(el('div', 'sev-row', el('span', 'sev sev-' + s.severity, s.severity),
      link('/findings', { severity: s.severity }, String(s.count))));
  }
  clear(document.getElementById('per-hour')).appendChild(barChart(o.findings_per_hour));
  topList('top-rules', o.top_rules, '/findings', 'rule');
  topList('top-hosts', o.top_hosts, '/findings', 'host');
  topList('top-exes', o.top_executables, null, null);
}

// ---- findings
function filtersFromUrl() {
  const p = new URLSearchParams(window.location.search);
  const f = {};
  for (const k of ['host', 'rule', 'severity', 'signal']) if (p.get(k)) f[k] = p.get(k);
  return f;
}

async function triage(index, action, text) {
  await api('/api/findings/' + encodeURIComponent(index) + '/triage', 'POST', { action, text: text || '' });
}

function findingRow(f) {
  const tr = el('tr', null);
  tr.dataset.index = String(f.index);
  tr.appendChild(el('td', null, link('/finding', { i: f.index }, String(f.index))));
  tr.appendChild(el('td', null, when(f.received_at_unix_nanos)));
  tr.appendChild(el('td', null, el('span', 'sev sev-' + f.severity, f.severity)));
  tr.appendChild(el('td', null, f.signal));
  tr.appendChild(el('td', null, link('/host', { id: f.agent_id }, f.hostname)));
  tr.appendChild(el('td', 'mono', f.rule_id));
  tr.appendChild(el('td', 'mono exe', f.process.exe));
  tr.appendChild(el('td', 'summary', f.summary));
  tr.appendChild(el('td', 'status', f.status || 'open'));
  const actions = el('td', 'row-actions');
  if (canTriage() && (f.status || 'open') === 'open') {
    const b = el('button', 'ack', 'Ack');
    b.type = 'button';
    b.addEventListener('click', async () => {
      b.disabled = true;
      try {
        await triage(f.index, 'ack');
        const now = await api('/api/findings/' + encodeURIComponent(f.index));
        tr.querySelector('.status').textContent = now.status;
        b.remove();
      } catch (e) { b.disabled = false; showError(e); }
    });
    actions.appendChild(b);
  }
  tr.appendChild(actions);
  return tr;
}

async function findingsPage() {
  const filters = filtersFromUrl();
  const form = document.getElementById('filters');
  for (const [k, v] of Object.entries(filters)) if (form.elements[k]) form.elements[k].value = v;
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = {};
    for (const k of ['host', 'rule', 'severity', 'signal']) if (form.elements[k].value) q[k] = form.elements[k].value;
    window.location.assign('/findings?' + new URLSearchParams(q).toString());
  });
  const tbody = document.querySelector('#findings tbody');
  const seen = new Set();
  let newest = 0;
  const more = document.getElementById('more');
  let before = null;
  async function page() {
    const q = Object.assign({ limit: '50' }, filters);
    if (before) q.before = String(before);
    const r = await api('/api/findings?' + new URLSearchParams(q).toString());
    for (const f of r.items) {
      if (seen.has(f.index)) continue;
      seen.add(f.index);
      newest = Math.max(newest, f.index);
      tbody.appendChild(findingRow(f));
    }
    before = r.next_before;
    more.hidden = !before;
  }
  more.addEventListener('click', () => page().catch(showError));
  await page();
  const q = Object.assign({}, filters);
  q.after = String(newest);
  const state = document.getElementById('live-state');
  const source = new EventSource('/api/findings/live?' + new URLSearchParams(q).toString());
  source.addEventListener('open', () => { state.textContent = 'live'; state.className = 'live on'; });
  source.addEventListener('error', () => { state.textContent = 'reconnecting'; state.className = 'live'; });
  source.addEventListener('end', () => { source.close(); state.textContent = 'ended'; window.location.assign('/login'); });
  source.addEventListener('finding', (ev) => {
    let f;
    try { f = JSON.parse(ev.data); } catch (e) { return; }
    if (seen.has(f.index)) return;
    seen.add(f.index);
    f.status = 'open';
    const row = findingRow(f);
    row.classList.add('fresh');
    tbody.insertBefore(row, tbody.firstChild);
  });
}

// ---- one finding
function detail(dl, name, value) {
  dl.appendChild(el('dt', null, name));
  dl.appendChild(el('dd', null, value));
}

async function findingPage() {
  const i = new URLSearchParams(window.location.search).get('i') || '';
  const f = await api('/api/findings/' + encodeURIComponent(i));
  document.getElementById('title').textContent = 'Finding ' + f.index;
  const dl = clear(document.getElementById('details'));
  detail(dl, 'Status', el('span', 'status', f.status + (f.assignee ? ' (assigned to ' + f.assignee + ')' : '')));
  detail(dl, 'Severity', el('span', 'sev sev-' + f.severity, f.severity));
  detail(dl, 'Signal', f.signal);
  detail(dl, 'Rule', f.rule_id);
  detail(dl, 'Summary', f.summary);
  detail(dl, 'Host', link('/host', { id: f.agent_id }, f.hostname + ' (' + f.agent_id + ')'));
  detail(dl, 'Observed', when(f.observed_at_unix_nanos));
  detail(dl, 'Executable', el('span', 'mono exe', f.process.exe));
  detail(dl, 'Command line', el('span', 'mono', (f.process.argv || []).join(' ')));
  detail(dl, 'Process', 'pid ' + f.process.pid + ', parent ' + f.process.ppid + ', uid ' + f.process.uid);
  detail(dl, 'Object', el('span', 'mono', f.object));
  if (f.action) detail(dl, 'Enforcement', f.action);
  const hist = clear(document.getElementById('history'));
  if (!f.history.length) hist.appendChild(el('li', 'empty', 'nothing yet'));
  for (const h of f.history) {
    hist.appendChild(el('li', null, el('span', 'when', when(h.at_unix_nanos)), ' ',
      el('strong', null, h.actor), ' ', h.action, h.detail ? ': ' : '', el('span', 'comment', h.detail)));
  }
  if (canTriage()) {
    document.getElementById('actions').hidden = false;
    const reload = () => window.location.reload();
    const ack = document.getElementById('ack');
    ack.hidden = f.status !== 'open';
    ack.addEventListener('click', () => triage(f.index, 'ack').then(reload, showError));
    for (const action of ['assign', 'comment', 'resolve']) {
      const form = document.getElementById(action + '-form');
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        triage(f.index, action, form.elements.text.value).then(reload, showError);
      });
    }
  }
}

// ---- hosts
function trustCell(h) {
  return el('span', 'trust trust-' + h.trust, h.trust + (h.trust_reason ? ' — ' + h.trust_reason : ''));
}

async function hostsPage() {
  const r = await api('/api/hosts');
  const tbody = document.querySelector('#hosts tbody');
  for (const h of r.hosts) {
    tbody.appendChild(el('tr', null,
      el('td', null, link('/host', { id: h.agent_id }, h.hostname)),
      el('td', 'mono', h.agent_id),
      el('td', null, trustCell(h)),
      el('td', h.sensor_mode === 'ebpf' ? null : 'bad', h.sensor_mode),
      el('td', h.dropping ? 'bad' : null, h.dropping ? 'dropping' : 'ok'),
      el('td', h.offline ? 'bad' : null, when(h.last_heartbeat_unix_nanos) + (h.offline ? ' (offline)' : '')),
      el('td', null, h.policy_error ? 'v' + h.policy_version + ' — ' + h.policy_error : 'v' + h.policy_version),
      el('td', null, String(h.gpus))));
  }
}

function emptyRow(tbody, cols, text) {
  const td = el('td', 'empty', text);
  td.colSpan = cols;
  tbody.appendChild(el('tr', null, td));
}

function parentChain(chain, from) {
  if (!chain.length) return el('span', 'empty', 'no parent reported');
  const span = el('span', 'mono');
  span.title = from === 'agent'
    ? 'as the agent\'s process table knew them'
    : 'named from this host\'s recent findings';
  chain.forEach((p, i) => {
    if (i) span.appendChild(document.createTextNode(' ← '));
    span.appendChild(document.createTextNode('pid ' + p.pid + (p.known ? ' ' + (p.exe || p.comm) : ' (not seen)')));
  });
  return span;
}

function evidenceList(items) {
  const ul = el('ul', 'history');
  for (const e of items) {
    ul.appendChild(el('li', null, link('/finding', { i: e.index }, '#' + e.index), ' ',
      el('span', 'sev sev-' + e.severity, e.signal), ' ', el('span', 'mono', e.object),
      e.model && e.model.name ? ' (' + e.model.format + ' ' + e.model.name + ')' : null));
  }
  return ul;
}

function hostProcesses(p) {
  const tbody = document.querySelector('#procs tbody');
  if (!p.items.length) emptyRow(tbody, 6, 'no AI signals among the findings read');
  for (const x of p.items) {
    tbody.appendChild(el('tr', null,
      el('td', null, String(x.pid) + (x.ns_pid ? ' (' + x.ns_pid + ' in its namespace)' : '')),
      el('td', null, el('div', 'mono', x.exe), el('div', 'mono note', (x.argv || []).join(' ')),
        x.cgroup_path ? el('div', 'mono note', x.cgroup_path) : null),
      el('td', null, x.signals.join(', ') + (x.gpu_use.length ? '; GPU ' + x.gpu_use.map((g) => g.gpu + ' #' + g.index).join(', ') : '')),
      el('td', null, evidenceList(x.evidence),
        x.findings > x.evidence.length ? el('span', 'note', (x.findings - x.evidence.length) + ' more') : null),
      el('td', null, parentChain(x.parent_chain, x.parent_chain_from)),
      el('td', null, when(x.last_seen_unix_nanos))));
  }
  document.getElementById('procs-note').textContent =
    (p.total > p.items.length ? 'The newest ' + p.items.length + ' of ' + p.total + ' processes. ' : '') +
    'Parent chain: ' + p.parent_chain_note + '.';
}

function hostAttestation(h) {
  const a = h.attestation || {};
  const dl = clear(document.getElementById('attestation'));
  detail(dl, 'Trust', trustCell(h));
  detail(dl, 'Since', when(a.trust_changed_at_unix_nanos) || 'never changed');
  detail(dl, 'TPM (EK sha256)', el('span', 'mono', a.ek_sha256 || 'not enrolled'));
  if (a.ek_certificate_issuer) detail(dl, 'EK certificate', a.ek_certificate_issuer);
  detail(dl, 'Last quote', when(a.last_quote_at_unix_nanos) || 'none');
  detail(dl, 'Last verified', when(a.last_verified_at_unix_nanos) || 'never');
  detail(dl, 'Golden PCRs', a.golden_pcrs && a.golden_pcrs.length
    ? a.golden_pcrs.map((p) => p[0]).join(', ') : 'none yet');
  const tbody = document.querySelector('#attest-history tbody');
  const hist = h.attestation_history;
  if (!hist.items.length) emptyRow(tbody, 4, 'no attestation events among the audit entries read');
  for (const e of hist.items) {
    tbody.appendChild(el('tr', null, el('td', null, when(e.at_unix_nanos)), el('td', null, e.action),
      el('td', null, e.actor), el('td', 'mono', e.detail)));
  }
}

function hostWorkloads(w) {
  const tbody = document.querySelector('#workloads tbody');
  if (!w.items.length) emptyRow(tbody, 6, 'no approved workload applies to this host (' + w.fleet_total + ' in the fleet)');
  for (const x of w.items) {
    const narrow = [];
    if (x.path) narrow.push('path ' + x.path);
    if (x.uid !== null && x.uid !== undefined) narrow.push('uid ' + x.uid);
    if (x.cgroup_prefix) narrow.push('cgroup ' + x.cgroup_prefix);
    if (x.models.length) narrow.push('models ' + x.models.join(', '));
    if (x.gpus.length) narrow.push('GPUs ' + x.gpus.join(', '));
    tbody.appendChild(el('tr', null, el('td', 'mono', x.id), el('td', null, x.scope),
      el('td', 'mono', x.exe_sha256), el('td', 'mono', narrow.join('; ') || 'any'),
      el('td', null, x.approved_by + ' ' + when(x.approved_at_unix_nanos)), el('td', null, x.note)));
  }
}

function hostSidecar(s) {
  const models = document.querySelector('#sidecar-models tbody');
  if (!s.models.length) emptyRow(models, 7, 'the model catalog has this host serve no model');
  for (const m of s.models) {
    const bad = /oom|refused|tampered|failed|rollback|reset/.test(m.last_event || '');
    models.appendChild(el('tr', null, el('td', 'mono', m.name), el('td', null, 'v' + m.version),
      el('td', null, m.fallbacks.length ? m.fallbacks.map((v) => 'v' + v).join(', ') : 'none'),
      el('td', 'mono', m.listen || 'default'),
      el('td', bad ? 'bad' : null, m.last_event
        ? m.last_event + (m.last_event_version ? ' (v' + m.last_event_version + ')' : '') : 'not reported'),
      el('td', null, when(m.last_event_at_unix_nanos)), el('td', 'summary', m.last_event_summary || '')));
  }
  const events = document.querySelector('#sidecar-events tbody');
  if (!s.events.length) emptyRow(events, 5, 'no sidecar events among the findings read');
  for (const e of s.events) {
    events.appendChild(el('tr', null, el('td', null, link('/finding', { i: e.index }, String(e.index))),
      el('td', null, when(e.received_at_unix_nanos)), el('td', null, el('span', 'sev sev-' + e.severity, e.action)),
      el('td', 'mono', e.model ? e.model.name : e.object), el('td', 'summary', e.summary)));
  }
}

async function hostPage() {
  const id = new URLSearchParams(window.location.search).get('id') || '';
  const h = await api('/api/hosts/' + encodeURIComponent(id));
  document.getElementById('title').textContent = 'Host ' + h.hostname;
  const dl = clear(document.getElementById('details'));
  detail(dl, 'Agent', el('span', 'mono', h.agent_id + ' (' + h.agent_version + ')'));
  detail(dl, 'Trust', trustCell(h));
  detail(dl, 'Sensor', el('span', h.sensor_mode === 'ebpf' ? null : 'bad', h.sensor_mode),
    ' on ' + h.kernel_release + ' — hooks: ' + (h.hooks || []).join(', '));
  detail(dl, 'Sensor counters', el('span', h.dropping ? 'bad' : null, 'emitted ' + h.counters.emitted +
    ', dropped ' + h.counters.dropped + ', received ' + h.counters.received + '; spooled ' + h.spooled +
    ', spool dropped ' + h.spool_dropped + (h.spool_full ? ' (spool full)' : '')));
  detail(dl, 'Last heartbeat', when(h.last_heartbeat_unix_nanos) + (h.offline ? ' (offline)' : ''));
  detail(dl, 'Policy', 'v' + h.policy_version + (h.policy_error ? ' — ' + h.policy_error : ''));
  hostProcesses(h.processes);
  const gpu = h.gpu || { gpus: [], processes: [], status: [] };
  if (gpu.status && gpu.status.length) detail(dl, 'GPU status', gpu.status.join('; '));
  const gpus = document.querySelector('#gpus tbody');
  if (!gpu.gpus.length) emptyRow(gpus, 4, 'no GPU reported');
  for (const g of gpu.gpus) {
    gpus.appendChild(el('tr', null, el('td', null, String(g.index)), el('td', null, g.name),
      el('td', null, String(g.memory_used_bytes)), el('td', null, String(g.memory_total_bytes))));
  }
  const procs = document.querySelector('#gpu-procs tbody');
  if (!gpu.processes.length) emptyRow(procs, 4, 'no process on a GPU');
  for (const p of gpu.processes) {
    procs.appendChild(el('tr', null, el('td', null, String(p.process.pid)), el('td', 'mono', p.process.exe),
      el('td', null, p.gpu.name + ' #' + p.gpu.index), el('td', null, p.approved ? 'yes' : 'no')));
  }
  hostAttestation(h);
  hostWorkloads(h.workloads);
  hostSidecar(h.sidecar);
  const tbody = document.querySelector('#host-findings tbody');
  for (const f of h.findings) {
    tbody.appendChild(el('tr', null,
      el('td', null, link('/finding', { i: f.index }, String(f.index))),
      el('td', null, when(f.received_at_unix_nanos)),
      el('td', null, el('span', 'sev sev-' + f.severity, f.severity)),
      el('td', null, f.signal), el('td', 'mono', f.rule_id), el('td', 'mono exe', f.process.exe),
      el('td', 'summary', f.summary)));
  }
  const sc = h.scanned;
  document.getElementById('host-scan-note').textContent =
    'Processes, sidecar events and findings: this host\'s ' + sc.host_alerts + ' among the newest ' + sc.alerts +
    ' findings (at most ' + sc.at_most + '). Attestation history: the newest ' + sc.audit_entries +
    ' audit entries (at most ' + sc.audit_at_most + ').';
}

const PAGES = {
  index: overviewPage, findings: findingsPage, finding: findingPage,
  hosts: hostsPage, host: hostPage,
};

// The pages every header links to (a page without a link gets it here).
function completeNav() {
  const nav = document.querySelector('header nav');
  if (!nav) return;
  for (const [path, text] of [['/inventory', 'AI inventory'], ['/policy', 'Policy'], ['/audit', 'Audit']]) {
    if (!nav.querySelector('a[href="' + path + '"]')) nav.appendChild(link(path, {}, text));
  }
}

document.addEventListener('DOMContentLoaded', () => {
  const page = document.body.dataset.page;
  if (page === 'login') { loginPage(); return; }
  completeNav();
  startSession()
    .then(() => (PAGES[page] || (() => null))())
    .then(() => { document.body.dataset.ready = '1'; })
    .catch(showError);
});
