// API tokens (SPEC §12): create one (its secret is shown here once, never again), list them (an admin
// sees everybody's, with the owner), revoke. The role offered goes up to the user's own, no higher.

import { html, useEffect, useRef, useState } from '../lib.js';
import { api } from '../api.js';
import { localDate, localDateTime } from '../format.js';
import { ErrorAlert } from './common.js';

const ROLES = ['viewer', 'operator', 'admin'];
const DEFAULT_EXPIRES_IN_DAYS = 90;
const MAX_EXPIRES_IN_DAYS = 3650;

function rolesUpTo(role) {
  return ROLES.slice(0, ROLES.indexOf(role) + 1);
}

function expiry(token, now) {
  if (!token.expires_at) return 'never';
  const day = localDate(token.expires_at);
  return Date.parse(token.expires_at) <= now ? `${day} (expired)` : day;
}

// The secret of the token just made: on this page only until it is dismissed or the page is left.
function NewSecret({ created, onDone }) {
  const input = useRef(null);
  const [copied, setCopied] = useState(null);
  useEffect(() => {
    input.current.focus();
    input.current.select();
  }, [created.secret]);

  const copy = async () => {
    try {
      await navigator.clipboard.writeText(created.secret);
      setCopied('Copied to the clipboard.');
    } catch {
      input.current.select(); // the clipboard may be refused (no permission, not a secure context)
      setCopied('The browser refused the clipboard: the secret is selected, copy it with Ctrl+C.');
    }
  };

  return html`
    <section class="card secret-card" aria-labelledby="secret-heading">
      <h2 id="secret-heading">Token ${created.token.name} created</h2>
      <p>Copy its secret now: it will not be shown again. runsvc keeps only a hash of it.</p>
      <div class="secret-row">
        <label for="token-secret" class="visually-hidden">Secret of ${created.token.name}</label>
        <input id="token-secret" ref=${input} class="mono" readonly value=${created.secret}
          spellcheck="false" autocomplete="off" />
        <button type="button" class="primary" onClick=${copy}>Copy secret</button>
        <button type="button" onClick=${onDone}>Done</button>
      </div>
      <p class="help">Send it as <code>Authorization: Bearer …</code> to <code>/api/v1</code>, or give it to the
        CLI in <code>RUNSVC_TOKEN</code>.</p>
      ${copied && html`<p class="help" role="status">${copied}</p>`}
    </section>`;
}

export function TokensPage({ me }) {
  const [tokens, setTokens] = useState(null);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  const [created, setCreated] = useState(null); // {token, secret} of the token just made
  const [busy, setBusy] = useState(false);
  const everyone = me.user.role === 'admin';
  const roles = rolesUpTo(me.user.role);

  const load = async () => {
    try {
      setTokens((await api('GET', '/tokens')).tokens);
    } catch (e) {
      setError(e.message);
    }
  };
  useEffect(() => { load(); }, []);

  const create = async (event) => {
    event.preventDefault();
    const form = event.target;
    const days = form.elements.expires_in_days.value;
    setError(null);
    setNotice(null);
    setCreated(null);
    setBusy(true);
    try {
      const answer = await api('POST', '/tokens', {
        name: form.elements.token_name.value,
        role: form.elements.role.value,
        expires_in_days: days === '' ? null : Number(days),
      });
      setCreated(answer);
      form.elements.token_name.value = '';
      form.elements.expires_in_days.value = String(DEFAULT_EXPIRES_IN_DAYS);
      await load();
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };

  const revoke = async (token) => {
    setError(null);
    setNotice(null);
    try {
      await api('DELETE', `/tokens/${token.id}`);
      if (created && created.token.id === token.id) setCreated(null);
      setNotice(`Revoked ${token.name}.`);
    } catch (e) {
      setError(e.message);
    }
    await load();
  };

  const now = Date.now();
  const columns = everyone ? 7 : 6;
  return html`
    <main class="page">
      <div class="page-head"><h1>API tokens</h1></div>
      ${error && html`<${ErrorAlert} message=${error} />`}
      ${notice && html`<p class="notice" role="status">${notice}</p>`}
      ${created && html`<${NewSecret} created=${created} onDone=${() => setCreated(null)} />`}
      <div class="users-layout">
        <div class="table-wrap">
          <table class="tokens">
            <thead><tr>
              <th scope="col">Name</th>
              ${everyone && html`<th scope="col">User</th>`}
              <th scope="col">Role</th><th scope="col" class="wide-only">Created</th>
              <th scope="col">Expires</th><th scope="col" class="wide-only">Last used</th>
              <th scope="col"><span class="visually-hidden">Actions</span></th>
            </tr></thead>
            <tbody>
              ${tokens && tokens.length === 0 && html`
                <tr><td colspan=${columns} class="empty">No tokens yet. Scripts and CI use one instead of a password.</td></tr>`}
              ${(tokens || []).map((token) => html`
                <tr key=${token.id}>
                  <td class="name">${token.name}</td>
                  ${everyone && html`<td>${token.username}</td>`}
                  <td>${token.role}</td>
                  <td class="time wide-only" title=${localDateTime(token.created_at)}>${localDate(token.created_at)}</td>
                  <td class="time" title=${token.expires_at ? localDateTime(token.expires_at) : undefined}>${expiry(token, now)}</td>
                  <td class="time wide-only">${token.last_used_at ? localDateTime(token.last_used_at) : 'never'}</td>
                  <td class="row-action">
                    <button type="button" class="danger"
                      aria-label=${everyone && token.username !== me.user.username
                        ? `Revoke ${token.name} of ${token.username}` : `Revoke ${token.name}`}
                      onClick=${() => revoke(token)}>Revoke</button>
                  </td>
                </tr>`)}
            </tbody>
          </table>
        </div>
        <form class="card form" onSubmit=${create}>
          <h2>Create a token</h2>
          <label for="token-name">Token name</label>
          <input id="token-name" name="token_name" required maxlength="200" placeholder="e.g. nightly deploy" autocomplete="off" />
          <label for="token-role">Role</label>
          <select id="token-role" name="role" aria-describedby="token-role-help">
            ${roles.map((r) => html`<option value=${r} selected=${r === me.user.role}>${r}</option>`)}
          </select>
          <p id="token-role-help" class="help">At most your own role (${me.user.role}).</p>
          <label for="token-expires">Expires in (days)</label>
          <input id="token-expires" name="expires_in_days" type="number" min="1" max=${MAX_EXPIRES_IN_DAYS} step="1"
            defaultValue=${DEFAULT_EXPIRES_IN_DAYS} aria-describedby="token-expires-help" />
          <p id="token-expires-help" class="help">1 to 3,650 days. Leave it empty for a token that never expires.</p>
          <div class="form-actions"><button type="submit" class="primary" disabled=${busy}>Create token</button></div>
        </form>
      </div>
    </main>`;
}
