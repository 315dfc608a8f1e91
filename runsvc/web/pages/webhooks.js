// Webhooks (SPEC §17, admins): create one (its signing secret is shown here once, never again), list them
// with the result of each one's latest delivery, show one webhook's deliveries, delete.

import { html, useEffect, useRef, useState } from '../lib.js';
import { api } from '../api.js';
import { localDateTime } from '../format.js';
import { ErrorAlert } from './common.js';

const STATUSES = ['succeeded', 'failed', 'cancelled', 'timed_out', 'interrupted'];
const EVENTS = ['run.finished'];

// The signing secret of the webhook just made: on this page only until it is dismissed or the page is left.
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

  const id = created.webhook.id;
  return html`
    <section class="card secret-card" aria-labelledby="secret-heading">
      <h2 id="secret-heading">Webhook ${id} created</h2>
      <p>Copy its signing secret now: it will not be shown again. The receiver checks <code>X-Runsvc-Signature</code> with it (see the README).</p>
      <div class="secret-row">
        <label for="webhook-secret" class="visually-hidden">Secret of webhook ${id}</label>
        <input id="webhook-secret" ref=${input} class="mono" readonly value=${created.secret}
          spellcheck="false" autocomplete="off" />
        <button type="button" class="primary" onClick=${copy}>Copy secret</button>
        <button type="button" onClick=${onDone}>Done</button>
      </div>
      ${copied && html`<p class="help" role="status">${copied}</p>`}
    </section>`;
}

// One delivery's result in words: delivered, failed (and when it is tried again), or not tried yet.
function outcome(delivery) {
  if (!delivery) return 'no delivery yet';
  if (delivery.delivered_at) return `delivered (${delivery.last_status_code}) ${localDateTime(delivery.delivered_at)}`;
  if (delivery.attempts === 0) return 'pending';
  const why = delivery.last_error || `HTTP ${delivery.last_status_code}`;
  return `failed: ${why}; ${delivery.attempts} ${delivery.attempts === 1 ? 'attempt' : 'attempts'}, next ${localDateTime(delivery.next_try_at)}`;
}

function outcomeClass(delivery) {
  if (!delivery || delivery.attempts === 0) return 'delivery-result';
  return delivery.delivered_at ? 'delivery-result delivered' : 'delivery-result failing';
}

function Deliveries({ webhook, deliveries, onClose }) {
  return html`
    <section class="card deliveries" aria-labelledby="deliveries-heading">
      <div class="page-head">
        <h2 id="deliveries-heading">Deliveries of webhook ${webhook.id}</h2>
        <button type="button" onClick=${onClose}>Close</button>
      </div>
      <p class="help mono">${webhook.url}</p>
      <div class="table-wrap">
        <table class="deliveries">
          <thead><tr>
            <th scope="col">Delivery</th><th scope="col">Run</th><th scope="col">Result</th>
            <th scope="col">Attempts</th><th scope="col" class="wide-only">Last answer</th>
          </tr></thead>
          <tbody>
            ${deliveries.length === 0 && html`
              <tr><td colspan="5" class="empty">No deliveries yet: one is made when a matching run ends.</td></tr>`}
            ${deliveries.map((delivery) => html`
              <tr key=${delivery.id}>
                <td class="mono">${delivery.id}</td>
                <td><a href=${`/runs/${delivery.run_id}`}>#${delivery.run_id}</a></td>
                <td class=${outcomeClass(delivery)}>${outcome(delivery)}</td>
                <td>${delivery.attempts}</td>
                <td class="wide-only">${delivery.last_status_code ?? '—'}</td>
              </tr>`)}
          </tbody>
        </table>
      </div>
    </section>`;
}

