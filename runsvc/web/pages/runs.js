// The runs list: newest first, filtered by status (kept in the address), live from the runs feed. No
// polling: the feed says when a run is created or changes status; after a feed reconnect the list is
// fetched again (the feed is not durable).

import { html, useEffect, useRef, useState } from '../lib.js';
import { api } from '../api.js';
import { navigate } from '../router.js';
import { ReconnectingSocket } from '../socket.js';
import { ACTIVE, STATUSES, duration, localDateTime } from '../format.js';
import { useNow, ErrorAlert, StatusBadge } from './common.js';

const PAGE = 50;

function listPath(status, before) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (status) params.set('status', status);
  if (before) params.set('before', String(before));
  return `/runs?${params}`;
}

function executorCell(run) {
  if (run.executor) return run.executor;
  if (run.status === 'queued' && run.waiting_for) return html`<span class="muted">waiting for ${run.waiting_for}</span>`;
  return html`<span class="muted">—</span>`;
}

// The runs as a table, one row per run; the job page shows its runs with the same columns.
export function RunsTable({ runs, now, label }) {
  return html`
    <table class="runs" aria-label=${label}>
      <thead><tr>
        <th scope="col">Run</th><th scope="col">Status</th><th scope="col">Name</th>
        <th scope="col">Executor</th><th scope="col">Submitted by</th><th scope="col">Started</th>
        <th scope="col">Duration</th>
      </tr></thead>
      <tbody>
        ${runs.map((run) => html`
          <tr key=${run.id}>
            <td><a href=${`/runs/${run.id}`}>#${run.id}</a></td>
            <td><${StatusBadge} status=${run.status} /></td>
            <td class="name">${run.name || html`<span class="muted">${run.command.join(' ')}</span>`}${
              (run.labels || []).length > 0 && html`<span class="labels" aria-label=${`labels ${run.labels.join(', ')}`}>${
                run.labels.map((label) => html`<span class="label-chip">${label}</span>`)}</span>`}</td>
            <td>${executorCell(run)}</td>
            <td>${run.created_by ?? '—'}</td>
            <td class="time">${localDateTime(run.started_at)}</td>
            <td class="time">${duration(run.started_at, run.ended_at, now)}</td>
          </tr>`)}
      </tbody>
    </table>`;
}

export function RunsPage({ search, goToLogin }) {
  const status = new URLSearchParams(search).get('status') || '';
  const [runs, setRuns] = useState(null);
  const [next, setNext] = useState(null);
  const [error, setError] = useState(null);
  const [loadingMore, setLoadingMore] = useState(false);
  const generation = useRef(0);
  const now = useNow(runs !== null && runs.some((run) => ACTIVE.has(run.status)));

  useEffect(() => {
    const mine = ++generation.current;
    const load = async () => {
      try {
        const data = await api('GET', listPath(status));
        if (mine !== generation.current) return;
        setRuns(data.runs);
        setNext(data.next);
        setError(null);
      } catch (e) {
        if (mine === generation.current) setError(e.message);
      }
    };
    let loaded = false;
    const feed = new ReconnectingSocket(() => '/runs/feed/ws', {
      // Every (re)connect refetches: whatever changed while the feed was down is in the answer.
      open: () => { loaded = true; load(); },
      closed: () => { if (!loaded) { loaded = true; load(); } },
      message: (message) => {
        if (message.type !== 'run') return;
        const run = message.run;
        setRuns((current) => {
          if (current === null) return current;
          const rest = current.filter((r) => r.id !== run.id);
          const known = rest.length !== current.length;
          if (status && run.status !== status) return known ? rest : current;
          // A run older than the page's last row belongs to a later page, unless this is the last page.
          const oldest = current.length ? current[current.length - 1].id : 0;
          if (!known && run.id < oldest) return current;
          return [...rest, run].sort((a, b) => b.id - a.id);
        });
      },
      final: (code) => {
        if (code === 4401) goToLogin();
        else if (!loaded) load();
      },
    }).start();
    return () => feed.stop();
  }, [status]);

  const older = async () => {
    setLoadingMore(true);
    try {
      const data = await api('GET', listPath(status, next));
      setRuns((current) => [...current, ...data.runs.filter((r) => !current.some((c) => c.id === r.id))]);
      setNext(data.next);
    } catch (e) {
      setError(e.message);
    }
    setLoadingMore(false);
  };

  const changeStatus = (event) => {
    const value = event.target.value;
    navigate(value ? `/?status=${encodeURIComponent(value)}` : '/', { replace: true });
  };

  return html`
    <main class="page">
      <div class="page-head">
        <h1>Runs</h1>
        <div class="filters">
          <label for="status-filter">Status</label>
          <select id="status-filter" value=${status} onChange=${changeStatus}>
            <option value="">All</option>
            ${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
          </select>
        </div>
      </div>
      ${error && html`<${ErrorAlert} message=${error} />`}
      ${runs === null && !error && html`<p class="muted">Loading runs…</p>`}
      ${runs !== null && html`
        <div class="table-wrap">
          <${RunsTable} runs=${runs} now=${now} />
          ${runs.length === 0 && html`<p class="empty">${status ? `No ${status} runs.` : 'No runs yet.'}</p>`}
        </div>
        ${next !== null && html`
          <div class="more"><button type="button" onClick=${older} disabled=${loadingMore}>Older</button></div>`}`}
    </main>`;
}
