// Run detail: what the run is, its status live, Cancel, Download, and the log viewer.

import { html, useEffect, useRef, useState } from '../lib.js';
import { api } from '../api.js';
import { navigate } from '../router.js';
import { ACTIVE, duration, hasRole, localDateTime } from '../format.js';
import { LogModel } from '../log/model.js';
import { LogViewer } from '../log/viewer.js';
import { RunLogFeed } from '../log/feed.js';
import { useNow, ErrorAlert, StatusBadge } from './common.js';

const TIMESTAMPS_KEY = 'runsvc.log.timestamps';

function hashSeq() {
  const match = /^#L(\d+)$/.exec(location.hash);
  return match ? Number(match[1]) : 0;
}

// A run as seen through its state events (the stream carries every status change).
function applyState(run, event) {
  const next = { ...run, status: event.data.status, last_seq: Math.max(run.last_seq, event.seq) };
  if (event.data.exit_code !== undefined) next.exit_code = event.data.exit_code;
  if (event.data.status === 'running' && !run.started_at) next.started_at = event.ts;
  if (!ACTIVE.has(event.data.status) && !run.ended_at) next.ended_at = event.ts;
  if (event.data.status !== 'queued') next.waiting_for = null;
  return next;
}

// The executor of a queued run as the page shows it: what it waits for, if the server said.
function executorText(run) {
  if (run.executor) return run.executor;
  return run.status === 'queued' ? 'not yet chosen' : '—';
}