export function WebhooksPage() {
  const [webhooks, setWebhooks] = useState(null); // [{webhook, last}]
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  const [created, setCreated] = useState(null); // {webhook, secret} of the webhook just made
  const [shown, setShown] = useState(null); // {webhook, deliveries} whose deliveries are open
  const [busy, setBusy] = useState(false);

  const load = async () => {
    try {
      const listed = (await api('GET', '/webhooks')).webhooks;
      // The latest delivery of each (a handful of webhooks: one small request each).
      const lasts = await Promise.all(listed.map((webhook) =>
        api('GET', `/webhooks/${webhook.id}/deliveries?limit=1`).then((answer) => answer.deliveries[0] || null)));
      setWebhooks(listed.map((webhook, n) => ({ webhook, last: lasts[n] })));
    } catch (e) {
      setError(e.message);
    }
  };
  useEffect(() => { load(); }, []);

  const create = async (event) => {
    event.preventDefault();
    const form = event.target;
    const checked = (values, prefix) => values.filter((value) => form.elements[`${prefix}-${value}`].checked);
    const job = form.elements.job.value.trim();
    setError(null);
    setNotice(null);
    setCreated(null);
    setBusy(true);
    try {
      const answer = await api('POST', '/webhooks', {
        url: form.elements.url.value.trim(),
        job: job === '' ? null : job,
        statuses: checked(STATUSES, 'status'),
        events: checked(EVENTS, 'event'),
      });
      setCreated(answer);
      form.reset();
      await load();
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };

  const showDeliveries = async (webhook) => {
    setError(null);
    try {
      setShown({ webhook, deliveries: (await api('GET', `/webhooks/${webhook.id}/deliveries`)).deliveries });
    } catch (e) {
      setError(e.message);
    }
  };

  const remove = async (webhook) => {
    if (!window.confirm(`Delete webhook ${webhook.id} (${webhook.url})? Its pending deliveries are dropped.`)) return;
    setError(null);
    setNotice(null);
    try {
      await api('DELETE', `/webhooks/${webhook.id}`);
      if (created && created.webhook.id === webhook.id) setCreated(null);
      if (shown && shown.webhook.id === webhook.id) setShown(null);
      setNotice(`Deleted webhook ${webhook.id}.`);
    } catch (e) {
      setError(e.message);
    }
    await load();
  };

  return html`
    <main class="page">
      <div class="page-head"><h1>Webhooks</h1></div>
      ${error && html`<${ErrorAlert} message=${error} />`}
      ${notice && html`<p class="notice" role="status">${notice}</p>`}
      ${created && html`<${NewSecret} created=${created} onDone=${() => setCreated(null)} />`}
      <div class="users-layout">
        <div class="table-wrap">
          <table class="webhooks">
            <thead><tr>
              <th scope="col">Webhook</th><th scope="col">URL</th><th scope="col">Job</th>
              <th scope="col" class="wide-only">Statuses</th><th scope="col">Last delivery</th>
              <th scope="col"><span class="visually-hidden">Actions</span></th>
            </tr></thead>
            <tbody>
              ${webhooks && webhooks.length === 0 && html`
                <tr><td colspan="6" class="empty">No webhooks yet. A webhook tells another system that a run ended.</td></tr>`}
              ${(webhooks || []).map(({ webhook, last }) => html`
                <tr key=${webhook.id}>
                  <td class="mono">${webhook.id}</td>
                  <td class="mono url">${webhook.url}</td>
                  <td>${webhook.job ?? 'every job'}</td>
                  <td class="wide-only">${webhook.statuses.length === STATUSES.length ? 'all' : webhook.statuses.join(', ')}</td>
                  <td class=${outcomeClass(last)}>${outcome(last)}</td>
                  <td class="row-action">
                    <button type="button" aria-label=${`Deliveries of webhook ${webhook.id}`}
                      onClick=${() => showDeliveries(webhook)}>Deliveries</button>
                    <button type="button" class="danger" aria-label=${`Delete webhook ${webhook.id}`}
                      onClick=${() => remove(webhook)}>Delete</button>
                  </td>
                </tr>`)}
            </tbody>
          </table>
        </div>
        <form class="card form" onSubmit=${create}>
          <h2>Create a webhook</h2>
          <label for="webhook-url">URL</label>
          <input id="webhook-url" name="url" type="url" required maxlength="2000"
            placeholder="https://chat.example.com/hooks/runsvc" autocomplete="off" />
          <label for="webhook-job">Job</label>
          <input id="webhook-job" name="job" maxlength="100" placeholder="empty: every run" autocomplete="off"
            aria-describedby="webhook-job-help" />
          <p id="webhook-job-help" class="help">A job name: only that job's runs. Empty: every run.</p>
          <fieldset class="choices">
            <legend>Statuses</legend>
            ${STATUSES.map((status) => html`
              <label class="toggle"><input type="checkbox" name=${`status-${status}`} defaultChecked /> ${status}</label>`)}
          </fieldset>
          <fieldset class="choices">
            <legend>Events</legend>
            ${EVENTS.map((name) => html`
              <label class="toggle"><input type="checkbox" name=${`event-${name}`} defaultChecked /> ${name}</label>`)}
          </fieldset>
          <div class="form-actions"><button type="submit" class="primary" disabled=${busy}>Create webhook</button></div>
        </form>
      </div>
      ${shown && html`<${Deliveries} webhook=${shown.webhook} deliveries=${shown.deliveries} onClose=${() => setShown(null)} />`}
    </main>`;
}
