// A job's page (SPEC §15): what it runs and when, `Run job` with one input per parameter, Edit and
// Delete for operators and admins, its next fire times, its runs live from the runs feed (filtered by
// job_id), and its recent fires with their outcome.
//
// No polling: the feed says when a run of the job is created or changes status (a new one may come from
// a fire, so the fires are fetched again then); a skipped fire starts no run, so the page also refetches
// the job and its fires once just after the next fire time it shows.

import { html, useEffect, useRef, useState } from '../lib.js';
import { api } from '../api.js';
import { navigate } from '../router.js';
import { ReconnectingSocket } from '../socket.js';
import { ACTIVE, hasRole, localDateTime } from '../format.js';
import { useNow, ErrorAlert } from './common.js';
import { RunsTable } from './runs.js';

const RUNS_SHOWN = 50;
const FIRES_SHOWN = 20;
const AFTER_FIRE_MS = 2000; // a fire starts its run within 1 s of its time (SPEC §15)
const LONGEST_TIMER_MS = 24 * 3600 * 1000; // setTimeout overflows past 2^31 ms; a day is plenty

function commandText(argv) {
  return argv.length === 3 && argv[0] === 'sh' && argv[1] === '-c' ? argv[2] : argv.join(' ');
}

function retriesText(retries) {
  if (!retries || !retries.max) return 'none';
  return `${retries.max} × after ${retries.delay_s} s (${retries.backoff}), on ${retries.on.join(', ')}`;
}

function concurrencyText(concurrency, name) {
  if (!concurrency) return 'no limit';
  return `${concurrency.limit} at a time in group ${concurrency.key || name}`;
}

function scheduleText(schedule) {
  if (!schedule) return html`<span class="muted">none: runs only when started</span>`;
  return html`<code class="cron">${schedule.cron}</code> ${schedule.timezone}, overlap ${schedule.overlap}${
    schedule.enabled ? '' : html`, <strong>paused</strong>`}`;
}

// The parameter inputs of `Run job` and the Start run button.
function RunJobForm({ job, onStarted, onCancel }) {
  const [values, setValues] = useState(() => Object.fromEntries(job.params.map((param) => [param.name, param.default ?? ''])));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const first = useRef(null);
  useEffect(() => { if (first.current) first.current.focus(); }, []);

  const start = async (event) => {
    event.preventDefault();
    setError(null);
    setBusy(true);
    // An empty optional parameter is left out: the run's environment then lacks it (SPEC §15).
    const params = Object.fromEntries(Object.entries(values).filter(([, value]) => value !== ''));
    try {
      const data = await api('POST', `/jobs/${job.id}/runs`, { params });
      onStarted(data.run);
    } catch (e) {
      setError(e.message);
      setBusy(false);
    }
  };
  const set = (name) => (event) => setValues((current) => ({ ...current, [name]: event.target.value }));

  return html`
    <form class="card form run-job" onSubmit=${start} aria-label="Run job">
      ${job.params.length === 0 && html`<p class="help">This job has no parameters.</p>`}
      ${job.params.map((param, n) => {
        const id = `param-${param.name}`;
        const ref = n === 0 ? first : undefined;
        const needed = param.required && param.default === null;
        return html`
          <label for=${id}>${param.name}${needed ? html`<span class="muted"> (required)</span>` : ''}</label>
          ${param.choices
            ? html`<select id=${id} ref=${ref} value=${values[param.name]} onChange=${set(param.name)} required=${needed}>
                ${!(param.required || param.default !== null) && html`<option value="">(not set)</option>`}
                ${needed && html`<option value="" disabled>choose…</option>`}
                ${param.choices.map((choice) => html`<option value=${choice}>${choice}</option>`)}
              </select>`
            : html`<input id=${id} ref=${ref} value=${values[param.name]} onInput=${set(param.name)} required=${needed}
                autocomplete="off" aria-describedby=${param.description ? `${id}-help` : undefined} />`}
          ${param.description && html`<p id=${`${id}-help`} class="help">${param.description}</p>`}`;
      })}
      ${error && html`<${ErrorAlert} message=${error} />`}
      <div class="form-actions">
        <button type="submit" class="primary" disabled=${busy}>Start run</button>
        <button type="button" onClick=${onCancel}>Close</button>
      </div>
    </form>`;
}

function FiresTable({ fires }) {
  if (!fires.length) return html`<p class="empty card">No fires yet.</p>`;
  return html`
    <div class="table-wrap">
      <table class="fires" aria-label="Recent fires">
        <thead><tr><th scope="col">Fire time</th><th scope="col">Outcome</th><th scope="col">Run</th></tr></thead>
        <tbody>
          ${fires.map((fire) => html`
            <tr key=${fire.scheduled_for}>
              <td class="time"><time datetime=${fire.scheduled_for}>${localDateTime(fire.scheduled_for)}</time></td>
              <td><span class=${`outcome outcome-${fire.outcome}`}>${fire.outcome}</span></td>
              <td>${fire.run_id ? html`<a href=${`/runs/${fire.run_id}`}>#${fire.run_id}</a>` : html`<span class="muted">—</span>`}</td>
            </tr>`)}
        </tbody>
      </table>
    </div>`;
}

