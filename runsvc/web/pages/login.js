// The login page: Username, Password, Log in; failures (wrong password, lockout) in role alert.

import { html, useState } from '../lib.js';
import { api } from '../api.js';

export function LoginPage({ onLoggedIn }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event) => {
    event.preventDefault();
    const form = event.target;
    setBusy(true);
    setError(null);
    try {
      const me = await api('POST', '/auth/login', {
        username: form.username.value,
        password: form.password.value,
      });
      onLoggedIn(me);
    } catch (e) {
      if (e.status === 429 && e.retryAfter) {
        setError(`Too many failed attempts. Try again in ${e.retryAfter} seconds.`);
      } else if (e.status === 401) {
        setError('Wrong username or password.');
      } else {
        setError(e.message);
      }
      setBusy(false);
    }
  };

  return html`
    <main class="login">
      <form class="card login-card" onSubmit=${submit}>
        <div class="brand brand-big"><span class="logo" aria-hidden="true"></span>runsvc</div>
        <h1>Log in</h1>
        ${error && html`<div class="alert" role="alert">${error}</div>`}
        <label for="login-username">Username</label>
        <input id="login-username" name="username" autocomplete="username" required autofocus />
        <label for="login-password">Password</label>
        <input id="login-password" name="password" type="password" autocomplete="current-password" required />
        <button type="submit" class="primary" disabled=${busy}>Log in</button>
      </form>
    </main>`;
}
