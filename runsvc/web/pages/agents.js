// Remote agents (SPEC §11), for admins: make a one-time enrollment token and show, once, the command that
// enrolls an agent with it; list the tokens and the agents (connected, last seen, running runs); revoke.
// The lists are fetched when the page is shown (also when the browser tab comes back into view) and by
// `Refresh`; nothing polls.

import { html, useEffect, useRef, useState } from '../lib.js';
import { api } from '../api.js';
import { localDateTime, parseLabels } from '../format.js';
import { ErrorAlert } from './common.js';

const DEFAULT_TTL_S = 3600;
const MAX_TTL_S = 7 * 24 * 3600;

// What to paste on the agent's machine. The token's labels apply by themselves, so only the server's
// address (as this browser reaches it) and the token are needed; neither holds a character a shell reads.
// The token goes in on stdin (`--enroll -`): `echo` is built into the shell, so it never appears in
// the argv of a process (`ps`), where every process of that machine could read it.
export function agentCommand(origin, token) {
  return `echo ${token} | python -m runsvc agent --server ${origin} --enroll -`;
}

function Labels({ labels, none = 'none' }) {
  if (!labels.length) return html`<span class="muted">${none}</span>`;
  return html`<span class="labels">${labels.map((label) => html`<span class="label-chip">${label}</span>`)}</span>`;
}

function tokenState(token, now) {
  if (token.used_at) return `used ${localDateTime(token.used_at)}`;
  if (Date.parse(token.expires_at) <= now) return 'expired';
  return 'not yet';
}

// The command with the token just made: on this page only until it is dismissed or the page is left.
function EnrollCommand({ created, onDone }) {
  const input = useRef(null);
  const [copied, setCopied] = useState(null);
  const command = agentCommand(location.origin, created.token);
  const labels = created.enrollment_token.labels;
  useEffect(() => {
    input.current.focus();
    input.current.select();
  }, [created.token]);

  const copy = async () => {
    try {
      await navigator.clipboard.writeText(command);
      setCopied('Copied to the clipboard.');
    } catch {
      input.current.select(); // the clipboard may be refused (no permission, not a secure context)
      setCopied('The browser refused the clipboard: the command is selected, copy it with Ctrl+C.');
    }
  };

  return html`
    <section class="card secret-card" aria-labelledby="enroll-heading">
      <h2 id="enroll-heading">Enrollment token created</h2>
      <p>Run this on the agent's machine before ${localDateTime(created.enrollment_token.expires_at)}. The token
        works once and will not be shown again: runsvc keeps only a hash of it.</p>
      <div class="secret-row">
        <label for="enroll-command" class="visually-hidden">Agent command</label>
        <input id="enroll-command" ref=${input} class="mono" readonly value=${command}
          spellcheck="false" autocomplete="off" />
        <button type="button" class="primary" onClick=${copy}>Copy command</button>
        <button type="button" onClick=${onDone}>Done</button>
      </div>
      <p class="help">${labels.length
        ? `The agent gets the labels ${labels.join(', ')}. `
        : html`The token has no labels: add <code>--labels a,b</code> to give the agent some. `}
        It keeps its credentials in <code>./runsvc-agent/agent.json</code> (<code>--state-dir</code>) and reuses
        them on later starts; <code>--name</code> (default: the host name) and <code>--max-runs</code> (default:
        its CPUs) are optional. Started as root, give it <code>--run-as-user USER</code> so that runs cannot
        do what the agent can.</p>
      ${copied && html`<p class="help" role="status">${copied}</p>`}
    </section>`;
}

function AgentsTable({ agents, onRevoke }) {
  return html`
    <div class="table-wrap">
      <table class="agents" aria-label="Agents">
        <thead><tr>
          <th scope="col">Name</th><th scope="col">Labels</th><th scope="col">Connected</th>
          <th scope="col">Last seen</th><th scope="col">Running</th>
          <th scope="col"><span class="visually-hidden">Actions</span></th>
        </tr></thead>
        <tbody>
          ${agents && agents.length === 0 && html`
            <tr><td colspan="6" class="empty">No agents yet. Create an enrollment token and run the command it shows on another machine.</td></tr>`}
          ${(agents || []).map((agent) => html`
            <tr key=${agent.id}>
              <td class="name">${agent.name}</td>
              <td><${Labels} labels=${agent.labels} /></td>
              <td><span class=${`conn ${agent.connected ? 'conn-live' : ''}`}>${agent.connected ? 'yes' : 'no'}</span></td>
              <td class="time">${agent.last_seen_at ? localDateTime(agent.last_seen_at) : 'never'}</td>
              <td>${agent.running.length
                ? agent.running.map((id, n) => html`${n ? ', ' : ''}<a href=${`/runs/${id}`}>#${id}</a>`)
                : html`<span class="muted">none</span>`}</td>
              <td class="row-action">
                <button type="button" class="danger" aria-label=${`Revoke ${agent.name}`}
                  onClick=${() => onRevoke(agent)}>Revoke</button>
              </td>
            </tr>`)}
        </tbody>
      </table>
    </div>`;
}

