// New run: a shell line run as ["sh", "-c", line], a name, a timeout, KEY=VALUE environment lines,
// ENV_NAME=secret_name secrets lines and the labels an executor must have.

import { html, useState } from '../lib.js';
import { api } from '../api.js';
import { navigate } from '../router.js';
import { parseLabels } from '../format.js';
import { ErrorAlert } from './common.js';

// KEY=VALUE per line; blank lines and lines starting with # are skipped.
function parseAssignments(text, what, shape) {
  const env = {};
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n += 1) {
    const line = lines[n].replace(/\r$/, '');
    if (!line.trim() || line.trimStart().startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`${what} line ${n + 1} is not ${shape}: ${line}`);
    env[line.slice(0, eq).trim()] = line.slice(eq + 1);
  }
  return env;
}

export function parseEnvironment(text) {
  return parseAssignments(text, 'Environment', 'KEY=VALUE');
}

// ENV_NAME=secret_name per line (SPEC §17): the variable the run gets and the secret whose value it holds.
export function parseSecrets(text) {
  const secrets = parseAssignments(text, 'Secrets', 'ENV_NAME=secret_name');
  for (const key of Object.keys(secrets)) secrets[key] = secrets[key].trim();
  return secrets;
}

export function secretsText(secrets) {
  return Object.entries(secrets || {}).map(([key, name]) => `${key}=${name}`).join('\n');
}

// The Secrets field of the new-run and job forms (its label is what tests and screen readers find).
export function SecretsField({ id, value, onInput, rows = 2 }) {
  return html`
    <label for=${id}>Secrets</label>
    <textarea id=${id} name="secrets" class="mono" rows=${rows} placeholder="ENV_NAME=secret_name, one per line"
      value=${value} onInput=${onInput} aria-describedby=${`${id}-help`} spellcheck="false"></textarea>
    <p id=${`${id}-help`} class="help">The run gets each secret's value in that variable; the value is
      masked as <code>***</code> in its output. The header's Secrets page lists their names.</p>`;
}

export function NewRunPage() {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event) => {
    event.preventDefault();
    const form = event.target;
    setError(null);
    let body;
    try {
      body = { command: ['sh', '-c', form.command.value], env: parseEnvironment(form.env.value) };
      const secrets = parseSecrets(form.secrets.value);
      if (Object.keys(secrets).length) body.secrets = secrets;
    } catch (e) {
      setError(e.message);
      return;
    }
    if (form.name.value.trim()) body.name = form.name.value.trim();
    if (form.timeout.value !== '') body.timeout_s = Number(form.timeout.value);
    const labels = parseLabels(form.labels.value);
    if (labels.length) body.labels = labels;
    setBusy(true);
    try {
      const data = await api('POST', '/runs', body);
      navigate(`/runs/${data.run.id}`);
    } catch (e) {
      setError(e.message);
      setBusy(false);
    }
  };

  return html`
    <main class="page narrow">
      <h1>New run</h1>
      <form class="card form" onSubmit=${submit}>
        ${error && html`<${ErrorAlert} message=${error} />`}
        <label for="run-command">Command</label>
        <input id="run-command" name="command" class="mono" required placeholder="make test"
          aria-describedby="run-command-help" autocomplete="off" />
        <p id="run-command-help" class="help">A shell line, run as <code>sh -c</code> in a fresh directory.</p>
        <label for="run-name">Name</label>
        <input id="run-name" name="name" maxlength="200" placeholder="optional" autocomplete="off" />
        <label for="run-timeout">Timeout (s)</label>
        <input id="run-timeout" name="timeout" type="number" min="1" max="604800" step="any" placeholder="3600"
          aria-describedby="run-timeout-help" />
        <p id="run-timeout-help" class="help">Seconds before the run is stopped; 3600 when left empty, at most 7 days.</p>
        <label for="run-env">Environment</label>
        <textarea id="run-env" name="env" class="mono" rows="4" placeholder="KEY=VALUE, one per line"
          aria-describedby="run-env-help"></textarea>
        <p id="run-env-help" class="help">The run also gets PATH, HOME, LANG and RUNSVC_RUN_ID.</p>
        <${SecretsField} id="run-secrets" />
        <label for="run-labels">Labels</label>
        <input id="run-labels" name="labels" placeholder="optional, e.g. gpu, linux" autocomplete="off"
          aria-describedby="run-labels-help" />
        <p id="run-labels-help" class="help">Comma-separated. The run goes only to an executor (this server or an
          agent) that has all of them.</p>
        <div class="form-actions">
          <button type="submit" class="primary" disabled=${busy}>Submit run</button>
        </div>
      </form>
    </main>`;
}
