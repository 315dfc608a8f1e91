// The application shell: who is logged in, the header, and which page the address shows.

import { html, render, useEffect, useState } from './lib.js';
import { api, onUnauthenticated, setCsrfToken } from './api.js';
import { currentLocation, navigate, safeNext, subscribe } from './router.js';
import { hasRole } from './format.js';
import { LoginPage } from './pages/login.js';
import { RunsPage } from './pages/runs.js';
import { RunPage } from './pages/run.js';
import { NewRunPage } from './pages/newrun.js';
import { UsersPage } from './pages/users.js';
import { TokensPage } from './pages/tokens.js';
import { AgentsPage } from './pages/agents.js';
import { SecretsPage } from './pages/secrets.js';
import { JobsPage } from './pages/jobs.js';
import { JobPage } from './pages/jobs-detail.js';
import { JobFormPage } from './pages/jobs-form.js';
import { WebhooksPage } from './pages/webhooks.js';
import { AdminOnlyPage, NotFoundPage, OperatorsOnlyPage } from './pages/common.js';

function loginUrl() {
  const { path, search, hash } = currentLocation();
  const next = path === '/login' ? new URLSearchParams(search).get('next') || '/' : path + search + hash;
  return `/login?next=${encodeURIComponent(next)}`;
}

// The server sets this readable cookie next to the HttpOnly session cookie, with the same lifetime, and
// clears it at logout. Without it there is certainly no session, so the first visit goes straight to the
// login page instead of asking /auth/me for a 401 (which the browser would log as an error). It grants
// nothing: only the session cookie does.
const LOGGED_IN_COOKIE = 'runsvc_logged_in';

function maybeLoggedIn() {
  return document.cookie.split(';').some((part) => part.trim() === `${LOGGED_IN_COOKIE}=1`);
}

function forgetLoggedIn() {
  const secure = location.protocol === 'https:' ? '; Secure' : '';
  document.cookie = `${LOGGED_IN_COOKIE}=; Max-Age=0; Path=/; SameSite=Lax${secure}`;
}

function Header({ me, onLogout }) {
  const { path } = currentLocation();
  const link = (href, label, active) =>
    html`<a href=${href} class=${active ? 'active' : ''} aria-current=${active ? 'page' : undefined}>${label}</a>`;
  return html`
    <header class="topbar">
      <span class="brand"><span class="logo" aria-hidden="true"></span>runsvc</span>
      <nav aria-label="Main">
        ${link('/', 'Runs', path === '/' || (path.startsWith('/runs/') && path !== '/runs/new'))}
        ${hasRole(me.user, 'operator') && link('/runs/new', 'New run', path === '/runs/new')}
        ${link('/jobs', 'Jobs', path === '/jobs' || path.startsWith('/jobs/'))}
        ${link('/tokens', 'Tokens', path === '/tokens')}
        ${hasRole(me.user, 'operator') && link('/secrets', 'Secrets', path === '/secrets')}
        ${hasRole(me.user, 'admin') && link('/users', 'Users', path === '/users')}
        ${hasRole(me.user, 'admin') && link('/agents', 'Agents', path === '/agents')}
        ${hasRole(me.user, 'admin') && link('/webhooks', 'Webhooks', path === '/webhooks')}
      </nav>
      <div class="account">
        <span class="username" title=${`role: ${me.user.role}`}>${me.user.username}</span>
        <button type="button" onClick=${onLogout}>Log out</button>
      </div>
    </header>`;
}

function Page({ me, where, goToLogin }) {
  const { path, search } = where;
  const runMatch = /^\/runs\/(\d+)$/.exec(path);
  if (path === '/') return html`<${RunsPage} search=${search} goToLogin=${goToLogin} />`;
  if (path === '/runs/new' && hasRole(me.user, 'operator')) return html`<${NewRunPage} />`;
  if (runMatch) return html`<${RunPage} key=${runMatch[1]} runId=${Number(runMatch[1])} me=${me} goToLogin=${goToLogin} />`;
  if (path === '/tokens') return html`<${TokensPage} me=${me} />`;
  if (path === '/secrets') {
    return hasRole(me.user, 'operator') ? html`<${SecretsPage} me=${me} />` : html`<${OperatorsOnlyPage} what="Secrets" />`;
  }
  const jobMatch = /^\/jobs\/(\d+)(\/edit)?$/.exec(path);
  const operator = hasRole(me.user, 'operator');
  if (path === '/jobs') return html`<${JobsPage} me=${me} />`;
  if (path === '/jobs/new' && operator) return html`<${JobFormPage} key="new" />`;
  if (jobMatch && jobMatch[2] && operator) return html`<${JobFormPage} key=${path} jobId=${Number(jobMatch[1])} />`;
  if (jobMatch && !jobMatch[2]) return html`<${JobPage} key=${jobMatch[1]} jobId=${Number(jobMatch[1])} me=${me} goToLogin=${goToLogin} />`;
  const admin = hasRole(me.user, 'admin');
  if (path === '/users') return admin ? html`<${UsersPage} />` : html`<${AdminOnlyPage} what="Users" />`;
  if (path === '/agents') return admin ? html`<${AgentsPage} />` : html`<${AdminOnlyPage} what="Agents" />`;
  if (path === '/webhooks') return admin ? html`<${WebhooksPage} />` : html`<${AdminOnlyPage} what="Webhooks" />`;
  return html`<${NotFoundPage} />`;
}

function App() {
  const [where, setWhere] = useState(currentLocation());
  const [me, setMe] = useState(undefined); // undefined: asking; null: nobody; else {user, csrf_token}

  const goToLogin = () => {
    forgetLoggedIn();
    setMe(null);
    setCsrfToken(null);
    if (currentLocation().path !== '/login') navigate(loginUrl());
  };

  useEffect(() => {
    const unsubscribe = subscribe(setWhere);
    onUnauthenticated(goToLogin);
    if (!maybeLoggedIn()) {
      goToLogin();
      return unsubscribe;
    }
    api('GET', '/auth/me').then(
      (data) => {
        setCsrfToken(data.csrf_token);
        setMe(data);
        if (currentLocation().path === '/login') {
          navigate(safeNext(new URLSearchParams(location.search).get('next')), { replace: true });
        }
      },
      () => goToLogin(),
    );
    return unsubscribe;
  }, []);

  useEffect(() => {
    document.title = where.path === '/login' ? 'Log in · runsvc' : 'runsvc';
  }, [where.path]);

  if (me === undefined) return html`<p class="boot">Loading runsvc…</p>`;
  if (me === null || where.path === '/login') {
    if (where.path !== '/login') return html`<p class="boot">Redirecting to the login page…</p>`;
    return html`<${LoginPage} onLoggedIn=${(data) => {
      setCsrfToken(data.csrf_token);
      setMe(data);
      navigate(safeNext(new URLSearchParams(location.search).get('next')), { replace: true });
    }} />`;
  }
  const logout = async () => {
    try {
      await api('POST', '/auth/logout');
    } finally {
      setMe(null);
      setCsrfToken(null);
      navigate('/login');
    }
  };
  return html`
    <${Header} me=${me} onLogout=${logout} />
    <${Page} me=${me} where=${where} goToLogin=${goToLogin} />`;
}

render(html`<${App} />`, document.getElementById('app'));