function TokensTable({ tokens, now, onDelete }) {
  return html`
    <div class="table-wrap">
      <table class="enrollment-tokens" aria-label="Enrollment tokens">
        <thead><tr>
          <th scope="col">Token</th><th scope="col">Labels</th><th scope="col" class="wide-only">Created</th>
          <th scope="col">Expires</th><th scope="col">Used</th>
          <th scope="col"><span class="visually-hidden">Actions</span></th>
        </tr></thead>
        <tbody>
          ${tokens && tokens.length === 0 && html`
            <tr><td colspan="6" class="empty">No enrollment tokens.</td></tr>`}
          ${(tokens || []).map((token) => html`
            <tr key=${token.id}>
              <td>#${token.id}</td>
              <td><${Labels} labels=${token.labels} /></td>
              <td class="time wide-only">${localDateTime(token.created_at)}</td>
              <td class="time">${localDateTime(token.expires_at)}</td>
              <td class="time">${tokenState(token, now)}</td>
              <td class="row-action">
                <button type="button" class="danger" aria-label=${`Delete enrollment token #${token.id}`}
                  onClick=${() => onDelete(token)}>Delete</button>
              </td>
            </tr>`)}
        </tbody>
      </table>
    </div>`;
}

export function AgentsPage() {
  const [agents, setAgents] = useState(null);
  const [tokens, setTokens] = useState(null);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  const [created, setCreated] = useState(null); // {enrollment_token, token} of the token just made
  const [busy, setBusy] = useState(false);
  const [loading, setLoading] = useState(false);

  const load = async () => {
    setLoading(true);
    try {
      const [agentList, tokenList] = await Promise.all([api('GET', '/agents'), api('GET', '/enrollment-tokens')]);
      setAgents(agentList.agents);
      setTokens(tokenList.enrollment_tokens);
    } catch (e) {
      setError(e.message);
    } finally {
      setLoading(false);
    }
  };
  useEffect(() => {
    load();
    const onVisible = () => { if (document.visibilityState === 'visible') load(); };
    document.addEventListener('visibilitychange', onVisible);
    return () => document.removeEventListener('visibilitychange', onVisible);
  }, []);

  const refresh = () => {
    setError(null);
    setNotice(null);
    load();
  };

  const create = async (event) => {
    event.preventDefault();
    const form = event.target;
    const ttl = form.elements.ttl_s.value;
    setError(null);
    setNotice(null);
    setCreated(null);
    setBusy(true);
    try {
      const body = { labels: parseLabels(form.elements.labels.value) };
      if (ttl !== '') body.ttl_s = Number(ttl);
      setCreated(await api('POST', '/enrollment-tokens', body));
      form.elements.labels.value = '';
      form.elements.ttl_s.value = String(DEFAULT_TTL_S);
      await load();
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };

  const revoke = async (agent) => {
    setError(null);
    setNotice(null);
    try {
      await api('DELETE', `/agents/${agent.id}`);
      setNotice(`Revoked ${agent.name}.`);
    } catch (e) {
      setError(e.message);
    }
    await load();
  };

  const deleteToken = async (token) => {
    setError(null);
    setNotice(null);
    try {
      await api('DELETE', `/enrollment-tokens/${token.id}`);
      if (created && created.enrollment_token.id === token.id) setCreated(null);
      setNotice(`Deleted enrollment token #${token.id}.`);
    } catch (e) {
      setError(e.message);
    }
    await load();
  };

  return html`
    <main class="page">
      <div class="page-head">
        <h1>Agents</h1>
        <button type="button" onClick=${refresh} disabled=${loading}>Refresh</button>
      </div>
      ${error && html`<${ErrorAlert} message=${error} />`}
      ${notice && html`<p class="notice" role="status">${notice}</p>`}
      ${created && html`<${EnrollCommand} created=${created} onDone=${() => setCreated(null)} />`}
      <div class="users-layout">
        <div class="stack">
          <${AgentsTable} agents=${agents} onRevoke=${revoke} />
          <h2 class="section-title">Enrollment tokens</h2>
          <${TokensTable} tokens=${tokens} now=${Date.now()} onDelete=${deleteToken} />
        </div>
        <form class="card form" onSubmit=${create}>
          <h2>Enroll an agent</h2>
          <label for="enroll-labels">Labels</label>
          <input id="enroll-labels" name="labels" placeholder="e.g. gpu, linux" autocomplete="off"
            aria-describedby="enroll-labels-help" />
          <p id="enroll-labels-help" class="help">Comma-separated. The agent gets these; runs asking for labels go
            only to an executor that has them all.</p>
          <label for="enroll-ttl">Expires in (s)</label>
          <input id="enroll-ttl" name="ttl_s" type="number" min="1" max=${MAX_TTL_S} step="1"
            defaultValue=${DEFAULT_TTL_S} aria-describedby="enroll-ttl-help" />
          <p id="enroll-ttl-help" class="help">How long the token can be used (once): up to 604,800 s (7 days).</p>
          <div class="form-actions">
            <button type="submit" class="primary" disabled=${busy}>Create enrollment token</button>
          </div>
        </form>
      </div>
    </main>`;
}
