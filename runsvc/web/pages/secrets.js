// Secrets (SPEC §17): operators see the names (with when they were created and last set); admins add a
// secret, replace its value and delete it. A value is typed once and sent; it is never shown again (the
// API has no way to read one back), and the inputs are cleared as soon as the server has it.

import { html, useState, useEffect } from '../lib.js';
import { api } from '../api.js';
import { hasRole, localDateTime } from '../format.js';
import { ErrorAlert } from './common.js';

const NAME_PATTERN = '[A-Za-z_][A-Za-z0-9_]{0,63}';

// The value of one secret, replaced in place: a textarea (a value may span lines, e.g. a PEM key).
function ReplaceForm({ secret, onSaved, onCancel, setError }) {
  const [busy, setBusy] = useState(false);
  const save = async (event) => {
    event.preventDefault();
    const form = event.target;
    setBusy(true);
    setError(null);
    try {
      await api('PUT', `/secrets/${encodeURIComponent(secret.name)}`, { value: form.elements.value.value });
      form.elements.value.value = '';
      onSaved(secret.name);
    } catch (e) {
      setError(e.message);
      setBusy(false);
    }
  };
  const id = `replace-${secret.name}`;
  return html`
    <form class="replace-secret" onSubmit=${save}>
      <label for=${id}>New value of ${secret.name}</label>
      <textarea id=${id} name="value" class="mono" rows="2" required autocomplete="off" spellcheck="false"></textarea>
      <div class="form-actions">
        <button type="submit" class="primary" disabled=${busy}>Save ${secret.name}</button>
        <button type="button" onClick=${onCancel}>Cancel</button>
      </div>
    </form>`;
}

export function SecretsPage({ me }) {
  const [secrets, setSecrets] = useState(null);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  const [replacing, setReplacing] = useState(null); // the name whose value is being replaced
  const [busy, setBusy] = useState(false);
  const admin = hasRole(me.user, 'admin');

  const load = async () => {
    try {
      setSecrets((await api('GET', '/secrets')).secrets);
    } catch (e) {
      setError(e.message);
    }
  };
  useEffect(() => { load(); }, []);

  const add = async (event) => {
    event.preventDefault();
    const form = event.target;
    const name = form.elements.secret_name.value.trim();
    setError(null);
    setNotice(null);
    setBusy(true);
    try {
      await api('POST', '/secrets', { name, value: form.elements.secret_value.value });
      form.reset(); // the value leaves the page as soon as the server has it
      setNotice(`Added ${name}. Its value is stored encrypted and will not be shown again.`);
      await load();
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };

  const saved = async (name) => {
    setReplacing(null);
    setNotice(`Replaced the value of ${name}. Runs that start from now on get the new value.`);
    await load();
  };

  const remove = async (secret) => {
    if (!window.confirm(`Delete the secret ${secret.name}? Runs and jobs that use it will fail when they start.`)) return;
    setError(null);
    setNotice(null);
    try {
      await api('DELETE', `/secrets/${encodeURIComponent(secret.name)}`);
      setNotice(`Deleted ${secret.name}.`);
    } catch (e) {
      setError(e.message);
    }
    await load();
  };

  const columns = admin ? 5 : 4;
  return html`
    <main class="page">
      <div class="page-head"><h1>Secrets</h1></div>
      <p class="lead">Runs name a secret in their <b>Secrets</b> field (<code>ENV_NAME=secret_name</code>) and get its
        value in that environment variable; the value is masked as <code>***</code> in their output. Anyone who may
        submit runs can use a secret: masking guards against accidents, not against a run that wants the value.</p>
      ${error && html`<${ErrorAlert} message=${error} />`}
      ${notice && html`<p class="notice" role="status">${notice}</p>`}
      <div class=${admin ? 'users-layout' : ''}>
        <div class="table-wrap">
          <table class="secrets">
            <thead><tr>
              <th scope="col">Name</th><th scope="col" class="wide-only">Created</th>
              <th scope="col">Updated</th><th scope="col" class="wide-only">By</th>
              ${admin && html`<th scope="col"><span class="visually-hidden">Actions</span></th>`}
            </tr></thead>
            <tbody>
              ${secrets && secrets.length === 0 && html`
                <tr><td colspan=${columns} class="empty">No secrets yet.${admin ? ' Add one with the form.' : ''}</td></tr>`}
              ${(secrets || []).map((secret) => html`
                <tr key=${secret.name}>
                  <td class="name mono">${secret.name}</td>
                  <td class="time wide-only">${localDateTime(secret.created_at)}</td>
                  <td class="time">${localDateTime(secret.updated_at)}</td>
                  <td class="wide-only">${secret.updated_by || '–'}</td>
                  ${admin && html`
                    <td class="row-action">
                      <div class="row-buttons">
                        <button type="button" aria-label=${`Replace ${secret.name}`}
                          onClick=${() => setReplacing(replacing === secret.name ? null : secret.name)}>Replace</button>
                        <button type="button" class="danger" aria-label=${`Delete ${secret.name}`}
                          onClick=${() => remove(secret)}>Delete</button>
                      </div>
                    </td>`}
                </tr>
                ${replacing === secret.name && html`
                  <tr key=${`${secret.name}-replace`}><td colspan=${columns}>
                    <${ReplaceForm} secret=${secret} onSaved=${saved} onCancel=${() => setReplacing(null)}
                      setError=${setError} />
                  </td></tr>`}`)}
            </tbody>
          </table>
        </div>
        ${admin && html`
          <form class="card form" onSubmit=${add}>
            <h2>Add a secret</h2>
            <label for="secret-name">Secret name</label>
            <input id="secret-name" name="secret_name" class="mono" required maxlength="64" pattern=${NAME_PATTERN}
              placeholder="e.g. prod_db" autocomplete="off" spellcheck="false" aria-describedby="secret-name-help" />
            <p id="secret-name-help" class="help">A letter or <code>_</code>, then letters, digits and <code>_</code> (at
              most 64).</p>
            <label for="secret-value">Value</label>
            <textarea id="secret-value" name="secret_value" class="mono" rows="3" required autocomplete="off"
              spellcheck="false" aria-describedby="secret-value-help"></textarea>
            <p id="secret-value-help" class="help">Up to 64 KiB. Stored encrypted; nobody can read it back, not even
              an admin — only runs get it.</p>
            <div class="form-actions"><button type="submit" class="primary" disabled=${busy}>Add secret</button></div>
          </form>`}
      </div>
    </main>`;
}