export function RunPage({ runId, me, goToLogin }) {
  const [run, setRun] = useState(null);
  const [error, setError] = useState(null);
  const now = useNow(run && ACTIVE.has(run.status));

  useEffect(() => {
    setRun(null);
    setError(null);
    api('GET', `/runs/${runId}`).then((data) => setRun(data.run), (e) => setError(e.message));
  }, [runId]);

  // A state event says `running` but not where: the run object names the executor. Asked once when the
  // run starts while the page is open (the run first fetched knew about earlier events); not a poll.
  const onState = (event) => {
    setRun((current) => applyState(current, event));
    if (event.data.status !== 'running' || (run && event.seq <= run.last_seq)) return;
    api('GET', `/runs/${runId}`).then(
      (data) => setRun((current) => ({
        ...current, executor: data.run.executor, attempt: data.run.attempt, labels: data.run.labels,
      })),
      () => {}, // the page keeps what it knows; the next reload asks again
    );
  };

  if (error && !run) return html`<main class="page"><${ErrorAlert} message=${error} /></main>`;
  if (!run) return html`<main class="page"><p class="muted">Loading run #${runId}…</p></main>`;

  const cancel = async () => {
    setError(null);
    try {
      const data = await api('POST', `/runs/${runId}/cancel`);
      setRun((current) => ({ ...data.run, status: current && !ACTIVE.has(current.status) ? current.status : data.run.status }));
    } catch (e) {
      setError(e.message);
    }
  };
  // Re-run: a new first try with the same spec, job and parameters (SPEC §15), finished or not.
  const rerun = async () => {
    setError(null);
    try {
      const data = await api('POST', `/runs/${runId}/rerun`);
      navigate(`/runs/${data.run.id}`);
    } catch (e) {
      setError(e.message);
    }
  };
  const operator = hasRole(me.user, 'operator');
  const canCancel = operator && ACTIVE.has(run.status);
  const command = run.command.length === 3 && run.command[0] === 'sh' && run.command[1] === '-c'
    ? run.command[2] : run.command.join(' ');

  return html`
    <main class="page run-page">
      <div class="run-head">
        <h1><span class="run-id">#${run.id}</span> ${run.name || html`<span class="muted">unnamed run</span>`}</h1>
        <${StatusBadge} status=${run.status} role="status" label="Run status" />
        <div class="run-actions">
          ${canCancel && html`<button type="button" class="danger" onClick=${cancel}>Cancel run</button>`}
          ${operator && html`<button type="button" onClick=${rerun}>Re-run</button>`}
          <a class="button" href=${`/api/v1/runs/${run.id}/log?download=1`} download=${`run-${run.id}.log`}>Download log</a>
        </div>
      </div>
      ${error && html`<${ErrorAlert} message=${error} />`}
      ${run.status === 'queued' && run.waiting_for && html`
        <p class="waiting">Waiting for <strong>${run.waiting_for}</strong>.${
          /^(not before|concurrency group) /.test(run.waiting_for) ? '' : ' The run starts as soon as one connects.'}</p>`}
      <dl class="facts">
        <div class="wide"><dt>Command</dt><dd><code tabindex="0">${command}</code></dd></div>
        <div><dt>Exit code</dt><dd>${run.exit_code ?? '—'}</dd></div>
        <div><dt>Submitted by</dt><dd>${run.created_by ?? '—'}</dd></div>
        <div><dt>Created</dt><dd>${localDateTime(run.created_at)}</dd></div>
        <div><dt>Started</dt><dd>${localDateTime(run.started_at)}</dd></div>
        <div><dt>Duration</dt><dd>${duration(run.started_at, run.ended_at, now)}</dd></div>
        <div><dt>Timeout</dt><dd>${run.timeout_s} s</dd></div>
        <div><dt>Executor</dt><dd>${executorText(run)}</dd></div>
        ${run.job_name && html`<div><dt>Job</dt><dd>${run.job_id !== null
          ? html`<a href=${`/jobs/${run.job_id}`}>${run.job_name}</a>`
          : html`${run.job_name} <span class="muted">(deleted)</span>`}</dd></div>`}
        <div><dt>Trigger</dt><dd>${run.trigger}${run.scheduled_for
          ? html` <span class="muted">for ${localDateTime(run.scheduled_for)}</span>` : ''}</dd></div>
        <div><dt>Try</dt><dd>${run.try}${run.retry_of !== null
          ? html` <span class="muted">(retries <a href=${`/runs/${run.retry_of}`}>#${run.retry_of}</a>)</span>` : ''}</dd></div>
        ${run.not_before && html`<div><dt>Not before</dt><dd>${localDateTime(run.not_before)}</dd></div>`}
        <div><dt>Labels</dt><dd>${(run.labels || []).length
          ? html`<span class="labels">${run.labels.map((label) => html`<span class="label-chip">${label}</span>`)}</span>`
          : html`<span class="muted">none</span>`}</dd></div>
      </dl>
      <${LogPanel} key=${run.id} runId=${run.id} lastSeq=${run.last_seq}
        onState=${onState}
        goToLogin=${goToLogin} />
    </main>`;
}

function LogPanel({ runId, lastSeq, onState, goToLogin }) {
  const holder = useRef(null);
  const view = useRef(null);
  const [connection, setConnection] = useState('connecting');
  const [following, setFollowing] = useState(true);
  const [timestamps, setTimestamps] = useState(localStorage.getItem(TIMESTAMPS_KEY) === '1');
  const [query, setQuery] = useState('');
  const [found, setFound] = useState({ matches: [], at: -1 });
  const [gone, setGone] = useState(null);
  const searchState = useRef({ query: '', timer: 0, at: -1, matches: [] });

  useEffect(() => {
    const model = new LogModel();
    const viewer = new LogViewer(holder.current, model, { onFollowChange: setFollowing });
    viewer.setTimestamps(timestamps);
    let target = hashSeq();
    const revealTarget = () => {
      if (target && model.loaded[target - 1]) {
        viewer.goTo(target, { highlight: true });
        target = 0;
      }
    };
    // aria-busy while older lines are still loading; data-lines: how many lines the page holds.
    viewer.scroller.setAttribute('aria-busy', 'true');
    const feed = new RunLogFeed(runId, model, {
      events: (events) => {
        model.add(events);
        viewer.scroller.dataset.lines = String(model.count);
        for (const event of events) if (event.kind === 'state') onState(event);
        if (searchState.current.query) scheduleSearch();
        viewer.update();
        revealTarget();
      },
      connection: setConnection,
      end: () => {},
      gone: setGone,
      unauthenticated: goToLogin,
      backfilled: () => {
        viewer.scroller.setAttribute('aria-busy', 'false');
        if (searchState.current.query) scheduleSearch();
        revealTarget();
      },
    });
    if (target) viewer.following = false;
    const onHash = () => {
      const seq = hashSeq();
      if (seq) {
        target = seq;
        revealTarget();
      }
    };
    window.addEventListener('hashchange', onHash);
    view.current = { model, viewer, feed };
    feed.start(lastSeq, target).catch((e) => {
      if (feed.stopped) return; // the page was left meanwhile
      if (e.status === 401) goToLogin();
      else setGone(e.message);
    });
    return () => {
      window.removeEventListener('hashchange', onHash);
      feed.stop();
      viewer.destroy();
      clearTimeout(searchState.current.timer);
    };
  }, [runId]);

  // Search: recomputed over every loaded line; the current match is kept while lines arrive.
  const runSearch = (text, jump) => {
    const { model, viewer } = view.current;
    const state = searchState.current;
    state.query = text;
    if (!text) {
      state.matches = [];
      state.at = -1;
      viewer.setMatches([], 0);
      setFound({ matches: [], at: -1 });
      return;
    }
    const previous = state.at >= 0 ? state.matches[state.at] : 0;
    const matches = model.search(text);
    let at = matches.length ? 0 : -1;
    if (!jump && previous) {
      const kept = matches.indexOf(previous);
      at = kept >= 0 ? kept : at;
    }
    state.matches = matches;
    state.at = at;
    viewer.setMatches(matches, at >= 0 ? matches[at] : 0, text);
    // Jump while typing, and also when the first match arrives later (older lines still loading).
    if ((jump || !previous) && at >= 0) viewer.goTo(matches[at]);
    setFound({ matches, at });
  };
  const scheduleSearch = () => {
    const state = searchState.current;
    if (state.timer) return;
    state.timer = setTimeout(() => {
      state.timer = 0;
      runSearch(state.query, false);
    }, 250);
  };
  const step = (delta) => {
    const state = searchState.current;
    if (!state.matches.length) return;
    state.at = (state.at + delta + state.matches.length) % state.matches.length;
    const seq = state.matches[state.at];
    view.current.viewer.setMatches(state.matches, seq, state.query);
    view.current.viewer.goTo(seq);
    setFound({ matches: state.matches, at: state.at });
  };
  const onSearchKey = (event) => {
    if (event.key === 'Enter') {
      event.preventDefault();
      step(event.shiftKey ? -1 : 1);
    } else if (event.key === 'Escape') {
      setQuery('');
      runSearch('', false);
    }
  };
  const toggleTimestamps = (event) => {
    const on = event.target.checked;
    setTimestamps(on);
    localStorage.setItem(TIMESTAMPS_KEY, on ? '1' : '0');
    view.current.viewer.setTimestamps(on);
  };
  const jumpToEnd = () => view.current.viewer.setFollowing(true);

  const counter = query ? (found.matches.length ? `${found.at + 1} of ${found.matches.length}` : 'no match') : '';
  return html`
    <section class="log-panel" aria-label="Log">
      <div class="log-toolbar">
        <div class="search">
          <label class="visually-hidden" for="log-search">Search log</label>
          <input id="log-search" type="search" placeholder="Search log" autocomplete="off" value=${query}
            onInput=${(e) => { setQuery(e.target.value); runSearch(e.target.value, true); }}
            onKeyDown=${onSearchKey} />
          <span class="search-count" aria-live="polite">${counter}</span>
          <button type="button" class="icon" aria-label="Previous match" title="Previous match (Shift+Enter)"
            disabled=${!found.matches.length} onClick=${() => step(-1)}>↑</button>
          <button type="button" class="icon" aria-label="Next match" title="Next match (Enter)"
            disabled=${!found.matches.length} onClick=${() => step(1)}>↓</button>
        </div>
        <label class="toggle"><input type="checkbox" checked=${timestamps} onChange=${toggleTimestamps} /> Timestamps</label>
        <span class="connection">Connection: <span role="status" aria-label="Connection" class=${`conn conn-${connection}`}>${connection}</span></span>
      </div>
      ${gone && html`<${ErrorAlert} message=${gone} />`}
      <div class="log-frame">
        <div class="log-holder" ref=${holder}></div>
        ${!following && html`<button type="button" class="jump" onClick=${jumpToEnd}>Jump to end</button>`}
      </div>
    </section>`;
}