export function JobPage({ jobId, me, goToLogin }) {
  const [job, setJob] = useState(null);
  const [runs, setRuns] = useState(null);
  const [fires, setFires] = useState(null);
  const [error, setError] = useState(null);
  const [running, setRunning] = useState(false); // the Run job form is open
  const now = useNow(runs !== null && runs.some((run) => ACTIVE.has(run.status)));
  const operator = hasRole(me.user, 'operator');

  const loadJob = () => api('GET', `/jobs/${jobId}`).then((data) => setJob(data.job), (e) => setError(e.message));
  const loadFires = () => api('GET', `/jobs/${jobId}/fires?limit=${FIRES_SHOWN}`).then(
    (data) => setFires(data.fires), (e) => setError(e.message));
  const loadRuns = () => api('GET', `/runs?job_id=${jobId}&limit=${RUNS_SHOWN}`).then(
    (data) => setRuns(data.runs), (e) => setError(e.message));

  useEffect(() => {
    loadJob();
    let loaded = false;
    const refresh = () => { loaded = true; loadRuns(); loadFires(); };
    const feed = new ReconnectingSocket(() => '/runs/feed/ws', {
      // Every (re)connect refetches: whatever changed while the feed was down is in the answers.
      open: refresh,
      closed: () => { if (!loaded) refresh(); },
      message: (message) => {
        if (message.type !== 'run' || message.run.job_id !== jobId) return;
        const run = message.run;
        setRuns((current) => (current === null ? current
          : [run, ...current.filter((r) => r.id !== run.id)].sort((a, b) => b.id - a.id).slice(0, RUNS_SHOWN)));
        // A run of a fire (or a new run, which may be one) has its fire recorded by now.
        if (run.status === 'queued' || run.trigger === 'schedule') loadFires();
      },
      final: (code) => {
        if (code === 4401) goToLogin();
        else if (!loaded) refresh();
      },
    }).start();
    return () => feed.stop();
  }, [jobId]);

  // Just after the next fire time: the job's next fires moved on and the fire's outcome is recorded.
  const nextFire = job && job.next_fires.length ? job.next_fires[0] : null;
  useEffect(() => {
    if (!nextFire) return undefined;
    const delay = Date.parse(nextFire) - Date.now() + AFTER_FIRE_MS;
    if (delay > LONGEST_TIMER_MS) return undefined;
    const timer = setTimeout(() => { loadJob(); loadFires(); }, Math.max(0, delay));
    return () => clearTimeout(timer);
  }, [nextFire]);

  if (error && !job) return html`<main class="page"><${ErrorAlert} message=${error} /></main>`;
  if (!job) return html`<main class="page"><p class="muted">Loading job…</p></main>`;

  const remove = async () => {
    // SPEC §15: the browser's own confirm dialog.
    if (!window.confirm(`Delete job ${job.name}? Its runs are kept; queued ones are cancelled.`)) return;
    setError(null);
    try {
      await api('DELETE', `/jobs/${job.id}`);
      navigate('/jobs');
    } catch (e) {
      setError(e.message);
    }
  };

  return html`
    <main class="page job-page">
      <div class="run-head">
        <h1>${job.name}</h1>
        ${operator && html`
          <div class="run-actions">
            <button type="button" class="primary" aria-expanded=${running} onClick=${() => setRunning(!running)}>Run job</button>
            <a class="button" href=${`/jobs/${job.id}/edit`}>Edit job</a>
            <button type="button" class="danger" onClick=${remove}>Delete job</button>
          </div>`}
      </div>
      ${job.description && html`<p class="description">${job.description}</p>`}
      ${error && html`<${ErrorAlert} message=${error} />`}
      ${running && html`<${RunJobForm} job=${job} onCancel=${() => setRunning(false)}
        onStarted=${(run) => navigate(`/runs/${run.id}`)} />`}
      <dl class="facts">
        <div class="wide"><dt>Command</dt><dd><code tabindex="0">${commandText(job.command)}</code></dd></div>
        <div class="wide"><dt>Schedule</dt><dd>${scheduleText(job.schedule)}</dd></div>
        <div><dt>Parameters</dt><dd>${job.params.length
          ? job.params.map((param) => html`<span class="label-chip">${param.name}</span> `)
          : html`<span class="muted">none</span>`}</dd></div>
        <div><dt>Retries</dt><dd>${retriesText(job.retries)}</dd></div>
        <div><dt>Concurrency</dt><dd>${concurrencyText(job.concurrency, job.name)}</dd></div>
        <div><dt>Timeout</dt><dd>${job.timeout_s} s</dd></div>
        <div><dt>Labels</dt><dd>${job.labels.length
          ? html`<span class="labels">${job.labels.map((label) => html`<span class="label-chip">${label}</span>`)}</span>`
          : html`<span class="muted">none</span>`}</dd></div>
        <div><dt>Created by</dt><dd>${job.created_by ?? '—'}</dd></div>
        <div><dt>Updated</dt><dd>${localDateTime(job.updated_at)}</dd></div>
      </dl>
      <div class="job-columns">
        <section aria-labelledby="next-fires-title">
          <h2 id="next-fires-title">Next fire times</h2>
          ${job.next_fires.length
            ? html`<ol class="fire-list card" aria-labelledby="next-fires-title">${job.next_fires.map((fire) => html`
                <li><time datetime=${fire}>${localDateTime(fire)}</time></li>`)}</ol>`
            : html`<p class="empty card">${job.schedule ? 'The schedule is paused.' : 'No schedule.'}</p>`}
        </section>
        <section aria-labelledby="fires-title">
          <h2 id="fires-title">Recent fires</h2>
          ${fires === null ? html`<p class="muted">Loading fires…</p>` : html`<${FiresTable} fires=${fires} />`}
        </section>
      </div>
      <section aria-labelledby="job-runs-title">
        <h2 id="job-runs-title" class="section-title">Runs</h2>
        ${runs === null ? html`<p class="muted">Loading runs…</p>` : html`
          <div class="table-wrap">
            <${RunsTable} runs=${runs} now=${now} label=${`Runs of ${job.name}`} />
            ${runs.length === 0 && html`<p class="empty">No runs yet.</p>`}
          </div>`}
      </section>
    </main>`;
}
