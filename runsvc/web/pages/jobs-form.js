// The job form (SPEC §15), new (`/jobs/new`) and edit (`/jobs/<id>/edit`). The command is a shell line
// run as ["sh", "-c", line], as on the New run page. The cron text is explained while typing by the
// server (`GET /schedule/preview`): the UI has no cron parser of its own, so what it shows is what the
// schedule will do. Fields the form does not show (a schedule's `missed`, the retries' backoff, a
// concurrency key, a parameter's description) are kept as they are when a job is edited.

import { html, useEffect, useRef, useState } from '../lib.js';
import { api } from '../api.js';
import { navigate } from '../router.js';
import { localDateTime, parseLabels } from '../format.js';
import { SecretsField, parseEnvironment, parseSecrets, secretsText } from './newrun.js';
import { ErrorAlert } from './common.js';

const PREVIEW_DELAY_MS = 300; // after the last keystroke: one request per pause in typing, not per key
const PREVIEW_FIRES = 3;
const OVERLAPS = [
  ['skip', 'skip: no new run while one of the job\'s runs is queued or running'],
  ['allow', 'allow: start a run at every fire time'],
  ['cancel_previous', 'cancel_previous: cancel the running ones, then start'],
];

// An argv as a shell line that runs the same argv (single quotes where needed).
function shellLine(argv) {
  if (argv.length === 3 && argv[0] === 'sh' && argv[1] === '-c') return argv[2];
  return argv.map((arg) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`)).join(' ');
}

function formValues(job) {
  const schedule = job ? job.schedule : null;
  return {
    name: job ? job.name : '',
    description: job ? job.description : '',
    command: job ? shellLine(job.command) : '',
    env: job ? Object.entries(job.env).map(([key, value]) => `${key}=${value}`).join('\n') : '',
    secrets: job ? secretsText(job.secrets) : '',
    timeout: job ? String(job.timeout_s) : '',
    labels: job ? job.labels.join(', ') : '',
    cron: schedule ? schedule.cron : '',
    timezone: schedule ? schedule.timezone : 'UTC',
    overlap: schedule ? schedule.overlap : 'skip',
    enabled: schedule ? schedule.enabled : true,
    retries: job && job.retries ? String(job.retries.max) : '',
    retryDelay: job && job.retries ? String(job.retries.delay_s) : '',
    concurrency: job && job.concurrency ? String(job.concurrency.limit) : '',
    params: job ? job.params.map((param, n) => ({
      key: n,
      name: param.name,
      description: param.description || '',
      default: param.default ?? '',
      choices: (param.choices || []).join(', '),
      required: Boolean(param.required),
    })) : [],
  };
}

// The request body from the form's values; throws an Error naming the field for what the API could not
// understand at all (an environment line without `=`).
function jobBody(values, job) {
  const body = {
    name: values.name.trim(),
    description: values.description,
    // An unchanged line keeps the job's argv as it was (one made through the API need not be sh -c).
    command: job && values.command === shellLine(job.command) ? job.command : ['sh', '-c', values.command],
    env: parseEnvironment(values.env),
    secrets: parseSecrets(values.secrets),
    labels: parseLabels(values.labels),
    schedule: null,
    retries: null,
    concurrency: null,
    params: values.params.map((param) => ({
      name: param.name.trim(),
      description: param.description,
      default: param.default === '' ? null : param.default,
      choices: param.choices.trim() ? parseLabels(param.choices) : null,
      required: param.required,
    })),
  };
  if (values.timeout !== '') body.timeout_s = Number(values.timeout);
  if (values.cron.trim()) {
    body.schedule = {
      cron: values.cron.trim(), timezone: values.timezone.trim() || 'UTC', overlap: values.overlap, enabled: values.enabled,
    };
    if (job && job.schedule) body.schedule.missed = job.schedule.missed;
  }
  if (values.retries !== '' || values.retryDelay !== '') {
    body.retries = { ...(job && job.retries ? job.retries : {}), max: values.retries === '' ? 0 : Number(values.retries) };
    if (values.retryDelay !== '') body.retries.delay_s = Number(values.retryDelay);
  }
  if (values.concurrency !== '') {
    const key = job && job.concurrency ? job.concurrency.key : null;
    body.concurrency = { limit: Number(values.concurrency) };
    if (key) body.concurrency.key = key;
  }
  return body;
}

// What the server says about a cron text: its explanation and next fire times, or its error.
function usePreview(cron, timezone) {
  const [preview, setPreview] = useState({ state: 'empty' });
  const generation = useRef(0);
  useEffect(() => {
    const mine = ++generation.current;
    if (!cron.trim()) {
      setPreview({ state: 'empty' });
      return undefined;
    }
    const timer = setTimeout(async () => {
      const query = new URLSearchParams({ cron: cron.trim(), timezone: timezone.trim() || 'UTC' });
      try {
        const data = await api('GET', `/schedule/preview?${query}`);
        if (mine === generation.current) setPreview({ state: 'ok', ...data });
      } catch (e) {
        if (mine === generation.current) setPreview({ state: 'error', message: e.message });
      }
    }, PREVIEW_DELAY_MS);
    return () => clearTimeout(timer);
  }, [cron, timezone]);
  return preview;
}

function CronPreview({ preview }) {
  let body;
  if (preview.state === 'empty') body = html`<span class="muted">No schedule: the job runs only when started.</span>`;
  else if (preview.state === 'error') body = html`<span class="error-text">${preview.message}</span>`;
  else {
    const fires = preview.next_fires.slice(0, PREVIEW_FIRES);
    body = html`
      <span class="explanation">${preview.explanation}</span>
      ${fires.length
        ? html`<span class="muted"> Next (local time): </span>${fires.map((fire, n) => html`${n ? ', ' : ''}<time datetime=${fire}>${localDateTime(fire)}</time>`)}`
        : html`<span class="muted"> It never fires.</span>`}`;
  }
  return html`<p id="job-cron-help" class="help cron-preview" role="status" aria-label="Schedule explanation">${body}</p>`;
}

function ParamsTable({ params, update, remove }) {
  if (!params.length) return html`<p class="help">No parameters. Each one reaches the run as the environment variable <code>PARAM_NAME</code>.</p>`;
  return html`
    <div class="table-wrap">
      <table class="params" aria-label="Parameters">
        <thead><tr>
          <th scope="col">Name</th><th scope="col">Default</th><th scope="col">Choices</th>
          <th scope="col">Required</th><th scope="col"><span class="visually-hidden">Remove</span></th>
        </tr></thead>
        <tbody>
          ${params.map((param, n) => html`
            <tr key=${param.key}>
              <td><input aria-label="Parameter name" class="mono" value=${param.name} required pattern="[a-z][a-z0-9_]{0,63}"
                title="lower case letters, digits and _, starting with a letter" autocomplete="off"
                onInput=${(e) => update(n, { name: e.target.value })} /></td>
              <td><input aria-label="Default" value=${param.default} autocomplete="off"
                onInput=${(e) => update(n, { default: e.target.value })} /></td>
              <td><input aria-label="Choices" value=${param.choices} placeholder="any value" autocomplete="off"
                onInput=${(e) => update(n, { choices: e.target.value })} /></td>
              <td class="check"><input type="checkbox" aria-label="Required" checked=${param.required}
                onChange=${(e) => update(n, { required: e.target.checked })} /></td>
              <td class="row-action"><button type="button" class="danger"
                aria-label=${`Remove parameter ${param.name || n + 1}`} onClick=${() => remove(n)}>Remove</button></td>
            </tr>`)}
        </tbody>
      </table>
    </div>`;
}

let timeZones = null;
function knownTimeZones() {
  if (timeZones === null) timeZones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  return timeZones;
}

export function JobFormPage({ jobId }) {
  const [job, setJob] = useState(jobId ? undefined : null); // undefined: loading
  const [values, setValues] = useState(jobId ? null : formValues(null));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const nextKey = useRef(1000);
  const preview = usePreview(values ? values.cron : '', values ? values.timezone : '');

  useEffect(() => {
    if (!jobId) return;
    api('GET', `/jobs/${jobId}`).then(
      (data) => { setJob(data.job); setValues(formValues(data.job)); },
      (e) => setError(e.message),
    );
  }, [jobId]);

  if (values === null) {
    return html`<main class="page narrow">${error ? html`<${ErrorAlert} message=${error} />` : html`<p class="muted">Loading job…</p>`}</main>`;
  }

  const set = (field) => (event) => {
    const value = event.target.type === 'checkbox' ? event.target.checked : event.target.value;
    setValues((current) => ({ ...current, [field]: value }));
  };
  const updateParam = (n, change) => setValues((current) => ({
    ...current, params: current.params.map((param, i) => (i === n ? { ...param, ...change } : param)),
  }));
  const removeParam = (n) => setValues((current) => ({ ...current, params: current.params.filter((_, i) => i !== n) }));
  const addParam = () => {
    nextKey.current += 1;
    const key = nextKey.current;
    setValues((current) => ({
      ...current, params: [...current.params, { key, name: '', description: '', default: '', choices: '', required: false }],
    }));
    // Focus the new row's name once it is on the page.
    requestAnimationFrame(() => {
      const inputs = document.querySelectorAll('table.params input[aria-label="Parameter name"]');
      if (inputs.length) inputs[inputs.length - 1].focus();
    });
  };

  const save = async (event) => {
    event.preventDefault();
    setError(null);
    let body;
    try {
      body = jobBody(values, job);
    } catch (e) {
      setError(e.message);
      return;
    }
    setBusy(true);
    try {
      const data = job ? await api('PATCH', `/jobs/${job.id}`, body) : await api('POST', '/jobs', body);
      navigate(`/jobs/${data.job.id}`);
    } catch (e) {
      setError(e.message);
      setBusy(false);
    }
  };

  return html`
    <main class="page job-form-page">
      <div class="page-head">
        <h1>${job ? html`Edit job <span class="muted">${job.name}</span>` : 'New job'}</h1>
      </div>
      <form class="card form job-form" onSubmit=${save}>
        <fieldset>
          <legend>What runs</legend>
          <label for="job-name">Name</label>
          <input id="job-name" value=${values.name} onInput=${set('name')} required maxlength="100" autocomplete="off"
            aria-describedby="job-name-help" />
          <p id="job-name-help" class="help">Letters, digits, <code>_ . -</code>; unique. Runs of the job are named after it.</p>
          <label for="job-description">Description</label>
          <textarea id="job-description" rows="2" maxlength="2000" value=${values.description} onInput=${set('description')}></textarea>
          <label for="job-command">Command</label>
          <input id="job-command" class="mono" value=${values.command} onInput=${set('command')} required
            placeholder="./backup.sh" autocomplete="off" aria-describedby="job-command-help" />
          <p id="job-command-help" class="help">A shell line, run as <code>sh -c</code> in a fresh directory. Parameters
            arrive as environment variables (<code>$PARAM_TARGET</code>), never spliced into the line.</p>
          <label for="job-env">Environment</label>
          <textarea id="job-env" class="mono" rows="3" placeholder="KEY=VALUE, one per line" value=${values.env}
            onInput=${set('env')}></textarea>
          <${SecretsField} id="job-secrets" value=${values.secrets} onInput=${set('secrets')} />
          <div class="field-row">
            <div class="field">
              <label for="job-timeout">Timeout (s)</label>
              <input id="job-timeout" type="number" min="1" max="604800" step="any" placeholder="3600"
                value=${values.timeout} onInput=${set('timeout')} />
            </div>
            <div class="field grow">
              <label for="job-labels">Labels</label>
              <input id="job-labels" placeholder="optional, e.g. gpu, linux" autocomplete="off" value=${values.labels}
                onInput=${set('labels')} />
            </div>
          </div>
        </fieldset>

        <fieldset>
          <legend>When it runs</legend>
          <div class="field-row">
            <div class="field grow">
              <label for="job-cron">Schedule (cron)</label>
              <input id="job-cron" class="mono" value=${values.cron} onInput=${set('cron')} placeholder="e.g. 0 2 * * *  or  @daily"
                autocomplete="off" aria-describedby="job-cron-help" />
            </div>
            <div class="field">
              <label for="job-timezone">Time zone</label>
              <input id="job-timezone" list="job-timezones" value=${values.timezone} onInput=${set('timezone')} autocomplete="off" />
              <datalist id="job-timezones">${knownTimeZones().map((zone) => html`<option value=${zone} />`)}</datalist>
            </div>
          </div>
          <${CronPreview} preview=${preview} />
          <div class="field-row">
            <div class="field">
              <label for="job-overlap">Overlap</label>
              <select id="job-overlap" value=${values.overlap} onChange=${set('overlap')}>
                ${OVERLAPS.map(([value, text]) => html`<option value=${value}>${text}</option>`)}
              </select>
            </div>
            <label class="toggle check-field"><input type="checkbox" checked=${values.enabled} onChange=${set('enabled')} />
              Schedule enabled</label>
          </div>
        </fieldset>

        <fieldset>
          <legend>When it fails or crowds</legend>
          <div class="field-row">
            <div class="field">
              <label for="job-retries">Retries</label>
              <input id="job-retries" type="number" min="0" max="10" step="1" placeholder="0" value=${values.retries}
                onInput=${set('retries')} />
            </div>
            <div class="field">
              <label for="job-retry-delay">Retry delay (s)</label>
              <input id="job-retry-delay" type="number" min="0" max="86400" step="any" placeholder="10"
                value=${values.retryDelay} onInput=${set('retryDelay')} />
            </div>
            <div class="field">
              <label for="job-concurrency">Concurrency limit</label>
              <input id="job-concurrency" type="number" min="1" max="1000" step="1" placeholder="none"
                value=${values.concurrency} onInput=${set('concurrency')} />
            </div>
          </div>
          <p class="help">A failed or timed-out run is tried again up to <em>Retries</em> times, the delay doubling
            each time. With a limit, runs of the job beyond it wait queued, oldest first.</p>
        </fieldset>

        <fieldset>
          <legend>Parameters</legend>
          <${ParamsTable} params=${values.params} update=${updateParam} remove=${removeParam} />
          <div><button type="button" onClick=${addParam}>Add parameter</button></div>
        </fieldset>

        ${error && html`<${ErrorAlert} message=${error} />`}
        <div class="form-actions">
          <button type="submit" class="primary" disabled=${busy}>Save job</button>
          <a class="button" href=${job ? `/jobs/${job.id}` : '/jobs'}>Cancel</a>
        </div>
      </form>
    </main>`;
}
