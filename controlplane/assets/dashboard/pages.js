// vigil dashboard: the AI inventory, policy and audit pages (loaded after
// app.js, whose el/link/clear/when/api/showError they use). As there,
// every value from the API reaches the page only as text, never as HTML.
'use strict';

// ---- AI inventory
function inventoryRow(it) {
  const hosts = it.hosts.join(', ') +
    (it.hosts_named > it.hosts.length ? ' (+' + (it.hosts_named - it.hosts.length) + ' more)' : '') +
    (it.unnamed_host_sightings ? ' (+' + it.unnamed_host_sightings + ' unnamed sightings)' : '');
  const facts = [];
  if (it.model) {
    const m = it.model;
    for (const v of [m.format, m.architecture, m.name, m.size_label, m.quantization]) if (v) facts.push(v);
    facts.push('risk: ' + m.risk);
    if (m.dangerous_imports.length) facts.push('imports: ' + m.dangerous_imports.join(' '));
  }
  if (it.sha256) facts.push('sha256 ' + it.sha256);
  if (it.paths.length) facts.push('paths: ' + it.paths.join(' '));
  const tr = el('tr', null,
    el('td', null, it.kind),
    el('td', 'mono name', it.name),
    el('td', it.approved ? 'ok' : 'bad', it.approved ? 'approved' : 'not approved'),
    el('td', null, hosts),
    el('td', null, when(it.first_seen_unix_nanos)),
    el('td', null, when(it.last_seen_unix_nanos)),
    el('td', null, String(it.sightings)),
    el('td', 'mono', facts.join('; ')));
  tr.dataset.key = it.key;
  return tr;
}

async function inventoryPage() {
  const kind = new URLSearchParams(window.location.search).get('kind') || '';
  const form = document.getElementById('filters');
  form.elements.kind.value = kind;
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = form.elements.kind.value ? { kind: form.elements.kind.value } : {};
    window.location.assign('/inventory?' + new URLSearchParams(q).toString());
  });
  const tbody = document.querySelector('#inventory tbody');
  const more = document.getElementById('more');
  let after = null;
  async function page() {
    const q = { limit: '50' };
    if (kind) q.kind = kind;
    if (after) q.after = after;
    const r = await api('/api/inventory?' + new URLSearchParams(q).toString());
    for (const it of r.items) tbody.appendChild(inventoryRow(it));
    if (!tbody.firstChild) tbody.appendChild(el('tr', null, el('td', 'empty', 'nothing seen yet')));
    after = r.next_after;
    more.hidden = !after;
  }
  more.addEventListener('click', () => page().catch(showError));
  await page();
}

// ---- policy
async function showDiff(from, to) {
  const q = {};
  if (from) q.from = String(from);
  if (to) q.to = String(to);
  const pre = clear(document.getElementById('diff'));
  const title = document.getElementById('diff-title');
  try {
    const d = await api('/api/policy/diff?' + new URLSearchParams(q).toString());
    title.textContent = 'v' + d.from + ' → v' + d.to + (d.truncated ? ' (first lines only)' : '');
    for (const line of d.lines) pre.appendChild(el('span', line.class, line.text));
  } catch (e) {
    title.textContent = e.message;
  }
}

async function policyPage() {
  const p = await api('/api/policy');
  document.getElementById('active').textContent = p.active_version ? 'v' + p.active_version : 'none';
  const tbody = document.querySelector('#versions tbody');
  for (const v of p.versions) {
    const tr = el('tr', v.active ? 'active' : null,
      el('td', null, 'v' + v.version + (v.active ? ' (active)' : '')),
      el('td', null, when(v.pushed_at_unix_nanos)),
      el('td', null, v.pushed_by ? v.pushed_by + ' (' + v.audit_action + ', audit #' + v.audit_index + ')' : ''),
      el('td', null, v.note),
      el('td', 'mono', v.signer.slice(0, 16)),
      el('td', 'mono', v.digest),
      el('td', null, String(v.files)));
    tbody.appendChild(tr);
  }
  if (p.versions_total > p.versions.length) {
    tbody.appendChild(el('tr', null, el('td', 'note', 'the newest ' + p.versions.length + ' of ' + p.versions_total)));
  }
  const form = document.getElementById('diff-form');
  if (p.previous_version) form.elements.from.value = String(p.previous_version);
  if (p.active_version) form.elements.to.value = String(p.active_version);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    showDiff(form.elements.from.value, form.elements.to.value);
  });
  if (p.active_version) await showDiff(p.previous_version, p.active_version);
}

// ---- audit
async function auditPage() {
  const tbody = document.querySelector('#audit tbody');
  const more = document.getElementById('more');
  let before = null;
  async function page() {
    const q = { limit: '50' };
    if (before) q.before = String(before);
    const r = await api('/api/audit?' + new URLSearchParams(q).toString());
    for (const e of r.entries) {
      const hash = el('td', 'mono', e.hash.slice(0, 16));
      hash.title = 'hash ' + e.hash + '\nprevious ' + e.prev_hash;
      tbody.appendChild(el('tr', null,
        el('td', null, String(e.index)),
        el('td', null, when(e.at_unix_nanos)),
        el('td', null, e.actor),
        el('td', 'mono', e.action),
        el('td', null, e.target),
        el('td', null, e.detail),
        hash));
    }
    before = r.next_before;
    more.hidden = !before;
  }
  more.addEventListener('click', () => page().catch(showError));
  const verify = document.getElementById('verify');
  const verified = api('/api/audit/verify').then((v) => {
    if (!v.ok) {
      verify.textContent = 'BROKEN — ' + v.error;
      verify.className = 'bad';
    } else if (!v.complete) {
      verify.textContent = 'the first ' + v.checked + ' of ' + v.entries + ' entries hold (checked at most ' + v.at_most + ')';
      verify.className = 'note';
    } else {
      verify.textContent = 'verified: ' + v.checked + ' entries, every hash holds';
      verify.className = 'ok';
    }
  }, (e) => { verify.textContent = 'not verified: ' + e.message; verify.className = 'bad'; });
  await page();
  await verified;
}

PAGES.inventory = inventoryPage;
PAGES.policy = policyPage;
PAGES.audit = auditPage;
